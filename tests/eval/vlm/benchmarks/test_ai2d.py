"""AI2D: AI2's diagram files (test ids, categories, abcLabel drawing) and lmms-lab's parquet as distributed, scored
through `superclass eval ai2d score` against hand-computed accuracy under both rules, a broken file, suite and `run`."""

import io
import json
from pathlib import Path

import pytest
from llava_fixtures import synthetic_image

from eval.cli import main
from eval.vlm.benchmarks.ai2d import AI2D
from eval.vlm.registry import benchmarks

# diagram -> [(question, options, correct, abcLabel)]; diagram 5 is not a test diagram
DIAGRAMS = {
    2: [
        ("What is A?", ["egg", "larva", "pupa", "adult"], 1, True),
        ("Which stage is first?", ["egg", "adult"], 0, False),
    ],
    10: [
        ("Which eats grass?", ["cow", "lion", "hawk"], 0, False),
        ("Top predator?", ["cow", "lion", "hawk"], 2, False),
    ],
    5: [("Which is green?", ["leaf", "root"], 0, False)],
}
CATEGORIES = {"2.png": "lifeCycles", "10.png": "foodChains", "5.png": "lifeCycles"}
BOX = [[4, 4], [30, 22]]  # the text box of diagram 2, drawn over with its letter for an abcLabel question
# official reads "(B) larva" and "C."; lmms-eval's filter reads neither "(B) larva" nor "B. lion" as right
ANSWERS = ["(B) larva", "a", "B. lion", "C."]


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    synthetic_image(i, size=48).save(buf, format="PNG")
    return buf.getvalue()


def _question_file(d: int, questions=None) -> dict:
    questions = questions or DIAGRAMS[d]
    return {"imageName": f"{d}.png", "questions": {
        q: {"abcLabel": abc, "answerTexts": opts, "correctAnswer": c, "questionId": f"{d}.png-{k}"}
        for k, (q, opts, c, abc) in enumerate(questions)}}  # fmt: skip


def write_ai2d(root: Path) -> Path:
    """ai2d-all.zip's ai2d/ (questions/, images/, annotations/, categories.json) and ai2d_test_ids.csv beside it."""
    ai2d = root / "ai2d"
    for sub in ("questions", "images", "annotations"):
        (ai2d / sub).mkdir(parents=True)
    for d in DIAGRAMS:
        (ai2d / "questions" / f"{d}.png.json").write_text(json.dumps(_question_file(d)))
        (ai2d / "images" / f"{d}.png").write_bytes(_png(d))
        boxes = {"T1": {"rectangle": BOX, "replacementText": "A", "value": "egg"}}
        (ai2d / "annotations" / f"{d}.png.json").write_text(json.dumps({"text": boxes}))
    (ai2d / "categories.json").write_text(json.dumps(CATEGORIES))
    (root / "ai2d_test_ids.csv").write_text("2\n10\n")
    return ai2d


def write_parquet(folder: Path) -> Path:
    """lmms-lab/ai2d's test split: question, options, answer (the index as a string), image."""
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    rows = [{"question": q, "options": opts, "answer": str(c), "image": {"bytes": _png(d), "path": None}}
            for d in (2, 10) for q, opts, c, _ in DIAGRAMS[d]]  # fmt: skip
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "test-00000-of-00001.parquet")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root, hub = (tmp_path_factory.mktemp(name) / "ai2d" for name in ("ai2", "hub"))
    return {"root": root, "ai2d": write_ai2d(root), "hub": hub, "parquet": write_parquet(hub / "data")}


def _score(tmp_path: Path, files: list[str], answers: dict, *extra: str) -> dict:
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    predictions = out.with_suffix(".jsonl")
    predictions.write_text("".join(json.dumps({"question_id": q, "answer": a}) + "\n" for q, a in answers.items()))
    assert main(["ai2d", "score", *files, "--predictions", str(predictions), "--out", str(out), *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_accuracy_both_rules_categories_and_both_formats(data, tmp_path):
    ids = ["2.png-0", "2.png-1", "10.png-0", "10.png-1"]  # the test diagrams in number order; diagram 5 left out
    files = ["--data-dir", str(data["ai2d"])]
    m = _score(tmp_path, files, dict(zip(ids, ANSWERS)))
    assert (m["accuracy"], m["num_questions"], m["no_choice_read"]) == (75.0, 4, 0)
    assert m["accuracy_by_category"] == {"foodChains": 50.0, "lifeCycles": 100.0}
    lmms = _score(tmp_path, files, dict(zip(ids, ANSWERS)), "--rule", "lmms_eval")
    assert (lmms["accuracy"], lmms["no_choice_read"]) == (50.0, 1)  # "(B) larva" reads as no letter there
    parquet = _score(tmp_path, ["--parquet", str(data["parquet"])], dict(enumerate(ANSWERS)))  # ids: row index
    assert (parquet["accuracy"], parquet["accuracy_by_category"]) == (75.0, {})


def test_abc_label_questions_are_shown_with_their_letters_drawn(data):
    bench = AI2D.of(data_dir=str(data["ai2d"]))
    drawn, plain = (item.load_image() for item in bench.questions[:2])
    x0, y0 = BOX[0]
    assert drawn.getpixel((x0 + 1, y0 + 1)) == (255, 255, 255) != plain.getpixel((x0 + 1, y0 + 1))
    box = drawn.crop((x0, y0, BOX[1][0], BOX[1][1])).convert("L")
    assert box.getextrema()[0] < 100  # the letter, in black
    assert plain.tobytes() == synthetic_image(2, size=48).tobytes()  # other questions see the diagram as it is


def test_a_broken_question_file_is_refused_and_a_question_without_answer_is_unannotated(data, tmp_path, capsys):
    ai2d = tmp_path / "ai2d"
    (ai2d / "questions").mkdir(parents=True)
    (tmp_path / "ai2d_test_ids.csv").write_text("2\n")
    bad = DIAGRAMS[2][:1] + [("Which stage is first?", ["egg", "adult"], 7, False)]  # the answer out of range
    (ai2d / "questions" / "2.png.json").write_text(json.dumps(_question_file(2, bad)))
    out = str(tmp_path / "b")
    cmd = ["ai2d", "score", "--data-dir", str(ai2d), "--predictions", str(tmp_path / "p.json"), "--out", out]
    assert main(cmd) == 2
    err = capsys.readouterr().err.strip()
    assert "questions/2.png.json: question 1 is not {imageName, questions: " in err and len(err.splitlines()) == 1
    doc = _question_file(2)
    del doc["questions"]["Which stage is first?"]["correctAnswer"]
    (ai2d / "questions" / "2.png.json").write_text(json.dumps(doc))
    m = _score(tmp_path, ["--data-dir", str(ai2d)], {"2.png-0": "B", "2.png-1": "A"})
    assert (m["input"]["unannotated"], m["questions"], m["accuracy"]) == (1, 1, 100.0)
    assert "1 of 2 questions have no gold answer" in capsys.readouterr().err
    (tmp_path / "ai2d_test_ids.csv").unlink()
    assert main(cmd) == 2 and "--test-ids" in capsys.readouterr().err


def test_suite_layouts(data, tmp_path):
    cls = benchmarks()["ai2d"]
    assert (cls.folder, cls.headline, cls.published) == ("ai2d", "accuracy", {})
    ids = str(data["root"] / "ai2d_test_ids.csv")
    assert cls.suite_config(data["root"]) == {"data_dir": str(data["ai2d"]), "test_ids": ids}
    assert cls.suite_config(data["hub"]) == {"parquet": str(data["parquet"]), "split": "test"}
    assert cls.suite_config(tmp_path) is None


def test_run_writes_and_scores_predictions(data, tmp_path):
    from llava_fixtures import build_tiny_llava

    model, out = build_tiny_llava(tmp_path / "llava"), tmp_path / "run"
    args = ["ai2d", "run", "--model", str(model), "--data-dir", str(data["ai2d"]), "--out", str(out),
            "--device", "cpu", "--no-progress", "--max-new-tokens", "2"]  # fmt: skip
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["question_id"] for r in rows) == ["10.png-0", "10.png-1", "2.png-0", "2.png-1"]
    m = json.loads((out / "metrics.json").read_text())
    assert m["image_errors"] == 0 and m["coverage"]["missing"] == 0 and m["accuracy"] is not None
    rescored = _score(tmp_path, ["--data-dir", str(data["ai2d"])], {r["question_id"]: r["answer"] for r in rows})
    assert rescored["accuracy"] == m["accuracy"]

"""DocVQA: the RRC's QA file and lmms-lab's parquet as distributed, scored through `superclass eval docvqa score`
against hand-computed ANLS under both rules, the test split's RRC submission, a broken file, the suite and `run`."""

import io
import json
from pathlib import Path

import pytest
from llava_fixtures import synthetic_image

from eval.cli import main
from eval.vlm.registry import benchmarks

# (questionId, answers, question_types)
ROWS = [(101, ["2000", "2,000"], ["form"]), (102, ["abc"], ["layout"]), (103, ["ab"], ["form", "handwritten"]),
        (104, ["john smith"], ["handwritten"])]  # fmt: skip
# 1.0; "abd   " vs "abc": 1 - 1/6 (the raw length divides), stripped 1 - 1/3; 1 - 2/4 = 0.5 counts; 0 below 0.5
ANSWERS = {101: "2,000", 102: "abd   ", 103: "abcd", 104: "xyz"}


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    synthetic_image(i).save(buf, format="PNG")
    return buf.getvalue()


def _row(qid: int, answers, types, **extra) -> dict:
    row = {"questionId": qid, "question": f"What is field {qid}?", "question_types": types,
           "image": f"documents/page{qid % 2}.png", "docId": qid % 2, "ucsf_document_id": "ab12",
           "ucsf_document_page_no": "1", "answers": answers, "data_split": "val"}  # fmt: skip
    return {**row, **extra}


def write_qa(path: Path, rows: list[dict]) -> Path:
    """The RRC's val_v1.0_withQT.json: {dataset_name, dataset_split, dataset_version, data: [...]}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"dataset_name": "docvqa", "dataset_split": "val", "dataset_version": "1.0", "data": rows}
    path.write_text(json.dumps(doc))
    return path


def write_parquet(folder: Path) -> Path:
    """lmms-lab/DocVQA's DocVQA config: validation and test shards (test without answers)."""
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    folder.mkdir(parents=True)
    for split, answered in (("validation", True), ("test", False)):
        rows = [{**_row(q, a if answered else None, t), "image": {"bytes": _png(q % 2), "path": None}}
                for q, a, t in ROWS]  # fmt: skip
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}-00000-of-00001.parquet")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root, hub = (tmp_path_factory.mktemp(name) / "docvqa" for name in ("rrc", "hub"))
    qa = write_qa(root / "val" / "val_v1.0_withQT.json", [_row(*r) for r in ROWS])
    (root / "val" / "documents").mkdir()
    for i in range(2):
        (root / "val" / "documents" / f"page{i}.png").write_bytes(_png(i))
    return {"root": root, "qa": qa, "hub": hub, "parquet": write_parquet(hub / "DocVQA")}


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _score(tmp_path: Path, files: list[str], predictions: Path, *extra: str) -> dict:
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    assert main(["docvqa", "score", *files, "--predictions", str(predictions), "--out", str(out), *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_anls_both_rules_per_type_and_both_formats(data, tmp_path, capsys):
    preds = _write(tmp_path / "p.jsonl", [{"question_id": q, "answer": a} for q, a in ANSWERS.items()])
    m = _score(tmp_path, ["--questions", str(data["qa"])], preds)
    assert m["anls"] == round(100 * (1 + 5 / 6 + 0.5 + 0) / 4, 2) == 58.33
    assert m["anls_by_type"] == {"form": 75.0, "handwritten": 25.0, "layout": 83.33} and m["split"] == "val"
    lmms = _score(tmp_path, ["--questions", str(data["qa"])], preds, "--rule", "lmms_eval")
    assert lmms["anls"] == round(100 * (1 + 2 / 3 + 0.5) / 4, 2) == 54.17
    parquet = ["--parquet", str(data["parquet"]), "--split", "validation"]
    assert _score(tmp_path, parquet, preds)["anls"] == 58.33  # the same questionIds
    samples = [{"doc_id": d, "filtered_resps": [ANSWERS[q]], "target": "x"} for d, (q, _, _) in enumerate(ROWS)]
    log = _write(tmp_path / "samples.jsonl", samples)
    assert _score(tmp_path, parquet, log, "--rule", "lmms_eval")["anls"] == 54.17
    # lmms-eval's samples name rows only: refused without the parquet, in one line naming the fix
    out = tmp_path / "refused"
    assert main(["docvqa", "score", "--questions", str(data["qa"]), "--predictions", str(log),
                 "--out", str(out)]) == 2  # fmt: skip
    assert "score them with --parquet" in capsys.readouterr().err


def test_the_test_split_writes_the_rrc_submission(data, tmp_path, capsys):
    preds = _write(tmp_path / "p.jsonl", [{"question_id": 101, "answer": "2,000"}, {"question_id": 103, "answer": "x"}])
    assert main(["docvqa", "score", "--parquet", str(data["parquet"]), "--predictions", str(preds), "--out",
                 str(tmp_path / "o")]) == 2  # fmt: skip
    assert "--split" in capsys.readouterr().err  # two splits in the folder: one is chosen
    m = _score(tmp_path, ["--parquet", str(data["parquet"]), "--split", "test"], preds)
    assert m["scored"] is False and m["anls"] is None and m["input"]["unannotated"] == 0  # a test split, not a gap
    rows = json.loads(Path(m["files"]["rrc_submission"]).read_text())
    assert rows == [{"questionId": 101, "answer": "2,000"}, {"questionId": 102, "answer": ""},
                    {"questionId": 103, "answer": "x"}, {"questionId": 104, "answer": ""}]  # fmt: skip


def test_broken_file_refused_duplicates_and_unannotated_counted(data, tmp_path, capsys):
    preds = _write(tmp_path / "p.jsonl", [{"question_id": q, "answer": a} for q, a in ANSWERS.items()])
    rows = [_row(*r) for r in ROWS]
    bad = write_qa(tmp_path / "bad.json", [rows[0], {**rows[1], "answers": "abc"}])
    cmd = ["docvqa", "score", "--questions", str(bad), "--predictions", str(preds), "--out", str(tmp_path / "b")]
    assert main(cmd) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.json: data row 1 is not {questionId, question, image, answers: [str]}" in err
    assert len(err.splitlines()) == 1
    no_answers = {k: v for k, v in rows[3].items() if k != "answers"}
    mixed = write_qa(tmp_path / "mixed.json", [*rows[:3], {**rows[0], "answers": ["x"]}, no_answers])
    m = _score(tmp_path, ["--questions", str(mixed)], preds)
    assert (m["data_counts"]["duplicate_questions"], m["input"]["unannotated"]) == (1, 1)
    assert m["questions"] == 3 and m["anls"] == round(100 * (1 + 5 / 6 + 0.5) / 3, 2)  # the first 101 kept
    assert "1 of 4 questions have no gold answer" in capsys.readouterr().err


def test_suite_layouts(data, tmp_path):
    cls = benchmarks()["docvqa"]
    assert (cls.folder, cls.headline, cls.published, cls.max_new_tokens) == ("docvqa", "anls", {}, 32)
    assert cls.suite_config(data["root"]) == {"questions": str(data["qa"]), "image_root": str(data["root"] / "val")}
    assert cls.suite_config(data["hub"]) == {"parquet": str(data["parquet"]), "split": "validation"}
    flat = tmp_path / "docvqa"
    write_qa(flat / "spdocvqa_qas" / "val_v1.0.json", [])
    (flat / "spdocvqa_images").mkdir()
    assert cls.suite_config(flat) == {"questions": str(flat / "spdocvqa_qas" / "val_v1.0.json"),
                                      "image_root": str(flat / "spdocvqa_images")}  # fmt: skip
    assert cls.suite_config(tmp_path / "none") is None


def test_run_on_flat_images_writes_and_scores_predictions(data, tmp_path):
    from llava_fixtures import build_tiny_llava

    flat = tmp_path / "spdocvqa_images"  # the page images without documents/: found by their base name
    flat.mkdir()
    for page in (data["root"] / "val" / "documents").iterdir():
        (flat / page.name).write_bytes(page.read_bytes())
    model, out = build_tiny_llava(tmp_path / "llava"), tmp_path / "run"
    args = ["docvqa", "run", "--model", str(model), "--questions", str(data["qa"]), "--image-root", str(flat),
            "--out", str(out), "--device", "cpu", "--no-progress", "--max-new-tokens", "3"]  # fmt: skip
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["question_id"] for r in rows) == [101, 102, 103, 104] and all("answer" in r for r in rows)
    m = json.loads((out / "metrics.json").read_text())
    assert m["coverage"]["missing"] == 0 and m["data_counts"]["missing_images"] == 0
    rescored = _score(tmp_path, ["--questions", str(data["qa"])], out / "predictions.jsonl")
    assert rescored["anls"] == m["anls"] is not None

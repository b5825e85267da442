"""SEED-Bench image part: LLaVA's exact-letter accuracy by hand, the files as distributed, run and score end to end."""

import json
from pathlib import Path

import pytest
from PIL import Image

from eval.cli import main
from eval.vlm.benchmarks.seedbench import SeedBench, load_seedbench, load_seedbench_parquet, seed_prompt
from eval.vlm.registry import benchmarks
from eval.vlm.scoring.seedbench import lmms_eval_right
from vlm.templates import LETTER_ANSWER_PROMPT, generation_prompt

QUESTION_TYPE = {"Scene Understanding": 1, "Instance Identity": 2, "Instance Attributes": 3, "Instance Location": 4,
                 "Instances Counting": 5, "Spatial Relation": 6, "Instance Interaction": 7, "Visual Reasoning": 8,
                 "Text Understanding": 9, "Action Recognition": 10, "Action Prediction": 11,
                 "Procedure Understanding": 12}  # fmt: skip
# question_id -> (question, choices, answer, data_id, dimension)
IMAGE_QUESTIONS = {
    "101669": ("How many towels are in the image?", ["One", "Two", "Three", "Four"], "A", "1454426_2591111986.jpg", 5),
    "101670": ("What is the main setting of the image?", ["A beach", "A kitchen", "A forest", "A road"], "B",
               "1454427_11.jpg", 1),
    "200": ("What is the overall scene?", ["Indoor", "Outdoor", "Underwater", "Space"], "C", "2001_22.jpg", 1),
    "201": ("How many cars are there?", ["One", "Two", "Three", "Four"], "D", "2002_33", 5),  # file 2002_33.jpg
    "202": ("How many dogs are there?", ["One", "Two", "Three", "Four"], "A", "2003_44.jpg", 5),
    "300": ("What does the sign say?", ["Stop", "Go", "Exit", "Open"], "B", "3001_55.jpg", 9),
}  # fmt: skip
IMAGE_IDS = [101669, 101670, 200, 201, 202, 300]


def _row(qid, question, choices, answer, data_id, dimension, data_type="image"):
    return {"answer": answer, **dict(zip(("choice_a", "choice_b", "choice_c", "choice_d"), choices)),
            "data_id": data_id, "data_type": data_type, "question": question, "question_id": qid,
            "question_type_id": dimension}  # fmt: skip


def _llava_text(question, choices):
    """LLaVA's llava-seed-bench.jsonl `text`, written out by hand."""
    return question + "".join(f"\n{'ABCD'[i]}. {c}" for i, c in enumerate(choices)) + "\n" + LETTER_ANSWER_PROMPT


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """SEED-Bench.json + SEED-Bench-image/ + llava-seed-bench.jsonl in LLaVA's playground/data/eval/seed_bench."""
    root = tmp_path_factory.mktemp("seed_bench")
    (root / "SEED-Bench-image").mkdir()
    questions = [_row(qid, *spec) for qid, spec in IMAGE_QUESTIONS.items()]
    for i, (_, _, _, data_id, _) in enumerate(IMAGE_QUESTIONS.values()):
        name = data_id if data_id.endswith(".jpg") else data_id + ".jpg"
        Image.new("RGB", (30 + i, 20), (40 * i, 100, 200)).save(root / "SEED-Bench-image" / name)
    questions += [
        _row("v1738", "What is the action?", ["throw", "catch", "lift", "poke"], "B", "94328.webm", 10, "video"),
        _row("v1962", "What happens next?", ["fill", "move", "lift", "pour"], "B", "P03/P03_24.MP4", 11, "video"),
        _row("200", "Repeated?", ["a", "b", "c", "d"], "A", "4.jpg", 2),  # a repeated question_id
    ]
    (root / "SEED-Bench.json").write_text(json.dumps({"questions": questions, "question_type": QUESTION_TYPE}))
    lines = [json.dumps({"question_id": int(qid) if qid != "200" else qid, "image": f"SEED-Bench-image/{data_id}",
                         "text": _llava_text(question, choices), "category": "x"})
             for qid, (question, choices, _, data_id, _) in IMAGE_QUESTIONS.items()]  # fmt: skip
    lines[3] = json.dumps({**json.loads(lines[3]), "image": "SEED-Bench-image/2002_33.jpg"})
    lines += [json.dumps({"question_id": "v1738", "image": "SEED-Bench-video-image/v1738.png", "text": "x"}), "{"]
    (root / "llava-seed-bench.jsonl").write_text("\n".join(lines) + "\n")
    return {"annotations": root / "SEED-Bench.json", "questions": root / "llava-seed-bench.jsonl", "root": root}


def _args(files, *extra):
    return ["--annotations", str(files["annotations"]), "--llava-questions", str(files["questions"]), *extra]


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_reads_the_image_part_and_counts_what_it_skips(files):
    sset = load_seedbench(files["annotations"], files["root"], files["questions"])
    assert [q.id for q in sset.items] == IMAGE_IDS
    # malformed questions are now refused (test_a_data_file_broken_in_part_is_refused), not counted
    assert sset.counts == {"video": 2, "other_data_type": 0, "duplicate_questions": 1, "unannotated": 0,
                           "missing_images": 0, "malformed_llava_rows": 1, "llava_rows_missing": 0,
                           "llava_prompt_differs": 0}  # fmt: skip
    assert sset.items[3].load_image().size == (33, 20)  # data_id without a suffix: the .jpg is found
    assert sset.items[-1].dimension_name == "Text Understanding"
    bare = load_seedbench(files["annotations"], files["root"] / "SEED-Bench-image")  # that folder itself, no JSONL
    assert bare.counts["missing_images"] == 0 and bare.counts["llava_rows_missing"] == 0


def test_the_image_llava_opened_comes_first(files, tmp_path):
    (tmp_path / "frames").mkdir()
    Image.new("RGB", (7, 5)).save(tmp_path / "frames" / "x.png")
    row = {"question_id": 300, "image": "frames/x.png", "text": "t"}
    (tmp_path / "llava.jsonl").write_text(json.dumps(row) + "\n")
    sset = load_seedbench(files["annotations"], tmp_path, tmp_path / "llava.jsonl")
    found = {q.id: q.image for q in sset.items if q.image is not None}
    assert found == {300: tmp_path / "frames" / "x.png"} and sset.counts["missing_images"] == 5


def test_prompts(files):
    settings = {"annotations": str(files["annotations"]), "image_root": str(files["root"])}
    bench = SeedBench.of(**settings, llava_questions=str(files["questions"]))
    first = bench.questions[0]
    expected = f"How many towels are in the image?\nA. One\nB. Two\nC. Three\nD. Four\n{LETTER_ANSWER_PROMPT}"
    assert first.id == 101669 and bench.prompt(first) == expected
    assert bench.requests()[0].prompt == generation_prompt(expected)
    lmms = SeedBench.of(**settings, prompt="lmms_eval")
    assert [r.prompt for r in lmms.requests()] == [r.prompt for r in bench.requests()] and lmms.layout == "lmms_eval"
    q = bench.questions[1]
    q.llava_text = "edited"
    assert (seed_prompt(q), seed_prompt(q, "lmms_eval")) == ("edited", _llava_text(q.question, q.options))


def test_score_hand_worked(files, tmp_path):
    # exact match: "A" right, "B " wrong, "c" wrong, "D. Four" wrong, "A" right, 300 missing -> 2/6
    answers = {101669: "A", 101670: "B ", 200: "c", 201: "D. Four", 202: "A", "v1738": "B"}
    rows = [{"question_id": qid, "prompt": "...", "text": text, "answer_id": "x", "model_id": "llava-v1.5-7b",
             "metadata": {}} for qid, text in answers.items()]  # fmt: skip
    (tmp_path / "merge.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # LLaVA's answer file
    args = ["seedbench", "score", *_args(files), "--predictions", str(tmp_path / "merge.jsonl")]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    m = _metrics(tmp_path / "o")
    assert (m["accuracy"], m["num_questions"], m["missing_predictions"], m["unparsed"]) == (33.33, 6, 1, 3)
    assert m["per_dimension"] == {"Scene Understanding": 0.0, "Instances Counting": 66.67, "Text Understanding": 0.0}
    assert m["coverage"]["unknown"] == 1 and m["split"] == "image" and m["rule"] == "official"
    # --rule lmms_eval (was `accuracy_lmms_eval` beside `accuracy`): seed_process_result keeps the stripped answer's
    # first character and seed_aggregation_result compares it lower-cased: "B ", "c", "D. Four" right too -> 5/6
    assert main([*args, "--out", str(tmp_path / "lmms"), "--rule", "lmms_eval"]) == 0
    lmms = _metrics(tmp_path / "lmms")
    assert (lmms["accuracy"], lmms["per_dimension"]["Instances Counting"], lmms["rule"]) == (83.33, 100.0, "lmms_eval")
    assert "seed_process_result" in lmms["metric_rule"] and "unparsed" not in lmms
    assert lmms_eval_right(" d. four", "D") and not lmms_eval_right("The answer is D", "D")
    assert main([*args, "--out", str(tmp_path / "limited"), "--limit", "4"]) == 0
    limited = _metrics(tmp_path / "limited")  # stratified by dimension: 1, 2 and 1 of the 2, 3 and 1
    assert limited["num_questions"] == 4 and len(limited["per_dimension"]) == 3


def test_lmms_eval_samples_are_matched_by_their_question_id(files, tmp_path):
    samples = [{"doc_id": i, "target": a, "filtered_resps": a, "seed_image": {"pred": a, "answer": a,
                "question_id": qid}, "seed_all": {"pred": a, "answer": a, "question_id": qid}}
               for i, (qid, a) in enumerate([("101669", "A"), ("200", "B"), ("300", "B")])]  # fmt: skip
    (tmp_path / "samples_seedbench.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    args = ["seedbench", "score", *_args(files), "--predictions", str(tmp_path / "samples_seedbench.jsonl")]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    m = _metrics(tmp_path / "o")
    assert (m["accuracy"], m["predictions"]["format"], m["coverage"]["matched"]) == (33.33, "lmms_eval", 3)


def test_run_with_a_tiny_llava_and_score_agree(files, tmp_path):
    from llava_fixtures import build_tiny_llava

    model = build_tiny_llava(tmp_path / "llava")
    out = tmp_path / "run"
    run = ["seedbench", "run", *_args(files, "--image-root", str(files["root"])), "--model", str(model),
           "--out", str(out), "--device", "cpu", "--no-progress", "--batch-size", "4"]  # fmt: skip
    assert main(run) == 0
    m = _metrics(out)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["question_id"] for r in rows) == sorted(IMAGE_IDS)
    assert m["num_questions"] == 6 and m["data_counts"]["video"] == 2 and m["image_errors"] == 0
    score = ["seedbench", "score", *_args(files), "--predictions", str(out / "predictions.jsonl")]
    assert main([*score, "--out", str(tmp_path / "scored")]) == 0
    scored = _metrics(tmp_path / "scored")
    for key in ("accuracy", "per_dimension", "unparsed", "num_questions"):
        assert scored[key] == m[key], key


def test_bad_files_are_one_line_errors(files, tmp_path, capsys):
    (tmp_path / "qs.json").write_text(json.dumps({"qs": []}))
    video = [_row("v1", "What?", ["a", "b", "c", "d"], "A", "1.webm", 10, "video")]
    (tmp_path / "video.json").write_text(json.dumps({"questions": video}))
    (tmp_path / "empty.jsonl").write_text("\n")
    base = ["seedbench", "score", "--predictions", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "o")]
    for flags, says in (
        (["--annotations", str(tmp_path / "qs.json")], "missing list field 'questions'"),
        (["--annotations", str(tmp_path / "video.json")], "no question with data_type 'image'"),
        (
            ["--annotations", str(files["annotations"]), "--llava-questions", str(tmp_path / "empty.jsonl")],
            "no JSON object",
        ),
        (["--annotations", str(tmp_path / "nothing.json")], "no such SEED-Bench.json"),
    ):
        assert main([*base, *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err
    assert main(["seedbench", "run", "--annotations", str(files["annotations"]), "--model", "m", "--out", "o"]) == 2
    assert "--image-root" in capsys.readouterr().err


def test_suite_layout(files, tmp_path):
    cls = benchmarks()["seedbench"]
    assert cls is SeedBench and cls.folder == "seed_bench" and "superclass_table11" not in cls.published
    want = {"annotations": str(files["annotations"]), "image_root": str(files["root"])}
    assert cls.suite_config(files["root"]) == {**want, "llava_questions": str(files["questions"])}
    assert cls.suite_config(tmp_path) is None


def write_seed_parquet(files, folder: Path, drop=()) -> Path:
    """lmms-lab's SEED-Bench layout (lmms_eval/tasks/seedbench/utils.py reads question, choice_a..d, answer,
    data_type, question_id, image): SEED-Bench.json's rows, each image a list of {bytes, path} structs (PNG)."""
    import io

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")

    def png(i: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (30 + i, 20), (40 * i, 100, 200)).save(buf, format="PNG")
        return buf.getvalue()

    doc = json.loads(files["annotations"].read_text())
    rows = []
    for i, raw in enumerate(doc["questions"]):
        frames = 1 if raw["data_type"] == "image" else 3  # a video question: several frames
        image = [{"bytes": png(i), "path": f"{raw['data_id']}_{n}"} for n in range(frames)]
        rows.append({k: v for k, v in {**raw, "image": image}.items() if k not in drop})
    rows.append({**rows[0], "question_id": "400", "choice_c": None})  # a row of another shape
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "test-00000-of-00001.parquet")
    return folder


def test_lmms_lab_parquet_gives_the_official_set(files, tmp_path, capsys):
    folder = write_seed_parquet(files, tmp_path / "SEED-Bench")
    sset, official = load_seedbench_parquet(folder), load_seedbench(files["annotations"])
    fields = [(q.id, q.question, q.options, q.answer, q.dimension, q.data_id) for q in official.items]
    assert [(q.id, q.question, q.options, q.answer, q.dimension, q.data_id) for q in sset.items] == fields
    assert [q.id for q in sset.items] == IMAGE_IDS and sset.format == "parquet"
    for key in ("video", "duplicate_questions", "unannotated"):
        assert sset.counts[key] == official.counts[key], key
    assert sset.counts["malformed_questions"] == 1  # a row of another shape: counted in a parquet, not refused
    assert sset.counts["missing_images"] == 0 and sset.items[1].load_image().size == (31, 20)
    assert sset.doc_rows == [*IMAGE_IDS, None, None, None, None]
    index = SeedBench.of(parquet=str(folder)).question_index()
    assert index.doc_rows == sset.doc_rows
    limited = load_seedbench_parquet(folder, limit=3)
    assert len(limited.items) == 3 and {q.id for q in limited.items} <= set(IMAGE_IDS)
    assert seed_prompt(sset.items[0], "lmms_eval") == seed_prompt(official.items[0], "lmms_eval")
    # a parquet missing a column lmms-eval reads: a one-line error, exit 2
    bad = write_seed_parquet(files, tmp_path / "bad", drop=("data_type",))
    assert main(["seedbench", "score", "--parquet", str(bad), "--predictions", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing column 'data_type'" in err and "\n" not in err


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_data_file_broken_in_part_is_refused_naming_file_and_question(files, tmp_path, capsys):
    # input policy: a question of another shape is refused (it was counted `malformed_questions` and skipped)
    doc = json.loads(files["annotations"].read_text())
    base = ["seedbench", "score", "--predictions", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "o")]
    for index, broken in ((2, {"choice_c": None}), (4, {"answer": "E"}), (5, {"question_type_id": "9"})):
        questions = [dict(q, **broken) if i == index else q for i, q in enumerate(doc["questions"])]
        (tmp_path / "seed.json").write_text(json.dumps({**doc, "questions": questions}))
        assert main([*base, "--annotations", str(tmp_path / "seed.json")]) == 2
        err = _one_line(capsys)
        assert f"seed.json: questions[{index}] is not" in err, err


def test_input_policy_on_a_predictions_file(files, tmp_path, capsys):
    # 101669 answered twice (the last, "A", kept: right); a torn row (malformed); 200 null (missing); 202 "A" right
    lines = [json.dumps({"question_id": 101669, "answer": "B"}), '{"question_id": 101670, "ans',
             json.dumps({"question_id": 200, "answer": None}), json.dumps({"question_id": 101669, "answer": "A"}),
             json.dumps({"question_id": 202, "answer": "A"})]  # fmt: skip
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    args = ["seedbench", "score", *_args(files), "--predictions", str(tmp_path / "p.jsonl"), "--out", str(tmp_path)]
    assert main(args) == 0
    m, err = _metrics(tmp_path), capsys.readouterr().err
    assert m["accuracy"] == round(100 * 2 / 6, 2) and m["missing_predictions"] == 4
    assert (m["input"]["duplicate_ids"], m["input"]["malformed_rows"], m["input"]["null_answers"]) == (1, 1, 1)
    assert "p.jsonl" in err and "1 malformed rows skipped" in err and "answered more than once" in err
    assert "1 null answers (counted missing)" in err


def test_questions_without_an_answer_are_unannotated_and_warned(files, tmp_path, capsys):
    doc = json.loads(files["annotations"].read_text())
    del doc["questions"][1]["answer"]  # 101670: no gold answer
    (tmp_path / "seed.json").write_text(json.dumps(doc))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"question_id": q, "answer": "A"}) + "\n"
                                              for q in (101669, 101670, 202)))  # fmt: skip
    args = ["seedbench", "score", "--annotations", str(tmp_path / "seed.json"), "--predictions",
            str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(args) == 0
    m = _metrics(tmp_path / "o")
    assert (m["num_questions"], m["accuracy"], m["input"]["unannotated"]) == (5, 40.0, 1)
    assert m["per_dimension"]["Scene Understanding"] == 0.0  # 200 alone is scored there
    assert "1 of 6 questions have no gold answer (not scored)" in capsys.readouterr().err

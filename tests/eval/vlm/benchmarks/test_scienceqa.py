"""ScienceQA-IMG: LLaVA's letter reading and breakdowns by hand, the files as distributed, run and score end to end."""

import json
from pathlib import Path

import pytest
from PIL import Image

from eval.cli import main
from eval.vlm.benchmarks.scienceqa import ScienceQA, load_scienceqa, load_scienceqa_parquet, scienceqa_prompt
from eval.vlm.registry import benchmarks
from eval.vlm.scoring.scienceqa import llava_letter, lmms_eval_right
from vlm.templates import LETTER_ANSWER_PROMPT, generation_prompt

HINT5 = "The passage below describes an experiment.\n\nBrody put one nail into each of six test tubes."
# pid -> (question, choices, answer index, hint, image, subject, grade); split "test" unless said otherwise
PROBLEMS = {
    "5": ("Identify the question that Brody's experiment can best answer.", ["Do nails rust?", "Is water wet?",
          "Is vinegar sour?"], 1, HINT5, "image.png", "natural science", "grade8"),
    "6": ("Which of these states is farthest north?", ["Maine", "Texas", "Ohio", "Utah"], 0, "", "image.png",
          "social science", "grade4"),
    "7": ("What is the capital of Maine?", ["Boston", "Augusta"], 1, "Figure: Maine.", "image.png",
          "social science", "grade5"),
    "8": ("Which word would you find on a dictionary page?", ["bat", "zoo"], 0, "", "image.png",
          "language science", "grade2"),
    "9": ("Which property do these objects have in common?", ["hard", "soft", "blue", "sticky", "yellow"], 4,
          "Select the best answer.", "image.png", "natural science", "grade11"),
    "10": ("Which animal's feet are adapted for grabbing prey?", ["duck", "eagle"], 1, "", "image.png",
           "natural science", "grade3"),
    "4": ("Which figure of speech is used in this text?\nSing, O goddess.", ["chiasmus", "apostrophe"], 1, "", None,
          "language science", "grade10"),
    "11": ("Which is a compound sentence?", ["I ran.", "I ran, and he hid."], 1, "Read the text.", None,
           "language science", "grade6"),
    "1": ("Which ocean is highlighted?", ["Pacific", "Indian"], 0, "", "image.png", "social science", "grade5"),
}  # fmt: skip
TEST_PIDS = ["4", "5", "6", "7", "8", "9", "10", "11", "5"]  # pid 5 listed twice: counted, the first kept
IMAGE_PIDS = [5, 6, 7, 8, 9, 10]


def _write_problems(root: Path) -> dict[str, Path]:
    """problems.json + pid_splits.json + images/test/<pid>/image.png, as in lupantech/ScienceQA's data/scienceqa."""
    problems = {}
    for pid, (question, choices, answer, hint, image, subject, grade) in PROBLEMS.items():
        split = "train" if pid == "1" else "test"
        problems[pid] = {"question": question, "choices": choices, "answer": answer, "hint": hint, "image": image,
                         "task": "closed choice", "grade": grade, "subject": subject, "topic": "t", "category": "c",
                         "skill": "s", "lecture": "", "solution": "", "split": split}  # fmt: skip
        if image is not None:
            folder = root / "images" / split / pid
            folder.mkdir(parents=True)
            Image.new("RGB", (24 + int(pid), 20), (30 * int(pid) % 255, 90, 160)).save(folder / image)
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps({"train": ["1"], "test": TEST_PIDS}))
    return {"problems": root / "problems.json", "pid_splits": root / "pid_splits.json", "images": root / "images"}


def _llava_question(pid: str) -> dict:
    """A row of LLaVA's eval.zip llava_test_CQM-A.json, written out by hand in its layout."""
    question, choices, answer, hint, image, _, _ = PROBLEMS[pid]
    value = (f"Context: {hint}\n" if hint else "") + question + "".join(f"\n{'ABCDE'[i]}. {c}" for i, c in
                                                                         enumerate(choices))  # fmt: skip
    row = {"id": pid, "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": "ABCDE"[answer]}]}
    if image is not None:
        row["image"] = f"{pid}/{image}"
        row["conversations"][0]["value"] = "<image>\n" + value
    return row


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("scienceqa")
    paths = _write_problems(root)
    rows = [_llava_question(pid) for pid in dict.fromkeys(TEST_PIDS)] + [{"id": "13"}]  # the last: malformed
    (root / "llava_test_CQM-A.json").write_text(json.dumps(rows, indent=2))
    return {**paths, "questions": root / "llava_test_CQM-A.json", "root": root}


def _args(files, *extra):
    return ["--problems", str(files["problems"]), "--llava-questions", str(files["questions"]), *extra]


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_llava_letter_follows_eval_science_qa_rules():
    cases = {"A": "A", "E": "E", "F": None, "B. because": "B", "B.": None, "b": None, " A": None, "(A)": None,
             "The answer is C.": "C", "The answer is C": None, "The answer is C. The answer is D.": None,
             "I think the answer is D!": None, "So The answer is D!": "D", "The answer is F.": "F",
             "": None}  # fmt: skip
    assert {text: llava_letter(text) for text in cases} == cases
    assert lmms_eval_right(" a ", 0) and lmms_eval_right("B.", 1) and lmms_eval_right("A. yes", 0)
    assert not lmms_eval_right("a. yes", 0) and not lmms_eval_right("The answer is A.", 0)


def test_reads_the_image_questions_and_counts_what_it_skips(files):
    sset = load_scienceqa(files["problems"], None, files["images"] / "test", files["questions"])
    assert [p.id for p in sset.items] == IMAGE_PIDS and sset.split == "test"
    # the policy's names (duplicate_pids is duplicate_questions); a malformed problem or unknown pid is now refused
    assert sset.counts == {"duplicate_questions": 1, "no_image": 2, "unannotated": 0, "missing_images": 0,
                           "malformed_llava_rows": 1, "llava_rows_missing": 0, "llava_prompt_differs": 0}  # fmt: skip
    assert sset.items[0].load_image().size == (29, 20)
    # images/ (holding test/) and the ScienceQA data folder (holding images/test/) are found too
    for root in (files["images"], files["root"]):
        assert load_scienceqa(files["problems"], image_root=root).counts["missing_images"] == 0


def test_prompts_are_llava_and_lmms_eval_layouts(files):
    bench = ScienceQA.of(problems=str(files["problems"]), image_root=str(files["images"] / "test"),
                         llava_questions=str(files["questions"]))  # fmt: skip
    first = bench.questions[0]
    expected = (f"Context: {HINT5}\nIdentify the question that Brody's experiment can best answer.\nA. Do nails rust?"
                f"\nB. Is water wet?\nC. Is vinegar sour?\n{LETTER_ANSWER_PROMPT}")  # fmt: skip
    assert first.id == 5 and bench.prompt(first) == expected
    assert bench.requests()[0].prompt == generation_prompt(expected) and expected.count("<image>") == 0
    no_hint = next(p for p in bench.questions if p.id == 6)
    assert scienceqa_prompt(no_hint).startswith("Which of these states is farthest north?\nA. Maine\nB. Texas")
    built = load_scienceqa(files["problems"])  # no LLaVA file: the same text, built
    texts = [bench.prompt(p) for p in bench.questions]
    assert [scienceqa_prompt(p) for p in built.items] == texts
    assert [scienceqa_prompt(p, "lmms_eval") for p in built.items] == texts
    assert ScienceQA.of(problems=str(files["problems"]), prompt="lmms_eval").layout == "lmms_eval"
    row = _llava_question("7")
    row["conversations"][0]["value"] += " (edited)"
    (files["root"] / "edited.json").write_text(json.dumps([row]))
    edited = load_scienceqa(files["problems"], questions=files["root"] / "edited.json")
    assert edited.counts["llava_prompt_differs"] == 1 and edited.counts["llava_rows_missing"] == 5
    seven = next(p for p in edited.items if p.id == 7)
    assert scienceqa_prompt(seven).endswith(f"(edited)\n{LETTER_ANSWER_PROMPT}")


def test_score_hand_worked_breakdowns(files, tmp_path):
    # 5 B right; 6 "The answer is A." right; 7 "B." unparsed; 8 "a" unparsed; 9 "E. ..." right; 10 missing.
    answers = {"5": "B", "6": "The answer is A.", "7": "B.", "8": "a", "9": "E. yellow", "4": "B"}
    rows = [{"question_id": pid, "prompt": "<image>\n...", "text": text, "answer_id": "x", "model_id": "llava",
             "metadata": {}} for pid, text in answers.items()]  # fmt: skip
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))  # LLaVA's answer file
    args = ["scienceqa", "score", *_args(files), "--predictions", str(tmp_path / "answers.jsonl")]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    m = _metrics(tmp_path / "o")
    assert (m["accuracy"], m["num_questions"], m["missing_predictions"], m["unparsed"]) == (50.0, 6, 1, 2)
    assert m["per_subject"] == {"natural science": 66.67, "social science": 50.0, "language science": 0.0}
    assert m["per_context"] == {"TXT": 66.67, "IMG": 50.0, "NO": None}
    assert m["per_grade"] == {"G1-6": 25.0, "G7-12": 100.0}
    assert m["coverage"]["unknown"] == 1 and m["predictions"]["format"] == "llava"  # pid 4 has no image
    assert m["rule"] == "official" and "eval_science_qa.py" in m["metric_rule"]
    # --rule lmms_eval (was `accuracy_lmms_eval` beside `accuracy`): sqa_process_results reads "B." (the answer's
    # letter and a "."; 7's answer is B) and "a" (8's, any case), not "The answer is A.": 5, 7, 8, 9 right of 6
    assert main([*args, "--out", str(tmp_path / "lmms"), "--rule", "lmms_eval"]) == 0
    lmms = _metrics(tmp_path / "lmms")
    assert (lmms["accuracy"], lmms["rule"], lmms["per_subject"]["language science"]) == (66.67, "lmms_eval", 100.0)
    assert "sqa_process_results" in lmms["metric_rule"] and "unparsed" not in lmms
    assert main([*args, "--out", str(tmp_path / "limited"), "--limit", "3"]) == 0
    limited = _metrics(tmp_path / "limited")  # stratified by subject: one of each
    assert limited["num_questions"] == 3 and None not in limited["per_subject"].values()


def test_run_with_a_tiny_llava_and_score_agree(files, tmp_path):
    from llava_fixtures import build_tiny_llava

    model = build_tiny_llava(tmp_path / "llava")
    out = tmp_path / "run"
    run = ["scienceqa", "run", *_args(files, "--image-root", str(files["images"] / "test")), "--model", str(model),
           "--out", str(out), "--device", "cpu", "--no-progress", "--batch-size", "4"]  # fmt: skip
    assert main(run) == 0
    m = _metrics(out)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["question_id"] for r in rows) == IMAGE_PIDS
    assert m["num_questions"] == 6 and m["data_counts"]["no_image"] == 2 and m["image_errors"] == 0
    assert set(m["per_subject"]) == {"natural science", "social science", "language science"}
    score = ["scienceqa", "score", *_args(files), "--predictions", str(out / "predictions.jsonl")]
    assert main([*score, "--out", str(tmp_path / "scored")]) == 0
    scored = _metrics(tmp_path / "scored")
    for key in ("accuracy", "per_subject", "per_context", "per_grade", "unparsed"):
        assert scored[key] == m[key], key
    # the Evaluator entry (`eval run scienceqa synthetic=3`): the synthetic set in ScienceQA's own layout
    synthetic = ScienceQA.of(synthetic=3, device="cpu", batch_size=4).run(model, tmp_path / "synthetic")
    assert synthetic["num_questions"] == 3 and synthetic["coverage"]["missing"] == 0 and synthetic["scored"]


def test_bad_files_are_one_line_errors(files, tmp_path, capsys):
    (tmp_path / "problems.json").write_text(json.dumps([1, 2]))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"train": []}))
    base = ["scienceqa", "score", "--predictions", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "o")]
    for flags, says in (
        (["--problems", str(tmp_path / "problems.json")], "problems.json: expected a JSON object"),
        (["--problems", str(files["problems"]), "--pid-splits", str(tmp_path / "pid_splits.json")], "'test'"),
        (["--problems", str(files["problems"]), "--llava-questions", str(tmp_path / "pid_splits.json")], "a JSON list"),
        (["--problems", str(tmp_path / "missing.json")], "no such ScienceQA problems.json"),
    ):
        assert main([*base, *flags]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err, err
    assert main(["scienceqa", "run", "--problems", str(files["problems"]), "--model", "m", "--out", "o"]) == 2
    assert "--image-root" in capsys.readouterr().err


def test_a_data_file_broken_in_part_is_refused_naming_file_and_problem(files, tmp_path, capsys):
    # input policy: a problem of another shape, or a pid problems.json lacks, is refused (it was counted and skipped)
    doc = json.loads(files["problems"].read_text())
    base = ["scienceqa", "score", "--predictions", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "o")]
    for pid, broken, says in (("7", {"choices": ["one"]}, "problem '7' is not"),
                              ("8", {"answer": 2}, "problem '8' is not")):  # fmt: skip
        (tmp_path / "problems.json").write_text(json.dumps({**doc, pid: {**doc[pid], **broken}}))
        flags = ["--problems", str(tmp_path / "problems.json"), "--pid-splits", str(files["pid_splits"])]
        assert main([*base, *flags]) == 2
        err = _one_line(capsys)
        assert "problems.json" in err and says in err, err
    (tmp_path / "splits.json").write_text(json.dumps({"test": ["5", "999"]}))
    assert main([*base, "--problems", str(files["problems"]), "--pid-splits", str(tmp_path / "splits.json")]) == 2
    err = _one_line(capsys)
    assert "splits.json" in err and "'999'" in err, err


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_input_policy_on_a_predictions_file(files, tmp_path, capsys):
    # 5 answered twice (the last, "B", kept: right); 6's row torn (malformed, counted and warned); 7 null (missing)
    lines = [json.dumps({"question_id": 5, "answer": "C"}), json.dumps({"question_id": 6, "answer": "A"})[:15],
             json.dumps({"question_id": 7, "answer": None}), json.dumps({"question_id": 5, "answer": "B"}),
             json.dumps({"question_id": 8, "answer": "A"})]  # fmt: skip
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    args = ["scienceqa", "score", *_args(files), "--predictions", str(tmp_path / "p.jsonl"), "--out", str(tmp_path)]
    assert main(args) == 0
    m, err = _metrics(tmp_path), capsys.readouterr().err
    assert m["accuracy"] == round(100 * 2 / 6, 2) and m["missing_predictions"] == 4
    assert (m["input"]["duplicate_ids"], m["input"]["malformed_rows"], m["input"]["null_answers"]) == (1, 1, 1)
    assert m["input"]["missing_predictions"] == 4 and "p.jsonl" in err and "1 malformed rows skipped" in err
    assert "answered more than once" in err and "1 null answers (counted missing)" in err


def test_problems_without_an_answer_are_unannotated(files, tmp_path, capsys):
    doc = json.loads(files["problems"].read_text())
    doc["6"]["answer"] = None
    (tmp_path / "problems.json").write_text(json.dumps(doc))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"question_id": q, "answer": "A"}) + "\n" for q in (6, 8)))
    args = ["scienceqa", "score", "--problems", str(tmp_path / "problems.json"), "--pid-splits",
            str(files["pid_splits"]), "--predictions", str(tmp_path / "p.jsonl"),
            "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(args) == 0
    m = _metrics(tmp_path / "o")
    assert (m["num_questions"], m["accuracy"], m["input"]["unannotated"], m["data_counts"]["unannotated"]) == (
        5,
        20.0,
        1,
        1,
    )
    assert "1 of 6 questions have no gold answer (not scored)" in capsys.readouterr().err


def test_suite_layout(files, tmp_path):
    assert benchmarks()["scienceqa"] is ScienceQA and ScienceQA.folder == "scienceqa"
    values = ScienceQA.suite_config(files["root"])
    assert values == {"problems": str(files["problems"]), "pid_splits": str(files["pid_splits"]),
                      "image_root": str(files["images"] / "test"),
                      "llava_questions": str(files["questions"])}  # fmt: skip
    assert ScienceQA.suite_config(tmp_path) is None


def test_lmms_lab_parquet_and_lmms_eval_samples(files, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = []
    for pid in ("5", "4", "6"):  # lmms-lab's columns; "4" has no image
        question, choices, answer, hint, image, subject, grade = PROBLEMS[pid]
        data = (files["images"] / "test" / pid / image).read_bytes() if image else None
        rows.append({"image": {"bytes": data, "path": None}, "question": question, "choices": choices,
                     "answer": answer, "hint": hint, "subject": subject, "grade": grade})  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test-00000-of-00001.parquet")
    sset = load_scienceqa_parquet(tmp_path)
    assert [p.id for p in sset.items] == [0, 2] and sset.doc_rows == [0, None, 2]
    assert sset.counts["no_image"] == 1 and sset.items[0].load_image().size == (29, 20)
    samples = [{"doc_id": 0, "target": "B", "filtered_resps": "B", "exact_match": 1.0},
               {"doc_id": 2, "target": "A", "filtered_resps": "C", "exact_match": 0.0}]  # fmt: skip
    (tmp_path / "samples_scienceqa_img.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    samples_file = tmp_path / "samples_scienceqa_img.jsonl"
    args = ["scienceqa", "score", "--parquet", str(tmp_path), "--predictions", str(samples_file)]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    assert _metrics(tmp_path / "o")["accuracy"] == 50.0

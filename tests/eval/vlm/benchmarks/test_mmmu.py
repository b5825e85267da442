"""MMMU: MMMU's answer-parsing rules on hand-worked cases, the authors' and lmms-lab's parquet layouts, `score` and a
tiny LLaVA `run` end to end, and one-line errors on bad files."""

import io
import json
import random
import sys
from pathlib import Path

import pytest
from PIL import Image

from eval.cli import main
from eval.vlm.benchmarks.mmmu import MMMU, MMMUQuestion, load_mmmu, mmmu_prompt
from eval.vlm.scoring.mmmu import (
    eval_multi_choice,
    eval_open,
    extract_numbers,
    normalize_str,
    parse_multi_choice,
    parse_open,
)
from pretrain.runtime.errors import UserError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

OPTIONS = ["0.5", "1.5", "red triangle", "blue square"]
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SCHEMA = pa.schema(
    [("id", pa.string()), ("question", pa.string()), ("options", pa.string()), ("explanation", pa.string())]
    + [(f"image_{n}", IMAGE) for n in range(1, 8)]
    + [(name, pa.string()) for name in ("img_type", "answer", "topic_difficulty", "question_type", "subfield")]
)


# ----------------------------------------------------------------------------------------------- MMMU's rules
def _mc(response, rule="official", options=OPTIONS, seed=0):
    return parse_multi_choice(response, options, random.Random(seed), rule)


def test_multi_choice_letters_follow_mmmu_rules():
    # Brackets first, then a letter standing alone (the response padded with spaces, end punctuation stripped).
    assert _mc("(B)") == ("B", False) and _mc("B") == ("B", False) and _mc("B.") == ("B", False)
    assert _mc("  C  ") == ("C", False) and _mc("Answer: D") == ("D", False)
    # Several: the one written last; brackets beat bare letters, so the last bracket wins even after "not".
    assert _mc("A B") == ("B", False) and _mc("The answer is (B), not (A).") == ("A", False)
    assert _mc("(C) B") == ("C", False)
    # "B. 0.5": no "(B)", no " B ", two words: nothing is read and the official rule guesses; lmms-eval 0.7 reads "B."
    assert _mc("B. 0.5")[1] is True and _mc("B. 0.5", "lmms_eval") == ("B", False)
    # Lower-case letters are not letters; a short numeric answer is not an option text (5 words or fewer).
    assert _mc("b")[1] is True and _mc("The answer is 0.5")[1] is True
    # lmms-eval 0.7 also reads a capital followed by a space anywhere ("DNA " names A).
    assert _mc("DNA is it")[1] is True and _mc("DNA is it", "lmms_eval") == ("A", False)


def test_multi_choice_option_text_and_random_guesses():
    # More than 5 words: an option's text names it (case-insensitive), the one written last among several.
    assert _mc("I am quite sure it is the red triangle") == ("C", False)
    assert _mc("not the blue square but rather the Red Triangle here") == ("C", False)
    assert _mc("it is the red triangle and not the blue square") == ("D", False)
    assert _mc("it is red")[1] is True  # three words: too short for option texts
    # Nothing read: a random letter from one stream seeded 42 (eval_utils.py's random.seed(42); random.choice).
    rng = random.Random(42)
    draws = [parse_multi_choice("no idea", OPTIONS, rng) for _ in range(4)]
    assert draws == [("A", True), ("A", True), ("C", True), ("B", True)]
    assert parse_multi_choice("no idea", ["x", "y", "z"], random.Random(42)) == ("C", True)
    assert eval_multi_choice("B", "B") and not eval_multi_choice("B", "C") and eval_multi_choice(["A", "C"], "C")


def test_open_answers_follow_mmmu_rules():
    assert parse_open("The answer is 3.5") == [3.5]  # the shortest tail after a cue ("is ", "answer ")
    assert eval_open("3.5", parse_open("The answer is 3.5")) and eval_open("3.50", parse_open("The answer is 3.5"))
    assert not eval_open("35", parse_open("The answer is 3.5"))
    # Numbers with units: the text and every number in it are predictions; numbers compare as floats (2 decimals).
    assert sorted(map(str, parse_open("36 watts"))) == ["36 watts", "36.0"]
    assert eval_open("36", parse_open("36 watts")) and not eval_open("30", parse_open("36 watts"))
    assert eval_open("1200", parse_open("The speed is 1,200 m/s")) and eval_open("5", parse_open("x = 5 cm"))
    assert eval_open("0.333", parse_open("0.3333")) and not eval_open("0.34", parse_open("0.3333"))
    assert extract_numbers("1,200 m") == ["1,200", "200"]  # the official patterns also find the tail "200"
    assert extract_numbers("1.5e3 J, -0.25") == ["1.5e3", "1", "3", "-0.25"]
    # Text: the normalised answer inside a prediction; a one-letter answer only as a word.
    assert eval_open("Transformation", parse_open("It is a transformation process."))
    assert normalize_str(" C ") == [" c", "c "] and normalize_str("1,000.456") == [1000.46]
    assert eval_open("C", parse_open("C")) and not eval_open("C", parse_open("Cat"))
    # An answer list (answer_dict_val.json's three open questions): any of them.
    assert eval_open(["24/7", "3.429"], parse_open("3.429")) and not eval_open(["24/7", "3.429"], parse_open("3.4"))
    assert parse_open("Answer: 12.97\nThus the value is 13") == [13.0]  # per line; the last line's "is " tail


# ----------------------------------------------------------------------------------------------- files
def _png(colour) -> dict:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), colour).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _row(qid, question, answer, options=OPTIONS, qtype="multiple-choice", images=1):
    row = {"id": qid, "question": question, "options": str(list(options)),
           "explanation": "", "img_type": "['Diagrams']", "answer": answer, "topic_difficulty": "Easy",
           "question_type": qtype, "subfield": "x"}  # fmt: skip
    for n in range(1, 8):
        row[f"image_{n}"] = _png((40 * n, 0, 0)) if n <= images else None
    return row


def _subject_rows():
    """Per subject, in the hub's row layout; with 2 malformed rows, 1 duplicate id, 1 missing and 1 second image."""
    return {
        "Accounting": [
            _row("validation_Accounting_1", "<image 1> Which one?", "A"),
            _row("validation_Accounting_2", "<image 1> Which one?", "C"),
            _row("validation_Accounting_3", "<image 1> Which one?", "C", ["revenue", "cost", "liability", "tax"]),
            _row("validation_Accounting_4", "<image 1> Which one?", "D"),
            {**_row("validation_Accounting_5", "<image 1> Broken options", "A"), "options": "A, B"},
            _row("validation_Accounting_6", "<image 1> Answer out of range", "F"),
            _row("validation_Accounting_1", "<image 1> A duplicate", "A"),
        ],
        "Art": [
            _row("validation_Art_1", "What does <image 1> show?", "A"),
            _row("validation_Art_2", "What does <image 1> show?", "B"),
            _row("validation_Art_3", "What does <image 1> show?", "A"),
            _row("validation_Art_4", "Compare <image 1> and <image 2>.", "D", images=2),
        ],
        "Math": [
            _row("validation_Math_1", "<image 1> What is x?", "3.5", options=[], qtype="open"),
            _row("validation_Math_2", "<image 1> What is y?", "['24/7', '3.429']", options=[], qtype="open"),
            _row("validation_Math_3", "<image 1> Which value?", "B"),
            _row("validation_Math_4", "<image 1> Which value?", "A", images=0),
        ],
    }


def _write(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    return path


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """MMMU/MMMU as distributed: one folder per subject, `validation-00000-of-00001.parquet` (and a dev split)."""
    root = tmp_path_factory.mktemp("mmmu") / "MMMU"
    for subject, rows in _subject_rows().items():
        _write(root / subject / "validation-00000-of-00001.parquet", rows)
        _write(root / subject / "dev-00000-of-00001.parquet", rows[:1])
    return root


@pytest.fixture(scope="module")
def lmms_lab(tmp_path_factory):
    """lmms-lab's MMMU: every subject in `data/validation-*.parquet` (Math first, to tell file order from ours)."""
    rows = _subject_rows()
    root = tmp_path_factory.mktemp("lmms_lab") / "MMMU"
    _write(root / "data" / "validation-00000-of-00002.parquet", rows["Math"] + rows["Art"])
    _write(root / "data" / "validation-00001-of-00002.parquet", rows["Accounting"])
    return root


def test_reader_counts_skips_and_layouts(hub, lmms_lab):
    mset = load_mmmu(hub, skip_multi_image=False)
    assert [q.id for q in mset.items][:4] == [f"validation_Accounting_{i}" for i in range(1, 5)]
    # the policy's count names (malformed_rows, duplicate_ids were the old ones), and unannotated
    assert mset.counts == {"malformed_questions": 2, "duplicate_questions": 1, "missing_images": 1, "multi_image": 1,
                           "unannotated": 0}  # fmt: skip
    assert mset.doc_rows is None and len(mset.items) == 12
    math2 = next(q for q in mset.items if q.id == "validation_Math_2")
    assert (math2.subject, math2.question_type, math2.answer) == ("Math", "open", ["24/7", "3.429"])
    bench = MMMU.of(parquet=str(hub))
    assert bench.describe()["num_questions"] == 11 and bench.describe()["skipped_multi_image"] == 1
    requests = bench.requests()
    assert len(requests) == 10 and "validation_Math_4" not in {r.id for r in requests}  # its image is missing
    assert requests[0].image().size == (40, 40)
    first = MMMU.of(parquet=str(hub), multi_image="first")
    assert len(first.requests()) == 11 and first.describe()["skipped_multi_image"] == 0
    art4 = next(q for q in first.questions if q.id == "validation_Art_4")
    assert art4.placeholders == [1, 2] and art4.image_number == 1
    lab = load_mmmu(lmms_lab, skip_multi_image=False)
    assert lab.doc_rows[:2] == ["validation_Math_1", "validation_Math_2"] and len(lab.doc_rows) == 15
    assert sorted(q.id for q in lab.items) == sorted(q.id for q in mset.items) and lab.counts == mset.counts
    assert len(load_mmmu(hub, "dev").items) == 3
    limited = load_mmmu(hub, limit=6, skip_multi_image=False).items  # stratified by subject: 2 per subject
    assert [q.subject for q in limited] == ["Accounting"] * 2 + ["Art"] * 2 + ["Math"] * 2
    assert [q.id for q in limited] == [q.id for q in load_mmmu(hub, limit=6, skip_multi_image=False).items]


def test_prompts_are_lmms_evals_and_mmmus():
    q = MMMUQuestion("validation_Art_1", "Art", "What does <image 1> show?", ["a cat", "a dog"], "A", "multiple-choice")
    want = "What does <image 1> show?\nA. a cat\nB. a dog\n\nAnswer with the option's letter from the given choices "
    assert mmmu_prompt(q) == mmmu_prompt(q, "lmms_eval") == want + "directly."
    want = "What does <image 1> show?\n(A) a cat\n(B) a dog\n\nAnswer with the option's letter from the given choices "
    assert mmmu_prompt(q, "mmmu") == want + "directly."
    q.question_type, q.options = "open", []
    assert mmmu_prompt(q) == "What does <image 1> show?\n\nAnswer the question using a single word or phrase."
    assert mmmu_prompt(q, "mmmu") == "What does <image 1> show?\nAnswer the question using a single word or phrase."
    with pytest.raises(UserError, match="prompt layout"):
        mmmu_prompt(q, "gpt")


# ----------------------------------------------------------------------------------------------- score and run
PREDICTIONS = {
    "validation_Accounting_1": "A",  # right
    "validation_Accounting_2": "no idea",  # guess 1: A (answer C; the third guess would be right)
    "validation_Accounting_3": "I believe the right choice here is liability",  # option text: C, right
    "validation_Art_1": "(A)",  # right
    "validation_Art_2": "The answer is (B), not (A).",  # the last bracket: A, wrong
    "validation_Art_3": "hmm",  # guess 2: A, right
    "validation_Art_4": "D",  # several images: skipped unless --multi-image first
    "validation_Math_1": "The answer is 3.50 cm",  # 3.5, right
    "validation_Math_2": "3.429",  # one of the listed answers, right
    "validation_Math_3": "B. 0.5",  # guess 3: C (answer B); lmms-eval's rule reads B
}  # Accounting_4 and Math_4 (no image) have none: missing, wrong


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _score(hub, predictions, out, *flags):
    assert main(["mmmu", "score", "--parquet", str(hub), "--predictions", str(predictions), "--out", str(out),
                 *flags]) == 0  # fmt: skip
    return json.loads((out / "metrics.json").read_text())


def test_score_per_discipline_subject_and_guesses(hub, tmp_path, capsys):
    preds = _jsonl(tmp_path / "p.jsonl", [{"question_id": k, "answer": v} for k, v in PREDICTIONS.items()])
    m = _score(hub, preds, tmp_path / "o")
    assert m["accuracy"] == round(100 * 6 / 11, 2) and m["num_questions"] == 11
    assert (m["random_guesses"], m["missing_predictions"], m["skipped_multi_image"]) == (3, 2, 1)
    assert m["coverage"]["unknown"] == 1  # Art_4's answer is for no question of the scored set
    assert m["per_discipline"] == {
        "Art & Design": {"accuracy": 66.67, "num_questions": 3},
        "Business": {"accuracy": 50.0, "num_questions": 4},
        "Science": {"accuracy": 50.0, "num_questions": 4},
    }
    assert m["per_subject"]["Art"] == {"accuracy": 66.67, "num_questions": 3} and list(m["per_subject"]) == [
        "Accounting", "Art", "Math"]  # fmt: skip
    assert m["per_question_type"] == {"multiple-choice": {"accuracy": 44.44, "num_questions": 9},
                                      "open": {"accuracy": 100.0, "num_questions": 2}}  # fmt: skip
    # `--parser mmmu|lmms_eval` is now the base's `--rule official|lmms_eval` (metrics.json: `rule`, was `parser`)
    assert (m["prompt"], m["rule"], m["multi_image"], m["guess_seed"]) == ("llava", "official", "skip", 42)
    assert m["data_counts"]["malformed_questions"] == 2 and m["files"] == {}
    assert "| mmmu" in capsys.readouterr().out
    again = _score(hub, preds, tmp_path / "o2")  # the guesses are the same every time
    assert again["accuracy"] == m["accuracy"] and again["per_subject"] == m["per_subject"]
    lmms = _score(hub, preds, tmp_path / "lmms", "--rule", "lmms_eval")  # "B. 0.5" read: one guess fewer
    assert (lmms["accuracy"], lmms["random_guesses"]) == (round(100 * 7 / 11, 2), 2)
    first = _score(hub, preds, tmp_path / "first", "--multi-image", "first")
    assert (first["accuracy"], first["num_questions"], first["skipped_multi_image"]) == (round(100 * 7 / 12, 2), 12, 0)


def test_lmms_eval_samples_are_matched_by_doc_id_in_lmms_labs_split(hub, lmms_lab, tmp_path):
    order = load_mmmu(lmms_lab).doc_rows
    samples = [{"doc_id": i, "target": "", "filtered_resps": PREDICTIONS[qid], "mmmu_acc": {"id": qid}}
               for i, qid in enumerate(order) if qid in PREDICTIONS]  # fmt: skip
    log = _jsonl(tmp_path / "20260101_samples_mmmu_val.jsonl", samples)
    ours = _jsonl(tmp_path / "p.jsonl", [{"question_id": k, "answer": v} for k, v in PREDICTIONS.items()])
    # Its rows run Math first; the guesses are drawn in the official order (subjects alphabetically) all the same.
    got, want = _score(lmms_lab, log, tmp_path / "lmms"), _score(hub, ours, tmp_path / "ours")
    assert got["predictions"]["format"] == "lmms_eval"
    assert got["accuracy"] == want["accuracy"] and got["per_subject"] == want["per_subject"]


def test_run_with_a_tiny_llava_and_score_agree(hub, tmp_path):
    from llava_fixtures import build_tiny_llava

    model = build_tiny_llava(tmp_path / "llava")
    out = tmp_path / "run"
    args = ["mmmu", "run", "--model", str(model), "--parquet", str(hub), "--out", str(out), "--device", "cpu",
            "--no-progress", "--max-new-tokens", "6", "--batch-size", "4"]  # fmt: skip
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and m["num_requests"] == 10 and m["num_questions"] == 11
    assert m["missing_predictions"] == 1 and m["scored"] and 0 <= m["accuracy"] <= 100
    assert m["max_new_tokens"] == 6 and set(m["per_discipline"]) == {"Art & Design", "Business", "Science"}
    scored = _score(hub, out / "predictions.jsonl", tmp_path / "scored")
    for key in ("accuracy", "per_discipline", "per_subject", "random_guesses", "missing_predictions"):
        assert scored[key] == m[key]
    request = MMMU.of(parquet=str(hub)).requests()[0]
    assert "USER: <image>\n<image 1> Which one?\nA. 0.5\n" in request.prompt
    assert request.prompt.endswith("directly. ASSISTANT:") and request.max_new_tokens == 128


def test_test_split_writes_a_submission(tmp_path):
    rows = [_row("test_Art_1", "<image 1> Which?", "?"), _row("test_Math_1", "<image 1> x?", "", [], "open")]
    root = tmp_path / "MMMU"
    for row in rows:
        _write(root / row["id"].split("_")[1] / "test-00000-of-00001.parquet", [row])
    preds = _jsonl(tmp_path / "p.jsonl", [{"question_id": "test_Art_1", "answer": "(C)"},
                                          {"question_id": "test_Math_1", "answer": " 4 cm "}])  # fmt: skip
    m = _score(root, preds, tmp_path / "o", "--split", "test")
    assert m["scored"] is False and m["accuracy"] is None and m["split"] == "test"
    assert m["input"]["unannotated"] == 0 and m["data_counts"]["unannotated"] == 2  # a test split: no warning
    sub = json.loads((tmp_path / "o" / "submission.json").read_text())
    assert sub == {"test_Art_1": "C", "test_Math_1": "4 cm"}


# ----------------------------------------------------------------------------------------------- bad files
def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_bad_files_are_one_line_errors(hub, tmp_path, capsys):
    preds = _jsonl(tmp_path / "p.jsonl", [{"question_id": "validation_Art_1", "answer": "A"}])
    base = ["mmmu", "score", "--predictions", str(preds), "--out", str(tmp_path / "o")]
    rows = [{k: v for k, v in _row("validation_Art_1", "q", "A").items() if k != "question_type"}]
    no_type = tmp_path / "bad" / "validation-0.parquet"
    no_type.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), no_type)
    assert main([*base, "--parquet", str(no_type)]) == 2
    err = _one_line(capsys)
    assert str(no_type) in err and "'question_type'" in err
    garbage = tmp_path / "junk" / "validation-0.parquet"
    garbage.parent.mkdir()
    garbage.write_bytes(b"not parquet at all")
    assert main([*base, "--parquet", str(garbage.parent)]) == 2
    assert "not a readable parquet file" in _one_line(capsys)
    assert main([*base, "--parquet", str(hub), "--split", "test"]) == 2
    assert "no test-*.parquet" in _one_line(capsys)
    assert main([*base, "--parquet", str(tmp_path / "nowhere")]) == 2
    assert "no such MMMU parquet" in _one_line(capsys)


def test_missing_pyarrow_is_one_line(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    preds = _jsonl(tmp_path / "p.jsonl", [{"question_id": "validation_Art_1", "answer": "A"}])
    assert main(["mmmu", "score", "--parquet", str(hub), "--predictions", str(preds), "--out", str(tmp_path)]) == 2
    assert "needs pyarrow (pip install pyarrow)" in _one_line(capsys)


def test_suite_finds_either_layout(hub, lmms_lab, tmp_path):
    from eval.vlm.registry import benchmarks

    cls = benchmarks()["mmmu"]
    assert cls is MMMU and cls.suite_config(hub) == {"parquet": str(hub), "split": "validation"}
    assert cls.suite_config(lmms_lab) == {"parquet": str(lmms_lab), "split": "validation"}
    (tmp_path / "empty").mkdir()
    assert cls.suite_config(tmp_path / "empty") is None
    assert (cls.folder, cls.headline, cls.published) == ("MMMU", "accuracy", {"superclass_table11": 36.0})


def test_input_policy_on_a_predictions_file(hub, tmp_path, capsys):
    # Art_1 answered twice (the last, "(A)", kept: right); a torn row (malformed); Art_3 null (missing, no guess drawn)
    lines = [json.dumps({"question_id": "validation_Art_1", "answer": "(B)"}), '{"question_id": "validation_Ar',
             json.dumps({"question_id": "validation_Art_3", "answer": None}),
             json.dumps({"question_id": "validation_Art_1", "answer": "(A)"}),
             json.dumps({"question_id": "validation_Math_1", "answer": "3.5"})]  # fmt: skip
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    m, err = _score(hub, tmp_path / "p.jsonl", tmp_path / "o"), capsys.readouterr().err
    assert m["accuracy"] == round(100 * 2 / 11, 2) and m["missing_predictions"] == 9 and m["random_guesses"] == 0
    assert (m["input"]["duplicate_ids"], m["input"]["malformed_rows"], m["input"]["null_answers"]) == (1, 1, 1)
    assert "p.jsonl" in err and "1 malformed rows skipped" in err and "answered more than once" in err
    assert "1 null answers (counted missing)" in err


def test_validation_rows_without_an_answer_are_unannotated(tmp_path, capsys):
    # rows of another shape in a parquet are counted (malformed_questions); a torn file is refused (test_bad_files)
    rows = [_row("validation_Art_1", "<image 1> Which?", "A"), _row("validation_Art_2", "<image 1> Which?", "?"),
            _row("validation_Art_3", "<image 1> Which?", "B")]  # fmt: skip
    root = _write(tmp_path / "MMMU" / "Art" / "validation-00000-of-00001.parquet", rows).parent.parent
    preds = _jsonl(tmp_path / "p.jsonl", [{"question_id": f"validation_Art_{i}", "answer": "A"} for i in (1, 2, 3)])
    m = _score(root, preds, tmp_path / "o")
    assert (m["num_questions"], m["accuracy"], m["input"]["unannotated"], m["scored"]) == (2, 50.0, 1, True)
    assert "1 of 3 questions have no gold answer (not scored)" in capsys.readouterr().err

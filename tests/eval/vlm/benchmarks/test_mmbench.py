"""MMBench: TSV reading (and refusing), circular grouping and rotation, answer extraction by both rules against
hand-worked cases, scoring, the input policy and submission files, and `eval mmbench run|score` with a tiny LLaVA."""

import base64
import csv
import io
import json

import pytest
from PIL import Image

from eval.cli import main
from eval.vlm.benchmarks.mmbench import (
    MMBench,
    MMBenchRow,
    circular_rows,
    load_mmbench,
    submission_rows,
    write_submission,
)
from eval.vlm.scoring.mmbench import extract_choice, lmms_eval_choice, score_mmbench
from pretrain.runtime.errors import DataError, UserError

HEADER = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "l2-category", "split"]


def _png_b64(colour=(200, 30, 30)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _row(index, options, answer, category="colour", image=None, hint="", question="What colour is it?"):
    opts = dict(zip("ABCD", [*options, "", "", "", ""]))
    return {"index": index, "question": question, "hint": hint, **opts, "answer": answer, "category": category,
            "image": _png_b64() if image is None else image, "l2-category": "attribute", "split": "dev"}  # fmt: skip


def _write_tsv(path, rows, header=HEADER):
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def circular_tsv(tmp_path):
    """Two questions as MMBench ships them: copies at index + k * 1e6 (images by reference to the main row)."""
    rows = [
        _row(1, ["red", "green", "blue"], "A"),
        _row(1_000_001, ["green", "blue", "red"], "C", image="1"),
        _row(2_000_001, ["blue", "red", "green"], "B", image="1"),
        _row(2, ["1", "2", "3", "4"], "B", category="count"),
        _row(1_000_002, ["2", "3", "4", "1"], "A", category="count", image="2"),
    ]
    return _write_tsv(tmp_path / "dev.tsv", rows)


def test_circular_groups_count_only_when_every_copy_is_right(circular_tsv):
    mset = load_mmbench(circular_tsv)
    assert mset.info["circular"] == "tsv" and len(mset.items) == 5
    # the policy's count names (were malformed_rows, bad_images, duplicate_rows); malformed rows are now refused
    assert mset.counts == {"duplicate_questions": 0, "missing_images": 0, "copies_left_out": 0, "unannotated": 0}
    assert all(r.image for r in mset.items)  # the copies' "1"/"2" image fields were followed
    preds = {1: "A", 1_000_001: "(C)", 2_000_001: "The answer is B.", 2: "B", 1_000_002: "D"}
    result = score_mmbench(mset.items, preds, "tsv")
    assert result["accuracy"] == 50.0  # question 1 right everywhere; question 2 wrong on its copy
    assert result["accuracy_single_pass"] == 100.0
    assert result["per_category"] == {"colour": 100.0, "count": 0.0}
    assert result["per_l2_category"] == {"attribute": 50.0}
    assert result["num_questions"] == 2 and result["num_rows"] == 5
    assert result["unparsed"] == 0 and result["missing_predictions"] == 0
    preds.pop(2_000_001)
    preds[1] = "no idea"
    result = score_mmbench(mset.items, {**preds, 7: "A"}, "tsv")
    assert result["accuracy"] == 0.0
    assert (result["missing_predictions"], result["unparsed"], result["unknown_predictions"]) == (1, 1, 1)


def test_circular_off_keeps_the_main_rows(circular_tsv):
    mset = load_mmbench(circular_tsv, circular="off")
    assert mset.info["circular"] == "off" and [r.id for r in mset.items] == [1, 2]
    assert mset.counts["copies_left_out"] == 3
    assert score_mmbench(mset.items, {1: "A", 2: "B"}, "off")["accuracy"] == 100.0


def test_rotated_copies_when_the_tsv_has_none(tmp_path):
    path = _write_tsv(tmp_path / "plain.tsv", [_row(5, ["cat", "dog", "cow", "pig"], "B")])
    mset = load_mmbench(path)
    assert mset.info["circular"] == "rotated"
    got = [(r.id, r.options, r.answer, r.rotation) for r in mset.items]
    assert got == [
        (5, ["cat", "dog", "cow", "pig"], "B", 0),
        (1_000_005, ["dog", "cow", "pig", "cat"], "A", 1),
        (2_000_005, ["cow", "pig", "cat", "dog"], "D", 2),
        (3_000_005, ["pig", "cat", "dog", "cow"], "C", 3),
    ]
    assert all(r.options[" ABCD".index(r.answer) - 1] == "dog" for r in mset.items)
    right = {r.id: r.answer for r in mset.items}
    assert score_mmbench(mset.items, right, "rotated")["accuracy"] == 100.0
    # A model that always answers "B" is right on the original only: CircularEval gives 0.
    assert score_mmbench(mset.items, dict.fromkeys(right, "B"), "rotated")["accuracy"] == 0.0
    with pytest.raises(UserError, match="circular"):
        circular_rows(mset.items, "always")


OPTIONS = ["red", "dark red", "blue", "green"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("(C)", "C"),
        ("D.", "D"),
        ("A)", "A"),
        ("The answer is A.", "A"),
        ("Answer: (D)", "D"),
        ("C. blue", "C"),
        ("I would say option B here", "B"),
        ("blue", "C"),  # the option text exactly
        ("Green.", "D"),
        ("it is dark red", "B"),  # the longer option wins over the one it contains
        ("red or blue", None),  # two options: ambiguous
        ("B, C", None),  # hedges naming several letters are not read as their first or last letter
        ("The answer is A or B", None),
        ("A and B", None),
        ("Neither A nor B", None),
        ("A/B", None),
        ("(B) or (D).", None),
        ("A", "A"),
        ("(A)", "A"),
        ("A.", "A"),
        ("The answer is B.", "B"),
        ("C. A dark red one", "C"),  # "A" before an ordinary word is the article
        ("E", None),  # not an option of this question
        ("a purple thing", None),
        ("", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text, OPTIONS) == expected


def test_a_letter_inside_a_quoted_option_is_not_a_hedge():
    options = ["Vitamin A", "Vitamin C", "Vitamin D"]
    assert extract_choice("B. Vitamin C", options) == "B"
    assert extract_choice("A. Vitamin A", options) == "A"
    assert extract_choice("B or C", options) is None


def test_prompt_layouts():
    row = MMBenchRow(0, "Which one?", ["x", "y"], "A", "Look left.", "c", None, None)
    assert MMBench.of(prompt="llava").prompt(row) == (
        "Look left.\nWhich one?\nA. x\nB. y\nAnswer with the option's letter from the given choices directly."
    )
    assert MMBench.of(prompt="lmms_eval").prompt(row) == (
        "Look left. Which one? There are several options:\nA. x\nB. y\n\n"
        "Answer with the option's letter from the given choices directly."
    )
    row.hint = None
    assert MMBench.of().prompt(row).startswith("Which one?\nA. x")
    with pytest.raises(UserError, match="prompt layout"):
        MMBench.of(prompt="qwen").prompt(row)


def test_bad_images_and_duplicates_counted_malformed_rows_refused_naming_file_and_line(tmp_path):
    header = [h for h in HEADER if h != "question"]
    with pytest.raises(DataError, match=r"missing column 'question'.*") as err:
        load_mmbench(_write_tsv(tmp_path / "noq.tsv", [_row(1, ["a", "b"], "A")], header))
    assert "noq.tsv" in str(err.value) and "\n" not in str(err.value)
    rows = [
        _row(1, ["a", "b"], "A"),
        _row(2, ["a", "b"], "A", image="not base64!!"),
        _row(3, ["a", "b"], "A", image=base64.b64encode(b"not an image").decode()),
        _row(1, ["a", "b"], "A"),  # duplicate index: counted, the first kept
    ]
    mset = load_mmbench(_write_tsv(tmp_path / "bad.tsv", rows), circular="off")
    assert mset.counts == {"duplicate_questions": 1, "missing_images": 2, "copies_left_out": 0, "unannotated": 0}
    bench = MMBench.of(tsv=str(tmp_path / "bad.tsv"), circular="off")
    assert [r.id for r in bench.requests()] == [1]  # rows without a usable image are not run
    assert bench.requests()[0].image().size == (4, 4)
    assert score_mmbench(mset.items, {1: "A"}, "off")["missing_predictions"] == 2  # ... and score as wrong
    # a row that is not MMBench's shape was counted and skipped; now the file is refused (a file broken in part)
    broken = [(_row("x", ["a", "b"], "A"), "index 'x'"), (_row(4, ["a"], "A"), "fewer than two options"),
              (_row(5, ["a", "b"], "C"), "answer 'C'")]  # fmt: skip
    for bad, what in broken:
        with pytest.raises(DataError) as err:
            load_mmbench(_write_tsv(tmp_path / "broken.tsv", [rows[0], rows[1], bad, rows[2]]))
        assert f"broken.tsv: line 4 is not an MMBench row: {what}" in str(err.value) and "\n" not in str(err.value)
    path = _write_tsv(tmp_path / "torn.tsv", rows[:3])
    text = path.read_text()
    path.write_text(text[: text.rindex("\t", 0, -40)])  # cut inside the last row: fewer fields than the header
    with pytest.raises(DataError, match=r"torn.tsv: line 4 is not an MMBench row: its fields do not match"):
        load_mmbench(path)


def test_unannotated_rows_counted_and_a_test_tsv_gives_a_submission(tmp_path, capsys):
    rows = [_row(5, ["cat", "dog", "cow"], "B"), _row(6, ["x", "y"], ""), _row(7, ["x", "y"], "A")]
    path = _write_tsv(tmp_path / "dev.tsv", rows)
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"question_id": i, "answer": "A"}) + "\n" for i in (5, 6, 7)))
    cmd = ["mmbench", "score", "--tsv", str(path), "--circular", "off", "--predictions", str(preds)]
    assert main([*cmd, "--out", str(tmp_path / "o")]) == 0
    assert "1 of 3 questions have no gold answer (not scored)" in capsys.readouterr().err
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert (m["input"]["unannotated"], m["accuracy"], m["num_questions"]) == (1, 50.0, 2)
    test = _write_tsv(tmp_path / "test.tsv", [{**r, "answer": ""} for r in rows])
    cmd = ["mmbench", "score", "--tsv", str(test), "--predictions", str(preds), "--out", str(tmp_path / "t")]
    assert main(cmd) == 0 and "gold" not in capsys.readouterr().err  # a test split: a submission, no warning
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert m["scored"] is False and m["input"]["unannotated"] == 0 and (tmp_path / "t" / "submission.tsv").is_file()


def test_submission_tsv(tmp_path):
    path = _write_tsv(tmp_path / "plain.tsv", [_row(5, ["cat", "dog", "cow"], "B"), _row(6, ["x", "y"], "A")])
    mset = load_mmbench(path)
    preds = {5: "The answer is B", 1_000_005: "A", 2_000_005: "C", 6: "hmm"}
    rows = submission_rows(mset.items, preds)
    assert [r["index"] for r in rows] == [5, 6]  # the file's rows, not the rotated copies made here
    out = write_submission(tmp_path / "sub" / "submission.tsv", rows)
    with out.open(newline="") as f:
        back = list(csv.DictReader(f, delimiter="\t"))
    assert list(back[0]) == ["index", "question", "A", "B", "C", "D", "answer", "prediction"]
    assert [(r["index"], r["C"], r["D"], r["prediction"]) for r in back] == [
        ("5", "cow", "", "B"),
        ("6", "", "", "hmm"),
    ]
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="openpyxl"):
            write_submission(tmp_path / "submission.xlsx", rows)


# Worked by hand through lmms-eval 75571cfe: mmbench_evals.py can_infer_option (a letter of A-E alone among the
# words, else in one punctuated form; a bare "A" among more than 3 words is skipped), can_infer_text (one option text
# inside the lower-cased answer), then mcq_extract.py extract_mcq_answer (start 10 > end 9 > phrase 7 > "(X)" 6 >
# "X." 5 > "X:" 4 > "X)" 3 > "X " 2 > any occurrence 0; the last position within a form).
@pytest.mark.parametrize(
    ("text", "official", "lmms"),
    [
        ("A or B", None, "A"),  # extract: "A" at the start (10) beats "B" at the end (9)
        ("B, C", None, "C"),  # can_infer_option: "C" is the one bare letter among ["B,", "C"]
        ("The answer is A or B", None, "B"),  # extract: "B" at the end (9) beats the phrase's A and B (7)
        ("(B) or (D).", None, "B"),  # can_infer_option: "(B)" is the one "(X)" word ("(D)." is another form)
        ("Neither A nor B", None, "B"),  # extract: "B" at the end
        ("A dark red one", "B", "A"),  # 4 words: the bare "A" is skipped; two option texts; extract: "A" at the start
        ("Definitely", None, "D"),  # nothing else: extract's fallback finds the "D" of the word
        ("E", None, "E"),  # can_infer_option reads A-E whatever the options: a wrong letter, not unparsed
        ("I think it is blue", "C", "C"),  # can_infer_text: the one option text
        ("The answer is B.", "B", "B"),
        ("nothing", None, None),
    ],
)
def test_lmms_eval_rule_hand_worked(text, official, lmms):
    assert (extract_choice(text, OPTIONS), lmms_eval_choice(text, OPTIONS)) == (official, lmms)


def test_lmms_eval_rule_scores_circular_groups(circular_tsv):
    items = load_mmbench(circular_tsv).items  # answers: 1 A, 1000001 C, 2000001 B; 2 B, 1000002 A
    preds = {1: "A or B", 1_000_001: "(C)", 2_000_001: "The answer is A or B", 2: "B", 1_000_002: "Definitely"}
    ours, lmms = score_mmbench(items, preds, "tsv"), score_mmbench(items, preds, "tsv", "lmms_eval")
    assert (ours["accuracy"], ours["accuracy_single_pass"], ours["unparsed"]) == (0.0, 50.0, 3)
    assert (lmms["accuracy"], lmms["accuracy_single_pass"], lmms["unparsed"]) == (50.0, 100.0, 0)
    assert lmms["per_category"] == {"colour": 100.0, "count": 0.0}


def test_input_policy_on_a_predictions_file(circular_tsv, tmp_path, capsys):
    rows = [{"question_id": 1, "answer": "B"}, {"question_id": 1, "answer": "A"}, {"question_id": 1_000_001,
            "answer": "C"}, {"question_id": 2_000_001, "answer": "B"}, {"question_id": 2, "answer": None}]  # fmt: skip
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"question_id": 1000002, "ans\n')
    cmd = ["mmbench", "score", "--tsv", str(circular_tsv), "--predictions", str(preds), "--out", str(tmp_path / "o")]
    assert main(cmd) == 0
    err = capsys.readouterr().err
    assert "1 malformed rows skipped" in err and "1 ids answered more than once" in err and "1 null answers" in err
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert {k: m["input"][k] for k in ("malformed_rows", "duplicate_ids", "null_answers")} == dict.fromkeys(
        ("malformed_rows", "duplicate_ids", "null_answers"), 1
    )
    # the last answer of question 1 ("A") is kept: it is right on every copy; question 2 has no answer at all
    assert (m["accuracy"], m["missing_predictions"], m["per_category"]) == (50.0, 2, {"colour": 100.0, "count": 0.0})


def test_suite_finds_the_tsv(circular_tsv, tmp_path):
    cls = MMBench
    assert cls.folder == "mmbench" and cls.published["llava15_7b"] == 64.3
    (tmp_path / "mmbench_dev_20230712.tsv").write_text(circular_tsv.read_text())
    assert cls.suite_config(tmp_path) == {"tsv": str(tmp_path / "mmbench_dev_20230712.tsv")}
    assert cls.suite_config(tmp_path / "nothing") is None


def test_run_then_score_agree_in_both_layouts(circular_tsv, tmp_path):
    from llava_fixtures import build_tiny_llava

    model = build_tiny_llava(tmp_path / "llava")
    for prompt in ("llava", "lmms_eval"):
        out = tmp_path / prompt
        args = ["mmbench", "run", "--model", str(model), "--tsv", str(circular_tsv), "--out", str(out), "--prompt",
                prompt, "--device", "cpu", "--no-progress", "--batch-size", "4", "--max-new-tokens", "4"]  # fmt: skip
        assert main(args) == 0
        m = json.loads((out / "metrics.json").read_text())
        assert (m["num_questions"], m["num_rows"], m["coverage"]["missing"], m["prompt"]) == (2, 5, 0, prompt)
        cmd = ["mmbench", "score", "--tsv", str(circular_tsv), "--predictions", str(out / "predictions.jsonl")]
        assert main([*cmd, "--out", str(tmp_path / "s")]) == 0
        scored = json.loads((tmp_path / "s" / "metrics.json").read_text())
        keys = ("accuracy", "accuracy_single_pass", "per_category", "unparsed", "circular")
        assert {k: scored[k] for k in keys} == {k: m[k] for k in keys}
        assert (tmp_path / "s" / "submission.tsv").read_text() == (out / "submission.tsv").read_text()

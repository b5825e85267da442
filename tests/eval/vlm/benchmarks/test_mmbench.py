"""MMBench: TSV reading, circular grouping and rotation, answer extraction, scoring and submission files."""

import base64
import csv
import io

import pytest
from eval.vlm.benchmarks.mmbench import (
    MMBenchBenchmark,
    MMBenchRow,
    circular_rows,
    extract_choice,
    load_mmbench,
    mmbench_prompt,
    score_mmbench,
    submission_rows,
    write_submission,
)
from PIL import Image

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
    assert mset.circular == "tsv" and len(mset.rows) == 5
    assert mset.counts == {"malformed_rows": 0, "bad_images": 0, "duplicate_rows": 0, "copies_left_out": 0}
    assert all(r.image_b64 for r in mset.rows)  # the copies' "1"/"2" image fields were followed
    preds = {1: "A", 1_000_001: "(C)", 2_000_001: "The answer is B.", 2: "B", 1_000_002: "D"}
    result = score_mmbench(mset, preds)
    assert result["accuracy"] == 50.0  # question 1 right everywhere; question 2 wrong on its copy
    assert result["accuracy_single_pass"] == 100.0
    assert result["per_category"] == {"colour": 100.0, "count": 0.0}
    assert result["per_l2_category"] == {"attribute": 50.0}
    assert result["num_questions"] == 2 and result["num_rows"] == 5
    assert result["unparsed"] == 0 and result["missing_predictions"] == 0
    preds.pop(2_000_001)
    preds[1] = "no idea"
    result = score_mmbench(mset, {**preds, 7: "A"})
    assert result["accuracy"] == 0.0
    assert (result["missing_predictions"], result["unparsed"], result["unknown_predictions"]) == (1, 1, 1)


def test_circular_off_keeps_the_main_rows(circular_tsv):
    mset = load_mmbench(circular_tsv, circular="off")
    assert mset.circular == "off" and [r.index for r in mset.rows] == [1, 2]
    assert mset.counts["copies_left_out"] == 3
    assert score_mmbench(mset, {1: "A", 2: "B"})["accuracy"] == 100.0


def test_rotated_copies_when_the_tsv_has_none(tmp_path):
    path = _write_tsv(tmp_path / "plain.tsv", [_row(5, ["cat", "dog", "cow", "pig"], "B")])
    mset = load_mmbench(path)
    assert mset.circular == "rotated"
    got = [(r.index, r.options, r.answer, r.rotation) for r in mset.rows]
    assert got == [
        (5, ["cat", "dog", "cow", "pig"], "B", 0),
        (1_000_005, ["dog", "cow", "pig", "cat"], "A", 1),
        (2_000_005, ["cow", "pig", "cat", "dog"], "D", 2),
        (3_000_005, ["pig", "cat", "dog", "cow"], "C", 3),
    ]
    assert all(r.options[" ABCD".index(r.answer) - 1] == "dog" for r in mset.rows)
    right = {r.index: r.answer for r in mset.rows}
    assert score_mmbench(mset, right)["accuracy"] == 100.0
    # A model that always answers "B" is right on the original only: CircularEval gives 0.
    assert score_mmbench(mset, dict.fromkeys(right, "B"))["accuracy"] == 0.0
    with pytest.raises(UserError, match="circular"):
        circular_rows(mset.rows, "always")


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
    assert mmbench_prompt(row, "llava") == (
        "Look left.\nWhich one?\nA. x\nB. y\nAnswer with the option's letter from the given choices directly."
    )
    assert mmbench_prompt(row, "lmms_eval") == (
        "Look left. Which one? There are several options:\nA. x\nB. y\n\n"
        "Answer with the option's letter from the given choices directly."
    )
    row.hint = None
    assert mmbench_prompt(row, "llava").startswith("Which one?\nA. x")
    with pytest.raises(UserError, match="prompt layout"):
        mmbench_prompt(row, "qwen")


def test_malformed_inputs_are_counted_or_named(tmp_path):
    header = [h for h in HEADER if h != "question"]
    with pytest.raises(DataError, match=r"missing column 'question'.*") as err:
        load_mmbench(_write_tsv(tmp_path / "noq.tsv", [_row(1, ["a", "b"], "A")], header))
    assert "noq.tsv" in str(err.value) and "\n" not in str(err.value)
    rows = [
        _row(1, ["a", "b"], "A"),
        _row(2, ["a", "b"], "A", image="not base64!!"),
        _row(3, ["a", "b"], "A", image=base64.b64encode(b"not an image").decode()),
        _row("x", ["a", "b"], "A"),  # bad index
        _row(4, ["a"], "A"),  # one option
        _row(5, ["a", "b"], "C"),  # answer not among the options
        _row(1, ["a", "b"], "A"),  # duplicate index
    ]
    mset = load_mmbench(_write_tsv(tmp_path / "bad.tsv", rows), circular="off")
    assert mset.counts == {"malformed_rows": 3, "bad_images": 2, "duplicate_rows": 1, "copies_left_out": 0}
    bench = MMBenchBenchmark(mset)
    assert [p.id for p in bench.prompt_items()] == [1]  # rows without a usable image are not run
    assert bench.prompt_items()[0].image().size == (4, 4)
    assert score_mmbench(mset, {1: "A"})["missing_predictions"] == 2  # ... and score as wrong


def test_submission_tsv(tmp_path):
    path = _write_tsv(tmp_path / "plain.tsv", [_row(5, ["cat", "dog", "cow"], "B"), _row(6, ["x", "y"], "A")])
    mset = load_mmbench(path)
    preds = {5: "The answer is B", 1_000_005: "A", 2_000_005: "C", 6: "hmm"}
    rows = submission_rows(mset, preds)
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

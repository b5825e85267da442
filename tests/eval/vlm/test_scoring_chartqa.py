"""ChartQA relaxed accuracy against hand-worked cases from pix2struct's rule, the row mappings and the rule switch."""

import pytest

from eval.vlm.scoring.chartqa import (
    PUBLISHED,
    build_prompt,
    correct,
    from_official,
    from_parquet_row,
    relaxed_correctness,
    score,
)


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        ("105", "100", True),  # |105-100|/100 = 0.05: the edge is inside
        ("95", "100", True),
        ("105.1", "100", False),  # 0.051
        ("94.9", "100", False),
        ("50%", "0.5", True),  # a trailing % divides by 100
        ("50%", "50", False),  # ... so 50% is 0.5, 0.5 is not within 5% of 50
        ("0.5", "50%", True),
        ("0", "0", True),  # a zero target falls back to string equality
        ("0.0", "0", False),
        ("Yes", "yes", True),  # text: equal ignoring case
        ("yes.", "Yes", False),  # no normalisation beyond lower()
        ("1e2", "100", True),  # Python float() syntax
        (" 100", "100", True),  # float() ignores surrounding spaces
    ],
)
def test_relaxed_correctness(prediction, target, expected):
    assert relaxed_correctness(prediction, target) is expected


def test_text_with_spaces_differs_between_rules():
    # The official scorer compares the raw text; lmms-eval strips the generation first.
    assert correct("Yes ", ["yes"], "official") is False
    assert correct("Yes ", ["yes"], "lmms_eval") is True
    assert correct(None, ["yes"]) is False
    with pytest.raises(ValueError, match="rule 'lmms'"):
        correct("yes", ["yes"], "lmms")


def test_from_official_orders_human_then_augmented():
    human = [{"imgname": "1.png", "query": "How many bars?", "label": "3"}, {"imgname": "2.png", "query": "Q?"}]
    augmented = [{"imgname": "9.png", "query": "Highest?", "label": 14}, "not a row"]
    questions = from_official(human, augmented)
    assert questions[0] == {
        "id": 0,
        "question": "How many bars?",
        "image": "1.png",
        "answers": ["3"],
        "category": "human",
    }
    assert questions[1]["answers"] is None  # no label: a question without gold (unannotated), not a bad row
    assert questions[2]["id"] == 2 and questions[2]["category"] == "augmented" and questions[2]["answers"] == ["14"]
    assert questions[3] is None


def test_from_parquet_row():
    image = {"bytes": b"\x89PNG", "path": ""}
    row = {"type": "augmented_test", "question": "Q?", "answer": "Italy", "image": image}
    assert from_parquet_row(row, 1250) == {
        "id": 1250, "question": "Q?", "image": image, "answers": ["Italy"], "category": "augmented",
    }  # fmt: skip
    assert from_parquet_row({**row, "type": "val"}, 0) is None
    assert from_parquet_row({**row, "answer": None}, 0)["answers"] is None  # unannotated
    assert from_parquet_row({**row, "answer": ["x"]}, 0) is None


def test_score_splits_and_missing():
    questions = [
        {"id": 0, "answers": ["100"], "category": "human"},
        {"id": 1, "answers": ["Italy"], "category": "human"},
        {"id": 2, "answers": ["7"], "category": "augmented"},
        {"id": 3, "answers": ["0.3"], "category": "augmented"},
    ]
    # 104 is within 5%; "italy" matches; 7.5 is 7% off; id 3 has no prediction
    result = score(questions, {0: "104", 1: "italy", 2: "7.5"})
    assert result["relaxed_accuracy"] == 50.0
    assert (result["human"], result["augmented"], result["split_mean"]) == (100.0, 0.0, 50.0)
    assert result["missing_predictions"] == 1 and result["questions"] == 4


def test_split_mean_differs_from_pooled_when_splits_differ_in_size():
    questions = [{"id": i, "answers": ["1"], "category": "human"} for i in range(3)]
    questions.append({"id": 3, "answers": ["1"], "category": "augmented"})
    result = score(questions, {0: "1", 1: "1", 2: "1", 3: "2"})
    assert result["relaxed_accuracy"] == 75.0 and result["split_mean"] == 50.0


def test_prompt_and_published():
    assert build_prompt("What is the peak?") == "What is the peak?\nAnswer the question with a single word."
    assert "llava15_7b" not in PUBLISHED  # no citable number found

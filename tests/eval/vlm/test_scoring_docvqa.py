"""DocVQA ANLS against hand-worked cases from the RRC scorer's formula, the row mappings and the rule switch."""

import pytest

from eval.vlm.scoring.docvqa import anls, build_prompt, from_official, from_parquet_row, levenshtein, score


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [("", "", 0), ("abc", "", 3), ("kitten", "sitting", 3), ("flaw", "lawn", 2), ("abc", "abc", 0)],
)
def test_levenshtein(a, b, distance):
    assert levenshtein(a, b) == distance == levenshtein(b, a)


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("$1,000", ["$1,000"], 1.0),
        ("Tobacco", ["tobacco "], 1.0),  # lower-cased and stripped before the distance
        ("1/2/1990", ["1/2/1991"], 1 - 1 / 8),  # one edit in 8 characters
        ("abcd", ["ab"], 0.5),  # similarity 0.5 is kept: only below the threshold becomes 0
        ("abcde", ["ab"], 0.0),  # 1 - 3/5 = 0.4 < 0.5
        ("ITC", ["I.T.C"], 1 - 2 / 5),
        ("ITC", ["I.T.C", "itc"], 1.0),  # the closest answer counts
        ("", ["abc"], 0.0),
        ("new  york", ["New York"], 1.0 - 0.0),  # inner white space is collapsed
    ],
)
def test_anls(prediction, answers, expected):
    assert anls(prediction, answers) == pytest.approx(expected)


def test_length_uses_raw_strings_and_rules_differ():
    # Distance 1 on the normalised strings; officially over max(3, len("abd   ")=6), lmms-eval strips first: over 3.
    assert anls("abd   ", ["abc"], rule="official") == pytest.approx(1 - 1 / 6)
    assert anls("abd   ", ["abc"], rule="lmms_eval") == pytest.approx(1 - 1 / 3)
    assert anls(None, ["abc"]) == 0.0
    assert anls("ab", ["abc"], threshold=0.7) == 0.0  # 0.667 < 0.7
    with pytest.raises(ValueError, match="rule"):
        anls("a", ["a"], rule="rrc")


def test_from_official_rows():
    rows = [
        {
            "questionId": 49153,
            "question": "What is region number?",
            "question_types": ["form", "handwritten"],
            "image": "documents/pybv0228_81.png",
            "docId": 14465,
            "ucsf_document_id": "pybv0228",
            "ucsf_document_page_no": "81",
            "answers": ["2000", "2,000"],
            "data_split": "val",
        },  # fmt: skip
        {"questionId": 1, "question": "Q?", "image": "documents/x.png", "answers": "2000"},  # answers not a list
        {"questionId": "x", "question": "Q?", "image": "documents/x.png", "answers": ["a"]},  # id not an int
        {"questionId": 2, "question": "Q?", "image": "documents/y.png", "answers": ["a"]},  # no question_types
    ]
    q0, q1, q2, q3 = from_official(rows)
    assert q0 == {
        "id": 49153, "question": "What is region number?", "image": "documents/pybv0228_81.png",
        "answers": ["2000", "2,000"], "category": ["form", "handwritten"],
    }  # fmt: skip
    assert q1 is None and q2 is None
    assert q3["category"] == []


def test_from_parquet_row():
    image = {"bytes": b"\x89PNG", "path": None}
    row = {"questionId": "57349", "question": "Q?", "question_types": ["layout"], "image": image, "answers": ["x"]}
    assert from_parquet_row(row) == {
        "id": 57349,
        "question": "Q?",
        "image": image,
        "answers": ["x"],
        "category": ["layout"],
    }
    assert from_parquet_row({**row, "answers": []}) is None
    assert from_parquet_row({**row, "answers": None})["answers"] is None  # the test split: unannotated


def test_score_by_type_and_missing():
    questions = [
        {"id": 1, "answers": ["abc"], "category": ["form", "handwritten"]},
        {"id": 2, "answers": ["abcd"], "category": ["form"]},
        {"id": 3, "answers": ["x"], "category": []},
    ]
    result = score(questions, {1: "abc", 2: "abcx"})  # 1.0, 0.75, missing 0
    assert result["anls"] == pytest.approx(58.33)
    assert result["anls_by_type"] == {"form": 87.5, "handwritten": 100.0}
    assert result["missing_predictions"] == 1 and result["questions"] == 3


def test_prompt():
    assert build_prompt("What is the date?") == "What is the date?\nAnswer the question using a single word or phrase."

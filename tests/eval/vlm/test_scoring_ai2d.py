"""AI2D: the letter read from a prediction under both rules, the question-file and parquet mappings, accuracy."""

import pytest

from eval.vlm.scoring.ai2d import ai2d_choice, build_prompt, correct, from_official, from_parquet_row, score


@pytest.mark.parametrize(
    ("prediction", "official", "lmms_eval"),
    [
        ("B", 1, 1),
        ("b", 1, 1),
        ("B.", 1, 1),
        ("(B)", 1, 1),  # lmms-eval drops the punctuation
        ("B)", 1, 1),
        ("  C  ", 2, 2),
        ("B. the moon", 1, 1),  # lmms-eval's filter keeps the letter of "^\s*([A-Z])\."
        ("(B) the moon", 1, None),
        ("B: the moon", 1, None),
        ("B the moon", None, None),
        ("A cat is shown", None, None),  # an article is not option A
        ("The answer is B", None, None),
        ("E", None, None),  # beyond the four options
        ("", None, None),
    ],
)
def test_choice_surface_forms(prediction, official, lmms_eval):
    assert ai2d_choice(prediction, 4, "official") == official
    assert ai2d_choice(prediction, 4, "lmms_eval") == lmms_eval


def test_choice_limits_and_no_prediction():
    assert ai2d_choice("C", 2) is None
    assert ai2d_choice(None, 4) is None
    assert correct("D", {"choices": ["w", "x", "y", "z"], "answer": 3}) is True
    assert correct("C", {"choices": ["w", "x", "y", "z"], "answer": 3}) is False


def test_from_official_question_file():
    question_file = {
        "imageName": "0.png",
        "questions": {
            "What is A in the diagram?": {
                "abcLabel": True, "answerTexts": ["ears", "nose", "mouth", "face"], "correctAnswer": 3,
                "questionId": "0.png-0",
            },
            "Which part smells?": {"abcLabel": False, "answerTexts": ["ears", "nose"], "correctAnswer": 2,
                                   "questionId": "0.png-1"},  # answer out of range
        },
    }  # fmt: skip
    first, second = from_official(question_file, category="partsOfA")
    assert first == {
        "id": "0.png-0", "question": "What is A in the diagram?", "image": "0.png",
        "choices": ["ears", "nose", "mouth", "face"], "answer": 3, "abc_label": True, "category": "partsOfA",
    }  # fmt: skip
    assert second is None
    assert from_official({"questions": {}}) == [None]  # no imageName: the whole file is refused


def test_from_parquet_row():
    image = {"bytes": b"\x89PNG", "path": ""}
    row = {"question": "Which is the stem?", "options": ["A", "B", "C", "D"], "answer": "2", "image": image}
    item = from_parquet_row(row, 7)
    assert item == {
        "id": 7, "question": "Which is the stem?", "image": image, "choices": ["A", "B", "C", "D"], "answer": 2,
        "category": None,
    }  # fmt: skip
    assert from_parquet_row({**row, "answer": "4"}, 7) is None
    assert from_parquet_row({**row, "answer": None}, 7)["answer"] is None  # unannotated
    assert from_parquet_row({**row, "options": ["only one"]}, 7) is None


def test_prompt_layout():
    assert build_prompt("Which stage?", ["egg", "larva"]) == (
        "Which stage?\nA. egg\nB. larva\nAnswer with the option's letter from the given choices directly."
    )


def test_score_rules_and_categories():
    questions = [
        {"id": "1.png-0", "choices": ["a", "b", "c", "d"], "answer": 1, "category": "lifeCycles"},
        {"id": "1.png-1", "choices": ["a", "b", "c", "d"], "answer": 0, "category": "lifeCycles"},
        {"id": "2.png-0", "choices": ["a", "b", "c", "d"], "answer": 2, "category": "foodChains"},
        {"id": "2.png-1", "choices": ["a", "b", "c", "d"], "answer": 3, "category": "foodChains"},
    ]
    predictions = {"1.png-0": "(B) the egg", "1.png-1": "A", "2.png-0": "the answer is C"}
    official = score(questions, predictions)
    assert official["accuracy"] == 50.0
    assert official["accuracy_by_category"] == {"foodChains": 0.0, "lifeCycles": 100.0}
    assert (official["missing_predictions"], official["no_choice_read"]) == (1, 1)
    assert score(questions, predictions, rule="lmms_eval")["accuracy"] == 25.0  # "(B) the egg" is not read there
    # a question without gold is left out, never scored right by an unread letter (None == None)
    unannotated = {"id": "3.png-0", "choices": ["a", "b"], "answer": None, "category": "foodChains"}
    assert score([*questions, unannotated], {**predictions, "3.png-0": "no letter"})["questions"] == 4

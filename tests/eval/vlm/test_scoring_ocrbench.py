"""OCRBench: the per-dataset matching rules, the 1000-point grouping, the row mappings and the rule switch."""

import pytest

from eval.vlm.scoring.ocrbench import (
    POINTS,
    PUBLISHED_CATEGORIES,
    RECOGNITION_TYPES,
    build_prompt,
    from_official,
    from_parquet_row,
    ocrbench_correct,
    score,
)

HME = "Handwritten Mathematical Expression Recognition"


@pytest.mark.parametrize(
    ("prediction", "answers", "dataset", "expected"),
    [
        ("The word is CENTRE.", ["centre"], "IIIT5K", True),  # case-insensitive containment
        ("CENTER", ["centre"], "IIIT5K", False),
        ("x^{2}", ["x ^ { 2 }\n"], "HME100k", True),  # HME100k: every space removed on both sides
        ("x^{2}", ["x ^ { 2 }\n"], "IIIT5K", False),  # elsewhere spaces stay
        ("v=1", ["V = 1"], "HME100k", False),  # HME100k keeps case
        ("v=1", ["V=1"], "IIIT5K", True),
        ("line one\nline two", ["one line"], "FUNSD", True),  # newlines become spaces
        ("", ["abc"], "svt", False),
        ("anything", ["nothing", "thing"], "svt", True),  # any of the answers
    ],
)
def test_official_matching(prediction, answers, dataset, expected):
    assert ocrbench_correct(prediction, answers, dataset) is expected


def test_lmms_eval_folds_full_width():
    assert ocrbench_correct("\uff21\uff22\uff23", ["abc"], "IIIT5K", "official") is False
    assert ocrbench_correct("\uff21\uff22\uff23", ["abc"], "IIIT5K", "lmms_eval") is True
    assert ocrbench_correct(None, ["abc"], "IIIT5K") is False


def test_points_add_to_1000():
    assert sum(POINTS.values()) == 1000 and POINTS[HME] == 100
    assert sum(PUBLISHED_CATEGORIES["llava15_7b"][t] for t in RECOGNITION_TYPES) == 160


def test_from_official_ids_are_positions():
    rows = [
        {"dataset_name": "IIIT5K", "id": 2843, "image_path": "IIIT5K/test/918_1.png",
         "question": "what is written in the image?", "answers": "CENTRE", "type": "Regular Text Recognition"},
        {"dataset_name": "svt", "id": 2843, "image_path": "svt/1.jpg", "question": "what is written?",
         "answers": ["A", "B"], "type": "Regular Text Recognition"},  # a repeated source id
        {"dataset_name": "svt", "id": 1, "image_path": "svt/2.jpg", "question": "q", "answers": "x", "type": "OCR"},
    ]  # fmt: skip
    first, second, third = from_official(rows)
    assert first == {
        "id": 0, "question": "what is written in the image?", "image": "IIIT5K/test/918_1.png", "answers": ["CENTRE"],
        "category": "Regular Text Recognition", "dataset": "IIIT5K", "source_id": 2843,
    }  # fmt: skip
    assert second["id"] == 1 and second["answers"] == ["A", "B"]
    assert third is None  # unknown type


def test_from_parquet_row():
    image = {"bytes": b"\xff\xd8", "path": ""}
    row = {
        "dataset": "HME100k",
        "question": "Write the LaTeX.",
        "question_type": HME,
        "answer": ["y_2=-1"],
        "image": image,
    }
    assert from_parquet_row(row, 999) == {
        "id": 999, "question": "Write the LaTeX.", "image": image, "answers": ["y_2=-1"], "category": HME,
        "dataset": "HME100k",
    }  # fmt: skip
    assert from_parquet_row({**row, "answer": []}, 0) is None
    assert from_parquet_row({**row, "answer": None}, 0)["answers"] is None  # unannotated


def test_score_groups_as_the_official_script():
    questions = [
        {"id": 0, "answers": ["abc"], "category": "Regular Text Recognition", "dataset": "IIIT5K"},
        {"id": 1, "answers": ["9"], "category": "Digit String Recognition", "dataset": "ORAND"},
        {"id": 2, "answers": ["Paris"], "category": "Scene Text-centric VQA", "dataset": "textVQA"},
        {"id": 3, "answers": ["a + b"], "category": HME, "dataset": "HME100k"},
        {"id": 4, "answers": ["x"], "category": "Doc-oriented VQA", "dataset": "docVQA"},
    ]
    result = score(questions, {0: "ABC", 1: "8", 2: "It is paris", 3: "a+b"})
    assert result["final_score"] == 3 and result["text_recognition"] == 1
    assert result["by_type"]["Scene Text-centric VQA"] == 1 and result["by_type"][HME] == 1
    assert result["by_type"]["Digit String Recognition"] == 0 and result["by_type"]["Doc-oriented VQA"] == 0
    assert result["by_dataset"]["ORAND"] == {"correct": 0, "questions": 1}
    assert result["accuracy"] == 60.0 and result["missing_predictions"] == 1


def test_prompts():
    assert build_prompt(" what is written? ") == "what is written?"
    assert build_prompt("what is written?", "llava15") == (
        "what is written?\nAnswer the question using a single word or phrase."
    )
    with pytest.raises(ValueError, match="prompt"):
        build_prompt("q", "qwen")

"""OCRBench: the row mapping of the authors' OCRBench.json and lmms-lab's parquet, the matching rules, the 1000 points.

Metric. Yuliang-Liu/MultimodalOCR (commit 794c36d6), OCRBench/example.py and the per-model scripts such as
OCRBench/scripts/LLaVA1_5.py (last changed f5cbec66), the block after generation that sets `data[i]['result']`:
- questions from HME100k (handwritten mathematical expressions, keyed on `dataset_name == "HME100k"`): each answer
  and the prediction are stripped, newlines made spaces, then every space removed, and the question is right when an
  answer is a substring of the prediction; case matters;
- every other question: both are lower-cased, stripped and newlines made spaces; right when an answer is a substring
  of the prediction;
- a question scores 1 or 0; the final score is the sum over the 1000 questions (a question without a prediction adds
  0), grouped by `type` as the script prints it: Text Recognition (the sum of the six recognition types, 300 points),
  Scene Text-centric VQA (200), Doc-oriented VQA (200), Key Information Extraction (200), Handwritten Mathematical
  Expression Recognition (100). (On a file that is not the full 1000 the script prints accuracy per `dataset_name`
  instead; `by_dataset` here gives those counts too.)
`rule="lmms_eval"`: lmms-eval tasks/ocrbench/utils.py `ocrbench_process_results` (EvolvingLMMs-Lab/lmms-eval
75571cfe) strips the prediction first and, for every question but HME100k, folds full-width ASCII (U+FF01..U+FF5E to
ASCII, U+3000 to a space) in the answer and the prediction before the official rule (added in bbddc790, 2026-07).
Before f54dd288 (2026-04) it also lower-cased the prediction for HME100k, so LaTeX answers with upper-case letters
never matched; that older rule is not reproduced here. lmms-eval reports `final score / 1000`.

Files (MultimodalOCR, OCRBench/OCRBench/OCRBench.json; images in OCRBench_Images, a Google Drive archive linked from
OCRBench/README.md): a JSON list of 1000 `{"dataset_name": "IIIT5K", "id": 2843, "image_path":
"IIIT5K/test/918_1.png", "question": "what is written in the image?", "answers": "CENTRE" | ["...", ...], "type":
"Regular Text Recognition"}`; images at `<OCRBench_Images>/<image_path>`. `id` is the id inside the source dataset and
repeats (857 distinct values), so a question's id is its position in the file (0..999), kept as `source_id` beside.
echo840/OCRBench parquet (split `test`; what lmms-eval's ocrbench.yaml reads): columns `dataset` (dataset_name),
`question`, `question_type` (type), `answer` (list of str), `image` (`{"bytes", "path"}`), written in OCRBench.json's
order by lmms-eval's tasks/ocrbench/upload_ocrbench.py, so a row's index (lmms-eval's doc_id) is the same id.
Question dicts: `id` (int position), `question`, `image` (image_path, or the parquet struct), `answers` (list of str;
a bare string becomes one item, as the script treats it; None without answers: unannotated), `category` (the
type), `dataset` (dataset_name, which picks the HME100k rule), and from OCRBench.json `source_id`.

Prompts: `LMMS_EVAL_PROMPT` is lmms-eval's default, the question stripped with no instruction (LLaVA-NeXT's setting);
`LLAVA15_POST_PROMPT` is what OCRBench/scripts/LLaVA1_5.py appends to the question.

Published LLaVA-1.5-7B: the OCRBench leaderboard (huggingface.co/spaces/echo840/ocrbench-leaderboard, revision
e7d183c7, TextRecognition.csv) lists its Text Recognition scores (`PUBLISHED_CATEGORIES`); its final score was not
found in a source read for this module, so `PUBLISHED` (headline) is empty.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from eval.vlm.scoring.common import annotated, answer_list, check_rule, percent, prediction_of, text_field

LMMS_EVAL_PROMPT = "{question}"  # lmms-eval tasks/ocrbench/ocrbench.yaml default: empty pre/post prompt (75571cfe)
# MultimodalOCR OCRBench/scripts/LLaVA1_5.py: qs + "\nAnswer the question using a single word or phrase."
LLAVA15_POST_PROMPT = "\nAnswer the question using a single word or phrase."
HME_DATASET = "HME100k"
RECOGNITION_TYPES = (
    "Regular Text Recognition",
    "Irregular Text Recognition",
    "Artistic Text Recognition",
    "Handwriting Recognition",
    "Digit String Recognition",
    "Non-Semantic Text Recognition",
)
OTHER_TYPES = (
    "Scene Text-centric VQA",
    "Doc-oriented VQA",
    "Key Information Extraction",
    "Handwritten Mathematical Expression Recognition",
)
TYPES = RECOGNITION_TYPES + OTHER_TYPES
POINTS = dict(zip(TYPES, (50, 50, 50, 50, 50, 50, 200, 200, 200, 100), strict=True))  # questions per type: 1000
PARQUET_COLUMNS = ("dataset", "question", "question_type", "answer", "image")
PUBLISHED: dict[str, float] = {}
PUBLISHED_CATEGORIES = {  # OCRBench leaderboard TextRecognition.csv, row "LLaVA1.5-7B" (Vicuna-v1.5-7B)
    "llava15_7b": {
        "Regular Text Recognition": 43,
        "Irregular Text Recognition": 40,
        "Artistic Text Recognition": 41,
        "Handwriting Recognition": 26,
        "Digit String Recognition": 5,
        "Non-Semantic Text Recognition": 5,
        "Text Recognition": 160,
    }
}


def build_prompt(question: str, prompt: str = "lmms_eval") -> str:
    """The question as lmms-eval asks it (`lmms_eval`) or as the authors' LLaVA-1.5 script does (`llava15`)."""
    if prompt == "llava15":
        return f"{question}{LLAVA15_POST_PROMPT}"
    if prompt == "lmms_eval":
        return LMMS_EVAL_PROMPT.format(question=question.strip())
    raise ValueError(f"prompt {prompt!r}: expected lmms_eval or llava15")


def _question(qid: int, row: Mapping[str, Any], keys: tuple[str, str, str, str], image: Any) -> dict[str, Any] | None:
    dataset, question, raw, category = (row.get(key) for key in keys)
    answers = answer_list(list(raw) if isinstance(raw, tuple) else raw)
    if not isinstance(dataset, str) or not isinstance(question, str) or not question.strip():
        return None
    if (raw is not None and answers is None) or category not in TYPES or image is None:
        return None  # no answers at all: a question without gold (answers None)
    item = {"id": qid, "question": question, "image": image, "answers": answers, "category": category}
    return {**item, "dataset": dataset}


def from_official(rows: Sequence[Any]) -> list[dict[str, Any] | None]:
    """Questions of OCRBench.json, ids 0..N-1 in file order; None for a malformed row."""
    out: list[dict[str, Any] | None] = []
    for index, row in enumerate(rows):
        item = None
        if isinstance(row, Mapping):
            item = _question(index, row, ("dataset_name", "question", "answers", "type"), text_field(row, "image_path"))
        if item is not None:
            item["source_id"] = row.get("id")
        out.append(item)
    return out


def from_parquet_row(row: Mapping[str, Any], index: int) -> dict[str, Any] | None:
    """One echo840/OCRBench row (its `index` is the id, as in OCRBench.json); None when malformed."""
    return _question(index, row, ("dataset", "question", "answer", "question_type"), row.get("image"))


def fold_fullwidth(text: str) -> str:
    """Full-width ASCII (U+FF01..U+FF5E) to ASCII and the ideographic space to a space, as lmms-eval does."""
    return "".join(chr(ord(c) - 0xFEE0) if 0xFF01 <= ord(c) <= 0xFF5E else " " if c == "\u3000" else c for c in text)


def ocrbench_correct(prediction: str | None, answers: Sequence[str], dataset: str, rule: str = "official") -> bool:
    """Whether a gold answer is contained in the prediction under OCRBench's rule for the question's source dataset."""
    check_rule(rule)
    if prediction is None:
        return False
    if rule == "lmms_eval":
        prediction = prediction.strip()
    if dataset == HME_DATASET:
        pred = prediction.strip().replace("\n", " ").replace(" ", "")
        return any(a.strip().replace("\n", " ").replace(" ", "") in pred for a in answers)
    fold = fold_fullwidth if rule == "lmms_eval" else str
    pred = fold(prediction).lower().strip().replace("\n", " ")
    return any(fold(a).lower().strip().replace("\n", " ") in pred for a in answers)


def score(
    questions: Sequence[Mapping[str, Any]], predictions: Mapping[Hashable, str], rule: str = "official"
) -> dict[str, Any]:
    """The final score (out of 1000 on the full set), the official per-type counts, and per-dataset counts, over the
    questions with answers."""
    check_rule(rule)
    questions = annotated(questions, "answers")
    by_type = dict.fromkeys(TYPES, 0)
    by_dataset: dict[str, list[int]] = {}
    for q in questions:
        ok = int(ocrbench_correct(prediction_of(predictions, q["id"]), q["answers"], q["dataset"], rule))
        by_type[q["category"]] += ok
        counts = by_dataset.setdefault(q["dataset"], [0, 0])
        counts[0], counts[1] = counts[0] + ok, counts[1] + 1
    final = sum(by_type.values())
    return {
        "final_score": final,
        "text_recognition": sum(by_type[t] for t in RECOGNITION_TYPES),
        "by_type": by_type,
        "accuracy": percent(final, len(questions)),
        "by_dataset": {name: {"correct": c, "questions": n} for name, (c, n) in sorted(by_dataset.items())},
        "questions": len(questions),
        "missing_predictions": sum(prediction_of(predictions, q["id"]) is None for q in questions),
        "rule": rule,
    }

"""DocVQA val (single-page, Task 1): the row mapping of the RRC files and lmms-lab's parquet, and ANLS.

Metric. ANLS (Biten et al., ST-VQA, ICCV 2019, eq. 1; threshold 0.5), as the Robust Reading Competition's scorer for
DocVQA/InfographicVQA computes it. That scorer is distributed from rrc.cvc.uab.es and docvqa.org, not from a git
repository; the copy read here is QwenLM/Qwen-VL `eval_mm/infographicsvqa_eval.py` (commit e6bbb9dd, whose first
line names those two sites), `evaluate_method`. Per question, ported as `anls`:
- for each gold answer, both strings are normalised as `" ".join(s.strip().lower().split())` and their Levenshtein
  distance taken; it is divided by `max(len(answer.upper()), len(prediction.upper()))` of the strings *before*
  normalisation (a quirk kept: surrounding spaces in the prediction lower the normalised distance), 0 when both are
  empty;
- the question's similarity is 1 - the smallest of these, and is set to 0 when below the threshold (0.5 itself
  counts: "abcd" for "ab" scores 0.5);
- ANLS is the mean over all questions of the ground-truth file (the scorer refuses a submission that lacks any; here a
  question with no prediction scores 0).
`rule="lmms_eval"`: lmms-eval's `anls` metric (lmms_eval/api/metrics.py, 75571cfe), which docvqa_val.yaml uses, is
this same function, but `Task.process_results` strips the generated text before it, so the length in the denominator
is the stripped prediction's ("abd   " for "abc" scores 0.8333 officially, 0.6667 there).

Breakdown: ANLS per question type (`question_types`, in the `_withQT` files and the parquet): a question with several
types counts in each, as the RRC scorer's per-type loops add a question's score to each of its types.

Files (RRC DocVQA Task 1: val.tar.gz from datasets.cvc.uab.es/rrc/DocVQA, or spdocvqa_qas.zip + spdocvqa_images):
`val_v1.0.json` / `val_v1.0_withQT.json` = `{"dataset_name", "dataset_split", "dataset_version", "data": [row, ...]}`
(the RRC scorer requires `data` and `dataset_name`; 5349 questions on 1286 pages), each row `{"questionId": 49153,
"question", "question_types": ["handwritten", "form"] (withQT only), "image": "documents/pybv0228_81.png",
"docId": 14465, "ucsf_document_id": "pybv0228", "ucsf_document_page_no": "81", "answers": ["..."],
"data_split": "val"}`.
`from_official(doc["data"])` maps the rows. `image` is relative to the split folder (val/documents/...); the
spdocvqa_images archive holds the same file names flat, so a reader should also try the basename. The id is the
integer `questionId` (unique in the split; the RRC submission `[{"questionId", "answer"}]` keys on it).
lmms-lab/DocVQA parquet (config `DocVQA`, split `validation`; now mirrored as lmms-lab-encoder/DocVQA): the same
columns (`questionId`, `question`, `question_types`, `image` as `{"bytes", "path"}`, `docId`, `ucsf_document_id`,
`ucsf_document_page_no`, `answers`, `data_split`), so both formats share ids.
Question dicts: `id` (int questionId), `question`, `image` (the relative path, or the parquet struct), `answers`
(list of str; None when the row has none, as in test_v1.0.json: unannotated), `category` (the list of question
types, empty when the file has none).

Prompt (`LMMS_EVAL_POST_PROMPT`): lmms-eval's _default_template_docvqa_yaml default, `"{question}\\nAnswer the
question using a single word or phrase."`, LLaVA's short-answer instruction.

Published LLaVA-1.5-7B: none found with a citable source: the LLaVA-1.5 paper does not report DocVQA, and lmms-eval's
LLaVA-1.5 results sit in a Google Sheet its README links (not readable here). So `PUBLISHED` is empty.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from eval.vlm.scoring.common import (
    annotated,
    answer_list,
    check_rule,
    grouped_percent,
    percent,
    prediction_of,
    text_field,
)
from vlm.templates import SHORT_ANSWER_PROMPT

# lmms-eval tasks/docvqa/_default_template_docvqa_yaml, default post_prompt (75571cfe); LLaVA's SHORT_ANSWER_PROMPT
LMMS_EVAL_POST_PROMPT = "\n" + SHORT_ANSWER_PROMPT
THRESHOLD = 0.5  # the RRC scorer's --anls_threshold default; the ST-VQA paper's tau
PARQUET_COLUMNS = ("questionId", "question", "question_types", "image", "answers")
PUBLISHED: dict[str, float] = {}


def build_prompt(question: str) -> str:
    """The question as lmms-eval (and so LLaVA-NeXT) asks it."""
    return f"{question}{LMMS_EVAL_POST_PROMPT}"


def _question_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _question(row: Mapping[str, Any], image: Any) -> dict[str, Any] | None:
    qid, question, raw = _question_id(row.get("questionId")), text_field(row, "question"), row.get("answers")
    answers = answer_list(list(raw)) if isinstance(raw, (list, tuple)) else None  # a list, never a bare str
    if qid is None or question is None or (raw is not None and answers is None) or image is None:
        return None  # no `answers` at all (the test split) is a question without gold: answers None
    types = row.get("question_types")
    types = [t for t in types if isinstance(t, str)] if isinstance(types, (list, tuple)) else []
    return {"id": qid, "question": question, "image": image, "answers": answers, "category": types}


def from_official(rows: Sequence[Any]) -> list[dict[str, Any] | None]:
    """Questions of a DocVQA QA file's `data` list, in order; None for a malformed row."""
    return [_question(row, text_field(row, "image")) if isinstance(row, Mapping) else None for row in rows]


def from_parquet_row(row: Mapping[str, Any]) -> dict[str, Any] | None:
    """One lmms-lab/DocVQA row (id: its questionId); None when malformed."""
    return _question(row, row.get("image"))


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute: cost 1 each)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def anls(prediction: str | None, answers: Sequence[str], threshold: float = THRESHOLD, rule: str = "official") -> float:
    """Normalised Levenshtein similarity to the closest answer; 0 below `threshold` or with no prediction."""
    check_rule(rule)
    if prediction is None or not answers:
        return 0.0
    if rule == "lmms_eval":
        prediction = prediction.strip()  # lmms-eval's Task.process_results strips generations
    distances = []
    for answer in answers:
        length = max(len(answer.upper()), len(prediction.upper()))
        distances.append(levenshtein(_normalise(answer), _normalise(prediction)) / length if length else 0.0)
    similarity = 1.0 - min(distances)
    return 0.0 if similarity < threshold else similarity


def score(
    questions: Sequence[Mapping[str, Any]],
    predictions: Mapping[Hashable, str],
    rule: str = "official",
    threshold: float = THRESHOLD,
) -> dict[str, Any]:
    """ANLS in percent over every question with answers, and per question type."""
    check_rule(rule)
    questions = annotated(questions, "answers")
    scored = [(q, anls(prediction_of(predictions, q["id"]), q["answers"], threshold, rule)) for q in questions]
    return {
        "anls": percent(sum(s for _, s in scored), len(scored)),
        "anls_by_type": grouped_percent((q.get("category") or [], s) for q, s in scored),
        "questions": len(scored),
        "missing_predictions": sum(prediction_of(predictions, q["id"]) is None for q in questions),
        "threshold": threshold,
        "rule": rule,
    }

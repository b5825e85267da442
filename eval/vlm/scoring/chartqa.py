"""ChartQA test: the row mapping of the authors' files and lmms-lab's parquet, and relaxed accuracy (5% tolerance).

Metric. ChartQA (Masry et al., Findings of ACL 2022, end of section 5.1) counts a numeric answer right when it is
within 5% of the gold one, and any other answer right on an exact match. The authors' repository (vis-nlp/ChartQA,
commit 3dab8e83) ships data only; the reference implementation is google-research/pix2struct, `pix2struct/metrics.py`,
`relaxed_correctness(target, prediction, max_relative_change=0.05)` (commit 945f27e9, file last changed 42e24278),
which Qwen-VL, InternVL and lmms-eval copy. Its rule, ported here as `relaxed_correctness`:
- a string is a number when Python's `float()` parses it; one ending in "%" is first stripped of its trailing "%"s
  and divided by 100 (so "50%" equals "0.5" but not "50");
- when the prediction is a number and the target a number other than 0, the answer is right when
  |prediction - target| / |target| <= 0.05 (105 vs 100 is right, 105.1 is wrong);
- otherwise (text, or a target of 0) the two strings must be equal after `lower()`; neither is stripped;
- with several targets a prediction is right when it matches any (`aggregate_metrics` takes the max); ChartQA has one.
`rule="lmms_eval"`: lmms-eval's tasks/chartqa/utils.py `chartqa_process_results` (EvolvingLMMs-Lab/lmms-eval,
75571cfe; same function since 1d3f34ab) applies the same test to `doc["answer"]`, but lmms-eval's
`Task.process_results` strips the generated text first (since d3febcf9, 2024-04): "Yes " is wrong officially, right
there. Accuracy is in percent over every question; a question with no prediction is wrong.

Headline. `relaxed_accuracy` over all questions, `human` and `augmented` per split, and `split_mean`, the mean of the
two splits (LLaVA-NeXT's lmms-eval `relaxed_overall` is the pooled mean; with 1250 questions per split both agree).

Files (vis-nlp/ChartQA, "ChartQA Dataset/test/"): `test_human.json` and `test_augmented.json`, each a JSON list of
`{"imgname": "41699051005347.png", "query": "<question>", "label": "<answer>"}` (1250 rows each); the images are
`ChartQA Dataset/test/png/<imgname>`. The rows carry no id: a question's id is its position in lmms-eval's order,
human rows first, then augmented (`from_official(human, augmented)`: 0..1249 human, 1250.. augmented), which is the
order lmms-eval's tasks/chartqa/upload_chartqa.py wrote lmms-lab/ChartQA in, so official and parquet ids agree.
lmms-lab/ChartQA parquet (split `test`; lmms-eval now reads the same data as lmms-lab-encoder/ChartQA): columns
`type` ("human_test" | "augmented_test"), `question`, `answer` (str), `image` (`{"bytes", "path"}`); a row's id is its
row index, lmms-eval's `doc_id`.
Question dicts: `id` (int), `question`, `image` (imgname, or the parquet struct), `answers` (one str; a JSON number
label becomes its text; None without a label: unannotated), `category` ("human" | "augmented").

Prompt (`LMMS_EVAL_POST_PROMPT`): lmms-eval's chartqa.yaml default, `"{question}\\nAnswer the question with a single
word."`, the setting LLaVA-NeXT reports ChartQA with.

Published LLaVA-1.5-7B: none found with a citable source: the LLaVA-1.5 paper does not report ChartQA, and lmms-eval's
LLaVA-1.5 results sit in a Google Sheet its README links (not readable here). So `PUBLISHED` is empty.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from eval.vlm.scoring.common import annotated, check_rule, percent, prediction_of, text_field

# lmms-eval tasks/chartqa/chartqa.yaml, lmms_eval_specific_kwargs.default.post_prompt (75571cfe)
LMMS_EVAL_POST_PROMPT = "\nAnswer the question with a single word."
MAX_RELATIVE_CHANGE = 0.05  # pix2struct relaxed_correctness default; the paper's "within 5% of the gold answer"
SPLITS = ("human", "augmented")
PARQUET_TYPES = {"human_test": "human", "augmented_test": "augmented"}  # lmms-lab/ChartQA `type` values
PARQUET_COLUMNS = ("type", "question", "answer", "image")
PUBLISHED: dict[str, float] = {}


def build_prompt(question: str) -> str:
    """The question as lmms-eval (and so LLaVA-NeXT) asks it."""
    return f"{question}{LMMS_EVAL_POST_PROMPT}"


def _question(qid: int, question: Any, label: Any, image: Any, split: str) -> dict[str, Any] | None:
    if not isinstance(question, str) or not question.strip() or image is None:
        return None
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        label = str(label)  # a JSON number: the text it would be written as
    if label is not None and not isinstance(label, str):
        return None
    answers = [label] if label is not None else None  # no label: unannotated, left out of the score
    return {"id": qid, "question": question, "image": image, "answers": answers, "category": split}


def from_official(human: Sequence[Any], augmented: Sequence[Any]) -> list[dict[str, Any] | None]:
    """Questions of test_human.json then test_augmented.json, ids in lmms-eval's order; None for a malformed row."""
    out: list[dict[str, Any] | None] = []
    for split, rows in zip(SPLITS, (human, augmented), strict=True):
        for row in rows:
            qid = len(out)
            if not isinstance(row, Mapping):
                out.append(None)
                continue
            out.append(_question(qid, row.get("query"), row.get("label"), text_field(row, "imgname"), split))
    return out


def from_parquet_row(row: Mapping[str, Any], index: int) -> dict[str, Any] | None:
    """One lmms-lab/ChartQA row (its `index` is the id, lmms-eval's doc_id); None when malformed."""
    split = PARQUET_TYPES.get(str(row.get("type")))
    if split is None:
        return None
    return _question(index, row.get("question"), row.get("answer"), row.get("image"), split)


def _to_float(text: str) -> float | None:
    """pix2struct's number reading: Python float(), a trailing "%" (all of them) meaning /100."""
    try:
        return float(text.rstrip("%")) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_correctness(prediction: str, target: str, max_relative_change: float = MAX_RELATIVE_CHANGE) -> bool:
    """Within `max_relative_change` of a nonzero numeric target, else equal ignoring case (pix2struct's rule)."""
    pred_value, target_value = _to_float(prediction), _to_float(target)
    if pred_value is not None and target_value:
        return abs(pred_value - target_value) / abs(target_value) <= max_relative_change
    return prediction.lower() == target.lower()


def correct(prediction: str | None, answers: Sequence[str], rule: str = "official") -> bool:
    """Whether a prediction is right for any gold answer; no prediction is wrong."""
    check_rule(rule)
    if prediction is None:
        return False
    if rule == "lmms_eval":
        prediction = prediction.strip()  # lmms-eval's Task.process_results strips generations
    return any(relaxed_correctness(prediction, answer) for answer in answers)


def score(
    questions: Sequence[Mapping[str, Any]], predictions: Mapping[Hashable, str], rule: str = "official"
) -> dict[str, Any]:
    """Relaxed accuracy in percent, overall, per split (human/augmented) and the mean of the two splits, over the
    questions with a label."""
    check_rule(rule)
    questions = annotated(questions, "answers")
    hits = [(q["category"], correct(prediction_of(predictions, q["id"]), q["answers"], rule)) for q in questions]
    by_split = {split: [ok for s, ok in hits if s == split] for split in SPLITS}
    split_means = [sum(oks) / len(oks) for oks in by_split.values() if oks]
    return {
        "relaxed_accuracy": percent(sum(ok for _, ok in hits), len(hits)),
        **{split: percent(sum(oks), len(oks)) for split, oks in by_split.items()},
        "split_mean": percent(sum(split_means), len(split_means)) if len(split_means) == len(SPLITS) else None,
        "questions": len(hits),
        "missing_predictions": sum(prediction_of(predictions, q["id"]) is None for q in questions),
        "rule": rule,
    }

"""GQA: an answer matched as LLaVA's converter and GQA's eval.py match it (or lmms-eval), and the accuracy breakdowns.

Rules. `official` (what LLaVA-1.5 reports): LLaVA's scripts/convert_gqa_for_eval.py writes each answer as
`text.rstrip('.').lower()` into `{tier}_predictions.json`, and GQA's eval.py (run by scripts/v1_5/eval/gqa.sh with
--tier testdev_balanced) counts `prediction == answer`, exactly: no whitespace is stripped, so " yes" is wrong
(`strip_answers=true` is the explicit leniency). "binary" are the non-`query` structural types, "open" the `query`
ones; accuracy per `types.structural` and `types.semantic`. `lmms_eval`: gqa.yaml's `exact_match` with ignore_case
and ignore_punctuation (lmms_eval/api/metrics.py `exact_match_hf_evaluate`: both sides lower-cased, every
`string.punctuation` character removed, no strip). Validity, plausibility, consistency and distribution need files
not distributed for testdev: left out. `score_gqa` reads questions with `id`, `answer` (None: unannotated),
`structural` and `semantic`.
"""

from __future__ import annotations

import string
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from eval.vlm.scoring.common import grouped_percent, percent

RULE_TEXT = {
    "official": "LLaVA's convert_gqa_for_eval.py (rstrip('.'), lower-case; no strip), then GQA eval.py's exact "
    "match against the answer",
    "lmms_eval": "lmms-eval's exact_match with ignore_case and ignore_punctuation (both sides lower-cased, "
    "string.punctuation removed)",
}
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def convert_prediction(text: str) -> str:
    """An answer as LLaVA's convert_gqa_for_eval.py writes it for eval.py: `rstrip('.').lower()`, nothing more."""
    return text.rstrip(".").lower()


def gqa_correct(prediction: str, answer: str, rule: str = "official") -> bool:
    """Whether `prediction` counts as `answer` under the official rule (or lmms-eval's; see the module docstring)."""
    if rule == "official":
        return convert_prediction(prediction) == answer
    if rule == "lmms_eval":
        return prediction.lower().translate(_PUNCTUATION) == answer.lower().translate(_PUNCTUATION)
    raise ValueError(f"unknown GQA rule '{rule}' (expected one of {list(RULE_TEXT)})")


def score_gqa(items: Sequence[Any], predictions: Mapping[Hashable, str], rule: str = "official") -> dict[str, Any]:
    """Accuracy (percent) overall, binary/open and per structural and semantic type, as GQA's eval.py computes it,
    over the annotated questions."""
    scores, kinds, structural, semantic, missing = [], [], [], [], 0
    for item in items:
        if item.answer is None:
            continue
        pred = predictions.get(item.id)
        missing += pred is None
        score = float(pred is not None and gqa_correct(pred, item.answer, rule))
        scores.append(score)
        kinds.append((("open" if item.structural == "query" else "binary",), score))  # eval.py: open iff query
        structural.append(((str(item.structural),), score))
        semantic.append(((str(item.semantic),), score))
    ids, kind = {item.id for item in items}, grouped_percent(kinds)
    return {
        "accuracy": percent(sum(scores), len(scores)),
        "binary": kind.get("binary"),
        "open": kind.get("open"),
        "num_scored": len(scores),
        "per_structural_type": grouped_percent(structural),
        "per_semantic_type": grouped_percent(semantic),
        "num_questions": len(items),
        "missing_predictions": missing,
        "unknown_predictions": sum(1 for qid in predictions if qid not in ids),
    }

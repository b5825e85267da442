"""SEED-Bench: an answer's letter judged by LLaVA's converter (or lmms-eval), and accuracy pooled and per dimension.

Rules. `official`: LLaVA's scripts/convert_seed_for_submission.py `eval_single(..., eval_only_type='image')`: right
when the answer *is* the letter (`row['text'] == question_data['answer']`). `lmms_eval`: lmms-eval's
`seed_process_result` + `seed_aggregation_result` (the stripped answer's first character, lower-cased, is the
letter). No prediction is wrong. Accuracy in percent over the annotated questions (pooled) and per dimension.
`score_seedbench` reads questions with `id`, `answer` (a letter; None: unannotated), `dimension`, `dimension_name`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from eval.vlm.scoring.common import percent

LETTERS = "ABCD"
METRIC_RULES = {
    "official": "LLaVA convert_seed_for_submission.py: right when the answer text equals the answer letter exactly",
    "lmms_eval": "lmms-eval seed_process_result: the stripped answer's first character equals the letter (any case)",
}


def lmms_eval_right(text: str, answer: str) -> bool:
    """lmms-eval's seedbench: the stripped answer, cut to its first character, equals the letter (any case)."""
    pred = text.strip()
    pred = pred[0] if len(pred) > 1 else pred
    return pred.lower().strip() == answer.lower().strip()


def score_seedbench(questions: Sequence[Any], predictions: Mapping[Hashable, str],
                    rule: str = "official") -> dict[str, Any]:  # fmt: skip
    """Accuracy (percent) by `rule`: pooled over the annotated image questions and per dimension."""
    tallies: dict[int, list[int]] = {}
    names = {q.dimension: q.dimension_name for q in questions}
    hits = total = missing = unparsed = 0
    for q in (q for q in questions if q.answer is not None):
        pred = predictions.get(q.id)
        lmms = rule == "lmms_eval"  # else convert_seed_for_submission.py's row['text'] == question_data['answer']
        right = pred is not None and lmms_eval_right(pred, q.answer) if lmms else pred == q.answer
        missing += pred is None
        unparsed += pred is not None and pred not in LETTERS
        hits, total = hits + right, total + 1
        tally = tallies.setdefault(q.dimension, [0, 0])
        tally[0], tally[1] = tally[0] + right, tally[1] + 1
    out = {
        "accuracy": percent(hits, total),
        "num_questions": total,
        "per_dimension": {names[d]: percent(*tallies[d]) for d in sorted(tallies)},
        "missing_predictions": missing,
        "metric_rule": METRIC_RULES[rule],
    }
    return {**out, "unparsed": unparsed} if rule == "official" else out  # unparsed: not exactly one letter A-D

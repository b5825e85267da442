"""The input policy: what every benchmark does with predictions that are not one clean answer per question.

Applied once, by the benchmark base, to every benchmark and every answer file (ours, LLaVA's, lmms-eval's). Each
case is counted in metrics.json under `input` with the names below, and any non-zero count is one warning line on
stderr naming the file. Where the official scripts have a behaviour, it is theirs:

| case                              | `input` key         | scored as                                              |
|-----------------------------------|---------------------|--------------------------------------------------------|
| unreadable line, row without id   | malformed_rows      | skipped                                                |
| one id answered twice             | duplicate_ids       | the last answer (the official scripts build a dict)    |
| answer `null`                     | null_answers        | a missing prediction (wrong)                           |
| answer `""` or blanks             | empty_answers       | as given (it matches no gold answer)                   |
| id of no question of the set      | unknown_ids         | ignored                                                |
| question without a prediction     | missing_predictions | wrong                                                  |
| question without a gold answer    | unannotated         | left out of the score (the loader counts it)           |
| no prediction matches any question| -                   | refused: one-line error, nothing written               |

Answers are scored exactly as written, with each benchmark's official normalisation only. `strip_answers=true`
(off by default) strips surrounding whitespace first; metrics.json names it under `leniency`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from eval.vlm.ids import QuestionId
from pretrain.runtime.errors import DataError

FILE_KEYS = ("malformed_rows", "duplicate_ids", "null_answers", "empty_answers")
WORDS = {
    "malformed_rows": "{n} malformed rows skipped",
    "duplicate_ids": "{n} ids answered more than once (the last answer kept, as the official scripts do)",
    "null_answers": "{n} null answers (counted missing)",
    "empty_answers": "{n} empty answers (scored as given)",
    "missing_predictions": "{n} of {questions} questions have no prediction (counted wrong)",
    "unknown_ids": "{n} of {predictions} predictions are for no question of the set (ignored)",
    "unannotated": "{n} of {questions} questions have no gold answer (not scored)",
}


def check_coverage(name: str, ids: list[QuestionId], predictions: Mapping[QuestionId, str], source: str) -> dict:
    """Counts of questions and predictions matched; a one-line DataError when none of the predictions matches."""
    known = set(ids)
    matched = sum(1 for qid in predictions if qid in known)
    if not predictions:
        raise DataError(f"{source}: no predictions in it (expected answers to the {len(known)} {name} questions)")
    if not matched:
        examples = ", ".join(repr(q) for q in list(predictions)[:3])
        theirs = ", ".join(repr(q) for q in ids[:3])
        raise DataError(
            f"{source}: none of its {len(predictions)} predictions is for one of the {len(known)} {name} "
            f"questions (its ids: {examples}, ...; the questions': {theirs}, ...); "
            "is it for another benchmark or split?"
        )
    return {"questions": len(known), "predictions": len(predictions), "matched": matched}


def input_counts(
    coverage: dict[str, int], file_stats: Mapping[str, Any], data_counts: Mapping[str, int]
) -> dict[str, int]:
    """The `input` block of metrics.json: every policy case under its one name."""
    counts = {key: int(file_stats.get(key, 0)) for key in FILE_KEYS}
    counts["missing_predictions"] = coverage["questions"] - coverage["matched"]
    counts["unknown_ids"] = coverage["predictions"] - coverage["matched"]
    counts["unannotated"] = int(data_counts.get("unannotated", 0))
    return counts


def warn(source: str, counts: Mapping[str, int], coverage: Mapping[str, int]) -> None:
    """One stderr line for every non-zero policy count of `source` (nothing when the input was clean)."""
    notes = [WORDS[k].format(n=n, **coverage) for k, n in counts.items() if n and k in WORDS]
    if notes:
        print(f"warning: {source}: {'; '.join(notes)}", file=sys.stderr)


def apply_leniency(answers: Mapping[QuestionId, str], strip: bool) -> dict[QuestionId, str]:
    """The answers as scored: unchanged unless `strip_answers` was asked for."""
    return {qid: text.strip() for qid, text in answers.items()} if strip else dict(answers)

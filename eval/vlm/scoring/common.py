"""What the scoring modules share: the rule names, the prediction lookup, percentages and per-group means.

Pure functions with no import from the rest of eval/, so that the benchmark files built on them can move freely.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Any

RULES = ("official", "lmms_eval")  # `official`: the benchmark authors' scorer; `lmms_eval`: lmms-eval's own rule


def check_rule(rule: str) -> None:
    """Refuse an unknown rule name in one line (a typo must not silently score with another rule)."""
    if rule not in RULES:
        raise ValueError(f"rule {rule!r}: expected one of {', '.join(RULES)}")


def prediction_of(predictions: Mapping[Hashable, Any], qid: Hashable) -> str | None:
    """The question's predicted text, or None when there is none (scored 0, as a wrong answer)."""
    value = predictions.get(qid)
    return value if isinstance(value, str) else None


def percent(total: float, count: int, digits: int = 2) -> float | None:
    """`total / count` in percent, rounded; None for an empty group."""
    return round(100.0 * total / count, digits) if count else None


def grouped_percent(items: Iterable[tuple[Iterable[str], float]], digits: int = 2) -> dict[str, float | None]:
    """Mean score in percent per group; an item counts toward each of its groups (DocVQA types are multi-label)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for groups, value in items:
        for group in groups:
            sums[group] = sums.get(group, 0.0) + value
            counts[group] = counts.get(group, 0) + 1
    return {group: percent(sums[group], counts[group], digits) for group in sorted(sums)}


def text_field(row: Mapping[str, Any], key: str) -> str | None:
    """A non-empty string field of a row, else None (the mapper then refuses the row)."""
    value = row.get(key)
    return value if isinstance(value, str) and value.strip() else None


def annotated(questions: Iterable[Mapping[str, Any]], gold: str) -> list[Mapping[str, Any]]:
    """The questions whose gold field `gold` is set: one without (a test split's) is left out of every score."""
    return [q for q in questions if q.get(gold) is not None]


def answer_list(value: Any) -> list[str] | None:
    """Gold answers as a non-empty list of strings: a string alone becomes a one-item list; anything else is None."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(a, str) for a in value):
        return list(value)
    return None

"""Question ids: one type for every benchmark, and the normalisation that lets files agree on 1 vs "1"."""

from __future__ import annotations

from typing import Any

QuestionId = int | str
LETTERS = "ABCDE"  # multiple-choice option letters
CIRCULAR_OFFSET = 1_000_000  # MMBench's circular copy k of question i has id i + k * CIRCULAR_OFFSET


def norm_id(value: Any) -> QuestionId:
    """A question id as an int when it is one (JSON files disagree on 1 vs "1"), else as a string."""
    if isinstance(value, bool):
        raise ValueError(f"question id {value!r} is not an int or a string")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return int(text) if text.lstrip("-").isdigit() else text
    raise ValueError(f"question id {value!r} is not an int or a string")

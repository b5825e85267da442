"""Append-only JSONL files that survive a kill: a torn last line is cut before appending and skipped when read.

Used for every file a run appends to as it goes (metrics, predictions, captions) so an interrupted run resumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def repair_tail(path: str | Path) -> int:
    """Cut a partial last line (no trailing newline) so appended rows start on a line of their own; bytes cut."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    data = path.read_bytes()
    if data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(keep)
    return len(data) - keep


def read_jsonl(path: str | Path) -> tuple[list[dict[str, Any]], int]:
    """(the JSON-object rows of `path` in order, how many non-blank lines were unreadable); [] when absent.

    An unreadable line is normally a kill's torn last line; callers report the count rather than fail.
    """
    path = Path(path)
    if not path.exists():
        return [], 0
    rows: list[dict[str, Any]] = []
    bad = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad

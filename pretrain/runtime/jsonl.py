"""JSON files read with one-line errors, and append-only JSONL files that survive a kill.

`read_json_file` is how every config, manifest and data JSON is read: a missing or malformed file is one error line
naming it. JSONL files a run appends to as it goes (metrics, predictions, captions) have a torn last line cut before
appending (`repair_tail`) and skipped when read (`read_jsonl`), so an interrupted run resumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pretrain.runtime.errors import UserError


def read_json_file(path: str | Path, missing: str = "", error: type[UserError] = UserError, expected: str = "") -> Any:
    """The parsed JSON of `path`. A missing file raises `error(missing)` (default: "<path>: no such file"); invalid
    JSON or text raises `error` naming the file, the parser's first line and, if given, what was `expected`."""
    path = Path(path)
    hint = f"; expected {expected}" if expected else ""
    if not path.is_file():
        raise error(missing or f"{path}: no such file{hint}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"{path}: not valid JSON ({first}){hint}") from None


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


def read_jsonl_file(path: str | Path, keys: tuple[str, ...], expected: str) -> tuple[list[dict[str, Any]], int]:
    """(object rows, unreadable lines) of a JSON-lines data file; a one-line DataError when it is missing, holds
    no object line, or its first row lacks one of `keys` (`expected` says what the file should be)."""
    from pretrain.runtime.errors import DataError

    if not Path(path).is_file():
        raise DataError(f"{path}: no such file (expected {expected})")
    rows, bad = read_jsonl(path)
    if not rows:
        raise DataError(f"{path}: no JSON object lines (expected {expected})")
    missing = [k for k in keys if k not in rows[0]]
    if missing:
        raise DataError(f"{path}: first row lacks field {missing[0]!r} (has {sorted(rows[0])}; expected {expected})")
    return rows, bad

"""Prediction files: our resumable `predictions.jsonl` (and data-parallel rank shards), the one rule for a question
answered twice, and `predictions.meta.json`, which says what produced the answers so that a rerun with another model
or setting is refused instead of mixed in.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eval.vlm.ids import QuestionId, norm_id
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.jsonl import read_jsonl

log = logging.getLogger(__name__)


def _prediction_row(entry: Any) -> dict[str, Any] | None:
    """A row with a normalised `question_id` and a string `answer` (LLaVA's `"text"` read too), None if malformed."""
    if not isinstance(entry, dict) or "question_id" not in entry:
        return None
    answer = entry.get("answer", entry.get("text"))
    if not isinstance(answer, str):
        return None
    try:
        return {**entry, "question_id": norm_id(entry["question_id"]), "answer": answer}
    except ValueError:
        return None


def keep_row(rows: dict[QuestionId, dict[str, Any]], row: dict[str, Any]) -> bool:
    """The one duplicate rule, the official scripts' (they build a dict): the last row of an id wins, except that an
    image-error row never replaces an answer. True when the id is new."""
    old = rows.get(row["question_id"])
    if old is None or "error" in old or "error" not in row:
        rows[row["question_id"]] = row
    return old is None


def _entries(path: Path) -> tuple[list[Any], int]:
    """The raw entries of a JSON list file or a JSONL file (a kill's torn line counted as unreadable)."""
    with path.open(encoding="utf-8", errors="replace") as f:
        head = f.read(4096).lstrip()
    if not head.startswith("["):
        return read_jsonl(path)
    try:
        return json.loads(path.read_text(encoding="utf-8")), 0
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not a valid JSON list ({exc.msg} at line {exc.lineno})") from exc


def read_predictions(path: str | Path) -> tuple[dict[QuestionId, dict[str, Any]], dict[str, Any]]:
    """Rows by normalised question id from a JSONL file or a JSON list, and counts ({} when the file is absent).

    Rows need `question_id` and `answer` (or LLaVA's `text`); the last row of an id wins (a resumed run never
    re-appends an answered id) except that an `"error"` row (its image failed) never replaces an answer.
    """
    path = Path(path)
    entries, bad = _entries(path) if path.is_file() else ([], 0)
    rows: dict[QuestionId, dict[str, Any]] = {}
    stats = {"path": str(path), "rows": len(entries) + bad, "malformed_rows": bad, "duplicate_ids": 0}
    for entry in entries:
        row = _prediction_row(entry)
        if row is None:
            stats["malformed_rows"] += 1
        elif not keep_row(rows, row):
            stats["duplicate_ids"] += 1
    stats["image_errors"] = sum("error" in row for row in rows.values())
    if stats["malformed_rows"]:
        log.warning("%s: ignored %d unreadable line(s)", path, stats["malformed_rows"])
    return rows, stats


def answers_of(rows: Mapping[QuestionId, dict[str, Any]]) -> dict[QuestionId, str]:
    """id -> answer text, without the image-error rows (they are missing predictions, not the answer "")."""
    return {qid: row["answer"] for qid, row in rows.items() if "error" not in row}


def rank_files(path: Path) -> list[Path]:
    """`predictions.rank{r}` shards of this or an earlier (possibly differently sized) data-parallel run."""
    return sorted(path.parent.glob(f"{path.name}.rank*"))


def answered_rows(path: Path) -> dict[QuestionId, dict[str, Any]]:
    """Every row already written: the merged file first, then any rank shards (the same duplicate rule)."""
    rows = read_predictions(path)[0]
    for shard in rank_files(path):
        for row in read_predictions(shard)[0].values():
            keep_row(rows, row)
    return rows


def merge_predictions(path: Path) -> dict[QuestionId, dict[str, Any]]:
    """Fold the rank shards into `path` (atomically, each id once) and delete them; returns all rows."""
    shards = rank_files(path)
    rows = answered_rows(path)
    if shards:
        write_text_atomically(path, "".join(json.dumps(row) + "\n" for row in rows.values()))
        for shard in shards:
            shard.unlink()
    return rows


def signature_path(predictions: Path) -> Path:
    """`predictions.meta.json` beside `predictions.jsonl`: what produced the answers in it."""
    return predictions.with_name(f"{predictions.stem}.meta.json")


def check_signature(predictions: Path, signature: dict[str, Any], resuming: bool) -> None:
    """Refuse to add to answers made differently (one-line UserError naming the field); no-op on a fresh run."""
    meta = signature_path(predictions)
    if not resuming:
        return
    if not meta.is_file():
        log.warning("%s: missing (answers from an older version); resuming without checking them", meta)
        return
    try:
        old = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        old = {}
    restart = f"write to a new --out, or delete {predictions} to start over"
    if not isinstance(old, dict) or not old:
        raise UserError(f"{meta}: unreadable, so the answers in {predictions.name} cannot be checked; {restart}")
    for key in dict.fromkeys([*signature, *old]):
        if old.get(key) != signature.get(key):
            raise UserError(
                f"{meta}: the answers in {predictions.name} were made with {key}={old.get(key)!r}, this run has "
                f"{key}={signature.get(key)!r}; {restart}"
            )


def write_signature(predictions: Path, signature: dict[str, Any]) -> None:
    """Record `signature` beside the predictions (atomically) unless the file already says exactly that."""
    meta = signature_path(predictions)
    text = json.dumps(signature, indent=2) + "\n"
    if not meta.is_file() or meta.read_text(encoding="utf-8") != text:
        write_text_atomically(meta, text)

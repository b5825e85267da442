"""Readers every benchmark shares: JSON files, LLaVA's question JSONL, image folders, lmms-lab parquet shards.

Each one fails in one line naming the file and what was expected (a DataError), so a benchmark's own loader only
maps rows to questions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.jsonl import read_json_file, read_jsonl_file

LLAVA_QUESTION_KEYS = ("question_id", "image", "text")


def read_json(path: str | Path, what: str) -> Any:
    """A JSON file, or a one-line DataError naming it."""
    return read_json_file(path, f"{path}: no such {what} file", DataError, expected=f"the {what}")


class ImageFinder:
    """Resolves image names under a root and its candidate subfolders, listing each folder once."""

    def __init__(self, root: str | Path | None, subdirs: Sequence[str]) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise DataError(f"{self.root}: image root is not a directory")
        self.dirs = [self.root / s for s in subdirs] if self.root is not None else []
        self._listings: dict[Path, set[str]] = {}

    def find(self, names: Sequence[str]) -> Path | None:
        for d in self.dirs:
            for name in (n for n in names if "/" in n):  # a relative path with folders: no listing to look in
                if (d / name).is_file():
                    return d / name
            if d not in self._listings:
                self._listings[d] = set(os.listdir(d)) if d.is_dir() else set()
            for name in names:
                if name in self._listings[d]:
                    return d / name
        return None


def parquet_split(file: Path) -> str:
    """The split of a Hugging Face parquet shard: its name before the first "-" (`validation-00000-of-00010`)."""
    return file.stem.split("-", 1)[0]


def parquet_files(path: Path, split: str | None = None) -> tuple[list[Path], str]:
    """The shards of one split in a file or folder, and the split's name; a folder of several splits needs `split`."""
    if not path.is_dir():
        if not path.is_file():
            raise DataError(f"{path}: no parquet file")
        return [path], split or parquet_split(path)
    files = sorted(path.glob("*.parquet"))
    splits = sorted({parquet_split(f) for f in files})
    if not files:
        raise DataError(f"{path}: no *.parquet file in the folder")
    if split is None and len(splits) > 1:
        raise UserError(f"{path}: holds the splits {splits}; choose one with --split (the file-name prefix)")
    split = split or splits[0]
    if split not in splits:
        raise UserError(f"{path}: no '{split}' parquet files (file-name prefixes found: {splits})")
    return [f for f in files if parquet_split(f) == split], split


def parquet_rows(
    path: str | Path | Sequence[Path],
    split: str | None = None,
    columns: Sequence[str] = (),
    what: str = "an lmms-lab parquet",
    batch_size: int = 256,
) -> tuple[Iterator[dict[str, Any]], str]:
    """The rows of a parquet file, of a folder's `{split}-*.parquet` shards (`parquet_files`) or of the given files,
    as dicts read a batch at a time (image bytes stay encoded), and the split's name. The files are found, pyarrow
    imported and every file's schema checked before the first row: one-line errors for a missing pyarrow, no files,
    an unreadable file and a missing `columns` entry (naming the file, the column and `what` was expected)."""
    if isinstance(path, (str, Path)):
        files, split = parquet_files(Path(path), split)
    else:
        files, split = list(path), split or ""
        if not files:
            raise DataError("no parquet file given")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{files[0]}: reading parquet needs pyarrow (pip install pyarrow)") from None
    for file in files:
        try:
            names = set(pq.read_schema(file).names)
        except Exception as exc:  # pyarrow's ArrowInvalid and OSError subclasses, by version
            raise DataError(f"{file}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
        for column in columns:
            if column not in names:
                raise DataError(f"{file}: missing column '{column}' (expected {what})")

    def rows() -> Iterator[dict[str, Any]]:
        for file in files:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_size):
                yield from batch.to_pylist()

    return rows(), split


def is_llava_questions(path: str | Path) -> bool:
    """Whether a question file is LLaVA's question JSONL (told by its `.jsonl` suffix; its rows are checked on load)."""
    return Path(path).suffix.lower() == ".jsonl"


def read_llava_questions(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a LLaVA question JSONL ({question_id, image, text} per line); unreadable lines become {} rows
    (counted as malformed questions); a missing or foreign file is a one-line DataError."""
    expected = "LLaVA's question JSONL: one {question_id, image, text} object per line"
    rows, bad = read_jsonl_file(path, LLAVA_QUESTION_KEYS, expected)
    return rows + [{}] * bad


def first_file(folder: Path, *names: str) -> Path | None:
    """The first of `names` (glob patterns) present in `folder`."""
    for name in names:
        found = sorted(folder.glob(name))
        if found:
            return found[0]
    return None


def parquet_image(value: Any) -> bytes | None:
    """The encoded bytes of a Hugging Face parquet image cell (a {bytes, path} struct or raw bytes), None if absent."""
    data = value.get("bytes") if isinstance(value, dict) else value
    return bytes(data) if isinstance(data, (bytes, bytearray)) and data else None


def parquet_image_name(value: Any) -> str:
    """The file name a parquet image cell records ("" when it records none)."""
    return str(value.get("path") or "") if isinstance(value, dict) else ""


def read_list(path: Path, what: str) -> list[Any]:
    """A JSON file holding a list, or a one-line DataError naming it."""
    rows = read_json(path, what)
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list (the {what}), found a {type(rows).__name__}")
    return rows


def parquet_folder(folder: Path, split: str, *subdirs: str) -> dict[str, str] | None:
    """Suite values for lmms-lab's parquet snapshot under `folder` (`{split}-*.parquet` in a subdir or itself)."""
    for d in (*(folder / s for s in subdirs), folder / "data", folder):
        if any(d.glob(f"{split}-*.parquet")):
            return {"parquet": str(d), "split": split}
    return None


def field_list(doc: Any, key: str, path: str | Path, what: str) -> list[Any]:
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise DataError(f"{path}: missing list field '{key}' (expected the {what})")
    return doc[key]

"""Image-text lists for small sets: a JSONL or CSV/TSV file of (image path, caption) rows plus an image folder.

Image paths are relative to `image_root` when given, else to the list file's directory (absolute paths are
kept). A malformed list is a DataError naming the file, line and field; a missing or undecodable image, or an
empty caption, is a counted skip when the sample is read.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from pretrain.data.shards import decode_image
from pretrain.runtime.errors import DataError


@dataclass
class ImageTextList:
    """The rows of a list file: absolute image paths and their captions (unstripped, as written)."""

    path: str
    images: list[str]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.images)


def _check_row(row: object, where: str, image_key: str, caption_key: str) -> tuple[str, str]:
    """The (image, caption) strings of one parsed row, or a DataError naming the place and field."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with '{image_key}' and '{caption_key}', got {type(row).__name__}")
    for key in (image_key, caption_key):
        if key not in row or row[key] is None:
            raise DataError(f"{where}: missing field '{key}' (columns: {', '.join(map(str, row))})")
        if not isinstance(row[key], str):
            raise DataError(f"{where}: field '{key}' must be a string, got {type(row[key]).__name__}")
    return row[image_key], row[caption_key]


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line of a JSONL list; a bad line is a DataError naming it."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not a JSON object line ({exc.msg})") from None


def _read_jsonl(path: Path, image_key: str, caption_key: str) -> list[tuple[str, str]]:
    return [_check_row(row, f"{path}:{number}", image_key, caption_key) for number, row in json_lines(path)]


def _read_csv(path: Path, image_key: str, caption_key: str, delimiter: str) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = reader.fieldnames or []
        for key in (image_key, caption_key):
            if key not in columns:
                raise DataError(f"{path}:1: missing column '{key}' (columns: {', '.join(columns)})")
        rows = []
        for row in reader:
            if None in row:  # more cells than header columns
                cells = len(columns) + len(row[None])
                raise DataError(f"{path}:{reader.line_num}: {cells} cells, the header has {len(columns)}")
            rows.append(_check_row(row, f"{path}:{reader.line_num}", image_key, caption_key))
    return rows


def read_list(
    path: str | Path,
    image_key: str = "image",
    caption_key: str = "caption",
    image_root: str | None = None,
) -> ImageTextList:
    """Parse a .jsonl / .csv / .tsv list; image paths are resolved against `image_root` or the list's folder."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"list file {path} does not exist (expected a .jsonl, .csv or .tsv file)")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            rows = _read_jsonl(path, image_key, caption_key)
        elif suffix in (".csv", ".tsv"):
            rows = _read_csv(path, image_key, caption_key, "\t" if suffix == ".tsv" else ",")
        else:
            raise DataError(f"list file {path}: unknown format '{suffix}' (expected .jsonl, .csv or .tsv)")
    except UnicodeDecodeError:
        raise DataError(f"list file {path}: not UTF-8 text") from None
    if not rows:
        raise DataError(f"list file {path} has no rows")
    root = Path(image_root).expanduser() if image_root else path.parent
    images = [image if os.path.isabs(image) else str(root / image) for image, _ in rows]
    return ImageTextList(path=str(path), images=images, captions=[caption for _, caption in rows])


def load_item(items: ImageTextList, index: int, counts: Counter) -> tuple[Image.Image, str] | None:
    """(RGB image, caption) of row `index`, or None with the reason counted (empty caption, missing/bad image)."""
    caption = items.captions[index].strip()
    if not caption:
        counts["empty_caption"] += 1
        return None
    try:
        data = Path(items.images[index]).read_bytes()
    except OSError:
        counts["missing_image"] += 1
        return None
    image = decode_image(data, counts)
    if image is None:
        return None
    return image, caption

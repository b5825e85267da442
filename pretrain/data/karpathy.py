"""Karpathy split files (`dataset_coco.json`, `dataset_flickr30k.json`): the one reader LiT and ClipCap share.

Format (from Karpathy's `caption_datasets.zip`): {"images": [{"filename", "filepath" (COCO only, e.g.
"val2014"), "split": train|restval|val|test, "cocoid" (COCO) / "imgid", "sentences": [{"raw", "tokens"}, ...]},
...]}. A caption is its `raw` text, or its `tokens` joined by spaces when `raw` is absent or empty (some
re-exports keep only tokens); a plain string sentence is taken as is. Anything else is a one-line DataError
naming the file and the entry (`images[n]`), never a bare KeyError deep inside an evaluator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pretrain.runtime.errors import DataError
from pretrain.runtime.jsonl import read_json_file


@dataclass
class KarpathyImage:
    """One `images[index]` entry of a Karpathy file."""

    index: int  # position in the file's `images` list
    image_id: int  # `cocoid`, else `imgid`, else `index`
    filepath: str  # "" when the entry has none (Flickr30k)
    filename: str
    split: str
    captions: list[str]

    def path(self, root: str | Path | None) -> Path:
        """The image file: ROOT/filepath/filename (or ROOT/filename); `root` None means the working directory."""
        base = Path(root).expanduser() if root else Path(".")
        return base / self.filepath / self.filename if self.filepath else base / self.filename


def _caption(sentence: Any, where: str) -> str:
    """The text of one sentence: `raw`, else joined `tokens`, else a DataError naming `where`."""
    if isinstance(sentence, str):
        return sentence.strip()
    if isinstance(sentence, dict):
        raw = sentence.get("raw")
        if isinstance(raw, str) and raw.strip():
            return raw.strip()
        tokens = sentence.get("tokens")
        if isinstance(tokens, list) and tokens and all(isinstance(t, str) for t in tokens):
            return " ".join(tokens)
    raise DataError(f"{where}: expected a sentence with a 'raw' string or a 'tokens' list")


def _entry(entry: Any, n: int, path: Path) -> KarpathyImage:
    """`images[n]` checked field by field."""
    where = f"{path}: images[{n}]"
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object, got {type(entry).__name__}")
    if not isinstance(entry.get("filename"), str) or not entry["filename"]:
        raise DataError(f"{where}: no 'filename' string")
    if not isinstance(entry.get("split"), str):
        raise DataError(f"{where}: no 'split' string (train, restval, val or test)")
    if not isinstance(entry.get("sentences"), list):
        raise DataError(f"{where}: no 'sentences' list")
    filepath = entry.get("filepath", "")
    if not isinstance(filepath, str):
        raise DataError(f"{where}: 'filepath' must be a string")
    raw_id = entry.get("cocoid", entry.get("imgid", n))
    if isinstance(raw_id, bool) or not isinstance(raw_id, int):
        raise DataError(f"{where}: 'cocoid'/'imgid' must be an integer, got {raw_id!r}")
    captions = [_caption(s, f"{where}.sentences[{m}]") for m, s in enumerate(entry["sentences"])]
    return KarpathyImage(n, raw_id, filepath, entry["filename"], entry["split"], captions)


def read_karpathy(path: str | Path) -> list[KarpathyImage]:
    """Every image entry of a Karpathy split file, validated (DataError on a missing or malformed file)."""
    path = Path(path).expanduser()
    missing = f"{path}: no such file (expected a Karpathy split JSON, e.g. dataset_coco.json)"
    data = read_json_file(path, missing, DataError)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: expected an object with an 'images' list (Karpathy format)")
    return [_entry(entry, n, path) for n, entry in enumerate(data["images"])]


def karpathy_split(path: str | Path, splits: str | Sequence[str]) -> list[KarpathyImage]:
    """The entries whose `split` is one of `splits` (e.g. ("train", "restval")), in file order."""
    wanted = {splits} if isinstance(splits, str) else set(splits)
    return [im for im in read_karpathy(path) if im.split in wanted]

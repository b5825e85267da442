"""COCO Karpathy split, a resumable encoder-feature cache, and the (image, caption) batch stream for training.

The split comes from `dataset_coco.json`'s own per-image `split` field (train + restval = train; val; test),
never re-sampled. Images are `image_root/filepath/filename`; missing ones are counted and skipped.

A feature cache is a directory: `manifest.json` (encoder identity, kind, keys hash, chunk size, finished chunks
and their skipped keys) and `chunk-NNNNNN.safetensors` (`features`, `valid`); an interrupted run resumes at the
first unfinished chunk. Pooled features are stored in float32, patch tokens in float16.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import DataError

SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}


@dataclass
class CaptionedImage:
    image_id: int
    path: Path
    captions: list[str]


@dataclass
class KarpathySplit:
    split: str
    images: list[CaptionedImage]  # present on disk (or all, when images are not checked)
    missing: list[int] = field(default_factory=list)  # image ids whose file does not exist


def _image_id(entry: dict[str, Any]) -> int:
    return int(entry["cocoid"] if "cocoid" in entry else entry["imgid"])


def _captions(entry: dict[str, Any]) -> list[str]:
    return [s.get("raw") or " ".join(s.get("tokens", [])) for s in entry.get("sentences", [])]


def read_karpathy_json(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Karpathy split file {path} does not exist (dataset_coco.json from caption_datasets.zip)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path} is not a Karpathy split file (expected {{'images': [...]}})")
    return data["images"]


def load_karpathy(
    path: str | Path, image_root: str | Path | None, split: str, check_images: bool = True
) -> KarpathySplit:
    """One split of `dataset_coco.json`; with `check_images`, images missing under `image_root` are counted."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (known: {', '.join(SPLITS)})")
    root = Path(image_root) if image_root else Path(".")
    out = KarpathySplit(split, [])
    for entry in read_karpathy_json(path):
        if entry.get("split") not in SPLITS[split]:
            continue
        image_path = root / entry.get("filepath", "") / entry["filename"]
        if check_images and not image_path.is_file():
            out.missing.append(_image_id(entry))
            continue
        out.images.append(CaptionedImage(_image_id(entry), image_path, _captions(entry)))
    return out


def karpathy_to_coco(path: str | Path, split: str = "test") -> dict[str, Any]:
    """COCO caption annotations (`images`, `annotations`) for one Karpathy split, for scoring."""
    images, annotations = [], []
    for entry in read_karpathy_json(path):
        if entry.get("split") not in SPLITS[split]:
            continue
        image_id = _image_id(entry)
        images.append({"id": image_id, "file_name": entry["filename"]})
        for caption in _captions(entry):
            annotations.append({"id": len(annotations), "image_id": image_id, "caption": caption})
    return {"images": images, "annotations": annotations, "type": "captions"}


# ------------------------------------------------------------------------------------------- feature cache
@dataclass
class FeatureCache:
    keys: list[str]  # the item keys whose features exist, in order
    features: torch.Tensor  # [N, D] pooled or [N, T, D] tokens
    skipped: list[str]  # keys that could not be loaded


def _keys_hash(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def encoder_signature(encoder: Any) -> str:
    """Path + config hash of an encoder artifact (what a cache was computed with)."""
    cfg = json.dumps(getattr(encoder, "config", {}), sort_keys=True, default=str)
    return f"{getattr(encoder, 'path', '')}:{hashlib.sha256(cfg.encode()).hexdigest()[:16]}"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomically(path, json.dumps(data, indent=1))


@torch.no_grad()
def cache_features(
    encoder: Any,
    keys: list[str],
    load: Callable[[int], Image.Image | None],
    out_dir: str | Path,
    kind: Literal["pooled", "tokens"] = "pooled",
    batch_size: int = 64,
    chunk: int = 2048,
    device: str | torch.device = "cpu",
) -> FeatureCache:
    """Encode items `keys[i]` (images from `load(i)`, None = missing) once into `out_dir`, resuming finished chunks."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    ident = {"encoder": encoder_signature(encoder), "kind": kind, "keys": _keys_hash(keys), "chunk": chunk}
    manifest: dict[str, Any] = {**ident, "count": len(keys), "chunks": {}}
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if any(old.get(k) != v for k, v in ident.items()):
            raise DataError(f"feature cache {out} was computed for another encoder, kind or item list; use a new dir")
        manifest = old
    encoder = encoder.to(device).eval()
    for c, start in enumerate(range(0, len(keys), chunk)):
        if str(c) in manifest["chunks"]:
            continue
        feats, valid = [], []
        for b in range(start, min(start + chunk, len(keys)), batch_size):
            idx = range(b, min(b + batch_size, start + chunk, len(keys)))
            images = [load(i) for i in idx]
            valid += [im is not None for im in images]
            batch = [encoder.preprocess(im.convert("RGB")) for im in images if im is not None]
            if not batch:
                continue
            tokens = encoder.forward_features(torch.stack(batch).to(device))
            x = encoder.forward_head(tokens) if kind == "pooled" else tokens
            feats.append(x.float().cpu() if kind == "pooled" else x.half().cpu())
        data = {"valid": torch.tensor(valid, dtype=torch.bool)}
        if feats:
            data["features"] = torch.cat(feats)
        save_file(data, str(out / f"chunk-{c:06d}.safetensors"))
        manifest["chunks"][str(c)] = [keys[start + i] for i, ok in enumerate(valid) if not ok]
        _write_json(manifest_path, manifest)
    return read_feature_cache(out, keys)


def read_feature_cache(out_dir: str | Path, keys: list[str]) -> FeatureCache:
    out = Path(out_dir)
    manifest = json.loads((out / "manifest.json").read_text())
    chunk, feats, kept, skipped = manifest["chunk"], [], [], []
    for c, start in enumerate(range(0, len(keys), chunk)):
        data = load_file(str(out / f"chunk-{c:06d}.safetensors"))
        for i, ok in enumerate(data["valid"].tolist()):
            (kept if ok else skipped).append(keys[start + i])
        if "features" in data:
            feats.append(data["features"])
    features = torch.cat(feats) if feats else torch.zeros(0)
    return FeatureCache(kept, features, skipped)


def open_image(path: Path) -> Image.Image | None:
    """An image file, or None when it is missing or unreadable (counted as skipped by the cache)."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------------------------------- training pairs
def tokenize_captions(tokenizer: Any, captions: list[str], max_tokens: int = 0) -> list[list[int]]:
    """Token ids per caption + EOS; truncated at `max_tokens` or, when 0, ClipCap's min(mean + 10 std, max)."""
    eos = tokenizer.eos_token_id
    ids = [tokenizer.encode(c, add_special_tokens=False) + ([eos] if eos is not None else []) for c in captions]
    if not ids:
        return ids
    if max_tokens <= 0:
        lengths = torch.tensor([len(x) for x in ids], dtype=torch.float)
        std = float(lengths.std()) if len(ids) > 1 else 0.0
        max_tokens = int(min(float(lengths.mean()) + 10 * std, float(lengths.max())))
    return [x[:max_tokens] for x in ids]


class CaptionPairs:
    """Endless, resumable stream of (feature, caption) batches: one pair per caption, reshuffled every epoch.

    Satisfies the loop's `BatchSource`; batches are `features`, `tokens` (padded with 0) and `targets` (-100 pad).
    """

    def __init__(self, features: torch.Tensor, image_index: list[int], ids: list[list[int]], batch_size: int, seed=0):
        if len(ids) < batch_size:
            raise DataError(f"{len(ids)} captions are fewer than one batch of {batch_size}")
        self.features, self.image_index, self.ids = features, torch.tensor(image_index), ids
        self.batch_size, self.seed = batch_size, seed
        self.epoch, self.position = 0, 0

    def __len__(self) -> int:
        return len(self.ids) // self.batch_size  # drop_last, as ClipCap

    @property
    def skipped(self) -> dict[str, int]:
        return {}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        length = max(len(self.ids[r]) for r in rows)
        tokens = torch.zeros(len(rows), length, dtype=torch.long)
        targets = torch.full((len(rows), length), -100, dtype=torch.long)
        for i, r in enumerate(rows):
            x = torch.tensor(self.ids[r], dtype=torch.long)
            tokens[i, : len(x)], targets[i, : len(x)] = x, x
        feats = self.features[self.image_index[torch.tensor(rows)]].float()
        return {"features": feats, "tokens": tokens, "targets": targets}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            order = torch.randperm(len(self.ids), generator=torch.Generator().manual_seed(self.seed + self.epoch))
            while self.position < len(self):
                rows = order[self.position * self.batch_size : (self.position + 1) * self.batch_size].tolist()
                self.position += 1
                yield self.collate(rows)
            self.epoch, self.position = self.epoch + 1, 0

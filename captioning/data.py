"""COCO Karpathy split, a resumable encoder-feature cache, and the (image, caption) batch stream for training.

The split comes from `dataset_coco.json`'s own per-image `split` field (train + restval = train; val; test),
never re-sampled; the file is read by `pretrain.data.karpathy` (the reader LiT's retrieval uses too). Images
are `image_root/filepath/filename`; missing ones are counted and skipped.

Encoder features come from `pretrain.feature_cache.cached_feature_set`: one directory per encoder, image
set and precision under the cache root, resumable chunk by chunk, computed on rank 0; pooled features are
float32, all tokens (the transformer mapper's input) float16.

Training pairs (`CaptionPairs`) are split across ranks like a distributed sampler: every epoch one permutation
shared by all ranks (seeded by seed + epoch), cut into global batches of local x world pairs; rank r takes the
r-th slice of each, so the ranks see disjoint pairs that together make the global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pretrain.data.karpathy import karpathy_split
from pretrain.data.labelled import LabelledImages
from pretrain.data.synthetic import make_sample, synthetic_references
from pretrain.encoder import Encoder
from pretrain.feature_cache import cached_feature_set
from pretrain.features import TOKEN_POOL
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


def load_karpathy(
    path: str | Path, image_root: str | Path | None, split: str, check_images: bool = True
) -> KarpathySplit:
    """One split of `dataset_coco.json`; with `check_images`, images missing under `image_root` are counted."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (known: {', '.join(SPLITS)})")
    out = KarpathySplit(split, [])
    for entry in karpathy_split(path, SPLITS[split]):
        image_path = entry.path(image_root)
        if check_images and not image_path.is_file():
            out.missing.append(entry.image_id)
            continue
        out.images.append(CaptionedImage(entry.image_id, image_path, entry.captions))
    return out


def karpathy_to_coco(path: str | Path, split: str = "test") -> dict[str, Any]:
    """COCO caption annotations (`images`, `annotations`) for one Karpathy split, for scoring."""
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (known: {', '.join(SPLITS)})")
    images, annotations = [], []
    for entry in karpathy_split(path, SPLITS[split]):
        images.append({"id": entry.image_id, "file_name": entry.filename})
        for caption in entry.captions:
            annotations.append({"id": len(annotations), "image_id": entry.image_id, "caption": caption})
    return {"images": images, "annotations": annotations, "type": "captions"}


# ------------------------------------------------------------------------------------------- split images
@dataclass
class SplitImages:
    """The images of one split for `pretrain.features` (one placeholder class), their keys and references."""

    images: LabelledImages
    keys: list[str]  # the image id of item i, as a string
    captions: dict[str, list[str]]  # key -> reference captions
    missing: int = 0  # Karpathy images absent under image_root (counted before extraction)


def karpathy_images(path: str | Path, image_root: str | Path | None, split: str) -> SplitImages:
    """The split's images found under `image_root` (DataError when there are none)."""
    ks = load_karpathy(path, image_root, split)
    if not ks.images:
        raise DataError(f"no images of split '{split}' under '{image_root}' ({len(ks.missing)} missing)")
    paths = [str(im.path) for im in ks.images]
    images = LabelledImages(paths, [0] * len(paths), ["image"], source=str(path), split=split)
    keys = [str(im.image_id) for im in ks.images]
    return SplitImages(images, keys, dict(zip(keys, (im.captions for im in ks.images))), len(ks.missing))


def synthetic_images(n: int, seed: int, size: int, references: int) -> SplitImages:
    """`n` procedural images (`pretrain.data.synthetic`) with `references` captions each."""
    pixels = [make_sample(i, seed, size).image for i in range(n)]
    images = LabelledImages(pixels, [0] * n, ["image"], source=f"synthetic[{n}]@{size}px/seed{seed}", split="")
    keys = [str(i) for i in range(n)]
    return SplitImages(images, keys, {k: synthetic_references(int(k), seed, size, references) for k in keys})


@dataclass
class CaptionFeatures:
    """Encoder features of a split's readable images, in row order, with their references."""

    keys: list[str]  # the image key of each row
    features: torch.Tensor  # [N, D] pooled float32 or [N, T, D] tokens float16
    captions: dict[str, list[str]]
    skipped: int  # images missing on disk or undecodable


def encode_split(
    encoder: Encoder,
    split: SplitImages,
    cache_root: str | Path,
    tokens: bool,
    device: str | torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    is_main: bool = True,
) -> CaptionFeatures:
    """The split's features from the shared feature cache (`pretrain.features`: keyed, resumable, rank-0 computed)."""
    pool = TOKEN_POOL if tokens else "default"
    features, _ = cached_feature_set(
        encoder, split.images, cache_root, (pool,), "auto", device, batch_size, num_workers, is_main
    )
    keys = [split.keys[i] for i in features.indices.tolist()]
    return CaptionFeatures(
        keys, features.get(pool), split.captions, split.missing + len(features.meta["skipped_indices"])
    )


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

    `batch_size` is this rank's (the loop's local batch); a global batch is `batch_size * world_size` pairs of
    one permutation per epoch that every rank draws alike (seed + epoch), and rank r takes its r-th slice, so
    ranks never repeat each other's pairs. The state (epoch, position) resumes exactly. Satisfies the loop's
    `BatchSource`; batches are `features`, `tokens` (padded with 0) and `targets` (-100 pad).
    """

    def __init__(
        self,
        features: torch.Tensor,
        image_index: list[int],
        ids: list[list[int]],
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        if len(ids) < batch_size * world_size:
            raise DataError(f"{len(ids)} captions are fewer than one global batch of {batch_size * world_size}")
        self.features, self.image_index, self.ids = features, torch.tensor(image_index), ids
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.epoch, self.position = 0, 0

    def __len__(self) -> int:
        return len(self.ids) // (self.batch_size * self.world_size)  # global batches per epoch; drop_last

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

    def _order(self) -> torch.Tensor:
        """This epoch's permutation of all pairs: the same on every rank (seeded by seed + epoch only)."""
        return torch.randperm(len(self.ids), generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            order = self._order()
            while self.position < len(self):
                start = (self.position * self.world_size + self.rank) * self.batch_size  # this rank's slice
                rows = order[start : start + self.batch_size].tolist()
                self.position += 1
                yield self.collate(rows)
            self.epoch, self.position = self.epoch + 1, 0

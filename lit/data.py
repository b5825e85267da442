"""LiT's training batches: images through the train or eval transform, or the locked tower's cached features.

Cached-features mode (`cache_features=true`) applies when the image tower is fully locked and sees no
augmentation (`unlocked_groups=0`, `augment=false`): a sample's pooled feature is then a pure function of its
image, so the tower runs once over the training data and LiT trains the projection and the text tower on the
stored features. It needs random-access data (`data.kind` list or synthetic).

The cache is `pretrain.features`' (`manifest.json` + `chunk-NNNNNN.safetensors`, pool `default` = the encoder's own
pooling, float32, resumable chunk by chunk) in `CACHE_DIR/<key>/` (`pretrain.feature_cache.cached_feature_set`). The key
digests everything the features depend on: the encoder's config (architecture and preprocessing, i.e. the eval
transform) and its weights, the training items (list: every image's absolute path, size and mtime; synthetic: the
pixels) and the precision. Another encoder, other data or another precision therefore gets another directory, and
the manifest re-checks encoder and items before a cache is reused, so a stale cache is never read.

Cached batches come from the same `IndexedSource` + `BatchStream` as live images: the batch order, the skip
counts and the resume state are those of the live run, and `batch["image"]` holds features [B, D].
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from pretrain.data.labelled import LabelledImages
from pretrain.data.lists import read_list
from pretrain.data.stream import BatchLoader, BatchStream, DataConfig, EncodeText, IndexedSource, build_loader
from pretrain.data.synthetic import make_sample
from pretrain.encoder import load_encoder
from pretrain.feature_cache import cached_feature_set
from pretrain.runtime.errors import ConfigError

POOL = "default"  # the encoder's own pooling: what LiTModel.image_features computes live


def image_loader(
    data: DataConfig,
    encode_text: EncodeText,
    local_batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    transform: Callable[[Image.Image], torch.Tensor] | None = None,
) -> BatchLoader:
    """Live image batches (pretrain's loader); `transform` (e.g. the eval transform) replaces its augmentation."""
    loader = build_loader(data, encode_text, local_batch_size, rank, world_size, seed)
    if transform is not None:
        loader.stream.transform = transform
    return loader


def training_items(data: DataConfig) -> tuple[LabelledImages, list[str]]:
    """The training set as random-access images (one placeholder class) and the captions the live loader reads.

    List captions are stripped as `pretrain.data.lists.load_item` strips them; "" marks a row it skips as empty.
    """
    if data.kind == "list":
        rows = read_list(data.train, data.image_key, data.caption_key, data.image_root)
        images = LabelledImages(list(rows.images), [0] * len(rows), ["image"], source=rows.path, split="train")
        return images, [caption.strip() for caption in rows.captions]
    if data.kind == "synthetic":
        n, size = data.synthetic_samples, data.synthetic_image_size
        samples = [make_sample(i, seed=0, image_size=size) for i in range(n)]
        source = f"synthetic[{n}]@{size}px"
        images = LabelledImages([s.image for s in samples], [0] * n, ["image"], source=source, split="train")
        return images, [s.caption for s in samples]
    raise ConfigError(f"cache_features: needs random-access data (data.kind list or synthetic), not {data.kind!r}")


@dataclass
class CachedFeatures:
    """Pooled features of the training items, with the captions and skip reasons the live loader would see."""

    path: Path  # the cache directory
    features: torch.Tensor  # [rows, D] float32
    rows: torch.Tensor  # [N] the row of item i in `features`; -1 when its image was unreadable
    captions: list[str]  # "" = a row the live loader skips as an empty caption
    reasons: dict[int, str]  # unreadable item -> 'missing_image' | 'bad_image'
    name: str

    def __len__(self) -> int:
        return len(self.captions)

    def load(self, index: int, counts: Counter) -> tuple[torch.Tensor, str] | None:
        """(feature, caption) of item `index` for `IndexedSource`, or None with the reason counted as live."""
        caption = self.captions[index]
        if not caption:
            counts["empty_caption"] += 1
            return None
        row = int(self.rows[index])
        if row < 0:
            counts[self.reasons[index]] += 1
            return None
        return self.features[row], caption


def build_feature_cache(
    encoder_path: str | Path,
    data: DataConfig,
    cache_dir: str | Path,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    num_workers: int = 0,
    is_main: bool = True,
) -> CachedFeatures:
    """Compute (on the main rank), finish or reuse the cache of `data` under an encoder; every rank reads it."""
    images, captions = training_items(data)
    encoder = load_encoder(encoder_path)  # on the CPU for the key; extraction moves it to `device`
    features, out = cached_feature_set(
        encoder, images, cache_dir, (POOL,), precision, device, batch_size, num_workers, is_main
    )
    rows = torch.full((len(images),), -1, dtype=torch.long)
    rows[features.indices] = torch.arange(len(features))
    reasons = {int(i): images.skip_reason(int(i)) for i in features.meta["skipped_indices"]}
    return CachedFeatures(out, features.get(POOL), rows, captions, reasons, images.source)


def cached_loader(
    cache: CachedFeatures,
    encode_text: EncodeText,
    local_batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
) -> BatchLoader:
    """Batches of cached features in the live loader's order, read in-process (there is nothing to decode)."""
    source = IndexedSource(cache.load, len(cache), cache.name, seed, rank, world_size, local_batch_size)
    stream = BatchStream(source, nn.Identity(), encode_text, local_batch_size, rank, world_size, seed)
    return BatchLoader(stream, num_workers=0)

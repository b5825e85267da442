"""Feature caches kept by trainers (LiT, ClipCap): one `pretrain.features` cache per input under a root.

`cached_feature_set` names each cache by `cache_key`: a digest of the encoder (config and weights), the items (and
the files' sizes and mtimes), the pools and the precision, so a changed input gets a new directory instead of a
stale cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from pretrain.data.labelled import LabelledImages
from pretrain.encoder import Encoder
from pretrain.features import FeatureSet, encoder_device, encoder_identity, extract_features, read_feature_set
from pretrain.runtime.distributed import barrier, pick_device
from pretrain.runtime.precision import resolve_precision

CACHE_KEY_VERSION = 1


def _file_stamp(path: str) -> bytes:
    try:
        stat = os.stat(path)
    except OSError:
        return b"missing\n"
    return f"{stat.st_size}:{stat.st_mtime_ns}\n".encode()


def cache_key(encoder: Encoder, images: LabelledImages, precision: str, pools: Sequence[str] = ("default",)) -> str:
    """16 hex digits naming the cache of `images` under `encoder` (config incl. preprocessing, and weights) at
    `precision` for `pools`; an image file replaced in place keeps its path but changes its size or mtime."""
    identity = encoder_identity(encoder)
    parts = {
        "version": CACHE_KEY_VERSION,
        "config": identity["config_hash"],
        "weights": identity["weights_hash"],
        "items": images.signature(),
        "precision": precision,
        "pools": sorted(set(pools)),
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode())
    for item in images.items:
        if isinstance(item, str):
            digest.update(_file_stamp(item))
    return digest.hexdigest()[:16]


def cached_feature_set(
    encoder: Encoder,
    images: LabelledImages,
    cache_root: str | Path,
    pools: Sequence[str] = ("default",),
    precision: str = "auto",
    device: str | torch.device | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    is_main: bool = True,
) -> tuple[FeatureSet, Path]:
    """The features of `images` from `cache_root/<cache_key>/`: computed (or finished) on the main rank, reused when
    present, read by every rank after a barrier. Returns the set and its directory."""
    on = pick_device(str(device)) if device is not None else encoder_device(encoder)
    precision = resolve_precision(precision, on)
    out = Path(cache_root).expanduser() / cache_key(encoder, images, precision, pools)
    features: FeatureSet | None = None
    if is_main:
        features = extract_features(encoder, images, out, pools, batch_size, num_workers, device, precision)
    barrier()
    return (features if features is not None else read_feature_set(out)), out

"""Frozen features: run an encoder once over a labelled dataset and cache the pooled features, resumably.

usage: superclass eval features --model DIR --data ROOT --split train|val --out CACHE_DIR [--pool default ...]

A cache is a directory:
    manifest.json               what was computed with what: encoder (path, config hash, weights hash), dataset
                                (source, split, signature, classes, size), pools, precision, and per finished
                                chunk its row count and skipped items; rewritten atomically after every chunk
    chunk-000000.safetensors    `features.<pool>` [n, D] float32, `labels`, `indices` (positions in the
                                dataset), `keys` (item identities), for dataset items [k*chunk, (k+1)*chunk)
Chunks are append-only: an interrupted run resumes with the first unfinished chunk and never recomputes a
finished one. A cache refuses (UserError) to continue or serve a different encoder or dataset.

Pools: `default` is the encoder's own pooling (`forward_head`, what it was trained with; SuperClass: mean of
patch tokens after the final norm), `cls` the class token, `patch_mean` the mean of the patch tokens, and
`tokens` every output token [T, D] stored in float16 (ClipCap's transformer mapper reads them; probes do not).
Trainers keep such caches under a root, one per input, with `pretrain.feature_cache.cached_feature_set`.
The encoder runs in bf16 autocast on a GPU and fp32 on the CPU (`precision`). Decoding (`decode`): `cpu` lets
the DataLoader workers decode and preprocess with PIL; `gpu` has them read file bytes only and decodes JPEGs
in batches on the encoder's device with nvJPEG, then resizes there (`pretrain.data.gpu_decode`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from pretrain.data.gpu_decode import DevicePreprocess, EncodedImages, check_decoder, pack, prepare_batch
from pretrain.data.labelled import LabelledImages
from pretrain.encoder import MODEL_FILE, Encoder, load_encoder
from pretrain.runtime.atomic import plain_tensors, write_file_atomically
from pretrain.runtime.distributed import pick_device
from pretrain.runtime.errors import ConfigError, UserError
from pretrain.runtime.jsonl import read_json_file
from pretrain.runtime.precision import autocast, resolve_precision

FORMAT = "superclass-features"
VERSION = 1
MANIFEST = "manifest.json"
POOLS = ("default", "cls", "patch_mean")  # [D] per image: what the probes read
TOKEN_POOL = "tokens"  # [T, D] per image, float16
EXTRACT_POOLS = (*POOLS, TOKEN_POOL)
DECODERS = ("cpu", "gpu")


@dataclass
class FeatureConfig:
    """How the probes get their features when no cache is given (`superclass eval features` flags)."""

    pool: str = "default"  # default (the encoder's own pooling) | cls | patch_mean
    batch_size: int = 256  # images per forward pass
    num_workers: int = 8  # DataLoader workers (decode + preprocess)
    precision: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    chunk_size: int = 8192  # images per cache chunk (the unit of resumption)
    device: str = "auto"  # auto | cpu | cuda: where the encoder and the probe run
    decode: Literal["cpu", "gpu"] = "cpu"  # cpu: PIL in the workers; gpu: nvJPEG + resize on the encoder's device

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ConfigError(f"features.pool: expected one of {list(POOLS)}, got {self.pool!r}")
        if self.decode not in DECODERS:
            raise ConfigError(f"features.decode: expected one of {list(DECODERS)}, got {self.decode!r}")
        if self.batch_size < 1 or self.chunk_size < 1 or self.num_workers < 0:
            raise ConfigError("features: batch_size and chunk_size must be >= 1, num_workers >= 0")


@dataclass
class FeatureSet:
    """Features of one dataset split: rows are the images that decoded, in dataset order."""

    features: dict[str, torch.Tensor]  # pool -> [N, D] float32 (`tokens`: [N, T, D] float16)
    labels: torch.Tensor  # [N] int64 class indices
    indices: torch.Tensor  # [N] int64 positions in the dataset
    keys: torch.Tensor  # [N] int64 item identities (LabelledImages.keys)
    meta: dict[str, Any] = field(default_factory=dict)  # classes, num_items, skipped, encoder, dataset, ...

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def num_classes(self) -> int:
        return len(self.meta["classes"])

    def get(self, pool: str) -> torch.Tensor:
        if pool not in self.features:
            raise UserError(f"features for pool '{pool}' were not computed (have: {', '.join(self.features)})")
        return self.features[pool]


# ------------------------------------------------------------------------------------------ the encoder side


def pool_tokens(encoder: Encoder, tokens: torch.Tensor, pools: Sequence[str]) -> dict[str, torch.Tensor]:
    """`forward_features` tokens -> {pool: [B, D]} for the requested pools (see the module docstring)."""
    out = {}
    prefix = encoder.num_prefix_tokens
    for pool in pools:
        if pool == "default":
            out[pool] = encoder.forward_head(tokens)
        elif pool == "cls":
            if prefix < 1:
                raise UserError("pool 'cls': this encoder has no class token (use default or patch_mean)")
            out[pool] = tokens[:, 0]
        elif pool == "patch_mean":
            out[pool] = tokens[:, prefix:].mean(dim=1)
        elif pool == TOKEN_POOL:
            out[pool] = tokens
        else:
            raise UserError(f"unknown pool '{pool}' (known: {', '.join(EXTRACT_POOLS)})")
    return out


def encoder_identity(encoder: Encoder) -> dict[str, str]:
    """Path, config hash and weights hash of an encoder: what a cache must agree with to be reused."""
    config_hash = hashlib.sha256(json.dumps(encoder.config, sort_keys=True).encode()).hexdigest()
    file = Path(encoder.path) / MODEL_FILE if encoder.path is not None else None
    if file is not None and file.is_file():
        stat = file.stat()
        weights_hash = _file_sha256(str(file.absolute()), stat.st_size, stat.st_mtime_ns)
    else:  # an encoder built in memory: hash its tensors
        h = hashlib.sha256()
        for name, tensor in sorted(encoder.backbone.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().float().cpu().numpy().tobytes())
        weights_hash = h.hexdigest()
    path = str(Path(encoder.path).absolute()) if encoder.path is not None else ""
    return {"path": path, "config_hash": config_hash, "weights_hash": weights_hash}


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a weights file, remembered per (path, size, mtime) so train and val hash it once."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def _as_encoder(encoder: Encoder | str | Path, device: str | torch.device | None) -> Encoder:
    """A loaded encoder stays where it is unless `device` is given; a path loads onto `device` (default auto)."""
    if isinstance(encoder, Encoder):
        return (encoder if device is None else encoder.to(pick_device(str(device)))).eval()
    return load_encoder(encoder, pick_device(str(device) if device is not None else "auto"))


def collate_skipping(
    samples: list[tuple[Any, int, int]], stack: Callable[[list[Any]], Any] = torch.stack
) -> dict[str, Any]:
    """`stack` the decoded samples (None when there are none); the indices of undecodable ones go to `skipped`."""
    good = [s for s in samples if s[0] is not None]
    return {
        "images": stack([s[0] for s in good]) if good else None,
        "labels": torch.tensor([s[1] for s in good], dtype=torch.long),
        "indices": torch.tensor([s[2] for s in good], dtype=torch.long),
        "skipped": torch.tensor([s[2] for s in samples if s[0] is None], dtype=torch.long),
    }


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    images = batch["images"]
    return {**batch, "images": None if images is None else images.to(device, non_blocking=True)}


def iter_inputs(
    encoder: Encoder, dataset: LabelledImages, batches: list[list[int]], num_workers: int = 0, decode: str = "cpu"
) -> Iterator[dict[str, Any]]:
    """The encoder's inputs for `batches` (lists of dataset indices), in order, from a DataLoader.

    Yields {"images": [b, 3, H, W] float on the encoder's device (None: nothing decoded), "labels", "indices",
    "skipped"}. decode="cpu": the workers decode and preprocess; "gpu": they read bytes, the device decodes.
    """
    device = encoder_device(encoder)
    num_workers = min(num_workers, os.cpu_count() or 1)  # more workers than cores only adds contention
    if decode == "gpu":
        check_decoder(device)
        items, collate = EncodedImages(dataset), functools.partial(collate_skipping, stack=pack)
        prepare = functools.partial(prepare_batch, preprocess=DevicePreprocess(encoder.preprocess), device=device)
    elif decode == "cpu":
        items, collate = dataset.with_transform(encoder.preprocess), collate_skipping
        prepare = functools.partial(_to_device, device=device)
    else:
        raise UserError(f"decode must be one of {list(DECODERS)}, got {decode!r}")
    loader = torch.utils.data.DataLoader(
        items,
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if num_workers > 0 else None,
    )
    for batch in loader:
        yield prepare(batch)


def iter_batches(
    encoder: Encoder,
    dataset: LabelledImages,
    batches: list[list[int]],
    pools: Sequence[str],
    num_workers: int = 0,
    precision: str = "auto",
    progress: bool = False,
    decode: str = "cpu",
) -> Iterator[dict[str, Any]]:
    """Run the encoder over `batches` (lists of dataset indices) with a DataLoader, in order.

    Yields {"features": {pool: [b, D] float32 CPU}, "labels", "indices", "skipped"} per batch. Batch k is handed
    out once batch k+1 is decoded and its forward queued, and waiting for it waits for its own forward only (an
    event after its copy to the host), so on a GPU the decode of batch k+1 overlaps the forward of batch k.
    """
    device = encoder_device(encoder)
    precision = resolve_precision(precision, device)
    inputs = iter_inputs(encoder, dataset, batches, num_workers, decode)
    quiet = not progress or not sys.stderr.isatty()
    pending: tuple[dict[str, Any], torch.cuda.Event | None] | None = None
    for batch in tqdm(inputs, total=len(batches), disable=quiet, desc=f"features {dataset.split}".strip()):
        if batch["images"] is not None:
            with torch.inference_mode(), autocast(precision, device):
                tokens = encoder.forward_features(batch["images"])
                pooled = pool_tokens(encoder, tokens, pools)
                feats = {k: _stored(k, v).to("cpu", non_blocking=True) for k, v in pooled.items()}  # async from CUDA
        else:
            feats = {pool: torch.empty(0, encoder.num_features) for pool in pools}  # dropped by _assemble
        copied = torch.cuda.Event() if device.type == "cuda" else None
        if copied is not None:
            copied.record(torch.cuda.current_stream(device))
        if pending is not None:
            yield _arrived(*pending)
        pending = ({"features": feats, **{k: batch[k] for k in ("labels", "indices", "skipped")}}, copied)
    if pending is not None:
        yield _arrived(*pending)


def _stored(pool: str, x: torch.Tensor) -> torch.Tensor:
    """What a pool is kept as: float32, tokens float16 (T times the size of a pooled feature)."""
    return x.half() if pool == TOKEN_POOL else x.float()


def _arrived(out: dict[str, Any], copied: torch.cuda.Event | None) -> dict[str, Any]:
    """`out` once its features' copy to the host is done (the loop's only wait for the device)."""
    if copied is not None:
        copied.synchronize()
    return out


def _meta(dataset: LabelledImages, identity: dict[str, str], pools: Sequence[str], precision: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "encoder": identity,
        "dataset": {
            "source": dataset.source,
            "split": dataset.split,
            "signature": dataset.signature(),
            "num_items": len(dataset),
        },
        "classes": list(dataset.classes),
        "pools": list(pools),
        "precision": precision,
    }


def compute_features(
    encoder: Encoder | str | Path,
    dataset: LabelledImages,
    pools: Sequence[str] = ("default",),
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    precision: str = "auto",
    progress: bool = False,
    decode: str = "cpu",
) -> FeatureSet:
    """Features of `dataset` in memory (no cache): for small sets such as the demo's. `decode`: cpu | gpu."""
    encoder = _as_encoder(encoder, device)
    order = list(range(len(dataset)))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    stream = iter_batches(encoder, dataset, batches, pools, num_workers, precision, progress, decode)
    parts: list[dict[str, Any]] = list(stream)
    skipped = [int(i) for p in parts for i in p["skipped"]]
    meta = _meta(dataset, encoder_identity(encoder), pools, resolve_precision(precision, encoder_device(encoder)))
    counts = dict(Counter(dataset.skip_reason(i) for i in skipped))
    meta.update(skipped=counts, skipped_indices=skipped, complete=True)
    return _assemble(parts, pools, dataset.keys(), meta, encoder.num_features)


def encoder_device(encoder: Encoder) -> torch.device:
    """The device the encoder's weights are on."""
    return next(encoder.parameters()).device


def _assemble(
    parts: list[dict[str, Any]], pools: Sequence[str], all_keys: torch.Tensor, meta: dict[str, Any], dim: int
) -> FeatureSet:
    feats = {p: _cat_rows([x["features"][p] for x in parts], dim) for p in pools}
    labels = torch.cat([x["labels"] for x in parts]) if parts else torch.empty(0, dtype=torch.long)
    indices = torch.cat([x["indices"] for x in parts]) if parts else torch.empty(0, dtype=torch.long)
    return FeatureSet(feats, labels, indices, all_keys[indices], meta)


def _cat_rows(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
    """Concatenate along rows, ignoring the empty placeholders of all-undecodable batches."""
    rows = [t for t in tensors if len(t)]
    return torch.cat(rows) if rows else torch.empty(0, dim)


# ------------------------------------------------------------------------------------------------- the cache


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=1) + "\n"
    write_file_atomically(out / MANIFEST, lambda tmp: tmp.write_text(text))


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the cache at `path` (UserError when it is not a feature cache)."""
    file = Path(path) / MANIFEST
    missing = f"{path}: not a feature cache (no {MANIFEST}; create one with `superclass eval features`)"
    manifest = read_json_file(file, missing)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise UserError(f"{file}: not a '{FORMAT}' version {VERSION} manifest")
    return manifest


def _check_compatible(out: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to mix encoders, datasets, pools or precisions in one cache."""
    where = f"feature cache {out}"
    for key in ("config_hash", "weights_hash"):
        if old["encoder"][key] != new["encoder"][key]:
            raise UserError(
                f"{where} was computed with another encoder ({old['encoder']['path'] or 'in memory'}, {key} "
                f"differs); use a new --out or delete the cache"
            )
    if old["dataset"]["signature"] != new["dataset"]["signature"]:
        raise UserError(
            f"{where} was computed on another dataset ({old['dataset']['source']}, split "
            f"'{old['dataset']['split']}'); use a new --out or delete the cache"
        )
    missing = [p for p in new["pools"] if p not in old["pools"]]
    if missing:
        raise UserError(f"{where} has pools {old['pools']}, not {missing}; use a new --out")
    if old["precision"] != new["precision"]:
        raise UserError(
            f"{where} was computed in {old['precision']}, this run would use {new['precision']}; "
            f"pass precision={old['precision']} or use a new --out"
        )


def _chunk_file(out: Path, chunk: int) -> Path:
    return out / f"chunk-{chunk:06d}.safetensors"


def extract_features(
    encoder: Encoder | str | Path,
    dataset: LabelledImages,
    out: str | Path,
    pools: Sequence[str] = ("default",),
    batch_size: int = 256,
    num_workers: int = 4,
    device: str | torch.device | None = None,
    precision: str = "auto",
    chunk_size: int = 8192,
    on_chunk: Callable[[int, dict[str, Any]], None] | None = None,
    progress: bool = True,
    decode: str = "cpu",
) -> FeatureSet:
    """Compute (or finish, or reuse) the feature cache of `dataset` at `out` and return its features.

    `on_chunk(chunk, manifest)` runs after each chunk is safely on disk (tests interrupt through it). `decode`:
    cpu | gpu (see the module docstring); it is not part of the cache's identity, like the batch size.
    """
    out = Path(out)
    encoder = _as_encoder(encoder, device)
    pools = list(dict.fromkeys(pools))
    precision = resolve_precision(precision, encoder_device(encoder))
    new = _meta(dataset, encoder_identity(encoder), pools, precision)
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        _check_compatible(out, manifest, new)
        manifest["encoder"]["path"] = new["encoder"]["path"]  # the same weights may have moved
    else:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"{out}: exists and is not a feature cache; refusing to write into it")
        out.mkdir(parents=True, exist_ok=True)
        manifest = {**new, "chunk_size": int(chunk_size), "chunks": {}, "complete": False}
        _write_manifest(out, manifest)
    pools, size, n = manifest["pools"], manifest["chunk_size"], len(dataset)
    todo = [c for c in range((n + size - 1) // size) if str(c) not in manifest["chunks"]]
    plan: list[list[int]] = []
    per_chunk: list[int] = []
    for c in todo:
        stop = min(n, (c + 1) * size)
        chunk_batches = [list(range(i, min(stop, i + batch_size))) for i in range(c * size, stop, batch_size)]
        plan += chunk_batches
        per_chunk.append(len(chunk_batches))
    keys = dataset.keys()
    stream = iter_batches(encoder, dataset, plan, pools, num_workers, precision, progress, decode)
    for chunk, count in zip(todo, per_chunk):
        parts = [next(stream) for _ in range(count)]
        part = _assemble(parts, pools, keys, {}, encoder.num_features)
        tensors = {f"features.{p}": part.features[p] for p in pools}
        tensors.update(labels=part.labels, indices=part.indices, keys=part.keys)
        file = _chunk_file(out, chunk)
        write_file_atomically(file, lambda tmp, t=tensors: save_file(plain_tensors(t), str(tmp)))
        skipped = [[int(i), dataset.skip_reason(int(i))] for p in parts for i in p["skipped"]]
        manifest["chunks"][str(chunk)] = {"file": file.name, "rows": len(part), "skipped": skipped}
        manifest["complete"] = len(manifest["chunks"]) == (n + size - 1) // size
        _write_manifest(out, manifest)
        if on_chunk is not None:
            on_chunk(chunk, manifest)
    if not manifest["complete"]:  # an empty dataset or nothing left to do on an old, unfinished manifest
        manifest["complete"] = True
        _write_manifest(out, manifest)
    return read_feature_set(out)


def read_feature_set(path: str | Path) -> FeatureSet:
    """The complete cache at `path` as a FeatureSet (UserError when unfinished or damaged)."""
    path = Path(path)
    manifest = read_manifest(path)
    if not manifest.get("complete"):
        done, size = len(manifest["chunks"]), manifest["chunk_size"]
        total = (manifest["dataset"]["num_items"] + size - 1) // size
        raise UserError(f"feature cache {path} is unfinished ({done}/{total} chunks); rerun the same command")
    parts = []
    for chunk in sorted(manifest["chunks"], key=int):
        file = path / manifest["chunks"][chunk]["file"]
        try:
            parts.append(load_file(str(file)))
        except Exception as exc:  # safetensors raises its own error types; report the file in one line
            raise UserError(f"{file}: unreadable feature chunk ({exc}); delete the cache and recompute") from None
    pools = manifest["pools"]
    if parts:
        features = {p: torch.cat([t[f"features.{p}"] for t in parts]) for p in pools}
        labels, indices, keys = (torch.cat([t[k] for t in parts]) for k in ("labels", "indices", "keys"))
    else:
        features = {p: torch.empty(0, 0) for p in pools}
        labels = indices = keys = torch.empty(0, dtype=torch.long)
    skipped = sorted((i, reason) for c in manifest["chunks"].values() for i, reason in c["skipped"])
    counts = dict(Counter(reason for _, reason in skipped))
    meta = {**manifest, "skipped_indices": [i for i, _ in skipped], "skipped": counts}
    meta.pop("chunks")
    return FeatureSet(features, labels, indices, keys, meta)


def load_features(path: str | Path) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, Any]]:
    """(features by pool, labels, meta) of a complete cache; meta also holds `indices` and `keys` tensors."""
    fs = read_feature_set(path)
    return fs.features, fs.labels, {**fs.meta, "indices": fs.indices, "keys": fs.keys}

"""The training data stream: an infinite, exactly resumable sequence of augmented, tokenised batches.

Design (what makes exact resume and the no-hang guarantee work):
- W = max(1, num_workers) *logical* workers. Logical worker w makes this rank's batches k = w, w+W, w+2W, ...
  torch's DataLoader hands out batches from its physical workers round-robin starting at worker 0, so after
  `c` consumed batches physical worker p plays logical worker (p + c) mod W and the order carries on.
- Batching happens inside the IterableDataset (DataLoader(batch_size=None)); each batch carries, under
  private keys the BatchLoader strips, the samples its worker skipped since its previous batch and that
  worker's state after the batch. The BatchLoader records the state of the last consumed batch per logical
  worker; that dict is the whole resume state.
- Augmentation draws only from torch's/python's global RNG, re-seeded per sample from (seed, sample
  identity), so it is the same whatever the worker count; the caller's RNG state is restored after a batch.
- Shards: per-epoch shard order from (seed, epoch), split by rank then logical worker; fewer shards than
  ranks x workers wrap around (each slot gets shard slot mod n), so no rank waits on an empty worker.
  Resampled mode draws shards with replacement from (seed, rank, worker, draw index).
- Lists and synthetic data: global batch k is the slice [k*G, (k+1)*G) of an endless sequence of per-epoch
  permutations (G = local batch x world size); rank r takes the slice positions = r mod world_size. The
  global batch is therefore the same for any world size or worker count.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import random
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from pretrain.data.lists import ImageTextList, load_item, read_list
from pretrain.data.shards import expand_shards, iter_samples
from pretrain.data.synthetic import make_sample
from pretrain.data.transforms import TransformConfig, train_transform
from pretrain.runtime.errors import ConfigError, DataError, UserError

EncodeText = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]
Item = tuple[Image.Image, str, "int | None", dict[str, int]]  # image, caption, augmentation seed, source state
STATE_VERSION = 1


@dataclass
class DataConfig:
    """Where the image-text pairs come from and how they are read; the run's seed is passed separately."""

    # the path fields each kind reads: setting one the chosen kind ignores is a ConfigError (config.check_kind_paths)
    KIND_PATHS: ClassVar[dict[str, tuple[str, ...]]] = {"train": ("shards", "list"), "image_root": ("list",)}
    # source type: procedural images, webdataset tar shards, or a JSONL/CSV list + image folder
    kind: Literal["synthetic", "shards", "list"] = "synthetic"
    # shards: brace pattern / glob / directory / comma list; list: the .jsonl/.csv/.tsv file; unused for synthetic
    train: str = ""
    # list: folder the image paths are relative to (default: the list file's folder)
    image_root: str | None = None
    # list: column holding the image path
    image_key: str = "image"
    # list: column holding the caption
    caption_key: str = "caption"
    # shards: draw shards with replacement (webdataset/OpenCLIP --dataset-resampled) instead of epochs
    resampled: bool = False
    # DataLoader worker processes per rank (0 = decode in the training process)
    num_workers: int = 2
    # batches each worker prepares ahead
    prefetch_factor: int = 2
    # pin batches in page-locked memory for faster host-to-GPU copies (only when CUDA is available)
    pin_memory: bool = True
    # synthetic: number of distinct samples (indices 0..n-1 of make_sample with seed 0)
    synthetic_samples: int = 10000
    # synthetic: side of the generated images before augmentation
    synthetic_image_size: int = 64
    # augmentation and normalisation
    transform: TransformConfig = field(default_factory=TransformConfig)


def _mix(*parts: object) -> int:
    """A stable 63-bit seed from the parts (same in every process and Python version)."""
    text = ":".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & (2**63 - 1)


class ShardSource:
    """Good samples of webdataset shards for one rank, per logical worker, in epoch or resampled order."""

    def __init__(self, shards: list[str], seed: int, rank: int, world_size: int, resampled: bool) -> None:
        if not shards:
            raise DataError("no shards to read (expected at least one .tar file)")
        self.shards, self.seed, self.rank, self.world_size, self.resampled = shards, seed, rank, world_size, resampled

    def initial_state(self) -> dict[str, int]:
        return {"draw": 0, "offset": 0} if self.resampled else {"epoch": 0, "shard": 0, "offset": 0}

    def worker_shards(self, epoch: int, worker: int, num_workers: int) -> list[str]:
        """This (rank, worker)'s shards in `epoch`: a strided slice of the epoch's shuffle, or one wrapped shard."""
        order = list(self.shards)
        random.Random(_mix(self.seed, "shard-order", epoch)).shuffle(order)
        slots = self.world_size * num_workers
        slot = self.rank + self.world_size * worker
        return order[slot::slots] or [order[slot % len(order)]]

    def items(self, worker: int, num_workers: int, state: dict[str, int], counts: Counter) -> Iterator[Item]:
        if self.resampled:
            return self._resampled(worker, state, counts)
        return self._epochs(worker, num_workers, state, counts)

    def _epochs(self, worker: int, num_workers: int, state: dict[str, int], counts: Counter) -> Iterator[Item]:
        epoch, index, offset = state["epoch"], state["shard"], state["offset"]
        while True:
            shards = self.worker_shards(epoch, worker, num_workers)
            full_pass, good = index == 0 and offset == 0, 0
            while index < len(shards):
                for read, _key, image, caption in iter_samples(shards[index], counts, skip=offset):
                    good += 1
                    yield image, caption, None, {"epoch": epoch, "shard": index, "offset": read}
                index, offset = index + 1, 0
            if full_pass and good == 0:
                raise DataError(
                    f"no readable samples in the {len(shards)} shard(s) of rank {self.rank} worker "
                    f"{worker}, e.g. {shards[0]} (see the skip counts)"
                )
            epoch, index = epoch + 1, 0

    def _resampled(self, worker: int, state: dict[str, int], counts: Counter) -> Iterator[Item]:
        draw, offset = state["draw"], state["offset"]
        empty: set[str] = set()
        while True:
            rng = random.Random(_mix(self.seed, "resample", self.rank, worker, draw))
            shard = self.shards[rng.randrange(len(self.shards))]
            good = 0
            for read, _key, image, caption in iter_samples(shard, counts, skip=offset):
                good += 1
                yield image, caption, None, {"draw": draw, "offset": read}
            if good:
                empty.clear()
            elif offset == 0:
                empty.add(shard)
                if len(empty) == len(self.shards):
                    raise DataError(f"no readable samples in any of the {len(self.shards)} shards, e.g. {shard}")
            draw, offset = draw + 1, 0


class IndexedSource:
    """Random-access items (a list file or the synthetic generator) in per-epoch permutation order."""

    def __init__(
        self,
        load: Callable[[int, Counter], tuple[Image.Image, str] | None],
        num_items: int,
        name: str,
        seed: int,
        rank: int,
        world_size: int,
        local_batch_size: int,
    ) -> None:
        if num_items < 1:
            raise DataError(f"{name} has no samples")
        self.load, self.num_items, self.name = load, num_items, name
        self.seed, self.rank, self.world_size, self.local_batch_size = seed, rank, world_size, local_batch_size
        self._perms: dict[int, np.ndarray] = {}

    def initial_state(self) -> dict[str, int]:
        return {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng(_mix(self.seed, "perm", epoch)).permutation(self.num_items)
        return self._perms[epoch]

    def load_position(self, position: int, counts: Counter) -> tuple[Image.Image, str]:
        """The item at global stream position; an unreadable item is counted and the next one in the epoch used."""
        epoch, offset = divmod(position, self.num_items)
        perm = self._perm(epoch)
        for step in range(self.num_items):
            loaded = self.load(int(perm[(offset + step) % self.num_items]), counts)
            if loaded is not None:
                return loaded
        raise DataError(f"no readable samples among the {self.num_items} items of {self.name} (see the skip counts)")

    def batch_positions(self, batch: int) -> list[int]:
        """Stream positions of this rank's share of global batch `batch`."""
        start = batch * self.local_batch_size * self.world_size
        return [start + self.rank + self.world_size * i for i in range(self.local_batch_size)]

    def items(self, worker: int, num_workers: int, state: dict[str, int], counts: Counter) -> Iterator[Item]:
        batch = state["batch"]
        while True:
            for position in self.batch_positions(batch):
                image, caption = self.load_position(position, counts)
                yield image, caption, _mix(self.seed, "augment", position), {}
            batch += num_workers


class BatchStream(IterableDataset):
    """Batches of one rank: run inside DataLoader workers (one logical worker each) or in-process (all of them)."""

    def __init__(
        self,
        source: ShardSource | IndexedSource,
        transform: Callable[[Image.Image], torch.Tensor],
        encode_text: EncodeText | None,
        local_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        num_logical_workers: int = 1,
        batches_consumed: int = 0,
        worker_states: list[dict[str, int] | None] | None = None,
        target_key: str = "caption",
    ) -> None:
        super().__init__()
        if local_batch_size < 1:
            raise ConfigError(f"local batch size must be positive, got {local_batch_size}")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world size {world_size}")
        self.source, self.transform, self.encode_text = source, transform, encode_text
        self.local_batch_size, self.rank, self.world_size, self.seed = local_batch_size, rank, world_size, seed
        self.num_logical_workers = max(1, num_logical_workers)
        self.batches_consumed = batches_consumed
        self.worker_states = worker_states or [None] * self.num_logical_workers
        self.target_key = target_key  # the batch key of the items' second field: captions, or class labels

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        W, c = self.num_logical_workers, self.batches_consumed
        if info is None:  # in-process: play every logical worker, in the order a DataLoader would deliver them
            streams = [self._worker_batches((c + j) % W) for j in range(W)]
            while True:
                for stream in streams:
                    yield next(stream)
        if info.num_workers != W:
            raise RuntimeError(f"BatchStream built for {W} workers is running in {info.num_workers}")
        yield from self._worker_batches((info.id + c) % W)

    def _worker_batches(self, worker: int) -> Iterator[dict[str, Any]]:
        """Batches k = worker (mod W), k >= batches consumed; a UserError becomes an '_error' batch."""
        W, c = self.num_logical_workers, self.batches_consumed
        first = c + (worker - c) % W
        state = dict(self.worker_states[worker] or {**self.source.initial_state(), "batch": first})
        if state["batch"] != first:
            raise RuntimeError(f"data state of worker {worker} is at batch {state['batch']}, expected {first}")
        counts: Counter = Counter()
        try:
            items = self.source.items(worker, W, state, counts)
            for batch in range(first, 2**62, W):
                yield self._make_batch(items, batch, worker, counts)
        except UserError as exc:
            yield {"_error": str(exc), "_worker": worker}

    def _make_batch(self, items: Iterator[Item], batch: int, worker: int, counts: Counter) -> dict[str, Any]:
        """Read, augment and stack one batch; skipped samples are replaced, never shorten it."""
        torch_state, py_state = torch.default_generator.get_state(), random.getstate()
        images, captions = [], []
        try:
            for i in range(self.local_batch_size):
                image, caption, aug_seed, source_state = next(items)
                aug_seed = aug_seed if aug_seed is not None else _mix(self.seed, "augment", self.rank, batch, i)
                torch.default_generator.manual_seed(aug_seed)
                random.seed(aug_seed)
                images.append(self.transform(image))
                captions.append(caption)
        finally:
            torch.default_generator.set_state(torch_state)
            random.setstate(py_state)
        # default_collate stacks straight into shared memory inside a worker (one copy fewer on the way out)
        out: dict[str, Any] = {"image": default_collate(images), self.target_key: captions}
        if self.encode_text is not None:
            out["text"], out["text_len"] = self.encode_text(captions)
        out["_skipped"] = dict(counts)
        counts.clear()
        out["_state"] = {**source_state, "batch": batch + self.num_logical_workers}
        out["_batch"], out["_worker"] = batch, worker
        return out


class BatchLoader:
    """An endless iterator of batches for one rank, with exact skip counts and an exactly resumable state."""

    def __init__(self, stream: BatchStream, num_workers: int, prefetch_factor: int = 2, pin_memory: bool = False):
        self.stream, self.num_workers = stream, num_workers
        self.prefetch_factor, self.pin_memory = prefetch_factor, pin_memory
        self._consumed = stream.batches_consumed
        self._states: list[dict[str, int] | None] = list(stream.worker_states)
        self._skipped: Counter = Counter()
        self._skipped_before: Counter = Counter()

    @property
    def skipped(self) -> dict[str, int]:
        """Samples skipped since this loader was built or its state loaded (all workers, batches consumed), by reason.

        The state dict records the run's totals; the Trainer keeps those across resumes and adds these to them.
        """
        return dict(self._skipped)

    @property
    def batches_consumed(self) -> int:
        return self._consumed

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Batches from the current position on; the trainer stops by step count."""
        stream = copy.copy(self.stream)
        stream.batches_consumed, stream.worker_states = self._consumed, list(self._states)
        loader = DataLoader(
            stream,
            batch_size=None,
            num_workers=self.num_workers,
            prefetch_factor=self.prefetch_factor if self.num_workers > 0 else None,
            pin_memory=self.pin_memory,
            generator=torch.Generator(),  # else DataLoader draws its base seed from the caller's global RNG
        )
        for batch in loader:
            if "_error" in batch:
                raise DataError(batch["_error"])
            number, worker = batch.pop("_batch"), batch.pop("_worker")
            if number != self._consumed:
                raise RuntimeError(f"data batches out of order: expected batch {self._consumed}, got {number}")
            self._states[worker] = batch.pop("_state")
            self._skipped.update(batch.pop("_skipped"))
            self._consumed += 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue with exactly the batches an uninterrupted run would produce next."""
        stream = self.stream
        return {
            "version": STATE_VERSION,
            "kind": type(stream.source).__name__,
            "seed": stream.seed,
            "rank": stream.rank,
            "world_size": stream.world_size,
            "local_batch_size": stream.local_batch_size,
            "num_logical_workers": stream.num_logical_workers,
            "source": _source_signature(stream.source),
            "batches_consumed": self._consumed,
            "workers": copy.deepcopy(self._states),
            "skipped": dict(self._skipped_before + self._skipped),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state`; shard streams need the same seed, ranks and workers, lists/synthetic the same G."""
        stream = self.stream
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"data state version {state.get('version')} is not {STATE_VERSION}")
        checks = ["kind", "seed", "source"]
        if isinstance(stream.source, ShardSource):
            checks += ["rank", "world_size", "local_batch_size", "num_logical_workers"]
        mine = self.state_dict()
        for key in checks:
            if state[key] != mine[key]:
                raise ConfigError(
                    f"data state was saved with {key}={state[key]!r}, this run has {mine[key]!r}; "
                    "resume with the same data settings"
                )
        if isinstance(stream.source, IndexedSource):
            global_saved = state["local_batch_size"] * state["world_size"]
            global_now = stream.local_batch_size * stream.world_size
            if global_saved != global_now:
                raise ConfigError(f"data state was saved with global batch {global_saved}, this run has {global_now}")
        self._consumed = int(state["batches_consumed"])
        if isinstance(stream.source, IndexedSource):
            self._states = [None] * stream.num_logical_workers  # positions follow from batches_consumed alone
        else:
            self._states = copy.deepcopy(state["workers"])
        self._skipped_before = Counter(state["skipped"])  # the run's totals so far (the state records them)
        self._skipped = Counter()  # counts since this load: the Trainer adds the checkpointed totals itself


def _source_signature(source: ShardSource | IndexedSource) -> dict[str, Any]:
    """What must not change between save and resume for the positions to mean the same samples."""
    if isinstance(source, ShardSource):
        return {"num_shards": len(source.shards), "resampled": source.resampled}
    return {"num_items": source.num_items}


def make_source(
    cfg: DataConfig, rank: int, world_size: int, seed: int, local_batch_size: int, num_workers: int
) -> ShardSource | IndexedSource:
    """The sample source named by `cfg` (shards, list file or synthetic generator)."""
    if cfg.kind == "shards":
        if not cfg.train:
            raise ConfigError("data.train: expected a shard pattern for kind 'shards', got ''")
        shards = expand_shards(cfg.train)
        slots = world_size * num_workers
        if len(shards) < slots and not cfg.resampled and rank == 0:
            warnings.warn(
                f"{len(shards)} shards for {world_size} rank(s) x {num_workers} worker(s): shards are "
                "reused across workers within an epoch; use more shards or data.resampled=true",
                stacklevel=2,
            )
        return ShardSource(shards, seed, rank, world_size, cfg.resampled)
    if cfg.kind == "list":
        if not cfg.train:
            raise ConfigError("data.train: expected a .jsonl/.csv list file for kind 'list', got ''")
        items: ImageTextList = read_list(cfg.train, cfg.image_key, cfg.caption_key, cfg.image_root)
        load = functools.partial(load_item, items)
        return IndexedSource(load, len(items), items.path, seed, rank, world_size, local_batch_size)
    if cfg.kind == "synthetic":
        load = functools.partial(_load_synthetic, image_size=cfg.synthetic_image_size)
        name = f"synthetic[{cfg.synthetic_samples}]"
        return IndexedSource(load, cfg.synthetic_samples, name, seed, rank, world_size, local_batch_size)
    raise ConfigError(f"data.kind: expected one of ['synthetic', 'shards', 'list'], got {cfg.kind!r}")


def _load_synthetic(index: int, counts: Counter, image_size: int) -> tuple[Image.Image, str]:
    sample = make_sample(index, seed=0, image_size=image_size)
    return sample.image, sample.caption


def build_loader(
    cfg: DataConfig,
    encode_text: EncodeText | None,
    local_batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
) -> BatchLoader:
    """The training batches of `rank`: endless, exactly resumable (state_dict), with skip counts (skipped)."""
    if cfg.num_workers < 0:
        raise ConfigError(f"data.num_workers: expected >= 0, got {cfg.num_workers}")
    workers = max(1, cfg.num_workers)
    source = make_source(cfg, rank, world_size, seed, local_batch_size, workers)
    stream = BatchStream(
        source,
        train_transform(cfg.transform),
        encode_text,
        local_batch_size,
        rank,
        world_size,
        seed,
        num_logical_workers=workers,
    )
    pin = cfg.pin_memory and torch.cuda.is_available()
    return BatchLoader(stream, cfg.num_workers, max(1, cfg.prefetch_factor), pin)

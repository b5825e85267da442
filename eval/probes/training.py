"""The MAE/MILAN linear-probe head trained on the shared Trainer, on cached features or live through the encoder.

The head (`BatchNorm1d(D, affine=False)` + `Linear(D, C)`) is a task object (`ProbeTask`) for
`pretrain.runtime.loop.Trainer`, like every trainer of the toolkit: the loop owns the LARS optimiser
(`optim.name=lars`), the per-iteration warmup + half-cycle cosine, the non-finite guard, the metrics
(`OUT/train/metrics.jsonl`, one row per epoch) and exact resume.
- cached: `FeatureBatches` over the train features (a seeded permutation per epoch, the last partial batch
  dropped, as MAE's loader);
- live: the frozen encoder runs on MAE's train augmentation at every step; the images come through the training
  data stream (`labelled_batches`), so an unreadable image is skipped, counted and replaced, as in pretraining.
A run writes checkpoints under `OUT/train/` (live: after every epoch; cached: at the end). Rerunning the same
command after a kill resumes at the last one with the result of an uninterrupted run; the checkpoints belong to
one recipe, encoder and train set (`OUT/train/probe.json`), so another run into the same OUT is refused until
they are deleted. They are removed once the probe has finished.
The one departure from MAE's schedule: the shared warmup reaches peak x (k+1)/W at step k, where MAE's starts
its first step at lr 0 (peak x k/W); the cosine after the warmup is MAE's exactly.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from pretrain.data.labelled import LabelledImages
from pretrain.data.stream import BatchLoader, BatchStream, IndexedSource
from pretrain.encoder import Encoder
from pretrain.features import pool_tokens
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.checkpoint import list_checkpoints
from pretrain.runtime.distributed import DistInfo
from pretrain.runtime.errors import UserError
from pretrain.runtime.loop import RunConfig, Trainer
from pretrain.runtime.optim import OptimConfig

TRAIN_DIR = "train"  # the Trainer's run directory inside a probe's OUT
FINGERPRINT = "probe.json"  # what the checkpoints in TRAIN_DIR belong to


def build_head(dim: int, num_classes: int, bn_eps: float = 1e-6, init_std: float = 0.01) -> nn.Sequential:
    """BatchNorm1d(affine=False) + Linear, initialised as MAE's linprobe (trunc_normal std 0.01, bias 0)."""
    linear = nn.Linear(dim, num_classes)
    nn.init.trunc_normal_(linear.weight, std=init_std)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=bn_eps), linear)


class ProbeTask(nn.Module):
    """The head's cross-entropy on `batch["image"]`: pooled features [B, D], or pixels run through the frozen encoder.

    The encoder (live mode) stays in eval mode and out of the graph and the checkpoints (`checkpoint_frozen`).
    """

    checkpoint_frozen = False

    def __init__(self, head: nn.Sequential, encoder: Encoder | None = None, pool: str = "default") -> None:
        super().__init__()
        self.head, self.encoder, self.pool = head, encoder, pool
        if encoder is not None:
            encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> ProbeTask:
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()  # frozen: no dropout, no norm statistics updates
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled float32 features of a pixel batch (the run's autocast applies to the encoder only)."""
        with torch.no_grad():
            tokens = self.encoder.forward_features(images)
            return pool_tokens(self.encoder, tokens, [self.pool])[self.pool].float()

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = batch["image"] if self.encoder is None else self.features(batch["image"])
        labels = torch.as_tensor(batch["label"], device=x.device)
        with torch.autocast(x.device.type, enabled=False):  # the head trains in float32, as MAE's
            logits = self.head(x.float())
        return {"loss": F.cross_entropy(logits, labels)}


class FeatureBatches:
    """Endless batches of cached (features, labels) for the Trainer: a seeded permutation per epoch, drop_last."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> None:
        self.features, self.labels, self.batch_size, self.seed = features, labels, batch_size, seed
        self.steps_per_epoch = len(features) // batch_size
        self.consumed = 0
        self._order: tuple[int, torch.Tensor] | None = None

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if self._order is None or self._order[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order = (epoch, torch.randperm(len(self.features), generator=gen).to(self.features.device))
        return self._order[1]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            epoch, it = divmod(self.consumed, self.steps_per_epoch)
            idx = self._epoch_order(epoch)[it * self.batch_size : (it + 1) * self.batch_size]
            self.consumed += 1
            yield {"image": self.features[idx], "label": self.labels[idx]}

    def state_dict(self) -> dict[str, int]:
        return {"batches_consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consumed = int(state["batches_consumed"])

    @property
    def skipped(self) -> dict[str, int]:
        return {}


def _load_labelled(dataset: LabelledImages, index: int, counts: Counter) -> tuple[Image.Image, int] | None:
    """(image, label) of item `index` for the data stream, or None with its skip reason counted."""
    image = dataset.load_image(index)
    if image is None:
        counts[dataset.skip_reason(index)] += 1
        return None
    return image, dataset.labels[index]


def labelled_batches(
    dataset: LabelledImages, transform: Any, batch_size: int, seed: int, num_workers: int, pin_memory: bool
) -> BatchLoader:
    """Endless, exactly resumable batches {"image", "label"} of augmented labelled images (one process)."""
    load = functools.partial(_load_labelled, dataset)
    source = IndexedSource(load, len(dataset), dataset.source, seed, 0, 1, batch_size)
    workers = max(1, num_workers)
    stream = BatchStream(source, transform, None, batch_size, 0, 1, seed, workers, target_key="label")
    return BatchLoader(stream, num_workers, pin_memory=pin_memory)


def mae_train_transform(encoder: Encoder, crop_scale: tuple[float, float]) -> v2.Compose:
    """MAE's linprobe train transform (RandomResizedCrop + flip) at the encoder's crop size and normalisation."""
    pre = encoder.config["preprocessing"]
    return v2.Compose(
        [
            v2.RGB(),
            v2.RandomResizedCrop(
                int(pre["crop"]), scale=tuple(crop_scale), interpolation=InterpolationMode.BICUBIC, antialias=True
            ),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(pre["mean"]), std=list(pre["std"])),
        ]
    )


def fingerprint(what: dict[str, Any]) -> str:
    """A digest of what a probe's training depends on (recipe, encoder hashes, train data)."""
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def claim_train_dir(train_dir: Path, digest: str) -> None:
    """Refuse checkpoints another probe left in `train_dir`; mark the directory as this probe's."""
    note = train_dir / FINGERPRINT
    if list_checkpoints(train_dir):
        try:
            theirs = json.loads(note.read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            theirs = None
        if theirs != digest:
            raise UserError(
                f"{train_dir}: checkpoints of an interrupted probe with another recipe, encoder or train data; "
                "delete the folder (or use another --out) to start over"
            )
    train_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(note, json.dumps({"fingerprint": digest}) + "\n")


def release_train_dir(train_dir: Path) -> None:
    """A finished probe keeps its metrics.jsonl but not its resume state: a rerun starts over."""
    shutil.rmtree(train_dir / "checkpoints", ignore_errors=True)
    (train_dir / FINGERPRINT).unlink(missing_ok=True)


@contextlib.contextmanager
def few_threads_if_small(x: torch.Tensor) -> Iterator[None]:
    """Run tiny CPU problems on one thread: they are overhead-bound, and extra threads only add sync cost."""
    small = x.device.type == "cpu" and x.numel() < 1_000_000
    before = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


def train_head(
    task: ProbeTask,
    batches: FeatureBatches | BatchLoader,
    steps_per_epoch: int,
    run: dict[str, Any],
    optim: OptimConfig,
    device: torch.device,
    train_dir: Path,
    digest: str,
) -> tuple[nn.Sequential, dict[str, int]]:
    """Fit `task`'s head on the Trainer in `train_dir` (resuming its checkpoints): (head in eval mode, images skipped).

    `run` holds RunConfig fields (steps, global_batch_size, precision, save_every, seed); the metrics are logged
    once per epoch.
    """
    claim_train_dir(train_dir, digest)
    config = RunConfig(out_dir=str(train_dir), log_every=steps_per_epoch, resume="latest", keep_checkpoints=1, **run)
    trainer = Trainer(task, batches, config, optim, DistInfo(rank=0, world_size=1, local_rank=0, device=device))
    trainer.fit()
    return task.head.eval(), trainer.skipped()

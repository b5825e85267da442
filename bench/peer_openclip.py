"""OpenCLIP's CLIP training step against ours, on the same ViT, text tower, weights and batch (bench/peers.py).

Theirs: `open_clip.CLIP` (vision ViT + OpenCLIP text tower) with our initial weights loaded strictly, `ClipLoss`,
the AdamW parameter groups of `open_clip_train/main.py`, its `cosine_lr`, and `open_clip_train.train.
train_one_epoch` itself driving the steps (autocast, backward, optional grad clip, step, logit-scale clamp).
Ours: the `clip` task on the shared Trainer (`bench/pretrain_throughput.build_trainer`, the clip_b16_512m recipe
with the shapes asked). Both run in this process (OpenCLIP is our dependency), the same batch already on the
device, taking turns round by round. Outputs equal: the first step's loss (initial weights, same batch).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any

import open_clip
import torch
from open_clip.loss import ClipLoss
from open_clip_train.scheduler import cosine_lr
from open_clip_train.train import train_one_epoch
from pretrain_throughput import build_trainer  # bench/ siblings, imported by bare name as the other benches do
from steps import make_batch, timed_steps

from pretrain.exports.mapping import timm_to_open_clip
from pretrain.exports.openclip import open_clip_model_cfg
from pretrain.runtime.loop import Trainer


class RecordingClipLoss(ClipLoss):
    """OpenCLIP's ClipLoss, keeping each step's loss (as a tensor: no host sync inside the timed loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[torch.Tensor] = []

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = super().forward(*args, **kwargs)
        self.values.append((out["contrastive_loss"] if isinstance(out, dict) else out).detach())
        return out


class RepeatedBatch:
    """A dataloader of `n` copies of one (images, texts) batch, with the counts `train_one_epoch` reads."""

    def __init__(self, batch: tuple[torch.Tensor, torch.Tensor], n: int) -> None:
        self.batch, self.num_batches, self.num_samples = batch, n, n * batch[0].shape[0]

    def __iter__(self) -> Any:
        return iter([self.batch] * self.num_batches)

    def __len__(self) -> int:
        return self.num_batches


class TrainData:
    """What `train_one_epoch` reads of `data["train"]` (open_clip_train.data.DataInfo needs webdataset's deps)."""

    def __init__(self, dataloader: RepeatedBatch) -> None:
        self.dataloader = dataloader

    def set_epoch(self, epoch: int) -> None:
        """Nothing to reshuffle: every step takes the same batch."""


def open_clip_model(trainer: Trainer) -> torch.nn.Module:
    """`open_clip.CLIP` of our task's shapes holding our task's current weights (strict load: nothing left out)."""
    ours = trainer.task.model
    arch, text = trainer.task.arch, ours.text_cfg
    text_cfg = {"context_length": text.context_length, "vocab_size": text.vocab_size, "width": text.width,
                "heads": text.heads, "layers": text.layers, "pool_type": "argmax", "proj_type": "linear",
                "proj_bias": False}  # fmt: skip
    model_cfg = open_clip_model_cfg(arch)
    model = open_clip.CLIP(embed_dim=text.embed_dim, vision_cfg=model_cfg["vision_cfg"], text_cfg=text_cfg,
                           quick_gelu=model_cfg["quick_gelu"], output_dict=True)  # fmt: skip
    state = ours.state_dict()
    theirs = {f"visual.{k}": v for k, v in timm_to_open_clip(_sub(state, "backbone.")).items()}
    theirs["visual.proj"] = state["image_proj.weight"].t()
    theirs.update({k: v for k, v in _sub(state, "text.").items() if k != "attn_mask"})
    theirs["logit_scale"] = state["logit_scale"].reshape(())
    model.load_state_dict(theirs, strict=True)
    return model.to(next(ours.parameters()).device)


def _sub(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def open_clip_optimizer(model: torch.nn.Module, trainer: Trainer) -> torch.optim.Optimizer:
    """AdamW as `open_clip_train/main.py` builds it (no decay on gains, biases, logit scale), our recipe's values."""
    cfg = trainer.optim_cfg
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if exclude(n, p) and p.requires_grad], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exclude(n, p) and p.requires_grad], "weight_decay": cfg.weight_decay},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


class OpenClipRun:
    """OpenCLIP's model, loss, optimizer, schedule and `train_one_epoch`, ready to run `n` steps on one batch."""

    def __init__(self, trainer: Trainer, batch: dict[str, torch.Tensor], precision: str) -> None:
        self.model = open_clip_model(trainer)
        self.loss = RecordingClipLoss()
        self.optimizer = open_clip_optimizer(self.model, trainer)
        cfg = trainer.optim_cfg
        self.scheduler = cosine_lr(self.optimizer, cfg.lr, cfg.warmup_steps, trainer.total_steps)
        self.batch = (batch["image"], batch["text"])
        device = batch["image"].device
        self.args = argparse.Namespace(
            device=str(device), precision=precision, distill=False, accum_freq=1, skip_scheduler=False,
            grad_clip_norm=cfg.clip_grad_norm or None, horovod=False, log_every_n_steps=10**9, world_size=1,
            rank=0, local_rank=0, batch_size=batch["image"].shape[0], wandb=False,
        )  # fmt: skip
        self.epoch = 0

    def steps(self, n: int) -> None:
        train_one_epoch(self.model, {"train": TrainData(RepeatedBatch(self.batch, n))}, self.loss, self.epoch,
                        self.optimizer, None, self.scheduler, None, self.args)  # fmt: skip
        self.epoch += 1

    def timed(self, n: int) -> float:
        device = self.batch[0].device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        self.steps(n)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return n * self.batch[0].shape[0] / (time.perf_counter() - start)


def compare(sizes: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Both steps on one batch: first-step losses and samples/s (median of interleaved rounds)."""
    fp32 = device.type == "cpu"
    args = argparse.Namespace(arch=sizes["arch"], text=sizes["text"], batch=sizes["batch"],
                              precision="fp32" if fp32 else "bf16", grad_ckpt=False)  # fmt: skip
    torch.manual_seed(0)
    trainer, image_size = build_trainer("clip", args, device)
    batch = make_batch(sizes["batch"], image_size, device, trainer.task.model.text_cfg.vocab_size)
    theirs = OpenClipRun(trainer, batch, "fp32" if fp32 else "amp_bf16")  # before our first step: same weights
    ours_loss = float(trainer.train_step([batch])["loss"])
    theirs.steps(1)
    theirs_loss = float(theirs.loss.values[0])
    rates: dict[str, list[float]] = {"ours": [], "theirs": []}
    for _ in range(sizes["rounds"]):
        rates["ours"].append(timed_steps(trainer, batch, sizes["steps"], device))
        rates["theirs"].append(theirs.timed(sizes["steps"]))
    gap = abs(ours_loss - theirs_loss)
    tolerance = 1e-4 if fp32 else 2e-2 * max(1.0, abs(ours_loss))
    params = sum(p.numel() for p in trainer.task.model.parameters())
    return {
        "equal": gap <= tolerance and math.isfinite(ours_loss),
        "detail": f"first-step loss {ours_loss:.6f} vs {theirs_loss:.6f} (|gap| {gap:.1e}, tolerance {tolerance:.0e})",
        "ours": statistics.median(rates["ours"]),
        "theirs": statistics.median(rates["theirs"]),
        "unit": "samples/s",
        "what": f"CLIP step, {sizes['arch']} + {sizes['text']} ({params / 1e6:.0f}M), batch {sizes['batch']}, "
        f"{'fp32' if fp32 else 'bf16'}: Trainer vs open_clip_train",
        "rates": rates,
        "losses": {"ours": ours_loss, "theirs": theirs_loss},
    }

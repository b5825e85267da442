"""AdamW (or LARS) with OpenCLIP's decay rule and a warmup + cosine schedule that is a pure function of the step."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from pretrain.runtime.lars import LARS


@dataclass
class OptimConfig:
    name: Literal["adamw", "lars"] = "adamw"  # lars: MAE's linear-probe optimiser (pretrain.runtime.lars)
    lr: float = 5e-4  # peak learning rate (after warmup)
    betas: tuple[float, float] = (0.9, 0.98)  # AdamW betas
    eps: float = 1e-6  # AdamW epsilon
    weight_decay: float = 0.2  # decoupled decay on weight matrices only (not norms, biases, 1-D params)
    warmup_steps: int = 500  # linear warmup from ~0 to lr
    warmup_ratio: float = 0.0  # > 0: warmup is this fraction of the run (LLaVA's 0.03), instead of warmup_steps
    schedule: Literal["cosine", "linear", "constant"] = "cosine"  # after warmup (linear: to min_lr, as ClipCap)
    min_lr: float = 0.0  # floor of the cosine
    clip_grad_norm: float = 0.0  # global grad-norm clipping; 0 disables
    momentum: float = 0.9  # lars only
    trust_coefficient: float = 0.001  # lars only: the layer-wise trust ratio's scale
    # parameter-name prefix -> multiplier of the peak lr, over the task's own (e.g. {head: 10}: SuperClass's head)
    lr_scales: dict[str, float] = field(default_factory=dict)


_NO_DECAY_PARTS = ("bn", "ln", "norm", "bias", "logit_scale", "cls_token", "class_embedding")


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """OpenCLIP's rule: no decay on 1-D params, norms, biases, the logit scale and the class token."""
    if param.ndim < 2:
        return True
    parts = name.split(".")
    return any(key in part for part in parts for key in _NO_DECAY_PARTS)


def param_groups(model: nn.Module, cfg: OptimConfig, lr_scales: dict[str, float] | None = None) -> list[dict]:
    """Trainable parameters split into decay / no-decay groups, optionally per name-prefix lr scale.

    `lr_scales` maps a parameter-name prefix to a multiplier of the peak lr (e.g. a projector at 0.1x).
    """
    lr_scales = lr_scales or {}
    groups: dict[tuple[bool, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = next((s for prefix, s in lr_scales.items() if name.startswith(prefix)), 1.0)
        decay = not no_weight_decay(name, param)
        group = groups.setdefault(
            (decay, scale),
            {"params": [], "names": [], "weight_decay": cfg.weight_decay if decay else 0.0, "lr_scale": scale},
        )
        group["params"].append(param)
        group["names"].append(name)
    return list(groups.values())


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, lr_scales: dict[str, float] | None = None
) -> torch.optim.Optimizer:
    """The optimiser over `model`'s trainable parameters; `cfg.lr_scales` come first (a user's prefix wins)."""
    task_scales = {k: v for k, v in (lr_scales or {}).items() if k not in cfg.lr_scales}
    groups = param_groups(model, cfg, {**cfg.lr_scales, **task_scales})
    if not groups:
        raise ValueError("the model has no trainable parameters")
    names = [g.pop("names") for g in groups]
    opt: torch.optim.Optimizer
    if cfg.name == "lars":  # no decay or trust scaling on 1-D params, whatever the group says
        opt = LARS(groups, lr=cfg.lr, momentum=cfg.momentum, trust_coefficient=cfg.trust_coefficient)
    else:
        fused = all(p.is_cuda for g in groups for p in g["params"])
        opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused or None)
    for group, group_names in zip(opt.param_groups, names):
        group["param_names"] = group_names
    return opt


def warmup_steps(total_steps: int, cfg: OptimConfig) -> int:
    """Warmup length: `warmup_ratio` of the run (rounded up, as HF's Trainer does) when set, else `warmup_steps`."""
    return math.ceil(cfg.warmup_ratio * total_steps) if cfg.warmup_ratio > 0 else cfg.warmup_steps


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """The learning rate at `step` (0-based): linear warmup, then cosine, linear decay or constant."""
    warmup = warmup_steps(total_steps, cfg)
    if warmup > 0 and step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    decay_steps = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    if cfg.schedule == "linear":
        return cfg.min_lr + (1.0 - progress) * (cfg.lr - cfg.min_lr)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)

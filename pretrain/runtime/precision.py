"""Mixed precision decided in one place: `auto` is bf16 autocast on CUDA and fp32 everywhere else."""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

from pretrain.runtime.errors import ConfigError

PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(precision: str, device: torch.device) -> Literal["bf16", "fp32"]:
    """`auto` -> bf16 on CUDA (its tensor cores), fp32 on CPU (bf16 matmuls are slow there); others pass through."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return "bf16" if precision == "bf16" else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when `precision` resolves to bf16, else a no-op context."""
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()

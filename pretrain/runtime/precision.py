"""Mixed precision decided in one place: `auto` is bf16 autocast on CUDA and fp32 everywhere else.

Training precisions (`run.precision`):
    fp32          no casts.
    bf16          autocast: fp32 weights, each op casts its inputs (weights included) to bf16 as it runs.
    bf16_weights  bf16 compute copies of the weights, cast once after each optimizer step and kept across the
                  micro-steps (`BF16Weights`); forward and backward run on them in plain bf16, without
                  autocast's per-op casts (its fp32 LayerNorm/softmax round trips included); floating-point
                  inputs are cast to bf16 as they arrive; the fp32 weights stay the module's parameters, so the
                  optimizer, checkpoints and artifacts see fp32 masters only. Under FSDP2 the same contract is
                  FSDP2's own `MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)` (parallelize.py),
                  whose all-gather already casts the fp32 shards per forward.
    auto          bf16 on CUDA, fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn

from pretrain.runtime.errors import ConfigError

PRECISIONS = ("auto", "bf16", "bf16_weights", "fp32")


def resolve_precision(precision: str, device: torch.device) -> Literal["bf16", "fp32"]:
    """The compute dtype: `auto` -> bf16 on CUDA (its tensor cores), fp32 on CPU (bf16 matmuls are slow there);
    `bf16_weights` computes in bf16; the others pass through."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return "fp32" if precision == "fp32" else "bf16"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when `precision` resolves to bf16 by autocast, else a no-op context
    (`bf16_weights` runs on bf16 weight copies instead: nothing for autocast to cast)."""
    if precision != "bf16_weights" and resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cast_inputs(batch: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """Floating-point tensors of a batch in `dtype` (images, cached features); ids, lengths and masks unchanged."""
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in batch.items()}


class BF16Weights:
    """bf16 compute copies of a module's floating-point parameters, kept across micro-steps.

    Inside `swapped()` every module holds the copy in place of its fp32 parameter (tied parameters share one
    copy), so forward and backward (activation-checkpoint recomputation too) run on bf16 weights;
    `move_grads()` then adds each copy's gradient to its master's in fp32, once per micro-step, so gradient
    accumulation stays fp32; `refresh()` re-casts the masters after an optimizer step (or a restore).
    Parameters already in bf16 (a frozen bf16 LLM) are left as they are.
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        self.dtype = dtype
        self.slots: list[tuple[nn.Module, str, nn.Parameter, nn.Parameter]] = []  # (owner, name, master, copy)
        copies: dict[int, nn.Parameter] = {}
        for owner in module.modules():
            for name, master in owner._parameters.items():
                if master is None or not master.is_floating_point() or master.dtype == dtype:
                    continue
                if id(master) not in copies:
                    copies[id(master)] = nn.Parameter(master.detach().to(dtype), requires_grad=master.requires_grad)
                self.slots.append((owner, name, master, copies[id(master)]))
        unique = {id(master): (master, copy) for _, _, master, copy in self.slots}
        self.pairs = list(unique.values())

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The bf16 copies stand in for the masters (for a forward and its backward)."""
        for owner, name, _, copy in self.slots:
            owner._parameters[name] = copy
        try:
            yield
        finally:
            for owner, name, master, _ in self.slots:
                owner._parameters[name] = master

    @torch.no_grad()
    def move_grads(self) -> None:
        """Add each copy's gradient to its master's (in the master's dtype) and clear the copy's."""
        for master, copy in self.pairs:
            if copy.grad is None:
                continue
            if master.grad is None:
                master.grad = copy.grad.to(master.dtype)
            else:
                master.grad.add_(copy.grad)
            copy.grad = None

    @torch.no_grad()
    def refresh(self) -> None:
        """Cast the current masters into the copies (after an optimizer step, a clamp or a restore)."""
        if self.pairs:
            torch._foreach_copy_([c for _, c in self.pairs], [m for m, _ in self.pairs])

"""Process-group setup for torchrun (DDP/FSDP2) that degrades to a plain single process."""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist

from pretrain.runtime.errors import ConfigError

TIMEOUT_ENV = "SUPERCLASS_DIST_TIMEOUT_MIN"
DEFAULT_TIMEOUT_MIN = 120.0
_LOCAL_ONLY = False  # inside `local_only()`: this process acts alone, whatever process group exists


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size, local rank and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` is this rank's CUDA device when there is one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def dist_timeout() -> timedelta:
    """How long a collective may wait: 2 h by default (rank 0 alone builds feature caches and writes big
    checkpoints while the other ranks wait in `barrier()`); the env var SUPERCLASS_DIST_TIMEOUT_MIN overrides."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        minutes = float(raw) if raw else DEFAULT_TIMEOUT_MIN
    except ValueError:
        minutes = -1.0
    if not 0 < minutes < 1e8:  # also rejects nan/inf, which timedelta cannot hold
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected a positive number of minutes")
    return timedelta(minutes=minutes)


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Within it this process is rank 0 of 1, whatever process group exists: an evaluation that rank 0 runs during
    training while the other ranks wait (`run.evals`) must not enter collectives they never reach."""
    global _LOCAL_ONLY
    previous, _LOCAL_ONLY = _LOCAL_ONLY, True
    try:
        yield
    finally:
        _LOCAL_ONLY = previous


def group_active() -> bool:
    """Whether collectives should use the process group (one exists and we are not inside `local_only()`)."""
    return not _LOCAL_ONLY and dist.is_available() and dist.is_initialized()


def rank_world() -> tuple[int, int]:
    """(rank, world size): the process group's, else torchrun's environment, else (0, 1); (0, 1) in `local_only()`."""
    if _LOCAL_ONLY:
        return 0, 1
    if group_active():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on GPU, gloo on CPU); else run alone."""
    rank, world_size = rank_world()
    local_rank = 0 if _LOCAL_ONLY else int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if _LOCAL_ONLY:
        return DistInfo(rank=0, world_size=1, local_rank=0, device=dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", timeout=dist_timeout())
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


@contextlib.contextmanager
def process_group(device: str = "auto") -> Iterator[DistInfo]:
    """`init_distributed` for one job: a group this call joined is left on the way out, error or not, because
    gloo's threads can abort the interpreter's exit otherwise (pytorch#190489); a caller's own group stays theirs."""
    owns = not group_active()
    info = init_distributed(device)
    try:
        yield info
    finally:
        if owns:
            cleanup()


def is_distributed() -> bool:
    return group_active() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place when a process group exists; a no-op alone."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean_grads(params: list[torch.Tensor]) -> None:
    """Average the gradients of `params` over ranks, one flat collective per dtype: what DDP does for a model whose
    gradient hooks cannot run (bf16 weight copies), without its overlap. A parameter with a gradient on some ranks
    only counts 0 on the others; one with none anywhere keeps none (the optimizer skips it, as on one rank)."""
    if not is_distributed() or not params:
        return
    present = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    for p, anywhere in zip(params, present.tolist()):
        if anywhere and p.grad is None:
            p.grad = torch.zeros_like(p)
    live = [p for p in params if p.grad is not None]
    for dtype in sorted({p.dtype for p in live}, key=str):
        grads = [p.grad for p in live if p.dtype == dtype]
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(dist.get_world_size())
        for grad, reduced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            grad.copy_(reduced)


def all_reduce_min_flag(flag: bool, device: torch.device) -> bool:
    """True only if `flag` is true on every rank (used so all ranks stop together on a bad step)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """All RNG states as weights_only-loadable objects (numpy's array becomes a tensor)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (
            np_state[0],
            torch.from_numpy(np_state[1].copy()),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def is_launched_worker() -> bool:
    """Whether this process is one of several that torchrun (or another elastic launcher) started."""
    return "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def exit_worker(code: int) -> NoReturn:
    """End the process with `code`. A launched worker flushes its output and skips the interpreter's teardown
    (`os._exit`): by then its group is left and its files are written and closed, and the teardown can still abort
    in gloo's threads (SIGABRT, "terminate called without an active exception"; pytorch#190489, #179291), which
    turns a finished run into a failed one. A lone process exits normally."""
    if not is_launched_worker():
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cleanup() -> None:
    """Leave the process group (if any), so the process exits without NCCL/gloo teardown warnings."""
    if group_active():
        dist.destroy_process_group()

"""Apply activation checkpointing, torch.compile, DDP or FSDP2 to a plain task in one place."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from pretrain.runtime.distributed import DistInfo


def _fsdp_units(task: nn.Module) -> list[nn.Module]:
    """The blocks a task shards one by one (its `fsdp_units()`), else every transformer-style block list."""
    if hasattr(task, "fsdp_units"):
        return list(task.fsdp_units())
    units: list[nn.Module] = []
    for module in task.modules():
        for name in ("blocks", "resblocks", "layers"):
            seq = getattr(module, name, None)
            if isinstance(seq, (nn.ModuleList, nn.Sequential)):
                units.extend(seq)
    return units


def apply_fsdp(task: nn.Module, dist_info: DistInfo, reshard_after_forward: bool = True) -> nn.Module:
    """FSDP2: `fully_shard` each block, then the root, as torchtitan does."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(dist_info.device.type, (dist_info.world_size,))
    for unit in _fsdp_units(task):
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(task, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return task


def parallelize(
    task: nn.Module,
    dist_info: DistInfo,
    strategy: Literal["ddp", "fsdp"] = "ddp",
    grad_checkpointing: bool = False,
    compile_model: bool = False,
) -> nn.Module:
    """Move `task` to its device and wrap it for training; returns the module the loop calls.

    The task itself stays plain (its state dict keys never gain `module.` prefixes); the loop keeps a
    reference to it for checkpoints and artifacts.
    """
    if grad_checkpointing:
        if not hasattr(task, "set_grad_checkpointing"):
            raise ValueError(f"{type(task).__name__} does not support gradient checkpointing")
        task.set_grad_checkpointing(True)
    task.to(dist_info.device)
    if compile_model:
        targets = list(task.compile_units()) if hasattr(task, "compile_units") else [task]
        for module in targets:
            module.compile()
    if dist_info.world_size <= 1:
        return task
    if strategy == "fsdp":
        return apply_fsdp(task, dist_info)
    device_ids = [dist_info.device.index] if dist_info.device.type == "cuda" else None
    if not any(p.requires_grad for p in task.parameters()):
        return task
    return torch.nn.parallel.DistributedDataParallel(task, device_ids=device_ids, broadcast_buffers=False)

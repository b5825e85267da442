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


def apply_fsdp(
    task: nn.Module, dist_info: DistInfo, reshard_after_forward: bool = True, bf16_weights: bool = False
) -> nn.Module:
    """FSDP2: `fully_shard` each block, then the root, as torchtitan does.

    `bf16_weights`: FSDP2's MixedPrecisionPolicy (bf16 unsharded parameters for compute, fp32 shards as the
    optimizer's masters, gradients reduced in fp32, floating inputs cast to bf16): `BF16Weights`' contract,
    done by FSDP2's all-gather, which casts anyway.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(dist_info.device.type, (dist_info.world_size,))
    bf16 = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    policy = bf16 if bf16_weights else MixedPrecisionPolicy()  # the default: no casts
    for unit in _fsdp_units(task):
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    fully_shard(task, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    return task


def compile_targets(task: nn.Module, scope: Literal["units", "task"] = "units") -> list[nn.Module]:
    """What `torch.compile` wraps: the whole task (its forward with the loss, one graph) or its `compile_units()`."""
    if scope == "task" or not hasattr(task, "compile_units"):
        return [task]
    return list(task.compile_units())


def parallelize(
    task: nn.Module,
    dist_info: DistInfo,
    strategy: Literal["ddp", "fsdp"] = "ddp",
    grad_checkpointing: bool = False,
    compile_model: bool = False,
    compile_scope: Literal["units", "task"] = "units",
    bf16_weights: bool = False,
) -> nn.Module:
    """Move `task` to its device and wrap it for training; returns the module the loop calls.

    The task itself stays plain (its state dict keys never gain `module.` prefixes); the loop keeps a
    reference to it for checkpoints and artifacts. With `bf16_weights` DDP is not applied: its gradient hooks sit
    on the fp32 parameters, which the bf16 copies stand in for, so the loop all-reduces the gradients itself.
    """
    if grad_checkpointing:
        if not hasattr(task, "set_grad_checkpointing"):
            raise ValueError(f"{type(task).__name__} does not support gradient checkpointing")
        task.set_grad_checkpointing(True)
    task.to(dist_info.device)
    if compile_model:
        for module in compile_targets(task, compile_scope):
            module.compile()
    if dist_info.world_size <= 1:
        return task
    if strategy == "fsdp":
        return apply_fsdp(task, dist_info, bf16_weights=bf16_weights)
    if bf16_weights:
        return task
    device_ids = [dist_info.device.index] if dist_info.device.type == "cuda" else None
    if not any(p.requires_grad for p in task.parameters()):
        return task
    return torch.nn.parallel.DistributedDataParallel(task, device_ids=device_ids, broadcast_buffers=False)

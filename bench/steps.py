"""Shared by the training benchmarks: a caption-like device batch and images/s of the runtime's train step."""

from __future__ import annotations

import time

import torch

from pretrain.runtime.loop import Trainer

H200_MEASURED = 790e12  # bf16 dense matmul measured on the lent H200 (TFLOP/s ceiling for MFU); the H100
# kind measured 798 (the device tool's KINDS.md, 2026-11-13): one ceiling for both cards, within 1%
H200_DATASHEET = 989e12


def make_batch(batch: int, image_size: int, device: torch.device, vocab: int = 49408, seed: int = 0) -> dict:
    """Random images and caption-like token ids (SOT, 8-24 word pieces, EOT, zero padding)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(batch, 77, dtype=torch.long)
    lengths = torch.randint(10, 27, (batch,), generator=g)
    for i, n in enumerate(lengths.tolist()):
        ids[i, 0], ids[i, 1 : n - 1], ids[i, n - 1] = 49406, torch.randint(1, vocab - 2, (n - 2,), generator=g), 49407
    images = torch.randn(batch, 3, image_size, image_size, generator=g)
    return {"image": images.to(device), "text": ids.to(device), "text_len": lengths.to(device)}


def timed_steps(trainer: Trainer, batch: dict, steps: int, device: torch.device, per_step: int = 0) -> float:
    """Items/s over `steps` full optimizer steps (device synchronised before and after).

    `per_step`: items one step processes (default: the batch's images; e.g. its tokens for a language model).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step([batch])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * (per_step or batch["image"].shape[0]) / (time.perf_counter() - start)


def interleaved(entries: dict[str, tuple[Trainer, dict]], steps: int, rounds: int, device: torch.device) -> dict:
    """Items/s of each (trainer, batch) per round, the entries taking turns so clock or thermal drift hits all alike."""
    rates: dict[str, list[float]] = {name: [] for name in entries}
    for _ in range(rounds):
        for name, (trainer, batch) in entries.items():
            rates[name].append(timed_steps(trainer, batch, steps, device))
    return rates

"""Shared helpers for the LiT tests: tiny random encoder artifacts."""

from __future__ import annotations

from pathlib import Path

import torch

from pretrain.encoder import default_preprocess, save_encoder
from pretrain.models.backbone import build_backbone
from pretrain.models.presets import get_preset


def tiny_encoder(path: Path, seed: int = 0, pool: str = "avg") -> Path:
    """A random vit_tiny backbone (32 px, width 64, 2 blocks) saved as an encoder artifact."""
    import dataclasses

    arch = dataclasses.replace(get_preset("vit_tiny"), pool=pool)
    torch.manual_seed(seed)
    backbone = build_backbone(arch)
    provenance = {"method": "superclass", "tokenizer": "clip_bpe", "vocab_size": 49408}
    return save_encoder(path, backbone, arch, default_preprocess(arch), provenance)


def tiny_cnn_encoder(path: Path, seed: int = 0) -> Path:
    """A random rn50_tiny backbone (timm's test_resnet, 64 px, width 96): its pooled features keep colour linear."""
    arch = get_preset("rn50_tiny")
    torch.manual_seed(seed)
    provenance = {"method": "clip", "tokenizer": "clip_bpe", "vocab_size": 49408}
    return save_encoder(path, build_backbone(arch), arch, default_preprocess(arch), provenance)

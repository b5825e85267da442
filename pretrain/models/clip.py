"""The CLIP baseline (and the LiT model): our image backbone + a linear projection, OpenCLIP's text tower.

The image side is the same backbone SuperClass trains (so the two methods compare on identical encoders and
the same artifact format), followed by Linear(pooled_dim, embed_dim, bias=False). The text side is OpenCLIP's
own `TextTransformer` (causal mask, final LayerNorm, EOT pooling via argmax over the ids, projection to
embed_dim), so its weights load into OpenCLIP unchanged. The loss lives in the task, not here.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.transformer import TextTransformer

from pretrain.models.presets import TextConfig

__all__ = ["CLIPModel", "TextConfig", "build_text_tower", "reshape_logit_scale"]

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP's temperature init; the task clamps the scale at log(100)


def reshape_logit_scale(state_dict: dict[str, Any], key: str) -> None:
    """Make a 0-dim `logit_scale` (OpenCLIP's layout; our checkpoints before FSDP2 support) the [1] ours hold."""
    value = state_dict.get(key)
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        state_dict[key] = value.reshape(1)


def build_text_tower(cfg: TextConfig) -> TextTransformer:
    """OpenCLIP's text transformer with CLIP's settings (causal, argmax/EOT pooling, bias-free projection)."""
    return TextTransformer(
        context_length=cfg.context_length,
        vocab_size=cfg.vocab_size,
        width=cfg.width,
        heads=cfg.heads,
        layers=cfg.layers,
        output_dim=cfg.embed_dim,
        pool_type="argmax",  # EOT (49407) is the largest id in every CLIP-tokenized caption
        proj_type="linear",
        proj_bias=False,
        act_layer=nn.GELU,
    )


class CLIPModel(nn.Module):
    """Two towers into one `embed_dim` space plus a learnable logit scale; plain (no DDP/compile inside)."""

    def __init__(self, backbone: nn.Module, pooled_dim: int, text_cfg: TextConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.image_proj = nn.Linear(pooled_dim, text_cfg.embed_dim, bias=False)
        nn.init.normal_(self.image_proj.weight, std=pooled_dim**-0.5)  # OpenCLIP's `proj` init
        self.text = build_text_tower(text_cfg)
        self.text_cfg = text_cfg
        # shape [1], not 0-dim: FSDP2's fully_shard rejects scalar parameters; forward returns it as a scalar
        self.logit_scale = nn.Parameter(torch.full((1,), LOGIT_SCALE_INIT))

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Image embeddings [B, embed_dim] from the pooled backbone feature."""
        features = self.image_proj(self.backbone(images))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, ids: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Text embeddings [B, embed_dim] from token ids [B, context_length]."""
        features = self.text(ids)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(normalised image features, normalised text features, logit_scale.exp() as a 0-dim tensor)."""
        return self.encode_image(images), self.encode_text(ids), self.logit_scale.exp().squeeze(0)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        reshape_logit_scale(state_dict, prefix + "logit_scale")  # older checkpoints stored it 0-dim
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing in both towers (the runtime turns it on)."""
        self.backbone.set_grad_checkpointing(enable)
        self.text.set_grad_checkpointing(enable)

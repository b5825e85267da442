"""Image backbones on timm: a CLIP-style ViT that maps 1:1 onto OpenCLIP / HF `CLIPVisionModel`, or any timm CNN.

The ViT is timm's `VisionTransformer` configured like OpenCLIP's: class token with a learned position embedding
(the class position included), `norm_pre` (= ln_pre / HF pre_layrnorm) and hence no patch-embed bias, pre-norm
blocks with a fused qkv Linear (q, k, v order, with bias) run by `F.scaled_dot_product_attention`, exact GELU,
LayerNorm eps 1e-5, and the final norm (= ln_post) applied to ALL tokens before pooling. `pool="avg"` then
averages the patch tokens only (the class token stays in the sequence but out of the pool, as the official
SuperClass code); `pool="token"` takes the class token. There is no fc_norm and no classifier (`num_classes=0`),
so `backbone(images)` is the pooled feature [B, width].

Weight init is timm's default ("" mode): trunc-normal std 0.02 for Linear weights and the position embedding,
zero biases, class token N(0, 1e-6), LayerNorm (1, 0), the patch conv with PyTorch's default init.
"""

from __future__ import annotations

from functools import partial

import timm
import torch.nn as nn
from timm.layers import QuickGELU, get_act_layer
from timm.models.vision_transformer import VisionTransformer

from pretrain.models.presets import ArchConfig
from pretrain.runtime.errors import ConfigError


def _act_layer(name: str) -> type[nn.Module]:
    """The activation class for `name`; "gelu" is exactly `nn.GELU` (erf), as OpenCLIP and HF `hidden_act="gelu"`."""
    if name == "gelu":
        return nn.GELU
    if name == "quick_gelu":
        return QuickGELU
    try:
        layer = get_act_layer(name)
    except (KeyError, ValueError):
        layer = None
    if layer is None:
        raise ConfigError(f"architecture.act: unknown activation '{name}' (expected 'gelu' or 'quick_gelu')")
    return layer


def build_vit(arch: ArchConfig) -> VisionTransformer:
    """The CLIP-style ViT described by `arch` (see the module docstring for the exact layout)."""
    return VisionTransformer(
        img_size=arch.image_size,
        patch_size=arch.patch_size,
        num_classes=0,
        global_pool=arch.pool,
        embed_dim=arch.width,
        depth=arch.layers,
        num_heads=arch.heads,
        mlp_ratio=arch.mlp_ratio,
        qkv_bias=True,
        class_token=arch.class_token,
        no_embed_class=False,  # the class token has its own position embedding, as CLIP
        pre_norm=True,  # ln_pre; timm then builds the patch embed without bias
        final_norm=True,  # ln_post on all tokens ...
        fc_norm=False,  # ... and not after pooling
        pool_include_prefix=False,  # avg pool over patch tokens only
        norm_layer=partial(nn.LayerNorm, eps=arch.ln_eps),
        act_layer=_act_layer(arch.act),
    )


def build_backbone(arch: ArchConfig) -> nn.Module:
    """A plain (no DDP/compile) timm model whose `forward(images)` returns the pooled feature [B, arch.width]."""
    if arch.family == "vit":
        return build_vit(arch)
    try:
        model = timm.create_model(arch.timm_name, num_classes=0, pretrained=False)
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise ConfigError(f"architecture.timm_name: {exc}") from None
    if model.num_features != arch.width:
        raise ConfigError(
            f"architecture.width: {arch.width} does not match timm '{arch.timm_name}' num_features {model.num_features}"
        )
    return model

"""Weight-name mappings between our timm CLIP-style ViT and OpenCLIP / HF CLIP (the one home for them).

Our backbone is timm's `VisionTransformer` (see `pretrain.models.backbone`); the same tensors under other names:

| timm (ours)                     | OpenCLIP `VisionTransformer`      | HF `CLIPVisionModel`                          |
|---------------------------------|-----------------------------------|-----------------------------------------------|
| cls_token [1, 1, D]             | class_embedding [D]               | embeddings.class_embedding [D]                |
| pos_embed [1, 1+N, D]           | positional_embedding [1+N, D]     | embeddings.position_embedding.weight [1+N, D] |
| patch_embed.proj.weight         | conv1.weight                      | embeddings.patch_embedding.weight             |
| norm_pre.*                      | ln_pre.*                          | pre_layrnorm.*                                |
| blocks.i.norm1 / norm2          | R.i.ln_1 / ln_2                   | L.i.layer_norm1 / layer_norm2                 |
| blocks.i.attn.qkv (fused q,k,v) | R.i.attn.in_proj_weight / _bias   | L.i.self_attn.{q,k,v}_proj                    |
| blocks.i.attn.proj              | R.i.attn.out_proj                 | L.i.self_attn.out_proj                        |
| blocks.i.mlp.fc1 / fc2          | R.i.mlp.c_fc / c_proj             | L.i.mlp.fc1 / fc2                             |
| norm.* (on all tokens)          | ln_post.*                         | post_layernorm.* (class token only)           |
R = transformer.resblocks, L = encoder.layers.

The reverse functions raise KeyError naming the first tensor they miss; callers turn that into a UserError.
"""

from __future__ import annotations

import re

import torch

HF_PREFIX = "vision_model."  # the legacy (transformers 4.x) key prefix; 5.x strips it at load time
# per-block tensors that keep their shape (timm name -> other name); the fused/split qkv is handled separately
_OPEN_CLIP_BLOCK = {
    "norm1": "ln_1",
    "norm2": "ln_2",
    "attn.proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_HF_BLOCK = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "attn.proj": "self_attn.out_proj",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_KINDS = ("weight", "bias")


def count_blocks(state: dict[str, torch.Tensor], pattern: str) -> int:
    """How many blocks a state dict holds: 1 + the largest integer `i` in keys matching `pattern` (with `(\\d+)`)."""
    found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    return max(found) + 1 if found else 0


def timm_to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our timm ViT keys -> OpenCLIP `VisionTransformer` keys (no `visual.` prefix, no `proj`)."""
    out = {
        "class_embedding": state["cls_token"][0, 0],
        "positional_embedding": state["pos_embed"][0],
        "conv1.weight": state["patch_embed.proj.weight"],
    }
    for kind in _KINDS:
        out[f"ln_pre.{kind}"] = state[f"norm_pre.{kind}"]
        out[f"ln_post.{kind}"] = state[f"norm.{kind}"]
    for i in range(count_blocks(state, r"blocks\.(\d+)\.")):
        src, dst = f"blocks.{i}.", f"transformer.resblocks.{i}."
        for kind in _KINDS:
            out[f"{dst}attn.in_proj_{kind}"] = state[f"{src}attn.qkv.{kind}"]
            out.update({f"{dst}{b}.{kind}": state[f"{src}{a}.{kind}"] for a, b in _OPEN_CLIP_BLOCK.items()})
    return out


def open_clip_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP `VisionTransformer` keys (no `visual.` prefix) -> our timm ViT keys; `proj` is not read."""
    out = {
        "cls_token": state["class_embedding"].reshape(1, 1, -1),
        "pos_embed": state["positional_embedding"].unsqueeze(0),
        "patch_embed.proj.weight": state["conv1.weight"],
    }
    for kind in _KINDS:
        out[f"norm_pre.{kind}"] = state[f"ln_pre.{kind}"]
        out[f"norm.{kind}"] = state[f"ln_post.{kind}"]
    for i in range(count_blocks(state, r"transformer\.resblocks\.(\d+)\.")):
        src, dst = f"transformer.resblocks.{i}.", f"blocks.{i}."
        for kind in _KINDS:
            out[f"{dst}attn.qkv.{kind}"] = state[f"{src}attn.in_proj_{kind}"]
            out.update({f"{dst}{a}.{kind}": state[f"{src}{b}.{kind}"] for a, b in _OPEN_CLIP_BLOCK.items()})
    return out


def timm_to_hf(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Our timm ViT keys -> HF `CLIPVisionModel` keys under `prefix` (`HF_PREFIX` for the legacy 4.x layout).

    timm's fused qkv is split into q, k, v (timm and OpenCLIP both fuse them in q, k, v order).
    """
    out = {
        "embeddings.class_embedding": state["cls_token"][0, 0],
        "embeddings.position_embedding.weight": state["pos_embed"][0],
        "embeddings.patch_embedding.weight": state["patch_embed.proj.weight"],
    }
    for kind in _KINDS:
        out[f"pre_layrnorm.{kind}"] = state[f"norm_pre.{kind}"]
        out[f"post_layernorm.{kind}"] = state[f"norm.{kind}"]
    for i in range(count_blocks(state, r"blocks\.(\d+)\.")):
        src, dst = f"blocks.{i}.", f"encoder.layers.{i}."
        for kind in _KINDS:
            q, k, v = state[f"{src}attn.qkv.{kind}"].chunk(3, dim=0)
            out.update({f"{dst}self_attn.{n}_proj.{kind}": t for n, t in zip("qkv", (q, k, v))})
            out.update({f"{dst}{b}.{kind}": state[f"{src}{a}.{kind}"] for a, b in _HF_BLOCK.items()})
    return {prefix + k: v for k, v in out.items()}


def hf_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF `CLIPVisionModel` keys (without the `vision_model.` prefix) -> our timm ViT keys (q, k, v fused)."""
    out = {
        "cls_token": state["embeddings.class_embedding"].reshape(1, 1, -1),
        "pos_embed": state["embeddings.position_embedding.weight"].unsqueeze(0),
        "patch_embed.proj.weight": state["embeddings.patch_embedding.weight"],
    }
    for kind in _KINDS:
        out[f"norm_pre.{kind}"] = state[f"pre_layrnorm.{kind}"]
        out[f"norm.{kind}"] = state[f"post_layernorm.{kind}"]
    for i in range(count_blocks(state, r"encoder\.layers\.(\d+)\.")):
        src, dst = f"encoder.layers.{i}.", f"blocks.{i}."
        for kind in _KINDS:
            qkv = [state[f"{src}self_attn.{n}_proj.{kind}"] for n in "qkv"]
            out[f"{dst}attn.qkv.{kind}"] = torch.cat(qkv, dim=0)
            out.update({f"{dst}{a}.{kind}": state[f"{src}{b}.{kind}"] for a, b in _HF_BLOCK.items()})
    return out

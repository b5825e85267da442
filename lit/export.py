"""A LiT model as an OpenCLIP model directory: image tower + LiT projection + text tower + temperature.

`open_clip.create_model("local-dir:OUT")` builds it, so OpenCLIP's own zero-shot and retrieval code (and
CLIP_benchmark) run on it and give the same logits as ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from open_clip.transformer import TextTransformer
from safetensors.torch import save_file
from torch import nn

from lit.model import load_lit
from pretrain.exports.common import read_json, read_state_dict, write_export
from pretrain.exports.mapping import timm_to_open_clip
from pretrain.exports.openclip import CONFIG, EXACT_KEY, WEIGHTS, open_clip_model_cfg
from pretrain.runtime.atomic import plain_tensors
from pretrain.runtime.errors import UserError


def _text_cfg(text: TextTransformer) -> dict[str, Any]:
    return {
        "context_length": text.context_length,
        "vocab_size": text.vocab_size,
        "width": text.width,
        "heads": text.heads,
        "layers": len(text.transformer.resblocks),
        "pool_type": text.pool_type,
        "proj_type": "linear",
        "proj_bias": False,
    }


def export_lit_open_clip(lit_dir: str | Path, out: str | Path, encoder: str | Path | None = None) -> Path:
    """Write the LiT model at `lit_dir` as an OpenCLIP directory `out` (atomically); returns `out`.

    `encoder` overrides the encoder artifact path the LiT model names (it must be the same artifact).
    """
    model = load_lit(lit_dir, encoder=encoder)
    if not isinstance(model.text, TextTransformer):
        raise UserError(f"{lit_dir}: its text tower is an HF encoder; only OpenCLIP text towers export to open_clip")
    if model.arch.family != "vit":
        raise UserError(
            f"{lit_dir}: its image tower is a {model.arch.timm_name or model.arch.family}; only ViTs export"
        )
    model_cfg = open_clip_model_cfg(model.arch)
    model_cfg["embed_dim"] = model.embed_dim
    model_cfg["text_cfg"] = _text_cfg(model.text)
    state = {f"visual.{k}": v for k, v in timm_to_open_clip(model.backbone.state_dict()).items()}
    state["visual.proj"] = model.image_proj.weight.detach().T  # OpenCLIP computes x @ proj
    state.update(model.text.state_dict())
    state["logit_scale"] = model.logit_scale.detach().reshape(())  # OpenCLIP holds it 0-dim; ours is [1]
    pre = model.encoder_config["preprocessing"]
    preprocess_cfg = {"size": pre["crop"], "mean": pre["mean"], "std": pre["std"],
                      "interpolation": pre["interpolation"], "resize_mode": "shortest"}  # fmt: skip
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg, EXACT_KEY: pre}

    def write(tmp: Path) -> None:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        save_file(plain_tensors(state), str(tmp / WEIGHTS), metadata={"format": "pt"})

    return write_export(out, write, lambda d: (d / CONFIG).is_file())


def load_open_clip_lit(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The OpenCLIP `CLIP` model of an `export_lit_open_clip` directory, weights loaded, in eval mode."""
    import open_clip

    path = Path(path)
    read_json(path / CONFIG)
    state = read_state_dict(path / WEIGHTS)
    model = open_clip.create_model(f"local-dir:{path}", load_weights=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"{path / WEIGHTS}: does not match {CONFIG} ({' '.join(str(exc).split())[:300]})") from None
    return model.to(device).eval()

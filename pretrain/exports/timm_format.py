"""timm: encoder artifact -> `timm_model.safetensors` + `timm_config.json`, loadable without this toolkit.

`timm_config.json` follows timm's hub `config.json` layout: `architecture` (a registered timm model name),
`num_classes` 0, `num_features`, `model_args` (the exact kwargs; for our ViT they override every default of the
named CLIP builder, `vit_base_patch16_clip_224` or its quickgelu twin, which supplies LayerNorm eps 1e-5) and
`pretrained_cfg` (the artifact's mean/std/interpolation/crop_pct, so `timm.data.resolve_data_config(model=m)`
gives its eval transform). Loading is
    model = timm.create_model(cfg["architecture"], pretrained=False, num_classes=0,
                              pretrained_cfg_overlay=cfg["pretrained_cfg"], **cfg["model_args"])
    model.load_state_dict(safetensors.torch.load_file("timm_model.safetensors"))
which is `load_timm(dir)`. The state dict is the artifact's own (our backbone is a timm model); CNN artifacts
(family "timm") export too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pretrain.encoder import CONFIG_FILE, load_encoder
from pretrain.exports.common import read_json, read_state_dict, write_export
from pretrain.models.presets import ArchConfig
from pretrain.runtime.atomic import plain_tensors
from pretrain.runtime.errors import UserError

CONFIG = "timm_config.json"
WEIGHTS = "timm_model.safetensors"
_LN_EPS_NAMES = {1e-6: "layernorm"}  # timm's LayerNorm by name has eps 1e-6; 1e-5 comes with the CLIP builders


def timm_model_args(arch: ArchConfig, where: Path) -> tuple[str, dict[str, Any]]:
    """(timm model name, kwargs) that rebuild the artifact's backbone with `timm.create_model`."""
    if arch.family != "vit":
        return arch.timm_name, {}
    name = "vit_base_patch16_clip_quickgelu_224" if arch.act == "quick_gelu" else "vit_base_patch16_clip_224"
    args: dict[str, Any] = {
        "img_size": arch.image_size,
        "patch_size": arch.patch_size,
        "embed_dim": arch.width,
        "depth": arch.layers,
        "num_heads": arch.heads,
        "mlp_ratio": arch.mlp_ratio,
        "qkv_bias": True,
        "class_token": arch.class_token,
        "no_embed_class": False,
        "pre_norm": True,
        "final_norm": True,
        "fc_norm": False,
        "global_pool": arch.pool,
        "pool_include_prefix": False,
        "act_layer": arch.act,
    }
    if arch.ln_eps != 1e-5:
        if arch.ln_eps not in _LN_EPS_NAMES:
            raise UserError(f"{where}: architecture.ln_eps {arch.ln_eps} has no timm name (1e-5 or 1e-6 export)")
        args["norm_layer"] = _LN_EPS_NAMES[arch.ln_eps]
    return name, args


def export_timm(encoder_dir: str | Path, out: str | Path) -> Path:
    """Write the artifact at `encoder_dir` as a timm state dict + config directory `out` (atomically)."""
    from safetensors.torch import save_file

    encoder = load_encoder(encoder_dir)
    arch, pre = encoder.arch, encoder.config["preprocessing"]
    name, model_args = timm_model_args(arch, Path(encoder_dir) / CONFIG_FILE)
    config = {
        "architecture": name,
        "num_classes": 0,
        "num_features": arch.width,
        "model_args": model_args,
        "pretrained_cfg": {
            "input_size": [3, pre["crop"], pre["crop"]],
            "interpolation": pre["interpolation"],
            "crop_pct": pre["crop"] / pre["resize"],  # timm resizes to floor(crop / crop_pct) = resize
            "crop_mode": "center",
            "mean": pre["mean"],
            "std": pre["std"],
            "num_classes": 0,
        },
    }
    state = plain_tensors(encoder.backbone.state_dict())

    def write(tmp: Path) -> None:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})

    return write_export(out, write, lambda d: (d / CONFIG).is_file())


def load_timm(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The timm model of an `export_timm` directory, weights loaded (strict), in eval mode."""
    import timm

    path = Path(path)
    cfg_file = path / CONFIG
    config = read_json(cfg_file)
    if not isinstance(config.get("architecture"), str) or not isinstance(config.get("model_args", {}), dict):
        raise UserError(f"{cfg_file}: expected 'architecture' (a timm model name) and 'model_args' (a mapping)")
    state = read_state_dict(path / WEIGHTS)
    overlay = {k: tuple(v) if isinstance(v, list) else v for k, v in (config.get("pretrained_cfg") or {}).items()}
    try:
        model = timm.create_model(
            config["architecture"],
            pretrained=False,
            num_classes=0,
            pretrained_cfg_overlay=overlay,  # JSON lists back to timm's tuples
            **config.get("model_args", {}),
        )
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise UserError(f"{cfg_file}: timm cannot build it ({str(exc).splitlines()[0]})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise UserError(f"{path / WEIGHTS}: does not match the model in {CONFIG} ({detail})") from None
    return model.to(device).eval()

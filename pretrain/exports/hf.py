"""HF transformers: encoder artifact <-> `CLIPVisionModel` directory (what LLaVA, vLLM and lmms-eval load).

Export writes `config.json` (a `CLIPVisionConfig`, `hidden_act` set explicitly: HF's default is quick_gelu),
`model.safetensors` in the legacy `vision_model.*` layout (transformers 4.x reads it as is, 5.x strips the prefix
at load time) and `preprocessor_config.json` (a `CLIPImageProcessor`). `superclass_pool` in config.json records
the artifact's pooling so an import gives it back.

HF applies `post_layernorm` to the class token only (`pooler_output`); our final norm runs on all tokens before
pooling, so the artifact's pooled feature is `hf_pooled(outputs, model, pool)`:
    pool "token": outputs.pooler_output
    pool "avg":   model.post_layernorm(outputs.last_hidden_state)[:, 1:].mean(1)
LLaVA's layer -2 is `outputs.hidden_states[-2]` on both sides (the class token first).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torchvision.transforms import InterpolationMode

from pretrain.data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from pretrain.encoder import default_preprocess, save_encoder
from pretrain.exports.common import (
    CLIP_ACTS,
    as_float32,
    check_tensors,
    load_clip_vit,
    make_arch,
    missing_tensor,
    read_json,
    read_state_dict,
    reject_leftovers,
    write_export,
)
from pretrain.exports.mapping import HF_PREFIX, hf_to_timm, timm_to_hf
from pretrain.models.presets import ArchConfig
from pretrain.runtime.atomic import plain_tensors
from pretrain.runtime.errors import UserError

CONFIG = "config.json"
WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
PROCESSOR = "preprocessor_config.json"
POOL_KEY = "superclass_pool"
# PIL resample codes (what preprocessor_config.json stores) <-> torchvision interpolation names
_PIL_CODES = {"nearest": 0, "nearest-exact": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}
_PIL_NAMES = {0: "nearest-exact", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# tensors of a CLIPModel / CLIPVisionModelWithProjection checkpoint that are not the vision backbone
_NOT_VISION = ("text_model.", "text_projection.", "visual_projection.", "logit_scale", "logit_bias")


def hf_vision_config(arch: ArchConfig) -> Any:
    """The `CLIPVisionConfig` of a CLIP-style ViT architecture (no projection: projection_dim = width)."""
    from transformers import CLIPVisionConfig

    config = CLIPVisionConfig(
        hidden_size=arch.width,
        intermediate_size=int(arch.width * arch.mlp_ratio),
        num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads,
        num_channels=3,
        image_size=arch.image_size,
        patch_size=arch.patch_size,
        hidden_act=arch.act,  # explicit: CLIPVisionConfig defaults to quick_gelu
        layer_norm_eps=arch.ln_eps,
        projection_dim=arch.width,
        **{POOL_KEY: arch.pool},
    )
    config.architectures = ["CLIPVisionModel"]
    return config


def hf_image_processor(pre: dict[str, Any]) -> Any:
    """A `CLIPImageProcessor` doing the artifact's preprocessing: shortest side to `resize`, centre `crop`, norm."""
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": int(pre["resize"])},
        resample=_PIL_CODES[InterpolationMode(pre["interpolation"]).value],
        do_center_crop=True,
        crop_size={"height": int(pre["crop"]), "width": int(pre["crop"])},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(pre["mean"]),
        image_std=list(pre["std"]),
        do_convert_rgb=True,
    )


def export_hf(encoder_dir: str | Path, out: str | Path) -> Path:
    """Write the artifact at `encoder_dir` as an HF `CLIPVisionModel` directory `out` (atomically); returns `out`."""
    encoder = load_clip_vit(encoder_dir, "hf")
    config = hf_vision_config(encoder.arch)
    state = plain_tensors(timm_to_hf(encoder.backbone.state_dict()))
    processor = hf_image_processor(encoder.config["preprocessing"])

    return write_export(out, lambda tmp: write_clip_vision_dir(tmp, config, state, processor), _is_hf_export)


def write_clip_vision_dir(out: Path, config: Any, state: dict[str, torch.Tensor], processor: Any) -> None:
    """Write a `CLIPVisionModel` folder (config, `vision_model.*` weights, image processor) into the empty `out`.

    `state` holds the tower's tensors without the `vision_model.` prefix; the legacy prefix is what 4.x reads.
    """
    from transformers import CLIPVisionModel

    with torch.device("meta"):  # no init work: every tensor comes from `state`
        model = CLIPVisionModel(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.save_pretrained(out, state_dict={HF_PREFIX + k: v for k, v in state.items()})
    processor.save_pretrained(out)


def hf_pooled(outputs: Any, model: nn.Module, pool: str) -> torch.Tensor:
    """The artifact's pooled feature [B, D] from a `CLIPVisionModel`'s outputs (see the module docstring)."""
    if pool == "token":
        return outputs.pooler_output
    if pool != "avg":
        raise ValueError(f"pool must be 'avg' or 'token', got {pool!r}")
    post_layernorm = getattr(model, "vision_model", model).post_layernorm  # 4.x nests it under vision_model
    return post_layernorm(outputs.last_hidden_state)[:, 1:].mean(dim=1)


def import_hf(path: str | Path, out: str | Path, pool: str | None = None) -> Path:
    """Write the vision tower of the HF `CLIPVisionModel` / `CLIPModel` directory `path` as an artifact `out`.

    `pool`: the artifact's pooling; default `superclass_pool` from config.json (our exports), else "token" (CLIP's
    class-token feature). The projection (`visual_projection`) is not part of the backbone and is left out.
    """
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: {'not a directory' if path.exists() else 'does not exist'} (expected an HF CLIP dir)")
    cfg_file = path / CONFIG
    vision = _vision_config(read_json(cfg_file), cfg_file)
    arch = _hf_arch(vision, cfg_file, pool)
    file, tensors = _read_hf_weights(path)
    backbone, projection = _hf_backbone(file, tensors, arch)
    preprocess, pre_source = _hf_preprocess(path / PROCESSOR, arch)
    provenance = {
        "method": "clip",
        "source": {"format": "hf", "path": str(path.absolute()), "preprocessing": pre_source},
        "projection": projection,
    }
    return save_encoder(out, backbone, arch, preprocess, provenance)


# ----------------------------------------------------------------------------------------------- helpers


def _is_hf_export(out: Path) -> bool:
    try:
        return json.loads((out / CONFIG).read_text()).get("model_type") == "clip_vision_model"
    except (OSError, ValueError, AttributeError):
        return False


def _vision_config(config: dict[str, Any], cfg_file: Path) -> dict[str, Any]:
    """The `clip_vision_model` config, taken from `vision_config` when `config` is a full `clip` model's."""
    model_type = config.get("model_type")
    if model_type == "clip":
        config = config.get("vision_config") or {}
        model_type = config.get("model_type", "clip_vision_model")
    if model_type != "clip_vision_model":
        raise UserError(f"{cfg_file}: model_type is {model_type!r}; expected 'clip_vision_model' or 'clip'")
    return config


def _hf_arch(vision: dict[str, Any], cfg_file: Path, pool: str | None) -> ArchConfig:
    """Our architecture for a `CLIPVisionConfig` dict (missing fields take transformers' defaults)."""
    from transformers import CLIPVisionConfig

    skip = ("architectures", "transformers_version", "dtype", "model_type")
    try:
        cfg = CLIPVisionConfig(**{k: v for k, v in vision.items() if k not in skip})
    except (TypeError, ValueError) as exc:
        raise UserError(f"{cfg_file}: not a valid CLIPVisionConfig ({str(exc).splitlines()[0]})") from None
    if cfg.hidden_act not in CLIP_ACTS:
        raise UserError(f"{cfg_file}: hidden_act is {cfg.hidden_act!r}; expected one of {list(CLIP_ACTS)}")
    if cfg.num_channels != 3:
        raise UserError(f"{cfg_file}: num_channels is {cfg.num_channels}; the artifact takes RGB images (3)")
    mlp_ratio = cfg.intermediate_size / cfg.hidden_size
    if int(cfg.hidden_size * mlp_ratio) != cfg.intermediate_size:
        raise UserError(f"{cfg_file}: intermediate_size {cfg.intermediate_size} is not a whole multiple of hidden_size")
    pool = pool or vision.get(POOL_KEY) or "token"
    if pool not in ("avg", "token"):
        raise UserError(f"{cfg_file}: pool must be 'avg' or 'token', got {pool!r}")
    return make_arch(
        cfg_file,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        width=cfg.hidden_size,
        layers=cfg.num_hidden_layers,
        heads=cfg.num_attention_heads,
        mlp_ratio=mlp_ratio,
        act=cfg.hidden_act,
        class_token=True,
        pool=pool,
        ln_eps=float(cfg.layer_norm_eps),
    )


def _read_hf_weights(path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """(the weights file, its tensors) of an HF model directory: one safetensors file, its shards, or a .bin."""
    for name in WEIGHTS:
        file = path / name
        if not file.is_file():
            continue
        if not name.endswith(".index.json"):
            return file, read_state_dict(file)
        shards = sorted(set(read_json(file).get("weight_map", {}).values()))
        if not shards:
            raise UserError(f"{file}: no 'weight_map' entries")
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors.update(read_state_dict(path / shard))
        return file, tensors
    raise UserError(f"{path}: no weights file (expected one of {', '.join(WEIGHTS)})")


def _hf_backbone(file: Path, tensors: dict[str, torch.Tensor], arch: ArchConfig) -> tuple[dict[str, torch.Tensor], str]:
    """(our backbone's state dict, a note on the projection) from an HF CLIP checkpoint's tensors."""
    proj = tensors.get("visual_projection.weight")
    note = "none in the source"
    if proj is not None:
        note = f"visual_projection.weight {list(proj.shape)} not imported: the backbone ends at the pooled feature"
    prefixed = any(k.startswith(HF_PREFIX) for k in tensors)
    vision = {
        k.removeprefix(HF_PREFIX): v
        for k, v in tensors.items()
        if (k.startswith(HF_PREFIX) or not (prefixed or k.startswith(_NOT_VISION)))
        and not k.endswith("embeddings.position_ids")
    }
    try:
        backbone = hf_to_timm(vision)
    except KeyError as exc:
        raise missing_tensor(file, exc, "HF CLIPVisionModel") from None
    reject_leftovers(file, set(vision) - set(timm_to_hf(backbone)), "not in a CLIP vision tower")
    check_tensors(file, arch, backbone, CONFIG)
    return as_float32(backbone), note


def _hf_size(value: Any, file: Path, key: str) -> int:
    """A square size from `size` / `crop_size`: an int, {"shortest_edge": n} or {"height": n, "width": n}."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("shortest_edge"), int) and key == "size":
            return value["shortest_edge"]
        if isinstance(value.get("height"), int) and value.get("height") == value.get("width"):
            return value["height"]
    raise UserError(f"{file}: {key} {value!r} is not representable (expected shortest_edge or a square height/width)")


def _hf_preprocess(file: Path, arch: ArchConfig) -> tuple[dict[str, Any], str]:
    """(the artifact's preprocessing, where it came from) from a `CLIPImageProcessor` config, if there is one."""
    if not file.is_file():
        return default_preprocess(arch), f"default (no {PROCESSOR}): OpenAI CLIP mean/std, bicubic, image_size"
    cfg = read_json(file)
    if cfg.get("do_resize", True) is False:
        raise UserError(f"{file}: do_resize is false; the artifact always resizes to a fixed size")
    resize = _hf_size(cfg.get("size", {"shortest_edge": arch.image_size}), file, "size")
    crop = _hf_size(cfg.get("crop_size", resize), file, "crop_size") if cfg.get("do_center_crop", True) else resize
    resample = cfg.get("resample", 3)
    if resample not in _PIL_NAMES:
        raise UserError(f"{file}: resample {resample!r} is not a PIL resampling code 0-5")
    mean, std = cfg.get("image_mean", OPENAI_CLIP_MEAN), cfg.get("image_std", OPENAI_CLIP_STD)
    mean, std = ([x] * 3 if isinstance(x, (int, float)) else list(x) for x in (mean, std))
    pre = {"mean": mean, "std": std, "resize": resize, "crop": crop, "interpolation": _PIL_NAMES[resample]}
    return pre, PROCESSOR

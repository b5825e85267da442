"""OpenCLIP: encoder artifact <-> OpenCLIP `VisionTransformer` weights + an `open_clip_config.json`.

Export writes the layout of an OpenCLIP hub/local directory:
    open_clip_config.json        {"model_cfg": {embed_dim, quick_gelu, vision_cfg, text_cfg}, "preprocess_cfg": {...},
                                  "superclass_preprocessing": the artifact's exact preprocessing}
    open_clip_model.safetensors  `model.visual.state_dict()` keys (conv1.weight, transformer.resblocks.N...., no
                                 `visual.` prefix); `proj` is the identity [width, width]: the backbone has no
                                 projection and open_clip 3.3.0 has no proj_type for vision towers
so `load_open_clip_visual(dir)` = `open_clip.create_model("local-dir:DIR", load_weights=False)` + the weights
loaded into `model.visual`. The text tower in `text_cfg` is a 1-layer placeholder (create_model needs one);
its weights are not written. OpenCLIP's eval transform resizes to the crop size, so an artifact whose resize
differs from its crop keeps that only in `superclass_preprocessing`.

Import reads such a directory, a full OpenCLIP checkpoint (`visual.*` keys, text tower ignored) or a bare
`VisionTransformer` state dict, with the model config from the directory, a JSON file or an open_clip model name.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pretrain.data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from pretrain.encoder import CONFIG_FILE, save_encoder
from pretrain.exports.common import (
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
from pretrain.exports.mapping import open_clip_to_timm, timm_to_open_clip
from pretrain.exports.official import PAPER_BATCH_SIZE, is_official_superclass, official_parts, warning_line
from pretrain.models.presets import ArchConfig
from pretrain.runtime.atomic import plain_tensors
from pretrain.runtime.errors import UserError

CONFIG = "open_clip_config.json"
WEIGHTS = "open_clip_model.safetensors"
EXACT_KEY = "superclass_preprocessing"
# weights file names in an OpenCLIP directory, preferred first (as open_clip's own local-dir loader)
DIR_WEIGHTS = (WEIGHTS, "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin", "open_clip_model.bin")
_TEXT_PLACEHOLDER = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}
_INTERPOLATIONS = ("bicubic", "bilinear")  # all open_clip's transforms know
# vision_cfg options the artifact cannot represent: key -> (is it set?, what it is)
_UNSUPPORTED = {
    "timm_model_name": (bool, "a timm tower"),
    "layers": (lambda v: isinstance(v, (list, tuple)), "a ModifiedResNet tower"),
    "attentional_pool": (bool, "an attentional pooler"),
    "ls_init_value": (lambda v: v is not None, "LayerScale"),
    "no_ln_pre": (bool, "no ln_pre"),
    "pos_embed_type": (lambda v: v != "learnable", "a non-learnable position embedding"),
    "pool_type": (lambda v: v not in ("tok", "avg"), "a pool_type other than tok/avg"),
    "block_type": (lambda v: v not in (None, "default"), "custom attention blocks"),
    "act_kwargs": (bool, "activation arguments"),
    "norm_kwargs": (lambda v: bool(set(v or {}) - {"eps"}), "LayerNorm arguments other than eps"),
    **{
        k: (bool, k)
        for k in ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")
    },
}


def open_clip_model_cfg(arch: ArchConfig) -> dict[str, Any]:
    """The OpenCLIP model config of a CLIP-style ViT: projection-free (embed_dim = width), our pooling."""
    vision = {
        "image_size": arch.image_size,
        "layers": arch.layers,
        "width": arch.width,
        "head_width": arch.width // arch.heads,
        "patch_size": arch.patch_size,
        "mlp_ratio": arch.mlp_ratio,
        "pool_type": "avg" if arch.pool == "avg" else "tok",
        "final_ln_after_pool": False,  # ln_post on all tokens, then pool: as our backbone
    }
    if arch.ln_eps != 1e-5:
        vision["norm_kwargs"] = {"eps": arch.ln_eps}
    return {
        "embed_dim": arch.width,
        "quick_gelu": arch.act == "quick_gelu",
        "vision_cfg": vision,
        "text_cfg": dict(_TEXT_PLACEHOLDER),
    }


def export_open_clip(encoder_dir: str | Path, out: str | Path) -> Path:
    """Write the artifact at `encoder_dir` as an OpenCLIP directory `out` (atomically); returns `out`."""
    from safetensors.torch import save_file

    encoder = load_clip_vit(encoder_dir, "open_clip")
    arch, pre = encoder.arch, encoder.config["preprocessing"]
    if pre["interpolation"] not in _INTERPOLATIONS:
        raise UserError(
            f"{Path(encoder_dir) / CONFIG_FILE}: preprocessing.interpolation is '{pre['interpolation']}'; "
            f"open_clip's transforms support {list(_INTERPOLATIONS)}"
        )
    state = timm_to_open_clip(encoder.backbone.state_dict())
    state["proj"] = torch.eye(arch.width)  # exact: x @ I == x
    preprocess_cfg = {
        "size": pre["crop"],
        "mean": pre["mean"],
        "std": pre["std"],
        "interpolation": pre["interpolation"],
        "resize_mode": "shortest",
    }
    config = {"model_cfg": open_clip_model_cfg(arch), "preprocess_cfg": preprocess_cfg, EXACT_KEY: pre}

    def write(tmp: Path) -> None:
        (tmp / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        save_file(plain_tensors(state), str(tmp / WEIGHTS), metadata={"format": "pt"})

    return write_export(out, write, lambda d: (d / CONFIG).is_file())


def load_open_clip_visual(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The OpenCLIP `VisionTransformer` of an `export_open_clip` directory, weights loaded, in eval mode.

    Built by `open_clip.create_model("local-dir:PATH", load_weights=False)`; its eval transform is
    `open_clip.create_model_and_transforms(...)`'s, configured from the same JSON (`.preprocess_cfg` holds it).
    """
    import open_clip

    path = Path(path)
    read_json(path / CONFIG)  # a missing / malformed config is a one-line error, not open_clip's traceback
    state = read_state_dict(path / WEIGHTS)
    try:
        with _quiet_logging():  # create_model warns "initialized randomly": the weights come next
            model = open_clip.create_model(f"local-dir:{path}", load_weights=False)
    except (ValueError, RuntimeError, TypeError, KeyError) as exc:
        raise UserError(f"{path / CONFIG}: open_clip cannot build it ({str(exc).splitlines()[0]})") from None
    visual = model.visual
    try:
        visual.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise UserError(f"{path / WEIGHTS}: does not match the model in {CONFIG} ({detail})") from None
    return visual.to(device).eval()


def import_open_clip(
    path: str | Path,
    out: str | Path,
    config: str | Path | None = None,
    model_name: str | None = None,
    pool: str | None = None,
    idf_batch_size: int | None = None,
) -> Path:
    """Write the vision tower of an OpenCLIP checkpoint as an artifact `out`; returns `out`.

    `path`: an OpenCLIP directory (open_clip_config.json + weights) or a weights file (.safetensors / .bin / .pt);
    a file needs `config` (a model config JSON, bare or as {"model_cfg", "preprocess_cfg"}) or `model_name` (known
    to open_clip, e.g. "ViT-B-16-quickgelu"). `pool`: default the config's pool_type ("tok" -> "token").
    A checkpoint of the official SuperClass code (`pretrain.exports.official`) comes in with its average pooling,
    its head and IDF statistics (`idf_batch_size`: its run's global batch size) and `method: superclass`.
    """
    path = Path(path)
    full, where, weights = _resolve(path, config, model_name)
    model_cfg, tensors = full.get("model_cfg", full), read_state_dict(weights)
    official = is_official_superclass(tensors)
    arch = _open_clip_arch(model_cfg, where, pool or ("avg" if official else None))  # SuperClass pools by average
    backbone, projection = _open_clip_backbone(weights, tensors, arch, where)
    preprocess = full.get(EXACT_KEY) or _open_clip_preprocess(full.get("preprocess_cfg") or {}, arch, where)
    source = {"format": "superclass_official" if official else "open_clip", "path": str(weights.absolute())}
    provenance: dict[str, Any] = {"method": "clip", "source": {**source, "config": str(where)}}
    head_state = None
    if official:
        parts = official_parts(weights, tensors, arch.width, idf_batch_size or PAPER_BATCH_SIZE)
        provenance.update(parts.provenance)
        head_state = parts.head_state
        line = warning_line(weights, parts, idf_batch_size is not None)
        if line:
            print(line, file=sys.stderr)
    provenance["projection"] = projection
    return save_encoder(out, backbone, arch, preprocess, provenance, head_state=head_state)


# ----------------------------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """Silence warnings for the duration (open_clip logs through the root logger)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _resolve(path: Path, config: str | Path | None, model_name: str | None) -> tuple[dict[str, Any], str, Path]:
    """(the full config JSON, where it came from, the weights file) for `import_open_clip`'s arguments."""
    if path.is_dir():
        weights = next((path / n for n in DIR_WEIGHTS if (path / n).is_file()), None)
        if weights is None:
            raise UserError(f"{path}: no OpenCLIP weights file (expected one of {', '.join(DIR_WEIGHTS)})")
        cfg_file = Path(config) if config else path / CONFIG
        return read_json(cfg_file), str(cfg_file), weights
    if not path.is_file():
        raise UserError(f"{path}: does not exist (expected an OpenCLIP directory or weights file)")
    if config:
        return read_json(Path(config)), str(config), path
    if model_name:
        import open_clip

        model_cfg = open_clip.get_model_config(model_name)
        if model_cfg is None:
            raise UserError(
                f"--arch: open_clip knows no model '{model_name}' (see open_clip.list_models()); for a config of "
                f"the official SuperClass code or your own, pass its JSON with --arch-config {model_name}.json"
            )
        return model_cfg, f"open_clip model '{model_name}'", path
    raise UserError(f"{path}: a weights file needs --arch-config MODEL_CONFIG.json or --arch NAME")


def _open_clip_arch(model_cfg: dict[str, Any], where: str, pool: str | None) -> ArchConfig:
    """Our architecture for an OpenCLIP model config's `vision_cfg` (UserError for towers we cannot hold)."""
    vision = model_cfg.get("vision_cfg")
    if not isinstance(vision, dict):
        raise UserError(f"{where}: no 'vision_cfg' mapping (expected an OpenCLIP model config)")
    for key, (is_set, what) in _UNSUPPORTED.items():
        if key in vision and is_set(vision[key]):
            raise UserError(f"{where}: vision_cfg.{key} means {what}; the artifact holds plain CLIP-style ViTs")
    pool_type = vision.get("pool_type", "tok")
    if vision.get("final_ln_after_pool") and pool_type == "avg":
        raise UserError(f"{where}: vision_cfg.final_ln_after_pool with avg pooling; the artifact norms before pooling")
    image_size, patch_size = (_square(vision.get(k, d), where, k) for k, d in (("image_size", 224), ("patch_size", 16)))
    width, head_width = vision.get("width", 768), vision.get("head_width", 64)
    if width % head_width:
        raise UserError(f"{where}: vision_cfg.width {width} is not a multiple of head_width {head_width}")
    pool = pool or ("token" if pool_type == "tok" else "avg")
    if pool not in ("avg", "token"):
        raise UserError(f"{where}: pool must be 'avg' or 'token', got {pool!r}")
    return make_arch(
        where,
        image_size=image_size,
        patch_size=patch_size,
        width=width,
        layers=vision.get("layers", 12),
        heads=width // head_width,
        mlp_ratio=float(vision.get("mlp_ratio", 4.0)),
        act="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
        class_token=True,
        pool=pool,
        ln_eps=float((vision.get("norm_kwargs") or {}).get("eps", 1e-5)),
    )


def _square(value: Any, where: str, key: str) -> int:
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{where}: vision_cfg.{key} {value!r} is not a square size")
    return value


def _open_clip_backbone(
    file: Path, tensors: dict[str, torch.Tensor], arch: ArchConfig, where: str
) -> tuple[dict[str, torch.Tensor], str]:
    """(our backbone's state dict, a note on the projection) from OpenCLIP tensors (`visual.*` or bare)."""
    prefixed = any(k.startswith("visual.") for k in tensors)
    visual = {k.removeprefix("visual."): v for k, v in tensors.items() if k.startswith("visual.") or not prefixed}
    proj = visual.pop("proj", None)
    if proj is None:
        note = "none in the source"
    elif proj.ndim == 2 and proj.shape[0] == proj.shape[1] and torch.equal(proj, torch.eye(len(proj))):
        note = "identity (a projection-free export)"
    else:
        note = f"visual.proj {list(proj.shape)} not imported: the backbone ends at the pooled feature"
    try:
        backbone = open_clip_to_timm(visual)
    except KeyError as exc:
        raise missing_tensor(file, exc, "OpenCLIP VisionTransformer") from None
    reject_leftovers(file, set(visual) - set(timm_to_open_clip(backbone)), "LayerScale, poolers, extra norms")
    check_tensors(file, arch, backbone, where)
    return as_float32(backbone), note


def _open_clip_preprocess(pre_cfg: dict[str, Any], arch: ArchConfig, where: str) -> dict[str, Any]:
    """The artifact preprocessing of OpenCLIP's eval transform: shortest side to image_size, centre crop."""
    mode = pre_cfg.get("resize_mode", "shortest")
    if mode != "shortest":
        raise UserError(f"{where}: preprocess_cfg.resize_mode is '{mode}'; the artifact resizes the shortest side")
    interpolation = pre_cfg.get("interpolation") or "bicubic"
    mean, std = pre_cfg.get("mean") or OPENAI_CLIP_MEAN, pre_cfg.get("std") or OPENAI_CLIP_STD
    return {
        "mean": [float(x) for x in mean],
        "std": [float(x) for x in std],
        "resize": arch.image_size,
        "crop": arch.image_size,
        "interpolation": "bilinear" if interpolation == "bilinear" else "bicubic",  # open_clip: else bicubic
    }

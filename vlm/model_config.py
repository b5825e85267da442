"""What a LLaVA is built from (`VLMModelConfig`) and the one-line checks run before anything is loaded.

`check_config` checks the fields; `check_encoder_config` / `check_tower_arch` check that an encoder artifact is a
CLIP-style ViT an HF `CLIPVisionModel` (the LLaVA tower) holds exactly, from its config.json alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from pretrain.encoder import CONFIG_FILE, read_config
from pretrain.exports.common import CLIP_ACTS
from pretrain.models.presets import ArchConfig
from pretrain.runtime.config import from_dict
from pretrain.runtime.errors import ConfigError, UserError

PROJECTORS = ("mlp2x_gelu",)
SELECT_STRATEGY = {"patch": "default", "cls_patch": "full"}  # LLaVA's mm_vision_select_feature -> HF strategy
DTYPES = {"auto": "auto", "bf16": torch.bfloat16, "fp32": torch.float32}
TINY_LLM = "tiny"  # model.llm=tiny: `vlm train` builds a tiny LLaMA under run.out_dir/lm from its data's text


@dataclass
class VLMModelConfig:
    """What `build_llava` assembles: an encoder artifact, a causal LM and LLaVA-1.5's projector and feature choice."""

    encoder: str = ""  # encoder artifact dir (pretrain's output)
    # HF name or local path of any LLaMA-family causal LM; "tiny" (`vlm train` only): a tiny LLaMA whose tokenizer
    # is trained on the run's data, built under run.out_dir/lm (the CPU recipes llava_tiny_stage1/2)
    llm: str = "lmsys/vicuna-7b-v1.5"
    projector: str = "mlp2x_gelu"  # LLaVA-1.5's projector (the only one supported)
    feature_layer: int = -2  # hidden_states index (LLaVA-1.5: -2, the second-to-last block's output)
    feature_select: Literal["patch", "cls_patch"] = "patch"  # patch = drop the class token (HF "default")
    image_size: int = 0  # 0 = the encoder's native size; else position embeddings are interpolated (e.g. 336)
    image_aspect_ratio: Literal["pad", "crop"] = "pad"  # pad to square with the mean colour (stage 2, eval) or crop
    llm_dtype: Literal["auto", "bf16", "fp32"] = "auto"  # dtype of the whole model ("auto": the LLM checkpoint's)


def check_config(cfg: VLMModelConfig) -> None:
    """One-line ConfigErrors for fields `build_llava` cannot honour (before anything is loaded)."""
    if not cfg.encoder:
        raise ConfigError("vlm model.encoder: empty (expected an encoder artifact directory)")
    check_llm(cfg.llm)
    if cfg.projector not in PROJECTORS:
        raise ConfigError(
            f"vlm model.projector: {cfg.projector!r} is not supported (expected one of {list(PROJECTORS)})"
        )
    if cfg.feature_select not in SELECT_STRATEGY:
        raise ConfigError(f"vlm model.feature_select: {cfg.feature_select!r} (expected one of {list(SELECT_STRATEGY)})")
    if cfg.image_aspect_ratio not in ("pad", "crop"):
        raise ConfigError(f"vlm model.image_aspect_ratio: {cfg.image_aspect_ratio!r} (expected 'pad' or 'crop')")
    if cfg.llm_dtype not in DTYPES:
        raise ConfigError(f"vlm model.llm_dtype: {cfg.llm_dtype!r} (expected one of {list(DTYPES)})")
    if isinstance(cfg.image_size, bool) or not isinstance(cfg.image_size, int) or cfg.image_size < 0:
        raise ConfigError(f"vlm model.image_size: {cfg.image_size!r} (expected 0 or a positive integer)")


def check_llm(llm: str) -> None:
    """An empty `model.llm` is refused: "tiny" says the tiny LLaMA out loud (it once was the silent meaning of "")."""
    if not llm:
        raise ConfigError(
            f"vlm model.llm: empty (pass an HF model name, a local causal-LM directory, or model.llm={TINY_LLM} for a"
            " tiny LLaMA trained on the run's data)"
        )


def check_feature_layer(layer: int, blocks: int) -> None:
    """`feature_layer` must index HF `hidden_states` (blocks + 1 entries: the embeddings, then each block)."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not -(blocks + 1) <= layer <= blocks:
        raise ConfigError(f"vlm model.feature_layer: {layer!r} (expected an index into {blocks + 1} hidden states)")


def check_encoder_config(path: str) -> None:
    """`check_tower_arch` on an artifact's config.json alone (no weights read): what training checks up front."""
    config, cfg_file = read_config(path), Path(path) / CONFIG_FILE  # format "superclass-encoder", not a LLaVA dir
    try:
        arch = from_dict(ArchConfig, config["architecture"], prefix="architecture.")
    except ConfigError as exc:
        raise UserError(f"{cfg_file}: {exc}") from None
    check_tower_arch(arch, cfg_file)


def check_tower_arch(arch: Any, cfg_file: Path) -> None:
    """One-line UserErrors unless `arch` is a CLIP-style ViT (class token, CLIP activation): the LLaVA tower."""
    if arch.family != "vit":
        raise UserError(f"{cfg_file}: architecture.family is '{arch.family}'; the LLaVA tower needs a CLIP-style ViT")
    if not arch.class_token:
        raise UserError(f"{cfg_file}: architecture.class_token is false; the LLaVA (CLIP) tower needs one")
    if arch.act not in CLIP_ACTS:
        raise UserError(f"{cfg_file}: architecture.act is '{arch.act}'; the LLaVA tower needs one of {list(CLIP_ACTS)}")

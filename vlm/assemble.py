"""LLaVA-1.5 on any encoder artifact: assemble a transformers `LlavaForConditionalGeneration` and its processor.

usage: superclass vlm build --encoder RUN/encoder --llm lmsys/vicuna-7b-v1.5 --out RUN/llava

Saved (`vlm.llava_dir.save_llava`), the result is a standard HF LLaVA directory
(`LlavaForConditionalGeneration.from_pretrained(dir)` and `AutoProcessor.from_pretrained(dir)` load it), so LLaVA
training code, vLLM and lmms-eval's `llava_hf` read it:
- vision tower: the artifact as an HF `CLIPVisionModel` (the export mapping of `pretrain.exports`), features from
  `hidden_states[feature_layer]` (LLaVA-1.5: -2) with the class token dropped ("patch" = HF "default");
- projector: LLaVA-1.5's `mlp2x_gelu` = `LlavaMultiModalProjector` (linear_1, exact GELU, linear_2), fresh init;
- LLM: any LLaMA-family causal LM; `<image>` and `<pad>` are added when missing and the embeddings are resized
  to a multiple of 64, as transformers' `convert_llava_weights_to_hf.py` does for llava-hf checkpoints.
- images: `LlavaImageProcessor` with the artifact's preprocessing (`vlm.processor`); its `do_pad` is LLaVA's
  `expand2square` (same centring, fill `int(m * 255)` of the mean), so `image_aspect_ratio` "pad" is stored as
  `do_pad: true` in preprocessor_config.json (and as `image_aspect_ratio` in config.json) and every
  `AutoProcessor` user pads.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pretrain.encoder import CONFIG_FILE, Encoder, load_encoder
from pretrain.exports.common import from_pretrained_complete
from pretrain.exports.hf import hf_vision_config
from pretrain.exports.mapping import timm_to_hf
from pretrain.runtime.errors import ConfigError, UserError
from vlm.model_config import (
    DTYPES,
    SELECT_STRATEGY,
    TINY_LLM,
    VLMModelConfig,
    check_config,
    check_feature_layer,
    check_tower_arch,
)
from vlm.processor import build_processor, num_image_tokens
from vlm.templates import IMAGE_TOKEN

PAD_TOKEN = "<pad>"
VOCAB_MULTIPLE = 64  # llava-hf pads the resized vocabulary to a multiple of 64 (32002 -> 32064)


def build_llava(cfg: VLMModelConfig) -> tuple[Any, Any]:
    """(LlavaForConditionalGeneration, LlavaProcessor): the encoder as tower, the LLM, a fresh mlp2x_gelu projector."""
    check_config(cfg)
    if cfg.llm == TINY_LLM:  # resolved by `vlm train` (vlm.tiny_llama.tiny_llm_for_run) before it gets here
        raise ConfigError(f"vlm model.llm={TINY_LLM}: only `vlm train` builds the tiny LLaMA; pass an HF name or a dir")
    encoder = _load_vit(cfg.encoder)
    tower = _vision_tower(encoder, cfg.image_size or encoder.arch.image_size)
    check_feature_layer(cfg.feature_layer, encoder.arch.layers)
    lm, tokenizer = _language_model(cfg.llm, DTYPES[cfg.llm_dtype])
    model = assemble_llava(tower, lm, tokenizer, cfg.feature_layer, cfg.feature_select, cfg.image_aspect_ratio,
                           dataclasses.asdict(cfg))  # fmt: skip
    return model, build_processor(encoder, tokenizer, model.config, cfg.image_aspect_ratio)


def assemble_llava(
    tower: nn.Module, lm: nn.Module, tokenizer: Any, feature_layer: int, feature_select: str, aspect_ratio: str,
    provenance: dict[str, Any],
) -> Any:  # fmt: skip
    """A `LlavaForConditionalGeneration` around `tower` (an HF CLIPVisionModel) and `lm` (a causal LM whose
    tokenizer holds `<image>`), with a fresh mlp2x_gelu projector (nn.Linear's init, as LLaVA's)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    config = LlavaConfig(
        vision_config=tower.config,
        text_config=lm.config,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        projector_hidden_act="gelu",  # exact GELU, as LLaVA's nn.GELU()
        vision_feature_select_strategy=SELECT_STRATEGY[feature_select],
        vision_feature_layer=feature_layer,
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(getattr(lm.config, "tie_word_embeddings", False)),
        image_aspect_ratio=aspect_ratio,
        superclass_vlm=provenance,
    )
    config.image_seq_length = num_image_tokens(config)
    with torch.device("meta"):  # every part is replaced below: no init work on a 7B skeleton
        model = LlavaForConditionalGeneration(config)
    model.model.vision_tower = tower
    model.model.language_model = lm.get_decoder()
    model.lm_head = lm.get_output_embeddings()
    model.model.multi_modal_projector = LlavaMultiModalProjector(config)
    model.generation_config = lm.generation_config
    model = model.to(lm.dtype)
    model.config.dtype = lm.dtype
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise RuntimeError(f"LLaVA assembly left tensors on the meta device: {leftover[:3]}")
    return model


def describe(model: Any) -> str:
    """One line about a built model: tower, image tokens, LLM size (what `vlm build` prints)."""
    config = model.config
    vision = config.vision_config
    params = sum(p.numel() for p in model.parameters())
    tokens = num_image_tokens(config)
    side = math.isqrt(tokens - int(config.vision_feature_select_strategy == "full"))
    return (
        f"LLaVA: {vision.num_hidden_layers}-block ViT/{vision.patch_size} at {vision.image_size}px "
        f"({tokens} image tokens, {side}x{side} grid), layer {config.vision_feature_layer}, "
        f"{params / 1e6:.1f}M parameters, {str(model.dtype).removeprefix('torch.')}"
    )


def _load_vit(path: str) -> Encoder:
    """The artifact at `path`, checked to be a CLIP-style ViT an HF `CLIPVisionModel` holds exactly."""
    encoder = load_encoder(path)
    check_tower_arch(encoder.arch, Path(path) / CONFIG_FILE)
    return encoder


def _vision_tower(encoder: Encoder, image_size: int) -> nn.Module:
    """The artifact as an HF `CLIPVisionModel` at `image_size` (position embeddings resampled bicubic offline)."""
    from timm.layers import resample_abs_pos_embed
    from transformers import CLIPVisionModel

    arch, state = encoder.arch, dict(encoder.backbone.state_dict())
    if image_size % arch.patch_size:
        raise ConfigError(f"vlm model.image_size: {image_size} is not a multiple of the patch size {arch.patch_size}")
    if image_size != arch.image_size:  # LlavaModel never passes interpolate_pos_encoding: resize the table itself
        old, new = arch.image_size // arch.patch_size, image_size // arch.patch_size
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"].float(), new_size=[new, new], old_size=[old, old], num_prefix_tokens=1
        ).to(state["pos_embed"].dtype)
        arch = dataclasses.replace(arch, image_size=image_size)
    tower = CLIPVisionModel(hf_vision_config(arch))
    tower.load_state_dict(timm_to_hf(state), strict=True)
    return tower


def _language_model(name: str, dtype: Any) -> tuple[nn.Module, Any]:
    """(causal LM, tokenizer) with `<image>` and a pad token registered and the embeddings grown to match."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if looks_like_path(name) and not Path(name).expanduser().exists():
        raise UserError(f"vlm model.llm {name!r}: the path does not exist (expected a causal-LM directory)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        lm = from_pretrained_complete(AutoModelForCausalLM, name, "causal LM", dtype=dtype, trust_remote_code=False)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"vlm model.llm {name!r}: cannot load a causal LM and tokenizer ({first})") from None
    if lm.get_decoder() is None or lm.get_output_embeddings() is None:
        raise UserError(f"vlm model.llm {name!r}: {type(lm).__name__} has no decoder/lm_head pair (LLaMA-family)")
    add_llava_tokens(tokenizer, lm)
    return lm, tokenizer


def add_llava_tokens(tokenizer: Any, lm: nn.Module) -> None:
    """Register `<image>` and a pad token (`<pad>`) and grow the embeddings to a multiple of 64, as llava-hf does."""
    from tokenizers import AddedToken

    tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    if tokenizer.pad_token is None:  # Vicuna has none; llava-hf adds "<pad>" after "<image>"
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.padding_side = "right"  # training; batched generation sets "left" itself
    rows = lm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:  # new rows ~ N(mean, cov) of the old ones (transformers' mean_resizing)
        lm.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=VOCAB_MULTIPLE, mean_resizing=True)
    lm.config.pad_token_id = tokenizer.pad_token_id
    if getattr(lm, "generation_config", None) is not None:
        lm.generation_config.pad_token_id = tokenizer.pad_token_id


def looks_like_path(name: str) -> bool:
    """A local path rather than a hub id (`org/name`): absolute, relative with ./ ../ ~, or more than one `/`."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1

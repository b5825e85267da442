"""LLaVA-1.5 with any encoder artifact: assemble, save and load a transformers `LlavaForConditionalGeneration`.

usage: superclass vlm build --encoder RUN/encoder --llm lmsys/vicuna-7b-v1.5 --out RUN/llava

The result is a standard HF LLaVA directory (`LlavaForConditionalGeneration.from_pretrained(dir)` and
`AutoProcessor.from_pretrained(dir)` load it), so LLaVA training code, vLLM and lmms-eval's `llava_hf` read it:
- vision tower: the artifact as an HF `CLIPVisionModel` (the export mapping of `pretrain.exports`), features from
  `hidden_states[feature_layer]` (LLaVA-1.5: -2) with the class token dropped ("patch" = HF "default");
- projector: LLaVA-1.5's `mlp2x_gelu` = `LlavaMultiModalProjector` (linear_1, exact GELU, linear_2), fresh init;
- LLM: any LLaMA-family causal LM; `<image>` and `<pad>` are added when missing and the embeddings are resized
  to a multiple of 64, as transformers' `convert_llava_weights_to_hf.py` does for llava-hf checkpoints.
- images: `LlavaImageProcessor` with the artifact's preprocessing; its `do_pad` is LLaVA's `expand2square` (same
  centring, fill `int(m * 255)` of the mean), so `image_aspect_ratio` "pad" is stored as `do_pad: true` in
  preprocessor_config.json (and as `image_aspect_ratio` in config.json) and every `AutoProcessor` user pads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn as nn
from PIL import Image

from pretrain.encoder import CONFIG_FILE, Encoder, load_encoder
from pretrain.exports.common import CLIP_ACTS, from_pretrained_complete, write_export
from pretrain.exports.hf import hf_image_processor, hf_vision_config
from pretrain.exports.mapping import timm_to_hf
from pretrain.runtime.errors import ConfigError, UserError
from vlm.llava_hf import IMAGE_PROCESSORS, save_llava_hf
from vlm.templates import IMAGE_TOKEN, VICUNA_CHAT_TEMPLATE

PROJECTORS = ("mlp2x_gelu",)
LAYOUTS = ("hf", "llava-hf")
PAD_TOKEN = "<pad>"
SENTENCEPIECE_FILE = "tokenizer.model"
VOCAB_MULTIPLE = 64  # llava-hf pads the resized vocabulary to a multiple of 64 (32002 -> 32064)
SELECT_STRATEGY = {"patch": "default", "cls_patch": "full"}  # LLaVA's mm_vision_select_feature -> HF strategy
_DTYPES = {"auto": "auto", "bf16": torch.bfloat16, "fp32": torch.float32}
# the CLIP image-processor fields a LlavaImageProcessor shares (resize, crop, rescale, normalise)
CLIP_IMAGE_KEYS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor")
CLIP_IMAGE_KEYS += ("do_normalize", "image_mean", "image_std", "do_convert_rgb")


@dataclass
class VLMModelConfig:
    """What `build_llava` assembles: an encoder artifact, a causal LM and LLaVA-1.5's projector and feature choice."""

    encoder: str = ""  # encoder artifact dir (pretrain's output)
    llm: str = "lmsys/vicuna-7b-v1.5"  # HF name or local path of any LLaMA-family causal LM
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
    if not cfg.llm:
        raise ConfigError("vlm model.llm: empty (expected an HF model name or a local causal-LM directory)")
    if cfg.projector not in PROJECTORS:
        raise ConfigError(
            f"vlm model.projector: {cfg.projector!r} is not supported (expected one of {list(PROJECTORS)})"
        )
    if cfg.feature_select not in SELECT_STRATEGY:
        raise ConfigError(f"vlm model.feature_select: {cfg.feature_select!r} (expected one of {list(SELECT_STRATEGY)})")
    if cfg.image_aspect_ratio not in ("pad", "crop"):
        raise ConfigError(f"vlm model.image_aspect_ratio: {cfg.image_aspect_ratio!r} (expected 'pad' or 'crop')")
    if cfg.llm_dtype not in _DTYPES:
        raise ConfigError(f"vlm model.llm_dtype: {cfg.llm_dtype!r} (expected one of {list(_DTYPES)})")
    if isinstance(cfg.image_size, bool) or not isinstance(cfg.image_size, int) or cfg.image_size < 0:
        raise ConfigError(f"vlm model.image_size: {cfg.image_size!r} (expected 0 or a positive integer)")


def build_llava(cfg: VLMModelConfig) -> tuple[Any, Any]:
    """(LlavaForConditionalGeneration, LlavaProcessor): the encoder as tower, the LLM, a fresh mlp2x_gelu projector."""
    check_config(cfg)
    encoder = _load_vit(cfg.encoder)
    tower = _vision_tower(encoder, cfg.image_size or encoder.arch.image_size)
    _check_layer(cfg.feature_layer, encoder.arch.layers)
    lm, tokenizer = _language_model(cfg.llm, _DTYPES[cfg.llm_dtype])
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


def build_processor(encoder: Encoder, tokenizer: Any, config: Any, aspect_ratio: str) -> Any:
    """A `LlavaProcessor` whose image processor does the artifact's preprocessing at the tower's size (+ padding)."""
    pre = dict(encoder.config["preprocessing"])
    size = config.vision_config.image_size
    if size != pre["crop"]:  # another resolution: keep the artifact's resize/crop ratio
        pre["resize"], pre["crop"] = round(pre["resize"] * size / pre["crop"]), size
    return llava_processor(hf_image_processor(pre), tokenizer, config, aspect_ratio)


def llava_processor(clip: Any, tokenizer: Any, config: Any, aspect_ratio: str) -> Any:
    """A `LlavaProcessor`: `clip`'s (a `CLIPImageProcessor`) preprocessing, padded to square for "pad"; the
    vicuna_v1 chat template, so `apply_chat_template` renders the prompt we train and evaluate with."""
    from transformers import LlavaImageProcessor, LlavaProcessor

    images = LlavaImageProcessor(**{k: getattr(clip, k) for k in CLIP_IMAGE_KEYS}, do_pad=aspect_ratio == "pad")
    tokenizer.chat_template = VICUNA_CHAT_TEMPLATE
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # the tower's class token (HF "default" drops it again)
        chat_template=VICUNA_CHAT_TEMPLATE,
    )


def num_image_tokens(config: Any) -> int:
    """Positions one image takes in the LLM: (image_size / patch)^2, plus the class token for "full"."""
    vision = config.vision_config
    grid = vision.image_size // vision.patch_size
    return grid * grid + int(config.vision_feature_select_strategy == "full")


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


def process_images(processor: Any, images: list[Image.Image], pad: bool) -> torch.Tensor:
    """Pixel values [N, 3, H, W]: pad-to-square with the mean colour (LLaVA's expand2square) or a centre crop."""
    batch = processor.image_processor([im.convert("RGB") for im in images], do_pad=pad, return_tensors="pt")
    return batch["pixel_values"]


def save_llava(
    model: Any,
    processor: Any,
    out: str | Path,
    layout: Literal["hf", "llava-hf"] = "hf",
    state_dict: dict[str, torch.Tensor] | None = None,
    image_processor: str = "llava",
) -> Path:
    """Write model + processor as an HF LLaVA directory `out`, atomically; returns `out`.

    `layout` "hf": what transformers 5.x's `save_pretrained` writes (its own legacy renaming, but the CLIP tower
    without `vision_model.`); "llava-hf": the llava-hf hub layout transformers 4.x tools read (`vlm.llava_hf`;
    `image_processor` "llava" pads as LLaVA and needs transformers >= 4.49, "clip" loads in every 4.x but
    centre-crops); 5.x loads both. `state_dict`: tensors under the model's own (5.x) names to save instead of
    `model.state_dict()` (e.g. gathered from FSDP2 shards).
    """
    if layout not in LAYOUTS:
        raise UserError(f"layout {layout!r}: expected one of {list(LAYOUTS)}")
    if image_processor not in IMAGE_PROCESSORS:
        raise UserError(f"image processor {image_processor!r}: expected one of {list(IMAGE_PROCESSORS)}")

    def write(tmp: Path) -> None:
        if processor.chat_template is None:  # e.g. a directory written before the template was added
            processor.chat_template = processor.tokenizer.chat_template = VICUNA_CHAT_TEMPLATE
        if layout == "hf":
            model.save_pretrained(tmp, state_dict=state_dict)
            processor.save_pretrained(tmp)
        else:
            state = state_dict if state_dict is not None else model.state_dict()
            save_llava_hf(model, processor, state, tmp, image_processor)
        keep_tokenizer_files(processor.tokenizer, tmp)

    return write_export(out, write, _is_llava_dir)


def load_llava(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[Any, Any]:
    """(model in eval mode on `device`, processor) from an HF LLaVA directory; `dtype` None keeps the saved one."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = Path(path)
    if not _is_llava_dir(path):
        raise UserError(f"{path / 'config.json'}: missing or not a LLaVA config (expected model_type 'llava')")
    model = from_pretrained_complete(LlavaForConditionalGeneration, path, "LLaVA model", dtype=dtype or "auto")
    return model.to(device).eval(), AutoProcessor.from_pretrained(path)


# ----------------------------------------------------------------------------------------------- helpers


def _load_vit(path: str) -> Encoder:
    """The artifact at `path`, checked to be a CLIP-style ViT an HF `CLIPVisionModel` holds exactly."""
    encoder = load_encoder(path)
    check_tower_arch(encoder.arch, Path(path) / CONFIG_FILE)
    return encoder


def check_encoder_config(path: str) -> None:
    """`check_tower_arch` on an artifact's config.json alone (no weights read): what training checks up front."""
    from pretrain.encoder import read_config
    from pretrain.models.presets import ArchConfig
    from pretrain.runtime.config import from_dict

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


def _check_layer(layer: int, blocks: int) -> None:
    """`feature_layer` must index HF `hidden_states` (blocks + 1 entries: the embeddings, then each block)."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not -(blocks + 1) <= layer <= blocks:
        raise ConfigError(f"vlm model.feature_layer: {layer!r} (expected an index into {blocks + 1} hidden states)")


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


def keep_tokenizer_files(tokenizer: Any, out: Path) -> None:
    """What transformers 5 leaves out of a saved LLaMA tokenizer: `tokenizer.model` (the LLaVA codebase reads it
    with `use_fast=False`; so does the original-layout export) and the `legacy` flag, without which a reload of a
    legacy tokenizer drops the `▁` it puts after `</s>` and so tokenizes multi-turn text differently."""
    source = getattr(tokenizer, "vocab_file", None)
    if isinstance(source, str) and Path(source).is_file() and not (out / SENTENCEPIECE_FILE).exists():
        shutil.copyfile(source, out / SENTENCEPIECE_FILE)
    legacy, cfg_file = tokenizer_legacy(tokenizer), out / "tokenizer_config.json"
    if isinstance(legacy, bool) and cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        cfg["legacy"] = legacy
        cfg_file.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def tokenizer_legacy(tokenizer: Any) -> bool | None:
    """A LLaMA tokenizer's `legacy` flag (the attribute, or the config it was loaded from); None if it has none."""
    legacy = getattr(tokenizer, "legacy", None)
    if not isinstance(legacy, bool):
        legacy = (getattr(tokenizer, "init_kwargs", None) or {}).get("legacy")
    return legacy if isinstance(legacy, bool) else None


def _is_llava_dir(path: Path) -> bool:
    """Whether `path` holds an HF LLaVA config.json (what load and a guarded overwrite accept)."""
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type") == "llava"
    except (OSError, ValueError, AttributeError):
        return False

"""The `LlavaProcessor` of a built LLaVA: the encoder artifact's preprocessing (padded to square for "pad") and the
vicuna_v1 chat template; and what one image costs in the LLM (`num_image_tokens`)."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from pretrain.encoder import Encoder
from pretrain.exports.hf import hf_image_processor
from vlm.templates import IMAGE_TOKEN, VICUNA_CHAT_TEMPLATE

# the CLIP image-processor fields a LlavaImageProcessor shares (resize, crop, rescale, normalise)
CLIP_IMAGE_KEYS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor")
CLIP_IMAGE_KEYS += ("do_normalize", "image_mean", "image_std", "do_convert_rgb")


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


def process_images(processor: Any, images: list[Image.Image], pad: bool) -> torch.Tensor:
    """Pixel values [N, 3, H, W]: pad-to-square with the mean colour (LLaVA's expand2square) or a centre crop."""
    batch = processor.image_processor([im.convert("RGB") for im in images], do_pad=pad, return_tensors="pt")
    return batch["pixel_values"]

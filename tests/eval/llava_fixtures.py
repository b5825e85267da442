"""A tiny HF LLaVA directory built from configs (no network) and synthetic VQA requests for the generation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from eval.vlm.generation import Request
from vlm.templates import VICUNA_SYSTEM, generation_prompt
from vlm.tiny_llama import build_tiny_tokenizer

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
QUESTIONS = [
    "What colour is the circle?",
    "How many shapes are there?",
    "Is the square on the left or on the right of the red triangle?",
    "What is it?",
    "Which shape is the largest one in this picture, and what colour is it?",
    "Count the blue squares.",
    "Is there a green triangle?",
    "Describe the image in one word.",
    "What shape is at the top?",
    "Where is the small yellow circle placed relative to the big square?",
]


def build_tiny_llava(out_dir: str | Path, seed: int = 0, weight_scale: float = 4.0) -> Path:
    """Save a random LLaVA (CLIP 32 px / patch 8 tower, 2-layer Llama) and its processor to `out_dir`."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texts = [VICUNA_SYSTEM, *QUESTIONS, "red green blue yellow circle square triangle left right yes no one two"]
    tokenizer = build_tiny_tokenizer(texts * 4, vocab=400)
    vision = CLIPVisionConfig(
        image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, hidden_act="gelu", layer_norm_eps=1e-5,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2, vision_feature_select_strategy="default", image_seq_length=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # peaked logits: answers differ across prompts and greedy has no near-ties
        model.lm_head.weight.mul_(weight_scale)
        model.model.multi_modal_projector.linear_2.weight.mul_(weight_scale)
        model.lm_head.weight[tokenizer.eos_token_id].mul_(2.0)  # some answers stop early at EOS, others run to the cap
    model.save_pretrained(out)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=CLIP_MEAN, image_std=CLIP_STD,
        do_convert_rgb=True,
    )  # fmt: skip
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )  # fmt: skip
    processor.save_pretrained(out)
    return out


def synthetic_image(index: int, size: int = 40) -> Image.Image:
    """A noisy image whose mean colour depends on `index`, so different images give different answers."""
    rng = np.random.default_rng(index)
    base = rng.integers(0, 255, size=3).astype(np.float32)
    pixels = base + rng.normal(0, 40, size=(size, size + index % 7, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def synthetic_requests(n: int, text_only: tuple[int, ...] = (), max_new_tokens: int | None = None) -> list[Request]:
    """`n` vicuna_v1 requests with varied question lengths; indices in `text_only` carry no image."""
    requests = []
    for i in range(n):
        question = QUESTIONS[i % len(QUESTIONS)] + " Please answer." * (i // len(QUESTIONS))
        if i in text_only:
            requests.append(Request(i, generation_prompt(question, image=False), None, max_new_tokens))
        else:
            requests.append(Request(i, generation_prompt(question), lambda i=i: synthetic_image(i), max_new_tokens))
    return requests

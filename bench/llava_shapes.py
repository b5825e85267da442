"""LLaVA shapes shared by the VLM benchmarks, and a model with random weights built from them (nothing downloaded).

Towers are CLIP-style (`b16`: 224 px, 196 image tokens; `l14`: LLaVA-1.5's CLIP-L/14-336, 576 image tokens);
`vicuna7b` is Vicuna-7B v1.5's body (LLaMA-2-7B: 4096 wide, 32 layers, vocab 32,064 with the image token).
"""

from __future__ import annotations

import torch

TOWERS = {
    "tiny": {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "image_size": 32, "patch_size": 8},
    "b16": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
            "image_size": 224, "patch_size": 16},
    "l14": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
            "image_size": 336, "patch_size": 14},
}  # fmt: skip
LLMS = {
    "tiny": {"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4,
             "vocab_size": 512},
    "vicuna7b": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                 "vocab_size": 32064},
}  # fmt: skip


def image_tokens(tower: str) -> int:
    """Patch tokens one image becomes (the class token is dropped, as in LLaVA-1.5)."""
    return (TOWERS[tower]["image_size"] // TOWERS[tower]["patch_size"]) ** 2


def random_llava(
    llm: str,
    tower: str,
    device: torch.device,
    dtype: torch.dtype,
    image_token_id: int,
    vocab_size: int = 0,
    **token_ids: int,
) -> torch.nn.Module:
    """A `LlavaForConditionalGeneration` of the named shapes, built on `device` in `dtype`, seeded.

    `vocab_size` raises the LLM's vocabulary to fit a tokenizer; `token_ids` (bos/eos/pad_token_id) go to the LLM.
    """
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(hidden_act="quick_gelu", **TOWERS[tower])
    text_shape = {**LLMS[llm], "vocab_size": max(vocab_size, LLMS[llm]["vocab_size"])}
    text = LlamaConfig(max_position_embeddings=4096, **text_shape, **token_ids)
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_id=image_token_id, image_seq_length=image_tokens(tower)
    )
    torch.manual_seed(0)
    with torch.device(device):
        return LlavaForConditionalGeneration._from_config(config, dtype=dtype)

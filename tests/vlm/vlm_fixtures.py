"""Helpers for the vlm tests: tiny LLaMA directories (with and without `<image>`/`<pad>`), test images, and a
training test's inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from eval_fixtures import tiny_encoder
from PIL import Image

from vlm.synthetic_llava import write_synthetic_llava
from vlm.templates import VICUNA_SYSTEM
from vlm.tiny_llama import build_tiny_llama, sentencepiece_tokenizer

TEXTS = [
    VICUNA_SYSTEM,
    "USER: <image>\nWhat colour is the circle? ASSISTANT: red</s>",
    "USER: How many squares are there? ASSISTANT: 2</s>",
    "a blue square on the left and a green triangle on the right",
] * 10


def tiny_llm(path: Path) -> Path:
    """`vlm.tiny_llama.build_tiny_llama` (width 64, 2 layers), its tokenizer already holding `<image>` and `<pad>`."""
    return build_tiny_llama(TEXTS, path, width=64, layers=2, heads=4, vocab=300)


def llava_parts(root: Path, rows: int) -> dict[str, Path]:
    """A tiny encoder, a tiny LLaMA and `rows` synthetic stage-2 LLaVA rows (32 px) under `root`: training inputs."""
    encoder, llm = tiny_encoder(root / "enc"), tiny_llm(root / "lm")
    data = write_synthetic_llava(root / "data", rows, seed=0, image_size=32, stage=2)
    return {"root": root, "encoder": encoder, "llm": llm, "data": data}


def tiny_vicuna_like(path: Path) -> Path:
    """A tiny LLaMA whose tokenizer, like Vicuna's, has only `<unk>`, `<s>`, `</s>`: no `<image>`, no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=290, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TEXTS, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.save_pretrained(path)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


def stripes(width: int, height: int, colours: list[tuple[int, int, int]]) -> Image.Image:
    """An image of equal vertical stripes, one per colour, left to right."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    step = width // len(colours)
    for i, colour in enumerate(colours):
        pixels[:, i * step : (i + 1) * step] = colour
    return Image.fromarray(pixels)


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A random RGB image."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def sentencepiece_llama_tokenizer(path: Path, legacy: bool, vocab: int = 600) -> Path:
    """A LLaMA-style SentencePiece tokenizer folder (`vlm.tiny_llama.sentencepiece_tokenizer`), as Vicuna ships."""
    return sentencepiece_tokenizer(path, legacy, vocab)


def sentencepiece_llama(path: Path, legacy: bool) -> Path:
    """A tiny LLaMA (width 32) whose tokenizer folder is `sentencepiece_llama_tokenizer`'s: no tokenizer.json."""
    from transformers import LlamaConfig, LlamaForCausalLM

    sentencepiece_llama_tokenizer(path, legacy)
    import sentencepiece as spm

    size = spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model")).get_piece_size()
    cfg = LlamaConfig(
        vocab_size=size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path

"""A tiny LLaMA-shaped causal LM and a Vicuna-like BPE tokenizer trained on given texts, saved as an HF directory.

For the demo and the tests: `AutoModelForCausalLM` / `AutoTokenizer` load it as they load Vicuna (BOS `<s>` added
to every input, EOS `</s>`, `<unk>`, and `<image>` / `<pad>` already registered as special tokens).
"""

from __future__ import annotations

from pathlib import Path

import torch

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]


def build_tiny_tokenizer(texts: list[str], vocab: int = 500) -> object:
    """A byte-level BPE (Metaspace-free, offsets exact) with Vicuna's special tokens and a BOS post-processor."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, min_frequency=1, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    add_bos = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), add_bos])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=["<image>"], padding_side="right",
    )  # fmt: skip


def build_tiny_llama(
    texts: list[str], out_dir: str | Path, width: int = 64, layers: int = 2, heads: int = 4, vocab: int = 500,
    max_positions: int = 512, seed: int = 0,
) -> Path:  # fmt: skip
    """Train the tokenizer on `texts`, build a random `LlamaForCausalLM` of `width`, save both to `out_dir`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(texts, vocab)
    tokenizer.save_pretrained(out)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=width * 8 // 3 // 8 * 8 or 8,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out

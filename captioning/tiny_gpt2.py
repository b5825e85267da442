"""A tiny GPT-2-shaped LM and byte-level BPE tokenizer trained on a caption list, saved as an HF directory.

Used by `clipcap_tiny` (the CPU demo) and the tests: `AutoModelForCausalLM` / `AutoTokenizer` load it like GPT-2.
"""

from __future__ import annotations

from pathlib import Path

import torch

EOS = "<|endoftext|>"


def build_tiny_lm(
    captions: list[str], out_dir: str | Path, width: int = 64, layers: int = 2, heads: int = 2, vocab: int = 400,
    seed: int = 0,
) -> Path:  # fmt: skip
    """Train a byte-level BPE tokenizer on `captions`, build a random GPT-2 of `width`, save both to `out_dir`."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(captions, vocab_size=vocab, min_frequency=1, special_tokens=[EOS], show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, bos_token=EOS, unk_token=EOS)
    tokenizer.save_pretrained(out)
    eos = tokenizer.convert_tokens_to_ids(EOS)
    cfg = GPT2Config(
        vocab_size=len(tokenizer), n_positions=128, n_embd=width, n_layer=layers, n_head=heads,
        bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    torch.manual_seed(seed)
    GPT2LMHeadModel(cfg).save_pretrained(out)
    return out

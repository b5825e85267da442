"""A tiny LLaMA-shaped causal LM and a Vicuna-like BPE tokenizer trained on given texts, saved as an HF directory.

For the demo and the tests: `AutoModelForCausalLM` / `AutoTokenizer` load it as they load Vicuna (BOS `<s>` added
to every input, EOS `</s>`, `<unk>`, and `<image>` / `<pad>` already registered as special tokens).
`tiny_llm_texts` is what its tokenizer learns from LLaVA JSON files (the demo's, and `model.llm=tiny` in `vlm train`,
which `tiny_llm_for_run` builds once under the run directory).
`sentencepiece_tokenizer` writes the other kind, the one Vicuna ships (a SentencePiece `tokenizer.model`, no
tokenizer.json), for the checks against the LLaVA codebase, which loads it with `use_fast=False`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pretrain.runtime.distributed import barrier
from vlm.data import read_llava_json
from vlm.synthetic_llava import TEXT_QUESTIONS
from vlm.templates import VICUNA_SYSTEM

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
    max_positions: int = 512, seed: int = 0, init_std: float = 0.0,
) -> Path:  # fmt: skip
    """Train the tokenizer on `texts`, build a random `LlamaForCausalLM` of `width`, save both to `out_dir`.

    `init_std` 0 draws the weights with std width**-0.5 (fan-in). HF's default 0.02 suits widths in the thousands;
    at width 64 it left the demo's LLaMA on a plateau for ~800 steps before it learned any comparison (measured).
    """
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
        initializer_range=init_std or width**-0.5,
    )  # fmt: skip
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def tiny_llm_texts(*json_paths: Path) -> list[str]:
    """What a tiny LM's tokenizer is trained on: every turn of the given LLaVA JSONs plus the template's words."""
    rows = [r for path in json_paths for r in read_llava_json(path) if isinstance(r, dict)]
    turns = [t for r in rows for t in r.get("conversations", []) if isinstance(t, dict)]
    texts = [t["value"] for t in turns if isinstance(t.get("value"), str)]
    return texts + [f"{q} {a}" for q, a in TEXT_QUESTIONS] + [f"{VICUNA_SYSTEM} USER: ASSISTANT: </s>"] * 20


def tiny_llm_for_run(run_dir: str | Path, json_path: Path, seed: int, is_main: bool) -> str:
    """`model.llm=tiny`: a tiny LLaMA whose tokenizer is trained on the data's text, built once in `run_dir/lm`."""
    lm_dir = Path(run_dir) / "lm"
    if is_main and not (lm_dir / "config.json").is_file():
        build_tiny_llama(tiny_llm_texts(json_path), lm_dir, seed=seed)
    barrier()
    return str(lm_dir)


# What `sentencepiece_tokenizer` trains on. Its texts never put `USER` after a space, so `USER` is one piece and
# `▁USER` two, as in LLaMA's vocabulary: the shape LLaVA's length fix-up for `legacy: false` tokenizers assumes.
SENTENCEPIECE_TEXTS = [
    VICUNA_SYSTEM.replace("user", "person"), "ASSISTANT: red</s>USER: What colour is the circle? ASSISTANT: blue",
    "a blue square on the left and a green triangle on the right", "How many squares? 2 3 4 12",
    "Answer the question using a single word or phrase.", "Answer with the option's letter directly.",
] * 8  # fmt: skip


def sentencepiece_tokenizer(path: Path, legacy: bool, vocab: int = 600, user_symbols: tuple[str, ...] = ()) -> Path:
    """A LLaMA-style SentencePiece tokenizer folder (`tokenizer.model` + config, no tokenizer.json), as Vicuna ships.

    Trained here with LLaMA's settings: BPE, byte fallback, split digits, a dummy prefix, identity normalisation,
    ids 0/1/2 = `<unk>`/`<s>`/`</s>`; `user_symbols` (e.g. `<image>`, `<pad>`) take the next ids inside the
    vocabulary, so a model built on it needs no extra embedding rows.
    """
    import io
    import json

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCEPIECE_TEXTS), model_writer=model, vocab_size=vocab, model_type="bpe",
        byte_fallback=True, split_digits=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0,
        hard_vocab_limit=False, minloglevel=2, user_defined_symbols=list(user_symbols),
    )  # fmt: skip
    path.mkdir(parents=True, exist_ok=True)
    (path / "tokenizer.model").write_bytes(model.getvalue())
    config = {
        "tokenizer_class": "LlamaTokenizer", "legacy": legacy, "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None, "model_max_length": 2048,
        "padding_side": "right", "clean_up_tokenization_spaces": False,
    }  # fmt: skip
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return path

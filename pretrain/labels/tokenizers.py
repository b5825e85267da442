"""Caption tokenizers that turn captions into SuperClass label ids: CLIP BPE (default), any HF tokenizer, words.

Every tokenizer returns `(ids [N, L], lengths [N])`: ids padded with `pad_id` to `context_length`, and the number
of real positions per row (specials included). Padding is told apart from real tokens by `lengths`, never by id:
CLIP BPE pads with 0, which is also the real token "!". Tokenizers are picklable and cheap to pickle (heavy
backends are rebuilt lazily in each DataLoader worker).

Usage: `tok = build_tokenizer(LabelConfig()); ids, lengths = tok(["a photo of a dog"])`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import ConfigError

PAD_WORD = "<pad>"
SYNTHETIC_VOCAB = "synthetic"  # labels.tokenizer_path for tokenizer "word": the synthetic captions' own words
_BPE_CACHE_LIMIT = 500_000  # distinct words cached per worker before the BPE cache is reset
UNK_WORD = "<unk>"

# A word: a run of letters/digits, with inner apostrophes kept ("dog's", "don't"). Used for the word-level
# vocabulary (CatLIP-style, on lowercased text) and for stopword removal before subword tokenisation.
_WORD_RE = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


@dataclass
class LabelConfig:
    """How captions become label ids."""

    # which tokenizer: OpenCLIP's CLIP BPE (the paper), a Hugging Face tokenizer, or a word-level vocabulary
    tokenizer: Literal["clip_bpe", "hf", "word"] = "clip_bpe"
    # hf: a local directory or hub name (AutoTokenizer, never remote code); word: a vocabulary file, or "synthetic"
    # (the words of the synthetic captions: a small head for the tiny recipes); clip_bpe: unused
    tokenizer_path: str = ""
    # token positions per caption, specials included (CLIP: 77); longer captions are truncated
    context_length: int = 77
    # masked: drop padding and special tokens from the labels; official: keep every position like the official code
    mode: Literal["masked", "official"] = "masked"
    # remove English stopwords (pretrain/labels/stopwords.txt) before tokenising; the paper keeps them
    stopwords: bool = False
    # word tokenizer vocabulary building: keep words seen at least this many times
    word_min_count: int = 1
    # word tokenizer vocabulary building: keep at most this many words (most frequent first; CatLIP-like ~40k)
    word_top_k: int = 40000


@runtime_checkable
class CaptionTokenizer(Protocol):
    """What the label pipeline needs from a tokenizer."""

    name: str
    vocab_size: int
    pad_id: int
    special_ids: tuple[int, ...]
    context_length: int

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]: ...


@lru_cache(maxsize=1)
def stopword_set() -> frozenset[str]:
    """The shipped English stopword list (lowercase)."""
    text = resources.files("pretrain.labels").joinpath("stopwords.txt").read_text(encoding="utf-8")
    return frozenset(w.strip() for w in text.splitlines() if w.strip() and not w.startswith("#"))


def remove_stopwords(text: str) -> str:
    """`text` with stopwords (matched case-insensitively as whole words) removed and whitespace collapsed."""
    stop = stopword_set()
    kept = _WORD_RE.sub(lambda m: "" if m.group(0).lower() in stop else m.group(0), text)
    return " ".join(kept.split())


def split_words(text: str) -> list[str]:
    """Lowercased words of a caption, as the word-level vocabulary sees them."""
    return _WORD_RE.findall(text.lower())


def pad_batch(seqs: Sequence[Sequence[int]], context_length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack already-truncated id lists into `[N, context_length]` padded with `pad_id`, plus their lengths."""
    ids = torch.full((len(seqs), context_length), pad_id, dtype=torch.long)
    lengths = torch.zeros(len(seqs), dtype=torch.long)
    for i, seq in enumerate(seqs):
        n = len(seq)
        if n:
            ids[i, :n] = torch.as_tensor(seq, dtype=torch.long)
        lengths[i] = n
    return ids, lengths


class _Tokenizer(ABC):
    """Shared caption handling: stopword removal, batching, padding, cheap pickling."""

    name: str
    vocab_size: int
    pad_id: int
    special_ids: tuple[int, ...]

    def __init__(self, context_length: int, stopwords: bool) -> None:
        if context_length < 1:
            raise ConfigError(f"labels.context_length: expected a positive integer, got {context_length}")
        self.context_length = context_length
        self.stopwords = stopwords
        self._backend: Any = None

    @abstractmethod
    def _encode_batch(self, captions: list[str]) -> list[list[int]]:
        """Token ids of each caption, specials included, before padding and truncation."""

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids `[N, context_length]` (long, padded with pad_id) and real lengths `[N]` (long)."""
        if isinstance(captions, str):
            captions = [captions]
        if self.stopwords:
            captions = [remove_stopwords(c) for c in captions]
        return pad_batch(self._encode_batch(list(captions)), self.context_length, self.pad_id)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_backend"] = None  # rebuilt lazily in the worker: keeps pickles small and avoids sharing caches
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size}, L={self.context_length})"


class ClipBPETokenizer(_Tokenizer):
    """OpenCLIP's `SimpleTokenizer` (lowercase CLIP BPE, vocab 49408, SOT 49406, EOT 49407, pad 0 = "!")."""

    def __init__(self, context_length: int = 77, stopwords: bool = False) -> None:
        super().__init__(context_length, stopwords)
        if context_length < 2:
            raise ConfigError(f"labels.context_length: CLIP BPE needs room for SOT and EOT, got {context_length}")
        tok = self._tok()
        self.vocab_size = tok.vocab_size
        self.sot_id = tok.sot_token_id
        self.eot_id = tok.eot_token_id
        self.pad_id = 0
        self.special_ids = (self.sot_id, self.eot_id)
        self.name = "clip_bpe" + ("+nostopwords" if stopwords else "")

    def _tok(self) -> Any:
        if self._backend is None:
            from open_clip.tokenizer import SimpleTokenizer

            self._backend = SimpleTokenizer(context_length=self.context_length)
        return self._backend

    def _encode_batch(self, captions: list[str]) -> list[list[int]]:
        tok, n = self._tok(), self.context_length
        if len(tok.cache) > _BPE_CACHE_LIMIT:  # OpenCLIP's word->BPE cache never shrinks; over 1B captions it would
            tok.cache = {t: t for t in ("<start_of_text>", "<end_of_text>")}
        out = []
        for caption in captions:
            seq = [self.sot_id, *tok.encode(caption), self.eot_id]
            if len(seq) > n:  # truncate as OpenCLIP does: keep the first n, last one becomes EOT
                seq = seq[:n]
                seq[-1] = self.eot_id
            out.append(seq)
        return out


class HFTokenizer(_Tokenizer):
    """Any Hugging Face tokenizer (WordPiece, SentencePiece, BPE) loaded with `AutoTokenizer` from a path or name."""

    def __init__(self, path: str, context_length: int = 77, stopwords: bool = False) -> None:
        super().__init__(context_length, stopwords)
        if not path:
            raise ConfigError("labels.tokenizer_path: required for tokenizer 'hf' (a local directory or hub name)")
        self.path = path
        tok = self._tok()
        self.vocab_size = len(tok)  # includes added tokens, unlike tok.vocab_size
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.special_ids = tuple(sorted(set(tok.all_special_ids)))
        self.name = f"hf:{path}" + ("+nostopwords" if stopwords else "")

    def _tok(self) -> Any:
        if self._backend is None:
            self._backend = _load_hf_tokenizer(self.path)
        return self._backend

    def _encode_batch(self, captions: list[str]) -> list[list[int]]:
        # HF truncation keeps the template's specials (e.g. [CLS] ... [SEP]) like OpenCLIP keeps EOT
        enc = self._tok()(captions, add_special_tokens=True, truncation=True, max_length=self.context_length)
        return [list(seq) for seq in enc["input_ids"]]


def _load_hf_tokenizer(path: str) -> Any:
    """`AutoTokenizer.from_pretrained(path)`; failures become a ConfigError naming the path."""
    from transformers import AutoTokenizer

    local = Path(path).expanduser()
    looks_local = path.startswith((".", "/", "~")) or local.exists()
    if looks_local and not local.is_dir():
        raise ConfigError(f"labels.tokenizer_path: tokenizer directory {path} does not exist")
    try:
        return AutoTokenizer.from_pretrained(str(local) if looks_local else path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"labels.tokenizer_path: could not load a tokenizer from {path}: {first}") from None


class WordTokenizer(_Tokenizer):
    """Word-level labels (CatLIP-style): lowercase regex words; `<pad>`=0, `<unk>`=1, word i of the vocab = i+2."""

    def __init__(self, words: Sequence[str], context_length: int = 77, stopwords: bool = False, name: str = "word"):
        super().__init__(context_length, stopwords)
        self.words = [w for w in words if w not in (PAD_WORD, UNK_WORD)]
        self.index = {w: i + 2 for i, w in enumerate(self.words)}
        self.pad_id, self.unk_id = 0, 1
        self.special_ids = (self.pad_id, self.unk_id)  # <unk> is masked like a special token
        self.vocab_size = len(self.words) + 2
        self.name = name + ("+nostopwords" if stopwords else "")

    def _encode_batch(self, captions: list[str]) -> list[list[int]]:
        index, unk, n = self.index, self.unk_id, self.context_length
        return [[index.get(w, unk) for w in split_words(c)][:n] for c in captions]


def build_word_vocab(
    captions: Iterable[str], min_count: int = 1, top_k: int = 40000, stopwords: bool = False
) -> list[str]:
    """The `top_k` most frequent words seen at least `min_count` times (ties alphabetical), most frequent first."""
    counts: Counter[str] = Counter()
    stop = stopword_set() if stopwords else frozenset()
    for caption in captions:
        counts.update(w for w in split_words(caption) if w not in stop)
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return ranked[: max(top_k, 0)]


def save_word_vocab(words: Sequence[str], path: str | Path) -> None:
    """Write one word per line (line i is label id i+2; `<pad>`=0 and `<unk>`=1 are implicit)."""
    write_text_atomically(path, "".join(f"{w}\n" for w in words))


def load_word_vocab(path: str | Path) -> list[str]:
    """Words of a vocabulary file written by `save_word_vocab`; a missing, empty or duplicated file is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"labels.tokenizer_path: word vocabulary file {path} does not exist")
    words = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    words = [w for w in words if w not in (PAD_WORD, UNK_WORD)]
    if not words:
        raise ConfigError(f"word vocabulary file {path}: expected one word per line, found none")
    seen: set[str] = set()
    for w in words:
        if w in seen:
            raise ConfigError(f"word vocabulary file {path}: word {w!r} appears twice")
        seen.add(w)
    return words


def synthetic_word_vocab(samples: int = 4096) -> list[str]:
    """Every word of the tiny recipes' synthetic captions (`pretrain.data.synthetic`, dataset seed 0): ~60 labels."""
    from pretrain.data.synthetic import describe

    return build_word_vocab(describe(i, seed=0)[1] for i in range(samples))


def build_tokenizer(cfg: LabelConfig) -> CaptionTokenizer:
    """The tokenizer `cfg` names."""
    if cfg.tokenizer == "clip_bpe":
        return ClipBPETokenizer(cfg.context_length, cfg.stopwords)
    if cfg.tokenizer == "hf":
        return HFTokenizer(cfg.tokenizer_path, cfg.context_length, cfg.stopwords)
    if cfg.tokenizer == "word":
        if not cfg.tokenizer_path:
            raise ConfigError("labels.tokenizer_path: required for tokenizer 'word' (a vocabulary file or 'synthetic')")
        words = synthetic_word_vocab() if cfg.tokenizer_path == SYNTHETIC_VOCAB else load_word_vocab(cfg.tokenizer_path)
        return WordTokenizer(words, cfg.context_length, cfg.stopwords, name=f"word:{cfg.tokenizer_path}")
    raise ConfigError(f"labels.tokenizer: expected one of clip_bpe, hf, word, got {cfg.tokenizer!r}")

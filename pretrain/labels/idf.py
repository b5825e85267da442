"""IDF weights for the SuperClass target: online (the official code's running statistics), offline, or off.

Online (default), per training step with global batch B (summed over ranks):
    doc_freq += count_c / B          (count_c: samples of the global batch whose labels contain c)
    num_steps += 1
    w_c = log((num_steps + 1/B) / (doc_freq_c + 1/B))      (current batch included)
which is ≈ log((N + 1) / (df_c + 1)) with N samples seen and df_c of them containing c. The official code
adds each rank's `count/B_local` and then `all_reduce(AVG)`s; summing counts and batch sizes instead gives the
same numbers when local batches are equal, is exact when they are not, and also works without a process group.
Offline: w_c = log((N + 1) / (df_c + 1)) from a counts file (`compute_idf_counts` over a caption stream).
Off: w_c = 1.
The statistics are float64 buffers, so they are saved in and restored from checkpoints with the head.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from pretrain.labels.khot import count_labels, label_ids
from pretrain.labels.tokenizers import CaptionTokenizer
from pretrain.runtime.atomic import write_file_atomically
from pretrain.runtime.distributed import group_active
from pretrain.runtime.errors import ConfigError


@dataclass
class IDFConfig:
    """Where the IDF weights come from."""

    # online: running statistics updated every step (official); offline: a counts file; off: all weights 1
    mode: Literal["online", "offline", "off"] = "online"
    # offline: a safetensors file written by `compute_idf_counts` + `save_idf_counts` (ignored otherwise)
    counts_path: str = ""


@dataclass
class IDFCounts:
    """Document frequencies over a caption corpus: `doc_freq[c]` of `num_samples` captions contain label c."""

    doc_freq: torch.Tensor  # LongTensor [V]
    num_samples: int
    tokenizer: str = ""  # the tokenizer's name the captions were counted with ("" = not recorded)
    mode: str = ""  # the label rule: "masked" or "official" (labels.mode; "" = not recorded)


def compute_idf_counts(
    captions: Iterable[str], tokenizer: CaptionTokenizer, official: bool = False, batch_size: int = 1024
) -> IDFCounts:
    """Count, per label id, the captions of a (streamed) corpus that contain it, with the training label rule."""
    doc_freq = torch.zeros(tokenizer.vocab_size, dtype=torch.float64)
    num_samples = 0
    batch: list[str] = []

    def flush() -> None:
        nonlocal num_samples
        ids, lengths = tokenizer(batch)
        sparse_ids, valid = label_ids(ids, lengths, tokenizer.special_ids, official)
        doc_freq.add_(count_labels(sparse_ids, valid, tokenizer.vocab_size))
        num_samples += len(batch)
        batch.clear()

    for caption in captions:
        batch.append(caption)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    mode = "official" if official else "masked"
    return IDFCounts(doc_freq.round().long(), num_samples, tokenizer=tokenizer.name, mode=mode)


def save_idf_counts(counts: IDFCounts, path: str | Path, tokenizer_name: str = "") -> None:
    """Write counts as safetensors (`doc_freq` int64 [V], `num_samples` int64 scalar), atomically; the metadata
    records the tokenizer (`tokenizer_name`, else the counts') and label mode so a run can refuse other ones."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "doc_freq": counts.doc_freq.to(torch.int64).contiguous(),
        "num_samples": torch.tensor(counts.num_samples, dtype=torch.int64),
    }
    metadata = {"format": "superclass-idf-counts", "tokenizer": tokenizer_name or counts.tokenizer, "mode": counts.mode}
    write_file_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_idf_counts(path: str | Path, tokenizer: str = "", mode: str = "") -> IDFCounts:
    """Read a counts file written by `save_idf_counts`; a missing or malformed file, or one counted with another
    `tokenizer` name or label `mode` than the given ones (when both sides recorded them), is a ConfigError."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"idf.counts_path: IDF counts file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ConfigError(f"IDF counts file {path}: not a safetensors file ({exc})") from None
    for key, what, wanted in (("mode", "labels.mode", mode), ("tokenizer", "tokenizer", tokenizer)):
        found = metadata.get(key, "")
        if wanted and found and wanted != found:
            raise ConfigError(
                f"IDF counts file {path} was counted with {what} {found!r}, this run uses {wanted!r}; "
                "recount with `superclass pretrain idf-counts` and the run's labels settings"
            )
    df, n = tensors.get("doc_freq"), tensors.get("num_samples")
    if df is None or n is None or df.ndim != 1 or n.numel() != 1:
        raise ConfigError(f"IDF counts file {path}: expected tensors doc_freq [V] and num_samples (a scalar)")
    num_samples = int(n.reshape(()).item())
    if df.is_floating_point() or (df < 0).any() or (df > num_samples).any():
        raise ConfigError(f"IDF counts file {path}: doc_freq must be integers between 0 and num_samples")
    return IDFCounts(df.long(), num_samples, metadata.get("tokenizer", ""), metadata.get("mode", ""))


class IDFWeights(nn.Module):
    """Per-label IDF weights `[V]`; online statistics live in float64 buffers so checkpoints carry them."""

    def __init__(
        self, vocab_size: int, cfg: IDFConfig | None = None, tokenizer: str = "", label_mode: str = ""
    ) -> None:
        """`tokenizer` (its name) and `label_mode` (labels.mode): what an offline counts file must match."""
        super().__init__()
        self.cfg = cfg or IDFConfig()
        self.vocab_size = vocab_size
        self.mode = self.cfg.mode
        f64 = torch.float64
        # tracks the module's device for mode "off", which has no statistics
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)
        if self.mode == "online":
            self.register_buffer("doc_freq", torch.zeros(vocab_size, dtype=f64))  # Σ_steps count_c / B
            self.register_buffer("num_steps", torch.zeros((), dtype=f64))
            self.register_buffer("batch_size", torch.ones((), dtype=f64))  # global B of the latest step
        elif self.mode == "offline":
            counts = load_idf_counts(self.cfg.counts_path, tokenizer=tokenizer, mode=label_mode)
            if counts.doc_freq.numel() != vocab_size:
                raise ConfigError(
                    f"IDF counts file {self.cfg.counts_path}: has {counts.doc_freq.numel()} labels, "
                    f"the tokenizer has {vocab_size}"
                )
            self.register_buffer("doc_freq", counts.doc_freq.to(f64))
            self.register_buffer("num_samples", torch.tensor(float(counts.num_samples), dtype=f64))
        elif self.mode != "off":
            raise ConfigError(f"idf.mode: expected one of online, offline, off, got {self.mode!r}")

    # eager inside a compiled task (run.compile_scope=task): torch 2.11's compiled graphs drop in-place updates of
    # 0-dim float64 buffers (num_steps, batch_size) without a word; the update is one scatter into [V] anyway
    @torch.compiler.disable
    @torch.no_grad()
    def update(self, ids: torch.Tensor, valid: torch.Tensor, group: dist.ProcessGroup | None = None) -> None:
        """Add one step's sparse labels (summed over ranks when a process group is up); a no-op unless online."""
        if self.mode != "online":
            return
        v = self.vocab_size
        stats = torch.empty(v + 1, dtype=torch.float64, device=self.doc_freq.device)
        stats[:v] = count_labels(ids.to(stats.device), valid.to(stats.device), v)
        stats[v:].fill_(ids.shape[0])  # local batch size, summed with the counts in one collective (fill_: no sync)
        if group_active():
            dist.all_reduce(stats, op=dist.ReduceOp.SUM, group=group)
        global_batch = stats[v]
        self.doc_freq.add_(stats[:v] / global_batch)
        self.num_steps.add_(1.0)
        self.batch_size.copy_(global_batch)

    def weights(self) -> torch.Tensor:
        """The current IDF weights as float32 `[V]` (online: including the latest `update`; all 0 before the first)."""
        if self.mode == "off":
            return torch.ones(self.vocab_size, dtype=torch.float32, device=self._anchor.device)
        if self.mode == "offline":
            return torch.log((self.num_samples + 1.0) / (self.doc_freq + 1.0)).float()
        inv = 1.0 / self.batch_size
        return torch.log((self.num_steps + inv) / (self.doc_freq + inv)).float()

    def forward(self, ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Update with this batch when training, then return the weights (the official order)."""
        if self.training:
            self.update(ids, valid)
        return self.weights()

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, mode={self.mode}"

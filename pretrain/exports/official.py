"""Checkpoints of the official SuperClass code (x-cls/superclass, `opencls`): its `Classifier`, saved by `main.py`.

Recognised by their keys (after DDP's `module.` prefix is removed, as `read_state_dict` does):
    visual.*                               an OpenCLIP VisionTransformer (CLS configs: pool_type avg, no projection)
    text_decoder.ln_mlp.{weight,bias}      MixClsHead with layers=0: LayerNorm ...
    text_decoder.text_projection.{weight,bias}                        ... then Linear(width, vocab) = our head
    cap_fq [1, V], num_samples [1, 1]      the online IDF statistics (float64 buffers)
The official loss adds, per step, the fraction of the batch whose caption holds each token to `cap_fq` and 1 to
`num_samples`, so they are our `idf.doc_freq` and `idf.num_steps`. The global batch size of the weights'
`log((N + 1/B) / (df + 1/B))` is not in the checkpoint (it is in the run's YAML): `idf_batch_size` gives it.
Labels are the CLIP BPE ids with the special tokens kept (`labels.mode=official`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pretrain.runtime.errors import UserError

HEAD_KEYS = {  # official name -> ours, in the artifact's head.safetensors
    "text_decoder.ln_mlp.weight": "head.norm.weight",
    "text_decoder.ln_mlp.bias": "head.norm.bias",
    "text_decoder.text_projection.weight": "head.proj.weight",
    "text_decoder.text_projection.bias": "head.proj.bias",
}
IDF_KEYS = ("cap_fq", "num_samples")
PAPER_BATCH_SIZE = 16384  # every official CLS config but the 13B one (90,112)
TOKENIZER = "clip_bpe"  # the official code's tokenizer (OpenCLIP's SimpleTokenizer, 49,408 ids)


@dataclass
class OfficialParts:
    """What an official checkpoint carries besides the vision tower, and what it carries that we leave out."""

    head_state: dict[str, torch.Tensor] = field(default_factory=dict)  # head.* and idf.* for save_encoder
    provenance: dict[str, Any] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)  # what is not carried over, for the one-line warning


def is_official_superclass(tensors: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict is the official code's `Classifier`: a SuperClass head and IDF buffers beside `visual.*`."""
    return "text_decoder.text_projection.weight" in tensors and all(k in tensors for k in IDF_KEYS)


def official_parts(file: Path, tensors: dict[str, torch.Tensor], width: int, idf_batch_size: int) -> OfficialParts:
    """The head, IDF statistics and provenance of an official checkpoint (UserError when they do not fit `width`)."""
    if idf_batch_size < 1:
        raise UserError(f"--idf-batch-size {idf_batch_size}: expected the official run's global batch size (>= 1)")
    parts = OfficialParts()
    extra = sorted(k for k in tensors if not k.startswith("visual.") and k not in HEAD_KEYS and k not in IDF_KEYS)
    head = {ours: tensors[theirs] for theirs, ours in HEAD_KEYS.items() if theirs in tensors}
    mlps = [k for k in extra if k.startswith("text_decoder.mlps.")]
    if mlps or len(head) != len(HEAD_KEYS):  # MixClsHead with layers > 0: our head is LayerNorm -> Linear only
        parts.left_out.append(f"the head (text_decoder with {'MLP layers' if mlps else 'tensors missing'})")
        head = {}
    vocab = int(tensors["text_decoder.text_projection.weight"].shape[0])
    doc_freq, steps = tensors["cap_fq"].double().reshape(-1), tensors["num_samples"].double().reshape(-1)
    if doc_freq.numel() != vocab or steps.numel() != 1:
        raise UserError(
            f"{file}: cap_fq {list(tensors['cap_fq'].shape)} / num_samples {list(tensors['num_samples'].shape)} "
            f"do not fit a head of {vocab} labels (expected [1, {vocab}] and [1, 1])"
        )
    if head and tuple(head["head.proj.weight"].shape) != (vocab, width):
        raise UserError(f"{file}: text_decoder.text_projection.weight {list(head['head.proj.weight'].shape)} "
                        f"(expected [{vocab}, {width}] for a {width}-wide tower)")  # fmt: skip
    batch = torch.tensor(float(idf_batch_size), dtype=torch.float64)
    idf = {"idf.doc_freq": doc_freq, "idf.num_steps": steps[0].clone(), "idf.batch_size": batch}
    parts.head_state = {**{k: v.float() for k, v in head.items()}, **idf}
    parts.left_out += [f"{k} (no place in the artifact)" for k in extra if not k.startswith("text_decoder.mlps.")]
    parts.provenance = {
        "method": "superclass",
        "tokenizer": TOKENIZER,
        "vocab_size": vocab,
        "labels_mode": "official",
        "idf": {"steps": float(steps[0]), "batch_size": idf_batch_size},
    }
    return parts


def warning_line(file: Path, parts: OfficialParts, batch_size_given: bool) -> str | None:
    """The one line that names what the import did not carry over (None when everything came in)."""
    notes = list(parts.left_out)
    if not batch_size_given:
        notes.append(f"the run's global batch size (the IDF statistics assume {PAPER_BATCH_SIZE}; --idf-batch-size)")
    if file.suffix != ".safetensors":
        notes.append("any training state saved beside the weights (optimizer, scaler, epoch)")
    if not notes:
        return None
    return f"warning: {file}: an official SuperClass checkpoint; not carried over: {'; '.join(notes)}"

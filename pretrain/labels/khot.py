"""The SuperClass target: the set of token ids of a caption, as sparse labels or as a dense K-hot vector.

Sparse form: `(ids [N, L], valid [N, L])`, where `valid` marks each distinct label id of a row exactly once,
so `khot(ids, valid, V)[n, c] = 1` iff `c` is a label of row `n`. Both forms run on GPU without host syncs
(duplicates are collapsed by sorting each row, never by `unique` or boolean indexing).

- masked mode (default): padding positions (told apart by length, since CLIP pads with the real token "!" = 0)
  and special ids (SOT/EOT, [CLS]/[SEP], <unk>, ...) are not labels.
- official mode: every position is a label, padding and specials included, exactly as the official code's
  `targets.scatter_(1, text, 1.0)`; those tokens are then neutralised only by their ≈0 IDF weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def label_mask(ids: torch.Tensor, lengths: torch.Tensor, special_ids: Sequence[int], official: bool) -> torch.Tensor:
    """Which positions of `ids [N, L]` may be labels: all (official) or real, non-special ones (masked)."""
    if official:
        return torch.ones_like(ids, dtype=torch.bool)
    positions = torch.arange(ids.shape[1], device=ids.device)
    keep = positions[None, :] < lengths.to(ids.device)[:, None]
    for sid in special_ids:  # a handful of python scalars: no host->device copy, no sync
        keep &= ids != sid
    return keep


def label_ids(
    ids: torch.Tensor, lengths: torch.Tensor, special_ids: Sequence[int], official: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse K-hot labels: row-sorted ids `[N, L]` and `valid [N, L]` marking each distinct label id once."""
    keep = label_mask(ids, lengths, special_ids, official)
    # Excluded positions become -1 and sort first; a position is a new label iff it differs from its left neighbour.
    marked = torch.where(keep, ids, torch.full_like(ids, -1))
    sorted_ids, _ = torch.sort(marked, dim=1)
    valid = sorted_ids >= 0
    valid[:, 1:] &= sorted_ids[:, 1:] != sorted_ids[:, :-1]
    return sorted_ids.clamp_min(0), valid


def khot(ids: torch.Tensor, valid: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Dense K-hot `[N, vocab_size]` float32 target from sparse labels."""
    target = torch.zeros(ids.shape[0], vocab_size, dtype=torch.float32, device=ids.device)
    # scatter_add, not scatter_: invalid slots point at id 0 with value 0 and must not overwrite a real label 0
    return target.scatter_add_(1, ids, valid.to(torch.float32))


def count_labels(ids: torch.Tensor, valid: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Per id, how many rows contain it: `[vocab_size]` float64 (document frequency of the batch)."""
    counts = torch.zeros(vocab_size, dtype=torch.float64, device=ids.device)
    return counts.scatter_add_(0, ids.reshape(-1), valid.reshape(-1).to(torch.float64))

"""Classification metrics shared by every evaluator (zero-shot, linear probe, few-shot, demos).

One definition so that all `metrics.json` files agree: accuracies are in percent (as the papers' tables), and
an empty evaluation set gives NaN (an accuracy over no images is undefined; 0 would read as a real score).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """{'top1': ..., 'top5': ...} in percent: rows whose label is among their k highest logits.

    k is capped at the number of classes (top-5 of a 3-class task is 100); no rows gives NaN for every k.
    """
    if len(labels) == 0:
        return {f"top{k}": float("nan") for k in ks}
    labels = labels.to(logits.device)
    out = {}
    for k in ks:
        top = logits.topk(min(k, logits.shape[1]), dim=1).indices
        out[f"top{k}"] = 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item()
    return out

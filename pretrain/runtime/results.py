"""What every evaluator writes: `metrics.json`, raw predictions as JSONL, and a small table on stdout.

Accuracies are `pretrain.metrics.topk_accuracy`'s (percent; NaN on an empty set), re-exported here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from pretrain.metrics import topk_accuracy  # noqa: F401 - re-exported: the one definition lives there
from pretrain.runtime.atomic import write_text_atomically


def chance_levels(train_labels: torch.Tensor, test_labels: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Top-1 of guessing (percent): `uniform` = 100/C, `majority` = always the most frequent train class."""
    if len(train_labels) == 0 or len(test_labels) == 0:
        return {"uniform": 100.0 / max(1, num_classes), "majority": float("nan")}
    majority = torch.bincount(train_labels, minlength=num_classes).argmax()
    return {
        "uniform": 100.0 / num_classes,
        "majority": 100.0 * (test_labels == majority).float().mean().item(),
    }


def prediction_rows(
    logits: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, classes: Sequence[str], k: int = 5
) -> Iterable[dict[str, Any]]:
    """One JSON-able row per test image: dataset index, label, prediction and the top-k classes."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    for i in range(len(labels)):
        pred = int(top[i, 0])
        yield {
            "index": int(indices[i]),
            "label": int(labels[i]),
            "label_name": classes[int(labels[i])],
            "pred": pred,
            "pred_name": classes[pred],
            "top5": [int(c) for c in top[i]],
        }


def write_metrics(out_dir: str | Path, metrics: dict[str, Any]) -> Path:
    """`out_dir/metrics.json`, written atomically."""
    path = Path(out_dir) / "metrics.json"
    write_text_atomically(path, json.dumps(metrics, indent=2, default=_json_default) + "\n")
    return path


def write_predictions(out_dir: str | Path, rows: Iterable[dict[str, Any]], name: str = "predictions.jsonl") -> Path:
    """`out_dir/<name>`: one JSON object per line, written atomically."""
    path = Path(out_dir) / name
    write_text_atomically(path, "".join(json.dumps(row) + "\n" for row in rows))
    return path


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table with aligned columns (floats to 2 decimals)."""
    cells = [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |"]
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join(lines)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")

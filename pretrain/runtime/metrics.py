"""Run metrics: one JSON line per logged step, progress (a bar, or plain lines without a terminal), and TensorBoard
behind a no-op stand-in."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from pretrain.runtime.jsonl import read_jsonl
from pretrain.runtime.progress import Progress


class _NoWriter:
    """Stands in for TensorBoard's SummaryWriter when TensorBoard is off: every call does nothing."""

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        return None

    def close(self) -> None:
        return None


def _tensorboard_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("tensorboard is not installed (pip install tensorboard); logging JSONL only", stacklevel=2)
        return _NoWriter()
    return SummaryWriter(str(log_dir))


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}/{key}" if prefix else key, inner, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)


class MetricsLogger:
    """Rank-0 logger: appends to `metrics.jsonl`, drives the progress bar, mirrors to TensorBoard."""

    def __init__(
        self, run_dir: Path, total_steps: int, start_step: int, enabled: bool, tensorboard: bool, label: str = ""
    ) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.bar = None
        self.writer: Any = _NoWriter()
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.bar = Progress(total_steps, start_step, label=label or "/".join(Path(run_dir).parts[-2:]))
            if tensorboard:
                self.writer = _tensorboard_writer(Path(run_dir) / "tensorboard")

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, allow_nan=True) + "\n")
        flat: dict[str, float] = {}
        _flatten("", record, flat)
        step = int(record.get("step", 0))
        for key, value in flat.items():
            if key != "step" and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        if self.bar is not None and "loss" in record:  # an evaluation row keeps the last training loss shown
            self.bar.postfix(loss=f"{record['loss']:.4f}", lr=f"{record.get('lr', 0):.2e}")

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.writer.close()


def read_metrics(run_dir: Path, evals: bool | None = None) -> list[dict[str, Any]]:
    """The logged records of a run, in order (a line torn by a kill is skipped).

    `evals` False: only the training rows; True: only the `run.evals` rows (those with an "eval" key); None: all.
    """
    rows = read_jsonl(Path(run_dir) / "metrics.jsonl")[0]
    return rows if evals is None else [r for r in rows if ("eval" in r) == evals]

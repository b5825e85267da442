"""Evaluations during training: a recipe's `run.evals` run on the artifact each checkpoint refreshes.

    run.evals='[{name: fewshot, every: 1000, settings: {data: /data/in1k, overrides: ["shots=[10]"]}}]'

Each entry names a registered evaluator (`pretrain.runtime.evaluators`; `superclass eval evaluators` lists
them) with its settings; the settings are checked when the run starts, before any step. At every checkpoint
whose step is a multiple of `every` (0: every checkpoint), and at the last step, rank 0 runs the evaluator on
the artifact the task just exported (`encoder/`, `lit/`, `captioner/`, `llava/`) while the other ranks wait,
and writes into `<run>/evals/<name>/step_<N>/`. The row `{"step", "eval", <headline>, "metrics", "seconds",
"eval_share"}` goes to metrics.jsonl (and TensorBoard): the headline number, every scalar metric, the seconds it
took and the share of the run's time spent evaluating so far.
Resume-safe: a row is written only when its evaluation finished, and an evaluation that is due at the step a
run resumes from and has no row (the kill came during it) runs again before training continues; a row is never
written twice. Every row reads the weights of the step it is logged under: the note `evals/artifact.json` records
the step of the last export, a resumed run whose artifact lags its checkpoint (a kill between the checkpoint and
the export, or during the export) exports it again from the restored weights first, and an evaluation refuses an
artifact of another step.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.distributed import local_only
from pretrain.runtime.errors import ConfigError
from pretrain.runtime.jsonl import read_jsonl

ARTIFACT_NOTE = "artifact.json"  # <run>/evals/: where the last exported artifact is (for evaluations on resume)


@dataclass
class EvalEntry:
    """One evaluation during training: a registered evaluator, how often, and its settings."""

    name: str = ""  # e.g. fewshot, linear_probe, zeroshot, retrieval, caption, vqav2, pope
    every: int = 0  # run at the checkpoints whose step is a multiple of this (0: every checkpoint); and at the end
    settings: dict[str, Any] = field(default_factory=dict)  # the evaluator's settings (its Config fields)


class TrainingEvals:
    """The evaluations of one run: built (and checked) at start, run by rank 0 after each checkpoint."""

    def __init__(self, entries: list[EvalEntry], run_dir: Path, produces: str | None, is_main: bool) -> None:
        from pretrain.runtime.evaluators import build_evaluator

        self.run_dir, self.is_main = Path(run_dir), is_main
        self.entries = list(entries)
        self.evaluators = []
        for i, entry in enumerate(self.entries):
            if entry.every < 0:
                raise ConfigError(f"run.evals[{i}].every: {entry.every} (expected 0 or a positive number of steps)")
            evaluator = build_evaluator(entry.name, entry.settings, where=f"run.evals[{i}]")
            if produces is not None and evaluator.consumes != produces:
                raise ConfigError(
                    f"run.evals[{i}]: {entry.name} reads a {evaluator.consumes} model, but this run exports "
                    f"a {produces} artifact"
                )
            self.evaluators.append(evaluator)
        self.seconds = 0.0  # spent evaluating in this process (for eval_share)
        self.started = time.perf_counter()

    def __bool__(self) -> bool:
        return bool(self.entries)

    def note_artifact(self, path: Path | None, step: int) -> None:
        """Remember where the task exported its artifact and of which step (rank 0), so a resumed run can check it."""
        if self.is_main and path is not None and self.entries:
            note = json.dumps({"path": str(path), "step": step}) + "\n"
            write_text_atomically(self.run_dir / "evals" / ARTIFACT_NOTE, note)

    def artifact(self) -> tuple[Path, int] | None:
        """(path, step) of the last export, or None before the first (or from a note without a step)."""
        note = self.run_dir / "evals" / ARTIFACT_NOTE
        try:
            data = json.loads(note.read_text())
            return Path(data["path"]), int(data["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def artifact_is_current(self, step: int) -> bool:
        """Whether the last export holds the weights of `step` (always true for a run without evaluations)."""
        note = self.artifact()
        return not self.entries or (note is not None and note[1] == step)

    def due(self, step: int, final: bool) -> list[int]:
        """Indices of the entries due at a checkpoint of `step` (`final`: the run's last step)."""
        return [i for i, e in enumerate(self.entries) if final or not e.every or step % e.every == 0]

    def done(self) -> set[tuple[int, str]]:
        """(step, name) of every evaluation row metrics.jsonl already holds."""
        rows, _ = read_jsonl(self.run_dir / "metrics.jsonl") if (self.run_dir / "metrics.jsonl").is_file() else ([], 0)
        return {(int(r["step"]), str(r["eval"])) for r in rows if "eval" in r and "step" in r}

    def run(self, step: int, final: bool, logger: Any) -> list[dict[str, Any]]:
        """Rank 0: run the due evaluations that have no row yet on the last artifact; log one row each."""
        if not self.is_main or not self.entries:
            return []
        note, done, rows = self.artifact(), self.done(), []
        if note is None:
            return []
        artifact, exported = note
        for i in self.due(step, final):
            entry, evaluator = self.entries[i], self.evaluators[i]
            if (step, entry.name) in done:
                continue
            if exported != step:  # the loop re-exports on resume; evaluating another step's weights is a bug
                raise RuntimeError(f"{artifact} holds step {exported}, not step {step}: refusing to evaluate it")
            start = time.perf_counter()
            with local_only():  # rank 0 alone: the evaluator's trainers and caches must not wait for the others
                metrics = evaluator.run(artifact, self.run_dir / "evals" / entry.name / f"step_{step}")
            seconds = time.perf_counter() - start
            self.seconds += seconds
            total = max(time.perf_counter() - self.started, 1e-9)
            row = {"step": step, "eval": entry.name, evaluator.headline: evaluator.headline_value(metrics)}
            row.update(metrics=_scalars(metrics), seconds=round(seconds, 3), eval_share=round(self.seconds / total, 4))
            logger.log(row)
            rows.append(row)
        return rows


def _scalars(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number of a metrics dict, flattened with dots (what a log row and TensorBoard can hold)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[name] = float(value)
        elif isinstance(value, dict):
            out.update(_scalars(value, f"{name}."))
    return out

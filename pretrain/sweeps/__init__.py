"""`superclass pretrain sweep`: fair comparisons (arms × grid × seeds × samples seen) with equal tuning budgets.

    spec = get_sweep("demo_fair")                          # or a SweepSpec of your own
    summary = run_sweep(spec, "runs/sweep_demo")           # trains, probes, writes sweep.md/json + plots
    print("\\n".join(commands(plan(spec, out), nproc=8)))  # or: one torchrun line per run, for a cluster

spec.py: the typed spec and the named sweeps; run.py: planning, training, probing, resume; report.py: seeds
aggregated, selection on validation, sweep.md / sweep.json / scaling.png / loss_curves.png.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pretrain.runtime.errors import ConfigError
from pretrain.sweeps.report import aggregate, select, write_report
from pretrain.sweeps.run import PlannedRun, check_probe_data, commands, load_results, plan, probe_data, run_all
from pretrain.sweeps.spec import (
    SWEEPS,
    Arm,
    Axis,
    PaperRow,
    PaperTable,
    Probe,
    SweepSpec,
    SyntheticProbeData,
    get_sweep,
)


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    data: str | None = None,
    train_fn: Callable[..., Path] | None = None,
    name: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or resume) the whole sweep on this machine and write its report under `out`; returns sweep.json."""
    out = Path(out)
    runs = plan(spec, out)
    results = run_all(spec, runs, probe_data(spec, out, data), train_fn, log)
    return write_report(spec, results, len(runs), out, name)


def report_only(spec: SweepSpec, out: str | Path, name: str = "") -> dict[str, Any]:
    """Rewrite the report from the finished runs' result.json files (nothing trains)."""
    out = Path(out)
    runs = plan(spec, out)
    results = load_results(runs)
    if not results:
        raise ConfigError(
            f"sweep --report-only: none of the {len(runs)} runs under {out / 'runs'} has finished (no result.json); "
            "run the sweep without --report-only first"
        )
    return write_report(spec, results, len(runs), out, name)


__all__ = [
    "SWEEPS",
    "Arm",
    "Axis",
    "PaperRow",
    "PaperTable",
    "PlannedRun",
    "Probe",
    "SweepSpec",
    "SyntheticProbeData",
    "aggregate",
    "check_probe_data",
    "commands",
    "get_sweep",
    "load_results",
    "plan",
    "report_only",
    "run_sweep",
    "select",
]

"""A sweep's results: seeds aggregated (mean ± std), one setting per arm picked on validation, tables and plots.

Selection reads only the validation split of the sweep's `select` probe (mean over seeds); the test split is
read only to report the selected setting. The std is the population std over seeds (as eval.probes.fewshot reports).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from pretrain.runtime.atomic import write_file_atomically, write_text_atomically
from pretrain.runtime.metrics import read_metrics
from pretrain.sweeps.spec import SweepSpec


def mean_std(values: list[float]) -> tuple[float, float]:
    """(mean, population std) of `values`; NaN for none."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.pstdev(values)


def aggregate(results: list[dict[str, Any]], val_split: str, test_split: str) -> list[dict[str, Any]]:
    """One row per (arm, setting, samples): per probe, val and test mean ± std over its finished seeds."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[(r["arm"], r["setting"], int(r["samples"]))].append(r)
    rows = []
    for (arm, setting, samples), runs in groups.items():
        probes: dict[str, dict[str, list[float]]] = {}
        for name in runs[0]["scores"]:
            probes[name] = {}
            for key, split in (("val", val_split), ("test", test_split)):
                probes[name][key] = list(mean_std([float(r["scores"][name][split]) for r in runs]))
        seeds = sorted(int(r["seed"]) for r in runs)
        names = sorted({n for r in runs for n in r.get("recipe_evals", {})})
        evals = {n: list(mean_std([float(r["recipe_evals"][n]) for r in runs if n in r.get("recipe_evals", {})]))
                 for n in names}  # fmt: skip
        rows.append({"arm": arm, "setting": setting, "samples": samples, "seeds": seeds, "probes": probes,
                     "recipe_evals": evals})  # fmt: skip
    return rows


def select(rows: list[dict[str, Any]], probe: str) -> dict[tuple[str, int], dict[str, Any]]:
    """The row with the best validation mean of `probe` per (arm, samples); ties go to the first in order.

    Only `probes[probe]["val"]` is read: the test split never influences the choice.
    """
    best: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows:
        key = (row["arm"], row["samples"])
        val = row["probes"][probe]["val"][0]
        if math.isnan(val):
            continue
        if key not in best or val > best[key]["probes"][probe]["val"][0]:
            best[key] = row
    return best


def summarise(spec: SweepSpec, results: list[dict[str, Any]], total_runs: int) -> dict[str, Any]:
    """The sweep.json document: every aggregated row (with `selected`), and each arm's selected test numbers."""
    rows = aggregate(results, spec.val_split, spec.test_split)
    chosen = select(rows, spec.selector())
    for row in rows:
        row["selected"] = chosen.get((row["arm"], row["samples"])) is row
    order = {a.name: i for i, a in enumerate(spec.arms)}
    rows.sort(key=lambda r: (order.get(r["arm"], len(order)), r["samples"], r["setting"]))
    return {
        "select": {"probe": spec.selector(), "split": spec.val_split},
        "report": {"split": spec.test_split, "std": "population std over seeds"},
        "runs": {"finished": len(results), "planned": total_runs},
        "rows": rows,
        "paper": {"title": spec.paper.title, "columns": spec.paper.columns, "rows": [vars(r) for r in spec.paper.rows]},
    }


def _pm(pair: list[float]) -> str:
    mean, std = pair
    return "–" if math.isnan(mean) else f"{mean:.2f} ± {std:.2f}"


def markdown(spec: SweepSpec, summary: dict[str, Any], name: str = "") -> str:
    probes = [p.name for p in spec.probes]
    runs = summary["runs"]
    lines = [
        f"# Sweep{f' {name}' if name else ''}",
        "",
        f"{runs['finished']} of {runs['planned']} runs finished. The setting of each arm is picked on the "
        f"**{spec.val_split}** split's {spec.selector()} score (mean over seeds), never on {spec.test_split}; "
        f"the reported number is that setting's **{spec.test_split}** score, mean ± std (population) over seeds.",
        "",
        "How to read it: a difference between two arms means something only when it is larger than the spread (±)"
        " of both; the spread is over seeds, i.e. initialisation and data order at the same setting. Every arm had"
        " the same grid (tuning budget), the same probes and the same held-out images.",
        "",
        "## Selected",
        "",
        "| arm | samples seen | setting | seeds | " + " | ".join(f"{p} ({spec.test_split})" for p in probes) + " |",
        "|---|---|---|---|" + "---|" * len(probes),
    ]
    selected = [r for r in summary["rows"] if r["selected"]]
    for r in selected:
        cells = [_pm(r["probes"][p]["test"]) for p in probes]
        lines.append(
            f"| {r['arm']} | {r['samples']:,} | {r['setting']} | {len(r['seeds'])} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "## Every setting",
        "",
        "| arm | samples seen | setting | seeds | "
        + " | ".join(f"{p} {s}" for p in probes for s in (spec.val_split, spec.test_split))
        + " | selected |",
        "|---|---|---|---|" + "---|" * (2 * len(probes)) + "---|",
    ]
    for r in summary["rows"]:
        cells = [_pm(r["probes"][p][k]) for p in probes for k in ("val", "test")]
        mark = "**yes**" if r["selected"] else ""
        lines.append(
            f"| {r['arm']} | {r['samples']:,} | {r['setting']} | {len(r['seeds'])} | "
            + " | ".join(cells)
            + f" | {mark} |"
        )
    lines += _recipe_evals_table(summary["rows"])
    if spec.paper.rows:
        lines += ["", f"## The paper beside ours: {spec.paper.title}", ""]
        lines.append(_paper_table(spec, selected, probes))
        lines += [
            "",
            "The paper's columns are ImageNet-1k numbers at its scale; ours are the probes above on your data.",
        ]
    return "\n".join(lines) + "\n"


def _recipe_evals_table(rows: list[dict[str, Any]]) -> list[str]:
    """The recipes' own `run.evals` at each run's last step, mean ± std over seeds (empty when none ran)."""
    names = sorted({n for r in rows for n in r.get("recipe_evals", {})})
    if not names:
        return []
    lines = ["", "## The recipes' own evaluations (run.evals, last step)", ""]
    lines += ["| arm | samples seen | setting | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for r in rows:
        cells = [_pm(r["recipe_evals"][n]) if n in r.get("recipe_evals", {}) else "–" for n in names]
        lines.append(f"| {r['arm']} | {r['samples']:,} | {r['setting']} | " + " | ".join(cells) + " |")
    return lines


def _paper_table(spec: SweepSpec, selected: list[dict[str, Any]], probes: list[str]) -> str:
    head = ["arm", "samples seen", *(f"paper {c}" for c in spec.paper.columns), *(f"ours {p}" for p in probes)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in spec.paper.rows:
        ours = [r for r in selected if r["arm"] == row.arm and (not row.samples or r["samples"] == row.samples)]
        cells = [_pm(ours[-1]["probes"][p]["test"]) if ours else "not run" for p in probes]
        seen = f"{row.samples:,}" if row.samples else "–"
        lines.append("| " + " | ".join([row.arm, seen, *(f"{v:g}" for v in row.values), *cells]) + " |")
    return "\n".join(lines)


def _save_figure(fig: Any, path: Path) -> None:
    write_file_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def plot_scaling(spec: SweepSpec, summary: dict[str, Any], path: Path) -> Path:
    """The selected setting's test score (mean ± std over seeds) against samples seen, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = [p.name for p in spec.probes]
    fig, axes = plt.subplots(1, len(probes), figsize=(4.5 * len(probes), 3.5), squeeze=False)
    for ax, probe in zip(axes[0], probes):
        for arm in spec.arms:
            rows = sorted(
                (r for r in summary["rows"] if r["selected"] and r["arm"] == arm.name), key=lambda r: r["samples"]
            )
            if rows:
                x = [r["samples"] for r in rows]
                mean, std = zip(*(r["probes"][probe]["test"] for r in rows))
                ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=arm.name)
        seen = [r["samples"] for r in summary["rows"]]
        if seen and max(seen) >= 10 * min(seen):
            ax.set_xscale("log")
        ax.set_xlabel("samples seen")
        ax.set_ylabel(f"{probe} {spec.test_split} top-1 (%)")
        ax.set_title(f"{probe} (setting picked on {spec.val_split})")
        ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return path


def plot_losses(summary: dict[str, Any], out: Path, path: Path) -> Path:
    """Training loss against step, one line per seed, for each arm's selected setting (its largest samples seen)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top: dict[str, dict[str, Any]] = {}
    for r in summary["rows"]:
        if r["selected"] and (r["arm"] not in top or r["samples"] > top[r["arm"]]["samples"]):
            top[r["arm"]] = r
    # one panel per arm: the objectives' losses (softmax over the vocabulary, InfoNCE) are on different scales
    fig, axes = plt.subplots(1, max(1, len(top)), figsize=(5 * max(1, len(top)), 3.6), squeeze=False)
    for i, (ax, (arm, row)) in enumerate(zip(axes[0], top.items())):
        for j, seed in enumerate(row["seeds"]):
            run_dir = out / "runs" / arm / row["run_folder"] / f"seed_{seed}"
            points = [(m["step"], m["loss"]) for m in read_metrics(run_dir, evals=False) if "loss" in m]
            if points:
                steps, losses = zip(*points)
                ax.plot(steps, losses, f"C{i}{'-:-.'[j % 3]}", alpha=0.8, label=f"seed {seed}")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title(f"{arm}: {row['setting']} (selected)", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)
    plt.close(fig)
    return path


def write_report(spec: SweepSpec, results: list[dict[str, Any]], total_runs: int, out: Path, name: str = "") -> dict:
    """OUT/sweep.json, OUT/sweep.md, OUT/scaling.png and OUT/loss_curves.png; returns the summary."""
    summary = summarise(spec, results, total_runs)
    folders = {(r["arm"], r["setting"], int(r["samples"])): r.get("run_folder", r["setting"]) for r in results}
    for row in summary["rows"]:
        row["run_folder"] = folders[(row["arm"], row["setting"], row["samples"])]
    write_text_atomically(out / "sweep.json", json.dumps(summary, indent=2) + "\n")
    write_text_atomically(out / "sweep.md", markdown(spec, summary, name))
    plot_scaling(spec, summary, out / "scaling.png")
    plot_losses(summary, out, out / "loss_curves.png")
    return summary

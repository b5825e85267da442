"""Plan, train and probe a sweep's runs: one after another here, or printed as torchrun commands for a cluster.

Each run lives in OUT/runs/<arm>/<setting>/seed_<s>/ (the recipe's run.out_dir): training writes metrics.jsonl,
checkpoints and encoder/ there; the sweep's probes write evals/<probe>_<split>/; result.json, written atomically
last, marks the run finished. A run without it resumes from its latest checkpoint (or starts over), so an
interrupted sweep continues where it stopped and never retrains a finished run.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pretrain.recipes import PretrainRecipe, get_recipe
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.config import resolve
from pretrain.runtime.errors import ConfigError
from pretrain.runtime.loop import total_steps
from pretrain.runtime.metrics import read_metrics
from pretrain.sweeps.spec import SweepSpec

RESULT_FILE = "result.json"
TRAIN_SPLIT = "train"  # the split the probes fit on


@dataclass
class PlannedRun:
    arm: str
    setting: str  # e.g. "optim.lr=0.001" ("base" for an empty grid)
    seed: int
    samples: int  # samples seen (steps x global batch)
    overrides: list[str]  # over the arm's base recipe, in order
    recipe_name: str
    recipe: PretrainRecipe
    run_dir: Path

    @property
    def result_path(self) -> Path:
        return self.run_dir / RESULT_FILE


def _value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def setting_name(setting: dict[str, Any]) -> str:
    """A folder-safe, readable name of one grid combination."""
    parts = [f"{k}={_value(v)}".replace("/", "_").replace(" ", "") for k, v in setting.items()]
    return "__".join(parts) or "base"


def plan(spec: SweepSpec, out: str | Path) -> list[PlannedRun]:
    """Every run of the sweep, each recipe resolved now (an unknown key fails before anything trains)."""
    spec.check()
    out = Path(out)
    runs = []
    for arm in spec.arms:
        for setting in spec.settings(arm):
            grid = [f"{k}={_value(v)}" for k, v in setting.items()]
            for samples in spec.samples or [0]:
                budget = [f"{spec.samples_key}={samples}"] if samples else []
                if samples and spec.samples_key == "run.total_samples":
                    budget.append("run.steps=0")  # run.steps > 0 would override the budget
                name = setting_name({**setting, **({spec.samples_key: samples} if samples else {})})
                for seed in spec.seeds:
                    run_dir = out / "runs" / arm.name / name / f"seed_{seed}"
                    overrides = [
                        *arm.overrides, *spec.overrides, *grid, *budget,
                        f"run.seed={seed}", f"run.out_dir={run_dir}", "run.resume=latest",
                    ]  # fmt: skip
                    recipe = resolve(get_recipe(arm.recipe), None, overrides)
                    seen = total_steps(recipe.run) * recipe.run.global_batch_size
                    runs.append(
                        PlannedRun(arm.name, setting_name(setting), seed, seen, overrides, arm.recipe, recipe, run_dir)
                    )
    return runs


def commands(runs: list[PlannedRun], nproc: int) -> list[str]:
    """One independent torchrun command per unfinished run (each resumes itself if resubmitted)."""
    lines = []
    for r in runs:
        if r.result_path.exists():
            continue
        args = ["torchrun", "--nproc-per-node", str(nproc), "-m", "pretrain", "train", "--recipe", r.recipe_name]
        lines.append(shlex.join(args + r.overrides))
    return lines


def probe_run(spec: SweepSpec, run: PlannedRun, artifact: Path, data: str) -> dict[str, dict[str, float]]:
    """{probe: {split: headline}} of the sweep's probes on the val and test splits, via the evaluator interface."""
    from pretrain.runtime.evaluators import build_evaluator

    scores: dict[str, dict[str, float]] = {}
    for probe in spec.probes:
        scores[probe.name] = {}
        for split in (spec.val_split, spec.test_split):
            settings = {**probe.settings, "data": data, "val_split": split}
            evaluator = build_evaluator(probe.name, settings, where=f"sweep.probes.{probe.name}")
            metrics = evaluator.run(artifact, run.run_dir / "evals" / f"{probe.name}_{split}")
            scores[probe.name][split] = float(evaluator.headline_value(metrics))
    return scores


def recipe_eval_scores(run_dir: Path) -> dict[str, float]:
    """{evaluator: headline} of the run's own `run.evals` rows at its last evaluated step (rows from metrics.jsonl)."""
    from pretrain.runtime.evaluators import evaluators

    rows = read_metrics(run_dir, evals=True)
    if not rows:
        return {}
    last, known = max(int(r["step"]) for r in rows), evaluators()
    scores = {}
    for row in rows:
        name = str(row["eval"])
        value = row.get(known[name].headline) if name in known else None  # the row holds its evaluator's headline
        if int(row["step"]) == last and isinstance(value, (int, float)):
            scores[name] = float(value)
    return scores


def _final_loss(run_dir: Path) -> float | None:
    losses = [row["loss"] for row in read_metrics(run_dir, evals=False) if "loss" in row]
    return float(losses[-1]) if losses else None


def run_one(
    spec: SweepSpec, run: PlannedRun, data: str, train_fn: Callable[[PretrainRecipe], Path] | None = None
) -> dict[str, Any]:
    """Train (resuming) and probe one run, then write its result.json atomically; returns the result."""
    if train_fn is None:
        from pretrain.train import train as train_fn
    start = time.perf_counter()
    artifact = train_fn(run.recipe)
    train_seconds = time.perf_counter() - start
    scores = probe_run(spec, run, Path(artifact), data)
    result = {
        "arm": run.arm,
        "setting": run.setting,
        "run_folder": run.run_dir.parent.name,
        "seed": run.seed,
        "samples": run.samples,
        "recipe": run.recipe_name,
        "overrides": run.overrides,
        "scores": scores,
        "recipe_evals": recipe_eval_scores(run.run_dir),  # the recipe's run.evals at the last step (test draws)
        "final_loss": _final_loss(run.run_dir),
        "seconds": {"train": train_seconds, "probe": time.perf_counter() - start - train_seconds},
    }
    write_text_atomically(run.result_path, json.dumps(result, indent=2) + "\n")
    return result


def load_results(runs: list[PlannedRun]) -> list[dict[str, Any]]:
    """The result.json of every finished run of the plan (one written before `recipe_evals` existed gets them)."""
    results = []
    for r in runs:
        if r.result_path.exists():
            result = json.loads(r.result_path.read_text())
            result.setdefault("recipe_evals", recipe_eval_scores(r.run_dir))
            results.append(result)
    return results


def run_all(
    spec: SweepSpec,
    runs: list[PlannedRun],
    data: str,
    train_fn: Callable[[PretrainRecipe], Path] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train and probe the unfinished runs one after another; return every finished run's result."""
    todo = [r for r in runs if not r.result_path.exists()]
    log(f"sweep: {len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to go")
    for i, r in enumerate(todo, 1):
        log(f"[{i}/{len(todo)}] {r.arm} {r.setting} seed {r.seed} -> {r.run_dir}")
        run_one(spec, r, data, train_fn)
    return load_results(runs)


def write_synthetic_folder(root: Path, spec: SweepSpec) -> Path:
    """The synthetic labelled task as root/{train,val,test}/<class>/<i>.png, written once (a marker file last).

    The encoders train on synthetic dataset seed 0; the probe splits are the held-out draws of
    `pretrain.data.labelled.SYNTHETIC_SPLIT_SEEDS`, so no probe image was seen in pretraining and the three
    splits are disjoint draws (the same images a `synthetic:<attribute>` data spec gives).
    """
    from pretrain.data.labelled import SYNTHETIC_SPLIT_SEEDS, synthetic_attribute_dataset

    cfg = spec.synthetic
    marker = root / "complete.json"
    if marker.exists() and json.loads(marker.read_text()) == vars(cfg):
        return root
    for split, n in (("train", cfg.train), ("val", cfg.val), ("test", cfg.test)):
        seed = SYNTHETIC_SPLIT_SEEDS[split]
        images, labels, classes = synthetic_attribute_dataset(cfg.attribute, n, seed=seed, image_size=cfg.image_size)
        for name in classes:  # every class folder, so all splits share the train split's class list
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels)):
            image.save(root / split / classes[label] / f"{i:05d}.png")
    write_text_atomically(marker, json.dumps(vars(cfg)))
    return root


def check_probe_data(spec: SweepSpec, data: str, flag: str = "--data") -> str:
    """`data` if it is a folder with the probes' splits (train, val and test class folders), else a one-line error
    before anything trains."""
    root, splits = Path(data), f"{TRAIN_SPLIT}/, {spec.val_split}/ and {spec.test_split}/"
    if not root.is_dir():
        problem = "not a folder" if root.exists() else "does not exist"
        raise ConfigError(f"{flag} {data}: {problem} (expected a labelled folder with {splits} class folders)")
    missing = [s for s in (TRAIN_SPLIT, spec.val_split, spec.test_split) if not (root / s).is_dir()]
    if missing:
        names = ", ".join(f"{m}/" for m in missing)
        raise ConfigError(f"{flag} {data}: no {names} split (the probes fit, select and report on {splits})")
    return str(root)


def probe_data(spec: SweepSpec, out: Path, data: str | None) -> str:
    """The labelled folder the probes read: --data, else the spec's, else its synthetic task under OUT/data."""
    if data or spec.data:
        return check_probe_data(spec, str(data or spec.data), "--data" if data else "sweep data:")
    if spec.synthetic.attribute:
        return str(write_synthetic_folder(out / "data" / spec.synthetic.attribute, spec))
    raise ConfigError("sweep: no labelled data for the probes (pass --data ROOT with train/val/test class folders)")

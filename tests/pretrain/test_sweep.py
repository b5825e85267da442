"""`superclass pretrain sweep`: selection on validation only, seed aggregation, resume, and a tiny CPU sweep."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from pretrain.cli import main as pretrain_main
from pretrain.runtime.config import resolve, to_yaml
from pretrain.runtime.errors import ConfigError
from pretrain.sweeps import (
    SWEEPS,
    Arm,
    Axis,
    Probe,
    SweepSpec,
    SyntheticProbeData,
    aggregate,
    commands,
    plan,
    run_sweep,
    select,
)
from pretrain.sweeps.report import summarise
from pretrain.train import train


def _result(arm: str, setting: str, seed: int, val: float, test: float, samples: int = 100) -> dict:
    return {
        "arm": arm,
        "setting": setting,
        "seed": seed,
        "samples": samples,
        "scores": {"linear_probe": {"val": val, "test": test}},
    }


def test_aggregate_is_mean_and_population_std_over_seeds() -> None:
    results = [_result("sc", "lr=1", s, v, t) for s, v, t in [(0, 70, 60), (1, 72, 61), (2, 74, 65)]]
    results.append(_result("sc", "lr=2", 0, 50, 40))
    rows = {r["setting"]: r for r in aggregate(results, "val", "test")}
    val_mean, val_std = rows["lr=1"]["probes"]["linear_probe"]["val"]
    test_mean, test_std = rows["lr=1"]["probes"]["linear_probe"]["test"]
    assert val_mean == pytest.approx(72.0) and val_std == pytest.approx(math.sqrt(8 / 3))
    assert test_mean == pytest.approx(62.0) and test_std == pytest.approx(statistics.pstdev([60, 61, 65]))
    assert rows["lr=1"]["seeds"] == [0, 1, 2]
    assert rows["lr=2"]["probes"]["linear_probe"]["val"] == [50.0, 0.0]  # one seed: std 0


def test_the_recipes_own_evals_are_averaged_over_seeds() -> None:
    results = [{**_result("sc", "lr=1", s, 70, 60), "recipe_evals": {"fewshot": v}} for s, v in [(0, 30), (1, 40)]]
    results.append(_result("sc", "lr=1", 2, 70, 60))  # a run without evals rows does not count as 0
    row = aggregate(results, "val", "test")[0]
    assert row["recipe_evals"]["fewshot"] == [35.0, 5.0]


def test_selection_reads_validation_only() -> None:
    # lr=a wins on val (mean 80 vs 70) but loses on test (50 vs 90): the choice must be lr=a
    results = [
        *(_result("sc", "lr=a", s, 80 + s, 50) for s in range(3)),
        *(_result("sc", "lr=b", s, 70 + s, 90) for s in range(3)),
        *(_result("clip", "lr=a", s, 60, 99) for s in range(3)),
        *(_result("clip", "lr=b", s, 65, 10) for s in range(3)),
    ]
    best = select(aggregate(results, "val", "test"), "linear_probe")
    assert best[("sc", 100)]["setting"] == "lr=a"
    assert best[("clip", 100)]["setting"] == "lr=b"
    # scrambling every test score never changes the choice
    for r in results:
        r["scores"]["linear_probe"]["test"] = -r["scores"]["linear_probe"]["test"] * 3.7
    again = select(aggregate(results, "val", "test"), "linear_probe")
    assert {k: v["setting"] for k, v in again.items()} == {k: v["setting"] for k, v in best.items()}


def test_summary_reports_the_selected_settings_test_score() -> None:
    spec = SweepSpec(arms=[Arm("sc", "superclass_tiny")], grid=[Axis("optim.lr", [1, 2])], probes=[Probe()])
    results = [_result("sc", "lr=a", s, 80, 50 + 2 * s) for s in range(3)] + [_result("sc", "lr=b", 0, 70, 99)]
    summary = summarise(spec, results, total_runs=6)
    (chosen,) = [r for r in summary["rows"] if r["selected"]]
    assert chosen["setting"] == "lr=a"
    assert chosen["probes"]["linear_probe"]["test"] == pytest.approx([52.0, statistics.pstdev([50, 52, 54])])
    assert summary["runs"] == {"finished": 4, "planned": 6}


def test_unequal_budgets_and_test_selection_are_refused() -> None:
    grid = [Axis("optim.lr", [1e-3, 2e-3])]
    spec = SweepSpec(arms=[Arm("a", "superclass_tiny"), Arm("b", "clip_tiny", grid=[Axis("optim.lr", [1e-3])])])
    spec.grid = grid
    with pytest.raises(ConfigError, match="unequal tuning budget"):
        spec.check()
    with pytest.raises(ConfigError, match="held-out"):
        SweepSpec(arms=[Arm("a", "superclass_tiny")], grid=grid, val_split="test").check()


@pytest.mark.parametrize("name", list(SWEEPS))
def test_named_sweeps_plan_with_existing_keys(name: str, tmp_path: Path) -> None:
    spec = SWEEPS.get(name)
    runs = plan(spec, tmp_path)  # resolves every run's recipe: an unknown key would be a ConfigError
    assert len(runs) == len(spec.arms) * len(spec.settings(spec.arms[0])) * len(spec.seeds) * len(spec.samples or [0])
    assert len({r.run_dir for r in runs}) == len(runs)
    if spec.paper.rows:
        assert {r.arm for r in spec.paper.rows} <= {a.name for a in spec.arms}
        assert all(len(r.values) == len(spec.paper.columns) for r in spec.paper.rows)
    # the spec prints as YAML and loads back unchanged
    path = tmp_path / "spec.yaml"
    path.write_text(to_yaml(spec))
    assert resolve(SweepSpec(), path) == spec


def test_print_commands_one_torchrun_line_per_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert pretrain_main(["sweep", "demo_fair", "--out", str(tmp_path), "--print-commands", "--nproc", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * 3 * 3
    assert all(line.startswith("torchrun --nproc-per-node 2 -m pretrain train --recipe ") for line in lines)
    assert f"run.out_dir={tmp_path}/runs/clip/optim.lr=0.005/seed_2" in lines[-1]
    # a key of the spec sets the spec; any other key is laid over every run's recipe
    assert (
        pretrain_main(
            ["sweep", "demo_fair", "--out", str(tmp_path), "--print-commands", "seeds=[4]", "run.log_every=5"]
        )
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * 3 and all("run.log_every=5" in line and "seed_4" in line for line in lines)


def _tiny_spec() -> SweepSpec:
    return SweepSpec(
        arms=[Arm("superclass", "superclass_tiny")],
        grid=[Axis("optim.lr", [1e-3, 5e-3])],
        seeds=[0, 1],
        samples_key="run.steps",
        samples=[2, 3],
        overrides=[
            "run.device=cpu",
            "run.global_batch_size=16",
            "run.log_every=1",
            "run.save_every=0",
            "optim.warmup_steps=1",
            "data.synthetic_samples=64",
            'run.evals=[{name: fewshot, settings: {data: "synthetic:colour:30", overrides: ["shots=[2]"]}}]',
        ],  # fmt: skip
        probes=[
            Probe("linear_probe", {"recipe": "lars_cpu", "overrides": ["lars.epochs=3", "features.num_workers=0"]}),
            Probe("fewshot", {"overrides": ["features.num_workers=0"]}),
        ],
        synthetic=SyntheticProbeData(attribute="colour", train=66, val=24, test=24),
    )


def test_tiny_sweep_end_to_end_and_resume(tmp_path: Path) -> None:
    calls: list[str] = []

    def counting_train(recipe):  # type: ignore[no-untyped-def]
        calls.append(recipe.run.out_dir)
        return train(recipe)

    spec = _tiny_spec()
    summary = run_sweep(spec, tmp_path, train_fn=counting_train, log=lambda _: None)
    assert len(calls) == 8  # 2 lrs x 2 samples x 2 seeds
    for name in ("sweep.md", "sweep.json", "scaling.png", "loss_curves.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert json.loads((tmp_path / "sweep.json").read_text())["runs"] == {"finished": 8, "planned": 8}
    assert len(summary["rows"]) == 4
    assert sum(r["selected"] for r in summary["rows"]) == 2  # one per samples-seen value
    run_dir = tmp_path / "runs/superclass/optim.lr=0.001__run.steps=3/seed_1"
    assert (run_dir / "evals/linear_probe_val/metrics.json").exists()
    assert (run_dir / "evals/fewshot_test/metrics.json").exists()
    result = json.loads((run_dir / "result.json").read_text())
    assert result["samples"] == 3 * 16 and set(result["scores"]["fewshot"]) == {"val", "test"}
    assert "| superclass |" in (tmp_path / "sweep.md").read_text()
    assert set(result["recipe_evals"]) == {"fewshot"}  # the recipe's own run.evals, at the last step
    assert "## The recipes' own evaluations" in (tmp_path / "sweep.md").read_text()

    # a second call trains nothing and leaves every result untouched
    results = sorted(tmp_path.glob("runs/**/result.json"))
    mtimes = [p.stat().st_mtime_ns for p in results]
    calls.clear()
    run_sweep(spec, tmp_path, train_fn=counting_train, log=lambda _: None)
    assert calls == [] and [p.stat().st_mtime_ns for p in results] == mtimes

    # an interrupted run (no result.json) is the only one redone; the cluster commands list only it
    (run_dir / "result.json").unlink()
    assert len(commands(plan(spec, tmp_path), nproc=1)) == 1
    run_sweep(spec, tmp_path, train_fn=counting_train, log=lambda _: None)
    assert calls == [str(run_dir)]

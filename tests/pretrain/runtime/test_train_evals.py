"""Evaluations during training (`run.evals`): rows in metrics.jsonl at the due checkpoints, checked settings, and a
kill during an evaluation that resumes without a duplicate row."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from eval_fixtures import write_folder

from pretrain.recipes import get_recipe
from pretrain.runtime.config import resolve
from pretrain.runtime.errors import ConfigError
from pretrain.runtime.evaluators import Evaluator, register
from pretrain.runtime.metrics import read_metrics
from pretrain.train import train

FAST = ["run.device=cpu", "data.num_workers=0", "data.synthetic_samples=128", "run.global_batch_size=16"]
PROBE = ["features.num_workers=0", "shots=[2]", "seeds=1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("labelled") / "ds", {"train": 4, "val": 2})


def _evals(entries: list[dict]) -> str:
    return "run.evals=" + json.dumps(entries)


def _run(out: Path, *overrides: str) -> Path:
    recipe = resolve(get_recipe("superclass_tiny"), None, [f"run.out_dir={out}", *FAST, *overrides])
    return train(recipe)


def _eval_rows(run: Path) -> list[tuple[int, str]]:
    return [(r["step"], r["eval"]) for r in read_metrics(run, evals=True)]


def test_evals_run_at_due_checkpoints_and_at_the_end(folder, tmp_path):
    entries = [{"name": "fewshot", "every": 4, "settings": {"data": str(folder), "overrides": PROBE}}]
    _run(tmp_path, "run.steps=6", "run.save_every=2", _evals(entries))
    assert _eval_rows(tmp_path) == [(4, "fewshot"), (6, "fewshot")]  # step 4 (every 4) and the last step
    row = next(r for r in read_metrics(tmp_path) if r.get("eval") == "fewshot")
    assert 0 <= row["top1"] <= 100 and row["seconds"] > 0 and 0 < row["eval_share"] < 1
    assert row["metrics"]["top1"] == row["top1"]
    saved = json.loads((tmp_path / "evals" / "fewshot" / "step_4" / "metrics.json").read_text())
    assert saved["top1"] == row["top1"]


@pytest.mark.parametrize(
    "module, produces, tiny",
    [
        ("pretrain.recipes", "encoder", ["superclass_tiny", "clip_tiny"]),
        ("lit.recipes", "lit", ["lit_tiny"]),
        ("captioning.recipes", "captioner", ["clipcap_tiny"]),
        ("vlm.recipes", "llava", ["llava_tiny_stage2"]),
    ],
)
def test_every_recipes_evals_read_what_its_trainer_exports(module, produces, tiny, tmp_path):
    import importlib

    from pretrain.runtime.train_evals import TrainingEvals

    book = importlib.import_module(module).RECIPES
    for name in book:
        evals = book.get(name).run.evals
        assert bool(evals) == (name in tiny), name  # the tiny recipes evaluate themselves; paper ones cannot know data
        TrainingEvals(evals, tmp_path, produces, is_main=True)  # builds, checks settings and consumes == produces


def test_the_tiny_pretraining_default_probes_itself_on_synthetic_data(tmp_path):
    _run(tmp_path, "run.steps=2", "run.save_every=0")  # FAST keeps the recipe's run.evals
    assert _eval_rows(tmp_path) == [(2, "fewshot"), (2, "linear_probe")]
    row = read_metrics(tmp_path, evals=True)[1]
    assert row["metrics"]["num_classes"] == 6 and row["metrics"]["num_val"] == 300  # synthetic:colour, 300 per split


def test_eval_settings_are_checked_before_training(folder, tmp_path):
    with pytest.raises(ConfigError, match=r"run.evals\[0\]: unknown evaluator 'nope'"):
        _run(tmp_path / "a", "run.steps=2", _evals([{"name": "nope"}]))
    with pytest.raises(ConfigError, match=r"run.evals\[0\]: zeroshot reads a lit model, but this run exports"):
        _run(tmp_path / "b", "run.steps=2", _evals([{"name": "zeroshot", "settings": {"data": str(folder)}}]))
    with pytest.raises(ConfigError, match=r"run.evals\[0\]: no name \(expected name: one of \[.*'fewshot'"):
        _run(tmp_path / "c", "run.steps=2", _evals([{"every": 2}]))
    assert not (tmp_path / "a" / "metrics.jsonl").exists() and not (tmp_path / "b" / "metrics.jsonl").exists()


@dataclass
class _Nothing:
    """No settings."""


class _Killed(Exception):
    """Stands for a kill during an evaluation."""


@register
class _FlakyEvaluator(Evaluator):
    """Dies on its first run, as a kill during an evaluation would; counts its runs."""

    name = "test_flaky"
    consumes = "encoder"
    Config = _Nothing
    headline = "value"
    calls: list[str] = []

    def run(self, model, out_dir):
        type(self).calls.append(str(out_dir))
        if len(type(self).calls) == 1:
            raise _Killed("killed during the evaluation")
        return {"value": 1.0}


def test_a_kill_during_an_eval_reruns_it_once_on_resume(tmp_path):
    evals = _evals([{"name": "test_flaky", "every": 2}])
    with pytest.raises(_Killed):
        _run(tmp_path, "run.steps=4", "run.save_every=2", evals)
    assert _eval_rows(tmp_path) == []  # no row for an evaluation that did not finish
    _run(tmp_path, "run.steps=4", "run.save_every=2", "run.resume=latest", evals)
    assert _eval_rows(tmp_path) == [(2, "test_flaky"), (4, "test_flaky")]  # step 2 rerun first, once
    assert len(_FlakyEvaluator.calls) == 3
    _run(tmp_path, "run.steps=4", "run.save_every=2", "run.resume=latest", evals)  # finished: nothing again
    assert _eval_rows(tmp_path) == [(2, "test_flaky"), (4, "test_flaky")]

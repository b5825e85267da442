"""A resumed run's `run.evals` rows read the weights of the step they are logged under, for every trainer with
`run.evals` (pretrain, lit, captioning, vlm), after a kill at either point where the artifact lags the checkpoint:
between the checkpoint and the export, and during the export (a `.NAME.tmp-*` left behind)."""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from eval_fixtures import tiny_encoder
from vlm_fixtures import tiny_llm

from pretrain.runtime.config import resolve
from pretrain.runtime.evaluators import Evaluator, register
from pretrain.runtime.metrics import read_metrics

# trainer: (recipe module, recipe, task module and class, what it produces, its artifact folder, overrides)
TRAINERS = {
    "pretrain": ("pretrain", "superclass_tiny", "pretrain.tasks.SuperClassTask", "encoder", "encoder",
                 ["data.num_workers=0", "data.synthetic_samples=64", "run.global_batch_size=16"]),
    "lit": ("lit", "lit_tiny", "lit.task.LiTTask", "lit", "lit",
            ["encoder={enc}", "data.synthetic_samples=64", "run.global_batch_size=16"]),
    "captioning": ("captioning", "clipcap_tiny", "captioning.task.CaptionTask", "captioner", "captioner",
                   ["encoder={enc}", "data.synthetic_samples=24", "run.global_batch_size=8"]),
    "vlm": ("vlm", "llava_tiny_stage2", "vlm.task.LlavaTask", "llava", "llava",
            ["model.encoder={enc}", "model.llm={llm}", "run.global_batch_size=4", "data.synthetic_samples=16",
             "data.synthetic_image_size=32", "data.max_length=512"]),
}  # fmt: skip
STEPS, SAVE_EVERY, KILL_AT = 6, 2, 4


@dataclass
class _Nothing:
    """No settings."""


class _Killed(BaseException):
    """Stands for a kill -9 (BaseException: nothing on the way out may treat it as an error to handle)."""


def _fingerprint(artifact: Path) -> float:
    """A number that changes with any weight of the artifact: a hash of its safetensors files."""
    digest = hashlib.sha256()
    for file in sorted(Path(artifact).glob("*.safetensors")):
        digest.update(file.read_bytes())
    return float(int(digest.hexdigest()[:12], 16))


def _fingerprint_evaluator(kind: str) -> None:
    class Fingerprint(Evaluator):
        """The weights it was given, as one number (what a real evaluator's score depends on)."""

        name, consumes, Config, headline = f"test_fingerprint_{kind}", kind, _Nothing, "weights"

        def run(self, model, out_dir):
            return {"weights": _fingerprint(model)}

    register(Fingerprint)


for _kind in ("encoder", "lit", "captioner", "llava"):
    _fingerprint_evaluator(_kind)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_resume")
    return {"enc": tiny_encoder(root / "enc"), "llm": tiny_llm(root / "llm")}


def _train(trainer: str, parts: dict, out: Path, resume: bool = False) -> None:
    package, name, _, produces, _, extra = TRAINERS[trainer]
    recipes = importlib.import_module(f"{package}.recipes")
    evals = f"run.evals=[{{name: test_fingerprint_{produces}, every: {SAVE_EVERY}}}]"
    overrides = [o.format(**parts) for o in extra] + [
        f"run.out_dir={out}", f"run.steps={STEPS}", f"run.save_every={SAVE_EVERY}", "run.device=cpu", evals,
        *(["run.resume=latest"] if resume else []),
    ]  # fmt: skip
    importlib.import_module(f"{package}.train").train(resolve(recipes.get_recipe(name), None, overrides))


def _rows(run: Path) -> dict[int, float]:
    return {int(r["step"]): r["weights"] for r in read_metrics(run, evals=True)}


def _kill_at_export(monkeypatch, trainer: str, during: bool) -> None:
    """Kill the run when rank 0 exports the artifact of step KILL_AT: before it starts, or halfway through."""
    module, cls = TRAINERS[trainer][2].rsplit(".", 1)
    task_class, folder = getattr(importlib.import_module(module), cls), TRAINERS[trainer][4]
    export = task_class.export_artifact
    batch = int(next(o for o in TRAINERS[trainer][5] if o.startswith("run.global_batch_size=")).split("=")[1])

    def killed(self, run_dir, state, samples_seen):
        if samples_seen == KILL_AT * batch:
            if during:  # what a kill during write_dir_atomically leaves: a half-written temporary folder
                partial = Path(run_dir) / f".{folder}.tmp-{os.getpid()}-0badc0de"
                partial.mkdir()
                (partial / "model.safetensors").write_bytes(b"half")
            raise _Killed(f"kill -9 at the export of step {KILL_AT}")
        return export(self, run_dir, state, samples_seen)

    monkeypatch.setattr(task_class, "export_artifact", killed)


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_a_resumed_run_evaluates_the_weights_of_each_logged_step(trainer, parts, tmp_path, monkeypatch):
    _train(trainer, parts, tmp_path / "straight")
    straight = _rows(tmp_path / "straight")
    assert sorted(straight) == [2, 4, 6] and len(set(straight.values())) == 3  # the weights change between rows
    for during in (False, True):
        run = tmp_path / f"killed_{'during' if during else 'before'}_export"
        with monkeypatch.context() as patch:
            _kill_at_export(patch, trainer, during)
            with pytest.raises(_Killed):
                _train(trainer, parts, run)
        assert sorted(_rows(run)) == [2]  # step 4 checkpointed, its artifact not (or half) written
        _train(trainer, parts, run, resume=True)
        assert _rows(run) == straight, f"kill {'during' if during else 'before'} the export"
        assert not list(run.glob(f".{TRAINERS[trainer][4]}.tmp-*"))

"""`linear-probe live=true` trains on the shared Trainer and resumes per epoch: an interrupted run finishes with the
same head as an uninterrupted one, and checkpoints left by another run are refused."""

from __future__ import annotations

import dataclasses
import json

import pytest
from eval_fixtures import tiny_encoder, write_folder

import eval.probes.linear_probe as lp
from eval.probes.training import ProbeTask
from pretrain.data.labelled import load_split
from pretrain.encoder import load_encoder
from pretrain.features import compute_features
from pretrain.runtime.errors import UserError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    encoder = load_encoder(tiny_encoder(root / "enc"))
    data = write_folder(root / "data", {"train": 4, "val": 2})
    train = load_split(data, "train")
    val = compute_features(encoder, load_split(data, "val"))
    recipe = lp.get_recipe("lars_cpu")
    recipe = dataclasses.replace(
        recipe,
        live=True,
        lars=dataclasses.replace(recipe.lars, epochs=4, warmup_epochs=1, batch_size=6),
        features=dataclasses.replace(recipe.features, num_workers=0, device="cpu"),
    )
    return encoder, train, val, recipe


def _run(setup, out, recipe=None):
    encoder, train, val, default = setup
    return lp.run_linear_probe(recipe or default, None, val, out, encoder, train, verbose=False)


def _losses(out):
    rows = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row["loss"]) for row in rows]


def test_interrupted_live_run_resumes_exactly(setup, tmp_path, monkeypatch):
    whole = _run(setup, tmp_path / "whole")
    calls = {"n": 0}
    real_forward = ProbeTask.forward

    def dies_in_epoch_three(self, batch):
        calls["n"] += 1
        if calls["n"] == 2 * 2 + 1:  # 2 steps per epoch (12 images, batch 6): the first step of epoch 3
            raise KeyboardInterrupt
        return real_forward(self, batch)

    monkeypatch.setattr(ProbeTask, "forward", dies_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        _run(setup, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "train" / "checkpoints").is_dir()
    monkeypatch.setattr(ProbeTask, "forward", real_forward)

    with pytest.raises(UserError, match="delete the folder"):  # another run into the same directory
        _run(setup, tmp_path / "resumed", dataclasses.replace(setup[3], seed=1))
    resumed = _run(setup, tmp_path / "resumed")
    assert resumed["top1"] == whole["top1"]
    assert (tmp_path / "resumed" / "predictions.jsonl").read_text() == (
        tmp_path / "whole" / "predictions.jsonl"
    ).read_text()
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "whole")  # same per-epoch losses, each logged once
    assert [step for step, _ in _losses(tmp_path / "whole")] == [2, 4, 6, 8]
    assert not (tmp_path / "resumed" / "train" / "checkpoints").exists()  # finished: a rerun starts over


def test_unreadable_train_images_are_skipped_and_counted(setup, tmp_path):
    encoder, train, val, recipe = setup
    broken = dataclasses.replace(train, items=[*train.items[:-2], str(tmp_path / "gone.jpg"), train.items[-1]])
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    broken.items[-1] = str(tmp_path / "bad.jpg")
    metrics = lp.run_linear_probe(recipe, None, val, tmp_path / "out", encoder, broken, verbose=False)
    assert metrics["train_skipped"]["missing_image"] >= 1 and metrics["train_skipped"]["bad_image"] >= 1

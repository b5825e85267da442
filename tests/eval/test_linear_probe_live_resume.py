"""`linear-probe live=true` resumes per epoch: an interrupted run finishes with the same head as an uninterrupted
one, and a state left by another run is refused."""

from __future__ import annotations

import dataclasses
import json

import pytest
from eval_fixtures import tiny_encoder, write_folder

import eval.linear_probe as lp
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


def test_interrupted_live_run_resumes_exactly(setup, tmp_path, monkeypatch):
    whole = _run(setup, tmp_path / "whole")
    calls = {"n": 0}
    real_step = lp._lars_step

    def dies_in_epoch_three(*args):
        calls["n"] += 1
        if calls["n"] == 2 * 2 + 1:  # 2 steps per epoch (12 images, batch 6): the first step of epoch 3
            raise KeyboardInterrupt
        return real_step(*args)

    monkeypatch.setattr(lp, "_lars_step", dies_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        _run(setup, tmp_path / "resumed")
    assert (tmp_path / "resumed" / lp.LIVE_STATE).is_file()
    monkeypatch.setattr(lp, "_lars_step", real_step)

    with pytest.raises(UserError, match="delete it"):  # another run into the same directory
        _run(setup, tmp_path / "resumed", dataclasses.replace(setup[3], seed=1))
    resumed = _run(setup, tmp_path / "resumed")
    assert resumed["top1"] == whole["top1"]
    for name in ("predictions.jsonl", "train_log.jsonl"):  # same per-epoch losses, each epoch logged once
        assert (tmp_path / "resumed" / name).read_text() == (tmp_path / "whole" / name).read_text()
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
    assert not (tmp_path / "resumed" / lp.LIVE_STATE).exists()  # finished: a rerun starts over

"""Cached locked-tower features: the same losses and skips as live features, exact resume, keys that never go stale."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from lit_fixtures import tiny_encoder
from safetensors.torch import load_file

from lit.cli import main
from lit.data import build_feature_cache, training_items
from lit.recipes import get_recipe
from lit.train import train
from pretrain.data.stream import DataConfig
from pretrain.data.synthetic import make_sample
from pretrain.encoder import load_encoder
from pretrain.feature_cache import cache_key
from pretrain.runtime.config import resolve


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny encoder and a 40-row caption list with a missing image, an undecodable one and an empty caption."""
    root = tmp_path_factory.mktemp("lit_cache")
    rows = []
    for i in range(40):
        sample = make_sample(i, seed=3, image_size=40)
        sample.image.save(root / f"{i}.png")
        rows.append({"image": f"{i}.png", "caption": sample.caption})
    (root / "bad.png").write_bytes(b"not an image")
    rows += [{"image": "gone.png", "caption": "a red circle"}, {"image": "bad.png", "caption": "two stars"}]
    rows[5]["caption"] = "  "
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tiny_encoder(root / "enc"), root


def _recipe(enc, root, out, *extra):
    common = [f"encoder={enc}", "data.kind=list", f"data.train={root / 'train.jsonl'}", "augment=false"]
    common += ["run.steps=6", "run.global_batch_size=8", "run.log_every=1", "run.save_every=3"]
    common += ["run.keep_checkpoints=0", "run.device=cpu", "optim.lr=5e-3", "optim.warmup_steps=2"]
    return resolve(get_recipe("lit_tiny"), None, [*common, f"run.out_dir={out}", *extra])


def _metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]  # not the run.evals rows


def test_cached_features_match_live_features_and_resume_exactly(setup, tmp_path):
    enc, root = setup
    cache = tmp_path / "cache"
    train(_recipe(enc, root, tmp_path / "live"))
    train(_recipe(enc, root, tmp_path / "cached", "cache_features=true", f"cache_dir={cache}"))
    live, cached = _metrics(tmp_path / "live"), _metrics(tmp_path / "cached")
    assert len(live) == len(cached) == 6
    for a, b in zip(live, cached):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a["step"], a["loss"], b["loss"])
    assert cached[-1]["skipped"] == live[-1]["skipped"]
    assert set(live[-1]["skipped"]) == {"empty_caption", "missing_image", "bad_image"}
    assert live[-1]["loss"] < live[0]["loss"]
    (key_dir,) = cache.iterdir()  # one cache, keyed
    chunk = next(key_dir.glob("chunk-*.safetensors"))
    stamp = chunk.stat().st_mtime_ns

    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "cached/checkpoints/step_00000003", resumed / "checkpoints/step_00000003")
    train(_recipe(enc, root, resumed, "cache_features=true", f"cache_dir={cache}", "run.resume=latest"))
    assert chunk.stat().st_mtime_ns == stamp and len(list(cache.iterdir())) == 1  # reused, not recomputed
    a = load_file(str(tmp_path / "cached/checkpoints/step_00000006/model.safetensors"))
    b = load_file(str(resumed / "checkpoints/step_00000006/model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_cache_key_changes_with_encoder_data_and_precision(setup, tmp_path):
    enc, root = setup
    data = DataConfig(kind="list", train=str(root / "train.jsonl"))
    images, captions = training_items(data)
    assert captions[5] == "" and len(images) == 42
    encoder = load_encoder(enc)
    key = cache_key(encoder, images, "fp32")
    assert cache_key(encoder, images, "fp32") == key
    other = load_encoder(tiny_encoder(tmp_path / "enc2", seed=1))
    assert cache_key(other, images, "fp32") != key  # other weights, same config
    assert cache_key(encoder, images, "bf16") != key
    stat = os.stat(root / "0.png")
    os.utime(root / "0.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the image replaced in place
    try:
        assert cache_key(encoder, images, "fp32") != key
    finally:
        os.utime(root / "0.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    small = DataConfig(kind="synthetic", synthetic_samples=16, synthetic_image_size=40)
    a = build_feature_cache(enc, small, tmp_path / "cache")
    b = build_feature_cache(
        enc, DataConfig(kind="synthetic", synthetic_samples=16, synthetic_image_size=48), a.path.parent
    )
    assert a.path != b.path and a.features.shape == b.features.shape == (16, 64)
    with torch.no_grad():
        live = load_encoder(enc)(torch.stack([load_encoder(enc).preprocess(make_sample(3, 0, 40).image)]))
    torch.testing.assert_close(a.features[3:4], live, rtol=1e-5, atol=1e-6)


def test_cache_settings_are_one_line_errors(setup, tmp_path, capsys):
    enc, root = setup
    base = ["train", f"encoder={enc}", f"run.out_dir={tmp_path / 'r'}", "cache_features=true"]
    cases = [
        [*base, "augment=false", "unlocked_groups=1"],
        [*base],  # augmentation on
        [*base, "augment=false", "data.kind=shards", "data.train=/x/{0..3}.tar"],
    ]
    for args in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: cache_features") and "\n" not in err, err


def test_features_command(setup, tmp_path, capsys):
    enc, root = setup
    args = ["features", f"encoder={enc}", "augment=false", "data.kind=list", f"data.train={root / 'train.jsonl'}"]
    assert main([*args, f"cache_dir={tmp_path / 'c'}", "run.device=cpu"]) == 0
    out = capsys.readouterr().out
    assert "40 of 42 images" in out and "missing_image" in out and str(tmp_path / "c") in out
    manifest = json.loads(next((tmp_path / "c").glob("*/manifest.json")).read_text())
    assert manifest["complete"] and manifest["pools"] == ["default"] and manifest["precision"] == "fp32"

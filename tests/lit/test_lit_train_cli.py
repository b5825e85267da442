"""A short LiT run on synthetic data (loss falls, LiT directory written) and the `lit` commands end to end."""

from __future__ import annotations

import json

import pytest
from lit_fixtures import tiny_encoder

from lit.cli import main
from pretrain.data.synthetic import make_sample


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lit")
    enc = tiny_encoder(root / "enc")
    run = root / "run"
    args = ["train", "--encoder", str(enc), "run.steps=30", f"run.out_dir={run}", "run.save_every=15"]
    args += ["run.log_every=5", "run.global_batch_size=32", "optim.lr=5e-3", "data.synthetic_samples=512"]
    assert main(args) == 0
    return enc, run


def test_short_run_lowers_loss_and_writes_lit_dir(trained):
    _, run = trained
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2
    config = json.loads((run / "lit" / "config.json").read_text())
    assert config["format"] == "superclass-lit" and config["provenance"]["samples_seen"] == 30 * 32
    assert (run / "checkpoints").is_dir()


def _folder_dataset(root, n=4):
    for split in ("train", "val"):
        for i in range(n * 3):
            sample = make_sample(i, seed=1, image_size=40)
            d = root / split / sample.attributes["colour"]
            d.mkdir(parents=True, exist_ok=True)
            sample.image.save(d / f"{i}.png")
    return root


def test_zeroshot_command(trained, tmp_path, capsys):
    _, run = trained
    data = _folder_dataset(tmp_path / "data")
    out = tmp_path / "zs"
    args = ["zeroshot", "--model", str(run / "lit"), "--data", str(data), "--templates", "simple", "--out", str(out)]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0 and metrics["num_images"] == 12
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 12
    assert "top1" in capsys.readouterr().out


def test_retrieval_command_counts_missing_image(trained, tmp_path):
    _, run = trained
    images = []
    for i in range(3):
        sample = make_sample(i, seed=2, image_size=40)
        sample.image.save(tmp_path / f"{i}.png")
        images.append({"filename": f"{i}.png", "split": "test", "sentences": [{"raw": sample.caption}, {"raw": "x"}]})
    images.append({"filename": "gone.png", "split": "test", "sentences": [{"raw": "nothing"}]})
    karpathy = tmp_path / "dataset_flickr30k.json"
    karpathy.write_text(json.dumps({"images": images}))
    out = tmp_path / "ret"
    args = ["retrieval", "--model", str(run / "lit"), "--karpathy", str(karpathy), "--images", str(tmp_path)]
    assert main([*args, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and metrics["num_texts"] == 6 and metrics["skipped"]["missing"] == 1
    assert metrics["text_retrieval_recall@10"] == 1.0


def test_one_line_errors(tmp_path, capsys):
    assert main(["recipes"]) == 0
    assert "lit_paper" in capsys.readouterr().out
    assert main(["recipe", "lit_paper"]) == 0
    assert "global_batch_size: 16384" in capsys.readouterr().out
    cases = [
        ["train", "run.steps=1"],  # no encoder
        ["train", "--encoder", str(tmp_path / "nope")],
        ["train", "--recipe", "nope"],
        ["zeroshot", "--model", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "o")],
        ["retrieval", "--model", str(tmp_path), "--karpathy", str(tmp_path / "k.json"), "--images", ".", "--out", "o"],
    ]
    for args in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err

"""A short LiT run on synthetic data (loss falls, LiT directory written) and the `lit` commands end to end."""

from __future__ import annotations

import json
import shutil

import pytest
from lit_fixtures import tiny_encoder

from lit.cli import main
from pretrain.data.synthetic import make_sample
from pretrain.encoder import load_encoder
from pretrain.features import encoder_identity
from pretrain.runtime.errors import DataError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lit")
    enc = tiny_encoder(root / "enc")
    run = root / "run"
    args = ["train", f"encoder={enc}", "run.steps=30", f"run.out_dir={run}", "run.save_every=15"]
    args += ["run.log_every=5", "run.global_batch_size=32", "optim.lr=5e-3", "data.synthetic_samples=512"]
    assert main(args) == 0
    return enc, run


def test_short_run_lowers_loss_and_writes_lit_dir(trained):
    _, run = trained
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]  # not the run.evals rows
    assert len(losses) == 6
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2
    config = json.loads((run / "lit" / "config.json").read_text())
    assert config["format"] == "superclass-lit" and config["provenance"]["samples_seen"] == 30 * 32
    assert (run / "checkpoints").is_dir()
    identity = encoder_identity(load_encoder(trained[0]))
    assert config["encoder_identity"]["weights_hash"] == identity["weights_hash"]
    assert config["encoder_identity"]["config_hash"] == identity["config_hash"]


def _folder_dataset(root, n=4, splits=("train", "val")):
    for split in splits:
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
    out.mkdir()
    (out / "keep.txt").write_text("a file that was here before")  # e.g. the LiT run itself
    args = ["zeroshot", "--model", str(run / "lit"), "--data", str(data), "--templates", "simple", "--out", str(out)]
    assert main(args) == 0  # default --workers 4: images decoded in DataLoader workers
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 100.0 and metrics["num_images"] == 12  # percent
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and metrics["top5"] == pytest.approx(100 * sum(r["label"] in r["top5"] for r in rows) / 12)
    assert (out / "keep.txt").read_text() == "a file that was here before"
    assert "top1" in capsys.readouterr().out


def test_zeroshot_needs_only_the_evaluated_split(trained, tmp_path):
    _, run = trained
    data = _folder_dataset(tmp_path / "data", splits=("val",))  # no train/: zero-shot never trains
    out = tmp_path / "zs"
    args = ["zeroshot", "--model", str(run / "lit"), "--data", str(data), "--templates", "simple", "--out", str(out)]
    assert main([*args, "--workers", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 12 and metrics["num_classes"] == len(list((data / "val").iterdir()))


def test_zeroshot_refuses_wnid_folders_without_classnames(trained, tmp_path, capsys):
    _, run = trained
    for i, wnid in enumerate(["n01440764", "n01443537"]):
        (tmp_path / "in" / "val" / wnid).mkdir(parents=True)
        make_sample(i, seed=1, image_size=40).image.save(tmp_path / "in" / "val" / wnid / "0.png")
    args = ["zeroshot", "--model", str(run / "lit"), "--data", str(tmp_path / "in"), "--out", str(tmp_path / "o")]
    assert main([*args, "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "--classnames imagenet" in err
    assert main([*args, "--workers", "0", "--templates", "simple", "--classnames", "folders"]) == 0


def test_encoder_flag_for_a_moved_encoder_and_identity_check(trained, tmp_path, capsys):
    enc, run = trained
    lit = tmp_path / "lit"
    shutil.copytree(run / "lit", lit)
    config = json.loads((lit / "config.json").read_text())
    config["encoder"] = str(tmp_path / "moved_away")  # the artifact is no longer where training saw it
    (lit / "config.json").write_text(json.dumps(config))
    data = _folder_dataset(tmp_path / "data", n=1)
    args = ["zeroshot", "--model", str(lit), "--data", str(data), "--templates", "simple", "--workers", "0"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "--encoder" in capsys.readouterr().err
    moved = shutil.copytree(enc, tmp_path / "enc_copy")
    assert main([*args, "--out", str(tmp_path / "b"), "--encoder", str(moved)]) == 0
    other = tiny_encoder(tmp_path / "other", seed=1)  # same architecture, other weights
    assert main([*args, "--out", str(tmp_path / "c"), "--encoder", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "weights" in err
    assert main(["export", "--model", str(lit), "--encoder", str(moved), "--out", str(tmp_path / "oc")]) == 0


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
    out.mkdir()
    (out / "keep.txt").write_text("kept")
    args = ["retrieval", "--model", str(run / "lit"), "--karpathy", str(karpathy), "--images", str(tmp_path)]
    assert main([*args, "--out", str(out), "--workers", "0"]) == 0
    assert (out / "keep.txt").read_text() == "kept"  # only metrics.json is (re)written
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and metrics["num_texts"] == 6 and metrics["skipped"]["missing"] == 1
    assert metrics["text_retrieval_recall@10"] == 1.0


def test_one_line_errors(tmp_path, capsys):
    assert main(["recipes"]) == 0
    assert "lit_paper" in capsys.readouterr().out
    assert main(["recipe", "lit_paper"]) == 0
    assert "global_batch_size: 16384" in capsys.readouterr().out
    enc = str(tiny_encoder(tmp_path / "enc"))
    cases = [
        ["train", "run.steps=1"],  # no encoder
        ["train", f"encoder={tmp_path / 'nope'}"],
        ["train", "--recipe", "nope"],
        # lit_tiny reads synthetic data: a data file alone would be ignored (the run would train and exit 0)
        ["train", f"encoder={enc}", "data.train=/data/x.jsonl", "run.steps=1", f"run.out_dir={tmp_path / 'run'}"],
        ["zeroshot", "--model"],  # argparse: one line, not the usage block
        ["zeroshot", "--model", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "o")],
        ["retrieval", "--model", str(tmp_path), "--karpathy", str(tmp_path / "k.json"), "--images", ".", "--out", "o"],
    ]
    for args in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err


def test_zeroshot_and_retrieval_through_the_evaluator_interface(trained, tmp_path):
    from pretrain.runtime.evaluators import build_evaluator

    _, run = trained
    data = _folder_dataset(tmp_path / "data")
    zeroshot = build_evaluator("zeroshot", {"data": str(data), "templates": "simple"})
    metrics = zeroshot.run(run / "lit", tmp_path / "zs")
    assert main(["zeroshot", "--model", str(run / "lit"), "--data", str(data), "--templates", "simple",
                 "--out", str(tmp_path / "zs_cli"), "--workers", "0"]) == 0  # fmt: skip
    cli = json.loads((tmp_path / "zs_cli" / "metrics.json").read_text())
    assert zeroshot.headline_value(metrics) == metrics["top1"] == cli["top1"] and metrics["top5"] == cli["top5"]
    images = []
    for i in range(3):
        sample = make_sample(i, seed=2, image_size=40)
        sample.image.save(tmp_path / f"{i}.png")
        images.append({"filename": f"{i}.png", "split": "test", "sentences": [{"raw": sample.caption}]})
    (tmp_path / "k.json").write_text(json.dumps({"images": images}))
    retrieval = build_evaluator("retrieval", {"karpathy": str(tmp_path / "k.json"), "images": str(tmp_path)})
    metrics = retrieval.run(run / "lit", tmp_path / "ret")
    assert metrics["num_images"] == 3 and retrieval.headline_value(metrics) == metrics["image_retrieval_recall@1"]
    synthetic = build_evaluator("retrieval", {"karpathy": "synthetic:4"}).run(run / "lit", tmp_path / "syn")
    assert synthetic["num_images"] == 4 and synthetic["num_texts"] == 20  # 5 wordings per held-out image
    synthetic_zs = build_evaluator("zeroshot", {"data": "synthetic:colour:6", "split": "test"})
    assert synthetic_zs.run(run / "lit", tmp_path / "syn_zs")["num_images"] == 6


def test_a_synthetic_retrieval_set_is_held_out_and_checked():
    from lit.retrieval import load_karpathy

    data = load_karpathy("synthetic:3", "", "test")
    assert len(data.images) == 3 and data.text_image == [0] * 5 + [1] * 5 + [2] * 5
    assert data.captions[0] == make_sample(0, seed=1, image_size=40).caption  # the test draw, seed 1
    assert load_karpathy("synthetic:3", "", "val").captions[0] != data.captions[0]
    for spec, split, message in [("synthetic:x", "test", "positive number"), ("synthetic:3", "restval", "no split")]:
        with pytest.raises(DataError, match=message):
            load_karpathy(spec, "", split)

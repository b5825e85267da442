"""`superclass eval ...` end to end on a JPEG folder and a tiny encoder, plus the demo's `probe_encoder`."""

import json

import pytest
import yaml
from eval_fixtures import tiny_encoder, write_folder

from eval.cli import main
from eval.probes.probe import probe_encoder
from pretrain.data.labelled import synthetic_attribute_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    return tiny_encoder(tmp / "enc"), write_folder(tmp / "ds", {"train": 12, "val": 4})


def test_features_command(setup, tmp_path, capsys):
    enc, root = setup
    args = ["features", "--model", str(enc), "--data", str(root), "--split", "val", "--out", str(tmp_path / "c")]
    assert main([*args, "--pool", "default", "cls", "--workers", "0", "--chunk-size", "5"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == 12 and summary["dims"] == {"default": 64, "cls": 64} and summary["skipped"] == {}
    assert (tmp_path / "c" / "manifest.json").is_file()


def test_linear_probe_commands_write_metrics_and_reuse_caches(setup, tmp_path, capsys):
    enc, root = setup
    base = [
        "linear-probe",
        "--model",
        str(enc),
        "--data",
        str(root),
        "--recipe",
        "lars_cpu",
        "features.num_workers=0",
    ]
    assert main([*base, "--out", str(tmp_path / "lp")]) == 0
    metrics = json.loads((tmp_path / "lp" / "metrics.json").read_text())
    assert metrics["protocol"] == "mae_lars" and metrics["num_train"] == 36 and metrics["num_val"] == 12
    assert metrics["top1"] >= 90.0  # flat colours: even a random encoder separates them
    assert "| probe" in capsys.readouterr().out
    chunk = tmp_path / "lp" / "features" / "train" / "chunk-000000.safetensors"
    stamp = chunk.stat().st_mtime_ns
    logreg = ["--recipe", "clip_logreg", "logreg.max_iter=50", "logreg.refine_steps=1"]
    assert main([*base[:5], "--out", str(tmp_path / "lp"), *logreg, "features.num_workers=0"]) == 0
    assert chunk.stat().st_mtime_ns == stamp  # the cached features were reused
    metrics = json.loads((tmp_path / "lp" / "metrics.json").read_text())
    assert metrics["protocol"] == "clip_logreg" and metrics["top1"] >= 90.0 and metrics["c"] > 0
    caches = [
        "--train-features",
        str(tmp_path / "lp/features/train"),
        "--val-features",
        str(tmp_path / "lp/features/val"),
    ]
    assert main(["linear-probe", *caches, "--out", str(tmp_path / "lp2"), "--recipe", "lars_cpu"]) == 0
    assert (tmp_path / "lp2" / "predictions.jsonl").is_file()


def test_live_linear_probe(setup, tmp_path):
    enc, root = setup
    args = ["linear-probe", "--model", str(enc), "--data", str(root), "--out", str(tmp_path / "live"), "live=true"]
    assert main([*args, "--recipe", "lars_cpu", "lars.epochs=2", "features.num_workers=0"]) == 0
    metrics = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert metrics["protocol"] == "mae_lars_live" and metrics["num_val"] == 12
    assert not (tmp_path / "live" / "features" / "train").exists()  # live mode never caches train features


def test_fewshot_command(setup, tmp_path):
    enc, root = setup
    args = ["fewshot", "--model", str(enc), "--data", str(root), "--out", str(tmp_path / "fs")]
    assert main([*args, "shots=[2,5]", "seeds=2", "features.num_workers=0"]) == 0
    metrics = json.loads((tmp_path / "fs" / "metrics.json").read_text())
    assert metrics["shots"] == 2 and set(metrics["results"]) == {"2", "5"}
    assert len(metrics["results"]["5"]["per_seed"]) == 2 and metrics["top1"] > metrics["chance"]["uniform"]


def test_missing_folder_is_one_line_and_exit_2(setup, tmp_path, capsys):
    enc, _ = setup
    code = main(["fewshot", "--model", str(enc), "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "nope" in err
    code = main(["linear-probe", "--model", str(tmp_path / "noenc"), "--data", str(setup[1]), "--out", "x"])
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert main(["linear-probe", "--data", str(setup[1]), "--out", "x", "no_such_key=1"]) == 2
    one_list = tmp_path / "all.jsonl"
    one_list.write_text(f'{{"image": "{setup[1]}/train/red/000.jpg", "label": "red"}}\n')
    args = ["fewshot", "--model", str(enc), "--data", str(one_list), "--out", str(tmp_path / "o2")]
    code = main([*args, "features.num_workers=0"])
    assert code == 2 and "same images" in capsys.readouterr().err


def test_recipes_print_as_yaml_and_load_back(tmp_path, capsys):
    assert main(["recipe", "mae_in1k"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("# The paper's ImageNet-1k linear probe")
    assert yaml.safe_load(text)["lars"]["batch_size"] == 16384
    assert main(["recipe", "fewshot_lsr", "shots=[1,5,10,25]"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["shots"] == [1, 5, 10, 25]
    assert main(["recipes"]) == 0 and "clip_logreg" in capsys.readouterr().out


def test_probe_encoder_on_a_synthetic_attribute(setup):
    enc, _ = setup
    train = synthetic_attribute_dataset("colour", 120, seed=11, image_size=32)
    val = synthetic_attribute_dataset("colour", 60, seed=12, image_size=32)
    from eval.probes.linear_probe import LogRegConfig

    result = probe_encoder(enc, train, val, seeds=2, logreg=LogRegConfig(max_iter=100, refine_steps=1))
    assert result["num_classes"] == 6 and result["chance"] == pytest.approx(100 / 6)
    assert result["num_train"] == 120 and result["num_val"] == 60 and result["fewshot_shots"] == 10
    for key in ("linear_probe_top1", "fewshot_top1", "chance_majority"):
        assert 0.0 <= result[key] <= 100.0

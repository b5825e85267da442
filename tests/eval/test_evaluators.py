"""Every evaluation through the one interface (`pretrain.runtime.evaluators`): registry, settings, results.

Each evaluator run here gives the numbers its own command gives; lit's and captioning's are checked in their
packages' tests (tests/lit/test_lit_train_cli.py, tests/captioning/test_caption_evaluator.py).
"""

import json

import pytest
from eval_fixtures import tiny_encoder, write_folder
from llava_fixtures import build_tiny_llava

from eval.cli import main
from eval.vlm.registry import benchmarks
from eval.vlm.synthetic_benchmarks import write_synthetic_pope
from pretrain.runtime.errors import ConfigError
from pretrain.runtime.evaluators import INPUTS, build_evaluator, evaluators


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluators")
    return tiny_encoder(tmp / "enc"), write_folder(tmp / "ds", {"train": 10, "val": 4})


def test_every_evaluation_is_registered_with_what_it_reads():
    known = evaluators()
    expected = {"linear_probe", "fewshot", "zeroshot", "retrieval", "caption", *benchmarks()}
    assert expected <= set(known)
    assert {known[n].consumes for n in ("linear_probe", "fewshot")} == {"encoder"}
    assert {known[n].consumes for n in ("zeroshot", "retrieval")} == {"lit"} and known[
        "caption"
    ].consumes == "captioner"
    assert {known[n].consumes for n in benchmarks()} == {"llava"}
    assert all(cls.consumes in INPUTS and cls.headline for cls in known.values())


def test_unknown_names_and_keys_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="unknown evaluator 'nope'"):
        build_evaluator("nope")
    with pytest.raises(ConfigError, match="evals.fewshot.shots"):
        build_evaluator("fewshot", {"shots": 5})
    with pytest.raises(ConfigError, match="evals.pope.limit"):
        build_evaluator("pope", {"limit": "many"})


def test_probes_give_their_commands_numbers(setup, tmp_path):
    enc, root = setup
    overrides = ["features.num_workers=0"]
    probe = build_evaluator("linear_probe", {"data": str(root), "recipe": "lars_cpu", "overrides": overrides})
    metrics = probe.run(enc, tmp_path / "lp")
    assert main(["linear-probe", "--model", str(enc), "--data", str(root), "--recipe", "lars_cpu", *overrides,
                 "--out", str(tmp_path / "lp_cli")]) == 0  # fmt: skip
    cli = json.loads((tmp_path / "lp_cli" / "metrics.json").read_text())
    assert (
        metrics["top1"] == cli["top1"]
        and json.loads((tmp_path / "lp" / "metrics.json").read_text())["top1"] == cli["top1"]
    )
    assert (tmp_path / "lp" / "predictions.jsonl").is_file()
    fewshot = build_evaluator("fewshot", {"data": str(root), "overrides": ["shots=[2]", *overrides]})
    metrics = fewshot.run(enc, tmp_path / "fs")
    assert fewshot.headline_value(metrics) == metrics["results"]["2"]["mean"]


def test_a_vlm_benchmark_runs_as_an_evaluator_and_from_eval_run(tmp_path, capsys):
    model = build_tiny_llava(tmp_path / "llava")
    pope = write_synthetic_pope(tmp_path / "pope", num_images=3, seed=1)
    settings = [f"annotation_dir={pope['annotation_dir']}", f"image_root={pope['image_root']}", "device=cpu"]
    assert main(["run", "pope", "--model", str(model), "--out", str(tmp_path / "a"), *settings]) == 0
    assert "pope: f1_mean = " in capsys.readouterr().out
    assert main(["pope", "run", "--model", str(model), "--annotation-dir", str(pope["annotation_dir"]),
                 "--image-root", str(pope["image_root"]), "--device", "cpu", "--no-progress",
                 "--out", str(tmp_path / "b")]) == 0  # fmt: skip
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in "ab")
    assert a["f1_mean"] == b["f1_mean"] and a["num_questions"] == b["num_questions"] == 18
    capsys.readouterr()
    assert main(["run", "pope", "--model", str(model), "--out", str(tmp_path / "c"), "limit=x"]) == 2
    err = capsys.readouterr().err.strip()
    assert "eval run.pope.limit" in err and len(err.splitlines()) == 1
    assert main(["evaluators"]) == 0 and "linear_probe" in capsys.readouterr().out


def test_a_vlm_benchmark_evaluator_writes_and_scores_a_synthetic_set(tmp_path):
    model = build_tiny_llava(tmp_path / "llava")
    vqav2 = build_evaluator("vqav2", {"synthetic": 2, "device": "cpu", "max_new_tokens": 4})
    metrics = vqav2.run(model, tmp_path / "vqa")
    assert metrics["num_questions"] == 8 and vqav2.headline_value(metrics) == metrics["accuracy"]
    assert (tmp_path / "vqa" / "data" / "v2_mscoco_val2014_annotations.json").is_file()
    mmbench = build_evaluator("mmbench", {"synthetic": 2, "device": "cpu"}).run(model, tmp_path / "mmb")
    assert mmbench["num_questions"] == 2
    with pytest.raises(ConfigError, match="gqa has no synthetic set"):
        build_evaluator("gqa", {"synthetic": 2}).run(model, tmp_path / "gqa")

"""ClipCap captioning through the one evaluator interface: captions of a Karpathy split, then pycocoevalcap."""

import json

from caption_fixtures import karpathy_fixture
from eval_fixtures import tiny_encoder

from captioning.cli import main
from pretrain.data.synthetic import make_sample
from pretrain.runtime.evaluators import build_evaluator


def test_caption_evaluator_generates_and_scores(tmp_path):
    enc = tiny_encoder(tmp_path / "enc")
    karpathy = karpathy_fixture(tmp_path / "coco")
    make_sample(9, seed=3, image_size=48).image.save(tmp_path / "coco" / "val2014" / "COCO_val2014_000000000009.jpg")
    data = [f"encoder={enc}", "data.kind=karpathy", f"data.karpathy={karpathy}", f"data.image_root={tmp_path / 'coco'}"]
    run = tmp_path / "run"
    assert main(["train", "--recipe", "clipcap_tiny", *data, f"run.out_dir={run}", "run.steps=2",
                 "run.global_batch_size=4"]) == 0  # fmt: skip
    settings = {"karpathy": str(karpathy), "image_root": str(tmp_path / "coco"), "recipe": "clipcap_tiny"}
    evaluator = build_evaluator("caption", settings)
    metrics = evaluator.run(run / "captioner", tmp_path / "eval")
    assert {"BLEU-4", "METEOR", "CIDEr"} <= set(metrics) and evaluator.headline_value(metrics) == metrics["CIDEr"]
    captions = json.loads((tmp_path / "eval" / "captions.json").read_text())
    assert sorted(r["image_id"] for r in captions) == [1007, 1008, 1009]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["CIDEr"] == metrics["CIDEr"]


def test_caption_evaluator_scores_the_recipes_synthetic_data_without_a_karpathy_file(tmp_path):
    enc = tiny_encoder(tmp_path / "enc")
    run, recipe = tmp_path / "run", ["data.synthetic_samples=60", "run.evals=[]"]
    assert main(["train", "--recipe", "clipcap_tiny", f"encoder={enc}", f"run.out_dir={run}", "run.steps=2",
                 "run.global_batch_size=4", *recipe]) == 0  # fmt: skip
    settings = {"recipe": "clipcap_tiny", "split": "val", "overrides": ["data.synthetic_samples=60"]}
    metrics = build_evaluator("caption", settings).run(run / "captioner", tmp_path / "eval")
    assert metrics["num_images"] == 50 and metrics["CIDEr"] >= 0  # max(50, 60 // 10) held-out images
    assert (tmp_path / "eval" / "features").is_dir()  # its feature cache stays with its outputs, not in cwd
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["CIDEr"] == metrics["CIDEr"]

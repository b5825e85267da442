"""Karpathy parsing, the scorer vs pycocoevalcap called directly, and the caption CLI's exit codes."""

import json
import shutil

import pytest

from captioning.cli import main
from captioning.data import karpathy_to_coco, load_karpathy
from captioning.score import compute_metrics, load_references

KARPATHY = {
    "images": [
        {"filepath": "train2014", "filename": "a.jpg", "cocoid": 1, "split": "train",
         "sentences": [{"raw": "A dog runs.", "tokens": ["a", "dog", "runs"]}]},
        {"filepath": "val2014", "filename": "b.jpg", "cocoid": 2, "split": "restval",
         "sentences": [{"raw": "A cat sleeps."}, {"raw": "A cat on a bed."}]},
        {"filepath": "val2014", "filename": "c.jpg", "cocoid": 3, "split": "val", "sentences": [{"raw": "A bird."}]},
        {"filepath": "val2014", "filename": "d.jpg", "cocoid": 4, "split": "test",
         "sentences": [{"raw": "A man riding a horse."}, {"raw": "A person on a horse in a field."}]},
        {"filepath": "val2014", "filename": "e.jpg", "cocoid": 5, "split": "test",
         "sentences": [{"raw": "Two dogs playing with a ball."}, {"raw": "Dogs play with a red ball."}]},
    ]
}  # fmt: skip


@pytest.fixture()
def karpathy(tmp_path):
    for sub, name in [("train2014", "a.jpg"), ("val2014", "b.jpg"), ("val2014", "d.jpg"), ("val2014", "e.jpg")]:
        (tmp_path / sub).mkdir(exist_ok=True)
        (tmp_path / sub / name).write_bytes(b"x")
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(KARPATHY))
    return path


def test_karpathy_splits_restval_and_missing(karpathy):
    root = karpathy.parent
    train = load_karpathy(karpathy, root, "train")
    assert [im.image_id for im in train.images] == [1, 2] and train.images[1].captions[1] == "A cat on a bed."
    val = load_karpathy(karpathy, root, "val")
    assert val.images == [] and val.missing == [3]
    assert [im.image_id for im in load_karpathy(karpathy, root, "test").images] == [4, 5]
    coco = karpathy_to_coco(karpathy, "test")
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == 4


needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's PTB tokenizer needs java")


@needs_java
def test_scorer_matches_pycocoevalcap(karpathy):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs = load_references(karpathy, "test")
    results = {4: "A man rides a horse.", 5: "Two dogs with a ball."}
    ours = compute_metrics(results, refs, spice=False)
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": c}] for k, c in results.items()})
    assert ours["BLEU-4"] == pytest.approx(Bleu(4).compute_score(gts, res)[0][3])
    assert ours["ROUGE-L"] == pytest.approx(Rouge().compute_score(gts, res)[0])
    assert ours["CIDEr"] == pytest.approx(Cider().compute_score(gts, res)[0])
    assert 0 < ours["METEOR"] <= 1


@needs_java
def test_cli_score_writes_metrics_and_rejects_mismatched_ids(karpathy, tmp_path, capsys):
    good = tmp_path / "res.json"
    good.write_text(json.dumps([{"image_id": 4, "caption": "a man on a horse"}, {"image_id": 5, "caption": "dogs"}]))
    out = tmp_path / "scores"
    assert main(["score", "--results", str(good), "--annotations", str(karpathy), "--out", str(out), "--no-spice"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"} <= set(metrics)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"image_id": 4, "caption": "a man"}, {"image_id": 9, "caption": "x"}]))
    capsys.readouterr()
    assert main(["score", "--results", str(bad), "--annotations", str(karpathy), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "not annotated" in err


def test_cli_recipes_and_one_line_errors(capsys, tmp_path):
    assert main(["recipes"]) == 0 and "clipcap_coco" in capsys.readouterr().out
    assert main(["recipe", "clipcap_tiny", "run.steps=5"]) == 0 and "steps: 5" in capsys.readouterr().out
    assert main(["train", "--recipe", "clipcap_coco"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: encoder is empty: pass encoder=DIR (an encoder artifact from `superclass pretrain train`)"
    )
    assert main(["train", "--recipe", "nope"]) == 2
    missing = str(tmp_path / "none.json")
    assert main(["score", "--results", missing, "--annotations", missing, "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err

"""COCO Karpathy end to end on a tiny fixture: train -> generate (results JSON) -> score (metrics.json)."""

import json

from caption_fixtures import karpathy_fixture
from eval_fixtures import tiny_encoder

from captioning.cli import main
from captioning.recipes import get_recipe
from captioning.train import partial_header


def test_train_generate_score_on_karpathy_json(tmp_path, capsys):
    enc = tiny_encoder(tmp_path / "enc")
    karpathy = karpathy_fixture(tmp_path / "coco")
    data = [f"encoder={enc}", "data.kind=karpathy", f"data.karpathy={karpathy}", f"data.image_root={tmp_path / 'coco'}"]
    run = tmp_path / "run"
    train = ["train", "--recipe", "clipcap_tiny", *data, f"run.out_dir={run}", "run.steps=3", "run.global_batch_size=4"]
    assert main(train) == 0
    results = tmp_path / "gen" / "captions.json"  # `--out` is a folder
    gen = ["generate", "--recipe", "clipcap_tiny", "--model", str(run / "captioner"), "--split", "test",
           "--out", str(results.parent), *data, f"run.out_dir={run}"]  # fmt: skip
    assert main(gen) == 0
    assert "captioned 2 images of split 'test' (1 skipped)" in capsys.readouterr().out
    rows = json.loads(results.read_text())
    assert sorted(r["image_id"] for r in rows) == [1007, 1008] and all(isinstance(r["caption"], str) for r in rows)

    config = json.loads((run / "captioner" / "config.json").read_text())
    assert config["encoder"] == str(enc.absolute()) and config["encoder_identity"]["weights_hash"]

    # an interrupted run left one caption and a torn line in the partial file: the rerun keeps the caption,
    # cuts the torn line and does the rest
    resumed = tmp_path / "resumed" / "captions.json"
    partial = tmp_path / "resumed" / "captions.json.partial.jsonl"
    partial.parent.mkdir()
    header = partial_header(run / "captioner", "test", get_recipe("clipcap_tiny").decode)
    kept = json.dumps({"image_id": 1008, "caption": "kept as is"})
    partial.write_text(json.dumps({"header": header}) + "\n" + kept + '\n{"image_id": 10')
    gen_resumed = [*gen[: gen.index("--out") + 1], str(resumed.parent), *gen[gen.index("--out") + 2 :]]
    assert main([a for a in gen_resumed if not a.startswith("encoder=")]) == 0  # the captioner's own encoder
    by_id = {r["image_id"]: r["caption"] for r in json.loads(resumed.read_text())}
    assert by_id[1008] == "kept as is" and by_id[1007] == {r["image_id"]: r["caption"] for r in rows}[1007]
    assert not partial.exists()

    # a partial file of another split (or captioner, or decoding) is refused, not mixed in
    partial.write_text(json.dumps({"header": {**header, "split": "val"}}) + "\n" + kept + "\n")
    capsys.readouterr()
    assert main(gen_resumed) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (after the LM's loading progress bar)
    assert err.startswith("error: ") and "split" in err and partial.exists()
    partial.write_text(json.dumps({"image_id": 1008, "caption": "no header"}) + "\n")
    assert main(gen_resumed) == 2 and "header" in capsys.readouterr().err
    out = tmp_path / "scores"
    capsys.readouterr()
    code = main(["score", "--results", str(results.parent), "--annotations", str(karpathy), "--split", "test",
                 "--out", str(out), "--no-spice"])  # fmt: skip
    if code != 0:  # the missing image has no result: scoring must say so in one line rather than crash
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "image" in err
        return
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr"} <= set(metrics)

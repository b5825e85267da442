"""The data-side pretrain commands: synthetic shards, offline IDF counts feeding a run, shard resizing."""

import json

from pretrain.cli import main
from pretrain.labels import load_idf_counts
from pretrain.runtime.metrics import read_metrics


def test_synthetic_shards_idf_counts_and_offline_idf_training(tmp_path, capsys):
    shards = tmp_path / "shards"
    assert (
        main(["synthetic-shards", "--out", str(shards), "--samples", "48", "--per-shard", "16", "--image-size", "40"])
        == 0
    )
    assert sorted(p.name for p in shards.iterdir()) == ["00000.tar", "00001.tar", "00002.tar"]
    pattern = str(shards / "{00000..00002}.tar")
    counts_file = tmp_path / "idf" / "idf_counts.safetensors"  # `--out` is a folder
    assert main(["idf-counts", "--data", pattern, "--out", str(counts_file.parent)]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    counts = load_idf_counts(counts_file)
    assert counts.num_samples == 48 == printed["num_samples"]
    assert int(counts.doc_freq.max()) <= 48 and int(counts.doc_freq[49406]) == 0  # SOT masked by default

    run = tmp_path / "run"
    args = ["train", "--recipe", "superclass_tiny", f"run.out_dir={run}", "run.steps=3", "run.log_every=1",
            "run.global_batch_size=8", "run.device=cpu", "data.kind=shards", f"data.train={pattern}",
            "data.num_workers=0", "idf.mode=offline", f"idf.counts_path={counts_file}"]  # fmt: skip
    assert main(args) == 0
    assert [r["step"] for r in read_metrics(run, evals=False)] == [1, 2, 3]
    assert (run / "encoder" / "head.safetensors").is_file()


def test_resize_shards_command(tmp_path, capsys):
    main(
        [
            "synthetic-shards",
            "--out",
            str(tmp_path / "src"),
            "--samples",
            "8",
            "--per-shard",
            "8",
            "--image-size",
            "300",
        ]
    )
    capsys.readouterr()
    code = main(["resize-shards", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "dst"), "--short-side", "64",
                 "--workers", "1"])  # fmt: skip
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["samples"] == 8 and (tmp_path / "dst" / "00000.tar").is_file()


def test_idf_counts_over_a_list_counts_stripped_non_empty_captions(tmp_path, capsys):
    rows = [("a.png", "  a dog  "), ("b.png", "a cat"), ("c.png", "   "), ("d.png", "the dog")]
    listing = tmp_path / "list.jsonl"
    listing.write_text("".join(json.dumps({"image": i, "caption": c}) + "\n" for i, c in rows))
    out = tmp_path / "idf" / "idf_counts.safetensors"
    args = ["idf-counts", "--kind", "list", "--data", str(listing), "--out", str(out.parent), "labels.mode=official"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["num_samples"] == 3 and printed["skipped"] == {"empty_caption": 1}
    counts = load_idf_counts(out)
    dog, cat, sot = 1929, 2368, 49406
    assert [int(counts.doc_freq[i]) for i in (dog, cat, sot)] == [2, 1, 3]  # official mode keeps SOT
    assert (counts.mode, counts.tokenizer) == ("official", "clip_bpe")

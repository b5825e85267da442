"""ClipCap's encoder features come from the shared feature cache: skips counted, reuse, never a stale cache."""

import json

import torch
from caption_fixtures import karpathy_fixture
from eval_fixtures import tiny_encoder

from captioning.data import encode_split, karpathy_images, synthetic_images
from pretrain.encoder import load_encoder


def test_karpathy_features_skip_missing_and_corrupt_images(tmp_path):
    enc = load_encoder(tiny_encoder(tmp_path / "enc"))
    karpathy = karpathy_fixture(tmp_path / "coco")
    (tmp_path / "coco" / "val2014" / "COCO_val2014_000000000008.jpg").write_bytes(b"not a jpeg")  # test image 8
    split = karpathy_images(karpathy, tmp_path / "coco", "test")
    assert split.keys == ["1007", "1008"] and split.missing == 1  # image 9 is not on disk
    out = encode_split(enc, split, tmp_path / "cache", tokens=False, device="cpu", batch_size=2)
    assert out.keys == ["1007"] and out.skipped == 2 and out.features.shape == (1, enc.num_features)
    with torch.no_grad():
        image = split.images.load_image(0)
        want = enc(enc.preprocess(image)[None])
    torch.testing.assert_close(out.features, want, rtol=0, atol=1e-6)


def test_cache_is_reused_and_never_stale(tmp_path):
    split = synthetic_images(6, seed=1, size=32, references=2)
    assert all(len(refs) == 2 for refs in split.captions.values())
    enc_a = load_encoder(tiny_encoder(tmp_path / "a", seed=0))
    first = encode_split(enc_a, split, tmp_path / "cache", tokens=True, device="cpu")
    assert first.features.dtype == torch.float16 and first.features.shape[:2] == (6, 17)  # 16 patches + class
    dirs = sorted(p.name for p in (tmp_path / "cache").iterdir())
    again = encode_split(enc_a, split, tmp_path / "cache", tokens=True, device="cpu")
    assert (
        torch.equal(again.features, first.features) and sorted(p.name for p in (tmp_path / "cache").iterdir()) == dirs
    )
    manifest = json.loads((tmp_path / "cache" / dirs[0] / "manifest.json").read_text())
    assert manifest["pools"] == ["tokens"] and manifest["complete"]

    enc_b = load_encoder(tiny_encoder(tmp_path / "b", seed=1))  # same config, other weights: a new cache
    other = encode_split(enc_b, split, tmp_path / "cache", tokens=True, device="cpu")
    assert len(list((tmp_path / "cache").iterdir())) == 2 and not torch.equal(other.features, first.features)
    pooled = encode_split(enc_a, split, tmp_path / "cache", tokens=False, device="cpu")
    assert pooled.features.shape == (6, enc_a.num_features) and len(list((tmp_path / "cache").iterdir())) == 3

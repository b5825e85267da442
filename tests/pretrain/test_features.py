"""The feature cache: pools, exact resume after an interruption, and refusal to mix encoders or datasets."""

import json

import pytest
import torch
from eval_fixtures import tiny_encoder, write_folder

from eval.cli import main
from pretrain.data.labelled import load_split
from pretrain.encoder import load_encoder
from pretrain.features import FeatureConfig, compute_features, extract_features, load_features, read_feature_set
from pretrain.runtime.errors import ConfigError, UserError


class Interrupt(Exception):
    """Raised by a test hook to stop an extraction half way (a stand-in for a kill)."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("features")
    root = write_folder(tmp / "ds", {"train": 6, "val": 2})
    return tiny_encoder(tmp / "enc_a", seed=0), tiny_encoder(tmp / "enc_b", seed=1), root


def extract(enc, dataset, out, **kw):
    kw = {"pools": ["default", "cls", "patch_mean"], "batch_size": 2, "num_workers": 0, "chunk_size": 5, **kw}
    kw.setdefault("device", "cpu")  # fp32: the comparisons below are exact
    return extract_features(enc, dataset, out, progress=False, **kw)


def test_pools_are_the_encoders_own(setup, tmp_path):
    enc_dir, _, root = setup
    dataset = load_split(root, "val")
    fs = extract(enc_dir, dataset, tmp_path / "cache")
    enc = load_encoder(enc_dir)
    images = torch.stack([enc.preprocess(dataset.load_image(i)) for i in range(len(dataset))])
    with torch.no_grad():
        tokens = enc.forward_features(images)
        torch.testing.assert_close(fs.features["default"], enc(images), rtol=0, atol=1e-6)
    torch.testing.assert_close(fs.features["cls"], tokens[:, 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(fs.features["patch_mean"], tokens[:, 1:].mean(1), rtol=0, atol=1e-6)
    features, labels, meta = load_features(tmp_path / "cache")
    assert labels.tolist() == dataset.labels and meta["classes"] == ["blue", "green", "red"]
    assert torch.equal(meta["indices"], torch.arange(6)) and meta["precision"] == "fp32"
    assert meta["encoder"]["path"] == str(enc_dir.absolute()) and meta["dataset"]["num_items"] == 6
    mem = compute_features(enc, dataset, pools=["default", "patch_mean", "tokens"], batch_size=4, device="cpu")
    torch.testing.assert_close(mem.features["patch_mean"], fs.features["patch_mean"], rtol=0, atol=1e-6)
    assert mem.features["tokens"].dtype == torch.float16 and mem.features["tokens"].shape == tokens.shape
    torch.testing.assert_close(mem.features["tokens"], tokens.half(), rtol=0, atol=0)  # every token, as float16


def test_interrupted_cache_resumes_without_recomputing(setup, tmp_path):
    enc, _, root = setup
    dataset = load_split(root, "train")  # 18 images -> chunks of 5: 4 chunks
    done = []

    def stop_after_two(chunk, manifest):
        done.append(chunk)
        if chunk == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        extract(enc, dataset, tmp_path / "cache", on_chunk=stop_after_two)
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert sorted(manifest["chunks"]) == ["0", "1"] and not manifest["complete"]
    with pytest.raises(UserError, match="unfinished"):
        read_feature_set(tmp_path / "cache")
    first = (tmp_path / "cache" / "chunk-000000.safetensors").stat()

    resumed_chunks = []
    fs = extract(enc, dataset, tmp_path / "cache", on_chunk=lambda c, m: resumed_chunks.append(c))
    assert resumed_chunks == [2, 3]  # finished chunks are never recomputed
    again = (tmp_path / "cache" / "chunk-000000.safetensors").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    full = extract(enc, dataset, tmp_path / "fresh")
    for pool in ("default", "cls", "patch_mean"):
        assert torch.equal(fs.features[pool], full.features[pool])
    assert torch.equal(fs.labels, full.labels) and torch.equal(fs.indices, full.indices)
    assert torch.equal(fs.keys, full.keys) and len(fs) == 18
    # a complete cache is reused as is
    extract(enc, dataset, tmp_path / "cache", on_chunk=lambda c, m: pytest.fail("recomputed a finished cache"))


def test_cache_refuses_other_encoders_datasets_and_non_caches(setup, tmp_path):
    enc_a, enc_b, root = setup
    val = load_split(root, "val")
    extract(enc_a, val, tmp_path / "cache", pools=["default"])
    with pytest.raises(UserError, match="another encoder"):
        extract(enc_b, val, tmp_path / "cache", pools=["default"])
    with pytest.raises(UserError, match="another dataset"):
        extract(enc_a, load_split(root, "train"), tmp_path / "cache", pools=["default"])
    with pytest.raises(UserError, match="pools"):
        extract(enc_a, val, tmp_path / "cache", pools=["cls"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not a feature cache"):
        extract(enc_a, val, tmp_path / "other")
    with pytest.raises(UserError, match="not a feature cache"):
        load_features(tmp_path / "other")


def test_gpu_decode_writes_the_same_cache(setup, tmp_path, capsys):
    """`decode="gpu"` (run on the CPU here) writes a manifest of the same shape and rows; the CLI takes --decode."""
    enc, _, root = setup
    dataset = load_split(root, "train")
    cpu = extract(enc, dataset, tmp_path / "cpu")
    gpu = extract(enc, dataset, tmp_path / "gpu", decode="gpu")
    old, new = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("cpu", "gpu"))
    assert new.keys() == old.keys() and new["chunks"] == old["chunks"] and new["dataset"] == old["dataset"]
    assert torch.equal(gpu.indices, cpu.indices) and torch.equal(gpu.keys, cpu.keys)
    for pool in ("default", "cls", "patch_mean"):
        torch.testing.assert_close(gpu.features[pool], cpu.features[pool], rtol=0, atol=1e-4)
    args = ["features", "--model", str(enc), "--data", str(root), "--split", "val", "--out", str(tmp_path / "c")]
    assert main([*args, "--workers", "0", "--device", "cpu", "--decode", "gpu"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"] == 6
    assert FeatureConfig(decode="gpu").decode == "gpu"
    with pytest.raises(ConfigError, match="features.decode"):
        FeatureConfig(decode="nvjpeg")

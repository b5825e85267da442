"""The bytes -> device decode path (`--decode gpu`): header routing, parity with the PIL path, skip counting.

The pipeline runs on the CPU here (torchvision's libjpeg-turbo in place of nvJPEG); the `gpu` tests run the
real CUDA path against it and are deselected by default (pytest addopts) and skipped without CUDA.
"""

import io

import numpy as np
import pytest
import torch
from eval_fixtures import COLOURS, colour_image, tiny_encoder, write_folder, write_list
from PIL import Image

from pretrain.data import gpu_decode
from pretrain.data.gpu_decode import DevicePreprocess, EncodedImages, device_decodable, jpeg_header, pack, prepare_batch
from pretrain.data.labelled import from_images, load_split
from pretrain.encoder import load_encoder
from pretrain.features import collate_skipping, compute_features, extract_features

CPU = torch.device("cpu")


def encode(image: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


def bad_quant_table(image: Image.Image) -> bytes:
    """A JPEG whose header looks fine but names an undefined quantisation table: every decoder refuses it."""
    data = bytearray(encode(image, quality=90))
    data[data.find(b"\xff\xc0") + 12] = 3  # the first component's table id
    return bytes(data)


def textured(index: int, width: int, height: int) -> Image.Image:
    """Noise with structure (the resize has something to smooth), in a size of its own."""
    rng = np.random.default_rng(index)
    small = rng.integers(0, 256, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return load_encoder(tiny_encoder(tmp_path_factory.mktemp("gpu_decode") / "enc"))


def test_routing_sends_only_plain_complete_colour_jpegs_as_bytes():
    image = colour_image("red", 0)
    jpeg = encode(image, quality=90)
    assert jpeg_header(jpeg)[:5] == (0xC0, 8, 40, 40, 3)
    assert device_decodable(jpeg) and device_decodable(encode(image, progressive=True))
    assert device_decodable(jpeg + b"\0trailing bytes")  # data after the end marker: PIL and nvJPEG ignore it
    assert not device_decodable(encode(image.convert("L")))  # greyscale: PIL
    assert not device_decodable(encode(image.convert("CMYK")))  # CMYK (Adobe transform 0): PIL
    assert not device_decodable(encode(image, "PNG")) and not device_decodable(encode(image, "WEBP"))
    assert not device_decodable(jpeg[:-2])  # no end marker: PIL refuses it as truncated, so must we
    assert not device_decodable(jpeg[: len(jpeg) // 2]) and not device_decodable(b"\xff\xd8 not a jpeg")
    assert jpeg_header(b"") is None and jpeg_header(jpeg[:30]) is None


def test_bytes_pipeline_matches_the_pil_path(encoder, tmp_path):
    """Mixed sizes, a PNG, an RGBA PNG, a greyscale and a progressive JPEG: the batch equals PIL + preprocess."""
    files = []
    for i, (w, h) in enumerate([(40, 40), (57, 33), (33, 57), (57, 33), (64, 48), (31, 31)]):
        files.append(tmp_path / f"{i}.jpg")
        files[-1].write_bytes(encode(textured(i, w, h), quality=85, progressive=i == 4))
    extra = {"a.png": encode(textured(7, 45, 38), "PNG"), "b.jpg": encode(textured(8, 50, 40).convert("L"))}
    extra["c.png"] = encode(textured(9, 36, 44).convert("RGBA"), "PNG")
    for name, data in extra.items():
        files.append(tmp_path / name)
        files[-1].write_bytes(data)
    dataset = load_split(write_list(tmp_path, "train", [(f.name, 0) for f in files]))
    items = EncodedImages(dataset)
    assert [items[i][0].dim() for i in range(len(files))] == [1] * 6 + [3] * 3  # bytes, or PIL's pixels
    batch = collate_skipping([items[i] for i in range(len(files))], stack=pack)
    got = prepare_batch(batch, DevicePreprocess(encoder.preprocess), CPU)
    want = torch.stack([encoder.preprocess(dataset.load_image(i)) for i in range(len(files))])
    assert got["images"].shape == want.shape == (9, 3, 32, 32) and type(got["images"]) is torch.Tensor
    assert (got["images"] - want).abs().mean() < 5e-3  # libjpeg-turbo in both: equal in practice
    assert got["indices"].tolist() == list(range(9)) and got["skipped"].tolist() == []


def test_features_and_probe_agree_with_the_cpu_path(encoder, tmp_path):
    root = write_folder(tmp_path / "ds", {"train": 5, "val": 3})
    feats = {}
    for decode in ("cpu", "gpu"):
        feats[decode] = [
            compute_features(encoder, load_split(root, split), ["default"], batch_size=4, decode=decode)
            for split in ("train", "val")
        ]
    accuracy = {}
    for decode, (train, val) in feats.items():
        torch.testing.assert_close(train.get("default"), feats["cpu"][0].get("default"), rtol=0, atol=1e-4)
        centroids = torch.stack([train.get("default")[train.labels == c].mean(0) for c in range(len(COLOURS))])
        predicted = torch.cdist(val.get("default"), centroids).argmin(1)
        accuracy[decode] = (predicted == val.labels).float().mean().item()
    assert accuracy["gpu"] == accuracy["cpu"] == 1.0


def test_bad_images_are_skipped_and_counted_like_the_cpu_path(encoder, tmp_path):
    root = write_folder(tmp_path / "ds", {"train": 3})
    good = (root / "train" / "blue" / "000.jpg").read_bytes()
    (root / "train" / "blue" / "truncated.jpg").write_bytes(good[:-2])
    (root / "train" / "green" / "bad_table.jpg").write_bytes(bad_quant_table(colour_image("green", 5)))
    (root / "train" / "red" / "garbage.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (root / "train" / "red" / "empty.png").write_bytes(b"")
    (root / "train" / "red" / "ok.png").write_bytes(encode(colour_image("red", 9), "PNG"))
    dataset = load_split(root, "train")
    assert device_decodable((root / "train" / "green" / "bad_table.jpg").read_bytes())  # fails only at decode
    runs = {}
    for decode, workers in (("cpu", 0), ("gpu", 0), ("gpu", 1)):  # 1 worker: the packed batch crosses processes
        kw = dict(batch_size=4, num_workers=workers, chunk_size=5, device="cpu", progress=False, decode=decode)
        runs[decode, workers] = extract_features(encoder, dataset, tmp_path / f"{decode}{workers}", **kw)
    cpu = runs["cpu", 0]
    assert len(cpu) == 10 and cpu.meta["skipped"] == {"bad_image": 4}
    for fs in (runs["gpu", 0], runs["gpu", 1]):
        assert fs.meta["skipped"] == cpu.meta["skipped"]
        assert fs.meta["skipped_indices"] == cpu.meta["skipped_indices"]
        assert torch.equal(fs.indices, cpu.indices) and torch.equal(fs.labels, cpu.labels)
        assert torch.equal(fs.keys, cpu.keys)
        torch.testing.assert_close(fs.get("default"), cpu.get("default"), rtol=0, atol=1e-4)
    write_list(root, "val", [("train/red/000.jpg", "red"), ("train/red/nope.jpg", "red")])
    (root / "train.jsonl").write_text('{"image": "train/red/000.jpg", "label": "red"}\n')
    mem = compute_features(encoder, load_split(root / "val.jsonl"), device="cpu", decode="gpu")
    assert len(mem) == 1 and mem.meta["skipped"] == {"missing_image": 1}


def test_a_jpeg_the_device_refuses_is_decoded_by_pil(encoder, tmp_path, monkeypatch):
    """nvJPEG may refuse a file PIL reads: the batch is retried one by one, then PIL decodes the refused one."""
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(encode(textured(i, 48, 40), quality=90))
    refused = paths[1].stat().st_size
    real = gpu_decode.decode_jpeg
    calls = []

    def picky(data, **kw):
        calls.append(len(data) if isinstance(data, list) else 1)
        if any(t.numel() == refused for t in (data if isinstance(data, list) else [data])):
            raise RuntimeError("Error while decoding JPEG images: unsupported")
        return real(data, **kw)

    monkeypatch.setattr(gpu_decode, "decode_jpeg", picky)
    dataset = load_split(write_list(tmp_path, "train", [(p.name, 0) for p in paths]))
    got = compute_features(encoder, dataset, batch_size=3, device="cpu", decode="gpu")
    want = compute_features(encoder, dataset, batch_size=3, device="cpu")
    assert calls == [1, 3, 1, 1, 1]  # the decoder check, the batch, then one by one
    assert len(got) == 3 and got.meta["skipped"] == {}
    torch.testing.assert_close(got.get("default"), want.get("default"), rtol=0, atol=1e-4)


def test_in_memory_images_and_batches_with_nothing_to_decode(encoder, tmp_path):
    images = [colour_image(c, i) for i, c in enumerate(["red", "green", "blue", "red"])]
    dataset = from_images(images, [0, 1, 2, 0])
    got = compute_features(encoder, dataset, batch_size=3, decode="gpu")
    want = compute_features(encoder, dataset, batch_size=3)
    torch.testing.assert_close(got.get("default"), want.get("default"), rtol=0, atol=1e-4)
    (tmp_path / "ok.jpg").write_bytes(encode(colour_image("red", 1)))
    (tmp_path / "bad.jpg").write_bytes(bad_quant_table(colour_image("red", 2)))
    rows = [("missing.jpg", 0), ("bad.jpg", 0), ("ok.jpg", 0)]  # batch 1: unreadable; batch 2: fails at decode
    fs = compute_features(encoder, load_split(write_list(tmp_path, "train", rows)), batch_size=1, decode="gpu")
    assert fs.indices.tolist() == [2] and fs.meta["skipped"] == {"missing_image": 1, "bad_image": 1}


# ------------------------------------------------------------------------------------ the real CUDA path

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_cuda_decode_matches_the_cpu_path(encoder, tmp_path):
    """nvJPEG's IDCT and upsampling differ from libjpeg-turbo's by a grey level here and there, no more."""
    gpu_decode.check_decoder(torch.device("cuda"))
    paths = []
    for i, (w, h) in enumerate([(320, 240), (240, 320), (500, 375), (320, 240), (97, 130)]):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(encode(textured(i, w, h), quality=90, progressive=i == 2, subsampling=i % 3))
    paths.append(tmp_path / "bad.jpg")
    paths[-1].write_bytes(bad_quant_table(textured(9, 64, 64)))
    dataset = load_split(write_list(tmp_path, "train", [(p.name, 0) for p in paths]))
    items = EncodedImages(dataset)
    batch = collate_skipping([items[i] for i in range(len(paths))], stack=pack)
    preprocess = DevicePreprocess(encoder.preprocess)
    on_cpu = prepare_batch(batch, preprocess, CPU)
    on_gpu = prepare_batch(batch, preprocess, torch.device("cuda"))
    assert on_gpu["images"].is_cuda and on_gpu["skipped"].tolist() == on_cpu["skipped"].tolist() == [5]
    diff = (on_gpu["images"].cpu() - on_cpu["images"]).abs()
    assert diff.mean() < 0.02 and diff.max() < 0.5  # 1 grey level ~ 0.015 after normalisation


@pytest.mark.gpu
@needs_cuda
def test_cuda_features_cache_matches_the_cpu_path(encoder, tmp_path):
    root = write_folder(tmp_path / "ds", {"train": 8})
    (root / "train" / "red" / "bad.jpg").write_bytes(bad_quant_table(colour_image("red", 3)))
    (root / "train" / "red" / "truncated.jpg").write_bytes((root / "train" / "red" / "000.jpg").read_bytes()[:-2])
    dataset = load_split(root, "train")
    kw = dict(batch_size=8, num_workers=2, chunk_size=10, device="cuda", precision="fp32", progress=False)
    gpu = extract_features(encoder.path, dataset, tmp_path / "gpu", decode="gpu", **kw)  # a copy on the GPU
    cpu = extract_features(encoder.path, dataset, tmp_path / "cpu", decode="cpu", **kw)
    assert gpu.meta["skipped"] == cpu.meta["skipped"] == {"bad_image": 2}
    assert torch.equal(gpu.indices, cpu.indices)
    torch.testing.assert_close(gpu.get("default"), cpu.get("default"), rtol=0, atol=0.05)

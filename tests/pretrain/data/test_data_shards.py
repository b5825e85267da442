"""Webdataset shards: writing/reading round trip, shard patterns, and corrupt samples skipped with exact counts."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from pipeline_fixtures import corrupt_members, jpeg_bytes, write_tar

from pretrain.data.shards import braceexpand, decode_image, expand_shards, iter_raw_samples, iter_samples, to_rgb
from pretrain.data.synthetic import make_sample, write_shards
from pretrain.runtime.errors import DataError


def test_write_shards_in_img2dataset_layout(tmp_path):
    paths = write_shards(tmp_path, num_samples=7, samples_per_shard=3, seed=2, image_size=24, image_format="png")
    assert [p.name for p in paths] == ["00000.tar", "00001.tar", "00002.tar"]
    with tarfile.open(paths[1]) as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile("000010000.json").read())
    assert names == [f"00001000{j}.{ext}" for j in range(3) for ext in ("png", "txt", "json")]
    assert meta["key"] == "000010000" and meta["caption"] == make_sample(3, seed=2, image_size=24).caption
    assert meta["attributes"]["shape"] == make_sample(3, seed=2, image_size=24).attributes["shape"]
    # byte-identical when written again (fixed mtimes)
    again = write_shards(tmp_path / "again", 7, 3, seed=2, image_size=24, image_format="png")
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(paths, again))


@pytest.mark.parametrize("image_format", ["png", "jpg", "webp"])
def test_round_trip_keys_captions_images(tmp_path, image_format):
    paths = write_shards(tmp_path, num_samples=5, samples_per_shard=2, seed=1, image_size=32, image_format=image_format)
    counts: Counter = Counter()
    got = [(key, image, caption) for p in paths for _, key, image, caption in iter_samples(str(p), counts)]
    assert [key for key, _, _ in got] == ["000000000", "000000001", "000010000", "000010001", "000020000"]
    assert not counts
    for index, (_, image, caption) in enumerate(got):
        expected = make_sample(index, seed=1, image_size=32)
        assert caption == expected.caption and image.mode == "RGB" and image.size == (32, 32)
        diff = np.abs(np.asarray(image, dtype=int) - np.asarray(expected.image, dtype=int))
        assert diff.max() == 0 if image_format == "png" else diff.mean() < 14  # lossy, noisy 32 px


def test_braceexpand():
    assert braceexpand("a{00..02}.tar") == ["a00.tar", "a01.tar", "a02.tar"]
    assert braceexpand("{x,y}/{8..10}") == ["x/8", "x/9", "x/10", "y/8", "y/9", "y/10"]
    assert braceexpand("plain.tar") == ["plain.tar"]


def test_shard_patterns(tmp_path):
    write_shards(tmp_path / "a", 4, 1, image_size=8)
    write_shards(tmp_path / "b", 2, 1, image_size=8)
    a = [str(tmp_path / "a" / f"{i:05d}.tar") for i in range(4)]
    b = [str(tmp_path / "b" / f"{i:05d}.tar") for i in range(2)]
    assert expand_shards(f"{tmp_path}/a/{{00000..00003}}.tar") == a
    assert expand_shards(f"{tmp_path}/a/0000[12].tar") == a[1:3]
    assert expand_shards(f"{tmp_path}/a") == a
    assert expand_shards(f"{tmp_path}/a/{{00000..00001}}.tar,{tmp_path}/b/*.tar") == a[:2] + b
    assert expand_shards(a[3]) == a[3:]
    with pytest.warns(UserWarning, match="do not exist"):
        assert expand_shards(f"{tmp_path}/b/{{00000..00005}}.tar") == b
    for bad in (f"{tmp_path}/c/{{00000..00009}}.tar", f"{tmp_path}/a/*.tgz", str(tmp_path / "empty"), "", "/nope.tar"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(DataError) as err:
            expand_shards(bad)
        assert "\n" not in str(err.value) and (bad in str(err.value) or not bad)


def test_corrupt_samples_are_skipped_with_exact_counts(tmp_path):
    members, good, expected = corrupt_members("k")
    path = write_tar(tmp_path / "bad.tar", members)
    counts: Counter = Counter()
    got = list(iter_samples(str(path), counts))
    assert [caption for _, _, _, caption in got] == good
    assert dict(counts) == expected
    assert [read for read, _, _, _ in got] == [1, 8, 9, 10]  # samples read so far, bad ones included


def _truncated(tmp_path, cut_inside: str):
    """A shard of 5 good samples, cut inside sample 3's image data or inside its header."""
    members = []
    for i in range(5):
        members += [(f"{i:09d}.jpg", jpeg_bytes(i)), (f"{i:09d}.txt", f"caption {i}".encode())]
    path = write_tar(tmp_path / "t.tar", members)
    with tarfile.open(path) as tar:
        info = tar.getmember("000000003.jpg")
    cut = info.offset_data + 100 if cut_inside == "data" else info.offset + 200
    if cut_inside == "boundary":
        cut = info.offset
    path.write_bytes(path.read_bytes()[:cut])
    return path


@pytest.mark.parametrize("cut_inside", ["data", "header", "boundary"])
def test_truncated_shard_keeps_earlier_samples_and_counts_once(tmp_path, cut_inside):
    path = _truncated(tmp_path, cut_inside)
    counts: Counter = Counter()
    captions = [caption for _, _, _, caption in iter_samples(str(path), counts)]
    # a cut before sample 3's first member was read leaves sample 2 open; it may be incomplete, so it is dropped
    assert captions == ["caption 0", "caption 1"] + (["caption 2"] if cut_inside == "data" else [])
    assert dict(counts) == {"truncated_shard": 1}


def test_unreadable_and_missing_shards(tmp_path):
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(bytes(range(256)) * 8)
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    counts: Counter = Counter()
    for path in (garbage, empty, tmp_path / "gone.tar"):
        assert list(iter_samples(str(path), counts)) == []
    assert dict(counts) == {"unreadable_shard": 3}


def test_resume_skip_does_not_decode_earlier_samples(tmp_path):
    members, good, _ = corrupt_members("k")
    path = write_tar(tmp_path / "bad.tar", members)
    counts: Counter = Counter()
    raw = list(iter_raw_samples(str(path), counts, skip=7))
    assert [r.key for _, r in raw] == ["k7", "k8", "k9"] and not counts
    tail = list(iter_samples(str(path), counts, skip=8))
    assert [c for _, _, _, c in tail] == good[2:] and not counts


def test_gzipped_shard_and_nested_keys(tmp_path):
    path = tmp_path / "x.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in [
            ("dir/a.jpg", jpeg_bytes(0)),
            ("dir/a.txt", b"first"),
            ("other/a.jpg", jpeg_bytes(1)),
            ("other/a.txt", b"second"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    counts: Counter = Counter()
    got = [(key, caption) for _, key, _, caption in iter_samples(str(path), counts)]
    assert got == [("dir/a", "first"), ("other/a", "second")] and not counts
    path.write_bytes(path.read_bytes()[:-40])
    assert len(list(iter_samples(str(path), counts))) <= 2 and counts["truncated_shard"] == 1


def grey_16bit(size: int = 64) -> np.ndarray:
    """A 16-bit ramp over the full 0..65535 range (a medical or raw-sensor greyscale image)."""
    return (np.arange(size * size).reshape(size, size) * (65535 // (size * size - 1))).astype(np.uint16)


def test_a_16bit_png_is_scaled_to_8_bits_not_clipped_white(tmp_path):
    pixels = grey_16bit()
    path = tmp_path / "grey16.png"
    Image.fromarray(pixels).save(path)  # a real 16-bit greyscale PNG (PIL mode I;16)
    with Image.open(path) as written:
        assert written.mode == "I;16"
    counts = Counter()
    image = decode_image(path.read_bytes(), counts)
    assert image is not None and image.mode == "RGB" and not counts
    rgb = np.asarray(image).astype(np.float64)
    assert abs(rgb.mean() - pixels.mean() / 257) < 0.5  # convert("RGB") alone clips to 255: mean ~255
    assert rgb.min() == 0 and rgb.max() == 255 and (rgb[..., 0] == rgb[..., 2]).all()


def test_every_wide_mode_is_scaled():
    pixels = grey_16bit()
    want = pixels.mean() / 257
    big_endian = Image.frombytes("I;16B", pixels.shape[::-1], pixels.astype(">u2").tobytes())
    cases = {
        "I;16B": big_endian,
        "I": Image.fromarray(pixels.astype(np.int32)),  # 0..65535: read as 16-bit
        "F": Image.fromarray(pixels.astype(np.float32) / 65535),  # 0..1: unit range
    }
    for mode, image in cases.items():
        assert image.mode == mode
        assert abs(np.asarray(to_rgb(image)).mean() - want) < 0.5, mode
    eight_bit = Image.fromarray(np.full((4, 4), 200, np.int32))  # e.g. convert("I") of an 8-bit image
    assert np.asarray(to_rgb(eight_bit)).max() == 200
    signed = Image.fromarray(np.array([[-5, 0], [5, 15]], np.int32))  # no natural range: min..max
    assert np.asarray(to_rgb(signed))[..., 0].tolist() == [[0, 64], [128, 255]]

"""Pre-resizing shards: shortest side capped, aspect kept, captions copied, corrupt samples dropped and counted."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

import numpy as np
from PIL import Image
from pipeline_fixtures import corrupt_members, write_tar

from pretrain.data.resize import main, resize_shards
from pretrain.data.shards import iter_samples
from pretrain.data.synthetic import write_shards


def _image_bytes(size: tuple[int, int], fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def test_resize_caps_the_short_side_and_keeps_captions(tmp_path):
    big = _image_bytes((300, 120), "JPEG")
    small = _image_bytes((50, 40), "JPEG")
    members = [
        ("a.jpg", big),
        ("a.txt", b"wide"),
        ("a.json", b'{"caption": "wide", "key": "a"}'),
        ("b.jpg", small),
        ("b.txt", b"small"),
        ("c.png", _image_bytes((90, 200), "PNG")),
        ("c.txt", b"tall"),
    ]
    (tmp_path / "src").mkdir()
    write_tar(tmp_path / "src" / "00000.tar", members)
    counts = resize_shards(str(tmp_path / "src"), tmp_path / "out", short_side=60, workers=1)
    assert counts["samples"] == 3 and counts["resized"] == 2 and counts["shards"] == 1
    with tarfile.open(tmp_path / "out" / "00000.tar") as tar:
        names = tar.getnames()
        files = {n: tar.extractfile(n).read() for n in names}
    assert names == ["a.jpg", "a.txt", "a.json", "b.jpg", "b.txt", "c.jpg", "c.txt"]
    assert Image.open(io.BytesIO(files["a.jpg"])).size == (150, 60)
    assert Image.open(io.BytesIO(files["c.jpg"])).size == (60, 133)
    assert files["b.jpg"] == small  # already small enough: copied, not re-encoded
    assert json.loads(files["a.json"])["caption"] == "wide" and files["c.txt"] == b"tall"


def test_resize_drops_corrupt_samples_with_counts_in_parallel(tmp_path):
    members, good, expected = corrupt_members("k")
    (tmp_path / "src").mkdir()
    write_tar(tmp_path / "src" / "00000.tar", members)
    write_shards(tmp_path / "src", 4, 2, image_size=80)  # overwrites 00000/00001 with good shards ...
    write_tar(tmp_path / "src" / "00002.tar", members)  # ... so the faulty one goes to 00002
    counts = resize_shards(f"{tmp_path}/src/{{00000..00002}}.tar", tmp_path / "out", short_side=40, workers=2)
    assert counts["shards"] == 3 and counts["samples"] == 4 + len(good) and counts["resized"] == 4
    assert {k: counts[k] for k in expected} == expected
    read: Counter = Counter()
    captions = [c for _, _, _, c in iter_samples(str(tmp_path / "out" / "00002.tar"), read)]
    assert captions == good and not read  # nothing left to skip
    sizes = [img.size for _, _, img, _ in iter_samples(str(tmp_path / "out" / "00000.tar"), read)]
    assert sizes == [(40, 40), (40, 40)]


def test_cli(tmp_path, capsys):
    write_shards(tmp_path / "src", 2, 2, image_size=64)
    main([str(tmp_path / "src"), str(tmp_path / "out"), "--short-side", "32", "--workers", "1"])
    assert "samples=2" in capsys.readouterr().out

"""Helpers for the data tests: tar shards written member by member, so tests can plant exact corruptions."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import torch
from PIL import Image

from pretrain.data.synthetic import make_sample


def jpeg_bytes(index: int, size: int = 32) -> bytes:
    """A real JPEG of synthetic sample `index`."""
    buf = io.BytesIO()
    make_sample(index, image_size=size).image.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def png_bytes(colour: tuple[int, int, int] = (10, 200, 30), size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A plain tar with exactly these (name, data) members, in order."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def corrupt_members(prefix: str) -> tuple[list[tuple[str, bytes]], list[str], dict[str, int]]:
    """Members of a shard that starts and ends with good samples and has one of each sample-level fault.

    Returns (members, captions of the good samples in order, expected skip counts).
    """
    good = [f"{prefix} good {i}" for i in range(4)]
    members = [
        (f"{prefix}0.jpg", jpeg_bytes(0)),
        (f"{prefix}0.txt", good[0].encode()),
        (f"{prefix}1.jpg", b"this is not a jpeg"),  # bad_image
        (f"{prefix}1.txt", b"undecodable image"),
        (f"{prefix}2.jpg", jpeg_bytes(2)[:150]),  # bad_image: truncated JPEG data
        (f"{prefix}2.txt", b"truncated image"),
        (f"{prefix}3.jpg", jpeg_bytes(3)),  # missing_caption
        (f"{prefix}4.jpg", jpeg_bytes(4)),
        (f"{prefix}4.txt", b"  \n"),  # empty_caption
        (f"{prefix}5.jpg", jpeg_bytes(5)),
        (f"{prefix}5.txt", b"caf\xe9 au lait"),  # bad_caption_encoding (latin-1)
        (f"{prefix}6.txt", b"a caption without an image"),  # missing_image
        (f"{prefix}7.png", png_bytes()),
        (f"{prefix}7.json", json.dumps({"caption": good[1], "key": "x"}).encode()),
        (f"{prefix}8.webp", _webp_bytes()),
        (f"{prefix}8.txt", good[2].encode()),
        (f"{prefix}8.json", b'{"caption": "the .txt wins"}'),
        (f"{prefix}9.jpg", jpeg_bytes(9)),
        (f"{prefix}9.txt", good[3].encode()),
    ]
    counts = {
        "bad_image": 2,
        "missing_caption": 1,
        "empty_caption": 1,
        "bad_caption_encoding": 1,
        "missing_image": 1,
    }
    return members, good, counts


def _webp_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buf, format="WEBP")
    return buf.getvalue()


def fake_encode_text(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """A picklable stand-in tokenizer: bytes of the caption, padded to 16."""
    ids = torch.zeros(len(captions), 16, dtype=torch.long)
    lengths = torch.zeros(len(captions), dtype=torch.long)
    for row, caption in enumerate(captions):
        data = list(caption.encode())[:16]
        ids[row, : len(data)] = torch.tensor(data, dtype=torch.long)
        lengths[row] = len(data)
    return ids, lengths

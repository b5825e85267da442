"""Procedural captioned images: coloured shapes on a noisy background, with truthful, varied captions.

The demo and the tests train on these, and later stages reuse the vocabularies (probe labels, zero-shot
classes, VQA questions). A sample is a pure function of (seed, index), so a dataset needs no disk; the
writers below store it in the real formats (webdataset shards, JSONL/CSV + image folder) when a test or
the demo wants files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "diamond", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 190),
    "orange": (250, 130, 10),
}
COUNTS: tuple[int, ...] = (1, 2, 3)
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "center")
SIZES: tuple[str, ...] = ("small", "large")

# Words a caption may use; every entry is true of its key, so a model can tie tokens to pixels.
SHAPE_WORDS: dict[str, tuple[tuple[str, str], ...]] = {
    "circle": (("circle", "circles"), ("disk", "disks")),
    "square": (("square", "squares"),),
    "triangle": (("triangle", "triangles"),),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
    "diamond": (("diamond", "diamonds"), ("rhombus", "rhombi")),
    "star": (("star", "stars"),),
}
COUNT_WORDS: dict[int, tuple[str, ...]] = {1: ("a", "one", "1"), 2: ("two", "2", "a pair of"), 3: ("three", "3")}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left side", "in the left part of the image"),
    "right": ("on the right", "at the right side", "in the right part of the image"),
    "top": ("at the top", "in the upper part of the image", "near the top"),
    "bottom": ("at the bottom", "in the lower part of the image", "near the bottom"),
    "center": ("in the center", "in the middle", "at the centre of the image"),
}
OPPOSITE: dict[str, str] = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}

# Regions (x0, y0, x1, y1) as fractions of the image; a group is laid out along the region's long axis.
_REGIONS: dict[str, tuple[float, float, float, float]] = {
    "left": (0.02, 0.08, 0.42, 0.92),
    "right": (0.58, 0.08, 0.98, 0.92),
    "top": (0.08, 0.02, 0.92, 0.42),
    "bottom": (0.08, 0.58, 0.92, 0.98),
    "center": (0.17, 0.3, 0.83, 0.7),
}
_SIZE_FRACTION = {"small": 0.13, "large": 0.21}  # object diameter as a fraction of the image side
_SUPERSAMPLE = 2  # shapes are drawn at 2x and downsampled, for anti-aliased edges


@dataclass
class SyntheticSample:
    """One procedural image with its caption and the ground truth the caption was written from."""

    image: Image.Image
    caption: str
    attributes: dict[str, Any] = field(default_factory=dict)


def _rng_seed(seed: int, index: int, tag: str) -> int:
    """A 64-bit seed from (seed, index, tag), stable across processes and Python versions."""
    digest = hashlib.blake2b(f"{seed}:{index}:{tag}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _scene(rng: random.Random) -> dict[str, Any]:
    """Draw the scene's attributes: a main group of 1-3 equal objects and maybe one distractor."""
    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    count, position, size = rng.choice(COUNTS), rng.choice(POSITIONS), rng.choice(SIZES)
    objects = [{"shape": shape, "colour": colour, "size": size, "position": position} for _ in range(count)]
    distractor = None
    if count < 3 and position in OPPOSITE and rng.random() < 0.5:
        distractor = {
            "shape": rng.choice([s for s in SHAPES if s != shape]),
            "colour": rng.choice([c for c in COLOURS if c != colour]),
            "size": rng.choice(SIZES),
            "position": OPPOSITE[position],
        }
        objects.append(distractor)
    return {
        "shape": shape,
        "colour": colour,
        "count": count,
        "position": position,
        "size": size,
        "distractor": distractor,
        "objects": objects,
    }


def _layout(objects: list[dict[str, Any]], image_size: int, rng: random.Random) -> None:
    """Give every object a pixel box inside its region, groups spread along the region's long axis."""
    by_position: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_position.setdefault(obj["position"], []).append(obj)
    for position, group in by_position.items():
        x0, y0, x1, y1 = (v * image_size for v in _REGIONS[position])
        horizontal = (x1 - x0) >= (y1 - y0)
        n = len(group)
        for slot, obj in enumerate(group):
            d = _SIZE_FRACTION[obj["size"]] * image_size
            if horizontal:
                cell = (x1 - x0) / n
                cx_lo, cx_hi = x0 + slot * cell + d / 2, x0 + (slot + 1) * cell - d / 2
                cy_lo, cy_hi = y0 + d / 2, y1 - d / 2
            else:
                cell = (y1 - y0) / n
                cy_lo, cy_hi = y0 + slot * cell + d / 2, y0 + (slot + 1) * cell - d / 2
                cx_lo, cx_hi = x0 + d / 2, x1 - d / 2
            cx = rng.uniform(cx_lo, max(cx_lo, cx_hi))
            cy = rng.uniform(cy_lo, max(cy_lo, cy_hi))
            obj["box"] = [round(cx - d / 2, 2), round(cy - d / 2, 2), round(cx + d / 2, 2), round(cy + d / 2, 2)]


def _background(image_size: int, np_rng: np.random.Generator) -> np.ndarray:
    """A low-saturation grey with a gradient, faint stripes and pixel noise (float32, HxWx3)."""
    base = (np_rng.uniform(95, 165) + np_rng.uniform(-12, 12, size=3)).astype(np.float32)
    ramp = np.linspace(0.0, 1.0, image_size, dtype=np.float32)
    yy, xx = ramp[:, None], ramp[None, :]
    angle = np_rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None] * np.float32(np_rng.uniform(-30, 30))
    freq, axis = np_rng.uniform(3, 12), xx if np_rng.random() < 0.5 else yy
    stripes = np.sin(2 * np.pi * freq * axis)[..., None] * np.float32(np_rng.uniform(0, 8))
    noise = np_rng.standard_normal(size=(image_size, image_size, 3), dtype=np.float32) * 10.0
    return (base + gradient + stripes).astype(np.float32) + noise


def _polygon(shape: str, box: list[float]) -> list[tuple[float, float]] | None:
    """Vertices of a polygonal shape inside `box`, or None for shapes drawn otherwise."""
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "star":
        pts = []
        for i in range(10):
            radius = r if i % 2 == 0 else r * 0.45
            theta = -np.pi / 2 + i * np.pi / 5
            pts.append((cx + radius * np.cos(theta), cy + radius * np.sin(theta)))
        return pts
    if shape == "cross":
        t = r * 0.36
        return [
            (cx - t, y0), (cx + t, y0), (cx + t, cy - t), (x1, cy - t), (x1, cy + t), (cx + t, cy + t),
            (cx + t, y1), (cx - t, y1), (cx - t, cy + t), (x0, cy + t), (x0, cy - t), (cx - t, cy - t),
        ]  # fmt: skip
    return None


def _draw_objects(objects: list[dict[str, Any]], image_size: int) -> tuple[Image.Image, Image.Image]:
    """The objects drawn on a transparent canvas: (RGB layer, alpha mask), both anti-aliased."""
    big = image_size * _SUPERSAMPLE
    layer = Image.new("RGB", (big, big))
    mask = Image.new("L", (big, big))
    draw_rgb, draw_mask = ImageDraw.Draw(layer), ImageDraw.Draw(mask)
    for obj in objects:
        box = [v * _SUPERSAMPLE for v in obj["box"]]
        colour = COLOURS[obj["colour"]]
        poly = _polygon(obj["shape"], box)
        for draw, fill in ((draw_rgb, colour), (draw_mask, 255)):
            if obj["shape"] == "circle":
                draw.ellipse(box, fill=fill)
            elif obj["shape"] == "square":
                draw.rectangle(box, fill=fill)
            else:
                draw.polygon(poly, fill=fill)
    size = (image_size, image_size)
    return layer.resize(size, Image.Resampling.BOX), mask.resize(size, Image.Resampling.BOX)


def _render(attributes: dict[str, Any], image_size: int, np_rng: np.random.Generator) -> Image.Image:
    """Composite the objects over the textured background and add a little sensor noise."""
    background = _background(image_size, np_rng)
    layer, mask = _draw_objects(attributes["objects"], image_size)
    alpha = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    pixels = background * (1 - alpha) + np.asarray(layer, dtype=np.float32) * alpha
    pixels += np_rng.standard_normal(size=pixels.shape, dtype=np.float32) * 4.0
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), "RGB")


def _phrase(obj_count: int, size: str, colour: str, shape: str, rng: random.Random, with_size: bool) -> str:
    """'two small red circles' / 'a blue rhombus': count, optional size, colour, shape word."""
    singular, plural = rng.choice(SHAPE_WORDS[shape])
    words = [rng.choice(COUNT_WORDS[obj_count])]
    if with_size:
        words.append(rng.choice(SIZE_WORDS[size]))
    words += [colour, singular if obj_count == 1 else plural]
    return " ".join(words)


def caption_for(attributes: dict[str, Any], rng: random.Random) -> str:
    """A caption that is true of `attributes`, worded by one of several templates picked with `rng`."""
    count, position = attributes["count"], attributes["position"]
    main = _phrase(count, attributes["size"], attributes["colour"], attributes["shape"], rng, rng.random() < 0.5)
    where = rng.choice(POSITION_PHRASES[position])
    template = rng.randrange(6)
    if template == 0:
        text = f"{main} {where}"
    elif template == 1:
        text = f"a photo of {main} {where}"
    elif template == 2:
        text = f"{where}, there {'is' if count == 1 else 'are'} {main}"
    elif template == 3:
        text = f"an image showing {main} {where}"
    elif template == 4:
        text = f"a picture of {main}"
    else:
        text = f"{main} {where} on a {rng.choice(('noisy', 'textured', 'grey'))} background"
    distractor = attributes.get("distractor")
    if distractor is not None and rng.random() < 0.5:
        other = _phrase(1, distractor["size"], distractor["colour"], distractor["shape"], rng, False)
        text += f" and {other} {rng.choice(POSITION_PHRASES[distractor['position']])}"
    return text


def describe(index: int, seed: int = 0, image_size: int = 64) -> tuple[dict[str, Any], str]:
    """Sample `index` of dataset `seed` without its pixels: (ground truth, caption), as `make_sample` draws them."""
    rng = random.Random(_rng_seed(seed, index, "scene"))
    attributes = _scene(rng)
    _layout(attributes["objects"], image_size, rng)
    return attributes, caption_for(attributes, rng)


def make_sample(index: int, seed: int = 0, image_size: int = 64) -> SyntheticSample:
    """The sample number `index` of the synthetic dataset `seed`: a deterministic image, caption and ground truth."""
    attributes, caption = describe(index, seed, image_size)
    image = _render(attributes, image_size, np.random.default_rng(_rng_seed(seed, index, "pixels")))
    return SyntheticSample(image=image, caption=caption, attributes=attributes)


def synthetic_references(index: int, seed: int, size: int, count: int) -> list[str]:
    """The sample's caption plus `count - 1` other wordings of the same scene (references for captioning/retrieval)."""
    attributes, caption = describe(index, seed, size)
    return [caption] + [caption_for(attributes, random.Random(seed * 7919 + index * 31 + k))
                               for k in range(1, count)]  # fmt: skip


class SyntheticCaptions(torch.utils.data.Dataset):
    """Map-style view of `make_sample` over indices [0, num_samples)."""

    def __init__(self, num_samples: int, seed: int = 0, image_size: int = 64) -> None:
        self.num_samples, self.seed, self.image_size = num_samples, seed, image_size

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> SyntheticSample:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} synthetic samples")
        return make_sample(index, self.seed, self.image_size)


def _encode(image: Image.Image, image_format: str, quality: int = 90) -> bytes:
    """The image as file bytes in `image_format` (jpg, png or webp)."""
    buf = io.BytesIO()
    pil_format = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[image_format]
    kwargs: dict[str, Any] = {"quality": quality} if pil_format in ("JPEG", "WEBP") else {}
    image.save(buf, format=pil_format, **kwargs)
    return buf.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """Append a regular file with a fixed mtime, so equal inputs give byte-identical shards."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def sample_key(shard: int, index_in_shard: int) -> str:
    """img2dataset's key: shard number in 5 digits, then the index in the shard in 4 ('000000012')."""
    return f"{shard:05d}{index_in_shard:04d}"


def write_shards(
    out_dir: str | Path,
    num_samples: int,
    samples_per_shard: int,
    seed: int = 0,
    image_size: int = 64,
    image_format: str = "jpg",
) -> list[Path]:
    """Write samples [0, num_samples) as webdataset tars `{00000..N}.tar` in the img2dataset layout."""
    if samples_per_shard < 1 or samples_per_shard > 10000:
        raise ValueError(f"samples_per_shard must be in [1, 10000], got {samples_per_shard}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range((num_samples + samples_per_shard - 1) // samples_per_shard):
        path = out / f"{shard:05d}.tar"
        tmp = path.with_suffix(".tar.tmp")
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for j in range(samples_per_shard):
                index = shard * samples_per_shard + j
                if index >= num_samples:
                    break
                sample = make_sample(index, seed, image_size)
                key = sample_key(shard, j)
                meta = {
                    "key": key,
                    "caption": sample.caption,
                    "status": "success",
                    "width": image_size,
                    "height": image_size,
                    "index": index,
                    "attributes": sample.attributes,
                }
                _add_member(tar, f"{key}.{image_format}", _encode(sample.image, image_format))
                _add_member(tar, f"{key}.txt", sample.caption.encode())
                _add_member(tar, f"{key}.json", json.dumps(meta).encode())
        tmp.replace(path)
        paths.append(path)
    return paths


def write_list(
    out_dir: str | Path,
    num_samples: int,
    fmt: Literal["jsonl", "csv"] = "jsonl",
    seed: int = 0,
    image_size: int = 64,
    image_format: str = "png",
) -> Path:
    """Write images into `out_dir/images/` and a list file `out_dir/train.{jsonl,csv}` with image + caption."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(num_samples):
        sample = make_sample(index, seed, image_size)
        rel = f"images/{index:09d}.{image_format}"
        (out / rel).write_bytes(_encode(sample.image, image_format))
        rows.append({"image": rel, "caption": sample.caption})
    path = out / f"train.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif fmt == "csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["image", "caption"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        raise ValueError(f"fmt must be 'jsonl' or 'csv', got {fmt!r}")
    return path

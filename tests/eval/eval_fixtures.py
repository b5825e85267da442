"""Helpers for the eval tests: tiny encoder artifacts, JPEG class folders, list files and synthetic features."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pretrain.encoder import default_preprocess, save_encoder
from pretrain.features import FeatureSet
from pretrain.models.backbone import build_backbone
from pretrain.models.presets import get_preset

COLOURS = {"blue": (30, 60, 220), "green": (30, 180, 40), "red": (220, 30, 30)}


def tiny_encoder(path: Path, seed: int = 0, preset: str = "vit_tiny") -> Path:
    """A random artifact of `preset` (default `vit_tiny`: 32 px, patch 8) whose weights depend on `seed`."""
    torch.manual_seed(seed)
    arch = get_preset(preset)
    model = build_backbone(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return save_encoder(path, model, arch, default_preprocess(arch), {"method": "superclass"})


def colour_image(colour: str, index: int, size: int = 40) -> Image.Image:
    """A noisy image of one flat colour (a class a random encoder can still separate)."""
    rng = np.random.default_rng(index)
    pixels = np.array(COLOURS[colour], dtype=np.float32) + rng.normal(0, 12, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_folder(root: Path, per_class: dict[str, int], classes: list[str] | None = None) -> Path:
    """root/<split>/<class>/<i>.jpg with `per_class[split]` real JPEGs per class."""
    for s, (split, n) in enumerate(per_class.items()):
        for c, colour in enumerate(classes or list(COLOURS)):
            folder = root / split / colour
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                colour_image(colour, s * 100_000 + c * 1000 + i).save(folder / f"{i:03d}.jpg", quality=90)
    return root


def write_list(root: Path, split: str, rows: list[tuple[str, object]], fmt: str = "jsonl") -> Path:
    """root/<split>.<fmt> with `image` and `label` columns (images must exist already, or not, on purpose)."""
    path = root / f"{split}.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"image": i, "label": y}) + "\n" for i, y in rows))
    else:
        with path.open("w", newline="") as f:
            writer = csv.writer(f, delimiter="\t" if fmt == "tsv" else ",")
            writer.writerow(["image", "label"])
            writer.writerows(rows)
    return path


def feature_set(x: torch.Tensor, y: torch.Tensor, num_classes: int, offset: int = 0) -> FeatureSet:
    """A FeatureSet over given features; keys start at `offset` so train/test sets do not collide."""
    n = len(y)
    meta = {"classes": [str(i) for i in range(num_classes)], "encoder": {}, "skipped": {}}
    keys = torch.arange(offset, offset + n)
    return FeatureSet({"default": x.float()}, y.long(), torch.arange(n), keys, meta)


def separable(n: int, num_classes: int, dim: int = 16, seed: int = 0, offset: int = 0) -> FeatureSet:
    """Well-separated Gaussian clusters (margin >> noise), balanced classes, shifted off the origin."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(1234)) * 4 + 3
    y = torch.arange(n) % num_classes
    x = centres[y] + 0.3 * torch.randn(n, dim, generator=g)
    return feature_set(x, y, num_classes, offset)


def random_labels(n: int, num_classes: int, dim: int = 16, seed: int = 0, offset: int = 0) -> FeatureSet:
    """Gaussian features with labels independent of them."""
    g = torch.Generator().manual_seed(seed)
    return feature_set(
        torch.randn(n, dim, generator=g), torch.randint(0, num_classes, (n,), generator=g), num_classes, offset
    )

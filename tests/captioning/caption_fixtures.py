"""Helpers for the captioning tests: a COCO Karpathy split file with real images written by the test."""

import json
from pathlib import Path

from pretrain.data.synthetic import make_sample


def karpathy_fixture(root: Path) -> Path:
    """dataset_coco.json with 10 images in train/restval/test and one test image missing on disk."""
    images = []
    splits = ["train"] * 5 + ["restval"] * 2 + ["test"] * 3
    for i, split in enumerate(splits):
        folder = "val2014" if split != "train" else "train2014"
        name = f"COCO_{folder}_{i:012d}.jpg"
        sample = make_sample(i, seed=3, image_size=48)
        if i != 9:  # the last test image is missing: counted and skipped
            (root / folder).mkdir(parents=True, exist_ok=True)
            sample.image.save(root / folder / name)
        sentences = [{"raw": sample.caption, "tokens": sample.caption.split()}] * 2
        images.append({"filepath": folder, "filename": name, "imgid": i, "cocoid": 1000 + i, "split": split,
                       "sentences": sentences})  # fmt: skip
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path

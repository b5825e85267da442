"""Labelled image datasets for the frozen probes: class folders, CSV/JSONL lists, in-memory images, synthetic tasks.

Layouts (`load_split(data, split)` picks one by looking at `data`):
    folders   DATA/train/<class>/*.jpg, DATA/val/<class>/*.jpg (ImageNet's ILSVRC2012 layout once `val/` is
              sorted into class folders, e.g. with the usual `valprep.sh`). Classes = sorted subfolders of
              `DATA/train`; every class of another split must be one of them (else a DataError).
    lists     DATA/train.jsonl|csv|tsv and DATA/val.jsonl|csv|tsv, or one list file; columns `image` (a path
              relative to the list's folder, or absolute) and `label` (a class name, or an int class index).
              Classes: sorted names (or 0..max) of the train list.
    synthetic `synthetic:<attribute>[:N]` (e.g. `synthetic:colour:300`): N in-memory images per split (default
              300) of the synthetic captions' scenes labelled by one attribute; the splits are held-out draws
              (`SYNTHETIC_SPLIT_SEEDS`; pretraining draws seed 0), so a tiny recipe can probe itself offline.
Oxford-IIIT Pets (https://www.robots.ox.ac.uk/~vgg/data/pets/, `images.tar.gz` + `annotations.tar.gz`; TFDS
`oxford_iiit_pet` uses trainval 3,680 / test 3,669) and Stanford Cars (196 classes, train 8,144 / test 8,041;
the original site is gone, the Kaggle/HF mirrors keep the devkit) work through the folder layout:
DATA/train/<class>/*.jpg and DATA/test/<class>/*.jpg, evaluated with `val_split=test` (big_vision's splits).

Undecodable or missing images are skipped where they are read and counted by the feature extractor, which
reports the counts in every output; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from pretrain.data.lists import json_lines, read_list
from pretrain.data.shards import decode_image, to_rgb
from pretrain.data.synthetic import COLOURS, COUNTS, POSITIONS, SHAPES, SIZES, make_sample
from pretrain.runtime.errors import DataError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
LIST_EXTS = (".jsonl", ".csv", ".tsv")
# attribute name -> the class vocabulary of `synthetic_attribute_dataset`
ATTRIBUTES: dict[str, tuple[Any, ...]] = {
    "shape": SHAPES,
    "colour": tuple(COLOURS),
    "count": COUNTS,
    "position": POSITIONS,
    "size": SIZES,
}
SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_SPLIT_SEEDS = {"train": 2, "val": 3, "test": 1}  # dataset seeds; the tiny recipes pretrain on seed 0
SYNTHETIC_IMAGE_SIZE = 40  # the tiny recipes' synthetic_image_size


@dataclass
class LabelledImages(torch.utils.data.Dataset):
    """Images (file paths or PIL images) with integer labels into `classes`.

    `dataset[i]` is `(transform(image), label, i)`, or `(None, label, i)` when the image is missing or cannot
    be decoded (the collate function of `pretrain.features` counts those). Without a transform the image is PIL.
    """

    items: list[str | Image.Image]
    labels: list[int]
    classes: list[str]
    source: str = "memory"  # the folder or list file it came from
    split: str = ""
    transform: Callable[[Image.Image], Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.items) != len(self.labels):
            raise ValueError(f"{len(self.items)} images but {len(self.labels)} labels")
        bad = [y for y in self.labels if not 0 <= y < len(self.classes)]
        if bad:
            raise DataError(f"{self.source}: label {bad[0]} outside the {len(self.classes)} classes")

    def __len__(self) -> int:
        return len(self.items)

    def load_image(self, index: int) -> Image.Image | None:
        """The RGB image of item `index`, or None when its file is missing or undecodable."""
        item = self.items[index]
        if isinstance(item, Image.Image):
            return to_rgb(item)
        try:
            data = Path(item).read_bytes()
        except OSError:
            return None
        return decode_image(data, Counter())  # the reason is re-derived in the main process (skip_reason)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        image = self.load_image(index)
        if image is not None and self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index], index

    def with_transform(self, transform: Callable[[Image.Image], Any] | None) -> LabelledImages:
        """The same items with another transform (the lists are shared, not copied)."""
        return LabelledImages(self.items, self.labels, self.classes, self.source, self.split, transform)

    def skip_reason(self, index: int) -> str:
        """Why item `index` was skipped: 'missing_image' (no such file) or 'bad_image' (undecodable)."""
        item = self.items[index]
        return "missing_image" if isinstance(item, str) and not os.path.isfile(item) else "bad_image"

    def keys(self) -> torch.Tensor:
        """A 63-bit identity per item: the hash of its absolute path (files) or of its pixels (PIL images).

        The few-shot evaluator checks that no support image is also a test image with these.
        """
        return torch.tensor([_hash63(_item_identity(item)) for item in self.items], dtype=torch.int64)

    def signature(self) -> str:
        """A digest of (classes, items, labels): a feature cache refuses to mix two datasets."""
        h = hashlib.sha256(json.dumps(self.classes).encode())
        for item, label in zip(self.items, self.labels):
            h.update(_item_identity(item))
            h.update(f"\0{label}\n".encode())
        return h.hexdigest()

    def class_counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for y in self.labels:
            counts[y] += 1
        return counts


def _item_identity(item: str | Image.Image) -> bytes:
    if isinstance(item, Image.Image):
        return hashlib.blake2b(item.tobytes() + repr((item.mode, item.size)).encode(), digest_size=16).digest()
    return os.path.abspath(item).encode()


def _hash63(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


# ------------------------------------------------------------------------------------------------ folders


def folder_classes(split_dir: Path) -> list[str]:
    """Sorted names of the class subfolders of `split_dir` (hidden ones ignored)."""
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: no such folder (expected <root>/<split>/<class>/<image files>)")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{split_dir}: no class subfolders (expected <root>/<split>/<class>/<image files>)")
    return classes


def image_folder(root: str | Path, split: str = "train", classes: Sequence[str] | None = None) -> LabelledImages:
    """`root/split/<class>/*.{jpg,png,...}`; `classes` (default: the sorted subfolders of `root/train`).

    A class folder of `split` that is not in `classes` is a DataError; files are listed in sorted order.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist")
    split_dir = root / split
    if classes is None:
        classes = folder_classes(root / "train")
    classes = list(classes)
    present = folder_classes(split_dir)
    unknown = sorted(set(present) - set(classes))
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise DataError(f"{split_dir}: class folder(s) {', '.join(unknown[:3])}{more} not among the train classes")
    index = {name: i for i, name in enumerate(classes)}
    items: list[str | Image.Image] = []
    labels: list[int] = []
    for name in present:
        files = sorted(
            e.path
            for e in os.scandir(split_dir / name)
            if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTS)
        )
        items += files
        labels += [index[name]] * len(files)
    if not items:
        raise DataError(f"{split_dir}: no image files ({', '.join(IMAGE_EXTS)}) in the class folders")
    return LabelledImages(items, labels, classes, source=str(split_dir), split=split)


# -------------------------------------------------------------------------------------------------- lists


def _read_label_rows(path: Path, image_root: str | None) -> tuple[list[str], list[str | int]]:
    """(absolute image paths, raw labels) of a list file; JSONL labels may be ints, CSV labels are strings."""
    if path.suffix.lower() in (".csv", ".tsv"):
        rows = read_list(path, image_key="image", caption_key="label", image_root=image_root)
        return rows.images, list(rows.captions)
    if not path.is_file():
        raise DataError(f"list file {path} does not exist (expected a .jsonl, .csv or .tsv file)")
    if path.suffix.lower() != ".jsonl":
        raise DataError(f"list file {path}: unknown format '{path.suffix}' (expected .jsonl, .csv or .tsv)")
    images, labels = [], []
    root = Path(image_root).expanduser() if image_root else path.parent
    for number, row in json_lines(path):
        if not isinstance(row, dict) or not isinstance(row.get("image"), str):
            raise DataError(f"{path}:{number}: expected an object with a string 'image' and a 'label'")
        label = row.get("label")
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise DataError(f"{path}:{number}: field 'label' must be a class name or an int, got {label!r}")
        images.append(row["image"] if os.path.isabs(row["image"]) else str(root / row["image"]))
        labels.append(label)
    if not images:
        raise DataError(f"list file {path} has no rows")
    return images, labels


def _normalise_labels(raw: list[str | int], path: Path) -> list[str | int]:
    """Ints stay ints; strings that are all digits become ints; names stay names; a mix is a DataError."""
    if all(isinstance(x, str) and x.strip().isdigit() for x in raw):
        return [int(x) for x in raw]
    kinds = {type(x) for x in raw}
    if kinds != {str} and kinds != {int}:
        raise DataError(f"{path}: labels mix class names and integers")
    if kinds == {int} and min(raw) < 0:  # type: ignore[type-var]
        raise DataError(f"{path}: negative class index {min(raw)}")  # type: ignore[type-var]
    return [x.strip() if isinstance(x, str) else x for x in raw]


def image_list(
    path: str | Path, classes: Sequence[str] | None = None, image_root: str | None = None, split: str = ""
) -> LabelledImages:
    """A JSONL/CSV/TSV list with `image` and `label` columns; `classes` (default: from this list's labels).

    Integer labels index `classes` directly (default classes '0'..'max'); names must be among `classes`.
    """
    path = Path(path).expanduser()
    images, raw = _read_label_rows(path, image_root)
    labels = _normalise_labels(raw, path)
    if isinstance(labels[0], int):
        if classes is None:
            classes = [str(i) for i in range(max(labels) + 1)]  # type: ignore[type-var]
        over = [y for y in labels if y >= len(classes)]  # type: ignore[operator]
        if over:
            raise DataError(f"{path}: class index {over[0]} but the train classes number {len(classes)}")
        return LabelledImages(images, labels, list(classes), source=str(path), split=split)  # type: ignore[arg-type]
    if classes is None:
        classes = sorted(set(labels))  # type: ignore[arg-type]
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({y for y in labels if y not in index})  # type: ignore[misc]
    if unknown:
        raise DataError(f"{path}: label(s) {', '.join(map(str, unknown[:3]))} not among the train classes")
    return LabelledImages(images, [index[y] for y in labels], list(classes), source=str(path), split=split)


def _list_file(root: Path, split: str) -> Path | None:
    found = [root / f"{split}{ext}" for ext in LIST_EXTS if (root / f"{split}{ext}").is_file()]
    if len(found) > 1:
        raise DataError(f"{root}: several list files for split '{split}' ({', '.join(p.name for p in found)})")
    return found[0] if found else None


def load_split(data: str | Path, split: str = "train", train_split: str = "train") -> LabelledImages:
    """The `split` of the dataset at `data`: class folders, per-split list files, or a single list file.

    The class list always comes from `train_split`, so labels agree between the splits of one dataset.
    """
    if str(data).startswith(SYNTHETIC_PREFIX):
        return synthetic_split(str(data), split)
    data = Path(data).expanduser()
    if data.is_file():
        return image_list(data, split=split)
    if not data.is_dir():
        raise DataError(f"dataset {data} does not exist (expected a folder or a .jsonl/.csv list)")
    if (data / train_split).is_dir():
        return image_folder(data, split, classes=folder_classes(data / train_split))
    train_list = _list_file(data, train_split)
    if train_list is not None:
        own = _list_file(data, split)
        if own is None:
            raise DataError(f"{data}: no list file for split '{split}' ({split}.jsonl, .csv or .tsv)")
        classes = image_list(train_list).classes
        return image_list(own, classes=classes, split=split)
    raise DataError(
        f"{data}: expected class folders {data}/{train_split}/<class>/ or list files {data}/{train_split}.jsonl|csv"
    )


# ----------------------------------------------------------------------------------------------- in memory


def from_images(
    images: Sequence[Image.Image], labels: Sequence[int], classes: Sequence[str] | None = None, split: str = ""
) -> LabelledImages:
    """A dataset over PIL images in memory (classes default to '0'..'max label')."""
    labels = [int(y) for y in labels]
    if classes is None:
        classes = [str(i) for i in range(max(labels) + 1)] if labels else []
    return LabelledImages(list(images), labels, [str(c) for c in classes], source="memory", split=split)


def synthetic_attribute_dataset(
    attribute: str, n: int, seed: int = 0, image_size: int = 64
) -> tuple[list[Image.Image], list[int], list[str]]:
    """`n` synthetic images (`pretrain.data.synthetic.make_sample`, dataset `seed`) labelled by one attribute.

    `attribute`: shape, colour, count, position or size of the main object group. Use a seed the encoder
    did not train on for a held-out task. The classes are the attribute's whole vocabulary.
    """
    if attribute not in ATTRIBUTES:
        raise DataError(f"unknown synthetic attribute '{attribute}' (known: {', '.join(ATTRIBUTES)})")
    vocab = ATTRIBUTES[attribute]
    images, labels = [], []
    for index in range(n):
        sample = make_sample(index, seed=seed, image_size=image_size)
        images.append(sample.image)
        labels.append(vocab.index(sample.attributes[attribute]))
    return images, labels, [str(v) for v in vocab]


def parse_synthetic(spec: str) -> tuple[str, int]:
    """(attribute, images per split) of a `synthetic:<attribute>[:N]` data spec (one-line DataError if malformed)."""
    parts = spec[len(SYNTHETIC_PREFIX) :].split(":")
    expected = f"expected synthetic:<attribute>[:N] with attribute one of {', '.join(ATTRIBUTES)}"
    if len(parts) > 2 or parts[0] not in ATTRIBUTES:
        raise DataError(f"data {spec!r}: {expected}")
    if len(parts) == 1:
        return parts[0], 300
    if not parts[1].isdigit() or int(parts[1]) < 1:
        raise DataError(f"data {spec!r}: N must be a positive integer ({expected})")
    return parts[0], int(parts[1])


def synthetic_split(spec: str, split: str) -> LabelledImages:
    """The `split` (train, val or test) of a `synthetic:<attribute>[:N]` task, as images in memory."""
    attribute, n = parse_synthetic(spec)
    if split not in SYNTHETIC_SPLIT_SEEDS:
        raise DataError(f"data {spec!r}: no split '{split}' (synthetic tasks have {', '.join(SYNTHETIC_SPLIT_SEEDS)})")
    images, labels, classes = synthetic_attribute_dataset(
        attribute, n, seed=SYNTHETIC_SPLIT_SEEDS[split], image_size=SYNTHETIC_IMAGE_SIZE
    )
    return LabelledImages(list(images), labels, classes, source=spec, split=split)


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held-out) index tensors: `fraction` of every class with >= 2 items is held out (at least one)."""
    rng = random.Random(seed)
    keep, hold = [], []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten().tolist()
        rng.shuffle(idx)
        n_hold = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, round(fraction * len(idx))))
        hold += idx[:n_hold]
        keep += idx[n_hold:]
    return torch.tensor(sorted(keep), dtype=torch.long), torch.tensor(sorted(hold), dtype=torch.long)

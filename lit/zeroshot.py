"""Zero-shot classification with a LiT model, as OpenCLIP / CLIP_benchmark compute it.

Classifier: for each class, encode every template filled with the class name, L2-normalise each embedding,
average over the templates and L2-normalise again -> W [D, C]. logits = 100 * normalised image features @ W;
top-1 / top-5 accuracy in percent (`pretrain.metrics.topk_accuracy`, as the papers report it). The 1000 OpenAI
ImageNet class names and the 80 OpenAI templates ship as package data (`lit/data/imagenet_classnames.txt`,
`lit/data/openai_templates.txt`, written out from OpenCLIP's `zero_shot_metadata`). Any folder dataset works:
classes are the sorted subfolders of its `train` split when it has one, else of the evaluated split itself
(`--train-split` picks another), named by a classnames file (one line per class, in sorted-folder order;
ImageNet's wnid folders sort into OpenAI's order). Folder names that are ImageNet wnids (n01440764, ...) are
refused without `--classnames`: the prompts would read "a photo of a n01440764.".

    superclass lit zeroshot --model runs/lit/lit --data /data/imagenet --split val --classnames imagenet --out DIR
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from pretrain.metrics import topk_accuracy
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.results import write_metrics, write_predictions

DATA_DIR = Path(__file__).parent / "data"
BUILTIN_CLASSNAMES = {"imagenet": DATA_DIR / "imagenet_classnames.txt"}
BUILTIN_TEMPLATES = {"openai": DATA_DIR / "openai_templates.txt", "simple": None}
SIMPLE_TEMPLATE = "a photo of a {}."
FOLDER_NAMES = "folders"  # --classnames folders: the folder names themselves, even when they are wnids
WNID = re.compile(r"n\d{8}")
POOL = "default"  # the encoder's own pooling: what LiTModel.image_features computes


def read_lines(path: str | Path) -> list[str]:
    """Non-empty stripped lines of a text file (a missing file is a DataError)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_templates(spec: str | Path | None = "openai") -> list[str]:
    """Prompt templates: 'openai' (80), 'simple' (1), or a file with one template containing '{}' per line."""
    spec = "openai" if spec is None else str(spec)
    if spec == "simple":
        return [SIMPLE_TEMPLATE]
    lines = read_lines(BUILTIN_TEMPLATES[spec] if spec in BUILTIN_TEMPLATES else spec)
    bad = [t for t in lines if t.count("{}") != 1]
    if bad:
        raise DataError(f"{spec}: template {bad[0]!r} must contain exactly one '{{}}'")
    return lines


def load_classnames(spec: str | Path | None, classes: Sequence[str]) -> list[str]:
    """Class names for the dataset's `classes`: 'imagenet', a file (one per class, same order), or the folders.

    Without a spec, folder names that are all ImageNet wnids are a UserError (pass `--classnames imagenet`);
    'folders' keeps the folder names as they are.
    """
    if spec is None and classes and all(WNID.fullmatch(c) for c in classes):
        raise UserError(
            f"the {len(classes)} class folders are ImageNet wnids ({classes[0]}, ...), so prompts would read "
            f"'a photo of a {classes[0]}.'; pass --classnames imagenet (or a names file, or 'folders' to keep them)"
        )
    if spec is None or str(spec) == FOLDER_NAMES:
        return [c.replace("_", " ") for c in classes]
    spec = str(spec)
    names = read_lines(BUILTIN_CLASSNAMES.get(spec, spec))
    if len(names) != len(classes):
        raise DataError(f"{spec}: {len(names)} class names but the dataset has {len(classes)} classes")
    return names


@torch.no_grad()
def zero_shot_classifier(
    encode_text: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    tokenizer: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
    classnames: Sequence[str],
    templates: Sequence[str],
    device: str | torch.device = "cpu",
    classes_per_batch: int = 10,
) -> torch.Tensor:
    """W [D, C]: per class, the renormalised mean of the L2-normalised template embeddings (OpenCLIP's)."""
    columns = []
    for start in range(0, len(classnames), classes_per_batch):
        chunk = classnames[start : start + classes_per_batch]
        texts = [t.format(c) for c in chunk for t in templates]
        ids, lengths = tokenizer(texts)
        emb = F.normalize(encode_text(ids.to(device), lengths.to(device)).float(), dim=-1)
        emb = emb.reshape(len(chunk), len(templates), -1).mean(1)
        columns.append(F.normalize(emb, dim=-1))
    return torch.cat(columns).T


def zero_shot_logits(image_features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """100 x normalised image features @ W (CLIP's fixed evaluation scale)."""
    return 100.0 * F.normalize(image_features.float(), dim=-1) @ classifier


@torch.no_grad()
def encode_images(
    model: Any,
    items: Sequence[str | Image.Image],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> tuple[torch.Tensor, list[int], dict[str, int]]:
    """Normalised image embeddings of the readable `items`, their indices, and skip counts (missing/undecodable).

    `pretrain.features.compute_features` does the work: DataLoader workers decode and apply the encoder's eval
    transform in parallel, the (locked) tower pools as it was trained, and LiT's projection maps the features.
    """
    from pretrain.data.labelled import LabelledImages
    from pretrain.encoder import Encoder
    from pretrain.features import compute_features

    encoder = Encoder(model.backbone, model.arch, model.encoder_config, _as_path(model.encoder_path))
    images = LabelledImages(list(items), [0] * len(items), ["image"], source="lit-eval")
    precision = "bf16" if getattr(model, "image_dtype", "fp32") == "bf16" else "fp32"
    features = compute_features(encoder, images, (POOL,), batch_size, num_workers, precision=precision)
    embeddings = model.project_image(features.get(POOL).to(device)).float().cpu()
    reasons = features.meta["skipped"]
    skipped = {"missing": int(reasons.get("missing_image", 0)), "undecodable": int(reasons.get("bad_image", 0))}
    return embeddings, features.indices.tolist(), skipped


def _as_path(path: str | Path | None) -> Path | None:
    return Path(path) if path else None


def class_split(data: str | Path, split: str, train_split: str | None = None) -> str:
    """The split whose classes define the labels: `train_split`, else `train` if the dataset has one, else `split`.

    Zero-shot never trains, so an evaluation split on its own (e.g. only ImageNet `val/`) is enough.
    """
    from pretrain.data.labelled import LIST_EXTS

    if train_split:
        return train_split
    root = Path(data).expanduser()
    has_train = (root / "train").is_dir() or any((root / f"train{ext}").is_file() for ext in LIST_EXTS)
    return "train" if root.is_dir() and has_train else split


def evaluate_zeroshot(
    model_dir: str | Path,
    data: str | Path,
    out_dir: str | Path,
    split: str = "val",
    classnames: str | Path | None = None,
    templates: str | Path | None = "openai",
    batch_size: int = 64,
    device: str = "cpu",
    encoder: str | Path | None = None,
    train_split: str | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Zero-shot top-1/top-5 (percent) of the LiT model at `model_dir` on a folder/list dataset.

    Writes `out_dir/metrics.json` and `out_dir/predictions.jsonl`, each atomically and alone: whatever else is
    in `out_dir` (e.g. the LiT run itself) stays. `encoder` overrides the encoder artifact path the model names.
    """
    from lit.model import lit_tokenizer, load_lit
    from pretrain.data.labelled import load_split  # the shared folder/list dataset reader

    model = load_lit(model_dir, device=device, encoder=encoder)
    dataset = load_split(data, split, train_split=class_split(data, split, train_split))
    names = load_classnames(classnames, dataset.classes)
    temps = load_templates(templates)
    classifier = zero_shot_classifier(model.encode_text, lit_tokenizer(model_dir), names, temps, device)
    feats, kept, skipped = encode_images(model, dataset.items, batch_size, device, num_workers)
    if not kept:
        raise DataError(f"{data}: none of the {len(dataset)} images of split '{split}' could be read ({skipped})")
    labels = torch.tensor([dataset.labels[i] for i in kept], dtype=torch.long)
    logits = zero_shot_logits(feats.to(classifier.device), classifier).cpu()
    metrics: dict[str, Any] = {
        **topk_accuracy(logits, labels),
        "num_images": len(kept),
        "num_classes": len(names),
        "num_templates": len(temps),
        "skipped": skipped,
        "model": str(model_dir),
        "data": str(data),
        "split": split,
    }
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices.tolist()
    rows = [
        {"index": i, "item": str(dataset.items[i]), "label": int(y), "top5": t}
        for i, y, t in zip(kept, labels.tolist(), top)
    ]
    write_metrics(out_dir, metrics)
    write_predictions(out_dir, rows)
    return metrics

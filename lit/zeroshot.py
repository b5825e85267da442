"""Zero-shot classification with a LiT model, as OpenCLIP / CLIP_benchmark compute it.

Classifier: for each class, encode every template filled with the class name, L2-normalise each embedding,
average over the templates and L2-normalise again -> W [D, C]. logits = 100 * normalised image features @ W;
top-1 / top-5 accuracy. The 1000 OpenAI ImageNet class names and the 80 OpenAI templates ship as package data
(`lit/data/imagenet_classnames.txt`, `lit/data/openai_templates.txt`, written out from OpenCLIP's
`zero_shot_metadata`). Any folder dataset works: classes are its sorted `train` (or split) subfolders, named by
a classnames file (one line per class, in sorted-folder order; ImageNet's wnid folders sort into OpenAI's order).

    superclass lit zeroshot --model runs/lit/lit --data /data/imagenet --split val --classnames imagenet --out DIR
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from pretrain.runtime.atomic import write_dir_atomically
from pretrain.runtime.errors import DataError

DATA_DIR = Path(__file__).parent / "data"
BUILTIN_CLASSNAMES = {"imagenet": DATA_DIR / "imagenet_classnames.txt"}
BUILTIN_TEMPLATES = {"openai": DATA_DIR / "openai_templates.txt", "simple": None}
SIMPLE_TEMPLATE = "a photo of a {}."


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
    """Class names for the dataset's `classes`: from 'imagenet', a file (one per class, same order), or the folders."""
    if spec is None:
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


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """{'top1': ..., 'top5': ...}: the fraction of rows whose label is among the k highest logits."""
    out = {}
    for k in ks:
        k_eff = min(k, logits.shape[1])
        top = logits.topk(k_eff, dim=1).indices
        out[f"top{k}"] = float((top == labels[:, None]).any(1).float().mean()) if len(labels) else 0.0
    return out


@torch.no_grad()
def encode_images(
    model: Any,
    items: Sequence[str | Image.Image],
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> tuple[torch.Tensor, list[int], dict[str, int]]:
    """Normalised image embeddings of the readable `items`, their indices, and skip counts (missing/undecodable)."""
    feats, kept, skipped = [], [], {"missing": 0, "undecodable": 0}
    batch, batch_idx = [], []

    def flush() -> None:
        if batch:
            feats.append(model.encode_image(torch.stack(batch).to(device)).float().cpu())
            kept.extend(batch_idx)
            batch.clear()
            batch_idx.clear()

    for i, item in enumerate(items):
        if isinstance(item, Image.Image):
            image = item
        else:
            if not Path(item).is_file():
                skipped["missing"] += 1
                continue
            try:
                with Image.open(item) as im:
                    image = im.convert("RGB")
            except (OSError, ValueError):
                skipped["undecodable"] += 1
                continue
        batch.append(transform(image.convert("RGB")))
        batch_idx.append(i)
        if len(batch) == batch_size:
            flush()
    flush()
    dim = getattr(model, "embed_dim", 0)
    return (torch.cat(feats) if feats else torch.zeros(0, dim)), kept, skipped


def _write_results(out_dir: Path, metrics: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    def write(tmp: Path) -> None:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        (tmp / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    write_dir_atomically(out_dir, write)


def evaluate_zeroshot(
    model_dir: str | Path,
    data: str | Path,
    out_dir: str | Path,
    split: str = "val",
    classnames: str | Path | None = None,
    templates: str | Path | None = "openai",
    batch_size: int = 64,
    device: str = "cpu",
) -> dict[str, Any]:
    """Zero-shot top-1/top-5 of the LiT model at `model_dir` on a folder/list dataset; writes metrics + predictions."""
    from lit.model import lit_tokenizer, load_lit
    from pretrain.data.labelled import load_split  # the shared folder/list dataset reader

    model = load_lit(model_dir, device=device)
    dataset = load_split(data, split)
    names = load_classnames(classnames, dataset.classes)
    temps = load_templates(templates)
    classifier = zero_shot_classifier(model.encode_text, lit_tokenizer(model_dir), names, temps, device)
    transform = _encoder_transform(model)
    feats, kept, skipped = encode_images(model, dataset.items, transform, batch_size, device)
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
    top = logits.topk(min(5, logits.shape[1]), dim=1).indices.tolist() if len(kept) else []
    rows = [
        {"index": i, "item": str(dataset.items[i]), "label": int(y), "top5": t}
        for i, y, t in zip(kept, labels.tolist(), top)
    ]
    _write_results(Path(out_dir), metrics, rows)
    return metrics


def _encoder_transform(model: Any) -> Callable[[Image.Image], torch.Tensor]:
    from pretrain.encoder import build_preprocess

    return build_preprocess(model.encoder_config["preprocessing"])

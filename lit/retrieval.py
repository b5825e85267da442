"""Image-text retrieval on the Karpathy splits of COCO (5k test) and Flickr30k (1k test), as CLIP_benchmark scores it.

Every caption is a query for text->image recall@k (averaged over captions); every image is a query for
image->text recall@k (averaged over images), where a hit counts if ANY of the image's captions is in the top k.

Karpathy JSON (`dataset_coco.json` / `dataset_flickr30k.json`, read by `pretrain.data.karpathy`, the reader
ClipCap uses too): images are read from ROOT/filepath/filename (or ROOT/filename). Missing or undecodable
images are skipped with their captions and counted in metrics.json. Recalls are fractions (CLIP_benchmark's).

    superclass lit retrieval --model runs/lit/lit --karpathy dataset_coco.json --images /data/coco --out DIR
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from pretrain.data.karpathy import karpathy_split
from pretrain.data.labelled import SYNTHETIC_IMAGE_SIZE, SYNTHETIC_PREFIX, SYNTHETIC_SPLIT_SEEDS
from pretrain.data.synthetic import make_sample, synthetic_references
from pretrain.runtime.errors import DataError
from pretrain.runtime.results import write_metrics


@dataclass
class RetrievalSet:
    """Images (paths, or PIL images for a synthetic set) with their captions; `text_image[j]` is caption j's image."""

    images: list[str | Image.Image]
    captions: list[str]
    text_image: list[int]


def load_karpathy(path: str | Path, image_root: str | Path, split: str = "test") -> RetrievalSet:
    """The `split` of a Karpathy JSON, with image paths under `image_root` (existence is checked when encoding).

    `path` "synthetic:N" (N default 100) gives N held-out synthetic images with 5 wordings each instead
    (the draws of `pretrain.data.labelled.SYNTHETIC_SPLIT_SEEDS`): the tiny LiT recipe's default evaluation.
    """
    if str(path).startswith(SYNTHETIC_PREFIX):
        return synthetic_retrieval_set(str(path), split)
    images: list[str | Image.Image] = []
    captions, text_image = [], []
    for entry in karpathy_split(path, split):
        images.append(str(entry.path(image_root)))
        captions += entry.captions
        text_image += [len(images) - 1] * len(entry.captions)
    if not images:
        raise DataError(f"{path}: no images in split '{split}'")
    return RetrievalSet(images, captions, text_image)


def synthetic_retrieval_set(spec: str, split: str, references: int = 5) -> RetrievalSet:
    """`synthetic:N`: N synthetic images of the held-out draw for `split`, each with `references` wordings."""
    count = spec[len(SYNTHETIC_PREFIX) :] or "100"
    if not count.isdigit() or int(count) < 1:
        raise DataError(f"karpathy {spec!r}: expected synthetic:N with N a positive number of images")
    if split not in SYNTHETIC_SPLIT_SEEDS:
        known = ", ".join(SYNTHETIC_SPLIT_SEEDS)
        raise DataError(f"karpathy {spec!r}: no split '{split}' (synthetic sets have {known})")
    seed, n = SYNTHETIC_SPLIT_SEEDS[split], int(count)
    images: list[str | Image.Image] = []
    captions, text_image = [], []
    for i in range(n):
        images.append(make_sample(i, seed, SYNTHETIC_IMAGE_SIZE).image)
        refs = synthetic_references(i, seed, SYNTHETIC_IMAGE_SIZE, references)
        captions += refs
        text_image += [i] * len(refs)
    return RetrievalSet(images, captions, text_image)


def recall_at_k(
    similarity: torch.Tensor, text_image: Sequence[int] | torch.Tensor, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """CLIP_benchmark's recalls from similarity [N_images, N_texts] and each text's image index.

    image_retrieval_recall@k: text->image, over texts; text_retrieval_recall@k: image->text, any positive in top k.
    """
    n_img, n_txt = similarity.shape
    owner = torch.as_tensor(text_image, dtype=torch.long)
    positive = torch.zeros(n_img, n_txt, dtype=torch.bool)
    positive[owner, torch.arange(n_txt)] = True
    out: dict[str, float] = {}
    for k in ks:
        top_img = similarity.T.topk(min(k, n_img), dim=1).indices  # [N_texts, k]
        t2i = (top_img == owner[:, None]).any(1).float().mean()
        top_txt = similarity.topk(min(k, n_txt), dim=1).indices  # [N_images, k]
        i2t = positive.gather(1, top_txt).any(1).float().mean()
        out[f"image_retrieval_recall@{k}"] = float(t2i)
        out[f"text_retrieval_recall@{k}"] = float(i2t)
    return out


@torch.no_grad()
def encode_texts(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int = 256, device: str = "cpu"):
    """Normalised text embeddings [N, D]."""
    out = []
    for start in range(0, len(texts), batch_size):
        ids, lengths = tokenizer(list(texts[start : start + batch_size]))
        out.append(model.encode_text(ids.to(device), lengths.to(device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.embed_dim)


def retrieval_scores(
    model: Any, tokenizer: Any, data: RetrievalSet, batch_size: int = 64, device: str = "cpu", num_workers: int = 0
) -> tuple[dict[str, float], dict[str, int]]:
    """(recall metrics, skip counts) of `model` on `data`; unreadable images drop out with their captions."""
    from lit.zeroshot import encode_images

    image_feats, kept, skipped = encode_images(model, data.images, batch_size, device, num_workers)
    if not kept:
        raise DataError(f"none of the {len(data.images)} images could be read (first: {data.images[0]})")
    new_index = {old: new for new, old in enumerate(kept)}
    texts = [(c, new_index[i]) for c, i in zip(data.captions, data.text_image) if i in new_index]
    text_feats = encode_texts(model, tokenizer, [c for c, _ in texts], device=device)
    similarity = image_feats @ text_feats.T
    metrics = recall_at_k(similarity, [i for _, i in texts])
    counts = {**skipped, "images": len(kept), "texts": len(texts)}
    return metrics, counts


def evaluate_retrieval(
    model_dir: str | Path,
    karpathy: str | Path,
    images: str | Path,
    out_dir: str | Path,
    split: str = "test",
    batch_size: int = 64,
    device: str = "cpu",
    encoder: str | Path | None = None,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Recall@1/5/10 both ways of the LiT model at `model_dir`, into `out_dir/metrics.json`.

    The file is written atomically on its own: other files in `out_dir` stay. `encoder` overrides the encoder
    artifact path the model names.
    """
    from lit.model import lit_tokenizer, load_lit

    data = load_karpathy(karpathy, images, split)
    model = load_lit(model_dir, device=device, encoder=encoder)
    recalls, counts = retrieval_scores(model, lit_tokenizer(model_dir), data, batch_size, device, num_workers)
    metrics = {**recalls, "num_images": counts.pop("images"), "num_texts": counts.pop("texts"), "skipped": counts}
    metrics.update({"model": str(model_dir), "karpathy": str(karpathy), "split": split})
    write_metrics(out_dir, metrics)
    return metrics

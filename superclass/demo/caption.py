"""The demo's ClipCap stage: train `clipcap_tiny` on an encoder's synthetic-image features, then CIDEr on held-out
images beside one constant caption scored the same way; the held-out captions also feed the report's gallery."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from captioning.decode import caption_features
from captioning.recipes import get_recipe
from captioning.score import compute_metrics
from captioning.task import load_captioner
from captioning.train import split_features, train
from pretrain.data.synthetic import synthetic_references
from pretrain.encoder import load_encoder
from superclass.demo.config import HELD_OUT_SEED, IMAGE_SIZE, DemoConfig
from superclass.demo.report import Report, Row


def caption_scores(encoder_dir: str | Path, out_dir: str | Path, steps: int = 300) -> dict[str, Any]:
    """Train `clipcap_tiny` on synthetic-image features; CIDEr on held-out images and of a constant caption.

    Also returns `captions`: held-out image index -> its caption (the val split is the demo's held-out seed).
    """
    recipe = get_recipe("clipcap_tiny")
    data = recipe.data
    if (data.synthetic_seed + 1, data.synthetic_image_size) != (HELD_OUT_SEED, IMAGE_SIZE):
        raise ValueError(f"clipcap_tiny's val images are not the demo's held-out images (seed {HELD_OUT_SEED})")
    recipe.encoder = str(encoder_dir)
    recipe.run.out_dir = str(Path(out_dir))
    recipe.run.steps = steps
    recipe.run.device = "cpu"
    recipe.run.evals = []  # scored below, beside the constant-caption baseline
    captioner = train(recipe)
    model, tokenizer, _ = load_captioner(captioner)
    recipe.model.tokens = model.cfg.tokens
    cache = split_features(recipe, "val", load_encoder(encoder_dir), "cpu")
    texts = caption_features(model, tokenizer, cache.features, recipe.decode)
    results = {i: t for i, t in enumerate(texts)}
    gts = {i: cache.captions[k] for i, k in enumerate(cache.keys)}
    train_caps = [synthetic_references(i, data.synthetic_seed, data.synthetic_image_size, 1)[0]
                  for i in range(min(500, data.synthetic_samples))]  # fmt: skip
    constant = constant_caption(train_caps)
    model_m = compute_metrics(results, gts, spice=False)
    base_m = compute_metrics({i: constant for i in gts}, gts, spice=False)
    report = {
        "cider": model_m["CIDEr"],
        "baseline_cider": base_m["CIDEr"],
        "baseline_caption": constant,
        "images": len(results),
        "examples": texts[:5],
        "captioner": str(captioner),
    }
    (Path(out_dir) / "caption_demo.json").write_text(json.dumps(report, indent=2) + "\n")
    return {**report, "captions": {int(k): t for k, t in zip(cache.keys, texts)}}


def constant_caption(captions: list[str]) -> str:
    """The training caption sharing the most words with the others: a strong constant-prediction baseline."""
    words = Counter(w for c in captions for w in set(c.split()))
    return max(captions[:200], key=lambda c: sum(words[w] for w in set(c.split())) / (1 + abs(len(c.split()) - 6)))


def caption_stage(report: Report, method: str, artifact: Path, cfg: DemoConfig) -> dict[int, str]:
    """ClipCap on one encoder; adds its CIDEr row; returns its caption of each held-out image (by index)."""
    print(f"[demo] ClipCap on the {method} encoder: {cfg.caption_steps} steps, then CIDEr ...", flush=True)
    caption = caption_scores(artifact, cfg.out / method / "caption", steps=cfg.caption_steps)
    report.add(Row("caption", method, "CIDEr on held-out images", caption["cider"], caption["baseline_cider"]))
    return caption["captions"]

"""The demo's LiT stage: train `lit_tiny` on synthetic captions, then zero-shot and retrieval scores.

Held-out samples come from the demo's held-out seed (training uses seed 0), so every number is on unseen images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lit.model import lit_tokenizer, load_lit
from lit.recipes import get_recipe
from lit.retrieval import RetrievalSet, recall_at_k
from lit.train import train
from lit.zeroshot import encode_images, zero_shot_classifier, zero_shot_logits
from pretrain.data.synthetic import COLOURS, SHAPES
from pretrain.metrics import topk_accuracy
from pretrain.runtime.config import resolve
from superclass.demo.config import DemoConfig, held_out
from superclass.demo.report import Report, Row

TASKS = {
    "colour": (tuple(COLOURS), ["a photo of a {} shape.", "a {} object."]),
    "shape": (SHAPES, ["a photo of a {}."]),
}


def lit_scores(
    encoder_dir: str | Path,
    out_dir: str | Path,
    steps: int = 300,
    n_eval: int = 200,
    n_retrieval: int = 100,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Train lit_tiny (+ `key=value` overrides) on `encoder_dir`; zero-shot and retrieval scores beside chance.

    Every score and chance level is a fraction in [0, 1] (`lit_stage` reports them as percentages).
    """
    recipe = resolve(get_recipe("lit_tiny"), None, ["run.evals=[]", *overrides])  # scored below, on more images
    recipe.encoder = str(encoder_dir)
    recipe.run.out_dir = str(out_dir)
    recipe.run.steps = steps
    recipe.run.save_every = 0
    lit_dir = train(recipe)
    model, tokenizer = load_lit(lit_dir), lit_tokenizer(lit_dir)
    size = int(recipe.data.synthetic_image_size)
    samples = held_out(max(n_eval, n_retrieval), image_size=size)
    feats, _, _ = encode_images(model, [s.image for s in samples])
    out: dict[str, Any] = {"lit_dir": str(lit_dir), "steps": steps}
    for name, (classes, templates) in TASKS.items():
        classifier = zero_shot_classifier(model.encode_text, tokenizer, list(classes), templates)
        labels = torch.tensor([classes.index(s.attributes[name]) for s in samples[:n_eval]])
        acc = topk_accuracy(zero_shot_logits(feats[:n_eval], classifier), labels, ks=(1,))["top1"]
        out[f"zeroshot_{name}_top1"] = acc / 100  # fractions here, like the recalls (the demo report scales)
        out[f"zeroshot_{name}_chance"] = 1.0 / len(classes)
    pairs = RetrievalSet([""] * n_retrieval, [s.caption for s in samples[:n_retrieval]], list(range(n_retrieval)))
    ids, lengths = tokenizer(pairs.captions)
    with torch.no_grad():
        text = model.encode_text(ids, lengths)
    recalls = recall_at_k(feats[:n_retrieval] @ text.T, pairs.text_image, ks=(1,))
    out["retrieval_t2i_r1"] = recalls["image_retrieval_recall@1"]
    out["retrieval_i2t_r1"] = recalls["text_retrieval_recall@1"]
    out["retrieval_chance"] = 1.0 / n_retrieval
    return out


def lit_stage(report: Report, method: str, artifact: Path, cfg: DemoConfig) -> None:
    """LiT on one encoder; adds its zero-shot colour and text-to-image R@1 rows (percent) to the report."""
    print(f"[demo] LiT on the {method} encoder: {cfg.downstream_steps} steps, zero-shot, retrieval ...", flush=True)
    lit = lit_scores(artifact, cfg.out / method / "lit", steps=cfg.downstream_steps, n_eval=cfg.eval_images)
    colour = "zero-shot top-1, colour classes (%)"
    report.add(Row("lit", method, colour, 100 * lit["zeroshot_colour_top1"], 100 * lit["zeroshot_colour_chance"]))
    r1 = "text-to-image R@1 of 100 (%)"
    report.add(Row("lit", method, r1, 100 * lit["retrieval_t2i_r1"], 100 * lit["retrieval_chance"]))

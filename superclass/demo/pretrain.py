"""The demo's pretraining stage: a tiny SuperClass or CLIP encoder on the demo's shards, then what its objective
learned on held-out images (SuperClass: does its head rank the image's colour word first among the colour words;
CLIP: image-to-text retrieval)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pretrain.data.synthetic import COLOURS
from pretrain.encoder import load_encoder
from pretrain.labels import build_tokenizer
from pretrain.recipes import PretrainRecipe, get_recipe
from pretrain.runtime.config import resolve
from pretrain.train import load_trained_task, train
from superclass.demo.config import DemoConfig, held_out
from superclass.demo.report import Report, Row


@dataclass
class Pretrained:
    """One pretrained encoder of the demo: its method, artifact and run directory."""

    method: str
    artifact: Path
    run_dir: Path


def pretrain_recipe(name: str, cfg: DemoConfig, shards: Path) -> PretrainRecipe:
    """The named tiny recipe pointed at the demo's shards, with the demo's steps, on CPU."""
    return resolve(
        get_recipe(name),
        None,
        [
            f"run.out_dir={cfg.out / name.split('_')[0]}",
            f"run.steps={cfg.steps}",
            f"run.save_every={max(cfg.steps // 2, 1)}",
            "run.device=cpu",
            "data.kind=shards",
            f"data.train={shards}",
        ],
    )


@torch.no_grad()
def superclass_colour_accuracy(task: nn.Module, recipe: PretrainRecipe, n: int) -> float:
    """How often the head scores the held-out image's colour word above the other colour words (6-way).

    The head predicts caption tokens from pixels alone, so this checks it learned image content, not just
    which tokens are frequent (wording tokens in the synthetic captions are random and carry no signal).
    """
    tokenizer = build_tokenizer(recipe.labels)
    colour_ids = [int(tokenizer([name])[0][0, 1]) for name in COLOURS]  # first word piece after SOT
    samples = held_out(n)
    preprocess = load_encoder(Path(recipe.run.out_dir) / "encoder").preprocess
    logits = task.head(task.backbone(torch.stack([preprocess(s.image) for s in samples])))
    predicted = logits[:, colour_ids].argmax(dim=1)
    truth = torch.tensor([list(COLOURS).index(s.attributes["colour"]) for s in samples])
    return 100 * (predicted == truth).float().mean().item()


@torch.no_grad()
def clip_retrieval_at_1(task: nn.Module, recipe: PretrainRecipe, n: int) -> float:
    """Image-to-text R@1 over n held-out pairs (a hit: the image's own caption ranks first)."""
    samples = held_out(n)
    tokenizer = build_tokenizer(recipe.labels)
    preprocess = load_encoder(Path(recipe.run.out_dir) / "encoder").preprocess
    image_emb = task.model.encode_image(torch.stack([preprocess(s.image) for s in samples]))
    text_emb = task.model.encode_text(tokenizer([s.caption for s in samples])[0])
    ranks = (image_emb @ text_emb.T).argmax(dim=1)
    return 100 * (ranks == torch.arange(n)).float().mean().item()


def pretrain_stage(report: Report, name: str, cfg: DemoConfig, shards: Path) -> Pretrained:
    """Pretrain recipe `name` on the shards and add its held-out check to the report."""
    recipe = pretrain_recipe(name, cfg, shards)
    print(f"[demo] pretraining {name} for {cfg.steps} steps ...", flush=True)
    artifact = train(recipe)
    task = load_trained_task(recipe).eval()
    method = recipe.method
    if method == "superclass":
        accuracy = superclass_colour_accuracy(task, recipe, cfg.eval_images)
        report.add(Row("pretrain", method, "colour word ranked first by the head, 6-way (%)", accuracy, 100 / 6))
    else:
        r1 = clip_retrieval_at_1(task, recipe, cfg.eval_images)
        report.add(Row("pretrain", method, f"image-to-text R@1 of {cfg.eval_images} (%)", r1, 100 / cfg.eval_images))
    return Pretrained(method, artifact, Path(recipe.run.out_dir))

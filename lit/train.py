"""Build a LiT run from a recipe (encoder artifact, text tower, tokenizer, data) and hand it to the shared loop."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from lit.model import build_lit_model, resolve_labels
from lit.recipes import LiTRecipe
from lit.task import LIT_DIR, LiTTask
from pretrain.data.stream import build_loader
from pretrain.labels import build_tokenizer
from pretrain.runtime.config import to_dict, to_yaml
from pretrain.runtime.distributed import DistInfo, init_distributed, seed_everything
from pretrain.runtime.errors import ConfigError
from pretrain.runtime.loop import Trainer, local_batch_size


def check_recipe(recipe: LiTRecipe) -> None:
    """Catch settings that would fail late with a one-line error now."""
    if not recipe.encoder:
        raise ConfigError("encoder is empty: pass the encoder artifact, e.g. encoder=runs/superclass_tiny/encoder")
    if not Path(recipe.encoder).expanduser().is_dir():
        raise ConfigError(f"encoder: {recipe.encoder} is not a directory (expected an encoder artifact)")
    if recipe.data.kind in ("shards", "list") and not recipe.data.train:
        raise ConfigError(
            f"data.train is empty: point it at the {recipe.data.kind} (e.g. data.train='/data/{{0..9}}.tar')"
        )


def build_task(recipe: LiTRecipe, dist_info: DistInfo) -> LiTTask:
    """The LiT task on the recipe's encoder artifact, seeded identically on every rank by the caller."""
    labels = resolve_labels(recipe.text, recipe.labels)
    model = build_lit_model(
        Path(recipe.encoder).expanduser(), recipe.text, labels, recipe.unlocked_groups, recipe.image_dtype
    )
    provenance = {"encoder": str(Path(recipe.encoder).absolute()), "config": to_dict(recipe)}
    return LiTTask(model, recipe.text, labels, dist_info.rank, dist_info.world_size, provenance=provenance)


def train(recipe: LiTRecipe) -> Path:
    """Run a LiT recipe to the end (resuming if asked) and return the LiT model directory."""
    check_recipe(recipe)
    dist_info = init_distributed(recipe.run.device)
    if recipe.run.num_threads > 0:
        torch.set_num_threads(recipe.run.num_threads)
    tokenizer = build_tokenizer(resolve_labels(recipe.text, recipe.labels))
    seed_everything(recipe.run.seed)  # identical initial weights on every rank
    task = build_task(recipe, dist_info)
    seed_everything(recipe.run.seed + dist_info.rank)
    pre = task.model.encoder_config["preprocessing"]
    transform = dataclasses.replace(
        recipe.data.transform, image_size=int(pre["crop"]), mean=tuple(pre["mean"]), std=tuple(pre["std"])
    )
    loader = build_loader(
        dataclasses.replace(recipe.data, transform=transform),
        tokenizer,
        local_batch_size(recipe.run, dist_info.world_size),
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        seed=recipe.run.seed,
    )
    trainer = Trainer(task, loader, recipe.run, recipe.optim, dist_info, config_yaml=to_yaml(recipe))
    trainer.fit()
    return Path(recipe.run.out_dir) / LIT_DIR

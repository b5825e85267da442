"""Build a LiT run from a recipe (encoder artifact, text tower, tokenizer, data) and hand it to the shared loop."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from lit.data import CachedFeatures, build_feature_cache, cached_loader, image_loader
from lit.model import build_lit_model, resolve_labels
from lit.recipes import LiTRecipe
from lit.task import LIT_DIR, LiTTask
from pretrain.data.stream import BatchLoader
from pretrain.encoder import build_preprocess
from pretrain.labels import build_tokenizer
from pretrain.runtime.config import to_dict, to_yaml
from pretrain.runtime.distributed import DistInfo, process_group, seed_everything
from pretrain.runtime.errors import ConfigError
from pretrain.runtime.loop import Trainer, local_batch_size
from pretrain.runtime.precision import resolve_precision
from pretrain.runtime.threads import use_cpu_threads

CACHE_DIR = "feature_cache"  # the default cache root inside the run directory


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
    if recipe.cache_features:
        if recipe.unlocked_groups:
            raise ConfigError(
                f"cache_features needs a fully locked image tower; unlocked_groups={recipe.unlocked_groups} trains it"
            )
        if recipe.augment:
            raise ConfigError("cache_features stores eval-transform features; set augment=false (no augmentation)")
        if recipe.data.kind not in ("list", "synthetic"):
            raise ConfigError(f"cache_features needs data.kind list or synthetic not {recipe.data.kind}")


def build_task(recipe: LiTRecipe, dist_info: DistInfo) -> LiTTask:
    """The LiT task on the recipe's encoder artifact, seeded identically on every rank by the caller."""
    labels = resolve_labels(recipe.text, recipe.labels)
    model = build_lit_model(
        Path(recipe.encoder).expanduser(), recipe.text, labels, recipe.unlocked_groups, recipe.image_dtype
    )
    provenance = {"encoder": str(Path(recipe.encoder).absolute()), "config": to_dict(recipe)}
    return LiTTask(
        model,
        recipe.text,
        labels,
        dist_info.rank,
        dist_info.world_size,
        provenance=provenance,
        cached_features=recipe.cache_features,
    )


def cache_precision(recipe: LiTRecipe, device: torch.device) -> str:
    """The precision the live locked tower runs in: bf16 under the loop's bf16 autocast or as a bf16 tower."""
    autocast_bf16 = resolve_precision(recipe.run.precision, device) == "bf16"
    return "bf16" if autocast_bf16 or recipe.image_dtype == "bf16" else "fp32"


def prepare_cache(recipe: LiTRecipe, dist_info: DistInfo) -> CachedFeatures:
    """The locked tower's features of the recipe's training data, computed once (see lit/data.py)."""
    return build_feature_cache(
        Path(recipe.encoder).expanduser(),
        recipe.data,
        recipe.cache_dir or Path(recipe.run.out_dir) / CACHE_DIR,
        cache_precision(recipe, dist_info.device),
        dist_info.device,
        local_batch_size(recipe.run, dist_info.world_size),
        max(0, recipe.data.num_workers),
        dist_info.is_main,
    )


def precompute_features(recipe: LiTRecipe) -> CachedFeatures:
    """Build the recipe's feature cache without training (`superclass lit features`)."""
    recipe = dataclasses.replace(recipe, cache_features=True)
    check_recipe(recipe)
    with process_group(recipe.run.device) as dist_info:
        return prepare_cache(recipe, dist_info)


def build_train_loader(
    recipe: LiTRecipe, task: LiTTask, dist_info: DistInfo, cache: CachedFeatures | None = None
) -> BatchLoader:
    """Cached features, or images through the train augmentation or (augment=false) the encoder's eval transform."""
    tokenizer = build_tokenizer(task.labels)
    args = (local_batch_size(recipe.run, dist_info.world_size), dist_info.rank, dist_info.world_size, recipe.run.seed)
    if cache is not None:
        return cached_loader(cache, tokenizer, *args)
    pre = task.model.encoder_config["preprocessing"]
    sized = dataclasses.replace(
        recipe.data.transform, image_size=int(pre["crop"]), mean=tuple(pre["mean"]), std=tuple(pre["std"])
    )
    data = dataclasses.replace(recipe.data, transform=sized)  # the encoder's size and normalisation
    return image_loader(data, tokenizer, *args, transform=None if recipe.augment else build_preprocess(pre))


def train(recipe: LiTRecipe) -> Path:
    """Run a LiT recipe to the end (resuming if asked) and return the LiT model directory."""
    check_recipe(recipe)
    with process_group(recipe.run.device) as dist_info:
        use_cpu_threads(recipe.run.num_threads, workers=0 if recipe.cache_features else recipe.data.num_workers)
        # the cache comes before seeding: the same initial weights with or without it
        cache = prepare_cache(recipe, dist_info) if recipe.cache_features else None
        seed_everything(recipe.run.seed)  # identical initial weights on every rank
        task = build_task(recipe, dist_info)
        seed_everything(recipe.run.seed + dist_info.rank)
        loader = build_train_loader(recipe, task, dist_info, cache)
        trainer = Trainer(task, loader, recipe.run, recipe.optim, dist_info, config_yaml=to_yaml(recipe))
        trainer.fit()
    return Path(recipe.run.out_dir) / LIT_DIR

"""Build a pretraining run from a recipe (tokenizer, task, data stream) and hand it to the shared loop."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from pretrain.data.stream import build_loader
from pretrain.data.transforms import TransformConfig
from pretrain.encoder import default_preprocess, load_encoder
from pretrain.labels import CaptionTokenizer, IDFWeights, build_tokenizer
from pretrain.models.backbone import build_backbone
from pretrain.models.clip import CLIPModel
from pretrain.models.presets import ArchConfig, get_preset, get_text_preset
from pretrain.recipes import PretrainRecipe
from pretrain.runtime.config import to_dict, to_yaml
from pretrain.runtime.distributed import DistInfo, process_group, seed_everything
from pretrain.runtime.errors import ConfigError
from pretrain.runtime.loop import Trainer, local_batch_size
from pretrain.runtime.threads import use_cpu_threads
from pretrain.tasks import ARTIFACT_DIR, CLIPTask, SuperClassTask


def resolve_arch(recipe: PretrainRecipe) -> ArchConfig:
    """The backbone architecture: the preset, with the recipe's image size and the method's pooling."""
    arch = get_preset(recipe.model.preset)
    changes: dict[str, object] = {}
    if recipe.model.image_size:
        changes["image_size"] = recipe.model.image_size
    if arch.family == "vit":
        changes["pool"] = recipe.model.pool or ("avg" if recipe.method == "superclass" else "token")
    return dataclasses.replace(arch, **changes) if changes else arch


def check_recipe(recipe: PretrainRecipe) -> None:
    """Catch settings that would fail late (after model build or data start) with a one-line error now."""
    if recipe.data.kind in ("shards", "list") and not recipe.data.train:
        raise ConfigError(
            f"data.train is empty: point it at the {recipe.data.kind} (e.g. data.train='/data/{{00000..00099}}.tar')"
        )
    if recipe.method == "clip" and recipe.labels.mode == "official":
        raise ConfigError("labels.mode=official only applies to SuperClass labels")
    if recipe.method == "clip" and recipe.labels.tokenizer != "clip_bpe":
        # the text tower pools at the largest id (argmax), which is EOT only under CLIP's BPE vocabulary
        raise ConfigError(f"method=clip needs labels.tokenizer=clip_bpe (got {recipe.labels.tokenizer!r})")
    size, arch_size = recipe.data.transform.image_size, resolve_arch(recipe).image_size
    if size != arch_size and size != TransformConfig().image_size:  # the default follows the model
        raise ConfigError(
            f"data.transform.image_size={size} but the model ({recipe.model.preset}) takes {arch_size} px; "
            f"set data.transform.image_size={arch_size} (or model.image_size={size})"
        )


def build_task(recipe: PretrainRecipe, tokenizer: CaptionTokenizer, dist_info: DistInfo) -> nn.Module:
    """The SuperClass or CLIP task on the recipe's backbone, with the provenance its artifact records."""
    arch = resolve_arch(recipe)
    preprocess = default_preprocess(arch)
    provenance = {
        "method": recipe.method,
        "tokenizer": tokenizer.name,
        "vocab_size": tokenizer.vocab_size,
        "config": to_dict(recipe),
    }
    backbone = build_backbone(arch)
    if recipe.method == "superclass":
        idf = IDFWeights(tokenizer.vocab_size, recipe.idf, tokenizer=tokenizer.name, label_mode=recipe.labels.mode)
        official = recipe.labels.mode == "official"
        args = (backbone, arch, tokenizer.vocab_size, tokenizer.special_ids, official, idf, recipe.loss)
        return SuperClassTask(*args, provenance=provenance, preprocess=preprocess)
    text_cfg = dataclasses.replace(
        get_text_preset(recipe.model.text),
        vocab_size=tokenizer.vocab_size,
        context_length=recipe.labels.context_length,
    )
    model = CLIPModel(backbone, arch.width, text_cfg)
    return CLIPTask(model, arch, dist_info.rank, dist_info.world_size, provenance=provenance, preprocess=preprocess)


def init_from_artifact(task: nn.Module, recipe: PretrainRecipe, tokenizer: CaptionTokenizer) -> None:
    """Start `task` from the encoder artifact `model.init_from`: its backbone, and for SuperClass its head and
    online IDF statistics (when it has a head; a CLIP artifact starts only the backbone)."""
    where = f"model.init_from {recipe.model.init_from}"
    encoder = load_encoder(recipe.model.init_from)
    arch = resolve_arch(recipe)
    if encoder.arch != arch:
        diff = [f"{k} {v} (recipe: {getattr(arch, k)})" for k, v in vars(encoder.arch).items() if getattr(arch, k) != v]
        raise ConfigError(f"{where}: its architecture differs from the recipe's: {', '.join(diff)}")
    backbone = task.backbone if isinstance(task, SuperClassTask) else task.model.backbone
    backbone.load_state_dict(encoder.backbone.state_dict())
    loaded = encoder.load_head() if isinstance(task, SuperClassTask) else None
    if loaded is None:
        return
    head, idf = loaded
    trained_with = encoder.config["provenance"].get("tokenizer")
    if head.vocab_size != tokenizer.vocab_size or trained_with not in (None, tokenizer.name):
        raise ConfigError(
            f"{where}: its head has {head.vocab_size} labels of tokenizer {trained_with!r}; this recipe's "
            f"labels are {tokenizer.vocab_size} of {tokenizer.name!r} (set labels.tokenizer to match)"
        )
    task.head.load_state_dict(head.state_dict())
    if task.idf.mode == "online" and {"doc_freq", "num_steps", "batch_size"} <= set(idf):
        task.idf.load_state_dict({k: idf[k] for k in ("doc_freq", "num_steps", "batch_size")})


def train(recipe: PretrainRecipe) -> Path:
    """Run a recipe to the end (resuming if asked) and return the encoder artifact's path."""
    check_recipe(recipe)
    with process_group(recipe.run.device) as dist_info:
        use_cpu_threads(recipe.run.num_threads, workers=recipe.data.num_workers)  # they decode on their own cores
        tokenizer = build_tokenizer(recipe.labels)
        seed_everything(recipe.run.seed)  # identical initial weights on every rank
        task = build_task(recipe, tokenizer, dist_info)
        if recipe.model.init_from:
            init_from_artifact(task, recipe, tokenizer)
        seed_everything(recipe.run.seed + dist_info.rank)
        arch = resolve_arch(recipe)
        data_cfg = dataclasses.replace(
            recipe.data, transform=dataclasses.replace(recipe.data.transform, image_size=arch.image_size)
        )
        loader = build_loader(
            data_cfg,
            tokenizer,
            local_batch_size(recipe.run, dist_info.world_size),
            rank=dist_info.rank,
            world_size=dist_info.world_size,
            seed=recipe.run.seed,
        )
        trainer = Trainer(task, loader, recipe.run, recipe.optim, dist_info, config_yaml=to_yaml(recipe))
        trainer.fit()
    return Path(recipe.run.out_dir) / ARTIFACT_DIR


def load_trained_task(recipe: PretrainRecipe, checkpoint: str | Path = "latest") -> nn.Module:
    """The recipe's task (model + head or text tower) with a checkpoint's weights, on the CPU, for inspection."""
    from pretrain.runtime.checkpoint import load_checkpoint, match_model_state, resolve_resume

    path = resolve_resume(Path(recipe.run.out_dir), str(checkpoint))
    if path is None:
        raise ConfigError(f"{recipe.run.out_dir} has no checkpoint to load")
    tokenizer = build_tokenizer(recipe.labels)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    task = build_task(recipe, tokenizer, info)
    expected = {k: v.shape for k, v in task.state_dict().items()}
    task.load_state_dict(match_model_state(path, load_checkpoint(path)[0], expected))
    return task

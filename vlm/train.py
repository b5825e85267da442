"""Build a LLaVA run (model, LLaVA JSON batches, task) and train one stage on the shared loop.

`train(recipe)` returns the exported HF LLaVA directory (`<run>/llava`): stage 1's is the `init` of stage 2,
stage 2's is what every VLM benchmark (`superclass eval <benchmark> run`, `superclass eval suite`) and `superclass vlm
chat` load.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from pretrain.runtime.config import to_yaml
from pretrain.runtime.distributed import process_group, seed_everything
from pretrain.runtime.errors import ConfigError
from pretrain.runtime.loop import Trainer, local_batch_size
from pretrain.runtime.threads import use_cpu_threads
from vlm.assemble import build_llava
from vlm.centred_projector import centre_projector
from vlm.data import LlavaBatches, LlavaSamples, format_skipped
from vlm.llava_codebase import read_projector_bin
from vlm.llava_dir import load_llava
from vlm.model_config import TINY_LLM, check_config, check_encoder_config, check_llm
from vlm.processor import num_image_tokens, process_images
from vlm.recipe_data import data_source
from vlm.recipes import VLMRecipe
from vlm.task import EXPORT_DIR, LlavaTask
from vlm.tiny_llama import tiny_llm_for_run


def check_inputs(recipe: VLMRecipe) -> None:
    """One-line errors for `model` before the data and the LLM are built (minutes for a 7B): its fields, and an
    encoder artifact whose config.json a LLaVA (HF CLIP) tower can hold. `init` brings its own tower."""
    check_llm(recipe.model.llm)
    if recipe.init:
        return
    if not recipe.model.encoder:
        raise ConfigError("model.encoder is empty: pass model.encoder=DIR (an encoder artifact) or init=LLAVA_DIR")
    check_config(recipe.model)
    check_encoder_config(recipe.model.encoder)


def build_model(recipe: VLMRecipe, json_path: Path, is_main: bool) -> tuple[Any, Any, VLMRecipe]:
    """(model, processor, recipe with the resolved LLM): from `init` (a LLaVA dir) or built from `model`."""
    if recipe.init:
        if recipe.projector:
            raise ConfigError("init and projector both set: a stage-2 start is a stage-1 LLaVA dir or mm_projector.bin")
        model, processor = load_llava(recipe.init)
        return model, processor, recipe
    if recipe.stage == 2 and not recipe.projector:
        print("[vlm] stage 2 without init: the projector starts from scratch (LLaVA starts it from stage 1)")
    if not recipe.model.encoder:
        raise ConfigError("model.encoder is empty: pass model.encoder=DIR (an encoder artifact) or init=LLAVA_DIR")
    if recipe.model.llm == TINY_LLM:
        lm = tiny_llm_for_run(recipe.run.out_dir, json_path, recipe.run.seed, is_main)
        recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, llm=lm))
    projector = read_projector_bin(recipe.projector) if recipe.projector else None  # a bad file fails before the LM
    model, processor = build_llava(recipe.model)
    if projector is not None:
        model.load_state_dict({k: v.to(model.dtype) for k, v in projector.items()}, strict=False)
        print(f"[vlm] projector from {recipe.projector} (LLaVA's stage-1 output)")
    return model, processor, recipe


def centre_on_images(model: Any, samples: LlavaSamples, n: int, trained: bool) -> tuple[int, float]:
    """Centre the projector's first layer on the mean tower feature of the data's first `n` readable images (every
    rank reads the same ones); a `trained` projector (init, projector bin) keeps its function. Returns (images used,
    the mean's norm)."""
    pixels = []
    for index in (i for i, has in enumerate(samples.has_image) if has):
        built = samples.build(index)
        if not isinstance(built, str):
            pixels.append(built.pixel_values)
        if len(pixels) == n:
            break
    if not pixels:
        raise ConfigError("projector_centring: the data has no readable image to take the tower features' mean from")
    return len(pixels), float(centre_projector(model, pixels, keep_function=trained).norm())


def train(recipe: VLMRecipe) -> Path:
    """Run a recipe to the end (resuming if asked); returns the exported LLaVA directory."""
    if recipe.stage not in (1, 2):
        raise ConfigError(f"stage must be 1 or 2, got {recipe.stage}")
    if recipe.lora.enabled and recipe.stage != 2:
        raise ConfigError("lora.enabled is a stage-2 option (stage 1 trains only the projector)")
    check_inputs(recipe)
    with process_group(recipe.run.device) as dist_info:
        use_cpu_threads(recipe.run.num_threads)
        json_path, image_folder = data_source(recipe, dist_info.is_main)
        seed_everything(recipe.run.seed)
        model, processor, recipe = build_model(recipe, json_path, dist_info.is_main)
        pad = recipe.model.image_aspect_ratio == "pad"
        processor.image_processor.do_pad = pad  # what the export's processor does at eval (stage 1 crops, 2 pads)
        model.config.image_aspect_ratio = recipe.model.image_aspect_ratio
        if isinstance(getattr(model.config, "superclass_vlm", None), dict):  # the build record follows (stage 1 crops)
            model.config.superclass_vlm["image_aspect_ratio"] = recipe.model.image_aspect_ratio
        samples = LlavaSamples.from_json(
            json_path, image_folder, tokenizer=processor.tokenizer, template=recipe.template,
            num_image_tokens=num_image_tokens(model.config), max_length=recipe.data.max_length,
            image_transform=lambda image: process_images(processor, [image], pad=pad)[0],
            cache_size=recipe.data.cache_samples,
        )  # fmt: skip
        if recipe.projector_centring > 0:
            used, norm = centre_on_images(
                model, samples, recipe.projector_centring, bool(recipe.init or recipe.projector)
            )
            if dist_info.is_main:
                print(f"[vlm] projector centred on {used} images' mean feature (norm {norm:.2f})")
        run = recipe.run
        if run.steps <= 0 and run.total_samples <= 0:
            run = dataclasses.replace(run, total_samples=max(1, recipe.data.epochs) * len(samples))
            recipe = dataclasses.replace(recipe, run=run)
        scale = recipe.projector_lr / recipe.optim.lr if recipe.projector_lr > 0 else 1.0
        info = {"recipe_stage": recipe.stage, "template": recipe.template, "data": str(json_path)}
        task = LlavaTask(model, processor, recipe.stage, recipe.lora, recipe.train_vision, scale, info)
        loader = LlavaBatches(
            samples, local_batch_size(run, dist_info.world_size), seed=run.seed, rank=dist_info.rank,
            world_size=dist_info.world_size, group_by_modality_length=recipe.data.group_by_modality_length,
            pad_token_id=processor.tokenizer.pad_token_id,
        )  # fmt: skip
        trainer = Trainer(task, loader, run, recipe.optim, dist_info, config_yaml=to_yaml(recipe))
        trainer.fit()
        counts = trainer.skipped_all_ranks()  # a collective: every rank takes part
        if dist_info.is_main:
            total = len(samples) + sum(samples.skipped_upfront.values())  # every row of the file
            print(f"[vlm] {format_skipped(counts, total)}")
            (Path(run.out_dir) / "skipped.json").write_text(json.dumps(counts, indent=2) + "\n")
    return Path(run.out_dir) / EXPORT_DIR

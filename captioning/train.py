"""Build a ClipCap run (encoder features, LM, task, caption stream), train it on the shared loop, and caption.

`train(recipe)` returns the captioner artifact; `generate(...)` writes COCO results JSON for a Karpathy split,
appending to `<out>.partial.jsonl` as it goes so an interrupted run resumes. (The demo's ClipCap stage is
`superclass/demo/caption.py`.)

The partial file's first row is a header: the captioner (path and `captioner_hash`), the split and the decoding
settings. A rerun with another captioner, split or decoding is refused in one line instead of mixing captions;
a torn last line (a kill mid-write) is cut before appending (`pretrain.runtime.jsonl`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from captioning.data import (
    CaptionFeatures,
    CaptionPairs,
    SplitImages,
    encode_split,
    karpathy_images,
    synthetic_images,
    tokenize_captions,
)
from captioning.decode import DecodeConfig, caption_features
from captioning.model import ClipCapModel, load_lm, load_tokenizer
from captioning.recipes import CaptionDataConfig, CaptionRecipe
from captioning.task import ARTIFACT_DIR, CaptionTask, captioner_encoder, captioner_hash, load_captioner
from pretrain.encoder import Encoder, load_encoder
from pretrain.features import encoder_identity
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.config import to_yaml
from pretrain.runtime.distributed import process_group, seed_everything
from pretrain.runtime.errors import ConfigError, UserError
from pretrain.runtime.jsonl import read_jsonl, repair_tail
from pretrain.runtime.loop import Trainer, local_batch_size
from pretrain.runtime.threads import use_cpu_threads


def split_features(
    recipe: CaptionRecipe, split: str, encoder: Encoder, device: Any, is_main: bool = True
) -> CaptionFeatures:
    """Cached encoder features of a split (Karpathy or synthetic) with its references and skip count."""
    data = recipe.data
    if data.kind == "karpathy":
        if not data.karpathy:
            raise ConfigError("data.karpathy is empty: point it at dataset_coco.json (and data.image_root at COCO)")
        images = karpathy_images(data.karpathy, data.image_root, split)
    else:
        images = synthetic_split(data, split)
    cache_root = Path(data.cache_dir or Path(recipe.run.out_dir) / "features")
    return encode_split(encoder, images, cache_root, recipe.model.tokens, device, data.feature_batch_size,
                        data.feature_workers, is_main)  # fmt: skip


def synthetic_split(data: CaptionDataConfig, split: str) -> SplitImages:
    """A synthetic recipe's split: `synthetic_samples` training images with one caption each; val/test are
    max(50, samples / 10) images of the next dataset seed with 5 references each."""
    seed = data.synthetic_seed + (0 if split == "train" else 1)
    n = data.synthetic_samples if split == "train" else max(50, data.synthetic_samples // 10)
    return synthetic_images(n, seed, data.synthetic_image_size, 1 if split == "train" else 5)


def train(recipe: CaptionRecipe) -> Path:
    """Run a recipe to the end (resuming if asked); returns the captioner artifact's path."""
    if not recipe.encoder:
        raise ConfigError("encoder is empty: pass encoder=DIR (an encoder artifact from `superclass pretrain train`)")
    with process_group(recipe.run.device) as dist_info:
        use_cpu_threads(recipe.run.num_threads)
        encoder = load_encoder(recipe.encoder)
        cache = split_features(recipe, "train", encoder, dist_info.device, dist_info.is_main)
        pairs = [(i, c) for i, key in enumerate(cache.keys) for c in cache.captions[key]]
        if recipe.model.lm == "":
            from captioning.tiny_gpt2 import build_tiny_lm

            lm_dir = Path(recipe.run.out_dir) / "lm"
            if not (lm_dir / "config.json").is_file():
                build_tiny_lm([c for _, c in pairs], lm_dir, seed=recipe.run.seed)
            recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, lm=str(lm_dir)))
        tokenizer = load_tokenizer(recipe.model.lm)
        ids = tokenize_captions(tokenizer, [c for _, c in pairs], recipe.data.max_caption_tokens)
        run = recipe.run
        if run.steps <= 0 and run.total_samples <= 0:
            run = dataclasses.replace(run, total_samples=max(1, recipe.data.epochs) * len(ids))
            recipe = dataclasses.replace(recipe, run=run)
        seed_everything(run.seed)
        model = ClipCapModel(recipe.model, int(encoder.num_features), load_lm(recipe.model.lm))
        enc_path = str(Path(recipe.encoder).expanduser().absolute())
        task = CaptionTask(model, tokenizer, int(encoder.num_features), enc_path, encoder_identity(encoder))
        batch = local_batch_size(run, dist_info.world_size)
        loader = CaptionPairs(cache.features, [i for i, _ in pairs], ids, batch, run.seed, dist_info.rank,
                              dist_info.world_size)  # fmt: skip
        trainer = Trainer(task, loader, run, recipe.optim, dist_info, config_yaml=to_yaml(recipe))
        trainer.fit()
    return Path(run.out_dir) / ARTIFACT_DIR


def generate(
    captioner: str | Path, recipe: CaptionRecipe, split: str, out: str | Path, device: str = "cpu"
) -> dict[str, Any]:
    """Caption every image of `split` into COCO results JSON `out`, resuming from `<out>.partial.jsonl`.

    The encoder is the captioner's own (its config names it); recipe `encoder=` may point at a moved copy,
    which `captioner_encoder` checks against the recorded identity.
    """
    model, tokenizer, config = load_captioner(captioner, device)
    encoder = captioner_encoder(captioner, config, recipe.encoder)
    model_cfg = dataclasses.replace(recipe.model, tokens=model.cfg.tokens)
    recipe = dataclasses.replace(recipe, model=model_cfg)
    cache = split_features(recipe, split, encoder, device)
    out = Path(out)
    partial = out.with_name(out.name + ".partial.jsonl")
    done = resume_partial(partial, partial_header(captioner, split, recipe.decode))
    todo = [i for i, k in enumerate(cache.keys) if k not in done]
    step = recipe.decode.batch_size * 8
    with partial.open("a", encoding="utf-8") as f:
        for s in range(0, len(todo), step):
            rows = todo[s : s + step]
            texts = caption_features(model, tokenizer, cache.features[rows], recipe.decode)
            for r, text in zip(rows, texts):
                done[cache.keys[r]] = text
                f.write(json.dumps({"image_id": _id(cache.keys[r]), "caption": text}) + "\n")
            f.flush()
    results = [{"image_id": _id(k), "caption": done[k]} for k in cache.keys]
    write_text_atomically(out, json.dumps(results))
    partial.unlink()
    return {"split": split, "images": len(results), "skipped": cache.skipped, "out": str(out)}


def partial_header(captioner: str | Path, split: str, decode: DecodeConfig) -> dict[str, Any]:
    """What the captions of a partial file depend on: the captioner's files, the split and the decoding."""
    return {
        "captioner": str(Path(captioner).absolute()),
        "captioner_hash": captioner_hash(captioner),
        "split": split,
        "decode": {k: getattr(decode, k) for k in ("beam", "max_tokens", "stop")},  # not batch_size: exact either way
    }


def resume_partial(partial: Path, header: dict[str, Any]) -> dict[str, str]:
    """Captions already in `partial` by image key; a new file gets `header` as its first row.

    A torn last line is cut first, so appended rows start on their own line. A file whose header names another
    captioner (hash), split or decoding is a one-line UserError: its captions must not be mixed in.
    """
    repair_tail(partial)
    rows, _ = read_jsonl(partial)
    if not rows:
        write_text_atomically(partial, json.dumps({"header": header}) + "\n")
        return {}
    found = rows[0].get("header")
    if not isinstance(found, dict):
        raise UserError(f"{partial}: no header row (not written by this version); delete it to caption from scratch")
    for key in ("captioner_hash", "split", "decode"):
        if found.get(key) != header[key]:
            raise UserError(
                f"{partial}: started with {key} {_short(found.get(key))} (captioner {found.get('captioner')}), "
                f"not {_short(header[key])}; rerun with the same captioner/split/decoding or delete it"
            )
    return {str(r["image_id"]): r["caption"] for r in rows[1:] if "image_id" in r and isinstance(r.get("caption"), str)}


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text[:40] + "..." if len(text) > 40 else text


def _id(key: str) -> int | str:
    return int(key) if key.lstrip("-").isdigit() else key

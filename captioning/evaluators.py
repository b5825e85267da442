"""captioning's evaluator on the one interface (`pretrain.runtime.evaluators`): caption a Karpathy split with a
captioner (`<run>/captioner`) and score it with pycocoevalcap, as `superclass captioning generate` + `score` do."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captioning.cli import RESULTS_FILE
from pretrain.runtime.errors import ConfigError
from pretrain.runtime.evaluators import Evaluator, register
from pretrain.runtime.results import write_metrics


@dataclass
class CaptionSettings:
    karpathy: str = ""  # dataset_coco.json (the split's images are captioned, its references score them); "" = the
    # recipe's own synthetic data (clipcap_tiny: held-out synthetic images with 5 references each)
    image_root: str = ""  # the folder its filepath/filename are relative to
    split: str = "test"
    recipe: str = "clipcap_coco"  # decoding and feature settings (beam 5, ...)
    overrides: list[str] = field(default_factory=list)  # e.g. ["decode.beam=3"]
    device: str = "cpu"
    spice: bool = False  # SPICE downloads Stanford CoreNLP on first use: off unless asked


@register
class CaptionEvaluator(Evaluator):
    name = "caption"
    consumes = "captioner"
    Config = CaptionSettings
    headline = "CIDEr"
    description = "captions of a Karpathy split (beam search) scored by pycocoevalcap: BLEU-4, METEOR, CIDEr, ..."

    def run(self, model: str | Path, out_dir: str | Path) -> dict[str, Any]:
        from captioning.recipes import get_recipe
        from captioning.score import compute_metrics, load_results, score_files
        from captioning.train import generate, synthetic_split
        from pretrain.runtime.config import resolve

        c, out = self.config, Path(out_dir)
        data = ["data.kind=karpathy", f"data.karpathy={c.karpathy}", f"data.image_root={c.image_root}"]
        cache = f"data.cache_dir={out / 'features'}"  # its features stay with its outputs
        recipe = resolve(get_recipe(c.recipe), None, [cache, *(data if c.karpathy else []), *c.overrides])
        if recipe.data.kind != "karpathy" and c.karpathy:
            raise ConfigError(f"caption: karpathy={c.karpathy} but the overrides set data.kind={recipe.data.kind}")
        if recipe.data.kind == "karpathy" and not recipe.data.karpathy:
            raise ConfigError("caption.karpathy: empty (expected a Karpathy split file, e.g. dataset_coco.json)")
        results = out / RESULTS_FILE
        generate(model, recipe, c.split, results, device=c.device)
        if recipe.data.kind == "karpathy":
            return score_files(results, recipe.data.karpathy, out, split=c.split, spice=c.spice)
        references = synthetic_split(recipe.data, c.split).captions
        metrics = compute_metrics(load_results(results), {int(k): v for k, v in references.items()}, spice=c.spice)
        metrics.update(results=str(results), annotations=f"synthetic ({c.recipe} data, split {c.split})")
        write_metrics(out, metrics)
        return metrics

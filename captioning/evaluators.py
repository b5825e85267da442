"""captioning's evaluator on the one interface (`pretrain.runtime.evaluators`): caption a Karpathy split with a
captioner (`<run>/captioner`) and score it with pycocoevalcap, as `superclass captioning generate` + `score` do."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captioning.cli import RESULTS_FILE
from pretrain.runtime.errors import ConfigError
from pretrain.runtime.evaluators import Evaluator, register


@dataclass
class CaptionSettings:
    karpathy: str = ""  # dataset_coco.json (the split's images are captioned, its references score them)
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
        from captioning.score import score_files
        from captioning.train import generate
        from pretrain.runtime.config import resolve

        c, out = self.config, Path(out_dir)
        if not c.karpathy:
            raise ConfigError("evals.caption.karpathy: empty (expected a Karpathy split file, e.g. dataset_coco.json)")
        data = ["data.kind=karpathy", f"data.karpathy={c.karpathy}", f"data.image_root={c.image_root}"]
        recipe = resolve(get_recipe(c.recipe), None, [*data, *c.overrides])
        results = out / RESULTS_FILE
        generate(model, recipe, c.split, results, device=c.device)
        return score_files(results, c.karpathy, out, split=c.split, spice=c.spice)

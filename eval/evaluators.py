"""eval's evaluators on the one interface (`pretrain.runtime.evaluators`): the frozen probes and every VLM benchmark.

- `linear_probe` and `fewshot` read an encoder artifact: features of a labelled dataset (class folders or list
  files; cached under `out/features`), then the named linear-probe or few-shot recipe, its keys overridable;
- every VLM benchmark is an evaluator itself (`eval.vlm.base.Benchmark`, registered by its module in
  `eval/vlm/benchmarks/`): it reads a LLaVA directory; its settings are its `Config` (its files as keys:
  `questions`, `image_root`, ...; `limit`, `rule`; how to generate: `batch_size`, `max_new_tokens`, `device`,
  `precision`, `template`); `synthetic: N` scores N held-out synthetic images written in the benchmark's own
  format instead (vqav2, textvqa, mmbench, pope, scienceqa; the tiny LLaVA recipe's default evaluation).
  Importing this module imports them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import eval.vlm.benchmarks  # noqa: F401  (registers the built-in benchmarks)
from eval.probes import fewshot as fewshot_recipes
from eval.probes import linear_probe as linear_probe_recipes
from eval.probes.probe import ProbeSource, fewshot, linear_probe
from pretrain.runtime.config import resolve
from pretrain.runtime.evaluators import Evaluator, register


@dataclass
class ProbeSettings:
    """A labelled dataset, its splits, and a probe recipe with `key=value` overrides (e.g. ["lars.epochs=10"])."""

    data: str = ""  # dataset root (class folders or split list files) or one .jsonl/.csv list
    train_split: str = "train"
    val_split: str = "val"  # the split scored
    recipe: str = ""  # "" = the evaluator's default recipe
    overrides: list[str] = field(default_factory=list)


def _source(settings: ProbeSettings, model: str | Path, out_dir: Path) -> Any:
    return ProbeSource(out_dir, str(model), settings.data, settings.train_split, settings.val_split)


@register
class LinearProbeEvaluator(Evaluator):
    name = "linear_probe"
    consumes = "encoder"
    Config = ProbeSettings
    headline = "top1"
    description = "linear probe on frozen features (MAE/MILAN LARS or OpenAI CLIP L-BFGS): top-1 / top-5"

    def run(self, model: str | Path, out_dir: str | Path) -> dict[str, Any]:

        recipe = resolve(linear_probe_recipes.get_recipe(self.config.recipe or "mae_in1k"), None, self.config.overrides)
        return linear_probe(_source(self.config, model, Path(out_dir)), recipe, verbose=False)


@register
class FewShotEvaluator(Evaluator):
    name = "fewshot"
    consumes = "encoder"
    Config = ProbeSettings
    headline = "top1"
    description = "big_vision's k-shot ridge regression on frozen features: top-1 mean ± std over seeds"

    def run(self, model: str | Path, out_dir: str | Path) -> dict[str, Any]:

        recipe = resolve(fewshot_recipes.get_recipe(self.config.recipe or "fewshot_lsr"), None, self.config.overrides)
        return fewshot(_source(self.config, model, Path(out_dir)), recipe, verbose=False)  # top1: at its main shots

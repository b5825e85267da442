"""eval's evaluators on the one interface (`pretrain.runtime.evaluators`): the frozen probes and every VLM benchmark.

- `linear_probe` and `fewshot` read an encoder artifact: features of a labelled dataset (class folders or list
  files; cached under `out/features`), then the named linear-probe or few-shot recipe, its keys overridable;
- one evaluator per registered VLM benchmark (`eval.vlm.registry`: vqav2, gqa, pope, ...) reads a LLaVA
  directory; its settings are the benchmark's own flags (as keys: `questions`, `image_root`, ...) plus how to
  generate (`batch_size`, `max_new_tokens`, `device`, `precision`, `template`, `limit`); `synthetic: N` scores
  N held-out synthetic images written in the benchmark's own format instead (vqav2, textvqa, mmbench, pope,
  scienceqa; the tiny LLaVA recipe's default evaluation).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import eval.vlm.benchmarks  # noqa: F401  (registers the built-in benchmarks)
from eval.probes import fewshot as fewshot_recipes
from eval.probes import linear_probe as linear_probe_recipes
from eval.probes.probe import ProbeSource, fewshot, linear_probe
from eval.vlm.base import check_template, run_benchmark
from eval.vlm.generation import GenerationConfig
from eval.vlm.registry import benchmarks
from eval.vlm.synthetic import SYNTHETIC_SEEDS, write_synthetic_benchmark
from pretrain.runtime.config import resolve
from pretrain.runtime.errors import ConfigError
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


_GENERATION_FIELDS = [
    ("batch_size", int, 32),
    ("max_new_tokens", int, 0),  # 0: the benchmark's own
    ("device", str, "auto"),
    ("precision", str, "auto"),
    ("backend", str, "hf"),
    ("template", str, "vicuna_v1"),
    ("limit", int, 0),  # 0: every question; N: the fixed stratified subset of N
    ("synthetic", int, 0),  # N > 0: N held-out synthetic images in the benchmark's format instead of its files
]


def _benchmark_evaluator(spec: Any) -> type[Evaluator]:
    """An evaluator class for the registered VLM benchmark `spec`: its flags become its typed settings."""
    parser = argparse.ArgumentParser(add_help=False)
    spec.add_args(parser)
    paths: set[str] = set()
    fields: list[tuple[str, type, Any]] = []
    for action in parser._actions:
        if action.nargs in ("+", "*"):  # a list flag (e.g. pope --splits)
            fields.append((action.dest, list[str], dataclasses.field(default_factory=lambda a=action: list(a.default))))
            continue
        kind = int if action.type is int else str
        if action.type is Path:
            paths.add(action.dest)
        default = "" if action.default is None else (str(action.default) if kind is str else action.default)
        fields.append((action.dest, kind, dataclasses.field(default=default)))
    fields += [(n, t, dataclasses.field(default=d)) for n, t, d in _GENERATION_FIELDS]
    settings = dataclasses.make_dataclass(f"{spec.name.capitalize()}Settings", fields)

    def run(self: Evaluator, model: str | Path, out_dir: str | Path) -> dict[str, Any]:

        values = dataclasses.asdict(self.config)
        gen = {n: values.pop(n) for n, _, _ in _GENERATION_FIELDS}
        if gen["synthetic"]:
            values.update(_synthetic_files(spec.name, Path(out_dir) / "data", gen["synthetic"]))
        flags = {k: (Path(v) if v else None) if k in paths else v for k, v in values.items()}
        args = argparse.Namespace(**flags, bench=spec.name, limit=gen["limit"] or None)
        bench = spec.build(args, True)
        cfg = GenerationConfig(
            batch_size=gen["batch_size"], max_new_tokens=gen["max_new_tokens"] or bench.max_new_tokens,
            device=gen["device"], dtype=gen["precision"], backend=gen["backend"], progress=False,
        )  # fmt: skip
        return run_benchmark(bench, model, out_dir, cfg, check_template(gen["template"])) or {}

    attrs = {"name": spec.name, "consumes": "llava", "Config": settings, "headline": spec.headline}
    attrs.update(description=spec.help, run=run)
    return type(f"{spec.name.capitalize()}Evaluator", (Evaluator,), attrs)


def _synthetic_files(name: str, root: Path, num_images: int) -> dict[str, str]:
    """Write benchmark `name`'s held-out synthetic set under `root`: its path settings (`synthetic=N`)."""
    if name not in SYNTHETIC_SEEDS:
        known = ", ".join(SYNTHETIC_SEEDS)
        raise ConfigError(f"{name}.synthetic: {name} has no synthetic set (those with one: {known})")
    return {k: str(v) for k, v in write_synthetic_benchmark(name, root, num_images).items()}


def _register_benchmarks() -> None:
    for spec in benchmarks().values():
        register(_benchmark_evaluator(spec))


_register_benchmarks()

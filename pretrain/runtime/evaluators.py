"""One evaluator interface for every evaluation, run standalone or during training (big_vision's evaluators).

An evaluator is picked by name and configured by a typed settings dataclass:
- `consumes`: what it reads (`INPUTS`: an encoder artifact, a LiT model, a captioner, a LLaVA directory);
- `Config`: its settings; `build_evaluator(name, {key: value})` fills them with one-line errors on unknown keys;
- `run(model, out_dir) -> metrics`: writes its raw predictions (JSONL) and `metrics.json` under `out_dir`
  (`pretrain.runtime.results.write_metrics`) and returns the metrics; `headline` names the number that a
  training log and the CLI's table show.
The packages above the runtime (eval, lit, captioning) register theirs in modules named under the entry-point
group `superclass.evaluators` (pyproject.toml), so the runtime finds them without importing a floor above it.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from pretrain.runtime.config import from_dict
from pretrain.runtime.errors import ConfigError

INPUTS = ("encoder", "lit", "captioner", "llava")
ENTRY_POINT_GROUP = "superclass.evaluators"


class Evaluator(ABC):
    """An evaluation of one kind of model: typed settings in, `metrics.json` (and raw predictions) out."""

    name: ClassVar[str]
    consumes: ClassVar[str]  # one of INPUTS
    Config: ClassVar[type]  # a dataclass of its settings
    headline: ClassVar[str] = "accuracy"  # the metrics key a log line or a table shows
    description: ClassVar[str] = ""

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def run(self, model: str | Path, out_dir: str | Path) -> dict[str, Any]:
        """Evaluate `model` (a path of the kind `consumes` names), write into `out_dir`, return the metrics."""

    def headline_value(self, metrics: dict[str, Any]) -> Any:
        """The headline number of `metrics` (nested keys with dots, e.g. `results.10.mean`)."""
        value: Any = metrics
        for part in self.headline.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value


_REGISTRY: dict[str, type[Evaluator]] = {}
_LOADED = False


def register(cls: type[Evaluator]) -> type[Evaluator]:
    """Class decorator: make `cls` available by its `name` (a package's evaluator module does this at import)."""
    if cls.consumes not in INPUTS:
        raise ValueError(f"evaluator {cls.name!r}: consumes {cls.consumes!r}, expected one of {INPUTS}")
    if not dataclasses.is_dataclass(cls.Config):
        raise ValueError(f"evaluator {cls.name!r}: Config must be a dataclass")
    if _REGISTRY.get(cls.name, cls) is not cls:
        raise ValueError(f"evaluator {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def evaluators() -> dict[str, type[Evaluator]]:
    """Every registered evaluator by name (the modules of the `superclass.evaluators` entry points imported once)."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for entry in entry_points(group=ENTRY_POINT_GROUP):
            entry.load()
    return dict(sorted(_REGISTRY.items()))


def build_evaluator(name: str, settings: dict[str, Any] | None = None, where: str = "evals") -> Evaluator:
    """The evaluator `name` with its Config filled from `settings` (one-line ConfigErrors naming `where`)."""
    known = evaluators()
    if not name:
        raise ConfigError(f"{where}: no name (expected name: one of {sorted(known)})")
    if name not in known:
        raise ConfigError(f"{where}: unknown evaluator {name!r} (expected one of {sorted(known)})")
    cls = known[name]
    return cls(from_dict(cls.Config, dict(settings or {}), prefix=f"{where}.{name}."))


def describe_evaluators() -> list[dict[str, str]]:
    """Name, input, headline metric and description of every evaluator (the README's table; `eval evaluators`)."""
    return [
        {"name": n, "consumes": c.consumes, "headline": c.headline, "description": c.description}
        for n, c in evaluators().items()
    ]

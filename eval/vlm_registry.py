"""One registry of VLM benchmarks: each one's files, CLI flags, builder, suite layout and published numbers.

A benchmark module (eval/gqa.py, eval/pope.py, ...) holds its reader, prompt and official metric, and registers a
`BenchmarkSpec`; `superclass eval <name> run|score` and `superclass eval suite` are built from the registry, so a
new benchmark is one module and one `register(...)` call, nothing else.

`suite_args(folder)` maps the benchmark's folder under the suite's `--data-root` (README: "VLM benchmark suite")
to the values its flags would take, or None when the files are not there (the suite reports it as missing).
`fixed_subset` is the one way `--limit N` picks questions: the same N every time (seeded), stratified by category
where the benchmark has categories, in file order.
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from eval.vlm_bench import VLMBenchmark

T = TypeVar("T")
SUBSET_SEED = 0


@dataclass(frozen=True)
class BenchmarkSpec:
    """What the CLI and the suite need to know about one benchmark."""

    name: str
    help: str  # one line for `superclass eval --help`
    add_args: Callable[[argparse.ArgumentParser], None]  # data flags, the same for run and score
    build: Callable[[argparse.Namespace, bool], VLMBenchmark]  # (parsed flags, for run: images needed)
    max_new_tokens_help: str
    suite_args: Callable[[Path], dict[str, Any] | None]  # flag values from the files under ROOT/<folder>
    folder: str  # its folder under the suite's --data-root
    files: str  # where the files come from (README table)
    headline: str = "accuracy"  # the metrics.json key the suite table reports
    published: dict[str, float] = field(default_factory=dict)  # {"superclass_table11": .., "llava15_7b": ..}


REGISTRY: dict[str, BenchmarkSpec] = {}
SUITES: dict[str, tuple[str, ...]] = {}


def register(spec: BenchmarkSpec) -> BenchmarkSpec:
    """Add `spec` to the registry (a module does this once, at import)."""
    if spec.name in REGISTRY:
        raise ValueError(f"benchmark {spec.name!r} registered twice")
    REGISTRY[spec.name] = spec
    return spec


def benchmarks() -> dict[str, BenchmarkSpec]:
    """Every registered benchmark, in the order the suite runs them (importing the modules that register them)."""
    import eval.vlm_specs  # noqa: F401  (registers every benchmark)

    return REGISTRY


def fixed_subset(items: Sequence[T], n: int | None, key: Callable[[T], Any] | None = None, seed: int = SUBSET_SEED):
    """`n` of `items` (all when n is None or >= len), the same ones every run, kept in file order.

    With `key` (a category), each category keeps about its share of `n` (largest remainders), so a 1k subset of a
    benchmark has the full set's mix; when `n` is at least the number of categories, each keeps at least one.
    """
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        return []
    rng = random.Random(seed)
    if key is None:
        chosen = sorted(rng.sample(range(len(items)), n))
        return [items[i] for i in chosen]
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[key(item)].append(i)
    names = sorted(groups, key=str)
    take = dict.fromkeys(names, 1 if n >= len(names) else 0)  # room for every category: each keeps one
    left = n - sum(take.values())
    quota = {g: left * len(groups[g]) / len(items) for g in names}
    for g in names:
        take[g] += int(quota[g])
    for g in sorted(names, key=lambda g: (-(quota[g] - int(quota[g])), str(g)))[: n - sum(take.values())]:
        take[g] += 1
    chosen: list[int] = []
    for g in names:
        chosen += rng.sample(groups[g], min(take[g], len(groups[g])))
    return [items[i] for i in sorted(chosen)]

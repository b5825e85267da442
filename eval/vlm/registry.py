"""One registry of VLM benchmarks: each one's files, CLI flags, builder, suite layout and published numbers.

A benchmark module (eval/vlm/benchmarks/gqa.py, pope.py, ...) holds its reader, prompt and official metric, and
registers a `BenchmarkSpec` at import; `superclass eval <name> run|score`, `eval run NAME` and `superclass eval
suite` are built from the registry (`eval.vlm.benchmarks` imports the built-in modules).

`suite_args(folder)` maps the benchmark's folder under the suite's `--data-root` (README: "VLM benchmark suite")
to the values its flags would take, or None when the files are not there (the suite reports it as missing).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.vlm.base import VLMBenchmark


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
    """Every registered benchmark (the built-in ones register when `eval.vlm.benchmarks` is imported)."""
    return REGISTRY

"""The VLM benchmarks: the `Benchmark`s of the runtime's one evaluator registry, and the named suites.

A benchmark registers itself with `pretrain.runtime.evaluators.register` when its module is imported (the built-in
ones: every module in `eval/vlm/benchmarks/`, imported by that package). `superclass eval <name> run|score`,
`eval run NAME key=value` and `superclass eval suite` all read this one registry.
"""

from __future__ import annotations

from eval.vlm.base import Benchmark
from pretrain.runtime.evaluators import evaluators

# Suites: the SuperClass paper's Table 11 order (VQAv2, GQA, VizWiz, ScienceQA, POPE, MMMU, TextVQA, MMBench) then
# LLaVA-1.5's MME and SEED-Bench; and the newer LLaVA-family tables' document and chart benchmarks (LLaVA-NeXT,
# Cambrian, OpenVision). A registered benchmark joins more suites through its `suites` attribute.
SUITES: dict[str, tuple[str, ...]] = {
    "llava15": ("vqav2", "gqa", "vizwiz", "scienceqa", "pope", "mmmu", "textvqa", "mmbench", "mme", "seedbench"),
    "llava_next": (
        "chartqa",
        "docvqa",
        "ai2d",
        "ocrbench",
        "textvqa",
        "vqav2",
        "gqa",
        "mmbench",
        "mme",
        "mmmu",
        "pope",
        "scienceqa",
        "seedbench",
    ),  # fmt: skip
}


def benchmarks() -> dict[str, type[Benchmark]]:
    """Every registered benchmark by name."""
    return {name: cls for name, cls in evaluators().items() if isinstance(cls, type) and issubclass(cls, Benchmark)}


def suite_names() -> list[str]:
    """The named suites, and any a registered benchmark names."""
    return sorted(set(SUITES) | {s for cls in benchmarks().values() for s in cls.suites})


def suite_members(suite: str) -> list[str]:
    """The benchmarks of `suite` in its order, then the registered ones that name it in their `suites`."""
    known = benchmarks()
    names = [name for name in SUITES.get(suite, ()) if name in known]
    return names + [name for name, cls in known.items() if suite in cls.suites and name not in names]

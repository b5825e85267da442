"""`superclass eval suite`: every benchmark of a named suite on one LLaVA directory, beside the published numbers.

usage: superclass eval suite --model RUN/llava --suite llava15 --data-root ROOT --out OUT [--limit 1000]

Each benchmark reads its files from ROOT/<folder> (README: "VLM benchmark suite" lists the layout, which is
LLaVA's `playground/data/eval` where the two agree) and runs into OUT/<name> through `run_benchmark`, so each is
resumable on its own and a rerun skips what is answered. A benchmark whose files are missing is reported as
`missing`; one that fails (a bad file) is reported with its one-line error and the others still run (exit 1).
OUT/suite.md and OUT/suite.json hold one row per benchmark: our headline metric, SuperClass's number in the
paper's Table 11 and LLaVA-1.5-7B's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from eval.vlm.base import check_template, run_benchmark
from eval.vlm.flags import add_generation_args, generation_config
from eval.vlm.registry import SUITES, BenchmarkSpec, benchmarks
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import UserError
from pretrain.runtime.results import format_table

COLUMNS = ("benchmark", "metric", "ours", "SuperClass (Table 11)", "LLaVA-1.5-7B", "questions", "status")


def add_suite_command(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """`suite` on the eval subparsers `sub`."""
    p = sub.add_parser("suite", help="every benchmark of a suite (llava15: the paper's Table 11 + MME, SEED)")
    p.add_argument("--suite", default="llava15", choices=sorted(SUITES), help="which benchmarks (default: llava15)")
    p.add_argument("--data-root", required=True, type=Path, help="ROOT holding one folder per benchmark (README)")
    p.add_argument("--out", required=True, type=Path, help="suite directory: one folder per benchmark + suite.md")
    p.add_argument("--only", nargs="+", default=None, help="run only these benchmarks of the suite")
    p.add_argument("--limit", type=int, default=None, help="a fixed, stratified subset of N questions per benchmark")
    add_generation_args(p, "default: each benchmark's own (16 for short answers and letters)")
    p.set_defaults(fn=_cmd_suite)


def _cmd_suite(args: argparse.Namespace) -> int:
    report = run_suite(args)
    rows = [[_cell(r[c]) for c in COLUMNS] for r in report["rows"]]
    print(format_table(list(COLUMNS), rows))
    print(f"suite: {args.out / 'suite.md'}")
    return 1 if any(r["status"].startswith("failed") for r in report["rows"]) else 0


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) every benchmark of `args.suite`; returns and writes the suite table."""

    check_template(args.template)
    if not args.data_root.is_dir():
        raise UserError(f"--data-root {args.data_root}: not a directory")
    names = SUITES[args.suite]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        raise UserError(f"--only {unknown}: not in suite {args.suite!r} (expected some of {list(names)})")
    rows = []
    for name in names:
        if args.only and name not in args.only:
            continue
        spec = benchmarks()[name]
        row = {"benchmark": name, "metric": spec.headline, "ours": None, "questions": None, **_published(spec)}
        values = spec.suite_args(args.data_root / spec.folder) if (args.data_root / spec.folder).is_dir() else None
        if values is None:
            rows.append({**row, "status": f"missing (expected {spec.folder}/: {spec.files})"})
            continue
        try:
            bench = spec.build(_namespace(spec, name, values, args.limit), True)
            metrics = run_benchmark(bench, args.model, args.out / name, generation_config(args, bench), args.template)
        except UserError as exc:  # DataError and ConfigError are UserErrors: one line, then the next benchmark
            rows.append({**row, "status": f"failed: {exc}"})
            continue
        if metrics is None:  # not rank 0
            continue
        scored = metrics.get(spec.headline)
        status = "scored" if scored is not None else "submission only (no answers in the files)"
        rows.append({**row, "ours": scored, "questions": metrics.get("num_questions"), "status": status})
    report = {"suite": args.suite, "model": str(args.model), "limit": args.limit, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(args.out / "suite.json", json.dumps(report, indent=2) + "\n")
    write_text_atomically(args.out / "suite.md", _markdown(report))
    return report


def _namespace(spec: BenchmarkSpec, name: str, values: dict[str, Any], limit: int | None) -> argparse.Namespace:
    """The flags `spec.build` reads: its parser's defaults, then the suite's file paths."""
    parser = argparse.ArgumentParser(add_help=False)
    spec.add_args(parser)
    defaults = {a.dest: a.default for a in parser._actions if a.dest != argparse.SUPPRESS}
    return argparse.Namespace(**{**defaults, **values, "limit": limit, "bench": name})


def _published(spec: BenchmarkSpec) -> dict[str, Any]:
    return {
        "SuperClass (Table 11)": spec.published.get("superclass_table11"),
        "LLaVA-1.5-7B": spec.published.get("llava15_7b"),
    }


def _cell(value: Any) -> Any:
    return "-" if value is None else value


def _markdown(report: dict[str, Any]) -> str:
    rows = [[_cell(r[c]) for c in COLUMNS] for r in report["rows"]]
    limit = f", a fixed subset of {report['limit']} questions each" if report["limit"] else ""
    head = f"# Suite {report['suite']}: {report['model']}{limit}\n\n"
    note = (
        "\nSuperClass (Table 11): the paper's LLaVA-1.5 row for its encoder; LLaVA-1.5-7B: OpenAI CLIP L/14-336 "
        "(LLaVA README). Test-split rows are submission files to upload, not scores.\n"
    )
    return head + format_table(list(COLUMNS), rows) + "\n" + note

"""`superclass eval suite`: every benchmark of a named suite on one LLaVA directory, beside the published numbers.

usage: superclass eval suite --model RUN/llava --suite llava15 --data-root ROOT --out OUT [--limit 1000]

Each benchmark reads its files from ROOT/<folder> (README: "VLM benchmark suite" lists the layout, which is
LLaVA's `playground/data/eval` where the two agree) and runs into OUT/<name>, so each is resumable on its own and a
rerun skips what is answered. A benchmark whose files are missing is reported as `missing`; one that fails (a bad
file) is reported with its one-line error and the others still run (exit 1). A data root holding none of the suite's
benchmarks is an error. OUT/suite.md and OUT/suite.json hold one row per benchmark: our headline metric and the
published numbers (SuperClass's row of the paper's Table 11, LLaVA-1.5-7B's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from eval.vlm.base import Benchmark, check_template
from eval.vlm.flags import add_generation_args, config_from_args, positive_int
from eval.vlm.registry import benchmarks, suite_members, suite_names
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.cli import check_out_dir
from pretrain.runtime.errors import UserError
from pretrain.runtime.results import format_table

COLUMNS = ("benchmark", "metric", "ours", "SuperClass (Table 11)", "LLaVA-1.5-7B", "questions", "status")


def add_suite_command(sub: Any) -> None:
    """`suite` on the eval subparsers `sub`."""
    p = sub.add_parser("suite", help="every benchmark of a suite (llava15: the paper's Table 11 + MME, SEED)")
    p.add_argument("--suite", default="llava15", choices=suite_names(), help="which benchmarks (default: llava15)")
    p.add_argument("--data-root", required=True, type=Path, help="ROOT holding one folder per benchmark (README)")
    p.add_argument("--out", required=True, type=Path, help="suite directory: one folder per benchmark + suite.md")
    p.add_argument("--only", nargs="+", default=None, help="run only these benchmarks of the suite")
    p.add_argument("--limit", type=positive_int, default=None, help="a fixed, stratified subset of N per benchmark")
    add_generation_args(p, "default: each benchmark's own (16 for short answers and letters)")
    p.set_defaults(fn=_cmd_suite)


def _cmd_suite(args: argparse.Namespace) -> int:
    report = run_suite(args)
    rows = [[_cell(r[c]) for c in COLUMNS] for r in report["rows"]]
    print(format_table(list(COLUMNS), rows))
    print(f"suite: {args.out / 'suite.md'}")
    return 1 if any(r["status"].startswith("failed") for r in report["rows"]) else 0


def _row(cls: type[Benchmark]) -> dict[str, Any]:
    return {
        "benchmark": cls.name,
        "metric": cls.headline,
        "ours": None,
        "questions": None,
        "SuperClass (Table 11)": cls.published.get("superclass_table11"),
        "LLaVA-1.5-7B": cls.published.get("llava15_7b"),
    }


def _run_one(cls: type[Benchmark], values: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """One benchmark's row: scored, submission only, or failed with its one-line error."""
    row = _row(cls)
    try:
        config = dataclasses.replace(config_from_args(cls.Config, args), **values)
        metrics = cls(config).generate(args.model, args.out / cls.name, progress=not args.no_progress)
    except UserError as exc:  # DataError and ConfigError are UserErrors: one line, then the next benchmark
        return {**row, "status": f"failed: {exc}"}
    if metrics is None:  # not rank 0
        return {}
    scored = metrics.get(cls.headline)
    status = "scored" if scored is not None else "submission only (no answers in the files)"
    return {**row, "ours": scored, "questions": metrics.get("num_questions"), "status": status}


def run_suite(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) every benchmark of `args.suite`; returns and writes the suite table."""
    check_template(args.template)
    check_out_dir(args.out, "suite.md, suite.json and one folder per benchmark")
    if not args.data_root.is_dir():
        raise UserError(f"--data-root {args.data_root}: not a directory")
    names = suite_members(args.suite)
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        raise UserError(f"--only {unknown}: not in suite {args.suite!r} (expected some of {names})")
    known = benchmarks()
    chosen = [known[name] for name in names if not args.only or name in args.only]
    found = {cls.name: _suite_values(cls, args.data_root) for cls in chosen}
    if not any(v is not None for v in found.values()):
        layout = ", ".join(f"{cls.folder}/" for cls in chosen)
        raise UserError(f"--data-root {args.data_root}: holds none of the suite's benchmarks (expected {layout})")
    rows = []
    for cls in chosen:
        if found[cls.name] is None:
            rows.append({**_row(cls), "status": f"missing (expected {cls.folder}/: {cls.files})"})
        elif row := _run_one(cls, found[cls.name], args):
            rows.append(row)
    report = {"suite": args.suite, "model": str(args.model), "limit": args.limit, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(args.out / "suite.json", json.dumps(report, indent=2) + "\n")
    write_text_atomically(args.out / "suite.md", _markdown(report))
    return report


def _suite_values(cls: type[Benchmark], root: Path) -> dict[str, Any] | None:
    folder = root / cls.folder
    return cls.suite_config(folder) if cls.folder and folder.is_dir() else None


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

"""`superclass eval <benchmark> run|score` for every registered VLM benchmark, and `superclass eval suite`.

usage: superclass eval vqav2 run --model DIR --questions Q.json [--annotations A.json] --image-root COCO --out OUT
       superclass eval vqav2 score --predictions P.jsonl --questions Q.json --annotations A.json --out OUT
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import eval.vlm.benchmarks  # noqa: F401  (registers the built-in benchmarks)
from eval.vlm.base import Benchmark, check_template
from eval.vlm.flags import OneLineParser, add_config_args, add_generation_args, config_from_args
from eval.vlm.registry import benchmarks
from eval.vlm.suite import add_suite_command
from pretrain.runtime.cli import check_out_dir
from pretrain.runtime.results import format_table


def _benchmark(args: argparse.Namespace, images: bool) -> Benchmark:
    """The benchmark the flags name, its Config filled from them; `--out` checked to be a folder."""
    check_out_dir(args.out, "metrics.json and predictions.jsonl")
    cls = benchmarks()[args.bench]
    return cls(config_from_args(cls.Config, args), images=images)


def show(value: Any) -> Any:
    return "-" if value is None else value


def _print_vlm_metrics(metrics: dict[str, Any], headline: str) -> None:
    """The headline row and every per-category breakdown (`per_*` keys) as Markdown tables."""
    header = ["benchmark", "split", "prompt", "rule", headline, "questions", "missing"]
    row = [metrics["benchmark"], metrics.get("split", "-"), metrics.get("prompt", "-"), metrics.get("rule", "-")]
    row += [show(metrics.get(headline)), metrics.get("num_questions", "-"), metrics.get("missing_predictions", "-")]
    if "circular" in metrics:  # MMBench
        header += ["unparsed", "single-pass", "circular"]
        row += [metrics.get("unparsed", "-"), show(metrics.get("accuracy_single_pass")), metrics["circular"]]
    elif "normalization" in metrics:
        header.append("normalization")
        row.append(metrics["normalization"])
    print(format_table(header, [row]))
    for key, breakdown in metrics.items():
        if key.startswith("per_") and isinstance(breakdown, dict) and breakdown:
            label = key.removeprefix("per_").replace("_", " ")
            rows = [[k, show(v if not isinstance(v, dict) else v.get("accuracy"))] for k, v in breakdown.items()]
            print(format_table([label, "accuracy"], rows))
    for name, path in metrics.get("files", {}).items():
        print(f"{name}: {path}")


def _cmd_vlm_run(args: argparse.Namespace) -> int:
    check_template(args.template)  # before the data is read
    bench = _benchmark(args, images=True)
    metrics = bench.generate(args.model, args.out, progress=not args.no_progress)
    if metrics is not None:
        _print_vlm_metrics(metrics, bench.headline)
        print(f"metrics: {args.out / 'metrics.json'}")
    return 0


def _cmd_vlm_score(args: argparse.Namespace) -> int:
    bench = _benchmark(args, images=False)
    metrics = bench.score(args.predictions, args.out)
    _print_vlm_metrics(metrics, bench.headline)
    print(f"metrics: {args.out / 'metrics.json'}")
    return 0


def add_vlm_commands(sub: Any) -> None:
    """`<benchmark> run|score` for every registered VLM benchmark, and `suite`."""
    for name, cls in benchmarks().items():
        parent = sub.add_parser(name, help=cls.description)
        actions = parent.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
        run = actions.add_parser("run", help="answer every question with a LLaVA model dir, then score (resumable)")
        add_generation_args(run, cls.max_new_tokens_help)
        score = actions.add_parser("score", help="score answers of ours, of the LLaVA repo or of lmms-eval")
        score.add_argument(
            "--predictions",
            required=True,
            type=Path,
            help='our {"question_id", "answer"} rows (JSONL or JSON list), LLaVA\'s answer JSONL, or lmms-eval\'s '
            "--log_samples output (*_samples_<task>.jsonl); the format is detected",
        )
        for p, fn in ((run, _cmd_vlm_run), (score, _cmd_vlm_score)):
            add_config_args(p, cls.Config, {"rule": cls.rules})
            p.add_argument("--out", required=True, type=Path, help="run directory: metrics.json, submission files")
            p.set_defaults(fn=fn, bench=name)
    add_suite_command(sub)

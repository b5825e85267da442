"""`superclass eval <benchmark> run|score` for every registered VLM benchmark, and `superclass eval suite`.

usage: superclass eval vqav2 run --model DIR --questions Q.json [--annotations A.json] --image-root COCO --out OUT
       superclass eval vqav2 score --predictions P.jsonl --questions Q.json --annotations A.json --out OUT
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import eval.vlm.benchmarks  # noqa: F401  (registers the built-in benchmarks)
from eval.vlm.base import check_template, run_benchmark, score_predictions
from eval.vlm.flags import OneLineParser, add_generation_args, generation_config, positive_int
from eval.vlm.registry import benchmarks
from eval.vlm.suite import add_suite_command
from pretrain.runtime.results import format_table


def _vlm_benchmark(args: argparse.Namespace, run: bool) -> Any:
    return benchmarks()[args.bench].build(args, run)


def show(value: Any) -> Any:
    return "-" if value is None else value


def _print_vlm_metrics(metrics: dict[str, Any]) -> None:
    """The headline row and every per-category breakdown (`per_*` keys) as Markdown tables."""
    header = ["benchmark", "split", "prompt", "accuracy", "questions", "missing"]
    row = [metrics["benchmark"], metrics.get("split", "-"), metrics.get("prompt", "-"), show(metrics.get("accuracy"))]
    row += [metrics.get("num_questions", "-"), metrics.get("missing_predictions", "-")]
    if metrics["benchmark"] == "mmbench":
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
    bench = _vlm_benchmark(args, run=True)
    metrics = run_benchmark(bench, args.model, args.out, generation_config(args, bench), args.template)
    if metrics is not None:
        _print_vlm_metrics(metrics)
        print(f"metrics: {args.out / 'metrics.json'}")
    return 0


def _cmd_vlm_score(args: argparse.Namespace) -> int:
    metrics = score_predictions(_vlm_benchmark(args, run=False), args.predictions, args.out)
    _print_vlm_metrics(metrics)
    print(f"metrics: {args.out / 'metrics.json'}")
    return 0


def add_vlm_commands(sub: Any) -> None:
    """`<benchmark> run|score` for every registered VLM benchmark, and `suite`."""
    for bench, spec in benchmarks().items():
        parent = sub.add_parser(bench, help=spec.help)
        actions = parent.add_subparsers(dest="action", required=True, parser_class=OneLineParser)
        run = actions.add_parser("run", help="answer every question with a LLaVA model dir, then score (resumable)")
        spec.add_args(run)
        add_generation_args(run, spec.max_new_tokens_help)
        score = actions.add_parser("score", help="score answers of ours, of the LLaVA repo or of lmms-eval")
        spec.add_args(score)
        score.add_argument(
            "--predictions",
            required=True,
            type=Path,
            help='our {"question_id", "answer"} rows (JSONL or JSON list), LLaVA\'s answer JSONL, or lmms-eval\'s '
            "--log_samples output (*_samples_<task>.jsonl); the format is detected",
        )
        for p, fn in ((run, _cmd_vlm_run), (score, _cmd_vlm_score)):
            p.add_argument("--out", required=True, type=Path, help="run directory: metrics.json, submission files")
            p.add_argument(
                "--limit", type=positive_int, default=None,
                help="a fixed subset of N questions: the same every run (seeded), stratified by category",
            )  # fmt: skip
            p.set_defaults(fn=fn, bench=bench)
    add_suite_command(sub, OneLineParser)

"""`superclass eval <command>` / `python -m eval <command>`: frozen-feature probes and VLM benchmarks.

usage: superclass eval {features,linear-probe,fewshot,recipe,recipes,run,evaluators,suite,<benchmark>} ...

Probes live in `eval/probes/`, VLM benchmarks in `eval/vlm/` (one file each under `eval/vlm/benchmarks/`).

  superclass eval features --model ENC --data ROOT --split train --out CACHE [--pool cls ...] [--decode gpu]
  superclass eval linear-probe --model ENC --data ROOT --out RUN [--recipe mae_in1k|clip_logreg|...] [live=true]
  superclass eval linear-probe --train-features CACHE --val-features CACHE --out RUN [key=value ...]
  superclass eval fewshot --model ENC --data ROOT --out RUN [--val-split test] [shots=[1,5,10]]
  superclass eval linear-probe --model ENC --data ROOT --out RUN features.decode=gpu lars.epochs=10
  superclass eval recipe NAME   (a linear-probe or fewshot recipe as YAML, for --config)
Probes compute missing features into --cache (default RUN/features/<split>) and reuse them next time.

VLM benchmarks (vqav2, gqa, vizwiz, scienceqa, pope, mmmu, textvqa, mmbench, mme, seedbench) on an HF LLaVA
directory (`run` generates into OUT/predictions.jsonl, resumable, then scores;
`score` scores our predictions, LLaVA's answer JSONL or lmms-eval's --log_samples output); each writes
OUT/metrics.json:
  superclass eval vqav2 run --model DIR --questions Q.json [--annotations A.json] --image-root COCO --out OUT
  superclass eval vqav2 run --model DIR --questions llava_vqav2_mscoco_test-dev2015.jsonl --image-root COCO ...
  superclass eval vqav2 score --predictions P.jsonl --questions Q.json --annotations A.json --out OUT [--normalize ...]
  superclass eval vqav2 run --model DIR --parquet lmms-lab/VQAv2/data --split validation --out OUT
  superclass eval textvqa run|score --data TextVQA_0.5.1_val.json --image-root train_images [--prompt lmms_eval] ...
  superclass eval textvqa run --data llava_textvqa_val_v051_ocr.jsonl --annotations TextVQA_0.5.1_val.json ...
  superclass eval mmbench run|score --tsv mmbench_dev_20230712.tsv [--prompt lmms_eval] [--circular off] ...
Test splits (no answers) get OUT/submission.json (EvalAI) or OUT/submission.tsv (OpenCompass) instead of a score.
Predictions of which none is for a question of the set are refused (one error line, exit 2); missing or unknown
ones are a warning with the counts.
A rerun of `run` into the same OUT resumes; it refuses answers made with another model, template, prompt layout,
max_new_tokens or precision (OUT/predictions.meta.json).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.probes import fewshot as fewshot_recipes
from eval.probes import linear_probe as linear_probe_recipes
from eval.probes.probe import ProbeSource, fewshot, linear_probe, load_probe_encoder
from eval.vlm.cli import add_vlm_commands, show
from pretrain.data.labelled import load_split
from pretrain.features import FeatureConfig, extract_features
from pretrain.runtime.cli import add_recipe_args, check_out_dir, hide_aliases, run_subcommand
from pretrain.runtime.config import parse_override, resolve, to_yaml
from pretrain.runtime.errors import ConfigError
from pretrain.runtime.evaluators import build_evaluator, describe_evaluators
from pretrain.runtime.results import format_table


def _add_feature_args(p: argparse.ArgumentParser) -> None:
    hide_aliases(p.add_argument("--model", "--encoder", help="encoder artifact directory"))
    p.add_argument("--data", help="dataset root (class folders or split list files) or one .jsonl/.csv list")
    p.add_argument("--train-split", default="train", help="split name the classes come from (default: train)")


def _add_probe_args(p: argparse.ArgumentParser, default_recipe: str, example: str) -> None:
    _add_feature_args(p)
    p.add_argument("--val-split", default="val", help="split scored (default: val; Pets/Cars: test)")
    p.add_argument("--train-features", help="a finished train feature cache (instead of --model/--data)")
    p.add_argument("--val-features", help="a finished val/test feature cache")
    p.add_argument("--cache", type=Path, help="where missing features are cached (default: OUT/features)")
    p.add_argument("--out", required=True, type=Path, help="run directory: metrics.json, predictions.jsonl")
    add_recipe_args(p, default_recipe, example)


def _cmd_features(args: argparse.Namespace) -> int:
    fcfg = FeatureConfig(
        batch_size=args.batch_size,
        num_workers=args.workers,
        precision=args.precision,
        chunk_size=args.chunk_size,
        device=args.device,
        decode=args.decode,
    )
    dataset = load_split(args.data, args.split, args.train_split)
    encoder = load_probe_encoder(args.model, fcfg.device)
    fs = extract_features(
        encoder,
        dataset,
        args.out,
        args.pool,
        fcfg.batch_size,
        fcfg.num_workers,
        None,
        fcfg.precision,
        fcfg.chunk_size,
        decode=fcfg.decode,
    )
    summary = {
        "out": str(args.out),
        "split": args.split,
        "rows": len(fs),
        "num_items": len(dataset),
        "classes": fs.num_classes,
        "dims": {p: int(t.shape[1]) for p, t in fs.features.items()},
        "skipped": fs.meta["skipped"],
    }
    print(json.dumps(summary))
    return 0


def _cmd_linear_probe(args: argparse.Namespace) -> int:
    recipe = resolve(linear_probe_recipes.get_recipe(args.recipe), args.config, args.overrides)
    linear_probe(ProbeSource.from_args(args), recipe)
    print(f"metrics: {args.out / 'metrics.json'}")
    return 0


def _cmd_fewshot(args: argparse.Namespace) -> int:
    cfg = resolve(fewshot_recipes.get_recipe(args.recipe), args.config, args.overrides)
    fewshot(ProbeSource.from_args(args), cfg)
    print(f"metrics: {args.out / 'metrics.json'}")
    return 0


def _all_recipes() -> dict[str, Any]:
    return {**linear_probe_recipes.RECIPES, **fewshot_recipes.RECIPES}


def _cmd_recipe(args: argparse.Namespace) -> int:

    recipes = _all_recipes()
    if args.name not in recipes:
        raise ConfigError(f"unknown recipe '{args.name}' (known: {', '.join(sorted(recipes))})")
    doc = (recipes[args.name].__doc__ or "").strip()
    header = "".join(f"# {line.strip()}\n" for line in doc.splitlines())
    print(header + to_yaml(resolve(recipes[args.name](), None, args.overrides)), end="")
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    for command, recipes in (("linear-probe", linear_probe_recipes.RECIPES), ("fewshot", fewshot_recipes.RECIPES)):
        for name, fn in recipes.items():
            print(f"{name:<18} {command:<13} {(fn.__doc__ or '').strip().splitlines()[0]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="superclass eval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("features", help="cache an encoder's features of one split (resumable)")
    _add_feature_args(p)
    p.add_argument(
        "--decode", choices=["cpu", "gpu"], default="cpu",
        help="gpu: workers only read files; JPEGs are decoded (nvJPEG) and resized on the GPU",
    )  # fmt: skip
    p.add_argument("--split", default="train", help="split to encode (folder or list name)")
    p.add_argument("--out", required=True, type=Path, help="feature cache directory")
    p.add_argument(
        "--pool",
        nargs="+",
        default=["default"],
        choices=["default", "cls", "patch_mean", "tokens"],
        help="pooled features (what the probes read); tokens: every output token, float16 [N, T, D]",
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--chunk-size", type=int, default=8192, help="images per cache chunk (the resume unit)")
    p.add_argument("--device", default="auto")
    p.set_defaults(fn=_cmd_features)

    p = sub.add_parser("linear-probe", help="MAE/MILAN LARS probe or OpenAI CLIP L-BFGS probe (top-1/top-5)")
    _add_probe_args(p, "mae_in1k", "lars.epochs=10 live=true features.decode=gpu")
    p.set_defaults(fn=_cmd_linear_probe)

    p = sub.add_parser("fewshot", help="big_vision fewshot_lsr: k-shot ridge regression, mean ± std over seeds")
    _add_probe_args(p, "fewshot_lsr", "shots=[1,5,10] seeds=5 features.batch_size=128")
    p.set_defaults(fn=_cmd_fewshot)

    p = sub.add_parser("recipe", help="print a linear-probe or fewshot recipe as YAML (edit, pass back with --config)")
    p.add_argument("name")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(fn=_cmd_recipe)

    p = sub.add_parser("recipes", help="list the named recipes")
    p.set_defaults(fn=_cmd_recipes)
    add_vlm_commands(sub)
    _add_evaluator_commands(sub)
    return parser


def _add_evaluator_commands(sub: Any) -> None:
    """`run NAME` (any registered evaluator, settings as key=value) and `evaluators` (the list)."""
    p = sub.add_parser(
        "run", help="run any evaluator by name (see `superclass eval evaluators`), settings as key=value"
    )
    p.add_argument("name", help="evaluator name: linear_probe, fewshot, zeroshot, retrieval, caption, vqav2, pope, ...")
    p.add_argument("--model", required=True, help="what the evaluator reads: an encoder, LiT, captioner or LLaVA dir")
    p.add_argument("--out", required=True, type=Path, help="run directory: metrics.json and raw predictions")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="settings, e.g. data=/data/in1k val_split=val")
    p.set_defaults(fn=_cmd_run_evaluator)
    p = sub.add_parser("evaluators", help="list every evaluator: name, what it reads, its headline metric")
    p.set_defaults(fn=_cmd_evaluators)


def _cmd_run_evaluator(args: argparse.Namespace) -> int:
    check_out_dir(args.out, "metrics.json and the raw predictions")
    settings: dict[str, Any] = {}
    for item in args.overrides:
        settings.update(parse_override(item))
    evaluator = build_evaluator(args.name, settings, where="eval run")
    metrics = evaluator.run(args.model, args.out)
    print(f"{evaluator.name}: {evaluator.headline} = {show(evaluator.headline_value(metrics))}")
    print(f"metrics: {args.out / 'metrics.json'}")
    return 0


def _cmd_evaluators(args: argparse.Namespace) -> int:

    rows = [[d["name"], d["consumes"], d["headline"], d["description"]] for d in describe_evaluators()]
    print(format_table(["evaluator", "reads", "headline", "what"], rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_subcommand(build_parser, argv)

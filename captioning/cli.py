"""`superclass captioning <command>` / `python -m captioning <command>`: train, generate, score, recipes.

usage: superclass captioning {train,generate,score,recipe,recipes} ...
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path

from pretrain.runtime.cli import add_recipe_args, add_recipe_commands, check_out_dir, hide_aliases, run_subcommand

RESULTS_FILE = "captions.json"  # what `generate --out DIR` writes inside DIR (the caption evaluator's name too)


def _cmd_train(args: argparse.Namespace) -> int:
    from captioning.recipes import get_recipe
    from captioning.train import train
    from pretrain.runtime.config import resolve

    print(f"captioner artifact: {train(resolve(get_recipe(args.recipe), args.config, args.overrides))}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from captioning.recipes import get_recipe
    from captioning.train import generate
    from pretrain.runtime.config import resolve

    out = check_out_dir(args.out, RESULTS_FILE) / RESULTS_FILE
    recipe = resolve(get_recipe(args.recipe), args.config, args.overrides)
    out.parent.mkdir(parents=True, exist_ok=True)
    info = generate(args.model, recipe, args.split, out, device=args.device)
    print(f"captioned {info['images']} images of split '{info['split']}' ({info['skipped']} skipped) -> {info['out']}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from captioning.score import METRIC_KEYS, score_files

    results = args.results / RESULTS_FILE if args.results.is_dir() else args.results  # a `generate --out` folder
    metrics = score_files(results, args.annotations, args.out, split=args.split, spice=not args.no_spice)
    for key in (*METRIC_KEYS, "SPICE"):
        value = metrics.get(key)
        print(f"{key:<8} {'n/a' if value is None else f'{100 * value:.2f}'}")
    for note in metrics.get("notes", []):
        print(f"note: {note}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="superclass captioning", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a ClipCap mapper on an encoder's features")
    add_recipe_args(p, "clipcap_coco", "encoder=runs/sc_b16/encoder data.karpathy=dataset_coco.json run.steps=100")
    p.set_defaults(fn=_cmd_train)

    p = sub.add_parser("generate", help=f"caption a split into COCO results JSON, OUT/{RESULTS_FILE} (resumable)")
    hide_aliases(p.add_argument("--model", "--captioner", required=True, help="captioner artifact (<run>/captioner)"))
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument(
        "--out", required=True, type=Path, help=f"folder for {RESULTS_FILE} (and {RESULTS_FILE}.partial.jsonl)"
    )
    p.add_argument("--device", default="cpu")
    add_recipe_args(p, "clipcap_coco", "data.karpathy=dataset_coco.json data.image_root=COCO decode.beam=3")
    p.set_defaults(fn=_cmd_generate)

    p = sub.add_parser("score", help="BLEU/METEOR/ROUGE-L/CIDEr(/SPICE) of a results JSON with pycocoevalcap")
    p.add_argument("--results", required=True, type=Path, help="COCO results JSON, or a `generate --out` folder")
    p.add_argument("--annotations", required=True, help="COCO caption annotations or Karpathy dataset_coco.json")
    p.add_argument("--out", required=True, help="directory for metrics.json")
    p.add_argument("--split", default="test", help="Karpathy split when annotations are a Karpathy file")
    p.add_argument("--no-spice", action="store_true", help="skip SPICE (slow; needs CoreNLP)")
    p.set_defaults(fn=_cmd_score)

    add_recipe_commands(sub, lambda: importlib.import_module("captioning.recipes").RECIPES)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_subcommand(build_parser, argv)

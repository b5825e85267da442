"""`superclass lit <command>` / `python -m lit <command>`: train, cached features, recipes, zero-shot, retrieval.

usage: superclass lit {train,features,recipe,recipes,zeroshot,retrieval,export} ...
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from pretrain.runtime.cli import add_recipe_args, add_recipe_commands, run_subcommand


def _cmd_train(args: argparse.Namespace) -> int:
    from lit.recipes import get_recipe
    from lit.train import train
    from pretrain.runtime.config import resolve

    out = train(resolve(get_recipe(args.recipe), args.config, args.overrides))
    if os.environ.get("RANK", "0") == "0":
        print(f"LiT model: {out}")
    return 0


def _cmd_features(args: argparse.Namespace) -> int:
    from lit.recipes import get_recipe
    from lit.train import precompute_features
    from pretrain.runtime.config import resolve

    cache = precompute_features(resolve(get_recipe(args.recipe), args.config, args.overrides))
    if os.environ.get("RANK", "0") == "0":
        skipped = json.dumps(dict(Counter(cache.reasons.values())))
        print(f"feature cache: {cache.path} ({len(cache.features)} of {len(cache)} images, skipped {skipped})")
    return 0


def _table(metrics: dict, keys: Sequence[str]) -> None:
    for key in keys:
        if key in metrics:
            print(f"{key:<32} {metrics[key]:.4f}")


def _cmd_zeroshot(args: argparse.Namespace) -> int:
    from lit.zeroshot import evaluate_zeroshot

    metrics = evaluate_zeroshot(
        args.model,
        args.data,
        args.out,
        args.split,
        args.classnames,
        args.templates,
        args.batch_size,
        args.device,
        encoder=args.encoder,
        train_split=args.train_split,
        num_workers=args.workers,
    )
    _table(metrics, ("top1", "top5"))  # percent
    print(f"images {metrics['num_images']}, skipped {json.dumps(metrics['skipped'])}; wrote {args.out}/metrics.json")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from lit.export import export_lit_open_clip

    print(f"OpenCLIP model: {export_lit_open_clip(args.model, args.out, encoder=args.encoder)}")
    return 0


def _cmd_retrieval(args: argparse.Namespace) -> int:
    from lit.retrieval import evaluate_retrieval

    metrics = evaluate_retrieval(
        args.model,
        args.karpathy,
        args.images,
        args.out,
        args.split,
        args.batch_size,
        args.device,
        encoder=args.encoder,
        num_workers=args.workers,
    )
    _table(metrics, [f"{d}_retrieval_recall@{k}" for d in ("image", "text") for k in (1, 5, 10)])
    print(f"images {metrics['num_images']}, texts {metrics['num_texts']}, skipped {json.dumps(metrics['skipped'])}")
    return 0


ENCODER_HELP = "the encoder the LiT model was built on, when it moved since training (default: its recorded path)"


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    """Flags every LiT evaluator shares."""
    p.add_argument("--encoder", default=None, type=Path, help=ENCODER_HELP)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=4, help="DataLoader workers decoding images (0: in-process)")
    p.add_argument("--device", default="cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="superclass lit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a text tower against a locked encoder artifact (torchrun for GPUs)")
    add_recipe_args(p, "lit_tiny", "encoder=runs/sc_tiny/encoder run.out_dir=runs/lit_tiny")
    p.set_defaults(fn=_cmd_train)

    p = sub.add_parser("features", help="run the locked tower once over the training data and cache its features")
    add_recipe_args(p, "lit_tiny", "encoder=runs/sc_tiny/encoder augment=false cache_dir=cache/lit")
    p.set_defaults(fn=_cmd_features)

    add_recipe_commands(sub, lambda: importlib.import_module("lit.recipes").RECIPES)

    p = sub.add_parser("zeroshot", help="zero-shot top-1/top-5 on a folder or list dataset")
    p.add_argument("--model", required=True, type=Path, help="LiT model directory (run_dir/lit)")
    p.add_argument("--data", required=True, type=Path, help="dataset root (ROOT/<split>/<class>/...) or list file")
    p.add_argument("--split", default="val")
    p.add_argument("--train-split", default=None, help="split whose classes define the labels (default: train if any)")
    p.add_argument(
        "--classnames", default=None, help="'imagenet', 'folders', or a file, one name per class (sorted folders)"
    )
    p.add_argument("--templates", default="openai", help="'openai' (80), 'simple', or a file of '{}' templates")
    p.add_argument("--out", required=True, type=Path, help="directory for metrics.json + predictions.jsonl")
    _add_eval_args(p)
    p.set_defaults(fn=_cmd_zeroshot)

    p = sub.add_parser("retrieval", help="COCO / Flickr30k Karpathy image-text retrieval recall@1/5/10")
    p.add_argument("--model", required=True, type=Path, help="LiT model directory (run_dir/lit)")
    p.add_argument("--karpathy", required=True, type=Path, help="dataset_coco.json / dataset_flickr30k.json")
    p.add_argument("--images", required=True, type=Path, help="image root (COCO: holding val2014/ ...)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True, type=Path, help="directory for metrics.json")
    _add_eval_args(p)
    p.set_defaults(fn=_cmd_retrieval)

    p = sub.add_parser("export", help="the LiT model as an OpenCLIP model directory (open_clip.create_model)")
    p.add_argument("--model", required=True, help="LiT model directory (<run>/lit)")
    p.add_argument("--to", choices=["open_clip"], default="open_clip", help="the format to write")
    p.add_argument("--encoder", default=None, type=Path, help=ENCODER_HELP)
    p.add_argument("--out", required=True, help="OpenCLIP model directory to write")
    p.set_defaults(fn=_cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_subcommand(build_parser, argv)

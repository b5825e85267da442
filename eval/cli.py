"""`superclass eval <command>` / `python -m eval <command>`: frozen features and probes of an encoder artifact.

usage: superclass eval {features,linear-probe,fewshot,recipe,recipes} ...

  superclass eval features --encoder ENC --data ROOT --split train --out CACHE [--pool default cls patch_mean]
  superclass eval linear-probe --encoder ENC --data ROOT --out RUN [--recipe mae_in1k|clip_logreg|...] [--live]
  superclass eval linear-probe --train-features CACHE --val-features CACHE --out RUN [key=value ...]
  superclass eval fewshot --encoder ENC --data ROOT --out RUN [--val-split test] [shots=[1,5,10]]
  superclass eval recipe NAME   (a linear-probe or fewshot recipe as YAML, for --config)
Probes compute missing features into --cache (default RUN/features/<split>) and reuse them next time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pretrain.runtime.cli import add_recipe_args, run_cli


def _add_feature_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", help="encoder artifact directory")
    p.add_argument("--data", help="dataset root (class folders or split list files) or one .jsonl/.csv list")
    p.add_argument("--train-split", default="train", help="split name the classes come from (default: train)")


def _add_probe_args(p: argparse.ArgumentParser, default_recipe: str) -> None:
    _add_feature_args(p)
    p.add_argument("--val-split", default="val", help="split scored (default: val; Pets/Cars: test)")
    p.add_argument("--train-features", help="a finished train feature cache (instead of --encoder/--data)")
    p.add_argument("--val-features", help="a finished val/test feature cache")
    p.add_argument("--cache", type=Path, help="where missing features are cached (default: OUT/features)")
    p.add_argument("--out", required=True, type=Path, help="run directory: metrics.json, predictions.jsonl")
    add_recipe_args(p, default_recipe)


def _load_encoder(args: argparse.Namespace, device: str) -> Any:
    from pretrain.encoder import load_encoder
    from pretrain.runtime.distributed import pick_device
    from pretrain.runtime.errors import UserError

    if not args.encoder:
        raise UserError("--encoder is required unless both feature caches are given")
    return load_encoder(args.encoder, pick_device(device))


def _dataset(args: argparse.Namespace, split: str) -> Any:
    """The `split` of --data, listed once per command."""
    from pretrain.data.labelled import load_split
    from pretrain.runtime.errors import UserError

    if not args.data:
        raise UserError(f"--data is required to compute the {split} features (or pass a feature cache)")
    memo = args.__dict__.setdefault("_datasets", {})
    if split not in memo:
        memo[split] = load_split(args.data, split, args.train_split)
    return memo[split]


def _split_features(args: argparse.Namespace, split: str, cache_arg: str | None, fcfg: Any, encoder: Any) -> Any:
    """A FeatureSet for `split`: the given cache, or computed into (and reused from) --cache/<split>."""
    from eval.features import extract_features, read_feature_set

    if cache_arg:
        return read_feature_set(cache_arg)
    cache = (args.cache or args.out / "features") / split
    return extract_features(
        encoder(),
        _dataset(args, split),
        cache,
        [fcfg.pool],
        fcfg.batch_size,
        fcfg.num_workers,
        None,
        fcfg.precision,
        fcfg.chunk_size,
    )


def _probe_inputs(args: argparse.Namespace, fcfg: Any, need_train: bool = True) -> tuple[Any, Any, Any]:
    """(train features or None, val features, encoder getter); the encoder is loaded only when needed."""
    from pretrain.runtime.errors import UserError

    loaded: list[Any] = []

    def encoder() -> Any:
        if not loaded:
            loaded.append(_load_encoder(args, fcfg.device))
        return loaded[0]

    if args.data:  # a missing or malformed dataset fails fast, before the encoder is loaded
        _dataset(args, args.train_split)
    train = _split_features(args, args.train_split, args.train_features, fcfg, encoder) if need_train else None
    val = _split_features(args, args.val_split, args.val_features, fcfg, encoder)
    if train is not None:
        a, b = train.meta["encoder"], val.meta["encoder"]
        if (a["config_hash"], a["weights_hash"]) != (b["config_hash"], b["weights_hash"]):
            raise UserError("the train and val features come from different encoders")
        if train.meta["dataset"]["signature"] == val.meta["dataset"]["signature"]:
            t, v = args.train_split, args.val_split
            raise UserError(
                f"train and {v} are the same images ({val.meta['dataset']['source']}); give a folder with "
                f"{t}/ and {v}/ (or {t}.jsonl and {v}.jsonl)"
            )
    return train, val, encoder


def _cmd_features(args: argparse.Namespace) -> int:
    from eval.features import FeatureConfig, extract_features
    from pretrain.data.labelled import load_split

    fcfg = FeatureConfig(
        batch_size=args.batch_size,
        num_workers=args.workers,
        precision=args.precision,
        chunk_size=args.chunk_size,
        device=args.device,
    )
    dataset = load_split(args.data, args.split, args.train_split)
    encoder = _load_encoder(args, fcfg.device)
    fs = extract_features(
        encoder, dataset, args.out, args.pool, fcfg.batch_size, fcfg.num_workers, None, fcfg.precision, fcfg.chunk_size
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
    from eval.linear_probe import get_recipe, run_linear_probe
    from pretrain.runtime.config import resolve

    recipe = resolve(get_recipe(args.recipe), args.config, args.overrides)
    if args.live:
        recipe = dataclasses.replace(recipe, live=True)  # __post_init__ checks the method
    train, val, encoder = _probe_inputs(args, recipe.features, need_train=not recipe.live)
    train_dataset = _dataset(args, args.train_split) if recipe.live else None
    run_linear_probe(recipe, train, val, args.out, encoder() if recipe.live else None, train_dataset)
    print(f"metrics: {args.out / 'metrics.json'}")
    return 0


def _cmd_fewshot(args: argparse.Namespace) -> int:
    from eval.fewshot import get_recipe, run_fewshot
    from pretrain.runtime.config import resolve

    cfg = resolve(get_recipe(args.recipe), args.config, args.overrides)
    train, val, _ = _probe_inputs(args, cfg.features)
    run_fewshot(cfg, train, val, args.out)
    print(f"metrics: {args.out / 'metrics.json'}")
    return 0


def _all_recipes() -> dict[str, Any]:
    from eval import fewshot, linear_probe

    return {**linear_probe.RECIPES, **fewshot.RECIPES}


def _cmd_recipe(args: argparse.Namespace) -> int:
    from pretrain.runtime.config import resolve, to_yaml
    from pretrain.runtime.errors import ConfigError

    recipes = _all_recipes()
    if args.name not in recipes:
        raise ConfigError(f"unknown recipe '{args.name}' (known: {', '.join(sorted(recipes))})")
    doc = (recipes[args.name].__doc__ or "").strip()
    header = "".join(f"# {line.strip()}\n" for line in doc.splitlines())
    print(header + to_yaml(resolve(recipes[args.name](), None, args.overrides)), end="")
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    from eval import fewshot, linear_probe

    for command, recipes in (("linear-probe", linear_probe.RECIPES), ("fewshot", fewshot.RECIPES)):
        for name, fn in recipes.items():
            print(f"{name:<18} {command:<13} {(fn.__doc__ or '').strip().splitlines()[0]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="superclass eval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("features", help="cache an encoder's features of one split (resumable)")
    _add_feature_args(p)
    p.add_argument("--split", default="train", help="split to encode (folder or list name)")
    p.add_argument("--out", required=True, type=Path, help="feature cache directory")
    p.add_argument("--pool", nargs="+", default=["default"], choices=["default", "cls", "patch_mean"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--chunk-size", type=int, default=8192, help="images per cache chunk (the resume unit)")
    p.add_argument("--device", default="auto")
    p.set_defaults(fn=_cmd_features)

    p = sub.add_parser("linear-probe", help="MAE/MILAN LARS probe or OpenAI CLIP L-BFGS probe (top-1/top-5)")
    _add_probe_args(p, "mae_in1k")
    p.add_argument("--live", action="store_true", help="run the encoder every step on MAE's train augmentation")
    p.set_defaults(fn=_cmd_linear_probe)

    p = sub.add_parser("fewshot", help="big_vision fewshot_lsr: k-shot ridge regression, mean ± std over seeds")
    _add_probe_args(p, "fewshot_lsr")
    p.set_defaults(fn=_cmd_fewshot)

    p = sub.add_parser("recipe", help="print a linear-probe or fewshot recipe as YAML (edit, pass back with --config)")
    p.add_argument("name")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(fn=_cmd_recipe)

    p = sub.add_parser("recipes", help="list the named recipes")
    p.set_defaults(fn=_cmd_recipes)
    return parser


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)

"""`superclass pretrain <command>` / `python -m pretrain <command>`: train, recipes, IDF counts, data tools, export.

usage: superclass pretrain {train,recipe,recipes,sweep,idf-counts,synthetic-shards,resize-shards,export,import} ...
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

from pretrain.runtime.cli import add_recipe_args, add_recipe_commands, check_out_dir, hide_aliases, run_subcommand
from pretrain.runtime.errors import UserError

IDF_COUNTS_FILE = "idf_counts.safetensors"  # what `idf-counts --out DIR` writes inside DIR


def _cmd_train(args: argparse.Namespace) -> int:
    from pretrain.recipes import get_recipe
    from pretrain.runtime.config import resolve
    from pretrain.train import train

    recipe = resolve(get_recipe(args.recipe), args.config, args.overrides)
    artifact = train(recipe)
    if os.environ.get("RANK", "0") == "0":
        print(f"encoder artifact: {artifact}")
    return 0


def _is_spec_key(spec: object, parts: list[str]) -> bool:
    """`seeds` or `synthetic.train` name the sweep spec; `data.train` (the spec's `data` is a path) a recipe."""
    if not dataclasses.is_dataclass(spec) or parts[0] not in {f.name for f in dataclasses.fields(spec)}:
        return False
    return len(parts) == 1 or _is_spec_key(getattr(spec, parts[0]), parts[1:])


def _check_override_keys(spec_keys: list[str], overrides: list[str]) -> None:
    """An override that names neither a sweep key nor a key of the arms' recipes is a one-line error listing both."""
    from pretrain.recipes import PretrainRecipe

    recipe_keys = sorted(f.name for f in dataclasses.fields(PretrainRecipe))
    for override in overrides:
        key = override.split("=", 1)[0]
        if key.split(".")[0] not in recipe_keys:
            raise UserError(
                f"sweep: unknown key {key!r} (sweep keys: {', '.join(spec_keys)}; "
                f"recipe keys, laid over every run: {', '.join(recipe_keys)})"
            )


def _sweep_spec(args: argparse.Namespace) -> object:
    """The sweep named by `args` with its key=value overrides: spec keys set the spec, the rest every run's recipe."""
    from pretrain.runtime.config import resolve
    from pretrain.sweeps import SWEEPS, SweepSpec

    if "=" in args.name:  # `sweep seeds=[0]`: an override in the name's place; the default sweep
        args.overrides.insert(0, args.name)
        args.name = "demo_fair"
    spec_keys = [o for o in args.overrides if _is_spec_key(SweepSpec(), o.split("=", 1)[0].split("."))]
    spec = resolve(SWEEPS.get(args.name), args.config, spec_keys)
    recipe_overrides = [o for o in args.overrides if o not in spec_keys]
    _check_override_keys(sorted(f.name for f in dataclasses.fields(SweepSpec)), recipe_overrides)
    spec.overrides += recipe_overrides
    return spec


def _cmd_sweep(args: argparse.Namespace) -> int:
    from pretrain.runtime.config import to_yaml
    from pretrain.sweeps import SWEEPS, check_probe_data, commands, plan, report_only, run_sweep

    if args.list:
        print(SWEEPS.listing())
        return 0
    spec = _sweep_spec(args)
    if args.print_spec:
        print(to_yaml(spec), end="")
        return 0
    if args.out is None:
        raise UserError("sweep: --out is required (the sweep's folder: runs, data, report)")
    check_out_dir(args.out, "runs/, data/, sweep.md, sweep.json and the plots")
    if args.data:  # checked before anything trains, also where it goes unused (--print-commands, --report-only)
        check_probe_data(spec, args.data)
    if args.print_commands:
        if args.nproc < 1:
            raise UserError(f"--nproc {args.nproc}: expected at least 1 process per node")
        print("\n".join(commands(plan(spec, args.out), args.nproc)))
        return 0
    if args.report_only:
        summary = report_only(spec, args.out, name=args.name)
    else:
        summary = run_sweep(spec, args.out, data=args.data, name=args.name)
    print((Path(args.out) / "sweep.md").read_text(), end="")
    return 0 if summary["rows"] else 1


def iter_captions(spec: str, kind: str, counts: Counter) -> Iterator[str]:
    """Stripped, non-empty captions of a shard set (no image decoding) or of a JSONL/CSV list, for offline IDF
    counting: the captions training would label (empty ones are counted under `empty_caption` and skipped)."""
    from pretrain.data.lists import read_list
    from pretrain.data.shards import decode_caption, expand_shards, iter_raw_samples

    if kind == "list":
        for caption in (c.strip() for c in read_list(spec).captions):
            if caption:
                yield caption
            else:
                counts["empty_caption"] += 1
        return
    for shard in expand_shards(spec):
        for _, raw in iter_raw_samples(shard, counts):
            caption = decode_caption(raw.members, counts)
            if caption is not None:
                yield caption


def _cmd_idf_counts(args: argparse.Namespace) -> int:
    from pretrain.labels import LabelConfig, build_tokenizer, compute_idf_counts, save_idf_counts
    from pretrain.runtime.config import resolve

    out = check_out_dir(args.out, IDF_COUNTS_FILE) / IDF_COUNTS_FILE
    # `labels.mode=official` as in a training recipe, or just `mode=official`
    labels = resolve(LabelConfig(), None, [o.removeprefix("labels.") for o in args.overrides])
    tokenizer = build_tokenizer(labels)
    counts: Counter = Counter()
    idf = compute_idf_counts(iter_captions(args.data, args.kind, counts), tokenizer, official=labels.mode == "official")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_idf_counts(idf, out)  # records the tokenizer and labels.mode, which a run using the file must share
    print(json.dumps({"out": str(out), "num_samples": idf.num_samples, "skipped": dict(counts)}))
    return 0


def _cmd_synthetic_shards(args: argparse.Namespace) -> int:
    from pretrain.data.synthetic import write_shards

    paths = write_shards(args.out, args.samples, args.per_shard, seed=args.seed, image_size=args.image_size)
    print(f"wrote {len(paths)} shards to {args.out}: {paths[0].name} .. {paths[-1].name}")
    return 0


def _cmd_resize_shards(args: argparse.Namespace) -> int:
    from pretrain.data.resize import resize_shards

    counts = resize_shards(args.src, args.out, short_side=args.short_side, quality=args.quality, workers=args.workers)
    print(json.dumps(dict(counts)))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pretrain.export import export_encoder

    out = export_encoder(args.model, args.to, args.out)
    print(f"{args.to} export: {out}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from pretrain.export import import_encoder

    arch = {"config": args.arch_config, "model_name": args.arch, "pool": args.pool}
    out = import_encoder(args.source, args.model, args.out, **arch, idf_batch_size=args.idf_batch_size)
    print(f"encoder artifact: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="superclass pretrain", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train an encoder from a recipe (torchrun for several GPUs)")
    add_recipe_args(p, "superclass_tiny", "run.out_dir=runs/tiny run.steps=100 optim.lr=1e-3")
    p.set_defaults(fn=_cmd_train)

    add_recipe_commands(sub, lambda: importlib.import_module("pretrain.recipes").RECIPES)

    p = sub.add_parser("sweep", help="a fair comparison: arms x lr grid x seeds x samples seen, picked on val")
    p.add_argument("name", nargs="?", default="demo_fair", help="named sweep (--list shows them; default demo_fair)")
    p.add_argument("--out", type=Path, default=None, help="sweep folder: runs/, data/, sweep.md, sweep.json, plots")
    p.add_argument("--data", default=None, help="labelled folder with train/val/test splits for the probes")
    p.add_argument("--config", default=None, help="YAML laid over the sweep (print one with --print-spec)")
    p.add_argument("--print-spec", action="store_true", help="print the sweep as YAML and exit")
    p.add_argument("--print-commands", action="store_true", help="print one torchrun command per unfinished run")
    p.add_argument("--nproc", type=int, default=8, help="--nproc-per-node of the printed commands")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from finished runs; train nothing")
    p.add_argument("--list", action="store_true", help="list the named sweeps")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="spec keys (seeds, samples, ...) or recipe keys laid over every run",
    )
    p.set_defaults(fn=_cmd_sweep)

    p = sub.add_parser("idf-counts", help="document frequencies over a dataset, for idf.mode=offline")
    p.add_argument("--data", required=True, help="shard pattern (brace/glob/dir) or a JSONL/CSV list")
    p.add_argument("--kind", choices=["shards", "list"], default="shards")
    p.add_argument("--out", required=True, type=Path, help=f"folder to write {IDF_COUNTS_FILE} into")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="the run's labels settings, e.g. labels.mode=official"
    )
    p.set_defaults(fn=_cmd_idf_counts)

    p = sub.add_parser("synthetic-shards", help="write the synthetic captioned images as webdataset shards")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--per-shard", type=int, default=1000)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_cmd_synthetic_shards)

    p = sub.add_parser("resize-shards", help="rewrite shards with images resized (shortest side), for fast loading")
    p.add_argument("--src", required=True, help="shard pattern")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--quality", type=int, default=90)
    p.add_argument("--workers", type=int, default=4)
    p.set_defaults(fn=_cmd_resize_shards)

    p = sub.add_parser("export", help="write an encoder artifact as an HF CLIPVisionModel, OpenCLIP or timm directory")
    p.add_argument("--model", required=True, type=Path, help="the encoder artifact")
    p.add_argument("--to", required=True, choices=["hf", "open_clip", "timm"], help="the format to write")
    p.add_argument("--out", required=True, type=Path, help="directory to write (replaced atomically)")
    p.set_defaults(fn=_cmd_export)

    p = sub.add_parser("import", help="turn an HF or OpenCLIP CLIP vision tower into an encoder artifact")
    p.add_argument("--from", dest="source", required=True, choices=["hf", "open_clip"], help="the format read")
    p.add_argument("--model", required=True, type=Path, help="HF model dir, or OpenCLIP dir / weights file")
    p.add_argument("--out", required=True, type=Path, help="encoder artifact directory to write")
    p.add_argument("--arch", default=None, help="open_clip model name (for a weights file), e.g. ViT-B-16")
    hide_aliases(
        p.add_argument(
            "--arch-config", "--config", type=Path, default=None, help="OpenCLIP model config JSON (for a weights file)"
        )
    )
    p.add_argument("--pool", choices=["avg", "token"], default=None, help="default: the source's (CLIP: token)")
    p.add_argument(
        "--idf-batch-size",
        type=int,
        default=None,
        help="an official SuperClass checkpoint's global batch size (its IDF smoothing; default 16384, the paper's)",
    )
    p.set_defaults(fn=_cmd_import)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_subcommand(build_parser, argv)

"""`superclass vlm <command>` / `python -m vlm <command>`: LLaVA-1.5 on any encoder: build, train, export, chat, serve.

usage: superclass vlm {build,train,export,import,chat,serve,recipe,recipes} ...
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pretrain.runtime.cli import add_recipe_args, add_recipe_commands, hide_aliases, run_subcommand

if TYPE_CHECKING:
    from vlm.model_config import VLMModelConfig


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """The `VLMModelConfig` fields as options (`build` takes them; a training command can reuse them)."""
    from vlm.model_config import PROJECTORS, VLMModelConfig

    d = VLMModelConfig()
    parser.add_argument("--encoder", required=True, help="the encoder artifact to build on (pretrain's output)")
    parser.add_argument("--llm", default=d.llm, help=f"HF name or local path of a LLaMA-family LM (default: {d.llm})")
    parser.add_argument("--projector", default=d.projector, help=f"projector (supported: {', '.join(PROJECTORS)})")
    parser.add_argument("--feature-layer", type=int, default=d.feature_layer, help="tower hidden_states index")
    parser.add_argument(
        "--feature-select", default=d.feature_select, choices=["patch", "cls_patch"], help="patch drops the CLS"
    )
    parser.add_argument("--image-size", type=int, default=d.image_size, help="tower resolution (0: the encoder's)")
    parser.add_argument(
        "--image-aspect-ratio", default=d.image_aspect_ratio, choices=["pad", "crop"], help="pad to square or crop"
    )
    hide_aliases(
        parser.add_argument(
            "--precision", "--llm-dtype", default=d.llm_dtype, choices=["auto", "bf16", "fp32"], help="weights dtype"
        )
    )


def model_config(args: argparse.Namespace) -> VLMModelConfig:
    """The `VLMModelConfig` that `add_model_args` options describe."""
    from vlm.model_config import VLMModelConfig

    return VLMModelConfig(
        encoder=args.encoder,
        llm=args.llm,
        projector=args.projector,
        feature_layer=args.feature_layer,
        feature_select=args.feature_select,
        image_size=args.image_size,
        image_aspect_ratio=args.image_aspect_ratio,
        llm_dtype=args.precision,
    )


def _cmd_build(args: argparse.Namespace) -> int:
    from vlm.assemble import build_llava, describe
    from vlm.llava_dir import save_llava
    from vlm.model_config import check_config

    cfg = model_config(args)
    check_config(cfg)  # a bad field fails before a 7B LM is loaded
    model, processor = build_llava(cfg)
    out = save_llava(model, processor, args.out, form=args.form, image_processor=args.image_processor)
    print(describe(model))
    print(f"LLaVA model ({args.form} form, projector untrained): {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from vlm.llava_dir import load_llava, save_llava

    if args.form == "llava":
        from vlm.llava_codebase import export_llava_codebase

        out = export_llava_codebase(args.model, args.out)
        print(f"LLaVA model (the LLaVA codebase's format; tower in {out / 'vision_tower'}): {out}")
        if "llava" not in out.name.lower():
            print(f"note: LLaVA's load_pretrained_model needs 'llava' in the model name ({out.name!r} has none)")
        return 0
    model, processor = load_llava(args.model)
    out = save_llava(model, processor, args.out, form=args.form, image_processor=args.image_processor)
    print(f"LLaVA model ({args.form} form): {out}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from vlm.llava_codebase import import_llava_codebase

    out = import_llava_codebase(args.model, args.out, vision_tower=args.vision_tower)
    print(f"LLaVA model (hf form, from the LLaVA codebase's {args.model}): {out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from pretrain.runtime.config import resolve
    from pretrain.runtime.errors import ConfigError
    from vlm.recipes import get_recipe
    from vlm.train import train

    if args.stage is not None:  # the old second way to pick the stage
        raise ConfigError("--stage is gone: the recipe picks the stage (--recipe llava15_stage1, llava15_stage2, ...)")
    print(f"LLaVA model: {train(resolve(get_recipe(args.recipe), args.config, args.overrides))}")
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from vlm.chat import chat

    chat(args.model, args.image, args.prompt, args.template, args.max_new_tokens, device=args.device)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from vlm.serve import Settings, check_host, load_models, require_gradio

    warning = check_host(args.host, args.allow_remote)
    require_gradio()
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before Gradio is imported: no telemetry, no version check
    from vlm.serve_page import build_page, serve

    models = load_models(args.model, device=args.device)
    page = build_page(models, args.template, Settings(max_new_tokens=args.max_new_tokens))
    serve(page, args.host, args.port)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"[vlm serve] http://{host}:{args.port} ({len(models)} models; Ctrl-C stops)", flush=True)
    page.block_thread()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `vlm` parser: one `sub` action; a new command is one more `sub.add_parser(...)` with `fn` set."""
    parser = argparse.ArgumentParser(prog="superclass vlm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    return parser


def _add_image_processor_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--image-processor",
        default="llava",
        choices=["llava", "clip"],
        help="llava-hf form only: llava = LlavaImageProcessor, pads to square as LLaVA (transformers >= 4.49); "
        "clip = CLIPImageProcessor, read by every 4.x but centre-crops, as llava-hf's own checkpoints",
    )


def add_commands(sub: argparse._SubParsersAction) -> None:
    """build, export and chat on the `vlm` subparsers action `sub`."""
    p = sub.add_parser("build", help="assemble encoder + LLM + fresh projector into an HF LLaVA directory")
    add_model_args(p)
    p.add_argument("--out", required=True, help="directory to write (an HF LLaVA model + processor)")
    hide_aliases(
        p.add_argument(
            "--to", "--layout", dest="form", default="hf", choices=["hf", "llava-hf"],
            help="the format to write: its weight names (llava-hf: transformers 4.x tools)",
        )
    )  # fmt: skip
    _add_image_processor_arg(p)
    p.set_defaults(fn=_cmd_build)

    p = sub.add_parser(
        "train",
        help="train stage 1 (projector) or stage 2 (projector + LLM, full or LoRA); the recipe picks the stage "
        "(llava15_stage1, llava15_stage2, llava15_stage2_lora; `superclass vlm recipes`)",
    )
    add_recipe_args(p, "llava15_stage2", "init=runs/llava15_stage1/llava data.json=mix665k.json run.steps=100")
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    p.set_defaults(fn=_cmd_train)

    p = sub.add_parser("export", help="rewrite a LLaVA directory: llava-hf form (transformers 4.x) or llava's own")
    p.add_argument("--model", required=True, help="LLaVA directory (from build or training)")
    hide_aliases(
        p.add_argument(
            "--to", "--layout", dest="form", default="llava-hf", choices=["hf", "llava-hf", "llava"],
            help="the format to write. llava-hf: transformers 4.x tools; llava: the LLaVA codebase's "
            "LlavaLlamaForCausalLM (tower inside)",
        )
    )  # fmt: skip
    _add_image_processor_arg(p)
    p.add_argument("--out", required=True, help="directory to write (for --to llava, name it *llava*)")
    p.set_defaults(fn=_cmd_export)

    p = sub.add_parser("import", help="a checkpoint of the LLaVA codebase -> an HF LLaVA directory (eval, chat)")
    p.add_argument(
        "--model", required=True, help="LLaVA-codebase folder (e.g. llava-v1.5-7b: config.json with mm_vision_tower)"
    )
    p.add_argument("--from", dest="form", default="llava", choices=["llava"], help="the format read")
    p.add_argument("--vision-tower", default="", help="CLIP tower folder or hub name (default: mm_vision_tower)")
    p.add_argument("--out", required=True, help="directory to write")
    p.set_defaults(fn=_cmd_import)

    p = sub.add_parser("chat", help="ask a LLaVA directory about an image (one --prompt, or lines on stdin)")
    p.add_argument("--model", required=True, help="LLaVA directory")
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--prompt", default=None, help="one question; without it, read questions from stdin")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--template", default="vicuna_v1", choices=["vicuna_v1", "plain"])
    p.add_argument("--device", default="cpu")
    p.set_defaults(fn=_cmd_chat)

    p = sub.add_parser(
        "serve", help="chat with one or more LLaVA directories in a browser, side by side (pip install -e '.[serve]')"
    )
    p.add_argument("--model", action="append", required=True, help="LLaVA directory (repeat: side by side)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (another than localhost needs --allow-remote)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument(
        "--allow-remote", action="store_true", help="allow a non-local --host: the page has NO authentication"
    )
    p.add_argument("--max-new-tokens", type=int, default=128, help="the page's initial setting")
    p.add_argument("--template", default="vicuna_v1", choices=["vicuna_v1", "plain"])
    p.add_argument("--device", default="cpu")
    p.set_defaults(fn=_cmd_serve)

    add_recipe_commands(sub, lambda: importlib.import_module("vlm.recipes").RECIPES)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a `vlm` command; user errors are one line on stderr and a nonzero exit."""
    return run_subcommand(build_parser, argv)

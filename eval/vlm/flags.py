"""Flags of the VLM commands: a benchmark's `Config` fields as flags (one per field, its `help` metadata as help), the
flags of answering with a LLaVA directory, and the parser whose mistakes are one line."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Literal

from eval.vlm.base import BenchConfig
from pretrain.runtime.cli import hide_aliases
from pretrain.runtime.errors import UserError

PRECISIONS = list(typing.get_args(typing.get_type_hints(BenchConfig)["precision"]))  # auto, bf16, fp16, fp32


class OneLineParser(argparse.ArgumentParser):
    """A subcommand parser whose mistakes (bad flag value, missing flag) are one `error:` line, exit 2, as run_cli."""

    def error(self, message: str) -> Any:
        raise UserError(f"{self.prog}: {message}")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_generation_args(run: argparse.ArgumentParser, max_new_tokens_help: str) -> None:
    """The flags of answering with a LLaVA directory (a benchmark's `run` and `suite`); defaults from `BenchConfig`."""
    default = {f.name: f.default for f in dataclasses.fields(BenchConfig)}
    run.add_argument("--model", required=True, help="HF LlavaForConditionalGeneration directory")
    run.add_argument("--batch-size", type=positive_int, default=default["batch_size"])
    run.add_argument("--max-new-tokens", type=positive_int, help=max_new_tokens_help)
    run.add_argument("--device", default=default["device"])
    hide_aliases(
        run.add_argument(
            "--precision", "--dtype", default=default["precision"], choices=PRECISIONS,
            help="auto: bf16 on CUDA, fp32 on CPU",
        )
    )  # fmt: skip
    run.add_argument("--backend", default=default["backend"], choices=["hf", "vllm"])
    run.add_argument(
        "--template",
        default=default["template"],
        help="chat template of the prompts (vicuna_v1; plain has no question)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def _flag_kwargs(f: dataclasses.Field, hint: Any) -> dict[str, Any]:
    """argparse keyword arguments for a Config field of type `hint` (str, int, bool, Literal, list[str], X | None)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    text = f.metadata.get("help")
    kwargs: dict[str, Any] = {"help": text.replace("%", "%%") if text else None}  # argparse %-formats help
    if hint is bool:
        return {**kwargs, "action": "store_true"}
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    kwargs["default"] = default
    if typing.get_origin(hint) is Literal:
        return {**kwargs, "choices": list(typing.get_args(hint))}
    if typing.get_origin(hint) is list:
        return {**kwargs, "nargs": "+", "choices": f.metadata.get("choices")}
    if hint is int:
        return {**kwargs, "type": positive_int if f.name == "limit" else int}
    return {**kwargs, "choices": f.metadata.get("choices")}


def add_config_args(parser: argparse.ArgumentParser, config: type, choices: dict[str, Any] | None = None) -> None:
    """One flag per field of the dataclass `config` (`--image-root` for image_root), except the generation
    settings (`add_generation_args`) and settings with `cli: False`; `choices` overrides a field's choices."""
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        if f.metadata.get("generation") or f.metadata.get("cli") is False:
            continue
        kwargs = {k: v for k, v in _flag_kwargs(f, hints[f.name]).items() if v is not None or k == "default"}
        if f.name in (choices or {}):
            kwargs["choices"] = list(choices[f.name])
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)


def config_from_args(config: type, args: argparse.Namespace) -> Any:
    """The dataclass `config` filled from parsed flags (fields without a flag keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(config) if hasattr(args, f.name)}
    if values.get("max_new_tokens") == 0:
        values["max_new_tokens"] = None
    return config(**values)

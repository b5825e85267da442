"""The flags every VLM command shares (answering with a LLaVA directory) and the parser whose mistakes are one line."""

from __future__ import annotations

import argparse
from typing import Any

from eval.vlm.generation import GenerationConfig
from pretrain.runtime.cli import hide_aliases
from pretrain.runtime.errors import UserError

PRECISIONS = ["auto", "bf16", "fp16", "fp32"]  # what answering with a LLaVA directory supports


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


def generation_config(args: argparse.Namespace, bench: Any) -> Any:
    """The `GenerationConfig` of `add_generation_args` flags (the benchmark's own max_new_tokens by default)."""
    return GenerationConfig(
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens or bench.max_new_tokens,
        device=args.device,
        dtype=args.precision,
        backend=args.backend,
        progress=not args.no_progress,
    )


def add_generation_args(run: argparse.ArgumentParser, max_new_tokens_help: str) -> None:
    """The flags of answering with a LLaVA directory (a benchmark's `run` and `suite`)."""
    run.add_argument("--model", required=True, help="HF LlavaForConditionalGeneration directory")
    run.add_argument("--batch-size", type=positive_int, default=32)
    run.add_argument("--max-new-tokens", type=positive_int, help=max_new_tokens_help)
    run.add_argument("--device", default="auto")
    hide_aliases(
        run.add_argument(
            "--precision", "--dtype", default="auto", choices=PRECISIONS, help="auto: bf16 on CUDA, fp32 on CPU"
        )
    )
    run.add_argument("--backend", default="hf", choices=["hf", "vllm"])
    run.add_argument(
        "--template", default="vicuna_v1", help="chat template of the prompts (vicuna_v1; plain has no question)"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

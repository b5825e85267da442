"""Shared command-line plumbing: recipe/config/override arguments and one-line error reporting."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pretrain.runtime.errors import NonFiniteError, StopRequested, UserError


def add_recipe_args(parser: argparse.ArgumentParser, default_recipe: str) -> None:
    """`--recipe NAME [--config FILE.yaml] key=value ...` as every trainer takes them."""
    parser.add_argument("--recipe", default=default_recipe, help=f"named recipe (default: {default_recipe})")
    parser.add_argument("--config", default=None, help="YAML file laid over the recipe (print one with `recipe NAME`)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=1e-3")


def run_cli(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> int:
    """Run `main`, turning user errors into one `error: ...` line (exit 2), a non-finite stop into exit 3 and a
    SIGTERM stop (checkpoint saved) into exit 143, as a process killed by SIGTERM reports itself."""
    try:
        result = main(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteError as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 3
    except StopRequested as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def run_subcommand(build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None = None) -> int:
    """Parse `argv` with `build_parser()` and run the chosen subcommand's `fn(args)` under `run_cli`."""

    def dispatch(argv: Sequence[str] | None) -> int:
        args = build_parser().parse_args(argv)
        return args.fn(args)

    return run_cli(dispatch, argv)


def add_recipe_commands(sub: Any, book: Callable[[], Any]) -> None:
    """`recipe NAME [key=value]` (print as YAML) and `recipes` (list) for a package's RecipeBook.

    `book` is called only when the command runs, so building the parser stays cheap.
    """

    def show(args: argparse.Namespace) -> int:
        print(book().as_yaml(args.name, args.overrides), end="")
        return 0

    def listing(args: argparse.Namespace) -> int:
        print(book().listing())
        return 0

    p = sub.add_parser("recipe", help="print a recipe as YAML (edit it and pass it back with --config)")
    p.add_argument("name")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(fn=show)
    p = sub.add_parser("recipes", help="list the named recipes")
    p.set_defaults(fn=listing)

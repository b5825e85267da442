"""Shared command-line plumbing: recipe/config/override arguments and one-line error reporting."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pretrain.runtime.errors import NonFiniteError, StopRequested, UserError


def add_recipe_args(parser: argparse.ArgumentParser, default_recipe: str, example: str) -> None:
    """`--recipe NAME [--config FILE.yaml] key=value ...` as every trainer takes them; `example` shows overrides
    that are keys of `default_recipe` (tests/superclass/test_cli_vocabulary.py checks them)."""
    parser.add_argument("--recipe", default=default_recipe, help=f"named recipe (default: {default_recipe})")
    parser.add_argument("--config", default=None, help="YAML file laid over the recipe (print one with `recipe NAME`)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"dotted recipe overrides, e.g. {example}")


def hide_aliases(action: argparse.Action) -> argparse.Action:
    """Show only the first option string of `action` in --help and in errors; the others (old spellings, e.g.
    `--captioner` for `--model`) still parse."""
    action.option_strings = action.option_strings[:1]
    return action


def check_out_dir(out: str | Path, writes: str) -> Path:
    """`--out` is always a folder: a path with a file suffix (the old file form), an existing file or a path under
    one is a one-line error naming what the folder will hold (`writes`). Every command with a folder `--out` calls
    it before any work."""
    out = Path(out)
    if out.suffix in (".json", ".jsonl", ".safetensors") or out.is_file():
        raise UserError(f"--out {out}: --out is a folder now (this command writes {writes} inside it)")
    file = next((p for p in out.parents if p.is_file()), None)
    if file is not None:
        raise UserError(f"--out {out}: {file} is a file, so no folder can be made under it")
    return out


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


def _menus(parser: argparse.ArgumentParser) -> list[Any]:
    """The subcommand actions of `parser` (argparse keeps them private)."""
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def _raise_user_error(parser: argparse.ArgumentParser, commands: str, message: str) -> NoReturn:
    if commands and message.startswith("the following arguments are required"):
        message += f" (choose from {commands})"
    raise UserError(f"{parser.prog}: {message}")


def one_line_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Make `parser` and every subcommand parser under it report a mistake (a bad value, a missing flag, an
    unknown command) as one `error:` line through `run_cli`, as the eval commands do, not argparse's usage block.
    A missing subcommand names the choices."""
    menus = _menus(parser)
    for menu in menus:
        for child in menu.choices.values():
            one_line_errors(child)
    commands = ", ".join(c for menu in menus for c in menu.choices)
    parser.error = functools.partial(_raise_user_error, parser, commands)  # type: ignore[method-assign]
    return parser


def _chosen(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the subcommand `args` chose (`parser` itself when it has none)."""
    for menu in _menus(parser):
        name = getattr(args, menu.dest, None)
        if name in menu.choices:
            return _chosen(menu.choices[name], args)
    return parser


def run_subcommand(build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None = None) -> int:
    """Parse `argv` with `build_parser()` and run the chosen subcommand's `fn(args)` under `run_cli`; mistakes in a
    command's arguments are one line (`one_line_errors`)."""

    def dispatch(argv: Sequence[str] | None) -> int:
        parser = one_line_errors(build_parser())
        args, extra = parser.parse_known_args(argv)
        if extra and isinstance(getattr(args, "overrides", None), list) and all(_is_override(e) for e in extra):
            args.overrides += extra  # key=value after an option: argparse takes positionals in one run only
            extra = []
        if extra:  # what parse_args does, but naming the subcommand that did not take them
            _chosen(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
        return args.fn(args)

    return run_cli(dispatch, argv)


def _is_override(arg: str) -> bool:
    return "=" in arg and not arg.startswith("-")


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

"""One CLI vocabulary: every command's `--help` exits 0 and shows one spelling per concept, and every example a
user reads (each command's help, each CLI module's usage docstring, each recipe's docstring, the README) uses
commands and flags that exist and `key=value` keys that the recipe (or settings) of that example has."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from superclass.cli import ALIASES, COMMANDS
from superclass.cli import main as superclass_main

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {name: module for name, (module, _) in COMMANDS.items() if name != "demo"}
RECIPE_BOOKS = {  # (package, command) -> modules whose RECIPES the command's --recipe names
    ("pretrain", "train"): ["pretrain.recipes"],
    ("lit", "train"): ["lit.recipes"],
    ("lit", "features"): ["lit.recipes"],
    ("captioning", "train"): ["captioning.recipes"],
    ("captioning", "generate"): ["captioning.recipes"],
    ("vlm", "train"): ["vlm.recipes"],
    ("eval", "linear-probe"): ["eval.probes.linear_probe"],
    ("eval", "fewshot"): ["eval.probes.fewshot"],
}
# old spellings: still parsed (hidden), never shown
RETIRED = {"--dtype", "--llm-dtype", "--captioner", "--stage", "--layout", "--live"}
# `--encoder` is the encoder a model is built on (vlm build) or was built on (lit, when it moved), not a model read
ENCODER_FLAG = {("vlm", "build"), ("lit", "zeroshot"), ("lit", "retrieval"), ("lit", "export")}
KEY = re.compile(r"^([A-Za-z_]\w*(?:\.\w+)*)=")
HELP_KEY = re.compile(r"(?<![\w.\-=/])([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*)=(?=\S)")
COMMAND = re.compile(
    r"(?:\bsuperclass|\bpython -m|\btorchrun\b.*?\s-m)\s+(pretrain|lit|captioning|caption|vlm|eval)(?=\s|$)(.*)"
)


def _menu(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {n: p for a in parser._actions if isinstance(a, argparse._SubParsersAction) for n, p in a.choices.items()}


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, parser
    for name, child in _menu(parser).items():
        yield from _walk(child, (*path, name))


def _parser(package: str) -> argparse.ArgumentParser:
    return importlib.import_module(PACKAGES[package]).build_parser()


def _commands() -> list[tuple[str, tuple[str, ...]]]:
    return [(package, path) for package in PACKAGES for path, _ in _walk(_parser(package))]


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """The option strings --help shows."""
    return {o for a in parser._actions if a.help != argparse.SUPPRESS for o in a.option_strings}


def _books(modules: list[str]) -> dict[str, Any]:
    return {n: f for m in modules for n, f in importlib.import_module(m).RECIPES.items()}


def _has_key(obj: Any, parts: list[str]) -> bool:
    if not parts:
        return True
    if isinstance(obj, dict):
        return True  # free-form (e.g. evaluator settings under `evals`)
    if not dataclasses.is_dataclass(obj) or parts[0] not in {f.name for f in dataclasses.fields(obj)}:
        return False
    return _has_key(getattr(obj, parts[0]), parts[1:])


def _targets(package: str, words: list[str], parser: argparse.ArgumentParser) -> list[Any] | None:
    """The configs a `key=value` of this command may name (any of them), or None if it takes no key=value."""
    command = words[0] if words else ""
    if package == "pretrain" and command == "idf-counts":
        from pretrain.labels import LabelConfig

        labels = dataclasses.field(default_factory=LabelConfig)
        nested = dataclasses.make_dataclass("Run", [("labels", LabelConfig, labels)])
        return [LabelConfig(), nested()]  # `mode=official` or, as in a training recipe, `labels.mode=official`
    if package == "eval" and command == "run":
        from pretrain.runtime.evaluators import evaluators

        found = evaluators()
        name = words[1] if len(words) > 1 else ""
        return [cls.Config() for n, cls in found.items() if n == name or name not in found]
    if command == "recipe":
        modules = [m for (p, _), ms in RECIPE_BOOKS.items() if p == package for m in ms]
        books = _books(list(dict.fromkeys(modules)))
        name = words[1] if len(words) > 1 else ""
        return [f() for n, f in books.items() if n == name or name not in books]
    if (package, command) not in RECIPE_BOOKS:
        return None
    books = _books(RECIPE_BOOKS[package, command])
    named = [n for n in (words[words.index("--recipe") + 1].split("|") if "--recipe" in words else []) if n in books]
    return [books[n]() for n in named or [parser.get_default("recipe")]]


def _check_key(key: str, targets: list[Any] | None, where: str) -> str | None:
    if key == "key":  # the placeholder `key=value`
        return None
    if targets is None:
        return f"{where}: `{key}=` given to a command that takes no key=value"
    if not any(_has_key(t, key.split(".")) for t in targets):
        return f"{where}: `{key}` is not a key of the recipe/settings this example uses"
    return None


def _example_problems(text: str, source: str) -> list[str]:
    """Each `superclass|python -m|torchrun -m <package> ...` line of `text`: its command path and flags exist and
    its `key=value` keys resolve."""
    problems = []
    for line in re.sub(r"\\+\n\s*", " ", text).splitlines():  # `\` continuations (`\\` in a docstring)
        for match in COMMAND.finditer(line):
            package = ALIASES.get(match.group(1), match.group(1))
            rest = re.split(r"\s#\s|\s\(|`", match.group(2))[0]  # a comment, prose, the end of inline code
            try:
                words = shlex.split(rest)
            except ValueError:
                words = rest.split()
            words = [w.removeprefix("[").removesuffix("]") for w in words]  # [--flag VALUE]: optional
            where = f"{source}: `{match.group(0).strip()[:90]}`"
            parser, path = _parser(package), []
            if not words or not re.match(r"[a-z<{.]", words[0]):
                continue  # `superclass eval", description=...`: the name in code, not a command line
            for word in words:
                menu = _menu(parser)
                if not menu:
                    break
                choice = re.split(r"[|/]", word)[0]
                if choice not in menu:
                    if not word.startswith(("-", "...", "<", "{")):
                        problems.append(f"{where}: no command {word!r} under {' '.join([package, *path])}")
                    parser = None
                    break
                parser, path = menu[choice], [*path, choice]
            if parser is None or _menu(parser):
                continue
            shown = _options(parser) | {"-h", "--help"}
            for word in words:
                flag = word.split("=")[0].rstrip("),.")
                if flag.startswith("--") and flag not in shown:
                    problems.append(f"{where}: {' '.join([package, *path])} has no flag {flag}")
            extra = _positionals(parser, words[len(path) :])
            if extra:
                problems.append(f"{where}: {' '.join([package, *path])} takes no positional {extra}")
            targets = _targets(package, words, parser)
            for word in words:
                key = KEY.match(word)
                if key and not word.startswith("-"):
                    problem = _check_key(key.group(1), targets, where)
                    problems += [problem] if problem else []
    return problems


def _positionals(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """The words of a command line that are neither flags, flag values nor key=value and that `parser` has no
    positional for (a model given as a positional where the command now takes --model, say)."""
    flags = {o: a for a in parser._actions for o in a.option_strings}
    slots = [a for a in parser._actions if not a.option_strings and a.dest != "overrides"]
    loose, expect = [], 0
    for word in words:
        if word.startswith("-"):
            action = flags.get(word.split("=")[0])
            takes = -1 if action is not None and action.nargs in ("+", "*") else 1  # -1: until the next flag
            expect = 0 if action is None or "=" in word or action.nargs == 0 else takes
        elif expect:
            expect -= 1 if expect > 0 else 0
        elif not (KEY.match(word) or word.startswith(("...", "<", "{"))):
            loose.append(word)
    return loose[len(slots) :]


def _readme_commands() -> str:
    """README code-block lines, and inline code spans (joined over line breaks) that are commands."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    prose = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
    spans = [re.sub(r"\s+", " ", s) for s in re.findall(r"`([^`]+)`", prose)]
    return "\n".join(blocks + [s for s in spans if COMMAND.search(s)])


@pytest.mark.parametrize(("package", "path"), _commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_every_command_help_exits_0_with_one_name_per_concept(package, path, capsys):
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(PACKAGES[package]).main([*path, "--help"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("usage:")
    parser = dict(_walk(_parser(package)))[path]
    shown = _options(parser)
    assert not shown & RETIRED, f"{package} {' '.join(path)} shows {shown & RETIRED}"
    if "--encoder" in shown:
        assert (package, path[0]) in ENCODER_FLAG, "the model a command reads is --model"
    positionals = {a.dest for a in parser._actions if not a.option_strings}
    assert not positionals & {"model", "encoder", "source", "path"}, "the model a command reads is --model"
    out = next((a for a in parser._actions if "--out" in a.option_strings), None)
    assert out is None or out.type in (None, Path)


def test_the_model_read_is_model_and_precision_is_precision():
    reads_model = [("pretrain", "export"), ("pretrain", "import"), ("lit", "zeroshot"), ("lit", "retrieval")]
    reads_model += [("lit", "export"), ("captioning", "generate"), ("vlm", "export"), ("vlm", "import")]
    reads_model += [("vlm", "chat"), ("vlm", "serve"), ("eval", "features"), ("eval", "linear-probe")]
    reads_model += [("eval", "fewshot"), ("eval", "run"), ("eval", "suite")]
    parsers = {(p, path): parser for p in PACKAGES for path, parser in _walk(_parser(p))}
    reads_model += [("eval", path) for (p, path) in parsers if p == "eval" and path[1:] == ("run",)]
    for package, path in reads_model:
        path = path if isinstance(path, tuple) else (path,)
        assert "--model" in _options(parsers[package, path]), (package, path)
    precision = [("eval", ("features",)), ("eval", ("suite",)), ("eval", ("vqav2", "run")), ("vlm", ("build",))]
    for package, path in precision:
        assert "--precision" in _options(parsers[package, path]), (package, path)


def test_old_spellings_still_parse_to_the_same_setting():
    def parse(package, argv):
        return _parser(package).parse_known_args(argv)[0]

    model = parse("captioning", ["generate", "--captioner", "C", "--out", "O"]).model
    assert model == parse("captioning", ["generate", "--model", "C", "--out", "O"]).model == "C"
    assert parse("eval", ["features", "--encoder", "E", "--out", "O"]).model == "E"
    assert parse("eval", ["vqav2", "run", "--model", "M", "--out", "O", "--dtype", "bf16"]).precision == "bf16"
    assert parse("vlm", ["build", "--encoder", "E", "--llm-dtype", "fp32", "--out", "O"]).precision == "fp32"
    assert parse("vlm", ["export", "--model", "M", "--layout", "llava", "--out", "O"]).form == "llava"
    assert parse("vlm", ["export", "--model", "M", "--to", "llava", "--out", "O"]).form == "llava"


def test_out_is_a_folder_and_a_file_path_is_one_line(tmp_path, capsys):
    from captioning.cli import main as captioning_main
    from pretrain.cli import main as pretrain_main

    assert captioning_main(["generate", "--model", str(tmp_path / "cap"), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out is a folder now" in err and "captions.json" in err
    assert pretrain_main(["idf-counts", "--data", str(tmp_path), "--out", str(tmp_path / "idf.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out is a folder now" in err and "idf_counts.safetensors" in err


def test_stage_is_picked_by_the_recipe(capsys):
    from vlm.cli import main as vlm_main

    assert vlm_main(["train", "--stage", "1"]) == 2
    assert "the recipe picks the stage" in capsys.readouterr().err
    assert _parser("vlm").parse_args(["train"]).recipe == "llava15_stage2"


def test_the_command_is_captioning_and_caption_still_works(capsys):
    assert superclass_main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert "captioning" in usage and " caption " not in usage
    for word in ("captioning", "caption"):
        with pytest.raises(SystemExit) as stop:
            superclass_main([word, "generate", "--help"])
        assert stop.value.code == 0 and "superclass captioning generate" in capsys.readouterr().out


def test_help_texts_name_only_keys_that_exist():
    problems = []
    for package in PACKAGES:
        parser = _parser(package)
        for path, sub in _walk(parser):
            words = list(path)
            targets = _targets(package, words, sub) if path else None
            if not path:  # the package's menu: its subcommands' one-line help may name any of its recipes' keys
                modules = [m for (p, _), ms in RECIPE_BOOKS.items() if p == package for m in ms]
                targets = [f() for f in _books(list(dict.fromkeys(modules))).values()] or None
            for key in HELP_KEY.findall(sub.format_help()):
                problem = _check_key(key, targets, f"{package} {' '.join(path)} --help")
                problems += [problem] if problem else []
            problems += _example_problems(sub.format_help(), f"{package} {' '.join(path)} --help")
    assert not problems, "\n".join(problems)


def test_readme_commands_run_as_written():
    problems = _example_problems(_readme_commands(), "README.md")
    assert not problems, "\n".join(problems)
    assert "## CLI vocabulary" in (ROOT / "README.md").read_text()


def test_commands_quoted_in_the_sources_run_as_written():
    """Usage lines and docstrings of every module (the CLI modules' and the recipes' among them), and messages
    that tell the user what to run."""
    problems = []
    for package in ("superclass", *PACKAGES):
        for path in sorted((ROOT / package).rglob("*.py")):
            problems += _example_problems(path.read_text(), str(path.relative_to(ROOT)))
    assert not problems, "\n".join(problems)

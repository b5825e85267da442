"""Shared CLI plumbing: exit statuses and one-line reports."""

import argparse

import pytest

from pretrain.runtime.cli import run_cli, run_subcommand
from pretrain.runtime.errors import StopRequested


def test_a_sigterm_stop_exits_143_with_one_line(capsys):
    def main(argv):
        raise StopRequested("SIGTERM at step 6 of 12; saved RUN/checkpoints/step_00000006; continue with ...")

    assert run_cli(main, []) == 143
    err = capsys.readouterr().err.strip()
    assert err.startswith("stopped: SIGTERM at step 6 of 12") and len(err.splitlines()) == 1


def _parser():
    parser = argparse.ArgumentParser(prog="superclass toy")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("chat")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--image", required=True)
    p.set_defaults(fn=lambda args: args.max_new_tokens)
    return parser


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["chat", "--image", "x", "--max-new-tokens", "abc"], "superclass toy chat: argument --max-new-tokens: inv"),
        (["chat"], "superclass toy chat: the following arguments are required: --image"),
        (["chat", "--image", "x", "--bogus"], "superclass toy chat: unrecognized arguments: --bogus"),
        (["chatt"], "superclass toy: argument command: invalid choice: 'chatt'"),
        ([], "superclass toy: the following arguments are required: command (choose from chat)"),
    ],
)
def test_argparse_mistakes_are_one_line_not_the_usage_block(capsys, argv, says):
    assert run_subcommand(_parser, argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {says}") and len(err.splitlines()) == 1, err
    assert run_subcommand(_parser, ["chat", "--image", "x", "--max-new-tokens", "5"]) == 5

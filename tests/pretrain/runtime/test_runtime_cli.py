"""Shared CLI plumbing: exit statuses and one-line reports."""

from pretrain.runtime.cli import run_cli
from pretrain.runtime.errors import StopRequested


def test_a_sigterm_stop_exits_143_with_one_line(capsys):
    def main(argv):
        raise StopRequested("SIGTERM at step 6 of 12; saved RUN/checkpoints/step_00000006; continue with ...")

    assert run_cli(main, []) == 143
    err = capsys.readouterr().err.strip()
    assert err.startswith("stopped: SIGTERM at step 6 of 12") and len(err.splitlines()) == 1

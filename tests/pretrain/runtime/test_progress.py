"""Progress is never silent: without a terminal (a log, a pipe, CI) a plain line with step/total, rate and ETA
comes at least every `every` seconds; on a terminal the bar alone."""

import re

from pretrain.runtime.metrics import MetricsLogger
from pretrain.runtime.progress import Progress


def test_without_a_terminal_plain_lines_carry_step_rate_and_eta(capsys):
    progress = Progress(total=10, label="llava/stage2", every=0.0)  # pytest's stderr is not a terminal
    progress.postfix(loss="1.2345")
    for _ in range(4):
        progress.update()
    progress.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("[llava/stage2] 4/10 steps (")
    assert re.search(r"steps/s, ETA \d+s\), loss 1\.2345$", lines[-1]), lines[-1]


def test_lines_are_spaced_by_the_interval(capsys):
    progress = Progress(total=1000, initial=100, label="answers", unit="question", every=3600.0)
    for _ in range(50):
        progress.update()
    assert capsys.readouterr().err == ""  # nothing within the hour: no flood
    assert progress.line(progress.start + 10).startswith("[answers] 150/1000 questions (5.00 questions/s, ETA 2m50s)")


def test_a_trainer_log_names_its_run(tmp_path, capsys):
    logger = MetricsLogger(
        tmp_path / "demo" / "superclass", total_steps=5, start_step=0, enabled=True, tensorboard=False
    )
    logger.bar.every = 0.0
    logger.log({"step": 1, "loss": 2.0, "lr": 1e-3})
    logger.advance()
    logger.close()
    assert capsys.readouterr().err.startswith("[demo/superclass] 1/5 steps (")


def test_a_named_run_labels_its_lines_by_name(tmp_path, capsys):
    logger = MetricsLogger(
        tmp_path / "llava" / "stage2", total_steps=5, start_step=0, enabled=True, tensorboard=False,
        label="clip/llava/stage2",
    )  # fmt: skip
    logger.bar.every = 0.0
    logger.log({"step": 1, "loss": 2.0, "lr": 1e-3})
    logger.advance()
    logger.close()
    assert capsys.readouterr().err.startswith("[clip/llava/stage2] 1/5 steps (")


def test_an_evaluation_row_keeps_the_training_loss_on_the_line(tmp_path, capsys):
    logger = MetricsLogger(tmp_path / "run", total_steps=5, start_step=0, enabled=True, tensorboard=False)
    logger.bar.every = 0.0
    logger.log({"step": 1, "loss": 2.0, "lr": 1e-3})
    logger.log({"step": 1, "eval": {"fewshot": {"top1": 40.0}}})  # run.evals rows have no loss
    logger.advance()
    logger.close()
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith("loss 2.0000, lr 1.00e-03"), line


def test_a_stage_shorter_than_the_interval_still_prints_its_last_line(capsys):
    progress = Progress(total=30, label="llava/stage1", every=3600.0)
    for _ in range(30):
        progress.update()
    assert capsys.readouterr().err == ""
    progress.close()
    progress.close()  # once only
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[llava/stage1] 30/30 steps ("), lines
    stopped = Progress(total=30, label="stopped", every=3600.0)
    stopped.update(11)
    stopped.close()  # a run stopped early (SIGTERM, an error) ends with its own one line, not a progress line
    assert capsys.readouterr().err == ""

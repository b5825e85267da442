"""The GPU acceptance script's dry run (tiny shapes, CPU): every check runs, the table has every row, the JSON and
the table are written, so a session lent a GPU spends none of its minutes on a typo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS = ["openclip", "llava_eval", "llava_train", "lmms_eval"]  # bench/peers.py's rows
IDS = ["env", "P1", "P2", "P3a", "P3b", "P4", "P5", "gpu", "P5f", "P6", "P7", *PEERS, "P1b"]


def test_dry_run_runs_every_check_and_writes_the_table_and_json(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OUT": str(tmp_path / "unused")}
    cmd = [sys.executable, str(ROOT / "bench/gpu_acceptance.py"), "--dry-run", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    report = json.loads((tmp_path / "gpu_acceptance.json").read_text())
    assert report["dry_run"] is True and report["issue"] == 18
    rows = {row["id"]: row for row in report["rows"]}
    assert list(rows) == IDS
    venv_given = {"llava_eval": "LLAVA_PYTHON", "llava_train": "LLAVA_PYTHON", "lmms_eval": "LMMS_EVAL_PYTHON"}
    expected = {k: "skipped" if k in venv_given and not os.environ.get(venv_given[k]) else "ran" for k in rows}
    assert {k: r["result"] for k, r in rows.items()} == expected, {k: r["measured"] for k, r in rows.items()}
    assert rows["openclip"]["details"]["equal"] is True  # OpenCLIP's step gave our loss
    assert rows["P1"]["details"]["images_per_s"] > 0 and rows["P1"]["details"]["dynamo"]["stats"]  # it compiled
    assert rows["P4"]["details"]["agree"] == rows["P4"]["details"]["baseline_questions"]

    table = (tmp_path / "gpu_acceptance.md").read_text()
    lines = table.strip().splitlines()
    assert lines[0] == "| id | what | measured | target | result | s |"
    assert [line.split("|")[1].strip() for line in lines[2:]] == IDS
    assert proc.stdout.rstrip().endswith(lines[-1])  # the table is printed last
    assert not (tmp_path / "unused").exists()  # --out wins over $OUT


def _acceptance_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_acceptance", ROOT / "bench/gpu_acceptance.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_acceptance"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_failing_slow_or_unaffordable_check_is_a_row_and_the_run_goes_on():
    import signal
    import time

    ga = _acceptance_module()
    ctx = ga.Context(ga.parse_args(["--dry-run"]), ga.torch.device("cpu"), ga.DRY)
    previous = signal.signal(signal.SIGALRM, ga._on_alarm)
    try:

        def half_then_raise(ctx):
            yield ga.Row("P1", "what", "target", "1 img/s", "ran")
            raise RuntimeError("CUDA error: an illegal memory access\nsecond line")

        def endless(ctx):
            while True:
                time.sleep(0.05)
                yield from ()

        far = time.monotonic() + 600
        rows = ga.run_check(ga.Check(("P1", "P2"), half_then_raise, 60, 0), ctx, far)
        assert [(r.id, r.result) for r in rows] == [("P1", "ran"), ("P2", "error")]
        assert rows[1].measured == "RuntimeError: CUDA error: an illegal memory access"
        rows = ga.run_check(ga.Check(("P4",), endless, 1, 0), ctx, far)
        assert rows[0].result == "timeout" and 0.9 < rows[0].seconds < 5
        rows = ga.run_check(ga.Check(("P6",), endless, 60, 60), ctx, time.monotonic() + 30)
        assert rows[0].result == "skipped" and "needs 60" in rows[0].measured
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert "| P2 | " in ga.table(rows + [ga.Row("P2", "a | b", "t", "m", "error")])


def test_full_fine_tuning_is_an_optional_skip_on_a_card_too_small_for_it(monkeypatch):
    ga = _acceptance_module()
    ctx = ga.Context(ga.parse_args([]), ga.torch.device("cpu"), ga.DRY)  # not a dry run: the real decision
    built = []
    monkeypatch.setattr(ga, "_vlm_train", lambda ctx, row_id, mode: built.append(mode) or [])
    monkeypatch.setattr(ga, "card_gib", lambda device: 79.2)  # the H100 kind
    (row,) = ga.check_full(ctx)
    assert (row.id, row.result, built) == ("P5f", "skipped", [])  # decided before a 7B model is built
    assert row.details["optional"] is True and "this card has 79" in row.measured
    monkeypatch.setattr(ga, "card_gib", lambda device: 139.8)  # the H200 kind: it runs
    assert ga.check_full(ctx) == [] and built == ["full"]

"""bench/peers.py --quick: each peer's own code and ours on identical inputs give the same outputs (no speed
assertion). OpenCLIP always (our dependency); the LLaVA codebase when LLAVA_PYTHON names its side venv's
interpreter (tests/vlm/make_llava_venv.sh); lmms-eval when LMMS_EVAL_PYTHON names one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import peer_llava  # noqa: E402
import peers  # noqa: E402


def run_quick(rows: str, tmp_path: Path) -> dict:
    out = tmp_path / "peers.json"
    cmd = [sys.executable, str(ROOT / "bench/peers.py"), "--quick", "--only", rows, "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| row | outputs equal | ours/s | theirs/s | ratio |" in proc.stdout
    report = json.loads(out.read_text())
    assert [r["name"] for r in report["rows"]] == rows.split(",")
    for row in report["rows"]:
        assert row["equal"] is True, row
        assert row["ours"] > 0 and row["theirs"] > 0 and row["ratio"] > 0, row
    return {r["name"]: r for r in report["rows"]}


def test_openclip_step_gives_our_clip_tasks_loss(tmp_path: Path) -> None:
    row = run_quick("openclip", tmp_path)["openclip"]
    losses = row["figures"]["losses"]
    assert abs(losses["ours"] - losses["theirs"]) <= 1e-4


@pytest.mark.skipif(not os.environ.get("LLAVA_PYTHON"), reason="set LLAVA_PYTHON to the llava-torch side venv")
def test_llava_codebase_gives_our_answers_and_training_loss(tmp_path: Path) -> None:
    rows = run_quick("llava_eval,llava_train", tmp_path)
    answers = rows["llava_eval"]["figures"]["answers"]
    assert answers["ours"] == answers["theirs"] and len(answers["ours"]) == peers.SIZES["quick"]["llava"]["questions"]
    losses = rows["llava_train"]["figures"]["losses"]
    assert abs(losses["ours"] - losses["theirs"]) <= 1e-4


@pytest.mark.skipif(not os.environ.get("LMMS_EVAL_PYTHON"), reason="set LMMS_EVAL_PYTHON to an lmms-eval venv")
def test_lmms_eval_gives_our_answers(tmp_path: Path) -> None:
    run_quick("lmms_eval", tmp_path)


def test_a_peer_without_its_interpreter_is_a_skipped_row_naming_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("LLAVA_PYTHON", raising=False)
    rows = peers.run_rows(["llava_train"], peers.SIZES["quick"], torch.device("cpu"), {})
    assert rows[0].equal is None and "LLAVA_PYTHON is not set" in rows[0].detail
    rows = peers.run_rows(["llava_eval"], peers.SIZES["quick"], torch.device("cpu"), {"LLAVA_PYTHON": "/nonexistent"})
    assert rows[0].equal is None and "no such interpreter" in rows[0].detail
    assert "| llava_eval | skipped: LLAVA_PYTHON=/nonexistent: no such interpreter" in peers.table(rows)


def test_input_check_catches_a_label_mask_or_pixel_difference() -> None:
    image = 7
    ours = {
        "input_ids": torch.tensor([[1, image, image, 9, 10, 0]]),
        "attention_mask": torch.tensor([[1] * 5 + [0]]),
        "labels": torch.tensor([[-100, -100, -100, -100, 10, -100]]),
        "pixel_values": torch.zeros(1, 3, 2, 2),
    }
    theirs = {"input_ids": torch.tensor([[1, -200, 9, 10]]), "attention_mask": torch.tensor([[1, 1, 1, 1]]),
              "labels": torch.tensor([[-100, -100, -100, 10]]), "images": torch.zeros(1, 3, 2, 2)}  # fmt: skip
    assert peer_llava.same_inputs(ours, theirs, image) == ""
    theirs["labels"][0, 2] = 9
    assert peer_llava.same_inputs(ours, theirs, image) == "sample 0: label masks differ"
    theirs["labels"][0, 2] = -100
    theirs["images"][0, 0, 0, 0] = 1e-3
    assert peer_llava.same_inputs(ours, theirs, image).startswith("pixels differ")

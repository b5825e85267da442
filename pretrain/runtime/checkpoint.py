"""Atomic, exactly-resumable checkpoints: weights in safetensors, loop state loaded with weights_only=True.

Layout: `RUN/checkpoints/step_00000100/{model.safetensors, train_state.pt, config.yaml}`. A checkpoint is
written into a temporary sibling directory and renamed into place, so a killed run never leaves a
half-written `step_*` directory; `latest` is the highest complete step.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pretrain.runtime.atomic import plain_tensors, write_dir_atomically
from pretrain.runtime.errors import UserError

_STEP_DIR = re.compile(r"^step_(\d+)$")


def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve_resume(run_dir: Path, resume: str) -> Path | None:
    """`latest` -> newest checkpoint of the run (None when there is none yet); a path -> that checkpoint."""
    if not resume:
        return None
    if resume == "latest":
        ckpts = list_checkpoints(run_dir)
        return ckpts[-1] if ckpts else None
    path = Path(resume)
    if not (path / "train_state.pt").is_file() or not (path / "model.safetensors").is_file():
        raise UserError(
            f"--resume {resume}: not a checkpoint directory (expected model.safetensors and train_state.pt)"
        )
    return path


def save_checkpoint(
    run_dir: Path, step: int, model_state: dict[str, torch.Tensor], train_state: dict, config_yaml: str, keep: int = 2
) -> Path:
    """Write checkpoint `step` atomically and keep only the newest `keep` (0 keeps all)."""

    def write(tmp: Path) -> None:
        save_file(plain_tensors(model_state), str(tmp / "model.safetensors"))
        torch.save(train_state, tmp / "train_state.pt")
        (tmp / "config.yaml").write_text(config_yaml)

    path = write_dir_atomically(step_dir(run_dir, step), write)
    if keep > 0:
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(model state, train state) of a checkpoint; pickles are read with weights_only=True."""
    path = Path(path)
    try:
        model_state = load_file(str(path / "model.safetensors"))
        train_state = torch.load(path / "train_state.pt", map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise UserError(f"checkpoint {path} could not be read: {str(exc).splitlines()[0]}") from None
    return model_state, train_state


def clean_stale_tmp(run_dir: Path) -> None:
    """Remove temporary directories left by a run killed mid-save."""
    root = Path(run_dir) / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".step_") and (".tmp-" in p.name or ".old-" in p.name):
                shutil.rmtree(p, ignore_errors=True)

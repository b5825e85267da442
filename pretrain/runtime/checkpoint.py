"""Atomic, exactly-resumable checkpoints: weights in safetensors, loop state loaded with weights_only=True.

Layout: `RUN/checkpoints/step_00000100/{model.safetensors, train_state.pt, config.yaml}`. A checkpoint is
written into a temporary sibling directory and renamed into place, so a killed run never leaves a
half-written `step_*` directory; `latest` is the highest complete step.
"""

from __future__ import annotations

import pickle
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pretrain.runtime.atomic import plain_tensors, remove_stale_temps, write_dir_atomically
from pretrain.runtime.errors import ConfigError, UserError

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


# what safetensors and torch.load raise on a truncated, corrupt or foreign file (EOFError: an empty pickle)
READ_ERRORS = (SafetensorError, OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError)


def read_weights(file: Path) -> Any:
    """A .safetensors file's tensors, or a torch pickle loaded with weights_only=True; unreadable -> a UserError."""
    file = Path(file)
    try:
        if file.suffix == ".safetensors":
            return load_file(str(file))
        return torch.load(file, map_location="cpu", weights_only=True)
    except READ_ERRORS as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"{file}: not a readable weights file ({first})") from None


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(model state, train state) of a checkpoint; a missing or corrupt file is a one-line UserError naming it."""
    path = Path(path)
    model_state = read_weights(path / "model.safetensors")
    train_state = read_weights(path / "train_state.pt")
    if not isinstance(train_state, dict):
        raise UserError(f"{path / 'train_state.pt'}: expected a dict of loop state, got {type(train_state).__name__}")
    return model_state, train_state


def match_model_state(
    path: Path, state: dict[str, torch.Tensor], expected: Mapping[str, torch.Size | tuple[int, ...]]
) -> dict[str, torch.Tensor]:
    """`state` checked against the model's keys and shapes (`expected`); a mismatch is a ConfigError naming the
    checkpoint and the first differing key (set_model_state_dict would otherwise leave missing weights as they are).

    A one-element tensor whose shape differs only in rank is reshaped: checkpoints written before FSDP2 support
    stored the CLIP/LiT `logit_scale` as a 0-dim tensor; the models now hold it as [1] (fully_shard rejects 0-dim).
    """
    out = dict(state)
    for key in sorted(set(expected) | set(state)):
        if key not in state:
            raise ConfigError(f"checkpoint {path} does not match the model: it lacks {key}")
        if key not in expected:
            raise ConfigError(f"checkpoint {path} does not match the model: unexpected tensor {key}")
        have, want = tuple(state[key].shape), tuple(expected[key])
        if have == want:
            continue
        if state[key].numel() == 1 and torch.Size(want).numel() == 1:
            out[key] = state[key].reshape(want)
            continue
        raise ConfigError(f"checkpoint {path} does not match the model: {key} is {have} there, {want} in the model")
    return out


def clean_stale_tmp(run_dir: Path) -> None:
    """Clear what a run killed mid-save left anywhere in its directory: the temporary copies of checkpoints, of
    the artifacts refreshed at each checkpoint (`.encoder.tmp-*`, ...) and of every other atomic write."""
    if Path(run_dir).is_dir():
        remove_stale_temps(run_dir)

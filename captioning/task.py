"""The ClipCap task for the shared loop (`forward(batch) -> {"loss"}`) and the captioner artifact it exports.

A captioner artifact (`<run>/captioner/`): `config.json` (format "clipcap-captioner", model config, encoder path,
LM name), `mapper.safetensors`, `tokenizer/`, and `lm/` when the LM was fine-tuned (else the LM name is reloaded).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from captioning.model import CaptionModelConfig, ClipCapModel, load_lm, load_tokenizer
from pretrain.runtime.atomic import plain_tensors, write_dir_atomically
from pretrain.runtime.config import from_dict
from pretrain.runtime.errors import DataError

ARTIFACT_DIR = "captioner"
FORMAT = "clipcap-captioner"


class CaptionTask(nn.Module):
    """ClipCapModel + next-token loss on caption tokens (prefix and padding excluded)."""

    def __init__(self, model: ClipCapModel, tokenizer: Any, feature_dim: int, encoder: str) -> None:
        super().__init__()
        self.model, self.tokenizer, self.feature_dim, self.encoder = model, tokenizer, feature_dim, encoder

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": self.model.loss(batch["features"], batch["tokens"], batch["targets"])}

    def export_artifact(self, run_dir: Path, state: dict[str, torch.Tensor], samples_seen: int) -> Path:
        return save_captioner(Path(run_dir) / ARTIFACT_DIR, self.model, self.tokenizer, self.feature_dim,
                              self.encoder, state=state, samples_seen=samples_seen)  # fmt: skip


def _sub(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def save_captioner(
    out: Path, model: ClipCapModel, tokenizer: Any, feature_dim: int, encoder: str,
    state: dict[str, torch.Tensor] | None = None, samples_seen: int = 0,
) -> Path:  # fmt: skip
    """Write the captioner artifact atomically (from `state`, a task state dict, or the live model)."""
    state = state if state is not None else {f"model.{k}": v for k, v in model.state_dict().items()}
    mapper = plain_tensors(_sub(state, "model.mapper."))
    config = {
        "format": FORMAT,
        "version": 1,
        "model": dataclasses.asdict(model.cfg),
        "feature_dim": feature_dim,
        "encoder": str(encoder),
        "samples_seen": samples_seen,
    }

    def write(tmp: Path) -> None:
        save_file(mapper, str(tmp / "mapper.safetensors"))
        tokenizer.save_pretrained(tmp / "tokenizer")
        if not model.cfg.freeze_lm:
            lm_state = {k: v.contiguous() for k, v in _sub(state, "model.lm.").items()}
            model.lm.save_pretrained(tmp / "lm", state_dict=lm_state)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    return write_dir_atomically(out, write)


def load_captioner(path: str | Path, device: str | torch.device = "cpu") -> tuple[ClipCapModel, Any, dict[str, Any]]:
    """(model in eval mode, tokenizer, config) from a captioner artifact."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise DataError(f"{path} is not a captioner artifact (no config.json); train one with `caption train`")
    config = json.loads(cfg_file.read_text())
    if config.get("format") != FORMAT:
        raise DataError(f"{path}/config.json is not a {FORMAT} artifact")
    cfg = from_dict(CaptionModelConfig, config["model"])
    lm = load_lm(str(path / "lm") if (path / "lm").is_dir() else cfg.lm)
    model = ClipCapModel(cfg, int(config["feature_dim"]), lm)
    model.mapper.load_state_dict(load_file(str(path / "mapper.safetensors")))
    return model.to(device).eval(), load_tokenizer(str(path / "tokenizer")), config

"""The ClipCap task for the shared loop (`forward(batch) -> {"loss"}`) and the captioner artifact it exports.

A captioner artifact (`<run>/captioner/`): `config.json` (format "clipcap-captioner", model config, feature_dim,
the encoder's absolute path and identity (`pretrain.features.encoder_identity`: config and weights hashes), LM
name), `mapper.safetensors`, `tokenizer/`, and `lm/` when the LM was fine-tuned (else the LM name is reloaded).
`captioner_encoder` loads the encoder the captioner was trained on (or a moved copy of it), checked against
that identity, so captions are never decoded from another encoder's features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from captioning.model import CaptionModelConfig, ClipCapModel, load_lm, load_tokenizer
from pretrain.encoder import Encoder, load_encoder
from pretrain.features import encoder_identity
from pretrain.runtime.atomic import plain_tensors, write_dir_atomically
from pretrain.runtime.config import from_dict
from pretrain.runtime.errors import ConfigError, DataError, UserError
from pretrain.runtime.jsonl import read_json_file

ARTIFACT_DIR = "captioner"
FORMAT = "clipcap-captioner"


class CaptionTask(nn.Module):
    """ClipCapModel + next-token loss on caption tokens (prefix and padding excluded)."""

    produces = "captioner"  # what export_artifact writes: the kind of model `run.evals` evaluators read

    def __init__(
        self,
        model: ClipCapModel,
        tokenizer: Any,
        feature_dim: int,
        encoder: str,
        identity: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.model, self.tokenizer, self.feature_dim, self.encoder = model, tokenizer, feature_dim, encoder
        self.identity = identity  # the encoder's config and weights hashes, checked when captioning

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": self.model.loss(batch["features"], batch["tokens"], batch["targets"])}

    def export_artifact(self, run_dir: Path, state: dict[str, torch.Tensor], samples_seen: int) -> Path:
        return save_captioner(Path(run_dir) / ARTIFACT_DIR, self.model, self.tokenizer, self.feature_dim,
                              self.encoder, state=state, samples_seen=samples_seen, identity=self.identity)  # fmt: skip


def _sub(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def save_captioner(
    out: Path, model: ClipCapModel, tokenizer: Any, feature_dim: int, encoder: str,
    state: dict[str, torch.Tensor] | None = None, samples_seen: int = 0, identity: dict[str, str] | None = None,
) -> Path:  # fmt: skip
    """Write the captioner artifact atomically (from `state`, a task state dict, or the live model).

    `encoder` is stored as an absolute path; `identity` (`encoder_identity`) lets later runs check the encoder.
    """
    state = state if state is not None else {f"model.{k}": v for k, v in model.state_dict().items()}
    mapper = plain_tensors(_sub(state, "model.mapper."))
    config = {
        "format": FORMAT,
        "version": 1,
        "model": dataclasses.asdict(model.cfg),
        "feature_dim": feature_dim,
        "encoder": str(Path(encoder).absolute()) if encoder else "",
        "encoder_identity": identity or {},
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


def read_captioner_config(path: str | Path) -> dict[str, Any]:
    """The checked `config.json` of a captioner artifact; every defect is a one-line UserError naming the file."""
    path = Path(path)
    cfg_file = path / "config.json"
    missing = f"{path} is not a captioner artifact (no config.json); train one with `caption train`"
    config = read_json_file(cfg_file, missing, DataError)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise DataError(f"{cfg_file} is not a {FORMAT} artifact")
    for key, kind in (("model", dict), ("feature_dim", int), ("encoder", str)):
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            raise UserError(f"{cfg_file}: missing or malformed '{key}' (expected {kind.__name__})")
    try:
        config["model_config"] = from_dict(CaptionModelConfig, config["model"], prefix="model.")
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{cfg_file}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return config


def load_captioner(path: str | Path, device: str | torch.device = "cpu") -> tuple[ClipCapModel, Any, dict[str, Any]]:
    """(model in eval mode, tokenizer, config) from a captioner artifact; a broken artifact is a one-line UserError."""
    path = Path(path)
    config = read_captioner_config(path)
    cfg = config.pop("model_config")
    mapper_file = path / "mapper.safetensors"
    if not mapper_file.is_file():
        raise UserError(f"{path}: no mapper.safetensors (an incomplete captioner artifact)")
    lm = load_lm(str(path / "lm") if (path / "lm").is_dir() else cfg.lm)
    model = ClipCapModel(cfg, config["feature_dim"], lm)
    try:
        model.mapper.load_state_dict(load_file(str(mapper_file)))
    except (RuntimeError, OSError) as exc:
        raise UserError(f"{mapper_file}: does not match config.json ({' '.join(str(exc).split())[:200]})") from None
    return model.to(device).eval(), load_tokenizer(str(path / "tokenizer")), config


def captioner_encoder(path: str | Path, config: dict[str, Any], override: str | Path = "") -> Encoder:
    """The encoder artifact the captioner at `path` was trained on: the one its config names, or `override`.

    `override` (e.g. recipe `encoder=`) is for a moved copy: its width must be the config's `feature_dim` and,
    when the config records one, its identity (config and weights hashes) the recorded one; else a UserError.
    """
    cfg_file = Path(path) / "config.json"
    named = str(override or config.get("encoder", ""))
    enc_path = Path(named).expanduser()
    if not named or not enc_path.is_dir():
        raise UserError(f"{cfg_file}: encoder artifact '{named}' not found; pass encoder=DIR (the one it trained on)")
    encoder = load_encoder(enc_path)
    if encoder.num_features != config["feature_dim"]:
        raise UserError(
            f"{cfg_file}: trained on {config['feature_dim']}-d features, but encoder {enc_path} gives "
            f"{encoder.num_features}-d ones; pass encoder=DIR with the artifact it was trained on"
        )
    stored, found = config.get("encoder_identity") or {}, encoder_identity(encoder)
    for key in ("config_hash", "weights_hash"):
        if stored.get(key) and stored[key] != found[key]:
            raise UserError(
                f"{cfg_file}: encoder {enc_path} differs from the one it was trained on ({key} {found[key][:12]} "
                f"!= {stored[key][:12]}, {stored.get('path', '?')}); pass encoder=DIR with that artifact"
            )
    return encoder


def captioner_hash(path: str | Path) -> str:
    """sha256 over the files that decide a captioner's output: config.json, the mapper and a fine-tuned LM."""
    path = Path(path)
    files = [path / "config.json", path / "mapper.safetensors", *sorted((path / "lm").glob("*.safetensors"))]
    h = hashlib.sha256()
    for file in files:
        if file.is_file():
            h.update(file.name.encode() + b"\0")
            with open(file, "rb") as f:
                while block := f.read(1 << 24):
                    h.update(block)
    return h.hexdigest()

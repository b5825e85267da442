"""The LiT model: a locked encoder artifact + a new image projection + a text tower, and the LiT model directory.

Image side: `pretrain.encoder.load_encoder` (frozen weights, eval-mode norms, no grad; optionally bf16), then
Linear(width, embed_dim, bias=False) (OpenCLIP's `proj`, freshly initialised, always trained). OpenCLIP-style
`unlocked_groups`: 0 trains only that projection (the paper's / SuperClass's LiT setting); N > 0 also unlocks
the last N image groups, counted from the top: [last block + final norm], then one group per earlier block,
then the stem [patch embed, class token, positions, ln_pre]. OpenCLIP counts the projection as its own last
group, so our N is OpenCLIP's `lock_image_unlocked_groups` N + 1 (the paper's `unlocked_groups: 1` is our 0).

`load_lit` re-checks the encoder: its config and weights hashes (`pretrain.features.encoder_identity`, stored
at training) must match the artifact it loads, also when `encoder=` points it at a moved copy.

Text side: OpenCLIP's `TextTransformer` from scratch (`pretrain.models.clip.build_text_tower`), or a pretrained
Hugging Face encoder from a local path (AutoModel, never remote code) with mean or CLS pooling + a projection.

A LiT model directory (what `export_artifact` writes and `load_lit` reads):
    config.json         {"format": "superclass-lit", "version": 1, "encoder": <artifact path>,
                         "encoder_identity": {"path", "config_hash", "weights_hash"}, "embed_dim",
                         "text": {"kind": "scratch"|"hf", ...}, "tokenizer": {LabelConfig}, "unlocked_groups"}
    model.safetensors   image_proj.*, text.*, logit_scale (+ backbone.* when image groups were unlocked)
    text_hf/            for kind "hf": the HF config and tokenizer files, so the directory loads on its own
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from pretrain.encoder import Encoder, load_encoder
from pretrain.exports.common import from_pretrained_complete
from pretrain.features import encoder_identity
from pretrain.labels import LabelConfig, build_tokenizer
from pretrain.models.clip import LOGIT_SCALE_INIT, build_text_tower, reshape_logit_scale
from pretrain.models.presets import TextConfig, get_text_preset
from pretrain.runtime.atomic import plain_tensors, write_dir_atomically
from pretrain.runtime.config import from_dict, to_dict
from pretrain.runtime.errors import ConfigError, UserError
from pretrain.runtime.jsonl import read_json_file

FORMAT = "superclass-lit"
VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
HF_DIR = "text_hf"
MAX_LOGIT_SCALE = 100.0


@dataclass
class TextTowerConfig:
    """Which text tower LiT trains."""

    kind: Literal["scratch", "hf"] = "scratch"  # scratch: OpenCLIP's text transformer, random init (the paper)
    preset: str = "text_b"  # scratch: text preset (text_tiny, text_b, text_l); sets width/layers/embed_dim
    hf_path: str = ""  # hf: a local directory with a pretrained encoder (e.g. BERT) and its tokenizer
    pooling: Literal["mean", "cls"] = "mean"  # hf: masked mean over tokens, or the first token
    embed_dim: int = 0  # joint embedding size; 0 = the text preset's (hf: 512 if 0)


class HFTextTower(nn.Module):
    """A pretrained HF encoder (AutoModel) + masked mean or CLS pooling + Linear(hidden, embed_dim, bias=False)."""

    def __init__(self, model: nn.Module, embed_dim: int, pooling: str) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling
        hidden = int(model.config.hidden_size)
        self.proj = nn.Linear(hidden, embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=hidden**-0.5)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]
        hidden = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.proj(pooled)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable and hasattr(self.model, "gradient_checkpointing_enable"):
            self.model.gradient_checkpointing_enable()


def _hf_model(path: str | Path, pretrained: bool) -> nn.Module:
    """AutoModel weights (pretrained) or architecture (from its config) at a local path; never remote code."""
    from transformers import AutoConfig, AutoModel

    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise ConfigError(f"text.hf_path: {path} has no config.json (expected a local HF model directory)")
    try:
        if pretrained:
            return from_pretrained_complete(AutoModel, str(path), "text tower", trust_remote_code=False)
        return AutoModel.from_config(AutoConfig.from_pretrained(str(path), trust_remote_code=False))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"text.hf_path: cannot load {path}: {str(exc).splitlines()[0]}") from None


def image_groups(backbone: nn.Module) -> list[list[nn.Module | nn.Parameter]]:
    """The backbone's parameter groups from the top down (OpenCLIP's lock groups, without the projection)."""
    blocks = list(getattr(backbone, "blocks", []))
    if blocks:
        top = [blocks[-1]] + [m for m in (getattr(backbone, n, None) for n in ("norm", "fc_norm", "head")) if m]
        stem = [getattr(backbone, n, None) for n in ("patch_embed", "cls_token", "pos_embed", "norm_pre")]
        return [top] + [[b] for b in reversed(blocks[:-1])] + [[m for m in stem if m is not None]]
    return [[child] for child in reversed(list(backbone.children()))]  # timm CNNs: top-level stages


def _params(items: list[nn.Module | nn.Parameter]) -> list[nn.Parameter]:
    out: list[nn.Parameter] = []
    for item in items:
        out += [item] if isinstance(item, nn.Parameter) else list(item.parameters())
    return out


class LiTModel(nn.Module):
    """Locked image tower + image projection + text tower + learnable temperature; plain (no DDP inside)."""

    def __init__(
        self,
        encoder: Encoder,
        text: nn.Module,
        embed_dim: int,
        unlocked_groups: int = 0,
        image_dtype: Literal["fp32", "bf16"] = "fp32",
    ) -> None:
        super().__init__()
        self.backbone = encoder.backbone
        self.encoder_config, self.arch = encoder.config, encoder.arch
        self.encoder_path = encoder.path
        self.encoder_identity = encoder_identity(encoder)  # of the artifact as loaded, before any LiT update
        width = encoder.num_features
        self.image_proj = nn.Linear(width, embed_dim, bias=False)
        nn.init.normal_(self.image_proj.weight, std=width**-0.5)  # OpenCLIP's `proj` init
        self.text = text
        self.logit_scale = nn.Parameter(torch.full((1,), LOGIT_SCALE_INIT))  # [1]: fully_shard rejects 0-dim
        self.embed_dim = embed_dim
        groups = image_groups(self.backbone)
        if not 0 <= unlocked_groups <= len(groups):
            raise ConfigError(f"unlocked_groups: expected 0..{len(groups)} for this encoder, got {unlocked_groups}")
        self.unlocked_groups = unlocked_groups
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        unlocked = _params([m for g in groups[:unlocked_groups] for m in g])
        for p in unlocked:
            p.requires_grad_(True)
        self._unlocked_modules = [m for g in groups[:unlocked_groups] for m in g if isinstance(m, nn.Module)]
        if image_dtype == "bf16":
            if unlocked_groups:
                raise ConfigError("image_dtype=bf16 casts the locked tower; use it with unlocked_groups=0")
            locked = [p for p in self.backbone.parameters() if not p.requires_grad]
            for p in locked:
                p.data = p.data.to(torch.bfloat16)
        self.image_dtype = image_dtype
        self.backbone.eval()

    def train(self, mode: bool = True) -> LiTModel:
        """Train mode for the trainable parts; the locked image tower keeps eval-mode norms and no dropout."""
        super().train(mode)
        self.backbone.eval()
        for module in self._unlocked_modules:
            module.train(mode)
        return self

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled feature; no graph at all when the whole tower is locked."""
        if self.image_dtype == "bf16":
            images = images.to(torch.bfloat16)
        if self.unlocked_groups == 0:
            with torch.no_grad():
                return self.backbone(images).float()
        return self.backbone(images).float()

    def project_image(self, features: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Joint embeddings [B, embed_dim] from pooled backbone features [B, width] (live or cached)."""
        features = self.image_proj(features)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.project_image(self.image_features(images), normalize)

    def encode_text(self, ids: torch.Tensor, lengths: torch.Tensor | None = None, normalize: bool = True):
        """Text embeddings [B, embed_dim] from token ids (and real lengths, which the HF tower masks with)."""
        if isinstance(self.text, HFTextTower):
            if lengths is None:
                lengths = (ids != 0).sum(1)
            features = self.text(ids, lengths)
        else:
            features = self.text(ids)
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, images: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor | None = None):
        """(normalised image features, normalised text features, logit_scale.exp() as a 0-dim tensor)."""
        return self.encode_image(images), self.encode_text(ids, lengths), self.logit_scale.exp().squeeze(0)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        reshape_logit_scale(state_dict, prefix + "logit_scale")  # LiT directories before FSDP2 support: 0-dim
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        self.logit_scale.clamp_(0, math.log(MAX_LOGIT_SCALE))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.text.set_grad_checkpointing(enable)
        if self.unlocked_groups:
            self.backbone.set_grad_checkpointing(enable)


# ------------------------------------------------------------------------------------------------ building


def text_config(cfg: TextTowerConfig, labels: LabelConfig, vocab_size: int) -> TextConfig:
    """The scratch text tower's sizes: the preset, with the tokenizer's vocabulary and context length."""
    base = get_text_preset(cfg.preset)
    embed = cfg.embed_dim or base.embed_dim
    return dataclasses.replace(base, vocab_size=vocab_size, context_length=labels.context_length, embed_dim=embed)


def build_text(cfg: TextTowerConfig, labels: LabelConfig, vocab_size: int, pretrained: bool = True) -> nn.Module:
    if cfg.kind == "scratch":
        if labels.tokenizer != "clip_bpe":
            raise ConfigError("labels.tokenizer: the scratch text tower pools at the EOT id and needs clip_bpe")
        return build_text_tower(text_config(cfg, labels, vocab_size))
    if not cfg.hf_path:
        raise ConfigError("text.hf_path: required for text.kind=hf (a local HF model directory)")
    return HFTextTower(_hf_model(cfg.hf_path, pretrained), cfg.embed_dim or 512, cfg.pooling)


def resolve_labels(cfg: TextTowerConfig, labels: LabelConfig) -> LabelConfig:
    """The tokenizer settings that go with the text tower (an HF tower uses its own tokenizer)."""
    if cfg.kind == "hf":
        return dataclasses.replace(labels, tokenizer="hf", tokenizer_path=labels.tokenizer_path or cfg.hf_path)
    return labels


def build_lit_model(
    encoder: str | Path | Encoder,
    text: TextTowerConfig,
    labels: LabelConfig,
    unlocked_groups: int = 0,
    image_dtype: Literal["fp32", "bf16"] = "fp32",
    pretrained_text: bool = True,
) -> LiTModel:
    """A fresh LiT model on the encoder artifact (a path or a loaded `Encoder`)."""
    enc = encoder if isinstance(encoder, Encoder) else load_encoder(encoder)
    labels = resolve_labels(text, labels)
    tokenizer = build_tokenizer(labels)
    tower = build_text(text, labels, tokenizer.vocab_size, pretrained_text)
    embed = tower.proj.out_features if isinstance(tower, HFTextTower) else text_config(text, labels, 1).embed_dim
    return LiTModel(enc, tower, embed, unlocked_groups, image_dtype)


# ----------------------------------------------------------------------------------------- the directory


def save_lit(
    out_dir: str | Path,
    model: LiTModel,
    text: TextTowerConfig,
    labels: LabelConfig,
    state: dict[str, torch.Tensor] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the LiT model directory atomically; `state` (a full state dict of the model) defaults to the model's."""
    state = state if state is not None else model.state_dict()
    keep = ("image_proj.", "text.", "logit_scale") + (("backbone.",) if model.unlocked_groups else ())
    tensors = plain_tensors({k: v for k, v in state.items() if k.startswith(keep)})
    labels = resolve_labels(text, labels)
    config = {
        "format": FORMAT,
        "version": VERSION,
        "encoder": str(Path(model.encoder_path).absolute()) if model.encoder_path else "",
        "encoder_identity": model.encoder_identity,
        "embed_dim": model.embed_dim,
        "unlocked_groups": model.unlocked_groups,
        "text": to_dict(text),
        "tokenizer": to_dict(labels),
        **(extra or {}),
    }

    def write(tmp: Path) -> None:
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        if isinstance(model.text, HFTextTower):
            model.text.model.config.save_pretrained(str(tmp / HF_DIR))
            build_tokenizer(labels)._tok().save_pretrained(str(tmp / HF_DIR))  # type: ignore[attr-defined]

    return write_dir_atomically(Path(out_dir), write)


def read_lit_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    file = path / CONFIG_FILE
    config = read_json_file(file, f"{path} is not a LiT model directory (no {CONFIG_FILE})")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise UserError(f"{file}: format is {config.get('format')!r}, expected {FORMAT!r}")
    return config


def load_lit(path: str | Path, device: str | torch.device = "cpu", encoder: str | Path | None = None) -> LiTModel:
    """The LiT model directory at `path` in eval mode; `encoder` overrides the artifact path it names."""
    path = Path(path)
    config = read_lit_config(path)
    try:
        text = from_dict(TextTowerConfig, config["text"], prefix="text.")
        labels = from_dict(LabelConfig, config["tokenizer"], prefix="tokenizer.")
    except (ConfigError, KeyError) as exc:
        raise UserError(f"{path / CONFIG_FILE}: {exc}") from None
    enc_path = Path(encoder or config.get("encoder", "")).expanduser()
    if not enc_path.is_dir():
        raise UserError(f"{path / CONFIG_FILE}: encoder artifact {enc_path} not found (pass --encoder DIR)")
    if text.kind == "hf":
        text = dataclasses.replace(text, hf_path=str(path / HF_DIR))
        labels = dataclasses.replace(labels, tokenizer_path=str(path / HF_DIR))
    model = build_lit_model(enc_path, text, labels, int(config.get("unlocked_groups", 0)), pretrained_text=False)
    check_encoder_identity(path / CONFIG_FILE, config.get("encoder_identity"), model.encoder_identity, enc_path)
    tensors = load_file(str(path / MODEL_FILE))
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    bad = [k for k in missing if not k.startswith("backbone.")] + list(unexpected)
    if bad:
        raise UserError(f"{path / MODEL_FILE}: weights do not match the config ({bad[0]} ...)")
    model.tokenizer_config = labels  # type: ignore[assignment]
    return model.to(device).eval()


def check_encoder_identity(
    config_file: Path, stored: dict[str, str] | None, found: dict[str, str], enc_path: Path
) -> None:
    """UserError when the encoder at `enc_path` is not the one the LiT model was trained on (config or weights).

    Directories written before the identity was stored have none; then there is nothing to compare.
    """
    if not stored:
        return
    for key, what in (("config_hash", "config"), ("weights_hash", "weights")):
        if stored.get(key) and stored[key] != found.get(key):
            raise UserError(
                f"{config_file}: encoder {enc_path} has other {what} ({key} {found.get(key, '')[:12]}, trained "
                f"with {stored[key][:12]} from {stored.get('path', '?')}); pass --encoder with that artifact"
            )


def lit_tokenizer(path: str | Path) -> Any:
    """The tokenizer a LiT model directory was trained with."""
    path = Path(path)
    config = read_lit_config(path)
    labels = from_dict(LabelConfig, config["tokenizer"], prefix="tokenizer.")
    if config.get("text", {}).get("kind") == "hf":
        labels = dataclasses.replace(labels, tokenizer_path=str(path / HF_DIR))
    return build_tokenizer(labels)

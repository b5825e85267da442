"""ClipCap: a mapping network turns an image feature into prefix embeddings that a causal LM continues.

Follows `rmokady/CLIP_prefix_caption` (train.py): the MLP mapper (Linear -> Tanh -> Linear, prefix 10) and the
TransformerMapper (learned prefix constants self-attending with `clip_length` pseudo-tokens, prefix 40, 8 layers),
for any encoder width. With `tokens=True` the transformer mapper reads the encoder's projected patch tokens
instead of pseudo-tokens expanded from the pooled feature. The LM is any HF causal LM (GPT-2 by default),
frozen unless `freeze_lm=False`; a frozen LM stays in eval mode (dropout off) as ClipCap's `ClipCaptionPrefix`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.exports.common import from_pretrained_complete
from pretrain.runtime.errors import ConfigError


@dataclass
class CaptionModelConfig:
    lm: str = "gpt2"  # HF causal LM name or local directory (AutoModelForCausalLM; never trust_remote_code)
    mapper: Literal["mlp", "transformer"] = "transformer"  # ClipCap's two mapping networks
    prefix_length: int = 40  # prefix embeddings fed to the LM (ClipCap: 10 for mlp, 40 for transformer)
    clip_length: int = 40  # transformer mapper: pseudo-tokens expanded from the pooled feature
    num_layers: int = 8  # transformer mapper depth
    num_heads: int = 8  # transformer mapper heads
    tokens: bool = False  # transformer mapper reads the encoder's patch tokens instead of the pooled feature
    freeze_lm: bool = True  # train only the mapper (the SuperClass/ClipCap frozen-GPT-2 setting)
    normalize_prefix: bool = False  # L2-normalise the image feature first (ClipCap's --normalize_prefix)


class MLPMapper(nn.Module):
    """ClipCap's MLP: Linear(D, E*P/2) -> Tanh -> Linear(E*P/2, E*P), reshaped to P prefix embeddings."""

    def __init__(self, in_dim: int, lm_dim: int, prefix_length: int) -> None:
        super().__init__()
        self.prefix_length, self.lm_dim = prefix_length, lm_dim
        hidden = lm_dim * prefix_length // 2
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, lm_dim * prefix_length))

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.net(feature).view(feature.shape[0], self.prefix_length, self.lm_dim)


class TransformerMapper(nn.Module):
    """ClipCap's TransformerMapper: [pseudo-tokens | learned prefix constants] -> pre-LN transformer -> the constants.

    Pooled input [B, D] is expanded by one Linear into `clip_length` tokens; token input [B, T, D] is projected
    per token. The transformer is pre-LN with mlp ratio 2 and ReLU, as ClipCap's.
    """

    def __init__(
        self, in_dim: int, lm_dim: int, prefix_length: int, clip_length: int, num_layers: int, num_heads: int, tokens
    ) -> None:
        super().__init__()
        self.prefix_length, self.clip_length, self.lm_dim, self.tokens = prefix_length, clip_length, lm_dim, tokens
        self.linear = nn.Linear(in_dim, lm_dim if tokens else clip_length * lm_dim)
        self.prefix_const = nn.Parameter(torch.randn(prefix_length, lm_dim))
        layer = nn.TransformerEncoderLayer(
            lm_dim, num_heads, dim_feedforward=2 * lm_dim, dropout=0.0, activation="relu", batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        b = feature.shape[0]
        x = self.linear(feature)
        if not self.tokens:
            x = x.view(b, self.clip_length, self.lm_dim)
        prefix = self.prefix_const.unsqueeze(0).expand(b, -1, -1)
        out = self.transformer(torch.cat([x, prefix], dim=1))
        return out[:, -self.prefix_length :]


def load_lm(name: str, dtype: torch.dtype | None = None) -> nn.Module:
    """An HF causal LM from a hub name or a local directory (no remote code)."""
    from transformers import AutoModelForCausalLM

    try:
        return from_pretrained_complete(AutoModelForCausalLM, name, "causal LM", trust_remote_code=False, dtype=dtype)
    except OSError as exc:
        raise ConfigError(f"cannot load the LM '{name}': {str(exc).splitlines()[0]}") from None


def load_tokenizer(name: str):  # noqa: ANN201 - a transformers tokenizer
    """The LM's tokenizer (a pad token is not needed: padding positions are masked out of the loss)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except OSError as exc:
        raise ConfigError(f"cannot load the tokenizer of '{name}': {str(exc).splitlines()[0]}") from None


def lm_width(lm: nn.Module) -> int:
    return int(lm.get_input_embeddings().embedding_dim)


class ClipCapModel(nn.Module):
    """Mapper + LM. `prefix(features)` gives [B, P, E]; `forward` the LM logits over [prefix | caption tokens]."""

    def __init__(self, cfg: CaptionModelConfig, feature_dim: int, lm: nn.Module) -> None:
        super().__init__()
        if cfg.mapper == "mlp" and cfg.tokens:
            raise ConfigError("model.tokens=true needs model.mapper=transformer (the MLP maps one pooled feature)")
        if cfg.prefix_length <= 0:
            raise ConfigError(f"model.prefix_length must be > 0, got {cfg.prefix_length}")
        self.cfg = cfg
        self.lm = lm
        width = lm_width(lm)
        if cfg.mapper == "mlp":
            self.mapper: nn.Module = MLPMapper(feature_dim, width, cfg.prefix_length)
        else:
            args = (cfg.prefix_length, cfg.clip_length, cfg.num_layers, cfg.num_heads, cfg.tokens)
            self.mapper = TransformerMapper(feature_dim, width, *args)
        if cfg.freeze_lm:
            self.lm.requires_grad_(False)  # the optimizer only sees trainable params, and no LM grads are kept
            self.lm.eval()

    def train(self, mode: bool = True) -> ClipCapModel:
        super().train(mode)
        if self.cfg.freeze_lm:
            self.lm.eval()  # a frozen LM keeps dropout off, as ClipCap's ClipCaptionPrefix
        return self

    def prefix(self, features: torch.Tensor) -> torch.Tensor:
        if self.cfg.normalize_prefix:
            features = F.normalize(features.float(), dim=-1)
        dtype = self.lm.get_input_embeddings().weight.dtype
        return self.mapper(features.to(next(self.mapper.parameters()).dtype)).to(dtype)

    def forward(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits [B, P + L, V] for prefix + caption `tokens` [B, L] (padding may hold any valid id)."""
        embeds = torch.cat([self.prefix(features), self.lm.get_input_embeddings()(tokens)], dim=1)
        return self.lm(inputs_embeds=embeds, use_cache=False).logits

    def loss(self, features: torch.Tensor, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy on caption positions only (`targets` is -100 at padding)."""
        logits = self.forward(features, tokens)[:, self.cfg.prefix_length - 1 : -1]
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)

"""The SuperClass classification head: pooled image feature -> one logit per tokenizer id."""

from __future__ import annotations

import torch
import torch.nn as nn


class SuperClassHead(nn.Module):
    """LayerNorm -> Linear(width, vocab_size), as the official code's `MixClsHead` with `layers=0`.

    The official path is: ln_post on all tokens -> mean over patch tokens -> this LayerNorm -> Linear. The
    Linear weight is drawn with std width**-0.5 and the bias starts at 0 (≈37.9M weights for B: 768 x 49408).
    """

    def __init__(self, width: int, vocab_size: int, ln_eps: float = 1e-5) -> None:
        super().__init__()
        self.width = width
        self.vocab_size = vocab_size
        self.norm = nn.LayerNorm(width, eps=ln_eps)
        self.proj = nn.Linear(width, vocab_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official init: LayerNorm (1, 0), Linear weight N(0, width**-0.5), bias 0."""
        self.norm.reset_parameters()
        nn.init.normal_(self.proj.weight, std=self.width**-0.5)
        nn.init.zeros_(self.proj.bias)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """Logits [B, vocab_size] from the pooled backbone feature [B, width]."""
        return self.proj(self.norm(pooled))

"""LiT as a task object for the shared loop: `forward(batch) -> {"loss": ...}` with OpenCLIP's ClipLoss.

The batch's `image` is pixels, or with `cached_features` the locked tower's pooled features (`lit.data`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from lit.model import LiTModel, TextTowerConfig, save_lit
from pretrain.labels import LabelConfig, clip_loss

LIT_DIR = "lit"  # the LiT model directory inside a run directory


class LiTTask(nn.Module):
    """Locked image tower, trainable projection + text tower; CLIP loss with local loss + gather-with-grad."""

    produces = "lit"  # what export_artifact writes: the kind of model `run.evals` evaluators read

    def __init__(
        self,
        model: LiTModel,
        text: TextTowerConfig,
        labels: LabelConfig,
        rank: int = 0,
        world_size: int = 1,
        provenance: dict[str, Any] | None = None,
        cached_features: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = clip_loss(world_size=world_size, rank=rank)
        self.text_cfg, self.labels = text, labels
        self.provenance = provenance or {}
        self.cached_features = cached_features  # batch["image"] holds the locked tower's pooled features [B, D]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        pooled = batch["image"] if self.cached_features else self.model.image_features(batch["image"])
        image = self.model.project_image(pooled)
        text = self.model.encode_text(batch["text"], batch.get("text_len"))
        scale = self.model.logit_scale.exp()
        return {"loss": self.loss(image, text, scale), "logit_scale": scale.detach()}

    def after_step(self) -> None:
        self.model.clamp_logit_scale()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def fsdp_units(self) -> list[nn.Module]:
        resblocks = getattr(getattr(self.model.text, "transformer", None), "resblocks", [])
        return list(resblocks)

    def compile_units(self) -> list[nn.Module]:
        return [self.model.text]

    def export_artifact(self, run_dir: Path, state: dict[str, torch.Tensor], samples_seen: int) -> Path:
        """Write the LiT model directory (projection, text tower, logit scale, config) from a full state dict."""
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
        extra = {"provenance": {**self.provenance, "samples_seen": samples_seen}}
        return save_lit(Path(run_dir) / LIT_DIR, self.model, self.text_cfg, self.labels, state=state, extra=extra)

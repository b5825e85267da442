"""The two pretraining objectives as task objects for the shared loop: `forward(batch) -> {"loss": ...}`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pretrain.encoder import save_encoder
from pretrain.labels import IDFWeights, LossConfig, clip_loss, label_ids, superclass_loss
from pretrain.models.clip import CLIPModel
from pretrain.models.heads import SuperClassHead
from pretrain.models.presets import ArchConfig

ARTIFACT_DIR = "encoder"  # the encoder artifact inside a run directory


def _sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


class SuperClassTask(nn.Module):
    """Image backbone + SuperClass head; labels from caption token ids, weighted by online IDF."""

    produces = "encoder"  # what export_artifact writes: the kind of model `run.evals` evaluators read

    def __init__(
        self,
        backbone: nn.Module,
        arch: ArchConfig,
        vocab_size: int,
        special_ids: tuple[int, ...],
        official: bool,
        idf: IDFWeights,
        loss: LossConfig,
        provenance: dict[str, Any],
        preprocess: dict[str, Any],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = SuperClassHead(arch.width, vocab_size, arch.ln_eps)
        self.idf = idf
        self.arch, self.loss_cfg, self.special_ids, self.official = arch, loss, tuple(special_ids), official
        self.provenance, self.preprocess = provenance, preprocess

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.head(self.backbone(batch["image"]))
        ids, valid = label_ids(batch["text"], batch["text_len"], self.special_ids, self.official)
        weights = self.idf(ids, valid)  # updates the online statistics in training mode
        loss = superclass_loss(logits, ids, valid, weights, self.loss_cfg)
        return {"loss": loss}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    def fsdp_units(self) -> list[nn.Module]:
        return list(getattr(self.backbone, "blocks", []))

    def compile_units(self) -> list[nn.Module]:
        return [self.backbone, self.head]

    def export_artifact(self, run_dir: Path, state: dict[str, torch.Tensor], samples_seen: int) -> Path:
        """Write the encoder artifact (backbone + head + IDF statistics) from a full state dict."""
        head = {f"head.{k}": v for k, v in _sub_state(state, "head.").items()}
        idf = {f"idf.{k}": v for k, v in _sub_state(state, "idf.").items()}
        provenance = {**self.provenance, "samples_seen": samples_seen}
        return save_encoder(
            Path(run_dir) / ARTIFACT_DIR,
            _sub_state(state, "backbone."),
            self.arch,
            self.preprocess,
            provenance,
            head_state={**head, **idf},
        )


class CLIPTask(nn.Module):
    """The contrastive baseline on the same backbone: OpenCLIP's text tower and ClipLoss (local + gather-with-grad)."""

    produces = "encoder"  # what export_artifact writes: the kind of model `run.evals` evaluators read

    def __init__(
        self,
        model: CLIPModel,
        arch: ArchConfig,
        rank: int,
        world_size: int,
        provenance: dict[str, Any],
        preprocess: dict[str, Any],
        max_logit_scale: float = 100.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = clip_loss(world_size=world_size, rank=rank)
        self.arch, self.provenance, self.preprocess = arch, provenance, preprocess
        self.max_log_scale = math.log(max_logit_scale)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image, text, scale = self.model(batch["image"], batch["text"])
        # fp32 logits and cross-entropy also when the towers run on bf16 weights (run.precision=bf16_weights);
        # under autocast the similarity matmul is bf16 either way and the cross-entropy fp32
        loss = self.loss(image.float(), text.float(), scale.float())
        return {"loss": loss, "logit_scale": scale.detach()}

    @torch.no_grad()
    def after_step(self) -> None:
        self.model.logit_scale.clamp_(0, self.max_log_scale)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def fsdp_units(self) -> list[nn.Module]:
        blocks = list(getattr(self.model.backbone, "blocks", []))
        return blocks + list(self.model.text.transformer.resblocks)

    def compile_units(self) -> list[nn.Module]:
        return [self.model]

    def export_artifact(self, run_dir: Path, state: dict[str, torch.Tensor], samples_seen: int) -> Path:
        """Write the image tower as the encoder artifact (projection and text tower stay in the checkpoint)."""
        provenance = {**self.provenance, "samples_seen": samples_seen}
        backbone = _sub_state(state, "model.backbone.")
        return save_encoder(Path(run_dir) / ARTIFACT_DIR, backbone, self.arch, self.preprocess, provenance)

"""The LLaVA task for the shared loop: which parameters train in each stage, the loss, and the exported HF directory.

Stage 1 trains the projector alone; stage 2 the projector and the LLM (fully, or LoRA adapters on the LLM's
linear layers with the projector at its own lr). The vision tower stays frozen unless `train_vision`. Frozen
weights stay out of checkpoints (`checkpoint_frozen = False`): a resumed run rebuilds them from its sources.
The export (`<run>/llava/`) is a standard HF LLaVA directory, with any LoRA adapter merged into the weights and
any centred projector (`vlm.centred_projector`) folded;
stage 1 also writes the projector alone there as LLaVA's `mm_projector.bin` (`--pretrain_mm_mlp_adapter`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlm.centred_projector import fold_centre
from vlm.lora import LoraSettings, add_lora, has_lora, merge_lora_state

EXPORT_DIR = "llava"
TRAINING_FILE = "superclass_training.json"


def set_trainable(model: nn.Module, stage: int, lora: bool, train_vision: bool) -> None:
    """Freeze everything, then unfreeze what the stage trains (LLaVA's `tune_mm_mlp_adapter` / finetune rules)."""
    llava = model.model
    model.requires_grad_(False)
    llava.multi_modal_projector.requires_grad_(True)
    if stage == 2 and lora:
        for name, param in llava.language_model.named_parameters():
            param.requires_grad_(".lora_" in name)
    elif stage == 2:
        llava.language_model.requires_grad_(True)
        model.lm_head.requires_grad_(True)
    if train_vision:
        llava.vision_tower.requires_grad_(True)


def upcast_trainable(model: nn.Module) -> int:
    """Keep trainable weights in fp32 (AdamW's master copy), frozen ones as loaded; returns how many were cast.

    AdamW on 16-bit weights loses updates: at lr 2e-5 a bf16 weight near 0.02 does not move at all and fp16's
    eps underflows, so LLaVA trains fp32 masters (DeepSpeed) under bf16 compute, as autocast gives here.
    """
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.is_floating_point() and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast


class LlavaTask(nn.Module):
    """`LlavaForConditionalGeneration` + next-token loss on the supervised (assistant) tokens."""

    produces = "llava"  # what export_artifact writes: the kind of model `run.evals` evaluators read

    checkpoint_frozen = False

    def __init__(
        self, model: nn.Module, processor: Any, stage: int, lora: LoraSettings | None = None,
        train_vision: bool = False, projector_lr_scale: float = 1.0, info: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, got {stage}")
        self.lora = lora if lora is not None and lora.enabled else None
        if self.lora is not None:
            if stage != 2:
                raise ValueError("LoRA is a stage-2 option (stage 1 trains only the projector)")
            add_lora(model.model.language_model, self.lora)
        set_trainable(model, stage, self.lora is not None, train_vision)
        upcast_trainable(model)
        self.model, self.processor, self.stage, self.train_vision = model, processor, stage, train_vision
        self.projector_lr_scale = projector_lr_scale
        self.info = dict(info or {})

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
            pixel_values=batch.get("pixel_values"), use_cache=False,
        )  # fmt: skip
        return {"loss": out.loss, "supervised_tokens": (batch["labels"] != -100).sum().float()}

    def train(self, mode: bool = True) -> LlavaTask:
        """Train mode for what trains; a frozen vision tower stays in eval mode (LLaVA runs it under no_grad)."""
        super().train(mode)
        if not self.train_vision:
            self.model.model.vision_tower.eval()
        return self

    def lr_scales(self) -> dict[str, float]:
        """The projector's lr multiplier (LLaVA's `mm_projector_lr`: 2e-5 next to LoRA's 2e-4 is 0.1)."""
        if self.projector_lr_scale == 1.0:
            return {}
        return {"model.model.multi_modal_projector.": self.projector_lr_scale}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.model.gradient_checkpointing_disable()

    def fsdp_units(self) -> list[nn.Module]:
        """The LLM's decoder layers and the vision tower's blocks, each sharded on its own (then the root)."""
        llava = self.model.model
        return [*llava.language_model.layers, *llava.vision_tower.encoder.layers]

    def export_artifact(self, run_dir: Path, state: dict[str, torch.Tensor], samples_seen: int) -> Path:
        """Write `<run>/llava/`: a standard HF LLaVA directory (LoRA merged) from the full task state dict."""
        llava_state = fold_centre({k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")})
        if has_lora(llava_state):
            llava_state = merge_lora_state(llava_state, self.lora or LoraSettings())
        out = save_plain_llava(self.model.config, self.processor, Path(run_dir) / EXPORT_DIR, llava_state)
        info = {**self.info, "stage": self.stage, "samples_seen": samples_seen, "lora_merged": self.lora is not None}
        (out / TRAINING_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if self.stage == 1:  # the LLaVA codebase's stage-1 output, for its --pretrain_mm_mlp_adapter
            from vlm.llava_codebase import PROJECTOR_FILE, write_projector_bin

            write_projector_bin(llava_state, out / PROJECTOR_FILE)
        return out


def save_plain_llava(config: Any, processor: Any, out: Path, state: dict[str, torch.Tensor]) -> Path:
    """An HF LLaVA directory from a plain (adapter-free) state dict, without building the model for real."""
    from transformers import LlavaForConditionalGeneration

    from vlm.llava_dir import save_llava

    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    dtype = _config_dtype(config)  # trained fp32 masters go out in the model's dtype, as LLaVA saves bf16
    tensors = {k: _as_dtype(v.detach().to("cpu"), dtype).contiguous() for k, v in state.items()}
    model.load_state_dict(tensors, strict=False, assign=True)
    missing = [name for name, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ValueError(f"the state dict lacks {len(missing)} LLaVA weights, e.g. {missing[:3]}")
    return save_llava(model, processor, out)


def _config_dtype(config: Any) -> torch.dtype | None:
    """The dtype a LLaVA config names (`dtype`, a torch.dtype or its name), or None."""
    dtype = getattr(config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    return dtype if isinstance(dtype, torch.dtype) else None


def _as_dtype(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor

"""LoRA on the LLM's linear layers only (peft), and merging a trained adapter into plain weights.

LLaVA-1.5's `finetune_lora.sh`: r 128, alpha 256, dropout 0.05, every linear layer of the LLM (q, k, v, o, gate,
up, down) but never the vision tower's or the projector's (HF's CLIP tower also has `q_proj`/`k_proj`/`v_proj`,
so a plain name list would wrap it too; here the adapter is injected into the language model module alone).
Merging works on a state dict (W + alpha/r * B @ A), so it runs on rank 0's gathered state under FSDP too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER = "default"


@dataclass
class LoraSettings:
    enabled: bool = False  # stage 2 with LoRA instead of full fine-tuning
    r: int = 128  # LLaVA-1.5: --lora_r 128
    alpha: int = 256  # --lora_alpha 256
    dropout: float = 0.05  # train.py default
    targets: tuple[str, ...] = LLAMA_LINEARS  # linear-layer names inside the LLM


def add_lora(language_model: nn.Module, settings: LoraSettings) -> nn.Module:
    """Inject LoRA adapters into `language_model` in place; only the adapter weights are left trainable there."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias="none",
        target_modules=list(settings.targets),
    )  # fmt: skip
    return inject_adapter_in_model(config, language_model, adapter_name=ADAPTER)


def merge_lora_state(state: dict[str, torch.Tensor], settings: LoraSettings) -> dict[str, torch.Tensor]:
    """A state dict with every adapter folded into its base layer (`x.base_layer.weight` -> `x.weight`)."""
    scale = settings.alpha / settings.r
    merged: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if f".lora_A.{ADAPTER}." in key or f".lora_B.{ADAPTER}." in key:
            continue
        if ".base_layer." not in key:
            merged[key] = value
            continue
        prefix, leaf = key.split(".base_layer.")
        if leaf == "weight" and f"{prefix}.lora_A.{ADAPTER}.weight" in state:
            a = state[f"{prefix}.lora_A.{ADAPTER}.weight"].float()
            b = state[f"{prefix}.lora_B.{ADAPTER}.weight"].float()
            value = (value.float() + scale * (b @ a)).to(value.dtype)
        merged[f"{prefix}.{leaf}"] = value
    return merged


def has_lora(state: dict[str, torch.Tensor]) -> bool:
    return any(f".lora_A.{ADAPTER}." in key for key in state)

"""Centred projector training: the projector's first layer trains on the tower's features minus their mean, and the
export folds that mean into its bias, so the model computes the same function and saves as a plain LLaVA projector.

Only the optimizer's coordinates change. A tower whose patch tokens share a large constant offset (the demo's tiny
SuperClass tower: norm 58 of a token norm of 59; its CLIP tower's: 3 of 8) gives AdamW updates to `linear_1` that
mostly shift its outputs by the offset, and the projector barely learns the part of the features that varies.
Measured on the demo (README, 'Why the VLM rows failed'): POPE 50.4 / 50.6 -> 62.6 / 62.4 (two seeds) for that
SuperClass tower. Off in the LLaVA-1.5 recipes (`projector_centring=0`), as LLaVA has no such step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

CENTRE = "centre"  # the buffer's name: in training checkpoints (exact resume), never in an export
FIRST_LAYER = "multi_modal_projector.linear_1."  # HF LLaVA's projector input layer (key infix in its state dict)


class CentredLinear(nn.Linear):
    """`nn.Linear` applied to `x - centre`: with bias b it equals a plain Linear with bias `b - weight @ centre`.

    `keep_function`: start as the same function as `linear` (a trained projector); else take its weights as drawn
    in centred coordinates (a fresh one, whose random `weight @ centre` would otherwise add a large constant to
    every image token that training must first undo).
    """

    def __init__(self, linear: nn.Linear, centre: torch.Tensor, keep_function: bool = True) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=True, device="meta")
        self.weight = linear.weight
        bias = linear.bias if linear.bias is not None else torch.zeros_like(linear.weight[:, 0])
        centre = centre.to(linear.weight.device, linear.weight.dtype)
        if keep_function:
            bias = bias + linear.weight @ centre
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=linear.weight.requires_grad)
        self.register_buffer(CENTRE, centre.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x - self.centre, self.weight, self.bias)


@torch.no_grad()
def projector_inputs(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """What the projector's first layer reads for these images (the selected tower layer and tokens), as (N, D)."""
    linear = model.model.multi_modal_projector.linear_1
    seen: list[torch.Tensor] = []
    hook = linear.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach()))
    try:
        cfg = model.config
        model.model.get_image_features(
            pixel_values=pixel_values.to(model.device, model.dtype),
            vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy,
        )
    finally:
        hook.remove()
    return torch.cat([s.reshape(-1, s.shape[-1]) for s in seen]).float()


def centre_projector(
    model: Any, pixel_values: Sequence[torch.Tensor], keep_function: bool = True, batch_size: int = 64
) -> torch.Tensor:
    """Replace the projector's first layer with a `CentredLinear` at the mean feature of these images (the same
    function as before with `keep_function`, else a fresh layer's weights in centred coordinates); returns the
    mean. Every rank must pass the same images."""
    projector = model.model.multi_modal_projector
    if isinstance(projector.linear_1, CentredLinear):
        raise ValueError("the projector is centred already")  # before the tower runs over the images
    features = [projector_inputs(model, torch.stack(list(pixel_values[i : i + batch_size])))
                for i in range(0, len(pixel_values), batch_size)]  # fmt: skip
    centre = torch.cat(features).mean(dim=0)
    projector.linear_1 = CentredLinear(projector.linear_1, centre, keep_function)
    return centre


def fold_centre(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LLaVA state dict with any centred first layer folded into a plain one (bias - weight @ centre, no centre)."""
    out = dict(state)
    for key in [k for k in state if k.endswith(FIRST_LAYER + CENTRE)]:
        prefix = key[: -len(CENTRE)]
        centre = out.pop(key).float()
        bias = out[prefix + "bias"]
        out[prefix + "bias"] = (bias.float() - out[prefix + "weight"].float() @ centre).to(bias.dtype)
    return out

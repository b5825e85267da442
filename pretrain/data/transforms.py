"""Image transforms: OpenCLIP's training augmentation (as SuperClass used it) and the eval preprocessing.

All randomness comes from torch's global CPU generator (torchvision.transforms.v2 draws there), so the data
stream can make a sample's augmentation reproducible by seeding that generator just before transforming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torchvision.transforms import InterpolationMode, v2

from pretrain.runtime.errors import ConfigError

OPENAI_CLIP_MEAN: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)

_INTERPOLATION = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}


@dataclass
class TransformConfig:
    """Training augmentation; the defaults are the paper's (RandomResizedCrop 0.9-1.0, bicubic, no flip)."""

    # output side in pixels (square)
    image_size: int = 224
    # RandomResizedCrop area fraction range; the paper's 13B L/14 run uses (0.4, 1.0)
    crop_scale: tuple[float, float] = (0.9, 1.0)
    # RandomResizedCrop aspect-ratio range
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    # resampling filter for resizing
    interpolation: Literal["bicubic", "bilinear"] = "bicubic"
    # per-channel normalisation mean (RGB); None means OpenAI CLIP's
    mean: tuple[float, ...] | None = OPENAI_CLIP_MEAN
    # per-channel normalisation std (RGB); None means OpenAI CLIP's
    std: tuple[float, ...] | None = OPENAI_CLIP_STD
    # (brightness, contrast, saturation, hue) for ColorJitter, or None for no jitter; e.g. (0.32, 0.32, 0.32, 0.08)
    color_jitter: tuple[float, ...] | None = None
    # probability of applying the colour jitter when color_jitter is set
    color_jitter_prob: float = 0.8
    # probability of converting to (3-channel) grayscale
    gray_scale_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.image_size < 1:
            raise ConfigError(f"transform.image_size: expected a positive integer, got {self.image_size}")
        lo, hi = self.crop_scale
        if not 0.0 < lo <= hi <= 1.0:
            raise ConfigError(f"transform.crop_scale: expected 0 < min <= max <= 1, got {self.crop_scale}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"transform.ratio: expected 0 < min <= max, got {self.ratio}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) != 3:
                raise ConfigError(f"transform.{name}: expected 3 values (RGB), got {value}")
        if self.color_jitter is not None and len(self.color_jitter) != 4:
            raise ConfigError(f"transform.color_jitter: expected 4 values (b, c, s, h), got {self.color_jitter}")
        for name in ("color_jitter_prob", "gray_scale_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"transform.{name}: expected a probability in [0, 1], got {getattr(self, name)}")


def _to_normalized_tensor(mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> list[v2.Transform]:
    """PIL -> float CHW in [0, 1] -> (x - mean) / std."""
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean or OPENAI_CLIP_MEAN), std=list(std or OPENAI_CLIP_STD)),
    ]


def train_transform(cfg: TransformConfig) -> v2.Compose:
    """RandomResizedCrop -> optional colour jitter / grayscale (OpenCLIP aug_cfg) -> tensor -> normalize."""
    steps: list[v2.Transform] = [
        v2.RGB(),
        v2.RandomResizedCrop(
            cfg.image_size,
            scale=tuple(cfg.crop_scale),
            ratio=tuple(cfg.ratio),
            interpolation=_INTERPOLATION[cfg.interpolation],
            antialias=True,
        ),
    ]
    if cfg.color_jitter is not None and cfg.color_jitter_prob > 0:
        b, c, s, h = cfg.color_jitter
        jitter = v2.ColorJitter(brightness=b, contrast=c, saturation=s, hue=h)
        steps.append(v2.RandomApply([jitter], p=cfg.color_jitter_prob))
    if cfg.gray_scale_prob > 0:
        steps.append(v2.RandomGrayscale(p=cfg.gray_scale_prob))
    return v2.Compose(steps + _to_normalized_tensor(cfg.mean, cfg.std))


def eval_transform(
    image_size: int = 224,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    interpolation: str = "bicubic",
) -> v2.Compose:
    """Resize the shortest side -> center crop -> tensor -> normalize (OpenCLIP's 'shortest' eval mode)."""
    if interpolation not in _INTERPOLATION:
        raise ConfigError(f"interpolation: expected one of {sorted(_INTERPOLATION)}, got {interpolation!r}")
    steps: list[v2.Transform] = [
        v2.RGB(),
        v2.Resize(image_size, interpolation=_INTERPOLATION[interpolation], antialias=True),
        v2.CenterCrop(image_size),
    ]
    return v2.Compose(steps + _to_normalized_tensor(mean, std))

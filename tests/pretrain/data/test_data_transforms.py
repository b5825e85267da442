"""Train/eval transforms: shapes, normalisation, no flip, and randomness drawn only from torch's global RNG."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from pretrain.data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, TransformConfig, eval_transform, train_transform
from pretrain.runtime.config import from_dict, to_dict
from pretrain.runtime.errors import ConfigError


def _image(w: int = 80, h: int = 60) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_train_transform_shape_and_reproducible_under_torch_seed():
    cfg = TransformConfig(image_size=32, color_jitter=(0.32, 0.32, 0.32, 0.08), gray_scale_prob=0.2)
    transform = train_transform(cfg)
    torch.manual_seed(5)
    random.seed(1)
    a = transform(_image())
    torch.manual_seed(5)
    random.seed(2)  # python's RNG must not matter
    b = transform(_image())
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b)
    torch.manual_seed(6)
    assert not torch.equal(a, transform(_image()))


def test_default_is_the_paper_crop_without_flip():
    cfg = TransformConfig()
    assert cfg.image_size == 224 and cfg.crop_scale == (0.9, 1.0) and cfg.interpolation == "bicubic"
    steps = train_transform(cfg).transforms
    assert not any(isinstance(t, (v2.RandomHorizontalFlip, v2.RandomVerticalFlip)) for t in steps)
    crop = next(t for t in steps if isinstance(t, v2.RandomResizedCrop))
    assert crop.scale == (0.9, 1.0) and crop.interpolation == v2.InterpolationMode.BICUBIC
    assert not any(isinstance(t, (v2.RandomApply, v2.RandomGrayscale)) for t in steps)


def test_eval_transform_resizes_shortest_side_and_normalises():
    grey = Image.new("RGB", (90, 60), (128, 128, 128))
    out = eval_transform(24)(grey)
    assert out.shape == (3, 24, 24)
    expected = (128 / 255 - torch.tensor(OPENAI_CLIP_MEAN)) / torch.tensor(OPENAI_CLIP_STD)
    assert torch.allclose(out.mean(dim=(1, 2)), expected, atol=1e-4)
    assert eval_transform(16)(grey.convert("L")).shape == (3, 16, 16)  # grey input becomes RGB


def test_config_round_trip_and_validation():
    cfg = TransformConfig(image_size=64, crop_scale=(0.4, 1.0), color_jitter=(0.4, 0.4, 0.4, 0.1))
    assert from_dict(TransformConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="crop_scale"):
        TransformConfig(crop_scale=(0.9, 0.5))
    with pytest.raises(ConfigError, match="color_jitter"):
        TransformConfig(color_jitter=(0.1, 0.2))
    with pytest.raises(ConfigError, match="mean"):
        from_dict(TransformConfig, {"mean": [0.5, 0.5]})

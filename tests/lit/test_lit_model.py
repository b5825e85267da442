"""The LiT model: the locked tower stays bit-identical, gradients reach only the unlocked parts."""

from __future__ import annotations

import pytest
import torch
from lit_fixtures import tiny_encoder

from lit.model import LiTModel, TextTowerConfig, build_lit_model, image_groups, load_lit, save_lit
from lit.task import LiTTask
from pretrain.labels import LabelConfig, build_tokenizer
from pretrain.runtime.errors import ConfigError, UserError
from pretrain.runtime.optim import OptimConfig, build_optimizer

TEXT = TextTowerConfig(kind="scratch", preset="text_tiny")
LABELS = LabelConfig(context_length=16)


def _batch(n: int = 8) -> dict[str, torch.Tensor]:
    tok = build_tokenizer(LABELS)
    ids, lengths = tok([f"a photo of {i} red circles" for i in range(n)])
    return {"image": torch.randn(n, 3, 32, 32), "text": ids, "text_len": lengths}


def _model(tmp_path, unlocked: int = 0, **kw) -> LiTModel:
    torch.manual_seed(0)
    return build_lit_model(tiny_encoder(tmp_path / "enc"), TEXT, LABELS, unlocked_groups=unlocked, **kw)


def test_locked_tower_is_bit_identical_after_steps(tmp_path):
    task = LiTTask(_model(tmp_path), TEXT, LABELS)
    before = {k: v.clone() for k, v in task.model.backbone.state_dict().items()}
    proj_before = task.model.image_proj.weight.detach().clone()
    opt = build_optimizer(task, OptimConfig(lr=1e-2, warmup_steps=0, weight_decay=0.2))
    task.train()
    assert not task.model.backbone.training  # eval-mode norms in the locked tower
    for _ in range(3):
        task(_batch())["loss"].backward()
        opt.step()
        opt.zero_grad()
        task.after_step()
    for k, v in task.model.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(task.model.image_proj.weight, proj_before)


@pytest.mark.parametrize("unlocked", [0, 1])
def test_gradients_reach_only_unlocked_parts(tmp_path, unlocked):
    model = _model(tmp_path, unlocked)
    task = LiTTask(model, TEXT, LABELS)
    task.train()
    task(_batch())["loss"].backward()
    last = {f"backbone.blocks.{len(model.backbone.blocks) - 1}.", "backbone.norm."}
    for name, p in model.named_parameters():
        in_last = any(name.startswith(prefix) for prefix in last)
        expect = not name.startswith("backbone.") or (unlocked == 1 and in_last)
        has_grad = p.grad is not None and bool(p.grad.abs().sum() > 0)
        assert p.requires_grad == expect, name
        assert has_grad == expect, name


def test_groups_and_bad_unlock(tmp_path):
    model = _model(tmp_path)
    assert len(image_groups(model.backbone)) == 3  # [last block + norm], block 0, stem
    with pytest.raises(ConfigError):
        _model(tmp_path, unlocked=9)


def test_bf16_locked_tower(tmp_path):
    model = _model(tmp_path, image_dtype="bf16")
    assert next(model.backbone.parameters()).dtype == torch.bfloat16
    out = model.encode_image(torch.randn(2, 3, 32, 32))
    assert out.dtype == torch.float32 and out.shape == (2, 32)


def test_lit_dir_round_trip(tmp_path):
    model = _model(tmp_path).eval()
    out = save_lit(tmp_path / "lit", model, TEXT, LABELS)
    loaded = load_lit(out)
    batch = _batch(4)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(batch["image"]), loaded.encode_image(batch["image"]))
        assert torch.allclose(model.encode_text(batch["text"]), loaded.encode_text(batch["text"]))
    with pytest.raises(UserError):
        load_lit(tmp_path / "enc")  # an encoder artifact is not a LiT directory

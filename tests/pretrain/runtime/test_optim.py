import math

import torch
from torch import nn

from pretrain.runtime.optim import OptimConfig, build_optimizer, lr_at, no_weight_decay


def test_warmup_then_cosine():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, min_lr=0.0)
    assert lr_at(0, 110, cfg) == 0.1
    assert lr_at(9, 110, cfg) == 1.0
    assert lr_at(10, 110, cfg) == 1.0
    assert math.isclose(lr_at(60, 110, cfg), 0.5, abs_tol=1e-12)
    assert lr_at(110, 110, cfg) == 0.0


def test_linear_decay_as_clipcap():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, schedule="linear")
    assert lr_at(9, 110, cfg) == 1.0 and lr_at(60, 110, cfg) == 0.5 and lr_at(110, 110, cfg) == 0.0


def test_warmup_ratio_as_llava():
    # LLaVA: warmup_ratio 0.03 of the run, rounded up as HF's Trainer does; it overrides warmup_steps
    cfg = OptimConfig(lr=1.0, warmup_steps=500, warmup_ratio=0.03)
    assert lr_at(0, 100, cfg) == 1 / 3 and lr_at(2, 100, cfg) == 1.0
    assert math.isclose(lr_at(3 + 97 // 2, 100, cfg), 0.5 + 0.5 * math.cos(math.pi * (97 // 2) / 97), abs_tol=1e-12)


def test_no_decay_on_norms_biases_and_1d():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    named = dict(model.named_parameters())
    assert not no_weight_decay("0.weight", named["0.weight"])
    assert no_weight_decay("0.bias", named["0.bias"])
    assert no_weight_decay("blocks.0.norm1.weight", torch.zeros(4, 4))
    assert no_weight_decay("logit_scale", torch.zeros(()))
    assert no_weight_decay("cls_token", torch.zeros(1, 1, 4))
    opt = build_optimizer(model, OptimConfig(weight_decay=0.2))
    decays = sorted(g["weight_decay"] for g in opt.param_groups)
    assert decays == [0.0, 0.2]
    assert sum(len(g["params"]) for g in opt.param_groups) == 4


def test_recipe_lr_scales_multiply_by_prefix_and_win_over_the_tasks():
    model = nn.ModuleDict({"backbone": nn.Linear(4, 4), "head": nn.Linear(4, 8), "proj": nn.Linear(4, 4)})
    cfg = OptimConfig(lr_scales={"head": 10.0, "proj": 2.0})
    opt = build_optimizer(model, cfg, lr_scales={"proj": 0.1, "backbone": 0.5})  # the task's own
    scale = {n: g["lr_scale"] for g in opt.param_groups for n in g["param_names"]}
    assert scale["head.weight"] == 10.0 and scale["proj.weight"] == 2.0 and scale["backbone.weight"] == 0.5
    from pretrain.runtime.config import from_dict

    assert from_dict(OptimConfig, {"lr_scales": {"head": 10}}).lr_scales == {"head": 10.0}

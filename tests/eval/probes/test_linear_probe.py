"""Linear probes: LARS against a hand computation, MAE's schedule and head, the L-BFGS objective, and both
probes at ~100% on separable features and at chance on random labels."""

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from eval_fixtures import random_labels, separable

from eval.probes.linear_probe import (
    LarsConfig,
    LogRegConfig,
    build_head,
    fit_logreg,
    get_recipe,
    lars_optim,
    run_linear_probe,
    sweep_c,
)
from pretrain.runtime.errors import ConfigError
from pretrain.runtime.lars import LARS
from pretrain.runtime.optim import lr_at


def test_lars_matches_hand_computation():
    w = torch.tensor([[3.0, 4.0]], requires_grad=True)  # ||w|| = 5
    b = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = LARS([w, b], lr=0.5, weight_decay=0.1, momentum=0.9, trust_coefficient=0.001)
    g_w, g_b = torch.tensor([[0.6, 0.8]]), torch.tensor([0.5, 0.5])

    # step 1: d = g + 0.1 w = [0.9, 1.2] (norm 1.5); q = 0.001 * 5 / 1.5; mu = q d; w -= 0.5 mu
    w.grad, b.grad = g_w.clone(), g_b.clone()
    opt.step()
    d1 = torch.tensor([[0.9, 1.2]]) * (0.001 * 5 / 1.5)
    w1 = torch.tensor([[3.0, 4.0]]) - 0.5 * d1
    torch.testing.assert_close(w.detach(), w1, rtol=0, atol=1e-7)
    # the bias (1-D): no weight decay, no trust ratio: plain momentum SGD
    torch.testing.assert_close(b.detach(), torch.tensor([0.75, -2.25]), rtol=0, atol=1e-7)

    # step 2: momentum carries d1
    w.grad, b.grad = g_w.clone(), g_b.clone()
    opt.step()
    d2 = g_w + 0.1 * w1
    d2 = d2 * (0.001 * w1.norm() / d2.norm())
    torch.testing.assert_close(w.detach(), w1 - 0.5 * (0.9 * d1 + d2), rtol=0, atol=1e-7)
    torch.testing.assert_close(b.detach(), torch.tensor([0.75, -2.25]) - 0.5 * (0.9 * 0.5 + 0.5), rtol=0, atol=1e-7)


def test_lars_zero_weight_falls_back_to_sgd():
    w = torch.zeros(2, 2, requires_grad=True)
    opt = LARS([w], lr=0.1, momentum=0.9)
    w.grad = torch.ones(2, 2)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((2, 2), -0.1))


def mae_lr(epoch: float, peak: float, cfg: LarsConfig) -> float:
    """MAE's `adjust_learning_rate` (util/lr_sched.py) at a fractional epoch."""
    if epoch < cfg.warmup_epochs:
        return peak * epoch / cfg.warmup_epochs
    progress = (epoch - cfg.warmup_epochs) / (cfg.epochs - cfg.warmup_epochs)
    return cfg.min_lr + (peak - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def test_mae_schedule_and_head():
    cfg = LarsConfig()
    assert (cfg.epochs, cfg.warmup_epochs, cfg.batch_size, cfg.blr, cfg.weight_decay) == (90, 10, 16384, 0.1, 0.0)
    batch, per_epoch, optim = lars_optim(cfg, 1_281_167)  # ImageNet-1k train
    assert (batch, per_epoch, optim.name, optim.lr) == (16384, 78, "lars", pytest.approx(6.4))
    total = cfg.epochs * per_epoch
    for step in range(0, total, 7):  # MAE's per-iteration schedule; the warmup runs one step ahead (peak x (k+1)/W)
        shifted = step + 1 if step < cfg.warmup_epochs * per_epoch else step
        assert lr_at(step, total, optim) == pytest.approx(mae_lr(shifted / per_epoch, 6.4, cfg), abs=1e-9)
    torch.manual_seed(0)
    head = build_head(768, 1000, cfg.bn_eps, cfg.init_std)
    bn, linear = head
    assert not bn.affine and bn.eps == 1e-6
    assert linear.weight.std().item() == pytest.approx(0.01, rel=0.05)
    # MAE calls trunc_normal_(std=0.01) with the default cut at +-2 (absolute), i.e. effectively a normal
    assert linear.weight.abs().max().item() < 0.1
    assert torch.count_nonzero(linear.bias) == 0
    assert get_recipe("mae_in1k").lars == cfg
    with pytest.raises(ConfigError):
        get_recipe("nope")
    with pytest.raises(ConfigError):
        dataclasses.replace(get_recipe("clip_logreg"), live=True)


def test_logreg_solves_the_sklearn_objective():
    """At the optimum of mean CE + ||W||^2 / (2 C N): grad_W CE = -W / (C N) and grad_b CE = 0."""
    fs = random_labels(120, 3, dim=5, seed=3)
    x, y = fs.get("default").double(), fs.labels
    c = 0.5
    model = fit_logreg(x, y, 3, c, max_iter=500, tol=1e-12)
    w = model.weight.detach().clone().requires_grad_(True)
    b = model.bias.detach().clone().requires_grad_(True)
    F.cross_entropy(x @ w.T + b, y).backward()
    assert w.detach().abs().max() > 1e-2  # not the trivial solution
    torch.testing.assert_close(w.grad, -w.detach() / (c * len(x)), rtol=0, atol=1e-6)
    torch.testing.assert_close(b.grad, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-6)


def test_c_sweep_covers_the_grid_and_refines():
    fs = separable(120, 3, seed=0)
    cfg = LogRegConfig(refine_steps=2, max_iter=50)
    best, points, model = sweep_c(fs.get("default"), fs.labels, 3, cfg)
    exps = [p["log10_c"] for p in points]
    assert set(range(-6, 7)) <= set(exps)  # the coarse decades
    assert len(exps) == 13 + 4  # two refinement rounds, two new points each
    assert best == pytest.approx(10 ** max(points, key=lambda p: (p["holdout_top1"], -p["holdout_loss"]))["log10_c"])


@pytest.mark.parametrize("name", ["lars_cpu", "clip_logreg"])
def test_probes_separate_and_stay_at_chance(tmp_path, name):
    recipe = get_recipe(name)
    recipe = dataclasses.replace(recipe, features=dataclasses.replace(recipe.features, device="cpu"))
    if name == "clip_logreg":
        recipe.logreg.max_iter = 200
    good = run_linear_probe(
        recipe, separable(400, 4, seed=0), separable(200, 4, seed=1, offset=10**6), tmp_path / "good", verbose=False
    )
    assert good["top1"] >= 99.0 and good["top5"] == 100.0
    rand = run_linear_probe(
        recipe,
        random_labels(400, 4, seed=0),
        random_labels(400, 4, seed=1, offset=10**6),
        tmp_path / "rand",
        verbose=False,
    )
    assert abs(rand["top1"] - 25.0) < 10.0
    metrics = json.loads((tmp_path / "good" / "metrics.json").read_text())
    assert metrics["top1"] == good["top1"] and metrics["num_val"] == 200
    rows = (tmp_path / "good" / "predictions.jsonl").read_text().splitlines()
    assert len(rows) == 200 and {"index", "label", "pred", "top5"} <= set(json.loads(rows[0]))
    if name == "lars_cpu":  # trained on the shared Trainer: one metrics row per epoch, its checkpoints cleared
        rows = [json.loads(line) for line in (tmp_path / "good" / "train" / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == recipe.lars.epochs and rows[-1]["loss"] < 0.5 * rows[0]["loss"]
        assert not (tmp_path / "good" / "train" / "checkpoints").exists()

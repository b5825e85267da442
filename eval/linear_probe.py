"""Linear probes on a frozen encoder: MAE/MILAN's BN + linear head with LARS, and OpenAI CLIP's L-BFGS logistic
regression with a swept L2 strength.

usage: superclass eval linear-probe --model DIR --data ROOT --out RUN_DIR [--recipe mae_in1k] [live=true] [key=value]

MAE protocol (what the SuperClass authors ran, through MILAN's copy of MAE's `main_linprobe.py`): a fresh
`BatchNorm1d(D, affine=False, eps=1e-6)` + `Linear(D, C)` (weight trunc_normal std 0.01, bias 0) on the
frozen pooled features; LARS (momentum 0.9, trust coefficient 0.001, no weight decay or trust scaling on 1-D
parameters), lr = blr x batch / 256, linear warmup then half-cycle cosine per iteration, weight decay 0.
By default the head trains on CACHED features: the encoder is frozen and there is NO augmentation (each
image is seen through the eval transform every epoch). MAE trains with RandomResizedCrop + horizontal flip
through the encoder at every step; `live=true` does exactly that, at the cost of a forward pass
of the encoder per step. The normalisation constants are the encoder's own (OpenAI CLIP's), not ImageNet's.
A live run saves `RUN_DIR/live_state.pt` after every epoch (head, LARS momentum, epoch, the loader's and the
global RNG states; written atomically, read with `weights_only`); rerun the same command to resume at the last
finished epoch, exactly. The state is tied to the recipe, the encoder's hashes and the train images: another
run into the same RUN_DIR is refused until the file is deleted; it is removed once metrics.json is written.

CLIP protocol (`method=logreg`): multinomial logistic regression fit with full-batch L-BFGS on cached
features, L2 scaled as scikit-learn's `C` (objective mean CE + ||W||^2 / (2 C N), bias unpenalised). C is
chosen on a stratified held-out part of the train split: a coarse sweep over 10^-6..10^6 (one point per
decade), then `refine_steps` rounds of binary search around the best point (3 rounds = the paper's 96 log
steps over that range); the model is then refit on the whole train split with the chosen C.
Both report top-1 / top-5 on the val split, write metrics.json + predictions.jsonl and print a table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import InterpolationMode, v2

from pretrain.data.labelled import LabelledImages, stratified_holdout
from pretrain.encoder import Encoder
from pretrain.features import (
    FeatureConfig,
    FeatureSet,
    collate_skipping,
    encoder_identity,
    pool_tokens,
)
from pretrain.metrics import topk_accuracy
from pretrain.runtime.atomic import write_file_atomically, write_text_atomically
from pretrain.runtime.config import to_dict
from pretrain.runtime.distributed import pick_device
from pretrain.runtime.errors import ConfigError, UserError
from pretrain.runtime.jsonl import read_jsonl
from pretrain.runtime.precision import autocast, resolve_precision
from pretrain.runtime.recipes import RecipeBook
from pretrain.runtime.results import chance_levels, format_table, prediction_rows, write_metrics, write_predictions


class LARS(torch.optim.Optimizer):
    """LARS as in MAE's `util/lars.py` (from MoCo v3): no weight decay and no trust scaling for params with ndim <= 1.

    For a matrix p with gradient g: d = g + wd * p; d *= trust * ||p|| / ||d|| (when both norms are > 0);
    mu = momentum * mu + d; p -= lr * mu.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 0.0,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trust_coefficient: float = 0.001,
    ) -> None:
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, trust_coefficient=trust_coefficient)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for g in self.param_groups:
            for p in g["params"]:
                dp = p.grad
                if dp is None:
                    continue
                if p.ndim > 1:  # not a norm weight or a bias
                    dp = dp.add(p, alpha=g["weight_decay"])
                    param_norm, update_norm = torch.norm(p), torch.norm(dp)
                    one = torch.ones_like(param_norm)
                    q = torch.where(
                        param_norm > 0.0,
                        torch.where(update_norm > 0, g["trust_coefficient"] * param_norm / update_norm, one),
                        one,
                    )
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])
        return loss


@dataclass
class LarsConfig:
    """MAE's `main_linprobe.py` defaults (ViT-B: 90 epochs at effective batch 16384)."""

    epochs: int = 90  # passes over the train split
    warmup_epochs: int = 10  # linear warmup, then half-cycle cosine to min_lr (per iteration)
    batch_size: int = 16384  # effective batch (capped at the train size; drop_last as MAE)
    blr: float = 0.1  # base lr: lr = blr * batch_size / 256
    lr: float = 0.0  # absolute peak lr; 0 = from blr
    min_lr: float = 0.0  # cosine floor
    weight_decay: float = 0.0  # MAE: 0 ("following MoCo v1"); never applied to 1-D params
    momentum: float = 0.9
    trust_coefficient: float = 0.001
    bn_eps: float = 1e-6  # of the affine-free BatchNorm in front of the linear layer
    init_std: float = 0.01  # trunc_normal std of the linear weight (MoCo v3)
    live_crop_scale: tuple[float, float] = (0.08, 1.0)  # live mode: RandomResizedCrop scale (MAE: torchvision's)


@dataclass
class LogRegConfig:
    """OpenAI CLIP's logistic-regression probe (scikit-learn's LogisticRegression, here in torch)."""

    c: float = 0.0  # inverse L2 strength; 0 = sweep it on a held-out part of train
    c_min_exp: float = -6.0  # sweep range: C in 10^c_min_exp .. 10^c_max_exp, one coarse point per decade
    c_max_exp: float = 6.0
    refine_steps: int = 3  # binary-search rounds around the best C (each halves the log step)
    holdout_fraction: float = 0.2  # of every class of the train split, for choosing C
    max_iter: int = 1000  # L-BFGS iterations per fit (scikit-learn: max_iter=1000 in OpenAI's README)
    tol: float = 1e-6  # L-BFGS gradient tolerance (max abs) on the mean objective
    dtype: Literal["float32", "float64"] = "float32"


@dataclass
class LinearProbeRecipe:
    method: Literal["lars", "logreg"] = "lars"  # lars: MAE/MILAN BN + linear; logreg: OpenAI CLIP L-BFGS
    lars: LarsConfig = field(default_factory=LarsConfig)
    logreg: LogRegConfig = field(default_factory=LogRegConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    live: bool = False  # lars only: run the encoder every step on MAE's train augmentation (no train cache)
    seed: int = 0  # head init, batch order, held-out split, augmentation

    def __post_init__(self) -> None:
        if self.live and self.method != "lars":
            raise ConfigError("live: only the lars method trains through the encoder (method=lars)")


RECIPES: RecipeBook[LinearProbeRecipe] = RecipeBook("linear-probe recipe")
recipe = RECIPES.register
get_recipe = RECIPES.get
describe = RECIPES.describe


@recipe("mae_in1k")
def mae_in1k() -> LinearProbeRecipe:
    """The paper's ImageNet-1k linear probe (MAE/MILAN): LARS, batch 16384, blr 0.1, 90 epochs, warmup 10.

    superclass eval linear-probe --model ENC --data IMAGENET --out runs/lp --recipe mae_in1k [live=true]
    One GPU holds the cached features (1.28M x D); Table 1 reports B/16 80.2, L/16 85.0 (13B seen).
    """
    return LinearProbeRecipe()


@recipe("mae_in1k_large")
def mae_in1k_large() -> LinearProbeRecipe:
    """mae_in1k with 50 epochs, which MAE's FINETUNE.md says is sufficient for ViT-L/H."""
    return LinearProbeRecipe(lars=LarsConfig(epochs=50))


@recipe("milan_in1k")
def milan_in1k() -> LinearProbeRecipe:
    """MILAN's README example: blr 0.05, 100 epochs, batch 16384 (otherwise MAE's recipe)."""
    return LinearProbeRecipe(lars=LarsConfig(epochs=100, blr=0.05))


@recipe("lars_cpu")
def lars_cpu() -> LinearProbeRecipe:
    """A fast CPU version of the MAE protocol for small sets: batch 256, 30 epochs, the paper's peak lr 6.4.

    LARS steps are relative to the weight norm, so the peak lr (not lr/batch) sets the pace; keeping 6.4
    makes a few hundred steps enough. superclass eval linear-probe ... --recipe lars_cpu (seconds on a CPU).
    """
    return LinearProbeRecipe(
        lars=LarsConfig(epochs=30, warmup_epochs=3, batch_size=256, lr=6.4),
        features=FeatureConfig(batch_size=64, num_workers=2),
    )


@recipe("clip_logreg")
def clip_logreg() -> LinearProbeRecipe:
    """OpenAI CLIP's probe: L-BFGS logistic regression, C swept 1e-6..1e6 on held-out train, refit on all train."""
    return LinearProbeRecipe(method="logreg")


# --------------------------------------------------------------------------------------------- LARS protocol


@contextlib.contextmanager
def _few_threads_if_small(x: torch.Tensor) -> Iterator[None]:
    """Run tiny CPU problems on one thread: they are overhead-bound, and extra threads only add sync cost."""
    small = x.device.type == "cpu" and x.numel() < 1_000_000
    before = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


def mae_lr(epoch: float, peak: float, cfg: LarsConfig) -> float:
    """MAE's `adjust_learning_rate` at a fractional epoch: linear warmup from 0, then half-cycle cosine."""
    if epoch < cfg.warmup_epochs:
        return peak * epoch / cfg.warmup_epochs
    span = max(1e-12, cfg.epochs - cfg.warmup_epochs)
    return cfg.min_lr + (peak - cfg.min_lr) * 0.5 * (1.0 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / span))


def build_head(dim: int, num_classes: int, cfg: LarsConfig) -> nn.Sequential:
    """BatchNorm1d(affine=False) + Linear, initialised as MAE's linprobe."""
    linear = nn.Linear(dim, num_classes)
    nn.init.trunc_normal_(linear.weight, std=cfg.init_std)
    nn.init.zeros_(linear.bias)
    return nn.Sequential(nn.BatchNorm1d(dim, affine=False, eps=cfg.bn_eps), linear)


def _lars_setup(dim: int, n: int, num_classes: int, cfg: LarsConfig, seed: int, device: torch.device) -> tuple:
    if n < 2:
        raise UserError(f"linear probe: {n} train feature(s); need at least 2")
    batch = min(cfg.batch_size, n)
    peak = cfg.lr or cfg.blr * batch / 256
    torch.manual_seed(seed)
    head = build_head(dim, num_classes, cfg).to(device)
    opt = LARS(
        head.parameters(),
        lr=0.0,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        trust_coefficient=cfg.trust_coefficient,
    )
    return head, opt, batch, peak


def _lars_step(head: nn.Module, opt: LARS, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
    for g in opt.param_groups:
        g["lr"] = lr
    loss = F.cross_entropy(head(x), y)
    if not torch.isfinite(loss):
        raise UserError(f"linear probe: non-finite loss {loss.item()} (lower the lr)")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def train_lars_probe(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    cfg: LarsConfig,
    seed: int = 0,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> nn.Sequential:
    """The MAE head trained on cached features `x` [N, D] (on their device); returns it in eval mode."""
    head, opt, batch, peak = _lars_setup(x.shape[1], len(x), num_classes, cfg, seed, x.device)
    steps = len(x) // batch  # drop_last, as MAE's train loader
    gen = torch.Generator(device="cpu").manual_seed(seed)
    head.train()
    with _few_threads_if_small(x):
        _lars_epochs(head, opt, x, y, batch, peak, steps, gen, cfg, log)
    return head.eval()


def _lars_epochs(
    head: nn.Module,
    opt: LARS,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
    peak: float,
    steps: int,
    gen: torch.Generator,
    cfg: LarsConfig,
    log: Callable[[dict[str, Any]], None] | None,
) -> None:
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen).to(x.device)
        total = 0.0
        for it in range(steps):
            idx = order[it * batch : (it + 1) * batch]
            total += _lars_step(head, opt, x[idx], y[idx], mae_lr(epoch + it / steps, peak, cfg))
        if log is not None:
            log({"epoch": epoch + 1, "loss": total / steps, "lr": mae_lr(epoch + 1, peak, cfg)})


def mae_train_transform(encoder: Encoder, cfg: LarsConfig) -> v2.Compose:
    """MAE's linprobe train transform at the encoder's crop size and normalisation."""
    pre = encoder.config["preprocessing"]
    return v2.Compose(
        [
            v2.RGB(),
            v2.RandomResizedCrop(
                int(pre["crop"]),
                scale=tuple(cfg.live_crop_scale),
                interpolation=InterpolationMode.BICUBIC,
                antialias=True,
            ),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(pre["mean"]), std=list(pre["std"])),
        ]
    )


LIVE_STATE = "live_state.pt"  # the per-epoch resume state of a live run, in its RUN_DIR


def live_fingerprint(recipe: LinearProbeRecipe, encoder: Encoder, dataset: LabelledImages) -> str:
    """A digest of what a live run's epochs depend on: the recipe, the encoder's hashes and the train images."""
    identity = encoder_identity(encoder)
    what = {
        "recipe": to_dict(recipe),
        "encoder": [identity["config_hash"], identity["weights_hash"]],
        "train": dataset.signature(),
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def read_live_state(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The saved state of an interrupted live run at `path` (None when there is none); another run's is refused."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable state (torn, foreign) gets the same one-line advice
        raise UserError(f"{path}: unreadable resume state ({type(exc).__name__}); delete it to start over") from None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        raise UserError(
            f"{path}: state of an interrupted live=true run with another recipe, encoder or train data; "
            "delete it (or use another --out) to start over"
        )
    return state


def _save_live_state(path: Path, fingerprint: str, epoch: int, head: nn.Module, opt: LARS, gen: torch.Generator):
    state = {
        "fingerprint": fingerprint,
        "epoch": epoch,
        "head": head.state_dict(),
        "optimizer": opt.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),  # augmentation draws when the loader runs in-process
    }
    write_file_atomically(path, lambda tmp: torch.save(state, tmp))


def train_lars_probe_live(
    encoder: Encoder,
    dataset: LabelledImages,
    pool: str,
    cfg: LarsConfig,
    seed: int = 0,
    num_workers: int = 4,
    precision: str = "auto",
    log: Callable[[dict[str, Any]], None] | None = None,
    state_path: Path | None = None,
    fingerprint: str = "",
) -> tuple[nn.Sequential, int]:
    """The MAE head trained through the frozen encoder on augmented images; (head, images skipped per epoch).

    With `state_path`, the state after every epoch is saved there and a matching saved state is resumed from:
    every epoch's randomness (order, worker seeds, in-process augmentation) comes from saved generators, and
    workers are not kept across epochs (a persistent worker's RNG would carry over), so a resume is exact.
    """
    device = next(encoder.parameters()).device
    precision = resolve_precision(precision, device)
    head, opt, batch, peak = _lars_setup(encoder.num_features, len(dataset), len(dataset.classes), cfg, seed, device)
    gen = torch.Generator().manual_seed(seed)
    first = 0
    saved = read_live_state(state_path, fingerprint) if state_path is not None else None
    if saved is not None:
        head.load_state_dict(saved["head"])
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        first = int(saved["epoch"])
    loader = torch.utils.data.DataLoader(
        dataset.with_transform(mae_train_transform(encoder, cfg)),
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        generator=gen,
        num_workers=min(num_workers, os.cpu_count() or 1),
        collate_fn=collate_skipping,
        pin_memory=device.type == "cuda",
    )
    steps, skipped = len(loader), 0
    head.train()
    for epoch in range(first, cfg.epochs):
        total, skipped = 0.0, 0
        for it, b in enumerate(loader):
            skipped += len(b["skipped"])
            if b["images"] is None:
                continue
            with torch.no_grad(), autocast(precision, device):
                tokens = encoder.forward_features(b["images"].to(device, non_blocking=True))
                feats = pool_tokens(encoder, tokens, [pool])[pool].float()
            lr = mae_lr(epoch + it / steps, peak, cfg)
            total += _lars_step(head, opt, feats, b["labels"].to(device), lr)
        if state_path is not None:
            _save_live_state(state_path, fingerprint, epoch + 1, head, opt, gen)
        if log is not None:
            log({"epoch": epoch + 1, "loss": total / max(1, steps), "lr": mae_lr(epoch + 1, peak, cfg)})
    return head.eval(), skipped


# ------------------------------------------------------------------------------------------- L-BFGS protocol


def fit_logreg(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    c: float,
    max_iter: int = 1000,
    tol: float = 1e-6,
    init: nn.Linear | None = None,
) -> nn.Linear:
    """Multinomial logistic regression minimising mean CE + ||W||^2 / (2 c N) (scikit-learn's C) with L-BFGS."""
    model = nn.Linear(x.shape[1], num_classes, device=x.device, dtype=x.dtype)
    with torch.no_grad():
        if init is not None:
            model.weight.copy_(init.weight)
            model.bias.copy_(init.bias)
        else:
            model.weight.zero_()
            model.bias.zero_()
    lam = 1.0 / (c * len(x))
    opt = torch.optim.LBFGS(
        model.parameters(),
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y) + 0.5 * lam * model.weight.square().sum()
        loss.backward()
        return loss

    with _few_threads_if_small(x):
        opt.step(closure)
    return model.eval()


def _score(model: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(x)
        return (logits.argmax(1) == y).float().mean().item(), F.cross_entropy(logits, y).item()


def sweep_c(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, cfg: LogRegConfig, seed: int = 0
) -> tuple[float, list[dict[str, float]], nn.Linear | None]:
    """(best C, every point tried, its fitted model) on a stratified held-out part of (x, y).

    Best = highest held-out accuracy, then lowest held-out loss, then the smaller C.
    """
    keep, hold = stratified_holdout(y.cpu(), cfg.holdout_fraction, seed)
    if len(hold) == 0:
        raise UserError("logreg: no class has 2 train images, so no held-out part to choose C (set logreg.c)")
    xk, yk, xh, yh = x[keep.to(x.device)], y[keep.to(x.device)], x[hold.to(x.device)], y[hold.to(x.device)]
    tried: dict[float, tuple[float, float, nn.Linear]] = {}

    def evaluate(log_c: float) -> None:
        if log_c in tried or not cfg.c_min_exp - 1e-9 <= log_c <= cfg.c_max_exp + 1e-9:
            return
        nearest = min(tried, key=lambda e: abs(e - log_c), default=None)  # warm start from the closest C
        init = tried[nearest][2] if nearest is not None else None
        model = fit_logreg(xk, yk, num_classes, 10.0**log_c, cfg.max_iter, cfg.tol, init)
        tried[log_c] = (*_score(model, xh, yh), model)

    def best() -> float:
        return max(tried, key=lambda e: (tried[e][0], -tried[e][1], -e))

    n_coarse = int(round(cfg.c_max_exp - cfg.c_min_exp)) + 1
    for i in range(n_coarse):
        evaluate(cfg.c_min_exp + i)
    step = 1.0
    for _ in range(cfg.refine_steps):
        step /= 2
        centre = best()
        evaluate(centre - step)
        evaluate(centre + step)
    top = best()
    points = [
        {"log10_c": e, "holdout_top1": 100 * acc, "holdout_loss": loss} for e, (acc, loss, _) in sorted(tried.items())
    ]
    return 10.0**top, points, tried[top][2]


def train_logreg_probe(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, cfg: LogRegConfig, seed: int = 0
) -> tuple[nn.Linear, dict[str, Any]]:
    """(model fit on all of (x, y), {"c": ..., "sweep": [...]}); C swept unless `cfg.c` > 0."""
    x = x.to(getattr(torch, cfg.dtype))
    info: dict[str, Any] = {"c": cfg.c, "sweep": []}
    init = None
    if cfg.c <= 0:
        info["c"], info["sweep"], init = sweep_c(x, y, num_classes, cfg, seed)
    model = fit_logreg(x, y, num_classes, info["c"], cfg.max_iter, cfg.tol, init)
    return model, info


# -------------------------------------------------------------------------------------------------- runner


def run_linear_probe(
    recipe: LinearProbeRecipe,
    train: FeatureSet | None,
    val: FeatureSet,
    out_dir: str | Path | None = None,
    encoder: Encoder | None = None,
    train_dataset: LabelledImages | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Train the probe of `recipe` and score it on `val`; writes metrics.json + predictions.jsonl into `out_dir`.

    Cached mode needs `train` features; live mode needs `encoder` and `train_dataset` instead.
    """
    pool = recipe.features.pool
    device = pick_device(recipe.features.device)
    num_classes = val.num_classes
    start = time.perf_counter()
    extra: dict[str, Any] = {}
    model: nn.Module
    if recipe.live:
        if encoder is None or train_dataset is None:
            raise UserError("linear probe live mode needs the encoder and the train images")
        if list(train_dataset.classes) != val.classes:
            raise UserError("linear probe: the train and val class lists differ")
        model, skipped = _run_live(recipe, encoder, train_dataset, out_dir)
        train_labels = torch.tensor(train_dataset.labels)
        extra = {"train_skipped_per_epoch": skipped}
        dtype = torch.float32
    else:
        if train is None:
            raise UserError("linear probe: no train features")
        if train.classes != val.classes:
            raise UserError("linear probe: the train and val feature caches have different class lists")
        x, y = train.get(pool).to(device), train.labels.to(device)
        train_labels = train.labels
        if recipe.method == "lars":
            log = _train_log(out_dir, 0)
            model, dtype = train_lars_probe(x, y, num_classes, recipe.lars, recipe.seed, log), torch.float32
        else:
            model, extra = train_logreg_probe(x, y, num_classes, recipe.logreg, recipe.seed)
            dtype = getattr(torch, recipe.logreg.dtype)
    with torch.no_grad():
        logits = model.to(device)(val.get(pool).to(device, dtype)).float().cpu()
    acc = topk_accuracy(logits, val.labels)
    metrics = {
        "task": "linear_probe",
        "protocol": "mae_lars" + ("_live" if recipe.live else "") if recipe.method == "lars" else "clip_logreg",
        "top1": acc["top1"],
        "top5": acc["top5"],
        "chance": chance_levels(train_labels, val.labels, num_classes),
        "num_classes": num_classes,
        "num_train": len(train_labels),
        "num_val": len(val),
        "skipped": {"train": _skips(train), "val": _skips(val)},
        "encoder": val.meta.get("encoder", {}),
        "pool": pool,
        "seconds": round(time.perf_counter() - start, 2),
        "recipe": to_dict(recipe),
        **extra,
    }
    if out_dir is not None:
        write_metrics(out_dir, metrics)
        write_predictions(out_dir, prediction_rows(logits, val.labels, val.indices, val.classes))
        (Path(out_dir) / LIVE_STATE).unlink(missing_ok=True)  # finished: a rerun starts a fresh run
    if verbose:
        print(
            format_table(
                ["probe", "pool", "train", "val", "top-1", "top-5", "chance (majority)"],
                [
                    [
                        metrics["protocol"],
                        pool,
                        metrics["num_train"],
                        len(val),
                        acc["top1"],
                        acc["top5"],
                        metrics["chance"]["majority"],
                    ]
                ],
            )
        )
    return metrics


def _train_log(out_dir: str | Path | None, keep_epochs: int) -> Callable[[dict[str, Any]], None]:
    """An appender to `out_dir/train_log.jsonl` keeping the rows of the first `keep_epochs` epochs (a resume's)."""
    if out_dir is None:
        return lambda record: None
    path = Path(out_dir) / "train_log.jsonl"
    rows = [r for r in read_jsonl(path)[0] if int(r.get("epoch", 0)) <= keep_epochs] if keep_epochs else []
    write_text_atomically(path, "".join(json.dumps(r) + "\n" for r in rows))

    def log(record: dict[str, Any]) -> None:
        with path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")

    return log


def _run_live(
    recipe: LinearProbeRecipe, encoder: Encoder, dataset: LabelledImages, out_dir: str | Path | None
) -> tuple[nn.Sequential, int]:
    """The live LARS probe, resuming from `out_dir/live_state.pt` when an interrupted run of the same left one."""
    state_path, fingerprint = None, ""
    if out_dir is not None:
        state_path, fingerprint = Path(out_dir) / LIVE_STATE, live_fingerprint(recipe, encoder, dataset)
    saved = read_live_state(state_path, fingerprint) if state_path is not None else None
    log = _train_log(out_dir, int(saved["epoch"]) if saved is not None else 0)
    feat = recipe.features
    return train_lars_probe_live(
        encoder, dataset, feat.pool, recipe.lars, recipe.seed, feat.num_workers, feat.precision, log, state_path,
        fingerprint,
    )  # fmt: skip


def _skips(fs: FeatureSet | None) -> dict[str, int]:
    return dict(fs.meta.get("skipped", {})) if fs is not None else {}

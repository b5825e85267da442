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
Both train on the shared Trainer (`eval.probes.training`) in RUN_DIR/train: its metrics.jsonl logs loss and lr
per epoch, and a live run checkpoints after every epoch; rerun the same command to resume exactly. The
checkpoints are tied to the recipe, the encoder's hashes and the train images: another run into the same
RUN_DIR is refused until they are deleted; they are removed once metrics.json is written.

CLIP protocol (`method=logreg`): multinomial logistic regression fit with full-batch L-BFGS on cached
features, L2 scaled as scikit-learn's `C` (objective mean CE + ||W||^2 / (2 C N), bias unpenalised). C is
chosen on a stratified held-out part of the train split: a coarse sweep over 10^-6..10^6 (one point per
decade), then `refine_steps` rounds of binary search around the best point (3 rounds = the paper's 96 log
steps over that range); the model is then refit on the whole train split with the chosen C.
Both report top-1 / top-5 on the val split, write metrics.json + predictions.jsonl and print a table.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from eval.probes.training import (
    TRAIN_DIR,
    FeatureBatches,
    ProbeTask,
    build_head,
    few_threads_if_small,
    fingerprint,
    labelled_batches,
    mae_train_transform,
    release_train_dir,
    train_head,
)
from pretrain.data.labelled import LabelledImages, stratified_holdout
from pretrain.encoder import Encoder
from pretrain.features import FeatureConfig, FeatureSet, encoder_identity
from pretrain.metrics import topk_accuracy
from pretrain.runtime.config import to_dict
from pretrain.runtime.distributed import pick_device
from pretrain.runtime.errors import ConfigError, UserError
from pretrain.runtime.optim import OptimConfig
from pretrain.runtime.recipes import RecipeBook
from pretrain.runtime.results import chance_levels, format_table, prediction_rows, write_metrics, write_predictions


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
    """A fast CPU version of the MAE protocol for small sets: batch 64, 30 epochs, the paper's peak lr 6.4.

    LARS steps are relative to the weight norm, so the peak lr (not lr/batch) sets the pace; keeping 6.4
    makes a few hundred steps enough, and batch 64 gives them on a few hundred images (at batch 256, 400 images
    got 30 steps and a head still near its initial loss). superclass eval linear-probe ... --recipe lars_cpu
    (seconds on a CPU).
    """
    return LinearProbeRecipe(
        lars=LarsConfig(epochs=30, warmup_epochs=3, batch_size=64, lr=6.4),
        features=FeatureConfig(batch_size=64, num_workers=2),
    )


@recipe("clip_logreg")
def clip_logreg() -> LinearProbeRecipe:
    """OpenAI CLIP's probe: L-BFGS logistic regression, C swept 1e-6..1e6 on held-out train, refit on all train."""
    return LinearProbeRecipe(method="logreg")


# --------------------------------------------------------------------------------------------- LARS protocol


def lars_optim(cfg: LarsConfig, num_train: int) -> tuple[int, int, OptimConfig]:
    """(batch, steps per epoch, the Trainer's optimiser config) of MAE's protocol on `num_train` images.

    lr = blr x batch / 256 unless `lr` is set; warmup over `warmup_epochs`, then half-cycle cosine to `min_lr`.
    """
    if num_train < 2:
        raise UserError(f"linear probe: {num_train} train image(s); need at least 2")
    batch = min(cfg.batch_size, num_train)
    steps_per_epoch = num_train // batch  # drop_last, as MAE's train loader
    optim = OptimConfig(
        name="lars",
        lr=cfg.lr or cfg.blr * batch / 256,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        trust_coefficient=cfg.trust_coefficient,
        warmup_steps=cfg.warmup_epochs * steps_per_epoch,
        schedule="cosine",
        min_lr=cfg.min_lr,
    )
    return batch, steps_per_epoch, optim


def _head_task(recipe: LinearProbeRecipe, dim: int, num_classes: int, encoder: Encoder | None = None) -> ProbeTask:
    torch.manual_seed(recipe.seed)
    head = build_head(dim, num_classes, recipe.lars.bn_eps, recipe.lars.init_std)
    return ProbeTask(head, encoder, recipe.features.pool)


def train_lars_probe(
    recipe: LinearProbeRecipe, train: FeatureSet, device: torch.device, train_dir: Path
) -> nn.Sequential:
    """The MAE head trained on the Trainer over cached train features (on `device`); returns it in eval mode."""
    x, y = train.get(recipe.features.pool).to(device), train.labels.to(device)
    batch, steps_per_epoch, optim = lars_optim(recipe.lars, len(x))
    task = _head_task(recipe, x.shape[1], train.num_classes)
    batches = FeatureBatches(x, y, batch, recipe.seed)
    run = {"steps": recipe.lars.epochs * steps_per_epoch, "global_batch_size": batch, "precision": "fp32"}
    run.update(save_every=0, seed=recipe.seed)
    what = {"recipe": to_dict(recipe), "train": train.meta.get("dataset", {}), "encoder": train.meta.get("encoder", {})}
    digest = fingerprint({**what, "num_train": len(x)})
    with few_threads_if_small(x):
        head, _ = train_head(task, batches, steps_per_epoch, run, optim, device, train_dir, digest)
    return head


def train_lars_probe_live(
    recipe: LinearProbeRecipe, encoder: Encoder, dataset: LabelledImages, train_dir: Path
) -> tuple[nn.Sequential, dict[str, int]]:
    """The MAE head trained on the Trainer through the frozen encoder on augmented images; (head, images skipped).

    A checkpoint after every epoch; the augmentation draws are a function of (seed, stream position), so a resume
    is exact with any number of workers.
    """
    device = next(encoder.parameters()).device
    feat, cfg = recipe.features, recipe.lars
    batch, steps_per_epoch, optim = lars_optim(cfg, len(dataset))
    task = _head_task(recipe, encoder.num_features, len(dataset.classes), encoder)
    transform = mae_train_transform(encoder, cfg.live_crop_scale)
    batches = labelled_batches(dataset, transform, batch, recipe.seed, feat.num_workers, device.type == "cuda")
    run = {"steps": cfg.epochs * steps_per_epoch, "global_batch_size": batch, "precision": feat.precision}
    run.update(save_every=steps_per_epoch, seed=recipe.seed)
    identity = encoder_identity(encoder)
    what = {"recipe": to_dict(recipe), "encoder": [identity["config_hash"], identity["weights_hash"]]}
    digest = fingerprint({**what, "train": dataset.signature()})
    return train_head(task, batches, steps_per_epoch, run, optim, device, train_dir, digest)


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

    with few_threads_if_small(x):
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


@contextlib.contextmanager
def _train_dir(out_dir: str | Path | None) -> Iterator[Path]:
    """Where the head trains: `out_dir/train` (resumable), or a temporary folder when nothing is written."""
    if out_dir is not None:
        yield Path(out_dir) / TRAIN_DIR
        return
    with tempfile.TemporaryDirectory(prefix="probe-") as tmp:
        yield Path(tmp)


def _fit(
    recipe: LinearProbeRecipe,
    train: FeatureSet | None,
    val: FeatureSet,
    encoder: Encoder | None,
    train_dataset: LabelledImages | None,
    train_dir: Path,
) -> tuple[nn.Module, torch.dtype, torch.Tensor, dict[str, Any]]:
    """(fitted probe, the dtype it reads, the train labels, extra metrics) for the recipe's method and mode."""
    device = pick_device(recipe.features.device)
    if recipe.live:
        if encoder is None or train_dataset is None:
            raise UserError("linear probe live mode needs the encoder and the train images")
        if list(train_dataset.classes) != val.classes:
            raise UserError("linear probe: the train and val class lists differ")
        head, skipped = train_lars_probe_live(recipe, encoder, train_dataset, train_dir)
        return head, torch.float32, torch.tensor(train_dataset.labels), {"train_skipped": skipped}
    if train is None:
        raise UserError("linear probe: no train features")
    if train.classes != val.classes:
        raise UserError("linear probe: the train and val feature caches have different class lists")
    if recipe.method == "lars":
        return train_lars_probe(recipe, train, device, train_dir), torch.float32, train.labels, {}
    x, y = train.get(recipe.features.pool).to(device), train.labels.to(device)
    model, extra = train_logreg_probe(x, y, val.num_classes, recipe.logreg, recipe.seed)
    return model, getattr(torch, recipe.logreg.dtype), train.labels, extra


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

    Cached mode needs `train` features; live mode needs `encoder` and `train_dataset` instead. The LARS head
    trains on the shared Trainer in `out_dir/train` (its metrics.jsonl: loss and lr per epoch).
    """
    pool, num_classes = recipe.features.pool, val.num_classes
    device = pick_device(recipe.features.device)
    start = time.perf_counter()
    with _train_dir(out_dir) as train_dir:
        model, dtype, train_labels, extra = _fit(recipe, train, val, encoder, train_dataset, train_dir)
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
        release_train_dir(Path(out_dir) / TRAIN_DIR)  # finished: a rerun starts a fresh run
    if verbose:
        row = [metrics["protocol"], pool, metrics["num_train"], len(val), acc["top1"], acc["top5"]]
        headers = ["probe", "pool", "train", "val", "top-1", "top-5", "chance (majority)"]
        print(format_table(headers, [[*row, metrics["chance"]["majority"]]]))
    return metrics


def _skips(fs: FeatureSet | None) -> dict[str, int]:
    return dict(fs.meta.get("skipped", {})) if fs is not None else {}

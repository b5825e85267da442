"""k-shot linear classification on frozen features: a port of big_vision's `fewshot_lsr` evaluator.

usage: superclass eval fewshot --model DIR --data ROOT --out RUN_DIR [--val-split test] [key=value ...]

Per seed (default 3 seeds: 0, 1, 2) and shot count k (default 10), as big_vision does:
1. support set: `rng = numpy.random.default_rng(seed)`, a permutation of each class's TRAIN indices, the
   first k of it (so the 1-shot set is inside the 5-shot set of the same seed);
2. standardise every feature dimension with the support set's mean and std (+1e-5), test with the same;
3. append a constant bias feature of 100 ("large so it's almost unregularized");
4. targets 2 * one_hot - 1 (one-vs-rest, +-1);
5. closed-form ridge regression, W = (X^T X + l2 I)^-1 X^T Y when N >= D, else X^T (X X^T + l2 I)^-1 Y, through
   an eigendecomposition of the Gram matrix (float64 here; big_vision runs float32 on the host);
6. predict argmax(x_test W); top-1 on the whole test split.
The L2 strength is big_vision's single fixed 2^10 = 1024. It is NOT scaled by the number of samples: it is
added to the eigenvalues of the unnormalised X^T X, so it regularises relatively less as k x C grows.
Reported: mean +- (population) std over the seeds. `l2_sweep` (a deviation from big_vision, labelled so in
metrics.json) picks l2 per seed on a held-out part of the TRAIN split, with the support drawn from the rest;
the test split is never used for any choice. No support image is ever a test image: checked by item identity.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pretrain.data.labelled import stratified_holdout
from pretrain.features import FeatureConfig, FeatureSet
from pretrain.runtime.config import to_dict
from pretrain.runtime.errors import ConfigError, DataError, UserError
from pretrain.runtime.results import chance_levels, format_table, write_metrics, write_predictions

BIAS_CONSTANT = 100.0


@dataclass
class FewShotConfig:
    """big_vision `configs/common_fewshot.py` defaults, with the paper's 10 shots."""

    shots: tuple[int, ...] = (10,)  # k per class; big_vision logs (1, 5, 10, 25)
    seeds: int = 3  # seeds 0 .. seeds-1; reported as mean +- std
    l2_reg: float = 1024.0  # ridge strength (big_vision: 2.0**10)
    l2_sweep: tuple[float, ...] = ()  # non-empty: choose l2 among these on held-out train (a deviation)
    holdout_fraction: float = 0.2  # of every train class, for l2_sweep only
    features: FeatureConfig = field(default_factory=FeatureConfig)

    def __post_init__(self) -> None:
        if not self.shots or min(self.shots) < 1:
            raise ConfigError(f"shots: expected positive integers, got {list(self.shots)}")
        if self.seeds < 1:
            raise ConfigError(f"seeds: expected >= 1, got {self.seeds}")
        if self.l2_reg <= 0 or any(v <= 0 for v in self.l2_sweep):
            raise ConfigError("l2_reg / l2_sweep: expected positive values")


def fewshot_lsr() -> FewShotConfig:
    """big_vision fewshot_lsr, the paper's Table 2 protocol: 10 shots, 3 seeds, l2 2^10, pre-logit features.

    superclass eval fewshot --model ENC --data PETS --val-split test --out runs/fs_pets (seconds on a GPU
    once features are cached). Table 2, SuperClass 10-shot: ImageNet 77.2, Pets 94.6, Cars 92.6.
    """
    return FewShotConfig()


def fewshot_lsr_sweep() -> FewShotConfig:
    """fewshot_lsr with l2 chosen among 2^0..2^14 on held-out train per seed (a deviation from big_vision)."""
    return FewShotConfig(l2_sweep=tuple(2.0**e for e in range(0, 16, 2)))


RECIPES: dict[str, Callable[[], FewShotConfig]] = {"fewshot_lsr": fewshot_lsr, "fewshot_lsr_sweep": fewshot_lsr_sweep}


def get_recipe(name: str) -> FewShotConfig:
    if name not in RECIPES:
        raise ConfigError(f"unknown fewshot recipe '{name}' (known: {', '.join(sorted(RECIPES))})")
    return RECIPES[name]()


def class_permutations(labels: np.ndarray, num_classes: int, seed: int, pool: np.ndarray | None = None) -> list:
    """big_vision's per-class permutations of the indices with each label (optionally only within `pool`)."""
    rng = np.random.default_rng(seed)
    allowed = np.ones(len(labels), dtype=bool)
    if pool is not None:
        allowed[:] = False
        allowed[pool] = True
    return [rng.permutation(np.where((labels == c) & allowed)[0]) for c in range(num_classes)]


def sample_support(labels: np.ndarray | torch.Tensor, shots: int, seed: int, num_classes: int) -> np.ndarray:
    """Indices of `shots` examples per class (fewer only where a class has fewer), deterministic per seed."""
    perms = class_permutations(np.asarray(labels), num_classes, seed)
    return np.concatenate([p[:shots] for p in perms]).astype(np.int64)


@dataclass
class RidgeCache:
    """The eigendecomposition of the support Gram matrix: any l2 then costs one small product."""

    mean: torch.Tensor
    std: torch.Tensor
    lhs: torch.Tensor
    rhs: torch.Tensor
    eigs: torch.Tensor

    def weights(self, l2: float) -> torch.Tensor:
        """W [D+1, C] for ridge strength `l2`."""
        return (self.lhs / (self.eigs + l2)[None, :]) @ self.rhs

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Standardise with the support statistics and append the bias feature."""
        x = (x.to(torch.float64) - self.mean) / self.std
        return torch.cat([x, torch.full((len(x), 1), BIAS_CONSTANT, dtype=x.dtype)], dim=1)

    def predict(self, x: torch.Tensor, l2: float) -> torch.Tensor:
        return (self.prepare(x) @ self.weights(l2)).argmax(dim=1)


def ridge_precompute(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> RidgeCache:
    """big_vision's `_precompute_cache` in float64 torch (CPU)."""
    x = x.to(torch.float64).cpu()
    mean = x.mean(dim=0, keepdim=True)
    std = x.std(dim=0, keepdim=True, unbiased=False) + 1e-5  # jnp.std: population std
    xs = torch.cat([(x - mean) / std, torch.full((len(x), 1), BIAS_CONSTANT, dtype=x.dtype)], dim=1)
    targets = 2.0 * torch.nn.functional.one_hot(y.cpu().long(), num_classes).to(torch.float64) - 1.0
    n, d = xs.shape
    if n >= d:
        eigs, q = torch.linalg.eigh(xs.T @ xs)
        rhs, lhs = q.T @ (xs.T @ targets), q
    else:
        eigs, q = torch.linalg.eigh(xs @ xs.T)
        rhs, lhs = q.T @ targets, xs.T @ q
    return RidgeCache(mean, std, lhs, rhs, eigs)


def _check_no_leak(train: FeatureSet, support: np.ndarray, test: FeatureSet) -> None:
    """Raise if any support image is also a test image (same file or same pixels)."""
    shared = np.intersect1d(train.keys.numpy()[support], test.keys.numpy())
    if len(shared):
        raise DataError(f"fewshot: {len(shared)} support image(s) are also in the test split; the splits overlap")


def _one_seed(cfg: FewShotConfig, train: FeatureSet, test: FeatureSet, shots: int, seed: int) -> dict[str, Any]:
    pool, num_classes = cfg.features.pool, train.num_classes
    labels = train.labels.numpy()
    x_train, x_test = train.get(pool), test.get(pool)
    l2 = cfg.l2_reg
    if cfg.l2_sweep:
        keep, hold = stratified_holdout(train.labels, cfg.holdout_fraction, seed)
        perms = class_permutations(labels, num_classes, seed, pool=keep.numpy())
        support = np.concatenate([p[:shots] for p in perms]).astype(np.int64)
        assert not np.intersect1d(support, hold.numpy()).size  # the held-out part never feeds the support
        cache = ridge_precompute(x_train[support], train.labels[support], num_classes)
        held_out = x_train[hold]
        scores = {v: (cache.predict(held_out, v) == train.labels[hold]).double().mean().item() for v in cfg.l2_sweep}
        l2 = max(cfg.l2_sweep, key=lambda v: (scores[v], v))  # ties: the stronger l2
    else:
        support = sample_support(labels, shots, seed, num_classes)
        cache = ridge_precompute(x_train[support], train.labels[support], num_classes)
    _check_no_leak(train, support, test)
    preds = cache.predict(x_test, l2)
    return {
        "seed": seed,
        "top1": 100.0 * (preds == test.labels).double().mean().item(),
        "l2": l2,
        "support_size": len(support),
        "preds": preds,
    }


def run_fewshot(
    cfg: FewShotConfig, train: FeatureSet, test: FeatureSet, out_dir: str | Path | None = None, verbose: bool = True
) -> dict[str, Any]:
    """k-shot top-1 on `test` for every k in cfg.shots, mean +- std over cfg.seeds; writes metrics + predictions."""
    if train.classes != test.classes:
        raise UserError("fewshot: the train and test feature caches have different class lists")
    start = time.perf_counter()
    num_classes = train.num_classes
    counts = np.bincount(train.labels.numpy(), minlength=num_classes)
    results, rows = {}, []
    for shots in cfg.shots:
        runs = [_one_seed(cfg, train, test, shots, seed) for seed in range(cfg.seeds)]
        accs = np.array([r["top1"] for r in runs])
        results[str(shots)] = {
            "mean": float(accs.mean()),
            "std": float(accs.std()),
            "per_seed": [r["top1"] for r in runs],
            "l2": [r["l2"] for r in runs],
            "support_size": [r["support_size"] for r in runs],
            "classes_short_of_shots": int((counts < shots).sum()),
        }
        for r in runs:
            rows += [
                {"shots": shots, "seed": r["seed"], "index": int(i), "label": int(y), "pred": int(p)}
                for i, y, p in zip(test.indices, test.labels, r["preds"])
            ]
    main = str(10 if 10 in cfg.shots else cfg.shots[0])
    metrics = {
        "task": "fewshot",
        "protocol": "big_vision_fewshot_lsr" + ("+l2_sweep_on_heldout_train" if cfg.l2_sweep else ""),
        "shots": int(main),
        "top1": results[main]["mean"],
        "top1_std": results[main]["std"],
        "results": results,
        "chance": chance_levels(train.labels, test.labels, num_classes),
        "num_classes": num_classes,
        "num_train": len(train),
        "num_test": len(test),
        "skipped": {"train": dict(train.meta.get("skipped", {})), "test": dict(test.meta.get("skipped", {}))},
        "encoder": test.meta.get("encoder", {}),
        "pool": cfg.features.pool,
        "seconds": round(time.perf_counter() - start, 2),
        "config": to_dict(cfg),
    }
    if out_dir is not None:
        write_metrics(out_dir, metrics)
        write_predictions(out_dir, rows)
    if verbose:
        table = [
            [
                f"{k}-shot",
                cfg.features.pool,
                len(v["per_seed"]),
                f"{v['mean']:.2f} ± {v['std']:.2f}",
                metrics["chance"]["uniform"],
            ]
            for k, v in results.items()
        ]
        print(format_table(["few-shot", "pool", "seeds", "top-1", "chance (uniform)"], table))
    return metrics

"""`probe_encoder`: both frozen probes on a small labelled task in one call (what `superclass demo` reports)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from eval.fewshot import FewShotConfig, run_fewshot
from eval.linear_probe import LinearProbeRecipe, LogRegConfig, run_linear_probe
from pretrain.data.labelled import LabelledImages, from_images, load_split
from pretrain.encoder import Encoder, load_encoder
from pretrain.features import FeatureConfig, compute_features
from pretrain.runtime.errors import DataError

# (images, labels) or (images, labels, class_names), a folder / list path, or a dataset
DataSpec = tuple | str | Path | LabelledImages


def _as_dataset(data: DataSpec, split: str, classes: Sequence[str] | None) -> LabelledImages:
    if isinstance(data, LabelledImages):
        return data
    if isinstance(data, (str, Path)):
        return load_split(data, split)
    images, labels, *rest = data
    if not all(isinstance(im, Image.Image) for im in images):
        raise DataError(f"{split} data: expected PIL images")
    return from_images(images, labels, rest[0] if rest else classes, split=split)


def probe_encoder(
    encoder_dir: str | Path | Encoder,
    train_data: DataSpec,
    val_data: DataSpec | None = None,
    shots: int = 10,
    seeds: int = 3,
    pool: str = "default",
    device: str = "cpu",
    batch_size: int = 64,
    num_workers: int = 0,
    logreg: LogRegConfig | None = None,
    out_dir: str | Path | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Linear-probe (L-BFGS logistic regression, C swept on held-out train) and k-shot top-1 of an encoder.

    `train_data` / `val_data`: (PIL images, labels[, class names]) or a dataset folder / list (`val_data`
    None = the `val` split of the `train_data` folder). All accuracies are percentages; `chance` is the
    uniform guess (100 / classes), `chance_majority` always answers the most frequent train class.
    With `out_dir`, each probe writes its metrics.json and predictions there (linear_probe/, fewshot/).
    """
    if val_data is None:
        if not isinstance(train_data, (str, Path)):
            raise DataError("probe_encoder: val_data is required unless train_data is a dataset folder")
        val_data = train_data
    if isinstance(train_data, tuple) and len(train_data) == 2 and isinstance(val_data, tuple):
        n = max([*train_data[1], *val_data[1]], default=-1) + 1
        classes: list[str] | None = [str(i) for i in range(n)]
    else:
        classes = None
    train = _as_dataset(train_data, "train", classes)
    val = _as_dataset(val_data, "val", train.classes)
    if list(val.classes) != list(train.classes):
        raise DataError("probe_encoder: train and val have different class lists")
    encoder = encoder_dir if isinstance(encoder_dir, Encoder) else load_encoder(encoder_dir, device)
    feats = [compute_features(encoder, d, [pool], batch_size, num_workers, device) for d in (train, val)]
    feature_cfg = FeatureConfig(pool=pool, device=device, batch_size=batch_size, num_workers=num_workers)
    recipe = LinearProbeRecipe(method="logreg", logreg=logreg or LogRegConfig(), features=feature_cfg)
    sub = (lambda name: Path(out_dir) / name) if out_dir is not None else (lambda name: None)
    lp = run_linear_probe(recipe, feats[0], feats[1], sub("linear_probe"), verbose=verbose)
    fs_cfg = FewShotConfig(shots=(shots,), seeds=seeds, features=feature_cfg)
    fs = run_fewshot(fs_cfg, feats[0], feats[1], sub("fewshot"), verbose=verbose)
    return {
        "linear_probe_top1": lp["top1"],
        "linear_probe_top5": lp["top5"],
        "linear_probe_c": lp["c"],
        "fewshot_top1": fs["top1"],
        "fewshot_top1_std": fs["top1_std"],
        "fewshot_shots": shots,
        "chance": lp["chance"]["uniform"],
        "chance_majority": lp["chance"]["majority"],
        "num_classes": lp["num_classes"],
        "num_train": len(feats[0]),
        "num_val": len(feats[1]),
        "skipped": {"train": feats[0].meta["skipped"], "val": feats[1].meta["skipped"]},
    }

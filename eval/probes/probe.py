"""The frozen probes' inputs and entry points.

- `ProbeSource`: where a probe's train and val features come from (an encoder over a labelled dataset, computed
  into and reused from a cache, or finished feature caches); `linear_probe` / `fewshot` run a recipe on one.
  `superclass eval linear-probe|fewshot` and the `linear_probe` / `fewshot` evaluators both call these.
- `probe_encoder`: both frozen probes on a small labelled task in one call (what `superclass demo` reports).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from eval.probes.fewshot import FewShotConfig, run_fewshot
from eval.probes.linear_probe import LinearProbeRecipe, LogRegConfig, run_linear_probe
from pretrain.data.labelled import LabelledImages, from_images, load_split
from pretrain.encoder import Encoder, load_encoder
from pretrain.features import FeatureConfig, FeatureSet, compute_features, extract_features, read_feature_set
from pretrain.runtime.distributed import pick_device
from pretrain.runtime.errors import DataError, UserError


def load_probe_encoder(model: str | Path | None, device: str) -> Encoder:
    """The encoder artifact `model` on `device` (`auto`: CUDA when there is one)."""
    if not model:
        raise UserError("--model (the encoder artifact) is required unless both feature caches are given")
    return load_encoder(model, pick_device(device))


@dataclass
class ProbeSource:
    """A probe's data: `model` over the labelled dataset `data` (features cached under `cache`, default
    `out/features/<split>`, and reused), or the finished caches `train_features` / `val_features`."""

    out: Path
    model: str | None = None
    data: str | None = None
    train_split: str = "train"  # the split the classes come from, and the one the probe trains on
    val_split: str = "val"  # the split scored
    train_features: str | None = None
    val_features: str | None = None
    cache: Path | None = None
    _datasets: dict[str, LabelledImages] = field(default_factory=dict, repr=False)

    @classmethod
    def from_args(cls, args: Any) -> ProbeSource:
        """From a command's parsed flags (`superclass eval linear-probe|fewshot`)."""
        return cls(
            Path(args.out), args.model, args.data, args.train_split, args.val_split,
            args.train_features, args.val_features, args.cache,
        )  # fmt: skip

    def dataset(self, split: str) -> LabelledImages:
        """The `split` of `data`, listed once."""
        if not self.data:
            raise UserError(f"--data is required to compute the {split} features (or pass a feature cache)")
        if split not in self._datasets:
            self._datasets[split] = load_split(self.data, split, self.train_split)
        return self._datasets[split]

    def split_features(self, split: str, given: str | None, fcfg: FeatureConfig, encoder: Callable) -> FeatureSet:
        """The FeatureSet of `split`: the given cache, or computed into (and reused from) the cache folder."""
        if given:
            return read_feature_set(given)
        cache = (self.cache or self.out / "features") / split
        return extract_features(
            encoder(), self.dataset(split), cache, [fcfg.pool], fcfg.batch_size, fcfg.num_workers, None,
            fcfg.precision, fcfg.chunk_size, decode=fcfg.decode,
        )  # fmt: skip

    def inputs(self, fcfg: FeatureConfig, need_train: bool = True) -> tuple[FeatureSet | None, FeatureSet, Callable]:
        """(train features or None, val features, encoder getter); the encoder is loaded only when needed."""
        loaded: list[Encoder] = []

        def encoder() -> Encoder:
            if not loaded:
                loaded.append(load_probe_encoder(self.model, fcfg.device))
            return loaded[0]

        if self.data:  # a missing or malformed dataset fails fast, before the encoder is loaded
            self.dataset(self.train_split)
        train = self.split_features(self.train_split, self.train_features, fcfg, encoder) if need_train else None
        val = self.split_features(self.val_split, self.val_features, fcfg, encoder)
        if train is not None:
            _check_pair(train, val, self.train_split, self.val_split)
        return train, val, encoder


def _check_pair(train: FeatureSet, val: FeatureSet, train_split: str, val_split: str) -> None:
    """Refuse train and val features from two encoders, or of the same images."""
    a, b = train.meta["encoder"], val.meta["encoder"]
    if (a["config_hash"], a["weights_hash"]) != (b["config_hash"], b["weights_hash"]):
        raise UserError("the train and val features come from different encoders")
    if train.meta["dataset"]["signature"] == val.meta["dataset"]["signature"]:
        t, v = train_split, val_split
        raise UserError(
            f"train and {v} are the same images ({val.meta['dataset']['source']}); give a folder with "
            f"{t}/ and {v}/ (or {t}.jsonl and {v}.jsonl)"
        )


def linear_probe(source: ProbeSource, recipe: LinearProbeRecipe, verbose: bool = True) -> dict[str, Any]:
    """The linear probe of `recipe` on `source` (live mode reads the train images), written into `source.out`."""
    train, val, encoder = source.inputs(recipe.features, need_train=not recipe.live)
    if not recipe.live:
        return run_linear_probe(recipe, train, val, source.out, verbose=verbose)
    images = source.dataset(source.train_split)
    return run_linear_probe(recipe, None, val, source.out, encoder(), images, verbose)


def fewshot(source: ProbeSource, cfg: FewShotConfig, verbose: bool = True) -> dict[str, Any]:
    """The few-shot probe of `cfg` on `source`, written into `source.out`."""
    train, val, _ = source.inputs(cfg.features)
    return run_fewshot(cfg, train, val, source.out, verbose=verbose)


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

"""lit's evaluators on the one interface (`pretrain.runtime.evaluators`): zero-shot classification and retrieval,
both reading a LiT model directory (`<run>/lit`); the same code as `superclass lit zeroshot|retrieval`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pretrain.runtime.evaluators import Evaluator, register


@dataclass
class ZeroShotSettings:
    data: str = ""  # dataset root (class folders or split list files)
    split: str = "val"
    classnames: str = ""  # "" = the folder names (or a .txt/.json file of names)
    templates: str = "openai"  # openai | simple | a file of templates with {}
    train_split: str = ""  # the split the class list comes from ("" = the evaluated one)
    batch_size: int = 64
    device: str = "cpu"
    workers: int = 0


@register
class ZeroShotEvaluator(Evaluator):
    name = "zeroshot"
    consumes = "lit"
    Config = ZeroShotSettings
    headline = "top1"
    description = "zero-shot classification with prompt ensembles: top-1 / top-5"

    def run(self, model: str | Path, out_dir: str | Path) -> dict[str, Any]:
        from lit.zeroshot import evaluate_zeroshot

        c = self.config
        return evaluate_zeroshot(
            model, c.data, out_dir, c.split, c.classnames or None, c.templates, c.batch_size, c.device,
            train_split=c.train_split or None, num_workers=c.workers,
        )  # fmt: skip


@dataclass
class RetrievalSettings:
    karpathy: str = ""  # dataset_coco.json / dataset_flickr30k.json
    images: str = ""  # the image root its filepath/filename are relative to
    split: str = "test"
    batch_size: int = 64
    device: str = "cpu"
    workers: int = 0


@register
class RetrievalEvaluator(Evaluator):
    name = "retrieval"
    consumes = "lit"
    Config = RetrievalSettings
    headline = "image_retrieval_recall@1"
    description = "image-text retrieval on a Karpathy split: image and text recall@1/5/10"

    def run(self, model: str | Path, out_dir: str | Path) -> dict[str, Any]:
        from lit.retrieval import evaluate_retrieval

        c = self.config
        return evaluate_retrieval(model, c.karpathy, c.images, out_dir, c.split, c.batch_size, c.device,
                                  num_workers=c.workers)  # fmt: skip

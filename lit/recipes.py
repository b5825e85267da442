"""Typed, named LiT recipes: the SuperClass paper's LiT stage and a tiny CPU one.

Print one as YAML with `superclass lit recipe NAME`, edit it, and pass it back with `--config`; `key=value`
overrides go on top (the encoder artifact is a field: `encoder=runs/superclass_b16/encoder`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lit.model import TextTowerConfig
from pretrain.data.stream import DataConfig
from pretrain.data.transforms import TransformConfig
from pretrain.labels import LabelConfig
from pretrain.runtime.loop import RunConfig
from pretrain.runtime.optim import OptimConfig
from pretrain.runtime.recipes import RecipeBook
from pretrain.runtime.train_evals import EvalEntry


@dataclass
class LiTRecipe:
    encoder: str = ""  # the encoder artifact directory (pretrain's run_dir/encoder); required
    unlocked_groups: int = 0  # 0: only the new image projection trains; N: also the last N image groups
    image_dtype: Literal["fp32", "bf16"] = "fp32"  # storage dtype of the locked image tower
    augment: bool = True  # false: the locked tower sees the encoder's eval transform (resize + centre crop) only
    # run the fully locked tower once over the training data (list or synthetic), cache its pooled features and
    # train on them; needs unlocked_groups=0 and augment=false (see lit/data.py)
    cache_features: bool = False
    cache_dir: str = ""  # feature caches live in CACHE_DIR/<key>/ ("" = <run.out_dir>/feature_cache)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)  # the text tokenizer (hf towers use their own)
    data: DataConfig = field(default_factory=DataConfig)  # same pipeline as pretraining (image size: the encoder's)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=lambda: RunConfig(out_dir="runs/lit"))


RECIPES: RecipeBook[LiTRecipe] = RecipeBook("recipe")
recipe = RECIPES.register
get_recipe = RECIPES.get
describe = RECIPES.describe


@recipe("lit_paper")
def lit_paper() -> LiTRecipe:
    """The paper's LiT stage: random-init 12-layer text tower, only the projection unlocked, 16k batch, 512M samples.

    torchrun --nproc-per-node 8 -m lit train --recipe lit_paper encoder=runs/superclass_b16/encoder \
        data.train='/data/{00000..12799}.tar'   (8x A100/H100; B/16 gives ZS ~61.7 on ImageNet, Table 9)
    Use text.preset=text_l for an L/16 encoder (embed_dim 768, as the official lit_vit_l16 config).
    """
    return LiTRecipe(
        unlocked_groups=0,
        text=TextTowerConfig(kind="scratch", preset="text_b"),
        data=DataConfig(kind="shards", num_workers=8),
        optim=OptimConfig(lr=5e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2, warmup_steps=500),
        run=RunConfig(
            out_dir="runs/lit_paper",
            total_samples=512_000_000,
            global_batch_size=16384,
            grad_checkpointing=True,
            save_every=1000,
            log_every=50,
        ),
    )


@recipe("lit_tiny")
def lit_tiny() -> LiTRecipe:
    """Tiny LiT on synthetic captions against a tiny encoder, CPU, well under a minute: the loss falls.

    At each checkpoint it scores zero-shot colour classification and image-text retrieval on held-out synthetic
    images (`run.evals=[]`: off).

    superclass lit train --recipe lit_tiny encoder=runs/tiny_sc/encoder run.out_dir=runs/lit_tiny
    """
    return LiTRecipe(
        text=TextTowerConfig(kind="scratch", preset="text_tiny"),
        data=DataConfig(
            kind="synthetic",
            synthetic_samples=4096,
            synthetic_image_size=40,
            num_workers=1,
            pin_memory=False,
            transform=TransformConfig(image_size=32, crop_scale=(0.8, 1.0)),
        ),
        optim=OptimConfig(lr=2e-3, warmup_steps=20, weight_decay=0.05),
        run=RunConfig(
            out_dir="runs/lit_tiny",
            steps=300,
            global_batch_size=64,
            log_every=10,
            save_every=100,
            evals=[
                EvalEntry("zeroshot", settings={"data": "synthetic:colour", "split": "test"}),
                EvalEntry("retrieval", settings={"karpathy": "synthetic:100"}),
            ],
        ),
    )

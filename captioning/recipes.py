"""Typed, named ClipCap recipes. Print one with `superclass captioning recipe NAME`; `key=value` overrides on top."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from captioning.decode import DecodeConfig
from captioning.model import CaptionModelConfig
from pretrain.runtime.loop import RunConfig
from pretrain.runtime.optim import OptimConfig
from pretrain.runtime.recipes import RecipeBook
from pretrain.runtime.train_evals import EvalEntry


@dataclass
class CaptionDataConfig:
    # the path fields each kind reads: setting one the chosen kind ignores is a ConfigError (config.check_kind_paths)
    KIND_PATHS: ClassVar[dict[str, tuple[str, ...]]] = {"karpathy": ("karpathy",), "image_root": ("karpathy",)}
    kind: Literal["karpathy", "synthetic"] = "karpathy"  # COCO Karpathy split, or procedural synthetic captions
    karpathy: str = ""  # dataset_coco.json (its own `split` field: train + restval are trained on)
    image_root: str = ""  # directory holding `filepath/filename` (e.g. COCO root with train2014/, val2014/)
    cache_dir: str = ""  # encoder-feature cache; "" = <run.out_dir>/features
    feature_batch_size: int = 64  # images per encoder batch when caching features
    feature_workers: int = 4  # DataLoader workers decoding images for the encoder (0: in the main process)
    max_caption_tokens: int = 0  # 0 = ClipCap's min(mean + 10 std, max) over the training captions
    epochs: int = 10  # passes over the captions when run.steps and run.total_samples are 0
    synthetic_samples: int = 2000  # synthetic: training images (one caption each)
    synthetic_image_size: int = 40  # synthetic: rendered image side (the encoder's preprocess resizes)
    synthetic_seed: int = 0  # synthetic: dataset seed (held-out images use seed + 1)


@dataclass
class CaptionRecipe:
    encoder: str = ""  # the encoder artifact (pretrain's output); generate: "" = the captioner's own (checked)
    model: CaptionModelConfig = field(default_factory=CaptionModelConfig)
    data: CaptionDataConfig = field(default_factory=CaptionDataConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


RECIPES: RecipeBook[CaptionRecipe] = RecipeBook("recipe")
recipe = RECIPES.register
get_recipe = RECIPES.get
describe = RECIPES.describe


def _clipcap_optim() -> OptimConfig:
    """ClipCap's train(): transformers AdamW lr 2e-5 (wd 0, eps 1e-6), 5000 warmup steps, linear decay, no clipping."""
    return OptimConfig(lr=2e-5, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, warmup_steps=5000, schedule="linear")


@recipe("clipcap_coco")
def clipcap_coco() -> CaptionRecipe:
    """ClipCap transformer mapper (prefix 40, 8 layers) on a frozen GPT-2, COCO Karpathy, 10 epochs, batch 40.

    The SuperClass Table 3 setting (frozen encoder + frozen GPT-2, only the mapper trains); ClipCap's paper
    gives CIDEr 113.1 with RN50x4 CLIP, SuperClass reports 113.0 for L/16. One GPU:
    superclass captioning train --recipe clipcap_coco encoder=DIR data.karpathy=dataset_coco.json data.image_root=COCO
    """
    return CaptionRecipe(
        model=CaptionModelConfig(lm="gpt2", mapper="transformer", prefix_length=40, clip_length=40, num_layers=8),
        data=CaptionDataConfig(kind="karpathy", epochs=10),
        optim=_clipcap_optim(),
        run=RunConfig(out_dir="runs/clipcap_coco", global_batch_size=40, log_every=100, save_every=5000),
    )


@recipe("clipcap_coco_mlp")
def clipcap_coco_mlp() -> CaptionRecipe:
    """ClipCap MLP mapper (prefix 10) with GPT-2 fine-tuned, COCO Karpathy, 10 epochs, batch 40 (paper: CIDEr 108.4).

    superclass captioning train --recipe clipcap_coco_mlp encoder=DIR data.karpathy=dataset_coco.json \\
        data.image_root=COCO
    """
    r = clipcap_coco()
    r.model = CaptionModelConfig(lm="gpt2", mapper="mlp", prefix_length=10, freeze_lm=False)
    r.run.out_dir = "runs/clipcap_coco_mlp"
    return r


@recipe("clipcap_tiny")
def clipcap_tiny() -> CaptionRecipe:
    """Tiny ClipCap on synthetic captions, CPU, <1 min: an MLP mapper + a tiny GPT-2 trained from scratch.

    model.lm="" builds a tiny GPT-2-shaped LM and BPE tokenizer from the training captions (in run.out_dir/lm).
    At the end it captions the held-out synthetic val images and scores them (CIDEr; `run.evals=[]`: off).
    superclass captioning train --recipe clipcap_tiny encoder=runs/superclass_tiny/encoder
    """
    return CaptionRecipe(
        model=CaptionModelConfig(lm="", mapper="mlp", prefix_length=4, freeze_lm=False),
        data=CaptionDataConfig(
            kind="synthetic", synthetic_samples=1500, synthetic_image_size=40, epochs=0, feature_workers=0
        ),  # fmt: skip
        decode=DecodeConfig(beam=3, max_tokens=30, stop=".", batch_size=64),
        optim=OptimConfig(lr=2e-3, betas=(0.9, 0.98), weight_decay=0.0, warmup_steps=20, clip_grad_norm=1.0),
        run=RunConfig(
            out_dir="runs/clipcap_tiny",
            steps=300,
            global_batch_size=32,
            log_every=20,
            save_every=0,
            evals=[EvalEntry("caption", settings={"recipe": "clipcap_tiny", "split": "val"})],
        ),
    )

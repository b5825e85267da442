"""Typed, named LLaVA-1.5 recipes (`scripts/v1_5/*.sh` of the LLaVA repository) and the tiny CPU ones.

Print one with `superclass vlm recipe NAME`; `key=value` overrides on top. The LLaVA scripts are written for 13B;
for 7B only the LLM changes. Their global batch (per-device x GPUs x accumulation) is what the recipes keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pretrain.runtime.loop import RunConfig
from pretrain.runtime.optim import OptimConfig
from pretrain.runtime.recipes import RecipeBook
from pretrain.runtime.train_evals import EvalEntry
from vlm.lora import LoraSettings
from vlm.model_config import TINY_LLM, VLMModelConfig


@dataclass
class VLMDataConfig:
    # the path fields each kind reads: setting one the chosen kind ignores is a ConfigError (config.check_kind_paths)
    KIND_PATHS: ClassVar[dict[str, tuple[str, ...]]] = {"json": ("llava_json",), "image_folder": ("llava_json",)}
    kind: Literal["llava_json", "synthetic"] = "llava_json"  # LLaVA JSON + image folder, or procedural scenes
    json: str = ""  # LLaVA JSON (list) or JSONL: blip_laion_cc_sbu_558k.json / llava_v1_5_mix665k.json
    image_folder: str = ""  # root that the samples' `image` paths are relative to
    max_length: int = 2048  # tokens per sample (LLaVA's model_max_length); the image block is never split
    group_by_modality_length: bool = True  # batches of image or text-only samples, similar lengths (LLaVA)
    epochs: int = 1  # passes over the data when run.steps and run.total_samples are 0
    cache_samples: int = 0  # built samples kept in memory (ids + pixels): for small sets seen many epochs
    synthetic_samples: int = 2000  # synthetic: scenes written as LLaVA JSON + JPGs under run.out_dir/data
    synthetic_image_size: int = 40  # synthetic: rendered image side
    synthetic_seed: int = 0  # synthetic: dataset seed


@dataclass
class VLMRecipe:
    stage: int = 2  # 1: projector only (template plain); 2: projector + LLM (template vicuna_v1)
    init: str = ""  # stage 2: the stage-1 LLaVA directory (<run>/llava); "" = build from `model`
    projector: str = ""  # stage 2 built from `model`: start the projector from LLaVA's stage-1 mm_projector.bin
    model: VLMModelConfig = field(default_factory=VLMModelConfig)
    data: VLMDataConfig = field(default_factory=VLMDataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    projector_lr: float = 0.0  # stage 2: the projector's own lr (LLaVA's mm_projector_lr); 0 = optim.lr
    train_vision: bool = False  # also train the vision tower (LLaVA-1.5 keeps it frozen)
    # images whose mean tower feature the projector's first layer trains around (vlm.centred_projector; the model
    # and its export are unchanged); 0 = off, as in LLaVA. For towers whose tokens share a large offset.
    projector_centring: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def template(self) -> str:
        return "plain" if self.stage == 1 else "vicuna_v1"


RECIPES: RecipeBook[VLMRecipe] = RecipeBook("recipe")
recipe = RECIPES.register
get_recipe = RECIPES.get
describe = RECIPES.describe


def _llava_optim(lr: float) -> OptimConfig:
    """LLaVA-1.5 (HF Trainer): AdamW, wd 0, warmup_ratio 0.03, cosine, clip 1.0 (the Trainer's default)."""
    return OptimConfig(lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0, warmup_ratio=0.03,
                       schedule="cosine", clip_grad_norm=1.0)  # fmt: skip


@recipe("llava15_stage1")
def llava15_stage1() -> VLMRecipe:
    """Stage 1 (feature alignment): projector only on LCS-558K, lr 1e-3, batch 256, 1 epoch; about 3.5 h on 8xA100.

    torchrun --nproc-per-node 8 -m vlm train --recipe llava15_stage1 model.encoder=ENC \\
        data.json=LLaVA-Pretrain/blip_laion_cc_sbu_558k.json data.image_folder=LLaVA-Pretrain/images
    Images are centre-cropped (LLaVA's pretrain.sh sets no pad). Writes <run>/llava, the stage-2 `init`.
    """
    return VLMRecipe(
        stage=1,
        model=VLMModelConfig(image_aspect_ratio="crop", llm_dtype="bf16"),
        data=VLMDataConfig(kind="llava_json", max_length=2048),
        optim=_llava_optim(1e-3),
        run=RunConfig(
            out_dir="runs/llava15_stage1",
            global_batch_size=256,
            precision="bf16",
            grad_checkpointing=True,
            log_every=10,
            save_every=500,
        ),  # fmt: skip
    )


@recipe("llava15_stage2")
def llava15_stage2() -> VLMRecipe:
    """Stage 2 (visual instruction tuning), full: projector + LLM on mix665k, lr 2e-5, batch 128, 1 epoch, FSDP2.

    LLaVA-1.5-7B full: VQAv2 78.5, TextVQA 58.2, MMBench 64.3 (MODEL_ZOO); about 10 h on 8xA100.
    torchrun --nproc-per-node 8 -m vlm train --recipe llava15_stage2 init=runs/llava15_stage1/llava \\
        data.json=llava_v1_5_mix665k.json data.image_folder=DATA_ROOT
    """
    return VLMRecipe(
        stage=2,
        model=VLMModelConfig(image_aspect_ratio="pad", llm_dtype="bf16"),
        data=VLMDataConfig(kind="llava_json", max_length=2048),
        optim=_llava_optim(2e-5),
        run=RunConfig(
            out_dir="runs/llava15_stage2",
            global_batch_size=128,
            precision="bf16",
            strategy="fsdp",
            grad_checkpointing=True,
            log_every=10,
            save_every=1000,
        ),  # fmt: skip
    )


@recipe("llava15_stage2_lora")
def llava15_stage2_lora() -> VLMRecipe:
    """Stage 2 with LoRA (r 128, alpha 256) on the LLM's linear layers: lr 2e-4, projector 2e-5, batch 128.

    LLaVA-1.5-7B LoRA: VQAv2 79.1, TextVQA 58.2, MMBench 66.1 (MODEL_ZOO). The export merges the adapter.
    torchrun --nproc-per-node 8 -m vlm train --recipe llava15_stage2_lora init=runs/llava15_stage1/llava ...
    """
    r = llava15_stage2()
    r.lora = LoraSettings(enabled=True)
    r.optim = _llava_optim(2e-4)
    r.projector_lr = 2e-5
    r.run.out_dir = "runs/llava15_stage2_lora"
    r.run.strategy = "ddp"
    return r


@recipe("llava_tiny_stage1")
def llava_tiny_stage1() -> VLMRecipe:
    """Tiny stage 1 on CPU (< 1 min): a tiny LLaMA (tokenizer trained on the synthetic text) + a tiny encoder.

    model.llm=tiny builds the tiny LM under run.out_dir/lm from the synthetic captions and questions.
    superclass vlm train --recipe llava_tiny_stage1 model.encoder=runs/demo/superclass/encoder
    """
    return VLMRecipe(
        stage=1,
        model=VLMModelConfig(llm=TINY_LLM, image_aspect_ratio="crop", llm_dtype="fp32"),
        data=VLMDataConfig(kind="synthetic", max_length=256, synthetic_samples=1000, cache_samples=10_000),
        optim=OptimConfig(lr=1e-3, betas=(0.9, 0.98), weight_decay=0.0, warmup_steps=10, clip_grad_norm=1.0),
        run=RunConfig(
            out_dir="runs/llava_tiny_stage1", steps=100, global_batch_size=32, device="cpu", log_every=20, save_every=0
        ),  # fmt: skip
    )


@recipe("llava_tiny_stage2")
def llava_tiny_stage2() -> VLMRecipe:
    """Tiny stage 2 on CPU (~1.5 min for 600 steps): projector + the tiny LLM on synthetic VQA and lettered choices.

    At the end it answers a held-out synthetic VQAv2 set (30 images, 120 questions; `run.evals=[]`: off).

    superclass vlm train --recipe llava_tiny_stage2 init=runs/llava_tiny_stage1/llava
    """
    return VLMRecipe(
        stage=2,
        model=VLMModelConfig(llm=TINY_LLM, image_aspect_ratio="pad", llm_dtype="fp32"),
        data=VLMDataConfig(
            kind="synthetic", max_length=256, synthetic_samples=2000, synthetic_seed=2, cache_samples=10_000
        ),  # fmt: skip
        optim=OptimConfig(lr=1e-3, betas=(0.9, 0.98), weight_decay=0.0, warmup_steps=10, clip_grad_norm=1.0),
        run=RunConfig(
            out_dir="runs/llava_tiny_stage2",
            steps=200,
            global_batch_size=32,
            device="cpu",
            log_every=20,
            save_every=0,
            evals=[EvalEntry("vqav2", settings={"synthetic": 30, "device": "cpu", "max_new_tokens": 8})],
        ),  # fmt: skip
    )

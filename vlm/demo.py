"""The demo's LLaVA stage: a tiny LLaMA and a tiny encoder through LLaVA-1.5's two stages on synthetic scenes.

Stage 1 aligns the projector on captions (template `plain`), stage 2 tunes projector + LLM on short-answer,
multi-turn and lettered multiple-choice questions (template `vicuna_v1`); the same recipes as real runs
(`llava_tiny_stage1/2`), pointed at LLaVA JSON files written here.
"""

from __future__ import annotations

from pathlib import Path

from pretrain.runtime.config import resolve
from vlm.recipes import get_recipe
from vlm.synthetic_llava import MULTIPLE_CHOICE_EVERY, write_synthetic_llava
from vlm.tiny_llama import build_tiny_llama, tiny_llm_texts
from vlm.train import train

IMAGE_SIZE = 40  # the demo's encoders train on 40 px scenes


def llava_demo(
    encoder_dir: str | Path, out_dir: str | Path, stage1_steps: int = 30, stage2_steps: int = 600,
    stage1_samples: int = 600, stage2_samples: int = 2000, multiple_choice_every: int = MULTIPLE_CHOICE_EVERY,
    lm_width: int = 64, lm_layers: int = 2, overrides: tuple[str, ...] = (),
) -> tuple[Path, Path]:  # fmt: skip
    """Train both stages on one encoder; returns (the stage-2 LLaVA directory, the stage-2 training JSON).

    `overrides`: key=value recipe overrides for both stages (e.g. "optim.lr=2e-3", "model.feature_layer=-1").
    """
    out = Path(out_dir)
    data1 = write_synthetic_llava(out / "data" / "stage1", stage1_samples, seed=0, image_size=IMAGE_SIZE, stage=1)
    data2 = write_synthetic_llava(out / "data" / "stage2", stage2_samples, seed=2, image_size=IMAGE_SIZE, stage=2,
                                  multiple_choice_every=multiple_choice_every)  # fmt: skip
    lm = out / "lm"
    if not (lm / "config.json").is_file():
        build_tiny_llama(tiny_llm_texts(data1, data2), lm, width=lm_width, layers=lm_layers, vocab=1500)
    common = [f"model.llm={lm}", "run.device=cpu", "data.kind=llava_json", *overrides]
    stage1 = resolve(get_recipe("llava_tiny_stage1"), None, [
        *common, f"model.encoder={encoder_dir}", f"data.json={data1}", f"run.out_dir={out / 'stage1'}",
        f"run.steps={stage1_steps}",
    ])  # fmt: skip
    stage2 = resolve(get_recipe("llava_tiny_stage2"), None, [
        *common, f"init={train(stage1)}", f"data.json={data2}", f"run.out_dir={out / 'stage2'}",
        f"run.steps={stage2_steps}", "run.evals=[]",  # the demo scores it on every synthetic benchmark
    ])  # fmt: skip
    return train(stage2), data2

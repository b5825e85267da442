"""The llava-hf form as transformers 4.x reads it: the files' 4.x keys always; a real 4.x load when asked.

Set TRANSFORMERS4_PYTHON to an interpreter with transformers 4.x (and torch) to load the export there and compare
token ids, pixels and logits with transformers 5's (e.g. a venv with `transformers==4.46.3` or `4.57.3`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from eval_fixtures import tiny_encoder
from vlm_fixtures import noise_image, tiny_llm

from vlm.assemble import build_llava
from vlm.llava_dir import save_llava
from vlm.model_config import VLMModelConfig
from vlm.processor import process_images
from vlm.templates import generation_prompt

TF4 = os.environ.get("TRANSFORMERS4_PYTHON", "")
PROMPT = generation_prompt("What colour is the circle?")
LOAD_IN_4X = r"""
import json, sys, torch, transformers
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration
root, kind = sys.argv[1], sys.argv[2]
version = tuple(int(x) for x in transformers.__version__.split(".")[:2])
if kind == "llava" and version < (4, 49):
    print(json.dumps({"skip": f"LlavaImageProcessor needs transformers >= 4.49, not {transformers.__version__}"}))
    sys.exit(0)
ref = torch.load(f"{root}/ref.pt", weights_only=True)
model = LlavaForConditionalGeneration.from_pretrained(f"{root}/export").eval()
processor = AutoProcessor.from_pretrained(f"{root}/export")
inputs = processor(images=Image.open(f"{root}/image.png"), text=ref["prompt"], return_tensors="pt")
with torch.no_grad():  # the 5.x inputs through the 4.x model: the weights and configs must agree exactly
    logits = model(input_ids=ref["input_ids"], pixel_values=ref["pixel_values"]).logits
print(json.dumps({
    "version": transformers.__version__,
    "inputs": sorted(inputs),
    "ids_equal": torch.equal(inputs["input_ids"], ref["input_ids"]),
    "pixels": (inputs["pixel_values"] - ref["pixel_values"]).abs().max().item(),
    "logits": (logits - ref["logits"]).abs().max().item(),
}))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    root = tmp_path_factory.mktemp("llava_hf")
    model, processor = build_llava(
        VLMModelConfig(encoder=str(tiny_encoder(root / "enc")), llm=str(tiny_llm(root / "lm")))
    )
    return model.eval(), processor, root


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("image_processor", ["llava", "clip"])
def test_files_carry_the_4x_keys(built: tuple, image_processor: str) -> None:
    model, processor, root = built
    out = save_llava(model, processor, root / f"export_{image_processor}", "llava-hf", image_processor=image_processor)
    config = _json(out / "config.json")
    assert config["torch_dtype"] == "float32" and config["image_token_index"] == model.config.image_token_id
    assert config["text_config"]["rope_theta"] == model.config.text_config.rope_parameters["rope_theta"]
    proc = _json(out / "processor_config.json")
    assert "image_processor" not in proc and "tokenizer" not in proc  # 4.x passes every key to LlavaProcessor
    assert proc["patch_size"] == 8 and proc["num_additional_image_tokens"] == 1
    assert proc["vision_feature_select_strategy"] == "default"
    tok = _json(out / "tokenizer_config.json")
    assert tok["tokenizer_class"] == "PreTrainedTokenizerFast" and "<image>" in tok["additional_special_tokens"]
    pre = _json(out / "preprocessor_config.json")
    want = {"llava": "LlavaImageProcessor", "clip": "CLIPImageProcessor"}[image_processor]
    assert pre["image_processor_type"] == want and pre.get("do_pad", False) is (image_processor == "llava")


@pytest.mark.skipif(not TF4, reason="set TRANSFORMERS4_PYTHON to an interpreter with transformers 4.x")
@pytest.mark.parametrize("image_processor", ["llava", "clip"])
def test_loads_in_transformers_4_with_the_same_logits(built: tuple, image_processor: str, tmp_path: Path) -> None:
    model, processor, _ = built
    save_llava(model, processor, tmp_path / "export", "llava-hf", image_processor=image_processor)
    image = noise_image(40, 30)
    image.save(tmp_path / "image.png")
    inputs = processor(images=image, text=PROMPT, return_tensors="pt")
    inputs["pixel_values"] = process_images(processor, [image], pad=image_processor == "llava")  # clip crops
    with torch.no_grad():
        logits = model(**inputs).logits
    ref = {"prompt": PROMPT, "input_ids": inputs["input_ids"], "pixel_values": inputs["pixel_values"], "logits": logits}
    torch.save(ref, tmp_path / "ref.pt")
    script = tmp_path / "load_in_4x.py"
    script.write_text(LOAD_IN_4X)
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run([TF4, str(script), str(tmp_path), image_processor], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(result["skip"])
    print(result, file=sys.stderr)
    level = 1 / 255 / min(processor.image_processor.image_std)  # 4.x's PIL processors round to 8 bits once more
    assert result["inputs"] == ["attention_mask", "input_ids", "pixel_values"], result  # all LlavaForCG accepts
    assert result["ids_equal"] and result["pixels"] <= level + 1e-4 and result["logits"] <= 1e-4, result

"""Parity with the LLaVA-1.5 codebase itself: token ids, label masks, logits and greedy answers.

Set LLAVA_PYTHON to the side venv's interpreter (`bash tests/vlm/make_llava_venv.sh` builds it and prints the
path): tests/vlm/llava_reference.py then runs `llava-torch` (torch 2.0.1, transformers 4.36.2) on the same
tokenizers, conversations, exported model, images and questions, and these tests compare its output with ours.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from eval_fixtures import tiny_encoder
from tokenizers import AddedToken
from transformers import AutoTokenizer
from vlm_fixtures import noise_image, sentencepiece_llama, sentencepiece_llama_tokenizer, tiny_llm

from vlm.assemble import build_llava
from vlm.llava_codebase import export_llava_codebase, own_vocab_size
from vlm.llava_dir import save_llava
from vlm.model_config import VLMModelConfig
from vlm.single_answer import greedy_ids, prompt_inputs
from vlm.templates import IGNORE_INDEX, IMAGE_TOKEN, encode, generation_prompt, image_token_ids

LLAVA = os.environ.get("LLAVA_PYTHON", "")
pytestmark = pytest.mark.skipif(not LLAVA, reason="set LLAVA_PYTHON to the llava-torch side venv's interpreter")
REFERENCE = Path(__file__).with_name("llava_reference.py")
IMAGE_ID = -200  # LLaVA's IMAGE_TOKEN_INDEX
QUESTION = "What colour is the circle?\nAnswer the question using a single word or phrase."


def human(text: str) -> dict:
    return {"from": "human", "value": text}


def gpt(text: str) -> dict:
    return {"from": "gpt", "value": text}


CONVERSATIONS = [
    ("vicuna_v1", [human("<image>\nWhat colour is the circle?"), gpt("red")]),
    ("vicuna_v1", [human("What colour is the circle?\n<image>"), gpt("red"), human("How many squares?"), gpt("2")]),
    ("vicuna_v1", [human("<image>\nHow many squares? 2 or 3?"), gpt("12 squares"), human("And?"), gpt("3")]),
    ("vicuna_v1", [human("How many squares are there?"), gpt("2"), human("What colour?"), gpt("a blue one")]),
    ("plain", [human("<image>\nDescribe the image."), gpt("a blue square on the left")]),
    ("plain", [human("<image>"), gpt("2 red circles and a green triangle")]),
]
PROMPTS = [generation_prompt(QUESTION), generation_prompt("How many squares?", image=False)]


def run_llava(mode: str, request: dict, tmp: Path) -> dict:
    (tmp / "request.json").write_text(json.dumps(request))
    env = {**os.environ, "PYTHONPATH": ""}
    args = [LLAVA, str(REFERENCE), mode, str(tmp / "request.json"), str(tmp / "out.pt")]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(tmp / "out.pt", weights_only=True)


def ours(folder: Path) -> AutoTokenizer:
    """The tokenizer as `vlm build` sets it up (`<image>` added as a special token)."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    return tokenizer


def as_llava(ids: list[int], image_id: int) -> list[int]:
    return [IMAGE_ID if t == image_id else t for t in ids]


def test_token_ids_and_label_masks_equal_llavas(tmp_path: Path) -> None:
    folders = {f"legacy_{v}": sentencepiece_llama_tokenizer(tmp_path / f"tok_{v}", v) for v in (True, False)}
    request = {"tokenizers": {k: str(v) for k, v in folders.items()}, "conversations": CONVERSATIONS}
    request["prompts"] = PROMPTS
    reference = run_llava("tokens", request, tmp_path)
    for name, folder in folders.items():
        tokenizer = ours(folder)
        image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        assert reference[name]["legacy"] is name.endswith("True")
        for (template, conversation), theirs in zip(CONVERSATIONS, reference[name]["rows"]):
            encoded = encode(conversation, template, tokenizer)
            assert as_llava(encoded.input_ids, image_id) == theirs["input_ids"], (name, conversation)
            assert any(x != IGNORE_INDEX for x in theirs["labels"]), "LLaVA reported a tokenization mismatch"
            assert encoded.labels == theirs["labels"], (name, conversation)
        for prompt, theirs in zip(PROMPTS, reference[name]["prompts"]):
            assert as_llava(image_token_ids(prompt, tokenizer), image_id) == theirs, (name, prompt)


@pytest.fixture(scope="module", params=["sentencepiece", "bpe"])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """Our export in the LLaVA codebase's format, for a SentencePiece LLM (Vicuna's) and a BPE tokenizer.json LLM
    (the demo's tiny LLaMA, the LLaMA-3 family): the latter's merges must be written in the form LLaVA's tokenizers
    0.15 reads."""
    root = tmp_path_factory.mktemp(f"llava_parity_{request.param}")
    if request.param == "bpe":
        llm = tiny_llm(root / "lm")
    else:
        llm = sentencepiece_llama(root / "lm", legacy=False)
    model, processor = build_llava(VLMModelConfig(encoder=str(tiny_encoder(root / "enc")), llm=str(llm)))
    torch.manual_seed(1)
    with torch.no_grad():  # a projector with some scale, so the image changes the logits visibly
        for p in model.model.multi_modal_projector.parameters():
            p.normal_(0, 0.5)
    hf = save_llava(model, processor, root / "hf")
    out = export_llava_codebase(hf, root / "llava-v1.5-tiny")  # "llava" in the name: load_pretrained_model needs it
    return model.eval(), processor, out, root


def test_logits_and_greedy_answers_equal_llavas(exported: tuple, tmp_path: Path) -> None:
    model, processor, out, root = exported
    images = {"square": noise_image(32, 32, 1), "wide": noise_image(32, 20, 2), "tall": noise_image(18, 32, 3)}
    images["wide_resized"] = noise_image(64, 40, 4)  # padded to 64x64, then resized to the tower's 32
    items = []
    for name, image in images.items():
        image.save(root / f"{name}.png")
        for question in (QUESTION, "How many squares are there?"):
            prompt = generation_prompt(question)
            items.append({"image": str(root / f"{name}.png"), "prompt": prompt, "max_new_tokens": 8, "name": name})
    reference = run_llava("model", {"model": str(out), "items": items}, tmp_path)
    vocab = reference["vocab"]
    assert reference["image_aspect_ratio"] == "pad" and vocab == own_vocab_size(processor.tokenizer)
    level = 1 / 255 / min(processor.image_processor.image_std)  # one 8-bit step after normalisation
    for item, theirs in zip(items, reference["rows"]):
        image = images[item["name"]]
        inputs = prompt_inputs(processor, [item["prompt"]], [image])
        image_id = model.config.image_token_id
        expanded = as_llava(inputs["input_ids"][0].tolist(), image_id)
        collapsed = [t for i, t in enumerate(expanded) if t != IMAGE_ID or expanded[i - 1] != IMAGE_ID]
        assert collapsed == theirs["input_ids"].tolist(), item
        pixel_gap = (inputs["pixel_values"] - theirs["pixels"]).abs().max().item()
        exact = item["name"] != "wide_resized"
        assert pixel_gap <= (1e-5 if exact else level + 1e-4), (item["name"], pixel_gap)
        inputs["pixel_values"] = theirs["pixels"]  # the model comparison itself, on the same pixels
        with torch.no_grad():
            logits = model(**inputs).logits[0, :, :vocab]
        assert (logits - theirs["logits"]).abs().max().item() <= 1e-4, item
        if exact:  # our own preprocessing end to end: the same greedy answer
            ids = greedy_ids(model, processor, item["prompt"], image, item["max_new_tokens"])
            assert ids and ids == llava_answer_ids(theirs["new_ids"].tolist(), processor.tokenizer), item


def llava_answer_ids(new_ids: list[int], tokenizer: AutoTokenizer) -> list[int]:
    """LLaVA's generated ids as ours are kept: 4.36's generate from inputs_embeds starts with BOS; stop at EOS."""
    if new_ids and new_ids[0] == tokenizer.bos_token_id:
        new_ids = new_ids[1:]
    return new_ids[: new_ids.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in new_ids else new_ids

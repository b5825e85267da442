"""The LLaVA codebase's format both ways, SentencePiece LLaMA tokenizers, LLaVA's token ids and the chat template.

These run without the `llava` package; tests/vlm/test_vlm_llava_parity.py checks the same files against it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from eval_fixtures import tiny_encoder
from safetensors.torch import load_file, save_file
from transformers import AutoProcessor, AutoTokenizer, CLIPVisionModel
from vlm_fixtures import noise_image, sentencepiece_llama, tiny_llm

from pretrain.runtime.config import resolve
from pretrain.runtime.errors import UserError
from vlm.cli import main as vlm_main
from vlm.llava_codebase import (
    PROJECTOR_FILE,
    import_llava_codebase,
    read_projector_bin,
    write_projector_bin,
)
from vlm.llava_dir import load_llava, save_llava
from vlm.recipes import get_recipe
from vlm.single_answer import prompt_inputs
from vlm.templates import IMAGE_TOKEN, generation_prompt, image_token_ids, render
from vlm.tokenizer_files import tokenizer_legacy
from vlm.train import build_model, train

QUESTION = "What colour is the circle?\nAnswer the question using a single word or phrase."


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llava_codebase")


@pytest.fixture(scope="module", params=[True, False], ids=["legacy", "non_legacy"])
def built(root: Path, request: pytest.FixtureRequest) -> Path:
    """`vlm build` (the CLI) on a SentencePiece-only LLaMA folder, as Vicuna ships its tokenizer."""
    legacy = request.param
    encoder = root / "encoder" if (root / "encoder").exists() else tiny_encoder(root / "encoder")
    llm = sentencepiece_llama(root / f"sp_llm_{legacy}", legacy)
    assert not (llm / "tokenizer.json").exists() and (llm / "tokenizer.model").is_file()
    out = root / f"llava_{legacy}"
    assert vlm_main(["build", "--encoder", str(encoder), "--llm", str(llm), "--out", str(out)]) == 0
    return out


def test_a_sentencepiece_only_llm_builds_and_keeps_its_tokenizer(built: Path) -> None:
    source = AutoTokenizer.from_pretrained(built.parent / built.name.replace("llava_", "sp_llm_"))
    saved = AutoProcessor.from_pretrained(built).tokenizer
    assert (built / "tokenizer.model").is_file()  # transformers 5 alone would not save it
    config = json.loads((built / "tokenizer_config.json").read_text())
    assert config["legacy"] is source.legacy is tokenizer_legacy(saved)
    text = "a blue square</s>USER: How many squares? 2 ASSISTANT: 12</s>"
    assert saved(text).input_ids == source(text).input_ids  # a reload keeps the legacy space after </s>


def test_image_ids_follow_llava_not_the_whole_string(built: Path) -> None:
    tokenizer = AutoProcessor.from_pretrained(built).tokenizer
    prompt = generation_prompt(QUESTION)
    head, tail = prompt.split(IMAGE_TOKEN)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    want = tokenizer(head).input_ids + [image_id] + tokenizer(tail).input_ids[1:]  # tokenizer_image_token
    assert image_token_ids(prompt, tokenizer) == want
    after = want[want.index(image_id) + 1]
    assert tokenizer.convert_ids_to_tokens(after) == "▁"  # the dummy prefix LLaVA keeps after the image
    whole = tokenizer(prompt).input_ids
    assert (whole == want) is tokenizer_legacy(tokenizer)  # a legacy: false tokenizer drops it on the whole string


def test_processor_chat_template_renders_our_prompts(built: Path, tmp_path: Path) -> None:
    model, processor = load_llava(built)
    save_llava(model, processor, tmp_path / "llava_hf", form="llava-hf")
    for folder in (built, tmp_path / "llava_hf"):
        processor = AutoProcessor.from_pretrained(folder)
        parts = [{"type": "image"}, {"type": "text", "text": QUESTION}]
        for content in (f"{IMAGE_TOKEN}\n{QUESTION}", parts):
            text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
            assert text == generation_prompt(QUESTION)
        conv = [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "red"}]
        conv += [{"from": "human", "value": "And?"}, {"from": "gpt", "value": "2"}]
        msgs = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]} for t in conv]
        assert processor.tokenizer.apply_chat_template(msgs, tokenize=False) == render(conv, "vicuna_v1").text


def test_export_to_the_llava_codebase_format_and_import_back(built: Path, tmp_path: Path) -> None:
    out = tmp_path / "llava-v1.5-tiny"
    assert vlm_main(["export", "--model", str(built), "--to", "llava", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlavaLlamaForCausalLM"] and config["model_type"] == "llava_llama"
    assert config["mm_projector_type"] == "mlp2x_gelu" and config["mm_vision_select_layer"] == -2
    assert config["mm_vision_select_feature"] == "patch" and config["image_aspect_ratio"] == "pad"
    assert config["mm_use_im_start_end"] is False and config["mm_use_im_patch_token"] is False
    assert config["mm_vision_tower"] == str(out.absolute() / "vision_tower") and config["vocab_size"] == 600
    weights = load_file(str(out / "model.safetensors"))
    assert {"model.mm_projector.0.weight", "model.mm_projector.2.bias", "lm_head.weight"} <= set(weights)
    assert not any("vision" in k for k in weights) and weights["model.embed_tokens.weight"].shape[0] == 600
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "LlamaTokenizer" and tokenizer_config["pad_token"] == "<unk>"
    assert (out / "tokenizer.model").is_file()

    model, _ = load_llava(built)
    tower = CLIPVisionModel.from_pretrained(out / "vision_tower")
    for key, value in tower.state_dict().items():
        assert torch.equal(value, model.model.vision_tower.state_dict()[key]), key

    back = tmp_path / "back"
    assert vlm_main(["import", "--model", str(out), "--from", "llava", "--out", str(back)]) == 0
    again, processor = load_llava(back)
    ours, theirs = model.state_dict(), again.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        rows = 600 if key in ("model.language_model.embed_tokens.weight", "lm_head.weight") else None
        assert torch.equal(ours[key][:rows], theirs[key][:rows]), key
    assert again.config.image_token_id == model.config.image_token_id
    inputs = prompt_inputs(processor, [generation_prompt(QUESTION)], [noise_image(40, 28)])
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits[..., :600], again(**inputs).logits[..., :600])


def test_import_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id that cannot be fetched here: one line, not a traceback
    assert (
        vlm_main(["import", "--model", "someone/llava-v1.5-7b", "--from", "llava", "--out", str(tmp_path / "o")]) == 2
    )
    assert "not fetched from the hub" in capsys.readouterr().err
    assert vlm_main(["import", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "llava"}))
    assert vlm_main(["import", "--model", str(tmp_path / "hf"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "expected 'llava_llama'" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UserError, match="mm_projector_type 'linear'"):
        cfg = {"model_type": "llava_llama", "mm_vision_tower": "x", "mm_projector_type": "linear"}
        (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
        import_llava_codebase(tmp_path / "hf", tmp_path / "o")


def test_a_vision_tower_that_is_not_a_clip_tower_is_refused(built: Path, tmp_path: Path, capsys) -> None:
    """--vision-tower on a LLaVA folder: HF would load it into CLIPVisionModel with every weight random."""
    src = tmp_path / "llava_src"
    src.mkdir()
    cfg = {"model_type": "llava_llama", "mm_vision_tower": "x", "mm_projector_type": "mlp2x_gelu"}
    (src / "config.json").write_text(json.dumps(cfg))
    args = ["import", "--model", str(src), "--from", "llava", "--out", str(tmp_path / "o")]
    assert vlm_main([*args, "--vision-tower", str(built)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith("not a CLIP vision tower (model_type llava)")
    tower = tmp_path / "tower"  # a CLIP tower that lacks a weight: refused, not filled in at random
    export_llava = tmp_path / "exported"
    assert vlm_main(["export", "--model", str(built), "--to", "llava", "--out", str(export_llava)]) == 0
    shutil.copytree(export_llava / "vision_tower", tower)
    capsys.readouterr()  # the export's progress bars
    weights = load_file(str(tower / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if "layers.0.mlp.fc1" not in k}, str(tower / "model.safetensors"))
    assert vlm_main([*args, "--vision-tower", str(tower)]) == 2
    err = capsys.readouterr().err.strip()  # transformers' "Loading weights" bar, then our one line
    assert "Traceback" not in err and err.splitlines()[-1].startswith("error: ")
    assert "layers.0.mlp.fc1" in err and "newly initialised" in err
    assert not (tmp_path / "o").exists()


def test_a_missing_llm_path_says_so(root: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["build", "--encoder", str(tiny_encoder(root / "enc2")), "--llm", str(root / "no_such_lm")]
    assert vlm_main([*args, "--out", str(root / "x")]) == 2
    assert "the path does not exist" in capsys.readouterr().err


def test_mm_projector_bin_round_trip_and_errors(tmp_path: Path) -> None:
    state = {f"model.multi_modal_projector.linear_{i}.{p}": torch.randn(3) for i in (1, 2) for p in ("weight", "bias")}
    state["model.language_model.norm.weight"] = torch.ones(3)
    write_projector_bin(state, tmp_path / PROJECTOR_FILE)
    raw = torch.load(tmp_path / PROJECTOR_FILE, weights_only=True)
    assert sorted(raw) == [f"model.mm_projector.{i}.{p}" for i in (0, 2) for p in ("bias", "weight")]
    back = read_projector_bin(tmp_path / PROJECTOR_FILE)
    assert back.keys() == {k for k in state if "projector" in k}
    assert all(torch.equal(back[k], state[k]) for k in back)
    torch.save({"model.mm_projector.0.weight": torch.ones(1)}, tmp_path / "partial.bin")
    with pytest.raises(UserError, match="expected the mlp2x_gelu projector"):
        read_projector_bin(tmp_path / "partial.bin")


def test_stage1_writes_mm_projector_bin_that_stage2_starts_from(root: Path, tmp_path: Path) -> None:
    encoder, llm = tiny_encoder(root / "enc3"), tiny_llm(root / "bpe_llm")
    common = [f"model.encoder={encoder}", f"model.llm={llm}", "run.steps=2", "run.global_batch_size=2",
              "data.synthetic_samples=8", "data.synthetic_image_size=32", "data.max_length=512"]  # fmt: skip
    stage1 = train(resolve(get_recipe("llava_tiny_stage1"), None, [*common, f"run.out_dir={tmp_path / 's1'}"]))
    projector_bin = stage1 / PROJECTOR_FILE
    trained = {k: v for k, v in load_llava(stage1)[0].state_dict().items() if "multi_modal_projector" in k}
    overrides = [*common, f"run.out_dir={tmp_path / 's2'}", f"projector={projector_bin}"]
    recipe = resolve(get_recipe("llava_tiny_stage2"), None, overrides)
    model, _, _ = build_model(recipe, Path("unused.json"), is_main=True)
    for key, value in trained.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_a_bpe_llm_exports_merges_every_tokenizers_release_reads(root: Path, tmp_path: Path) -> None:
    """tokenizers >= 0.20 saves BPE merges as ["a", "b"] pairs; the LLaVA codebase's pinned 0.15 reads only "a b"
    strings (issue 26: "data did not match any variant of untagged enum ModelWrapper"), so the export writes those."""
    encoder = root / "encoder" if (root / "encoder").exists() else tiny_encoder(root / "encoder")
    llm = tiny_llm(tmp_path / "bpe_llm")
    assert isinstance(json.loads((llm / "tokenizer.json").read_text())["model"]["merges"][0], list)  # as saved
    built, out = tmp_path / "built", tmp_path / "llava-v1.5-bpe"
    assert vlm_main(["build", "--encoder", str(encoder), "--llm", str(llm), "--out", str(built)]) == 0
    assert vlm_main(["export", "--model", str(built), "--to", "llava", "--out", str(out)]) == 0
    merges = json.loads((out / "tokenizer.json").read_text())["model"]["merges"]
    assert merges and all(isinstance(m, str) and len(m.split(" ")) == 2 for m in merges)
    text = "USER: What colour is the circle? ASSISTANT: a blue square on the left</s>"
    assert (
        AutoTokenizer.from_pretrained(out)(text)["input_ids"] == AutoTokenizer.from_pretrained(llm)(text)["input_ids"]
    )

"""vlm build/save/load/chat on a tiny ViT artifact and a tiny LLaMA: the tower is the encoder, HF forms round-trip."""

from __future__ import annotations

import pytest
import torch
from eval_fixtures import tiny_encoder
from safetensors import safe_open
from vlm_fixtures import noise_image, stripes, tiny_llm, tiny_vicuna_like

from pretrain.encoder import load_encoder
from pretrain.exports.mapping import timm_to_hf
from pretrain.runtime.errors import ConfigError, UserError
from vlm.assemble import build_llava
from vlm.chat import chat, chat_prompt
from vlm.cli import main as vlm_main
from vlm.llava_dir import load_llava, save_llava
from vlm.llava_hf_form import llava_hf_name
from vlm.model_config import VLMModelConfig
from vlm.processor import num_image_tokens, process_images
from vlm.templates import VICUNA_SYSTEM, generation_prompt

PROMPT = generation_prompt("What colour is the circle?")


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("vlm")
    return {"root": root, "encoder": tiny_encoder(root / "encoder"), "llm": tiny_llm(root / "llm")}


@pytest.fixture(scope="module")
def built(parts: dict) -> tuple:
    model, processor = build_llava(VLMModelConfig(encoder=str(parts["encoder"]), llm=str(parts["llm"])))
    return model.eval(), processor


@pytest.fixture(scope="module")
def saved(parts: dict, built: tuple) -> str:
    return str(save_llava(*built, parts["root"] / "llava"))


def _inputs(processor, image=None) -> dict:
    return processor(images=image or noise_image(40, 30), text=PROMPT, return_tensors="pt")


def _logits(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def test_image_tokens_replace_the_placeholder(built: tuple) -> None:
    model, processor = built
    n = num_image_tokens(model.config)
    assert n == (32 // 8) ** 2 == model.config.image_seq_length
    image_id = model.config.image_token_id
    plain = processor.tokenizer(PROMPT)["input_ids"]
    assert plain.count(image_id) == 1
    at = plain.index(image_id)
    ids = _inputs(processor)["input_ids"][0].tolist()
    assert ids[:at] == plain[:at] and ids[at : at + n] == [image_id] * n and ids[at + n :] == plain[at + 1 :]
    assert _logits(model, _inputs(processor)).shape == (1, len(ids), model.config.text_config.vocab_size)


@pytest.mark.parametrize(
    ("overrides", "tokens", "size"),
    [
        ({"image_size": 48}, 36, 48),
        ({"feature_select": "cls_patch", "llm_dtype": "bf16", "image_aspect_ratio": "crop"}, 17, 32),
    ],
)
def test_resolution_and_class_token_change_the_count(parts: dict, overrides: dict, tokens: int, size: int) -> None:
    cfg = VLMModelConfig(encoder=str(parts["encoder"]), llm=str(parts["llm"]), **overrides)
    model, processor = build_llava(cfg)
    assert num_image_tokens(model.config) == tokens == model.config.image_seq_length
    assert model.model.vision_tower.embeddings.position_embedding.weight.shape[0] == (size // 8) ** 2 + 1
    inputs = _inputs(processor)
    assert inputs["pixel_values"].shape[-2:] == (size, size)
    assert (inputs["input_ids"] == model.config.image_token_id).sum() == tokens
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    assert torch.isfinite(_logits(model, inputs).float()).all()
    assert model.dtype == (torch.bfloat16 if cfg.llm_dtype == "bf16" else torch.float32)
    assert processor.image_processor.do_pad is (cfg.image_aspect_ratio == "pad")


def test_tower_is_the_encoder(parts: dict, built: tuple) -> None:
    model, processor = built
    encoder = load_encoder(parts["encoder"])
    images = [noise_image(37, 29, seed=1), noise_image(32, 32, seed=2)]
    pixels = process_images(processor, images, pad=False)
    torch.testing.assert_close(pixels, torch.stack([encoder.preprocess(im) for im in images]), atol=1e-5, rtol=0)
    with torch.no_grad():
        ours = encoder.forward_intermediates(pixels, indices=[-2], intermediates_only=True)[0]
        hidden = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        projected = model.model.get_image_features(pixel_values=pixels).pooler_output
    assert hidden.shape == ours.shape == (2, 16, 64)
    assert (hidden - ours).abs().max() <= 1e-4
    assert (torch.stack(list(projected)) - model.model.multi_modal_projector(ours)).abs().max() <= 1e-4


def test_save_load_gives_the_same_logits(built: tuple, saved: str) -> None:
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    model, processor = built
    loaded = LlavaForConditionalGeneration.from_pretrained(saved).eval()
    loaded_processor = AutoProcessor.from_pretrained(saved)
    assert loaded_processor.image_processor.do_pad is True and loaded.config.image_aspect_ratio == "pad"
    inputs, again = _inputs(processor), _inputs(loaded_processor)
    assert torch.equal(inputs["input_ids"], again["input_ids"])
    assert torch.equal(inputs["pixel_values"], again["pixel_values"])
    assert (_logits(loaded, again) - _logits(model, inputs)).abs().max() <= 1e-5


def test_llava_hf_form(parts: dict, built: tuple, saved: str) -> None:
    from transformers import AutoModelForCausalLM

    model, processor = built
    out = parts["root"] / "llava_hf"
    assert vlm_main(["export", "--model", saved, "--to", "llava-hf", "--out", str(out)]) == 0
    encoder = load_encoder(parts["encoder"]).backbone.state_dict()
    lm = AutoModelForCausalLM.from_pretrained(parts["llm"]).state_dict()
    expected = {f"vision_tower.vision_model.{k}": tuple(v.shape) for k, v in timm_to_hf(encoder).items()}
    expected.update({f"language_model.{k}": tuple(v.shape) for k, v in lm.items()})
    width, hidden = 64, model.config.text_config.hidden_size
    expected.update(
        {"multi_modal_projector.linear_1.weight": (hidden, width), "multi_modal_projector.linear_1.bias": (hidden,)}
    )
    expected.update(
        {"multi_modal_projector.linear_2.weight": (hidden, hidden), "multi_modal_projector.linear_2.bias": (hidden,)}
    )
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        written = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert written == expected
    assert all(llava_hf_name(k) in written for k in model.state_dict())
    loaded, loaded_processor = load_llava(out)
    inputs = _inputs(loaded_processor)
    assert (_logits(loaded, inputs) - _logits(model, _inputs(processor))).abs().max() <= 1e-5


def test_pad_to_square_and_crop(built: tuple) -> None:
    _, processor = built
    ip = processor.image_processor
    mean, std = torch.tensor(ip.image_mean).view(3, 1), torch.tensor(ip.image_std).view(3, 1)
    fill = (torch.tensor([int(m * 255) for m in ip.image_mean]).view(3, 1) / 255 - mean) / std
    red = (torch.tensor([250.0, 10.0, 10.0]).view(3, 1) / 255 - mean) / std
    padded = process_images(processor, [stripes(32, 16, [(250, 10, 10)])], pad=True)[0]  # 16 rows: 8 pad above
    assert padded.shape == (3, 32, 32)
    for rows in (padded[:, :6], padded[:, -6:]):
        torch.testing.assert_close(rows.reshape(3, -1), fill.expand(3, 6 * 32), atol=1e-5, rtol=0)
    assert fill.abs().max() <= 1 / (255 * std.min())  # the mean colour normalises to ~0
    torch.testing.assert_close(padded[:, 10:22].reshape(3, -1), red.expand(3, 12 * 32), atol=1e-5, rtol=0)
    cropped = process_images(
        processor, [stripes(64, 32, [(0, 0, 250), (250, 10, 10), (250, 10, 10), (0, 250, 0)])], pad=False
    )[0]
    torch.testing.assert_close(cropped.reshape(3, -1), red.expand(3, 32 * 32), atol=1e-5, rtol=0)


def test_vicuna_like_llm_gets_image_and_pad_tokens(parts: dict) -> None:
    llm = tiny_vicuna_like(parts["root"] / "vicuna_like")
    cfg = VLMModelConfig(encoder=str(parts["encoder"]), llm=str(llm))
    model, processor = build_llava(cfg)
    tok = processor.tokenizer
    old = len(tok) - 2
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<image>") == old
    assert tok.pad_token == "<pad>" and tok.pad_token_id == old + 1 == model.config.text_config.pad_token_id
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows % 64 == 0 and rows >= old + 2 and model.config.text_config.vocab_size == rows
    assert (_inputs(processor)["input_ids"] == old).sum() == 16
    assert torch.isfinite(_logits(model, _inputs(processor))).all()


def test_bad_inputs_are_one_line_errors(parts: dict, tmp_path, capsys: pytest.CaptureFixture) -> None:
    from superclass.cli import main as superclass_main

    (tmp_path / "not_an_artifact").mkdir()
    argv = ["vlm", "build", "--encoder", str(tmp_path / "not_an_artifact"), "--llm", str(parts["llm"])]
    assert superclass_main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json: missing" in err
    argv = ["build", "--encoder", str(parts["encoder"]), "--llm", str(parts["llm"]), "--projector", "linear"]
    assert vlm_main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "projector" in err and "mlp2x_gelu" in err
    with pytest.raises(UserError, match="the path does not exist"):
        build_llava(VLMModelConfig(encoder=str(parts["encoder"]), llm=str(tmp_path / "no_llm")))
    (tmp_path / "empty_llm").mkdir()
    with pytest.raises(UserError, match="cannot load a causal LM"):
        build_llava(VLMModelConfig(encoder=str(parts["encoder"]), llm=str(tmp_path / "empty_llm")))
    with pytest.raises(ConfigError, match="feature_layer"):
        build_llava(VLMModelConfig(encoder=str(parts["encoder"]), llm=str(parts["llm"]), feature_layer=5))
    cnn = tiny_encoder(tmp_path / "cnn", preset="rn50_tiny")
    with pytest.raises(UserError, match="CLIP-style ViT"):
        build_llava(VLMModelConfig(encoder=str(cnn), llm=str(parts["llm"])))
    with pytest.raises(UserError, match="not a LLaVA config"):
        load_llava(parts["llm"])


def test_chat(parts: dict, saved: str, capsys: pytest.CaptureFixture) -> None:
    image = parts["root"] / "image.png"
    noise_image(48, 32).save(image)
    argv = ["chat", "--model", saved, "--image", str(image), "--prompt", "What colour?", "--max-new-tokens", "4"]
    assert vlm_main(argv) == 0
    assert capsys.readouterr().out.endswith("\n")
    replies = chat(
        saved, image, lines=["first?", "", "second?", "exit", "never"], max_new_tokens=3, emit=lambda s: None
    )
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    expected = f"{VICUNA_SYSTEM} USER: <image>\nq1 ASSISTANT: a1</s>USER: q2 ASSISTANT:"
    assert chat_prompt([("q1", "a1")], "q2") == expected
    assert chat_prompt([], "q1") == generation_prompt("q1")
    assert vlm_main(["chat", "--model", saved, "--image", str(parts["root"] / "missing.png"), "--prompt", "x"]) == 2
    assert "missing.png: does not exist" in capsys.readouterr().err


def _without(folder, dest, drop: str):
    """A copy of the HF folder `folder` whose weights lack the tensors whose names contain `drop`."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, dest)
    weights = load_file(str(dest / "model.safetensors"))
    kept = {k: v for k, v in weights.items() if drop not in k}
    assert len(kept) < len(weights)
    save_file(kept, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def test_no_build_or_export_saves_weights_the_load_report_calls_missing(parts, saved, tmp_path, capsys) -> None:
    """transformers initialises missing weights at random and says so only in a log; build/export refuse them."""
    llm = _without(parts["llm"], tmp_path / "llm", "layers.1.mlp.down_proj")
    argv = ["build", "--encoder", str(parts["encoder"]), "--llm", str(llm), "--out", str(tmp_path / "built")]
    assert vlm_main(argv) == 2
    err = capsys.readouterr().err.strip()  # transformers' "Loading weights" bar, then our one line
    assert "Traceback" not in err and err.splitlines()[-1].startswith("error: ")
    assert "layers.1.mlp.down_proj.weight" in err and "newly initialised" in err
    llava = _without(saved, tmp_path / "llava", "multi_modal_projector.linear_2")
    assert vlm_main(["export", "--model", str(llava), "--to", "llava", "--out", str(tmp_path / "exported")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith("error: ")
    assert "multi_modal_projector.linear_2" in err and "newly initialised" in err
    assert not (tmp_path / "built").exists() and not (tmp_path / "exported").exists()

"""Imports: HF CLIPVisionModel / CLIPModel directories and OpenCLIP checkpoints become artifacts with their features."""

import json

import open_clip
import open_clip.factory
import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from pretrain.encoder import default_preprocess, load_encoder
from pretrain.export import hf_pooled, import_encoder
from pretrain.runtime.atomic import plain_tensors
from pretrain.runtime.errors import UserError

ATOL = 1e-4
VISION = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2, image_size=32)
VISION["patch_size"] = 8
OPEN_CLIP_CFG = {
    "embed_dim": 32,
    "quick_gelu": True,  # OpenAI-style weights: the import must carry QuickGELU
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
}


def close(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=ATOL)


def images(batch=3, seed=1):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def randomise(module, seed=0):
    """Every tensor random, norms around 1, so a swapped or ignored weight cannot hide."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return module.eval()


def layer_minus_two(enc, x):
    _, inter = enc.forward_intermediates(x, indices=[-2], return_prefix_tokens=True)
    patches, prefix = inter[0]
    return torch.cat([prefix, patches], dim=1)


def one_line_error(fn, *args, match, **kwargs):
    with pytest.raises(UserError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# --------------------------------------------------------------------------------------------------- HF


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A random tiny CLIPVisionModel saved by transformers (quick_gelu: CLIPVisionConfig's default)."""
    path = tmp_path_factory.mktemp("hf") / "vision"
    randomise(transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**VISION))).save_pretrained(path)
    return path


def test_import_hf_vision_model_gives_its_features(hf_dir, tmp_path):
    hf = transformers.CLIPVisionModel.from_pretrained(hf_dir).eval()
    import_encoder("hf", hf_dir, tmp_path / "enc")
    enc = load_encoder(tmp_path / "enc")
    assert (enc.arch.act, enc.arch.pool, enc.arch.width, enc.arch.layers, enc.arch.heads) == (
        "quick_gelu",
        "token",
        64,
        2,
        2,
    )
    prov = enc.config["provenance"]
    assert (
        prov["method"] == "clip" and prov["source"]["format"] == "hf" and "default" in prov["source"]["preprocessing"]
    )
    assert enc.config["preprocessing"] == default_preprocess(enc.arch)  # no preprocessor_config.json in the dir
    x = images()
    with torch.no_grad():
        out = hf(pixel_values=x, output_hidden_states=True)
        close(enc(x), out.pooler_output)
        close(layer_minus_two(enc, x), out.hidden_states[-2])
    import_encoder("hf", hf_dir, tmp_path / "avg", pool="avg")
    with torch.no_grad():
        close(load_encoder(tmp_path / "avg")(x), hf_pooled(out, hf, "avg"))


def test_import_hf_full_clip_model_takes_the_vision_tower(tmp_path):
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = transformers.CLIPConfig(
        vision_config={**VISION, "hidden_act": "gelu"}, text_config=text, projection_dim=24
    )
    model = randomise(transformers.CLIPModel(config))
    model.save_pretrained(tmp_path / "clip")
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}, resample=2, image_mean=mean, image_std=std
    )
    processor.save_pretrained(tmp_path / "clip")
    import_encoder("hf", tmp_path / "clip", tmp_path / "enc")
    enc = load_encoder(tmp_path / "enc")
    assert enc.arch.act == "gelu" and enc.arch.pool == "token"
    assert enc.config["preprocessing"] == {
        "interpolation": "bilinear",
        "mean": mean,
        "std": std,
        "resize": 36,
        "crop": 32,
    }
    assert "visual_projection.weight [24, 64] not imported" in enc.config["provenance"]["projection"]
    x = images()
    with torch.no_grad():
        close(enc(x), model.vision_model(pixel_values=x).pooler_output)


def test_import_hf_reads_a_half_precision_pytorch_model_bin(hf_dir, tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((hf_dir / "config.json").read_text())
    half = {k: v.half() for k, v in load_file(hf_dir / "model.safetensors").items()}
    torch.save(half, tmp_path / "bin" / "pytorch_model.bin")
    import_encoder("hf", tmp_path / "bin", tmp_path / "enc")
    assert {v.dtype for v in load_file(tmp_path / "enc" / "model.safetensors").values()} == {torch.float32}
    hf = transformers.CLIPVisionModel.from_pretrained(hf_dir).eval()
    x = images()
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(p.half().float())  # the weights the .bin holds
        close(load_encoder(tmp_path / "enc")(x), hf(pixel_values=x).pooler_output)


def copy_hf(hf_dir, dst, **config_changes):
    dst.mkdir()
    config = json.loads((hf_dir / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, **config_changes}))
    (dst / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes())
    return dst


def test_import_hf_errors_are_one_line(hf_dir, tmp_path):
    out = tmp_path / "out"
    one_line_error(import_encoder, "hf", tmp_path / "nope", out, match="does not exist")
    (tmp_path / "empty").mkdir()
    one_line_error(import_encoder, "hf", tmp_path / "empty", out, match=r"config\.json: missing")
    bad = copy_hf(hf_dir, tmp_path / "siglip", model_type="siglip_vision_model")
    one_line_error(import_encoder, "hf", bad, out, match="model_type is 'siglip_vision_model'")
    bad = copy_hf(hf_dir, tmp_path / "act", hidden_act="gelu_new")
    one_line_error(import_encoder, "hf", bad, out, match="hidden_act is 'gelu_new'")
    bad = copy_hf(hf_dir, tmp_path / "shape")
    tensors = load_file(bad / "model.safetensors")
    tensors["encoder.layers.1.mlp.fc1.weight"] = torch.zeros(128, 64)
    save_file(tensors, bad / "model.safetensors")
    one_line_error(import_encoder, "hf", bad, out, match=r"model\.safetensors: tensors do not match.*fc1")
    del tensors["post_layernorm.bias"]
    save_file(tensors, bad / "model.safetensors")
    one_line_error(import_encoder, "hf", bad, out, match=r"model\.safetensors: missing tensor 'post_layernorm\.bias'")
    (bad / "model.safetensors").unlink()
    one_line_error(import_encoder, "hf", bad, out, match="no weights file")
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- OpenCLIP


@pytest.fixture(scope="module")
def open_clip_model():
    return randomise(open_clip.model.CLIP(**OPEN_CLIP_CFG))


def test_import_open_clip_checkpoint_with_config(open_clip_model, tmp_path):
    save_file(plain_tensors(open_clip_model.state_dict()), tmp_path / "ckpt.safetensors")  # text tower included
    (tmp_path / "model.json").write_text(json.dumps(OPEN_CLIP_CFG))
    import_encoder("open_clip", tmp_path / "ckpt.safetensors", tmp_path / "enc", config=tmp_path / "model.json")
    enc = load_encoder(tmp_path / "enc")
    assert (enc.arch.act, enc.arch.pool, enc.arch.heads) == ("quick_gelu", "token", 2)
    assert "visual.proj [64, 32] not imported" in enc.config["provenance"]["projection"]
    visual, x = open_clip_model.visual, images()
    with torch.no_grad():
        close(enc(x) @ visual.proj, open_clip_model.encode_image(x))  # the projection is all that is left out
        inter = visual.forward_intermediates(x, indices=[-2], output_fmt="NLC", output_extra_tokens=True)
        theirs = torch.cat([inter["image_intermediates_prefix"][0], inter["image_intermediates"][0]], dim=1)
        close(layer_minus_two(enc, x), theirs)


def test_import_open_clip_by_model_name(open_clip_model, tmp_path, monkeypatch):
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "tiny-test-quickgelu", OPEN_CLIP_CFG)
    torch.save(open_clip_model.visual.state_dict(), tmp_path / "visual.pt")  # a bare VisionTransformer state dict
    import_encoder("open_clip", tmp_path / "visual.pt", tmp_path / "enc", model_name="tiny-test-quickgelu", pool="avg")
    enc = load_encoder(tmp_path / "enc")
    assert (
        enc.arch.pool == "avg"
        and enc.config["provenance"]["source"]["config"] == "open_clip model 'tiny-test-quickgelu'"
    )
    visual, x = open_clip_model.visual, images()
    with torch.no_grad():
        tokens = visual.ln_post(visual.transformer(visual._embeds(x)))
        close(enc(x), tokens[:, 1:].mean(1))


@pytest.mark.parametrize(
    "vision_changes, match",
    [
        ({"attentional_pool": True}, "attentional pooler"),
        ({"ls_init_value": 0.1}, "LayerScale"),
        ({"timm_model_name": "vit_small_patch16_224"}, "timm tower"),
        ({"layers": [1, 1, 1, 1]}, "ModifiedResNet"),
        ({"pool_type": "avg", "final_ln_after_pool": True}, "final_ln_after_pool"),
        ({"no_ln_pre": True}, "no ln_pre"),
    ],
)
def test_open_clip_towers_the_artifact_cannot_hold_are_one_line_errors(tmp_path, vision_changes, match):
    config = {**OPEN_CLIP_CFG, "vision_cfg": {**OPEN_CLIP_CFG["vision_cfg"], **vision_changes}}
    (tmp_path / "model.json").write_text(json.dumps(config))
    save_file({"x": torch.zeros(1)}, tmp_path / "w.safetensors")
    msg = one_line_error(
        import_encoder,
        "open_clip",
        tmp_path / "w.safetensors",
        tmp_path / "out",
        config=tmp_path / "model.json",
        match=match,
    )
    assert "model.json" in msg


def test_open_clip_weight_errors_are_one_line(open_clip_model, tmp_path):
    (tmp_path / "model.json").write_text(json.dumps(OPEN_CLIP_CFG))
    state = plain_tensors(open_clip_model.visual.state_dict())
    state["transformer.resblocks.0.ls_1.gamma"] = torch.ones(64)  # LayerScale weights the config does not declare
    save_file(state, tmp_path / "ls.safetensors")
    kw = dict(config=tmp_path / "model.json")
    one_line_error(
        import_encoder, "open_clip", tmp_path / "ls.safetensors", tmp_path / "o", match="cannot represent.*ls_1", **kw
    )
    del state["transformer.resblocks.0.ls_1.gamma"], state["ln_pre.weight"]
    save_file(state, tmp_path / "missing.safetensors")
    one_line_error(
        import_encoder,
        "open_clip",
        tmp_path / "missing.safetensors",
        tmp_path / "o",
        match="missing tensor 'ln_pre.weight'",
        **kw,
    )
    out = tmp_path / "o"
    one_line_error(import_encoder, "open_clip", tmp_path / "ls.safetensors", out, match="needs --arch-config")
    one_line_error(
        import_encoder,
        "open_clip",
        tmp_path / "ls.safetensors",
        tmp_path / "o",
        model_name="nope-net",
        match="no model 'nope-net'",
    )
    one_line_error(
        import_encoder, "hf", tmp_path, tmp_path / "o", config=tmp_path / "model.json", match="open_clip only"
    )

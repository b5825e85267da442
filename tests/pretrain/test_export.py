"""Exports: HF CLIPVisionModel / OpenCLIP / timm directories give the artifact's features (fp32, <= 1e-4)."""

import dataclasses
import json

import numpy as np
import pytest
import timm.data
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file, save_file
from torchvision.transforms.v2.functional import pil_to_tensor

from pretrain.cli import main
from pretrain.encoder import default_preprocess, load_encoder, save_encoder
from pretrain.export import (
    export_encoder,
    hf_pooled,
    hf_to_timm,
    import_encoder,
    load_open_clip_visual,
    load_timm,
    open_clip_to_timm,
    timm_to_hf,
    timm_to_open_clip,
)
from pretrain.models.backbone import build_backbone
from pretrain.models.presets import get_preset
from pretrain.runtime.errors import UserError

ATOL = 1e-4
VARIANTS = [("avg", "gelu"), ("token", "quick_gelu")]  # vit_tiny has 2 layers: the quick_gelu one is 2-layer too


def make_artifact(path, preset="vit_tiny", seed=0, **changes):
    """An artifact with every tensor random (a swapped or ignored weight cannot hide); `changes` edit the arch,
    `resize` / `crop` the preprocessing."""
    pre_changes = {k: changes.pop(k) for k in ("resize", "crop") if k in changes}
    arch = dataclasses.replace(get_preset(preset), **changes)
    torch.manual_seed(seed)
    model = build_backbone(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    pre = {**default_preprocess(arch), **pre_changes}
    return save_encoder(path, model, arch, pre, {"method": "superclass", "tokenizer": "openai_clip_bpe"})


@pytest.fixture(scope="module", params=VARIANTS, ids=["avg-gelu", "token-quick_gelu"])
def artifact(request, tmp_path_factory):
    pool, act = request.param
    return make_artifact(tmp_path_factory.mktemp("enc") / "enc", pool=pool, act=act)


@pytest.fixture(scope="module")
def plain_artifact(tmp_path_factory):
    """One artifact (avg pooling, exact GELU) for the error and CLI tests."""
    return make_artifact(tmp_path_factory.mktemp("enc") / "enc")


def images(arch, batch=3, seed=1):
    return torch.randn(batch, 3, arch.image_size, arch.image_size, generator=torch.Generator().manual_seed(seed))


def layer_minus_two(enc, x):
    """LLaVA's layer -2 from the artifact: block L-2's output, class token first (= HF hidden_states[-2])."""
    _, inter = enc.forward_intermediates(x, indices=[-2], return_prefix_tokens=True)
    patches, prefix = inter[0]
    return torch.cat([prefix, patches], dim=1)


def close(a, b):
    torch.testing.assert_close(a, b, rtol=0, atol=ATOL)


# ------------------------------------------------------------------------------------------------ mappings


def test_mappings_round_trip_exactly():
    state = build_backbone(get_preset("vit_tiny")).state_dict()
    for there, back in ((timm_to_open_clip, open_clip_to_timm), (timm_to_hf, hf_to_timm)):
        again = back(there(state))
        assert again.keys() == state.keys()
        for k, v in state.items():
            assert torch.equal(again[k], v), k
    hf = timm_to_hf(state, prefix="vision_model.")
    assert "vision_model.encoder.layers.1.self_attn.v_proj.bias" in hf and len(hf) == len(timm_to_hf(state)) > len(
        state
    )


# --------------------------------------------------------------------------------------------------- HF


def test_hf_export_gives_the_artifact_features(artifact, tmp_path):
    enc = load_encoder(artifact)
    export_encoder(artifact, "hf", tmp_path / "hf")
    assert {p.name for p in (tmp_path / "hf").iterdir()} == {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    }
    # the legacy vision_model.* layout (transformers 4.x reads it as is; 5.x strips the prefix)
    assert all(k.startswith("vision_model.") for k in load_file(tmp_path / "hf" / "model.safetensors"))
    hf, info = transformers.CLIPVisionModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    cfg = hf.config
    assert (cfg.hidden_act, cfg.layer_norm_eps, cfg.projection_dim) == (enc.arch.act, 1e-5, enc.arch.width)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size) == (64, 2, 256)
    x = images(enc.arch)
    with torch.no_grad():
        out = hf.eval()(pixel_values=x, output_hidden_states=True)
        close(hf_pooled(out, hf, enc.arch.pool), enc(x))
        close(hf.post_layernorm(out.last_hidden_state), enc.forward_features(x))
        close(out.hidden_states[-2], layer_minus_two(enc, x))
        other = "token" if enc.arch.pool == "avg" else "avg"  # the helper also gives the other pooling
        tokens = enc.forward_features(x)
        close(hf_pooled(out, hf, other), tokens[:, 0] if other == "token" else tokens[:, 1:].mean(1))


def random_image(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def resized_artifact(tmp_path_factory):
    """resize 36 != crop 32: the processor must resize the shortest side, then centre-crop."""
    path = make_artifact(tmp_path_factory.mktemp("enc") / "enc", resize=36, crop=32)
    export_encoder(path, "hf", path.parent / "hf")
    return path, path.parent / "hf"


def test_hf_processor_config_matches_the_artifact(resized_artifact):
    path, hf_dir = resized_artifact
    proc = transformers.CLIPImageProcessor.from_pretrained(hf_dir)
    pre = load_encoder(path).config["preprocessing"]
    assert proc.size == {"shortest_edge": 36} and proc.crop_size == {"height": 32, "width": 32}
    assert proc.resample == 3 and proc.do_convert_rgb and proc.do_center_crop
    assert list(proc.image_mean) == pre["mean"] and list(proc.image_std) == pre["std"]


@pytest.mark.parametrize("size", [(50, 40), (40, 64), (36, 36)])
def test_hf_processor_equals_artifact_preprocess_on_tensors(resized_artifact, size):
    """Both resize the uint8 tensor (antialiased bicubic), centre-crop and normalise: the same tensor. (The margins
    here are even: HF rounds an odd crop offset down, torchvision's CenterCrop to nearest.)"""
    path, hf_dir = resized_artifact
    enc, proc = load_encoder(path), transformers.CLIPImageProcessor.from_pretrained(hf_dir)
    image = pil_to_tensor(random_image(*size))
    theirs = proc(image, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(enc.preprocess(image), theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size", [(50, 40), (45, 70), (39, 36)])  # (39, 36): crop offset 3.5
def test_hf_processor_equals_artifact_preprocess_on_pil_images(resized_artifact, size):
    path, hf_dir = resized_artifact
    enc, proc = load_encoder(path), transformers.CLIPImageProcessor.from_pretrained(hf_dir)
    image = random_image(*size)
    theirs = proc(image, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(enc.preprocess(image), theirs, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------- OpenCLIP


def test_open_clip_export_gives_the_artifact_features(artifact, tmp_path):
    enc = load_encoder(artifact)
    export_encoder(artifact, "open_clip", tmp_path / "oc")
    config = json.loads((tmp_path / "oc" / "open_clip_config.json").read_text())
    vision = config["model_cfg"]["vision_cfg"]
    assert vision["pool_type"] == {"avg": "avg", "token": "tok"}[enc.arch.pool] and not vision["final_ln_after_pool"]
    assert config["model_cfg"]["quick_gelu"] == (enc.arch.act == "quick_gelu")
    assert config["model_cfg"]["embed_dim"] == vision["width"] == 64 and vision["head_width"] == 32
    assert config["superclass_preprocessing"] == enc.config["preprocessing"]
    visual = load_open_clip_visual(tmp_path / "oc")
    assert visual.preprocess_cfg["mean"] == enc.config["preprocessing"]["mean"]
    x = images(enc.arch)
    with torch.no_grad():
        close(visual(x), enc(x))
        inter = visual.forward_intermediates(x, indices=[-2], output_fmt="NLC", output_extra_tokens=True)
        theirs = torch.cat([inter["image_intermediates_prefix"][0], inter["image_intermediates"][0]], dim=1)
        close(theirs, layer_minus_two(enc, x))


def test_open_clip_export_import_round_trip_keeps_everything(tmp_path):
    path = make_artifact(tmp_path / "enc", resize=36, crop=32, act="quick_gelu")
    export_encoder(path, "open_clip", tmp_path / "oc")
    import_encoder("open_clip", tmp_path / "oc", tmp_path / "back")
    enc, back = load_encoder(path), load_encoder(tmp_path / "back")
    assert back.arch == enc.arch and back.config["preprocessing"] == enc.config["preprocessing"]
    assert back.config["provenance"]["projection"] == "identity (a projection-free export)"
    x = images(enc.arch)
    with torch.no_grad():
        close(back(x), enc(x))


# -------------------------------------------------------------------------------------------------- timm


@pytest.mark.parametrize("preset, changes", [("vit_tiny", {}), ("vit_tiny", {"pool": "token", "act": "quick_gelu"})])
def test_timm_export_gives_the_artifact_features(tmp_path, preset, changes):
    path = make_artifact(tmp_path / "enc", preset, resize=36, crop=32, **changes)
    enc = load_encoder(path)
    export_encoder(path, "timm", tmp_path / "timm")
    model = load_timm(tmp_path / "timm")
    x = images(enc.arch)
    with torch.no_grad():
        close(model(x), enc(x))
        close(model.forward_features(x), enc.forward_features(x))
    data = timm.data.resolve_data_config(model=model)
    assert data["input_size"] == (3, 32, 32) and data["interpolation"] == "bicubic"
    assert data["mean"] == tuple(enc.config["preprocessing"]["mean"]) and data["crop_pct"] == 32 / 36


def test_timm_export_of_a_cnn(tmp_path):
    path = make_artifact(tmp_path / "enc", "rn50_tiny")
    enc = load_encoder(path)
    export_encoder(path, "timm", tmp_path / "timm")
    assert json.loads((tmp_path / "timm" / "timm_config.json").read_text())["architecture"] == "test_resnet"
    x = images(enc.arch, batch=2)
    with torch.no_grad():
        close(load_timm(tmp_path / "timm")(x), enc(x))


# ------------------------------------------------------------------------------------------------ errors


def one_line_error(fn, *args, match):
    with pytest.raises(UserError, match=match) as info:
        fn(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("to", ["hf", "open_clip"])
def test_cnn_artifact_to_clip_formats_is_a_one_line_error(tmp_path, to):
    path = make_artifact(tmp_path / "enc", "rn50_tiny")
    msg = one_line_error(export_encoder, path, to, tmp_path / "out", match="family 'vit'")
    assert str(path / "config.json") in msg and not (tmp_path / "out").exists()


def test_export_refuses_to_replace_an_unrelated_directory(tmp_path, plain_artifact):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    one_line_error(export_encoder, plain_artifact, "timm", tmp_path / "mine", match="refusing to replace")
    one_line_error(export_encoder, plain_artifact, "hf", plain_artifact, match="encoder artifact itself")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    export_encoder(plain_artifact, "timm", tmp_path / "t")
    export_encoder(plain_artifact, "timm", tmp_path / "t")  # a previous export of the same kind is replaced


def test_missing_files_and_wrong_shapes_are_one_line_errors(tmp_path, plain_artifact):
    one_line_error(export_encoder, tmp_path / "nope", "hf", tmp_path / "out", match="does not exist")
    one_line_error(export_encoder, plain_artifact, "onnx", tmp_path / "out", match="unknown export format")
    one_line_error(load_timm, tmp_path / "nope", match="timm_config.json: missing")
    export_encoder(plain_artifact, "timm", tmp_path / "t")
    export_encoder(plain_artifact, "open_clip", tmp_path / "oc")
    for file, key in ((tmp_path / "t" / "timm_model.safetensors", "pos_embed"),
                      (tmp_path / "oc" / "open_clip_model.safetensors", "positional_embedding")):  # fmt: skip
        tensors = load_file(file)
        tensors[key] = torch.zeros(3, 64)
        save_file(tensors, file)
    one_line_error(load_timm, tmp_path / "t", match=r"timm_model\.safetensors: does not match")
    one_line_error(load_open_clip_visual, tmp_path / "oc", match=r"open_clip_model\.safetensors: does not match")
    (tmp_path / "oc" / "open_clip_model.safetensors").unlink()
    one_line_error(load_open_clip_visual, tmp_path / "oc", match=r"open_clip_model\.safetensors: missing")


# --------------------------------------------------------------------------------------------------- CLI


def test_cli_export_and_import_round_trip(tmp_path, plain_artifact, capsys):
    assert main(["export", "--model", str(plain_artifact), "--to", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "preprocessor_config.json").is_file()
    assert main(["import", "--from", "hf", "--model", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 0
    assert "encoder artifact:" in capsys.readouterr().out
    enc, back = load_encoder(plain_artifact), load_encoder(tmp_path / "back")
    assert back.arch == enc.arch and back.config["provenance"]["method"] == "clip"
    x = images(enc.arch)
    with torch.no_grad():
        close(back(x), enc(x))
    for to in ("open_clip", "timm"):
        assert main(["export", "--model", str(plain_artifact), "--to", to, "--out", str(tmp_path / to)]) == 0
    assert (tmp_path / "open_clip" / "open_clip_model.safetensors").is_file()
    assert (tmp_path / "timm" / "timm_model.safetensors").is_file()


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "--model", "{tmp}/missing", "--to", "hf", "--out", "{tmp}/out"],
        ["import", "--from", "hf", "--model", "{tmp}/missing", "--out", "{tmp}/out"],
        ["import", "--from", "open_clip", "--model", "{tmp}/missing.safetensors", "--out", "{tmp}/out"],
    ],
)
def test_cli_bad_path_is_exit_2_with_one_line(tmp_path, capsys, argv):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "missing" in err

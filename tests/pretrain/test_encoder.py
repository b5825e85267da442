"""The encoder artifact: round trips, atomic replacement, and one-line errors that name the bad file."""

import dataclasses
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import pretrain.encoder as encoder_mod
from pretrain.encoder import (
    default_preprocess,
    load_encoder,
    read_config,
    save_encoder,
)
from pretrain.models.backbone import build_backbone
from pretrain.models.heads import SuperClassHead
from pretrain.models.presets import get_preset
from pretrain.runtime.errors import UserError

PROVENANCE = {"method": "superclass", "tokenizer": "openai_clip_bpe", "vocab_size": 49408, "samples_seen": 1024}


def trained_like(name: str, seed: int = 0) -> tuple:
    """A backbone with non-default weights (so a load that silently re-initialises cannot pass)."""
    torch.manual_seed(seed)
    arch = get_preset(name)
    model = build_backbone(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval(), arch


def save(path, model, arch, **kw):
    return save_encoder(path, model, arch, default_preprocess(arch), PROVENANCE, **kw)


def images(arch, batch=3):
    return torch.randn(batch, 3, arch.image_size, arch.image_size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("pool", ["avg", "token"])
def test_vit_round_trip_is_bit_identical(tmp_path, pool):
    model, arch = trained_like("vit_tiny")
    if pool == "token":
        arch = dataclasses.replace(arch, pool=pool)
        model = build_backbone(arch).eval()
    save(tmp_path / "enc", model, arch)
    enc = load_encoder(tmp_path / "enc")
    x = images(arch)
    with torch.no_grad():
        tokens = enc.forward_features(x)
        assert tokens.shape == (3, 17, arch.width)
        torch.testing.assert_close(tokens, model.forward_features(x), rtol=0, atol=0)
        torch.testing.assert_close(enc.forward_head(tokens), model(x), rtol=0, atol=0)
        torch.testing.assert_close(enc(x), model(x), rtol=0, atol=0)
    assert enc.arch == arch and not enc.training and enc.num_prefix_tokens == 1 and enc.num_features == arch.width


def test_config_json_contents(tmp_path):
    model, arch = trained_like("vit_tiny")
    save(tmp_path / "enc", model, arch)
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert config["format"] == "superclass-encoder" and config["version"] == 1
    assert config["architecture"] == dataclasses.asdict(arch)
    assert config["preprocessing"]["interpolation"] == "bicubic" and config["preprocessing"]["crop"] == 32
    assert config["provenance"] == PROVENANCE
    assert read_config(tmp_path / "enc") == config == load_encoder(tmp_path / "enc").config
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == ["config.json", "model.safetensors"]


def test_intermediates_give_layer_minus_two(tmp_path):
    model, arch = trained_like("vit_tiny")
    save(tmp_path / "enc", model, arch)
    enc = load_encoder(tmp_path / "enc")
    x = images(arch)
    with torch.no_grad():
        final, inter = enc.forward_intermediates(x, indices=[-2])
        torch.testing.assert_close(final, enc.forward_features(x), rtol=0, atol=0)
        hidden = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        for block in model.blocks[: arch.layers - 1]:
            hidden = block(hidden)
        assert len(inter) == 1 and inter[0].shape == (3, 16, arch.width)
        torch.testing.assert_close(inter[0], hidden[:, 1:], rtol=1e-5, atol=1e-6)
        maps = enc.forward_intermediates(x, indices=1, output_fmt="NCHW", intermediates_only=True)
        assert maps[0].shape == (3, arch.width, 4, 4)


@pytest.mark.parametrize("name", ["rn50_tiny", "convnext_t_tiny"])
def test_cnn_round_trip(tmp_path, name):
    model, arch = trained_like(name)
    save(tmp_path / "enc", model, arch)
    enc = load_encoder(tmp_path / "enc")
    x = images(arch)
    with torch.no_grad():
        tokens = enc.forward_features(x)
        fmap = model.forward_features(x)
        assert tokens.shape == (3, fmap.shape[2] * fmap.shape[3], arch.width) == (3, 4, arch.width)
        torch.testing.assert_close(tokens, fmap.flatten(2).transpose(1, 2), rtol=0, atol=0)
        torch.testing.assert_close(enc(x), model(x), rtol=0, atol=0)
        final, inter = enc.forward_intermediates(x, indices=1)
        torch.testing.assert_close(final, tokens, rtol=0, atol=0)
        assert inter[0].shape == tokens.shape
    assert enc.num_prefix_tokens == 0 and enc.load_head() is None


def test_head_and_idf_round_trip(tmp_path):
    model, arch = trained_like("vit_tiny")
    head = SuperClassHead(arch.width, 300)
    with torch.no_grad():
        head.norm.weight.add_(0.5)
    idf = {"cap_fq": torch.rand(1, 300, dtype=torch.float64), "num_samples": torch.tensor([[7.0]], dtype=torch.float64)}
    head_state = {**{f"head.{k}": v for k, v in head.state_dict().items()}, **{f"idf.{k}": v for k, v in idf.items()}}
    save(tmp_path / "enc", model, arch, head_state=head_state)
    loaded = load_encoder(tmp_path / "enc").load_head()
    assert loaded is not None
    head2, idf2 = loaded
    assert head2.vocab_size == 300 and head2.width == arch.width
    for k, v in head.state_dict().items():
        assert torch.equal(head2.state_dict()[k], v), k
    assert idf2.keys() == idf.keys() and all(torch.equal(idf2[k], idf[k]) for k in idf)
    assert idf2["cap_fq"].dtype == torch.float64
    with pytest.raises(ValueError, match="head_state keys"):
        save(tmp_path / "enc2", model, arch, head_state={"proj.weight": head.proj.weight})


def test_shared_and_non_contiguous_tensors_are_saved(tmp_path):
    model, arch = trained_like("vit_tiny")
    with torch.no_grad():
        model.blocks[1].norm1.weight = model.blocks[0].norm1.weight  # tied: one storage, two keys
        w = model.blocks[0].attn.proj.weight
        model.blocks[0].attn.proj.weight.data = w.detach().t().contiguous().t()  # same values, transposed layout
    assert not model.blocks[0].attn.proj.weight.is_contiguous()
    save(tmp_path / "enc", model, arch)
    enc = load_encoder(tmp_path / "enc")
    with torch.no_grad():
        torch.testing.assert_close(enc(images(arch)), model(images(arch)), rtol=0, atol=0)


def test_failed_write_leaves_the_old_artifact_intact(tmp_path, monkeypatch):
    old_model, arch = trained_like("vit_tiny", seed=0)
    new_model, _ = trained_like("vit_tiny", seed=1)
    target = tmp_path / "enc"
    save(target, old_model, arch)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def crash(tensors, filename, metadata=None):
        save_file(dict(list(tensors.items())[:2]), filename, metadata)  # a partial file ...
        raise OSError("disk full")  # ... then the failure

    monkeypatch.setattr(encoder_mod, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save(target, new_model, arch)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["enc"]  # no temp dir left behind
    monkeypatch.undo()
    save(target, new_model, arch)  # and a later save does replace it
    with torch.no_grad():
        torch.testing.assert_close(load_encoder(target)(images(arch)), new_model(images(arch)), rtol=0, atol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["enc"]


def test_refuses_to_replace_a_foreign_directory(tmp_path):
    model, arch = trained_like("vit_tiny")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not an encoder artifact"):
        save(tmp_path / "notes", model, arch)
    assert (tmp_path / "notes" / "thesis.tex").read_text() == "precious"
    with pytest.raises(UserError, match="provenance.method"):
        save_encoder(tmp_path / "x", model, arch, default_preprocess(arch), {"method": "mae"})
    with pytest.raises(UserError, match="preprocessing.mean"):
        save_encoder(tmp_path / "x", model, arch, {**default_preprocess(arch), "mean": [0.5]}, PROVENANCE)
    with pytest.raises(UserError, match="model.safetensors"):  # weights that are not this architecture
        save(tmp_path / "x", model, dataclasses.replace(arch, layers=3))
    assert not (tmp_path / "x").exists()


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_missing_and_malformed_artifacts_name_the_file(tmp_path):
    model, arch = trained_like("vit_tiny")
    enc_dir = tmp_path / "enc"
    with pytest.raises(UserError) as exc:
        load_encoder(enc_dir)
    assert str(enc_dir) in one_line(exc) and "does not exist" in str(exc.value)
    enc_dir.mkdir()
    with pytest.raises(UserError) as exc:
        load_encoder(enc_dir)
    assert str(enc_dir / "config.json") in one_line(exc)
    save(enc_dir, model, arch)
    (enc_dir / "model.safetensors").unlink()
    with pytest.raises(UserError) as exc:
        load_encoder(enc_dir)
    assert str(enc_dir / "model.safetensors") in one_line(exc) and "missing" in str(exc.value)
    (enc_dir / "model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(UserError) as exc:
        load_encoder(enc_dir)
    assert str(enc_dir / "model.safetensors") in one_line(exc)


def test_wrong_format_and_wrong_shapes_name_the_file(tmp_path):
    model, arch = trained_like("vit_tiny")
    enc_dir = tmp_path / "enc"
    save(enc_dir, model, arch)
    cfg_file = enc_dir / "config.json"
    config = json.loads(cfg_file.read_text())

    cfg_file.write_text(json.dumps({**config, "format": "open_clip"}))
    with pytest.raises(UserError, match="superclass-encoder") as exc:
        load_encoder(enc_dir)
    assert str(cfg_file) in one_line(exc)

    cfg_file.write_text("{not json")
    with pytest.raises(UserError) as exc:
        load_encoder(enc_dir)
    assert str(cfg_file) in one_line(exc)

    cfg_file.write_text(json.dumps({**config, "architecture": {**config["architecture"], "widht": 64}}))
    with pytest.raises(UserError, match="widht") as exc:
        load_encoder(enc_dir)
    assert str(cfg_file) in one_line(exc)

    cfg_file.write_text(json.dumps({**config, "architecture": {**config["architecture"], "width": 96, "heads": 3}}))
    with pytest.raises(UserError, match="wrong shape") as exc:
        load_encoder(enc_dir)
    assert str(enc_dir / "model.safetensors") in one_line(exc)

    cfg_file.write_text(json.dumps(config))
    tensors = load_file(enc_dir / "model.safetensors")
    del tensors["norm.bias"]
    tensors["extra.weight"] = torch.zeros(1)
    save_file(tensors, enc_dir / "model.safetensors")
    with pytest.raises(UserError, match="missing norm.bias; unexpected extra.weight") as exc:
        load_encoder(enc_dir)
    assert str(enc_dir / "model.safetensors") in one_line(exc)


def test_interrupted_swap_points_at_the_previous_artifact(tmp_path):
    model, arch = trained_like("vit_tiny")
    save(tmp_path / "enc", model, arch)
    (tmp_path / "enc").rename(tmp_path / ".enc.old-123-abc")  # killed between the two renames
    with pytest.raises(UserError, match=r"\.enc\.old-123-abc"):
        load_encoder(tmp_path / "enc")


def test_preprocess_is_the_eval_transform(tmp_path):
    model, arch = trained_like("vit_tiny")
    pre = {**default_preprocess(arch), "resize": 40, "crop": 32}
    save_encoder(tmp_path / "enc", model, arch, pre, PROVENANCE)
    enc = load_encoder(tmp_path / "enc")
    grey = Image.new("L", (80, 60), color=128)  # shortest side 60 -> 40, then a 32 crop
    out = enc.preprocess(grey)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    expected = (128 / 255 - torch.tensor(pre["mean"])) / torch.tensor(pre["std"])
    torch.testing.assert_close(out[:, 16, 16], expected, rtol=1e-5, atol=1e-5)
    batch = torch.stack([enc.preprocess(Image.new("RGBA", (50, 70))), out])
    assert enc(batch).shape == (2, arch.width)

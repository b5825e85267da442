"""The CLIP baseline model: shapes, normalisation, logit scale, EOT pooling, checkpointing."""

import math

import torch

from pretrain.models.backbone import build_backbone
from pretrain.models.clip import CLIPModel, TextConfig
from pretrain.models.presets import get_preset, get_text_preset

SOT, EOT = 49406, 49407


def tiny_clip(name="vit_tiny") -> CLIPModel:
    torch.manual_seed(0)
    arch = get_preset(name)
    return CLIPModel(build_backbone(arch), arch.width, get_text_preset("text_tiny"))


def captions(batch: int, cfg: TextConfig, seed: int = 0) -> torch.Tensor:
    """CLIP-tokenizer-shaped ids: SOT, a few words, EOT, zero padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(batch, cfg.context_length, dtype=torch.long)
    for i in range(batch):
        n = 3 + i
        ids[i, 0], ids[i, n + 1] = SOT, EOT
        ids[i, 1 : n + 1] = torch.randint(1, 49000, (n,), generator=g)
    return ids


def test_forward_shapes_normalisation_and_logit_scale():
    model = tiny_clip()
    cfg = model.text_cfg
    img, txt, scale = model(torch.randn(3, 3, 32, 32), captions(3, cfg))
    assert img.shape == txt.shape == (3, cfg.embed_dim)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(3))
    assert model.logit_scale.shape == (1,), "FSDP2's fully_shard rejects 0-dim parameters"
    assert math.isclose(model.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    assert scale.shape == () and math.isclose(scale.item(), 1 / 0.07, rel_tol=1e-5)
    raw = model.encode_image(torch.randn(3, 3, 32, 32), normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(3))
    assert model.image_proj.bias is None


def test_backward_reaches_every_parameter():
    for name in ("vit_tiny", "rn50_tiny"):
        model = tiny_clip(name).train()
        size = get_preset(name).image_size
        img, txt, scale = model(torch.randn(4, 3, size, size), captions(4, model.text_cfg))
        logits = scale * img @ txt.T
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(4))
        loss.backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (name, pname)


def test_text_pools_at_eot_and_ignores_padding():
    model = tiny_clip().eval()
    ids = captions(2, model.text_cfg)
    changed = ids.clone()
    changed[:, -5:] = 123  # tokens after EOT: the causal mask hides them from the EOT position
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(ids), model.encode_text(changed), rtol=0, atol=1e-6)


def test_grad_checkpointing_leaves_outputs_unchanged():
    model = tiny_clip().train()
    x, ids = torch.randn(2, 3, 32, 32), captions(2, model.text_cfg)
    ref = model(x, ids)
    model.set_grad_checkpointing(True)
    assert model.backbone.grad_checkpointing and model.text.transformer.grad_checkpointing
    out = model(x, ids)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_state_dicts_with_a_0dim_logit_scale_still_load():
    """Checkpoints written before the scale became [1] (and OpenCLIP's layout) hold it 0-dim."""
    model = tiny_clip()
    old = {k: v.clone() for k, v in model.state_dict().items()}
    old["logit_scale"] = torch.tensor(2.0)
    model.load_state_dict(old)
    assert model.logit_scale.shape == (1,) and model.logit_scale.item() == 2.0

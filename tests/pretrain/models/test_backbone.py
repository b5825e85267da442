"""Backbones: tiny flavours train, the ViT is CLIP-style, and it maps 1:1 onto OpenCLIP and HF CLIPVisionModel."""

import dataclasses

import open_clip.transformer
import pytest
import torch
import torch.nn as nn

from pretrain.exports.mapping import timm_to_hf, timm_to_open_clip
from pretrain.models.backbone import build_backbone
from pretrain.models.presets import get_preset

TINY = ["vit_tiny", "rn50_tiny", "convnext_t_tiny"]


def images(arch, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, arch.image_size, arch.image_size, generator=g)


@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    arch = get_preset(name)
    model = build_backbone(arch).train()
    out = model(images(arch))
    assert out.shape == (2, arch.width) and torch.isfinite(out).all()
    (out.square().mean() + out.mean()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


def test_vit_is_clip_style():
    arch = get_preset("vit_tiny")
    model = build_backbone(arch)
    assert model.patch_embed.proj.bias is None
    assert model.cls_token.shape == (1, 1, arch.width)
    assert model.pos_embed.shape == (1, 1 + (arch.image_size // arch.patch_size) ** 2, arch.width)  # incl. class
    assert isinstance(model.norm_pre, nn.LayerNorm) and model.norm_pre.eps == 1e-5
    assert isinstance(model.norm, nn.LayerNorm) and isinstance(model.fc_norm, nn.Identity)
    block = model.blocks[0]
    assert type(block.mlp.act) is nn.GELU and block.mlp.act.approximate == "none"
    assert block.attn.qkv.bias is not None and block.attn.fused_attn
    assert isinstance(block.attn.q_norm, nn.Identity) and isinstance(block.ls1, nn.Identity)
    assert isinstance(model.head, nn.Identity) and model.num_classes == 0


@pytest.mark.parametrize("name", ["vit_tiny", "rn50_tiny"])
def test_grad_checkpointing_leaves_outputs_and_grads_unchanged(name):
    torch.manual_seed(0)
    arch = get_preset(name)
    model = build_backbone(arch).train()
    x = images(arch)
    results = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        out = model(x)
        out.square().sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=1e-5)
    for g1, g0 in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-5)


def test_avg_pool_excludes_the_class_token_and_token_pool_takes_it():
    arch = get_preset("vit_tiny")
    model = build_backbone(arch).eval()
    with torch.no_grad():
        nn.init.normal_(model.cls_token, std=1.0)  # make the class token matter
        x = images(arch)
        tokens = model.forward_features(x)  # after the final norm, on all tokens
        assert tokens.shape == (2, 1 + 16, arch.width)
        # the final norm was applied to every token, the class token included
        torch.testing.assert_close(tokens.mean(-1), torch.zeros(2, 17) + model.norm.bias.mean(), atol=1e-5, rtol=0)
        hand = tokens[:, 1:].mean(dim=1)
        torch.testing.assert_close(model(x), hand, rtol=0, atol=1e-6)
        assert not torch.allclose(model(x), tokens.mean(dim=1), atol=1e-3)
        token_model = build_backbone(dataclasses.replace(arch, pool="token")).eval()
        token_model.load_state_dict(model.state_dict())
        torch.testing.assert_close(token_model(x), tokens[:, 0], rtol=0, atol=0)


def randomised_vit(arch):
    """A tiny ViT with every tensor random (so a swapped or ignored weight cannot hide)."""
    torch.manual_seed(0)
    model = build_backbone(arch).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.ndim == 1 and p.shape[0] == arch.width else 0.0))
    return model


def test_matches_openclip_vision_transformer():
    arch = get_preset("vit_tiny")
    ours = randomised_vit(arch)
    theirs = open_clip.transformer.VisionTransformer(
        arch.image_size, arch.patch_size, arch.width, arch.layers, arch.heads, arch.mlp_ratio, output_dim=0,
        pool_type="avg",
    ).eval()  # fmt: skip
    missing, unexpected = theirs.load_state_dict(timm_to_open_clip(ours.state_dict()), strict=False)
    assert missing == ["proj"] and unexpected == []  # proj is [width, 0]: SuperClass has no projection
    theirs.proj = None  # what `embed_dim: 0` means in the official code: the pooled feature is the output
    x = images(arch)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)


def test_matches_hf_clip_vision_model_hidden_states():
    transformers = pytest.importorskip("transformers")
    arch = dataclasses.replace(get_preset("vit_tiny"), pool="token")
    ours = randomised_vit(arch)
    config = transformers.CLIPVisionConfig(
        hidden_size=arch.width,
        intermediate_size=int(arch.width * arch.mlp_ratio),
        num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads,
        image_size=arch.image_size,
        patch_size=arch.patch_size,
        hidden_act="gelu",  # NOT the quick_gelu default
        layer_norm_eps=arch.ln_eps,
    )
    hf = transformers.CLIPVisionModel(config).eval()
    hf.load_state_dict(timm_to_hf(ours.state_dict()), strict=True)
    x = images(arch)
    with torch.no_grad():
        out = hf(pixel_values=x, output_hidden_states=True)
        _, inter = ours.forward_intermediates(x, indices=[-2], output_fmt="NLC", return_prefix_tokens=True)
        patches, prefix = inter[0]
        layer_m2 = torch.cat([prefix, patches], dim=1)  # LLaVA's layer -2, class token included
        torch.testing.assert_close(layer_m2, out.hidden_states[-2], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours(x), out.pooler_output, rtol=1e-4, atol=1e-5)  # ln_post(class token)

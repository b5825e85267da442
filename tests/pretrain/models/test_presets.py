"""Presets: the registry, the config contract, and parameter counts of the paper's sizes against known numbers."""

import dataclasses

import open_clip.transformer
import pytest
import torch

from pretrain.models.backbone import build_backbone
from pretrain.models.heads import SuperClassHead
from pretrain.models.presets import PRESETS, TEXT_PRESETS, ArchConfig, get_preset, get_text_preset
from pretrain.runtime.config import from_dict, to_dict
from pretrain.runtime.errors import ConfigError


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_unknown_preset_lists_known_names():
    with pytest.raises(ConfigError, match="vit_b16") as exc:
        get_preset("vit_huge")
    assert "vit_huge" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ConfigError, match="text_tiny"):
        get_text_preset("nope")


def test_presets_round_trip_through_config_dicts():
    for name, arch in PRESETS.items():
        assert from_dict(ArchConfig, to_dict(arch)) == arch, name
        assert get_preset(name) == arch and get_preset(name) is not arch
    for cfg in TEXT_PRESETS.values():
        assert from_dict(type(cfg), to_dict(cfg)) == cfg


def test_arch_config_validation():
    with pytest.raises(ConfigError, match="patch_size"):
        ArchConfig(image_size=224, patch_size=15)
    with pytest.raises(ConfigError, match="heads"):
        ArchConfig(width=100, heads=12)
    with pytest.raises(ConfigError, match="class_token"):
        ArchConfig(pool="token", class_token=False)
    with pytest.raises(ConfigError, match="timm_name"):
        ArchConfig(family="timm")
    with pytest.raises(ConfigError, match="num_features"):
        build_backbone(dataclasses.replace(get_preset("rn50_tiny"), width=123))
    with pytest.raises(ConfigError, match="timm_name"):
        build_backbone(ArchConfig(family="timm", timm_name="no_such_net"))


def openclip_visual(arch: ArchConfig) -> torch.nn.Module:
    """OpenCLIP's own ViT of the same size, with no output projection (SuperClass has `embed_dim: 0`)."""
    return open_clip.transformer.VisionTransformer(
        arch.image_size, arch.patch_size, arch.width, arch.layers, arch.heads, arch.mlp_ratio, output_dim=0
    )


@pytest.mark.parametrize("name", ["vit_s16", "vit_b16", "vit_l16", "vit_l14"])
def test_vit_parameter_counts_match_openclip(name):
    arch = get_preset(name)
    with torch.device("meta"):
        ours, theirs = build_backbone(arch), openclip_visual(arch)
    assert n_params(ours) == n_params(theirs) - theirs.proj.numel()


def test_known_parameter_counts():
    with torch.device("meta"):
        assert n_params(build_backbone(get_preset("vit_b16"))) == 85_799_424  # ≈85.8M, OpenCLIP B/16 minus proj
        head = SuperClassHead(768, 49408)
        assert head.proj.weight.numel() == 37_945_344  # the ≈37.9M of official-code.md
        assert n_params(head) == 37_945_344 + 49408 + 2 * 768
        assert n_params(build_backbone(get_preset("rn50"))) == 23_508_032
        assert n_params(build_backbone(get_preset("convnext_t"))) == 27_820_128

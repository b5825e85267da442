"""Named architecture presets: one dial (the name) picks the encoder size; each family has a tiny test flavour.

The ViT presets are CLIP-style (class token, ln_pre, no patch-embed bias, exact GELU, LayerNorm eps 1e-5) so
they map 1:1 onto OpenCLIP's `VisionTransformer` and HF `CLIPVisionModel`. The paper's sizes: S/16, B/16,
L/16, L/14 at 224 px, plus RN-50 and ConvNeXt-T (Table 10) built by timm.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from pretrain.runtime.errors import ConfigError


@dataclass(frozen=True)
class ArchConfig:
    """The encoder architecture; written verbatim into the artifact's `config.json` as `architecture`."""

    family: Literal["vit", "timm"] = "vit"  # "vit": our CLIP-style ViT; "timm": any timm model by `timm_name` (CNNs)
    image_size: int = 224  # square input resolution in pixels
    patch_size: int = 16  # ViT patch size; for the timm family the network's total stride (informational)
    width: int = 768  # token / pooled feature dimension (for the timm family: the model's `num_features`)
    layers: int = 12  # transformer blocks (0 for the timm family)
    heads: int = 12  # attention heads (0 for the timm family)
    mlp_ratio: float = 4.0  # MLP hidden size = width * mlp_ratio
    act: str = "gelu"  # MLP activation: "gelu" (exact, nn.GELU, as OpenCLIP) or "quick_gelu" (OpenAI CLIP)
    class_token: bool = True  # prepend a learned class token (with its own position embedding)
    pool: Literal["avg", "token"] = "avg"  # "avg": mean of patch tokens (SuperClass); "token": the class token
    ln_eps: float = 1e-5  # LayerNorm epsilon (1e-5 = nn.LayerNorm default = HF CLIP layer_norm_eps)
    timm_name: str = ""  # timm model name for family "timm", e.g. "resnet50"; empty for "vit"

    def __post_init__(self) -> None:
        if self.family == "vit":
            if self.image_size % self.patch_size:
                raise ConfigError(
                    f"architecture: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
                )
            if self.heads <= 0 or self.width % self.heads:
                raise ConfigError(f"architecture: width {self.width} is not divisible by heads {self.heads}")
            if self.pool == "token" and not self.class_token:
                raise ConfigError("architecture: pool 'token' needs class_token: true")
        elif not self.timm_name:
            raise ConfigError("architecture: family 'timm' needs a timm_name (e.g. 'resnet50')")

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens in `forward_features` (the class token, ViT only)."""
        return int(self.family == "vit" and self.class_token)


def _vit(width: int, layers: int, heads: int, patch: int = 16, size: int = 224) -> ArchConfig:
    return ArchConfig("vit", size, patch, width, layers, heads)


def _cnn(timm_name: str, width: int, size: int = 224) -> ArchConfig:
    return ArchConfig("timm", size, 32, width, 0, 0, timm_name=timm_name)


PRESETS: dict[str, ArchConfig] = {
    # tests and the CPU demo: 32 px, 4x4 = 16 patches, ~0.1M parameters
    "vit_tiny": _vit(width=64, layers=2, heads=2, patch=8, size=32),
    "vit_s16": _vit(width=384, layers=12, heads=6),
    "vit_b16": _vit(width=768, layers=12, heads=12),
    "vit_l16": _vit(width=1024, layers=24, heads=16),
    "vit_l14": _vit(width=1024, layers=24, heads=16, patch=14),
    "rn50": _cnn("resnet50", 2048),
    "convnext_t": _cnn("convnext_tiny", 768),
    # tiny flavours of the CNN family: timm's own test models (~0.2-0.4M parameters), 64 px -> a 2x2 map
    "rn50_tiny": _cnn("test_resnet", 96, size=64),
    "convnext_t_tiny": _cnn("test_convnext", 64, size=64),
}


def get_preset(name: str) -> ArchConfig:
    """The architecture registered under `name` (a ConfigError lists the known names otherwise)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown architecture preset '{name}' (known: {', '.join(PRESETS)})")
    return dataclasses.replace(PRESETS[name])


@dataclass(frozen=True)
class TextConfig:
    """The CLIP text tower (OpenCLIP `TextTransformer`): causal, EOT pooling, projection to `embed_dim`."""

    context_length: int = 77  # tokens per caption (CLIP BPE tokenizer: SOT + text + EOT, zero-padded)
    vocab_size: int = 49408  # CLIP BPE vocabulary incl. SOT 49406 / EOT 49407
    width: int = 512  # transformer width
    heads: int = 8  # attention heads
    layers: int = 12  # transformer blocks
    embed_dim: int = 512  # joint image-text embedding dimension (both projections end here)


TEXT_PRESETS: dict[str, TextConfig] = {
    "text_tiny": TextConfig(width=32, heads=2, layers=1, embed_dim=32),  # tests and the CPU demo
    "text_b": TextConfig(),  # OpenCLIP ViT-B-16 text tower
    "text_l": TextConfig(width=768, heads=12, embed_dim=768),  # OpenCLIP ViT-L-14 / ViT-L-16 text tower
}


def get_text_preset(name: str) -> TextConfig:
    """The text tower registered under `name` (a ConfigError lists the known names otherwise)."""
    if name not in TEXT_PRESETS:
        raise ConfigError(f"unknown text preset '{name}' (known: {', '.join(TEXT_PRESETS)})")
    return dataclasses.replace(TEXT_PRESETS[name])

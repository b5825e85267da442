"""Encoder architectures: presets, timm backbones, the SuperClass head and the CLIP baseline model."""

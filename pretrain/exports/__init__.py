"""The exporters and importers behind `pretrain.export` (one module per format, plus the key mappings)."""

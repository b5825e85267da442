"""Export an encoder artifact to the formats the field loads, and import CLIP towers back as artifacts.

usage: superclass pretrain export --model ENCODER_DIR --to hf|open_clip|timm --out DIR
       superclass pretrain import --from hf|open_clip --model PATH --out ENCODER_DIR [--arch NAME] [--arch-config JSON]
           [--pool P] [--idf-batch-size B]

Exports (each gives the artifact's features, max abs diff <= 1e-4 in fp32, tested):
    hf         HF `CLIPVisionModel` directory + `CLIPImageProcessor` (LLaVA, vLLM, lmms-eval); pooled feature via
               `hf_pooled(outputs, model, pool)`: HF norms only the class token for `pooler_output`
    open_clip  OpenCLIP `VisionTransformer` weights + `open_clip_config.json`; `load_open_clip_visual(dir)`
    timm       timm state dict + `timm_config.json` (any artifact, CNNs too); `load_timm(dir)`
Imports: an HF `CLIPVisionModel` / `CLIPModel` directory, or an OpenCLIP checkpoint (directory, or weights file
with a model config JSON or open_clip model name); a checkpoint of the official SuperClass code (x-cls/superclass)
is recognised by its keys and brings its head and IDF statistics (pretrain/exports/official.py). Projections are
not part of the backbone and are left out;
the provenance says so. QuickGELU (OpenAI weights) is carried as `act: quick_gelu`.

The formats live in `pretrain/exports/` (hf.py, openclip.py, timm_format.py; mapping.py holds the weight-name
mappings between our timm ViT, OpenCLIP and HF CLIP).
"""

from __future__ import annotations

from pathlib import Path

from pretrain.exports.hf import export_hf, hf_image_processor, hf_pooled, hf_vision_config, import_hf
from pretrain.exports.mapping import hf_to_timm, open_clip_to_timm, timm_to_hf, timm_to_open_clip
from pretrain.exports.openclip import export_open_clip, import_open_clip, load_open_clip_visual, open_clip_model_cfg
from pretrain.exports.timm_format import export_timm, load_timm, timm_model_args
from pretrain.runtime.errors import UserError

EXPORT_FORMATS = ("hf", "open_clip", "timm")
IMPORT_FORMATS = ("hf", "open_clip")

__all__ = [
    "EXPORT_FORMATS",
    "IMPORT_FORMATS",
    "export_encoder",
    "export_hf",
    "export_open_clip",
    "export_timm",
    "hf_image_processor",
    "hf_pooled",
    "hf_to_timm",
    "hf_vision_config",
    "import_encoder",
    "import_hf",
    "import_open_clip",
    "load_open_clip_visual",
    "load_timm",
    "open_clip_model_cfg",
    "open_clip_to_timm",
    "timm_model_args",
    "timm_to_hf",
    "timm_to_open_clip",
]


def export_encoder(encoder_dir: str | Path, to: str, out: str | Path) -> Path:
    """Write the artifact at `encoder_dir` in format `to` (hf | open_clip | timm) to the directory `out`."""
    exporters = {"hf": export_hf, "open_clip": export_open_clip, "timm": export_timm}
    if to not in exporters:
        raise UserError(f"--to: unknown export format '{to}' (expected one of {list(EXPORT_FORMATS)})")
    if Path(out).absolute() == Path(encoder_dir).absolute():
        raise UserError(f"--out {out}: is the encoder artifact itself; choose another directory")
    return exporters[to](encoder_dir, out)


def import_encoder(
    source: str,
    path: str | Path,
    out: str | Path,
    config: str | Path | None = None,
    model_name: str | None = None,
    pool: str | None = None,
    idf_batch_size: int | None = None,
) -> Path:
    """Write the CLIP vision tower at `path` (format `source`: hf | open_clip) as an encoder artifact `out`.

    `config` / `model_name`: the OpenCLIP model config when `path` is a bare weights file. `pool`: "avg" or
    "token"; default: what the source records (`superclass_pool` / `pool_type`; avg for a checkpoint of the
    official SuperClass code), else "token" (CLIP's). `idf_batch_size`: an official checkpoint's global batch size.
    """
    if source == "hf":
        if config or model_name or idf_batch_size:
            raise UserError(
                "--arch-config / --arch / --idf-batch-size apply to --from open_clip only "
                "(an HF directory has its config.json)"
            )
        return import_hf(path, out, pool=pool)
    if source == "open_clip":
        return import_open_clip(path, out, config, model_name, pool, idf_batch_size)
    raise UserError(f"--from: unknown import format '{source}' (expected one of {list(IMPORT_FORMATS)})")

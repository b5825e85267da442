"""The llava-hf form: LLaVA directories for tools pinned to transformers 4.x (older lmms-eval, vLLM, serving stacks).

transformers 5 saves the CLIP tower without `vision_model.` and writes config and processor files that 4.x cannot
parse. This form writes what llava-hf's hub checkpoints hold:
- weights under `vision_tower.vision_model.*`, `language_model.model.*`, `language_model.lm_head.weight` and
  `multi_modal_projector.*`, in 5 GB safetensors shards with an index;
- config.json with the 4.x keys besides the 5.x ones: `torch_dtype`, and the LLM's `rope_theta` / `rope_scaling`
  (5.x keeps them in `rope_parameters`);
- a flat processor_config.json (5.x nests the image processor and tokenizer in it), tokenizer_config.json with
  `tokenizer_class: PreTrainedTokenizerFast` (5.x writes `TokenizersBackend`), `additional_special_tokens` and
  `model_input_names` without `token_type_ids`;
- preprocessor_config.json as `LlavaImageProcessor` (transformers >= 4.49; `do_pad` is LLaVA's pad-to-square) or,
  with `image_processor="clip"`, as `CLIPImageProcessor`, which every 4.x reads but which centre-crops (as
  llava-hf's own checkpoints do) instead of padding.
Checked by hand: a tiny export loads in transformers 4.46.3 (CLIP processor) and 4.57 with the same logits as 5.x
(`tests/vlm/test_vlm_llava_hf_form.py` repeats it when `TRANSFORMERS4_PYTHON` names such an interpreter).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from pretrain.exports.mapping import HF_PREFIX
from pretrain.runtime.atomic import plain_tensors

IMAGE_PROCESSORS = {"llava": "LlavaImageProcessor", "clip": "CLIPImageProcessor"}
NESTED_PROCESSOR_KEYS = ("image_processor", "tokenizer", "video_processor", "feature_extractor")


def llava_hf_name(key: str) -> str:
    """A transformers 5.x `LlavaForConditionalGeneration` parameter name -> its llava-hf (4.x) checkpoint name."""
    renames = (
        ("model.vision_tower.", "vision_tower." + HF_PREFIX),
        ("model.language_model.", "language_model.model."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("lm_head.", "language_model.lm_head."),
    )
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old) :]
    raise KeyError(f"{key!r} is not a LlavaForConditionalGeneration parameter name")


def save_llava_hf(
    model: Any, processor: Any, state: dict[str, torch.Tensor], out: Path, image_processor: str = "llava"
) -> None:
    """Weights, configs and processor files of `model` in the llava-hf form into the (empty) directory `out`."""
    if image_processor not in IMAGE_PROCESSORS:
        raise ValueError(f"image_processor {image_processor!r}: expected one of {list(IMAGE_PROCESSORS)}")
    _save_weights(state, out)
    model.config.architectures = ["LlavaForConditionalGeneration"]
    model.config.save_pretrained(out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    processor.save_pretrained(out)
    processor.image_processor.save_pretrained(out)  # preprocessor_config.json, where 4.x looks for it
    _edit_json(out / "config.json", _legacy_config)
    _edit_json(out / "processor_config.json", _flat_processor)
    _edit_json(out / "tokenizer_config.json", _legacy_tokenizer)
    _edit_json(out / "preprocessor_config.json", lambda cfg: _image_processor(cfg, IMAGE_PROCESSORS[image_processor]))


def _save_weights(state: dict[str, torch.Tensor], out: Path) -> None:
    save_sharded({llava_hf_name(k): v for k, v in state.items()}, out)


def save_sharded(state: dict[str, torch.Tensor], out: Path) -> None:
    """`state` (already under its checkpoint names) as 5 GB safetensors shards with an index, as HF saves them."""
    from huggingface_hub import split_torch_state_dict_into_shards

    tensors = plain_tensors(state)
    split = split_torch_state_dict_into_shards(tensors, max_shard_size="5GB")
    for file, names in split.filename_to_tensors.items():
        save_file({n: tensors[n] for n in names}, str(out / file), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())}}
        index["weight_map"] = split.tensor_to_filename
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    if path.is_file():
        path.write_text(json.dumps(edit(json.loads(path.read_text())), indent=2, sort_keys=True) + "\n")


def _legacy_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Add 4.x's names for what 5.x renamed, in the config and its sub-configs (text_config, vision_config)."""
    out = {k: _legacy_config(v) if isinstance(v, dict) and k.endswith("_config") else v for k, v in cfg.items()}
    if "dtype" in out:
        out.setdefault("torch_dtype", out["dtype"])
    rope = out.get("rope_parameters")
    if isinstance(rope, dict):
        out.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
        if rope.get("rope_type", "default") != "default":
            out.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    return out


def _flat_processor(cfg: dict[str, Any]) -> dict[str, Any]:
    """4.x passes every processor_config.json key to `LlavaProcessor(...)`: keep its own kwargs only."""
    return {k: v for k, v in cfg.items() if k not in NESTED_PROCESSOR_KEYS}


def _legacy_tokenizer(cfg: dict[str, Any]) -> dict[str, Any]:
    """A tokenizer_config.json 4.x's AutoTokenizer reads: the fast tokenizer of tokenizer.json, plain token lists."""
    out = {k: v for k, v in cfg.items() if k not in ("backend", "is_local", "local_files_only")}
    out["tokenizer_class"] = "PreTrainedTokenizerFast"
    out["model_input_names"] = ["input_ids", "attention_mask"]  # 4.x's default adds token_type_ids, which LLaVA refuses
    extra = out.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        out["additional_special_tokens"] = [t for t in extra if isinstance(t, str)]
    elif isinstance(extra, dict) and extra:
        out["extra_special_tokens"] = extra
    return out


def _image_processor(cfg: dict[str, Any], kind: str) -> dict[str, Any]:
    out = {**cfg, "image_processor_type": kind, "processor_class": "LlavaProcessor"}
    if kind == "CLIPImageProcessor":
        out.pop("do_pad", None)  # CLIP's processor has no padding
    return out

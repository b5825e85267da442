"""An HF LLaVA directory: save a model + processor (atomically, in either HF form) and load one back.

The forms (`HF_FORMS`): "hf", what transformers 5.x's `save_pretrained` writes; "llava-hf", the llava-hf hub form
transformers 4.x tools read (`vlm.llava_hf_form`). 5.x loads both. Every save puts back the tokenizer files transformers
5 leaves out (`vlm.tokenizer_files`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch

from pretrain.exports.common import from_pretrained_complete, write_export
from pretrain.runtime.errors import UserError
from vlm.llava_hf_form import IMAGE_PROCESSORS, save_llava_hf
from vlm.templates import VICUNA_CHAT_TEMPLATE
from vlm.tokenizer_files import keep_tokenizer_files

HF_FORMS = ("hf", "llava-hf")


def save_llava(
    model: Any,
    processor: Any,
    out: str | Path,
    form: Literal["hf", "llava-hf"] = "hf",
    state_dict: dict[str, torch.Tensor] | None = None,
    image_processor: str = "llava",
) -> Path:
    """Write model + processor as an HF LLaVA directory `out`, atomically; returns `out`.

    `form` "hf": what transformers 5.x's `save_pretrained` writes (its own legacy renaming, but the CLIP tower
    without `vision_model.`); "llava-hf": the llava-hf hub form transformers 4.x tools read (`vlm.llava_hf_form`;
    `image_processor` "llava" pads as LLaVA and needs transformers >= 4.49, "clip" loads in every 4.x but
    centre-crops); 5.x loads both. `state_dict`: tensors under the model's own (5.x) names to save instead of
    `model.state_dict()` (e.g. gathered from FSDP2 shards).
    """
    if form not in HF_FORMS:
        raise UserError(f"HF form {form!r}: expected one of {list(HF_FORMS)}")
    if image_processor not in IMAGE_PROCESSORS:
        raise UserError(f"image processor {image_processor!r}: expected one of {list(IMAGE_PROCESSORS)}")

    def write(tmp: Path) -> None:
        if processor.chat_template is None:  # e.g. a directory written before the template was added
            processor.chat_template = processor.tokenizer.chat_template = VICUNA_CHAT_TEMPLATE
        if form == "hf":
            model.save_pretrained(tmp, state_dict=state_dict)
            processor.save_pretrained(tmp)
        else:
            state = state_dict if state_dict is not None else model.state_dict()
            save_llava_hf(model, processor, state, tmp, image_processor)
        keep_tokenizer_files(processor.tokenizer, tmp)

    return write_export(out, write, _is_llava_dir)


def load_llava(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[Any, Any]:
    """(model in eval mode on `device`, processor) from an HF LLaVA directory; `dtype` None keeps the saved one."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    path = Path(path)
    if not _is_llava_dir(path):
        raise UserError(f"{path / 'config.json'}: missing or not a LLaVA config (expected model_type 'llava')")
    model = from_pretrained_complete(LlavaForConditionalGeneration, path, "LLaVA model", dtype=dtype or "auto")
    return model.to(device).eval(), AutoProcessor.from_pretrained(path)


def _model_type(path: str | Path) -> str | None:
    """The `model_type` of the HF config.json in `path` (None when there is none or it is unreadable)."""
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def _is_llava_dir(path: Path) -> bool:
    """Whether `path` holds an HF LLaVA config.json (what load and a guarded overwrite accept)."""
    return _model_type(path) == "llava"


def save_language_model(llava_dir: str | Path, out: str | Path) -> Path:
    """The LLM of an HF LLaVA directory as a causal-LM directory (weights + tokenizer, `<image>` included), atomically.

    What `model.llm` accepts: a LLaVA trained on one encoder hands its language model to a LLaVA on another (the
    demo tunes its tiny LLaMA on text once, then builds both encoders' LLaVAs on it).
    """
    from transformers import AutoModelForCausalLM

    model, processor = load_llava(llava_dir)
    lm = AutoModelForCausalLM.from_config(model.config.text_config, dtype=model.dtype)
    lm.model.load_state_dict(model.model.language_model.state_dict())
    lm.lm_head.load_state_dict(model.lm_head.state_dict())

    def write(tmp: Path) -> None:
        lm.save_pretrained(tmp)
        processor.tokenizer.save_pretrained(tmp)
        keep_tokenizer_files(processor.tokenizer, tmp)

    return write_export(out, write, lambda path: _model_type(path) == lm.config.model_type)

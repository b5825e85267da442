"""Greedy answers from an HF LLaVA, one prompt at a time: `vlm chat` uses it, and so does eval's batched runner.

`greedy_ids(model, processor, prompt, image, max_new_tokens)` runs `model.generate(do_sample=False)` on one prompt
(batch 1, no padding) and returns the new ids before the first stop token; `greedy_answer` decodes them. The stop
tokens are EOS plus `</s>` when it is one token (Vicuna's turn end), so every answer stops where LLaVA's would.
The decoding helpers here (stop tokens, the generation config, trimming, decoding, moving inputs to the model) are
the ones `eval.generation` uses for its left-padded batches, which the eval tests check equal to `greedy_ids`
token for token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

STOP_STRING = "</s>"


def stop_token_ids(tokenizer: Any) -> list[int]:
    """EOS plus `</s>` when it is one token (Vicuna's turn end), so every row stops where LLaVA's would."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    sep = tokenizer.convert_tokens_to_ids(STOP_STRING)
    if isinstance(sep, int) and sep != tokenizer.unk_token_id and sep not in ids:
        ids.append(sep)
    return ids


def greedy_config(tokenizer: Any, max_new_tokens: int) -> Any:
    """Plain greedy decoding; the model dir's own generation_config.json (sampling, max_length) is not used."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
    )  # fmt: skip


def trim_at_stop(ids: Sequence[int], stop_ids: Sequence[int], limit: int) -> list[int]:
    """The generated ids before the first stop token, at most `limit` of them (pads after EOS are dropped)."""
    out = []
    for token in list(ids)[:limit]:
        if token in stop_ids:
            break
        out.append(int(token))
    return out


def decode_answer(tokenizer: Any, ids: Sequence[int]) -> str:
    """The answer text: special tokens dropped, cut at a textual `</s>`, stripped."""
    return tokenizer.decode(list(ids), skip_special_tokens=True).split(STOP_STRING)[0].strip()


def to_model(inputs: dict[str, torch.Tensor], model: Any) -> dict[str, torch.Tensor]:
    """Inputs on the model's device, pixel values in its dtype (bf16 on CUDA)."""
    out = {k: v.to(model.device, non_blocking=True) for k, v in inputs.items()}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(model.dtype)
    return out


@torch.inference_mode()
def greedy_ids(model: Any, processor: Any, prompt: str, image: Any | None, max_new_tokens: int) -> list[int]:
    """HF generate on this prompt alone (batch 1, no padding): the new ids before the stop token."""
    images = [image] if image is not None else None
    inputs = to_model(dict(processor(images=images, text=[prompt], return_tensors="pt")), model)
    out = model.generate(**inputs, generation_config=greedy_config(processor.tokenizer, max_new_tokens))
    return trim_at_stop(out[0, inputs["input_ids"].shape[1] :].tolist(), stop_token_ids(processor.tokenizer), 10**9)


def greedy_answer(model: Any, processor: Any, prompt: str, image: Any | None, max_new_tokens: int) -> str:
    """The answer text of `greedy_ids` (special tokens dropped, cut at `</s>`, stripped)."""
    return decode_answer(processor.tokenizer, greedy_ids(model, processor, prompt, image, max_new_tokens))

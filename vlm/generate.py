"""Greedy answers from an HF LLaVA, one prompt at a time: `vlm chat` uses it, and so does eval's batched runner.

`greedy_ids(model, processor, prompt, image, max_new_tokens)` runs `model.generate(do_sample=False)` on one prompt
(batch 1, no padding) and returns the new ids before the first stop token; `greedy_answer` decodes them. The stop
tokens are EOS plus `</s>` when it is one token (Vicuna's turn end), so every answer stops where LLaVA's would.
The decoding helpers here (stop tokens, the generation config, trimming, decoding, moving inputs to the model) are
the ones `eval.vlm.generation` uses for its left-padded batches, which the eval tests check equal to `greedy_ids`
token for token. `prompt_inputs` builds the model inputs of both: token ids as LLaVA's `tokenizer_image_token`
makes them (`vlm.templates.image_token_ids`), which a processor's whole-string tokenization does not for
`legacy: false` SentencePiece tokenizers, then the `<image>` id repeated once per image token and the processor's
pixel values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vlm.templates import IMAGE_TOKEN, image_token_ids

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


def image_seq_length(processor: Any, pixel_values: torch.Tensor) -> int:
    """Positions one image takes in the LLM, as `LlavaProcessor` counts them (patches, + class token for "full")."""
    height, width = pixel_values.shape[-2:]
    n = (height // processor.patch_size) * (width // processor.patch_size) + processor.num_additional_image_tokens
    return n - int(processor.vision_feature_select_strategy == "default")


def prompt_inputs(processor: Any, prompts: Sequence[str], images: Sequence[Any] | None) -> dict[str, torch.Tensor]:
    """Padded CPU inputs (the tokenizer's padding side) for `prompts`; `images` go to the `<image>`s in order."""
    tokenizer = processor.tokenizer
    pixels = processor.image_processor(list(images), return_tensors="pt")["pixel_values"] if images else None
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    n = image_seq_length(processor, pixels) if pixels is not None else 0
    rows = [[t for token in image_token_ids(p, tokenizer) for t in ([token] * n if token == image_id else [token])]
            for p in prompts]  # fmt: skip
    found = sum(row.count(image_id) for row in rows) // max(n, 1)
    if found != (len(pixels) if pixels is not None else 0):
        raise ValueError(f"{found} '{IMAGE_TOKEN}' placeholders in the prompts for {len(images or [])} images")
    length = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        cols = slice(length - len(row), length) if tokenizer.padding_side == "left" else slice(0, len(row))
        input_ids[i, cols], attention_mask[i, cols] = torch.tensor(row), 1
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    if pixels is not None:
        out["pixel_values"] = pixels
    return out


@torch.inference_mode()
def greedy_ids(model: Any, processor: Any, prompt: str, image: Any | None, max_new_tokens: int) -> list[int]:
    """HF generate on this prompt alone (batch 1, no padding): the new ids before the stop token."""
    inputs = to_model(prompt_inputs(processor, [prompt], [image] if image is not None else None), model)
    out = model.generate(**inputs, generation_config=greedy_config(processor.tokenizer, max_new_tokens))
    return trim_at_stop(out[0, inputs["input_ids"].shape[1] :].tolist(), stop_token_ids(processor.tokenizer), 10**9)


def greedy_answer(model: Any, processor: Any, prompt: str, image: Any | None, max_new_tokens: int) -> str:
    """The answer text of `greedy_ids` (special tokens dropped, cut at `</s>`, stripped)."""
    return decode_answer(processor.tokenizer, greedy_ids(model, processor, prompt, image, max_new_tokens))

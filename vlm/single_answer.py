"""An HF LLaVA's answer to one prompt (batch 1): greedy (`vlm chat`) or streamed (`vlm serve`).

Eval's batched runner (`eval.vlm.generation`: many prompts, left-padded) reuses the decoding helpers here.

`greedy_ids(model, processor, prompt, image, max_new_tokens)` runs `model.generate(do_sample=False)` on one prompt
(batch 1, no padding) and returns the new ids before the first stop token; `greedy_answer` decodes them. The stop
tokens are EOS plus `</s>` when it is one token (Vicuna's turn end), so every answer stops where LLaVA's would.
The decoding helpers here (stop tokens, the generation config, trimming, decoding, moving inputs to the model) are
the ones `eval.vlm.generation` uses for its left-padded batches, which the eval tests check equal to `greedy_ids`
token for token. `prompt_inputs` builds the model inputs of both: token ids as LLaVA's `tokenizer_image_token`
makes them (`vlm.templates.image_token_ids`), which a processor's whole-string tokenization does not for
`legacy: false` SentencePiece tokenizers, then the `<image>` id repeated once per image token and the processor's
pixel values.
`stream_answer` runs the same generate in a thread and yields the answer after each new token (`vlm serve`): at
temperature 0 its last text is `greedy_answer`'s.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from vlm.templates import IMAGE_TOKEN, image_token_ids

STOP_STRING = "</s>"
PARTIAL_CHARACTER = "\ufffd"  # what decoding shows for the first bytes of a character split over tokens


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


def sampling_config(tokenizer: Any, max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0) -> Any:
    """`greedy_config` at temperature 0; otherwise nucleus sampling at `temperature` and `top_p` (LLaVA's demo)."""
    config = greedy_config(tokenizer, max_new_tokens)
    if temperature > 0:
        config.do_sample, config.temperature, config.top_p = True, temperature, top_p
    return config


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


class _TokenQueue:
    """A generate streamer (put/end): the new ids of a batch-1 generate, one list per step (the first `put` is the
    prompt: skipped)."""

    def __init__(self) -> None:
        self.queue: queue.Queue[list[int] | BaseException | None] = queue.Queue()
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self.prompt_seen:
            self.queue.put(value.view(-1).tolist())
        self.prompt_seen = True

    def end(self) -> None:
        self.queue.put(None)


def stream_answer(
    model: Any, processor: Any, prompt: str, image: Any | None, max_new_tokens: int, temperature: float = 0.0,
    top_p: float = 1.0,
) -> Iterator[str]:  # fmt: skip
    """The answer text after each new token; generate runs in a thread. At temperature 0 the last text is
    `greedy_answer`'s: the same inputs, config, stop tokens, trimming and decoding."""
    tokenizer = processor.tokenizer
    inputs = to_model(prompt_inputs(processor, [prompt], [image] if image is not None else None), model)
    config = sampling_config(tokenizer, max_new_tokens, temperature, top_p)
    streamer = _TokenQueue()

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(**inputs, generation_config=config, streamer=streamer)
        except BaseException as exc:  # handed to the reader, which raises it in its own thread
            streamer.queue.put(exc)
        finally:
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    stops, ids, text, shown = stop_token_ids(tokenizer), [], "", ""
    while (step := streamer.queue.get()) is not None:
        if isinstance(step, BaseException):
            raise step
        ids += step
        text = decode_answer(tokenizer, trim_at_stop(ids, stops, 10**9))
        if text != shown and not text.endswith(PARTIAL_CHARACTER):  # wait for the rest of a multi-byte character
            shown = text
            yield text
    thread.join()
    if text != shown:
        yield text

"""LLaVA-1.5's conversation templates (`plain` for stage 1, `vicuna_v1` for stage 2 and eval) and label masking.

A conversation is LLaVA JSON's list of `{"from": "human"|"gpt", "value": str}` turns. `render` writes the text
exactly as LLaVA's `conversation.py` does and records the character spans a model is trained on (each assistant
answer and its separator); `encode` tokenizes once with offsets and supervises the tokens overlapping those spans.
Masking by character span (instead of LLaVA's re-tokenization of each round and length arithmetic) cannot drift
from the tokenizer, so the "tokenization mismatch" trap, where a whole sample's labels silently become -100,
does not exist here; a sample that still has no supervised token (e.g. truncated away) is counted by the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IMAGE_TOKEN = "<image>"
IGNORE_INDEX = -100
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
TEMPLATES = ("plain", "vicuna_v1")
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
LETTER_ANSWER_PROMPT = "Answer with the option's letter from the given choices directly."


@dataclass
class Rendered:
    """A conversation as one string plus the [start, end) character spans that carry labels."""

    text: str
    supervised: list[tuple[int, int]]


@dataclass
class Encoded:
    """Token ids and labels (IGNORE_INDEX where not supervised); the image is still one `<image>` id."""

    input_ids: list[int]
    labels: list[int]

    @property
    def num_supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


class TemplateError(ValueError):
    """A conversation that a template cannot render (wrong roles, empty turns, missing or misplaced image)."""


def _check_template(name: str) -> None:
    if name not in TEMPLATES:
        raise TemplateError(f"unknown conversation template '{name}' (expected one of {list(TEMPLATES)})")


def _turns(conversations: list[dict[str, Any]]) -> list[tuple[str, str]]:
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(conversations):
        role, value = turn.get("from"), turn.get("value")
        if role not in ("human", "gpt"):
            raise TemplateError(f"turn {i}: 'from' is {role!r} (expected 'human' or 'gpt')")
        if not isinstance(value, str) or not value.strip():
            raise TemplateError(f"turn {i}: empty 'value'")
        expected = "human" if i % 2 == 0 else "gpt"
        if role != expected:
            raise TemplateError(f"turn {i}: expected a '{expected}' turn (turns alternate, human first)")
        turns.append((role, value))
    if len(turns) < 2 or len(turns) % 2:
        raise TemplateError(f"{len(turns)} turns: need human/gpt pairs")
    return turns


def _move_image_first(value: str) -> str:
    """LLaVA's `preprocess_multimodal`: the `<image>` placeholder moves to the start of its turn as `<image>\\n`."""
    if IMAGE_TOKEN not in value:
        return value
    rest = value.replace(IMAGE_TOKEN, "").strip()
    return f"{IMAGE_TOKEN}\n{rest}" if rest else IMAGE_TOKEN


def render(conversations: list[dict[str, Any]], template: str) -> Rendered:
    """The training text of a conversation and its supervised character spans, as LLaVA-1.5 formats them."""
    _check_template(template)
    turns = _turns(conversations)
    images = sum(value.count(IMAGE_TOKEN) for _, value in turns)
    if images > 1:
        raise TemplateError(f"{images} '{IMAGE_TOKEN}' placeholders (LLaVA-1.5 takes one image per sample)")
    if any(IMAGE_TOKEN in value for role, value in turns if role == "gpt"):
        raise TemplateError(f"'{IMAGE_TOKEN}' in an assistant turn")
    if template == "plain":
        # preprocess_plain: the human turn becomes the bare image; the caption and "\n" are the label.
        if len(turns) != 2:
            raise TemplateError(f"template 'plain' takes one human/gpt pair, got {len(turns) // 2}")
        if images != 1:
            raise TemplateError(f"template 'plain' needs '{IMAGE_TOKEN}' in the human turn")
        answer = turns[1][1] + "\n"
        return Rendered(IMAGE_TOKEN + answer, [(len(IMAGE_TOKEN), len(IMAGE_TOKEN) + len(answer))])
    # vicuna_v1 (SeparatorStyle.TWO, sep " ", sep2 "</s>"): SYSTEM USER: q ASSISTANT: a</s>USER: ...
    text, spans = VICUNA_SYSTEM + " ", []
    for role, value in turns:
        if role == "human":
            text += f"USER: {_move_image_first(value)} "
        else:
            text += "ASSISTANT: "
            start = len(text)
            text += value + "</s>"
            spans.append((start, len(text)))
    return Rendered(text, spans)


def encode(conversations: list[dict[str, Any]], template: str, tokenizer: Any) -> Encoded:
    """Tokenize a rendered conversation (BOS added by the tokenizer) and label the supervised tokens."""
    rendered = render(conversations, template)
    enc = tokenizer(rendered.text, add_special_tokens=True, return_offsets_mapping=True)
    labels: list[int] = []
    for token, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
        inside = end > start and any(end > s and start < e for s, e in rendered.supervised)
        labels.append(int(token) if inside else IGNORE_INDEX)
    return Encoded([int(t) for t in enc["input_ids"]], labels)


def multiple_choice_prompt(question: str, options: list[str], hint: str = "") -> str:
    """LLaVA-1.5's multiple-choice question (model_vqa_mmbench.py): hint, question, `A. opt` lines, the instruction."""
    lines = [f"{chr(ord('A') + i)}. {option}" for i, option in enumerate(options)]
    head = f"{hint}\n{question}" if hint else question
    return "\n".join([head, *lines, LETTER_ANSWER_PROMPT])


def generation_prompt(question: str, template: str = "vicuna_v1", image: bool = True) -> str:
    """The prompt a model answers at eval time (LLaVA-1.5's `conv.get_prompt()` with an empty assistant turn)."""
    _check_template(template)
    if template == "plain":
        return IMAGE_TOKEN if image else question
    user = f"{IMAGE_TOKEN}\n{question}" if image else question
    return f"{VICUNA_SYSTEM} USER: {user} ASSISTANT:"

"""LLaVA-1.5's conversation templates (`plain` for stage 1, `vicuna_v1` for stage 2 and eval) and label masking.

A conversation is LLaVA JSON's list of `{"from": "human"|"gpt", "value": str}` turns. `render` writes the text
exactly as LLaVA's `conversation.py` does and records the character spans a model is trained on; `encode`
tokenizes it as LLaVA's `tokenizer_image_token` does and supervises the tokens overlapping those spans.

Token ids equal the LLaVA codebase's (checked against `llava-torch` in tests/vlm/test_vlm_llava_parity.py):
- the text is cut at `<image>` and each piece is tokenized alone (BOS on the first only), so a SentencePiece
  tokenizer puts its dummy-prefix `▁` after the image whatever its `legacy` flag; tokenizing the whole string
  would drop that `▁` when `legacy` is false (one id fewer than a LLaVA-trained checkpoint saw).
- the rest of the string (`</s>USER:` included) is tokenized as one piece, so the space a `legacy` tokenizer
  puts after `</s>` is there exactly when LLaVA's is.
Labels equal the targets of LLaVA's `preprocess_v1` / `preprocess_plain`: a span starts at the space before an
answer (so the lone `▁` that precedes a digit is supervised, as LLaVA's `instruction_len - 2` leaves it) and
ends after its `</s>` (vicuna_v1) or the caption's `\n` (plain, which has no EOS). Masking by span instead of
LLaVA's per-round length arithmetic cannot drift from the tokenizer: where LLaVA's arithmetic is off (it prints
"tokenization mismatch" and sets the whole sample to -100, e.g. a `legacy: false` tokenizer whose `USER` and
`▁USER` take the same number of pieces), the answers here are still supervised. A sample that has no supervised
token (e.g. truncated away) is counted by the data.
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
# vicuna_v1 as a chat template (tokenizer_config.json / chat_template.jinja of every LLaVA directory written here):
# `apply_chat_template` gives `render`'s text and, with add_generation_prompt, `generation_prompt`'s. A message's
# content is a string (lmms-eval's llava_hf puts "<image>\n" in it) or typed parts, images first as "<image>\n"
# (LLaVA's preprocess_multimodal); a leading system message replaces the Vicuna system prompt.
VICUNA_CHAT_TEMPLATE = (
    "{%- set ns = namespace(system='" + VICUNA_SYSTEM.replace("'", "\\'") + "') -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set ns.system = messages[0]['content'] if messages[0]['content'] is string else "
    "messages[0]['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') -%}"
    "{%- set messages = messages[1:] -%}{%- endif -%}"
    "{{- ns.system + ' ' -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set content = message['content'] -%}"
    "{%- else -%}{%- set parts = namespace(images='', text='') -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{%- set parts.images = parts.images + '<image>\n' -%}"
    "{%- elif part['type'] == 'text' -%}{%- set parts.text = parts.text + part['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- set content = parts.images + parts.text -%}{%- endif -%}"
    "{%- if message['role'] == 'user' -%}{{- 'USER: ' + content + ' ' -}}"
    "{%- else -%}{{- 'ASSISTANT: ' + content + '</s>' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)
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
            text += "ASSISTANT:"
            start = len(text)  # the space before the answer: LLaVA supervises the token that carries it
            text += " " + value + "</s>"
            spans.append((start, len(text)))
    return Rendered(text, spans)


def encode(conversations: list[dict[str, Any]], template: str, tokenizer: Any) -> Encoded:
    """Tokenize a rendered conversation as LLaVA does (`image_token_ids`) and label the supervised tokens."""
    rendered = render(conversations, template)
    ids, offsets = image_token_ids(rendered.text, tokenizer, with_offsets=True)
    labels: list[int] = []
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    for token, span in zip(ids, offsets):
        inside = token != image_id and any(_overlaps(span, supervised) for supervised in rendered.supervised)
        labels.append(int(token) if inside else IGNORE_INDEX)
    return Encoded(ids, labels)


def _overlaps(token: tuple[int, int], span: tuple[int, int]) -> bool:
    """Whether a token's characters fall in `span`; a zero-width token (a SentencePiece dummy-prefix `▁`) counts
    where it stands, so the one that opens a stage-1 caption is supervised as in LLaVA, and BOS is not."""
    (start, end), (s, e) = token, span
    return s <= start < e if start == end else (end > s and start < e)


def image_token_ids(text: str, tokenizer: Any, with_offsets: bool = False) -> Any:
    """LLaVA's `tokenizer_image_token`: each piece between `<image>`s tokenized alone, the `<image>` id between.

    The first piece keeps the tokenizer's BOS; later pieces lose theirs (as LLaVA drops `x[1:]` when the first
    piece starts with BOS). With `with_offsets`, returns (ids, character offsets into `text`); the image gets
    an empty span.
    """
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    start, bos_first = 0, None
    for i, piece in enumerate(text.split(IMAGE_TOKEN)):
        enc = tokenizer(piece, add_special_tokens=True, return_offsets_mapping=with_offsets)
        piece_ids = [int(t) for t in enc["input_ids"]]
        spans = [(start + a, start + b) for a, b in enc["offset_mapping"]] if with_offsets else []
        if i == 0:
            bos_first = bool(piece_ids) and piece_ids[0] == tokenizer.bos_token_id
        else:
            ids.append(image_id)
            offsets.append((start - len(IMAGE_TOKEN), start - len(IMAGE_TOKEN)))
            if bos_first:
                piece_ids, spans = piece_ids[1:], spans[1:]
        ids += piece_ids
        offsets += spans
        start += len(piece) + len(IMAGE_TOKEN)
    return (ids, offsets) if with_offsets else ids


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

"""Talk to a LLaVA directory about one image: one question, or an interactive multi-turn chat on stdin.

usage: superclass vlm chat --model MODEL_DIR --image IMG [--prompt TEXT] [--max-new-tokens N] [--template vicuna_v1]

Greedy decoding (`vlm.single_answer.greedy_answer`, the one-at-a-time path eval's batched runner is tested against),
the prompt in LLaVA-1.5's `vicuna_v1` format (the image in the first user turn, earlier turns kept as history);
`--template plain` (stage-1 models) ignores the text and history and captions the image.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from pretrain.data.shards import open_rgb
from pretrain.runtime.errors import UserError
from vlm.llava_dir import load_llava
from vlm.single_answer import greedy_answer
from vlm.templates import IMAGE_TOKEN, TEMPLATES, generation_prompt, render

EXIT_WORDS = ("exit", "quit")


def chat_prompt(history: list[tuple[str, str]], question: str, template: str = "vicuna_v1") -> str:
    """The generation prompt for `question` after earlier (question, answer) turns; the image is in turn one."""
    if template == "plain" or not history:
        return generation_prompt(question, template, image=True)
    conversation = []
    for i, (asked, answered) in enumerate(history):
        conversation.append({"from": "human", "value": f"{IMAGE_TOKEN}\n{asked}" if i == 0 else asked})
        conversation.append({"from": "gpt", "value": answered})
    return render(conversation, template).text + f"USER: {question} ASSISTANT:"


def open_image(path: str | Path, what: str = "", max_pixels: int | None = None) -> Image.Image:
    """The RGB image at `path`; a missing, unreadable or too large file is a one-line UserError naming `what`
    (default `--image PATH`). `max_pixels`: refuse larger images before decoding (PIL refuses 2x its own limit)."""
    what = what or f"--image {path}"
    try:
        if max_pixels is not None:
            with Image.open(path) as header:  # reads the size only: a decompression bomb is never decoded
                width, height = header.size
            if width * height > max_pixels:
                raise UserError(f"{what}: {width}x{height} is too large to decode (limit {max_pixels:,} pixels)")
        return open_rgb(path)
    except FileNotFoundError:
        raise UserError(f"{what}: does not exist") from None
    except Image.DecompressionBombError as exc:
        raise UserError(f"{what}: too large to decode ({exc})") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"{what}: not a readable image ({exc})") from None


def add_turn(history: list[tuple[str, str]], question: str, reply: str) -> None:
    """Keep a turn for the next prompt; an empty reply is dropped (an empty turn cannot be rendered back)."""
    if reply:
        history.append((question, reply))


def chat(
    model_dir: str | Path,
    image_path: str | Path,
    prompt: str | None = None,
    template: str = "vicuna_v1",
    max_new_tokens: int = 128,
    device: str = "cpu",
    lines: Iterable[str] | None = None,
    emit: Callable[[str], None] = print,
) -> list[str]:
    """Answer `prompt` once, or every line of `lines` (stdin by default) until EOF or "exit"; returns the answers."""
    if template not in TEMPLATES:
        raise UserError(f"--template {template!r}: expected one of {list(TEMPLATES)}")
    if max_new_tokens <= 0:
        raise UserError(f"--max-new-tokens {max_new_tokens}: expected a positive integer")
    image = open_image(image_path)
    model, processor = load_llava(model_dir, device=device)
    if prompt is not None:
        reply = greedy_answer(model, processor, chat_prompt([], prompt, template), image, max_new_tokens)
        emit(reply)
        return [reply]
    interactive = lines is None and sys.stdin.isatty()
    history: list[tuple[str, str]] = []
    replies: list[str] = []
    if interactive:
        print("ask about the image (empty line skips, 'exit' or Ctrl-D ends)\n> ", end="", file=sys.stderr, flush=True)
    for line in sys.stdin if lines is None else lines:
        question = line.strip()
        if question.lower() in EXIT_WORDS:
            break
        if question:
            reply = greedy_answer(model, processor, chat_prompt(history, question, template), image, max_new_tokens)
            emit(reply)
            replies.append(reply)
            add_turn(history, question, reply)
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
    return replies

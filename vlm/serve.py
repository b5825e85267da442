"""What `superclass vlm serve` does apart from the page: load the models, read their provenance, check the inputs,
and stream every model's answer to one question (the page itself is `vlm.serve_page`, on Gradio).

usage: superclass vlm serve --model DIR [--model DIR2] [--host 127.0.0.1] [--port 7860]

The prompt is `vlm chat`'s (`vlm.chat.chat_prompt`: vicuna_v1, the image in the first user turn, earlier turns as
history, the same `add_turn` rule) and the answer comes from the same generate (`vlm.single_answer.stream_answer`), so a
greedy answer on the page equals `superclass vlm chat`'s for the same image and question.
"""

from __future__ import annotations

import importlib.util
import json
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from pretrain.encoder import CONFIG_FILE
from pretrain.runtime.errors import UserError
from vlm.chat import chat_prompt, open_image
from vlm.llava_dir import load_llava
from vlm.single_answer import stream_answer
from vlm.task import TRAINING_FILE

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # PIL's own warning level (~89 MP): larger uploads are refused undecoded
MAX_MODELS = 4


@dataclass
class Settings:
    """Generation settings on the page; temperature 0 is greedy decoding (`vlm chat`)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 128


@dataclass
class ServedModel:
    """A loaded LLaVA directory with the name and provenance line shown above its answers."""

    name: str
    model: Any
    processor: Any
    provenance: str = ""


def require_gradio() -> None:
    """A one-line UserError naming the extra to install when Gradio is missing."""
    if importlib.util.find_spec("gradio") is None:
        raise UserError("vlm serve needs Gradio: pip install -e '.[serve]' (the 'serve' extra)")


def check_host(host: str, allow_remote: bool) -> str | None:
    """None for a local address; the no-authentication warning for another host, which needs `allow_remote`."""
    if host in LOCAL_HOSTS:
        return None
    if not allow_remote:
        raise UserError(f"--host {host}: not a local address; add --allow-remote to serve it (no authentication)")
    return f"warning: serving on {host} with NO authentication: anyone who can reach this port can use the models"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def provenance(model_dir: str | Path) -> dict[str, Any]:
    """What the directory records about itself: the encoder's method and samples seen (its artifact's config.json,
    named by `vlm build`'s `superclass_vlm` record), and the LLaVA stage and its samples seen (the training record)."""
    model_dir = Path(model_dir)
    record = _read_json(model_dir / "config.json").get("superclass_vlm") or {}
    training = _read_json(model_dir / TRAINING_FILE)
    out: dict[str, Any] = {"stage": training.get("stage"), "samples_seen": training.get("samples_seen")}
    if record.get("imported_from"):
        out["encoder_method"] = f"imported ({record.get('mm_vision_tower') or record['imported_from']})"
    elif record.get("encoder"):
        encoder = _read_json(Path(record["encoder"]) / CONFIG_FILE).get("provenance") or {}
        out["encoder_method"] = encoder.get("method") or f"unknown (no artifact at {record['encoder']})"
        out["encoder_samples_seen"] = encoder.get("samples_seen")
    return out


def provenance_line(info: dict[str, Any]) -> str:
    """`provenance` as one line: encoder method (samples seen) · LLaVA stage · samples seen."""
    encoder = f"encoder: {info.get('encoder_method') or 'unknown'}"
    if info.get("encoder_samples_seen") is not None:
        encoder += f" ({info['encoder_samples_seen']:,} samples seen)"
    if info.get("stage") is None:
        return f"{encoder} · not trained here (no {TRAINING_FILE})"
    seen = info.get("samples_seen")
    return f"{encoder} · LLaVA stage {info['stage']}" + (f", {seen:,} samples seen" if seen is not None else "")


def load_models(model_dirs: Iterable[str], device: str = "cpu") -> list[ServedModel]:
    """Each LLaVA directory loaded (`vlm.llava_dir.load_llava`, as `vlm chat`) with its provenance line."""
    dirs = list(model_dirs)
    if not 1 <= len(dirs) <= MAX_MODELS:
        raise UserError(f"--model given {len(dirs)} times: expected 1 to {MAX_MODELS} LLaVA directories")
    models = []
    for model_dir in dirs:
        model, processor = load_llava(model_dir, device=device)
        models.append(ServedModel(str(model_dir), model, processor, provenance_line(provenance(model_dir))))
    return models


def read_upload(path: str | Path, name: str) -> Image.Image:
    """An uploaded image as RGB; a non-image or an image too large to decode is a UserError naming `name`."""
    return open_image(path, what=f"upload {name!r}", max_pixels=MAX_PIXELS)


def check_question(question: str | None, image: Image.Image | None) -> str:
    """The stripped question; an empty one, or a question before any image, is a UserError."""
    if image is None:
        raise UserError("no image: upload or paste one first")
    question = (question or "").strip()
    if not question:
        raise UserError("empty question: type a question about the image")
    return question


def answer_streams(
    models: list[ServedModel], histories: list[list[tuple[str, str]]], question: str, image: Image.Image,
    settings: Settings, template: str = "vicuna_v1",
) -> list[Iterator[str]]:  # fmt: skip
    """One `stream_answer` per model: `vlm chat`'s prompt after that model's own earlier turns."""
    if settings.max_new_tokens <= 0:
        raise UserError(f"max new tokens {settings.max_new_tokens}: expected a positive integer")
    return [
        stream_answer(m.model, m.processor, chat_prompt(history, question, template), image, settings.max_new_tokens,
                      settings.temperature, settings.top_p)
        for m, history in zip(models, histories)
    ]  # fmt: skip


def merge_streams(streams: list[Iterator[str]]) -> Iterator[tuple[int, str]]:
    """(stream index, text) as each stream yields, the streams running side by side in threads."""
    merged: queue.Queue[tuple[int, str | BaseException | None]] = queue.Queue()

    def drain(i: int, stream: Iterator[str]) -> None:
        try:
            for text in stream:
                merged.put((i, text))
        except BaseException as exc:  # raised again in the reader's thread
            merged.put((i, exc))
        finally:
            merged.put((i, None))

    for i, stream in enumerate(streams):
        threading.Thread(target=drain, args=(i, stream), daemon=True).start()
    running = len(streams)
    while running:
        i, item = merged.get()
        if item is None:
            running -= 1
        elif isinstance(item, BaseException):
            raise item
        else:
            yield i, item

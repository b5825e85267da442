"""The `superclass vlm serve` page (Gradio): one image and one question, every model's answer streaming side by side.

Each browser session keeps its own image and one history per model (`gr.State`); a new image starts a new
conversation, as the image sits in the first user turn. Bad inputs (a non-image upload, an image too large to
decode, an empty question) are one line in the status box, and the server goes on serving. Nothing leaves the
machine: Gradio's analytics are off, its fonts are local, and no share link is made.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import gradio as gr
from PIL import Image

from pretrain.runtime.errors import UserError
from vlm.chat import add_turn
from vlm.serve import ServedModel, Settings, answer_streams, check_question, merge_streams, read_upload

History = list[tuple[str, str]]


def messages(history: History, pending: tuple[str, str] | None = None) -> list[dict[str, str]]:
    """A model's turns (and the one being answered) as the Chatbot's role/content messages."""
    turns = [*history, pending] if pending is not None else history
    return [m for q, a in turns for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]


def _on_image(models: list[ServedModel], payload: dict[str, Any] | None) -> tuple[Any, ...]:
    """A new (or cleared) image: decode it here (a bad one is a status line) and start new conversations."""
    fresh: list[History] = [[] for _ in models]
    chats = [messages([]) for _ in models]
    if not payload or not payload.get("path"):
        return ("", None, fresh, *chats)
    name = payload.get("orig_name") or "image"
    try:
        image = read_upload(payload["path"], name)
    except UserError as exc:
        return (f"**Error:** {exc}", None, fresh, *chats)
    return (f"{name}: {image.width}x{image.height}, ask a question", image, fresh, *chats)


def _ask(
    models: list[ServedModel], template: str, image: Image.Image | None, question: str, temperature: float,
    top_p: float, max_new_tokens: float, histories: list[History],
) -> Iterator[tuple[Any, ...]]:  # fmt: skip
    """Every model's answer to `question`, streamed token by token; each model keeps its own history."""
    histories = [list(h) for h in histories] if histories else [[] for _ in models]
    try:
        asked = check_question(question, image)
        settings = Settings(float(temperature), float(top_p), int(max_new_tokens))
        streams = answer_streams(models, histories, asked, image, settings, template)
    except UserError as exc:
        yield (f"**Error:** {exc}", question, histories, *[messages(h) for h in histories])
        return
    answers = [""] * len(models)
    chats = [messages(h, (asked, "")) for h in histories]
    yield ("answering ...", "", histories, *chats)
    for i, text in merge_streams(streams):
        answers[i] = text
        chats[i] = messages(histories[i], (asked, text))
        yield ("answering ...", "", histories, *chats)
    for history, answer in zip(histories, answers):
        add_turn(history, asked, answer)  # `vlm chat`'s rule: an empty answer is shown but not kept as history
    yield ("", "", histories, *chats)


def _forget(index: int, histories: list[History]) -> list[History]:
    """The histories with model `index`'s turns gone."""
    return [[] if i == index else list(h) for i, h in enumerate(histories)]


def build_page(models: list[ServedModel], template: str = "vicuna_v1", settings: Settings | None = None) -> gr.Blocks:
    """The Blocks app: image, question and settings on the left, one column per model (name, provenance, chat)."""
    settings = settings or Settings()
    with gr.Blocks(title="LLaVA chat (vlm serve)", analytics_enabled=False) as page:
        image_state, histories = gr.State(None), gr.State([[] for _ in models])
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                image = gr.Image(
                    label="image", type="filepath", sources=["upload", "clipboard"], height=260, elem_id="image"
                )
                question = gr.Textbox(label="question", placeholder="Ask about the image", elem_id="question")
                with gr.Row():
                    ask = gr.Button("Ask", variant="primary", elem_id="ask")
                    clear = gr.Button("New conversation", elem_id="clear")
                status = gr.Markdown(elem_id="status")
                with gr.Accordion("generation settings", open=False):
                    temperature = gr.Slider(0, 2, settings.temperature, step=0.05, label="temperature (0: greedy)")
                    top_p = gr.Slider(0.05, 1, settings.top_p, step=0.05, label="top-p (sampling only)")
                    max_new = gr.Slider(1, 1024, settings.max_new_tokens, step=1, label="max new tokens")
            chats = []
            for i, served in enumerate(models):
                with gr.Column(scale=1, min_width=280):
                    gr.Markdown(f"### {served.name}\n{served.provenance}", elem_id=f"model-{i}")
                    chats.append(gr.Chatbot(label=served.name, elem_id=f"answers-{i}", height=520, buttons=["copy"]))
        image.change(
            partial(_on_image, models), inputs=image, outputs=[status, image_state, histories, *chats],
            preprocess=False,  # the page decodes the upload itself: a bad file is a status line, not a Gradio error
        )  # fmt: skip
        inputs = [image_state, question, temperature, top_p, max_new, histories]
        outputs = [status, question, histories, *chats]
        for trigger in (ask.click, question.submit):
            trigger(partial(_ask, models, template), inputs=inputs, outputs=outputs)
        clear.click(
            lambda: ("", [[] for _ in models], *[messages([]) for _ in models]), outputs=[status, histories, *chats]
        )
        for i, chat in enumerate(chats):  # a chat's own bin forgets that model's turns
            chat.clear(partial(_forget, i), inputs=histories, outputs=histories)
    return page


def serve(page: gr.Blocks, host: str, port: int) -> Any:
    """Start the server (no share link, no SSR) and return once it answers; `page.block_thread()` then waits."""
    page.queue(default_concurrency_limit=1)
    return page.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=True, quiet=True,
        show_error=True, ssr_mode=False, max_file_size="64mb", footer_links=[],
    )  # fmt: skip

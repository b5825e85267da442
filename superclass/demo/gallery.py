"""The report's gallery: held-out images beside their truth and, per encoder, the ClipCap caption and the LLaVA
answers to the synthetic benchmarks' questions (colour, shape, count, position, and POPE's presence question).

The captions are the ClipCap stage's own (its val split is the held-out seed); the answers come from
`vlm.single_answer.greedy_answer` (what `superclass vlm chat` and the benchmark runner's tests use) on the benchmarks'
short-answer prompt, so the gallery shows what was scored. Writes `gallery/heldout_<i>.png` (160 px, nearest
neighbour: the small scene stays sharp) and `gallery/gallery.json` (every entry, for tools and tests).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from pretrain.data.synthetic import SyntheticSample
from superclass.demo.config import held_out
from vlm.llava_dir import load_llava
from vlm.scene_questions import Question, absent_question, present_question, questions_for
from vlm.single_answer import greedy_answer
from vlm.templates import SHORT_ANSWER_PROMPT, generation_prompt

GALLERY_DIR = "gallery"
THUMBNAIL_PX = 160
MAX_NEW_TOKENS = 8  # the synthetic benchmarks' answer budget (`superclass.demo.vlm.score_synthetic_vlm`)


@dataclass
class EncoderModels:
    """What one encoder's downstream stages produced: its ClipCap captions (by held-out index) and LLaVA directory."""

    method: str
    captions: dict[int, str]
    llava_dir: Path


def gallery_questions(sample: SyntheticSample, index: int) -> list[Question]:
    """The four one-hop questions of `vlm.scene_questions`, then POPE's: about the scene's object on even images, about
    an adversarial absent object (same shape, another colour) on odd ones, so both answers appear."""
    presence = (
        present_question(sample.attributes)
        if index % 2 == 0
        else absent_question(sample.attributes, random.Random(index), "adversarial")
    )
    return [*questions_for(sample.attributes), presence]


def llava_answers(model_dir: Path, samples: list[SyntheticSample], questions: list[list[Question]]) -> list[list[str]]:
    """Greedy answers of one LLaVA directory to each sample's questions, prompted as the benchmarks prompt them."""
    model, processor = load_llava(model_dir, device="cpu")

    def answer(question: Question, image: Image.Image) -> str:
        prompt = generation_prompt(f"{question.text}\n{SHORT_ANSWER_PROMPT}")
        return greedy_answer(model, processor, prompt, image, MAX_NEW_TOKENS)

    return [[answer(q, s.image) for q in qs] for s, qs in zip(samples, questions)]


def build_gallery(out: Path, n: int, models: list[EncoderModels]) -> list[dict[str, Any]]:
    """Write the first `n` held-out images as thumbnails and return one entry per image: the image path (relative
    to `out`), its truth, and each encoder's caption and answers."""
    if n <= 0:
        return []
    samples = held_out(n)
    questions = [gallery_questions(s, i) for i, s in enumerate(samples)]
    answers = {m.method: llava_answers(m.llava_dir, samples, questions) for m in models}
    (out / GALLERY_DIR).mkdir(parents=True, exist_ok=True)
    entries = []
    for i, sample in enumerate(samples):
        image = f"{GALLERY_DIR}/heldout_{i}.png"
        sample.image.convert("RGB").resize((THUMBNAIL_PX, THUMBNAIL_PX), Image.NEAREST).save(out / image)
        truth = {k: v for k, v in sample.attributes.items() if k in ("colour", "shape", "count", "position")}
        entries.append({
            "index": i,
            "image": image,
            "caption": sample.caption,
            "attributes": truth,
            "questions": [{"text": q.text, "answer": q.answer} for q in questions[i]],
            "encoders": {
                m.method: {"caption": m.captions.get(i, ""), "answers": answers[m.method][i]} for m in models
            },
        })  # fmt: skip
    (out / GALLERY_DIR / "gallery.json").write_text(json.dumps(entries, indent=2) + "\n")
    return entries


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ") or "(empty)"


def _mark(answer: str, truth: str) -> str:
    return f"{_cell(answer)} ✓" if answer.strip().lower() == truth.lower() else _cell(answer)


def gallery_markdown(entries: list[dict[str, Any]]) -> list[str]:
    """The gallery section: per image, the picture, then a table of truth and each encoder's outputs side by side."""
    if not entries:
        return []
    methods = list(entries[0]["encoders"])
    lines = [
        "## Held-out images: each encoder's caption and answers",
        "",
        f"The first {len(entries)} held-out images (seed of every evaluation, never trained on), shown enlarged."
        " Captions: each encoder's ClipCap; answers: each encoder's LLaVA (greedy, the benchmarks' short-answer"
        " prompt); ✓ marks an answer equal to the truth.",
        "",
    ]
    right = {m: 0 for m in methods}
    for e in entries:
        attrs = ", ".join(f"{k} {v}" for k, v in e["attributes"].items())
        lines += [f"### Image {e['index']}", "", f"![held-out image {e['index']}]({e['image']})", ""]
        lines += [f"| | truth | {' | '.join(methods)} |", "|---" * (len(methods) + 2) + "|"]
        captions = " | ".join(_cell(e["encoders"][m]["caption"]) for m in methods)
        lines.append(f"| caption | {_cell(e['caption'])} ({attrs}) | {captions} |")
        for k, q in enumerate(e["questions"]):
            said = [e["encoders"][m]["answers"][k] for m in methods]
            for m, a in zip(methods, said):
                right[m] += a.strip().lower() == q["answer"].lower()
            marked = " | ".join(_mark(a, q["answer"]) for a in said)
            lines.append(f"| {_cell(q['text'])} | {_cell(q['answer'])} | {marked} |")
        lines.append("")
    asked = sum(len(e["questions"]) for e in entries)
    lines += ["Answers equal to the truth: " + ", ".join(f"{m} {right[m]} of {asked}" for m in methods) + ".", ""]
    return lines

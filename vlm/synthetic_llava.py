"""Synthetic LLaVA JSON for the demo and the tests: the two LLaVA-1.5 stages over `make_sample` scenes.

Stage 1 is LCS-558K's form (`<image>` alone, the caption as the answer; trained with the `plain` template).
Stage 2 is mix665k's VQA form, each question with LLaVA-1.5's short-answer suffix and `<image>\\n` opening the first
human turn: POPE's pair ("Is there a ...?" about the scene's object, "yes", and about an absent one, "no") and in half
the rows one more question about the scene from `vlm.scene_questions.questions_for`, in random order;
a lettered multiple-choice question (LLaVA-1.5's MMBench prompt, its hint sometimes in ScienceQA's "Context:" form)
in one image row of four; and a text-only sample every twentieth row (questions answerable without a picture), so
batches of both modalities are exercised.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

from pretrain.data.synthetic import describe, make_sample
from pretrain.runtime.atomic import write_text_atomically
from vlm.scene_questions import HINT, HINT_RATE, options_for, pick_question, presence_pair
from vlm.templates import IMAGE_TOKEN, SHORT_ANSWER_PROMPT, multiple_choice_prompt

TEXT_ONLY_EVERY = 20  # one stage-2 row in 20 has no image (5%)
MULTIPLE_CHOICE_EVERY = 4  # one stage-2 image row in 4 is a lettered multiple-choice question (MMBench's form)
OPTION_COUNTS = (2, 3, 4)  # options per lettered question, as ScienceQA varies them (with 4 always, the model said
# "C" or "D" to two-option questions: 7% on ScienceQA's position questions, measured)
SCENE_IN_WORDS = "The picture shows {caption}."  # the scene told in words (write_scene_text_llava)
TEXT_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("How many sides does a square have?", "4"),
    ("How many sides does a triangle have?", "3"),
    ("How many corners does a circle have?", "0"),
    ("What colour do you get by mixing blue and yellow?", "green"),
    ("What colour do you get by mixing red and blue?", "purple"),
    ("What colour do you get by mixing red and yellow?", "orange"),
    ("What is the opposite of left?", "right"),
    ("What is the opposite of top?", "bottom"),
    ("Which shape is round?", "circle"),
)


def _rng(seed: int, index: int) -> random.Random:
    return random.Random(f"llava:{seed}:{index}")  # str seeds hash stably (sha512), unlike hash()


def _ask(question: str) -> str:
    return f"{question}\n{SHORT_ANSWER_PROMPT}"


def _stage2_conversation(attributes: dict[str, Any], rng: random.Random) -> list[dict[str, str]]:
    """POPE's yes/no pair about the scene and in half the rows one short question, shuffled; the image in turn one.

    The same picture with "yes" to one object and "no" to another makes the answer hinge on the question and the
    image together. One presence question in a row among one to three others, or alone in 40% of the rows, left
    the demo's POPE at always-yes (README: 'Why the VLM rows failed, and what fixed them').
    """
    questions = presence_pair(attributes, rng)
    if rng.random() < 0.5:
        questions.append(pick_question(attributes, rng))
    rng.shuffle(questions)  # with the pair always first, every first answer was yes/no: VQAv2 fell to 11% (measured)
    turns: list[dict[str, str]] = []
    for i, q in enumerate(questions):
        prompt = f"{IMAGE_TOKEN}\n{_ask(q.text)}" if i == 0 else _ask(q.text)
        turns += [{"from": "human", "value": prompt}, {"from": "gpt", "value": q.answer}]
    return turns


def _multiple_choice_conversation(attributes: dict[str, Any], rng: random.Random) -> list[dict[str, str]]:
    """One lettered question (as LLaVA-1.5 asks MMBench and A-OKVQA), answered with the option's letter."""
    question = pick_question(attributes, rng)
    options = options_for(question, rng, rng.choice(OPTION_COUNTS))
    letter = chr(ord("A") + options.index(question.answer))
    hint = HINT if rng.random() < HINT_RATE else ""
    if hint and rng.random() < 0.5:  # ScienceQA's layout ("Context: ...") as often as MMBench's bare hint
        hint = f"Context: {hint}"
    prompt = f"{IMAGE_TOKEN}\n{multiple_choice_prompt(question.text, options, hint)}"
    return [{"from": "human", "value": prompt}, {"from": "gpt", "value": letter}]


def _scene_conversation(index: int, attributes: dict[str, Any], rng: random.Random, multiple_choice_every: int) -> list:
    """Stage 2's conversation about scene `index`: lettered in one row in `multiple_choice_every`, else short ones."""
    if multiple_choice_every and index % multiple_choice_every == 1:
        return _multiple_choice_conversation(attributes, rng)
    return _stage2_conversation(attributes, rng)


def write_scene_text_llava(
    out_dir: str | Path, n: int, seed: int = 0, multiple_choice_every: int = MULTIPLE_CHOICE_EVERY
) -> Path:
    """Write `n` text-only rows as `out_dir/llava_scene_text.json`: stage 2's conversations with the scene told in
    words (SCENE_IN_WORDS, its caption) where the image would be.

    A tiny LLaMA trained from scratch learns here what Vicuna knew before LLaVA: the questions' language, and how to
    compare a question with what a scene holds. After the demo's 400 steps it knows the form; on held-out scenes
    told in words it answers POPE-style questions at 51% and lettered ones at chance (README, 'Why the VLM rows
    failed': the option-to-letter lookup needs ~3000 steps).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n):
        attributes, caption = describe(index, seed)
        turns = _scene_conversation(index, attributes, _rng(seed, index), multiple_choice_every)
        first = turns[0]["value"].replace(IMAGE_TOKEN, SCENE_IN_WORDS.format(caption=caption))
        rows.append({"id": f"text-{seed}-{index:06d}", "conversations": [{**turns[0], "value": first}, *turns[1:]]})
    return write_text_atomically(out / "llava_scene_text.json", json.dumps(rows, indent=1))


def write_synthetic_llava(
    out_dir: str | Path, n: int, seed: int = 0, image_size: int = 64, stage: Literal[1, 2] = 2,
    multiple_choice_every: int = MULTIPLE_CHOICE_EVERY,
) -> Path:  # fmt: skip
    """Write `n` rows as `out_dir/llava_stage{stage}.json` with JPG images under `out_dir/images/`.

    Stage 2: one image row in `multiple_choice_every` is a lettered multiple-choice question (0: none).
    """
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n):
        row_id = f"{seed}-{index:06d}"
        if stage == 2 and index % TEXT_ONLY_EVERY == TEXT_ONLY_EVERY // 2:
            question, answer = _rng(seed, index).choice(TEXT_QUESTIONS)
            conv = [{"from": "human", "value": _ask(question)}, {"from": "gpt", "value": answer}]
            rows.append({"id": row_id, "conversations": conv})
            continue
        sample = make_sample(index, seed, image_size)
        rel = f"images/{index:06d}.jpg"
        sample.image.save(out / rel, format="JPEG", quality=90)
        if stage == 1:
            conv = [{"from": "human", "value": IMAGE_TOKEN}, {"from": "gpt", "value": sample.caption}]
        else:
            conv = _scene_conversation(index, sample.attributes, _rng(seed, index), multiple_choice_every)
        rows.append({"id": row_id, "image": rel, "conversations": conv})
    path = out / f"llava_stage{stage}.json"
    return write_text_atomically(path, json.dumps(rows, indent=1))

"""Questions about synthetic scenes: short-answer VQA and multiple choice, true of `make_sample`'s attributes.

One home for the demo's question generator: `vlm` trains its tiny LLaVA on these (as LLaVA JSON) and `eval`
writes the same kinds of questions as VQAv2 / TextVQA / MMBench / POPE / ScienceQA files, so the tiny model is
scored by the real benchmark code on questions it was taught to answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from pretrain.data.synthetic import COLOURS, POSITIONS, SHAPES

COUNT_ANSWERS = {1: "1", 2: "2", 3: "3"}
HINT = "The picture shows coloured shapes on a noisy background."  # MMBench-style hint on some questions
HINT_RATE = 0.3


@dataclass(frozen=True)
class Question:
    """One question about a scene: its kind (colour | shape | count | position), text and one-word answer."""

    kind: str
    text: str
    answer: str
    choices: tuple[str, ...]  # every answer this kind of question can have (the multiple-choice pool)


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def questions_for(attributes: dict[str, Any]) -> list[Question]:
    """Every question kind, asked about the scene's main object group (never about the distractor)."""
    shape, colour, count = attributes["shape"], attributes["colour"], attributes["count"]
    noun, be = (shape, "is") if count == 1 else (_plural(shape), "are")
    return [
        Question("colour", f"What colour {be} the {noun}?", colour, tuple(COLOURS)),
        Question("shape", f"What shape is the {colour} object?", shape, SHAPES),
        Question(
            "count",
            f"How many {colour} {_plural(shape)} are there?",
            COUNT_ANSWERS[count],
            tuple(COUNT_ANSWERS.values()),
        ),  # fmt: skip
        Question("position", f"Where {be} the {colour} {noun}?", attributes["position"], POSITIONS),
    ]


def pick_question(attributes: dict[str, Any], rng: random.Random, kinds: tuple[str, ...] = ()) -> Question:
    """One question of the scene, of a kind drawn with `rng` (from `kinds` when given)."""
    pool = [q for q in questions_for(attributes) if not kinds or q.kind in kinds]
    return rng.choice(pool)


def options_for(question: Question, rng: random.Random, n: int = 4) -> list[str]:
    """`n` answer options (the true one among them, shuffled with `rng`), MMBench-style."""
    wrong = [c for c in question.choices if c != question.answer]
    options = [question.answer, *rng.sample(wrong, min(n - 1, len(wrong)))]
    rng.shuffle(options)
    return options


PRESENCE_NEGATIVES = ("random", "popular", "adversarial")  # POPE's three ways of picking an absent object


def presence_pair(attributes: dict[str, Any], rng: random.Random) -> list[Question]:
    """POPE's two answers about one scene, in random order: "Is there a {colour} {shape} in the image?" about the
    scene's object ("yes") and about an absent one picked by one of POPE's three rules at random ("no")."""
    pair = [present_question(attributes), absent_question(attributes, rng, rng.choice(PRESENCE_NEGATIVES))]
    rng.shuffle(pair)
    return pair


def present_question(attributes: dict[str, Any]) -> Question:
    """POPE's "yes" question: the scene's own object."""
    return Question("presence", f"Is there a {attributes['colour']} {attributes['shape']} in the image?", "yes",
                    ("yes", "no"))  # fmt: skip


def absent_question(attributes: dict[str, Any], rng: random.Random, negative: str) -> Question:
    """POPE's "no" question, the absent object picked as its splits pick it: "random" (another colour and shape,
    never the scene's distractor), "popular" (the same colour, another shape: the object type the scene makes likely)
    or "adversarial" (the same shape in another colour, the closest to what is there)."""
    if negative not in PRESENCE_NEGATIVES:
        raise ValueError(f"negative {negative!r}: expected one of {PRESENCE_NEGATIVES}")
    shape, colour = attributes["shape"], attributes["colour"]
    other_colour = rng.choice([c for c in COLOURS if c != colour])
    other_shape = rng.choice([s for s in SHAPES if s != shape])
    present = {(o["colour"], o["shape"]) for o in attributes.get("objects", [])}
    while negative == "random" and (other_colour, other_shape) in present:  # the distractor is there: not absent
        other_colour = rng.choice([c for c in COLOURS if c != colour])
        other_shape = rng.choice([s for s in SHAPES if s != shape])
    asked = {
        "random": (other_colour, other_shape),
        "popular": (colour, other_shape),
        "adversarial": (other_colour, shape),
    }
    return Question("presence", f"Is there a {asked[negative][0]} {asked[negative][1]} in the image?", "no",
                    ("yes", "no"))  # fmt: skip

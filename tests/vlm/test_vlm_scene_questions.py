"""Questions about synthetic scenes: true of the scene, POPE's absent objects really absent."""

import random

from pretrain.data.synthetic import make_sample
from vlm.scene_questions import (
    PRESENCE_NEGATIVES,
    absent_question,
    options_for,
    presence_pair,
    present_question,
    questions_for,
)


def _scenes(n=300):
    return [make_sample(i, seed=5, image_size=32).attributes for i in range(n)]


def test_absent_objects_are_absent_from_the_scene_distractor_included():
    scenes = _scenes()
    with_distractor = [a for a in scenes if a["distractor"] is not None]
    assert len(with_distractor) > 30
    for index, attributes in enumerate(scenes):
        present = {f"a {o['colour']} {o['shape']} in" for o in attributes["objects"]}
        assert any(p in present_question(attributes).text for p in present)
        for negative in PRESENCE_NEGATIVES:
            question = absent_question(attributes, random.Random(index), negative)
            assert question.answer == "no" and not any(p in question.text for p in present), (attributes, question)


def test_questions_are_true_of_the_scene_and_options_hold_the_answer():
    for index, attributes in enumerate(_scenes(50)):
        for question in questions_for(attributes):
            options = options_for(question, random.Random(index))
            assert question.answer in question.choices and question.answer in options
            assert len(set(options)) == len(options) == min(4, len(question.choices))


def test_presence_pairs_ask_yes_and_no_about_the_same_scene_in_both_orders():
    firsts, negatives = set(), set()
    for index, attributes in enumerate(_scenes(100)):
        present = {f"a {o['colour']} {o['shape']} in" for o in attributes["objects"]}
        pair = presence_pair(attributes, random.Random(index))
        assert sorted(q.answer for q in pair) == ["no", "yes"]
        for q in pair:
            assert any(p in q.text for p in present) == (q.answer == "yes"), (attributes, q)
        no = next(q for q in pair if q.answer == "no")
        same_colour, same_shape = attributes["colour"] in no.text, attributes["shape"] + " in" in no.text
        negatives.add((same_colour, same_shape))  # popular: same colour; adversarial: same shape; random: neither
        firsts.add(pair[0].answer)
    assert firsts == {"yes", "no"} and negatives == {(True, False), (False, True), (False, False)}

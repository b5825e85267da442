"""Synthetic captioned images: determinism, truthful captions, pixels that match the ground truth, writers."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

from pretrain.data.synthetic import (
    COLOURS,
    COUNT_WORDS,
    COUNTS,
    POSITION_PHRASES,
    POSITIONS,
    SHAPE_WORDS,
    SHAPES,
    SIZE_WORDS,
    SIZES,
    SyntheticCaptions,
    make_sample,
    write_list,
)


def test_same_seed_and_index_give_the_same_sample():
    a, b = make_sample(7, seed=3), make_sample(7, seed=3)
    assert a.caption == b.caption and a.attributes == b.attributes
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    c, d = make_sample(8, seed=3), make_sample(7, seed=4)
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))
    assert not np.array_equal(np.asarray(a.image), np.asarray(d.image))


def test_vocabularies_are_distinct_and_complete():
    assert len(SHAPES) == 6 and len(COLOURS) == 6
    rgb = list(COLOURS.values())
    assert min(np.abs(np.subtract(p, q)).sum() for i, p in enumerate(rgb) for q in rgb[i + 1 :]) > 100
    assert set(SHAPE_WORDS) == set(SHAPES) and set(COUNT_WORDS) == set(COUNTS)
    assert set(POSITION_PHRASES) == set(POSITIONS) and set(SIZE_WORDS) == set(SIZES)


def _words(text: str) -> str:
    return f" {re.sub(r'[^a-z0-9 ]', ' ', text.lower())} "


def _mentions(text: str, phrase: str) -> bool:
    return f" {phrase} " in _words(text)


@pytest.mark.parametrize("seed", [0, 1])
def test_captions_are_truthful_and_varied(seed):
    captions = set()
    seen = {"shape": set(), "colour": set(), "count": set(), "position": set(), "size": set()}
    for index in range(300):
        sample = make_sample(index, seed=seed, image_size=32)
        attrs, caption = sample.attributes, sample.caption
        captions.add(re.sub(r"\d|one|two|three", "N", caption))
        for key in seen:
            seen[key].add(attrs[key])
        main = [o for o in attrs["objects"] if o["shape"] == attrs["shape"] and o["colour"] == attrs["colour"]]
        assert len(main) == attrs["count"] and 1 <= len(attrs["objects"]) <= 3
        assert all(o["position"] == attrs["position"] and o["size"] == attrs["size"] for o in main)
        # the main colour is named; any other colour named is the distractor's
        named = {c for c in COLOURS if _mentions(caption, c)}
        distractor = attrs["distractor"]
        assert attrs["colour"] in named
        assert named <= {attrs["colour"]} | ({distractor["colour"]} if distractor else set())
        # some word for the main shape, in the right number
        forms = SHAPE_WORDS[attrs["shape"]]
        number = 0 if attrs["count"] == 1 else 1
        assert any(_mentions(caption, f"{attrs['colour']} {form[number]}") for form in forms), caption
        # a count word for the right count directly before the colour (or the size word)
        assert any(
            re.search(rf"\b{re.escape(w)} (\w+ )?{attrs['colour']}\b", caption) for w in COUNT_WORDS[attrs["count"]]
        )
        # if a position or size is said, it is the true one
        for position, phrases in POSITION_PHRASES.items():
            if any(p in caption for p in phrases) and position != attrs["position"]:
                assert distractor is not None and position == distractor["position"], caption
        for size, words in SIZE_WORDS.items():
            if size != attrs["size"] and any(_mentions(caption, f"{w} {attrs['colour']}") for w in words):
                pytest.fail(f"wrong size in {caption!r}")
    assert all(
        len(values) == len(vocab) for values, vocab in zip(seen.values(), (SHAPES, COLOURS, COUNTS, POSITIONS, SIZES))
    )
    assert len(captions) > 100  # many wordings, not one template


def test_pixels_show_the_described_objects():
    for index in range(60):
        sample = make_sample(index, image_size=64)
        pixels = np.asarray(sample.image, dtype=np.int32)
        for obj in sample.attributes["objects"]:
            x0, y0, x1, y1 = obj["box"]
            cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
            patch = pixels[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(0)
            assert np.abs(patch - COLOURS[obj["colour"]]).max() < 40, (index, obj)
        assert {"shape", "colour", "count", "position", "size", "objects"} <= set(sample.attributes)
        json.dumps(sample.attributes)  # serialisable as the shard .json


def test_map_style_dataset_and_image_size():
    ds = SyntheticCaptions(5, seed=2, image_size=48)
    assert len(ds) == 5 and ds[4].image.size == (48, 48) and ds[4].image.mode == "RGB"
    assert ds[1].caption == make_sample(1, seed=2, image_size=48).caption
    with pytest.raises(IndexError):
        ds[5]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_write_list(tmp_path, fmt):
    path = write_list(tmp_path, 6, fmt=fmt, seed=1, image_size=24)
    if fmt == "jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    else:
        with path.open() as f:
            rows = list(csv.DictReader(f))
    assert [r["caption"] for r in rows] == [make_sample(i, seed=1, image_size=24).caption for i in range(6)]
    for i, row in enumerate(rows):
        assert (path.parent / row["image"]).is_file()
        with Image.open(path.parent / row["image"]) as image:
            stored = np.asarray(image.convert("RGB"))
        assert np.array_equal(stored, np.asarray(make_sample(i, seed=1, image_size=24).image))

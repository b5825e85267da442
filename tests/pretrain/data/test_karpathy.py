"""The shared Karpathy reader: captions from raw or tokens, one-line DataErrors naming the file and entry,
and LiT retrieval and ClipCap reading the same file the same way."""

from __future__ import annotations

import json

import pytest

from captioning.data import karpathy_to_coco
from captioning.data import load_karpathy as caption_split
from lit.retrieval import load_karpathy as retrieval_split
from pretrain.data.karpathy import karpathy_split, read_karpathy
from pretrain.runtime.errors import DataError


def _write(tmp_path, images) -> object:
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps({"images": images}))
    return path


IMAGES = [
    {"filepath": "val2014", "filename": "a.jpg", "cocoid": 7, "split": "test",
     "sentences": [{"raw": " A dog. ", "tokens": ["a", "dog"]}, {"tokens": ["a", "brown", "dog"]}]},
    {"filename": "b.jpg", "imgid": 3, "split": "restval", "sentences": [{"raw": "", "tokens": ["a", "cat"]}]},
    {"filename": "c.jpg", "split": "test", "sentences": ["a bird"]},
]  # fmt: skip


def test_reader_fields_and_captions(tmp_path):
    entries = read_karpathy(_write(tmp_path, IMAGES))
    assert [e.image_id for e in entries] == [7, 3, 2]  # cocoid, else imgid, else the position
    assert entries[0].captions == ["A dog.", "a brown dog"]  # raw, else the tokens joined
    assert entries[1].captions == ["a cat"] and entries[2].captions == ["a bird"]
    assert str(entries[0].path(tmp_path)) == str(tmp_path / "val2014" / "a.jpg")
    assert str(entries[2].path(tmp_path)) == str(tmp_path / "c.jpg")
    assert [e.index for e in karpathy_split(tmp_path / "dataset_coco.json", ("train", "restval"))] == [1]


def test_lit_and_captioning_read_the_same_captions(tmp_path):
    path = _write(tmp_path, IMAGES)
    lit_test = retrieval_split(path, tmp_path, "test")  # before: a bare KeyError 'raw' on the tokens-only sentence
    assert lit_test.captions == ["A dog.", "a brown dog", "a bird"] and lit_test.text_image == [0, 0, 1]
    cap_test = caption_split(path, tmp_path, "test", check_images=False)
    assert [c for im in cap_test.images for c in im.captions] == lit_test.captions
    assert [im.image_id for im in caption_split(path, tmp_path, "train", check_images=False).images] == [3]
    assert len(karpathy_to_coco(path, "test")["annotations"]) == 3


@pytest.mark.parametrize(
    "entry,needle",
    [
        ({"filename": "x.jpg", "split": "test", "sentences": [{"tokens": 5}]}, "images[1].sentences[0]"),
        ({"split": "test", "sentences": []}, "images[1]: no 'filename'"),
        ({"filename": "x.jpg", "sentences": []}, "images[1]: no 'split'"),
        ({"filename": "x.jpg", "split": "test"}, "images[1]: no 'sentences'"),
        ({"filename": "x.jpg", "split": "test", "cocoid": "7", "sentences": []}, "images[1]: 'cocoid'"),
        ("x.jpg", "images[1]: expected an object"),
    ],
)
def test_malformed_entries_are_one_line_data_errors(tmp_path, entry, needle):
    path = _write(tmp_path, [IMAGES[0], entry])
    for read in (read_karpathy, lambda p: retrieval_split(p, tmp_path, "test"), lambda p: karpathy_to_coco(p)):
        with pytest.raises(DataError) as info:
            read(path)
        message = str(info.value)
        assert needle in message and str(path) in message and "\n" not in message


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_karpathy(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_karpathy(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(DataError, match="'images' list"):
        read_karpathy(tmp_path / "list.json")

"""Labelled datasets: class folders, CSV/JSONL lists, skipped-and-counted bad images, synthetic attributes."""

import pytest
import torch
from eval_fixtures import colour_image, tiny_encoder, write_folder, write_list

from pretrain.data.labelled import (
    SYNTHETIC_SPLIT_SEEDS,
    image_folder,
    load_split,
    stratified_holdout,
    synthetic_attribute_dataset,
)
from pretrain.data.synthetic import COLOURS, SHAPES
from pretrain.features import compute_features, extract_features
from pretrain.runtime.errors import DataError


def test_folder_classes_come_from_train_and_val_must_be_a_subset(tmp_path):
    root = write_folder(tmp_path / "ds", {"train": 2, "val": 1})
    train, val = load_split(root, "train"), load_split(root, "val")
    assert train.classes == ["blue", "green", "red"] == val.classes
    assert len(train) == 6 and train.labels == [0, 0, 1, 1, 2, 2]
    image, label, index = train.with_transform(lambda im: im.size)[3]
    assert (image, label, index) == ((40, 40), 1, 3)
    (root / "train" / "notes.txt").write_text("not an image")  # files beside class folders are ignored
    assert len(load_split(root, "train")) == 6
    # val with only some classes is fine; a class train does not have is not
    (root / "val" / "purple").mkdir()
    colour_image("red", 0).save(root / "val" / "purple" / "0.jpg")
    with pytest.raises(DataError, match="purple.*not among the train classes"):
        load_split(root, "val")
    with pytest.raises(DataError, match="does not exist"):
        load_split(tmp_path / "missing", "train")
    with pytest.raises(DataError, match="no such folder"):
        image_folder(root, "test")


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_lists_with_names_or_ints(tmp_path, fmt):
    (tmp_path / "img").mkdir()
    for i in range(4):
        colour_image("red", i).save(tmp_path / "img" / f"{i}.jpg")
    write_list(tmp_path, "train", [("img/0.jpg", "dog"), ("img/1.jpg", "cat"), ("img/2.jpg", "dog")], fmt)
    write_list(tmp_path, "val", [("img/3.jpg", "cat")], fmt)
    train, val = load_split(tmp_path, "train"), load_split(tmp_path, "val")
    assert train.classes == ["cat", "dog"] and train.labels == [1, 0, 1] and val.labels == [0]
    assert train.items[0] == str(tmp_path / "img" / "0.jpg")
    write_list(tmp_path, "val", [("img/3.jpg", "cow")], fmt)
    with pytest.raises(DataError, match="cow"):
        load_split(tmp_path, "val")
    ints = write_list(tmp_path / "img", "ints", [("0.jpg", 2), ("1.jpg", 0)], fmt)
    ds = load_split(ints, "train")
    assert ds.labels == [2, 0] and ds.classes == ["0", "1", "2"]


def test_mixed_or_bad_labels_are_data_errors(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"image": "a.jpg", "label": "cat"}\n{"image": "b.jpg", "label": 3}\n')
    with pytest.raises(DataError, match="mix class names and integers"):
        load_split(path)
    path.write_text('{"image": "a.jpg", "label": null}\n')
    with pytest.raises(DataError, match="train.jsonl:1"):
        load_split(path)


def test_undecodable_and_missing_images_are_skipped_and_counted_exactly(tmp_path):
    root = write_folder(tmp_path / "ds", {"train": 3})
    (root / "train" / "red" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    good = (root / "train" / "blue" / "000.jpg").read_bytes()
    (root / "train" / "blue" / "truncated.jpg").write_bytes(good[:200])
    (root / "train" / "green" / "empty.png").write_bytes(b"")
    dataset = load_split(root, "train")
    assert len(dataset) == 12
    enc = tiny_encoder(tmp_path / "enc")
    fs = extract_features(
        enc, dataset, tmp_path / "cache", batch_size=4, num_workers=0, chunk_size=5, device="cpu", progress=False
    )
    assert len(fs) == 9 and fs.meta["skipped"] == {"bad_image": 3}
    skipped_names = sorted(dataset.items[i].rsplit("/", 1)[1] for i in fs.meta["skipped_indices"])
    assert skipped_names == ["empty.png", "garbage.jpg", "truncated.jpg"]
    assert sorted(fs.indices.tolist() + fs.meta["skipped_indices"]) == list(range(12))
    # a list naming a file that is not there: counted as missing
    write_list(root, "val", [("train/red/000.jpg", "red"), ("train/red/nope.jpg", "red")])
    (root / "train.jsonl").write_text('{"image": "train/red/000.jpg", "label": "red"}\n')
    lst = load_split(root / "val.jsonl")
    mem = compute_features(enc, lst, device="cpu")
    assert len(mem) == 1 and mem.meta["skipped"] == {"missing_image": 1}


def test_synthetic_attribute_dataset():
    images, labels, classes = synthetic_attribute_dataset("colour", 30, seed=7, image_size=32)
    assert classes == list(COLOURS) and len(images) == len(labels) == 30 and images[0].size == (32, 32)
    again = synthetic_attribute_dataset("colour", 30, seed=7, image_size=32)
    assert again[1] == labels and again[0][5].tobytes() == images[5].tobytes()
    _, shape_labels, shape_classes = synthetic_attribute_dataset("shape", 30, seed=7, image_size=32)
    assert shape_classes == list(SHAPES) and len(set(shape_labels)) > 1
    with pytest.raises(DataError, match="unknown synthetic attribute"):
        synthetic_attribute_dataset("texture", 3)


def test_a_synthetic_data_spec_gives_held_out_splits_in_memory():
    train, val = load_split("synthetic:colour:12", "train"), load_split("synthetic:colour:12", "val")
    assert len(train) == len(val) == 12 and train.classes == val.classes == list(COLOURS)
    _, labels, _ = synthetic_attribute_dataset("colour", 12, seed=SYNTHETIC_SPLIT_SEEDS["train"], image_size=40)
    assert train.labels == labels and train.signature() != val.signature()  # different draws per split
    assert len(load_split("synthetic:shape", "test")) == 300 and load_split("synthetic:shape", "test").classes == list(
        SHAPES
    )
    for spec, split, message in [
        ("synthetic:texture", "train", "expected synthetic:<attribute>"),
        ("synthetic:colour:0", "train", "N must be a positive integer"),
        ("synthetic:colour:x:y", "train", "expected synthetic:<attribute>"),
        ("synthetic:colour", "holdout", "no split 'holdout'"),
    ]:
        with pytest.raises(DataError, match=message):
            load_split(spec, split)


def test_stratified_holdout_splits_every_class():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2])
    keep, hold = stratified_holdout(labels, 0.2, seed=0)
    assert sorted(keep.tolist() + hold.tolist()) == list(range(16))
    assert torch.bincount(labels[hold], minlength=3).tolist() == [2, 1, 0]
    assert torch.equal(stratified_holdout(labels, 0.2, seed=0)[1], hold)

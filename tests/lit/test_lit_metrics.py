"""Zero-shot classifier and retrieval recall against hand computations; Karpathy JSON parsing; class names."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from lit.retrieval import load_karpathy, recall_at_k
from lit.zeroshot import class_split, load_classnames, load_templates, zero_shot_classifier, zero_shot_logits
from pretrain.runtime.errors import DataError, UserError


def test_classifier_matches_hand_computation():
    torch.manual_seed(0)
    table = {}

    def tokenizer(texts):
        for t in texts:
            table.setdefault(t, len(table))
        ids = torch.tensor([[table[t]] for t in texts])
        return ids, torch.ones(len(texts), dtype=torch.long)

    emb = torch.randn(50, 6)

    def encode_text(ids, lengths):
        return emb[ids[:, 0]] * 3.0  # unnormalised on purpose

    classes, templates = ["cat", "dog", "fox"], ["a {}.", "the {}!", "{} photo"]
    got = zero_shot_classifier(encode_text, tokenizer, classes, templates, classes_per_batch=2)
    cols = []
    for c in classes:
        vecs = torch.stack([F.normalize(emb[table[t.format(c)]] * 3.0, dim=0) for t in templates])
        cols.append(F.normalize(vecs.mean(0), dim=0))
    want = torch.stack(cols, dim=1)
    assert got.shape == (6, 3)
    assert torch.allclose(got, want, atol=1e-6)
    img = torch.randn(4, 6)
    assert torch.allclose(zero_shot_logits(img, got), 100 * F.normalize(img, dim=-1) @ want, atol=1e-4)


def test_recall_at_k_known_ranks():
    # 3 images, 5 texts: image 0 owns texts 0,1; image 1 owns 2,3; image 2 owns 4
    owner = [0, 0, 1, 1, 2]
    sim = torch.tensor(
        [
            [0.3, 0.9, 0.8, 0.0, 0.2],  # image 0: best text 1 (own) -> i2t hit @1
            [0.5, 0.4, 0.1, 0.3, 0.6],  # image 1: ranks 4,0,1,3 (own 3 at rank 4) -> miss @1, hit @5
            [0.2, 0.3, 0.9, 0.1, 0.0],  # image 2: own text 4 is last -> miss @1, hit @5 (only 5 texts)
        ]
    )
    r = recall_at_k(sim, owner, ks=(1, 2, 5))
    assert r["text_retrieval_recall@1"] == pytest.approx(1 / 3)
    assert r["text_retrieval_recall@2"] == pytest.approx(1 / 3)
    assert r["text_retrieval_recall@5"] == pytest.approx(1.0)
    # text->image, per column: t0 -> img1 best, own img0 second (hit @2); t1 -> img0 (hit @1); t2 -> img2 best,
    # own img1 last (hit @3); t3 -> img1 (hit @1); t4 -> img1 best, own img2 last (hit @3)
    assert r["image_retrieval_recall@1"] == pytest.approx(2 / 5)
    assert r["image_retrieval_recall@2"] == pytest.approx(3 / 5)
    assert r["image_retrieval_recall@5"] == pytest.approx(1.0)


def test_multi_caption_hit_rule():
    sim = torch.tensor([[0.0, 1.0, 0.5], [0.0, 1.0, 0.9]])
    # image 0 owns texts 0 and 2: its top-1 is text 1 (miss), top-2 holds text 2 (hit via ANY caption); image 1 hits @1
    r = recall_at_k(sim, [0, 1, 0], ks=(1, 2))
    assert r["text_retrieval_recall@1"] == pytest.approx(0.5)
    assert r["text_retrieval_recall@2"] == pytest.approx(1.0)


def test_karpathy_parsing(tmp_path):
    data = {
        "images": [
            {"filename": "a.jpg", "filepath": "val2014", "split": "test", "sentences": [{"raw": "x"}, {"raw": "y"}]},
            {"filename": "b.jpg", "filepath": "val2014", "split": "train", "sentences": [{"raw": "z"}]},
            {"filename": "c.jpg", "split": "test", "sentences": [{"raw": " w "}]},
        ]
    }
    path = tmp_path / "dataset_coco.json"
    path.write_text(json.dumps(data))
    ds = load_karpathy(path, tmp_path / "img", "test")
    assert ds.images == [str(tmp_path / "img/val2014/a.jpg"), str(tmp_path / "img/c.jpg")]
    assert ds.captions == ["x", "y", "w"] and ds.text_image == [0, 0, 1]
    with pytest.raises(DataError):
        load_karpathy(path, tmp_path, "val")
    path.write_text("{not json")
    with pytest.raises(DataError):
        load_karpathy(path, tmp_path, "test")


def test_package_lists():
    assert len(load_templates("openai")) == 80
    names = load_classnames("imagenet", [str(i) for i in range(1000)])
    assert names[:3] == ["tench", "goldfish", "great white shark"] and len(names) == 1000
    with pytest.raises(DataError):
        load_classnames("imagenet", ["a", "b"])


def test_wnid_folders_need_classnames():
    wnids = ["n01440764", "n01443537", "n01484850"]
    with pytest.raises(UserError, match="--classnames imagenet") as info:
        load_classnames(None, wnids)
    assert "\n" not in str(info.value) and "a photo of a n01440764." in str(info.value)
    assert load_classnames("folders", wnids) == wnids  # asked for explicitly
    assert load_classnames(None, ["golden_retriever", "n01440764"]) == ["golden retriever", "n01440764"]


def test_classes_come_from_the_evaluated_split_without_train(tmp_path):
    (tmp_path / "val").mkdir()
    assert class_split(tmp_path, "val") == "val"
    assert class_split(tmp_path, "val", train_split="test") == "test"
    (tmp_path / "train.jsonl").write_text("")
    assert class_split(tmp_path, "val") == "train"

"""LLaVA data: JSON loading, image-block expansion and label masking, skip reasons, modality grouping, exact resume."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T

from pretrain.data.synthetic import describe, make_sample
from pretrain.runtime.errors import ConfigError, DataError
from vlm.data import LlavaBatches, LlavaSamples, expand_image, format_skipped, plan_epoch, read_llava_json
from vlm.synthetic_llava import SCENE_IN_WORDS, TEXT_ONLY_EVERY, write_scene_text_llava, write_synthetic_llava
from vlm.templates import IGNORE_INDEX, IMAGE_TOKEN, LETTER_ANSWER_PROMPT, SHORT_ANSWER_PROMPT, VICUNA_SYSTEM, encode
from vlm.tiny_llama import build_tiny_tokenizer

N_IMG = 6  # image tokens per image in these tests
TO_TENSOR = T.Compose([T.Resize(16), T.ToTensor()])


def human(value):
    return {"from": "human", "value": value}


def gpt(value):
    return {"from": "gpt", "value": value}


@pytest.fixture(scope="module")
def tok():
    texts = [VICUNA_SYSTEM, "USER: ASSISTANT: </s>", SHORT_ANSWER_PROMPT, "What colour is the circle? red blue green"]
    return build_tiny_tokenizer(texts * 3, vocab=400)


def write_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        names.append(f"images/{i:03d}.jpg")
        make_sample(i, seed, 24).image.save(folder / names[-1])
    return names


def samples_of(rows, folder, tok, **kwargs) -> LlavaSamples:
    args = {"num_image_tokens": N_IMG, "max_length": 256, "image_transform": TO_TENSOR, **kwargs}
    return LlavaSamples(rows, folder, tok, **args)


def expected(tok, segments: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    """LLaVA-style reference: tokenize each segment alone, label the supervised ones, expand `<image>`."""
    ids, labels = [tok.bos_token_id], [IGNORE_INDEX]
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    for text, supervised in segments:
        seg = tok(text, add_special_tokens=False)["input_ids"]
        ids += seg
        labels += seg if supervised else [IGNORE_INDEX] * len(seg)
    p = ids.index(image_id)
    return ids[:p] + [image_id] * N_IMG + ids[p + 1 :], labels[:p] + [IGNORE_INDEX] * N_IMG + labels[p + 1 :]


def test_vicuna_multi_turn_batch_matches_a_tokenwise_reference(tmp_path, tok):
    names = write_images(tmp_path, 2)
    conv = [human("What colour is the circle?\n<image>"), gpt("red"), human("And the square?"), gpt("blue square")]
    rows = [{"id": "a", "image": names[0], "conversations": conv}]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(rows))
    batch = next(iter(LlavaBatches(LlavaSamples.from_json(path, tokenizer=tok, num_image_tokens=N_IMG,
                                                          image_transform=TO_TENSOR), batch_size=1)))  # fmt: skip
    ids, labels = expected(tok, [
        (f"{VICUNA_SYSTEM} USER: <image>\nWhat colour is the circle? ASSISTANT:", False), (" red</s>", True),
        ("USER: And the square? ASSISTANT:", False), (" blue square</s>", True),
    ])  # fmt: skip
    assert batch["input_ids"][0].tolist() == ids and batch["labels"][0].tolist() == labels
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    positions = (batch["input_ids"][0] == image_id).nonzero().flatten().tolist()
    first = len(tok(f"{VICUNA_SYSTEM} USER: ", add_special_tokens=True)["input_ids"])
    assert positions == list(range(first, first + N_IMG))
    assert tok.decode([t for t in labels if t != IGNORE_INDEX]) == " red</s> blue square</s>"
    assert batch["attention_mask"].all() and batch["pixel_values"].shape == (1, 3, 16, 16)


def test_plain_template_labels_the_caption_and_newline_only(tmp_path, tok):
    names = write_images(tmp_path, 1)
    rows = [{"id": "p", "image": names[0], "conversations": [human(IMAGE_TOKEN), gpt("a red circle")]}]
    batch = next(iter(LlavaBatches(samples_of(rows, tmp_path, tok, template="plain"), batch_size=1)))
    ids, labels = expected(tok, [(IMAGE_TOKEN, False), ("a red circle\n", True)])
    assert batch["input_ids"][0].tolist() == ids and batch["labels"][0].tolist() == labels


def test_padding_and_images_only_for_samples_that_have_one(tmp_path, tok):
    names = write_images(tmp_path, 1)
    question = "What colour is the circle, and the square next to it, today?"
    rows = [{"image": names[0], "conversations": [human("<image>\nWhat colour?"), gpt("red")]},
            {"conversations": [human(question), gpt("red")]}]  # fmt: skip
    out = LlavaBatches(samples_of(rows, tmp_path, tok), batch_size=2, group_by_modality_length=False, pad_token_id=4)
    batch = next(iter(out))
    assert batch["pixel_values"].shape[0] == 1
    lengths = batch["attention_mask"].sum(1)
    for i, n in enumerate(lengths.tolist()):
        assert (batch["input_ids"][i, n:] == 4).all() and (batch["labels"][i, n:] == IGNORE_INDEX).all()
    text_only = LlavaBatches(samples_of(rows[1:], tmp_path, tok), batch_size=1)
    assert "pixel_values" not in next(iter(text_only))


def bad_rows(folder: Path, names: list[str]) -> list:
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    long = " ".join(["colour"] * 300)
    ask = [human("<image>\nWhat colour?"), gpt("red")]
    return [
        {"id": "missing", "image": "images/nope.jpg", "conversations": ask},
        {"id": "unreadable", "image": "broken.jpg", "conversations": ask},
        {"id": "no token", "image": names[0], "conversations": [human("What colour?"), gpt("red")]},
        {"id": "token, no image", "conversations": ask},
        {"id": "gpt first", "conversations": [gpt("red"), human("What?")]},
        {"id": "empty", "conversations": [human("What?"), gpt("  ")]},
        "not a dict",
        {"id": "late image", "image": names[0],
         "conversations": [human(long), gpt("ok"), human("<image>\nAnd?"), gpt("x")]},
        {"id": "answer past the end", "conversations": [human(long), gpt("red")]},
    ]  # fmt: skip


def good_rows(names: list[str]) -> list:
    words = ["red", "green", "blue", "yellow", "purple", "orange"]
    return [{"id": f"g{i}", "image": names[i % len(names)], "conversations": [human("<image>\nColour?"), gpt(w)]}
            for i, w in enumerate(words)]  # fmt: skip


REASON_COUNTS = {
    "missing_image": 1, "unreadable_image": 1, "no_image_token": 1, "image_token_without_image": 1,
    "bad_conversation": 3, "image_truncated": 1, "no_supervised_tokens": 1,
}  # fmt: skip


def test_every_skip_reason_is_counted_exactly_and_good_samples_come_out(tmp_path, tok):
    names = write_images(tmp_path, 3)
    samples = samples_of(bad_rows(tmp_path, names) + good_rows(names), tmp_path, tok, max_length=120)
    assert samples.skipped_upfront == {"no_image_token": 1, "image_token_without_image": 1, "bad_conversation": 3}
    loader = LlavaBatches(samples, batch_size=2, seed=1)
    it = iter(loader)
    batches = [next(it) for _ in range(2 * len(loader))]  # two epochs: each bad sample counted once
    assert loader.skipped == REASON_COUNTS == loader.all_skipped
    labelled = [[t for t in b["labels"][i].tolist() if t != IGNORE_INDEX] for b in batches for i in range(2)]
    answers = {tok.decode(ids).strip() for ids in labelled}  # the space may or may not be its own token
    assert answers == {f"{w}</s>" for w in ["red", "green", "blue", "yellow", "purple", "orange"]}
    assert all(b["input_ids"].shape[0] == 2 and b["pixel_values"].shape[0] == 2 for b in batches)
    assert format_skipped(loader.skipped, 15) == (
        "skipped 9 of 15 samples: bad_conversation 3, image_token_without_image 1, image_truncated 1, "
        "missing_image 1, no_image_token 1, no_supervised_tokens 1, unreadable_image 1"
    )


def test_whole_file_errors_are_one_line(tmp_path, tok):
    (tmp_path / "dict.json").write_text('{"conversations": []}')
    (tmp_path / "broken.json").write_text("[{")
    for name in ("dict.json", "broken.json", "absent.json"):
        with pytest.raises(DataError, match=name) as err:
            LlavaSamples.from_json(tmp_path / name, tokenizer=tok)
        assert "\n" not in str(err.value)
    (tmp_path / "rows.jsonl").write_text('{"conversations": [{"from": "human", "value": "Hi?"}, '
                                         '{"from": "gpt", "value": "yes"}]}\n{oops\n')  # fmt: skip
    assert len(read_llava_json(tmp_path / "rows.jsonl")) == 2
    samples = LlavaSamples.from_json(tmp_path / "rows.jsonl", tokenizer=tok)
    assert len(samples) == 1 and samples.skipped_upfront == {"bad_conversation": 1}
    with pytest.raises(DataError, match="no usable sample"):
        LlavaSamples([{"conversations": []}], tmp_path, tok)


def test_truncation_never_splits_the_image_block(tok):
    long = " ".join(["colour"] * 40)
    conv = [human(long), gpt("red"), human("<image>\nAnd the square?"), gpt("blue")]
    encoded = encode(conv, "vicuna_v1", tok)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    p = encoded.input_ids.index(image_id)
    for max_length in range(2, len(encoded.input_ids) + N_IMG + 3):
        out = expand_image(encoded, image_id, N_IMG, max_length)
        if p + N_IMG > max_length:
            assert out == "image_truncated"
        else:
            ids, labels = out
            assert len(ids) == min(max_length, len(encoded.input_ids) + N_IMG - 1) == len(labels)
            assert ids[p : p + N_IMG] == [image_id] * N_IMG and ids.count(image_id) == N_IMG
    text_only = encode([human(long), gpt("red")], "vicuna_v1", tok)
    first_label = next(i for i, t in enumerate(text_only.labels) if t != IGNORE_INDEX)
    assert expand_image(text_only, image_id, N_IMG, first_label) == "no_supervised_tokens"
    assert expand_image(text_only, image_id, N_IMG, first_label + 1) != "no_supervised_tokens"


def mixed_rows(folder: Path, n_image: int, n_text: int) -> list:
    names = write_images(folder, 4)
    rows = [{"image": names[i % 4], "conversations": [human("<image>\n" + "colour " * (i % 7)), gpt("red")]}
            for i in range(n_image)]  # fmt: skip
    rows += [{"conversations": [human("What " + "colour " * (3 * (i % 9))), gpt("blue")]} for i in range(n_text)]
    return rows


def padding_fraction(loader: LlavaBatches) -> float:
    it = iter(loader)
    masks = [next(it)["attention_mask"] for _ in range(len(loader))]
    return 1 - sum(float(m.sum()) for m in masks) / sum(m.numel() for m in masks)


def test_modality_grouping_never_mixes_and_pads_less(tmp_path, tok):
    samples = samples_of(mixed_rows(tmp_path, 24, 24), tmp_path, tok, num_image_tokens=32)  # images make it long
    grouped = LlavaBatches(samples, batch_size=4, seed=0, megabatch_batches=3)
    it = iter(grouped)
    for _ in range(2 * len(grouped)):
        batch = next(it)
        assert "pixel_values" not in batch or batch["pixel_values"].shape[0] == 4
    plain = padding_fraction(LlavaBatches(samples, batch_size=4, seed=0, group_by_modality_length=False))
    assert padding_fraction(LlavaBatches(samples, batch_size=4, seed=0)) < 0.7 * plain  # LLaVA's grouping
    assert padding_fraction(LlavaBatches(samples, batch_size=4, seed=0, megabatch_batches=3)) < 0.3 * plain


def test_two_ranks_see_disjoint_samples_each_epoch():
    has_image = [i % 3 != 0 for i in range(48)]
    lengths = [(7 * i) % 11 + 1 for i in range(48)]
    for group in (True, False):
        for epoch in (0, 1):
            steps = plan_epoch(has_image, lengths, 4, 2, seed=5, epoch=epoch, group_by_modality=group)
            rank0 = [i for step in steps for i in step[0]]
            rank1 = [i for step in steps for i in step[1]]
            assert not set(rank0) & set(rank1) and sorted(rank0 + rank1) == list(range(48))
            if group:
                assert all(len({has_image[i] for i in step[0] + step[1]}) == 1 for step in steps)
        assert plan_epoch(has_image, lengths, 4, 2, 5, 0, group) != plan_epoch(has_image, lengths, 4, 2, 5, 1, group)
    # a leftover is padded by wrapping around, so every rank gets the same number of full batches
    steps = plan_epoch(has_image[:45], lengths[:45], 4, 2, seed=5, epoch=0)
    assert all(len(step) == 2 and len(step[0]) == len(step[1]) == 4 for step in steps)


def test_resume_continues_with_exactly_the_same_batches(tmp_path, tok):
    names = write_images(tmp_path, 3)
    rows = bad_rows(tmp_path, names) + good_rows(names) + mixed_rows(tmp_path, 6, 6)
    augment = T.Compose([T.RandomResizedCrop(16, scale=(0.3, 1.0)), T.RandomHorizontalFlip(), T.ToTensor()])
    samples = samples_of(rows, tmp_path, tok, max_length=120, image_transform=augment)

    def loader(**kwargs):
        return LlavaBatches(samples, batch_size=2, seed=3, **kwargs)

    first = loader()
    steps_per_epoch = len(first)
    it = iter(first)
    k, m = 3, steps_per_epoch + 2  # the rest crosses an epoch boundary
    for _ in range(k):
        next(it)
    state, counted = first.state_dict(), first.skipped
    expected_batches = [next(it) for _ in range(m)]
    resumed = loader(num_workers=2)
    resumed.load_state_dict(state)
    it2 = iter(resumed)
    for want in expected_batches:
        got = next(it2)
        assert got.keys() == want.keys() and all(torch.equal(got[key], want[key]) for key in want)
    total = {r: counted.get(r, 0) + resumed.skipped.get(r, 0) for r in REASON_COUNTS}
    assert {r: c for r, c in total.items() if c} == first.skipped == REASON_COUNTS
    assert resumed.all_skipped == first.all_skipped
    with pytest.raises(ConfigError, match="batch_size"):
        LlavaBatches(samples, batch_size=4, seed=3).load_state_dict(state)


def test_synthetic_writer_formats_load_without_skips(tmp_path, tok):
    stage1 = write_synthetic_llava(tmp_path, 8, seed=0, image_size=24, stage=1)
    rows1 = json.loads(stage1.read_text())
    assert all(r["conversations"][0] == human(IMAGE_TOKEN) and len(r["conversations"]) == 2 for r in rows1)
    assert rows1[0]["conversations"][1]["value"] == make_sample(0, 0, 24).caption
    stage2 = write_synthetic_llava(tmp_path, 60, seed=0, image_size=24, stage=2)
    rows2 = json.loads(stage2.read_text())
    text_only, option_counts, first_kinds = [r for r in rows2 if "image" not in r], set(), set()
    assert len(text_only) == 60 // TEXT_ONLY_EVERY and len({len(r["conversations"]) for r in rows2}) > 1
    for r in rows2:
        humans = [t["value"] for t in r["conversations"][0::2]]
        answers = [t["value"] for t in r["conversations"][1::2]]
        if humans[0].endswith(LETTER_ANSWER_PROMPT):  # a lettered multiple-choice row (MMBench's form)
            letters = [line[0] for line in humans[0].splitlines() if line[1:3] == ". "]
            assert len(humans) == 1 and answers[0] in letters and letters == list("ABCD"[: len(letters)])
            option_counts.add(len(letters))
        else:
            assert all(h.endswith("\n" + SHORT_ANSWER_PROMPT) for h in humans)
            if "image" in r:  # POPE's pair (the scene's object: yes; an absent one: no) and maybe one more, shuffled
                pair = [a for h, a in zip(humans, answers) if "Is there a" in h]
                assert sorted(pair) == ["no", "yes"] and len(humans) in (2, 3)
                first_kinds.add("Is there a" in humans[0])
        assert humans[0].startswith("<image>\n") == ("image" in r) and (tmp_path / r.get("image", "")).exists()
    for path, template in ((stage1, "plain"), (stage2, "vicuna_v1")):
        samples = LlavaSamples.from_json(path, tokenizer=tok, template=template, num_image_tokens=N_IMG,
                                         image_transform=TO_TENSOR)  # fmt: skip
        loader = LlavaBatches(samples, batch_size=4)
        it = iter(loader)
        batches = [next(it) for _ in range(len(loader))]
        assert loader.all_skipped == {} and len(samples) == len(json.loads(path.read_text()))
    assert sum(r["conversations"][0]["value"].endswith(LETTER_ANSWER_PROMPT) for r in rows2) == 15
    assert option_counts == {2, 3, 4}  # as ScienceQA's problems vary them, so no letter is always there
    assert first_kinds == {True, False}  # a first answer is not always yes/no
    assert sum("pixel_values" not in b for b in batches) == 1  # the 3 text-only rows make one (wrapped) batch


def test_scene_text_rows_ask_stage_2s_questions_about_the_scene_told_in_words(tmp_path, tok):
    text = json.loads(write_scene_text_llava(tmp_path / "text", 40, seed=3).read_text())
    images = json.loads(write_synthetic_llava(tmp_path / "images", 40, seed=3, image_size=24, stage=2).read_text())
    assert len(text) == 40 and not any("image" in r for r in text)
    same = 0
    for index, (row, image_row) in enumerate(zip(text, images)):
        words = SCENE_IN_WORDS.format(caption=describe(index, 3)[1])
        assert row["conversations"][0]["value"].startswith(words + "\n") and IMAGE_TOKEN not in json.dumps(row)
        if "image" in image_row:  # the same questions and answers as the image row, the scene in words instead
            told = image_row["conversations"][0]["value"].replace(IMAGE_TOKEN, words)
            assert row["conversations"] == [
                {**image_row["conversations"][0], "value": told},
                *image_row["conversations"][1:],
            ]
            same += 1
    assert same == 40 - 40 // TEXT_ONLY_EVERY
    samples = LlavaSamples.from_json(tmp_path / "text" / "llava_scene_text.json", tokenizer=tok, num_image_tokens=N_IMG)
    assert len(samples) == 40 and samples.skipped_upfront == {} and not any(samples.has_image)


def test_a_16bit_png_is_scaled_not_clipped_white(tmp_path, tok):
    """LLaVA samples and `vlm chat` decode with pretrain's shared decoder: a 16-bit PNG keeps its grey levels."""
    from PIL import Image

    from vlm.chat import open_image

    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0..65472, mean ~0.5 of full scale
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    rows = [{"image": "grey16.png", "conversations": [human("<image>\nWhat colour?"), gpt("red")]}]
    batch = next(iter(LlavaBatches(samples_of(rows, tmp_path, tok, image_transform=T.ToTensor()), batch_size=1)))
    want = ramp.mean() / 65535
    assert abs(batch["pixel_values"].mean().item() - want) < 0.01  # convert("RGB") alone gives ~1.0 (white)
    assert abs(np.asarray(open_image(tmp_path / "grey16.png")).mean() / 255 - want) < 0.01


def test_the_sample_cache_builds_once_returns_equal_batches_and_keeps_its_bound(tmp_path, tok):
    rows = mixed_rows(tmp_path, 6, 2)
    plain, cached = samples_of(rows, tmp_path, tok), samples_of(rows, tmp_path, tok, cache_size=4)
    first = [cached.build(i) for i in range(len(rows))]
    assert len(cached._built) == 4  # the bound holds
    for folder_image in (tmp_path / "images").iterdir():
        folder_image.unlink()  # a cached sample is not read again; an uncached one is
    assert all(cached.build(i) is first[i] for i in range(4))
    assert cached.build(5) == "missing_image" and plain.build(0) == "missing_image"
    rows = mixed_rows(tmp_path / "again", 6, 2)
    plain, cached = samples_of(rows, tmp_path / "again", tok), samples_of(rows, tmp_path / "again", tok, cache_size=99)
    a, b = iter(LlavaBatches(plain, batch_size=2, seed=1)), iter(LlavaBatches(cached, batch_size=2, seed=1))
    for _ in range(3 * len(rows) // 2):  # three epochs: the cached batches equal the rebuilt ones
        want, got = next(a), next(b)
        assert got.keys() == want.keys() and all(torch.equal(got[key], want[key]) for key in want)

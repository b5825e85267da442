"""The batch stream: contract, exact resume, world-size independence, no hangs, exact skip counts, resampling."""

from __future__ import annotations

import itertools
import signal
import warnings
from collections import Counter
from contextlib import contextmanager

import pytest
import torch
from pipeline_fixtures import corrupt_members, fake_encode_text, jpeg_bytes, write_tar

from pretrain.data.shards import iter_samples
from pretrain.data.stream import DataConfig, build_loader
from pretrain.data.synthetic import make_sample, write_list, write_shards
from pretrain.data.transforms import TransformConfig
from pretrain.runtime.config import from_dict, to_dict
from pretrain.runtime.errors import ConfigError, DataError

SMALL = TransformConfig(image_size=16, crop_scale=(0.5, 1.0))


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging forever."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"no batch within {seconds} s: the loader hangs")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def take(loader, n: int) -> list[dict]:
    with deadline(60):
        return list(itertools.islice(iter(loader), n))


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        torch.equal(x["image"], y["image"]) and x["caption"] == y["caption"] and torch.equal(x["text"], y["text"])
        for x, y in zip(a, b)
    )


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """5 good shards of 5 samples and one shard with every kind of sample fault."""
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, num_samples=25, samples_per_shard=5, image_size=20)
    members, _, _ = corrupt_members("c")
    write_tar(root / "00005.tar", members)
    return root


def test_batch_contract_and_config_round_trip():
    cfg = DataConfig(kind="synthetic", num_workers=0, synthetic_samples=20, transform=SMALL)
    assert from_dict(DataConfig, to_dict(cfg)) == cfg
    batch = take(build_loader(cfg, fake_encode_text, 3, seed=1), 1)[0]
    assert set(batch) == {"image", "text", "text_len", "caption"}
    assert batch["image"].shape == (3, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert batch["text"].shape == (3, 16) and batch["text"].dtype == torch.long
    assert batch["text_len"].tolist() == [min(16, len(c.encode())) for c in batch["caption"]]
    no_text = take(build_loader(cfg, None, 3, seed=1), 1)[0]
    assert set(no_text) == {"image", "caption"} and torch.equal(no_text["image"], batch["image"])


def test_callers_rng_is_left_alone():
    cfg = DataConfig(kind="synthetic", num_workers=0, synthetic_samples=20, transform=SMALL)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    take(build_loader(cfg, None, 4, seed=1), 3)
    assert torch.equal(torch.rand(3), expected)


def _config(kind: str, root, num_workers: int, resampled: bool = False) -> DataConfig:
    return DataConfig(
        kind=kind,
        train=str(root) if root else "",
        num_workers=num_workers,
        resampled=resampled,
        synthetic_samples=13,
        synthetic_image_size=20,
        transform=SMALL,
    )


RESUME_CASES = [
    ("shards", 0, False),
    ("shards", 2, False),
    ("shards", 2, True),
    ("synthetic", 0, False),
    ("synthetic", 2, False),
    ("list", 2, False),
]


@pytest.mark.parametrize("kind,num_workers,resampled", RESUME_CASES)
def test_exact_resume(shard_dir, tmp_path, kind, num_workers, resampled):
    root = write_list(tmp_path, 11, image_size=20) if kind == "list" else shard_dir
    cfg = _config(kind, root, num_workers, resampled)
    first = build_loader(cfg, fake_encode_text, 3, rank=0, world_size=1, seed=7)
    stream = iter(first)
    with deadline(60):
        head = [next(stream) for _ in range(11)]  # crosses shard and epoch boundaries
        state = first.state_dict()
        tail = [next(stream) for _ in range(5)]
    del stream
    if kind == "shards" and not resampled:
        assert state["skipped"] and any(w["epoch"] >= 1 for w in state["workers"])
    resumed = build_loader(cfg, fake_encode_text, 3, rank=0, world_size=1, seed=7)
    resumed.load_state_dict(state)
    assert resumed.skipped == {}  # counts since the load; the Trainer adds the checkpointed totals (no double count)
    again = take(resumed, 5)
    assert same(tail, again)
    total = Counter(state["skipped"]) + Counter(resumed.skipped)
    assert dict(total) == first.skipped and resumed.batches_consumed == first.batches_consumed == 16
    assert resumed.state_dict()["skipped"] == first.skipped
    assert not same(head[:5], tail)
    other_seed = build_loader(cfg, fake_encode_text, 3, rank=0, world_size=1, seed=8)
    assert not same(head, take(other_seed, 7))


def test_resume_checks_the_settings(shard_dir):
    loader = build_loader(_config("shards", shard_dir, 2), None, 3, seed=7)
    take(loader, 2)
    state = loader.state_dict()
    with pytest.raises(ConfigError, match="num_logical_workers"):
        build_loader(_config("shards", shard_dir, 3), None, 3, seed=7).load_state_dict(state)
    with pytest.raises(ConfigError, match="seed"):
        build_loader(_config("shards", shard_dir, 2), None, 3, seed=8).load_state_dict(state)


def test_synthetic_resume_with_another_worker_count():
    cfg = _config("synthetic", None, 0)
    run = build_loader(cfg, None, 4, seed=3)
    full = take(run, 6)
    part = build_loader(cfg, None, 4, seed=3)
    take(part, 2)
    elastic = build_loader(_config("synthetic", None, 2), None, 4, seed=3)
    elastic.load_state_dict(part.state_dict())
    assert same_images(full[2:], take(elastic, 4))


def same_images(a: list[dict], b: list[dict]) -> bool:
    return all(torch.equal(x["image"], y["image"]) and x["caption"] == y["caption"] for x, y in zip(a, b))


@pytest.mark.parametrize("kind", ["synthetic", "list"])
def test_global_batch_is_the_same_for_any_world_size_and_worker_count(tmp_path, kind):
    root = write_list(tmp_path, 9, image_size=20) if kind == "list" else None
    single = take(build_loader(_config(kind, root, 0), fake_encode_text, 4, rank=0, world_size=1, seed=5), 5)
    ranks = [
        take(build_loader(_config(kind, root, 2), fake_encode_text, 2, rank=r, world_size=2, seed=5), 5)
        for r in range(2)
    ]
    for step, whole in enumerate(single):
        r0, r1 = ranks[0][step], ranks[1][step]
        interleaved = torch.stack([r0["image"][0], r1["image"][0], r0["image"][1], r1["image"][1]])
        assert torch.equal(whole["image"], interleaved)
        assert whole["caption"] == [r0["caption"][0], r1["caption"][0], r0["caption"][1], r1["caption"][1]]


def test_no_hang_with_fewer_shards_than_workers_times_ranks(tmp_path):
    write_shards(tmp_path, num_samples=6, samples_per_shard=3, image_size=20)
    cfg = _config("shards", tmp_path, 2)
    with pytest.warns(UserWarning, match="2 shards for 2 rank"):
        loaders = [build_loader(cfg, None, 2, rank=r, world_size=2, seed=0) for r in range(2)]
    for loader in loaders:
        batches = take(loader, 4)
        assert len(batches) == 4 and all(len(b["caption"]) == 2 for b in batches)


def test_an_epoch_covers_every_sample_once(tmp_path):
    write_shards(tmp_path, num_samples=40, samples_per_shard=5, image_size=20)
    per_rank = [
        take(build_loader(_config("shards", tmp_path, 2), None, 5, rank=r, world_size=2, seed=1), 4) for r in range(2)
    ]
    captions = [c for batches in per_rank for b in batches for c in b["caption"]]
    assert sorted(captions) == sorted(make_sample(i, image_size=20).caption for i in range(40))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_corrupt_samples_are_counted_exactly_and_batches_stay_full(tmp_path, num_workers):
    expected, good = {}, []
    for shard in range(max(1, num_workers)):  # one faulty shard per worker, each ending with a good sample
        members, captions, counts = corrupt_members(f"s{shard}_")
        write_tar(tmp_path / f"{shard:05d}.tar", members)
        good += captions
        expected = {k: expected.get(k, 0) + v for k, v in counts.items()}
    loader = build_loader(_config("shards", tmp_path, num_workers), None, 2, seed=3)
    batches = take(loader, len(good) // 2)
    assert all(len(b["caption"]) == 2 and b["image"].shape[0] == 2 for b in batches)
    assert sorted(c for b in batches for c in b["caption"]) == sorted(good)
    assert loader.skipped == expected


def test_truncated_shard_is_counted_once_per_pass(tmp_path):
    members = []
    for i in range(4):
        members += [(f"{i:09d}.jpg", jpeg_bytes(i)), (f"{i:09d}.txt", f"caption {i}".encode())]
    path = write_tar(tmp_path / "00000.tar", members)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    intact = len(list(iter_samples(str(path), Counter())))
    assert 0 < intact < 4
    loader = build_loader(_config("shards", tmp_path, 0), None, 1, seed=0)
    first_pass = [b["caption"][0] for b in take(loader, intact)]
    assert first_pass == [f"caption {i}" for i in range(intact)] and loader.skipped == {}
    assert take(loader, 1)[0]["caption"] == ["caption 0"]  # the second pass begins; the cut was counted once
    assert loader.skipped == {"truncated_shard": 1}


def test_resampled_mode_is_seeded_and_draws_all_shards(shard_dir):
    def captions(seed: int) -> list[str]:
        loader = build_loader(_config("shards", shard_dir, 0, resampled=True), None, 5, seed=seed)
        return [c for b in take(loader, 8) for c in b["caption"]]

    a, b = captions(1), captions(1)
    assert a == b and a != captions(2)
    assert len(set(a)) > 10  # drew from several shards (with replacement)


def test_unusable_data_is_one_clear_error(tmp_path):
    (tmp_path / "00000.tar").write_bytes(b"garbage" * 100)
    for num_workers in (0, 2):
        with warnings.catch_warnings(), pytest.raises(DataError, match="no readable samples") as err:
            warnings.simplefilter("ignore")  # 1 shard for 2 workers
            take(build_loader(_config("shards", tmp_path, num_workers), None, 2, seed=0), 1)
        assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="matches no files"):
        build_loader(_config("shards", f"{tmp_path}/*.tgz", 0), None, 2)
    with pytest.raises(ConfigError, match="data.train"):
        build_loader(DataConfig(kind="list"), None, 2)


def test_list_skips_missing_images_without_shortening_batches(tmp_path):
    path = write_list(tmp_path, 6, image_size=20)
    (tmp_path / "images" / "000000003.png").unlink()
    loader = build_loader(_config("list", path, 0), None, 3, seed=0)
    batches = take(loader, 4)  # two epochs of 6 rows
    assert all(len(b["caption"]) == 3 for b in batches)
    assert loader.skipped == {"missing_image": 2}

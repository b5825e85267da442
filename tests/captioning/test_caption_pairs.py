"""ClipCap's training pairs across ranks: one shared permutation per epoch, disjoint rank slices that together
make the global batch, and an exact resume from the stream's state."""

from __future__ import annotations

import itertools

import pytest
import torch

from captioning.data import CaptionPairs
from pretrain.runtime.errors import DataError

N = 50


def _pairs(rank: int = 0, world_size: int = 1, batch: int = 4, seed: int = 3) -> CaptionPairs:
    """Pair i has feature [i] and caption ids [i + 1] (both name the pair, to read batches back)."""
    features = torch.arange(N, dtype=torch.float32)[:, None]
    return CaptionPairs(features, list(range(N)), [[i + 1] for i in range(N)], batch, seed, rank, world_size)


def _rows(batch: dict[str, torch.Tensor]) -> list[int]:
    assert batch["features"][:, 0].long().tolist() == (batch["tokens"][:, 0] - 1).tolist()
    return batch["features"][:, 0].long().tolist()


def test_two_ranks_take_disjoint_slices_of_each_global_batch():
    ranks = [_pairs(rank, 2) for rank in range(2)]
    assert len(ranks[0]) == N // 8  # global batches of 2 x 4 pairs per epoch
    steps = 3 * len(ranks[0]) + 2  # over epoch boundaries
    streams = [[_rows(b) for b in itertools.islice(iter(r), steps)] for r in ranks]
    for step in range(steps):
        a, b = streams[0][step], streams[1][step]
        assert len(a) == len(b) == 4 and not set(a) & set(b)
    for epoch in range(3):
        per_epoch = slice(epoch * len(ranks[0]), (epoch + 1) * len(ranks[0]))
        seen = [i for s in (streams[0][per_epoch], streams[1][per_epoch]) for rows in s for i in rows]
        assert len(seen) == len(set(seen)) == 8 * len(ranks[0])  # no pair twice within an epoch, on any rank
    # the two ranks together draw exactly the single-process global batches of batch 8
    single = [_rows(b) for b in itertools.islice(iter(_pairs(0, 1, batch=8)), steps)]
    assert [a + b for a, b in zip(*streams)] == single


def test_resume_equals_an_uninterrupted_stream():
    whole = [_rows(b) for b in itertools.islice(iter(_pairs(1, 2)), 20)]
    first = _pairs(1, 2)
    head = [_rows(b) for b in itertools.islice(iter(first), 9)]  # stops mid-epoch (6 global batches per epoch)
    state = first.state_dict()
    resumed = _pairs(1, 2)
    resumed.load_state_dict(state)
    assert head + [_rows(b) for b in itertools.islice(iter(resumed), 11)] == whole


def test_too_few_captions_for_one_global_batch():
    with pytest.raises(DataError, match="global batch"):
        _pairs(0, 2, batch=30)

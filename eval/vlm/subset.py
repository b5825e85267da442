"""`--limit N`: the one way a benchmark picks a subset, the same N questions every run, stratified by category."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
SUBSET_SEED = 0


def fixed_subset(items: Sequence[T], n: int | None, key: Callable[[T], Any] | None = None, seed: int = SUBSET_SEED):
    """`n` of `items` (all when n is None or >= len), the same ones every run, kept in file order.

    With `key` (a category), each category keeps about its share of `n` (largest remainders), so a 1k subset of a
    benchmark has the full set's mix; when `n` is at least the number of categories, each keeps at least one.
    """
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        return []
    rng = random.Random(seed)
    if key is None:
        chosen = sorted(rng.sample(range(len(items)), n))
        return [items[i] for i in chosen]
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        groups[key(item)].append(i)
    names = sorted(groups, key=str)
    take = dict.fromkeys(names, 1 if n >= len(names) else 0)  # room for every category: each keeps one
    left = n - sum(take.values())
    quota = {g: left * len(groups[g]) / len(items) for g in names}
    for g in names:
        take[g] += int(quota[g])
    for g in sorted(names, key=lambda g: (-(quota[g] - int(quota[g])), str(g)))[: n - sum(take.values())]:
        take[g] += 1
    chosen: list[int] = []
    for g in names:
        chosen += rng.sample(groups[g], min(take[g], len(groups[g])))
    return [items[i] for i in sorted(chosen)]

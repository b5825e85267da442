"""CPU threads: one explicit policy for every trainer, measured in `bench/threads.py` (README: thread settings).

`run.num_threads` N > 0 is taken as given. 0 keeps an OMP_NUM_THREADS the environment sets (torchrun sets 1 per
rank unless told otherwise), else it is this rank's share of the cores this process may use (its CPU affinity, so
`taskset` and container cpusets are respected), less one core per data-loader worker process of the rank: those
workers decode and augment on the same cores, and torch's pool slows when its threads must wait for a core (measured:
the tiny pretraining on 2 cores with one worker runs 1.9x faster on 1 thread than on 2; `bench/threads.py`).
"""

from __future__ import annotations

import os

import torch


def available_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cpu_threads(requested: int, local_world_size: int = 1, workers: int = 0) -> int:
    """Intra-op threads for `requested` (`run.num_threads`): itself when positive, else this rank's share of the
    available cores less its `workers` (at least 1)."""
    if requested > 0:
        return requested
    return max(1, available_cores() // max(1, local_world_size) - max(0, workers))


def use_cpu_threads(requested: int, workers: int = 0) -> int:
    """Set torch's intra-op threads by the policy above (ranks on this node from torchrun's LOCAL_WORLD_SIZE,
    `workers` data-loader processes per rank); returns the number in use."""
    if requested <= 0 and os.environ.get("OMP_NUM_THREADS", "").strip():
        return torch.get_num_threads()  # torch read it at start-up
    threads = cpu_threads(requested, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1), workers)
    torch.set_num_threads(threads)
    return threads

"""The CPU thread policy: a given number is used; 0 keeps OMP_NUM_THREADS, else this rank's share of the cores."""

import pytest
import torch

from pretrain.runtime import threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_cpu_threads_shares_the_available_cores_among_local_ranks(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda: 16)
    assert threads.cpu_threads(0) == 16
    assert threads.cpu_threads(0, local_world_size=8) == 2
    assert threads.cpu_threads(0, local_world_size=32) == 1  # never zero
    assert threads.cpu_threads(3, local_world_size=8) == 3  # a given number is used as is
    assert threads.cpu_threads(0, local_world_size=2, workers=3) == 5  # data workers take their own cores
    assert threads.cpu_threads(0, local_world_size=8, workers=4) == 1


def test_use_cpu_threads_sets_torch_and_respects_the_environment(monkeypatch, restore_threads):
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.use_cpu_threads(0) == 2 and torch.get_num_threads() == 2
    assert threads.use_cpu_threads(1) == 1 and torch.get_num_threads() == 1
    assert threads.use_cpu_threads(0, workers=1) == 1
    torch.set_num_threads(3)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # set by the user or by torchrun: torch already follows it
    assert threads.use_cpu_threads(0) == 3 and torch.get_num_threads() == 3
    assert threads.use_cpu_threads(2) == 2  # an explicit run.num_threads still wins


def test_available_cores_follows_the_affinity_mask():
    assert 1 <= threads.available_cores() <= (torch.multiprocessing.cpu_count() or 1)

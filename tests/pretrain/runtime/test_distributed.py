"""Process-group setup: the collective timeout is generous by default and set from the environment."""

import os
import subprocess
import sys
from datetime import timedelta

import pytest
import torch.distributed as dist

from pretrain.runtime import distributed
from pretrain.runtime.errors import ConfigError


def test_timeout_default_override_and_bad_values(monkeypatch):
    monkeypatch.delenv("SUPERCLASS_DIST_TIMEOUT_MIN", raising=False)
    assert distributed.dist_timeout() == timedelta(hours=2)
    monkeypatch.setenv("SUPERCLASS_DIST_TIMEOUT_MIN", "7.5")
    assert distributed.dist_timeout() == timedelta(minutes=7.5)
    for bad in ("0", "-3", "soon", "inf"):
        monkeypatch.setenv("SUPERCLASS_DIST_TIMEOUT_MIN", bad)
        with pytest.raises(ConfigError, match="SUPERCLASS_DIST_TIMEOUT_MIN"):
            distributed.dist_timeout()


def test_process_group_gets_the_timeout(monkeypatch):
    """Rank 0 alone builds feature caches / writes checkpoints while the others wait: 10 min would kill them."""
    seen: dict = {}
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("SUPERCLASS_DIST_TIMEOUT_MIN", raising=False)
    info = distributed.init_distributed("cpu")
    assert seen == {"backend": "gloo", "timeout": timedelta(hours=2)}
    assert (info.rank, info.world_size) == (1, 2)


def test_local_only_makes_a_torchrun_process_act_alone(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.rank_world() == (1, 2)
    joined = []
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: joined.append(kw))
    with distributed.local_only():
        info = distributed.init_distributed("cpu")
        assert (info.rank, info.world_size, info.is_main) == (0, 1, True) and distributed.rank_world() == (0, 1)
        assert not distributed.is_distributed() and not distributed.group_active()
    assert joined == [] and distributed.rank_world() == (1, 2)  # restored on exit; no group was joined


_REAL_INIT = dist.init_process_group


def _one_rank_group(**_: object) -> None:
    """A real gloo group of one process, standing in for torchrun's."""
    _REAL_INIT("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)


def test_process_group_leaves_the_group_it_joined_even_on_error(monkeypatch):
    """A job's group is destroyed on the way out: gloo threads left at interpreter exit can SIGABRT the process."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "init_process_group", _one_rank_group)
    with pytest.raises(RuntimeError, match="boom"):
        with distributed.process_group("cpu") as info:
            assert dist.is_initialized() and info.world_size == 1
            raise RuntimeError("boom")
    assert not dist.is_initialized()


def test_process_group_keeps_a_callers_group():
    _one_rank_group()
    try:
        with distributed.process_group("cpu") as info:
            assert (info.rank, info.world_size) == (0, 1)
        assert dist.is_initialized()  # the caller set it up: theirs to leave
    finally:
        dist.destroy_process_group()


_WORKER = """
import atexit, sys
from pretrain.runtime.distributed import exit_worker
atexit.register(lambda: print("teardown ran"))
print("results written", end="")  # unflushed: exit_worker must flush it
sys.stderr.write("a warning")
exit_worker(3)
"""


@pytest.mark.parametrize("launched", [True, False])
def test_exit_worker_flushes_and_skips_teardown_only_under_a_launcher(launched):
    """A torchrun worker ends without the interpreter's teardown (where gloo's threads can abort a finished run);
    its output and exit code survive. A lone process exits normally (atexit handlers run)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHELASTIC_RUN_ID", "WORLD_SIZE")}
    if launched:
        env.update(TORCHELASTIC_RUN_ID="test", WORLD_SIZE="2")
    result = subprocess.run([sys.executable, "-c", _WORKER], env=env, capture_output=True, text=True)
    assert result.returncode == 3
    assert result.stderr == "a warning"
    assert result.stdout == ("results written" if launched else "results writtenteardown ran\n")

import json
import math
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pretrain.runtime.checkpoint import list_checkpoints, load_checkpoint
from pretrain.runtime.distributed import DistInfo
from pretrain.runtime.errors import ConfigError, NonFiniteError, StopRequested
from pretrain.runtime.loop import RunConfig, Trainer
from pretrain.runtime.metrics import read_metrics
from pretrain.runtime.optim import OptimConfig

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


class ToyStream:
    """A resumable regression stream: batch b is a pure function of (seed, b)."""

    def __init__(self, batch_size: int, crash_at: int | None = None) -> None:
        self.batch_size, self.crash_at, self.consumed = batch_size, crash_at, 0

    def __iter__(self):
        while True:
            if self.crash_at is not None and self.consumed == self.crash_at:
                raise RuntimeError("simulated kill")
            g = torch.Generator().manual_seed(1000 + self.consumed)
            x = torch.randn(self.batch_size, 8, generator=g)
            self.consumed += 1
            yield {"x": x, "y": x @ (torch.arange(8.0).unsqueeze(1) / 8)}

    def state_dict(self):
        return {"consumed": self.consumed}

    def load_state_dict(self, state):
        self.consumed = state["consumed"]

    @property
    def skipped(self):
        return {"bad_image": 1}


class ToyTask(nn.Module):
    def __init__(self, nan_at_call: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 1))
        self.register_buffer("calls", torch.zeros((), dtype=torch.float64))
        self.nan_at_call = nan_at_call

    def forward(self, batch):
        self.calls += 1
        loss = nn.functional.mse_loss(self.net(batch["x"]), batch["y"])
        if self.nan_at_call is not None and int(self.calls) == self.nan_at_call:
            loss = loss * float("nan")
        return {"loss": loss}


def _trainer(
    tmp_path, steps=12, save_every=4, resume="", task=None, stream=None, dist_info=CPU, grad_accum=1, precision="auto"
):
    run = RunConfig(
        out_dir=str(tmp_path),
        steps=steps,
        global_batch_size=16,
        grad_accum=grad_accum,
        precision=precision,
        log_every=2,
        save_every=save_every,
        resume=resume,
        keep_checkpoints=0,
    )
    optim = OptimConfig(lr=3e-2, warmup_steps=2, weight_decay=0.01)
    stream = stream or ToyStream(16 // grad_accum)
    return Trainer(task or ToyTask(), stream, run, optim, dist_info, config_yaml="toy: 1\n")


def test_loss_falls_and_metrics_are_logged(tmp_path):
    trainer = _trainer(tmp_path, steps=40, save_every=0)
    trainer.fit()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(2, 41, 2))
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    assert records[-1]["samples"] == 40 * 16 and records[-1]["skipped"] == {"bad_image": 1}
    assert all(k in records[0] for k in ("lr", "samples_per_s", "grad_norm"))


@pytest.mark.parametrize(("precision", "accum"), [("auto", 1), ("bf16_weights", 2)])
def test_kill_and_resume_gives_identical_weights(tmp_path, precision, accum):
    """Also on bf16 weight copies (fp32 masters checkpointed, copies re-cast on restore), over 2 micro-steps."""
    straight = _trainer(tmp_path / "a", grad_accum=accum, precision=precision)
    straight.fit()

    crashed = _trainer(tmp_path / "b", stream=ToyStream(16 // accum, crash_at=7 * accum), grad_accum=accum,
                       precision=precision)  # fmt: skip
    with pytest.raises(RuntimeError, match="simulated kill"):
        crashed.fit()
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step_00000004"]
    resumed = _trainer(tmp_path / "b", resume="latest", grad_accum=accum, precision=precision)
    resumed.fit()
    assert straight.task.net[0].weight.dtype == torch.float32  # the masters stay fp32

    for (name, a), (_, b) in zip(straight.task.state_dict().items(), resumed.task.state_dict().items()):
        assert torch.equal(a, b), name
    opt_a, opt_b = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    for key in opt_a["state"]:
        assert torch.equal(opt_a["state"][key]["exp_avg"], opt_b["state"][key]["exp_avg"])
    steps_b = [r["step"] for r in read_metrics(tmp_path / "b")]
    assert steps_b == sorted(set(steps_b)), "metrics lines after the checkpoint must not be duplicated"
    assert read_metrics(tmp_path / "b")[-1]["skipped"] == {"bad_image": 2}  # counted across the resume


def test_resume_clears_what_a_kill_left_in_the_run_dir(tmp_path):
    crashed = _trainer(tmp_path, stream=ToyStream(16, crash_at=7))
    with pytest.raises(RuntimeError, match="simulated kill"):
        crashed.fit()
    proc = subprocess.Popen([sys.executable, "-c", "pass"])  # the killed run's pid: a process that has exited
    proc.wait()
    leftover = tmp_path / f".encoder.tmp-{proc.pid}-0a1b2c3d"  # the encoder refresh at a checkpoint, cut short
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"x" * 1000)
    _trainer(tmp_path, resume="latest").fit()
    assert not leftover.exists()


def test_non_finite_loss_stops_before_the_update(tmp_path):
    trainer = _trainer(tmp_path, steps=10, save_every=2, task=ToyTask(nan_at_call=5))
    with pytest.raises(NonFiniteError) as info:
        trainer.fit()
    message = str(info.value)  # the 5th step is bad: counted from 1, as metrics.jsonl counts steps
    assert "at step 5;" in message and "step_00000004" in message and "\n" not in message
    assert read_metrics(tmp_path)[-1]["step"] == 4
    model, state = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert state["step"] == 4
    for name, value in trainer.task.state_dict().items():
        if name != "calls":
            assert torch.equal(model[name], value), "the bad step must not touch the weights"
    assert all(math.isfinite(v) for v in model["net.0.weight"].flatten().tolist())


def test_fresh_start_in_a_used_run_dir_is_refused(tmp_path):
    _trainer(tmp_path, steps=4).fit()
    with pytest.raises(ConfigError, match="run.resume=latest or a new run.out_dir") as info:
        _trainer(tmp_path, steps=4).fit()  # would mix metrics, and keep-N would delete the new checkpoints
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    only_metrics = tmp_path / "only_metrics"
    only_metrics.mkdir()
    (only_metrics / "metrics.jsonl").write_text('{"step": 2, "loss": 1.0}\n')
    with pytest.raises(ConfigError, match="earlier run"):
        _trainer(only_metrics, steps=4).fit()
    # resume=latest before any checkpoint was written starts over and drops the old run's metric lines
    _trainer(only_metrics, steps=4, resume="latest").fit()
    assert [r["step"] for r in read_metrics(only_metrics)] == [2, 4]


class SigtermStream(ToyStream):
    """Calls the process's SIGTERM handler (as a `kill` would) before yielding batch `at`."""

    def __init__(self, batch_size: int, at: int) -> None:
        super().__init__(batch_size)
        self.at = at

    def __iter__(self):
        for batch in super().__iter__():
            if self.consumed == self.at + 1:
                handler = signal.getsignal(signal.SIGTERM)
                assert callable(handler), "the loop must catch SIGTERM on this rank"
                handler(signal.SIGTERM, None)
            yield batch


@pytest.mark.parametrize("rank", [0, 1])
def test_sigterm_on_any_rank_saves_then_raises(tmp_path, rank):
    info = DistInfo(rank=rank, world_size=1, local_rank=0, device=torch.device("cpu"))
    before = signal.getsignal(signal.SIGTERM)
    trainer = _trainer(tmp_path, steps=12, save_every=0, stream=SigtermStream(16, at=5), dist_info=info)
    with pytest.raises(StopRequested, match="SIGTERM at step 6 of 12") as stopped:
        trainer.fit()
    assert "run.resume=latest" in str(stopped.value) and "\n" not in str(stopped.value)
    assert trainer.step == 6 and signal.getsignal(signal.SIGTERM) == before
    if rank == 0:  # only rank 0 writes files
        assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000006"]


def test_torn_metrics_line_is_skipped_and_cut_on_resume(tmp_path):
    with pytest.raises(RuntimeError, match="simulated kill"):
        _trainer(tmp_path, stream=ToyStream(16, crash_at=7)).fit()
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 8, "lo')  # a kill in the middle of an append
    assert [r["step"] for r in read_metrics(tmp_path)] == [2, 4, 6]
    _trainer(tmp_path, resume="latest").fit()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, 4, 6, 8, 10, 12]


class SyncRecordingTask(ToyTask):
    """Records FSDP2's `set_requires_gradient_sync` calls (an FSDP2 module has it and no `no_sync`)."""

    def __init__(self) -> None:
        super().__init__()
        self.sync_calls: list[bool] = []

    def set_requires_gradient_sync(self, requires: bool, *, recurse: bool = True) -> None:
        self.sync_calls.append(requires)


def test_fsdp2_gradients_sync_on_the_last_micro_batch_only(tmp_path):
    task = SyncRecordingTask()
    _trainer(tmp_path, steps=3, save_every=0, task=task, grad_accum=2).fit()
    assert task.sync_calls == [False, True] * 3


class WiderTask(ToyTask):
    def __init__(self) -> None:
        super().__init__()
        self.net[2] = nn.Linear(16, 2)


def test_resuming_into_another_model_names_the_checkpoint_and_key(tmp_path):
    _trainer(tmp_path, steps=4).fit()
    with pytest.raises(ConfigError, match=r"step_00000004 does not match the model: net\.2\.bias is \(1,\)"):
        _trainer(tmp_path, steps=8, resume="latest", task=WiderTask()).fit()
    step = list_checkpoints(tmp_path)[-1]
    model, _ = load_checkpoint(step)
    save_file({k: v for k, v in model.items() if k != "net.0.bias"}, str(step / "model.safetensors"))
    with pytest.raises(ConfigError, match=r"step_00000004 does not match the model: it lacks net\.0\.bias"):
        _trainer(tmp_path, steps=8, resume="latest").fit()

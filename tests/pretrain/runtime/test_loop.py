import math

import pytest
import torch
from torch import nn

from pretrain.runtime.checkpoint import list_checkpoints, load_checkpoint
from pretrain.runtime.distributed import DistInfo
from pretrain.runtime.errors import NonFiniteError
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


def _trainer(tmp_path, steps=12, save_every=4, resume="", task=None, stream=None):
    run = RunConfig(
        out_dir=str(tmp_path),
        steps=steps,
        global_batch_size=16,
        log_every=2,
        save_every=save_every,
        resume=resume,
        keep_checkpoints=0,
    )
    optim = OptimConfig(lr=3e-2, warmup_steps=2, weight_decay=0.01)
    return Trainer(task or ToyTask(), stream or ToyStream(16), run, optim, CPU, config_yaml="toy: 1\n")


def test_loss_falls_and_metrics_are_logged(tmp_path):
    trainer = _trainer(tmp_path, steps=40, save_every=0)
    trainer.fit()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(2, 41, 2))
    assert records[-1]["loss"] < 0.5 * records[0]["loss"]
    assert records[-1]["samples"] == 40 * 16 and records[-1]["skipped"] == {"bad_image": 1}
    assert all(k in records[0] for k in ("lr", "samples_per_s", "grad_norm"))


def test_kill_and_resume_gives_identical_weights(tmp_path):
    straight = _trainer(tmp_path / "a")
    straight.fit()

    crashed = _trainer(tmp_path / "b", stream=ToyStream(16, crash_at=7))
    with pytest.raises(RuntimeError, match="simulated kill"):
        crashed.fit()
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step_00000004"]
    resumed = _trainer(tmp_path / "b", resume="latest")
    resumed.fit()

    for (name, a), (_, b) in zip(straight.task.state_dict().items(), resumed.task.state_dict().items()):
        assert torch.equal(a, b), name
    opt_a, opt_b = straight.optimizer.state_dict(), resumed.optimizer.state_dict()
    for key in opt_a["state"]:
        assert torch.equal(opt_a["state"][key]["exp_avg"], opt_b["state"][key]["exp_avg"])
    steps_b = [r["step"] for r in read_metrics(tmp_path / "b")]
    assert steps_b == sorted(set(steps_b)), "metrics lines after the checkpoint must not be duplicated"
    assert read_metrics(tmp_path / "b")[-1]["skipped"] == {"bad_image": 2}  # counted across the resume


def test_non_finite_loss_stops_before_the_update(tmp_path):
    trainer = _trainer(tmp_path, steps=10, save_every=2, task=ToyTask(nan_at_call=5))
    with pytest.raises(NonFiniteError) as info:
        trainer.fit()
    message = str(info.value)
    assert "step 4" in message and "step_00000004" in message and "\n" not in message
    model, state = load_checkpoint(list_checkpoints(tmp_path)[-1])
    assert state["step"] == 4
    for name, value in trainer.task.state_dict().items():
        if name != "calls":
            assert torch.equal(model[name], value), "the bad step must not touch the weights"
    assert all(math.isfinite(v) for v in model["net.0.weight"].flatten().tolist())

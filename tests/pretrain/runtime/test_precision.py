"""The one `auto` precision rule (bf16 autocast on CUDA, fp32 elsewhere) and bf16 weight copies (bf16_weights)."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pretrain.recipes import get_recipe
from pretrain.runtime.config import resolve
from pretrain.runtime.distributed import DistInfo
from pretrain.runtime.errors import ConfigError
from pretrain.runtime.loop import RunConfig, Trainer
from pretrain.runtime.metrics import read_metrics
from pretrain.runtime.optim import OptimConfig
from pretrain.runtime.parallelize import compile_targets
from pretrain.runtime.precision import BF16Weights, autocast, cast_inputs, resolve_precision
from pretrain.train import train


def test_auto_is_bf16_on_cuda_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("auto", cuda) == "bf16"
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp32", cuda) == "fp32"
    with pytest.raises(ConfigError, match="'fp16'"):
        resolve_precision("fp16", cpu)


def test_autocast_on_cpu():
    a = torch.randn(4, 4)
    with autocast("bf16", torch.device("cpu")):
        assert (a @ a).dtype == torch.bfloat16
    with autocast("auto", torch.device("cpu")):
        assert (a @ a).dtype == torch.float32


# ---------------------------------------------------------------------------------------- bf16 weight copies
def test_bf16_weights_swap_move_grads_and_refresh():
    torch.manual_seed(0)
    emb = nn.Embedding(10, 8)
    head = nn.Linear(8, 10, bias=False)
    head.weight = emb.weight  # tied: one master, one copy
    model = nn.Sequential(emb, nn.LayerNorm(8), head).to(torch.float32)
    frozen = nn.Parameter(torch.ones(3, dtype=torch.bfloat16), requires_grad=False)
    model.register_parameter("already_bf16", frozen)
    weights = BF16Weights(model)
    masters = dict(model.named_parameters())
    assert len(weights.pairs) == 3  # tied weight once, LayerNorm weight and bias; the bf16 parameter is left alone
    ids = torch.tensor([[1, 2, 3]])
    for _ in range(2):  # two micro-steps: the masters' gradients accumulate in fp32
        with weights.swapped():
            assert emb.weight is head.weight and emb.weight.dtype == torch.bfloat16
            model(ids).float().pow(2).mean().backward()
        weights.move_grads()
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if n != "already_bf16")
    assert masters["0.weight"].grad.dtype == torch.float32 and masters["0.weight"].grad.abs().sum() > 0
    assert all(copy.grad is None for _, copy in weights.pairs)
    with torch.no_grad():
        masters["0.weight"].add_(1.0)
    weights.refresh()
    copy = next(c for m, c in weights.pairs if m is masters["0.weight"])
    assert torch.equal(copy, masters["0.weight"].detach().to(torch.bfloat16))


def test_precision_names():
    cpu = torch.device("cpu")
    assert resolve_precision("bf16_weights", cpu) == "bf16"
    with autocast("bf16_weights", cpu):  # the weights are bf16 already: nothing for autocast to do
        assert not torch.is_autocast_enabled("cpu")
    batch = cast_inputs({"image": torch.zeros(2), "text": torch.zeros(2, dtype=torch.long)}, torch.bfloat16)
    assert batch["image"].dtype == torch.bfloat16 and batch["text"].dtype == torch.long


def _superclass_losses(tmp_path, name: str, *overrides: str, steps: int = 8) -> list[float]:
    out = tmp_path / name
    fast = ["run.device=cpu", "data.num_workers=0", "data.synthetic_samples=256", "run.log_every=1"]
    run = [f"run.steps={steps}", "run.global_batch_size=32", "optim.warmup_steps=2", "run.save_every=0"]
    train(resolve(get_recipe("superclass_tiny"), None, [f"run.out_dir={out}", *fast, *run, *overrides]))
    return [r["loss"] for r in read_metrics(out, evals=False)]


def test_bf16_weights_follow_the_autocast_loss_trajectory(tmp_path):
    """The same 8 SuperClass steps (2 micro-steps each) under autocast and on bf16 weight copies: the losses
    stay within 0.3% of each other and of fp32 (bf16 rounding, not a different computation; ~0.02% seen)."""
    fp32 = _superclass_losses(tmp_path, "fp32", "run.precision=fp32", "run.grad_accum=2")
    amp = _superclass_losses(tmp_path, "amp", "run.precision=bf16", "run.grad_accum=2")
    weights = _superclass_losses(tmp_path, "weights", "run.precision=bf16_weights", "run.grad_accum=2")
    assert weights[-1] < weights[0] - 0.05  # it trains
    for a, b, c in zip(fp32, amp, weights):
        assert abs(c - b) / b < 0.003 and abs(c - a) / a < 0.003, (fp32, amp, weights)


def test_compiled_task_with_its_loss_equals_eager(tmp_path, monkeypatch):
    """run.compile_scope=task compiles forward + loss (+ the eager IDF update) as one unit; aot_eager stands in for
    inductor here (same graph capture and autograd, no code generation) to keep the test seconds long."""
    eager = _superclass_losses(tmp_path, "eager", "run.precision=bf16_weights", steps=5)
    plain_compile = nn.Module.compile
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kw: plain_compile(self, backend="aot_eager", **kw))
    compiled = _superclass_losses(
        tmp_path, "compiled", "run.precision=bf16_weights", "run.compile=true", "run.compile_scope=task", steps=5
    )
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=0)  # the IDF statistics would drift if lost


def test_compile_targets():
    task = nn.Module()
    task.a, task.b = nn.Linear(2, 2), nn.Linear(2, 2)
    task.compile_units = lambda: [task.a]
    assert compile_targets(task, "task") == [task] and compile_targets(task, "units") == [task.a]
    assert compile_targets(nn.Linear(2, 2), "units")[0].in_features == 2


# ------------------------------------------------------------------------- bf16 weights over 2 ranks (no DDP)
def _toy_task() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 1))


class _Regression(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = _toy_task()

    def forward(self, batch):
        return {"loss": nn.functional.mse_loss(self.net(batch["x"]).float(), batch["y"].float())}


def _halves(step: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(step)
    x = torch.randn(16, 8, generator=g)
    y = x.sum(dim=1, keepdim=True)
    return [{"x": x[:8], "y": y[:8]}, {"x": x[8:], "y": y[8:]}]


def _toy_trainer(info: DistInfo, grad_accum: int) -> Trainer:
    run = RunConfig(steps=10, global_batch_size=16, grad_accum=grad_accum, precision="bf16_weights", device="cpu")
    return Trainer(_Regression(), None, run, OptimConfig(lr=1e-2, warmup_steps=1), info)  # type: ignore[arg-type]


def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        trainer = _toy_trainer(DistInfo(rank=rank, world_size=2, local_rank=0, device=torch.device("cpu")), 1)
        assert trainer.model is trainer.task, "no DDP wrapper: its hooks sit on the fp32 masters"
        for step in range(3):
            trainer.train_step([_halves(step)[rank]])
        torch.save(trainer.task.state_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bf16_weights_over_two_ranks_equal_two_micro_steps_on_one(tmp_path):
    """Without DDP's hooks the loop averages the masters' gradients itself: 2 gloo ranks with half a batch each end
    where one process with the two halves as micro-steps does."""
    mp.spawn(_ddp_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    single = _toy_trainer(DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")), 2)
    for step in range(3):
        single.train_step(_halves(step))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name, value in single.task.state_dict().items():
            torch.testing.assert_close(got[name], value, rtol=1e-6, atol=1e-7, msg=name)

"""The one training loop: a task object (model + loss, `forward(batch) -> {"loss": ...}`) over a batch stream.

Every trainer (SuperClass, CLIP, LiT, ClipCap, the VLM) is a small task module; this loop owns precision,
distribution, optimisation, schedules, the non-finite guard, metrics, checkpoints and exact resume.
Optional task hooks: `after_step()` (e.g. clamp a temperature), `lr_scales()` (per-prefix lr multipliers),
`export_artifact(out_dir, state, samples_seen)` (rank 0, full state dict), `set_grad_checkpointing(bool)`,
`fsdp_units()`, `compile_units()`; attribute `checkpoint_frozen = False` keeps frozen weights (a 7B LLM in
LLaVA's stage 1) out of checkpoints (buffers stay in): they never change, and the task rebuilds them from its
sources on resume;
attribute `produces` ("encoder", "lit", "captioner", "llava") names the artifact the recipe's `run.evals` read
(`pretrain.runtime.train_evals`: evaluations after the checkpoints, on rank 0).
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from pretrain.runtime import checkpoint as ckpt
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.distributed import (
    DistInfo,
    all_reduce_mean_grads,
    all_reduce_min_flag,
    barrier,
    is_distributed,
    rng_state,
    set_rng_state,
)
from pretrain.runtime.errors import ConfigError, NonFiniteError, StopRequested
from pretrain.runtime.jsonl import read_jsonl
from pretrain.runtime.metrics import MetricsLogger
from pretrain.runtime.optim import OptimConfig, build_optimizer, lr_at, set_lr
from pretrain.runtime.parallelize import parallelize
from pretrain.runtime.precision import BF16Weights, autocast, cast_inputs, resolve_precision
from pretrain.runtime.train_evals import EvalEntry, TrainingEvals


@dataclass
class RunConfig:
    out_dir: str = "runs/pretrain"  # run directory: metrics.jsonl, checkpoints/, the artifact
    name: str = ""  # the progress lines' label ("": the run directory's last two parts, e.g. "demo/superclass")
    total_samples: int = 0  # samples to train on (steps = total_samples / global_batch_size)
    steps: int = 0  # if > 0, the number of optimizer steps (overrides total_samples)
    global_batch_size: int = 256  # samples per optimizer step over all ranks
    grad_accum: int = 1  # micro-batches per optimizer step (per rank)
    # auto: bf16 autocast on CUDA, fp32 on CPU; bf16_weights: bf16 weight copies kept across micro-steps, no
    # autocast, fp32 masters in the optimizer (FSDP2: its MixedPrecisionPolicy); see pretrain/runtime/precision.py
    precision: Literal["auto", "bf16", "bf16_weights", "fp32"] = "auto"
    device: str = "auto"  # auto | cpu | cuda
    strategy: Literal["ddp", "fsdp"] = "ddp"  # multi-GPU wrapping; fsdp = FSDP2 per block
    grad_checkpointing: bool = False  # activation checkpointing in the towers
    compile: bool = False  # torch.compile the model
    compile_scope: Literal["units", "task"] = "units"  # units: the task's compile_units(); task: forward + loss
    log_every: int = 10  # steps between metric records
    save_every: int = 1000  # steps between checkpoints (and artifact refreshes); 0 = only at the end
    keep_checkpoints: int = 2  # newest checkpoints kept (0 = all)
    seed: int = 0  # seeds model init, data order and augmentation
    resume: str = ""  # "latest" or a checkpoint directory; "" starts fresh
    tensorboard: bool = False  # also write TensorBoard scalars
    num_threads: int = 0  # torch CPU threads (0: OMP_NUM_THREADS if set, else the cores per local rank)
    evals: list[EvalEntry] = field(default_factory=list)  # evaluations at checkpoints (pretrain.runtime.train_evals)


class BatchSource(Protocol):
    """What the loop needs from a data loader: an endless iterator, skip counts and a resumable state."""

    def __iter__(self) -> Any: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    @property
    def skipped(self) -> dict[str, int]: ...


def total_steps(run: RunConfig) -> int:
    """Optimizer steps of a run: `steps`, or `total_samples` over the global batch (at least one)."""
    if run.steps > 0:
        return run.steps
    if run.total_samples <= 0:
        raise ConfigError("run.steps or run.total_samples must be > 0")
    return max(1, run.total_samples // run.global_batch_size)


def local_batch_size(run: RunConfig, world_size: int) -> int:
    """Per-rank micro-batch size; the global batch must split evenly over ranks and accumulation steps."""
    denom = world_size * run.grad_accum
    if run.global_batch_size % denom:
        raise ConfigError(
            f"run.global_batch_size={run.global_batch_size} must be divisible by world_size x grad_accum = {denom}"
        )
    return run.global_batch_size // denom


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _gather_objects(obj: Any) -> list[Any]:
    """`obj` from every rank. Tensors travel as torch.save bytes (all_gather_object cannot unpickle them)."""
    if not is_distributed():
        return [obj]
    buf = io.BytesIO()
    torch.save(obj, buf)
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, buf.getvalue())
    return [torch.load(io.BytesIO(payload), weights_only=True) for payload in out]


class Trainer:
    """Runs `task` for the configured number of steps, checkpointing and resuming exactly."""

    def __init__(
        self,
        task: nn.Module,
        loader: BatchSource,
        run: RunConfig,
        optim: OptimConfig,
        dist_info: DistInfo,
        config_yaml: str = "",
    ) -> None:
        self.task, self.loader, self.run, self.optim_cfg, self.dist = task, loader, run, optim, dist_info
        self.config_yaml = config_yaml
        self.run_dir = Path(run.out_dir)
        self.total_steps = total_steps(run)
        self.evals = TrainingEvals(run.evals, self.run_dir, getattr(task, "produces", None), dist_info.is_main)
        self.precision = resolve_precision(run.precision, dist_info.device)
        bf16_weights = run.precision == "bf16_weights"
        self.model = parallelize(
            task, dist_info, run.strategy, run.grad_checkpointing, run.compile, run.compile_scope, bf16_weights
        )
        # FSDP2 keeps the bf16 copies itself (MixedPrecisionPolicy); elsewhere the loop does
        fsdp = dist_info.world_size > 1 and run.strategy == "fsdp"
        self.weights = BF16Weights(task) if bf16_weights and not fsdp else None
        self.input_dtype = torch.bfloat16 if bf16_weights else None
        self.optimizer = build_optimizer(task, optim, task.lr_scales() if hasattr(task, "lr_scales") else None)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.step = 0
        self.samples_seen = 0
        self.skipped_base: dict[str, int] = {}
        self.last_checkpoint: Path | None = None
        self._stop_requested = False

    # ----------------------------------------------------------------------------------- state
    def _state_options(self) -> StateDictOptions:
        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def model_state(self) -> dict[str, torch.Tensor]:
        return get_model_state_dict(self.task, options=self._state_options())

    def _checkpointed(self, model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The part of the model state a checkpoint holds: all of it, or the trainable tensors and the buffers
        (a norm's running statistics change in training even where it has no parameters)."""
        if getattr(self.task, "checkpoint_frozen", True):
            return model_state
        trainable = {name for name, p in self.task.named_parameters() if p.requires_grad}
        trainable |= {name for name, _ in self.task.named_buffers()}
        return {k: v for k, v in model_state.items() if k in trainable}

    def save(self) -> Path | None:
        """Checkpoint on rank 0 (all ranks contribute their RNG and data positions), then refresh the artifact."""
        model_state = self.model_state()
        optim_state = get_optimizer_state_dict(self.task, self.optimizer, options=self._state_options())
        per_rank = _gather_objects({"rng": rng_state(), "data": self.loader.state_dict(), "skipped": self.skipped()})
        path = None
        if self.dist.is_main:
            train_state = {
                "step": self.step,
                "samples_seen": self.samples_seen,
                "optimizer": optim_state,
                "ranks": per_rank,
                "world_size": self.dist.world_size,
            }
            path = ckpt.save_checkpoint(
                self.run_dir,
                self.step,
                self._checkpointed(model_state),
                train_state,
                self.config_yaml,
                self.run.keep_checkpoints,
            )
            self._export(model_state)
        barrier()
        self.last_checkpoint = ckpt.step_dir(self.run_dir, self.step)
        return path

    def _export(self, model_state: dict[str, torch.Tensor]) -> None:
        """Rank 0: refresh the task's artifact from a full state dict, and note its step for `run.evals`."""
        if hasattr(self.task, "export_artifact"):
            path = self.task.export_artifact(self.run_dir, model_state, self.samples_seen)
            self.evals.note_artifact(path, self.step)

    def _refresh_stale_artifact(self) -> None:
        """After a resume: export again when the artifact lags the restored step (a kill came between the
        checkpoint and the export, or during the export), so the due evaluations read this step's weights."""
        stale = self.dist.is_main and not self.evals.artifact_is_current(self.step)
        if hasattr(self.task, "export_artifact") and not all_reduce_min_flag(not stale, self.dist.device):
            model_state = self.model_state()  # a collective under FSDP: every rank takes part
            if self.dist.is_main:
                self._export(model_state)
            barrier()

    def restore(self, path: Path) -> None:
        """Load a checkpoint written by `save` so that training continues exactly."""
        model_state, train_state = ckpt.load_checkpoint(path)
        if train_state["world_size"] != self.dist.world_size:
            raise ConfigError(
                f"checkpoint {path} was written by {train_state['world_size']} ranks; resuming on "
                f"{self.dist.world_size} would change the data order (exact resume needs the same world size)"
            )
        strict = getattr(self.task, "checkpoint_frozen", True)
        expected = self._checkpointed({k: v.shape for k, v in self.task.state_dict().items()})  # DTensor: global
        model_state = ckpt.match_model_state(path, model_state, expected)
        set_model_state_dict(self.task, model_state, options=StateDictOptions(full_state_dict=True, strict=strict))
        set_optimizer_state_dict(
            self.task, self.optimizer, train_state["optimizer"], options=StateDictOptions(full_state_dict=True)
        )
        mine = train_state["ranks"][self.dist.rank]
        set_rng_state(mine["rng"])
        self.loader.load_state_dict(mine["data"])
        self.skipped_base = dict(mine["skipped"])
        self.step = int(train_state["step"])
        self.samples_seen = int(train_state["samples_seen"])
        self.last_checkpoint = Path(path)
        if self.weights is not None:
            self.weights.refresh()
        self._truncate_metrics()

    def _truncate_metrics(self) -> None:
        """Drop metric lines a killed run wrote after the checkpoint we resume from (and a torn last line)."""
        path = self.run_dir / "metrics.jsonl"
        if not self.dist.is_main or not path.is_file():
            return
        rows, _ = read_jsonl(path)
        kept = [row for row in rows if row.get("step", 0) <= self.step]
        write_text_atomically(path, "".join(json.dumps(row, allow_nan=True) + "\n" for row in kept))

    def _check_fresh_start(self) -> None:
        """Refuse to start from step 0 in a run directory that already holds a run: its metrics would mix with
        ours, and the keep-N rule would delete our checkpoints in favour of its higher-numbered ones."""
        earlier = self.dist.is_main and (
            bool(ckpt.list_checkpoints(self.run_dir)) or (self.run_dir / "metrics.jsonl").is_file()
        )
        if not all_reduce_min_flag(not earlier, self.dist.device):  # every rank raises, none waits in a collective
            raise ConfigError(
                f"{self.run_dir} has checkpoints or metrics from an earlier run; "
                "pass run.resume=latest or a new run.out_dir"
            )

    def skipped(self) -> dict[str, int]:
        """Samples skipped by this rank's loader since the run began (across resumes)."""
        out = dict(self.skipped_base)
        for key, value in self.loader.skipped.items():
            out[key] = out.get(key, 0) + value
        return out

    # ------------------------------------------------------------------------------------ loop
    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.run.precision, self.dist.device)

    def _compute_weights(self) -> contextlib.AbstractContextManager:
        """The bf16 weight copies in place of the fp32 masters (bf16_weights), for a forward and its backward."""
        return self.weights.swapped() if self.weights is not None else contextlib.nullcontext()

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        batch = _to_device(batch, self.dist.device)
        return cast_inputs(batch, self.input_dtype) if self.input_dtype is not None else batch

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The task's forward on one batch in the run's precision, no backward (benchmarks count FLOPs with it)."""
        with self._compute_weights(), self._autocast():
            return self.model(self._inputs(batch))

    def _no_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce (DDP) or reduce-scatter (FSDP2) on all but the last micro-batch."""
        if hasattr(self.model, "set_requires_gradient_sync"):  # FSDP2 modules have no `no_sync`
            self.model.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        if not last and hasattr(self.model, "no_sync"):
            return self.model.no_sync()
        return contextlib.nullcontext()

    def train_step(self, batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step over `grad_accum` micro-batches; raises NonFiniteError before a bad update."""
        set_lr(self.optimizer, lr_at(self.step, self.total_steps, self.optim_cfg))
        extras: dict[str, torch.Tensor] = {}
        loss_sum = torch.zeros((), device=self.dist.device)
        for i, batch in enumerate(batches):
            with self._no_sync(i == len(batches) - 1), self._compute_weights():
                with self._autocast():
                    out = self.model(self._inputs(batch))
                loss = out["loss"].float()
                (loss / len(batches)).backward()  # inside: checkpointed blocks recompute on the bf16 copies
            if self.weights is not None:
                self.weights.move_grads()  # per micro-step, so the accumulation is fp32
            loss_sum += loss.detach()
            extras = {k: v.detach() for k, v in out.items() if k != "loss" and isinstance(v, torch.Tensor)}
        if self.weights is not None:  # not wrapped in DDP (its hooks sit on the masters): all-reduce here
            all_reduce_mean_grads(self.params)
        max_norm = self.optim_cfg.clip_grad_norm if self.optim_cfg.clip_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        loss_mean = loss_sum / len(batches)
        finite = bool(torch.isfinite(torch.stack([loss_mean, grad_norm.float()])).all().item())  # one host sync
        if not all_reduce_min_flag(finite, self.dist.device):
            self.optimizer.zero_grad(set_to_none=True)
            where = str(self.last_checkpoint) if self.last_checkpoint else "none written yet"
            step = self.step + 1  # counted from 1, as metrics.jsonl counts it (self.step steps are done)
            raise NonFiniteError(
                f"non-finite loss ({loss_mean.item():.4g}) or grad norm ({float(grad_norm):.4g}) at step {step}; "
                f"stopped before the optimizer update; last good checkpoint: {where}"
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if hasattr(self.task, "after_step"):
            self.task.after_step()
        if self.weights is not None:
            self.weights.refresh()
        record = {"loss": loss_mean, "grad_norm": grad_norm, **extras}
        return record  # tensors; converted on log steps only

    def _next_batches(self, it: Any) -> list[dict[str, Any]]:
        return [next(it) for _ in range(self.run.grad_accum)]

    def _request_stop(self, *_: Any) -> None:
        self._stop_requested = True

    def _start(self) -> None:
        """Resume from the requested checkpoint, or check that a fresh run has its directory to itself."""
        if self.dist.is_main:
            ckpt.clean_stale_tmp(self.run_dir)
        resume_from = ckpt.resolve_resume(self.run_dir, self.run.resume)
        if resume_from is not None:
            self.restore(resume_from)
        elif self.run.resume:
            self._truncate_metrics()  # resume=latest before the first checkpoint: start over from step 0
        else:
            self._check_fresh_start()

    def fit(self) -> dict[str, Any]:
        """Train to `total_steps`, resuming first if asked; returns the last logged record.

        A SIGTERM on any rank (the stop flag is all-reduced) saves a checkpoint on every rank's next step boundary
        and then raises StopRequested, so a scheduler's preemption ends in a resumable state and a non-zero exit.
        """
        self._start()
        logger = MetricsLogger(
            self.run_dir, self.total_steps, self.step, self.dist.is_main, self.run.tensorboard, self.run.name
        )
        if self.step > 0:  # resumed: an evaluation due at this checkpoint that a kill cut off runs now
            self._refresh_stale_artifact()
            self._evaluate(logger)
        on_main_thread = threading.current_thread() is threading.main_thread()  # signal.signal works only there
        previous = signal.signal(signal.SIGTERM, self._request_stop) if on_main_thread else None
        last: dict[str, Any] = {}
        stopped = False
        it = iter(self.loader)
        self.task.train()
        tick, tick_step = time.perf_counter(), self.step
        try:
            while self.step < self.total_steps:
                record = self.train_step(self._next_batches(it))
                self.step += 1
                self.samples_seen += self.run.global_batch_size
                logger.advance()
                if self.step % self.run.log_every == 0 or self.step == self.total_steps:
                    last = self._log(logger, record, tick, tick_step)
                    tick, tick_step = time.perf_counter(), self.step
                stopped = all_reduce_min_flag(not self._stop_requested, self.dist.device) is False
                at_save = self.run.save_every > 0 and self.step % self.run.save_every == 0
                if at_save or self.step == self.total_steps or stopped:
                    self.save()
                    if not stopped:
                        self._evaluate(logger)
                if stopped:
                    break
        finally:
            logger.close()
            if on_main_thread:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if stopped and self.step < self.total_steps:
            raise StopRequested(
                f"SIGTERM at step {self.step} of {self.total_steps}; saved {self.last_checkpoint}; "
                "continue with run.resume=latest"
            )
        return last

    def _evaluate(self, logger: MetricsLogger) -> None:
        """The `run.evals` due at this checkpoint, on rank 0 while the other ranks wait."""
        if self.evals:
            self.evals.run(self.step, self.step == self.total_steps, logger)
            barrier()
            self.task.train()

    def skipped_all_ranks(self) -> dict[str, int]:
        """`skipped()` summed over every rank (a collective: call it on all ranks)."""
        summed: dict[str, int] = {}
        for rank_counts in _gather_objects(self.skipped()):
            for key, value in rank_counts.items():
                summed[key] = summed.get(key, 0) + value
        return summed

    def _log(self, logger: MetricsLogger, record: dict[str, torch.Tensor], tick: float, tick_step: int) -> dict:
        if self.dist.device.type == "cuda":
            torch.cuda.synchronize(self.dist.device)
        elapsed = max(time.perf_counter() - tick, 1e-9)
        summed = self.skipped_all_ranks()
        out: dict[str, Any] = {
            "step": self.step,
            "samples": self.samples_seen,
            "lr": self.optimizer.param_groups[0]["lr"] / self.optimizer.param_groups[0].get("lr_scale", 1.0),
            "samples_per_s": (self.step - tick_step) * self.run.global_batch_size / elapsed,
            "skipped": summed,
        }
        out.update({k: float(v) for k, v in record.items()})
        logger.log(out)
        return out

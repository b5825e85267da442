"""usage: python bench/pretrain_throughput.py [--device cpu|cuda] [--arch vit_b16] [--batch 256] [--compile]
                                          [--precision bf16|bf16_weights] [--compile-scope units|task]

SuperClass vs the CLIP baseline: training steps of the shared runtime (`Trainer.train_step`: autocast or bf16
weight copies, backward, grad-norm, non-finite guard, AdamW) on the same backbone and batch, interleaved round by
round in one process, printing images/s for each, their ratio and, with FLOPs counted by torch's FlopCounterMode,
MFU against the measured H200 bf16 ceiling (790 TFLOP/s) and the 989 TFLOP/s datasheet figure.
`--precision bf16_weights` keeps bf16 weight copies across steps instead of autocast's per-op casts;
`--compile-scope task` compiles each task's forward with its loss as one unit (pretrain/runtime/precision.py).
Data loading is left out on purpose (bench/data_throughput.py measures it): batches live on the device.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import torch
from steps import H200_DATASHEET, H200_MEASURED, interleaved, make_batch  # bench/steps.py (the script's folder)
from torch.utils.flop_counter import FlopCounterMode

from pretrain.labels import build_tokenizer
from pretrain.recipes import get_recipe
from pretrain.runtime.distributed import DistInfo, pick_device
from pretrain.runtime.loop import RunConfig, Trainer
from pretrain.runtime.parallelize import compile_targets
from pretrain.train import build_task

METHODS = ("superclass", "clip")


def build_trainer(method: str, args: argparse.Namespace, device: torch.device) -> tuple[Trainer, int]:
    recipe = get_recipe(f"{method}_b16_512m")
    recipe.model = dataclasses.replace(recipe.model, preset=args.arch, text=args.text)
    recipe.run = RunConfig(
        out_dir="/tmp/bench_pretrain",
        steps=10**6,
        global_batch_size=args.batch,
        device=str(device),
        precision=args.precision,
        compile=False,  # compiled after FLOP counting: a FlopCounterMode call makes dynamo skip the frame for good
        grad_checkpointing=args.grad_ckpt,
    )
    tokenizer = build_tokenizer(recipe.labels)
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    torch.manual_seed(0)
    task = build_task(recipe, tokenizer, info)
    trainer = Trainer(task, loader=None, run=recipe.run, optim=recipe.optim, dist_info=info)  # type: ignore[arg-type]
    image_size = trainer.task.arch.image_size
    return trainer, image_size


def count_flops(trainer: Trainer, batch: dict) -> float:
    """Training FLOPs of one step: 3x the forward's (matmuls, convolutions, attention) as torch counts them.

    The backward is not counted directly: on CUDA it runs on autograd's device threads, which the
    (thread-local) counter does not see. 3x forward is the usual MFU convention (recompute not counted).
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        trainer.forward(batch)
    return 3.0 * float(counter.get_total_flops())


def prepare(method: str, args: argparse.Namespace, device: torch.device) -> tuple[Trainer, dict, float]:
    """A trainer of `method` (compiled if asked, warmed up), its device batch and its training FLOPs per step."""
    trainer, size = build_trainer(method, args, device)
    batch = make_batch(args.batch, size, device, 49408)
    flops = count_flops(trainer, batch) if args.flops else 0.0
    if args.compile:
        for module in compile_targets(trainer.task, args.compile_scope):
            module.compile(backend=args.compile_backend)
    for _ in range(args.warmup):
        trainer.train_step([batch])
    return trainer, batch, flops


def mfu(flops_per_step: float, batch: int, images_per_s: float, peak: float = H200_MEASURED) -> float:
    """Model FLOP utilisation: achieved training FLOP/s over `peak`."""
    return flops_per_step / batch * images_per_s / peak


def profile_step(trainer: Trainer, batch: dict, device: torch.device, top: int = 25) -> None:
    """Print the kernels that take the time in a few training steps (torch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            trainer.train_step([batch])
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=top, max_name_column_width=60))


def run(args: argparse.Namespace) -> None:
    device = pick_device(args.device)
    prepared = {method: prepare(method, args, device) for method in METHODS}
    if args.profile:
        for method, (trainer, batch, _) in prepared.items():
            print(f"--- profile: {method}")
            profile_step(trainer, batch, device)
    entries = {method: (trainer, batch) for method, (trainer, batch, _) in prepared.items()}
    rates = interleaved(entries, args.steps, args.rounds, device)
    report(args, device, rates, {method: flops for method, (_, _, flops) in prepared.items()})
    if args.compile:
        from torch._dynamo.utils import counters

        print("dynamo:", dict(counters["stats"]), "graph breaks:", dict(counters["graph_break"]))


def report(args: argparse.Namespace, device: torch.device, rates: dict, flops: dict) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\n{args.arch} batch {args.batch} precision {args.precision} compile {args.compile} on {name}")
    print(f"{'method':<11} {'img/s (median)':>15} {'GFLOP/img':>10} {'TFLOP/s':>8} {'MFU@790':>8} {'MFU@989':>8}")
    for method, values in rates.items():
        rate = statistics.median(values)
        per_img = flops[method] / args.batch
        achieved = per_img * rate
        on_gpu = per_img and device.type == "cuda"
        mfu_cells = f"{100 * achieved / H200_MEASURED:7.1f}% {100 * achieved / H200_DATASHEET:7.1f}%"
        print(f"{method:<11} {rate:15.1f} {per_img / 1e9:10.2f} {achieved / 1e12:8.1f} {mfu_cells if on_gpu else ''}")
    ratio = statistics.median(rates["superclass"]) / statistics.median(rates["clip"])
    print(f"SuperClass / CLIP images/s: {ratio:.3f}x (target >= 1.15x)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--arch", default="vit_tiny", help="backbone preset (vit_tiny, vit_s16, vit_b16, ...)")
    p.add_argument("--text", default="text_tiny", help="CLIP text tower preset (text_tiny, text_b, text_l)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "bf16_weights", "fp32"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-scope", default="units", choices=["units", "task"], help="task: forward + loss")
    p.add_argument("--compile-backend", default="inductor", help="aot_eager: capture only (a CPU dry run)")
    p.add_argument("--grad-ckpt", action="store_true")
    p.add_argument("--no-flops", dest="flops", action="store_false")
    p.add_argument("--profile", action="store_true", help="print the top kernels of a few steps first")
    return p


def main() -> None:
    run(parser().parse_args())


if __name__ == "__main__":
    main()

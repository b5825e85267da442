"""Stage-2 LLaVA training tokens/s (vision tower frozen) with the shared runtime, LoRA and full, with MFU.

usage: python bench/vlm_train_throughput.py [--preset tiny|vicuna7b] [--tower b16|l14] [--modes lora,full]
                                            [--batch 4] [--seq 1024] [--steps 5] [--device cpu|cuda]

Builds the LLaVA from configs with random weights (the hub is not reachable on the benchmark machines; shapes in
bench/llava_shapes.py): `vicuna7b` is LLaMA-2-7B's shape (4096 wide, 32 layers, vocab 32064) with a CLIP-style B/16
(224 px, 196 image tokens) or L/14 (336 px, 576 image tokens) tower. Training FLOPs are counted with torch's
FlopCounterMode on one forward: the frozen tower's forward once, the rest 3x for full fine-tuning and 2x for LoRA
(frozen weights get no weight gradients); recomputation under gradient checkpointing is not counted (the usual
MFU convention).
MFU is against the measured H200 bf16 ceiling (790 TFLOP/s) and the 989 TFLOP/s datasheet figure.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from llava_shapes import LLMS, TOWERS, random_llava
from steps import H200_DATASHEET, H200_MEASURED, timed_steps  # bench/steps.py (the script's own folder)
from torch.utils.flop_counter import FlopCounterMode

from pretrain.runtime.distributed import DistInfo, pick_device
from pretrain.runtime.loop import RunConfig, Trainer
from pretrain.runtime.optim import OptimConfig
from vlm.lora import LoraSettings
from vlm.task import LlavaTask

IMAGE_TOKEN_ID = 3


def build_model(preset: str, tower: str, llm_dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    """A random LLaVA of the preset's shapes on `device`: the LLM in `llm_dtype`, tower and projector in fp32."""
    model = random_llava(preset, tower, device, llm_dtype, IMAGE_TOKEN_ID)
    model.model.vision_tower.float()
    model.model.multi_modal_projector.float()
    return model


def make_batch(model: torch.nn.Module, batch: int, seq: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Image tokens first, then random text; the second half of the text supervised (an answer)."""
    vision = model.config.vision_config
    n_img = (vision.image_size // vision.patch_size) ** 2
    if seq <= n_img + 8:
        raise SystemExit(f"--seq {seq} must exceed the {n_img} image tokens by a few text tokens")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, model.config.text_config.vocab_size, (batch, seq), generator=g)
    ids[:, 0], ids[:, 1 : 1 + n_img] = 1, IMAGE_TOKEN_ID
    labels = ids.clone()
    labels[:, : 1 + n_img + (seq - n_img) // 2] = -100
    pixels = torch.randn(batch, 3, vision.image_size, vision.image_size, generator=g)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "pixel_values": pixels}
    return {k: v.to(device) for k, v in out.items()}


def count_flops(trainer: Trainer, batch: dict, lora: bool) -> float:
    """Training FLOPs of one step: tower forward once, the rest (projector + LLM) 3x (full) or 2x (LoRA)."""
    model = trainer.task.model
    with torch.no_grad():
        vision_counter = FlopCounterMode(display=False)
        with vision_counter, trainer._autocast():
            model.model.vision_tower(batch["pixel_values"], output_hidden_states=True)
        total_counter = FlopCounterMode(display=False)
        with total_counter:
            trainer.forward(batch)
    vision, total = float(vision_counter.get_total_flops()), float(total_counter.get_total_flops())
    return vision + (2.0 if lora else 3.0) * (total - vision)


def run_mode(args: argparse.Namespace, mode: str, device: torch.device) -> tuple[float, float, float]:
    """(median tokens/s, FLOPs per step, peak GiB) for one mode (lora | full)."""
    lora = mode == "lora"
    llm_dtype = torch.bfloat16 if (lora and device.type == "cuda") else torch.float32
    model = build_model(args.preset, args.tower, llm_dtype, device)
    task = LlavaTask(model, None, stage=2, lora=LoraSettings(enabled=lora), projector_lr_scale=0.1 if lora else 1.0)
    precision = "bf16" if device.type == "cuda" else "fp32"
    run = RunConfig(out_dir="/tmp/bench_vlm", steps=10**6, global_batch_size=args.batch, device=str(device),
                    precision=precision, grad_checkpointing=args.grad_ckpt)  # fmt: skip
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    trainer = Trainer(task, loader=None, run=run, optim=OptimConfig(lr=2e-4 if lora else 2e-5), dist_info=info)  # type: ignore[arg-type]
    batch = make_batch(model, args.batch, args.seq, device)
    flops = count_flops(trainer, batch, lora)
    for _ in range(args.warmup):
        trainer.train_step([batch])
    tokens = batch["input_ids"].numel()
    rates = [timed_steps(trainer, batch, args.steps, device, per_step=tokens) for _ in range(args.rounds)]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    del trainer, task, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return statistics.median(rates), flops, peak


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", choices=sorted(LLMS))
    parser.add_argument(
        "--tower",
        default="",
        choices=["", *sorted(TOWERS)],
        help="b16 | l14 | tiny (default: tiny for the tiny preset, else l14)",
    )
    parser.add_argument("--modes", default="lora,full")
    parser.add_argument("--batch", type=int, default=4, help="sequences per step")
    parser.add_argument("--seq", type=int, default=0, help="tokens per sequence (default: 64 tiny, 1024 otherwise)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-grad-ckpt", dest="grad_ckpt", action="store_false")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    args.tower = args.tower or ("tiny" if args.preset == "tiny" else "l14")
    args.seq = args.seq or (64 if args.preset == "tiny" else 1024)
    return args


def main() -> None:
    args = parse_args()
    device = pick_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"LLaVA stage 2: LLM {args.preset}, tower {args.tower}, batch {args.batch} x {args.seq} tokens, "
          f"grad ckpt {args.grad_ckpt}, on {name}")  # fmt: skip
    print(
        f"{'mode':<6} {'tokens/s':>10} {'GFLOP/step':>11} {'TFLOP/s':>8} {'peak GiB':>9} {'MFU@790':>8} {'MFU@989':>8}"
    )
    for mode in args.modes.split(","):
        try:
            rate, flops, peak = run_mode(args, mode, device)
        except torch.OutOfMemoryError:
            print(f"{mode:<6} out of memory at batch {args.batch} x {args.seq}")
            torch.cuda.empty_cache()
            continue
        achieved = flops * rate / (args.batch * args.seq)
        mfu = f"{100 * achieved / H200_MEASURED:7.1f}% {100 * achieved / H200_DATASHEET:7.1f}%"
        mfu = mfu if device.type == "cuda" else "(MFU on GPU only)"
        print(f"{mode:<6} {rate:10.1f} {flops / 1e9:11.1f} {achieved / 1e12:8.3f} {peak:9.1f} {mfu}")


if __name__ == "__main__":
    main()

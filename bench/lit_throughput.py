"""usage: python bench/lit_throughput.py [--device cpu|cuda] [--arch vit_tiny] [--text text_tiny] [--batch 32]

LiT vs a full CLIP step on the same backbone: `Trainer.train_step` of the LiT task with cached features
(`cache_features=true`: the locked tower is skipped, batches hold its pooled features), of the LiT task with the
locked tower computed live under no_grad (only projection + text tower + temperature train in both), and of
pretrain's CLIPTask (both towers trained), interleaved round by round in one process; prints images/s for each
and the ratios side by side (target >= 2x for live LiT over CLIP on GPU). Batches live on the device (data
loading is bench/data_throughput.py's business). CPU default is tiny.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

import torch
from steps import interleaved, make_batch  # bench/steps.py (the script's own folder is on sys.path)

from lit.model import TextTowerConfig, build_lit_model
from lit.task import LiTTask
from pretrain.encoder import default_preprocess, save_encoder
from pretrain.labels import LabelConfig
from pretrain.models.backbone import build_backbone
from pretrain.models.clip import CLIPModel
from pretrain.models.presets import get_preset, get_text_preset
from pretrain.runtime.distributed import DistInfo, pick_device
from pretrain.runtime.loop import RunConfig, Trainer
from pretrain.runtime.optim import OptimConfig
from pretrain.tasks import CLIPTask


def build_trainers(args: argparse.Namespace, device: torch.device, tmp: Path) -> dict[str, Trainer]:
    arch = dataclasses.replace(get_preset(args.arch), pool="token")
    backbone = build_backbone(arch)
    enc = save_encoder(tmp / "enc", backbone, arch, default_preprocess(arch), {"method": "clip"})
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    run = RunConfig(steps=10**6, global_batch_size=args.batch, precision="auto", grad_checkpointing=args.ckpt)
    optim = OptimConfig(warmup_steps=10)
    text = TextTowerConfig(preset=args.text)
    cached = LiTTask(build_lit_model(enc, text, LabelConfig()), text, LabelConfig(), cached_features=True)
    lit = LiTTask(build_lit_model(enc, text, LabelConfig()), text, LabelConfig())
    text_cfg = get_text_preset(args.text)
    clip = CLIPTask(CLIPModel(build_backbone(arch), arch.width, text_cfg), arch, 0, 1, {}, {})
    tasks = {"cached": cached, "lit": lit, "clip": clip}
    return {name: Trainer(task.to(device), None, run, optim, info) for name, task in tasks.items()}  # type: ignore[arg-type]


def measure(args: argparse.Namespace) -> dict[str, float]:
    """Median images/s of LiT with cached features (`cached`), LiT live (`lit`) and the full CLIP step (`clip`)."""
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = build_trainers(args, device, Path(tmp))
    arch = get_preset(args.arch)
    batch = make_batch(args.batch, arch.image_size, device)
    features = torch.randn(args.batch, arch.width, generator=torch.Generator().manual_seed(0)).to(device)
    batches = {name: batch for name in trainers} | {"cached": {**batch, "image": features}}
    for name, trainer in trainers.items():  # warm-up
        trainer.train_step([batches[name]])
    entries = {name: (trainer, batches[name]) for name, trainer in trainers.items()}
    rates = interleaved(entries, args.steps, args.rounds, device)
    return {name: statistics.median(r) for name, r in rates.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--arch", default="vit_tiny", help="backbone preset (GPU: vit_b16)")
    parser.add_argument("--text", default="text_tiny", help="text preset (GPU: text_b)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ckpt", action="store_true", help="gradient checkpointing (as the paper recipes)")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    med = measure(args)
    print(f"device {pick_device(args.device)}, arch {args.arch}, text {args.text}, batch {args.batch}")
    print(f"{'':<8}{'LiT cached':>14}{'LiT live':>14}{'CLIP':>14}")
    print(f"{'images/s':<8}{med['cached']:14.1f}{med['lit']:14.1f}{med['clip']:14.1f}")
    print(f"{'x CLIP':<8}{med['cached'] / med['clip']:13.2f}x{med['lit'] / med['clip']:13.2f}x{1.0:13.2f}x")
    print(f"cached / live LiT: {med['cached'] / med['lit']:.2f}x; live LiT / CLIP target >= 2x on GPU")


if __name__ == "__main__":
    main()

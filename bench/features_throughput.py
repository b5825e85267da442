"""Usage: python bench/features_throughput.py [--quick] [--arch vit_tiny,vit_s16] [--bf16] [--workers N] [--images N]

Images/s of frozen-feature extraction as `superclass eval features` runs it (JPEG file -> decode -> the
encoder's eval preprocess -> batched forward, DataLoader with N workers) against the bare forward pass on
pre-made tensors, side by side, with the data path alone as a third column; prints the share of the
extraction time the data path costs. One timed pass each, worker start-up included; random weights.
CPU default: vit_tiny and vit_s16 (`--quick`: fewer images). GPU: --arch vit_b16 --bf16 --workers 8.
Nothing is written outside a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from pretrain.data.labelled import image_folder
from pretrain.data.synthetic import make_sample
from pretrain.encoder import Encoder, default_preprocess
from pretrain.features import autocast, collate_skipping, iter_batches
from pretrain.models.backbone import build_backbone
from pretrain.models.presets import get_preset
from pretrain.runtime.distributed import pick_device


def write_jpegs(root: Path, count: int, side: int) -> Path:
    """`count` synthetic JPEGs (q90) of `side` px under root/train/x/ (one class)."""
    folder = root / "train" / "x"
    folder.mkdir(parents=True)
    for i in range(count):
        make_sample(i, seed=3, image_size=side).image.save(folder / f"{i:05d}.jpg", quality=90)
    return root


def timed(make_iter, batches: int) -> float:
    """Wall seconds to draw `batches` items from a fresh `make_iter()`, worker start-up included (one run)."""
    sync()
    start = time.perf_counter()
    it = make_iter()
    for _ in range(batches):
        next(it)
    sync()
    return time.perf_counter() - start


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_arch(name: str, root: Path, args: argparse.Namespace, device: torch.device) -> tuple:
    arch = get_preset(name)
    encoder = Encoder(build_backbone(arch), arch, {"preprocessing": default_preprocess(arch)}).to(device).eval()
    dataset = image_folder(root, "train", ["x"])
    num = max(1, args.images // args.batch_size)
    order = [i % len(dataset) for i in range(num * args.batch_size)]  # the files repeat: page cache, as a 2nd epoch
    batches = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    precision = "bf16" if args.bf16 else "fp32"
    images = torch.randn(args.batch_size, 3, arch.image_size, arch.image_size, device=device)

    def full():
        return iter_batches(encoder, dataset, batches, ["default"], args.workers, precision)

    def data_only():
        loader = torch.utils.data.DataLoader(
            dataset.with_transform(encoder.preprocess),
            batch_sampler=batches,
            num_workers=args.workers,
            collate_fn=collate_skipping,
            pin_memory=device.type == "cuda",
            prefetch_factor=4 if args.workers > 0 else None,  # as iter_batches
        )
        return iter(loader)

    def forward_only():
        while True:
            with torch.inference_mode(), autocast(precision, device):
                yield encoder(images).float().cpu()

    next(forward_only())  # kernel selection / allocator warm-up outside the clock
    t_full = timed(full, num)
    t_fwd = timed(forward_only, num)
    t_data = timed(data_only, num)
    count = num * args.batch_size
    return name, precision, count / t_full, count / t_fwd, count / t_data, max(0.0, 1 - t_fwd / t_full)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_tiny,vit_s16", help="presets, comma-separated")
    parser.add_argument("--images", type=int, default=256, help="images timed per measurement")
    parser.add_argument("--unique", type=int, default=256, help="distinct JPEG files (read repeatedly)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--source-size", type=int, default=320, help="side of the generated JPEGs")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (as extraction does on a GPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="64 images in batches of 16 (~30 s on 2 CPU cores)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.unique, args.batch_size = 64, 64, 16
    device = pick_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_jpegs(Path(tmp), min(args.unique, args.images), args.source_size)
        for name in args.arch.split(","):
            rows.append(bench_arch(name.strip(), root, args, device))
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(
        f"feature extraction: {args.source_size}px JPEG q90 -> decode -> eval preprocess -> forward -> pooled; "
        f"batch {args.batch_size}, {args.workers} workers, {device.type}{gpu}, {os.cpu_count()} CPU cores"
    )
    header = ("arch", "precision", "extract img/s", "forward-only img/s", "data-only img/s", "data-path share")
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name, precision, full, fwd, data, share in rows:
        print(f"{name} | {precision} | {full:.0f} | {fwd:.0f} | {data:.0f} | {100 * share:.0f}%")


if __name__ == "__main__":
    main()

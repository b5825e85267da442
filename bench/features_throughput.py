"""Usage: python bench/features_throughput.py [--quick] [--arch vit_tiny,vit_s16] [--bf16] [--workers N] [--decode gpu]

Images/s of frozen-feature extraction as `superclass eval features` runs it (JPEG file -> decode -> the
encoder's eval preprocess -> batched forward, DataLoader with N workers) against the bare forward pass on
pre-made tensors, side by side, with the data path alone (decoded, preprocessed batches on the device) as a
third column; prints the share of the extraction time the data path costs. One row per decode mode:
`cpu` (PIL in the workers) and `gpu` (workers read bytes; nvJPEG + resize on the device; on a CPU-only machine
the same code decodes with libjpeg-turbo in the main process). One timed pass each, worker start-up included;
random weights. CPU default: vit_tiny and vit_s16 (`--quick`: fewer images). GPU: --arch vit_b16 --bf16
--workers 8. Nothing is written outside a temporary directory.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import torch

from pretrain.data.gpu_decode import check_decoder
from pretrain.data.labelled import image_folder
from pretrain.data.synthetic import make_sample
from pretrain.encoder import Encoder, default_preprocess
from pretrain.features import iter_batches, iter_inputs
from pretrain.models.backbone import build_backbone
from pretrain.models.presets import get_preset
from pretrain.runtime.distributed import pick_device
from pretrain.runtime.precision import autocast


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


def bench_arch(name: str, root: Path, args: argparse.Namespace, device: torch.device) -> list[tuple]:
    """One row per decode mode: (arch, precision, decode, extract, forward-only, data-only img/s, data share)."""
    arch = get_preset(name)
    encoder = Encoder(build_backbone(arch), arch, {"preprocessing": default_preprocess(arch)}).to(device).eval()
    dataset = image_folder(root, "train", ["x"])
    num = max(1, args.images // args.batch_size)
    order = [i % len(dataset) for i in range(num * args.batch_size)]  # the files repeat: page cache, as a 2nd epoch
    batches = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    precision = "bf16" if args.bf16 else "fp32"
    images = torch.randn(args.batch_size, 3, arch.image_size, arch.image_size, device=device)

    def forward_only():
        while True:
            with torch.inference_mode(), autocast(precision, device):
                yield encoder(images).float().cpu()

    next(forward_only())  # kernel selection / allocator warm-up outside the clock
    check_decoder(device)  # nvJPEG's one-time start-up, too
    t_fwd = timed(forward_only, num)
    count, rows = num * args.batch_size, []
    for decode in (mode.strip() for mode in args.decode.split(",")):
        extract = functools.partial(iter_batches, encoder, dataset, batches, ["default"], args.workers, precision)
        t_full = timed(functools.partial(extract, decode=decode), num)
        t_data = timed(functools.partial(iter_inputs, encoder, dataset, batches, args.workers, decode), num)
        share = max(0.0, 1 - t_fwd / t_full)
        rows.append((name, precision, decode, count / t_full, count / t_fwd, count / t_data, share))
    return rows


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
    parser.add_argument("--decode", default="cpu,gpu", help="decode modes to time, comma-separated: cpu, gpu")
    parser.add_argument("--quick", action="store_true", help="64 images in batches of 16 (~30 s on 2 CPU cores)")
    args = parser.parse_args()
    if args.quick:
        args.images, args.unique, args.batch_size = 64, 64, 16
    device = pick_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = write_jpegs(Path(tmp), min(args.unique, args.images), args.source_size)
        for name in args.arch.split(","):
            rows += bench_arch(name.strip(), root, args, device)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(
        f"feature extraction: {args.source_size}px JPEG q90 -> decode -> eval preprocess -> forward -> pooled; "
        f"batch {args.batch_size}, {args.workers} workers, {device.type}{gpu}, {os.cpu_count()} CPU cores"
    )
    header = (
        "arch",
        "precision",
        "decode",
        "extract img/s",
        "forward-only img/s",
        "data-only img/s",
        "data-path share",
    )
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for name, precision, decode, full, fwd, data, share in rows:
        print(f"{name} | {precision} | {decode} | {full:.0f} | {fwd:.0f} | {data:.0f} | {100 * share:.0f}%")


if __name__ == "__main__":
    main()

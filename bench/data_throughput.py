"""Usage: python bench/data_throughput.py [--quick] [--sizes 256,512,1024] [--workers N] [--images 320]

Measures images/s (and per CPU core) of the training data path: shard -> JPEG decode -> RandomResizedCrop(224)
-> normalised batch, for synthetic JPEG shards at several source sizes, original vs pre-resized with
`pretrain.data.resize` (shortest side 256), in one process (one core) and with N DataLoader workers.
Prints one table; nothing is written outside a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from pretrain.data.resize import resize_shards
from pretrain.data.stream import DataConfig, build_loader
from pretrain.data.synthetic import write_shards
from pretrain.data.transforms import TransformConfig


def images_per_second(shards: Path, workers: int, images: int, batch_size: int, image_size: int) -> float:
    """Steady-state images/s of the batch stream.

    Workers run ahead by prefetch_factor batches each, so the clock starts only after the consumer has drained
    that head start (twice over), and at least a few batches per worker are timed.
    """
    cfg = DataConfig(
        kind="shards",
        train=str(shards),
        num_workers=workers,
        pin_memory=False,
        transform=TransformConfig(image_size=image_size),
    )
    loader = iter(build_loader(cfg, None, batch_size, seed=0))
    for _ in range(1 + 2 * workers * cfg.prefetch_factor):
        next(loader)
    batches = max(images // batch_size, 3 * max(1, workers))
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    elapsed = time.perf_counter() - start
    del loader
    return batches * batch_size / elapsed


def kib_per_image(shards: Path, count: int) -> float:
    return sum(p.stat().st_size for p in shards.glob("*.tar")) / 1024 / count


def prepare(root: Path, size: int, unique: int, short_side: int) -> tuple[Path, Path, float]:
    """Write `unique` synthetic JPEGs of side `size` into shards and a pre-resized copy; returns resize img/s."""
    original, resized = root / f"{size}px", root / f"{size}px-resized"
    write_shards(original, unique, max(1, unique // 4), seed=size, image_size=size, image_format="jpg")
    start = time.perf_counter()
    counts = resize_shards(str(original), resized, short_side=short_side, workers=1)
    return original, resized, counts["samples"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256,512,1024", help="source image sides, comma-separated")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="N for the multi-worker run")
    parser.add_argument("--images", type=int, default=320, help="images timed per measurement")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224, help="training crop side")
    parser.add_argument("--short-side", type=int, default=256, help="pre-resize target shortest side")
    parser.add_argument("--quick", action="store_true", help="256 and 512 px, fewer images (~20 s)")
    args = parser.parse_args()
    sizes = [256, 512] if args.quick else [int(s) for s in args.sizes.split(",")]
    images = 64 if args.quick else args.images
    torch.set_num_threads(1)  # the in-process run is one core; workers use one thread each anyway
    # few shards feed many workers here (each re-reads one); that is fine for timing, so no warning
    warnings.filterwarnings("ignore", message=r"\d+ shards for")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            unique = max(8, min(96, 96 * 256 * 256 // (size * size) * 2))  # fewer unique images when large
            original, resized, resize_rate = prepare(Path(tmp), size, unique, args.short_side)
            for workers in (0, args.workers):
                rate_o = images_per_second(original, workers, images, args.batch_size, args.image_size)
                rate_r = images_per_second(resized, workers, images, args.batch_size, args.image_size)
                cores = min(max(1, workers), os.cpu_count() or 1)
                kib = (kib_per_image(original, unique), kib_per_image(resized, unique))
                rows.append((size, *kib, workers, cores, rate_o, rate_r))
            rows.append((size, None, None, None, None, resize_rate, None))

    print(
        f"data path: shard -> decode -> RandomResizedCrop({args.image_size}, bicubic) -> normalised batch of "
        f"{args.batch_size}; pre-resized = shortest side {args.short_side}, JPEG q90; {os.cpu_count()} CPU cores"
    )
    header = (
        "source",
        "KiB/img orig",
        "KiB/img resized",
        "workers",
        "orig img/s",
        "orig img/s/core",
        "resized img/s",
        "resized img/s/core",
        "resized/orig",
    )
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for size, kib_o, kib_r, workers, cores, rate_o, rate_r in rows:
        if workers is None:
            print(f"{size}px | resize tool (1 process): {rate_o:.0f} img/s/core | | | | | | |")
            continue
        cells = (
            f"{size}px",
            f"{kib_o:.0f}",
            f"{kib_r:.0f}",
            f"{workers}",
            f"{rate_o:.0f}",
            f"{rate_o / cores:.0f}",
            f"{rate_r:.0f}",
            f"{rate_r / cores:.0f}",
            f"{rate_r / rate_o:.2f}x",
        )
        print(" | ".join(cells))


if __name__ == "__main__":
    main()

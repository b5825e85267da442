"""Pre-resize webdataset shards so a few CPU cores can feed a GPU.

Usage: python -m pretrain.data.resize SRC_PATTERN OUT_DIR [--short-side 256] [--quality 90] [--workers N]

Decoding full-size JPEGs costs 90-370 images/s per core (see bench/data_throughput.py); a 16-core machine
feeding ~3,000 images/s to a ViT-B/16 needs sources near 256 px. Each shard is rewritten with the same name:
images whose shortest side exceeds `short_side` are resized (aspect kept) and re-encoded as JPEG, smaller
JPEGs are copied as they are, captions and other members are copied, and corrupt samples are dropped and
counted (with the reader's rules, so the output holds only samples the reader would use).
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from pretrain.data.shards import IMAGE_EXTS, decode_caption, expand_shards, image_member, iter_raw_samples, to_rgb
from pretrain.runtime.errors import DataError


def _reencode(data: bytes, ext: str, short_side: int, quality: int, counts: Counter) -> bytes | None:
    """JPEG bytes with the shortest side at most `short_side`; None (counted 'bad_image') if undecodable."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            scale = short_side / min(width, height)
            if scale >= 1 and ext in ("jpg", "jpeg") and image.format == "JPEG":
                image.load()  # decodes fully: a corrupt JPEG fails here and is dropped
                return data
            if scale < 1:
                target = (max(1, round(width * scale)), max(1, round(height * scale)))
                image.draft("RGB", (target[0] * 2, target[1] * 2))  # JPEG: decode at a reduced DCT scale
                rgb = to_rgb(image).resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)
                counts["resized"] += 1
            else:
                rgb = to_rgb(image)
    except Exception:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        counts["bad_image"] += 1
        return None
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def resize_shard(src: str, dst: str, short_side: int = 256, quality: int = 90) -> Counter:
    """Rewrite one shard into `dst` (atomically); returns its counts."""
    counts: Counter = Counter()
    tmp = f"{dst}.tmp{os.getpid()}"
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for _, raw in iter_raw_samples(src, counts):
            ext = image_member(raw.members)
            if ext is None:
                counts["missing_image"] += 1
                continue
            if decode_caption(raw.members, counts) is None:
                continue
            image = _reencode(raw.members[ext], ext, short_side, quality, counts)
            if image is None:
                continue
            _add(tar, f"{raw.key}.jpg", image)
            for member_ext, payload in raw.members.items():
                if member_ext not in IMAGE_EXTS:
                    _add(tar, f"{raw.key}.{member_ext}", payload)
            counts["samples"] += 1
    os.replace(tmp, dst)
    counts["shards"] += 1
    counts["bytes_in"] += os.path.getsize(src) if os.path.isfile(src) else 0
    counts["bytes_out"] += os.path.getsize(dst)
    return counts


def _resize_job(job: tuple[str, str, int, int]) -> Counter:
    return resize_shard(*job)


def resize_shards(
    src_pattern: str,
    out_dir: str | Path,
    short_side: int = 256,
    quality: int = 90,
    workers: int | None = None,
) -> dict[str, int]:
    """Resize every shard of `src_pattern` into `out_dir` (same file names); returns the summed counts."""
    shards = expand_shards(src_pattern)
    names = [os.path.basename(s) for s in shards]
    if len(set(names)) != len(names):
        raise DataError(f"shard pattern '{src_pattern}' names two shards with the same file name")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if any(os.path.abspath(s) == os.path.abspath(out / n) for s, n in zip(shards, names)):
        raise DataError(f"output directory {out} holds the source shards; choose another directory")
    jobs = [(src, str(out / name), short_side, quality) for src, name in zip(shards, names)]
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    total: Counter = Counter()
    if workers <= 1:
        results = map(_resize_job, jobs)
        for counts in results:
            total.update(counts)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for counts in pool.map(_resize_job, jobs):
                total.update(counts)
    return dict(total)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="shard pattern: brace pattern, glob, directory or comma list")
    parser.add_argument("out_dir", help="where the resized shards go (same file names)")
    parser.add_argument("--short-side", type=int, default=256, help="largest shortest side kept, in pixels")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of re-encoded images")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    counts = resize_shards(args.src, args.out_dir, args.short_side, args.quality, args.workers)
    print(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()

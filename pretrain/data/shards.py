"""Streaming reader for webdataset tar shards (img2dataset / DataComp layout), without the webdataset package.

A shard is read once, front to back, with `tarfile` in stream mode; members are grouped into samples by the
webdataset key rule (directory + basename up to the first dot). Corrupt samples are skipped and counted by
reason (see SKIP_REASONS), never raised: one bad JPEG in a billion must not stop a run. A whole pattern that
matches nothing is a DataError.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import tarfile
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image

from pretrain.runtime.errors import DataError

IMAGE_EXTS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
SKIP_REASONS: tuple[str, ...] = (
    "truncated_shard",  # the tar (or its compression) ended mid-member; counted once per shard read
    "unreadable_shard",  # the file could not be opened as a tar at all
    "bad_image",  # PIL could not decode the image
    "missing_image",  # no .jpg/.jpeg/.png/.webp member (or, for lists, no file)
    "missing_caption",  # no .txt, and no .json with a 'caption'/'text' field
    "empty_caption",  # the caption is empty or whitespace
    "bad_caption_encoding",  # the .txt is not UTF-8, or the .json is not valid UTF-8 JSON
)

_KEY_RE = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")
_BRACE_RE = re.compile(r"\{([^{}]*)\}")


@dataclass
class RawSample:
    """One sample as stored: its key and the bytes of each member, by lower-case extension."""

    key: str
    members: dict[str, bytes]


def braceexpand(pattern: str) -> list[str]:
    """Expand `{a,b}` alternatives and `{000..099}` zero-padded ranges, left to right (like the braceexpand package)."""
    match = _BRACE_RE.search(pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
    range_match = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if range_match:
        lo_text, hi_text = range_match.groups()
        lo, hi = int(lo_text), int(hi_text)
        width = len(lo_text) if lo_text.startswith("0") and len(lo_text) > 1 else 0
        step = 1 if hi >= lo else -1
        options = [str(i).zfill(width) for i in range(lo, hi + step, step)]
    else:
        options = body.split(",")
    return [expanded for option in options for expanded in braceexpand(head + option + tail)]


def _split_top_level(spec: str) -> list[str]:
    """Split a comma-separated list of patterns, keeping commas inside braces."""
    parts, depth, current = [], 0, []
    for ch in spec:
        depth += (ch == "{") - (ch == "}")
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _expand_one(part: str) -> list[str]:
    """The shard files of one pattern: brace pattern, glob, directory (all *.tar) or a single file."""
    path = os.path.expanduser(part)
    if "{" in path:
        candidates = braceexpand(path)
        found = [p for p in candidates if os.path.isfile(p)]
        if not found:
            raise DataError(f"shard pattern '{part}' matches no files (expected e.g. /data/{{00000..00099}}.tar)")
        if len(found) < len(candidates):
            missing = len(candidates) - len(found)
            message = f"shard pattern '{part}': {missing} of {len(candidates)} files do not exist; skipping them"
            warnings.warn(message, stacklevel=3)
        return found
    if any(ch in path for ch in "*?["):
        found = sorted(p for p in glob.glob(path) if os.path.isfile(p))
        if not found:
            raise DataError(f"shard glob '{part}' matches no files")
        return found
    if os.path.isdir(path):
        found = sorted(str(p) for p in Path(path).glob("*.tar"))
        if not found:
            raise DataError(f"shard directory '{part}' contains no *.tar files")
        return found
    if os.path.isfile(path):
        return [path]
    raise DataError(f"shard path '{part}' does not exist (expected a .tar file, directory, glob or brace pattern)")


def expand_shards(spec: str) -> list[str]:
    """All shard paths named by `spec`: comma-separated brace patterns, globs, directories or files."""
    parts = _split_top_level(spec)
    if not parts:
        raise DataError("shard pattern is empty (expected e.g. /data/{00000..00099}.tar)")
    return [path for part in parts for path in _expand_one(part)]


def _split_key(name: str) -> tuple[str, str] | None:
    """('dir/000000012', 'jpg') for 'dir/000000012.jpg'; None for names without an extension."""
    match = _KEY_RE.match(name)
    if match is None:
        return None
    return match.group(1), match.group(2).lower()


def _complete(tar: tarfile.TarFile, size: int) -> bool:
    """Whether a tar whose member list ended without an error was really whole (tarfile ends quietly when cut)."""
    stream = tar.fileobj
    if getattr(stream, "comptype", "tar") == "tar":
        return size >= tar.offset + tarfile.BLOCKSIZE  # an end-of-archive block follows the last member
    while stream.read(1 << 16):  # drain the padding, then ask the decompressor whether its stream ended
        continue
    return bool(getattr(getattr(stream, "cmp", None), "eof", True))


def iter_raw_samples(path: str, counts: Counter, skip: int = 0) -> Iterator[tuple[int, RawSample]]:
    """Yield (samples read so far, sample) for each sample of the shard after the first `skip`.

    The first `skip` samples are passed over without reading their data (exact resume). A truncated shard
    counts once as 'truncated_shard' and its unfinished last sample is dropped; samples before it are kept.
    """
    try:
        f = open(path, "rb")
    except OSError:
        counts["unreadable_shard"] += 1
        return
    with f:
        size = os.fstat(f.fileno()).st_size
        try:
            tar = tarfile.open(fileobj=f, mode="r|*")
        except (tarfile.TarError, EOFError, OSError):
            counts["unreadable_shard"] += 1
            return
        index, key, members = 0, None, {}
        try:
            for info in tar:
                if not info.isfile():
                    continue
                split = _split_key(info.name)
                if split is None:
                    continue
                if split[0] != key:
                    if key is not None:
                        index += 1
                        if index > skip:
                            yield index, RawSample(key, members)
                    key, members = split[0], {}
                if index >= skip:
                    data = tar.extractfile(info)
                    members[split[1]] = data.read() if data is not None else b""
            complete = _complete(tar, size)
        except (tarfile.TarError, EOFError, OSError, ValueError):
            complete = False
        if not complete:
            counts["truncated_shard"] += 1
            return
        if key is not None:
            index += 1
            if index > skip:
                yield index, RawSample(key, members)


def decode_caption(members: dict[str, bytes], counts: Counter) -> str | None:
    """The caption from .txt (UTF-8), else .json 'caption'/'text'; None (counted) when unusable."""
    if "txt" in members:
        try:
            caption = members["txt"].decode("utf-8")
        except UnicodeDecodeError:
            counts["bad_caption_encoding"] += 1
            return None
    elif "json" in members:
        try:
            meta = json.loads(members["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            counts["bad_caption_encoding"] += 1
            return None
        caption = meta.get("caption", meta.get("text")) if isinstance(meta, dict) else None
        if not isinstance(caption, str):
            counts["missing_caption"] += 1
            return None
    else:
        counts["missing_caption"] += 1
        return None
    caption = caption.strip()
    if not caption:
        counts["empty_caption"] += 1
        return None
    return caption


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB; 16/32-bit integer and float greyscale are scaled to 0..255 first.

    PIL's `convert("RGB")` clips those modes at 255, so a 16-bit PNG turns white. I;16 modes are read as 0..65535;
    I and F as the first of 0..1 (F only), 0..255, 0..65535 that holds every value, else stretched min to max.
    """
    if image.mode != "F" and not image.mode.startswith("I"):
        return image.convert("RGB")
    x = np.asarray(image).astype(np.float64)
    finite = np.isfinite(x)
    lo, hi = (float(x[finite].min()), float(x[finite].max())) if finite.any() else (0.0, 0.0)
    ranges = (65535.0,) if image.mode.startswith("I;16") else (1.0, 255.0, 65535.0)[image.mode != "F" :]
    full = next((r for r in ranges if lo >= 0 and hi <= r), None)
    base, span = (0.0, full) if full is not None else (lo, (hi - lo) or 1.0)
    grey = np.clip(np.rint(np.where(finite, (x - base) / span * 255.0, 0.0)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")  # a 2-D uint8 array is mode L


def open_rgb(source: str | Path | bytes | IO[bytes]) -> Image.Image:
    """The image (a path, encoded bytes such as a parquet cell, or a binary file object) as 8-bit RGB, fully
    decoded; PIL's errors propagate.

    Every reader of image files (shards, lists, labelled sets, LLaVA data, chat, the VLM benchmarks) decodes here.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        return to_rgb(image)


def decode_image(data: bytes, counts: Counter) -> Image.Image | None:
    """The image as RGB (`open_rgb`), fully decoded; None (counted as 'bad_image') when PIL cannot read it."""
    try:
        return open_rgb(io.BytesIO(data))
    except Exception:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, struct.error, ...
        counts["bad_image"] += 1
        return None


def image_member(members: dict[str, bytes]) -> str | None:
    """The extension of the sample's image member, by preference order of IMAGE_EXTS."""
    return next((ext for ext in IMAGE_EXTS if ext in members), None)


def decode_sample(raw: RawSample, counts: Counter) -> tuple[Image.Image, str] | None:
    """(RGB image, caption) of a raw sample, or None with the reason counted; the caption is checked first."""
    ext = image_member(raw.members)
    if ext is None:
        counts["missing_image"] += 1
        return None
    caption = decode_caption(raw.members, counts)
    if caption is None:
        return None
    image = decode_image(raw.members[ext], counts)
    if image is None:
        return None
    return image, caption


def iter_samples(path: str, counts: Counter, skip: int = 0) -> Iterator[tuple[int, str, Image.Image, str]]:
    """Yield (samples read so far, key, image, caption) for every good sample of a shard after the first `skip`."""
    for index, raw in iter_raw_samples(path, counts, skip):
        decoded = decode_sample(raw, counts)
        if decoded is not None:
            yield index, raw.key, decoded[0], decoded[1]

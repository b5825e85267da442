"""Decode and preprocess on the encoder's device: DataLoader workers only read file bytes, nvJPEG decodes batches.

What `superclass eval features --decode gpu` (`FeatureConfig.decode`) runs instead of PIL decode + resize in the
workers, which caps B/16 bf16 extraction on an H200 at a quarter of the bare forward's rate.

Routing, decided in the worker from the file's header:
    bytes    a JPEG that nvJPEG decodes the way PIL does: 8-bit Huffman (baseline, extended or progressive), three
             YCbCr components, an EOI marker after its first scan (PIL refuses truncated files), within PIL's pixel
             limit. The main process decodes the batch with `torchvision.io.decode_jpeg(device=...)`.
    pixels   everything else (PNG, WebP, BMP, greyscale or CMYK JPEGs, truncated files, in-memory images) is
             decoded by PIL in the worker exactly as the CPU path does, and travels as a uint8 [3, H, W] tensor.
A batch nvJPEG refuses is retried one image at a time; an image it still refuses is decoded by PIL in the main
process. So an image is skipped exactly when PIL cannot decode it, the CPU path's rule, and counted the same way.

Preprocessing is the artifact's own transform (`Encoder.preprocess`), cut at its `ToDtype`: resize + centre crop
per group of same-sized images (uint8, as the CPU path), then dtype + normalisation once on the stacked batch.
On the CPU (`device="cpu"`, what the tests run) torchvision's libjpeg-turbo gives PIL's pixels bit for bit.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torchvision.transforms.v2 as v2
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

from pretrain.data.labelled import LabelledImages
from pretrain.data.shards import decode_image
from pretrain.runtime.errors import UserError

SOI, EOI, SOS = b"\xff\xd8", b"\xff\xd9", 0xDA
HUFFMAN_SOF = (0xC0, 0xC1, 0xC2)  # baseline, extended sequential, progressive (nvJPEG: no arithmetic, no lossless)
NO_LENGTH = {0x01, *range(0xD0, 0xD8)}  # markers without a length field (TEM, RSTn)


class JpegHeader(NamedTuple):
    """What the routing needs from a JPEG's header segments (everything before the first scan's data)."""

    sof: int  # the frame marker: 0xC0 baseline ... 0xC2 progressive
    precision: int  # bits per sample
    height: int
    width: int
    components: int  # 1 greyscale, 3 YCbCr (or RGB), 4 CMYK / YCCK
    adobe_transform: int | None  # APP14 "Adobe" colour transform: 0 means not YCbCr-coded (RGB or CMYK)
    scan_start: int  # offset of the first scan's data


def jpeg_header(data: bytes) -> JpegHeader | None:
    """The header of a JPEG byte string, or None when it is not one (or its header is damaged)."""
    if not data.startswith(SOI):
        return None
    pos, frame, adobe = 2, None, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in NO_LENGTH:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        body = data[pos + 4 : pos + 2 + length]
        if length < 2 or len(body) != length - 2:
            return None
        if marker == SOS:
            return None if frame is None else JpegHeader(*frame, adobe, pos + 2 + length)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and len(body) >= 6:  # SOFn, not DHT/JPG/DAC
            frame = (marker, body[0], int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big"), body[5])
        elif marker == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:  # APP14
            adobe = body[11]
        pos += 2 + length
    return None


def device_decodable(data: bytes) -> bool:
    """Whether nvJPEG decodes this file as PIL would (see the module docstring); other files go to PIL."""
    head = jpeg_header(data)
    if head is None or head.sof not in HUFFMAN_SOF or head.precision != 8 or head.components != 3:
        return False
    if head.adobe_transform == 0 or head.height * head.width == 0:
        return False
    if Image.MAX_IMAGE_PIXELS is not None and head.height * head.width > Image.MAX_IMAGE_PIXELS:
        return False  # PIL warns or refuses (decompression bomb); let it decide
    return data.rfind(EOI) >= head.scan_start  # the entropy-coded data cannot contain FFD9: a real end marker


def _pil_pixels(image: Image.Image | None) -> torch.Tensor | None:
    return None if image is None else v2.functional.pil_to_tensor(image)


class EncodedImages(torch.utils.data.Dataset):
    """`dataset` as `(payload, label, index)`: a JPEG's bytes (1-D uint8), PIL's RGB pixels [3, H, W], or None."""

    def __init__(self, dataset: LabelledImages) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | None, int, int]:
        item, label = self.dataset.items[index], self.dataset.labels[index]
        if not isinstance(item, str):
            return _pil_pixels(self.dataset.load_image(index)), label, index
        try:
            with open(item, "rb") as f:
                data = f.read()
        except OSError:
            return None, label, index  # skip_reason tells missing from unreadable in the main process
        if device_decodable(data):
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), label, index
        return _pil_pixels(decode_image(data, Counter())), label, index


def pack(payloads: Sequence[torch.Tensor]) -> dict[str, Any]:
    """Payloads as one flat uint8 tensor plus their shapes: one shared-memory transfer per batch, not one per image."""
    data = torch.cat([p.reshape(-1) for p in payloads]) if payloads else torch.empty(0, dtype=torch.uint8)
    return {"data": data, "shapes": [tuple(p.shape) for p in payloads]}


def unpack(packed: dict[str, Any]) -> list[torch.Tensor]:
    """The payloads of `pack`, as views into its (pinned) buffer."""
    shapes = packed["shapes"]
    parts = torch.split(packed["data"], [math.prod(s) for s in shapes])
    return [part.view(shape) for part, shape in zip(parts, shapes)]


def _decode_alone(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """One JPEG on `device`, else PIL's decode of it (moved there), else None: the CPU path's skip rule."""
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError:
        pixels = _pil_pixels(decode_image(data.numpy().tobytes(), Counter()))
        return None if pixels is None else pixels.to(device)


def decode(payloads: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """uint8 RGB [3, H, W] images on `device` (None: undecodable); the JPEGs in one batched call."""
    images: list[torch.Tensor | None] = [p.to(device, non_blocking=True) if p.dim() == 3 else None for p in payloads]
    jpegs = [i for i, p in enumerate(payloads) if p.dim() == 1]
    if not jpegs:
        return images
    try:
        decoded = decode_jpeg([payloads[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
    except torch.OutOfMemoryError:
        raise
    except RuntimeError:  # one bad file fails the whole call (no partial results): find it
        decoded = [_decode_alone(payloads[i], device) for i in jpegs]
    for i, image in zip(jpegs, decoded):
        images[i] = image
    return images


class DevicePreprocess:
    """The artifact's eval transform over decoded uint8 images on any device, batched where sizes allow."""

    def __init__(self, preprocess: Callable[[Any], torch.Tensor]) -> None:
        steps = list(getattr(preprocess, "transforms", []))
        cut = next((i for i, t in enumerate(steps) if isinstance(t, v2.ToDtype)), None)
        if cut is None:  # not a Compose with a ToDtype: the whole transform per size group
            self.geometry, self.pixels = preprocess, None
        else:
            self.geometry, self.pixels = v2.Compose(steps[:cut]), v2.Compose(steps[cut:])

    def __call__(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """[n, 3, crop, crop] float from n uint8 [3, H, W] images (one resize call per distinct H x W)."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            groups[tuple(image.shape)].append(i)
        rows: list[torch.Tensor] = list(images)  # each replaced by its resized, cropped version below
        for members in groups.values():
            batch = self.geometry(torch.stack([images[i] for i in members])).as_subclass(torch.Tensor)
            for i, row in zip(members, batch):
                rows[i] = row
        stacked = torch.stack(rows)  # back in batch order
        return stacked if self.pixels is None else self.pixels(stacked).as_subclass(torch.Tensor)


def prepare_batch(batch: dict[str, Any], preprocess: DevicePreprocess, device: torch.device) -> dict[str, Any]:
    """A collated batch of payloads -> the encoder's input on `device`; images that fail to decode join `skipped`."""
    if batch["images"] is None:  # the workers could read none of them
        return batch
    images = decode(unpack(batch["images"]), device)
    ok = [i for i, image in enumerate(images) if image is not None]
    labels, indices, skipped = batch["labels"], batch["indices"], batch["skipped"]
    if len(ok) < len(images):
        bad = [i for i, image in enumerate(images) if image is None]
        skipped = torch.sort(torch.cat([skipped, indices[bad]])).values
        labels, indices = labels[ok], indices[ok]
    pixels = preprocess([images[i] for i in ok]) if ok else None
    return {"images": pixels, "labels": labels, "indices": indices, "skipped": skipped}


def check_decoder(device: torch.device) -> None:
    """Fail fast (UserError) when this torchvision cannot decode JPEGs on `device` (no nvJPEG in the build)."""
    probe = encode_jpeg(torch.zeros(3, 8, 8, dtype=torch.uint8))
    try:
        decode_jpeg([probe], mode=ImageReadMode.RGB, device=device)
    except RuntimeError as exc:
        raise UserError(
            f"--decode gpu: torchvision cannot decode JPEGs on {device} ({str(exc).splitlines()[0]}); "
            f"it needs a CUDA build of torchvision with nvJPEG, or use --decode cpu"
        ) from None

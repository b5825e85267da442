"""The encoder artifact: the one thing downstream packages (probes, LiT, ClipCap, LLaVA) read from pretraining.

An artifact is a directory:
    config.json         {"format": "superclass-encoder", "version": 1, "architecture": {ArchConfig fields},
                         "preprocessing": {mean, std, resize, crop, interpolation}, "provenance": {method, ...}}
    model.safetensors   the backbone's timm state dict (no pickle anywhere)
    head.safetensors    optional: the SuperClass head ("head.*") and IDF statistics ("idf.*")

`save_encoder` writes it atomically (temp dir beside the target, fsync, rename); `load_encoder` returns an
`Encoder` with timm's encoder API, so downstream code never needs to know how the backbone was trained.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors
import torch
import torch.nn as nn
import torchvision.transforms.v2 as v2
from safetensors.torch import load_file, save_file
from torchvision.transforms import InterpolationMode

from pretrain.data.transforms import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from pretrain.models.backbone import build_backbone
from pretrain.models.heads import SuperClassHead
from pretrain.models.presets import ArchConfig
from pretrain.runtime.atomic import plain_tensors, write_dir_atomically
from pretrain.runtime.config import from_dict, to_dict
from pretrain.runtime.errors import ConfigError, UserError
from pretrain.runtime.jsonl import read_json_file

FORMAT = "superclass-encoder"
VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
HEAD_FILE = "head.safetensors"
METHODS = ("superclass", "clip")


def default_preprocess(arch: ArchConfig) -> dict[str, Any]:
    """The paper's eval transform: shortest side to image_size (bicubic), centre crop, OpenAI CLIP mean/std."""
    return {
        "mean": list(OPENAI_CLIP_MEAN),
        "std": list(OPENAI_CLIP_STD),
        "resize": arch.image_size,
        "crop": arch.image_size,
        "interpolation": "bicubic",
    }


class CenterCropFloor(v2.Transform):
    """Centre crop with the offset rounded down, as HF `CLIPImageProcessor` does (torchvision rounds to nearest)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        height, width = v2.functional.get_size(inpt)
        top, left = (height - self.size) // 2, (width - self.size) // 2
        return v2.functional.crop(inpt, top, left, self.size, self.size)


def build_preprocess(pre: dict[str, Any]) -> v2.Compose:
    """PIL image or uint8 tensor -> normalised float tensor [3, crop, crop].

    The image becomes a uint8 tensor before resizing so the result equals HF's `CLIPImageProcessor` (which LLaVA,
    vLLM and lmms-eval use) on the same image; OpenCLIP's PIL resize agrees to within one grey level.
    """
    return v2.Compose(
        [
            v2.RGB(),  # greyscale / palette / RGBA inputs become 3-channel RGB
            v2.ToImage(),
            v2.Resize(int(pre["resize"]), interpolation=InterpolationMode(pre["interpolation"]), antialias=True),
            CenterCropFloor(int(pre["crop"])),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[float(x) for x in pre["mean"]], std=[float(x) for x in pre["std"]]),
        ]
    )


class Encoder(nn.Module):
    """A loaded artifact with timm's encoder API; `forward(images)` is the pooled feature it was trained with."""

    def __init__(self, backbone: nn.Module, arch: ArchConfig, config: dict[str, Any], path: Path | None = None):
        super().__init__()
        self.backbone = backbone
        self.arch = arch
        self.config = config
        self.path = path
        self.num_features = arch.width  # D of forward_head / forward
        self.num_prefix_tokens = arch.num_prefix_tokens  # 1 when the class token leads forward_features
        self.preprocess = build_preprocess(config["preprocessing"])

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens [B, T, D] after the final norm; ViT: class token first; CNN: the [B, C, H, W] map as [B, HW, C]."""
        x = self.backbone.forward_features(images)
        return x if self.arch.family == "vit" else x.flatten(2).transpose(1, 2)

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        """The trained pooling of `forward_features` output -> [B, D]; bit-identical to the backbone's own.

        `pre_logits` is accepted for timm compatibility: the artifact has no classifier (the SuperClass head
        comes from `load_head()`), so both values return the pooled feature.
        """
        if self.arch.family == "vit":
            return self.backbone.forward_head(tokens, pre_logits=True)
        b, t, c = tokens.shape
        side = math.isqrt(t)
        h, w = (side, side) if side * side == t else (t, 1)  # global pooling does not care about the layout
        return self.backbone.forward_head(tokens.transpose(1, 2).reshape(b, c, h, w), pre_logits=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features [B, D]."""
        return self.forward_head(self.forward_features(images))

    def forward_intermediates(
        self,
        images: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NLC",
        intermediates_only: bool = False,
        return_prefix_tokens: bool = False,
    ) -> list[Any] | tuple[torch.Tensor, list[Any]]:
        """Per-block outputs via timm's `forward_intermediates`.

        `indices`: the last n blocks if an int, all if None, else block indices (negative ones count from the
        end: [-2] is LLaVA's layer -2, i.e. HF `hidden_states[-2]`). Each intermediate is the block output
        WITHOUT prefix tokens: [B, N, D] for "NLC" (default), [B, D, H, W] for "NCHW" (CNN stages: always
        maps, flattened to [B, HW, C] for "NLC"); `norm=True` applies the final norm to them. With
        `return_prefix_tokens=True` (ViT) each item is a (patch_tokens, prefix_tokens [B, 1, D]) tuple.
        Returns the list if `intermediates_only`, else (forward_features(images), list).
        """
        if output_fmt not in ("NLC", "NCHW"):
            raise ValueError(f"output_fmt must be 'NLC' or 'NCHW', got {output_fmt!r}")
        kwargs = dict(indices=indices, norm=norm, stop_early=stop_early, intermediates_only=intermediates_only)
        if self.arch.family == "vit":
            return self.backbone.forward_intermediates(
                images, output_fmt=output_fmt, return_prefix_tokens=return_prefix_tokens, **kwargs
            )
        if return_prefix_tokens:
            raise ValueError(f"'{self.arch.timm_name}' has no prefix tokens (return_prefix_tokens=True)")
        out = self.backbone.forward_intermediates(images, output_fmt="NCHW", **kwargs)
        final, maps = (None, out) if intermediates_only else out
        if output_fmt == "NLC":
            maps = [m.flatten(2).transpose(1, 2) for m in maps]
        return maps if final is None else (final.flatten(2).transpose(1, 2), maps)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing in the backbone (for fine-tuning downstream)."""
        self.backbone.set_grad_checkpointing(enable)

    def load_head(self) -> tuple[SuperClassHead, dict[str, torch.Tensor]] | None:
        """(SuperClass head, IDF statistics by name) from head.safetensors, or None when the artifact has none."""
        if self.path is None or not (self.path / HEAD_FILE).is_file():
            return None
        file = self.path / HEAD_FILE
        device = next(self.backbone.parameters()).device
        tensors = _read_tensors(file, device)
        head_t = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
        idf = {k[4:]: v for k, v in tensors.items() if k.startswith("idf.")}
        if "proj.weight" not in head_t or head_t["proj.weight"].ndim != 2:
            raise UserError(f"{file}: no 2-D 'head.proj.weight' tensor (not a SuperClass head)")
        vocab, width = head_t["proj.weight"].shape
        with torch.device("meta"):
            head = SuperClassHead(width, vocab, ln_eps=self.arch.ln_eps)
        _check_weights(file, _shapes(head), head_t)
        head.load_state_dict(head_t, assign=True)
        return head, idf


def save_encoder(
    out_dir: str | Path,
    backbone: nn.Module | dict[str, torch.Tensor],
    arch: ArchConfig,
    preprocess: dict[str, Any],
    provenance: dict[str, Any],
    head_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the artifact directory `out_dir` atomically; an existing artifact there is replaced only when complete.

    `preprocess`: mean, std, resize, crop, interpolation (see `default_preprocess`). `provenance`: `method`
    ("superclass" | "clip") plus what produced it: tokenizer, vocab_size, samples_seen, config (the resolved
    recipe; dataclasses are converted). `backbone`: the module or its full state dict (what FSDP2 callers
    gather first). `head_state`: the SuperClass head's tensors under "head.", IDF statistics under "idf.". Call
    on one rank; DDP / torch.compile wrappers are unwrapped.
    """
    out_dir = Path(out_dir)
    pre = _check_preprocess(preprocess, f"{out_dir / CONFIG_FILE}: preprocessing")
    if provenance.get("method") not in METHODS:
        raise UserError(f"{out_dir / CONFIG_FILE}: provenance.method must be one of {list(METHODS)}")
    config = {"format": FORMAT, "version": VERSION, "architecture": to_dict(arch)}
    config.update({"preprocessing": pre, "provenance": provenance})
    config_text = json.dumps(config, indent=2, default=_json_default) + "\n"
    tensors = plain_tensors(backbone) if isinstance(backbone, dict) else _plain_state_dict(backbone)
    with torch.device("meta"):
        expected = _shapes(build_backbone(arch))
    _check_weights(out_dir / MODEL_FILE, expected, tensors)
    head_tensors = None
    if head_state is not None:
        bad = [k for k in head_state if not k.startswith(("head.", "idf."))]
        if bad:
            raise ValueError(f"head_state keys must start with 'head.' or 'idf.', got {bad[:3]}")
        head_tensors = plain_tensors(head_state)

    def write(tmp: Path) -> None:
        (tmp / CONFIG_FILE).write_text(config_text)
        save_file(tensors, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        if head_tensors is not None:
            save_file(head_tensors, str(tmp / HEAD_FILE), metadata={"format": "pt"})

    _write_atomically(out_dir, write)
    return out_dir


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> Encoder:
    """The artifact at `path` as an `Encoder` in eval mode on `device`; bad artifacts are one-line UserErrors."""
    path = Path(path)
    config = read_config(path)
    cfg_file = path / CONFIG_FILE
    try:
        arch = from_dict(ArchConfig, config["architecture"], prefix="architecture.")
    except ConfigError as exc:
        raise UserError(f"{cfg_file}: {exc}") from None
    _check_preprocess(config.get("preprocessing"), f"{cfg_file}: preprocessing")
    file = path / MODEL_FILE
    tensors = _read_tensors(file, device)
    try:
        with torch.device("meta"):  # no init work: every tensor comes from the file
            backbone = build_backbone(arch)
    except ConfigError as exc:
        raise UserError(f"{cfg_file}: {exc}") from None
    _check_weights(file, _shapes(backbone), tensors)
    backbone.load_state_dict(tensors, assign=True)
    if any(t.is_meta for t in backbone.buffers()):  # a non-persistent buffer: build for real instead
        backbone = build_backbone(arch)
        backbone.load_state_dict(tensors)
    return Encoder(backbone, arch, config, path).to(device).eval()


def read_config(path: str | Path) -> dict[str, Any]:
    """The parsed config.json of the artifact at `path`, checked for `format: superclass-encoder` and version."""
    path = Path(path)
    if not path.is_dir():
        if path.exists():
            raise UserError(f"encoder artifact {path}: not a directory")
        old = sorted(path.parent.glob(f".{path.name}.old-*"))
        hint = f" (an interrupted save left the previous artifact at {old[-1]})" if old else ""
        raise UserError(f"encoder artifact {path}: does not exist{hint}")
    cfg_file = path / CONFIG_FILE
    config = read_json_file(cfg_file, f"{cfg_file}: missing (is {path} an encoder artifact directory?)")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        got = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise UserError(f"{cfg_file}: expected format '{FORMAT}', got {got!r}")
    version = config.get("version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise UserError(f"{cfg_file}: unsupported version {version!r} (this toolkit reads 1..{VERSION})")
    if not isinstance(config.get("architecture"), dict):
        raise UserError(f"{cfg_file}: missing the 'architecture' mapping")
    return config


# ----------------------------------------------------------------------------------------------- helpers


def _check_preprocess(pre: Any, where: str) -> dict[str, Any]:
    """A validated copy of the preprocessing dict (interpolation defaults to bicubic)."""
    if not isinstance(pre, dict):
        raise UserError(f"{where}: expected a mapping with mean, std, resize, crop, interpolation")
    pre = {"interpolation": "bicubic", **pre}
    missing = [k for k in ("mean", "std", "resize", "crop") if k not in pre]
    if missing:
        raise UserError(f"{where}: missing {missing}")
    for key in ("mean", "std"):
        value = pre[key]
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 3
            or not all(isinstance(x, (int, float)) for x in value)
        ):
            raise UserError(f"{where}.{key}: expected 3 numbers, got {value!r}")
        pre[key] = [float(x) for x in value]
    for key in ("resize", "crop"):
        if isinstance(pre[key], bool) or not isinstance(pre[key], int) or pre[key] <= 0:
            raise UserError(f"{where}.{key}: expected a positive integer, got {pre[key]!r}")
    known = [m.value for m in InterpolationMode]
    if pre["interpolation"] not in known:
        raise UserError(f"{where}.interpolation: expected one of {known}, got {pre['interpolation']!r}")
    return pre


def _json_default(obj: Any) -> Any:
    """JSON for recipe dataclasses and paths inside provenance; anything else is a bug in the caller."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_dict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"provenance value of type {type(obj).__name__} is not JSON-serialisable")


def _unwrap(module: nn.Module) -> nn.Module:
    """The plain module under DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), nn.Module):
            module = module._orig_mod
        else:
            return module


def _plain_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return plain_tensors(_unwrap(module).state_dict())


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _check_weights(file: Path, expected: dict[str, tuple[int, ...]], tensors: dict[str, torch.Tensor]) -> None:
    """A one-line UserError naming `file` when the keys or shapes differ from the architecture's."""
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [
        f"{k} {tuple(tensors[k].shape)} (expected {s})"
        for k, s in expected.items()
        if k in tensors and tuple(tensors[k].shape) != s
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{label} {', '.join(items[:3])}{more}")
    if problems:
        raise UserError(f"{file}: weights do not match the architecture in {CONFIG_FILE}: {'; '.join(problems)}")


def _read_tensors(file: Path, device: str | torch.device) -> dict[str, torch.Tensor]:
    if not file.is_file():
        raise UserError(f"{file}: missing")
    try:
        return load_file(str(file), device=str(device))
    except (safetensors.SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{file}: not a readable safetensors file ({exc})") from None


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Swap a freshly written artifact in place of `target`, refusing to replace a non-artifact directory."""
    if Path(target).exists() and not _is_replaceable(Path(target)):
        raise UserError(f"{Path(target).absolute()}: exists and is not an encoder artifact; refusing to replace it")
    write_dir_atomically(target, write)


def _is_replaceable(target: Path) -> bool:
    """An empty directory or a previous artifact (so a typo cannot wipe an unrelated directory)."""
    if not target.is_dir():
        return False
    if not any(target.iterdir()):
        return True
    try:
        return json.loads((target / CONFIG_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False

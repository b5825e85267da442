"""What every exporter and importer shares: architecture checks, file reading, shape checks, the guarded write."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pretrain.encoder import CONFIG_FILE, Encoder, load_encoder
from pretrain.models.backbone import build_backbone
from pretrain.models.presets import ArchConfig
from pretrain.runtime.atomic import write_dir_atomically
from pretrain.runtime.checkpoint import read_weights
from pretrain.runtime.errors import ConfigError, UserError
from pretrain.runtime.jsonl import read_json_file

CLIP_ACTS = ("gelu", "quick_gelu")  # the activations OpenCLIP and HF CLIP both name exactly


def load_clip_vit(encoder_dir: str | Path, target: str) -> Encoder:
    """The artifact at `encoder_dir`, checked to be a CLIP-style ViT that `target` (hf | open_clip) can hold."""
    encoder = load_encoder(encoder_dir)
    arch, cfg_file = encoder.arch, Path(encoder_dir) / CONFIG_FILE
    if arch.family != "vit":
        raise UserError(
            f"{cfg_file}: architecture.family is '{arch.family}' ({arch.timm_name}); "
            f"--to {target} needs a CLIP-style ViT (family 'vit'); export CNNs with --to timm"
        )
    if not arch.class_token:
        raise UserError(f"{cfg_file}: architecture.class_token is false; {target} CLIP towers always have one")
    if arch.act not in CLIP_ACTS:
        raise UserError(f"{cfg_file}: architecture.act is '{arch.act}'; {target} needs one of {list(CLIP_ACTS)}")
    return encoder


def write_export(out: str | Path, write: Callable[[Path], None], marker: Callable[[Path], bool]) -> Path:
    """Write the export directory `out` atomically via `write(tmp_dir)`.

    An existing `out` is replaced only when it is empty or `marker(out)` says it is a previous export of the same
    kind, so a typo cannot wipe an unrelated directory (an encoder artifact included).
    """
    out = Path(out)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or marker(out))):
        raise UserError(f"{out.absolute()}: exists and is not a previous export of this kind; refusing to replace it")
    return write_dir_atomically(out, write)


def read_json(file: Path) -> dict[str, Any]:
    """The JSON object in `file`; a missing or malformed file is a one-line UserError naming it."""
    data = read_json_file(file, f"{file}: missing")
    if not isinstance(data, dict):
        raise UserError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch pickle (weights_only; a {"state_dict": ...} wrapper and DDP's
    `module.` prefix are removed)."""
    if not file.is_file():
        raise UserError(f"{file}: missing")
    state = read_weights(file)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{file}: expected a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def make_arch(where: Path | str, **fields: Any) -> ArchConfig:
    """An ArchConfig from converted config fields; an inconsistent one is a UserError naming `where`."""
    try:
        return ArchConfig(family="vit", **fields)
    except ConfigError as exc:
        raise UserError(f"{where}: {exc}") from None


def check_tensors(file: Path, arch: ArchConfig, tensors: dict[str, torch.Tensor], config: str) -> None:
    """A one-line UserError naming `file` when converted tensors miss, add to, or misshape `arch`'s backbone
    (`arch` as read from `config`)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_backbone(arch).state_dict().items()}
    problems = [f"missing {k}" for k in expected if k not in tensors]
    problems += [f"unexpected {k}" for k in tensors if k not in expected]
    problems += [
        f"{k} {tuple(tensors[k].shape)} (expected {s})"
        for k, s in expected.items()
        if k in tensors and tuple(tensors[k].shape) != s
    ]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise UserError(f"{file}: tensors do not match the architecture in {config}: {', '.join(problems[:3])}{more}")


def reject_leftovers(file: Path, leftovers: set[str], hint: str) -> None:
    """A UserError naming `file` when tensors remain that the backbone has no place for (LayerScale, pooler...)."""
    if leftovers:
        names = sorted(leftovers)
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        raise UserError(f"{file}: tensors the artifact cannot represent ({hint}): {', '.join(names[:3])}{more}")


def as_float32(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors in fp32 (hub checkpoints are often fp16; artifacts hold fp32 weights)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}


def missing_tensor(file: Path, exc: KeyError, expected: str) -> UserError:
    """The UserError for a tensor a key mapping needed but `file` lacks."""
    return UserError(f"{file}: missing tensor {exc.args[0]!r} (expected {expected} weights)")


def from_pretrained_complete(cls: Any, source: str | Path, what: str, **kwargs: Any) -> Any:
    """`cls.from_pretrained(source, **kwargs)`, refused in one line when its load report names weights as missing
    or of another shape (transformers initialises those at random and says so only in a log): nothing imported,
    exported or built may save such weights."""
    model, info = cls.from_pretrained(source, output_loading_info=True, **kwargs)
    fresh = sorted(info.get("missing_keys") or []) + sorted(str(m[0]) for m in info.get("mismatched_keys") or [])
    if fresh:
        more = f" and {len(fresh) - 2} more" if len(fresh) > 2 else ""
        raise UserError(
            f"{source}: {len(fresh)} weights of the {what} are not in it and would be newly initialised "
            f"({', '.join(fresh[:2])}{more})"
        )
    return model

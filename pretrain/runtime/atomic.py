"""Crash-safe writes shared by checkpoints and artifacts: build a directory beside the target, then swap it in."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import torch

# `.NAME.tmp-PID-TAG` (a write in progress) and `.NAME.old-PID-TAG` (the previous NAME, moved aside for the swap)
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")


def fsync_path(path: Path) -> None:
    """Flush a file or directory to disk (some filesystems refuse directory fsync; the rename stays atomic)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # e.g. directories on some network filesystems
            os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp_file)` beside `path`, fsync it, then rename it over `path`: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text_atomically(path: str | Path, text: str) -> Path:
    """`path` holds `text` (UTF-8) in full or keeps its old content: `write_file_atomically` for text."""
    return write_file_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_dir_atomically(target: Path, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp_dir)` in a fresh directory beside `target`, fsync it, then swap it in place of `target`.

    A killed or failing write leaves any previous `target` untouched and removes its temporary directory.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = target.parent / f".{target.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        write(tmp)
        for file in tmp.rglob("*"):
            fsync_path(file)
        fsync_path(tmp)
        if target.exists():
            old = target.parent / f".{target.name}.old-{tag}"
            os.replace(target, old)  # a directory cannot be renamed over a non-empty one: move the old aside
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
        fsync_path(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: the process exists but belongs to someone else
        return True
    return True


def remove_stale_temps(root: str | Path) -> list[Path]:
    """Clear what killed atomic writes left anywhere under `root`; returns the paths removed or restored.

    A `.NAME.old-*` whose NAME is missing (killed between the two renames) is moved back to NAME; other temporary
    files and directories are removed, except those of another live process on this host (a write in progress).
    """
    done: list[Path] = []
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            m = _TEMP_NAME.match(name)
            if m is None or (int(m["pid"]) != os.getpid() and _pid_alive(int(m["pid"]))):
                continue
            path, target = Path(folder) / name, Path(folder) / m["target"]
            if m["kind"] == "old" and not os.path.lexists(target):
                os.replace(path, target)
            elif path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            done.append(path)
        dirs[:] = [d for d in dirs if not _TEMP_NAME.match(d)]  # not into what was just cleared
    return done


def plain_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors with no storage shared between them (what safetensors requires)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in state.items():
        tensor = tensor.detach()
        if hasattr(tensor, "full_tensor"):  # a DTensor
            tensor = tensor.full_tensor()
        tensor = tensor.cpu()
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen or not tensor.is_contiguous():
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        if tensor.numel():
            seen.add(tensor.untyped_storage().data_ptr())
        out[name] = tensor
    return out

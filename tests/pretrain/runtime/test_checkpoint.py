import os
import subprocess
import sys

import pytest
import torch

from pretrain.runtime import checkpoint as ckpt
from pretrain.runtime.errors import ConfigError, UserError


def test_save_load_keep_and_latest(tmp_path):
    for step in (1, 2, 3):
        ckpt.save_checkpoint(tmp_path, step, {"w": torch.full((2,), float(step))}, {"step": step}, "a: 1\n", keep=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step_00000002", "step_00000003"]
    latest = ckpt.resolve_resume(tmp_path, "latest")
    model, state = ckpt.load_checkpoint(latest)
    assert state["step"] == 3 and torch.equal(model["w"], torch.full((2,), 3.0))


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path):
    ckpt.save_checkpoint(tmp_path, 5, {"w": torch.ones(2)}, {"step": 5}, "", keep=0)

    def boom(tmp):
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        ckpt.write_dir_atomically(ckpt.step_dir(tmp_path, 5), boom)
    model, state = ckpt.load_checkpoint(ckpt.step_dir(tmp_path, 5))
    assert state["step"] == 5 and torch.equal(model["w"], torch.ones(2))
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_00000005"]


def test_shared_storage_is_saved(tmp_path):
    w = torch.ones(3)
    ckpt.save_checkpoint(tmp_path, 1, {"a": w, "b": w}, {}, "")
    model, _ = ckpt.load_checkpoint(ckpt.step_dir(tmp_path, 1))
    assert torch.equal(model["a"], model["b"])


def test_resume_errors(tmp_path):
    assert ckpt.resolve_resume(tmp_path, "latest") is None
    with pytest.raises(UserError, match="not a checkpoint directory"):
        ckpt.resolve_resume(tmp_path, str(tmp_path / "nope"))


@pytest.mark.parametrize(
    ("name", "content"),
    [("model.safetensors", b"not safetensors"), ("train_state.pt", b"not a pickle"), ("train_state.pt", b"")],
)
def test_corrupt_checkpoint_files_are_one_line_errors(tmp_path, name, content):
    path = ckpt.save_checkpoint(tmp_path, 1, {"w": torch.ones(2)}, {"step": 1}, "")
    (path / name).write_bytes(content)
    with pytest.raises(UserError, match=f"{name}: not a readable weights file") as info:
        ckpt.load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_match_model_state_names_the_first_difference_and_upgrades_0dim_scalars(tmp_path):
    expected = {"a": torch.Size([2]), "logit_scale": torch.Size([1])}
    old = {"a": torch.ones(2), "logit_scale": torch.tensor(2.5)}  # a checkpoint from before FSDP2 support
    upgraded = ckpt.match_model_state(tmp_path, old, expected)
    assert upgraded["logit_scale"].shape == (1,) and upgraded["logit_scale"].item() == 2.5
    with pytest.raises(ConfigError, match=r"does not match the model: a is \(3,\) there, \(2,\) in the model"):
        ckpt.match_model_state(tmp_path, {**old, "a": torch.ones(3)}, expected)
    with pytest.raises(ConfigError, match="unexpected tensor b"):
        ckpt.match_model_state(tmp_path, {**old, "b": torch.ones(1)}, expected)


def dead_pid() -> int:
    """The id of a process that has exited (what a killed run's temp names carry)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temps_of_killed_writes_are_cleared_anywhere_in_the_run_dir(tmp_path):
    dead, tag = dead_pid(), "0a1b2c3d"
    ckpt.save_checkpoint(tmp_path, 4, {"w": torch.ones(2)}, {"step": 4}, "")
    stale = [f".encoder.tmp-{dead}-{tag}", f"checkpoints/.step_00000008.tmp-{dead}-{tag}"]
    for folder in (tmp_path / name for name in stale):  # the encoder refreshed at a checkpoint; the checkpoint
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"x" * 1000)
    stale_file = tmp_path / "features" / f".chunk_00000.safetensors.tmp-{dead}-{tag}"
    stale_file.parent.mkdir()
    stale_file.write_bytes(b"partial")
    (tmp_path / "encoder").mkdir()
    (tmp_path / f".encoder.old-{dead}-{tag}").mkdir()  # swap finished: the old copy is garbage
    (tmp_path / f".captioner.old-{dead}-{tag}").mkdir()  # killed between the renames: the only copy
    (tmp_path / f".captioner.old-{dead}-{tag}" / "config.json").write_text("{}")
    live = tmp_path / f".metrics.jsonl.tmp-{os.getppid()}-{tag}"  # another process's write in progress
    live.write_text("{}")

    ckpt.clean_stale_tmp(tmp_path)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == [
        live.name, "captioner", "captioner/config.json", "checkpoints", "checkpoints/step_00000004",
        "checkpoints/step_00000004/config.yaml", "checkpoints/step_00000004/model.safetensors",
        "checkpoints/step_00000004/train_state.pt", "encoder", "features",
    ]  # fmt: skip

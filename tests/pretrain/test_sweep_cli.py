"""`superclass pretrain sweep` refuses bad invocations in one line before anything trains: --out that is not a
folder, --nproc below 1, a missing --data, --report-only with nothing finished, an unknown key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pretrain.cli import main as pretrain_main


def _error(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert pretrain_main(["sweep", *args]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and not captured.out, err
    return err


@pytest.mark.parametrize("mode", [[], ["--print-commands"], ["--report-only"]])
def test_out_must_be_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture, mode: list[str]) -> None:
    file = tmp_path / "results.txt"
    file.write_text("not a folder")
    assert "--out is a folder" in _error(capsys, "--out", str(tmp_path / "X.json"), *mode)
    assert "--out is a folder" in _error(capsys, "--out", str(file), *mode)
    assert f"{file} is a file" in _error(capsys, "--out", str(file / "sub"), *mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]  # nothing was made


def test_nproc_below_one_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for nproc in ("0", "-2"):
        err = _error(capsys, "--out", str(tmp_path / "s"), "--print-commands", "--nproc", nproc)
        assert f"--nproc {nproc}: expected at least 1" in err


def test_data_is_checked_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "s"
    assert "--data /no/such/dir: does not exist" in _error(capsys, "--out", str(out), "--data", "/no/such/dir")
    assert "--data /no/such/dir: does not exist" in _error(capsys, "--out", str(out), "--data", "/no/such/dir",
                                                         "--report-only")  # fmt: skip
    (tmp_path / "labelled" / "train").mkdir(parents=True)
    (tmp_path / "labelled" / "val").mkdir()
    assert "no test/ split" in _error(capsys, "--out", str(out), "--data", str(tmp_path / "labelled"))
    assert not (out / "runs").exists()  # nothing trained


def test_report_only_with_no_finished_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    err = _error(capsys, "--out", str(tmp_path / "s"), "--report-only")
    assert "none of the 18 runs" in err and "without --report-only" in err
    assert not (tmp_path / "s" / "sweep.md").exists()


@pytest.mark.parametrize("args", [["nosuchkey=1"], ["demo_fair", "nosuchkey=1"]])
def test_an_unknown_key_lists_the_sweep_keys_and_the_recipe_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str]
) -> None:
    err = _error(capsys, *args, "--out", str(tmp_path), "--print-commands")
    assert "unknown key 'nosuchkey'" in err and "sweep keys: arms," in err and "seeds" in err
    assert "recipe keys, laid over every run: data, idf" in err


def test_a_spec_key_in_the_name_place_sets_the_default_sweep(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert pretrain_main(["sweep", "seeds=[3]", "--out", str(tmp_path), "--print-commands"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * 3 and all("seed_3" in line for line in lines)  # demo_fair: 2 arms x 3 lrs

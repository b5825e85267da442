"""`superclass eval suite`: every benchmark of a suite from one data root; missing ones reported, each resumable."""

import json
import shutil
from pathlib import Path

import pytest
from llava_fixtures import build_tiny_llava

from eval.cli import main
from eval.vlm.registry import SUITES, benchmarks
from eval.vlm.subset import fixed_subset
from eval.vlm.synthetic_benchmarks import write_synthetic_mmbench, write_synthetic_textvqa


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite") / "data"
    write_synthetic_textvqa(root / "textvqa", num_images=3, seed=5)
    write_synthetic_mmbench(root / "mmbench" / "mmbench_dev_20230712.tsv", num_images=4, seed=5)
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_llava(tmp_path_factory.mktemp("suite_model") / "llava")


def _suite(model, root, out, *extra):
    return ["suite", "--model", str(model), "--data-root", str(root), "--out", str(out), "--device", "cpu",
            "--no-progress", *extra]  # fmt: skip


def test_suite_runs_what_is_there_and_reports_the_rest_missing(model, root, tmp_path, capsys):
    out = tmp_path / "suite"
    assert main(_suite(model, root, out)) == 0
    report = json.loads((out / "suite.json").read_text())
    rows = {r["benchmark"]: r for r in report["rows"]}
    assert list(rows) == list(SUITES["llava15"])
    assert rows["vqav2"]["status"].startswith("missing") and "vqav2/" in rows["vqav2"]["status"]
    for name in ("textvqa", "mmbench"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert rows[name]["status"] == "scored" and rows[name]["ours"] == metrics["accuracy"], rows[name]
    assert rows["mmbench"]["SuperClass (Table 11)"] == 63.14 and rows["textvqa"]["LLaVA-1.5-7B"] == 58.2
    table = (out / "suite.md").read_text()
    assert any(line.startswith("| mmbench ") and "63.14" in line for line in table.splitlines())
    # a rerun resumes every benchmark: nothing is generated again
    assert main(_suite(model, root, out)) == 0
    generation = json.loads((out / "mmbench" / "metrics.json").read_text())["generation"]
    assert generation["answered"] == 0 and generation["resumed"] > 0


def test_a_bad_file_fails_its_benchmark_only(model, root, tmp_path, capsys):
    bad = tmp_path / "data"
    shutil.copytree(root, bad)
    (bad / "mmbench" / "mmbench_dev_20230712.tsv").write_text("not\ta\tbenchmark\n")
    out = tmp_path / "suite"
    assert main(_suite(model, bad, out, "--only", "textvqa", "mmbench", "--limit", "5")) == 1
    rows = {r["benchmark"]: r for r in json.loads((out / "suite.json").read_text())["rows"]}
    assert list(rows) == ["textvqa", "mmbench"] and rows["mmbench"]["status"].startswith("failed: ")
    assert rows["textvqa"]["status"] == "scored" and rows["textvqa"]["questions"] == 5
    assert main(_suite(model, bad, out, "--only", "nope")) == 2
    assert "not in suite" in capsys.readouterr().err


def test_every_registered_benchmark_is_in_a_suite_with_its_files_described():
    known = benchmarks()
    assert set(SUITES["llava15"]) | set(SUITES["llava_next"]) == set(known)
    assert {"chartqa", "docvqa", "ai2d", "ocrbench"} <= set(SUITES["llava_next"])
    for cls in known.values():
        assert cls.folder and cls.files and cls.description, cls.name
        assert cls.suite_config(Path("/nonexistent")) is None, cls.name  # no files: reported missing


def test_fixed_subset_is_seeded_stratified_and_in_order():
    items = [("a", i) for i in range(60)] + [("b", i) for i in range(30)] + [("c", i) for i in range(10)]
    subset = fixed_subset(items, 10, key=lambda x: x[0])
    assert subset == fixed_subset(items, 10, key=lambda x: x[0]) and subset == sorted(subset, key=items.index)
    assert [sum(1 for k, _ in subset if k == c) for c in "abc"] == [5, 3, 2]  # one each, the rest by share
    assert fixed_subset(items, None) == items and fixed_subset(items, 500) == items
    assert len(fixed_subset(items, 7)) == 7 and fixed_subset(items, 7) != items[:7]

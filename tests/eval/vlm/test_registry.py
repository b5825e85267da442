"""One registry: a benchmark defined in one file outside the package (example_benchmark.py, README "Adding a
benchmark") is found by `superclass eval <name> score`, by `eval run NAME` and by a suite, with no other edit."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from llava_fixtures import build_tiny_llava, synthetic_image

from eval.cli import main
from eval.vlm.registry import SUITES, benchmarks, suite_members
from pretrain.runtime import evaluators

EXAMPLE = Path(__file__).with_name("example_benchmark.py")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("example_benchmark", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["example_benchmark"] = module  # as an import would (its dataclasses look their module up)
    spec.loader.exec_module(module)  # registers exact_match_example
    yield module.ExactMatchExample
    evaluators._REGISTRY.pop(module.ExactMatchExample.name)  # leave the registry as the other tests expect it
    del sys.modules["example_benchmark"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    folder = root / "exact_match_example"
    folder.mkdir()
    rows = [{"id": i, "image": f"{i}.png", "question": "What colour?", "answer": "red" if i % 2 else "blue"}
            for i in range(4)]  # fmt: skip
    for row in rows:
        synthetic_image(row["id"]).save(folder / row["image"])
    (folder / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_found_by_the_cli_eval_run_and_a_suite(example, root, tmp_path, capsys):
    assert benchmarks()["exact_match_example"] is example and suite_members("examples") == ["exact_match_example"]
    assert "examples" not in SUITES  # it joined through its own `suites` attribute
    questions = root / "exact_match_example" / "questions.jsonl"
    preds = tmp_path / "p.jsonl"
    preds.write_text(
        "".join(json.dumps({"question_id": i, "answer": a}) + "\n" for i, a in enumerate("BLUE red x red".split()))
    )
    assert main(["exact_match_example", "score", "--questions", str(questions), "--predictions", str(preds),
                 "--out", str(tmp_path / "s")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["accuracy"] == 75.0  # case-insensitive; id 2 wrong
    model = build_tiny_llava(tmp_path / "llava")
    run = ["run", "exact_match_example", "--model", str(model), "--out", str(tmp_path / "r")]
    assert main([*run, f"questions={questions}", "device=cpu", "max_new_tokens=3"]) == 0
    assert len((tmp_path / "r" / "predictions.jsonl").read_text().splitlines()) == 4
    suite = [
        "suite",
        "--suite",
        "examples",
        "--model",
        str(model),
        "--data-root",
        str(root),
        "--out",
        str(tmp_path / "u"),
    ]
    assert main([*suite, "--device", "cpu", "--no-progress", "--max-new-tokens", "3"]) == 0
    row = json.loads((tmp_path / "u" / "suite.json").read_text())["rows"][0]
    assert row["benchmark"] == "exact_match_example" and row["status"] == "scored" and row["questions"] == 4
    capsys.readouterr()
    assert main(["evaluators"]) == 0 and "exact_match_example" in capsys.readouterr().out


def test_suite_refuses_a_root_holding_none_of_its_benchmarks(example, tmp_path, capsys):
    empty = tmp_path / "nothing"
    empty.mkdir()
    cmd = ["suite", "--suite", "examples", "--model", "m", "--data-root", str(empty), "--out", str(tmp_path / "o")]
    assert main(cmd) == 2
    err = capsys.readouterr().err.strip()
    assert "holds none of the suite's benchmarks" in err and "exact_match_example/" in err
    for bad in ("0", "-5"):
        assert main([*cmd, "--limit", bad]) == 2 and "positive integer" in capsys.readouterr().err
    assert main([*cmd[:-1], str(tmp_path / "suite.json")]) == 2 and "--out is a folder" in capsys.readouterr().err

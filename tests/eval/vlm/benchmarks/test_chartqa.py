"""ChartQA: the authors' files and lmms-lab's parquet as distributed, scored through `superclass eval chartqa score`
against hand-computed relaxed accuracy under both rules, the input policy, a broken file, the suite layout and `run`."""

import io
import json
from pathlib import Path

import pytest
from llava_fixtures import synthetic_image

from eval.cli import main
from eval.vlm.registry import benchmarks

HUMAN = [("100", "How many?"), ("Yes", "Is it rising?"), ("12%", "What share?")]  # (label, query)
AUGMENTED = [("0", "Lowest value?"), ("Italy", "Which country?")]


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    synthetic_image(i).save(buf, format="PNG")
    return buf.getvalue()


def write_chartqa(root: Path) -> Path:
    """The authors' "ChartQA Dataset/test/": test_human.json, test_augmented.json ({imgname, query, label}), png/."""
    test = root / "ChartQA Dataset" / "test"
    (test / "png").mkdir(parents=True)
    for name, rows, start in (("test_human.json", HUMAN, 0), ("test_augmented.json", AUGMENTED, 3)):
        items = [{"imgname": f"{start + i}.png", "query": q, "label": a} for i, (a, q) in enumerate(rows)]
        (test / name).write_text(json.dumps(items))
    for i in range(5):
        (test / "png" / f"{i}.png").write_bytes(_png(i))
    return test


def write_parquet(folder: Path) -> Path:
    """lmms-lab/ChartQA's test split: type, question, answer, image {bytes, path}, human rows first."""
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    typed = [("human_test", r) for r in HUMAN] + [("augmented_test", r) for r in AUGMENTED]
    rows = [{"type": t, "question": q, "answer": a, "image": {"bytes": _png(i), "path": f"{i}.png"}}
            for i, (t, (a, q)) in enumerate(typed)]  # fmt: skip
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "test-00000-of-00001.parquet")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root, hub = (tmp_path_factory.mktemp(name) / "chartqa" for name in ("official", "hub"))
    return {"root": root, "test": write_chartqa(root), "hub": hub, "parquet": write_parquet(hub / "data")}


def _predictions(path: Path) -> Path:
    """Ids by position, human first: 104.9 is within 5% of 100; " yes" is wrong unless stripped; 0.12 is 12%; "0.0"
    is not "0" (a zero target needs equality); id 4 is null (missing); id 0 answered twice (the last kept)."""
    rows = [{"question_id": 0, "answer": "50"}, {"question_id": 0, "answer": "104.9"},
            {"question_id": 1, "answer": " yes"}, {"question_id": 2, "answer": "0.12"},
            {"question_id": 3, "answer": "0.0"}, {"question_id": 4, "answer": None}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    return path


def _score(tmp_path: Path, files: list[str], predictions: Path, *extra: str) -> dict:
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    assert main(["chartqa", "score", *files, "--predictions", str(predictions), "--out", str(out), *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_relaxed_accuracy_both_rules_and_the_input_policy(data, tmp_path, capsys):
    preds = _predictions(tmp_path / "p.jsonl")
    m = _score(tmp_path, ["--annotation-dir", str(data["test"])], preds)
    assert (m["relaxed_accuracy"], m["human"], m["augmented"], m["split_mean"]) == (40.0, 66.67, 0.0, 33.33)
    assert m["input"] == {"malformed_rows": 1, "duplicate_ids": 1, "null_answers": 1, "empty_answers": 0,
                          "unknown_ids": 0, "missing_predictions": 1, "unannotated": 0}  # fmt: skip
    err = capsys.readouterr().err
    assert "1 malformed rows skipped" in err and "1 null answers" in err and "p.jsonl" in err
    lmms = _score(tmp_path, ["--annotation-dir", str(data["test"])], preds, "--rule", "lmms_eval")
    assert (lmms["relaxed_accuracy"], lmms["human"], lmms["split_mean"]) == (60.0, 100.0, 50.0)  # " yes" stripped
    assert lmms["rule"] == "lmms_eval"
    parquet = _score(tmp_path, ["--parquet", str(data["parquet"])], preds)  # the same ids
    assert (parquet["relaxed_accuracy"], parquet["question_format"], parquet["split"]) == (40.0, "parquet", "test")


def test_lmms_eval_samples_by_doc_id_score_against_both_formats(data, tmp_path):
    samples = [{"doc_id": d, "filtered_resps": a, "target": "x", "input": "q"}
               for d, a in enumerate(["104.9", "Yes", "12", "0", "italy"])]  # fmt: skip
    log = tmp_path / "20250101_samples_chartqa.jsonl"
    log.write_text("".join(json.dumps(s) + "\n" for s in samples))
    for files in (["--annotation-dir", str(data["test"])], ["--parquet", str(data["parquet"])]):
        m = _score(tmp_path, files, log)
        assert (m["relaxed_accuracy"], m["human"], m["augmented"]) == (80.0, 66.67, 100.0)  # "12" is not 12%


def test_a_broken_file_is_refused_in_one_line_and_a_row_without_label_is_unannotated(data, tmp_path, capsys):
    test = tmp_path / "test"
    test.mkdir()
    human = json.loads((data["test"] / "test_human.json").read_text())
    (test / "test_augmented.json").write_text((data["test"] / "test_augmented.json").read_text())
    (test / "test_human.json").write_text(json.dumps([human[0], {"imgname": "1.png", "label": "Yes"}]))
    cmd = ["chartqa", "score", "--annotation-dir", str(test), "--predictions", str(_predictions(tmp_path / "p.jsonl"))]
    assert main([*cmd, "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "test_human.json: row 1 is not {imgname, query, label}" in err and len(err.splitlines()) == 1
    (test / "test_human.json").write_text(json.dumps([human[0], {"imgname": "1.png", "query": "Q?"}]))
    m = _score(tmp_path, ["--annotation-dir", str(test)], tmp_path / "p.jsonl")
    assert m["input"]["unannotated"] == 1 and m["questions"] == 3 and m["relaxed_accuracy"] == round(100 / 3, 2)
    assert "1 of 4 questions have no gold answer" in capsys.readouterr().err


def test_suite_layouts(data, tmp_path):
    cls = benchmarks()["chartqa"]
    assert (cls.folder, cls.headline, cls.published, cls.rules) == ("chartqa", "relaxed_accuracy", {},
                                                                    ("official", "lmms_eval"))  # fmt: skip
    test = str(data["test"])
    assert cls.suite_config(data["root"]) == {"annotation_dir": test, "image_root": test + "/png"}
    assert cls.suite_config(data["hub"]) == {"parquet": str(data["parquet"]), "split": "test"}  # the hub snapshot
    assert cls.suite_config(tmp_path) is None


def test_run_writes_and_scores_predictions(data, tmp_path):
    from llava_fixtures import build_tiny_llava

    model, out = build_tiny_llava(tmp_path / "llava"), tmp_path / "run"
    args = ["chartqa", "run", "--model", str(model), "--annotation-dir", str(data["test"]), "--out", str(out),
            "--device", "cpu", "--no-progress", "--batch-size", "5", "--max-new-tokens", "3"]  # fmt: skip
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["question_id"] for r in rows) == [0, 1, 2, 3, 4] and all(isinstance(r["answer"], str) for r in rows)
    m = json.loads((out / "metrics.json").read_text())
    assert m["coverage"]["missing"] == 0 and m["prompt"] == "lmms_eval" and m["max_new_tokens"] == 3
    rescored = _score(tmp_path, ["--parquet", str(data["parquet"])], out / "predictions.jsonl")
    assert rescored["relaxed_accuracy"] == m["relaxed_accuracy"] is not None

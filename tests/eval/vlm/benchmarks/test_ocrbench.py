"""OCRBench: the authors' OCRBench.json and echo840's parquet as distributed, scored through `superclass eval ocrbench
score` against hand-computed points under both rules, a broken file, the prompts, the suite layout and `run`."""

import io
import json
from pathlib import Path

import pytest
from llava_fixtures import synthetic_image

from eval.cli import main
from eval.vlm.benchmarks.ocrbench import OCRBench
from eval.vlm.registry import benchmarks

HME = "Handwritten Mathematical Expression Recognition"
# (dataset_name, source id (repeats), answers, type, our prediction)
ROWS = [
    ("IIIT5K", 2843, "CENTRE", "Regular Text Recognition", "The word is centre."),  # contained, case folded
    ("svt", 2843, ["HOTEL", "hotels"], "Irregular Text Recognition", "HOTEL\n"),
    ("HME100k", 7, "x^{2}+1", HME, "x ^ { 2 } + 1"),  # HME100k: spaces removed, case kept
    ("docVQA", 9, ["abc"], "Doc-oriented VQA", "ＡＢＣ"),  # full width: right only under lmms-eval's folding
    ("FUNSD", 3, ["John"], "Key Information Extraction", None),  # no prediction
]


def _png(i: int) -> bytes:
    buf = io.BytesIO()
    synthetic_image(i).save(buf, format="PNG")
    return buf.getvalue()


def _row(i: int, dataset: str, sid: int, answers, kind: str) -> dict:
    return {"dataset_name": dataset, "id": sid, "image_path": f"{dataset}/test/{i}.png",
            "question": " what is written in the image? ", "answers": answers, "type": kind}  # fmt: skip


def write_ocrbench(root: Path) -> Path:
    """MultimodalOCR's OCRBench.json (a list of {dataset_name, id, image_path, question, answers, type}) and
    OCRBench_Images/<image_path>."""
    rows = [_row(i, *r[:4]) for i, r in enumerate(ROWS)]
    for row in rows:
        image = root / "OCRBench_Images" / row["image_path"]
        image.parent.mkdir(parents=True, exist_ok=True)
        image.write_bytes(_png(len(row["image_path"])))
    (root / "OCRBench.json").write_text(json.dumps(rows, ensure_ascii=False))
    return root / "OCRBench.json"


def write_parquet(folder: Path) -> Path:
    """echo840/OCRBench's test split: dataset, question, question_type, answer (a list), image; OCRBench.json order."""
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    rows = [{"dataset": d, "question": "what is written?", "question_type": t,
             "answer": [a] if isinstance(a, str) else a, "image": {"bytes": _png(i), "path": None}}
            for i, (d, _, a, t, _) in enumerate(ROWS)]  # fmt: skip
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "test-00000-of-00001.parquet")
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root, hub = (tmp_path_factory.mktemp(name) / "ocrbench" for name in ("authors", "hub"))
    return {"root": root, "json": write_ocrbench(root), "hub": hub, "parquet": write_parquet(hub / "data")}


def _score(tmp_path: Path, files: list[str], rows: list[dict], *extra: str) -> dict:
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    predictions = out.with_suffix(".jsonl")
    predictions.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert main(["ocrbench", "score", *files, "--predictions", str(predictions), "--out", str(out), *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


OURS = [{"question_id": i, "answer": r[4]} for i, r in enumerate(ROWS) if r[4] is not None]


def test_points_both_rules_and_both_formats(data, tmp_path):
    m = _score(tmp_path, ["--questions", str(data["json"])], OURS)
    assert (m["final_score"], m["text_recognition"], m["accuracy"], m["missing_predictions"]) == (3, 2, 60.0, 1)
    assert m["by_type"][HME] == 1 and m["by_type"]["Doc-oriented VQA"] == 0 and sum(m["by_type"].values()) == 3
    assert m["by_dataset"]["svt"] == {"correct": 1, "questions": 1} and m["prompt"] == "lmms_eval"
    lmms = _score(tmp_path, ["--questions", str(data["json"])], OURS, "--rule", "lmms_eval")
    assert (lmms["final_score"], lmms["by_type"]["Doc-oriented VQA"]) == (4, 1)
    assert _score(tmp_path, ["--parquet", str(data["parquet"])], OURS)["final_score"] == 3  # the same ids
    # lmms-eval's samples name rows by doc_id, which is the position in OCRBench.json too
    samples = [{"doc_id": r["question_id"], "filtered_resps": r["answer"], "target": "x"} for r in OURS]
    for files in (["--questions", str(data["json"])], ["--parquet", str(data["parquet"])]):
        assert _score(tmp_path, files, samples, "--rule", "lmms_eval")["final_score"] == 4


def test_prompts_and_suite_layouts(data, tmp_path):
    item = OCRBench.of(images=False, questions=str(data["json"])).questions[0]
    assert OCRBench.of(questions=str(data["json"])).prompt(item) == "what is written in the image?"
    llava = OCRBench.of(questions=str(data["json"]), prompt="llava15").prompt(item)
    assert llava == " what is written in the image? \nAnswer the question using a single word or phrase."
    cls = benchmarks()["ocrbench"]
    assert (cls.folder, cls.headline, cls.published, cls.max_new_tokens) == ("ocrbench", "final_score", {}, 128)
    images = str(data["root"] / "OCRBench_Images")
    assert cls.suite_config(data["root"]) == {"questions": str(data["json"]), "image_root": images}
    assert cls.suite_config(data["hub"]) == {"parquet": str(data["parquet"]), "split": "test"}
    assert cls.suite_config(tmp_path) is None


def test_a_broken_file_is_refused_and_a_row_without_answers_is_unannotated(data, tmp_path, capsys):
    rows = json.loads(data["json"].read_text())
    path = tmp_path / "OCRBench.json"
    path.write_text(json.dumps([*rows[:2], {**rows[2], "type": "OCR"}]))
    cmd = ["ocrbench", "score", "--questions", str(path), "--predictions", str(tmp_path / "p"), "--out", str(tmp_path)]
    assert main(cmd) == 2
    err = capsys.readouterr().err.strip()
    assert "OCRBench.json: row 2 is not {dataset_name, image_path, question, answers, type" in err
    assert len(err.splitlines()) == 1
    path.write_text(json.dumps([*rows[:2], {**rows[2], "answers": None}]))
    m = _score(tmp_path, ["--questions", str(path)], OURS[:3])
    assert (m["input"]["unannotated"], m["questions"], m["final_score"]) == (1, 2, 2)
    path.write_text(json.dumps({"rows": rows}))
    assert main(cmd) == 2 and "expected a JSON list" in capsys.readouterr().err


def test_run_writes_and_scores_predictions(data, tmp_path):
    from llava_fixtures import build_tiny_llava

    model, out = build_tiny_llava(tmp_path / "llava"), tmp_path / "run"
    args = ["ocrbench", "run", "--model", str(model), "--questions", str(data["json"]), "--image-root",
            str(data["root"] / "OCRBench_Images"), "--out", str(out), "--device", "cpu", "--no-progress",
            "--max-new-tokens", "3", "--prompt", "llava15"]  # fmt: skip
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["question_id"] for r in rows) == [0, 1, 2, 3, 4]
    m = json.loads((out / "metrics.json").read_text())
    assert m["coverage"]["missing"] == 0 and m["prompt"] == "llava15" and m["max_new_tokens"] == 3
    rescored = _score(tmp_path, ["--questions", str(data["json"])], rows)
    assert rescored["final_score"] == m["final_score"] is not None

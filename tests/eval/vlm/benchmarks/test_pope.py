"""POPE: its answer rule and metrics against hand-worked cases, POPE's and LLaVA's files read (and refused) as they
are distributed, and `superclass eval pope run|score` end to end with a tiny LLaVA."""

import json
from pathlib import Path

import pytest

from eval.cli import main
from eval.vlm.benchmarks.pope import LLAVA_ID_OFFSET, load_pope, load_pope_parquet
from eval.vlm.registry import benchmarks
from eval.vlm.scoring.pope import SPLITS, binary_metrics, pope_answer, score_pope
from vlm.templates import SHORT_ANSWER_PROMPT

OBJECTS = ("dog", "car", "person", "chair", "cup", "bus")


def _write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _image(i: int) -> str:
    return f"COCO_val2014_{i:012d}.jpg"


def write_pope(root: Path, sizes=None) -> dict:
    """LLaVA's playground/data/eval/pope layout: coco/coco_pope_{split}.json (POPE's JSON lines, question_id from
    1), llava_pope_test.jsonl (LLaVA's order and ids: adversarial, random, popular) and val2014/ images."""
    from llava_fixtures import synthetic_image

    sizes = sizes or {"adversarial": 4, "popular": 4, "random": 3}
    labels = {}
    for s, split in enumerate(SPLITS):
        rows = [{"question_id": q + 1, "image": _image(q // 2 + 1), "text": f"Is there a {OBJECTS[(q + s) % 6]} in the "
                 "image?", "label": "yes" if q % 2 == 0 else "no"} for q in range(sizes[split])]  # fmt: skip
        labels[split] = rows
        _write_jsonl(root / "coco" / f"coco_pope_{split}.json", rows)
    llava = [{"question_id": LLAVA_ID_OFFSET[split] + r["question_id"], "image": r["image"],
              "text": f"{r['text']}\n{SHORT_ANSWER_PROMPT}", "category": split}
             for split in ("adversarial", "random", "popular") for r in labels[split]]  # fmt: skip
    _write_jsonl(root / "llava_pope_test.jsonl", llava)
    (root / "val2014").mkdir(parents=True, exist_ok=True)
    for i in range(1, 3):
        synthetic_image(i).save(root / "val2014" / _image(i))
    return {"root": root, "coco": root / "coco", "llava": root / "llava_pope_test.jsonl",
            "images": root / "val2014", "labels": labels}  # fmt: skip


@pytest.fixture(scope="module")
def pope(tmp_path_factory):
    return write_pope(tmp_path_factory.mktemp("pope") / "pope")


def test_answer_rule_as_pope_evaluate_py():
    # the first sentence only, commas dropped, split on single spaces; "No", "not", "no" are the only no-words
    cases = {
        "Yes": "yes", "No": "no", "no.": "no", "No, there is no dog.": "no", "Yes, there is no dog.": "no",
        "There is not a dog in the image.": "no", "Yes. No": "yes", "I see no. Yes": "no", "no,": "no",
        "NO": "yes", "Not at all": "yes", "Nope": "yes", "": "yes", "there is a dog": "yes", "nobody": "yes",
    }  # fmt: skip
    assert {text: pope_answer(text) for text in cases} == cases


def test_binary_metrics_hand_worked():
    m = binary_metrics(tp=1, fp=2, tn=0, fn=1)
    assert m == pytest.approx({"accuracy": 0.25, "precision": 1 / 3, "recall": 0.5, "f1": 0.4, "yes_ratio": 0.75})
    zero = {"accuracy": 0.75, "precision": 0.0, "recall": 0.0, "f1": 0.0, "yes_ratio": 0.0}
    assert binary_metrics(0, 0, 3, 1) == zero  # 0/0 is 0, as lmms-eval's pope_aggregate_* give


def test_scores_per_split_and_mean_f1(pope):
    pset = load_pope(pope["coco"])
    assert [i.id for i in pset.items[:2]] == [1, 2] and pset.items[-1].id == 10_000_003
    preds = {  # labels alternate yes, no, yes, no
        1: "Yes", 2: "There is no dog.", 3: "Yes, there is.", 4: "I do not think so",  # adversarial: all right
        20_000_001: "No", 20_000_002: "Yes", 20_000_003: "yes",  # popular: 20_000_004 missing -> wrong ("yes")
        10_000_001: "NO", 10_000_002: "Not at all", 10_000_003: "no.",  # random: "NO", "Not" are not no-words
    }  # fmt: skip
    m = score_pope(pset.items, preds)
    adv, pop, rnd = (m["per_split"][s] for s in SPLITS)
    assert (adv["accuracy"], adv["f1"], adv["yes_ratio"]) == (100.0, 100.0, 50.0)
    assert (pop["tp"], pop["fp"], pop["tn"], pop["fn"], pop["missing"]) == (1, 2, 0, 1, 1)
    assert (pop["accuracy"], pop["precision"], pop["recall"], pop["f1"], pop["yes_ratio"]) == (25.0, 33.33, 50.0,
                                                                                               40.0, 75.0)  # fmt: skip
    # random (yes, no, yes) read as yes, yes, no: TP, FP, FN
    assert (rnd["accuracy"], rnd["precision"], rnd["recall"], rnd["f1"], rnd["yes_ratio"]) == (33.33, 50.0, 50.0,
                                                                                               50.0, 66.67)  # fmt: skip
    assert m["f1_mean"] == round(100 * (1 + 0.4 + 0.5) / 3, 2) == 63.33
    assert m["accuracy"] == round(100 * 6 / 11, 2) and m["missing_predictions"] == 1 and m["num_questions"] == 11


def test_llava_questions_take_labels_by_split_image_and_question(pope, tmp_path, capsys):
    a, b = load_pope(pope["coco"]), load_pope(pope["coco"], pope["llava"])
    assert b.format == "llava_jsonl" and set(b.counts.values()) == {0}
    assert {i.id: i.label for i in a.items} == {i.id: i.label for i in b.items}  # LLaVA's ids
    assert b.items[0].llava_text.endswith("\n" + SHORT_ANSWER_PROMPT) and b.items[0].question.endswith("image?")
    # another version of a split (POPE's later random file): rows without a label are counted, not mislabelled
    rows = [json.loads(line) for line in pope["llava"].read_text().splitlines()]
    rows[-1]["text"] = "Is there a zebra in the image?\n" + SHORT_ANSWER_PROMPT
    rows[4]["category"] = "unknown"  # the first random row
    c = load_pope(pope["coco"], _write_jsonl(tmp_path / "q.jsonl", rows[::-1]), splits=["popular", "random"])
    assert (c.counts["unannotated"], c.counts["other_splits"], len(c.items)) == (1, 4 + 1, 5)
    assert {i.id: i.label for i in c.items}.items() <= {i.id: i.label for i in a.items}.items()


def test_limit_is_stratified_by_split(pope):
    pset = load_pope(pope["coco"], limit=6)
    assert len(pset.items) == 6 and {i.split for i in pset.items} == set(SPLITS)
    assert [i.id for i in load_pope(pope["coco"], limit=6).items] == [i.id for i in pset.items]


def test_a_label_file_broken_in_part_is_refused_naming_file_and_line(pope, tmp_path, capsys):
    coco = tmp_path / "coco"
    coco.mkdir()
    for split in SPLITS:  # a repeated question_id is counted, and the first kept
        rows = [json.dumps(r) for r in pope["labels"][split]] + [json.dumps({**pope["labels"][split][0]})]
        (coco / f"coco_pope_{split}.json").write_text("\n".join(rows) + "\n")
    pset = load_pope(coco, image_root=pope["images"])
    assert (pset.counts["duplicate_questions"], len(pset.items)) == (3, 11)
    preds = _write_jsonl(tmp_path / "p.jsonl", [{"question_id": 1, "answer": "yes"}])
    score = ["pope", "score", "--annotation-dir", str(coco), "--predictions", str(preds), "--out", str(tmp_path / "o")]
    full = (coco / "coco_pope_random.json").read_text()
    (coco / "coco_pope_random.json").write_text(full[: len(full) // 2 + 9])  # cut mid-line: never scored
    assert main(score) == 2
    err = capsys.readouterr().err.strip()
    assert "coco_pope_random.json" in err and "unreadable" in err and len(err.splitlines()) == 1
    bad = {"question_id": 9, "image": _image(1), "text": "Is there a cat?", "label": "maybe"}
    (coco / "coco_pope_random.json").write_text(full + json.dumps(bad) + "\n")
    assert main(score) == 2
    err = capsys.readouterr().err.strip()
    assert "coco_pope_random.json: line 5" in err and len(err.splitlines()) == 1
    (coco / "coco_pope_random.json").unlink()
    assert main(score) == 2
    err = capsys.readouterr().err.strip()
    assert "coco_pope_random.json" in err and len(err.splitlines()) == 1
    assert main([*score, "--splits", "adversarial", "popular"]) == 0  # the splits present
    assert "7 of 8 questions have no prediction" in capsys.readouterr().err
    (coco / "coco_pope_popular.json").write_text('{"question_id": 1, "image": "x.jpg", "text": "Is there a cat?"}\n')
    assert main([*score, "--splits", "popular"]) == 2
    err = capsys.readouterr().err.strip()
    assert "coco_pope_popular.json" in err and "'label'" in err and len(err.splitlines()) == 1
    run = ["pope", "run", "--model", "m", "--annotation-dir", str(pope["coco"]), "--out", str(tmp_path / "r")]
    assert main(run) == 2 and "--image-root" in capsys.readouterr().err


def test_suite_finds_llava_layout(pope, tmp_path):
    cls = benchmarks()["pope"]
    assert cls.folder == "pope" and cls.headline == "f1_mean" and cls.published["llava15_7b"] == 85.9
    assert cls.suite_config(pope["root"]) == {"annotation_dir": str(pope["coco"]), "image_root": str(pope["images"]),
                                              "llava_questions": str(pope["llava"])}  # fmt: skip
    assert cls.suite_config(tmp_path) is None


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from llava_fixtures import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "llava")


def test_run_then_score_agree_in_every_format(pope, model, tmp_path):
    out = tmp_path / "run"
    args = ["pope", "run", "--model", str(model), "--annotation-dir", str(pope["coco"]), "--llava-questions",
            str(pope["llava"]), "--image-root", str(pope["images"]), "--out", str(out), "--device", "cpu",
            "--no-progress", "--batch-size", "4", "--max-new-tokens", "4"]  # fmt: skip
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_questions"] == 11 and m["coverage"]["missing"] == 0 and m["prompt"] == "llava"
    assert 0 <= m["f1_mean"] <= 100 and set(m["per_split"]) == set(SPLITS)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    keys = ("f1_mean", "accuracy", "per_split", "missing_predictions")
    # our predictions, scored against POPE's files alone (the same ids), and as LLaVA's answer file
    llava_rows = [{"question_id": r["question_id"], "prompt": "q", "text": r["answer"], "answer_id": "x",
                   "model_id": "m", "metadata": {}} for r in rows]  # fmt: skip
    llava = _write_jsonl(tmp_path / "llava_answers.jsonl", llava_rows)
    for name, predictions, extra in (("a", out / "predictions.jsonl", ["--llava-questions", str(pope["llava"])]),
                                     ("b", out / "predictions.jsonl", []), ("c", llava, [])):  # fmt: skip
        cmd = ["pope", "score", "--annotation-dir", str(pope["coco"]), "--predictions", str(predictions)]
        assert main([*cmd, *extra, "--out", str(tmp_path / name)]) == 0
        scored = json.loads((tmp_path / name / "metrics.json").read_text())
        assert {k: scored[k] for k in keys} == {k: m[k] for k in keys}


def write_pope_parquet(folder: Path, pope, name="test-00000-of-00001.parquet", drop=()) -> Path:
    """lmms-lab's POPE layout (lmms_eval/tasks/pope/utils.py reads question_id, question, answer, image): the
    fixture's questions in POPE's split order, string ids from 1 per split, a category column, and one bad row."""
    import io

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from llava_fixtures import synthetic_image

    def png(i: int) -> bytes:
        buf = io.BytesIO()
        synthetic_image(i).save(buf, format="PNG")
        return buf.getvalue()

    rows = [{"id": str(n), "question_id": str(r["question_id"]), "question": r["text"], "answer": r["label"].title(),
             "image_source": r["image"][:-4], "image": {"bytes": png(int(r["image"][-8:-4])), "path": None},
             "category": split} for split in SPLITS for n, r in enumerate(pope["labels"][split])]  # fmt: skip
    rows.insert(2, {**rows[0], "answer": "maybe"})  # malformed: doc_id 2 names no question
    table = pa.Table.from_pylist([{k: v for k, v in row.items() if k not in drop} for row in rows])
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name)
    return folder


def test_lmms_lab_parquet_read_with_llava_ids(pope, tmp_path, capsys):
    from llava_fixtures import synthetic_image

    folder = write_pope_parquet(tmp_path / "POPE", pope)
    pset = load_pope_parquet(folder)
    official = load_pope(pope["coco"])
    assert [i.id for i in pset.items] == [i.id for i in official.items]  # the same ids
    assert [(i.label, i.question) for i in pset.items] == [(i.label, i.question) for i in official.items]
    assert pset.doc_rows[:4] == [1, 2, None, 3] and len(pset.doc_rows) == 12 and pset.format == "parquet"
    assert pset.counts["malformed_questions"] == 1 and pset.counts["missing_images"] == 0
    assert pset.items[0].load_image().size == synthetic_image(1).size
    only = load_pope_parquet(folder, splits=["random"])
    assert [i.id for i in only.items] == [10_000_001, 10_000_002, 10_000_003]
    assert only.counts["other_splits"] == 8 and only.doc_rows.count(None) == 9
    assert len(load_pope_parquet(folder, limit=6).items) == 6
    # a parquet missing a column the task reads: a one-line error
    bad = write_pope_parquet(tmp_path / "bad", pope, drop=("answer",))
    assert main(["pope", "score", "--parquet", str(bad), "--predictions", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing column 'answer'" in err and "\n" not in err


def test_parquet_run_and_lmms_eval_samples_by_doc_id(pope, model, tmp_path):
    folder = write_pope_parquet(tmp_path / "POPE", pope)
    out = tmp_path / "run"
    args = ["pope", "run", "--model", str(model), "--parquet", str(folder), "--out", str(out), "--device", "cpu",
            "--no-progress", "--batch-size", "4", "--max-new-tokens", "4", "--prompt", "lmms_eval"]  # fmt: skip
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_questions"] == 11 and m["coverage"]["missing"] == 0 and m["question_format"] == "parquet"
    assert m["data_counts"]["malformed_questions"] == 1
    rows = {
        r["question_id"]: r["answer"] for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())
    }
    pset = load_pope_parquet(folder)
    # lmms-eval >= 0.4 --log_samples rows: the answer and the row's doc_id only
    samples = [{"doc_id": d, "target": "yes", "filtered_resps": rows[q], "input": "q"}
               for d, q in enumerate(pset.doc_rows) if q is not None]  # fmt: skip
    log = _write_jsonl(tmp_path / "20250101_samples_pope.jsonl", samples)
    keys = ("f1_mean", "accuracy", "per_split", "missing_predictions")
    for name, cmd in (("a", ["--parquet", str(folder)]), ("b", ["--annotation-dir", str(pope["coco"])])):
        predictions = log if name == "a" else out / "predictions.jsonl"  # and ours against POPE's files
        assert main(["pope", "score", *cmd, "--predictions", str(predictions), "--out", str(tmp_path / name)]) == 0
        scored = json.loads((tmp_path / name / "metrics.json").read_text())
        assert {k: scored[k] for k in keys} == {k: m[k] for k in keys}

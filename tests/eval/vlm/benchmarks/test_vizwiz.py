"""VizWiz-VQA: the official annotation JSON and LLaVA's llava_test.jsonl, the VizWiz API accuracy, the EvalAI file, and
the input policy (duplicates, malformed and null answers, unannotated questions, files broken in part)."""

import json
from pathlib import Path

import pytest

from eval.cli import main
from eval.vlm.benchmarks.vizwiz import PROMPT_SUFFIX, VizWiz, load_vizwiz, load_vizwiz_parquet
from eval.vlm.registry import benchmarks
from eval.vlm.scoring.vizwiz import score_vizwiz, vizwiz_accuracy

# (answer_type, the annotators' answers); the first answer is the majority one
ROWS = [("other", ["basil leaves"] * 8 + ["basil"] * 2), ("yes/no", ["yes"] * 3 + ["no"] * 7),
        ("unanswerable", ["unanswerable"] * 10), ("number", ["2"] * 2 + ["two"] * 8),
        ("other", ["Coca Cola"] * 10), ("yes/no", ["no"] * 10)]  # fmt: skip


def _answers(texts: list[str]) -> list[dict]:
    return [{"answer": t, "answer_confidence": "yes"} for t in texts]


def write_vizwiz(root: Path, split: str = "val", n: int = 6) -> dict[str, Path]:
    """`{split}.json` in the official layout (test: image and question only), `{split}/` images, llava JSONL."""
    from llava_fixtures import synthetic_image

    (root / split).mkdir(parents=True)
    doc = []
    for i in range(n):
        image = f"VizWiz_{split}_{i:08d}.jpg"
        synthetic_image(i).save(root / split / image)
        row = {"image": image, "question": f"what is in picture {i}?"}
        if split != "test":
            kind, texts = ROWS[i % len(ROWS)]
            row.update(answers=_answers(texts), answer_type=kind, answerable=int(kind != "unanswerable"))
        doc.append(row)
    (root / f"{split}.json").write_text(json.dumps(doc))
    llava = [{"question_id": i, "image": r["image"], "text": r["question"] + PROMPT_SUFFIX} for i, r in enumerate(doc)]
    (root / f"llava_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in llava))
    return {"annotations": root / f"{split}.json", "images": root / split, "llava": root / f"llava_{split}.jsonl"}


@pytest.fixture(scope="module")
def val(tmp_path_factory):
    return write_vizwiz(tmp_path_factory.mktemp("vizwiz"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from llava_fixtures import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "llava")


def test_vizwiz_accuracy_by_hand():
    # min(1, matches among the other 9 / 3), averaged over the 10 left out: 3 "yes" of 10 -> 3 x 2/3 + 7 x 1 = 9/10
    yes3 = ["yes"] * 3 + ["no"] * 7
    assert vizwiz_accuracy("Yes.", yes3) == pytest.approx(0.9) and vizwiz_accuracy("no", yes3) == 1.0
    assert vizwiz_accuracy("maybe", yes3) == 0.0 and vizwiz_accuracy("", ["unanswerable"] * 10) == 0.0
    assert vizwiz_accuracy("Unanswerable", ["unanswerable"] * 10) == 1.0
    one = ["cat"] + ["dog"] * 9  # one match: each of the 9 subsets that keep it gives 1/3
    assert vizwiz_accuracy("cat", one) == pytest.approx(0.3)
    # official: the prediction is processed ("two" -> "2"), the annotators' answers are not (vqaEval.py)
    two = ["2"] * 2 + ["two"] * 8
    assert vizwiz_accuracy("two", two) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)
    assert vizwiz_accuracy("Coca Cola", ["Coca Cola"] * 10) == 0.0  # lower-cased prediction, raw answers
    # lmms_eval: the EvalAI processor on both sides
    assert vizwiz_accuracy("two", two, "lmms_eval") == 1.0
    assert vizwiz_accuracy("Coca Cola", ["Coca Cola"] * 10, "lmms_eval") == 1.0
    with pytest.raises(ValueError):
        vizwiz_accuracy("a", ["a"], "always")


def test_score_by_hand_per_answer_type(val):
    vset = load_vizwiz(val["annotations"])
    assert vset.split == "val" and [q.id for q in vset.items] == list(range(6)) and set(vset.counts.values()) == {0}
    preds = {0: "Basil leaves.", 1: "yes", 2: "Unanswerable", 3: "two", 4: "coca cola"}  # 5: no prediction
    m = score_vizwiz(vset.items, preds)
    accs = [1.0, 0.9, 1.0, 0.6, 0.0, 0.0]  # 4: "coca cola" is not the raw "Coca Cola"; 5: missing
    assert m["accuracy"] == round(100 * sum(accs) / 6, 2) and m["missing_predictions"] == 1
    assert m["per_answer_type"] == {"number": 60.0, "other": 50.0, "unanswerable": 100.0, "yes/no": 45.0}
    assert "per_question_type" not in m
    assert score_vizwiz(vset.items, {**preds, 5: "No"}, "lmms_eval")["accuracy"] == round(100 * 5.9 / 6, 2)


def test_prompts(val):
    bench = VizWiz.of(annotations=str(val["annotations"]), llava_questions=str(val["llava"]),
                      image_root=str(val["images"]))  # fmt: skip
    vset = bench.question_set
    assert vset.format == "llava_jsonl" and set(vset.counts.values()) == {0} and bench.metrics({}) is not None
    first = json.loads(val["llava"].read_text().splitlines()[0])["text"]
    texts = [bench.prompt(q) for q in bench.questions]
    assert texts[0] == first and first.endswith("respond with 'Unanswerable'.\nAnswer the question using a "
                                                "single word or phrase.")  # fmt: skip
    lmms = VizWiz.of(False, annotations=str(val["annotations"]), prompt="lmms_eval")
    assert lmms.prompt(lmms.questions[0]) == "What is in picture 0?" + PROMPT_SUFFIX  # lmms-eval capitalises
    official = VizWiz.of(annotations=str(val["annotations"]), image_root=str(val["images"]))
    assert [official.prompt(q) for q in official.questions] == texts
    assert bench.questions[0].load_image().size[0] >= 40 and len(official.requests()) == 6


def test_run_then_score_agree(val, model, tmp_path):
    out = tmp_path / "run"
    args = ["vizwiz", "run", "--model", str(model), "--annotations", str(val["annotations"]), "--image-root",
            str(val["images"].parent), "--out", str(out), "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and json.loads((out / "metrics.json").read_text())["scored"]
    # Annotate questions 0-1 with the model's own answer (processed as vqaEval.py does) x10, the rest with "zzz":
    # the rerun generates nothing and scores 2/6; `score` on the predictions file gives the same numbers.
    from eval.vlm.scoring.vqa import evalai_normalize, official_normalize

    answers = {row["question_id"]: row["answer"] for row in rows}
    doc = json.loads(val["annotations"].read_text())
    for i, row in enumerate(doc):
        row["answers"] = _answers([official_normalize(evalai_normalize(answers[i])) if i < 2 else "zzz"] * 10)
    annotations = tmp_path / "val.json"
    annotations.write_text(json.dumps(doc))
    args[args.index(str(val["annotations"]))] = str(annotations)
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["accuracy"] == round(100 * 2 / 6, 2) and m["generation"]["resumed"] == 6 and m["files"] == {}
    scored = tmp_path / "scored"
    assert main(["vizwiz", "score", "--annotations", str(annotations), "--predictions", str(out / "predictions.jsonl"),
                 "--out", str(scored)]) == 0  # fmt: skip
    s = json.loads((scored / "metrics.json").read_text())
    assert (s["accuracy"], s["per_answer_type"]) == (m["accuracy"], m["per_answer_type"])


def test_test_split_writes_the_evalai_submission(tmp_path):
    files = write_vizwiz(tmp_path / "vizwiz", "test", n=3)
    # LLaVA's answer file for llava_test.jsonl (model_vqa_loader rows, ids = the rows of test.json)
    rows = [{"question_id": 0, "prompt": "p", "text": "The Red Ball.", "answer_id": "a", "model_id": "m"},
            {"question_id": 2, "prompt": "p", "text": "Two", "answer_id": "a", "model_id": "m"}]  # fmt: skip
    answers = tmp_path / "llava-v1.5-7b.jsonl"
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for flag in (["--llava-questions", str(files["llava"])], ["--annotations", str(files["annotations"])]):
        out = tmp_path / flag[0].strip("-")
        assert main(["vizwiz", "score", *flag, "--predictions", str(answers), "--out", str(out)]) == 0
        sub = json.loads((out / "submission.json").read_text())
        assert sub == [{"image": "VizWiz_test_00000000.jpg", "answer": "red ball"},
                       {"image": "VizWiz_test_00000001.jpg", "answer": ""},
                       {"image": "VizWiz_test_00000002.jpg", "answer": "2"}]  # fmt: skip
        m = json.loads((out / "metrics.json").read_text())
        assert (m["scored"], m["split"], m["files"]["submission_empty_answers"]) == (False, "test", "1")


def test_limit_and_a_file_broken_in_part_refused_naming_file_and_row(tmp_path, capsys):
    files = write_vizwiz(tmp_path / "vizwiz", n=12)
    # --limit 4 keeps one question of each answer type, the same ones every time
    limited = load_vizwiz(files["annotations"], limit=4)
    assert sorted(q.answer_type for q in limited.items) == ["number", "other", "unanswerable", "yes/no"]
    assert [q.id for q in load_vizwiz(files["annotations"], limit=4).items] == [q.id for q in limited.items]
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"question_id": 1, "answer": "a"}\n')
    out = ["--predictions", str(preds), "--out", str(tmp_path / "o")]
    # A row that is not a question refuses the file in one line naming the file and the row (issue 24: before,
    # such rows were counted as malformed_questions and skipped)
    doc = json.loads(files["annotations"].read_text())
    for bad in ("not a row", {"image": "VizWiz_val_00000099.jpg"}, {**doc[0], "answers": [{"answer": 3}]}):
        files["annotations"].write_text(json.dumps(doc + [bad]))
        assert main(["vizwiz", "score", "--annotations", str(files["annotations"]), *out]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{files['annotations']}: row 12 is not" in err, err
    files["annotations"].write_text(json.dumps(doc))
    text = files["llava"].read_text()
    lines = text.splitlines()
    shapeless = "\n".join(lines[:2] + ['{"question_id": 2, "text": "Where?"}'] + lines[2:])  # no image
    for broken, says in ((text + '{"question_id": 12, "ima', "1 unreadable line"), (shapeless, "line 3 is not")):
        files["llava"].write_text(broken)
        args = ["vizwiz", "score", "--annotations", str(files["annotations"]), "--llava-questions", str(files["llava"])]
        assert main([*args, *out]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(files["llava"]) in err and says in err, err
    bad = tmp_path / "val.json"
    bad.write_text(json.dumps({"annotations": doc}))
    assert main(["vizwiz", "score", "--annotations", str(bad), *out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "not VizWiz's annotation JSON" in err, err
    assert main(["vizwiz", "run", "--annotations", str(files["annotations"]), "--model", "m", "--out", "o"]) == 2
    assert "--image-root" in capsys.readouterr().err


def _score(annotations: Path, preds: list, out: Path, *extra: str) -> dict:
    """`vizwiz score` of prediction rows (dicts, or raw lines as strings); its metrics.json."""
    path = out.parent / f"{out.name}.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in preds))
    assert main(["vizwiz", "score", "--annotations", str(annotations), "--predictions", str(path),
                 "--out", str(out), *extra]) == 0  # fmt: skip
    return json.loads((out / "metrics.json").read_text())


def test_input_policy_on_predictions(val, tmp_path, capsys):
    # right answers: 0 "basil leaves" 1.0, 1 "no" 1.0, 2 "unanswerable" 1.0, 3 "two" 0.6, 4 "Coca Cola" 0.0, 5 "no" 1.0
    right = ["basil leaves", "no", "unanswerable", "two", "Coca Cola", "no"]
    rows = [{"question_id": i, "answer": a} for i, a in enumerate(right)]
    # duplicates keep the LAST answer (vqaEval.py's dict): 0 wrong then right, 1 right then wrong ("maybe": 0)
    rows += [{"question_id": 0, "answer": "pepper"}, {"question_id": 0, "answer": "basil leaves"},
             {"question_id": 1, "answer": "maybe"}]  # fmt: skip
    rows[2] = {"question_id": 2, "answer": None}  # null: counted, and missing (wrong)
    rows += ["{torn", {"question_id": 77, "answer": "yes"}]  # a malformed line; an id of no question
    m = _score(val["annotations"], rows, tmp_path / "a")
    err = capsys.readouterr().err
    assert m["accuracy"] == round(100 * (1 + 0 + 0 + 0.6 + 0 + 1) / 6, 2) and m["missing_predictions"] == 1
    assert m["input"] == {"malformed_rows": 1, "duplicate_ids": 3, "null_answers": 1, "empty_answers": 0,
                          "unknown_ids": 1, "missing_predictions": 1, "unannotated": 0}  # fmt: skip
    assert "1 malformed rows skipped" in err and "3 ids answered more than once" in err and "1 null answers" in err
    assert len(err.strip().splitlines()) == 1 and str(tmp_path / "a.jsonl") in err


def test_val_questions_without_answers_are_counted_unannotated(tmp_path, capsys):
    files = write_vizwiz(tmp_path / "vizwiz")
    doc = json.loads(files["annotations"].read_text())
    del doc[5]["answers"]
    files["annotations"].write_text(json.dumps(doc))
    vset = load_vizwiz(files["annotations"])
    assert len(vset.items) == 6 and vset.counts["unannotated"] == 1
    right = ["basil leaves", "no", "unanswerable", "2", "coca cola", "no"]
    m = _score(files["annotations"], [{"question_id": i, "answer": a} for i, a in enumerate(right)], tmp_path / "o")
    assert (m["num_scored"], m["num_questions"], m["input"]["unannotated"]) == (5, 6, 1)  # not scored, not dropped
    assert m["accuracy"] == round(100 * (1 + 1 + 1 + 0.6 + 0) / 5, 2)  # "coca cola" is not the raw "Coca Cola"
    assert "1 of 6 questions have no gold answer (not scored)" in capsys.readouterr().err
    # a LLaVA line whose image no annotation row has is unannotated too
    first = files["llava"].read_text().splitlines()[0]
    with files["llava"].open("a") as f:  # and a repeated line is counted, the first kept
        f.write('{"question_id": 40, "image": "VizWiz_val_00000040.jpg", "text": "Where?"}\n' + first + "\n")
    both = load_vizwiz(files["annotations"], files["llava"])
    assert (both.counts["unannotated"], both.counts["duplicate_questions"], len(both.items)) == (2, 1, 7)


def test_lmms_eval_rule_by_hand(val, tmp_path):
    # lmms_eval/tasks/vizwiz_vqa/utils.py vizwiz_vqa_process_results: EvalAIAnswerProcessor on the response and on
    # every doc["answers"][i], then mean over i of min(1, matches among the others / 3). By hand on the fixture:
    # 3 "two" -> "2"; all ten answers "2" after processing ("two" -> "2"): 1.0 (official: 0.6, raw "2" x2 only);
    # 4 "coca cola" vs "Coca Cola" x10 -> both "coca cola": 1.0 (official: 0.0); 1 "Yes." -> "yes", 3 of 10: 0.9
    rows = [{"question_id": 1, "answer": "Yes."}, {"question_id": 3, "answer": "two"},
            {"question_id": 4, "answer": "coca cola"}]  # fmt: skip
    m = _score(val["annotations"], rows, tmp_path / "lmms", "--rule", "lmms_eval")
    assert m["accuracy"] == round(100 * (0.9 + 1 + 1) / 6, 2) and m["rule"] == "lmms_eval"
    assert m["per_answer_type"] == {"number": 100.0, "other": 50.0, "unanswerable": 0.0, "yes/no": 45.0}
    official = _score(val["annotations"], rows, tmp_path / "official")
    assert official["accuracy"] == round(100 * (0.9 + 0.6 + 0) / 6, 2) and official["rule"] == "official"


def test_suite_layouts(tmp_path):
    cls = benchmarks()["vizwiz"]
    assert cls.published == {"superclass_table11": 54.33, "llava15_7b": 50.0} and cls.folder == "vizwiz"
    root = tmp_path / "vizwiz"
    val = write_vizwiz(root, "val", n=1)
    assert cls.suite_config(root) == {"annotations": str(val["annotations"]), "image_root": str(val["images"])}
    test = write_vizwiz(root, "test", n=1)  # LLaVA's layout: llava_test.jsonl + test/ (+ test.json) comes first
    assert cls.suite_config(root) == {"llava_questions": str(test["llava"]), "image_root": str(test["images"]),
                                      "annotations": str(test["annotations"])}  # fmt: skip


def write_vizwiz_parquet(files: dict[str, Path], folder: Path, split: str = "val", drop=()) -> Path:
    """lmms-lab's VizWiz-VQA layout (lmms_eval/tasks/vizwiz_vqa/utils.py reads question_id, question, image and
    answers): the official JSON's rows, answers as strings, the answer type as `category`, images as PNG structs,
    and one malformed row (no question)."""
    import io

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from PIL import Image

    rows = []
    for raw in json.loads(files["annotations"].read_text()):
        buf = io.BytesIO()
        Image.open(files["images"] / raw["image"]).save(buf, format="PNG")
        answers = [a["answer"] for a in raw["answers"]] if "answers" in raw else None
        row = {"question_id": raw["image"][:-4], "image": {"bytes": buf.getvalue(), "path": raw["image"]},
               "question": raw["question"], "answers": answers, "category": raw.get("answer_type")}  # fmt: skip
        rows.append({k: v for k, v in row.items() if k not in drop})
    rows.insert(1, {**rows[0], "question": None})
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}-00000-of-00001.parquet")
    return folder


def _fields(vset):
    return [(q.id, q.image_name, q.question, q.answers, q.answer_type) for q in vset.items]


def test_lmms_lab_parquet_gives_the_official_set(val, tmp_path, capsys):
    vset = load_vizwiz_parquet(write_vizwiz_parquet(val, tmp_path / "VizWiz-VQA"))
    official = load_vizwiz(val["annotations"])
    assert _fields(vset) == _fields(official) and (vset.split, vset.format) == ("val", "parquet")
    assert vset.counts == {"malformed_questions": 1, "unannotated": 0, "duplicate_questions": 0, "missing_images": 0}
    assert vset.doc_rows == [0, None, 1, 2, 3, 4, 5] and vset.items[2].load_image().size == (42, 40)
    assert VizWiz.of(False, parquet=str(tmp_path / "VizWiz-VQA")).question_index().doc_rows == vset.doc_rows
    assert [q.id for q in load_vizwiz_parquet(tmp_path / "VizWiz-VQA", limit=3).items] == [
        q.id for q in load_vizwiz(val["annotations"], limit=3).items
    ]
    # test: no answers, the EvalAI submission keyed by the official image names
    test = write_vizwiz(tmp_path / "test", "test", n=3)
    tset = load_vizwiz_parquet(write_vizwiz_parquet(test, tmp_path / "pq", "test"), split="test")
    assert _fields(tset) == _fields(load_vizwiz(test["annotations"])) and not any(q.answers for q in tset.items)
    bad = write_vizwiz_parquet(val, tmp_path / "bad", drop=("question",))
    assert main(["vizwiz", "score", "--parquet", str(bad), "--predictions", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing column 'question'" in err and "\n" not in err


def test_parquet_run_scores_as_the_official_files(val, model, tmp_path):
    folder = write_vizwiz_parquet(val, tmp_path / "VizWiz-VQA")
    out = tmp_path / "run"
    args = ["vizwiz", "run", "--model", str(model), "--parquet", str(folder), "--out", str(out), "--device", "cpu",
            "--no-progress", "--max-new-tokens", "4"]  # fmt: skip
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_questions"] == 6 and m["question_format"] == "parquet" and m["scored"]
    assert m["data_counts"]["malformed_questions"] == 1 and m["coverage"]["missing"] == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["question_id"] for r in rows) == list(range(6))
    scored = tmp_path / "scored"
    assert main(["vizwiz", "score", "--annotations", str(val["annotations"]), "--predictions",
                 str(out / "predictions.jsonl"), "--out", str(scored)]) == 0  # fmt: skip
    s = json.loads((scored / "metrics.json").read_text())
    assert (s["accuracy"], s["per_answer_type"]) == (m["accuracy"], m["per_answer_type"])

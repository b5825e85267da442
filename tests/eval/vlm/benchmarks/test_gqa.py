"""GQA testdev-balanced: the official questions JSON and LLaVA's JSONL, the official exact match, run and score,
and the input policy (duplicates, malformed and null answers, unannotated questions, files broken in part)."""

import json
from pathlib import Path

import pytest

from eval.cli import main
from eval.vlm.benchmarks.gqa import GQA, load_gqa, load_gqa_parquet
from eval.vlm.registry import benchmarks
from eval.vlm.scoring.gqa import convert_prediction, gqa_correct, score_gqa
from vlm.templates import SHORT_ANSWER_PROMPT

# (structural, semantic, answer); "query" is open, every other structural type binary (eval.py)
KINDS = [("verify", "attr", "yes"), ("query", "obj", "cup"), ("choose", "rel", "left"), ("logical", "obj", "no"),
         ("compare", "attr", "yes"), ("query", "cat", "red"), ("query", "rel", "table"),
         ("verify", "global", "no")]  # fmt: skip


def _entry(i: int, structural: str, semantic: str, answer: str, balanced: bool = True) -> dict:
    """One question of testdev_balanced_questions.json, with every field the official file has."""
    return {
        "semantic": [{"operation": "select", "dependencies": [], "argument": "cup (1)"}],
        "entailed": [], "equivalent": [], "question": f"Question {i} about the picture?", "imageId": f"n{1000 + i}",
        "isBalanced": balanced, "groups": {"global": None, "local": f"10q-{semantic}"}, "answer": answer,
        "semanticStr": "select: cup (1)", "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
        "types": {"detailed": f"{semantic}Verify", "semantic": semantic, "structural": structural},
        "fullAnswer": f"The answer is {answer}.",
    }  # fmt: skip


def _qid(i: int) -> str:
    return f"0{2000 + i}" if i % 2 else f"{2000 + i}"  # some ids with a leading zero, as GQA's have


def write_gqa(root: Path, extra: dict | None = None) -> dict[str, Path]:
    """A tiny testdev-balanced set: questions JSON, images/{imageId}.jpg and LLaVA's question JSONL."""
    from llava_fixtures import synthetic_image

    (root / "images").mkdir(parents=True)
    doc = {_qid(i): _entry(i, *kind) for i, kind in enumerate(KINDS)}
    for i, entry in enumerate(doc.values()):
        synthetic_image(i).save(root / "images" / f"{entry['imageId']}.jpg")
    doc.update(extra or {})
    (root / "testdev_balanced_questions.json").write_text(json.dumps(doc))
    balanced = {qid: e for qid, e in doc.items() if isinstance(e, dict) and e.get("isBalanced")}
    rows = [{"question_id": qid, "image": f"{e['imageId']}.jpg", "text": f"{e['question']}\n{SHORT_ANSWER_PROMPT}",
             "category": "default"} for qid, e in balanced.items()]  # fmt: skip
    (root / "llava_gqa_testdev_balanced.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"questions": root / "testdev_balanced_questions.json", "images": root / "images",
            "llava": root / "llava_gqa_testdev_balanced.jsonl"}  # fmt: skip


@pytest.fixture(scope="module")
def gqa(tmp_path_factory):
    return write_gqa(tmp_path_factory.mktemp("gqa"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from llava_fixtures import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "llava")


def test_exact_match_rules():
    # official: LLaVA's converter (rstrip('.') then lower()) and eval.py's `prediction == answer`
    assert gqa_correct("Yes.", "yes") and gqa_correct("no..", "no")
    # no whitespace is stripped (the converter does not): " yes" is wrong, as eval.py scores it (issue 24; before,
    # this project stripped first and counted it right)
    assert not gqa_correct(" Yes \n", "yes") and not gqa_correct(" yes", "yes") and not gqa_correct("yes.\n", "yes")
    assert gqa_correct("T-Shirt", "t-shirt")
    assert not gqa_correct("Yes!", "yes")  # only trailing periods go
    assert not gqa_correct("tshirt", "t-shirt") and not gqa_correct("the cup", "cup") and not gqa_correct("", "no")
    # lmms-eval: case and every string.punctuation character ignored on both sides
    assert gqa_correct("Yes!", "yes", "lmms_eval") and gqa_correct("tshirt", "t-shirt", "lmms_eval")
    assert not gqa_correct("the cup", "cup", "lmms_eval")
    with pytest.raises(ValueError):
        gqa_correct("a", "a", "evalai")


def test_score_by_hand(gqa):
    gset = load_gqa(gqa["questions"])
    assert [q.raw_id for q in gset.items] == [_qid(i) for i in range(8)] and gset.split == "testdev_balanced"
    items = gset.items
    # right: 0 (verify/attr), 1 (query/obj), 4 (compare/attr, "Yes."), 7 (verify/global); wrong: 2, 3, 5 ("Red!"), 6
    answers = {0: "yes", 1: "Cup", 2: "right", 3: "yes", 4: "Yes.", 5: "Red!", 6: "chair", 7: "no"}
    preds = {items[i].id: a for i, a in answers.items()}
    m = score_gqa(items, preds)
    assert m["accuracy"] == 50.0 and m["num_scored"] == 8 and m["missing_predictions"] == 0
    assert (m["binary"], m["open"]) == (60.0, round(100 / 3, 2))  # binary 3/5 (0, 4, 7), open 1/3 (1)
    assert m["per_structural_type"] == {
        "choose": 0.0,
        "compare": 100.0,
        "logical": 0.0,
        "query": 33.33,
        "verify": 100.0,
    }
    assert m["per_semantic_type"] == {"attr": 100.0, "cat": 0.0, "global": 100.0, "obj": 50.0, "rel": 0.0}
    lmms = score_gqa(items, preds, "lmms_eval")
    assert lmms["accuracy"] == 62.5  # "Red!" counts too
    del preds[items[7].id]
    assert score_gqa(items, preds)["accuracy"] == 37.5 and score_gqa(items, preds)["missing_predictions"] == 1


def test_llava_jsonl_prompt_is_verbatim_and_lmms_eval_is_the_same_text(gqa):
    bench = GQA.of(questions=str(gqa["questions"]), llava_questions=str(gqa["llava"]), image_root=str(gqa["images"]))
    gset = bench.question_set
    assert gset.format == "llava_jsonl" and set(gset.counts.values()) == {0}
    assert [q.raw_id for q in gset.items] == [_qid(i) for i in range(8)] and all(q.answer for q in gset.items)
    first = json.loads(gqa["llava"].read_text().splitlines()[0])["text"]
    llava = [bench.prompt(q) for q in bench.questions]
    assert llava[0] == first and bench.questions[0].load_image().size[0] >= 40
    assert len(bench.requests()) == 8 and first in bench.requests()[0].prompt
    lmms = GQA.of(False, questions=str(gqa["questions"]), llava_questions=str(gqa["llava"]), prompt="lmms_eval")
    assert [lmms.prompt(q) for q in lmms.questions] == llava


def test_run_then_score_agree(gqa, model, tmp_path):
    out = tmp_path / "run"
    args = ["gqa", "run", "--model", str(model), "--questions", str(gqa["questions"]), "--llava-questions",
            str(gqa["llava"]), "--image-root", str(gqa["images"].parent), "--out", str(out), "--batch-size", "3",
            "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and m["scored"] and m["num_questions"] == 8 and m["question_format"] == "llava_jsonl"
    official = json.loads((out / "testdev_balanced_predictions.json").read_text())  # eval.py's input
    assert [r["questionId"] for r in official] == [_qid(i) for i in range(8)]
    # Make the gold answer the model's own (converted) answer for questions 0-2: the rerun generates nothing new
    # and scores 3/8; `score` on the predictions file gives the same numbers.
    answers = {row["question_id"]: row["answer"] for row in rows}
    doc = json.loads(gqa["questions"].read_text())
    for i in range(3):
        doc[_qid(i)]["answer"] = convert_prediction(answers[int(_qid(i))])
    for i in range(3, 8):
        doc[_qid(i)]["answer"] = "not an answer"
    questions = tmp_path / "testdev_balanced_questions.json"
    questions.write_text(json.dumps(doc))
    args[args.index(str(gqa["questions"]))] = str(questions)
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["accuracy"] == 37.5 and m["generation"]["resumed"] == 8 and m["generation"]["answered"] == 0
    scored = tmp_path / "scored"
    assert main(["gqa", "score", "--questions", str(questions), "--predictions", str(out / "predictions.jsonl"),
                 "--out", str(scored)]) == 0  # fmt: skip
    s = json.loads((scored / "metrics.json").read_text())
    keys = ("accuracy", "binary", "open", "per_structural_type", "per_semantic_type", "missing_predictions")
    assert {k: s[k] for k in keys} == {k: m[k] for k in keys}


def test_llava_answer_file_and_limit(gqa, tmp_path):
    doc = json.loads(gqa["questions"].read_text())
    # LLaVA's model_vqa_loader rows: string ids, the answer in "text", capitalised with a period
    rows = [{"question_id": qid, "prompt": "...", "text": e["answer"].capitalize() + ".", "answer_id": "x",
             "model_id": "llava-v1.5-7b", "metadata": {}} for qid, e in list(doc.items())[:6]]  # fmt: skip
    answers = tmp_path / "merge.jsonl"
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o"
    assert main(["gqa", "score", "--questions", str(gqa["questions"]), "--predictions", str(answers),
                 "--out", str(out)]) == 0  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    assert (m["accuracy"], m["missing_predictions"], m["predictions"]["format"]) == (75.0, 2, "llava")
    official = json.loads((out / "testdev_balanced_predictions.json").read_text())
    assert official[0] == {"questionId": "2000", "prediction": "yes"} and official[7]["prediction"] == ""
    # --limit 4: one question of each structural type with room (largest remainders), the same every time
    limited = load_gqa(gqa["questions"], limit=4)
    assert len(limited.items) == 4 and len({q.structural for q in limited.items}) == 4
    assert [q.id for q in load_gqa(gqa["questions"], limit=4).items] == [q.id for q in limited.items]


def test_unbalanced_counted_and_a_file_broken_in_part_refused_naming_file_and_line(tmp_path, capsys):
    # "02000" is question 2000 again once ids are normalised (as answer files name it): counted, the first kept
    extra = {"9001": _entry(50, "query", "obj", "cup", balanced=False), "02000": _entry(52, "query", "obj", "cup")}
    files = write_gqa(tmp_path / "gqa", extra)
    gset = load_gqa(files["questions"], image_root=files["images"])
    assert len(gset.items) == 8 and gset.items[0].raw_id == "2000"
    assert gset.counts == {"unbalanced": 1, "unannotated": 0, "duplicate_questions": 1, "missing_images": 0}
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"question_id": 2000, "answer": "yes"}\n')
    out = ["--predictions", str(preds), "--out", str(tmp_path / "o")]
    # An entry that is not a question, or a LLaVA line cut or of another shape, refuses the file in one line naming
    # the file and the entry or line (issue 24: before, these were counted as malformed_questions and skipped).
    doc = json.loads(files["questions"].read_text())
    for bad, says in (("not an object", "question '9003'"), ({"question": "no image?"}, "question '9003'"),
                      ({**_entry(51, "query", "obj", "cup"), "answer": 3}, "question '9003'")):  # fmt: skip
        files["questions"].write_text(json.dumps({**doc, "9003": bad}))
        assert main(["gqa", "score", "--questions", str(files["questions"]), *out]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(files["questions"]) in err and says in err, err
    files["questions"].write_text(json.dumps(doc))
    text = files["llava"].read_text()
    lines = text.splitlines()
    shapeless = "\n".join(lines[:3] + ['{"image": "n1.jpg", "text": "Q?"}'] + lines[3:])  # no question_id
    for broken, says in ((text + '{"question_id": "9999", "ima', "1 unreadable line"), (shapeless, "line 4 is not")):
        files["llava"].write_text(broken)
        args = ["gqa", "score", "--questions", str(files["questions"]), "--llava-questions", str(files["llava"])]
        assert main([*args, *out]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(files["llava"]) in err and says in err, err
    # a list instead of the id -> question object, a missing file, run without images: one line, exit 2
    bad = tmp_path / "testdev_balanced_questions.json"
    bad.write_text(json.dumps([{"question": "q", "imageId": "n1"}]))
    for path, says in ((bad, "not GQA's questions JSON"), (tmp_path / "nope.json", "no such GQA questions JSON")):
        assert main(["gqa", "score", "--questions", str(path), *out]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and says in err, err
    assert main(["gqa", "run", "--questions", str(files["questions"]), "--model", "m", "--out", "o"]) == 2
    assert "--image-root" in capsys.readouterr().err


def _score(files, preds: list, out, *extra: str) -> dict:
    """`gqa score` of prediction rows (dicts, or raw lines as strings) against the fixture; its metrics.json."""
    path = out.parent / f"{out.name}.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in preds))
    assert main(["gqa", "score", "--questions", str(files["questions"]), "--predictions", str(path),
                 "--out", str(out), *extra]) == 0  # fmt: skip
    return json.loads((out / "metrics.json").read_text())


def test_input_policy_on_predictions(gqa, tmp_path, capsys):
    gold = {int(_qid(i)): kind[2] for i, kind in enumerate(KINDS)}
    rows = [{"question_id": q, "answer": a} for q, a in gold.items()]
    # duplicates keep the LAST answer, as eval.py's dict of predictions does: 2000 wrong then right, 2001 the reverse
    rows += [{"question_id": 2000, "answer": "no"}, {"question_id": 2000, "answer": "yes"},
             {"question_id": 2001, "answer": "plate"}]  # fmt: skip
    rows[3] = {"question_id": 2003, "answer": None}  # null: counted, and missing (wrong)
    rows += ["{torn", {"question_id": 77, "answer": "yes"}]  # a malformed line; an id of no question
    m = _score(gqa, rows, tmp_path / "a")
    err = capsys.readouterr().err
    assert m["accuracy"] == 75.0 and m["missing_predictions"] == 1  # 6 of 8: 2001 ("plate") and 2003 (null) wrong
    assert m["input"] == {"malformed_rows": 1, "duplicate_ids": 3, "null_answers": 1, "empty_answers": 0,
                          "unknown_ids": 1, "missing_predictions": 1, "unannotated": 0}  # fmt: skip
    assert "1 malformed rows skipped" in err and "3 ids answered more than once" in err and "1 null answers" in err
    assert len(err.strip().splitlines()) == 1 and str(tmp_path / "a.jsonl") in err
    # " yes" is wrong under the official rule (no strip); strip_answers is the explicit leniency, named in metrics
    spaced = [{"question_id": q, "answer": f" {a}\n"} for q, a in gold.items()]
    assert _score(gqa, spaced, tmp_path / "b")["accuracy"] == 0.0
    lenient = _score(gqa, spaced, tmp_path / "c", "--strip-answers")
    assert lenient["accuracy"] == 100.0 and lenient["leniency"] == {"strip_answers": True}


def test_unannotated_questions_are_counted_and_warned(tmp_path, capsys):
    entry = _entry(60, "query", "obj", "cup")
    del entry["answer"]
    files = write_gqa(tmp_path / "gqa", {"9005": entry})
    gset = load_gqa(files["questions"])
    assert len(gset.items) == 9 and gset.counts["unannotated"] == 1
    rows = [{"question_id": int(_qid(i)), "answer": kind[2]} for i, kind in enumerate(KINDS)]
    m = _score(files, rows + [{"question_id": 9005, "answer": "cup"}], tmp_path / "o")
    assert (m["accuracy"], m["num_scored"], m["num_questions"]) == (100.0, 8, 9)  # not scored, not dropped silently
    assert m["input"]["unannotated"] == 1 and m["data_counts"]["unannotated"] == 1
    assert "1 of 9 questions have no gold answer (not scored)" in capsys.readouterr().err
    # a LLaVA line whose id the questions JSON lacks has no answer either
    with files["llava"].open("a") as f:
        f.write('{"question_id": "9999", "image": "n9.jpg", "text": "Unknown?"}\n')
    assert load_gqa(files["questions"], files["llava"]).counts["unannotated"] == 2


def test_lmms_eval_rule_is_exact_match_ignoring_case_and_punctuation(gqa, tmp_path):
    # lmms_eval/api/metrics.py exact_match_hf_evaluate(ignore_case=True, ignore_punctuation=True), by hand:
    # np.char.lower then translate(string.punctuation -> ""), no strip: "T-Shirt." -> "tshirt" == "tshirt";
    # "Left!" -> "left"; " yes" -> " yes" != "yes"; "No." -> "no"
    assert gqa_correct("T-Shirt.", "t-shirt", "lmms_eval") and gqa_correct("Left!", "left", "lmms_eval")
    assert not gqa_correct(" yes", "yes", "lmms_eval") and not gqa_correct("yes", " yes", "official")
    answers = ["Yes.", "C-U-P", "left!", " no", "yes", "Red", "chair", "NO"]  # wrong: " no", "chair"
    rows = [{"question_id": int(_qid(i)), "answer": a} for i, a in enumerate(answers)]
    m = _score(gqa, rows, tmp_path / "lmms", "--rule", "lmms_eval")
    assert (m["accuracy"], m["rule"]) == (75.0, "lmms_eval") and "ignore_punctuation" in m["answer_rule"]
    official = _score(gqa, rows, tmp_path / "official")
    assert official["accuracy"] == 50.0 and official["rule"] == "official"  # "C-U-P", "left!" wrong too


def test_suite_finds_llava_and_authors_layouts(tmp_path):
    cls = benchmarks()["gqa"]
    assert cls.published == {"superclass_table11": 60.96, "llava15_7b": 62.0} and cls.folder == "gqa"
    files = write_gqa(tmp_path / "gqa")  # the authors' layout: questions JSON and images/ in the folder
    assert cls.suite_config(tmp_path / "gqa") == {"questions": str(files["questions"]),
                                                  "image_root": str(files["images"]),
                                                  "llava_questions": str(files["llava"])}  # fmt: skip
    llava = tmp_path / "llava" / "gqa"  # LLaVA's: the GQA files under data/, its JSONL beside
    (llava / "data").mkdir(parents=True)
    files["questions"].rename(llava / "data" / "testdev_balanced_questions.json")
    files["images"].rename(llava / "data" / "images")
    assert cls.suite_config(tmp_path / "gqa") is None
    files["llava"].rename(llava / "llava_gqa_testdev_balanced.jsonl")
    values = cls.suite_config(llava)
    assert values == {"questions": str(llava / "data" / "testdev_balanced_questions.json"),
                      "image_root": str(llava / "data" / "images"),
                      "llava_questions": str(llava / "llava_gqa_testdev_balanced.jsonl")}  # fmt: skip


def write_gqa_parquet(folder: Path, gqa, drop=()) -> tuple[Path, Path]:
    """lmms-lab's GQA: testdev_balanced_instructions (id, imageId, question, answer, types, isBalanced, ...; one
    malformed row) and testdev_balanced_images (id = imageId, image as PNG bytes), as lmms_eval/tasks/gqa reads them."""
    import io

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from PIL import Image

    doc = json.loads(gqa["questions"].read_text())
    keep = ("imageId", "question", "answer", "fullAnswer", "isBalanced", "types")
    rows = [{"id": qid, **{k: e[k] for k in keep}} for qid, e in doc.items()]
    rows.insert(1, {**rows[0], "id": "999", "question": None})  # malformed: doc_id 1 names no question
    images = []
    for e in doc.values():
        buf = io.BytesIO()
        Image.open(gqa["images"] / f"{e['imageId']}.jpg").save(buf, format="PNG")
        images.append({"id": e["imageId"], "image": {"bytes": buf.getvalue(), "path": None}})
    for name, table in (("instructions", rows), ("images", images)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist([{k: v for k, v in row.items() if k not in drop} for row in table])
        pq.write_table(table, folder / name / "testdev-00000-of-00001.parquet")
    return folder / "instructions", folder / "images"


def test_lmms_lab_parquet_run_and_lmms_eval_samples_by_doc_id(gqa, model, tmp_path, capsys):
    instructions, images = write_gqa_parquet(tmp_path / "GQA", gqa)
    gset, official = load_gqa_parquet(instructions, images), load_gqa(gqa["questions"])
    assert [q.id for q in gset.items] == [q.id for q in official.items] and gset.split == "testdev_balanced"
    assert gset.doc_rows[:3] == [official.items[0].id, None, official.items[1].id]
    assert gset.counts["malformed_questions"] == 1 and gset.counts["missing_images"] == 0
    assert [q.structural for q in gset.items] == [q.structural for q in official.items]
    out = tmp_path / "run"
    args = ["gqa", "run", "--model", str(model), "--parquet", str(instructions), "--parquet-images", str(images),
            "--out", str(out), "--batch-size", "4", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_questions"] == 8 and m["coverage"]["missing"] == 0 and m["question_format"] == "parquet"
    answer = {
        r["question_id"]: r["answer"] for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())
    }
    samples = [{"doc_id": d, "target": "x", "filtered_resps": answer[q], "exact_match": 0.0}
               for d, q in enumerate(gset.doc_rows) if q is not None]  # fmt: skip
    log = tmp_path / "20250101_samples_gqa.jsonl"
    log.write_text("".join(json.dumps(s) + "\n" for s in samples))
    keys = ("accuracy", "binary", "open", "per_structural_type", "per_semantic_type", "missing_predictions")
    ours = out / "predictions.jsonl"
    for name, data, predictions in (("a", ["--parquet", str(instructions)], log),
                                    ("b", ["--questions", str(gqa["questions"])], ours)):  # fmt: skip
        assert main(["gqa", "score", *data, "--predictions", str(predictions), "--out", str(tmp_path / name)]) == 0
        scored = json.loads((tmp_path / name / "metrics.json").read_text())
        assert {k: scored[k] for k in keys} == {k: m[k] for k in keys}
    # a parquet missing a column the task reads: a one-line error; run without the images parquet: refused
    bad, _ = write_gqa_parquet(tmp_path / "bad", gqa, drop=("imageId",))
    capsys.readouterr()
    assert main(["gqa", "score", "--parquet", str(bad), "--predictions", str(log), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing column 'imageId'" in err and "\n" not in err
    assert main(args[: args.index("--parquet-images")] + ["--out", str(tmp_path / "r")]) == 2

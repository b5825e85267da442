"""MME: the official answer rule and scores against hand-worked cases, the release folder and LLaVA's JSONL read (and
refused) as they are distributed, and `superclass eval mme run|score` end to end with a tiny LLaVA."""

import json
from pathlib import Path

import pytest

from eval.cli import main
from eval.vlm.benchmarks.mme import MME, load_mme, load_mme_parquet
from eval.vlm.registry import benchmarks
from eval.vlm.scoring.mme import mme_answer, score_mme
from vlm.templates import SHORT_ANSWER_PROMPT

YES_NO = "Please answer yes or no."
# (subtask, layout, image suffix): artwork keeps images/ + questions_answers_YN/, the others the .txt beside the image
SUBTASKS = (("existence", "flat", ".jpg"), ("artwork", "images", ".jpg"), ("code_reasoning", "flat", ".png"))


def write_mme(root: Path) -> dict:
    """LLaVA's playground/data/eval/MME layout: MME_Benchmark_release_version/<subtask>/... (two questions per image,
    Yes first; one question with the two-space instruction some official files have) and llava_mme.jsonl."""
    from llava_fixtures import synthetic_image

    release = root / "MME_Benchmark_release_version"
    llava = []
    for s, (subtask, layout, suffix) in enumerate(SUBTASKS):
        images = release / subtask / ("images" if layout == "images" else "")
        qa = release / subtask / ("questions_answers_YN" if layout == "images" else "")
        images.mkdir(parents=True, exist_ok=True)
        qa.mkdir(parents=True, exist_ok=True)
        for i in range(2):
            stem = f"{100 * s + i:04d}"
            synthetic_image(10 * s + i).save(images / f"{stem}{suffix}")
            questions = [f"Is there a {w} in this image?" for w in ("dog", "cat")]
            space = "  " if (subtask, i) == ("artwork", 1) else " "
            lines = [f"{q}{space}{YES_NO}\t{a}" for q, a in zip(questions, ("Yes", "No"))]
            (qa / f"{stem}.txt").write_text("\n".join(lines) + "\n")
            image_id = f"{subtask}/{'images/' if layout == 'images' else ''}{stem}{suffix}"
            llava += [{"question_id": image_id, "image": image_id, "text": f"{q}\n{SHORT_ANSWER_PROMPT}",
                       "category": subtask} for q in questions]  # fmt: skip
    path = root / "llava_mme.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in llava))
    return {"root": root, "release": release, "llava": path, "rows": llava}


@pytest.fixture(scope="module")
def mme(tmp_path_factory):
    return write_mme(tmp_path_factory.mktemp("mme") / "MME")


def test_answer_rule_as_calculation_py():
    # lower-cased; exactly yes/no, else "yes" then "no" looked for in the first 4 characters, else other (wrong)
    cases = {
        "Yes": "yes", "NO": "no", "No.": "no", "yes, but no": "yes", "Not sure": "no", "nyes": "yes",
        "no yes": "no", "I think yes": "other", "know": "no", "y": "other", "": "other", " yes": "yes",
        "  yes": "other", "The answer is no": "other",
    }  # fmt: skip
    assert {text: mme_answer(text) for text in cases} == cases


def test_scores_hand_worked(mme):
    mset = load_mme(mme["release"])
    assert set(mset.counts.values()) == {0} and len(mset.items) == 12 and mset.format == "mme"
    assert mset.items[0].id == "existence/0000.jpg#1" and mset.info["missing_subtasks"][:2] == ["count", "position"]
    answers = {i.id: i.truth.capitalize() for i in mset.items}
    answers["existence/0001.jpg#2"] = "Yes"  # existence: 3 of 4 right, 1 of 2 images -> 75 + 50
    answers["code_reasoning/0200.png#1"] = "Maybe"  # code: image 0 both wrong (other, missing), image 1 right
    del answers["code_reasoning/0200.png#2"]
    m = score_mme(mset.items, answers)
    sub = m["per_subtask"]
    assert (sub["existence"]["accuracy"], sub["existence"]["accuracy_plus"], sub["existence"]["score"]) == (75, 50, 125)
    assert sub["artwork"]["score"] == 200 and sub["code_reasoning"]["score"] == 50 + 50
    assert (sub["code_reasoning"]["other"], sub["code_reasoning"]["missing"], m["missing_predictions"]) == (2, 1, 1)
    assert (m["perception"], m["cognition"], m["total"]) == (325, 100, 425)
    assert m["accuracy"] == round(100 * 9 / 12, 2) and m["num_images"] == 6 and m["subtasks_scored"] == 3


def _prompts(bench) -> dict:
    return {item.id: bench.prompt(item) for item in bench.questions if item.image is not None}


def test_llava_jsonl_matched_and_prompts(mme):
    a, b = load_mme(mme["release"]), load_mme(mme["release"], mme["llava"])
    assert b.format == "llava_jsonl" and set(b.counts.values()) == {0}
    assert {i.id: i.answer for i in a.items} == {i.id: i.answer for i in b.items}
    two_space = next(i for i in b.items if "  " + YES_NO in i.question)  # found with the instruction's second space
    assert two_space.llava_text == f"{two_space.question.split('  ')[0]}\n{SHORT_ANSWER_PROMPT}"
    llava = _prompts(MME.of(data=str(mme["release"])))
    assert llava == _prompts(MME.of(data=str(mme["release"]), llava_questions=str(mme["llava"])))  # JSONL text verbatim
    lmms = _prompts(MME.of(data=str(mme["release"]), prompt="lmms_eval"))
    assert lmms[two_space.id] == two_space.question.split("  ")[0] + " \n" + SHORT_ANSWER_PROMPT
    assert all(lmms[k] == v for k, v in llava.items() if not k.startswith(two_space.image_id))


def test_limit_keeps_both_questions_of_an_image(mme):
    mset = load_mme(mme["release"], limit=5)  # 3 images
    assert len(mset.items) == 6 and {i.subtask for i in mset.items} == {s for s, _, _ in SUBTASKS}
    assert mset.counts["unpaired_images"] == 0


def test_malformed_llava_rows_and_missing_images_counted_unannotated_warned(mme, tmp_path, capsys):
    import shutil

    release = tmp_path / "release"
    shutil.copytree(mme["release"], release)
    (release / "existence" / "0001.jpg").unlink()
    rows = [json.dumps(r) for r in mme["rows"]] + ["{torn", json.dumps({"question_id": 5, "text": "x"}),
            json.dumps({**mme["rows"][0], "text": "Is there a cow?\n" + SHORT_ANSWER_PROMPT})]  # fmt: skip
    (tmp_path / "q.jsonl").write_text("\n".join(rows) + "\n")
    mset = load_mme(release, tmp_path / "q.jsonl")
    counts = mset.counts
    assert (counts["missing_images"], counts["malformed_questions"], counts["unannotated"]) == (1, 2, 1)
    assert len(mset.items) == 12
    bench = MME.of(data=str(release), llava_questions=str(tmp_path / "q.jsonl"))
    assert len(bench.requests()) == 10  # the questions of the missing image are scored missing
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"question_id": "existence/0000.jpg#1", "answer": "Yes"}) + "\n")
    score = ["mme", "score", "--data", str(release), "--predictions", str(preds), "--out", str(tmp_path / "o")]
    assert main([*score, "--llava-questions", str(tmp_path / "q.jsonl")]) == 0
    err = capsys.readouterr().err  # the question without an answer in the release: counted, warned, not scored
    assert "1 of 12 questions have no gold answer" in err
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["input"]["unannotated"] == 1
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": 1, "prompt": "Is it?"}) + "\n")
    assert main([*score, "--llava-questions", str(tmp_path / "bad.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.jsonl" in err and "'question_id'" in err and len(err.splitlines()) == 1
    empty = ["mme", "score", "--data", str(tmp_path), "--predictions", str(preds), "--out", str(tmp_path / "o")]
    assert main(empty) == 2
    err = capsys.readouterr().err.strip()
    assert "none of MME's subtask folders" in err and len(err.splitlines()) == 1
    shutil.rmtree(release / "artwork" / "questions_answers_YN")
    assert main(score) == 2 and "questions_answers_YN" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("", "line 1: empty file"),
        ("\n\n", "line 1: empty file"),
        (f"Is there a dog in this image? {YES_NO}\tYes\nIs there a cat in th", "line 2 is not"),  # cut mid-line
        (f"Is there a dog in this image? {YES_NO}\tYes\n", "line 2: cut off after one question"),  # cut at a line end
        (f"Is there a dog in this image? {YES_NO}\tYe", "line 1 is not"),  # cut inside the answer
        (f"Is there a dog in this image? {YES_NO} Yes\nIs there a cat? {YES_NO} No\n", "line 1 is not"),  # no tabs
        (
            f"Is there a dog? {YES_NO}\tYes\nIs there a cat? {YES_NO}\tNo\nIs there a cow? {YES_NO}\tNo\n",
            "line 3: a third question",
        ),
    ],
)
def test_a_subtask_txt_broken_in_part_is_refused_naming_it_and_the_line(mme, tmp_path, capsys, text, line):
    # issue 25 item 6: never dropped silently, and the error names the .txt, not llava_mme.jsonl
    import shutil

    release = tmp_path / "release"
    shutil.copytree(mme["release"], release)
    (release / "artwork" / "questions_answers_YN" / "0101.txt").write_text(text)
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"question_id": "existence/0000.jpg#1", "answer": "Yes"}) + "\n")
    for extra in ([], ["--llava-questions", str(mme["llava"])]):
        cmd = [
            "mme",
            "score",
            "--data",
            str(release),
            *extra,
            "--predictions",
            str(preds),
            "--out",
            str(tmp_path / "o"),
        ]
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip()
        assert f"0101.txt: {line}" in err and len(err.splitlines()) == 1 and "llava_mme" not in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_suite_finds_llava_layout(mme, tmp_path):
    cls = benchmarks()["mme"]
    assert (cls.folder, cls.headline, cls.published) == ("MME", "perception", {"llava15_7b": 1510.7})
    assert cls.suite_config(mme["root"]) == {"data": str(mme["release"]), "llava_questions": str(mme["llava"])}
    assert cls.suite_config(mme["release"]) == {"data": str(mme["release"])} and cls.suite_config(tmp_path) is None


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from llava_fixtures import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "llava")


def _eval_tool_scores(folder: Path) -> dict:
    """Per-subtask score from OUT/eval_tool_answers the way calculation.py reads them: lines paired in order."""
    scores = {}
    for path in sorted(folder.glob("*.txt")):
        lines = path.read_text().splitlines(keepends=True)
        said = [(mme_answer(line.split("\t")[3]) == line.split("\t")[2].lower()) for line in lines]
        pairs = [said[i : i + 2] for i in range(0, len(said), 2)]
        scores[path.stem] = round(100 * sum(said) / len(said) + 100 * sum(all(p) for p in pairs) / len(pairs), 2)
    return scores


def test_run_then_score_agree_in_every_format(mme, model, tmp_path):
    out = tmp_path / "run"
    args = ["mme", "run", "--model", str(model), "--data", str(mme["release"]), "--llava-questions", str(mme["llava"]),
            "--out", str(out), "--device", "cpu", "--no-progress", "--batch-size", "4",
            "--max-new-tokens", "4"]  # fmt: skip
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_questions"] == 12 and m["coverage"]["missing"] == 0 and m["subtasks_scored"] == 3
    assert m["perception"] == m["per_subtask"]["existence"]["score"] + m["per_subtask"]["artwork"]["score"]
    assert _eval_tool_scores(out / "eval_tool_answers") == {k: v["score"] for k, v in m["per_subtask"].items()}
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    keys = ("perception", "cognition", "accuracy", "per_subtask", "missing_predictions")
    # LLaVA's answer file names both questions of an image by one id; its prompt tells them apart
    answer = {r["question_id"]: r["answer"] for r in rows}
    line = {"dog": 1, "cat": 2}  # the question's line in its .txt
    llava = tmp_path / "llava_answers.jsonl"
    llava.write_text("".join(json.dumps({"question_id": q["question_id"], "prompt": q["text"], "text": answer[
        f"{q['question_id']}#{line[q['text'].split()[3]]}"], "answer_id": "x", "model_id": "m", "metadata": {}}) + "\n"
        for q in mme["rows"][::-1]))  # fmt: skip
    for name, predictions, extra in (("a", out / "predictions.jsonl", ["--llava-questions", str(mme["llava"])]),
                                     ("b", out / "predictions.jsonl", []), ("c", llava, [])):  # fmt: skip
        cmd = ["mme", "score", "--data", str(mme["release"]), "--predictions", str(predictions)]
        assert main([*cmd, *extra, "--out", str(tmp_path / name)]) == 0
        scored = json.loads((tmp_path / name / "metrics.json").read_text())
        assert {k: scored[k] for k in keys} == {k: m[k] for k in keys} and scored["coverage"]["missing"] == 0


def write_mme_parquet(folder: Path, mme, drop=()) -> Path:
    """lmms-lab's MME layout (lmms_eval/tasks/mme/utils.py reads question_id, question, answer, category, image): the
    release's questions, question_id the image's path (LLaVA's image id), images as PNG bytes; one bad row."""
    import io

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = []
    for item in load_mme(mme["release"]).items:
        buf = io.BytesIO()
        item.load_image().save(buf, format="PNG")
        rows.append({"question_id": item.image_id, "question": item.question, "answer": item.answer,
                     "category": item.subtask, "image": {"bytes": buf.getvalue(), "path": None}})  # fmt: skip
    rows.insert(1, {**rows[0], "category": "no_such_subtask"})  # malformed: doc_id 1 names no question
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{k: v for k, v in row.items() if k not in drop} for row in rows])
    pq.write_table(table, folder / "test-00000-of-00001.parquet")
    return folder


def test_lmms_lab_parquet_read_with_release_ids(mme, tmp_path, capsys):
    folder = write_mme_parquet(tmp_path / "MME", mme)
    mset, official = load_mme_parquet(folder), load_mme(mme["release"])
    assert [i.id for i in mset.items] == [i.id for i in official.items]  # the same ids
    assert [(i.answer, i.question, i.subtask) for i in mset.items] == [
        (i.answer, i.question, i.subtask) for i in official.items
    ]
    assert mset.doc_rows[:3] == [official.items[0].id, None, official.items[1].id]
    assert mset.counts["malformed_questions"] == 1 and mset.counts["unpaired_images"] == 0
    assert mset.items[0].load_image().size == official.items[0].load_image().size
    assert len(load_mme_parquet(folder, limit=4).items) == 4
    bad = write_mme_parquet(tmp_path / "bad", mme, drop=("category",))
    assert main(["mme", "score", "--parquet", str(bad), "--predictions", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing column 'category'" in err and "\n" not in err


def test_parquet_run_and_lmms_eval_samples_by_doc_id(mme, model, tmp_path, capsys):
    folder = write_mme_parquet(tmp_path / "MME", mme)
    out = tmp_path / "run"
    args = ["mme", "run", "--model", str(model), "--parquet", str(folder), "--out", str(out), "--device", "cpu",
            "--no-progress", "--batch-size", "4", "--max-new-tokens", "4", "--prompt", "lmms_eval"]  # fmt: skip
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["num_questions"] == 12 and m["coverage"]["missing"] == 0 and m["subtasks_scored"] == 3
    answer = {
        r["question_id"]: r["answer"] for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())
    }
    samples = [{"doc_id": d, "target": "Yes", "filtered_resps": answer[q], "input": "q"}
               for d, q in enumerate(load_mme_parquet(folder).doc_rows) if q is not None][::-1]  # fmt: skip
    log = tmp_path / "20250101_samples_mme.jsonl"
    log.write_text("".join(json.dumps(s) + "\n" for s in samples))
    keys = ("perception", "cognition", "accuracy", "per_subtask", "missing_predictions")
    for name, data, predictions in (("a", ["--parquet", str(folder)], log),
                                    ("b", ["--data", str(mme["release"])], out / "predictions.jsonl")):  # fmt: skip
        assert main(["mme", "score", *data, "--predictions", str(predictions), "--out", str(tmp_path / name)]) == 0
        scored = json.loads((tmp_path / name / "metrics.json").read_text())
        assert {k: scored[k] for k in keys} == {k: m[k] for k in keys} and scored["coverage"]["missing"] == 0
    # lmms-eval's own metric field names the image (mme_process_results: {"question_id": doc["question_id"], ...}),
    # shared by its two questions: exact with --parquet (by doc_id), refused against the release, never mis-scored
    parquet = load_mme_parquet(folder)
    named = [{**s, "mme_perception_score": {"question_id": parquet.items[0].image_id, "category": "x", "score": 0.0}}
             for s in samples]  # fmt: skip
    log.write_text("".join(json.dumps(s) + "\n" for s in named))
    assert (
        main(["mme", "score", "--parquet", str(folder), "--predictions", str(log), "--out", str(tmp_path / "c")]) == 0
    )
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["per_subtask"] == m["per_subtask"]
    capsys.readouterr()
    for extra in ([], ["--llava-questions", str(mme["llava"])]):
        cmd = ["mme", "score", "--data", str(mme["release"]), *extra, "--predictions", str(log)]
        assert main([*cmd, "--out", str(tmp_path / "d")]) == 2
        err = capsys.readouterr().err.strip()
        assert "ambiguous" in err and "--parquet" in err and len(err.splitlines()) == 1


def test_lmms_eval_rule_as_its_parse_pred_ans():
    # lmms_eval/tasks/mme/utils.py parse_pred_ans: lower(), strip(), "." removed; then "yes"/"no"; a single
    # character: "y" -> yes, "n" -> no, else other; else "yes" then "no" in the first 4 characters, else other
    cases = {
        "Yes": ("yes", "yes"), "y": ("other", "yes"), "N.": ("other", "no"), "  yes": ("other", "yes"),
        "Yes.": ("yes", "yes"), "No.": ("no", "no"), "x": ("other", "other"), "The answer is no": ("other", "other"),
        "Y.E.S": ("other", "yes"), "n o": ("other", "other"), "\nno": ("no", "no"), "nyes": ("yes", "yes"),
    }  # fmt: skip
    got = {text: (mme_answer(text), mme_answer(text, "lmms_eval")) for text in cases}
    assert got == cases


def test_rule_and_input_policy_on_a_predictions_file(mme, tmp_path, capsys):
    items = load_mme(mme["release"]).items
    rows = [json.dumps({"question_id": i.id, "answer": i.truth[0]}) for i in items]  # "y"/"n": only lmms-eval reads
    rows[0] = json.dumps({"question_id": items[0].id, "answer": "No"})  # a duplicate: the last row (right) is kept
    rows += ['{"question_id": "existence/0000.jpg#2", "ans', json.dumps({"question_id": items[0].id, "answer": "Yes"})]
    rows[1] = json.dumps({"question_id": items[1].id, "answer": None})  # null: counted missing
    preds = tmp_path / "p.jsonl"
    preds.write_text("\n".join(rows) + "\n")
    out = {}
    for rule in ("official", "lmms_eval"):
        cmd = ["mme", "score", "--data", str(mme["release"]), "--predictions", str(preds), "--rule", rule]
        assert main([*cmd, "--out", str(tmp_path / rule)]) == 0
        err = capsys.readouterr().err
        assert "1 malformed rows skipped" in err and "1 ids answered more than once" in err and "1 null" in err
        out[rule] = json.loads((tmp_path / rule / "metrics.json").read_text())
    assert out["lmms_eval"]["input"] == {**out["official"]["input"], "malformed_rows": 1, "duplicate_ids": 1,
                                         "null_answers": 1}  # fmt: skip
    assert out["lmms_eval"]["missing_predictions"] == 1 and out["lmms_eval"]["rule"] == "lmms_eval"
    # official: only the duplicate's last "Yes" is right (existence 0000 #1); lmms-eval: all but the null one
    assert out["official"]["accuracy"] == round(100 * 1 / 12, 2) and out["lmms_eval"]["accuracy"] == round(1100 / 12, 2)
    assert out["lmms_eval"]["per_subtask"]["existence"]["score"] == 75 + 50

"""Other tools' files: LLaVA's question JSONL run end to end, LLaVA's answer files and lmms-eval's --log_samples
output scored like our own predictions, and scorers that refuse predictions that cannot be right."""

import json
from pathlib import Path

import pytest

from eval.cli import main
from eval.vlm.benchmarks.mmbench import load_mmbench
from eval.vlm.benchmarks.textvqa import TextVQA
from eval.vlm.benchmarks.vqav2 import VQAv2
from eval.vlm.synthetic_benchmarks import write_synthetic_mmbench, write_synthetic_textvqa, write_synthetic_vqav2
from vlm.templates import SHORT_ANSWER_PROMPT

OCR = "Reference OCR token: "


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tools")
    return {
        "vqav2": write_synthetic_vqav2(tmp / "vqav2", num_images=6, seed=5),
        "textvqa": write_synthetic_textvqa(tmp / "textvqa", num_images=4, seed=5),
        "mmbench": write_synthetic_mmbench(tmp / "mmbench.tsv", num_images=6, seed=5, circular=True),
    }


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from llava_fixtures import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "llava")


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _llava_vqav2_questions(files, path: Path) -> Path:
    """LLaVA's VQAv2 question file: the question and the short-answer line as `text`, image names under the folder."""
    doc = json.loads(files["questions"].read_text())
    rows = [{"question_id": q["question_id"], "image": f"COCO_val2014_{q['image_id']:012d}.jpg",
             "text": f"{q['question']}\n{SHORT_ANSWER_PROMPT}", "category": "default"}
            for q in doc["questions"]]  # fmt: skip
    return _write_jsonl(path, rows)


def _llava_textvqa_questions(files, path: Path) -> Path:
    """LLaVA's TextVQA file: `question_id` is the image id (shared by its questions), 3-line text with OCR tokens."""
    doc = json.loads(files["data"].read_text())
    rows = [{"question_id": d["image_id"], "image": f"{d['image_id']}.jpg",
             "text": f"{d['question']}\n{OCR}{', '.join(d['ocr_tokens'])}\n{SHORT_ANSWER_PROMPT}",
             "category": "default"} for d in doc["data"]]  # fmt: skip
    return _write_jsonl(path, rows)


def _predictions(path: Path) -> dict:
    return {row["question_id"]: row["answer"] for row in map(json.loads, path.read_text().splitlines())}


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def _run(model, out, *args):
    return main([*args, "--model", str(model), "--out", str(out), "--device", "cpu", "--no-progress"])


def test_llava_vqav2_question_jsonl_runs_like_the_official_file(sets, model, tmp_path):
    files = sets["vqav2"]
    llava = _llava_vqav2_questions(files, tmp_path / "llava_vqav2_mscoco_val2014.jsonl")
    bench = VQAv2.of(
        questions=str(llava), annotations=str(files["annotations"]), image_root=str(files["image_root"] / "val2014")
    )  # LLaVA's --image-folder
    texts = [json.loads(line)["text"] for line in llava.read_text().splitlines()]
    assert [p.text for p in bench.prompt_items()] == texts  # LLaVA's text verbatim, the instruction once
    assert all(p.text.count(SHORT_ANSWER_PROMPT) == 1 for p in bench.prompt_items())
    assert bench.question_set.split == "val2014" and set(bench.question_set.counts.values()) == {0}
    ann = ["--annotations", str(files["annotations"])]
    official = ["vqav2", "run", "--questions", str(files["questions"]), "--image-root", str(files["image_root"])]
    assert _run(model, tmp_path / "official", *official, *ann) == 0
    ours = ["vqav2", "run", "--questions", str(llava), "--image-root", str(files["image_root"] / "val2014")]
    assert _run(model, tmp_path / "llava", *ours, *ann) == 0
    a, b = _metrics(tmp_path / "official"), _metrics(tmp_path / "llava")
    assert (a["question_format"], b["question_format"]) == ("official", "llava_jsonl")
    assert a["accuracy"] == b["accuracy"] and b["missing_predictions"] == 0
    assert _predictions(tmp_path / "llava" / "predictions.jsonl") == _predictions(
        tmp_path / "official" / "predictions.jsonl"
    )


def test_llava_textvqa_question_jsonl_is_matched_to_the_official_ids(sets, model, tmp_path, capsys):
    files = sets["textvqa"]
    llava = _llava_textvqa_questions(files, tmp_path / "llava_textvqa_val_v051_ocr.jsonl")
    official = TextVQA.of(data=str(files["data"]), image_root=str(files["image_root"]))
    bench = TextVQA.of(data=str(llava), image_root=str(files["image_root"]), annotations=str(files["data"]))
    assert [i.id for i in bench.questions] == [i.id for i in official.questions]
    assert [i.answers for i in bench.questions] == [i.answers for i in official.questions]
    assert [p.text for p in bench.prompt_items()] == [p.text for p in official.prompt_items()]
    assert bench.question_set.split == "val" and bench.question_set.counts["unannotated"] == 0
    base = ["textvqa", "run", "--image-root", str(files["image_root"])]
    assert _run(model, tmp_path / "official", *base, "--data", str(files["data"])) == 0
    assert _run(model, tmp_path / "llava", *base, "--data", str(llava), "--annotations", str(files["data"])) == 0
    assert _metrics(tmp_path / "official")["accuracy"] == _metrics(tmp_path / "llava")["accuracy"]
    assert _predictions(tmp_path / "llava" / "predictions.jsonl") == _predictions(
        tmp_path / "official" / "predictions.jsonl"
    )
    capsys.readouterr()
    assert _run(model, tmp_path / "bare", *base, "--data", str(llava)) == 2  # LLaVA's ids repeat: ask for the JSON
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--annotations TextVQA_0.5.1_val.json" in err


def _answers(items, wrong_every: int = 3) -> dict:
    """A plausible answer per question: the majority GT, except every `wrong_every`-th, which is wrong."""
    return {i.id: "zebra" if k % wrong_every == 0 else max(i.answers, key=i.answers.count).upper()
            for k, i in enumerate(items)}  # fmt: skip


def _score(args, out: Path) -> dict:
    assert main([*args, "--out", str(out)]) == 0
    return _metrics(out)


def test_vqav2_answer_files_of_llava_and_lmms_eval_score_like_ours(sets, tmp_path, capsys):
    files = sets["vqav2"]
    items = VQAv2.of(images=False, questions=str(files["questions"]), annotations=str(files["annotations"])).questions
    answers = _answers(items)
    ours = _write_jsonl(tmp_path / "ours.jsonl", [{"question_id": q, "answer": a} for q, a in answers.items()])
    llava = _write_jsonl(tmp_path / "llava.jsonl", [
        {"question_id": i.id, "prompt": f"{i.question}\n{SHORT_ANSWER_PROMPT}", "text": answers[i.id],
         "answer_id": f"id{k}", "model_id": "llava-v1.5-7b", "metadata": {}} for k, i in enumerate(items)
    ])  # fmt: skip
    logs = [{"doc_id": k, "doc": {"question_id": i.id, "question": i.question,
             "answers": [{"answer": a} for a in i.answers]}, "target": "x", "arguments": [i.question],
             "resps": [[answers[i.id]]], "filtered_resps": [answers[i.id]], "exact_match": 0.0}
            for k, i in enumerate(items)]  # fmt: skip
    old_lmms = tmp_path / "vqav2_val.json"  # lmms-eval 0.1-0.2: one pretty-printed JSON, samples under "logs"
    old_lmms.write_text(json.dumps({"args": {}, "model_configs": {}, "logs": logs, "time": "0"}, indent=4))
    base = ["vqav2", "score", "--questions", str(files["questions"]), "--annotations", str(files["annotations"])]
    want = _score([*base, "--predictions", str(ours)], tmp_path / "o")
    assert 0 < want["accuracy"] < 100 and want["predictions"]["format"] == "superclass"
    for path, fmt in ((llava, "llava"), (old_lmms, "lmms_eval")):
        got = _score([*base, "--predictions", str(path)], tmp_path / fmt)
        assert (got["accuracy"], got["per_answer_type"], got["predictions"]["format"]) == (
            want["accuracy"], want["per_answer_type"], fmt
        )  # fmt: skip
        assert got["missing_predictions"] == 0 and got["coverage"]["matched"] == len(items)
    # lmms-eval >= 0.4 drops `doc`; vqav2_val then names a question only by doc_id, its row in lmms-lab's split
    new = [{"doc_id": k, "target": "x", "filtered_resps": answers[i.id], "token_counts": [None],
            "doc_hash": "h", "exact_match": 0.0, "input": i.question} for k, i in enumerate(items)]  # fmt: skip
    new_lmms = _write_jsonl(tmp_path / "20260101_samples_vqav2_val.jsonl", new)
    capsys.readouterr()
    assert main([*base, "--predictions", str(new_lmms), "--out", str(tmp_path / "n")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(new_lmms) in err and "--parquet" in err
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    image = next((files["image_root"] / "val2014").glob("*.jpg")).read_bytes()
    rows = [{"question_id": i.id, "question": i.question, "image": {"bytes": image, "path": None},
             "image_id": 0, "answers": [{"answer": a} for a in i.answers], "answer_type": i.answer_type,
             "question_type": i.question_type} for i in items]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "validation-00000-of-00001.parquet")
    parquet = ["vqav2", "score", "--parquet", str(tmp_path / "validation-00000-of-00001.parquet")]
    got = _score([*parquet, "--predictions", str(new_lmms)], tmp_path / "pq")
    assert got["accuracy"] == want["accuracy"] and got["predictions"]["format"] == "lmms_eval"


def test_textvqa_answer_files_of_llava_and_lmms_eval_score_like_ours(sets, tmp_path):
    files = sets["textvqa"]
    items = TextVQA.of(images=False, data=str(files["data"])).questions
    answers = _answers(items)
    ours = _write_jsonl(tmp_path / "ours.jsonl", [{"question_id": q, "answer": a} for q, a in answers.items()])
    # LLaVA's: question_id is the image id, the question is the prompt's first line (eval_textvqa.py's key)
    llava = _write_jsonl(tmp_path / "llava.jsonl", [
        {"question_id": i.image_id, "prompt": f"{i.question}\n{OCR}{', '.join(i.ocr_tokens)}\n{SHORT_ANSWER_PROMPT}",
         "text": answers[i.id], "answer_id": "a", "model_id": "llava-v1.5-7b", "metadata": {}}
        for i in items
    ])  # fmt: skip
    # lmms-eval 0.7: no `doc`, the answer a string, the question id in textvqa_val's `submission` metric
    lmms = _write_jsonl(tmp_path / "20260101_samples_textvqa_val.jsonl", [
        {"doc_id": k, "target": "['a']", "filtered_resps": answers[i.id], "token_counts": [None],
         "doc_hash": "h", "exact_match": 0.0, "submission": {"question_id": i.id, "answer": "x"},
         "input": i.question} for k, i in enumerate(items)
    ])  # fmt: skip
    base = ["textvqa", "score", "--data", str(files["data"])]
    want = _score([*base, "--predictions", str(ours)], tmp_path / "o")
    assert 0 < want["accuracy"] < 100
    for path, fmt in ((llava, "llava"), (lmms, "lmms_eval")):
        got = _score([*base, "--predictions", str(path)], tmp_path / fmt)
        assert (got["accuracy"], got["missing_predictions"], got["predictions"]["format"]) == (want["accuracy"], 0, fmt)
    # the LLaVA question JSONL (its texts and image ids) with the official answers scores LLaVA's file the same
    questions = _llava_textvqa_questions(files, tmp_path / "llava_textvqa_val_v051_ocr.jsonl")
    args = ["textvqa", "score", "--data", str(questions), "--annotations", str(files["data"])]
    assert _score([*args, "--predictions", str(llava)], tmp_path / "q")["accuracy"] == want["accuracy"]


def test_mmbench_answer_files_of_llava_and_lmms_eval_score_like_ours(sets, tmp_path):
    rows = load_mmbench(sets["mmbench"]).items
    answers = {r.id: (r.answer if k % 4 else "A" if r.answer != "A" else "B") for k, r in enumerate(rows)}
    ours = _write_jsonl(tmp_path / "ours.jsonl", [{"question_id": q, "answer": a} for q, a in answers.items()])
    llava = _write_jsonl(tmp_path / "llava.jsonl", [  # model_vqa_mmbench.py's rows
        {"question_id": r.id, "round_id": 0, "prompt": r.question, "text": answers[r.id], "options": r.options,
         "option_char": list(r.letters), "answer_id": "a", "model_id": "llava-v1.5-7b", "metadata": {}} for r in rows
    ])  # fmt: skip
    lmms = _write_jsonl(tmp_path / "20260101_samples_mmbench_en_dev.jsonl", [
        {"doc_id": k, "target": r.answer, "filtered_resps": answers[r.id], "token_counts": [None], "doc_hash": "h",
         "gpt_eval_score": {"index": r.id, "question": r.question, "prediction": answers[r.id]},
         "submission": {"index": r.id}, "input": r.question} for k, r in enumerate(rows)
    ])  # fmt: skip
    base = ["mmbench", "score", "--tsv", str(sets["mmbench"])]
    want = _score([*base, "--predictions", str(ours)], tmp_path / "o")
    assert 0 < want["accuracy"] < 100
    for path in (llava, lmms):
        got = _score([*base, "--predictions", str(path)], tmp_path / path.stem)
        keys = ("accuracy", "accuracy_single_pass", "per_category", "missing_predictions")
        assert {k: got[k] for k in keys} == {k: want[k] for k in keys}


def _score_args(sets, bench: str, predictions: Path, out: Path) -> list[str]:
    data = {
        "vqav2": ["--questions", str(sets["vqav2"]["questions"]), "--annotations", str(sets["vqav2"]["annotations"])],
        "textvqa": ["--data", str(sets["textvqa"]["data"])],
        "mmbench": ["--tsv", str(sets["mmbench"])],
    }[bench]
    return [bench, "score", *data, "--predictions", str(predictions), "--out", str(out)]


@pytest.mark.parametrize("bench", ["vqav2", "textvqa", "mmbench"])
@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ([], "no predictions in it"),
        ([{"question_id": 987654321, "answer": "a"}, {"question_id": "x", "answer": "b"}], "none of its 2 predictions"),
        ([{"doc": 1, "resps": 2}], "not an answer file in a known format"),
    ],
)
def test_predictions_that_cannot_be_right_are_refused(sets, tmp_path, capsys, bench, lines, says):
    preds = _write_jsonl(tmp_path / "p.jsonl", lines)
    assert main(_score_args(sets, bench, preds, tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {preds}: ") and says in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def _question_ids(sets, bench: str) -> list:
    if bench == "mmbench":
        return [r.id for r in load_mmbench(sets["mmbench"]).items]
    if bench == "vqav2":
        return [i.id for i in VQAv2.of(images=False, questions=str(sets["vqav2"]["questions"])).questions]
    return [i.id for i in TextVQA.of(images=False, data=str(sets["textvqa"]["data"])).questions]


@pytest.mark.parametrize("bench", ["vqav2", "textvqa", "mmbench"])
def test_partial_predictions_are_scored_with_a_warning(sets, tmp_path, capsys, bench):
    ids = _question_ids(sets, bench)
    rows = [{"question_id": q, "answer": "A"} for q in ids[2:]] + [{"question_id": 987654321, "answer": "A"}]
    preds = _write_jsonl(tmp_path / "p.jsonl", rows)
    assert main(_score_args(sets, bench, preds, tmp_path / "o")) == 0
    err = capsys.readouterr().err.strip().splitlines()
    warning = f"warning: {preds}: 2 of {len(ids)} questions have no prediction (counted wrong); 1 of {len(rows)} "
    assert len(err) == 1 and err[0] == warning + "predictions are for no question of the set (ignored)"
    m = _metrics(tmp_path / "o")
    assert m["coverage"] == {"questions": len(ids), "predictions": len(rows), "matched": len(ids) - 2, "missing": 2,
                             "unknown": 1}  # fmt: skip
    assert m["missing_predictions"] == 2 and m["unknown_predictions"] == 1


def test_lmms_doc_id_wins_over_a_metric_field_id_when_the_parquet_rows_are_known(tmp_path):
    """POPE's lmms-eval rows name a question_id that restarts per split: with the split's rows, doc_id decides."""
    from eval.vlm.answers import QuestionIndex, read_answers

    log = tmp_path / "samples_pope.jsonl"
    rows = [{"doc_id": 1, "filtered_resps": ["yes"], "pope_accuracy": {"question_id": 0}},
            {"doc_id": 0, "filtered_resps": ["no"], "pope_accuracy": {"question_id": 1}}]  # fmt: skip
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with_rows, _ = read_answers(log, QuestionIndex([10, 11], doc_rows=[10, 11]))
    assert {k: v["answer"] for k, v in with_rows.items()} == {11: "yes", 10: "no"}
    by_field, _ = read_answers(log, QuestionIndex([0, 1]))  # no parquet rows: the field's id
    assert {k: v["answer"] for k, v in by_field.items()} == {0: "yes", 1: "no"}

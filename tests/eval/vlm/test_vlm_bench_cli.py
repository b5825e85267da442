"""`superclass eval {vqav2,textvqa,mmbench} run|score` end to end on files in the official formats (synthetic sets)."""

import json
import shutil

import pytest

from eval.cli import main
from eval.vlm.benchmarks.mmbench import MMBench, load_mmbench
from eval.vlm.benchmarks.textvqa import TextVQA
from eval.vlm.benchmarks.vqav2 import VQAv2, load_vqav2
from eval.vlm.predictions import read_predictions
from eval.vlm.synthetic_benchmarks import write_synthetic_mmbench, write_synthetic_textvqa, write_synthetic_vqav2


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vlm")
    return {
        "vqav2": write_synthetic_vqav2(tmp / "vqav2", num_images=6, seed=3),
        "test": write_synthetic_vqav2(tmp / "vqav2_test", num_images=2, seed=4, subtype="test-dev2015"),
        "textvqa": write_synthetic_textvqa(tmp / "textvqa", num_images=4, seed=3),
        "mmbench": write_synthetic_mmbench(tmp / "mmbench.tsv", num_images=6, seed=3),
        "mmbench_circular": write_synthetic_mmbench(tmp / "mmbench_c.tsv", num_images=6, seed=3, circular=True),
    }


def _truth(path):
    """question_id -> the answer most annotators gave, from an official annotation JSON."""
    anns = json.loads(path.read_text())["annotations"]
    return {a["question_id"]: (a["multiple_choice_answer"], a["answer_type"]) for a in anns}


def test_synthetic_sets_load_with_zero_skips(sets):
    vqa = VQAv2.of(
        questions=str(sets["vqav2"]["questions"]),
        annotations=str(sets["vqav2"]["annotations"]),
        image_root=str(sets["vqav2"]["image_root"]),
    )
    assert set(vqa.question_set.counts.values()) == {0} and len(vqa.prompt_items()) == 24
    assert all(len(item.answers) == 10 for item in vqa.questions)
    assert vqa.prompt_items()[0].image().size == (64, 64)
    test = VQAv2.of(questions=str(sets["test"]["questions"]), image_root=str(sets["test"]["image_root"]))
    assert test.question_set.split == "test-dev2015" and set(test.question_set.counts.values()) == {
        0
    }  # test2015 images found
    text = TextVQA.of(data=str(sets["textvqa"]["data"]), image_root=str(sets["textvqa"]["image_root"]))
    assert set(text.question_set.counts.values()) == {0} and len(text.prompt_items()) == 16
    assert "\nReference OCR token: " in text.prompt_items()[0].text
    for key, circular in (("mmbench", "rotated"), ("mmbench_circular", "tsv")):
        mm = MMBench.of(tsv=str(sets[key]))
        assert mm.question_set.info["circular"] == circular and set(mm.question_set.counts.values()) == {0}
        assert len(mm.prompt_items()) == len(mm.questions) > 6


def test_vqav2_score_jsonl_and_json_list(sets, tmp_path, capsys):
    files = sets["vqav2"]
    truth = _truth(files["annotations"])
    dropped = sorted(truth)[:2]
    lines = [json.dumps({"question_id": q, "answer": a.capitalize() + "."}) for q, (a, _) in truth.items()]
    lines = [line for line in lines if json.loads(line)["question_id"] not in dropped] + ["{broken"]
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    base = ["vqav2", "score", "--questions", str(files["questions"]), "--annotations", str(files["annotations"])]
    assert main([*base, "--predictions", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "a")]) == 0
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    # Capitalised, punctuated answers are right in the official mode too: they are scored as submitted to EvalAI
    # (lower-cased, "." dropped), also on unanimous questions, where the raw official script compares case-sensitively.
    items = load_vqav2(files["questions"], files["annotations"]).items
    assert any(len(set(i.answers)) == 1 for i in items)
    assert m["accuracy"] == round(100 * 22 / 24, 2)
    assert (m["normalization"], m["missing_predictions"], m["num_questions"]) == ("official", 2, 24)
    assert "evalai_normalize" in m["normalization_rule"] and "disagree" in m["normalization_rule"]
    assert m["predictions"]["malformed_rows"] == 1 and m["files"] == {}
    assert set(m["per_answer_type"]) == {"number", "other"} and m["per_question_type"]
    assert "| vqav2" in capsys.readouterr().out
    rows = [{"question_id": str(q), "text": a} for q, (a, _) in truth.items()]  # LLaVA's "text" key, string ids
    (tmp_path / "p.json").write_text(json.dumps(rows))
    out = tmp_path / "b"
    assert main([*base, "--predictions", str(tmp_path / "p.json"), "--out", str(out), "--normalize", "always"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["accuracy"] == 100.0 and m["per_answer_type"] == {"number": 100.0, "other": 100.0}
    assert (m["normalization"], m["missing_predictions"]) == ("always", 0)


def test_vqav2_test_split_writes_an_evalai_submission(sets, tmp_path):
    files = sets["test"]
    qids = [q["question_id"] for q in json.loads(files["questions"].read_text())["questions"]]
    preds = [{"question_id": qids[0], "answer": "Two."}, {"question_id": qids[1], "answer": "The Red ball"}]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    args = ["vqav2", "score", "--questions", str(files["questions"]), "--predictions", str(tmp_path / "p.jsonl")]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    sub = json.loads((tmp_path / "o" / "submission.json").read_text())
    assert [r["question_id"] for r in sub] == qids
    assert [r["answer"] for r in sub[:3]] == ["2", "red ball", ""]  # EvalAI-processed; "" where not answered
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["scored"] is False and m["accuracy"] is None and m["files"]["submission_empty_answers"] == "6"
    assert m["num_questions"] == 8 and m["num_predictions"] == 2


def test_textvqa_score(sets, tmp_path):
    doc = json.loads(sets["textvqa"]["data"].read_text())
    preds = [{"question_id": d["question_id"], "answer": max(d["answers"], key=d["answers"].count).upper()}
             for d in doc["data"]]  # fmt: skip
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds[1:]))
    base = ["textvqa", "score", "--data", str(sets["textvqa"]["data"]), "--predictions", str(tmp_path / "p.jsonl")]
    assert main([*base, "--out", str(tmp_path / "o"), "--prompt", "lmms_eval"]) == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["accuracy"] == round(100 * 15 / 16, 2)  # upper case is fine after the EvalAI processor
    assert (m["normalization"], m["prompt"], m["missing_predictions"]) == ("evalai", "lmms_eval", 1)


def test_mmbench_score(sets, tmp_path, capsys):
    mset = load_mmbench(sets["mmbench_circular"])
    styles = ["{}", "({})", "{}.", "The answer is {}."]
    preds = {r.id: styles[i % 4].format(r.answer) for i, r in enumerate(mset.items)}
    wrong = next(r for r in mset.items if r.id >= 1_000_000)
    preds[wrong.id] = "A" if wrong.answer != "A" else "B"
    rows = [{"question_id": k, "answer": v} for k, v in preds.items()]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    args = ["mmbench", "score", "--tsv", str(sets["mmbench_circular"]), "--predictions", str(tmp_path / "p.json")]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["accuracy"] == round(100 * 5 / 6, 2) and m["accuracy_single_pass"] == 100.0
    assert (m["circular"], m["num_questions"], m["unparsed"], m["missing_predictions"]) == ("tsv", 6, 0, 0)
    assert m["per_category"][mset.items[[r.id for r in mset.items].index(wrong.base)].category] < 100.0
    assert (tmp_path / "o" / "submission.tsv").is_file()
    assert "| mmbench" in capsys.readouterr().out


def test_missing_images_and_bad_files(sets, tmp_path, capsys):
    files = sets["vqav2"]
    root = tmp_path / "images"
    shutil.copytree(files["image_root"], root)
    next((root / "val2014").glob("*.jpg")).unlink()
    bench = VQAv2.of(questions=str(files["questions"]), annotations=str(files["annotations"]), image_root=str(root))
    assert bench.question_set.counts["missing_images"] == 4 and len(bench.prompt_items()) == 20
    (tmp_path / "q.json").write_text(json.dumps({"data_subtype": "val2014", "qs": []}))
    args = ["vqav2", "score", "--questions", str(tmp_path / "q.json"), "--predictions", str(tmp_path / "q.json")]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "q.json" in err and "'questions'" in err and len(err.splitlines()) == 1
    rows, stats = read_predictions(_jsonl(tmp_path / "p.jsonl", ['{"question_id": 1, "answer": "a"}', "[]", "{"]))
    assert {k: r["answer"] for k, r in rows.items()} == {1: "a"} and stats["malformed_rows"] == 2
    assert main(["vqav2", "run", "--questions", str(files["questions"]), "--model", "m", "--out", "o"]) == 2
    assert "--image-root" in capsys.readouterr().err


def _jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_parquet_loader(sets, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    doc = json.loads(sets["textvqa"]["data"].read_text())
    images = sets["textvqa"]["image_root"]
    rows = [
        {
            "question_id": d["question_id"],
            "question": d["question"],
            "image": {"bytes": (images / f"{d['image_id']}.jpg").read_bytes(), "path": None},
            "image_id": d["image_id"],
            "answers": d["answers"],
            "ocr_tokens": d["ocr_tokens"],
        }
        for d in doc["data"][:4]
    ]
    rows[3]["image"] = {"bytes": None, "path": None}
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "textvqa.parquet")
    bench = TextVQA.of(parquet=str(tmp_path / "textvqa.parquet"))
    assert len(bench.questions) == 4 and bench.question_set.counts["missing_images"] == 1
    assert bench.prompt_items()[0].image().size == (64, 64)
    preds = {d["question_id"]: d["answers"][0] for d in doc["data"][:3]}
    assert bench.metrics(preds)["missing_predictions"] == 1


def test_requests_use_the_vicuna_prompt(sets):
    from vlm.templates import generation_prompt

    bench = MMBench.of(tsv=str(sets["mmbench"]), prompt="llava")
    requests = bench.requests()
    item = bench.prompt_items()[0]
    assert requests[0].id == item.id and requests[0].prompt == generation_prompt(item.text, "vicuna_v1", image=True)
    assert requests[0].prompt.count("<image>") == 1 and requests[0].max_new_tokens == 16
    assert MMBench.of(tsv=str(sets["mmbench"]), max_new_tokens=4).requests()[0].max_new_tokens == 4


def test_run_generates_resumably_and_score_agrees(sets, tmp_path, capsys):
    from llava_fixtures import build_tiny_llava

    model = build_tiny_llava(tmp_path / "llava")
    q = sets["vqav2"]
    out = tmp_path / "run"
    args = ["vqav2", "run", "--model", str(model), "--questions", str(q["questions"]), "--annotations",
            str(q["annotations"]), "--image-root", str(q["image_root"]), "--out", str(out), "--batch-size", "5",
            "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and {r["question_id"] for r in rows} == set(read_predictions(out / "predictions.jsonl")[0])
    assert metrics["scored"] and 0 <= metrics["accuracy"] <= 100 and metrics["normalization"] == "official"
    # a rerun finds every answer in the file and generates nothing new; score alone gives the same accuracy
    assert main(args) == 0 and (out / "predictions.jsonl").read_text().count("\n") == 24
    assert main(["vqav2", "score", "--predictions", str(out / "predictions.jsonl"), "--questions", str(q["questions"]),
                 "--annotations", str(q["annotations"]), "--out", str(tmp_path / "scored")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "scored" / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    mmb = tmp_path / "mmb"
    assert main(["mmbench", "run", "--model", str(model), "--tsv", str(sets["mmbench"]), "--out", str(mmb),
                 "--device", "cpu", "--no-progress"]) == 0  # fmt: skip
    mmb_metrics = json.loads((mmb / "metrics.json").read_text())
    rotated = load_mmbench(sets["mmbench"]).items  # no copies in the file: each question rotated here, once per option
    assert mmb_metrics["num_rows"] == len(rotated) > 6 and mmb_metrics["num_questions"] == 6
    assert (mmb / "submission.tsv").is_file()
    # a rerun into the same --out with another prompt layout or token limit is refused, not mixed in
    capsys.readouterr()
    assert main(["mmbench", "run", "--model", str(model), "--tsv", str(sets["mmbench"]), "--out", str(mmb),
                 "--device", "cpu", "--no-progress", "--prompt", "lmms_eval"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "predictions.meta.json" in err and "prompt='llava'" in err
    assert main([*args, "--max-new-tokens", "4"]) == 2
    assert "max_new_tokens=16" in capsys.readouterr().err


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def test_error_rows_are_missing_predictions_not_empty_answers(sets, tmp_path):
    truth = _truth(sets["vqav2"]["annotations"])
    first = next(iter(truth))
    rows = [{"question_id": q, "answer": a} for q, (a, _) in truth.items() if q != first]
    rows.append({"question_id": first, "answer": "", "error": "OSError: truncated JPEG"})
    q = sets["vqav2"]
    out = tmp_path / "o"
    preds = _jsonl(tmp_path / "p.jsonl", [json.dumps(row) for row in rows])
    assert main(["vqav2", "score", "--questions", str(q["questions"]), "--annotations", str(q["annotations"]),
                 "--predictions", str(preds), "--out", str(out)]) == 0  # fmt: skip
    m = json.loads((out / "metrics.json").read_text())
    assert (m["missing_predictions"], m["predictions"]["image_errors"]) == (1, 1)
    assert m["accuracy"] == round(100 * 23 / 24, 2)


def _run_args(files, model, out, *extra):
    return ["vqav2", "run", "--model", str(model), "--questions", str(files["questions"]), "--annotations",
            str(files["annotations"]), "--image-root", str(files["image_root"]), "--out", str(out),
            "--device", "cpu", "--no-progress", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--batch-size", "0"], "--batch-size: expected a positive integer, got '0'"),
        (["--batch-size", "-1"], "--batch-size: expected a positive integer"),
        (["--max-new-tokens", "0"], "--max-new-tokens: expected a positive integer"),
        (["--precision", "xx"], "argument --precision: invalid choice: 'xx'"),
        (["--template", "foo"], "--template 'foo'"),
        (["--template", "plain"], "--template plain: a stage-1 prompt is the bare image, without the question"),
    ],
)
def test_run_flag_mistakes_are_one_line(sets, tmp_path, capsys, flags, says):
    assert main(_run_args(sets["vqav2"], tmp_path / "model", tmp_path / "o", *flags)) == 2
    assert says in _one_line_error(capsys)


def test_run_on_a_dir_that_is_not_a_llava_is_one_line(sets, tmp_path, capsys):
    (tmp_path / "not_llava").mkdir()
    assert main(_run_args(sets["vqav2"], tmp_path / "not_llava", tmp_path / "o")) == 2
    assert "not a LLaVA config" in _one_line_error(capsys)


def test_run_reports_image_errors_and_retries_them(sets, tmp_path):
    from llava_fixtures import build_tiny_llava

    model = build_tiny_llava(tmp_path / "llava")
    files = dict(sets["vqav2"], image_root=tmp_path / "images")
    shutil.copytree(sets["vqav2"]["image_root"], files["image_root"])
    image = next((files["image_root"] / "val2014").glob("*.jpg"))
    good = image.read_bytes()
    image.write_bytes(b"not a jpeg")  # found on disk, fails when opened: its 4 questions get error rows
    out = tmp_path / "run"
    assert main(_run_args(files, model, out, "--batch-size", "8")) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["image_errors"], m["missing_predictions"], m["predictions"]["rows"]) == (4, 4, 20)
    assert (m["generation"]["answered"], m["generation"]["skipped"], m["generation"]["resumed"]) == (24, 4, 0)
    image.write_bytes(good)
    assert main(_run_args(files, model, out, "--batch-size", "8")) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert (m["image_errors"], m["missing_predictions"]) == (0, 0)
    assert (m["generation"]["answered"], m["generation"]["resumed"]) == (4, 20)


def test_parquet_folder_needs_a_split(sets, tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    doc = json.loads(sets["textvqa"]["data"].read_text())
    keys = ("question_id", "question", "image_id", "answers", "ocr_tokens")
    rows = [{**{k: d[k] for k in keys}, "image": {"bytes": b"x", "path": None}} for d in doc["data"]]
    folder = tmp_path / "textvqa"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows[:3]), folder / "validation-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[3:5]), folder / "validation-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(rows[5:9]), folder / "test-00000-of-00001.parquet")
    preds = _jsonl(tmp_path / "p.jsonl", [json.dumps({"question_id": doc["data"][5]["question_id"], "answer": "a"})])
    args = ["textvqa", "score", "--parquet", str(folder), "--predictions", str(preds), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "holds the splits ['test', 'validation']; choose one with --split" in _one_line_error(capsys)
    assert main([*args, "--split", "testdev"]) == 2
    assert "no 'testdev' parquet files" in _one_line_error(capsys)
    bench = TextVQA.of(parquet=str(folder), split="validation")
    assert (len(bench.questions), bench.question_set.split) == (5, "validation")
    assert [i.id for i in bench.questions] == [d["question_id"] for d in doc["data"][:5]]
    assert main([*args, "--split", "test"]) == 0
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["split"] == "test"

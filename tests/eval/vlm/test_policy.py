"""The input policy (eval/vlm/policy.py), applied by the base to every benchmark: each case counted under one name in
metrics.json `input`, warned in one stderr line, and scored as the official scripts do. One benchmark per family
here (VQA: VQAv2; yes/no: POPE); each benchmark's own tests repeat the cases on its files."""

import json

import pytest

from eval.cli import main
from eval.vlm.synthetic_benchmarks import write_synthetic_pope, write_synthetic_vqav2


@pytest.fixture(scope="module")
def vqa(tmp_path_factory):
    files = write_synthetic_vqav2(tmp_path_factory.mktemp("vqa"), num_images=2, seed=3)
    questions = json.loads(files["questions"].read_text())["questions"]
    annotations = {a["question_id"]: a for a in json.loads(files["annotations"].read_text())["annotations"]}
    return files, [q["question_id"] for q in questions], annotations


def _score(tmp_path, files, lines, *extra):
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(line if isinstance(line, str) else json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    args = ["vqav2", "score", "--questions", str(files["questions"]), "--annotations", str(files["annotations"])]
    rc = main([*args, "--predictions", str(preds), "--out", str(out), *extra])
    return rc, (json.loads((out / "metrics.json").read_text()) if rc == 0 else None)


def test_duplicates_keep_the_last_answer_as_the_official_dicts(vqa, tmp_path, capsys):
    files, ids, gold = vqa
    right = gold[ids[0]]["multiple_choice_answer"]
    lines = [{"question_id": q, "answer": gold[q]["multiple_choice_answer"]} for q in ids]
    rc, m = _score(tmp_path, files, [{"question_id": ids[0], "answer": "zzz"}, *lines])  # wrong first, right last
    assert rc == 0 and m["accuracy"] == 100.0 and m["input"]["duplicate_ids"] == 1
    assert "answered more than once (the last answer kept" in capsys.readouterr().err
    rc, m = _score(tmp_path, files, [*lines, {"question_id": ids[0], "answer": "zzz"}])  # right first, wrong last
    assert m["accuracy"] < 100.0 and m["input"]["duplicate_ids"] == 1 and right != "zzz"


def test_malformed_null_empty_and_unknown_rows_are_counted_and_warned(vqa, tmp_path, capsys):
    files, ids, gold = vqa
    lines = [{"question_id": q, "answer": gold[q]["multiple_choice_answer"]} for q in ids[3:]]
    lines += [{"question_id": ids[0], "answer": None}, {"question_id": ids[1], "answer": ""}]
    lines += [{"question_id": 999_999, "answer": "yes"}, "{torn\n", {"answer": "no id"}]
    rc, m = _score(tmp_path, files, lines)
    assert rc == 0
    counts = m["input"]
    assert (counts["malformed_rows"], counts["null_answers"], counts["empty_answers"]) == (2, 1, 1)
    assert (counts["unknown_ids"], counts["missing_predictions"]) == (1, 2)  # the null answer and ids[2]
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "2 malformed rows" in err and "1 null answers" in err
    assert "1 empty answers" in err and "2 of" in err and "1 of" in err
    # the empty answer scores 0, as the official script scores "" against ten annotators
    assert m["accuracy"] == round(100 * (len(ids) - 3) / len(ids), 2)


def test_leniency_is_off_by_default_and_named_in_metrics(vqa, tmp_path, capsys):
    """VQAv2's own normalisation strips spaces, so here `strip_answers` changes nothing but is recorded (GQA's test
    shows it changing a score: its official converter does not strip)."""
    files, ids, gold = vqa
    lines = [{"question_id": q, "answer": " " + gold[q]["multiple_choice_answer"] + " "} for q in ids]
    rc, plain = _score(tmp_path, files, lines)
    rc2, lenient = _score(tmp_path, files, lines, "--strip-answers")
    assert rc == rc2 == 0 and "leniency" not in plain and lenient["leniency"] == {"strip_answers": True}
    assert plain["accuracy"] == lenient["accuracy"] == 100.0  # the official VQA normalisation strips spaces itself


def test_none_matching_is_refused_in_one_line(vqa, tmp_path, capsys):
    files, _, _ = vqa
    rc, _ = _score(tmp_path, files, [{"question_id": 5, "answer": "yes"}])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "none of its 1 predictions" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_limit_is_one_fixed_subset_and_checked(vqa, tmp_path, capsys):
    files, ids, gold = vqa
    lines = [{"question_id": q, "answer": gold[q]["multiple_choice_answer"]} for q in ids]
    _, a = _score(tmp_path, files, lines, "--limit", "3")
    _, b = _score(tmp_path, files, lines, "--limit", "3")
    assert a["num_questions"] == b["num_questions"] == 3 and a["coverage"] == b["coverage"]
    capsys.readouterr()
    for bad in ("0", "-5"):
        assert _score(tmp_path, files, lines, "--limit", bad)[0] == 2
        assert "positive integer" in capsys.readouterr().err
    out = tmp_path / "o"
    assert main(["run", "vqav2", "--model", "m", "--out", str(out), "limit=-3"]) == 2
    assert "limit -3" in capsys.readouterr().err


def test_out_must_be_a_folder(vqa, tmp_path, capsys):
    files, ids, _ = vqa
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"question_id": ids[0], "answer": "x"}) + "\n")
    args = ["vqav2", "score", "--questions", str(files["questions"]), "--predictions", str(preds)]
    assert main([*args, "--out", str(tmp_path / "metrics.json")]) == 2
    assert "--out is a folder" in capsys.readouterr().err
    assert main(["run", "vqav2", "--model", "m", "--out", str(tmp_path / "x.json"), "synthetic=2"]) == 2
    assert "--out is a folder" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


@pytest.fixture(scope="module")
def pope(tmp_path_factory):
    return write_synthetic_pope(tmp_path_factory.mktemp("pope"), num_images=3, seed=4)


def _pope_rows(files):
    return [json.loads(line) for line in (files["annotation_dir"] / "coco_pope_adversarial.json").open()]


def test_yes_no_family_duplicates_and_rule_lmms_eval(pope, tmp_path, capsys):
    rows = _pope_rows(pope)
    preds = tmp_path / "p.jsonl"
    lines = [{"question_id": r["question_id"], "answer": " " + r["label"].title() + "."} for r in rows]
    lines.append({"question_id": rows[0]["question_id"], "answer": "no" if rows[0]["label"] == "yes" else "yes"})
    preds.write_text("".join(json.dumps(x) + "\n" for x in lines))
    base = ["pope", "score", "--annotation-dir", str(pope["annotation_dir"]), "--splits", "adversarial"]
    assert main([*base, "--predictions", str(preds), "--out", str(tmp_path / "a")]) == 0
    official = json.loads((tmp_path / "a" / "metrics.json").read_text())
    n = len(rows)
    assert official["input"]["duplicate_ids"] == 1 and official["accuracy"] == round(100 * (n - 1) / n, 2)
    # lmms-eval's pope_process_results: " Yes." lower-cased and stripped is "yes." -- not "yes", so wrong
    assert main([*base, "--predictions", str(preds), "--out", str(tmp_path / "b"), "--rule", "lmms_eval"]) == 0
    lmms = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert lmms["rule"] == "lmms_eval" and lmms["accuracy"] == 0.0 and lmms["lmms_eval_pooled"]["accuracy"] == 0.0
    assert main([*base, "--predictions", str(preds), "--out", str(tmp_path / "c"), "--rule", "gpt"]) == 2
    assert "invalid choice: 'gpt'" in capsys.readouterr().err


def test_lmms_eval_pope_samples_without_parquet_are_refused(pope, tmp_path, capsys):
    rows = _pope_rows(pope)
    samples = [{"doc_id": i, "doc": {"question_id": str(r["question_id"])}, "filtered_resps": "yes"}
               for i, r in enumerate(rows)]  # fmt: skip
    log = tmp_path / "20250101_samples_pope.jsonl"
    log.write_text("".join(json.dumps(s) + "\n" for s in samples))
    cmd = ["pope", "score", "--annotation-dir", str(pope["annotation_dir"]), "--predictions", str(log)]
    assert main([*cmd, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "ambiguous" in err and "--parquet" in err and len(err.splitlines()) == 1

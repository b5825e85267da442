"""Synthetic VQAv2, TextVQA, MMBench, POPE and ScienceQA sets in the official file formats, from procedural scenes.

The images are `pretrain.data.synthetic.make_sample(index, seed, image_size)` and the questions are
`vlm.scene_questions.questions_for` / `options_for`, so the demo's tiny LLaVA, trained on the same kinds of questions,
is scored by the real loaders and metrics. Use a `seed` (or `start`) the model was not trained on.
- VQAv2: every question kind per image; 10 annotator answers, mostly the truth, a few disagreeing (and some
  number words, "two" for "2", which the official normalisation maps back); answer_type "number" for counts.
- TextVQA: the same questions with the colour and shape words as OCR tokens.
- MMBench: one multiple-choice question per image (4 options, 3 for counts), base64 JPEG, category = the kind;
  with `circular=True` the rotated copies at index + k * 1_000_000 point at the main row's image by index.
- POPE: POPE's coco/coco_pope_{split}.json JSON lines over COCO-named images, per image one "yes" question about
  the scene's object and one "no" question about an absent one, picked as the split picks it.
- ScienceQA: problems.json + pid_splits.json + images/test/<pid>/image.png; one lettered question per image,
  "Context:" hints on some, subjects and grades spread over the rows.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import random
from pathlib import Path
from typing import Any

from eval.vlm.ids import CIRCULAR_OFFSET, LETTERS
from pretrain.data.synthetic import make_sample
from pretrain.runtime.errors import ConfigError
from vlm.scene_questions import (
    HINT,
    HINT_RATE,
    PRESENCE_NEGATIVES,
    absent_question,
    options_for,
    pick_question,
    present_question,
    questions_for,
)

ANSWER_TYPES = {"count": "number"}  # everything else is "other"
QUESTION_TYPES = {"colour": "what colour", "shape": "what shape", "count": "how many", "position": "where"}
NUMBER_WORDS = {"1": "one", "2": "two", "3": "three"}
L2_CATEGORIES = {"colour": "attribute", "shape": "attribute", "count": "instance", "position": "spatial"}
MMBENCH_HEADER = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                  "l2-category", "comment", "split")  # fmt: skip


def _rng(seed: int, index: int, tag: str) -> random.Random:
    digest = hashlib.blake2b(f"{seed}:{index}:{tag}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def _jpeg(image: Any) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def annotator_answers(answer: str, choices: tuple[str, ...], rng: random.Random) -> list[str]:
    """Ten annotator answers: the truth from at least 7, the rest another choice; up to 2 numbers written as words."""
    wrong = [c for c in choices if c != answer]
    answers = [answer] * 10
    for i in rng.sample(range(10), rng.choice([0, 0, 1, 2, 3])):
        answers[i] = rng.choice(wrong)
    for i in rng.sample(range(10), rng.choice([0, 0, 1, 2])):
        answers[i] = NUMBER_WORDS.get(answers[i], answers[i])
    return answers


def _write_json(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def write_synthetic_vqav2(
    root: str | Path,
    num_images: int = 16,
    seed: int = 0,
    image_size: int = 64,
    subtype: str = "val2014",
    start: int = 0,
) -> dict[str, Path]:
    """Questions (and annotations unless `subtype` is a test split) JSON plus COCO-named JPEGs under root/images."""
    root = Path(root)
    folder = "test2015" if subtype.startswith("test") else subtype
    questions, annotations = [], []
    for image_id in range(start, start + num_images):
        sample = make_sample(image_id, seed, image_size)
        path = root / "images" / folder / f"COCO_{folder}_{image_id:012d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg(sample.image))
        for k, q in enumerate(questions_for(sample.attributes)):
            qid = image_id * 1000 + k
            questions.append({"image_id": image_id, "question": q.text, "question_id": qid})
            answers = annotator_answers(q.answer, q.choices, _rng(seed, qid, "annotators"))
            annotations.append(
                {
                    "question_id": qid,
                    "image_id": image_id,
                    "question_type": QUESTION_TYPES[q.kind],
                    "answer_type": ANSWER_TYPES.get(q.kind, "other"),
                    "multiple_choice_answer": max(set(answers), key=answers.count),
                    "answers": [
                        {"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)
                    ],
                }
            )
    info = {"description": "synthetic scenes in the VQAv2 format", "version": "2.0"}
    common = {"info": info, "license": {}, "data_type": "mscoco", "data_subtype": subtype}
    out = {
        "questions": _write_json(
            root / f"v2_OpenEnded_mscoco_{subtype}_questions.json",
            {**common, "task_type": "Open-Ended", "questions": questions},
        ),
        "image_root": root / "images",
    }
    if not subtype.startswith("test"):
        out["annotations"] = _write_json(
            root / f"v2_mscoco_{subtype}_annotations.json", {**common, "annotations": annotations}
        )
    return out


def write_synthetic_textvqa(
    root: str | Path, num_images: int = 16, seed: int = 0, image_size: int = 64, start: int = 0
) -> dict[str, Path]:
    """`TextVQA_0.5.1_val.json` and root/train_images/{image_id}.jpg; the OCR tokens are the colour and shape."""
    root = Path(root)
    data = []
    for index in range(start, start + num_images):
        sample = make_sample(index, seed, image_size)
        image_id = f"{seed % 0x10000:04x}{index:012x}"
        path = root / "train_images" / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_jpeg(sample.image))
        attrs = sample.attributes
        ocr = [attrs["colour"], attrs["shape"]]
        _rng(seed, index, "ocr").shuffle(ocr)
        for k, q in enumerate(questions_for(attrs)):
            qid = index * 10 + k
            data.append(
                {
                    "question_id": qid,
                    "image_id": image_id,
                    "question": q.text,
                    "question_tokens": q.text.lower().rstrip("?").split(),
                    "answers": annotator_answers(q.answer, q.choices, _rng(seed, qid, "annotators")),
                    "ocr_tokens": ocr,
                    "image_classes": [attrs["shape"]],
                    "image_width": image_size,
                    "image_height": image_size,
                    "flickr_original_url": "",
                    "flickr_300k_url": "",
                    "set_name": "val",
                }
            )
    doc = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data}
    return {"data": _write_json(root / "TextVQA_0.5.1_val.json", doc), "image_root": root / "train_images"}


def _mmbench_row(index: int, seed: int, image_size: int) -> dict[str, Any]:
    """One main MMBench row of scene `index` (its options as a list under "_options")."""
    sample = make_sample(index, seed, image_size)
    rng = _rng(seed, index, "mmbench")
    q = pick_question(sample.attributes, rng)
    options = options_for(q, rng, 4)
    return {
        "index": index,
        "question": q.text,
        "hint": HINT if rng.random() < HINT_RATE else "",
        "_options": options,
        "answer": LETTERS[options.index(q.answer)],
        "category": q.kind,
        "image": base64.b64encode(_jpeg(sample.image)).decode("ascii"),
        "source": "synthetic",
        "l2-category": L2_CATEGORIES[q.kind],
        "comment": "",
        "split": "dev",
    }


def _with_options(row: dict[str, Any], options: list[str]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k != "_options"}
    out.update({letter: options[i] if i < len(options) else "" for i, letter in enumerate("ABCD")})
    return out


def write_synthetic_mmbench(
    path: str | Path,
    num_images: int = 16,
    seed: int = 0,
    image_size: int = 64,
    circular: bool = False,
    start: int = 0,
) -> Path:
    """An MMBench dev TSV; with `circular`, the rotated copies as MMBench ships them (index + k * 1_000_000)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(MMBENCH_HEADER), delimiter="\t")
        writer.writeheader()
        copies = []
        for index in range(start, start + num_images):
            row = _mmbench_row(index, seed, image_size)
            options = row["_options"]
            writer.writerow(_with_options(row, options))
            for k in range(1, len(options) if circular else 1):
                rotated = options[k:] + options[:k]
                copy = {**row, "index": index + k * CIRCULAR_OFFSET, "image": str(index)}
                copy["answer"] = LETTERS[rotated.index(options[LETTERS.index(row["answer"])])]
                copies.append(_with_options(copy, rotated))
        writer.writerows(copies)
    return path


def write_synthetic_pope(root: str | Path, num_images: int, seed: int, image_size: int = 40) -> dict[str, Path]:
    """POPE's layout: root/coco/coco_pope_{adversarial,popular,random}.json + root/val2014/COCO_val2014_*.jpg."""
    root = Path(root)
    (root / "val2014").mkdir(parents=True, exist_ok=True)
    for index in range(num_images):
        name = f"COCO_val2014_{index:012d}.jpg"
        (root / "val2014" / name).write_bytes(_jpeg(make_sample(index, seed, image_size).image))
    for split in PRESENCE_NEGATIVES:
        rows = []
        for index in range(num_images):
            attributes = make_sample(index, seed, image_size).attributes
            rng = _rng(seed, index, f"pope:{split}")
            name = f"COCO_val2014_{index:012d}.jpg"
            for q in (present_question(attributes), absent_question(attributes, rng, split)):
                rows.append({"question_id": len(rows) + 1, "image": name, "text": q.text, "label": q.answer})
        path = root / "coco" / f"coco_pope_{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"annotation_dir": root / "coco", "image_root": root / "val2014"}


def write_synthetic_scienceqa(root: str | Path, num_images: int, seed: int, image_size: int = 40) -> dict[str, Path]:
    """ScienceQA's data/scienceqa layout with one test problem per scene (lettered options, `answer` an index)."""
    root = Path(root)
    problems, subjects = {}, ("natural science", "social science", "language science")
    for index in range(num_images):
        pid = str(index + 1)
        sample = make_sample(index, seed, image_size)
        rng = _rng(seed, index, "scienceqa")
        q = pick_question(sample.attributes, rng)
        choices = options_for(q, rng, rng.choice([2, 3, 4]))
        folder = root / "images" / "test" / pid
        folder.mkdir(parents=True, exist_ok=True)
        sample.image.convert("RGB").save(folder / "image.png")
        problems[pid] = {
            "question": q.text, "choices": choices, "answer": choices.index(q.answer),
            "hint": HINT if rng.random() < HINT_RATE else "", "image": "image.png", "task": "closed choice",
            "grade": f"grade{1 + index % 12}", "subject": subjects[index % 3], "topic": q.kind, "category": q.kind,
            "skill": q.kind, "lecture": "", "solution": "", "split": "test",
        }  # fmt: skip
    _write_json(root / "pid_splits.json", {"train": [], "val": [], "test": list(problems)})
    return {"problems": _write_json(root / "problems.json", problems), "image_root": root / "images" / "test"}


# benchmark -> the dataset seed of its held-out synthetic set (the demo's: the tiny LLaVA trains on seeds 0 and 2)
SYNTHETIC_SEEDS = {"vqav2": 101, "mmbench": 102, "pope": 103, "scienceqa": 104, "textvqa": 105}


def write_synthetic_benchmark(name: str, root: str | Path, num_images: int, image_size: int = 40) -> dict[str, Path]:
    """The held-out synthetic set of benchmark `name` under `root`, as {its flag's dest: path} (e.g. questions)."""
    if name not in SYNTHETIC_SEEDS:
        known = ", ".join(SYNTHETIC_SEEDS)
        raise ConfigError(f"{name}.synthetic: {name} has no synthetic set (those with one: {known})")
    root, seed = Path(root), SYNTHETIC_SEEDS[name]
    if name == "vqav2":
        return write_synthetic_vqav2(root, num_images, seed, image_size)
    if name == "textvqa":
        return write_synthetic_textvqa(root, num_images, seed, image_size)
    if name == "mmbench":
        return {"tsv": write_synthetic_mmbench(root / "mmbench_dev.tsv", num_images, seed, image_size, circular=True)}
    if name == "pope":
        return write_synthetic_pope(root, num_images, seed, image_size)
    return write_synthetic_scienceqa(root, num_images, seed, image_size)

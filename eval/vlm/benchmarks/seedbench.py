"""SEED-Bench (v1), image part: evaluation dimensions 1-9 asked with lettered options, scored as LLaVA-1.5 does.

usage: superclass eval seedbench run|score --annotations SEED-Bench.json [--llava-questions llava-seed-bench.jsonl]
           --image-root seed_bench [--prompt lmms_eval] --out OUT
       superclass eval seedbench run --model DIR --parquet SEED-Bench/data --out OUT [--split test]

Files (LLaVA's docs/Evaluation.md: playground/data/eval/seed_bench): the official `SEED-Bench.json`
(AILab-CVC/SEED-Bench DATASET.md: `{"questions": [{"question_id", "question", "choice_a".."choice_d", "answer"
('A'..'D'), "data_id" (the image file name), "data_type" ("image" | "video"), "question_type_id"}], "question_type":
{dimension name: id}}`) with the images in `SEED-Bench-image/` under `--image-root`; optionally LLaVA's
`llava-seed-bench.jsonl` (eval.zip; `{"question_id", "image": "SEED-Bench-image/<data_id>", "text", "category"}`
per line), the file LLaVA's model_vqa_loader.py reads.
`--parquet`: lmms-lab's SEED-Bench (lmms-eval's seedbench task; a file or a folder of `<split>-*.parquet` shards,
`--split` picking a folder's; needs pyarrow). Columns per lmms_eval/tasks/seedbench/utils.py: doc["question"],
doc["choice_a"].."choice_d", doc["answer"], doc["data_type"], doc["question_id"] and doc["image"] (a list of
{bytes, path} structs, one for an image question); `question_type_id` and `data_id`, SEED-Bench.json's fields, are
read when the rows have them (the dimension is 0 otherwise). Ids are SEED-Bench.json's question_id; the row's
position is lmms-eval's doc_id (`QuestionIndex.doc_rows`).

The set is the questions with `data_type` "image" (dimensions 1-9, 14,233 questions), LLaVA's
`eval_only_type='image'`. Video questions (dimensions 10-12, which LLaVA answers from one middle frame it extracts
itself) are skipped and counted (`video`); so is any other data type.

Prompt: `llava` (default) is the `text` of LLaVA's JSONL verbatim (model_vqa_loader.py adds nothing to it); without
the file, or for a question it lacks, it is built as LLaVA's docs/Evaluation.md gives it: the question, "A. <choice>"
lines, LETTER_ANSWER_PROMPT. `lmms_eval` is lmms-eval's seedbench (tasks/seedbench/utils.py `seed_doc_to_text`),
always built from SEED-Bench.json: the same text. `llava_prompt_differs` in metrics.json counts questions whose JSONL
text is not the built one.

Metric: LLaVA's scripts/convert_seed_for_submission.py (haotian-liu/LLaVA) `eval_single(..., eval_only_type='image')`:
an answer is right when it *is* the answer letter (`row['text'] == question_data['answer']`, nothing stripped), a
question without a prediction is wrong; accuracy in percent over all image questions (pooled) and per evaluation
dimension (named by SEED-Bench.json's `question_type`). `accuracy_lmms_eval` beside it is lmms-eval's
`seed_process_result` + `seed_aggregation_result` on the same answers (first character of the stripped answer,
case-insensitive).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.vlm.answers import QuestionIndex
from eval.vlm.base import PromptItem, VLMBenchmark
from eval.vlm.files import parquet_rows, read_json
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.registry import BenchmarkSpec, register
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb  # the shared decoder (16-bit images scaled, not clipped)
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.jsonl import read_jsonl_file
from vlm.templates import multiple_choice_prompt

SEED_PROMPTS = ("llava", "lmms_eval")
LETTERS = "ABCD"
CHOICE_KEYS = ("choice_a", "choice_b", "choice_c", "choice_d")
IMAGE_FOLDER = "SEED-Bench-image"
# lmms_eval/tasks/seedbench/utils.py reads these (seed_doc_to_text, seed_process_result, seed_doc_to_visual)
PARQUET_COLUMNS = ("question_id", "question", *CHOICE_KEYS, "answer", "data_type", "image")
IMAGE_SUFFIXES = ("", ".jpg", ".png", ".jpeg")  # DATASET.md writes data_id without one; the files have one
# SEED-Bench-1's "question_type" (DATASET.md), for a file that lacks it
DIMENSIONS = {
    1: "Scene Understanding", 2: "Instance Identity", 3: "Instance Attributes", 4: "Instance Location",
    5: "Instances Counting", 6: "Spatial Relation", 7: "Instance Interaction", 8: "Visual Reasoning",
    9: "Text Understanding", 10: "Action Recognition", 11: "Action Prediction", 12: "Procedure Understanding",
}  # fmt: skip
METRIC_RULE = (
    "LLaVA convert_seed_for_submission.py: right when the answer text equals the answer letter exactly; "
    "no prediction is wrong; pooled over the image questions and per dimension"
)


@dataclass
class SeedQuestion:
    """One image question: options A-D, the answer letter (None when absent), dimension, image, LLaVA's text."""

    qid: QuestionId
    question: str
    options: list[str]
    answer: str | None
    dimension: int
    data_id: str
    image: Path | bytes | None = None  # a file, or the encoded image of a parquet row
    llava_text: str | None = None  # LLaVA's JSONL `text`, verbatim

    def load_image(self) -> Any:
        """The image as an RGB PIL image (opened when the generation runner asks for it)."""
        if self.image is None:
            raise DataError(f"SEED-Bench question {self.qid}: no image")
        return open_rgb(self.image)


@dataclass
class SeedSet:
    """The image questions, the dimension names, where they came from, and what was skipped."""

    source: str
    questions: list[SeedQuestion]
    dimensions: dict[int, str]
    counts: dict[str, int]
    format: str = "official"  # official (SEED-Bench.json) | parquet
    doc_rows: list[QuestionId | None] | None = None  # parquet: each row's id (lmms-eval's doc_id), None if skipped

    @property
    def has_answers(self) -> bool:
        return any(q.answer is not None for q in self.questions)


def _question(raw: Any) -> tuple[str, SeedQuestion | None] | None:
    """(data_type, the question when it is a well-formed image one) of a SEED-Bench.json row; None when malformed."""
    if not isinstance(raw, dict):
        return None
    data_type = raw.get("data_type")
    try:
        qid, dimension = norm_id(raw["question_id"]), raw["question_type_id"]
    except (KeyError, ValueError):
        return None
    if not isinstance(data_type, str) or isinstance(dimension, bool) or not isinstance(dimension, int):
        return None
    if data_type != "image":
        return data_type, None
    question, data_id, answer = raw.get("question"), raw.get("data_id"), raw.get("answer")
    options = [raw.get(k) for k in CHOICE_KEYS]
    if not isinstance(question, str) or not isinstance(data_id, str) or not data_id:
        return None
    if not all(isinstance(o, str) for o in options) or (answer is not None and answer not in LETTERS):
        return None
    return data_type, SeedQuestion(qid, question, options, answer, dimension, data_id)


def _dimension_names(doc: dict[str, Any]) -> dict[int, str]:
    names = dict(DIMENSIONS)
    types = doc.get("question_type")
    if isinstance(types, dict):
        names.update({v: str(k) for k, v in types.items() if isinstance(v, int) and not isinstance(v, bool)})
    return names


def _llava_rows(path: str | Path, counts: dict[str, int]) -> dict[QuestionId, tuple[str, str | None]]:
    """question_id -> (text, image path) of LLaVA's llava-seed-bench.jsonl; unreadable or malformed lines counted."""
    rows, bad = read_jsonl_file(path, (), "LLaVA's llava-seed-bench.jsonl: {question_id, image, text} per line")
    counts["malformed_llava_rows"] += bad
    out: dict[QuestionId, tuple[str, str | None]] = {}
    for row in rows:
        try:
            qid = norm_id(row.get("question_id"))
        except ValueError:
            qid = None
        text, image = row.get("text"), row.get("image")
        if qid is None or not isinstance(text, str) or not (image is None or isinstance(image, str)):
            counts["malformed_llava_rows"] += 1
            continue
        out.setdefault(qid, (text, image))
    return out


def _find_image(root: Path, data_id: str, llava_path: str | None) -> Path | None:
    """The image under `root` (LLaVA's seed_bench folder, or SEED-Bench-image itself)."""
    names = [llava_path] if llava_path else []
    for suffix in IMAGE_SUFFIXES:
        names += [f"{IMAGE_FOLDER}/{data_id}{suffix}", f"{data_id}{suffix}"]
    return next((root / n for n in names if (root / n).is_file()), None)


def load_seedbench(
    annotations: str | Path,
    image_root: str | Path | None = None,
    questions: str | Path | None = None,
    limit: int | None = None,
) -> SeedSet:
    """The image questions of SEED-Bench.json, with LLaVA's question text from `questions` when given; images are
    looked up only when `image_root` is given."""
    doc = read_json(annotations, "SEED-Bench.json")
    if not isinstance(doc, dict) or not isinstance(doc.get("questions"), list):
        raise DataError(f"{annotations}: missing list field 'questions' (expected SEED-Bench.json)")
    root = Path(image_root) if image_root is not None else None
    if root is not None and not root.is_dir():
        raise DataError(f"{root}: image root is not a directory")
    keys = ("malformed_questions", "video", "other_data_type", "duplicate_questions", "missing_images")
    counts = dict.fromkeys(keys, 0)
    counts.update(malformed_llava_rows=0, llava_rows_missing=0, llava_prompt_differs=0)
    found: list[SeedQuestion] = []
    seen: set[QuestionId] = set()
    for raw in doc["questions"]:
        parsed = _question(raw)
        if parsed is None:
            counts["malformed_questions"] += 1
        elif parsed[1] is None:
            counts["video" if parsed[0] == "video" else "other_data_type"] += 1
        elif parsed[1].qid in seen:
            counts["duplicate_questions"] += 1
        else:
            seen.add(parsed[1].qid)
            found.append(parsed[1])
    if not found:
        raise DataError(f"{annotations}: no question with data_type 'image' in 'questions' (expected SEED-Bench.json)")
    found = fixed_subset(found, limit, key=lambda q: q.dimension)
    llava = _llava_rows(questions, counts) if questions is not None else None
    for q in found:
        row = llava.get(q.qid) if llava is not None else None
        if llava is not None:
            counts["llava_rows_missing"] += row is None
        if row is not None:
            q.llava_text = row[0]
            counts["llava_prompt_differs"] += row[0] != multiple_choice_prompt(q.question, q.options)
        if root is not None:
            q.image = _find_image(root, q.data_id, row[1] if row is not None else None)
            counts["missing_images"] += q.image is None
    source = str(annotations) + (f" + {questions}" if questions is not None else "")
    return SeedSet(source, found, _dimension_names(doc), counts)


def _image_bytes(image: Any) -> bytes | None:
    """The encoded image of a parquet `image` cell: a {bytes, path} struct or a list of one (lmms-lab's layout)."""
    if isinstance(image, list):
        image = image[0] if len(image) == 1 else None
    data = image.get("bytes") if isinstance(image, dict) else image
    return bytes(data) if isinstance(data, (bytes, bytearray)) and data else None


def load_seedbench_parquet(path: str | Path, limit: int | None = None, split: str | None = None) -> SeedSet:
    """lmms-lab's SEED-Bench parquet (a file, or a folder of `{split}-*.parquet` shards): its image questions, video
    and malformed rows counted as SEED-Bench.json's are; `limit` a fixed subset stratified by dimension."""
    rows, _ = parquet_rows(path, split, PARQUET_COLUMNS, "lmms-lab's SEED-Bench parquet")
    keys = ("malformed_questions", "video", "other_data_type", "duplicate_questions", "missing_images")
    counts = dict.fromkeys(keys, 0)
    found: list[SeedQuestion] = []
    doc_rows: list[QuestionId | None] = []
    seen: set[QuestionId] = set()
    for row in rows:
        data = _image_bytes(row.get("image"))
        image = row.get("image")
        name = image[0].get("path") if isinstance(image, list) and image and isinstance(image[0], dict) else None
        data_id = row.get("data_id") or name or str(row.get("question_id"))
        parsed = _question({**row, "data_id": data_id, "question_type_id": row.get("question_type_id", 0)})
        question = parsed[1] if parsed is not None else None
        if parsed is None:
            counts["malformed_questions"] += 1
        elif question is None:
            counts["video" if parsed[0] == "video" else "other_data_type"] += 1
        elif question.qid in seen:
            counts["duplicate_questions"] += 1
        doc_rows.append(question.qid if question is not None and question.qid not in seen else None)
        if question is None or question.qid in seen:
            continue
        seen.add(question.qid)
        question.image = data
        found.append(question)
    if not found:
        raise DataError(f"{path}: no question with data_type 'image' (expected lmms-lab's SEED-Bench parquet)")
    found = fixed_subset(found, limit, key=lambda q: q.dimension)
    counts["missing_images"] = sum(q.image is None for q in found)
    return SeedSet(str(path), found, dict(DIMENSIONS), counts, "parquet", doc_rows)


def seed_prompt(q: SeedQuestion, layout: str = "llava") -> str:
    """The question text (no chat template): LLaVA's JSONL text, or the question, "A. opt" lines and the instruction
    (LLaVA's docs/Evaluation.md multiple-choice format = lmms-eval's `seed_doc_to_text`)."""
    if layout not in SEED_PROMPTS:
        raise UserError(f"unknown SEED-Bench prompt layout '{layout}' (expected one of {list(SEED_PROMPTS)})")
    if layout == "llava" and q.llava_text is not None:
        return q.llava_text
    return multiple_choice_prompt(q.question, q.options)


def lmms_eval_right(text: str, answer: str) -> bool:
    """lmms-eval's seedbench: the stripped answer, cut to its first character, equals the letter (any case)."""
    pred = text.strip()
    pred = pred[0] if len(pred) > 1 else pred
    return pred.lower().strip() == answer.lower().strip()


def _percent(hits: int, total: int) -> float | None:
    return round(100.0 * hits / total, 2) if total else None


def score_seedbench(sset: SeedSet, predictions: Mapping[QuestionId, str]) -> dict[str, Any]:
    """Accuracy (percent) as LLaVA's convert_seed_for_submission.py: pooled over image questions, per dimension."""
    tallies: dict[int, list[int]] = {}
    hits = lmms_hits = total = missing = unparsed = 0
    for q in sset.questions:
        if q.answer is None:
            continue
        pred = predictions.get(q.qid)
        right = pred == q.answer  # convert_seed_for_submission.py: row['text'] == question_data['answer']
        missing += pred is None
        unparsed += pred is not None and pred not in LETTERS
        lmms_hits += pred is not None and lmms_eval_right(pred, q.answer)
        hits += right
        total += 1
        tally = tallies.setdefault(q.dimension, [0, 0])
        tally[0] += right
        tally[1] += 1
    return {
        "accuracy": _percent(hits, total),
        "accuracy_lmms_eval": _percent(lmms_hits, total),
        "num_questions": total,
        "per_dimension": {sset.dimensions.get(d, str(d)): _percent(*tallies[d]) for d in sorted(tallies)},
        "missing_predictions": missing,
        "unparsed": unparsed,  # not exactly one letter A-D: wrong under LLaVA's exact match
        "metric_rule": METRIC_RULE,
    }


class SeedBenchmark(VLMBenchmark):
    """SEED-Bench image part: lettered options, exact-letter accuracy pooled and per evaluation dimension."""

    name = "seedbench"

    def __init__(self, sset: SeedSet, prompt: str = "llava") -> None:
        if prompt not in SEED_PROMPTS:
            raise UserError(f"unknown SEED-Bench prompt layout '{prompt}' (expected one of {list(SEED_PROMPTS)})")
        self.sset, self.prompt = sset, prompt

    def prompt_items(self) -> list[PromptItem]:
        return [
            PromptItem(q.qid, seed_prompt(q, self.prompt), q.load_image)
            for q in self.sset.questions
            if q.image is not None
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "split": "image",
            "source": self.sset.source,
            "prompt": self.prompt,
            "question_format": self.sset.format,
            "num_questions": len(self.sset.questions),
            "data_counts": dict(self.sset.counts),
        }

    def score(self, predictions: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        return score_seedbench(self.sset, predictions) if self.sset.has_answers else None

    def write_outputs(self, out_dir: Path, predictions: Mapping[QuestionId, str]) -> dict[str, str]:
        return {}  # the leaderboard wants the video questions too, which are not run here

    def question_index(self) -> QuestionIndex:
        return QuestionIndex([q.qid for q in self.sset.questions], self.sset.doc_rows)


# ----------------------------------------------------------------------------------------------- registry
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotations", type=Path, help="the official SEED-Bench.json (AILab-CVC/SEED-Bench)")
    p.add_argument("--parquet", type=Path, help="lmms-lab's SEED-Bench parquet file or folder instead (pyarrow)")
    p.add_argument("--split", help="--parquet folder: the file-name prefix of the shards to read (test)")
    p.add_argument(
        "--llava-questions",
        type=Path,
        help="LLaVA's llava-seed-bench.jsonl (eval.zip): its text is the llava prompt, verbatim",
    )
    p.add_argument("--image-root", type=Path, help="the folder holding SEED-Bench-image/ (or that folder); for run")
    p.add_argument("--prompt", default="llava", choices=SEED_PROMPTS, help="prompt layout (default: llava)")


def _build(args: argparse.Namespace, run: bool) -> SeedBenchmark:
    if args.parquet is not None:
        return SeedBenchmark(load_seedbench_parquet(args.parquet, args.limit, args.split), args.prompt)
    if args.annotations is None:
        raise UserError("seedbench needs --annotations (the official SEED-Bench.json) or --parquet (lmms-lab's)")
    if run and args.image_root is None:
        raise UserError("seedbench run needs --image-root (the folder holding SEED-Bench-image/) or --parquet")
    sset = load_seedbench(args.annotations, args.image_root, args.llava_questions, args.limit)
    return SeedBenchmark(sset, args.prompt)


def _suite(folder: Path) -> dict[str, Any] | None:
    """LLaVA's playground/data/eval/seed_bench: SEED-Bench.json, SEED-Bench-image/, llava-seed-bench.jsonl."""
    annotations = folder / "SEED-Bench.json"
    if not annotations.is_file() or not (folder / IMAGE_FOLDER).is_dir():
        return None
    llava = folder / "llava-seed-bench.jsonl"
    values: dict[str, Any] = {"annotations": annotations, "image_root": folder}
    return {**values, "llava_questions": llava} if llava.is_file() else values


SPEC = register(
    BenchmarkSpec(
        name="seedbench",
        help="SEED-Bench (image, dimensions 1-9): exact-letter accuracy as LLaVA's converter, per dimension",
        add_args=_args,
        build=_build,
        max_new_tokens_help="default: 16, ample for the letter asked for (LLaVA's model_vqa_loader.py allows 128, "
        "lmms-eval's seedbench the model's default); pass 128 to match LLaVA exactly",
        suite_args=_suite,
        folder="seed_bench",
        files="SEED-Bench.json + SEED-Bench-image/ (AILab-CVC/SEED-Bench on Hugging Face), and LLaVA's "
        "llava-seed-bench.jsonl (eval.zip)",
        # LLaVA-1.5-7B's SEED-Bench image accuracy in the LLaVA-1.5 paper (arXiv 2310.03744, SEED-IMG); LLaVA's
        # docs/MODEL_ZOO.md lists 58.6 under "SEED", its image+video total. SuperClass's Table 11 has no SEED column.
        published={"llava15_7b": 66.1},
    )
)

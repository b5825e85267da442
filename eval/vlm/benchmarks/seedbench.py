"""SEED-Bench (v1), image part: evaluation dimensions 1-9 asked with lettered options, scored as LLaVA-1.5 does.

usage: superclass eval seedbench run|score --annotations SEED-Bench.json [--llava-questions llava-seed-bench.jsonl]
           --image-root seed_bench [--prompt lmms_eval] [--rule lmms_eval] --out OUT
       superclass eval seedbench run --model DIR --parquet SEED-Bench/data --out OUT [--split test]

Files (LLaVA's docs/Evaluation.md, playground/data/eval/seed_bench): the official `SEED-Bench.json`
(AILab-CVC/SEED-Bench DATASET.md: `{"questions": [{"question_id", "question", "choice_a".."choice_d", "answer"
('A'..'D'), "data_id" (the image file), "data_type" ("image" | "video"), "question_type_id"}], "question_type":
{name: id}}`), images in `SEED-Bench-image/` under `--image-root`; a question of another shape is refused naming the
file and its index, one without `answer` is `unannotated`. Optionally LLaVA's `llava-seed-bench.jsonl` (eval.zip;
`{"question_id", "image", "text", "category"}` lines), the file model_vqa_loader.py reads. `--parquet`: lmms-lab's
SEED-Bench (columns per lmms_eval/tasks/seedbench/utils.py; a row's position is lmms-eval's doc_id). The set: the
questions with `data_type` "image" (dimensions 1-9, 14,233), LLaVA's `eval_only_type='image'`; video ones counted.

Prompt `llava`: the `text` of LLaVA's JSONL verbatim, else built as LLaVA's docs/Evaluation.md gives it: question,
"A. <choice>" lines, LETTER_ANSWER_PROMPT (`llava_prompt_differs` counts JSONL texts that differ). `lmms_eval`:
lmms-eval's `seed_doc_to_text`, always built: the same text.

Rules (`official`: LLaVA's convert_seed_for_submission.py; `lmms_eval`: lmms-eval's seed_process_result) and
accuracy, pooled and per dimension: eval.vlm.scoring.seedbench.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eval.vlm.base import BenchConfig, Benchmark, QuestionSet
from eval.vlm.files import parquet_image, parquet_image_name, parquet_rows, read_json
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.scoring.seedbench import LETTERS, score_seedbench
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.evaluators import register
from pretrain.runtime.jsonl import read_jsonl_file
from vlm.templates import multiple_choice_prompt

CHOICE_KEYS = ("choice_a", "choice_b", "choice_c", "choice_d")
IMAGE_FOLDER = "SEED-Bench-image"
PARQUET_COLUMNS = ("question_id", "question", *CHOICE_KEYS, "answer", "data_type", "image")
IMAGE_SUFFIXES = ("", ".jpg", ".png", ".jpeg")  # DATASET.md writes data_id without one; the files have one
QUESTION_SHAPE = "{question_id, question, choice_a..d, answer: A-D or absent, data_id, data_type, question_type_id}"
# SEED-Bench-1's "question_type" (DATASET.md), for a file that lacks it
DIMENSIONS = {
    1: "Scene Understanding", 2: "Instance Identity", 3: "Instance Attributes", 4: "Instance Location",
    5: "Instances Counting", 6: "Spatial Relation", 7: "Instance Interaction", 8: "Visual Reasoning",
    9: "Text Understanding", 10: "Action Recognition", 11: "Action Prediction", 12: "Procedure Understanding",
}  # fmt: skip


@dataclass
class SeedQuestion:
    """One image question: options A-D, the answer letter (None when absent), dimension, image, LLaVA's text."""

    id: QuestionId
    question: str
    options: list[str]
    answer: str | None
    dimension: int
    data_id: str
    dimension_name: str = ""  # SEED-Bench.json's `question_type` name of `dimension`
    image: Path | bytes | None = None  # a file, or the encoded image of a parquet row
    llava_text: str | None = None  # LLaVA's JSONL `text`, verbatim

    def load_image(self) -> Any:
        if self.image is None:
            raise DataError(f"SEED-Bench question {self.id}: no image")
        return open_rgb(self.image)


def _question(raw: Any) -> tuple[str, SeedQuestion | None] | None:
    """(data_type, the question when it is an image one) of a SEED-Bench.json row; None when malformed."""
    if not isinstance(raw, dict):
        return None
    data_type = raw.get("data_type")
    try:
        qid, dimension = norm_id(raw["question_id"]), raw["question_type_id"]
    except (KeyError, ValueError):
        return None
    if not isinstance(data_type, str) or type(dimension) is not int:
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
    types, names = doc.get("question_type"), dict(DIMENSIONS)
    if isinstance(types, dict):
        names.update({v: str(k) for k, v in types.items() if type(v) is int})
    return names


def _llava_rows(path: str | Path, counts: dict[str, int]) -> dict[QuestionId, tuple[str, str | None]]:
    """question_id -> (text, image path) of LLaVA's llava-seed-bench.jsonl; unreadable or malformed lines counted
    (those questions' prompts are built instead)."""
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


def _tally(parsed: tuple[str, SeedQuestion | None], seen: set[QuestionId], counts: dict[str, int]) -> bool:
    """Count a parsed row (video, other data type, repeated id); whether it is a new image question to keep."""
    kind, question = parsed
    if question is None:
        counts["video" if kind == "video" else "other_data_type"] += 1
        return False
    counts["duplicate_questions"] += question.id in seen
    new = question.id not in seen
    seen.add(question.id)
    return new


def load_seedbench(annotations: str | Path, image_root: str | Path | None = None,
                   questions: str | Path | None = None, limit: int | None = None) -> QuestionSet:  # fmt: skip
    """The image questions of SEED-Bench.json, with LLaVA's question text from `questions` when given; images are
    looked up only when `image_root` is given."""
    doc = read_json(annotations, "SEED-Bench.json")
    if not isinstance(doc, dict) or not isinstance(doc.get("questions"), list):
        raise DataError(f"{annotations}: missing list field 'questions' (expected SEED-Bench.json)")
    root = Path(image_root) if image_root is not None else None
    if root is not None and not root.is_dir():
        raise DataError(f"{root}: image root is not a directory")
    counts = dict.fromkeys(("video", "other_data_type", "duplicate_questions", "unannotated", "missing_images"), 0)
    counts.update(malformed_llava_rows=0, llava_rows_missing=0, llava_prompt_differs=0)
    found: list[SeedQuestion] = []
    seen: set[QuestionId] = set()
    for index, raw in enumerate(doc["questions"]):
        parsed = _question(raw)
        if parsed is None:
            raise DataError(f"{annotations}: questions[{index}] is not {QUESTION_SHAPE}: {str(raw)[:200]}")
        if _tally(parsed, seen, counts):
            found.append(parsed[1])
    if not found:
        raise DataError(f"{annotations}: no question with data_type 'image' in 'questions' (expected SEED-Bench.json)")
    found = fixed_subset(found, limit, key=lambda q: q.dimension)
    llava = _llava_rows(questions, counts) if questions is not None else None
    for q in found:
        row = llava.get(q.id) if llava is not None else None
        counts["llava_rows_missing"] += llava is not None and row is None
        counts["unannotated"] += q.answer is None
        if row is not None:
            q.llava_text = row[0]
            counts["llava_prompt_differs"] += row[0] != multiple_choice_prompt(q.question, q.options)
        if root is not None:
            q.image = _find_image(root, q.data_id, row[1] if row is not None else None)
            counts["missing_images"] += q.image is None
    source = str(annotations) + (f" + {questions}" if questions is not None else "")
    names = _dimension_names(doc)
    for q in found:
        q.dimension_name = names.get(q.dimension, str(q.dimension))
    return QuestionSet(source, found, counts, "image")


def _image_cell(image: Any) -> tuple[bytes | None, str | None]:
    """(encoded bytes, file name) of lmms-lab's `image` cell: a list of {bytes, path} structs (one for an image)."""
    if not isinstance(image, list):
        return parquet_image(image), None
    name = parquet_image_name(image[0]) or None if image else None
    return (parquet_image(image[0]) if len(image) == 1 else None), name


def load_seedbench_parquet(path: str | Path, limit: int | None = None, split: str | None = None) -> QuestionSet:
    """lmms-lab's SEED-Bench parquet (a file, or a folder of `{split}-*.parquet` shards): its image questions; rows
    of another shape counted (`malformed_questions`); `limit` a fixed subset stratified by dimension."""
    rows, _ = parquet_rows(path, split, PARQUET_COLUMNS, "lmms-lab's SEED-Bench parquet")
    keys = ("malformed_questions", "video", "other_data_type", "duplicate_questions", "unannotated", "missing_images")
    counts = dict.fromkeys(keys, 0)
    found: list[SeedQuestion] = []
    doc_rows: list[QuestionId | None] = []
    seen: set[QuestionId] = set()
    for row in rows:
        data, name = _image_cell(row.get("image"))
        data_id = row.get("data_id") or name or str(row.get("question_id"))
        parsed = _question({**row, "data_id": data_id, "question_type_id": row.get("question_type_id", 0)})
        counts["malformed_questions"] += parsed is None
        keep = parsed is not None and _tally(parsed, seen, counts)
        doc_rows.append(parsed[1].id if keep else None)
        if keep:
            parsed[1].image = data
            found.append(parsed[1])
    if not found:
        raise DataError(f"{path}: no question with data_type 'image' (expected lmms-lab's SEED-Bench parquet)")
    found = fixed_subset(found, limit, key=lambda q: q.dimension)
    counts["missing_images"] = sum(q.image is None for q in found)
    counts["unannotated"] = sum(q.answer is None for q in found)
    for q in found:
        q.dimension_name = DIMENSIONS.get(q.dimension, str(q.dimension))
    return QuestionSet(str(path), found, counts, "image", "parquet", doc_rows)


def seed_prompt(q: SeedQuestion, layout: str = "llava") -> str:
    """The question text (no chat template): LLaVA's JSONL text, or the question, "A. opt" lines and the instruction
    (LLaVA's docs/Evaluation.md multiple-choice format = lmms-eval's `seed_doc_to_text`)."""
    if layout == "llava" and q.llava_text is not None:
        return q.llava_text
    return multiple_choice_prompt(q.question, q.options)


@dataclass
class SeedConfig(BenchConfig):
    annotations: str | None = field(default=None, metadata={"help": "the official SEED-Bench.json"})
    parquet: str | None = field(default=None, metadata={"help": "lmms-lab's SEED-Bench parquet file or folder"})
    split: str | None = field(default=None, metadata={"help": "--parquet folder: the shards' file-name prefix"})
    llava_questions: str | None = field(
        default=None, metadata={"help": "LLaVA's llava-seed-bench.jsonl (eval.zip): the llava prompt, verbatim"}
    )
    image_root: str | None = field(default=None, metadata={"help": "the folder holding SEED-Bench-image/; for run"})
    prompt: Literal["llava", "lmms_eval"] = field(default="llava", metadata={"help": "prompt layout (default: llava)"})


@register
class SeedBench(Benchmark):
    """SEED-Bench image part: lettered options, exact-letter accuracy pooled and per evaluation dimension."""

    name = "seedbench"
    description = "SEED-Bench (image, dimensions 1-9): exact-letter accuracy as LLaVA's converter, per dimension"
    Config = SeedConfig
    # LLaVA-1.5-7B's SEED-Bench image accuracy in the LLaVA-1.5 paper (arXiv 2310.03744, SEED-IMG); LLaVA's
    # docs/MODEL_ZOO.md lists 58.6 under "SEED", its image+video total. SuperClass's Table 11 has no SEED column.
    published = {"llava15_7b": 66.1}
    folder = "seed_bench"
    files = ("SEED-Bench.json + SEED-Bench-image/ (AILab-CVC/SEED-Bench on Hugging Face), and LLaVA's "
             "llava-seed-bench.jsonl (eval.zip)")  # fmt: skip
    rules = ("official", "lmms_eval")
    max_new_tokens_help = ("default: 16, ample for the letter asked for (LLaVA's model_vqa_loader.py allows 128, "
                           "lmms-eval's seedbench the model's default); pass 128 to match LLaVA exactly")  # fmt: skip

    def load(self) -> QuestionSet:
        cfg = self.config
        if cfg.parquet is not None:
            return load_seedbench_parquet(cfg.parquet, cfg.limit, cfg.split)
        if cfg.annotations is None:
            raise UserError("seedbench needs --annotations (the official SEED-Bench.json) or --parquet (lmms-lab's)")
        if self.images and cfg.image_root is None:
            raise UserError("seedbench run needs --image-root (the folder holding SEED-Bench-image/) or --parquet")
        return load_seedbench(cfg.annotations, cfg.image_root, cfg.llava_questions, cfg.limit)

    def prompt(self, item: SeedQuestion) -> str:
        return seed_prompt(item, self.config.prompt)

    def metrics(self, answers: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        if not any(q.answer is not None for q in self.questions):
            return None
        return score_seedbench(self.questions, answers, self.config.rule)

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        """LLaVA's playground/data/eval/seed_bench: SEED-Bench.json, SEED-Bench-image/, llava-seed-bench.jsonl."""
        annotations = folder / "SEED-Bench.json"
        if not annotations.is_file() or not (folder / IMAGE_FOLDER).is_dir():
            return None
        values = {"annotations": str(annotations), "image_root": str(folder)}
        llava = folder / "llava-seed-bench.jsonl"
        return {**values, "llava_questions": str(llava)} if llava.is_file() else values

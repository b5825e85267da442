"""VizWiz-VQA: the official annotation JSON (and LLaVA's question JSONL), LLaVA's prompt, VQA accuracy, EvalAI file.

usage: superclass eval vizwiz run|score --annotations val.json --image-root val (run) --out OUT [--rule lmms_eval]
       superclass eval vizwiz run --model DIR --llava-questions llava_test.jsonl --image-root test --out OUT
       superclass eval vizwiz run --model DIR --parquet VizWiz-VQA/data --split val --out OUT

Files. VizWiz's annotations (vizwiz.org, Annotations.zip), one JSON list per split: `[{"image":
"VizWiz_val_00000000.jpg", "question", "answers": [{"answer", "answer_confidence"} x10], "answer_type", ...}]`;
test.json has image and question only. A question's id is its 0-based row, the numbering of LLaVA's
`llava_test.jsonl` (eval.zip; `{"question_id", "image", "text"}` per line, as far as we can tell), so LLaVA's answer
files match either file; given the JSONL, its ids and text are used, each line taking the answers of its image's
row. Images: `{image}` under --image-root (or its val/, test/, train/). A row or line that is not a question refuses
the file; a val question without answers is counted `unannotated`, not scored. `--parquet`: lmms-lab's VizWiz-VQA
(lmms_eval/tasks/vizwiz_vqa/utils.py; val scored, test submitted): `question_id` (`VizWiz_val_00000000`, the
submission's key; its number is the id, else the row's position, which is lmms-eval's doc_id), `question`, `image`,
`answers` (strings) when present, `answer_type` or `category`.

Prompt: `llava` is LLaVA-1.5's (the JSONL's text verbatim, else the question + "\nWhen the provided information is
insufficient, respond with 'Unanswerable'.\nAnswer the question using a single word or phrase."); `lmms_eval` is
vizwiz_vqa_doc_to_text (`question.capitalize()` and the same two lines).

Rules (`official`: the VizWiz API's vqaEval.py on the answer as submitted; `lmms_eval`: vizwiz_vqa_process_results)
and VQA accuracy overall and per answer type: eval.vlm.scoring.vizwiz. A split without answers (test) gets
`submission.json` for EvalAI, `[{"image", "answer"}]` as LLaVA's converter writes it ("" where unanswered).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eval.vlm.base import BenchConfig, Benchmark, QuestionSet
from eval.vlm.files import LLAVA_QUESTION_KEYS, ImageFinder, parquet_image, parquet_rows, read_json
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.scoring.vizwiz import RULE_TEXT, score_vizwiz
from eval.vlm.scoring.vqa import evalai_normalize
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.evaluators import register
from pretrain.runtime.jsonl import read_jsonl_file
from vlm.templates import SHORT_ANSWER_PROMPT

UNANSWERABLE_PROMPT = "When the provided information is insufficient, respond with 'Unanswerable'."
PROMPT_SUFFIX = f"\n{UNANSWERABLE_PROMPT}\n{SHORT_ANSWER_PROMPT}"
PARQUET_COLUMNS = ("question_id", "question", "image")  # lmms_eval/tasks/vizwiz_vqa/utils.py reads these (+ answers)
EXPECTED = "{image, question, answers: [{answer, answer_confidence}], answer_type, ...}"
LLAVA_EXPECTED = "LLaVA's llava_test.jsonl: {question_id, image, text} per line"


@dataclass
class VizWizItem:
    """One question: its id, image file name (the submission's key), text and ground truth (None: unannotated)."""

    id: QuestionId
    image_name: str
    question: str
    answers: list[str] | None = None
    answer_type: str | None = None
    prompt: str | None = None  # LLaVA's text, verbatim (from its question JSONL)
    image: Path | bytes | None = None  # a file, or the encoded image of a parquet row

    def load_image(self) -> Any:
        if self.image is None:
            raise DataError(f"VizWiz question {self.id} ({self.image_name}): no image")
        return open_rgb(self.image)


def _annotation(index: int, row: Any) -> VizWizItem | None:
    """An annotation row as a VizWizItem (answers None when the row has none), or None when it is not a question."""
    if not isinstance(row, dict):
        return None
    image, question, answers = row.get("image"), row.get("question"), row.get("answers")
    if not isinstance(image, str) or not image or not isinstance(question, str):
        return None
    item = VizWizItem(index, image, question, answer_type=row.get("answer_type"))
    if answers:  # test.json has none
        texts = [a.get("answer") if isinstance(a, dict) else None for a in answers] if isinstance(answers, list) else []
        if not texts or not all(isinstance(t, str) for t in texts):
            return None
        item.answers = texts
    return item


def read_annotations(path: str | Path) -> list[VizWizItem]:
    """The rows of a VizWiz annotation JSON, in file order, each with its row number as id; a row that is not a
    question is a DataError naming the file and the row (a file broken in part is refused, never scored)."""
    doc = read_json(path, "VizWiz annotation JSON")
    if not isinstance(doc, list) or not doc:
        raise DataError(f"{path}: not VizWiz's annotation JSON: a list of {EXPECTED}")
    items = [_annotation(index, row) for index, row in enumerate(doc)]
    bad = next((index for index, item in enumerate(items) if item is None), None)
    if bad is not None:
        raise DataError(f"{path}: row {bad} is not {EXPECTED}: {str(doc[bad])[:80]}")
    return items


def read_llava_vizwiz(path: str | Path, by_image: dict[str, VizWizItem] | None) -> list[VizWizItem]:
    """LLaVA's question JSONL rows, with the answers of the annotation row of their image; a torn line or a row that
    is not {question_id, image, text} is a DataError naming the file (and the line)."""
    rows, bad = read_jsonl_file(path, LLAVA_QUESTION_KEYS, LLAVA_EXPECTED)
    if bad:
        raise DataError(f"{path}: {bad} unreadable line(s) (cut or not JSON); expected {LLAVA_EXPECTED}")
    items = []
    for line, row in enumerate(rows, 1):
        image, text = row.get("image"), row.get("text")
        try:
            qid = norm_id(row.get("question_id"))
        except ValueError:
            qid = None
        if qid is None or not isinstance(image, str) or not image or not isinstance(text, str):
            raise DataError(f"{path}: line {line} is not {{question_id, image, text}}: {str(row)[:80]}")
        prompt = text if text.endswith(PROMPT_SUFFIX) else None
        question = text[: -len(PROMPT_SUFFIX)] if prompt is not None else text
        item = VizWizItem(qid, image, question, prompt=prompt)
        ann = by_image.get(Path(image).name) if by_image is not None else None
        if ann is not None:
            item.answers, item.answer_type = ann.answers, ann.answer_type
        items.append(item)
    return items


def vizwiz_split(items: Sequence[VizWizItem], path: str | Path) -> str:
    """The split named by the image files (`VizWiz_val_...`), else by the file name (`val.json`, `llava_test`)."""
    match = re.match(r"VizWiz_([a-z]+)_", Path(items[0].image_name).name) if items else None
    if match:
        return match.group(1)
    match = re.search(r"(train|val|test)", Path(path).stem)
    return match.group(1) if match else "unknown"


def _annotated_subset(items: list[VizWizItem], limit: int | None, counts: dict[str, int]) -> list[VizWizItem]:
    """The `--limit` subset (stratified by answer type); on a split with answers, those without are `unannotated`."""
    items = fixed_subset(items, limit, key=lambda q: q.answer_type or "unknown")
    counts["unannotated"] = sum(q.answers is None for q in items) if any(q.answers for q in items) else 0
    return items


def load_vizwiz(annotations: str | Path | None = None, llava_questions: str | Path | None = None,
                image_root: str | Path | None = None, limit: int | None = None) -> QuestionSet:  # fmt: skip
    """VizWiz from its annotation JSON, LLaVA's question JSONL, or both; images looked up when `image_root` is given."""
    if annotations is None and llava_questions is None:
        raise UserError("vizwiz needs --annotations (val.json or test.json) and/or --llava-questions, or --parquet")
    counts = dict.fromkeys(("unannotated", "duplicate_questions", "missing_images"), 0)
    official = read_annotations(annotations) if annotations is not None else None
    candidates = official
    if llava_questions is not None:
        by_image = {Path(q.image_name).name: q for q in reversed(official)} if official is not None else None
        candidates = read_llava_vizwiz(llava_questions, by_image)
    items, seen = [], set()
    for item in candidates:
        counts["duplicate_questions"] += item.id in seen
        if item.id not in seen:
            seen.add(item.id)
            items.append(item)
    split = vizwiz_split(items, annotations if annotations is not None else llava_questions)
    items = _annotated_subset(items, limit, counts)
    if image_root is not None:
        finder = ImageFinder(image_root, [".", split, "val", "test", "train"])
        for item in items:
            item.image = finder.find([item.image_name])
            counts["missing_images"] += item.image is None
    source = " + ".join(str(p) for p in (llava_questions, annotations) if p is not None)
    return QuestionSet(source, items, counts, split, "official" if llava_questions is None else "llava_jsonl")


def _parquet_question(position: int, row: dict[str, Any]) -> VizWizItem | None:
    """An lmms-lab row as a VizWizItem (answers None when it has none), or None when it is not a question."""
    name, question, answers = row.get("question_id"), row.get("question"), row.get("answers")
    if not isinstance(name, str) or not name.strip() or not isinstance(question, str):
        return None
    if isinstance(answers, list):  # strings (lmms-lab), or the official {answer, answer_confidence} dicts
        answers = [a.get("answer") if isinstance(a, dict) else a for a in answers]
    if answers is not None and (not isinstance(answers, list) or not all(isinstance(a, str) for a in answers)):
        return None
    match = re.fullmatch(r"VizWiz_[a-z]+_(\d+)", name.strip())
    answer_type = row.get("answer_type", row.get("category"))
    item = VizWizItem(int(match.group(1)) if match else position, f"{name.strip()}.jpg", question)
    item.answers, item.answer_type = answers or None, answer_type if isinstance(answer_type, str) else None
    item.image = parquet_image(row.get("image"))
    return item


def load_vizwiz_parquet(path: str | Path, limit: int | None = None, split: str | None = None) -> QuestionSet:
    """lmms-lab's VizWiz-VQA parquet (a file, or a folder of `{split}-*.parquet` shards, `split` choosing them);
    rows of another shape counted `malformed_questions`, repeated ids `duplicate_questions`."""
    rows, shard_split = parquet_rows(path, split, PARQUET_COLUMNS, "lmms-lab's VizWiz-VQA parquet")
    counts = dict.fromkeys(("malformed_questions", "unannotated", "duplicate_questions", "missing_images"), 0)
    items: list[VizWizItem] = []
    doc_rows: list[QuestionId | None] = []
    seen: set[QuestionId] = set()
    for position, row in enumerate(rows):
        item = _parquet_question(position, row)
        counts["malformed_questions"] += item is None
        counts["duplicate_questions"] += item is not None and item.id in seen
        keep = item is not None and item.id not in seen
        doc_rows.append(item.id if keep else None)
        if keep:
            seen.add(item.id)
            items.append(item)
    if not items:
        raise DataError(f"{path}: no well-formed VizWiz question (expected lmms-lab's VizWiz-VQA parquet)")
    split = vizwiz_split(items, path)
    items = _annotated_subset(items, limit, counts)
    counts["missing_images"] = sum(item.image is None for item in items)
    return QuestionSet(str(path), items, counts, shard_split if split == "unknown" else split, "parquet", doc_rows)


@dataclass
class VizWizConfig(BenchConfig):
    annotations: str | None = field(default=None, metadata={"help": "VizWiz's val.json (scored) or test.json"})
    llava_questions: str | None = field(default=None, metadata={"help": "LLaVA's llava_test.jsonl (ids, text)"})
    parquet: str | None = field(default=None, metadata={"help": "lmms-lab's VizWiz-VQA parquet file or folder"})
    split: str | None = field(default=None, metadata={"help": "--parquet folder: the shards' file-name prefix"})
    image_root: str | None = field(default=None, metadata={"help": "the split's image folder (or one with val/)"})
    prompt: Literal["llava", "lmms_eval"] = field(default="llava", metadata={"help": "prompt layout"})


@register
class VizWiz(Benchmark):
    """VizWiz-VQA: VQA accuracy per answer type on val; the EvalAI submission for test."""

    name = "vizwiz"
    description = "VizWiz-VQA: VQA accuracy (VizWiz API) per answer type on val; EvalAI submission for test"
    Config = VizWizConfig
    published = {"superclass_table11": 54.33, "llava15_7b": 50.0}
    folder = "vizwiz"
    files = ("LLaVA's llava_test.jsonl (eval.zip) + test/ images (+ test.json), or val.json + val/ (vizwiz.org "
             "Annotations.zip, val.zip)")  # fmt: skip
    rules = ("official", "lmms_eval")
    max_new_tokens_help = ("default: 16, ample for the single word or phrase asked for (LLaVA's model_vqa_loader "
                           "allows 128, lmms-eval the model's default); pass 128 to match LLaVA exactly")  # fmt: skip

    def load(self) -> QuestionSet:
        cfg = self.config
        if cfg.parquet is not None:
            return load_vizwiz_parquet(cfg.parquet, cfg.limit, cfg.split)
        if self.images and cfg.image_root is None:
            raise UserError("vizwiz run needs --image-root (the split's image folder) or --parquet")
        return load_vizwiz(cfg.annotations, cfg.llava_questions, cfg.image_root, cfg.limit)

    def prompt(self, item: VizWizItem) -> str:
        """LLaVA's JSONL text verbatim (or rebuilt) under `llava`; lmms-eval's capitalised question otherwise."""
        if self.config.prompt == "lmms_eval":
            return f"{item.question.capitalize()}{PROMPT_SUFFIX}"
        return item.prompt if item.prompt is not None else f"{item.question}{PROMPT_SUFFIX}"

    def metrics(self, answers: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        items = self.questions
        return score_vizwiz(items, answers, self.config.rule) if any(q.answers for q in items) else None

    def describe_extra(self) -> dict[str, Any]:
        return {"answer_rule": RULE_TEXT[self.config.rule]}

    def submission(self, out_dir: Path, answers: Mapping[QuestionId, str]) -> dict[str, str]:
        """`submission.json` for a split without answers (test): LLaVA's convert_vizwiz_for_submission.py format."""
        if any(q.answers for q in self.questions):
            return {}
        rows, empty = [], 0
        for item in self.questions:
            pred = answers.get(item.id)
            empty += pred is None
            rows.append({"image": item.image_name, "answer": evalai_normalize(pred) if pred is not None else ""})
        path = out_dir / "submission.json"
        write_text_atomically(path, json.dumps(rows) + "\n")
        return {"submission": str(path), "submission_empty_answers": str(empty)}

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        """LLaVA's layout (vizwiz/llava_test.jsonl + test/, test.json if there: an EvalAI submission, as LLaVA reports)
        first, else the authors' val (val.json + val/, scored here)."""
        if (folder / "llava_test.jsonl").is_file() and (folder / "test").is_dir():
            values = {"llava_questions": str(folder / "llava_test.jsonl"), "image_root": str(folder / "test")}
            test = folder / "test.json"
            return {**values, "annotations": str(test)} if test.is_file() else values
        if (folder / "val.json").is_file() and (folder / "val").is_dir():
            return {"annotations": str(folder / "val.json"), "image_root": str(folder / "val")}
        return None

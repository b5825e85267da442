"""GQA testdev-balanced: the official questions JSON (and LLaVA's question JSONL), LLaVA's prompt, official accuracy.

usage: superclass eval gqa run|score --questions testdev_balanced_questions.json [--llava-questions
           llava_gqa_testdev_balanced.jsonl] --image-root images (run) --out OUT [--rule lmms_eval]
       superclass eval gqa run --model DIR --parquet GQA/testdev_balanced_instructions
           --parquet-images GQA/testdev_balanced_images --out OUT

Files. GQA's questions JSON (gqadataset.org, questions1.2.zip): `{question id: {"imageId", "question", "answer",
"isBalanced", "types": {"structural", "semantic", ...}, ...}}`; images `{imageId}.jpg` (under --image-root or its
`images/`). LLaVA's `llava_gqa_testdev_balanced.jsonl` (eval.zip): `{"question_id", "image", "text"}` per line, its
text (question + "\nAnswer the question using a single word or phrase.") asked verbatim, its answer and types by id
from the questions JSON. `isBalanced: false` questions are left out (`unbalanced`), as eval.py scores balanced ones
only; one without `answer` is counted `unannotated`, not scored. An entry or line that is not a question refuses the
file. `--parquet`: lmms-lab's GQA (lmms_eval/tasks/gqa/gqa.yaml, utils.py): testdev_balanced_instructions (`id`,
`imageId`, `question`, `answer`, ...; a row's position is lmms-eval's doc_id) and testdev_balanced_images
(`--parquet-images`, needed by run; `id` = imageId, `image`).

Prompt: `llava` (LLaVA's text) or `lmms_eval` (gqa_doc_to_text: the same). Rules (`official`: LLaVA's
convert_gqa_for_eval.py, then GQA's eval.py exact match; `lmms_eval`: gqa.yaml's exact_match) and accuracy overall,
binary/open and per structural and semantic type: eval.vlm.scoring.gqa.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from eval.vlm.base import BenchConfig, Benchmark, QuestionSet
from eval.vlm.files import LLAVA_QUESTION_KEYS, ImageFinder, parquet_image, parquet_rows, read_json
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.scoring.gqa import RULE_TEXT, convert_prediction, score_gqa
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.evaluators import register
from pretrain.runtime.jsonl import read_jsonl_file
from vlm.templates import SHORT_ANSWER_PROMPT

EXPECTED = "{imageId, question, answer, types, ...}"
LLAVA_EXPECTED = "LLaVA's llava_gqa_testdev_balanced.jsonl: {question_id, image, text} per line"
PARQUET_COLUMNS = ("id", "imageId", "question", "answer")  # lmms-lab/GQA testdev_balanced_instructions
IMAGE_COLUMNS = ("id", "image")  # lmms-lab/GQA testdev_balanced_images (lmms_eval/tasks/gqa/utils.py)
COUNTS = ("unbalanced", "unannotated", "duplicate_questions", "missing_images")  # the loaders' data counts


@dataclass
class GQAItem:
    """One question: ids, text, image, answer (None: unannotated) and the official breakdown types."""

    id: QuestionId
    raw_id: str  # as the files write it (leading zeros kept): the official predictions file is keyed by it
    question: str
    image_id: str
    answer: str | None = None
    structural: str | None = None
    semantic: str | None = None
    prompt: str | None = None  # LLaVA's text, verbatim (from its question JSONL)
    image_name: str | None = None  # LLaVA's `image` (relative to the image folder)
    image: Path | bytes | None = None  # the file, or its bytes from lmms-lab's image parquet
    balanced: bool = True  # eval.py scores only isBalanced questions

    def load_image(self) -> Any:
        if self.image is None:
            raise DataError(f"GQA question {self.raw_id}: no image")
        return open_rgb(self.image)


def _official_question(raw_id: str, row: Any) -> GQAItem | None:
    """A questions-JSON entry (or lmms-lab row) as a GQAItem, or None when it is not a question."""
    if not isinstance(row, dict):
        return None
    text, image_id, answer, types = row.get("question"), row.get("imageId"), row.get("answer"), row.get("types")
    if not isinstance(text, str) or not isinstance(image_id, (str, int)) or str(image_id) == "":
        return None
    if not isinstance(answer, (str, type(None))):
        return None
    types = types if isinstance(types, dict) else {}
    try:
        qid = norm_id(raw_id)
    except ValueError:
        return None
    item = GQAItem(qid, raw_id, text, str(image_id), answer, types.get("structural"), types.get("semantic"))
    item.balanced = row.get("isBalanced", True) is not False
    return item


def read_gqa_questions(path: str | Path) -> dict[str, GQAItem]:
    """raw id -> question of GQA's questions JSON, in file order; an entry that is not a question is a DataError
    naming the file and the entry (a file broken in part is refused, never scored)."""
    doc = read_json(path, "GQA questions JSON")
    if not isinstance(doc, dict) or not doc:
        raise DataError(f"{path}: not GQA's questions JSON: an object of question id -> {EXPECTED}")
    out: dict[str, GQAItem] = {}
    for raw_id, row in doc.items():
        item = _official_question(raw_id, row)
        if item is None:
            raise DataError(f"{path}: question {raw_id!r} is not {EXPECTED}: {str(row)[:80]}")
        out[raw_id] = item
    return out


def read_llava_gqa(path: str | Path, official: dict[str, GQAItem] | None) -> list[GQAItem]:
    """LLaVA's question JSONL rows (answer and types from `official` by id); a torn line or a row that is not
    {question_id, image, text} is a DataError naming the file (and the line)."""
    rows, bad = read_jsonl_file(path, LLAVA_QUESTION_KEYS, LLAVA_EXPECTED)
    if bad:
        raise DataError(f"{path}: {bad} unreadable line(s) (cut or not JSON); expected {LLAVA_EXPECTED}")
    suffix, items = f"\n{SHORT_ANSWER_PROMPT}", []
    for line, row in enumerate(rows, 1):
        raw, image, text = row.get("question_id"), row.get("image"), row.get("text")
        try:
            qid = norm_id(raw)
        except ValueError:
            qid = None
        if qid is None or not isinstance(image, str) or not image or not isinstance(text, str):
            raise DataError(f"{path}: line {line} is not {{question_id, image, text}}: {str(row)[:80]}")
        prompt = text if text.endswith(suffix) else None
        ann = official.get(str(raw)) if official is not None else None
        if ann is not None:  # the official entry (answer, types, raw id), asked in LLaVA's text
            items.append(replace(ann, prompt=prompt, image_name=image))
        else:
            question = text[: -len(suffix)] if prompt is not None else text
            items.append(GQAItem(qid, str(raw), question, Path(image).stem, prompt=prompt, image_name=image))
    return items


def gqa_tier(path: str | Path) -> str:
    """The tier of a questions file, as eval.py's --tier names it (`testdev_balanced`); `gqa` when unknown."""
    match = re.search(r"((?:testdev|val|train|test|challenge|submission)_(?:balanced|all))", Path(path).name)
    return match.group(1) if match else "gqa"


def _select(candidates: Sequence[GQAItem], limit: int | None, counts: dict[str, int]) -> tuple[list, list]:
    """(the balanced questions, each id once; their fixed `--limit` subset, stratified by structural type), counting
    `unbalanced`, `duplicate_questions` and, on a tier with answers, the subset's `unannotated` questions."""
    kept, seen = [], set()
    for item in candidates:
        counts["unbalanced"] += not item.balanced
        counts["duplicate_questions"] += item.balanced and item.id in seen  # "0123" and "123": one id
        if item.balanced and item.id not in seen:
            seen.add(item.id)
            kept.append(item)
    items = fixed_subset(kept, limit, key=lambda q: q.structural or "unknown")
    if any(item.answer is not None for item in items):
        counts["unannotated"] = sum(item.answer is None for item in items)
    return kept, items


def load_gqa(questions: str | Path | None = None, llava_questions: str | Path | None = None,
             image_root: str | Path | None = None, limit: int | None = None) -> QuestionSet:  # fmt: skip
    """GQA from its questions JSON, LLaVA's question JSONL, or both (LLaVA's rows, the JSON's answers and types);
    images are looked up only when `image_root` is given."""
    if questions is None and llava_questions is None:
        raise UserError("gqa needs --questions (testdev_balanced_questions.json), --llava-questions or --parquet")
    counts = dict.fromkeys(COUNTS, 0)
    official = read_gqa_questions(questions) if questions is not None else None
    candidates = list(official.values()) if llava_questions is None else read_llava_gqa(llava_questions, official)
    items = _select(candidates, limit, counts)[1]
    if image_root is not None:
        finder = ImageFinder(image_root, [".", "images"])
        for item in items:
            item.image = finder.find([item.image_name or f"{item.image_id}.jpg"])
            counts["missing_images"] += item.image is None
    tier = gqa_tier(questions if questions is not None else llava_questions)
    source = " + ".join(str(p) for p in (llava_questions, questions) if p is not None)
    return QuestionSet(source, items, counts, tier, "official" if llava_questions is None else "llava_jsonl")


def _parquet_images(images: str | Path, split: str, wanted: set[str]) -> dict[str, bytes]:
    """imageId -> encoded image of lmms-lab's testdev_balanced_images parquet (the first of each id)."""
    image_split = split if Path(images).is_dir() else None
    rows, _ = parquet_rows(images, image_split, IMAGE_COLUMNS, "lmms-lab's GQA testdev_balanced_images parquet")
    found: dict[str, bytes] = {}
    for row in rows:
        image_id, data = str(row.get("id")), parquet_image(row.get("image"))
        if image_id in wanted and data is not None:
            found.setdefault(image_id, data)
    return found


def load_gqa_parquet(path: str | Path, images: str | Path | None = None, limit: int | None = None,
                     split: str | None = None) -> QuestionSet:  # fmt: skip
    """lmms-lab's GQA testdev_balanced_instructions parquet (file or folder of `{split}-*.parquet`), its images from
    the testdev_balanced_images parquet when given; rows of another shape are counted `malformed_questions`."""
    rows, split = parquet_rows(path, split, PARQUET_COLUMNS, "lmms-lab's GQA testdev_balanced_instructions parquet")
    counts = dict.fromkeys(("malformed_questions", *COUNTS), 0)
    doc_rows = [_official_question(str(row["id"]), row) if row.get("id") is not None else None for row in rows]
    counts["malformed_questions"] = sum(item is None for item in doc_rows)
    kept, items = _select([item for item in doc_rows if item is not None], limit, counts)
    if not kept:
        raise DataError(f"{path}: no well-formed GQA question (expected lmms-lab's GQA testdev_balanced_instructions)")
    asked = {id(item) for item in kept}  # the row objects kept: a doc_id names a question only if its row is one
    doc_ids = [item.id if item is not None and id(item) in asked else None for item in doc_rows]
    if images is not None:
        found = _parquet_images(images, split, {item.image_id for item in items})
        for item in items:
            item.image = found.get(item.image_id)
            counts["missing_images"] += item.image is None
    source = str(path) + (f" + {images}" if images is not None else "")
    return QuestionSet(source, items, counts, f"{split}_balanced", "parquet", doc_ids)


@dataclass
class GQAConfig(BenchConfig):
    questions: str | None = field(default=None, metadata={"help": "GQA's testdev_balanced_questions.json"})
    llava_questions: str | None = field(
        default=None, metadata={"help": "LLaVA's llava_gqa_testdev_balanced.jsonl: its ids, images and prompt text"}
    )
    image_root: str | None = field(default=None, metadata={"help": "GQA's image folder ({imageId}.jpg, or images/)"})
    parquet: str | None = field(default=None, metadata={"help": "lmms-lab's GQA testdev_balanced_instructions"})
    parquet_images: str | None = field(default=None, metadata={"help": "lmms-lab's GQA testdev_balanced_images"})
    split: str | None = field(default=None, metadata={"help": "--parquet folder: the shards' file-name prefix"})
    prompt: Literal["llava", "lmms_eval"] = field(default="llava", metadata={"help": "lmms_eval: the same text"})


@register
class GQA(Benchmark):
    """GQA: exact-match accuracy with the official breakdowns; eval.py's predictions file beside it."""

    name = "gqa"
    description = ("GQA testdev-balanced: exact-match accuracy (GQA's eval.py after LLaVA's converter), "
                   "per question type")  # fmt: skip
    Config = GQAConfig
    published = {"superclass_table11": 60.96, "llava15_7b": 62.0}
    folder = "gqa"
    files = ("testdev_balanced_questions.json + images/ (gqadataset.org), and LLaVA's llava_gqa_testdev_balanced.jsonl "
             "(eval.zip); LLaVA's layout keeps the GQA files in data/")  # fmt: skip
    rules = ("official", "lmms_eval")
    max_new_tokens_help = ("default: 16, as lmms-eval's gqa, ample for the single word or phrase asked for "
                           "(LLaVA's model_vqa_loader allows 128; pass 128 to match it exactly)")  # fmt: skip

    def load(self) -> QuestionSet:
        cfg = self.config
        if cfg.parquet is not None:
            if self.images and cfg.parquet_images is None:
                raise UserError("gqa run --parquet needs --parquet-images (lmms-lab's GQA testdev_balanced_images)")
            return load_gqa_parquet(cfg.parquet, cfg.parquet_images, cfg.limit, cfg.split)
        if self.images and cfg.image_root is None:
            raise UserError("gqa run needs --image-root (GQA's images folder) or --parquet")
        return load_gqa(cfg.questions, cfg.llava_questions, cfg.image_root, cfg.limit)

    def prompt(self, item: GQAItem) -> str:
        """LLaVA's JSONL text verbatim under `llava`; else the question and the short-answer instruction."""
        if self.config.prompt == "llava" and item.prompt is not None:
            return item.prompt
        return f"{item.question}\n{SHORT_ANSWER_PROMPT}"

    def metrics(self, answers: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        items = self.questions
        return score_gqa(items, answers, self.config.rule) if any(q.answer is not None for q in items) else None

    def describe_extra(self) -> dict[str, Any]:
        return {"answer_rule": RULE_TEXT[self.config.rule]}

    def submission(self, out_dir: Path, answers: Mapping[QuestionId, str]) -> dict[str, str]:
        """`{tier}_predictions.json` as LLaVA's converter writes it ("" where unanswered): eval.py's input."""
        rows, empty = [], 0
        for item in self.questions:
            pred = answers.get(item.id)
            empty += pred is None
            rows.append({"questionId": item.raw_id, "prediction": convert_prediction(pred or "")})
        path = out_dir / f"{self.question_set.split}_predictions.json"
        write_text_atomically(path, json.dumps(rows) + "\n")
        return {"gqa_predictions": str(path), "gqa_predictions_empty": str(empty)}

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        """LLaVA's layout (gqa/llava_gqa_testdev_balanced.jsonl, gqa/data/{testdev_balanced_questions.json,
        images/}) or the authors' (testdev_balanced_questions.json + images/ in the folder)."""
        name = "testdev_balanced_questions.json"
        questions = next((p / name for p in (folder / "data", folder) if (p / name).is_file()), None)
        images = next((p for p in (folder / "data" / "images", folder / "images") if p.is_dir()), None)
        if questions is None or images is None:
            return None
        values = {"questions": str(questions), "image_root": str(images)}
        llava = folder / "llava_gqa_testdev_balanced.jsonl"
        return {**values, "llava_questions": str(llava)} if llava.is_file() else values

"""POPE (object hallucination on COCO): the adversarial, popular and random splits as POPE's authors distribute them,
asked with LLaVA-1.5's prompt and read with POPE's own yes/no rule.

usage: superclass eval pope run --model DIR --annotation-dir pope/coco [--llava-questions llava_pope_test.jsonl]
           --image-root pope/val2014 --out OUT       |   --parquet POPE/data [--split test] [--rule lmms_eval]

Files: `coco_pope_{split}.json` (github.com/AoiDragon/POPE output/coco; LLaVA-1.5 used commit e3e3926), JSON lines
`{question_id, image, text, label}`, COCO val2014 images. LLaVA's `llava_pope_test.jsonl` asks the same questions
with ids `split offset + question_id` (adversarial 1.., random 10000001.., popular 20000001..); its rows take their
labels by (split, image, question), not by position as LLaVA's eval_pope.py (a row without one: `unannotated`).
Without it POPE's files are the questions, with LLaVA's ids. `--parquet`: lmms-lab's POPE (lmms_eval/tasks/pope/
utils.py columns); a row's split is its `category` or its shard's name; its position is lmms-eval's doc_id (its own
question_id restarts per split, so lmms-eval samples are scored only with --parquet).
Prompt `llava`: LLaVA's JSONL text verbatim, else question + SHORT_ANSWER_PROMPT (pope.sh); `lmms_eval`: the
question stripped + the same instruction (pope_doc_to_text).
Rules `official` (POPE's evaluate.py = LLaVA's eval_pope.py) and `lmms_eval`, and the scores (per split accuracy,
precision, recall, F1, yes-ratio; headline `f1_mean`, LLaVA-1.5's F1 averaged over splits): eval.vlm.scoring.pope.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eval.vlm.answers import QuestionIndex
from eval.vlm.base import BenchConfig, Benchmark, QuestionSet
from eval.vlm.files import ImageFinder, parquet_image, parquet_image_name, parquet_rows
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.scoring.pope import SPLITS, score_pope
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.evaluators import register
from pretrain.runtime.jsonl import read_jsonl_file
from vlm.templates import SHORT_ANSWER_PROMPT

# LLaVA's llava_pope_test.jsonl numbers a split's questions from these offsets (adversarial 1-3000, random
# 10000001-10002910, popular 20000001-20003000, each POPE's question_id).
LLAVA_ID_OFFSET = {"adversarial": 0, "random": 10_000_000, "popular": 20_000_000}
LABEL_KEYS = ("question_id", "image", "text", "label")
LLAVA_KEYS = ("question_id", "image", "text", "category")
PARQUET_COLUMNS = ("question_id", "question", "answer", "image")  # lmms_eval/tasks/pope/utils.py reads these


@dataclass
class PopeItem:
    """One question: LLaVA's id, its split, COCO image name, question, label, image (file or bytes) and LLaVA's text."""

    id: QuestionId
    split: str
    image_name: str
    question: str
    label: str
    image: Path | bytes | None = None
    llava_text: str | None = None  # LLaVA's JSONL `text`, the `llava` prompt verbatim

    def load_image(self) -> Any:
        if self.image is None:
            raise DataError(f"POPE question {self.id}: image {self.image_name} not found")
        return open_rgb(self.image)


def _int_id(value: Any) -> int | None:
    """POPE's question_id as an int under the next split's offset, or None."""
    try:
        qid = norm_id(value)
    except ValueError:
        return None
    return qid if isinstance(qid, int) and 0 <= qid < 10_000_000 else None


def read_labels(path: Path, split: str, counts: dict[str, int]) -> list[PopeItem]:
    """The questions of one `coco_pope_{split}.json` with LLaVA's ids; a torn or malformed line is a DataError
    naming the file and line (a file broken in part is refused, never scored); duplicates counted."""
    rows, bad = read_jsonl_file(path, LABEL_KEYS, "POPE's JSON lines {question_id, image, text, label: yes|no}")
    if bad:
        raise DataError(f"{path}: {bad} unreadable line(s) (cut or not JSON); re-download POPE's output/coco files")
    items, seen = [], set()
    for line, row in enumerate(rows, 1):
        qid, image, text, label = _int_id(row.get("question_id")), row.get("image"), row.get("text"), row.get("label")
        if qid is None or not isinstance(image, str) or not isinstance(text, str) or label not in ("yes", "no"):
            raise DataError(f"{path}: line {line} is not {{question_id, image, text, label: yes|no}}: {row}")
        counts["duplicate_questions"] += qid in seen
        if qid not in seen:
            seen.add(qid)
            items.append(PopeItem(LLAVA_ID_OFFSET[split] + qid, split, image, text, label))
    return items


def _from_llava(path: Path, labels: dict[str, list[PopeItem]], counts: dict[str, int]) -> list[PopeItem]:
    """LLaVA's question JSONL rows of the chosen splits, each labelled from POPE's file by (split, image, question)."""
    rows, bad = read_jsonl_file(path, LLAVA_KEYS, "LLaVA's llava_pope_test.jsonl: {question_id, image, text, category}")
    counts["malformed_questions"] += bad
    pending: dict[tuple[str, str, str], list[PopeItem]] = {}
    for split, items in labels.items():
        for item in items:
            pending.setdefault((split, item.image_name, item.question), []).append(item)
    suffix, out, seen = "\n" + SHORT_ANSWER_PROMPT, [], set()
    for row in rows:
        image, text, split = row.get("image"), row.get("text"), row.get("category")
        try:
            qid = norm_id(row.get("question_id"))
        except ValueError:
            qid = None
        if qid is None or not all(isinstance(v, str) for v in (image, text, split)):
            counts["malformed_questions"] += 1
        elif split not in labels:
            counts["other_splits"] += 1
        elif qid in seen:
            counts["duplicate_questions"] += 1
        else:
            seen.add(qid)
            question = text[: -len(suffix)] if text.endswith(suffix) else text
            matches = pending.get((split, image, question))
            counts["unannotated"] += not matches
            if matches:
                out.append(PopeItem(qid, split, image, question, matches.pop(0).label, llava_text=text))
    return out


def load_pope(annotation_dir: str | Path, questions: str | Path | None = None, image_root: str | Path | None = None,
              splits: Sequence[str] = SPLITS, limit: int | None = None) -> QuestionSet:  # fmt: skip
    """POPE's `coco_pope_{split}.json` files in `annotation_dir` (and LLaVA's question JSONL when given); images
    are looked up only when `image_root` is given; `limit` keeps a fixed subset stratified by split."""
    folder = Path(annotation_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected POPE's coco folder with coco_pope_{{split}}.json)")
    counts = dict.fromkeys(("malformed_questions", "duplicate_questions", "unannotated", "other_splits"), 0)
    counts["missing_images"] = 0
    labels = {s: read_labels(folder / f"coco_pope_{s}.json", s, counts) for s in dict.fromkeys(splits)}
    items = [i for split_items in labels.values() for i in split_items]
    if questions is not None:
        items = _from_llava(Path(questions), labels, counts)
    if not items:
        raise DataError(f"{questions or folder}: no question with a label in {folder} for splits {list(labels)}")
    items = fixed_subset(items, limit, key=lambda item: item.split)
    if image_root is not None:
        finder = ImageFinder(image_root, [".", "val2014"])
        for item in items:
            item.image = finder.find([item.image_name])
            counts["missing_images"] += item.image is None
    source = f"{folder}" + (f" + {questions}" if questions is not None else "")
    return QuestionSet(source, items, counts, "+".join(labels), "pope" if questions is None else "llava_jsonl")


def _parquet_item(row: dict[str, Any], split: str) -> PopeItem | None:
    """An lmms-lab row as a PopeItem with LLaVA's id, or None when malformed."""
    qid, question, answer = _int_id(row.get("question_id")), row.get("question"), row.get("answer")
    label = answer.lower().strip() if isinstance(answer, str) else None  # pope_process_results' reading
    if qid is None or not isinstance(question, str) or label not in ("yes", "no"):
        return None
    name = row.get("image_source") or parquet_image_name(row.get("image"))
    return PopeItem(LLAVA_ID_OFFSET[split] + qid, split, name, question, label, parquet_image(row.get("image")))


def load_pope_parquet(path: str | Path, splits: Sequence[str] = SPLITS, limit: int | None = None,
                      split: str | None = None) -> QuestionSet:  # fmt: skip
    """lmms-lab's POPE parquet (a file, or a folder of `{split}-*.parquet` shards, `split` choosing them); rows of
    other POPE splits are left out; `limit` keeps a fixed subset stratified by split."""
    rows, shard_split = parquet_rows(path, split, PARQUET_COLUMNS, "lmms-lab's POPE parquet")
    counts = dict.fromkeys(("malformed_questions", "duplicate_questions", "other_splits", "missing_images"), 0)
    items, doc_rows, seen = [], [], set()
    for row in rows:
        pope_split = row.get("category", shard_split)
        if "category" not in row and shard_split not in SPLITS:
            expected = f"lmms-lab's POPE: a category column, or shards named after one of {list(SPLITS)}"
            raise DataError(
                f"{path}: no 'category' column and the split '{shard_split}' is not a POPE split ({expected})"
            )
        item = _parquet_item(row, pope_split) if pope_split in SPLITS else None
        counts["malformed_questions"] += item is None
        counts["duplicate_questions"] += item is not None and item.id in seen
        counts["other_splits"] += item is not None and pope_split not in splits
        keep = item is not None and item.id not in seen and pope_split in splits
        doc_rows.append(item.id if keep else None)
        if keep:
            seen.add(item.id)
            items.append(item)
    if not items:
        raise DataError(f"{path}: no well-formed POPE question of the splits {list(splits)}")
    items = fixed_subset(items, limit, key=lambda item: item.split)
    counts["missing_images"] = sum(item.image is None for item in items)
    chosen = [s for s in dict.fromkeys(splits) if any(item.split == s for item in items)]
    return QuestionSet(str(path), items, counts, "+".join(chosen), "parquet", doc_rows)


@dataclass
class PopeConfig(BenchConfig):
    annotation_dir: str | None = field(default=None, metadata={"help": "POPE's coco folder: coco_pope_{split}.json"})
    parquet: str | None = field(default=None, metadata={"help": "lmms-lab's POPE parquet file or folder instead"})
    split: str | None = field(default=None, metadata={"help": "--parquet folder: the shards' file-name prefix"})
    llava_questions: str | None = field(
        default=None, metadata={"help": "LLaVA's llava_pope_test.jsonl (its ids and text, verbatim)"}
    )
    image_root: str | None = field(default=None, metadata={"help": "COCO val2014 image folder; needed by run"})
    splits: list[str] = field(default_factory=lambda: list(SPLITS), metadata={"help": "default: all three"})
    prompt: Literal["llava", "lmms_eval"] = field(default="llava", metadata={"help": "prompt layout"})


@register
class Pope(Benchmark):
    """POPE: per-split accuracy/precision/recall/F1/yes-ratio from POPE's yes/no rule; headline the mean F1."""

    name = "pope"
    description = "POPE: yes/no object hallucination (adversarial, popular, random); POPE's answer rule, mean F1"
    Config = PopeConfig
    headline = "f1_mean"
    published = {"superclass_table11": 85.69, "llava15_7b": 85.9}
    folder = "pope"
    files = ("coco/coco_pope_{adversarial,popular,random}.json (github.com/AoiDragon/POPE @ e3e3926, output/coco) "
             "+ val2014/ (COCO), and LLaVA's llava_pope_test.jsonl (eval.zip)")  # fmt: skip
    rules = ("official", "lmms_eval")
    max_new_tokens_help = (
        "default: 16, ample for the single word asked for (LLaVA's model_vqa_loader and lmms-eval's pope allow 128)"
    )

    def load(self) -> QuestionSet:
        cfg = self.config
        if not cfg.splits or any(s not in SPLITS for s in cfg.splits):
            raise UserError(f"POPE splits {list(cfg.splits)}: expected some of {list(SPLITS)}")
        if cfg.parquet is not None:
            return load_pope_parquet(cfg.parquet, cfg.splits, cfg.limit, cfg.split)
        if cfg.annotation_dir is None:
            raise UserError("pope needs --annotation-dir (POPE's coco folder) or --parquet (lmms-lab's POPE)")
        if self.images and cfg.image_root is None:
            raise UserError("pope run needs --image-root (the COCO val2014 images) or --parquet")
        return load_pope(cfg.annotation_dir, cfg.llava_questions, cfg.image_root, cfg.splits, cfg.limit)

    def prompt(self, item: PopeItem) -> str:
        if self.config.prompt == "llava" and item.llava_text is not None:
            return item.llava_text
        question = item.question.strip() if self.config.prompt == "lmms_eval" else item.question
        return f"{question}\n{SHORT_ANSWER_PROMPT}"

    def metrics(self, answers: Mapping[QuestionId, str]) -> dict[str, Any]:
        return score_pope(self.questions, answers, self.config.splits, self.config.rule)

    def question_index(self) -> QuestionIndex:
        qset = self.question_set
        ambiguous = None if qset.doc_rows is not None else "POPE's question_id restarts in each split of lmms-lab's "
        ambiguous = ambiguous and ambiguous + "parquet, so these ids are ambiguous: score them with --parquet"
        return QuestionIndex([item.id for item in qset.items], qset.doc_rows, ambiguous_lmms_ids=ambiguous)

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        """LLaVA's playground/data/eval/pope (coco/, llava_pope_test.jsonl, val2014/) or POPE's files beside val2014."""
        names = [f"coco_pope_{s}.json" for s in SPLITS]
        labels = next(
            (d for d in (folder / "coco", folder / "output" / "coco", folder) if (d / names[0]).is_file()), None
        )
        if labels is None or not all((labels / n).is_file() for n in names) or not (folder / "val2014").is_dir():
            return None
        values: dict[str, Any] = {"annotation_dir": str(labels), "image_root": str(folder / "val2014")}
        if (folder / "llava_pope_test.jsonl").is_file():
            values["llava_questions"] = str(folder / "llava_pope_test.jsonl")
        return values

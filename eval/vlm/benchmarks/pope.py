"""POPE (object hallucination on COCO): the adversarial, popular and random splits, as POPE's authors distribute
them, asked with LLaVA-1.5's prompt and read with POPE's own yes/no rule.

usage: superclass eval pope run --model DIR --annotation-dir pope/coco [--llava-questions pope/llava_pope_test.jsonl]
           --image-root pope/val2014 --out OUT [--splits adversarial popular random] [--prompt lmms_eval]
       superclass eval pope run --model DIR --parquet POPE/data --out OUT [--split test]

Files. POPE's labels are `coco_pope_{split}.json` (github.com/AoiDragon/POPE, output/coco): JSON lines
`{"question_id", "image", "text", "label": "yes"|"no"}`, images COCO val2014 by file name. LLaVA-1.5 scored the
files of POPE commit e3e3926 (its docs/Evaluation.md links that tree: 3000 + 3000 + 2910 questions); POPE's later
random split is a different sample of 3000. LLaVA's `llava_pope_test.jsonl` (eval.zip) asks the same questions:
`{"question_id", "image", "text", "category": split}`, text = question + "\nAnswer the question using a single
word or phrase.", ids `split offset + POPE's question_id` (adversarial 1.., random 10000001.., popular 20000001..).
Its rows take their labels by (split, image, question): LLaVA's eval_pope.py pairs them by position within a
split, which is the same pairing when the files agree and a silent mismatch when they do not; here a row without
a label is counted `unannotated` and left out. Without the JSONL the POPE files are the question set and take
LLaVA's ids, so answers of either run (and LLaVA's own answer files) score against either layout.
`--parquet`: lmms-lab's POPE (lmms-eval's pope task; a file or a folder of `<split>-*.parquet` shards, `--split`
picking a folder's; needs pyarrow). Columns per lmms_eval/tasks/pope/utils.py (doc["question_id"], doc["question"],
doc["answer"], doc["image"] as a {bytes, path} struct); a row's POPE split is its `category` column (the default
config's `test` split holds all three) or else its shard's split name (config `Full`: adversarial, popular,
random). Ids are LLaVA's (split offset + the row's question_id), so answers score against either layout; the row's
position is lmms-eval's doc_id (`QuestionIndex.doc_rows`).

Prompt: `llava` (default): LLaVA's JSONL text verbatim, else question + "\n" + SHORT_ANSWER_PROMPT, the layout of
LLaVA's scripts/v1_5/eval/pope.sh (model_vqa_loader, vicuna_v1); `lmms_eval`: lmms-eval's pope task
(lmms_eval/tasks/pope/utils.py pope_doc_to_text: question.strip() + post_prompt, the same instruction).

Metric (POPE's evaluate.py, github.com/AoiDragon/POPE; LLaVA's llava/eval/eval_pope.py is the same code per
split): an answer is "no" when its first sentence (text before the first "."), commas removed and split on spaces,
has the word "No", "not" or "no", else "yes"; per split accuracy, precision, recall, F1 of "yes" and the ratio of
"yes" answers, all in percent here. LLaVA-1.5 reports the F1 averaged over the three splits: `f1_mean`, the
headline; `accuracy` pools every question. A question without a prediction counts as answered wrongly (a false
negative or false positive), as every benchmark here counts it wrong; a zero denominator gives 0 (lmms-eval's
pope_aggregate_* rule; POPE's script divides by zero).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.vlm.answers import QuestionIndex
from eval.vlm.base import PromptItem, VLMBenchmark
from eval.vlm.files import parquet_rows
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.registry import BenchmarkSpec, register
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb  # the shared decoder (16-bit images scaled, not clipped)
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.jsonl import read_jsonl_file
from vlm.templates import SHORT_ANSWER_PROMPT

SPLITS = ("adversarial", "popular", "random")
# LLaVA's llava_pope_test.jsonl numbers a split's questions from these offsets (checked on its file: adversarial
# 1-3000, random 10000001-10002910, popular 20000001-20003000, each POPE's question_id).
LLAVA_ID_OFFSET = {"adversarial": 0, "random": 10_000_000, "popular": 20_000_000}
POPE_PROMPTS = ("llava", "lmms_eval")
LABEL_KEYS = ("question_id", "image", "text", "label")
LLAVA_KEYS = ("question_id", "image", "text", "category")
PARQUET_COLUMNS = ("question_id", "question", "answer", "image")  # lmms_eval/tasks/pope/utils.py reads these
ANSWER_RULE = (
    "POPE evaluate.py / LLaVA eval_pope.py: first sentence (before the first '.'), commas removed, split on ' '; "
    "'No', 'not' or 'no' among the words -> no, else yes"
)


@dataclass
class PopeItem:
    """One question: its id, split, COCO image name (and file or parquet bytes once found), question, label and
    LLaVA's text."""

    question_id: QuestionId
    split: str
    image: str
    question: str
    label: str
    path: Path | bytes | None = None
    llava_text: str | None = None  # LLaVA's JSONL `text`, the `llava` prompt verbatim

    def load_image(self) -> Any:
        if self.path is None:
            raise DataError(f"POPE question {self.question_id}: image {self.image} not found")
        return open_rgb(self.path)


@dataclass
class PopeSet:
    """The questions of the chosen splits, where they came from, and what was skipped (`counts`)."""

    source: str
    items: list[PopeItem]
    splits: tuple[str, ...]
    counts: dict[str, int]
    format: str  # "pope" (POPE's files are the question set) | "llava_jsonl" | "parquet"
    doc_rows: list[QuestionId | None] | None = None  # parquet: each row's id (lmms-eval's doc_id), None if skipped


def read_labels(path: Path, split: str, counts: dict[str, int]) -> list[PopeItem]:
    """The questions of one `coco_pope_{split}.json`, with LLaVA's ids; malformed and duplicate rows counted."""
    rows, bad = read_jsonl_file(path, LABEL_KEYS, "POPE's JSON lines {question_id, image, text, label: yes|no}")
    counts["malformed_labels"] += bad
    items, seen = [], set()
    for row in rows:
        qid, image, text, label = (row.get(k) for k in LABEL_KEYS)
        try:
            qid = norm_id(qid)
        except ValueError:
            qid = None
        if not isinstance(qid, int) or not 0 <= qid < 10_000_000:  # an int under the next split's offset
            qid = None
        if qid is None or not isinstance(image, str) or not isinstance(text, str) or label not in ("yes", "no"):
            counts["malformed_labels"] += 1
            continue
        if qid in seen:
            counts["duplicate_questions"] += 1
            continue
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
            pending.setdefault((split, item.image, item.question), []).append(item)
    suffix = "\n" + SHORT_ANSWER_PROMPT
    out, seen = [], set()
    for row in rows:
        image, text, split = row.get("image"), row.get("text"), row.get("category")
        try:
            qid = norm_id(row.get("question_id"))
        except ValueError:
            qid = None
        if qid is None or not isinstance(image, str) or not isinstance(text, str) or not isinstance(split, str):
            counts["malformed_questions"] += 1
            continue
        if split not in labels:
            counts["other_splits"] += 1
            continue
        if qid in seen:
            counts["duplicate_questions"] += 1
            continue
        seen.add(qid)
        question = text[: -len(suffix)] if text.endswith(suffix) else text
        matches = pending.get((split, image, question))
        if not matches:
            counts["unannotated"] += 1
            continue
        label = matches.pop(0)
        out.append(PopeItem(qid, split, image, question, label.label, llava_text=text))
    return out


def _find_images(items: list[PopeItem], image_root: Path, counts: dict[str, int]) -> None:
    """Each item's file under `image_root` or `image_root/val2014` (each folder listed once)."""
    if not image_root.is_dir():
        raise DataError(f"{image_root}: image root is not a directory (expected COCO val2014 images)")
    folders = [image_root, image_root / "val2014"]
    listings = {d: set(os.listdir(d)) if d.is_dir() else set() for d in folders}
    for item in items:
        item.path = next((d / item.image for d in folders if item.image in listings[d]), None)
        counts["missing_images"] += item.path is None


def load_pope(
    annotation_dir: str | Path,
    questions: str | Path | None = None,
    image_root: str | Path | None = None,
    splits: Sequence[str] = SPLITS,
    limit: int | None = None,
) -> PopeSet:
    """POPE's `coco_pope_{split}.json` files in `annotation_dir` (and LLaVA's question JSONL when given); images
    are looked up only when `image_root` is given; `limit` keeps a fixed subset stratified by split."""
    folder = Path(annotation_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected POPE's coco folder with coco_pope_{{split}}.json)")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise UserError(f"POPE splits {list(splits)}: expected some of {list(SPLITS)}")
    counts = dict.fromkeys(("malformed_labels", "malformed_questions", "duplicate_questions", "unannotated"), 0)
    counts.update(other_splits=0, missing_images=0)
    labels = {s: read_labels(folder / f"coco_pope_{s}.json", s, counts) for s in dict.fromkeys(splits)}
    if questions is None:
        items = [item for split_items in labels.values() for item in split_items]
    else:
        items = _from_llava(Path(questions), labels, counts)
    if not items:
        raise DataError(
            f"{questions or folder}: no question with a label in {folder} for splits {list(labels)} "
            "(LLaVA-1.5 used POPE's files of commit e3e3926)"
        )
    if counts["unannotated"]:  # another version of POPE's files: say so, LLaVA's positional pairing would not
        print(
            f"warning: {questions}: {counts['unannotated']} questions have no label in {folder} (left out; "
            "LLaVA-1.5 used POPE's files of commit e3e3926)",
            file=sys.stderr,
        )
    items = fixed_subset(items, limit, key=lambda item: item.split)
    if image_root is not None:
        _find_images(items, Path(image_root), counts)
    source = f"{folder}" + (f" + {questions}" if questions is not None else "")
    return PopeSet(source, items, tuple(labels), counts, "pope" if questions is None else "llava_jsonl")


def _parquet_item(row: dict[str, Any], split: str) -> PopeItem | None:
    """An lmms-lab row as a PopeItem with LLaVA's id, or None when malformed."""
    try:
        qid = norm_id(row.get("question_id"))
    except ValueError:
        return None
    question, answer, image = row.get("question"), row.get("answer"), row.get("image")
    label = answer.lower().strip() if isinstance(answer, str) else None  # pope_process_results' reading
    if not isinstance(qid, int) or not 0 <= qid < 10_000_000 or not isinstance(question, str):
        return None
    if label not in ("yes", "no"):
        return None
    data = image.get("bytes") if isinstance(image, dict) else image
    name = row.get("image_source") or (image.get("path") if isinstance(image, dict) else None) or ""
    data = bytes(data) if isinstance(data, (bytes, bytearray)) and data else None
    return PopeItem(LLAVA_ID_OFFSET[split] + qid, split, str(name), question, label, data)


def load_pope_parquet(
    path: str | Path, splits: Sequence[str] = SPLITS, limit: int | None = None, split: str | None = None
) -> PopeSet:
    """lmms-lab's POPE parquet (a file, or a folder of `{split}-*.parquet` shards, `split` choosing them); rows of
    other POPE splits are left out; `limit` keeps a fixed subset stratified by split."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise UserError(f"POPE splits {list(splits)}: expected some of {list(SPLITS)}")
    rows, shard_split = parquet_rows(path, split, PARQUET_COLUMNS, "lmms-lab's POPE parquet")
    counts = dict.fromkeys(("malformed_questions", "duplicate_questions", "other_splits", "missing_images"), 0)
    items: list[PopeItem] = []
    doc_rows: list[QuestionId | None] = []
    seen: set[QuestionId] = set()
    for row in rows:
        if "category" not in row and shard_split not in SPLITS:
            raise DataError(
                f"{path}: no 'category' column and the split '{shard_split}' is not a POPE split (expected lmms-lab's "
                f"POPE: a category column, or shards named after one of {list(SPLITS)})"
            )
        pope_split = row.get("category", shard_split)
        item = _parquet_item(row, pope_split) if pope_split in SPLITS else None
        skip = item is None or item.question_id in seen or pope_split not in splits
        counts["malformed_questions"] += item is None
        counts["duplicate_questions"] += item is not None and item.question_id in seen
        counts["other_splits"] += item is not None and pope_split not in splits
        doc_rows.append(None if skip else item.question_id)
        if skip:
            continue
        seen.add(item.question_id)
        items.append(item)
    if not items:
        raise DataError(f"{path}: no well-formed POPE question of the splits {list(splits)}")
    items = fixed_subset(items, limit, key=lambda item: item.split)
    counts["missing_images"] = sum(item.path is None for item in items)
    chosen = tuple(s for s in dict.fromkeys(splits) if any(item.split == s for item in items))
    return PopeSet(str(path), items, chosen, counts, "parquet", doc_rows)


def pope_answer(text: str) -> str:
    """A free-text answer read as yes or no by POPE's rule (evaluate.py; LLaVA's eval_pope.py)."""
    if "." in text:  # only the first sentence
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if "No" in words or "not" in words or "no" in words else "yes"


def binary_metrics(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (of "yes") and the ratio of "yes" answers, as fractions; 0 for 0/0."""
    n = tp + fp + tn + fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / n if n else 0.0,
    }


def _percent(value: float) -> float:
    return round(100.0 * value, 2)


def score_pope(pset: PopeSet, predictions: Mapping[QuestionId, str]) -> dict[str, Any]:
    """Per split confusion counts and metrics (percent), the mean F1 over the splits and the pooled accuracy."""
    confusion = {s: {"tp": 0, "fp": 0, "tn": 0, "fn": 0, "missing": 0} for s in pset.splits}
    for item in pset.items:
        pred = predictions.get(item.question_id)
        c = confusion[item.split]
        c["missing"] += pred is None
        said = pope_answer(pred) if pred is not None else ("no" if item.label == "yes" else "yes")  # missing: wrong
        c[("t" if said == item.label else "f") + ("p" if said == "yes" else "n")] += 1
    per_split, f1s = {}, []
    for split, c in confusion.items():
        n = c["tp"] + c["fp"] + c["tn"] + c["fn"]
        if not n:
            continue
        m = binary_metrics(c["tp"], c["fp"], c["tn"], c["fn"])
        f1s.append(m["f1"])
        per_split[split] = {**{k: _percent(v) for k, v in m.items()}, "questions": n, **c}
    right = sum(c["tp"] + c["tn"] for c in confusion.values())
    ids = {item.question_id for item in pset.items}
    return {
        "f1_mean": _percent(sum(f1s) / len(f1s)) if f1s else None,
        "accuracy": _percent(right / len(pset.items)) if pset.items else None,
        "num_questions": len(pset.items),
        "per_split": per_split,
        "missing_predictions": sum(c["missing"] for c in confusion.values()),
        "answer_rule": ANSWER_RULE,
        "unknown_predictions": sum(1 for q in predictions if q not in ids),
    }


def pope_prompt(item: PopeItem, layout: str = "llava") -> str:
    """The question text as LLaVA-1.5's pope.sh (its JSONL text verbatim) or lmms-eval's pope task asks it."""
    if layout == "llava":
        return item.llava_text if item.llava_text is not None else f"{item.question}\n{SHORT_ANSWER_PROMPT}"
    if layout == "lmms_eval":
        return f"{item.question.strip()}\n{SHORT_ANSWER_PROMPT}"
    raise UserError(f"unknown POPE prompt layout '{layout}' (expected one of {list(POPE_PROMPTS)})")


class PopeBenchmark(VLMBenchmark):
    """POPE: per-split accuracy/precision/recall/F1/yes-ratio from POPE's yes/no rule; headline the mean F1."""

    name = "pope"

    def __init__(self, pset: PopeSet, prompt: str = "llava") -> None:
        if prompt not in POPE_PROMPTS:
            raise UserError(f"unknown POPE prompt layout '{prompt}' (expected one of {list(POPE_PROMPTS)})")
        self.pset, self.prompt = pset, prompt

    def prompt_items(self) -> list[PromptItem]:
        return [
            PromptItem(item.question_id, pope_prompt(item, self.prompt), item.load_image)
            for item in self.pset.items
            if item.path is not None
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "split": "+".join(self.pset.splits),
            "source": self.pset.source,
            "prompt": self.prompt,
            "question_format": self.pset.format,
            "num_questions": len(self.pset.items),
            "data_counts": dict(self.pset.counts),
        }

    def score(self, predictions: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        return score_pope(self.pset, predictions)

    def write_outputs(self, out_dir: Path, predictions: Mapping[QuestionId, str]) -> dict[str, str]:
        return {}

    def question_index(self) -> QuestionIndex:
        return QuestionIndex([item.question_id for item in self.pset.items], self.pset.doc_rows)


# ----------------------------------------------------------------------------------------------- registry
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--annotation-dir",
        type=Path,
        help="POPE's coco folder: coco_pope_{adversarial,popular,random}.json (JSON lines with labels)",
    )
    p.add_argument(
        "--parquet",
        type=Path,
        help="lmms-lab's POPE parquet file or folder instead (images inside; needs pyarrow)",
    )
    p.add_argument(
        "--split",
        help="--parquet folder: the file-name prefix of the shards to read (test; config Full: adversarial, ...)",
    )
    p.add_argument(
        "--llava-questions",
        type=Path,
        help="LLaVA's llava_pope_test.jsonl (its ids and text, verbatim); without it POPE's files are the questions",
    )
    p.add_argument("--image-root", type=Path, help="COCO val2014 image folder; needed by run")
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="default: all three")
    p.add_argument("--prompt", default="llava", choices=POPE_PROMPTS, help="prompt layout (default: llava)")


def _build(args: argparse.Namespace, run: bool) -> PopeBenchmark:
    if args.parquet is not None:
        return PopeBenchmark(load_pope_parquet(args.parquet, args.splits, args.limit, args.split), args.prompt)
    if args.annotation_dir is None:
        raise UserError("pope needs --annotation-dir (POPE's coco folder) or --parquet (lmms-lab's POPE)")
    if run and args.image_root is None:
        raise UserError("pope run needs --image-root (the COCO val2014 images) or --parquet")
    pset = load_pope(args.annotation_dir, args.llava_questions, args.image_root, args.splits, args.limit)
    return PopeBenchmark(pset, args.prompt)


def _suite(folder: Path) -> dict[str, Any] | None:
    """LLaVA's playground/data/eval/pope (coco/, llava_pope_test.jsonl, val2014/) or POPE's files beside val2014/."""
    names = [f"coco_pope_{s}.json" for s in SPLITS]
    labels = next((d for d in (folder / "coco", folder / "output" / "coco", folder) if (d / names[0]).is_file()), None)
    if labels is None or not all((labels / n).is_file() for n in names) or not (folder / "val2014").is_dir():
        return None
    values: dict[str, Any] = {"annotation_dir": labels, "image_root": folder / "val2014"}
    if (folder / "llava_pope_test.jsonl").is_file():
        values["llava_questions"] = folder / "llava_pope_test.jsonl"
    return values


SPEC = register(
    BenchmarkSpec(
        name="pope",
        help="POPE: yes/no object hallucination (adversarial, popular, random); POPE's answer rule, mean F1",
        add_args=_args,
        build=_build,
        max_new_tokens_help="default: 16, ample for the single word asked for (LLaVA's model_vqa_loader and "
        "lmms-eval's pope allow 128; pass 128 to match them exactly)",
        suite_args=_suite,
        folder="pope",
        files="coco/coco_pope_{adversarial,popular,random}.json (github.com/AoiDragon/POPE @ e3e3926, output/coco) "
        "+ val2014/ (COCO), and LLaVA's llava_pope_test.jsonl (eval.zip)",
        headline="f1_mean",
        published={"superclass_table11": 85.69, "llava15_7b": 85.9},
    )
)

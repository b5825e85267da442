"""VQAv2 and TextVQA in their official files (and lmms-lab parquet), their prompts, scoring and EvalAI submissions.

VQAv2: the question JSON (`{"questions": [{"image_id", "question", "question_id"}], "data_subtype": ...}`), the
annotation JSON (`{"annotations": [{"question_id", "answers": [{"answer"} x10], "answer_type", ...}]}`) and COCO
images `{root}/{subtype}/COCO_{subtype}_{image_id:012d}.jpg` or the same names directly under `root` (test-dev2015
questions use the test2015 images). TextVQA: `TextVQA_0.5.1_val.json` (`{"data": [{"question_id", "image_id",
"question", "answers", "ocr_tokens", ...}]}`) with `{root}/{image_id}.jpg` (the `train_images` folder).
Malformed rows and missing images are counted in `VQASet.counts`; they are left out of generation, and a
question with no prediction scores 0 and is counted as `missing_predictions`.
Submissions (test splits) list every question of the question file given, with "" where there is no prediction:
to pad a test-dev run to the full test2015 list as LLaVA's convert script does, score it with the test2015
question file; with the test-dev file the submission holds test-dev only.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.vqa_metric import ScoredQuestion, aggregate, check_normalization, evalai_normalize, vqa_accuracy
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.jsonl import read_json_file
from vlm.templates import SHORT_ANSWER_PROMPT

TEXTVQA_PROMPTS = ("llava", "lmms_eval")
QuestionId = int | str


def norm_id(value: Any) -> QuestionId:
    """A question id as an int when it is one (JSON files disagree on 1 vs "1"), else as a string."""
    if isinstance(value, bool):
        raise ValueError(f"question id {value!r} is not an int or a string")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        return int(text) if text.lstrip("-").isdigit() else text
    raise ValueError(f"question id {value!r} is not an int or a string")


@dataclass
class VQAItem:
    """One question: its id, text, image (a file, encoded bytes, or None when missing) and ground truth."""

    question_id: QuestionId
    question: str
    image: Path | bytes | None
    image_id: int | str | None = None
    answers: list[str] | None = None
    answer_type: str | None = None
    question_type: str | None = None
    ocr_tokens: list[str] = field(default_factory=list)

    def load_image(self) -> Any:
        """The image as an RGB PIL image (opened only when the generation runner asks for it)."""
        from PIL import Image

        if self.image is None:
            raise DataError(f"question {self.question_id}: no image")
        source = io.BytesIO(self.image) if isinstance(self.image, bytes) else self.image
        with Image.open(source) as im:
            return im.convert("RGB")


@dataclass
class VQASet:
    """The questions of one VQAv2 or TextVQA split, where they came from, and what was skipped (`counts`)."""

    name: str
    split: str
    source: str
    items: list[VQAItem]
    counts: dict[str, int]

    @property
    def has_answers(self) -> bool:
        return any(item.answers is not None for item in self.items)


def read_json(path: str | Path, what: str) -> Any:
    """A JSON file, or a one-line DataError naming it."""
    return read_json_file(path, f"{path}: no such {what} file", DataError, expected=f"the {what}")


def _field_list(doc: Any, key: str, path: str | Path, what: str) -> list[Any]:
    if not isinstance(doc, dict) or not isinstance(doc.get(key), list):
        raise DataError(f"{path}: missing list field '{key}' (expected the {what})")
    return doc[key]


def _answer_texts(answers: Any) -> list[str] | None:
    """The answer strings of `[{"answer": ...}]` (VQAv2) or `[str]` (TextVQA); None when malformed or empty."""
    if not isinstance(answers, (list, tuple)) or not answers:
        return None
    texts = [a.get("answer") if isinstance(a, dict) else a for a in answers]
    return texts if all(isinstance(t, str) for t in texts) else None


class _ImageFinder:
    """Resolves image names under a root and its candidate subfolders, listing each folder once."""

    def __init__(self, root: str | Path | None, subdirs: Sequence[str]) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise DataError(f"{self.root}: image root is not a directory")
        self.dirs = [self.root / s for s in subdirs] if self.root is not None else []
        self._listings: dict[Path, set[str]] = {}

    def find(self, names: Sequence[str]) -> Path | None:
        for d in self.dirs:
            if d not in self._listings:
                self._listings[d] = set(os.listdir(d)) if d.is_dir() else set()
            for name in names:
                if name in self._listings[d]:
                    return d / name
        return None


def coco_image_folder(subtype: str) -> str:
    """The COCO image folder of a VQAv2 data subtype (test-dev2015 questions are about test2015 images)."""
    return "test2015" if subtype.startswith("test-dev") else subtype


def _vqav2_annotations(path: str | Path, counts: dict[str, int]) -> dict[QuestionId, dict[str, Any]]:
    """question_id -> {answers, answer_type, question_type} of an annotation JSON; bad rows counted."""
    rows = _field_list(read_json(path, "VQAv2 annotation JSON"), "annotations", path, "VQAv2 annotation JSON")
    out: dict[QuestionId, dict[str, Any]] = {}
    for row in rows:
        try:
            qid = norm_id(row["question_id"])
        except (KeyError, TypeError, ValueError):
            counts["malformed_annotations"] += 1
            continue
        answers = _answer_texts(row.get("answers"))
        if answers is None:
            counts["malformed_annotations"] += 1
            continue
        out[qid] = {
            "answers": answers,
            "answer_type": row.get("answer_type"),
            "question_type": row.get("question_type"),
        }
    return out


def load_vqav2(
    questions: str | Path,
    annotations: str | Path | None = None,
    image_root: str | Path | None = None,
    limit: int | None = None,
) -> VQASet:
    """The official VQAv2 question (and annotation) JSON; images are checked only when `image_root` is given."""
    doc = read_json(questions, "VQAv2 question JSON")
    rows = _field_list(doc, "questions", questions, "VQAv2 question JSON")
    subtype = str(doc.get("data_subtype") or "unknown")
    counts = dict.fromkeys(("malformed_questions", "malformed_annotations", "missing_images", "unannotated"), 0)
    gt = _vqav2_annotations(annotations, counts) if annotations is not None else None
    folder = coco_image_folder(subtype)
    finder = _ImageFinder(image_root, [folder, "."])
    items: list[VQAItem] = []
    for row in rows[:limit] if limit else rows:
        try:
            qid, image_id, text = norm_id(row["question_id"]), int(row["image_id"]), row["question"]
            if not isinstance(text, str):
                raise TypeError(text)
        except (KeyError, TypeError, ValueError):
            counts["malformed_questions"] += 1
            continue
        item = VQAItem(qid, text, None, image_id)
        if gt is not None:
            if qid in gt:
                item.answers, item.answer_type, item.question_type = (
                    gt[qid]["answers"],
                    gt[qid]["answer_type"],
                    gt[qid]["question_type"],
                )
            else:
                counts["unannotated"] += 1
        if image_root is not None:
            item.image = finder.find([f"COCO_{folder}_{image_id:012d}.jpg"])
            counts["missing_images"] += item.image is None
        items.append(item)
    source = str(questions) + (f" + {annotations}" if annotations else "")
    return VQASet("vqav2", subtype, source, items, counts)


def load_textvqa(data: str | Path, image_root: str | Path | None = None, limit: int | None = None) -> VQASet:
    """The official TextVQA JSON (val with answers, test without); images `{root}/{image_id}.jpg`."""
    doc = read_json(data, "TextVQA JSON")
    rows = _field_list(doc, "data", data, "TextVQA JSON (TextVQA_0.5.1_val.json)")
    split = str(doc.get("dataset_type") or "unknown") if isinstance(doc, dict) else "unknown"
    counts = dict.fromkeys(("malformed_questions", "missing_images", "unannotated"), 0)
    finder = _ImageFinder(image_root, [".", "train_images", "test_images"])
    items: list[VQAItem] = []
    for row in rows[:limit] if limit else rows:
        item = _textvqa_item(row)
        if item is None:
            counts["malformed_questions"] += 1
            continue
        counts["unannotated"] += item.answers is None
        if image_root is not None:
            item.image = finder.find([f"{item.image_id}.jpg"])
            counts["missing_images"] += item.image is None
        items.append(item)
    return VQASet("textvqa", split, str(data), items, counts)


def _textvqa_item(row: Any) -> VQAItem | None:
    """A TextVQA row as a VQAItem (answers None when absent), or None when malformed."""
    try:
        qid, image_id, text = norm_id(row["question_id"]), str(row["image_id"]), row["question"]
    except (KeyError, TypeError, ValueError):
        return None
    tokens = row.get("ocr_tokens") or []
    if not isinstance(text, str) or not isinstance(tokens, (list, tuple)):
        return None
    answers = _answer_texts(row.get("answers")) if row.get("answers") is not None else None
    if row.get("answers") is not None and answers is None:
        return None
    return VQAItem(qid, text, None, image_id, answers, ocr_tokens=[str(t) for t in tokens])


def _parquet_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of one parquet file, a batch at a time (image bytes stay encoded)."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise UserError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from exc
    pf = pq.ParquetFile(path)
    names = set(pf.schema_arrow.names)
    for column in ("question_id", "question", "image"):
        if column not in names:
            raise DataError(f"{path}: missing column '{column}' (expected an lmms-lab VQAv2/textvqa parquet)")
    for batch in pf.iter_batches(batch_size=256):
        yield from batch.to_pylist()


def _parquet_item(name: str, row: dict[str, Any]) -> VQAItem | None:
    """An lmms-lab row (image {bytes, path}; answers as dicts or strings) as a VQAItem, None when malformed."""
    item = _textvqa_item(row) if name == "textvqa" else None
    if name == "vqav2":
        try:
            item = VQAItem(norm_id(row["question_id"]), str(row["question"]), None, row.get("image_id"))
        except (KeyError, TypeError, ValueError):
            return None
        if row.get("answers") is not None:
            item.answers = _answer_texts(row["answers"])
            if item.answers is None:
                return None
        item.answer_type, item.question_type = row.get("answer_type"), row.get("question_type")
    if item is not None:
        image = row.get("image")
        data = image.get("bytes") if isinstance(image, dict) else image
        item.image = bytes(data) if isinstance(data, (bytes, bytearray)) and data else None
    return item


def parquet_split(file: Path) -> str:
    """The split of a Hugging Face parquet shard: its name before the first "-" (`validation-00000-of-00010`)."""
    return file.stem.split("-", 1)[0]


def parquet_files(path: Path, split: str | None = None) -> tuple[list[Path], str]:
    """The shards of one split in a file or folder, and the split's name; a folder of several splits needs `split`."""
    if not path.is_dir():
        if not path.is_file():
            raise DataError(f"{path}: no parquet file")
        return [path], split or parquet_split(path)
    files = sorted(path.glob("*.parquet"))
    splits = sorted({parquet_split(f) for f in files})
    if not files:
        raise DataError(f"{path}: no *.parquet file in the folder")
    if split is None and len(splits) > 1:
        raise UserError(f"{path}: holds the splits {splits}; choose one with --split (the file-name prefix)")
    split = split or splits[0]
    if split not in splits:
        raise UserError(f"{path}: no '{split}' parquet files (file-name prefixes found: {splits})")
    return [f for f in files if parquet_split(f) == split], split


def load_parquet(path: str | Path, name: str, limit: int | None = None, split: str | None = None) -> VQASet:
    """lmms-lab's VQAv2 or textvqa parquet (a file, or a folder of `{split}-*.parquet` shards); needs pyarrow."""
    if name not in ("vqav2", "textvqa"):
        raise UserError(f"parquet benchmark '{name}' (expected vqav2 or textvqa)")
    path = Path(path)
    files, split = parquet_files(path, split)
    counts = dict.fromkeys(("malformed_questions", "missing_images", "unannotated"), 0)
    items: list[VQAItem] = []
    for file in files:
        for row in _parquet_rows(file):
            if limit and len(items) >= limit:
                break
            item = _parquet_item(name, row)
            if item is None:
                counts["malformed_questions"] += 1
                continue
            counts["missing_images"] += item.image is None
            counts["unannotated"] += item.answers is None
            items.append(item)
    return VQASet(name, split, str(path), items, counts)


def vqav2_prompt(question: str) -> str:
    """LLaVA's and lmms-eval's VQAv2 question text: the question and the short-answer instruction."""
    return f"{question}\n{SHORT_ANSWER_PROMPT}"


def textvqa_prompt(question: str, ocr_tokens: Sequence[str], layout: str = "llava") -> str:
    """TextVQA question text: `llava` with the OCR-token line (LLaVA's 58.2 for 7B) or lmms-eval's default."""
    # llava: the "Reference OCR token" line is left out when a question has no tokens (the 2-line form LLaVA's
    # prompt parser also takes). lmms_eval: question.capitalize() (which lower-cases the rest), no OCR line.
    if layout == "llava":
        ocr = f"\nReference OCR token: {', '.join(ocr_tokens)}" if ocr_tokens else ""
        return f"{question}{ocr}\n{SHORT_ANSWER_PROMPT}"
    if layout == "lmms_eval":
        return f"{question.capitalize()}\n{SHORT_ANSWER_PROMPT}"
    raise UserError(f"unknown TextVQA prompt layout '{layout}' (expected one of {list(TEXTVQA_PROMPTS)})")


def question_prompt(vset: VQASet, item: VQAItem, layout: str = "llava") -> str:
    """The question text of `item` as its benchmark asks it (the model's chat template is added by the caller)."""
    return (
        textvqa_prompt(item.question, item.ocr_tokens, layout)
        if vset.name == "textvqa"
        else vqav2_prompt(item.question)
    )


def image_loader(item: VQAItem) -> Callable[[], Any]:
    """A zero-argument loader of the item's image, for the generation runner."""
    return item.load_image


def score_vqa(vset: VQASet, predictions: Mapping[QuestionId, str], normalize: str = "official") -> dict[str, Any]:
    """VQA accuracy of `predictions` (id -> answer text) over the annotated questions, with the breakdowns."""
    check_normalization(normalize)
    scored: list[ScoredQuestion] = []
    missing = 0
    for item in vset.items:
        if item.answers is None:
            continue
        pred = predictions.get(item.question_id)
        if pred is None:
            missing += 1
        acc = vqa_accuracy(pred or "", item.answers, normalize)
        scored.append(ScoredQuestion(acc, item.answer_type, item.question_type))
    ids = {item.question_id for item in vset.items}
    result: dict[str, Any] = aggregate(scored)
    result.update(
        normalization=normalize,
        num_questions=len(vset.items),
        missing_predictions=missing,
        unknown_predictions=sum(1 for qid in predictions if qid not in ids),
    )
    return result


def submission_rows(vset: VQASet, predictions: Mapping[QuestionId, str]) -> tuple[list[dict[str, Any]], int]:
    """EvalAI's `[{"question_id", "answer"}]` for every question ("" when unanswered) and the count of those."""
    # Answers go through the EvalAI processor first, as LLaVA's convert_vqav2_for_submission.py does.
    rows, missing = [], 0
    for item in vset.items:
        pred = predictions.get(item.question_id)
        missing += pred is None
        rows.append({"question_id": item.question_id, "answer": evalai_normalize(pred) if pred is not None else ""})
    return rows, missing

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
LLaVA's question JSONL files (`llava_vqav2_mscoco_test-dev2015.jsonl`, `llava_textvqa_val_v051_ocr.jsonl`; one
`{"question_id", "image", "text", "category"}` per line, `image` relative to the image folder) are read too, by
their `.jsonl` suffix: a `text` that ends with the short-answer instruction is the prompt verbatim (the text LLaVA
feeds), and the question is its first line(s). LLaVA's TextVQA `question_id` is the image id, shared by the
image's questions, so that file needs the official TextVQA JSON as annotations: each line is matched by (image id =
file stem, question lower-cased), as LLaVA's eval_textvqa.py does, and takes the TextVQA question id and answers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.vlm_registry import fixed_subset
from eval.vqa_metric import ScoredQuestion, aggregate, check_normalization, evalai_normalize, vqa_accuracy
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.jsonl import read_json_file, read_jsonl_file
from vlm.templates import SHORT_ANSWER_PROMPT

TEXTVQA_PROMPTS = ("llava", "lmms_eval")
QuestionId = int | str
LLAVA_QUESTION_KEYS = ("question_id", "image", "text")
OCR_PREFIX = "Reference OCR token: "


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
    prompt: str | None = None  # LLaVA's question text verbatim (from its question JSONL), the `llava` prompt

    def load_image(self) -> Any:
        """The image as an RGB PIL image (opened only when the generation runner asks for it)."""
        from pretrain.data.shards import open_rgb  # the shared decoder (16-bit images scaled, not clipped)

        if self.image is None:
            raise DataError(f"question {self.question_id}: no image")
        return open_rgb(self.image)


@dataclass
class VQASet:
    """The questions of one VQAv2 or TextVQA split, where they came from, and what was skipped (`counts`)."""

    name: str
    split: str
    source: str
    items: list[VQAItem]
    counts: dict[str, int]
    format: str = "official"  # official | llava_jsonl | parquet
    # parquet only: the question id of every row of the split in order (None where malformed), which is what
    # lmms-eval's `doc_id` counts in its --log_samples output
    doc_ids: list[QuestionId | None] | None = None

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


class ImageFinder:
    """Resolves image names under a root and its candidate subfolders, listing each folder once."""

    def __init__(self, root: str | Path | None, subdirs: Sequence[str]) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise DataError(f"{self.root}: image root is not a directory")
        self.dirs = [self.root / s for s in subdirs] if self.root is not None else []
        self._listings: dict[Path, set[str]] = {}

    def find(self, names: Sequence[str]) -> Path | None:
        for d in self.dirs:
            for name in (n for n in names if "/" in n):  # a relative path with folders: no listing to look in
                if (d / name).is_file():
                    return d / name
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
    """The official VQAv2 question (and annotation) JSON, or LLaVA's question JSONL (a `.jsonl` file); images are
    checked only when `image_root` is given."""
    if is_llava_questions(questions):
        return load_llava_vqav2(questions, annotations, image_root, limit)
    doc = read_json(questions, "VQAv2 question JSON")
    rows = _field_list(doc, "questions", questions, "VQAv2 question JSON")
    subtype = str(doc.get("data_subtype") or "unknown")
    counts = dict.fromkeys(("malformed_questions", "malformed_annotations", "missing_images", "unannotated"), 0)
    gt = _vqav2_annotations(annotations, counts) if annotations is not None else None
    folder = coco_image_folder(subtype)
    finder = ImageFinder(image_root, [folder, "."])
    items: list[VQAItem] = []
    for row in fixed_subset(rows, limit):
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


def load_textvqa(
    data: str | Path,
    image_root: str | Path | None = None,
    limit: int | None = None,
    annotations: str | Path | None = None,
) -> VQASet:
    """The official TextVQA JSON (val with answers, test without; images `{root}/{image_id}.jpg`), or LLaVA's
    question JSONL (a `.jsonl` file) with the official JSON as `annotations`."""
    if is_llava_questions(data):
        return load_llava_textvqa(data, annotations, image_root, limit)
    if annotations is not None:
        raise UserError(f"--annotations {annotations}: only for a LLaVA question JSONL; {data} holds its answers")
    doc = read_json(data, "TextVQA JSON")
    rows = _field_list(doc, "data", data, "TextVQA JSON (TextVQA_0.5.1_val.json)")
    split = str(doc.get("dataset_type") or "unknown") if isinstance(doc, dict) else "unknown"
    counts = dict.fromkeys(("malformed_questions", "missing_images", "unannotated"), 0)
    finder = ImageFinder(image_root, [".", "train_images", "test_images"])
    items: list[VQAItem] = []
    for row in fixed_subset(rows, limit):
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


def parquet_rows(
    path: str | Path | Sequence[Path],
    split: str | None = None,
    columns: Sequence[str] = (),
    what: str = "an lmms-lab parquet",
    batch_size: int = 256,
) -> tuple[Iterator[dict[str, Any]], str]:
    """The rows of a parquet file, of a folder's `{split}-*.parquet` shards (`parquet_files`) or of the given files,
    as dicts read a batch at a time (image bytes stay encoded), and the split's name. The files are found, pyarrow
    imported and every file's schema checked before the first row: one-line errors for a missing pyarrow, no files,
    an unreadable file and a missing `columns` entry (naming the file, the column and `what` was expected)."""
    if isinstance(path, (str, Path)):
        files, split = parquet_files(Path(path), split)
    else:
        files, split = list(path), split or ""
        if not files:
            raise DataError("no parquet file given")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"{files[0]}: reading parquet needs pyarrow (pip install pyarrow)") from None
    for file in files:
        try:
            names = set(pq.read_schema(file).names)
        except Exception as exc:  # pyarrow's ArrowInvalid and OSError subclasses, by version
            raise DataError(f"{file}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
        for column in columns:
            if column not in names:
                raise DataError(f"{file}: missing column '{column}' (expected {what})")

    def rows() -> Iterator[dict[str, Any]]:
        for file in files:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_size):
                yield from batch.to_pylist()

    return rows(), split


def load_parquet(path: str | Path, name: str, limit: int | None = None, split: str | None = None) -> VQASet:
    """lmms-lab's VQAv2 or textvqa parquet (a file, or a folder of `{split}-*.parquet` shards); needs pyarrow."""
    if name not in ("vqav2", "textvqa"):
        raise UserError(f"parquet benchmark '{name}' (expected vqav2 or textvqa)")
    path = Path(path)
    rows, split = parquet_rows(path, split, ("question_id", "question", "image"), "an lmms-lab VQAv2/textvqa parquet")
    counts = dict.fromkeys(("malformed_questions", "missing_images", "unannotated"), 0)
    items: list[VQAItem] = []
    doc_ids: list[QuestionId | None] = []
    for row in rows:
        if limit and len(items) >= limit:
            break
        item = _parquet_item(name, row)
        doc_ids.append(item.question_id if item is not None else None)
        if item is None:
            counts["malformed_questions"] += 1
            continue
        counts["missing_images"] += item.image is None
        counts["unannotated"] += item.answers is None
        items.append(item)
    return VQASet(name, split, str(path), items, counts, "parquet", doc_ids)


def is_llava_questions(path: str | Path) -> bool:
    """Whether a question file is LLaVA's question JSONL (told by its `.jsonl` suffix; its rows are checked on load)."""
    return Path(path).suffix.lower() == ".jsonl"


def read_llava_questions(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a LLaVA question JSONL ({question_id, image, text} per line); unreadable lines become {} rows
    (counted as malformed questions); a missing or foreign file is a one-line DataError."""
    expected = "LLaVA's question JSONL: one {question_id, image, text} object per line"
    rows, bad = read_jsonl_file(path, LLAVA_QUESTION_KEYS, expected)
    return rows + [{}] * bad


def split_llava_text(text: str) -> tuple[str, list[str], bool]:
    """(question, OCR tokens, whether it ends with the short-answer instruction) of a LLaVA question `text`."""
    lines = text.split("\n")
    instructed = len(lines) > 1 and lines[-1].strip() == SHORT_ANSWER_PROMPT
    lines = lines[:-1] if instructed else lines
    tokens = [t for line in lines if line.startswith(OCR_PREFIX) for t in line[len(OCR_PREFIX) :].split(", ") if t]
    question = "\n".join(line for line in lines if not line.startswith(OCR_PREFIX))
    return question, tokens, instructed


def _llava_item(row: dict[str, Any]) -> tuple[Any, VQAItem] | None:
    """(LLaVA's raw question_id, an item with the question, image name stem as image_id and the verbatim prompt)."""
    raw, image, text = row.get("question_id"), row.get("image"), row.get("text")
    if not isinstance(image, str) or not image or not isinstance(text, str):
        return None
    try:
        qid = norm_id(raw)
    except ValueError:
        return None
    question, tokens, instructed = split_llava_text(text)
    item = VQAItem(qid, question, None, Path(image).stem, ocr_tokens=tokens, prompt=text if instructed else None)
    return raw, item


def _llava_split(path: str | Path, pattern: str, fallback: str = "unknown") -> str:
    match = re.search(pattern, Path(path).name)
    return match.group(1) if match else fallback


def _llava_images(items: list[tuple[str, VQAItem]], finder: ImageFinder, counts: dict[str, int]) -> list[VQAItem]:
    """Each item with its image (`image` relative to the image folder) found, when an image root was given."""
    for name, item in items:
        if finder.root is not None:
            item.image = finder.find([name])
            counts["missing_images"] += item.image is None
    return [item for _, item in items]


def load_llava_vqav2(
    path: str | Path,
    annotations: str | Path | None = None,
    image_root: str | Path | None = None,
    limit: int | None = None,
) -> VQASet:
    """LLaVA's VQAv2 question JSONL (`question_id` is the VQAv2 one), annotated from the official JSON if given."""
    rows = read_llava_questions(path)
    counts = dict.fromkeys(("malformed_questions", "malformed_annotations", "missing_images", "unannotated"), 0)
    counts["duplicate_questions"] = 0
    gt = _vqav2_annotations(annotations, counts) if annotations is not None else None
    split = _llava_split(path, r"((?:test-dev|test|val|train)\d{4})")
    finder = ImageFinder(image_root, [".", coco_image_folder(split), "test2015", "val2014", "train2014"])
    found: list[tuple[str, VQAItem]] = []
    seen: set[QuestionId] = set()
    for row in fixed_subset(rows, limit):
        parsed = _llava_item(row)
        if parsed is None:
            counts["malformed_questions"] += 1
            continue
        item = parsed[1]
        if item.question_id in seen:
            counts["duplicate_questions"] += 1
            continue
        seen.add(item.question_id)
        if gt is not None:
            ann = gt.get(item.question_id)
            counts["unannotated"] += ann is None
            if ann is not None:
                item.answers, item.answer_type, item.question_type = (
                    ann["answers"],
                    ann["answer_type"],
                    ann["question_type"],
                )
        found.append((row["image"], item))
    source = str(path) + (f" + {annotations}" if annotations else "")
    return VQASet("vqav2", split, source, _llava_images(found, finder, counts), counts, "llava_jsonl")


def load_llava_textvqa(
    path: str | Path,
    annotations: str | Path | None = None,
    image_root: str | Path | None = None,
    limit: int | None = None,
) -> VQASet:
    """LLaVA's TextVQA question JSONL, each line matched to the official JSON (`annotations`) by (image, question).

    A matched line takes the TextVQA question id and answers, so its predictions are those of a run on the official
    JSON; an unmatched one is counted `unannotated` and named `"{llava id}#{line}"`. Without annotations the file's
    ids must be unique (LLaVA's are image ids, repeated: a one-line UserError says to pass the official JSON).
    """
    rows = read_llava_questions(path)
    counts = dict.fromkeys(("malformed_questions", "missing_images", "unannotated"), 0)
    pending: dict[tuple[str, str], list[VQAItem]] = {}
    split = _llava_split(path, r"(?:^|_)(train|val|test)(?:_|\.)")
    if annotations is not None:
        official = load_textvqa(annotations)
        split = official.split
        for ann in official.items:
            pending.setdefault((str(ann.image_id), ann.question.lower()), []).append(ann)
    else:
        ids = [str(row["question_id"]) for row in rows if "question_id" in row]
        if len(set(ids)) < len(ids):
            raise UserError(
                f"{path}: its question ids repeat (LLaVA's TextVQA ids are image ids); pass --annotations "
                "TextVQA_0.5.1_val.json to match each question to its TextVQA id and answers"
            )
    found: list[tuple[str, VQAItem]] = []
    for line, row in enumerate(fixed_subset(rows, limit), 1):
        parsed = _llava_item(row)
        if parsed is None:
            counts["malformed_questions"] += 1
            continue
        raw, item = parsed
        if annotations is not None:
            matches = pending.get((str(item.image_id), item.question.lower()))
            if matches:  # a repeated (image, question) takes the next official question of that pair
                ann = matches.pop(0)
                item.question_id, item.answers = ann.question_id, ann.answers
            else:
                counts["unannotated"] += 1
                item.question_id = f"{raw}#{line}"
        found.append((row["image"], item))
    finder = ImageFinder(image_root, [".", "train_images", "test_images"])
    source = str(path) + (f" + {annotations}" if annotations else "")
    return VQASet("textvqa", split, source, _llava_images(found, finder, counts), counts, "llava_jsonl")


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
    """The question text of `item` as its benchmark asks it (the model's chat template is added by the caller).

    An item from LLaVA's question JSONL is asked in LLaVA's own text, verbatim (`--prompt lmms_eval` rebuilds the
    TextVQA prompt from its question).
    """
    if item.prompt is not None and (vset.name == "vqav2" or layout == "llava"):
        return item.prompt
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

"""What VQAv2 and TextVQA share: the question set, LLaVA's question JSONL and lmms-lab parquet readers, VQA scoring,
EvalAI submissions and the benchmark class (`vqav2.py` and `textvqa.py` hold each one's own files and prompt).

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

import json
import re
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eval.vlm.answers import OCR_PREFIX
from eval.vlm.base import BenchConfig, Benchmark, QuestionSet
from eval.vlm.files import ImageFinder, parquet_image, parquet_rows
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.scoring.vqa import (
    NORMALIZATION_RULES,
    ScoredQuestion,
    aggregate,
    check_normalization,
    evalai_normalize,
    vqa_accuracy,
)
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb  # the shared decoder (16-bit images scaled, not clipped)
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import DataError, UserError
from vlm.templates import SHORT_ANSWER_PROMPT


@dataclass
class VQAItem:
    """One question: its id, text, image (a file, encoded bytes, or None when missing) and ground truth."""

    id: QuestionId
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
        if self.image is None:
            raise DataError(f"question {self.id}: no image")
        return open_rgb(self.image)


def answer_texts(answers: Any) -> list[str] | None:
    """The answer strings of `[{"answer": ...}]` (VQAv2) or `[str]` (TextVQA); None when malformed or empty."""
    if not isinstance(answers, (list, tuple)) or not answers:
        return None
    texts = [a.get("answer") if isinstance(a, dict) else a for a in answers]
    return texts if all(isinstance(t, str) for t in texts) else None


def textvqa_item(row: Any) -> VQAItem | None:
    """A TextVQA row as a VQAItem (answers None when absent), or None when malformed."""
    try:
        qid, image_id, text = norm_id(row["question_id"]), str(row["image_id"]), row["question"]
    except (KeyError, TypeError, ValueError):
        return None
    tokens = row.get("ocr_tokens") or []
    if not isinstance(text, str) or not isinstance(tokens, (list, tuple)):
        return None
    answers = answer_texts(row.get("answers")) if row.get("answers") is not None else None
    if row.get("answers") is not None and answers is None:
        return None
    return VQAItem(qid, text, None, image_id, answers, ocr_tokens=[str(t) for t in tokens])


def _parquet_item(name: str, row: dict[str, Any]) -> VQAItem | None:
    """An lmms-lab row (image {bytes, path}; answers as dicts or strings) as a VQAItem, None when malformed."""
    item = textvqa_item(row) if name == "textvqa" else None
    if name == "vqav2":
        try:
            item = VQAItem(norm_id(row["question_id"]), str(row["question"]), None, row.get("image_id"))
        except (KeyError, TypeError, ValueError):
            return None
        if row.get("answers") is not None:
            item.answers = answer_texts(row["answers"])
            if item.answers is None:
                return None
        item.answer_type, item.question_type = row.get("answer_type"), row.get("question_type")
    if item is not None:
        image = row.get("image")
        item.image = parquet_image(image)
    return item


def load_parquet(path: str | Path, name: str, limit: int | None = None, split: str | None = None) -> QuestionSet:
    """lmms-lab's VQAv2 or textvqa parquet (a file, or a folder of `{split}-*.parquet` shards); needs pyarrow."""
    if name not in ("vqav2", "textvqa"):
        raise UserError(f"parquet benchmark '{name}' (expected vqav2 or textvqa)")
    path = Path(path)
    rows, split = parquet_rows(path, split, ("question_id", "question", "image"), "an lmms-lab VQAv2/textvqa parquet")
    counts = dict.fromkeys(("malformed_questions", "missing_images", "unannotated"), 0)
    items: list[VQAItem] = []
    doc_ids: list[QuestionId | None] = []
    for row in rows:
        item = _parquet_item(name, row)
        doc_ids.append(item.id if item is not None else None)
        if item is None:
            counts["malformed_questions"] += 1
            continue
        items.append(item)
    items = fixed_subset(items, limit)
    counts["missing_images"] = sum(item.image is None for item in items)
    counts["unannotated"] = sum(item.answers is None for item in items)
    return QuestionSet(str(path), items, counts, split, "parquet", doc_ids)


def split_llava_text(text: str) -> tuple[str, list[str], bool]:
    """(question, OCR tokens, whether it ends with the short-answer instruction) of a LLaVA question `text`."""
    lines = text.split("\n")
    instructed = len(lines) > 1 and lines[-1].strip() == SHORT_ANSWER_PROMPT
    lines = lines[:-1] if instructed else lines
    tokens = [t for line in lines if line.startswith(OCR_PREFIX) for t in line[len(OCR_PREFIX) :].split(", ") if t]
    question = "\n".join(line for line in lines if not line.startswith(OCR_PREFIX))
    return question, tokens, instructed


def llava_item(row: dict[str, Any]) -> tuple[Any, VQAItem] | None:
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


def llava_split(path: str | Path, pattern: str, fallback: str = "unknown") -> str:
    match = re.search(pattern, Path(path).name)
    return match.group(1) if match else fallback


def llava_images(items: list[tuple[str, VQAItem]], finder: ImageFinder, counts: dict[str, int]) -> list[VQAItem]:
    """Each item with its image (`image` relative to the image folder) found, when an image root was given."""
    for name, item in items:
        if finder.root is not None:
            item.image = finder.find([name])
            counts["missing_images"] += item.image is None
    return [item for _, item in items]


def vqav2_prompt(question: str) -> str:
    """LLaVA's and lmms-eval's VQAv2 question text: the question and the short-answer instruction."""
    return f"{question}\n{SHORT_ANSWER_PROMPT}"


def image_loader(item: VQAItem) -> Callable[[], Any]:
    """A zero-argument loader of the item's image, for the generation runner."""
    return item.load_image


def score_vqa(
    items: list[VQAItem], predictions: Mapping[QuestionId, str], normalize: str = "official"
) -> dict[str, Any]:
    """VQA accuracy of `predictions` (id -> answer text) over the annotated questions, with the breakdowns."""
    check_normalization(normalize)
    scored: list[ScoredQuestion] = []
    missing = 0
    for item in items:
        if item.answers is None:
            continue
        pred = predictions.get(item.id)
        if pred is None:
            missing += 1
        acc = vqa_accuracy(pred or "", item.answers, normalize)
        scored.append(ScoredQuestion(acc, item.answer_type, item.question_type))
    ids = {item.id for item in items}
    result: dict[str, Any] = aggregate(scored)
    result.update(
        normalization=normalize,
        num_questions=len(items),
        missing_predictions=missing,
        unknown_predictions=sum(1 for qid in predictions if qid not in ids),
    )
    return result


def submission_rows(items: list[VQAItem], predictions: Mapping[QuestionId, str]) -> tuple[list[dict[str, Any]], int]:
    """EvalAI's `[{"question_id", "answer"}]` for every question ("" when unanswered) and the count of those."""
    # Answers go through the EvalAI processor first, as LLaVA's convert_vqav2_for_submission.py does.
    rows, missing = [], 0
    for item in items:
        pred = predictions.get(item.id)
        missing += pred is None
        rows.append({"question_id": item.id, "answer": evalai_normalize(pred) if pred is not None else ""})
    return rows, missing


def has_answers(items: list[VQAItem]) -> bool:
    return any(item.answers is not None for item in items)


@dataclass
class VQAConfig(BenchConfig):
    """What VQAv2 and TextVQA share: images, lmms-lab's parquet instead of the files, the answer normalisation."""

    image_root: str | None = field(default=None, metadata={"help": "image folder (COCO root or train_images)"})
    parquet: str | None = field(default=None, metadata={"help": "an lmms-lab parquet file or folder instead"})
    split: str | None = field(default=None, metadata={"help": "--parquet folder: the split's file-name prefix"})
    normalize: Literal["official", "always", "evalai"] = field(
        default="official", metadata={"help": "answer normalisation (eval.vlm.scoring.vqa)"}
    )


class VQABenchmark(Benchmark):
    """VQAv2 or TextVQA: soft VQA accuracy (official / always / evalai normalisation); EvalAI JSON for test."""

    Config = VQAConfig

    @abstractmethod
    def load_files(self) -> QuestionSet:
        """The benchmark's own question (and annotation) files."""

    def load(self) -> QuestionSet:
        cfg = self.config
        if cfg.parquet is not None:
            return load_parquet(cfg.parquet, self.name, cfg.limit, cfg.split)
        if self.images and cfg.image_root is None:
            raise UserError(f"{self.name} run needs --image-root (or --parquet with the images inside)")
        return self.load_files()

    def prompt(self, item: VQAItem) -> str:
        """LLaVA's own text, verbatim, for an item from its question JSONL; else the short-answer question."""
        return item.prompt if item.prompt is not None else vqav2_prompt(item.question)

    def describe_extra(self) -> dict[str, Any]:
        normalize = self.config.normalize
        return {"normalization": normalize, "normalization_rule": NORMALIZATION_RULES[normalize]}

    def metrics(self, answers: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        items = self.questions
        return score_vqa(items, answers, self.config.normalize) if has_answers(items) else None

    def submission(self, out_dir: Path, answers: Mapping[QuestionId, str]) -> dict[str, str]:
        """`submission.json` for a test split (no answers or a `test*` subtype), padded with "" as LLaVA does."""
        if has_answers(self.questions) and not self.question_set.split.startswith("test"):
            return {}
        rows, empty = submission_rows(self.questions, answers)
        path = out_dir / "submission.json"
        write_text_atomically(path, json.dumps(rows) + "\n")
        return {"submission": str(path), "submission_empty_answers": str(empty)}

"""TextVQA: the official TextVQA_0.5.1 JSON and LLaVA's OCR-token question JSONL (lmms-lab parquet via `vqa`), VQA
accuracy with the EvalAI processor; LLaVA's prompt with OCR tokens (58.2 for LLaVA-1.5-7B) or lmms-eval's.

usage: superclass eval textvqa run|score --data TextVQA_0.5.1_val.json --image-root train_images [--prompt lmms_eval]
       superclass eval textvqa run --data llava_textvqa_val_v051_ocr.jsonl --annotations TextVQA_0.5.1_val.json ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eval.vlm.answers import QuestionIndex
from eval.vlm.base import QuestionSet
from eval.vlm.files import ImageFinder, field_list, is_llava_questions, read_json, read_llava_questions
from eval.vlm.ids import QuestionId
from eval.vlm.subset import fixed_subset
from eval.vlm.vqa import (
    VQABenchmark,
    VQAConfig,
    VQAItem,
    llava_images,
    llava_item,
    llava_split,
    textvqa_item,
)
from pretrain.runtime.errors import UserError
from pretrain.runtime.evaluators import register
from vlm.templates import SHORT_ANSWER_PROMPT

TEXTVQA_PROMPTS = ("llava", "lmms_eval")


def load_textvqa(
    data: str | Path,
    image_root: str | Path | None = None,
    limit: int | None = None,
    annotations: str | Path | None = None,
) -> QuestionSet:
    """The official TextVQA JSON (val with answers, test without; images `{root}/{image_id}.jpg`), or LLaVA's
    question JSONL (a `.jsonl` file) with the official JSON as `annotations`."""
    if is_llava_questions(data):
        return load_llava_textvqa(data, annotations, image_root, limit)
    if annotations is not None:
        raise UserError(f"--annotations {annotations}: only for a LLaVA question JSONL; {data} holds its answers")
    doc = read_json(data, "TextVQA JSON")
    rows = field_list(doc, "data", data, "TextVQA JSON (TextVQA_0.5.1_val.json)")
    split = str(doc.get("dataset_type") or "unknown") if isinstance(doc, dict) else "unknown"
    counts = dict.fromkeys(("malformed_questions", "missing_images", "unannotated"), 0)
    finder = ImageFinder(image_root, [".", "train_images", "test_images"])
    items: list[VQAItem] = []
    for row in fixed_subset(rows, limit):
        item = textvqa_item(row)
        if item is None:
            counts["malformed_questions"] += 1
            continue
        counts["unannotated"] += item.answers is None
        if image_root is not None:
            item.image = finder.find([f"{item.image_id}.jpg"])
            counts["missing_images"] += item.image is None
        items.append(item)
    return QuestionSet(str(data), items, counts, split)


def load_llava_textvqa(
    path: str | Path,
    annotations: str | Path | None = None,
    image_root: str | Path | None = None,
    limit: int | None = None,
) -> QuestionSet:
    """LLaVA's TextVQA question JSONL, each line matched to the official JSON (`annotations`) by (image, question).

    A matched line takes the TextVQA question id and answers, so its predictions are those of a run on the official
    JSON; an unmatched one is counted `unannotated` and named `"{llava id}#{line}"`. Without annotations the file's
    ids must be unique (LLaVA's are image ids, repeated: a one-line UserError says to pass the official JSON).
    """
    rows = read_llava_questions(path)
    counts = dict.fromkeys(("malformed_questions", "missing_images", "unannotated"), 0)
    pending: dict[tuple[str, str], list[VQAItem]] = {}
    split = llava_split(path, r"(?:^|_)(train|val|test)(?:_|\.)")
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
        parsed = llava_item(row)
        if parsed is None:
            counts["malformed_questions"] += 1
            continue
        raw, item = parsed
        if annotations is not None:
            matches = pending.get((str(item.image_id), item.question.lower()))
            if matches:  # a repeated (image, question) takes the next official question of that pair
                ann = matches.pop(0)
                item.id, item.answers = ann.id, ann.answers
            else:
                counts["unannotated"] += 1
                item.id = f"{raw}#{line}"
        found.append((row["image"], item))
    finder = ImageFinder(image_root, [".", "train_images", "test_images"])
    source = str(path) + (f" + {annotations}" if annotations else "")
    return QuestionSet(source, llava_images(found, finder, counts), counts, split, "llava_jsonl")


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


@dataclass
class TextVQAConfig(VQAConfig):
    data: str | None = field(
        default=None,
        metadata={"help": "official TextVQA JSON (TextVQA_0.5.1_val.json) or LLaVA's question JSONL "
                  "(llava_textvqa_val_v051_ocr.jsonl, with --annotations)"},
    )  # fmt: skip
    annotations: str | None = field(
        default=None,
        metadata={"help": "with a LLaVA JSONL in --data: TextVQA_0.5.1_val.json, matched by (image, question)"},
    )
    prompt: Literal["llava", "lmms_eval"] = field(default="llava", metadata={"help": "llava: with OCR tokens"})
    normalize: Literal["official", "always", "evalai"] = field(
        default="evalai", metadata={"help": "answer normalisation (eval.vlm.scoring.vqa)"}
    )


@register
class TextVQA(VQABenchmark):
    """TextVQA: VQA accuracy over the annotated questions, asked in LLaVA's OCR-token layout or lmms-eval's."""

    name = "textvqa"
    description = "TextVQA: VQA accuracy with the EvalAI processor; LLaVA (OCR tokens) or lmms-eval prompt"
    Config = TextVQAConfig
    published = {"superclass_table11": 39.20, "llava15_7b": 58.2}
    folder = "textvqa"
    files = "TextVQA_0.5.1_val.json + train_images (textvqa.org), and LLaVA's llava_textvqa_val_v051_ocr.jsonl"
    max_new_tokens_help = (
        "default: 16, ample for the single word or phrase asked for (LLaVA's model_vqa_loader allows 128, lmms-eval "
        "the model's default, 1024 for llava_hf); pass those to match them"
    )

    def load_files(self) -> QuestionSet:
        cfg = self.config
        if cfg.data is None:
            raise UserError("TextVQA needs --data (TextVQA_0.5.1_val.json or LLaVA's question JSONL) or --parquet")
        return load_textvqa(cfg.data, cfg.image_root, cfg.limit, cfg.annotations)

    def prompt(self, item: VQAItem) -> str:
        """LLaVA's own text verbatim for an item of its JSONL under `llava`; else rebuilt in the chosen layout."""
        if item.prompt is not None and self.config.prompt == "llava":
            return item.prompt
        return textvqa_prompt(item.question, item.ocr_tokens, self.config.prompt)

    def question_index(self) -> QuestionIndex:
        """LLaVA's TextVQA answer rows name the image, not the question: matched by (image id, question)."""
        by_image_question: dict[tuple[str, str], list[QuestionId]] = {}
        for item in self.questions:
            by_image_question.setdefault((str(item.image_id), item.question.lower()), []).append(item.id)
        return QuestionIndex([item.id for item in self.questions], self.question_set.doc_rows, by_image_question)

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        official = folder / "TextVQA_0.5.1_val.json"
        if not official.is_file() or not (folder / "train_images").is_dir():
            return None
        values = {"data": str(official), "image_root": str(folder / "train_images")}
        llava = folder / "llava_textvqa_val_v051_ocr.jsonl"
        return {**values, "data": str(llava), "annotations": str(official)} if llava.is_file() else values

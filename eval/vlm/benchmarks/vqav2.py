"""VQAv2: the official question/annotation JSON and LLaVA's test-dev question JSONL (lmms-lab parquet via `vqa`),
soft VQA accuracy with the official normalisation, an EvalAI submission for test-dev/test.

usage: superclass eval vqav2 run --model DIR --questions Q.json [--annotations A.json] --image-root COCO --out OUT
       superclass eval vqav2 run --model DIR --questions llava_vqav2_mscoco_test-dev2015.jsonl --image-root COCO ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.vlm.base import QuestionSet
from eval.vlm.files import ImageFinder, field_list, first_file, is_llava_questions, read_json, read_llava_questions
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.subset import fixed_subset
from eval.vlm.vqa import (
    VQABenchmark,
    VQAConfig,
    VQAItem,
    answer_texts,
    llava_images,
    llava_item,
    llava_split,
)
from pretrain.runtime.errors import UserError
from pretrain.runtime.evaluators import register


def coco_image_folder(subtype: str) -> str:
    """The COCO image folder of a VQAv2 data subtype (test-dev2015 questions are about test2015 images)."""
    return "test2015" if subtype.startswith("test-dev") else subtype


def _vqav2_annotations(path: str | Path, counts: dict[str, int]) -> dict[QuestionId, dict[str, Any]]:
    """question_id -> {answers, answer_type, question_type} of an annotation JSON; bad rows counted."""
    rows = field_list(read_json(path, "VQAv2 annotation JSON"), "annotations", path, "VQAv2 annotation JSON")
    out: dict[QuestionId, dict[str, Any]] = {}
    for row in rows:
        try:
            qid = norm_id(row["question_id"])
        except (KeyError, TypeError, ValueError):
            counts["malformed_annotations"] += 1
            continue
        answers = answer_texts(row.get("answers"))
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
) -> QuestionSet:
    """The official VQAv2 question (and annotation) JSON, or LLaVA's question JSONL (a `.jsonl` file); images are
    checked only when `image_root` is given."""
    if is_llava_questions(questions):
        return load_llava_vqav2(questions, annotations, image_root, limit)
    doc = read_json(questions, "VQAv2 question JSON")
    rows = field_list(doc, "questions", questions, "VQAv2 question JSON")
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
    return QuestionSet(source, items, counts, subtype)


def load_llava_vqav2(
    path: str | Path,
    annotations: str | Path | None = None,
    image_root: str | Path | None = None,
    limit: int | None = None,
) -> QuestionSet:
    """LLaVA's VQAv2 question JSONL (`question_id` is the VQAv2 one), annotated from the official JSON if given."""
    rows = read_llava_questions(path)
    counts = dict.fromkeys(("malformed_questions", "malformed_annotations", "missing_images", "unannotated"), 0)
    counts["duplicate_questions"] = 0
    gt = _vqav2_annotations(annotations, counts) if annotations is not None else None
    split = llava_split(path, r"((?:test-dev|test|val|train)\d{4})")
    finder = ImageFinder(image_root, [".", coco_image_folder(split), "test2015", "val2014", "train2014"])
    found: list[tuple[str, VQAItem]] = []
    seen: set[QuestionId] = set()
    for row in fixed_subset(rows, limit):
        parsed = llava_item(row)
        if parsed is None:
            counts["malformed_questions"] += 1
            continue
        item = parsed[1]
        if item.id in seen:
            counts["duplicate_questions"] += 1
            continue
        seen.add(item.id)
        if gt is not None:
            ann = gt.get(item.id)
            counts["unannotated"] += ann is None
            if ann is not None:
                item.answers, item.answer_type, item.question_type = (
                    ann["answers"],
                    ann["answer_type"],
                    ann["question_type"],
                )
        found.append((row["image"], item))
    source = str(path) + (f" + {annotations}" if annotations else "")
    return QuestionSet(source, llava_images(found, finder, counts), counts, split, "llava_jsonl")


@dataclass
class VQAv2Config(VQAConfig):
    questions: str | None = field(
        default=None,
        metadata={"help": "official question JSON (v2_OpenEnded_mscoco_*_questions.json) or LLaVA's question JSONL "
                  "(llava_vqav2_mscoco_test-dev2015.jsonl; its text is the prompt, verbatim)"},
    )  # fmt: skip
    annotations: str | None = field(
        default=None, metadata={"help": "official annotation JSON (val); without it: submission only"}
    )


@register
class VQAv2(VQABenchmark):
    name = "vqav2"
    description = "VQAv2: soft VQA accuracy (official normalisation), EvalAI submission for test-dev/test"
    Config = VQAv2Config
    published = {"superclass_table11": 75.24, "llava15_7b": 78.5}
    folder = "vqav2"
    files = ("LLaVA's eval.zip (llava_vqav2_mscoco_test-dev2015.jsonl) + COCO test2015, or the official val2014 "
             "questions/annotations + COCO val2014 (visualqa.org)")  # fmt: skip
    max_new_tokens_help = ("default: 16, as lmms-eval's vqav2, ample for the single word or phrase asked for "
                           "(LLaVA's model_vqa_loader allows 128; pass 128 to match it exactly)")  # fmt: skip
    prompt_layout = "short_answer"

    def load_files(self) -> QuestionSet:
        cfg = self.config
        if cfg.questions is None:
            raise UserError("VQAv2 needs --questions (the official question JSON or LLaVA's JSONL) or --parquet")
        return load_vqav2(cfg.questions, cfg.annotations, cfg.image_root, cfg.limit)

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        llava = folder / "llava_vqav2_mscoco_test-dev2015.jsonl"
        if llava.is_file() and (folder / "test2015").is_dir():  # LLaVA's eval layout: test-dev, EvalAI submission
            return {"questions": str(llava), "image_root": str(folder / "test2015")}
        questions = first_file(folder, "v2_OpenEnded_mscoco_val2014_questions.json")
        annotations = first_file(folder, "v2_mscoco_val2014_annotations.json")
        if questions and annotations and (folder / "val2014").is_dir():
            return {"questions": str(questions), "annotations": str(annotations), "image_root": str(folder)}
        return None

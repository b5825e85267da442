"""TextVQA: the official TextVQA_0.5.1 JSON and LLaVA's OCR-token question JSONL (lmms-lab parquet via `vqa`), VQA
accuracy with the EvalAI processor; LLaVA's prompt with OCR tokens (58.2 for LLaVA-1.5-7B) or lmms-eval's.

usage: superclass eval textvqa run|score --data TextVQA_0.5.1_val.json --image-root train_images [--prompt lmms_eval]
       superclass eval textvqa run --data llava_textvqa_val_v051_ocr.jsonl --annotations TextVQA_0.5.1_val.json ...
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.vlm.benchmarks.vqa import (
    VQABenchmark,
    VQAItem,
    VQASet,
    add_vqa_args,
    field_list,
    llava_images,
    llava_item,
    llava_split,
    load_parquet,
    needs_images,
    textvqa_item,
)
from eval.vlm.files import ImageFinder, is_llava_questions, read_json, read_llava_questions
from eval.vlm.registry import BenchmarkSpec, register
from eval.vlm.subset import fixed_subset
from eval.vlm.vqa_metric import NORMALIZATIONS
from pretrain.runtime.errors import UserError
from vlm.templates import SHORT_ANSWER_PROMPT

TEXTVQA_PROMPTS = ("llava", "lmms_eval")


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
    return VQASet("textvqa", split, str(data), items, counts)


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
                item.question_id, item.answers = ann.question_id, ann.answers
            else:
                counts["unannotated"] += 1
                item.question_id = f"{raw}#{line}"
        found.append((row["image"], item))
    finder = ImageFinder(image_root, [".", "train_images", "test_images"])
    source = str(path) + (f" + {annotations}" if annotations else "")
    return VQASet("textvqa", split, source, llava_images(found, finder, counts), counts, "llava_jsonl")


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


class TextVQABenchmark(VQABenchmark):
    """TextVQA: VQA accuracy over the annotated questions, asked in LLaVA's OCR-token layout or lmms-eval's."""

    def __init__(self, vset: VQASet, normalize: str = "evalai", prompt: str = "llava") -> None:
        if prompt not in TEXTVQA_PROMPTS:
            raise UserError(f"unknown TextVQA prompt layout '{prompt}' (expected one of {list(TEXTVQA_PROMPTS)})")
        super().__init__(vset, normalize, prompt)

    def item_prompt(self, item: VQAItem) -> str:
        """LLaVA's own text verbatim for an item of its JSONL under `llava`; else rebuilt in the chosen layout."""
        if item.prompt is not None and self.prompt == "llava":
            return item.prompt
        return textvqa_prompt(item.question, item.ocr_tokens, self.prompt)


def textvqa_benchmark(
    data: str | Path | None = None,
    image_root: str | Path | None = None,
    prompt: str = "llava",
    normalize: str = "evalai",
    limit: int | None = None,
    parquet: str | Path | None = None,
    split: str | None = None,
    annotations: str | Path | None = None,
) -> TextVQABenchmark:
    """TextVQA from the official JSON, LLaVA's question JSONL (with the official JSON as `annotations`) or an lmms-lab
    parquet; LLaVA's OCR-token prompt unless `lmms_eval`."""
    if parquet is not None:
        return TextVQABenchmark(load_parquet(parquet, "textvqa", limit, split), normalize, prompt)
    if data is None:
        raise UserError("TextVQA needs --data (TextVQA_0.5.1_val.json or LLaVA's question JSONL) or --parquet")
    return TextVQABenchmark(load_textvqa(data, image_root, limit, annotations), normalize, prompt)


def _textvqa_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        help="official TextVQA JSON (TextVQA_0.5.1_val.json) or LLaVA's question JSONL "
        "(llava_textvqa_val_v051_ocr.jsonl, with --annotations)",
    )
    p.add_argument(
        "--annotations",
        type=Path,
        help="with a LLaVA JSONL in --data: TextVQA_0.5.1_val.json, matched by (image, question) as LLaVA does",
    )
    p.add_argument("--prompt", default="llava", choices=TEXTVQA_PROMPTS, help="llava: with OCR tokens (default)")
    add_vqa_args(p, "evalai", NORMALIZATIONS)


def _textvqa(args: argparse.Namespace, run: bool) -> Any:
    needs_images(args, run)
    return textvqa_benchmark(
        args.data, args.image_root, args.prompt, args.normalize, args.limit, args.parquet, args.split, args.annotations
    )


def _textvqa_suite(folder: Path) -> dict[str, Any] | None:
    official = folder / "TextVQA_0.5.1_val.json"
    if not official.is_file() or not (folder / "train_images").is_dir():
        return None
    llava = folder / "llava_textvqa_val_v051_ocr.jsonl"
    if llava.is_file():
        return {"data": llava, "annotations": official, "image_root": folder / "train_images"}
    return {"data": official, "image_root": folder / "train_images"}


SPEC = register(
    BenchmarkSpec(
        name="textvqa",
        help="TextVQA: VQA accuracy with the EvalAI processor; LLaVA (OCR tokens) or lmms-eval prompt",
        add_args=_textvqa_args,
        build=_textvqa,
        max_new_tokens_help="default: 16, ample for the single word or phrase asked for (LLaVA's model_vqa_loader "
        "allows 128, lmms-eval the model's default, 1024 for llava_hf); pass those to match them exactly",
        suite_args=_textvqa_suite,
        folder="textvqa",
        files="TextVQA_0.5.1_val.json + train_images (textvqa.org), and LLaVA's llava_textvqa_val_v051_ocr.jsonl",
        published={"superclass_table11": 39.20, "llava15_7b": 58.2},
    )
)

"""VizWiz-VQA: the official annotation JSON (and LLaVA's question JSONL), LLaVA's prompt, VQA accuracy, EvalAI file.

usage: superclass eval vizwiz run --model DIR --annotations val.json --image-root val --out OUT
       superclass eval vizwiz run --model DIR --llava-questions llava_test.jsonl --image-root test --out OUT
       superclass eval vizwiz score --annotations val.json --predictions P.jsonl --out OUT
       superclass eval vizwiz run --model DIR --parquet VizWiz-VQA/data --split val --out OUT

Files. VizWiz's annotations (vizwiz.org, Annotations.zip) are one JSON list per split: `[{"image":
"VizWiz_val_00000000.jpg", "question", "answers": [{"answer", "answer_confidence"} x10], "answer_type",
"answerable"}]`; test.json has only image and question. A question's id is its 0-based row in the file, the
numbering LLaVA's `llava_test.jsonl` (eval.zip; `{"question_id", "image", "text"}` per line) is made with as far
as we can tell (not checked against the file itself), so LLaVA's answer files match either file. Given the JSONL,
its own ids and text are used, each line taking its answers from the annotation row of the same image. Images are
`{image}` under `--image-root` (or its `val/`, `test/`, `train/`). Malformed rows are counted in `counts`.
`--parquet`: lmms-lab's VizWiz-VQA (lmms-eval's vizwiz_vqa_val / vizwiz_vqa_test; a file or a folder of
`<split>-*.parquet` shards, `--split` picking a folder's: val has answers, test is for submission; needs pyarrow).
Columns per lmms_eval/tasks/vizwiz_vqa/utils.py: doc["question_id"] (the image's name without ".jpg", the
submission's key: `VizWiz_val_00000000`), doc["question"], doc["image"] (a {bytes, path} struct) and, when present,
doc["answers"] (the annotators' answer strings); the answer type is the row's `answer_type` or `category` when it
has one. A row's id is the number in its question_id, the row of its image in the official JSON (each split's
images are numbered in file order, one question each), else its position; the position is lmms-eval's doc_id
(`QuestionIndex.doc_rows`).

Prompt: `llava` (default) is LLaVA-1.5's (the JSONL's text verbatim, else the question + "\\nWhen the provided
information is insufficient, respond with 'Unanswerable'.\\nAnswer the question using a single word or phrase.",
the text of llava_test.jsonl); `lmms_eval` is lmms-eval's vizwiz_vqa (lmms_eval/tasks/vizwiz_vqa/utils.py
`vizwiz_vqa_doc_to_text`: `question.capitalize()` and the same two lines).

Metric (`--normalize official`): the VQA accuracy of the VizWiz API's vqaEval.py (Qing Li's, distributed by
vizwiz.org; a copy: TRI-ML/vlm-evaluation vlm_eval/util/evaluation/vizwiz/eval.py): the prediction goes through
the official punctuation and digit/article processing (`eval.vlm.vqa_metric`) and is compared, as is, with the raw
annotator answers: acc = mean over the 10 leave-one-out subsets of min(1, matches / 3); percent, 2 decimals,
overall and per answer type. It scores the answer as submitted, i.e. after the EvalAI answer processor that
LLaVA's scripts/convert_vizwiz_for_submission.py applies (haotian-liu/LLaVA): what the VizWiz API computes from
our submission file (the EvalAI server's own script is not public). `--normalize lmms_eval`: lmms-eval's
vizwiz_vqa_process_results, the EvalAI processor on the prediction and on every annotator answer, then the same
formula (`vqa_metric.vqa_accuracy` in its "evalai" mode).
A split without answers (test) gets `submission.json` for EvalAI: `[{"image", "answer"}]` for every question, the
answers EvalAI-processed as LLaVA's converter writes them ("" where unanswered).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.vlm.answers import QuestionIndex
from eval.vlm.base import PromptItem, VLMBenchmark
from eval.vlm.files import ImageFinder, parquet_rows, read_json, read_llava_questions
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.registry import BenchmarkSpec, register
from eval.vlm.subset import fixed_subset
from eval.vlm.vqa_metric import ScoredQuestion, aggregate, evalai_normalize, official_normalize, vqa_accuracy
from pretrain.data.shards import open_rgb  # the shared decoder (16-bit images scaled, not clipped)
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import DataError, UserError
from vlm.templates import SHORT_ANSWER_PROMPT

VIZWIZ_PROMPTS = ("llava", "lmms_eval")
VIZWIZ_NORMALIZATIONS = ("official", "lmms_eval")
UNANSWERABLE_PROMPT = "When the provided information is insufficient, respond with 'Unanswerable'."
PROMPT_SUFFIX = f"\n{UNANSWERABLE_PROMPT}\n{SHORT_ANSWER_PROMPT}"
NORMALIZATION_RULES = {
    "official": "prediction as submitted (EvalAI processor), then VizWiz vqaEval.py: punctuation and digit/article "
    "processing of the prediction only, compared with the raw annotator answers",
    "lmms_eval": "lmms-eval's vizwiz_vqa: the EvalAI processor on the prediction and every annotator answer",
}
PARQUET_COLUMNS = ("question_id", "question", "image")  # lmms_eval/tasks/vizwiz_vqa/utils.py reads these (+ answers)
EXPECTED = "VizWiz's annotation JSON: a list of {image, question, answers, answer_type, answerable}"


@dataclass
class VizWizQuestion:
    """One question: its id, image file name (the submission's key), text and ground truth (None on test)."""

    qid: QuestionId
    image_name: str
    question: str
    answers: list[str] | None = None
    answer_type: str | None = None
    answerable: int | None = None
    prompt: str | None = None  # LLaVA's text, verbatim (from its question JSONL)
    image: Path | bytes | None = None  # a file, or the encoded image of a parquet row

    def load_image(self) -> Any:
        """The image as an RGB PIL image (opened when the runner asks for it)."""
        if self.image is None:
            raise DataError(f"VizWiz question {self.qid} ({self.image_name}): no image")
        return open_rgb(self.image)


@dataclass
class VizWizSet:
    """The questions of one VizWiz split, where they came from, and what was skipped (`counts`)."""

    split: str
    source: str
    items: list[VizWizQuestion]
    counts: dict[str, int]
    format: str  # official | llava_jsonl | parquet
    doc_rows: list[QuestionId | None] | None = None  # parquet: each row's id (lmms-eval's doc_id), None if skipped

    @property
    def has_answers(self) -> bool:
        return any(item.answers is not None for item in self.items)


def _annotation(index: int, row: Any) -> VizWizQuestion | None:
    """An annotation row as a VizWizQuestion (answers None when the row has none), or None when malformed."""
    if not isinstance(row, dict):
        return None
    image, question, answers = row.get("image"), row.get("question"), row.get("answers")
    if not isinstance(image, str) or not image or not isinstance(question, str):
        return None
    item = VizWizQuestion(index, image, question, answer_type=row.get("answer_type"), answerable=row.get("answerable"))
    if answers:  # test.json has none
        texts = [a.get("answer") if isinstance(a, dict) else None for a in answers] if isinstance(answers, list) else []
        if not texts or not all(isinstance(t, str) for t in texts):
            return None
        item.answers = texts
    return item


def read_annotations(path: str | Path, counts: dict[str, int]) -> list[VizWizQuestion]:
    """The well-formed rows of a VizWiz annotation JSON, in file order, each with its row number as id."""
    doc = read_json(path, "VizWiz annotation JSON")
    if not isinstance(doc, list) or not doc:
        raise DataError(f"{path}: not {EXPECTED}")
    items = []
    for index, row in enumerate(doc):
        item = _annotation(index, row)
        counts["malformed_questions"] += item is None
        if item is not None:
            items.append(item)
    if not items:
        raise DataError(f"{path}: none of its {len(doc)} rows is a well-formed question ({EXPECTED})")
    return items


def _llava_question(row: dict[str, Any], by_image: dict[str, VizWizQuestion] | None) -> VizWizQuestion | None:
    """A LLaVA JSONL row as a VizWizQuestion, with the answers of the annotation row of its image; None if malformed."""
    raw, image, text = row.get("question_id"), row.get("image"), row.get("text")
    if raw is None or not isinstance(image, str) or not image or not isinstance(text, str):
        return None
    try:
        qid = norm_id(raw)
    except ValueError:
        return None
    prompt = text if text.endswith(PROMPT_SUFFIX) else None
    question = text[: -len(PROMPT_SUFFIX)] if prompt is not None else text
    item = VizWizQuestion(qid, image, question, prompt=prompt)
    ann = by_image.get(Path(image).name) if by_image is not None else None
    if ann is not None:
        item.answers, item.answer_type, item.answerable = ann.answers, ann.answer_type, ann.answerable
    return item


def vizwiz_split(items: list[VizWizQuestion], path: str | Path) -> str:
    """The split named by the image files (`VizWiz_val_...`), else by the file name (`val.json`, `llava_test`)."""
    match = re.match(r"VizWiz_([a-z]+)_", Path(items[0].image_name).name) if items else None
    if match:
        return match.group(1)
    match = re.search(r"(train|val|test)", Path(path).stem)
    return match.group(1) if match else "unknown"


def load_vizwiz(
    annotations: str | Path | None = None,
    llava_questions: str | Path | None = None,
    image_root: str | Path | None = None,
    limit: int | None = None,
) -> VizWizSet:
    """VizWiz from its annotation JSON, LLaVA's question JSONL, or both; `limit`: a subset stratified by answer type."""
    if annotations is None and llava_questions is None:
        raise UserError(
            "VizWiz needs --annotations (val.json or test.json) and/or --llava-questions (llava_test.jsonl)"
        )
    counts = dict.fromkeys(("malformed_questions", "unannotated", "duplicate_questions", "missing_images"), 0)
    official = read_annotations(annotations, counts) if annotations is not None else None
    if llava_questions is None:
        candidates = official
    else:
        by_image = {Path(q.image_name).name: q for q in reversed(official)} if official is not None else None
        candidates = []
        for row in read_llava_questions(llava_questions):
            item = _llava_question(row, by_image)
            counts["malformed_questions"] += item is None
            if item is not None:
                counts["unannotated"] += by_image is not None and item.answers is None
                candidates.append(item)
    items, seen = [], set()
    for item in candidates:
        if item.qid in seen:
            counts["duplicate_questions"] += 1
            continue
        seen.add(item.qid)
        items.append(item)
    split = vizwiz_split(items, annotations if annotations is not None else llava_questions)
    items = fixed_subset(items, limit, key=lambda q: q.answer_type or "unknown")
    if image_root is not None:
        finder = ImageFinder(image_root, [".", split, "val", "test", "train"])
        for item in items:
            item.image = finder.find([item.image_name])
            counts["missing_images"] += item.image is None
    source = " + ".join(str(p) for p in (llava_questions, annotations) if p is not None)
    return VizWizSet(split, source, items, counts, "official" if llava_questions is None else "llava_jsonl")


def _parquet_question(position: int, row: dict[str, Any]) -> VizWizQuestion | None:
    """An lmms-lab row as a VizWizQuestion (answers None when it has none), or None when malformed."""
    name, question, answers, image = row.get("question_id"), row.get("question"), row.get("answers"), row.get("image")
    if not isinstance(name, str) or not name.strip() or not isinstance(question, str):
        return None
    if isinstance(answers, list):  # strings (lmms-lab), or the official {answer, answer_confidence} dicts
        answers = [a.get("answer") if isinstance(a, dict) else a for a in answers]
    if answers is not None and (not isinstance(answers, list) or not all(isinstance(a, str) for a in answers)):
        return None
    match = re.fullmatch(r"VizWiz_[a-z]+_(\d+)", name.strip())
    answer_type = row.get("answer_type", row.get("category"))
    item = VizWizQuestion(int(match.group(1)) if match else position, f"{name.strip()}.jpg", question)
    item.answers, item.answer_type = answers or None, answer_type if isinstance(answer_type, str) else None
    item.answerable = row.get("answerable") if isinstance(row.get("answerable"), int) else None
    data = image.get("bytes") if isinstance(image, dict) else image
    item.image = bytes(data) if isinstance(data, (bytes, bytearray)) and data else None
    return item


def load_vizwiz_parquet(path: str | Path, limit: int | None = None, split: str | None = None) -> VizWizSet:
    """lmms-lab's VizWiz-VQA parquet (a file, or a folder of `{split}-*.parquet` shards, `split` choosing them);
    malformed and duplicate rows counted; `limit` a fixed subset stratified by answer type."""
    rows, shard_split = parquet_rows(path, split, PARQUET_COLUMNS, "lmms-lab's VizWiz-VQA parquet")
    counts = dict.fromkeys(("malformed_questions", "unannotated", "duplicate_questions", "missing_images"), 0)
    items: list[VizWizQuestion] = []
    doc_rows: list[QuestionId | None] = []
    seen: set[QuestionId] = set()
    for position, row in enumerate(rows):
        item = _parquet_question(position, row)
        counts["malformed_questions"] += item is None
        counts["duplicate_questions"] += item is not None and item.qid in seen
        if item is None or item.qid in seen:
            doc_rows.append(None)
            continue
        seen.add(item.qid)
        doc_rows.append(item.qid)
        items.append(item)
    if not items:
        raise DataError(f"{path}: no well-formed VizWiz question (expected lmms-lab's VizWiz-VQA parquet)")
    split = vizwiz_split(items, path)
    split = shard_split if split == "unknown" else split
    items = fixed_subset(items, limit, key=lambda q: q.answer_type or "unknown")
    counts["unannotated"] = sum(item.answers is None for item in items) if any(i.answers for i in items) else 0
    counts["missing_images"] = sum(item.image is None for item in items)
    return VizWizSet(split, str(path), items, counts, "parquet", doc_rows)


def vizwiz_accuracy(prediction: str, answers: list[str], normalize: str = "official") -> float:
    """One question's VQA accuracy in [0, 1] under the VizWiz API's rule (or lmms-eval's; see the module docstring)."""
    if normalize == "lmms_eval":
        return vqa_accuracy(prediction, answers, "evalai")
    if normalize != "official":
        raise ValueError(f"unknown VizWiz normalization '{normalize}' (expected one of {list(VIZWIZ_NORMALIZATIONS)})")
    if not answers:
        raise ValueError("a VizWiz question needs at least one annotator answer")
    pred = official_normalize(evalai_normalize(prediction))  # the submitted answer, as vqaEval.py processes it
    # The leave-one-out average of vqa_metric.vqa_accuracy, against the raw answers (which vqa_accuracy would
    # process): leaving out a matching answer leaves matches - 1 among the other nine.
    matches = sum(a == pred for a in answers)
    return sum(min(1.0, (matches - (a == pred)) / 3.0) for a in answers) / len(answers)


def score_vizwiz(vset: VizWizSet, predictions: Mapping[QuestionId, str], normalize: str = "official") -> dict[str, Any]:
    """VQA accuracy (percent) overall and per answer type over the annotated questions."""
    scored, missing = [], 0
    for item in vset.items:
        if item.answers is None:
            continue
        pred = predictions.get(item.qid)
        missing += pred is None
        scored.append(ScoredQuestion(vizwiz_accuracy(pred or "", item.answers, normalize), item.answer_type))
    result = aggregate(scored)
    result.pop("per_question_type")
    ids = {item.qid for item in vset.items}
    result.update(
        normalization=normalize,
        num_questions=len(vset.items),
        missing_predictions=missing,
        unknown_predictions=sum(1 for qid in predictions if qid not in ids),
    )
    return result


def vizwiz_prompt(item: VizWizQuestion, layout: str = "llava") -> str:
    """The question text as LLaVA (its JSONL's text verbatim when read from it) or lmms-eval asks it."""
    if layout == "llava":
        return item.prompt if item.prompt is not None else f"{item.question}{PROMPT_SUFFIX}"
    if layout == "lmms_eval":
        return f"{item.question.capitalize()}{PROMPT_SUFFIX}"
    raise UserError(f"unknown VizWiz prompt layout '{layout}' (expected one of {list(VIZWIZ_PROMPTS)})")


class VizWizBenchmark(VLMBenchmark):
    """VizWiz-VQA: VQA accuracy per answer type on val; the EvalAI submission for test."""

    name = "vizwiz"

    def __init__(self, vset: VizWizSet, prompt: str = "llava", normalize: str = "official") -> None:
        if prompt not in VIZWIZ_PROMPTS:
            raise UserError(f"unknown VizWiz prompt layout '{prompt}' (expected one of {list(VIZWIZ_PROMPTS)})")
        if normalize not in VIZWIZ_NORMALIZATIONS:
            raise UserError(
                f"unknown VizWiz normalization '{normalize}' (expected one of {list(VIZWIZ_NORMALIZATIONS)})"
            )
        self.vset, self.prompt, self.normalize = vset, prompt, normalize

    def prompt_items(self) -> list[PromptItem]:
        return [PromptItem(q.qid, vizwiz_prompt(q, self.prompt), q.load_image) for q in self.vset.items if q.image]

    def describe(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "split": self.vset.split,
            "source": self.vset.source,
            "prompt": self.prompt,
            "question_format": self.vset.format,
            "normalization": self.normalize,
            "normalization_rule": NORMALIZATION_RULES[self.normalize],
            "num_questions": len(self.vset.items),
            "data_counts": dict(self.vset.counts),
        }

    def score(self, predictions: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        return score_vizwiz(self.vset, predictions, self.normalize) if self.vset.has_answers else None

    def write_outputs(self, out_dir: Path, predictions: Mapping[QuestionId, str]) -> dict[str, str]:
        """`submission.json` for a split without answers (test): LLaVA's convert_vizwiz_for_submission.py format."""
        if self.vset.has_answers:
            return {}
        rows, empty = [], 0
        for item in self.vset.items:
            pred = predictions.get(item.qid)
            empty += pred is None
            rows.append({"image": item.image_name, "answer": evalai_normalize(pred) if pred is not None else ""})
        path = out_dir / "submission.json"
        write_text_atomically(path, json.dumps(rows) + "\n")
        return {"submission": str(path), "submission_empty_answers": str(empty)}

    def question_index(self) -> QuestionIndex:
        return QuestionIndex([item.qid for item in self.vset.items], self.vset.doc_rows)


# ----------------------------------------------------------------------------------------------- registry
def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--annotations", type=Path, help="VizWiz's annotation JSON (val.json scored; test.json submitted)")
    p.add_argument("--llava-questions", type=Path, help="LLaVA's llava_test.jsonl: its ids, images and prompt text")
    p.add_argument("--parquet", type=Path, help="lmms-lab's VizWiz-VQA parquet file or folder instead (pyarrow)")
    p.add_argument("--split", help="--parquet folder: the file-name prefix of the shards to read (val or test)")
    p.add_argument("--image-root", type=Path, help="the split's image folder (or a folder holding val/ or test/)")
    p.add_argument("--prompt", default="llava", choices=VIZWIZ_PROMPTS, help="default: llava")
    p.add_argument(
        "--normalize",
        default="official",
        choices=VIZWIZ_NORMALIZATIONS,
        help="official: VizWiz vqaEval.py on the submitted answer (default); lmms_eval: EvalAI processor on both sides",
    )


def _build(args: argparse.Namespace, run: bool) -> VizWizBenchmark:
    if args.parquet is not None:
        vset = load_vizwiz_parquet(args.parquet, args.limit, args.split)
        return VizWizBenchmark(vset, args.prompt, args.normalize)
    if run and args.image_root is None:
        raise UserError("vizwiz run needs --image-root (the split's image folder) or --parquet")
    vset = load_vizwiz(args.annotations, args.llava_questions, args.image_root, args.limit)
    return VizWizBenchmark(vset, args.prompt, args.normalize)


def _suite_args(folder: Path) -> dict[str, Any] | None:
    """LLaVA's layout (vizwiz/llava_test.jsonl + test/, test.json if there: an EvalAI submission, as LLaVA reports)
    first, else the authors' val (val.json + val/, scored here)."""
    if (folder / "llava_test.jsonl").is_file() and (folder / "test").is_dir():
        values: dict[str, Any] = {"llava_questions": folder / "llava_test.jsonl", "image_root": folder / "test"}
        if (folder / "test.json").is_file():
            values["annotations"] = folder / "test.json"
        return values
    if (folder / "val.json").is_file() and (folder / "val").is_dir():
        return {"annotations": folder / "val.json", "image_root": folder / "val"}
    return None


SPEC = register(
    BenchmarkSpec(
        name="vizwiz",
        help="VizWiz-VQA: VQA accuracy (VizWiz API) per answer type on val; EvalAI submission for test",
        add_args=_add_args,
        build=_build,
        max_new_tokens_help="default: 16, ample for the single word or phrase asked for (LLaVA's model_vqa_loader "
        "allows 128, lmms-eval the model's default); pass 128 to match LLaVA exactly",
        suite_args=_suite_args,
        folder="vizwiz",
        files="LLaVA's llava_test.jsonl (eval.zip) + test/ images (+ test.json), or val.json + val/ "
        "(vizwiz.org Annotations.zip, val.zip)",
        published={"superclass_table11": 54.33, "llava15_7b": 50.0},
    )
)

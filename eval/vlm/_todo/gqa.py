"""GQA testdev-balanced: the official questions JSON (and LLaVA's question JSONL), LLaVA's prompt, official accuracy.

usage: superclass eval gqa run --model DIR --questions testdev_balanced_questions.json --image-root images --out OUT
       superclass eval gqa run ... --llava-questions llava_gqa_testdev_balanced.jsonl   (LLaVA's ids and prompt text)
       superclass eval gqa score --questions testdev_balanced_questions.json --predictions P.jsonl --out OUT
       superclass eval gqa run --model DIR --parquet GQA/testdev_balanced_instructions
           --parquet-images GQA/testdev_balanced_images --out OUT

Files. GQA's questions JSON (gqadataset.org, questions1.2.zip) is an object `{question id: {"imageId", "question",
"answer", "fullAnswer", "isBalanced", "types": {"structural", "semantic", "detailed"}, ...}}`; the images are
`{imageId}.jpg` (images.zip, under `--image-root` or its `images/`). LLaVA's `llava_gqa_testdev_balanced.jsonl`
(eval.zip) has one `{"question_id", "image", "text"}` per line: the GQA question id, `{imageId}.jpg`, and the
question + "\\nAnswer the question using a single word or phrase." (the text LLaVA feeds, used verbatim); with the
questions JSON too, each line takes its answer and types by id. Questions with `isBalanced: false` are left out
(counted), as the official script scores only balanced ones; malformed rows are counted in `counts`.

`--parquet`: lmms-lab's GQA (lmms-eval's gqa task, lmms_eval/tasks/gqa/gqa.yaml + utils.py; a file or a folder of
`<split>-*.parquet` shards, `--split` picking a folder's, testdev there; needs pyarrow). Its questions are the
`testdev_balanced_instructions` config, columns `id` (GQA's question id, the id here), `imageId`, `question`,
`answer` (doc_to_target) and, where present, `types` and `isBalanced`; its images the `testdev_balanced_images`
config (`--parquet-images`, needed by run), columns `id` (the imageId) and `image` ({bytes, path}), joined by imageId
as utils.py's gqa_process_docs does. A question row's position is lmms-eval's doc_id (`QuestionIndex.doc_rows`).

Metric (`--normalize official`): what LLaVA-1.5 reports. LLaVA's scripts/convert_gqa_for_eval.py (haotian-liu/LLaVA)
writes each answer as `text.rstrip('.').lower()` into `{tier}_predictions.json` ([{"questionId", "prediction"}]), and
GQA's eval.py (the evaluation script of the GQA site, https://cs.stanford.edu/people/dorarad/gqa/evaluate.html, which
LLaVA's scripts/v1_5/eval/gqa.sh runs with --tier testdev_balanced) counts a question right when
`prediction == answer`, exactly, over the balanced questions; "binary" are the non-`query` structural types, "open"
the `query` ones, and it breaks accuracy down by `types.structural` and `types.semantic`. Surrounding whitespace is
dropped first (LLaVA's model_vqa_loader strips its answers; so does our runner). `--normalize lmms_eval`:
lmms-eval's gqa task (lmms_eval/tasks/gqa/gqa.yaml: `exact_match` with ignore_case and ignore_punctuation,
lmms_eval/api/metrics.py `exact_match_hf_evaluate`): both sides stripped, lower-cased and every
`string.punctuation` character removed. Validity, plausibility, consistency and distribution need the choices,
entailment and scene-graph files (not distributed for testdev): left out.

Prompt: `llava` (default) is LLaVA's text (the JSONL's verbatim, else question + the short-answer instruction);
`lmms_eval` is lmms-eval's gqa `doc_to_text` (pre_prompt "" + question + the same "\\nAnswer the question using a
single word or phrase."), which gives the same text. `run` and `score` also write `{tier}_predictions.json` in the
official format, so GQA's eval.py can be run on it unchanged.
"""

from __future__ import annotations

import argparse
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eval.vlm.answers import QuestionIndex
from eval.vlm.base import PromptItem, VLMBenchmark
from eval.vlm.files import ImageFinder, parquet_rows, read_json, read_llava_questions
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.registry import BenchmarkSpec, register
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb  # the shared decoder (16-bit images scaled, not clipped)
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import DataError, UserError
from vlm.templates import SHORT_ANSWER_PROMPT

GQA_PROMPTS = ("llava", "lmms_eval")
GQA_NORMALIZATIONS = ("official", "lmms_eval")
NORMALIZATION_RULES = {
    "official": "LLaVA's convert_gqa_for_eval.py (strip, drop trailing '.', lower-case), then GQA eval.py's exact "
    "match against the answer",
    "lmms_eval": "lmms-eval's exact_match with ignore_case and ignore_punctuation (both sides lower-cased, "
    "string.punctuation removed)",
}
EXPECTED = "GQA's questions JSON: an object of question id -> {imageId, question, answer, types, ...}"
_PUNCTUATION = str.maketrans("", "", string.punctuation)
PARQUET_COLUMNS = ("id", "imageId", "question", "answer")  # lmms-lab/GQA testdev_balanced_instructions
IMAGE_COLUMNS = ("id", "image")  # lmms-lab/GQA testdev_balanced_images (lmms_eval/tasks/gqa/utils.py)


@dataclass
class GQAQuestion:
    """One question: ids, text, image, answer and the official breakdown types (None where the file has none)."""

    qid: QuestionId
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
        """The image as an RGB PIL image (opened when the runner asks for it)."""
        if self.image is None:
            raise DataError(f"GQA question {self.raw_id}: no image")
        return open_rgb(self.image)


@dataclass
class GQASet:
    """The questions of one GQA tier, where they came from, and what was skipped (`counts`)."""

    split: str
    source: str
    items: list[GQAQuestion]
    counts: dict[str, int]
    format: str  # official | llava_jsonl | parquet
    doc_rows: list[QuestionId | None] | None = None  # parquet: each row's id (lmms-eval's doc_id), None if skipped

    @property
    def has_answers(self) -> bool:
        return any(item.answer is not None for item in self.items)


def _official_question(raw_id: str, row: Any) -> GQAQuestion | None:
    """A questions-JSON entry as a GQAQuestion, or None when malformed."""
    if not isinstance(row, dict):
        return None
    text, image_id, answer, types = row.get("question"), row.get("imageId"), row.get("answer"), row.get("types")
    if not isinstance(text, str) or not isinstance(image_id, (str, int)) or str(image_id) == "":
        return None
    if answer is not None and not isinstance(answer, str):
        return None
    types = types if isinstance(types, dict) else {}
    try:
        qid = norm_id(raw_id)
    except ValueError:
        return None
    item = GQAQuestion(qid, raw_id, text, str(image_id), answer, types.get("structural"), types.get("semantic"))
    item.balanced = row.get("isBalanced", True) is not False
    return item


def read_gqa_questions(path: str | Path, counts: dict[str, int]) -> dict[str, GQAQuestion]:
    """raw id -> question of the well-formed entries of GQA's questions JSON, in file order (malformed counted)."""
    doc = read_json(path, "GQA questions JSON")
    if not isinstance(doc, dict) or not doc:
        raise DataError(f"{path}: not {EXPECTED}")
    out: dict[str, GQAQuestion] = {}
    for raw_id, row in doc.items():
        item = _official_question(raw_id, row)
        if item is None:
            counts["malformed_questions"] += 1
        else:
            out[raw_id] = item
    if not out:
        raise DataError(f"{path}: none of its {len(doc)} entries is a well-formed question ({EXPECTED})")
    return out


def _llava_question(
    row: dict[str, Any], official: dict[str, GQAQuestion] | None, counts: dict[str, int]
) -> GQAQuestion | None:
    """A LLaVA JSONL row as a GQAQuestion (answer and types from `official` by id), or None when malformed."""
    raw, image, text = row.get("question_id"), row.get("image"), row.get("text")
    if raw is None or not isinstance(image, str) or not image or not isinstance(text, str):
        return None
    try:
        qid = norm_id(raw)
    except ValueError:
        return None
    suffix = f"\n{SHORT_ANSWER_PROMPT}"
    prompt = text if text.endswith(suffix) else None
    ann = official.get(str(raw)) if official is not None else None
    counts["unannotated"] += official is not None and ann is None
    if ann is not None:  # the official entry (answer, types, raw id), asked in LLaVA's text
        return replace(ann, prompt=prompt, image_name=image)
    question = text[: -len(suffix)] if prompt is not None else text
    return GQAQuestion(qid, str(raw), question, Path(image).stem, prompt=prompt, image_name=image)


def gqa_tier(path: str | Path) -> str:
    """The tier of a questions file, as eval.py's --tier names it (`testdev_balanced`); `gqa` when unknown."""
    match = re.search(r"((?:testdev|val|train|test|challenge|submission)_(?:balanced|all))", Path(path).name)
    return match.group(1) if match else "gqa"


def load_gqa(
    questions: str | Path | None = None,
    llava_questions: str | Path | None = None,
    image_root: str | Path | None = None,
    limit: int | None = None,
) -> GQASet:
    """GQA from its questions JSON, LLaVA's question JSONL, or both (LLaVA's rows, the JSON's answers and types).

    `limit`: a fixed subset stratified by structural type. Images are looked up only when `image_root` is given.
    """
    if questions is None and llava_questions is None:
        raise UserError("GQA needs --questions (testdev_balanced_questions.json) and/or --llava-questions")
    counts = dict.fromkeys(("malformed_questions", "unbalanced", "unannotated", "duplicate_questions"), 0)
    counts["missing_images"] = 0
    official = read_gqa_questions(questions, counts) if questions is not None else None
    if llava_questions is None:
        candidates = list(official.values())
    else:
        candidates = []
        for row in read_llava_questions(llava_questions):
            item = _llava_question(row, official, counts)
            counts["malformed_questions"] += item is None
            if item is not None:
                candidates.append(item)
    items, seen = [], set()
    for item in candidates:
        if not item.balanced:
            counts["unbalanced"] += 1
            continue
        if item.qid in seen:  # e.g. "0123" and "123": one id once norm_id'd (the shared pipeline's ids)
            counts["duplicate_questions"] += 1
            continue
        seen.add(item.qid)
        items.append(item)
    items = fixed_subset(items, limit, key=lambda q: q.structural or "unknown")
    if image_root is not None:
        finder = ImageFinder(image_root, [".", "images"])
        for item in items:
            item.image = finder.find([item.image_name or f"{item.image_id}.jpg"])
            counts["missing_images"] += item.image is None
    tier = gqa_tier(questions if questions is not None else llava_questions)
    source = " + ".join(str(p) for p in (llava_questions, questions) if p is not None)
    return GQASet(tier, source, items, counts, "official" if llava_questions is None else "llava_jsonl")


def load_gqa_parquet(
    path: str | Path, images: str | Path | None = None, limit: int | None = None, split: str | None = None
) -> GQASet:
    """lmms-lab's GQA testdev_balanced_instructions parquet (file or folder of `{split}-*.parquet`), its images from
    the testdev_balanced_images parquet when given; `limit` a fixed subset stratified by structural type."""
    rows, split = parquet_rows(path, split, PARQUET_COLUMNS, "lmms-lab's GQA testdev_balanced_instructions parquet")
    counts = dict.fromkeys(("malformed_questions", "unbalanced", "duplicate_questions", "missing_images"), 0)
    items: list[GQAQuestion] = []
    doc_rows: list[QuestionId | None] = []
    seen: set[QuestionId] = set()
    for row in rows:
        item = _official_question(str(row.get("id")), row) if row.get("id") is not None else None
        counts["malformed_questions"] += item is None
        counts["unbalanced"] += item is not None and not item.balanced
        counts["duplicate_questions"] += item is not None and item.balanced and item.qid in seen
        if item is None or not item.balanced or item.qid in seen:
            doc_rows.append(None)
            continue
        seen.add(item.qid)
        doc_rows.append(item.qid)
        items.append(item)
    if not items:
        raise DataError(f"{path}: no well-formed GQA question (expected lmms-lab's GQA testdev_balanced_instructions)")
    items = fixed_subset(items, limit, key=lambda q: q.structural or "unknown")
    if images is not None:
        wanted = {item.image_id for item in items}
        found: dict[str, bytes] = {}
        image_split = split if Path(images).is_dir() else None
        what = "lmms-lab's GQA testdev_balanced_images parquet"
        image_rows, _ = parquet_rows(images, image_split, IMAGE_COLUMNS, what)
        for row in image_rows:
            image, image_id = row.get("image"), str(row.get("id"))
            data = image.get("bytes") if isinstance(image, dict) else image
            if image_id in wanted and isinstance(data, (bytes, bytearray)) and data:
                found.setdefault(image_id, bytes(data))
        for item in items:
            item.image = found.get(item.image_id)
            counts["missing_images"] += item.image is None
    source = str(path) + (f" + {images}" if images is not None else "")
    return GQASet(f"{split}_balanced", source, items, counts, "parquet", doc_rows)


def convert_prediction(text: str) -> str:
    """An answer as LLaVA's convert_gqa_for_eval.py writes it for eval.py: stripped, trailing '.' gone, lower-case."""
    return text.strip().rstrip(".").lower()


def _lmms_exact(text: str) -> str:
    return text.strip().lower().translate(_PUNCTUATION)


def gqa_correct(prediction: str, answer: str, normalize: str = "official") -> bool:
    """Whether `prediction` counts as `answer` under the official rule (or lmms-eval's; see the module docstring)."""
    if normalize == "official":
        return convert_prediction(prediction) == answer
    if normalize == "lmms_eval":
        return _lmms_exact(prediction) == _lmms_exact(answer)
    raise ValueError(f"unknown GQA normalization '{normalize}' (expected one of {list(GQA_NORMALIZATIONS)})")


def _percent(values: list[float]) -> float | None:
    return round(100.0 * sum(values) / len(values), 2) if values else None


def score_gqa(gset: GQASet, predictions: Mapping[QuestionId, str], normalize: str = "official") -> dict[str, Any]:
    """Accuracy (percent) overall, binary/open and per structural and semantic type, as GQA's eval.py computes it."""
    scores: list[float] = []
    binary: list[float] = []
    open_: list[float] = []
    by_structural: dict[str, list[float]] = {}
    by_semantic: dict[str, list[float]] = {}
    missing = 0
    for item in gset.items:
        if item.answer is None:
            continue
        pred = predictions.get(item.qid)
        missing += pred is None
        score = float(pred is not None and gqa_correct(pred, item.answer, normalize))
        scores.append(score)
        (open_ if item.structural == "query" else binary).append(score)  # eval.py: open iff structural is query
        by_structural.setdefault(str(item.structural), []).append(score)
        by_semantic.setdefault(str(item.semantic), []).append(score)
    ids = {item.qid for item in gset.items}
    return {
        "accuracy": _percent(scores),
        "binary": _percent(binary),
        "open": _percent(open_),
        "num_scored": len(scores),
        "per_structural_type": {k: _percent(v) for k, v in sorted(by_structural.items())},
        "per_semantic_type": {k: _percent(v) for k, v in sorted(by_semantic.items())},
        "normalization": normalize,
        "num_questions": len(gset.items),
        "missing_predictions": missing,
        "unknown_predictions": sum(1 for qid in predictions if qid not in ids),
    }


def gqa_prompt(item: GQAQuestion, layout: str = "llava") -> str:
    """The question text as LLaVA (its JSONL's text verbatim when read from it) or lmms-eval asks it."""
    if layout == "llava" and item.prompt is not None:
        return item.prompt
    if layout not in GQA_PROMPTS:
        raise UserError(f"unknown GQA prompt layout '{layout}' (expected one of {list(GQA_PROMPTS)})")
    return f"{item.question}\n{SHORT_ANSWER_PROMPT}"


class GQABenchmark(VLMBenchmark):
    """GQA: exact-match accuracy with the official breakdowns; eval.py's predictions file beside it."""

    name = "gqa"

    def __init__(self, gset: GQASet, prompt: str = "llava", normalize: str = "official") -> None:
        if prompt not in GQA_PROMPTS:
            raise UserError(f"unknown GQA prompt layout '{prompt}' (expected one of {list(GQA_PROMPTS)})")
        if normalize not in GQA_NORMALIZATIONS:
            raise UserError(f"unknown GQA normalization '{normalize}' (expected one of {list(GQA_NORMALIZATIONS)})")
        self.gset, self.prompt, self.normalize = gset, prompt, normalize

    def prompt_items(self) -> list[PromptItem]:
        return [PromptItem(q.qid, gqa_prompt(q, self.prompt), q.load_image) for q in self.gset.items if q.image]

    def describe(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "split": self.gset.split,
            "source": self.gset.source,
            "prompt": self.prompt,
            "question_format": self.gset.format,
            "normalization": self.normalize,
            "normalization_rule": NORMALIZATION_RULES[self.normalize],
            "num_questions": len(self.gset.items),
            "data_counts": dict(self.gset.counts),
        }

    def score(self, predictions: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        return score_gqa(self.gset, predictions, self.normalize) if self.gset.has_answers else None

    def write_outputs(self, out_dir: Path, predictions: Mapping[QuestionId, str]) -> dict[str, str]:
        """`{tier}_predictions.json` as LLaVA's converter writes it ("" where unanswered): eval.py's input."""
        rows, empty = [], 0
        for item in self.gset.items:
            pred = predictions.get(item.qid)
            empty += pred is None
            rows.append({"questionId": item.raw_id, "prediction": convert_prediction(pred or "")})
        path = out_dir / f"{self.gset.split}_predictions.json"
        write_text_atomically(path, json.dumps(rows) + "\n")
        return {"gqa_predictions": str(path), "gqa_predictions_empty": str(empty)}

    def question_index(self) -> QuestionIndex:
        return QuestionIndex([item.qid for item in self.gset.items], self.gset.doc_rows)


# ----------------------------------------------------------------------------------------------- registry
def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--questions", type=Path, help="GQA's questions JSON (testdev_balanced_questions.json)")
    p.add_argument(
        "--llava-questions",
        type=Path,
        help="LLaVA's llava_gqa_testdev_balanced.jsonl: its ids, images and prompt text (answers from --questions)",
    )
    p.add_argument("--image-root", type=Path, help="GQA's image folder ({imageId}.jpg, or images/ under it)")
    p.add_argument(
        "--parquet",
        type=Path,
        help="lmms-lab's GQA testdev_balanced_instructions parquet file or folder instead (pyarrow)",
    )
    p.add_argument(
        "--parquet-images",
        type=Path,
        help="lmms-lab's GQA testdev_balanced_images parquet file or folder (the images of --parquet); needed by run",
    )
    p.add_argument("--split", help="--parquet folder: the file-name prefix of the shards to read (lmms-lab: testdev)")
    p.add_argument("--prompt", default="llava", choices=GQA_PROMPTS, help="default: llava (lmms_eval: the same text)")
    p.add_argument(
        "--normalize",
        default="official",
        choices=GQA_NORMALIZATIONS,
        help="official: LLaVA's converter + eval.py's exact match (default); lmms_eval: case and punctuation ignored",
    )


def _build(args: argparse.Namespace, run: bool) -> GQABenchmark:
    if args.parquet is not None:
        if run and args.parquet_images is None:
            raise UserError("gqa run --parquet needs --parquet-images (lmms-lab's GQA testdev_balanced_images)")
        gset = load_gqa_parquet(args.parquet, args.parquet_images, args.limit, args.split)
        return GQABenchmark(gset, args.prompt, args.normalize)
    if run and args.image_root is None:
        raise UserError("gqa run needs --image-root (GQA's images folder) or --parquet")
    gset = load_gqa(args.questions, args.llava_questions, args.image_root, args.limit)
    return GQABenchmark(gset, args.prompt, args.normalize)


def _suite_args(folder: Path) -> dict[str, Any] | None:
    """LLaVA's layout (gqa/llava_gqa_testdev_balanced.jsonl, gqa/data/{testdev_balanced_questions.json, images/})
    or the authors' (testdev_balanced_questions.json + images/ in the folder)."""
    questions = next((p for p in (folder / "data", folder) if (p / "testdev_balanced_questions.json").is_file()), None)
    images = next((p for p in (folder / "data" / "images", folder / "images") if p.is_dir()), None)
    if questions is None or images is None:
        return None
    values: dict[str, Any] = {"questions": questions / "testdev_balanced_questions.json", "image_root": images}
    llava = folder / "llava_gqa_testdev_balanced.jsonl"
    if llava.is_file():
        values["llava_questions"] = llava
    return values


SPEC = register(
    BenchmarkSpec(
        name="gqa",
        help="GQA testdev-balanced: exact-match accuracy (GQA's eval.py after LLaVA's converter), per question type",
        add_args=_add_args,
        build=_build,
        max_new_tokens_help="default: 16, as lmms-eval's gqa, ample for the single word or phrase asked for "
        "(LLaVA's model_vqa_loader allows 128; pass 128 to match it exactly)",
        suite_args=_suite_args,
        folder="gqa",
        files="testdev_balanced_questions.json + images/ (gqadataset.org), and LLaVA's "
        "llava_gqa_testdev_balanced.jsonl (eval.zip); LLaVA's layout keeps the GQA files in data/",
        published={"superclass_table11": 60.96, "llava15_7b": 62.0},
    )
)

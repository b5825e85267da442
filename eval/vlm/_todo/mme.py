"""MME: 10 perception and 4 cognition subtasks of yes/no question pairs, read from the official release folder,
asked with LLaVA-1.5's prompt and scored as the official eval_tool/calculation.py scores them.

usage: superclass eval mme run --model DIR --data MME/MME_Benchmark_release_version
           [--llava-questions MME/llava_mme.jsonl] --out OUT [--prompt lmms_eval]
       superclass eval mme run --model DIR --parquet MME/data --out OUT [--split test]

Files. `MME_Benchmark_release_version` (from the MME authors; github.com/BradyFU/Awesome-Multimodal-Large-Language-
Models, Evaluation branch) holds one folder per subtask: a folder with `images/` keeps its questions in
`questions_answers_YN/` (artwork, celebrity, landmark, posters, scene), the others keep each `.txt` beside its image
(the rule of `get_gt` in LLaVA's playground/data/eval/MME/convert_answer_to_mme.py). A `.txt` is named after its
image and has one `question<TAB>Yes|No` line per question, two per image; questions end in "Please answer yes or
no.". LLaVA's `llava_mme.jsonl` (eval.zip) asks the same questions: `{"question_id": "<subtask>/[images/]<image>",
"image": the same path, "text", "category"}`, text = the question without " Please answer yes or no." + "\nAnswer the
question using a single word or phrase."; both questions of an image share its question_id. Its rows take their
answers by (subtask, image, question), the question with " Please answer yes or no." put back (one space, else two),
as convert_answer_to_mme.py does; a row without one is counted `unannotated` and left out.
Ids here are "<LLaVA's image id>#<the question's line in its .txt>", one per question; LLaVA's answer files, which
repeat the image id, are matched by (image id, question) (`QuestionIndex.by_image_question`). lmms-eval's samples
also name both questions of an image by one id, so `score` cannot tell them apart: score lmms-eval runs there.

`--parquet`: lmms-lab's MME (lmms-eval's mme task; a file or a folder of `<split>-*.parquet` shards, `--split`
picking a folder's; needs pyarrow). Columns per lmms_eval/tasks/mme/utils.py: doc["question_id"] (the image's path,
"<subtask>/[images/]<image>", shared by its two questions), doc["question"], doc["answer"] (Yes/No), doc["category"]
(the subtask) and doc["image"] (a {bytes, path} struct). Ids are "<question_id>#<n>", n the question's order among
its image's rows (1, 2: the .txt line order), the release's ids where lmms-lab's question_id is LLaVA's image id; the
row's position is lmms-eval's doc_id (`QuestionIndex.doc_rows`).

Prompt: `llava` (default): LLaVA's JSONL text verbatim, else the question without its "Please answer yes or no." +
"\n" + SHORT_ANSWER_PROMPT (scripts/v1_5/eval/mme.sh runs model_vqa_loader on llava_mme.jsonl, vicuna_v1);
`lmms_eval`: lmms-eval's mme task (lmms_eval/tasks/mme/utils.py mme_doc_to_text: question.strip() with
" Please answer yes or no." replaced by "", + post_prompt, the same instruction).

Metric: eval_tool/calculation.py (tools/eval_tool.zip of that Evaluation branch). An answer, lower-cased, is "yes" or
"no" when it is exactly that, else "yes" when its first 4 characters contain "yes", else "no" when they contain
"no", else "other" (wrong) (`parse_pred_ans`). Per subtask: acc = questions right, acc+ = images with both questions
right, score = 100 acc + 100 acc+ (max 200); `perception` is the sum of the 10 perception scores (max 2000; the
headline, LLaVA-1.5-7B 1510.7), `cognition` of the 4 cognition ones (max 800). A question without a prediction is
"other". `OUT/eval_tool_answers/<subtask>.txt` are the tool's input files (image, question, answer, response), so
`python calculation.py --results_dir OUT/eval_tool_answers` reproduces the scores of a full run.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eval.vlm.answers import QuestionIndex
from eval.vlm.base import PromptItem, VLMBenchmark
from eval.vlm.files import parquet_rows
from eval.vlm.ids import QuestionId
from eval.vlm.registry import BenchmarkSpec, register
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb  # the shared decoder (16-bit images scaled, not clipped)
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.jsonl import read_jsonl_file
from vlm.templates import SHORT_ANSWER_PROMPT

# calculation.py's eval_type_dict, in its order
MME_SUBTASKS = {
    "perception": (
        "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
    ),
    "cognition": ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"),
}  # fmt: skip
SUBTASK_GROUP = {name: group for group, names in MME_SUBTASKS.items() for name in names}
MME_PROMPTS = ("llava", "lmms_eval")
YES_NO = "Please answer yes or no."
_YES_NO_TAIL = re.compile(r"\s*" + re.escape(YES_NO) + r"\s*$")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
LLAVA_KEYS = ("question_id", "image", "text")
PARQUET_COLUMNS = ("question_id", "question", "answer", "category", "image")  # lmms_eval/tasks/mme/utils.py reads
ANSWER_RULE = (
    "MME eval_tool/calculation.py parse_pred_ans on the lower-cased answer: exactly yes/no, else 'yes' in its first "
    "4 characters -> yes, else 'no' in them -> no, else other (wrong)"
)


@dataclass
class MMEItem:
    """One question: id, subtask, LLaVA's image id, image file, question, official answer (Yes/No), .txt line."""

    question_id: str
    subtask: str
    image_id: str  # "<subtask>/[images/]<file>", LLaVA's question_id; the pair's key for acc+
    path: Path | bytes | None  # the image file, or its bytes from a parquet row
    question: str
    answer: str
    line: int
    llava_text: str | None = None  # LLaVA's JSONL `text`, the `llava` prompt verbatim

    @property
    def truth(self) -> str:
        return self.answer.strip().lower()

    def load_image(self) -> Any:
        if self.path is None:
            raise DataError(f"MME question {self.question_id}: no image file beside its questions")
        return open_rgb(self.path)


@dataclass
class MMESet:
    """The questions to run and score, where they came from, and what was skipped (`counts`)."""

    source: str
    items: list[MMEItem]
    counts: dict[str, int]
    format: str  # "mme" (the release folder is the question set) | "llava_jsonl" | "parquet"
    missing_subtasks: list[str]
    doc_rows: list[QuestionId | None] | None = None  # parquet: each row's id (lmms-eval's doc_id), None if skipped


def _file_key(name: str) -> str:
    """A question file's key as convert_answer_to_mme.py forms it: the name up to its first "."."""
    return name.split("/")[-1].split(".")[0]


def _read_subtask(root: Path, subtask: str, counts: dict[str, int]) -> list[MMEItem]:
    """The questions of one subtask folder, in file-name then line order; bad lines and missing images counted."""
    folder = root / subtask
    if (folder / "images").is_dir():
        images, qa, prefix = folder / "images", folder / "questions_answers_YN", f"{subtask}/images/"
        if not qa.is_dir():
            raise DataError(f"{folder}: has images/ but no questions_answers_YN/ (expected MME's release layout)")
    else:
        images, qa, prefix = folder, folder, f"{subtask}/"
    files = {_file_key(n): n for n in sorted(os.listdir(images)) if Path(n).suffix.lower() in IMAGE_SUFFIXES}
    items = []
    for txt in sorted(n for n in os.listdir(qa) if n.endswith(".txt")):
        image = files.get(_file_key(txt))
        counts["missing_images"] += image is None
        image_id = prefix + (image or Path(txt).stem)
        text = (qa / txt).read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            fields = line.strip().split("\t")
            if len(fields) != 2 or fields[1].strip().lower() not in ("yes", "no"):
                counts["malformed_lines"] += 1
                continue
            path = images / image if image else None
            items.append(MMEItem(f"{image_id}#{number}", subtask, image_id, path, fields[0], fields[1], number))
    return items


def _from_llava(path: Path, items: list[MMEItem], counts: dict[str, int]) -> list[MMEItem]:
    """LLaVA's llava_mme.jsonl rows, each given the release's answer by (subtask, image, question)."""
    expected = "LLaVA's llava_mme.jsonl: {question_id: <subtask>/<image>, image, text, category}"
    rows, bad = read_jsonl_file(path, LLAVA_KEYS, expected)
    counts["malformed_questions"] += bad
    truth = {(i.subtask, _file_key(i.image_id), i.question): i for i in items}
    out, used = [], set()
    for row in rows:
        qid, text = row.get("question_id"), row.get("text")
        if not isinstance(qid, str) or "/" not in qid or not isinstance(text, str):
            counts["malformed_questions"] += 1
            continue
        subtask, key = qid.split("/")[0], _file_key(qid)
        question = text.replace(SHORT_ANSWER_PROMPT, "").strip() if SHORT_ANSWER_PROMPT in text else text
        if YES_NO not in question:  # put the instruction back, one space or two, as convert_answer_to_mme.py does
            question += " " + YES_NO
            if (subtask, key, question) not in truth:
                question = question.replace(" " + YES_NO, "  " + YES_NO)
        item = truth.get((subtask, key, question))
        if item is None:
            counts["unannotated"] += 1
        elif item.question_id in used:
            counts["duplicate_questions"] += 1
        else:
            used.add(item.question_id)
            out.append(replace(item, llava_text=text))
    return out


def load_mme(data: str | Path, questions: str | Path | None = None, limit: int | None = None) -> MMESet:
    """The release folder's questions (or LLaVA's JSONL answered from it); `limit` keeps about that many questions:
    a fixed subset of (limit + 1) // 2 images, stratified by subtask, each with both its questions."""
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected MME_Benchmark_release_version with one folder per subtask)")
    present = [s for s in SUBTASK_GROUP if (root / s).is_dir()]
    if not present:
        raise DataError(f"{root}: none of MME's subtask folders ({', '.join(SUBTASK_GROUP)})")
    counts = dict.fromkeys(("malformed_lines", "malformed_questions", "unannotated", "duplicate_questions"), 0)
    counts.update(missing_images=0, unpaired_images=0)
    items = [item for subtask in present for item in _read_subtask(root, subtask, counts)]
    if questions is not None:
        items = _from_llava(Path(questions), items, counts)
    if not items:
        raise DataError(f"{questions or root}: no MME question with an answer in {root}")
    if counts["unannotated"]:
        note = f"{counts['unannotated']} questions have no answer in {root} (left out)"
        print(f"warning: {questions}: {note}", file=sys.stderr)
    items = _subset(items, limit, counts)
    source = str(root) + (f" + {questions}" if questions is not None else "")
    missing = [s for s in SUBTASK_GROUP if s not in present]
    return MMESet(source, items, counts, "mme" if questions is None else "llava_jsonl", missing)


def _subset(items: list[MMEItem], limit: int | None, counts: dict[str, int]) -> list[MMEItem]:
    """About `limit` questions: a fixed subset of (limit + 1) // 2 images, stratified by subtask, each with both its
    questions (as acc+ needs); images without exactly two questions counted `unpaired_images`."""
    subtask_of = {item.image_id: item.subtask for item in items}
    images = (limit + 1) // 2 if limit else None
    keep = set(fixed_subset(list(subtask_of), images, key=subtask_of.get))
    items = [item for item in items if item.image_id in keep]
    per_image: dict[str, int] = {}
    for item in items:
        per_image[item.image_id] = per_image.get(item.image_id, 0) + 1
    counts["unpaired_images"] = sum(n != 2 for n in per_image.values())
    return items


def load_mme_parquet(path: str | Path, limit: int | None = None, split: str | None = None) -> MMESet:
    """lmms-lab's MME parquet (a file, or a folder of `{split}-*.parquet` shards); malformed rows (no image id,
    unknown subtask, an answer not yes/no as mme_process_results reads it) counted and left out."""
    rows, _ = parquet_rows(path, split, PARQUET_COLUMNS, "lmms-lab's MME parquet")
    counts = dict.fromkeys(("malformed_questions", "missing_images", "unpaired_images"), 0)
    items: list[MMEItem] = []
    doc_rows: list[QuestionId | None] = []
    lines: dict[str, int] = {}
    for row in rows:
        image_id, question, answer, subtask = (row.get(k) for k in PARQUET_COLUMNS[:4])
        truth = answer.lower().strip().replace(".", "") if isinstance(answer, str) else None
        if not isinstance(image_id, str) or not image_id.strip() or not isinstance(question, str):
            truth = None
        if truth not in ("yes", "no") or subtask not in SUBTASK_GROUP:
            counts["malformed_questions"] += 1
            doc_rows.append(None)
            continue
        image = row.get("image")
        data = image.get("bytes") if isinstance(image, dict) else image
        data = bytes(data) if isinstance(data, (bytes, bytearray)) and data else None
        counts["missing_images"] += data is None
        line = lines[image_id] = lines.get(image_id, 0) + 1
        item = MMEItem(f"{image_id}#{line}", subtask, image_id, data, question, answer.strip(), line)
        doc_rows.append(item.question_id)
        items.append(item)
    if not items:
        raise DataError(f"{path}: no well-formed MME question (expected lmms-lab's MME parquet)")
    items = _subset(items, limit, counts)
    missing = [s for s in SUBTASK_GROUP if all(item.subtask != s for item in items)]
    return MMESet(str(path), items, counts, "parquet", missing, doc_rows)


def mme_answer(text: str) -> str:
    """The answer read as yes, no or other: calculation.py's `parse_pred_ans` of the lower-cased answer."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    prefix = text[:4]
    return "yes" if "yes" in prefix else "no" if "no" in prefix else "other"


def score_mme(mset: MMESet, predictions: Mapping[QuestionId, str]) -> dict[str, Any]:
    """Per subtask acc, acc+ and score (= 100 acc + 100 acc+), and the perception and cognition totals."""
    tally: dict[str, dict[str, Any]] = {}
    for item in mset.items:
        pred = predictions.get(item.question_id)
        said = mme_answer(pred) if pred is not None else "other"
        t = tally.setdefault(item.subtask, {"right": 0, "questions": 0, "other": 0, "missing": 0, "images": {}})
        right = said == item.truth
        t["right"] += right
        t["questions"] += 1
        t["other"] += said == "other"
        t["missing"] += pred is None
        t["images"][item.image_id] = t["images"].get(item.image_id, True) and right
    per_subtask: dict[str, dict[str, Any]] = {}
    totals: dict[str, float | None] = dict.fromkeys(MME_SUBTASKS)
    for name, group in SUBTASK_GROUP.items():
        if name not in tally:
            continue
        t = tally[name]
        acc, acc_plus = t["right"] / t["questions"], sum(t["images"].values()) / len(t["images"])
        score = 100 * acc + 100 * acc_plus
        totals[group] = (totals[group] or 0.0) + score
        per_subtask[name] = {
            "accuracy": round(100 * acc, 2),
            "accuracy_plus": round(100 * acc_plus, 2),
            "score": round(score, 2),
            "group": group,
            "questions": t["questions"],
            "images": len(t["images"]),
            "other": t["other"],
            "missing": t["missing"],
        }
    n = len(mset.items)
    ids = {item.question_id for item in mset.items}
    return {
        "perception": round(totals["perception"], 2) if totals["perception"] is not None else None,
        "cognition": round(totals["cognition"], 2) if totals["cognition"] is not None else None,
        "total": round(sum(v for v in totals.values() if v is not None), 2),
        "accuracy": round(100 * sum(t["right"] for t in tally.values()) / n, 2) if n else None,
        "num_questions": n,
        "num_images": sum(len(t["images"]) for t in tally.values()),
        "subtasks_scored": len(per_subtask),
        "per_subtask": per_subtask,
        "missing_predictions": sum(t["missing"] for t in tally.values()),
        "other_answers": sum(t["other"] for t in tally.values()),
        "answer_rule": ANSWER_RULE,
        "unknown_predictions": sum(1 for q in predictions if q not in ids),
    }


def llava_question(question: str) -> str:
    """The question as LLaVA's llava_mme.jsonl words it: without its trailing "Please answer yes or no."."""
    return _YES_NO_TAIL.sub("", question).strip()


def mme_prompt(item: MMEItem, layout: str = "llava") -> str:
    """The question text as LLaVA-1.5's mme.sh (its JSONL text verbatim) or lmms-eval's mme task asks it."""
    if layout == "llava":
        if item.llava_text is not None:
            return item.llava_text
        return f"{llava_question(item.question)}\n{SHORT_ANSWER_PROMPT}"
    if layout == "lmms_eval":
        return f"{item.question.strip().replace(' ' + YES_NO, '')}\n{SHORT_ANSWER_PROMPT}"
    raise UserError(f"unknown MME prompt layout '{layout}' (expected one of {list(MME_PROMPTS)})")


def eval_tool_lines(mset: MMESet, predictions: Mapping[QuestionId, str]) -> dict[str, list[str]]:
    """subtask -> calculation.py's input lines (image, question, answer, response; an image's two lines adjacent,
    a response's tabs and line breaks made spaces, "" where there is no prediction)."""
    by_image: dict[str, list[MMEItem]] = {}
    for item in mset.items:
        by_image.setdefault(item.image_id, []).append(item)
    out: dict[str, list[str]] = {}
    for image_items in by_image.values():
        for item in image_items:
            response = re.sub(r"[\t\r\n]", " ", predictions.get(item.question_id, ""))
            name = item.image_id.split("/")[-1]
            out.setdefault(item.subtask, []).append(f"{name}\t{item.question}\t{item.answer}\t{response}\n")
    return out


class MMEBenchmark(VLMBenchmark):
    """MME: per-subtask acc + acc+ scores and the perception / cognition totals of the official tool."""

    name = "mme"

    def __init__(self, mset: MMESet, prompt: str = "llava") -> None:
        if prompt not in MME_PROMPTS:
            raise UserError(f"unknown MME prompt layout '{prompt}' (expected one of {list(MME_PROMPTS)})")
        self.mset, self.prompt = mset, prompt

    def prompt_items(self) -> list[PromptItem]:
        return [
            PromptItem(item.question_id, mme_prompt(item, self.prompt), item.load_image)
            for item in self.mset.items
            if item.path is not None
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "split": "test",
            "source": self.mset.source,
            "prompt": self.prompt,
            "question_format": self.mset.format,
            "num_questions": len(self.mset.items),
            "missing_subtasks": self.mset.missing_subtasks,
            "data_counts": dict(self.mset.counts),
        }

    def score(self, predictions: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        return score_mme(self.mset, predictions)

    def write_outputs(self, out_dir: Path, predictions: Mapping[QuestionId, str]) -> dict[str, str]:
        """`eval_tool_answers/<subtask>.txt`, the official calculation.py's input."""
        folder = out_dir / "eval_tool_answers"
        folder.mkdir(parents=True, exist_ok=True)
        for subtask, lines in eval_tool_lines(self.mset, predictions).items():
            write_text_atomically(folder / f"{subtask}.txt", "".join(lines))
        return {"eval_tool_answers": str(folder)}

    def question_index(self) -> QuestionIndex:
        by_image_question: dict[tuple[str, str], list[QuestionId]] = {}
        for item in self.mset.items:
            texts = [llava_question(item.question)]
            if item.llava_text is not None:
                texts.append(item.llava_text.split("\n")[0])
            for text in texts:
                ids = by_image_question.setdefault((item.image_id, text.lower()), [])
                if item.question_id not in ids:
                    ids.append(item.question_id)
        ids = [item.question_id for item in self.mset.items]
        return QuestionIndex(ids, self.mset.doc_rows, by_image_question)


# ----------------------------------------------------------------------------------------------- registry
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=Path,
        help="MME_Benchmark_release_version: one folder per subtask (images and question .txt files)",
    )
    p.add_argument("--parquet", type=Path, help="lmms-lab's MME parquet file or folder instead (pyarrow)")
    p.add_argument("--split", help="--parquet folder: the file-name prefix of the shards to read (lmms-lab: test)")
    p.add_argument(
        "--llava-questions",
        type=Path,
        help="LLaVA's llava_mme.jsonl (its text is the prompt, verbatim); without it the release is the question set",
    )
    p.add_argument("--prompt", default="llava", choices=MME_PROMPTS, help="prompt layout (default: llava)")


def _build(args: argparse.Namespace, run: bool) -> MMEBenchmark:
    if args.parquet is not None:
        return MMEBenchmark(load_mme_parquet(args.parquet, args.limit, args.split), args.prompt)
    if args.data is None:
        raise UserError("mme needs --data (MME_Benchmark_release_version) or --parquet (lmms-lab's MME)")
    return MMEBenchmark(load_mme(args.data, args.llava_questions, args.limit), args.prompt)


def _suite(folder: Path) -> dict[str, Any] | None:
    """LLaVA's playground/data/eval/MME (MME_Benchmark_release_version/, llava_mme.jsonl) or the release itself."""
    release = folder / "MME_Benchmark_release_version"
    data = release if release.is_dir() else folder
    if not any((data / s).is_dir() for s in SUBTASK_GROUP):
        return None
    values: dict[str, Any] = {"data": data}
    if (folder / "llava_mme.jsonl").is_file():
        values["llava_questions"] = folder / "llava_mme.jsonl"
    return values


SPEC = register(
    BenchmarkSpec(
        name="mme",
        help="MME: yes/no pairs, 10 perception + 4 cognition subtasks; official acc + acc+ scores",
        add_args=_args,
        build=_build,
        max_new_tokens_help="default: 16, lmms-eval's mme setting (LLaVA's model_vqa_loader allows 128; the "
        "official rule reads only the first 4 characters)",
        suite_args=_suite,
        folder="MME",
        files="MME_Benchmark_release_version/ (the MME authors' release) and LLaVA's llava_mme.jsonl (eval.zip)",
        headline="perception",
        published={"llava15_7b": 1510.7},
    )
)

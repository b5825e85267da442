"""MME: yes/no question pairs of 10 perception and 4 cognition subtasks, scored as the official calculation.py does.

usage: superclass eval mme run --model DIR --data MME/MME_Benchmark_release_version
           [--llava-questions MME/llava_mme.jsonl] --out OUT [--prompt lmms_eval] [--rule lmms_eval]
       superclass eval mme run --model DIR --parquet MME/data --out OUT [--split test]

Files. `MME_Benchmark_release_version` (BradyFU/Awesome-Multimodal-Large-Language-Models, Evaluation branch): one
folder per subtask, its `.txt` files (named after their image, two `question<TAB>Yes|No` lines each) in
`questions_answers_YN/` beside `images/`, or beside each image (`get_gt` of LLaVA's convert_answer_to_mme.py).
LLaVA's `llava_mme.jsonl` rows (`question_id` = "<subtask>/[images/]<image>", shared by an image's two questions)
take their answers by (subtask, image, question) as convert_answer_to_mme.py does, else are `unannotated`. Ids:
"<image id>#<the question's .txt line>". `--parquet`: lmms-lab's MME (lmms_eval/tasks/mme/utils.py: question_id =
the image's path, question, answer, category, image), ids "<question_id>#<n>" (n: the row's order among its
image's), the row lmms-eval's doc_id; its samples name an image, so they are scored only with `--parquet`.

Prompt: `llava` (scripts/v1_5/eval/mme.sh): the JSONL text verbatim, else the question without "Please answer yes or
no." + "\n" + SHORT_ANSWER_PROMPT; `lmms_eval`: mme_doc_to_text (stripped, that sentence removed, same post_prompt).
Rules and scores (acc, acc+, score per subtask; headline `perception`, LLaVA-1.5-7B 1510.7): eval.vlm.scoring.mme.
`OUT/eval_tool_answers/<subtask>.txt` is calculation.py's `--results_dir` input.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from eval.vlm.answers import QuestionIndex
from eval.vlm.base import BenchConfig, Benchmark, QuestionSet
from eval.vlm.files import parquet_image, parquet_rows
from eval.vlm.ids import QuestionId
from eval.vlm.scoring.mme import SUBTASK_GROUP, score_mme
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.evaluators import register
from pretrain.runtime.jsonl import read_jsonl_file
from vlm.templates import SHORT_ANSWER_PROMPT

YES_NO = "Please answer yes or no."
_YES_NO_TAIL = re.compile(r"\s*" + re.escape(YES_NO) + r"\s*$")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
TXT_LINES = "two 'question<TAB>Yes|No' lines (one image's pair, as calculation.py reads them)"
LLAVA_KEYS = ("question_id", "image", "text")
PARQUET_COLUMNS = ("question_id", "question", "answer", "category", "image")  # lmms_eval/tasks/mme/utils.py reads


@dataclass
class MMEItem:
    """One question: id, subtask, LLaVA's image id, image (file or bytes), question, official answer, .txt line."""

    id: str
    subtask: str
    image_id: str  # "<subtask>/[images/]<file>", LLaVA's question_id; the pair's key for acc+
    image: Path | bytes | None
    question: str
    answer: str
    line: int
    llava_text: str | None = None  # LLaVA's JSONL `text`, the `llava` prompt verbatim

    @property
    def truth(self) -> str:
        return self.answer.strip().lower()

    def load_image(self) -> Any:
        if self.image is None:
            raise DataError(f"MME question {self.id}: no image file beside its questions")
        return open_rgb(self.image)


def _file_key(name: str) -> str:
    """A question file's key as convert_answer_to_mme.py forms it: the name up to its first "."."""
    return name.split("/")[-1].split(".")[0]


def read_pair(path: Path) -> list[tuple[int, str, str]]:
    """(line, question, answer) of a subtask `.txt`; a file that is empty, cut off or not two `question<TAB>Yes|No`
    lines is a DataError naming it and the line (never scored in part)."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        fields = line.strip().split("\t")
        if line.strip() and (len(fields) != 2 or fields[1].strip().lower() not in ("yes", "no")):
            raise DataError(f"{path}: line {number} is not 'question<TAB>Yes|No': {line[:80]!r} (expected {TXT_LINES})")
        if line.strip():
            rows.append((number, fields[0], fields[1]))
    if len(rows) != 2:
        where = f"line {rows[2][0]}: a third question" if len(rows) > 2 else f"line {rows[-1][0] + 1 if rows else 1}"
        what = "" if len(rows) > 2 else ": empty file" if not rows else ": cut off after one question"
        raise DataError(f"{path}: {where}{what} (expected {TXT_LINES})")
    return rows


def _read_subtask(root: Path, subtask: str, counts: dict[str, int]) -> list[MMEItem]:
    """The questions of one subtask folder, in file-name then line order; missing images counted."""
    folder = root / subtask
    if (folder / "images").is_dir():
        images, qa, prefix = folder / "images", folder / "questions_answers_YN", f"{subtask}/images/"
        if not qa.is_dir():
            raise DataError(f"{folder}: has images/ but no questions_answers_YN/ (expected MME's release layout)")
    else:
        images, qa, prefix = folder, folder, f"{subtask}/"
    files = {_file_key(n): n for n in sorted(os.listdir(images)) if Path(n).suffix.lower() in IMAGE_SUFFIXES}
    texts = sorted(n for n in os.listdir(qa) if n.endswith(".txt"))
    if not texts:
        raise DataError(f"{qa}: no question .txt file (expected one per image, each {TXT_LINES})")
    items = []
    for txt in texts:
        image = files.get(_file_key(txt))
        counts["missing_images"] += image is None
        image_id = prefix + (image or Path(txt).stem)
        for number, question, answer in read_pair(qa / txt):
            path = images / image if image else None
            items.append(MMEItem(f"{image_id}#{number}", subtask, image_id, path, question, answer, number))
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
        counts["unannotated"] += item is None
        counts["duplicate_questions"] += item is not None and item.id in used
        if item is not None and item.id not in used:
            used.add(item.id)
            out.append(replace(item, llava_text=text))
    return out


def _subset(items: list[MMEItem], limit: int | None, counts: dict[str, int]) -> list[MMEItem]:
    """About `limit` questions: a fixed subset of (limit + 1) // 2 images, stratified by subtask, each with both its
    questions (as acc+ needs); images without exactly two questions counted `unpaired_images`."""
    subtask_of = {item.image_id: item.subtask for item in items}
    images = (limit + 1) // 2 if limit else None
    keep = set(fixed_subset(list(subtask_of), images, key=subtask_of.get))
    items = [item for item in items if item.image_id in keep]
    counts["unpaired_images"] = sum(n != 2 for n in Counter(item.image_id for item in items).values())
    return items


def load_mme(data: str | Path, questions: str | Path | None = None, limit: int | None = None) -> QuestionSet:
    """The release folder's questions (or LLaVA's JSONL answered from it); `limit`: about that many (`_subset`)."""
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected MME_Benchmark_release_version with one folder per subtask)")
    present = [s for s in SUBTASK_GROUP if (root / s).is_dir()]
    if not present:
        raise DataError(f"{root}: none of MME's subtask folders ({', '.join(SUBTASK_GROUP)})")
    counts = dict.fromkeys(("malformed_questions", "unannotated", "duplicate_questions", "missing_images"), 0)
    counts["unpaired_images"] = 0
    items = [item for subtask in present for item in _read_subtask(root, subtask, counts)]
    if questions is not None:
        items = _from_llava(Path(questions), items, counts)
    if not items:
        raise DataError(f"{questions or root}: no MME question with an answer in {root}")
    items = _subset(items, limit, counts)
    source = str(root) + (f" + {questions}" if questions is not None else "")
    missing = [s for s in SUBTASK_GROUP if s not in present]
    fmt = "mme" if questions is None else "llava_jsonl"
    return QuestionSet(source, items, counts, "test", fmt, info={"missing_subtasks": missing})


def load_mme_parquet(path: str | Path, limit: int | None = None, split: str | None = None) -> QuestionSet:
    """lmms-lab's MME parquet (a file, or a folder of `{split}-*.parquet` shards); rows of another shape (no image id,
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
        data = parquet_image(row.get("image"))
        counts["missing_images"] += data is None
        line = lines[image_id] = lines.get(image_id, 0) + 1
        items.append(MMEItem(f"{image_id}#{line}", subtask, image_id, data, question, answer.strip(), line))
        doc_rows.append(items[-1].id)
    if not items:
        raise DataError(f"{path}: no well-formed MME question (expected lmms-lab's MME parquet)")
    items = _subset(items, limit, counts)
    missing = [s for s in SUBTASK_GROUP if all(item.subtask != s for item in items)]
    return QuestionSet(str(path), items, counts, "test", "parquet", doc_rows, {"missing_subtasks": missing})


def llava_question(question: str) -> str:
    """The question as LLaVA's llava_mme.jsonl words it: without its trailing "Please answer yes or no."."""
    return _YES_NO_TAIL.sub("", question).strip()


@dataclass
class MMEConfig(BenchConfig):
    data: str | None = field(default=None, metadata={"help": "MME_Benchmark_release_version: one folder per subtask "
                                                     "(images and question .txt files)"})  # fmt: skip
    parquet: str | None = field(default=None, metadata={"help": "lmms-lab's MME parquet file or folder (pyarrow)"})
    split: str | None = field(default=None, metadata={"help": "--parquet folder: the file-name prefix of the shards "
                                                      "to read (lmms-lab: test)"})  # fmt: skip
    llava_questions: str | None = field(default=None, metadata={"help": "LLaVA's llava_mme.jsonl (its text is the "
                                        "prompt, verbatim); without it the release is the question set"})  # fmt: skip
    prompt: Literal["llava", "lmms_eval"] = field(default="llava", metadata={"help": "prompt layout (default: llava)"})


@register
class MME(Benchmark):
    """MME: per-subtask acc + acc+ scores and the perception / cognition totals of the official tool."""

    name = "mme"
    description = "MME: yes/no pairs, 10 perception + 4 cognition subtasks; official acc + acc+ scores"
    Config = MMEConfig
    headline = "perception"
    published = {"llava15_7b": 1510.7}
    folder = "MME"
    files = "MME_Benchmark_release_version/ (the MME authors' release) and LLaVA's llava_mme.jsonl (eval.zip)"
    rules = ("official", "lmms_eval")
    max_new_tokens_help = ("default: 16, lmms-eval's mme setting (LLaVA's model_vqa_loader allows 128; the official "
                           "rule reads only the first 4 characters)")  # fmt: skip

    def load(self) -> QuestionSet:
        cfg = self.config
        if cfg.parquet is not None:
            return load_mme_parquet(cfg.parquet, cfg.limit, cfg.split)
        if cfg.data is None:
            raise UserError("mme needs --data (MME_Benchmark_release_version) or --parquet (lmms-lab's MME)")
        return load_mme(cfg.data, cfg.llava_questions, cfg.limit)

    def prompt(self, item: MMEItem) -> str:
        if self.config.prompt == "lmms_eval":
            return f"{item.question.strip().replace(' ' + YES_NO, '')}\n{SHORT_ANSWER_PROMPT}"
        if item.llava_text is not None:
            return item.llava_text
        return f"{llava_question(item.question)}\n{SHORT_ANSWER_PROMPT}"

    def metrics(self, answers: Mapping[QuestionId, str]) -> dict[str, Any]:
        return score_mme(self.questions, answers, self.config.rule)

    def submission(self, out_dir: Path, answers: Mapping[QuestionId, str]) -> dict[str, str]:
        """`eval_tool_answers/<subtask>.txt`: calculation.py's input lines (image, question, answer, response; an
        image's two lines adjacent, a response's tabs and line breaks made spaces, "" without a prediction)."""
        first = {image_id: n for n, image_id in enumerate(dict.fromkeys(item.image_id for item in self.questions))}
        lines: dict[str, list[str]] = {}
        for item in sorted(self.questions, key=lambda item: first[item.image_id]):
            response = re.sub(r"[\t\r\n]", " ", answers.get(item.id, ""))
            name = item.image_id.split("/")[-1]
            lines.setdefault(item.subtask, []).append(f"{name}\t{item.question}\t{item.answer}\t{response}\n")
        folder = out_dir / "eval_tool_answers"
        folder.mkdir(parents=True, exist_ok=True)
        for subtask, text in lines.items():
            write_text_atomically(folder / f"{subtask}.txt", "".join(text))
        return {"eval_tool_answers": str(folder)}

    def question_index(self) -> QuestionIndex:
        """Our ids, lmms-eval's doc_id rows (parquet), and LLaVA's (image id, question) key; lmms-eval's question_id
        names an image, so its samples need the parquet's rows."""
        by_image_question: dict[tuple[str, str], list[QuestionId]] = {}
        for item in self.questions:
            texts = [llava_question(item.question)]
            if item.llava_text is not None:
                texts.append(item.llava_text.split("\n")[0])
            for text in texts:
                ids = by_image_question.setdefault((item.image_id, text.lower()), [])
                if item.id not in ids:
                    ids.append(item.id)
        rows, ids = self.question_set.doc_rows, [item.id for item in self.questions]
        ambiguous = "MME's question_id names an image, shared by its two questions, so these ids are ambiguous: score "
        return QuestionIndex(ids, rows, by_image_question, ambiguous + "them with --parquet" if rows is None else None)

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        """LLaVA's playground/data/eval/MME (MME_Benchmark_release_version/, llava_mme.jsonl) or the release itself."""
        release = folder / "MME_Benchmark_release_version"
        data = release if release.is_dir() else folder
        if not any((data / s).is_dir() for s in SUBTASK_GROUP):
            return None
        llava = folder / "llava_mme.jsonl"
        return {"data": str(data), "llava_questions": str(llava)} if llava.is_file() else {"data": str(data)}

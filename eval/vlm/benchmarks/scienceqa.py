"""ScienceQA-IMG: the problems of a ScienceQA split that have an image, asked and scored as LLaVA-1.5 does.

usage: superclass eval scienceqa run|score --problems problems.json [--llava-questions llava_test_CQM-A.json]
           --image-root images/test [--split test] [--prompt lmms_eval] [--rule lmms_eval] --out OUT

Files (LLaVA's docs/Evaluation.md, playground/data/eval/scienceqa): lupantech/ScienceQA's `problems.json` (`{pid:
{"question", "choices", "answer" (an index), "hint", "image" ("image.png" or null), "subject", "grade", ...}}`),
`pid_splits.json` (`{split: [pid]}`), images `images/<split>/<pid>/<image>`; a problem of another shape, or a pid
problems.json lacks, is refused naming file and pid. Optionally LLaVA's `llava_test_CQM-A.json` (eval.zip), the file
model_vqa_science.py reads (`[{"id", "image": "<pid>/image.png", "conversations": [{"value": "<image>\\nContext:
<hint>\\n<question>\\nA. <choice>..."}, ...]}]`). Or lmms-lab's ScienceQA-IMG parquet (a row is lmms-eval's doc_id).
The set: the split's problems with an image (2017 of 4241 test; the rest counted `no_image`), whose accuracy is
eval_science_qa.py's "IMG-Accuracy", LLaVA-1.5's SQA number (66.8 for 7B).

Prompt `llava`: the human turn of LLaVA's file (`<image>` removed, stripped, as model_vqa_science.py), "\\n" and
LETTER_ANSWER_PROMPT (its --single-pred-prompt); without the file, built in that layout ("Context: <hint>\\n", the
question, "A. <choice>" lines; `llava_prompt_differs` counts file texts that differ). `lmms_eval`: lmms-eval's
scienceqa_img `sqa_doc_to_text` (default format): the same text built from the problem, not stripped.

Rules (`official`: LLaVA's eval_science_qa.py; `lmms_eval`: lmms-eval's sqa_process_results) and accuracy per
subject, context and grade band: eval.vlm.scoring.scienceqa.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eval.vlm.base import BenchConfig, Benchmark, QuestionSet
from eval.vlm.files import parquet_image, parquet_rows, read_json
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.scoring.scienceqa import GRADE_BANDS, OPTIONS, score_scienceqa
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.evaluators import register
from vlm.templates import IMAGE_TOKEN, LETTER_ANSWER_PROMPT

PARQUET_COLUMNS = ("question", "choices", "answer", "image")
PROBLEM_SHAPE = "{question, choices: 2-5 strings, answer: an index of them or null, hint, image}"


@dataclass
class Problem:
    """One ScienceQA problem: choices in order, the answer's index (None when absent), hint, image, breakdown keys."""

    id: QuestionId
    question: str
    choices: list[str]
    answer: int | None
    hint: str = ""
    subject: str | None = None
    grade: str | None = None
    has_image: bool = True
    image_name: str = ""  # problems.json's `image` ("image.png")
    image: Path | bytes | None = None
    llava_text: str | None = None  # the human turn of LLaVA's question file, `<image>` removed and stripped

    def load_image(self) -> Any:
        if self.image is None:
            raise DataError(f"ScienceQA problem {self.id}: no image")
        return open_rgb(self.image)

    @property
    def grade_band(self) -> str | None:
        match = re.fullmatch(r"grade(\d+)", self.grade or "")
        number = int(match.group(1)) if match else None
        return next((band for band, grades in GRADE_BANDS.items() if number in grades), None)

    @property
    def contexts(self) -> list[str]:
        """evaluate_acc.py's context modalities: TXT (a hint), IMG (an image), NO (neither)."""
        found = [name for name, on in (("TXT", bool(self.hint)), ("IMG", self.has_image)) if on]
        return found or ["NO"]


def _problem(qid: QuestionId, raw: Any) -> Problem | None:
    """A problems.json entry (or an lmms-lab row) as a Problem, or None when it is not of that shape."""
    if not isinstance(raw, dict):
        return None
    question, choices, answer, hint = raw.get("question"), raw.get("choices"), raw.get("answer"), raw.get("hint") or ""
    if not isinstance(question, str) or not isinstance(choices, (list, tuple)) or not isinstance(hint, str):
        return None
    if not 2 <= len(choices) <= len(OPTIONS) or not all(isinstance(c, str) for c in choices):
        return None
    if answer is not None and (type(answer) is not int or not 0 <= answer < len(choices)):
        return None
    subject, grade = raw.get("subject"), raw.get("grade")
    return Problem(
        qid, question, list(choices), answer, hint,
        subject if isinstance(subject, str) else None, grade if isinstance(grade, str) else None,
        has_image=bool(raw.get("image")),
    )  # fmt: skip


def _llava_rows(path: str | Path, counts: dict[str, int]) -> dict[QuestionId, tuple[str, str | None]]:
    """id -> (human turn with `<image>` removed and stripped, image path) of LLaVA's llava_test_CQM-A.json."""
    doc = read_json(path, "LLaVA ScienceQA question JSON (llava_test_CQM-A.json)")
    if not isinstance(doc, list):
        raise DataError(f"{path}: expected a JSON list of {{id, image, conversations}} (LLaVA's llava_test_CQM-A.json)")
    rows: dict[QuestionId, tuple[str, str | None]] = {}
    for row in doc:
        try:
            qid, value, image = norm_id(row["id"]), row["conversations"][0]["value"], row.get("image")
        except (KeyError, IndexError, TypeError, ValueError):
            qid, value, image = None, None, None
        if not isinstance(value, str) or not (image is None or isinstance(image, str)):
            counts["malformed_llava_rows"] += 1  # that problem's prompt is built instead
            continue
        rows[qid] = (value.replace(IMAGE_TOKEN, "").strip(), image)  # model_vqa_science.py's qs
    return rows


def _find_image(root: Path, split: str, pid: str, name: str, llava_path: str | None) -> Path | None:
    """The image under `root` = images/<split> (LLaVA's --image-folder), images/, or the ScienceQA data folder."""
    candidates = [root / llava_path] if llava_path else []
    candidates += [root / pid / name, root / split / pid / name, root / "images" / split / pid / name]
    return next((c for c in candidates if c.is_file()), None)


def _split_problems(problems: Path, pid_splits: Path, split: str, counts: dict[str, int]) -> list[Problem]:
    """The split's problems with an image, in pid_splits.json's order; a broken problem or unknown pid refused."""
    doc = read_json(problems, "ScienceQA problems.json")
    if not isinstance(doc, dict):
        raise DataError(f"{problems}: expected a JSON object {{pid: problem}} (ScienceQA's problems.json)")
    splits = read_json(pid_splits, "ScienceQA pid_splits.json")
    if not isinstance(splits, dict) or not isinstance(splits.get(split), list):
        known = sorted(splits) if isinstance(splits, dict) else []
        raise DataError(f"{pid_splits}: no list of pids for split '{split}' (expected {{split: [pid]}}; has {known})")
    found, seen = [], set()
    for pid in splits[split]:
        raw = doc.get(str(pid)) if isinstance(pid, (str, int)) and str(pid).strip() else None
        if raw is None:
            raise DataError(f"{pid_splits}: split '{split}' lists pid {pid!r}, which {problems} lacks (files differ?)")
        problem = _problem(norm_id(str(pid)), raw)
        if problem is None:
            raise DataError(f"{problems}: problem '{pid}' is not {PROBLEM_SHAPE}: {str(raw)[:200]}")
        counts["duplicate_questions"] += problem.id in seen
        counts["no_image"] += problem.id not in seen and not problem.has_image
        if problem.id not in seen and problem.has_image:
            problem.image_name = str(raw["image"])
            found.append(problem)
        seen.add(problem.id)
    return found


def load_scienceqa(problems: str | Path, pid_splits: str | Path | None = None, image_root: str | Path | None = None,
                   questions: str | Path | None = None, split: str = "test",
                   limit: int | None = None) -> QuestionSet:  # fmt: skip
    """The split's problems with an image from problems.json + pid_splits.json (beside it by default), with LLaVA's
    question text from `questions` when given; images are looked up only when `image_root` is given."""
    problems = Path(problems)
    pid_splits = Path(pid_splits) if pid_splits is not None else problems.with_name("pid_splits.json")
    root = Path(image_root) if image_root is not None else None
    if root is not None and not root.is_dir():
        raise DataError(f"{root}: image root is not a directory")
    counts = dict.fromkeys(("duplicate_questions", "no_image", "unannotated", "missing_images"), 0)
    counts.update(malformed_llava_rows=0, llava_rows_missing=0, llava_prompt_differs=0)
    found = fixed_subset(_split_problems(problems, pid_splits, split, counts), limit, key=lambda p: p.subject or "")
    llava = _llava_rows(questions, counts) if questions is not None else None
    for problem in found:
        row = llava.get(problem.id) if llava is not None else None
        counts["llava_rows_missing"] += llava is not None and row is None
        counts["unannotated"] += problem.answer is None
        if row is not None:
            problem.llava_text = row[0]
            counts["llava_prompt_differs"] += row[0] != llava_layout(problem)
        if root is not None:
            problem.image = _find_image(root, split, str(problem.id), problem.image_name, row[1] if row else None)
            counts["missing_images"] += problem.image is None
    source = str(problems) + (f" + {questions}" if questions is not None else "")
    return QuestionSet(source, found, counts, split)


def load_scienceqa_parquet(path: str | Path, limit: int | None = None, split: str | None = None) -> QuestionSet:
    """lmms-lab's ScienceQA-IMG parquet (a file, or a folder of `{split}-*.parquet` shards); ids are row numbers."""
    rows, split = parquet_rows(path, split, PARQUET_COLUMNS, "lmms-lab's ScienceQA-IMG parquet")
    counts = dict.fromkeys(("malformed_questions", "no_image", "unannotated"), 0)
    found: list[Problem] = []
    doc_rows: list[QuestionId | None] = []
    for row in rows:
        data = parquet_image(row.get("image"))
        problem = _problem(len(doc_rows), {**row, "image": bool(data)})
        counts["malformed_questions"] += problem is None
        counts["no_image"] += problem is not None and not problem.has_image
        doc_rows.append(problem.id if problem is not None and problem.has_image else None)
        if problem is not None and problem.has_image:
            problem.image = data
            found.append(problem)
    found = fixed_subset(found, limit, key=lambda p: p.subject or "")
    counts["unannotated"] = sum(p.answer is None for p in found)
    return QuestionSet(str(path), found, counts, split, "parquet", doc_rows)


def llava_layout(problem: Problem) -> str:
    """LLaVA-1.5's ScienceQA question (eval.zip llava_test_CQM-A.json): "Context: <hint>" line, question, options."""
    lines = [f"{OPTIONS[i]}. {choice}" for i, choice in enumerate(problem.choices)]
    head = f"Context: {problem.hint}\n{problem.question}" if problem.hint else problem.question
    return "\n".join([head, *lines]).strip()


def scienceqa_prompt(problem: Problem, layout: str = "llava") -> str:
    """The question text (no chat template) in LLaVA's layout (model_vqa_science.py --single-pred-prompt) or
    lmms-eval's (scienceqa_img: `sqa_doc_to_text`, pre_prompt "", post_prompt "\\n" + LETTER_ANSWER_PROMPT)."""
    if layout == "llava":
        text = problem.llava_text if problem.llava_text is not None else llava_layout(problem)
        return f"{text}\n{LETTER_ANSWER_PROMPT}"
    context = f"Context: {problem.hint}\n" if problem.hint else ""
    choices = "\n".join(f"{OPTIONS[i]}. {choice}" for i, choice in enumerate(problem.choices))
    return f"{context}{problem.question}\n{choices}\n{LETTER_ANSWER_PROMPT}"


@dataclass
class ScienceQAConfig(BenchConfig):
    problems: str | None = field(default=None, metadata={"help": "ScienceQA's problems.json (data/scienceqa)"})
    pid_splits: str | None = field(default=None, metadata={"help": "pid_splits.json (default: beside --problems)"})
    llava_questions: str | None = field(
        default=None, metadata={"help": "LLaVA's llava_test_CQM-A.json (eval.zip): the llava prompt, verbatim"}
    )
    image_root: str | None = field(default=None, metadata={"help": "images/test (<pid>/image.png); needed by run"})
    split: str = field(default="test", metadata={"help": "the pid_splits.json split, or a --parquet folder's"})
    parquet: str | None = field(default=None, metadata={"help": "lmms-lab's ScienceQA-IMG parquet file or folder"})
    prompt: Literal["llava", "lmms_eval"] = field(default="llava", metadata={"help": "prompt layout (default: llava)"})


@register
class ScienceQA(Benchmark):
    """ScienceQA-IMG: lettered options, LLaVA's letter reading, accuracy per subject, context and grade."""

    name = "scienceqa"
    description = "ScienceQA-IMG: letter accuracy as LLaVA's eval_science_qa.py, per subject, context and grade"
    Config = ScienceQAConfig
    # SuperClass (arXiv 2411.03313) Table 11; LLaVA-1.5-7B: LLaVA's docs/MODEL_ZOO.md "SQA" (IMG-Accuracy)
    published = {"superclass_table11": 66.09, "llava15_7b": 66.8}
    folder = "scienceqa"
    files = ("problems.json + pid_splits.json + images/test (lupantech/ScienceQA data/scienceqa), and LLaVA's "
             "llava_test_CQM-A.json (eval.zip)")  # fmt: skip
    rules = ("official", "lmms_eval")
    max_new_tokens_help = ("default: 16, lmms-eval's scienceqa_img limit, ample for the letter asked for "
                           "(LLaVA's model_vqa_science.py allows 1024); pass 1024 to match it exactly")  # fmt: skip

    def load(self) -> QuestionSet:
        cfg = self.config
        if cfg.parquet is not None:
            split = cfg.split if Path(cfg.parquet).is_dir() else None
            return load_scienceqa_parquet(cfg.parquet, cfg.limit, split)
        if cfg.problems is None:
            raise UserError("scienceqa needs --problems (ScienceQA's problems.json) or --parquet")
        if self.images and cfg.image_root is None:
            raise UserError("scienceqa run needs --image-root (images/test, holding <pid>/image.png) or --parquet")
        return load_scienceqa(cfg.problems, cfg.pid_splits, cfg.image_root, cfg.llava_questions, cfg.split, cfg.limit)

    def prompt(self, item: Problem) -> str:
        return scienceqa_prompt(item, self.config.prompt)

    def metrics(self, answers: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        if not any(p.answer is not None for p in self.questions):
            return None
        return score_scienceqa(self.questions, answers, self.config.rule)

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        """LLaVA's playground/data/eval/scienceqa (problems.json, pid_splits.json, images/test, llava_test_CQM-A.json)
        or ScienceQA's data/scienceqa (the same files, images/test or test/)."""
        problems, splits = folder / "problems.json", folder / "pid_splits.json"
        images = next((d for d in (folder / "images" / "test", folder / "test") if d.is_dir()), None)
        if not problems.is_file() or not splits.is_file() or images is None:
            return None
        values = {"problems": str(problems), "pid_splits": str(splits), "image_root": str(images)}
        llava = folder / "llava_test_CQM-A.json"
        return {**values, "llava_questions": str(llava)} if llava.is_file() else values

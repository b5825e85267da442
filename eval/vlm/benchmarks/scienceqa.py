"""ScienceQA-IMG: the questions of a ScienceQA split that have an image, asked and scored as LLaVA-1.5 does.

usage: superclass eval scienceqa run|score --problems problems.json [--llava-questions llava_test_CQM-A.json]
           --image-root images/test [--split test] [--prompt lmms_eval] --out OUT

Files (LLaVA's docs/Evaluation.md: playground/data/eval/scienceqa): the official `problems.json` (`{pid: {"question",
"choices", "answer" (an index), "hint", "image" ("image.png" or null), "subject", "grade", "split", ...}}`) and
`pid_splits.json` (`{split: [pid, ...]}`) from lupantech/ScienceQA's data/scienceqa, the images at
`images/<split>/<pid>/<image>`; optionally LLaVA's `llava_test_CQM-A.json` (eval.zip), the file LLaVA's
model_vqa_science.py reads: `[{"id", "image": "<pid>/image.png", "conversations": [{"from": "human", "value":
"<image>\\nContext: <hint>\\n<question>\\nA. <choice>\\nB. ..."}, {"from": "gpt", "value": "B"}]}]`. Or lmms-lab's
ScienceQA-IMG parquet (`--parquet`; it has no pids, so a question's id is its row, lmms-eval's `doc_id`).

The set is the split's problems with an image (2017 of the 4241 test problems); text-only ones are skipped and
counted (`no_image`). LLaVA's model_vqa_science.py runs all 4241, and its eval_science_qa.py prints their accuracy
and the "IMG-Accuracy" of those whose prompt has an image: LLaVA-1.5's SQA number (66.8 for 7B) is that one.

Prompt: `llava` (default) is the human turn of LLaVA's question file verbatim (`<image>` removed, stripped, as
model_vqa_science.py does), then "\\n" + LETTER_ANSWER_PROMPT (its --single-pred-prompt, which LLaVA's
scripts/v1_5/eval/sqa.sh passes); without the file it is built in the same layout: "Context: <hint>\\n" when the
problem has a hint, the question, "A. <choice>" lines. (LLaVA's public scripts/convert_sqa_to_llava.py, format
"CQM-A", writes another layout, "Context: ...\\nQuestion: ...\\nOptions: (A) ..."; the eval.zip file LLaVA-1.5 was
scored on has the one above, and `llava_prompt_differs` in metrics.json counts questions whose file text is not the
built one.) `lmms_eval` is lmms-eval's scienceqa_img (tasks/scienceqa/utils.py `sqa_doc_to_text`, default format):
the same text built from the problem, not stripped: built from one problem, the two differ only in end whitespace.

Metric: LLaVA's llava/eval/eval_science_qa.py (haotian-liu/LLaVA): the answer is read as a letter by `llava_letter`
(its three rules), is right when that letter is the answer's, and a question without a prediction is wrong. (There
a missing one is "FAILED" with the prompt "Unknown", so it also drops out of the IMG-Accuracy denominator, which
counts prompts holding `<image>`; here it stays in, counted under `missing_predictions`.) Accuracy in percent
overall, and, as lupantech/ScienceQA's tools/evaluate_acc.py breaks it down, per subject (natural/social/language
science), per context modality (TXT: has a hint, IMG: has an image, NO: neither; in this set every question is IMG
and none NO) and per grade band (G1-6, G7-12). `accuracy_lmms_eval` beside it is lmms-eval's `sqa_process_results`
on the same answers.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.vlm.answers import QuestionIndex
from eval.vlm.base import PromptItem, VLMBenchmark
from eval.vlm.files import parquet_rows, read_json
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.registry import BenchmarkSpec, register
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb  # the shared decoder (16-bit images scaled, not clipped)
from pretrain.runtime.errors import DataError, UserError
from vlm.templates import IMAGE_TOKEN, LETTER_ANSWER_PROMPT

SCIENCEQA_PROMPTS = ("llava", "lmms_eval")
OPTIONS = "ABCDE"  # eval_science_qa.py's --options
SUBJECTS = ("natural science", "social science", "language science")
GRADE_BANDS = {"G1-6": range(1, 7), "G7-12": range(7, 13)}
CONTEXTS = ("TXT", "IMG", "NO")
METRIC_RULE = (
    "LLaVA eval_science_qa.py: the answer is a letter when it is exactly 'A'..'E', starts with '<letter>. ', or "
    "has exactly one 'The answer is <letter>.'; right when that letter is the answer's; no prediction is wrong"
)
PARQUET_COLUMNS = ("question", "choices", "answer", "image")


@dataclass
class Problem:
    """One ScienceQA problem: choices in order, the answer's index (None when absent), hint, image, breakdown keys."""

    qid: QuestionId
    question: str
    choices: list[str]
    answer: int | None
    hint: str = ""
    subject: str | None = None
    grade: str | None = None
    has_image: bool = True
    image: Path | bytes | None = None
    llava_text: str | None = None  # the human turn of LLaVA's question file, `<image>` removed and stripped

    def load_image(self) -> Any:
        """The image as an RGB PIL image (opened when the generation runner asks for it)."""
        if self.image is None:
            raise DataError(f"ScienceQA problem {self.qid}: no image")
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


@dataclass
class ScienceQASet:
    """The problems to ask (those with an image), where they came from, and what was skipped."""

    source: str
    split: str
    problems: list[Problem]
    counts: dict[str, int]
    format: str = "official"  # official | parquet
    doc_rows: list[QuestionId | None] | None = None  # parquet: each row's id (lmms-eval's doc_id), None if skipped

    @property
    def has_answers(self) -> bool:
        return any(p.answer is not None for p in self.problems)


def _problem(qid: QuestionId, raw: Any) -> Problem | None:
    """A problems.json entry (or an lmms-lab row) as a Problem, or None when malformed."""
    if not isinstance(raw, dict):
        return None
    question, choices, answer = raw.get("question"), raw.get("choices"), raw.get("answer")
    hint = raw.get("hint") or ""
    if not isinstance(question, str) or not isinstance(choices, (list, tuple)) or not isinstance(hint, str):
        return None
    if not 2 <= len(choices) <= len(OPTIONS) or not all(isinstance(c, str) for c in choices):
        return None
    if answer is not None and (isinstance(answer, bool) or not isinstance(answer, int)):
        return None
    if answer is not None and not 0 <= answer < len(choices):
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
            qid = norm_id(row["id"])
            value = row["conversations"][0]["value"]
            image = row.get("image")
        except (KeyError, IndexError, TypeError, ValueError):
            qid, value, image = None, None, None
        if not isinstance(value, str) or not (image is None or isinstance(image, str)):
            counts["malformed_llava_rows"] += 1
            continue
        # model_vqa_science.py: qs = question['value'].replace('<image>', '').strip()
        rows[qid] = (value.replace(IMAGE_TOKEN, "").strip(), image)
    return rows


def _find_image(root: Path, split: str, pid: str, name: str, llava_path: str | None) -> Path | None:
    """The image under `root` = images/<split> (LLaVA's --image-folder), images/, or the ScienceQA data folder."""
    candidates = [root / llava_path] if llava_path else []
    candidates += [root / pid / name, root / split / pid / name, root / "images" / split / pid / name]
    return next((c for c in candidates if c.is_file()), None)


def load_scienceqa(
    problems: str | Path,
    pid_splits: str | Path | None = None,
    image_root: str | Path | None = None,
    questions: str | Path | None = None,
    split: str = "test",
    limit: int | None = None,
) -> ScienceQASet:
    """The split's problems with an image from the official problems.json + pid_splits.json (beside it by default),
    with LLaVA's question text from `questions` when given; images are looked up only when `image_root` is given."""
    problems = Path(problems)
    pid_splits = Path(pid_splits) if pid_splits is not None else problems.with_name("pid_splits.json")
    doc = read_json(problems, "ScienceQA problems.json")
    if not isinstance(doc, dict):
        raise DataError(f"{problems}: expected a JSON object {{pid: problem}} (ScienceQA's problems.json)")
    splits = read_json(pid_splits, "ScienceQA pid_splits.json")
    if not isinstance(splits, dict) or not isinstance(splits.get(split), list):
        known = sorted(splits) if isinstance(splits, dict) else []
        raise DataError(f"{pid_splits}: no list of pids for split '{split}' (expected {{split: [pid]}}; has {known})")
    root = Path(image_root) if image_root is not None else None
    if root is not None and not root.is_dir():
        raise DataError(f"{root}: image root is not a directory")
    keys = ("malformed_problems", "unknown_pids", "no_image", "missing_images", "duplicate_pids")
    counts = dict.fromkeys(keys, 0)
    counts.update(malformed_llava_rows=0, llava_rows_missing=0, llava_prompt_differs=0)
    llava = _llava_rows(questions, counts) if questions is not None else None
    found: list[Problem] = []
    images: dict[QuestionId, str] = {}
    seen: set[QuestionId] = set()
    for pid in splits[split]:
        raw = doc.get(str(pid)) if isinstance(pid, (str, int)) else None
        if raw is None:
            counts["unknown_pids"] += 1
            continue
        problem = _problem(norm_id(str(pid)), raw) if str(pid).strip() else None
        if problem is None:
            counts["malformed_problems"] += 1
            continue
        if problem.qid in seen:
            counts["duplicate_pids"] += 1
            continue
        seen.add(problem.qid)
        if not problem.has_image:
            counts["no_image"] += 1
            continue
        images[problem.qid] = str(raw["image"])
        found.append(problem)
    found = fixed_subset(found, limit, key=lambda p: p.subject or "")
    for problem in found:
        row = llava.get(problem.qid) if llava is not None else None
        if llava is not None:
            counts["llava_rows_missing"] += row is None
        if row is not None:
            problem.llava_text = row[0]
            counts["llava_prompt_differs"] += row[0] != llava_layout(problem)
        if root is not None:
            llava_path = row[1] if row is not None else None
            problem.image = _find_image(root, split, str(problem.qid), images[problem.qid], llava_path)
            counts["missing_images"] += problem.image is None
    source = str(problems) + (f" + {questions}" if questions is not None else "")
    return ScienceQASet(source, split, found, counts)


def load_scienceqa_parquet(path: str | Path, limit: int | None = None, split: str | None = None) -> ScienceQASet:
    """lmms-lab's ScienceQA-IMG parquet (a file, or a folder of `{split}-*.parquet` shards); ids are row numbers."""
    rows, split = parquet_rows(path, split, PARQUET_COLUMNS, "lmms-lab's ScienceQA-IMG parquet")
    counts = dict.fromkeys(("malformed_problems", "no_image"), 0)
    found: list[Problem] = []
    doc_rows: list[QuestionId | None] = []
    for row in rows:
        image = row.get("image")
        data = image.get("bytes") if isinstance(image, dict) else image
        raw = {**row, "image": bool(data)}
        problem = _problem(len(doc_rows), raw)
        counts["malformed_problems"] += problem is None
        counts["no_image"] += problem is not None and not problem.has_image
        if problem is None or not problem.has_image:
            doc_rows.append(None)
            continue
        problem.image = bytes(data)
        doc_rows.append(problem.qid)
        found.append(problem)
    found = fixed_subset(found, limit, key=lambda p: p.subject or "")
    return ScienceQASet(str(path), split, found, counts, "parquet", doc_rows)


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
    if layout == "lmms_eval":
        context = f"Context: {problem.hint}\n" if problem.hint else ""
        choices = "\n".join(f"{OPTIONS[i]}. {choice}" for i, choice in enumerate(problem.choices))
        return f"{context}{problem.question}\n{choices}\n{LETTER_ANSWER_PROMPT}"
    raise UserError(f"unknown ScienceQA prompt layout '{layout}' (expected one of {list(SCIENCEQA_PROMPTS)})")


_STATED = re.compile(r"The answer is ([A-Z]).")  # eval_science_qa.py's pattern, its "." matching any character


def llava_letter(text: str) -> str | None:
    """The letter LLaVA's eval_science_qa.py reads from an answer, or None (its "FAILED").

    Its rules, in order: the whole answer is one of A-E; the answer starts with "<A-E>. "; "The answer is <A-Z>"
    followed by any character occurs exactly once. Nothing is stripped or case-folded.
    """
    if len(text) == 1 and text in OPTIONS:
        return text
    if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        return text[0]
    found = _STATED.findall(text)
    return found[0] if len(found) == 1 else None


def lmms_eval_right(text: str, answer: int) -> bool:
    """lmms-eval's `sqa_process_results` (tasks/scienceqa/utils.py): the stripped answer is the letter (any case),
    or starts with an upper-case letter and "." that is the answer's (any case)."""
    target, pred = OPTIONS[answer].lower(), text.strip()
    if pred.lower() == target:
        return True
    return len(pred) >= 2 and pred[0].isupper() and pred[1] == "." and pred[0].lower() == target


def _percent(hits: int, total: int) -> float | None:
    return round(100.0 * hits / total, 2) if total else None


def score_scienceqa(sset: ScienceQASet, predictions: Mapping[QuestionId, str]) -> dict[str, Any]:
    """Accuracy (percent) as LLaVA's eval_science_qa.py, overall and per subject, context modality and grade band."""
    groups: dict[str, dict[str, list[int]]] = {"subject": {}, "context": {}, "grade": {}}
    for name in SUBJECTS:
        groups["subject"][name] = [0, 0]
    for name in CONTEXTS:
        groups["context"][name] = [0, 0]
    for name in GRADE_BANDS:
        groups["grade"][name] = [0, 0]
    hits = lmms_hits = total = missing = unparsed = 0
    for p in sset.problems:
        if p.answer is None:
            continue
        pred = predictions.get(p.qid)
        letter = llava_letter(pred) if pred is not None else None
        missing += pred is None
        unparsed += pred is not None and letter is None
        right = letter is not None and letter in OPTIONS[: len(p.choices)] and OPTIONS.index(letter) == p.answer
        lmms_hits += pred is not None and lmms_eval_right(pred, p.answer)
        hits += right
        total += 1
        keys = {"subject": [p.subject] if p.subject else [], "context": p.contexts, "grade": [p.grade_band]}
        for kind, names in keys.items():
            for name in (n for n in names if n is not None):
                tally = groups[kind].setdefault(name, [0, 0])
                tally[0] += right
                tally[1] += 1
    per = {kind: {k: _percent(*v) for k, v in tallies.items()} for kind, tallies in groups.items()}
    return {
        "accuracy": _percent(hits, total),
        "accuracy_lmms_eval": _percent(lmms_hits, total),
        "num_questions": total,
        "per_subject": per["subject"],
        "per_context": per["context"],
        "per_grade": per["grade"],
        "missing_predictions": missing,
        "unparsed": unparsed,
        "metric_rule": METRIC_RULE,
    }


class ScienceQABenchmark(VLMBenchmark):
    """ScienceQA-IMG: lettered options, LLaVA's letter reading, accuracy per subject, context and grade."""

    name = "scienceqa"

    def __init__(self, sset: ScienceQASet, prompt: str = "llava") -> None:
        if prompt not in SCIENCEQA_PROMPTS:
            raise UserError(f"unknown ScienceQA prompt layout '{prompt}' (expected one of {list(SCIENCEQA_PROMPTS)})")
        self.sset, self.prompt = sset, prompt

    def prompt_items(self) -> list[PromptItem]:
        return [
            PromptItem(p.qid, scienceqa_prompt(p, self.prompt), p.load_image)
            for p in self.sset.problems
            if p.image is not None
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "split": self.sset.split,
            "source": self.sset.source,
            "prompt": self.prompt,
            "question_format": self.sset.format,
            "num_questions": len(self.sset.problems),
            "data_counts": dict(self.sset.counts),
        }

    def score(self, predictions: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        return score_scienceqa(self.sset, predictions) if self.sset.has_answers else None

    def write_outputs(self, out_dir: Path, predictions: Mapping[QuestionId, str]) -> dict[str, str]:
        return {}  # scored locally; there is no submission server

    def question_index(self) -> QuestionIndex:
        return QuestionIndex([p.qid for p in self.sset.problems], self.sset.doc_rows)


# ----------------------------------------------------------------------------------------------- registry
def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--problems", type=Path, help="ScienceQA's problems.json (lupantech/ScienceQA data/scienceqa)")
    p.add_argument("--pid-splits", type=Path, help="pid_splits.json (default: beside --problems)")
    p.add_argument(
        "--llava-questions",
        type=Path,
        help="LLaVA's llava_test_CQM-A.json (eval.zip): its question text is the llava prompt, verbatim",
    )
    p.add_argument("--image-root", type=Path, help="images/test (holding <pid>/image.png); needed by run")
    p.add_argument("--split", default="test", help="the pid_splits.json split, or a --parquet folder's (default: test)")
    p.add_argument("--parquet", type=Path, help="lmms-lab's ScienceQA-IMG parquet file or folder instead (pyarrow)")
    p.add_argument("--prompt", default="llava", choices=SCIENCEQA_PROMPTS, help="prompt layout (default: llava)")


def _build(args: argparse.Namespace, run: bool) -> ScienceQABenchmark:
    if args.parquet is not None:
        split = args.split if args.parquet.is_dir() else None
        return ScienceQABenchmark(load_scienceqa_parquet(args.parquet, args.limit, split), args.prompt)
    if args.problems is None:
        raise UserError("scienceqa needs --problems (ScienceQA's problems.json) or --parquet")
    if run and args.image_root is None:
        raise UserError("scienceqa run needs --image-root (images/test, holding <pid>/image.png) or --parquet")
    sset = load_scienceqa(args.problems, args.pid_splits, args.image_root, args.llava_questions, args.split, args.limit)
    return ScienceQABenchmark(sset, args.prompt)


def _suite(folder: Path) -> dict[str, Any] | None:
    """LLaVA's playground/data/eval/scienceqa (problems.json, pid_splits.json, images/test, llava_test_CQM-A.json)
    or ScienceQA's data/scienceqa (the same files, images/test or test/)."""
    problems, splits = folder / "problems.json", folder / "pid_splits.json"
    images = next((d for d in (folder / "images" / "test", folder / "test") if d.is_dir()), None)
    if not problems.is_file() or not splits.is_file() or images is None:
        return None
    llava = folder / "llava_test_CQM-A.json"
    values: dict[str, Any] = {"problems": problems, "pid_splits": splits, "image_root": images}
    return {**values, "llava_questions": llava} if llava.is_file() else values


SPEC = register(
    BenchmarkSpec(
        name="scienceqa",
        help="ScienceQA-IMG: letter accuracy as LLaVA's eval_science_qa.py, per subject, context and grade",
        add_args=_args,
        build=_build,
        max_new_tokens_help="default: 16, lmms-eval's scienceqa_img limit, ample for the letter asked for "
        "(LLaVA's model_vqa_science.py allows 1024); pass 1024 to match it exactly",
        suite_args=_suite,
        folder="scienceqa",
        files="problems.json + pid_splits.json + images/test (lupantech/ScienceQA data/scienceqa), and LLaVA's "
        "llava_test_CQM-A.json (eval.zip)",
        # SuperClass (arXiv 2411.03313) Table 11; LLaVA-1.5-7B: LLaVA's docs/MODEL_ZOO.md "SQA" (IMG-Accuracy)
        published={"superclass_table11": 66.09, "llava15_7b": 66.8},
    )
)

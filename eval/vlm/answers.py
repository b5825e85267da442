"""Answer files of our runs, of the LLaVA repo and of lmms-eval, read into one `{question_id: row}` for scoring.

usage: superclass eval {vqav2,textvqa,mmbench} score --predictions FILE ... (FILE in any of the formats below)

The format is told per file by its first row (a JSONL file, a JSON list, or a JSON object with a "logs" list):
- `superclass`: our `predictions.jsonl` (or a JSON list) of `{"question_id", "answer"}`; a row with an `"error"`
  (its image failed to load) is a missing prediction.
- `llava`: LLaVA's answer JSONL (llava/eval/model_vqa_loader.py, model_vqa_mmbench.py): `{"question_id", "prompt",
  "text" (the answer), "answer_id", "model_id", "metadata"}`. In its TextVQA files `question_id` is the image id,
  shared by the image's questions: such a row is matched as llava/eval/eval_textvqa.py does, by (image id, the
  prompt's question lower-cased), to the TextVQA question id.
- `lmms_eval`: lmms-eval's `--log_samples` output, `{date}_samples_{task}.jsonl` (0.7.x; older: `{task}.json` with
  the samples under "logs"). The answer is `filtered_resps` (a string since 0.7, a one-element list before). The
  question is named by `doc["question_id"]` or `doc["index"]` (up to 0.3), else by a per-metric field that holds
  one (textvqa_val's and vqav2_test's `submission`, mmbench's `gpt_eval_score`), else only by `doc_id`, the row of
  lmms-lab's dataset split (vqav2_val since 0.4): those are scored against that split read with `--parquet`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.predictions import keep_row  # the one duplicate rule, shared with our runs' resume
from pretrain.runtime.errors import DataError
from pretrain.runtime.jsonl import read_jsonl

FORMATS = ("superclass", "llava", "lmms_eval")
OCR_PREFIX = "Reference OCR token: "  # LLaVA's TextVQA prompt line (its eval_textvqa.py parses it)
EXPECTED = (
    "expected our {question_id, answer} rows (JSONL or a JSON list), LLaVA's answer JSONL {question_id, prompt, "
    "text, ...} or lmms-eval --log_samples output {doc_id, filtered_resps, ...}"
)
# lmms-eval's per-sample record (EvolvingLMMs-Lab/lmms-eval @ 75571cf, pyproject 0.7.2): lmms_eval/evaluator.py
# `evaluate` logs `example = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "token_counts",
# "doc_hash"}` plus the task's `process_results` metrics; lmms_eval/loggers/evaluation_tracker.py
# `save_results_samples` writes one per line to `{date_id}_samples_{task}.jsonl` after popping "doc" and
# "arguments" (since v0.4, #721), adding "input" (the prompt), and (since v0.7, #1210) turning a one-element
# `filtered_resps` into its value and dropping `resps` when equal. Up to v0.3 the record kept "doc", and v0.1-0.2's
# __main__.py wrote `{task}.json` = {"args", "model_configs", "logs": [records], "time"}.
LMMS_ID_FIELDS = ("question_id", "index", "id")  # "id": MMMU's mmmu_acc field


@dataclass(frozen=True)
class QuestionIndex:
    """How answer files may name a benchmark's questions.

    ids: every question id, in file order. doc_rows: for a set read from an lmms-lab parquet split, the question id
    of each row in order (lmms-eval's `doc_id` is a position in it), else None. by_image_question: TextVQA only,
    (image id, question lower-cased) -> the ids of the questions with that pair, the key of LLaVA's answer rows.
    """

    ids: list[QuestionId]
    doc_rows: list[QuestionId | None] | None = None
    by_image_question: dict[tuple[str, str], list[QuestionId]] | None = None
    # set when lmms-eval's metric-field ids are not unique in its dataset (POPE's restart in each split): samples
    # named that way are refused with this fix (the flag that makes doc_id exact) instead of scored against wrong ids
    ambiguous_lmms_ids: str | None = None


@dataclass(frozen=True)
class _Answer:
    """One row of an answer file: the answer and how it names its question (an id, or lmms-eval's doc_id)."""

    answer: str | None  # None: the row's answer is null (a missing prediction, counted)
    qid: Any = None
    doc_id: int | None = None
    prompt: str | None = None  # LLaVA's question text (its TextVQA rows are matched by image id + question)
    error: str | None = None


def detect_format(entry: Any) -> str | None:
    """The format a row is in (one of FORMATS), or None when it is in none."""
    if not isinstance(entry, dict):
        return None
    if "doc_id" in entry and ("filtered_resps" in entry or "resps" in entry):
        return "lmms_eval"
    if "question_id" in entry and "answer" in entry:
        return "superclass"
    if "question_id" in entry and "text" in entry:
        return "llava"
    return None


def llava_question(prompt: str) -> str | None:
    """The question of a LLaVA TextVQA prompt, lower-cased: a port of eval_textvqa.py's `prompt_processor`."""
    if prompt.startswith("OCR tokens: "):
        match = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        return match.group(1).lower() if match else None
    lines = prompt.split("\n")
    if OCR_PREFIX in prompt and len(lines) == 3:
        return (lines[1] if prompt.startswith(OCR_PREFIX.strip()) else lines[0]).lower()
    return lines[0].lower() if len(lines) == 2 else None


def _first_text(value: Any) -> str | None:
    """The first string of a (nested) list: lmms-eval's `filtered_resps` is "a", ["a"] or [["a"]] by version."""
    while isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


def _lmms_qid(entry: dict[str, Any]) -> Any:
    """The question id a sample names in its `doc` or in a per-metric field (None when it names none)."""
    fields = [entry.get("doc"), *(v for k, v in entry.items() if k not in ("doc", "doc_id"))]
    for value in fields:
        if isinstance(value, dict):
            for key in LMMS_ID_FIELDS:
                if value.get(key) is not None:
                    return value[key]
    return None


def _null(value: Any) -> bool:
    """Whether a response is JSON null (or a list holding only null): a missing prediction, not a malformed row."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value is None


def _parse(entry: Any, fmt: str) -> _Answer | None:
    """A row of the file's format as an _Answer (its answer None when null), or None when it is malformed."""
    if not isinstance(entry, dict):
        return None
    if fmt == "lmms_eval":
        key = "filtered_resps" if "filtered_resps" in entry else "resps"
        text = _first_text(entry.get(key))
        qid, doc_id = _lmms_qid(entry), entry.get("doc_id")
        if (
            key not in entry
            or (text is None and not _null(entry[key]))
            or (qid is None and not isinstance(doc_id, int))
        ):
            return None
        return _Answer(text, qid, doc_id if isinstance(doc_id, int) else None)
    key = "answer" if fmt == "superclass" else "text"
    text = entry.get(key)
    if key not in entry or not isinstance(text, (str, type(None))) or entry.get("question_id") is None:
        return None
    prompt = entry.get("prompt") if isinstance(entry.get("prompt"), str) else None
    error = entry.get("error") if fmt == "superclass" and "error" in entry else None
    return _Answer(text, entry["question_id"], None, prompt, None if error is None else str(error))


def _entries(path: Path) -> tuple[list[Any], int]:
    """The raw rows of a JSON list, a JSONL file, or a JSON object's "logs" list; with the unreadable-line count."""
    with path.open(encoding="utf-8", errors="replace") as f:
        head = f.read(4096).lstrip()
    whole = head.startswith("[")
    rows, bad = ([], 0) if whole else read_jsonl(path)
    if not whole and (rows or not bad):
        if len(rows) == 1 and isinstance(rows[0].get("logs"), list):
            return rows[0]["logs"], bad
        return rows, bad
    try:  # a JSON list, or a pretty-printed JSON object (old lmms-eval's {task}.json)
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON or JSONL ({exc.msg} at line {exc.lineno}); {EXPECTED}") from None
    if isinstance(doc, dict) and isinstance(doc.get("logs"), list):
        return doc["logs"], 0
    return (doc, 0) if isinstance(doc, list) else ([doc], 0)


class _Resolver:
    """Question ids for parsed rows: the id a row names, or its lmms-eval doc_id's row, or LLaVA's TextVQA key."""

    def __init__(self, path: Path, index: QuestionIndex) -> None:
        self.path, self.index = path, index
        self.pending = {k: list(v) for k, v in (index.by_image_question or {}).items()}
        self.used: dict[tuple[str, str], QuestionId] = {}

    def __call__(self, answer: _Answer) -> QuestionId:
        rows = self.index.doc_rows
        # the row is exact when the set was read from the parquet it ran on; a metric field's id need not be unique
        # (POPE's restarts per split, MME's names the image of two questions)
        if answer.doc_id is not None and (rows is not None or answer.qid is None):
            if rows is None:
                raise DataError(
                    f"{self.path}: lmms-eval samples name their questions only by doc_id (the row of lmms-lab's "
                    "dataset; lmms-eval >= 0.4 drops `doc` from --log_samples): score them with --parquet, the split "
                    "they ran on"
                )
            qid = rows[answer.doc_id] if 0 <= answer.doc_id < len(rows) else None
            return qid if qid is not None else f"lmms-eval doc_id {answer.doc_id}"
        if answer.doc_id is not None and self.index.ambiguous_lmms_ids:
            raise DataError(f"{self.path}: lmms-eval samples: {self.index.ambiguous_lmms_ids}")
        if answer.prompt is not None and self.index.by_image_question is not None:
            question = llava_question(answer.prompt)
            key = (str(answer.qid).strip(), question or "")
            if key in self.pending:  # a repeated (image, question) takes the next question of that pair
                ids = self.pending[key]
                self.used[key] = ids.pop(0) if ids else self.used[key]
                return self.used[key]
        return norm_id(answer.qid)


def read_answers(path: str | Path, index: QuestionIndex) -> tuple[dict[QuestionId, dict[str, Any]], dict[str, Any]]:
    """Rows `{"question_id", "answer"}` (plus `"error"`) by question id from an answer file in any of FORMATS, and
    the input-policy counts (`eval.vlm.policy`). The last row of a question wins, as the official scripts' dicts
    keep it, except that an image-error row never replaces an answer; a null answer is a missing prediction. A file
    whose first row is in no known format is a one-line DataError naming it and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such predictions file ({EXPECTED})")
    entries, bad = _entries(path)
    first = next((e for e in entries if isinstance(e, dict)), None)
    fmt = detect_format(first) if first is not None else None
    if entries and fmt is None:
        keys = sorted(first)[:8] if first is not None else f"a {type(entries[0]).__name__}"
        raise DataError(f"{path}: not an answer file in a known format (first row: {keys}); {EXPECTED}")
    resolve = _Resolver(path, index)
    rows: dict[QuestionId, dict[str, Any]] = {}
    stats = {"path": str(path), "format": fmt, "rows": len(entries) + bad, "malformed_rows": bad}
    stats.update(duplicate_ids=0, null_answers=0, empty_answers=0)
    for entry in entries:
        answer = _parse(entry, fmt) if fmt is not None else None
        try:
            qid = resolve(answer) if answer is not None else None
        except ValueError:
            qid = None
        if qid is None:
            stats["malformed_rows"] += 1
            continue
        if answer.answer is None:
            stats["null_answers"] += 1
            continue
        stats["empty_answers"] += not answer.answer.strip()
        row = {"question_id": qid, "answer": answer.answer}
        if answer.error is not None:
            row["error"] = answer.error
        stats["duplicate_ids"] += not keep_row(rows, row)
    stats["image_errors"] = sum("error" in row for row in rows.values())
    return rows, stats

"""MMBench from its official TSV: prompts, CircularEval, answer letters read without an API, submission files.

usage: superclass eval mmbench run --model DIR --tsv mmbench_dev_20230712.tsv --out OUT [--prompt lmms_eval]
           [--circular off] [--rule lmms_eval]

Files. The TSV (`index, question, hint, A, B, C, D, answer, category, l2-category, image, source, split, ...`) holds
base64 images; an image field that is a short number points at another row's image (VLMEvalKit's circular copies).
A row not of MMBench's shape (torn, no index or question, under two options, an answer not among them) is refused
naming the file and line; a repeated index is counted (the first kept); an image that does not decode is counted
`missing_images`; a row without an answer is `unannotated` (a test TSV: all, for the server's `submission.tsv`/xlsx).
CircularEval: rows with the same `index % 1_000_000` are one question, right only if every copy is. A TSV without
copies gets rotated ones (`circular=auto`): copy k shows the options rotated by k under fixed letters, id index +
k * 1_000_000 (LLaVA's `--all-rounds`); `circular=off` keeps the rows with index < 1_000_000.
Prompt: `llava` (model_vqa_mmbench.py): hint, question and "A. opt" lines joined by newlines + LETTER_ANSWER_PROMPT;
`lmms_eval` (en_utils.mmbench_doc_to_text): "{hint} {question} There are several options:\nA. opt..." + "\n" + its
post_prompt "\nAnswer with ...". Rules (eval.vlm.scoring.mmbench): `official` reads a letter or one option's text and
counts a hedge ("A or B") unparsed; `lmms_eval` is lmms-eval's mmbench_en_dev_static reading (it picks one letter).
"""

from __future__ import annotations

import base64
import binascii
import csv
import importlib.util
import io
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

from eval.vlm.base import BenchConfig, Benchmark, QuestionSet
from eval.vlm.files import first_file
from eval.vlm.ids import CIRCULAR_OFFSET, LETTERS, QuestionId
from eval.vlm.scoring.mmbench import extract_choice, score_mmbench
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.evaluators import register
from vlm.templates import LETTER_ANSWER_PROMPT, multiple_choice_prompt

CIRCULAR_MODES = ("auto", "off")
REQUIRED_COLUMNS = ("index", "question", "A", "B", "image")
EMPTY_VALUES = {"", "nan", "none", "null"}  # what pandas (LLaVA, lmms-eval) reads as a missing option or hint
SUBMISSION_COLUMNS = ("index", "question", "A", "B", "C", "D", "answer", "prediction")


@dataclass
class MMBenchRow:
    """One TSV row (or a rotated copy of one): id (its index), options A.. in order, the answer letter (None on
    test), and the image's encoded bytes (None when it does not decode)."""

    id: int
    question: str
    options: list[str]
    answer: str | None
    hint: str | None
    category: str
    l2_category: str | None
    image: bytes | None
    source: str | None = None
    split: str | None = None
    rotation: int = 0  # k > 0 for the copies made here

    @property
    def base(self) -> int:
        return self.id % CIRCULAR_OFFSET

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.options)]

    def load_image(self) -> Any:
        if self.image is None:
            raise DataError(f"MMBench row {self.id}: no image")
        return open_rgb(self.image)


def _empty(value: str | None) -> bool:
    return value is None or value.strip().lower() in EMPTY_VALUES


def _columns(header: Sequence[str] | None, path: Path) -> dict[str, str]:
    """Canonical name -> the TSV's own header name (option letters exact, the rest case-insensitive)."""
    if not header:
        raise DataError(f"{path}: empty file (expected an MMBench TSV with a header row)")
    found = {h if h in LETTERS else h.strip().lower(): h for h in header}
    for column in REQUIRED_COLUMNS:
        if column not in found:
            raise DataError(
                f"{path}: missing column '{column}' (expected MMBench TSV columns {list(REQUIRED_COLUMNS)})"
            )
    return found


def _parse_row(raw: dict[Any, Any], cols: dict[str, str]) -> MMBenchRow:
    """A TSV row as an MMBenchRow holding its raw image field; a ValueError saying what is wrong with it."""
    if None in raw or None in raw.values():  # csv's restkey / restval: more or fewer fields than the header
        raise ValueError(f"its fields do not match the header's {len(raw) - (None in raw)} columns (torn or shifted)")
    values = {name: None if _empty(raw.get(col)) else raw[col] for name, col in cols.items()}
    try:
        index = int(float(raw[cols["index"]]))
    except ValueError:
        raise ValueError(f"index {raw[cols['index']]!r} is not a number") from None
    options: list[str] = []
    for letter in LETTERS:
        if values.get(letter) is None:
            break
        options.append(values[letter])
    answer = values["answer"].strip() if values.get("answer") is not None else None
    if values["question"] is None or len(options) < 2:
        raise ValueError("no question" if values["question"] is None else "fewer than two options (A, B, ...)")
    if answer is not None and answer not in LETTERS[: len(options)]:
        raise ValueError(f"answer {answer!r} is not one of its options {list(LETTERS[: len(options)])}")
    return MMBenchRow(index, values["question"], options, answer, values.get("hint"),
                      values.get("category") or "unknown", values.get("l2-category"), raw[cols["image"]] or None,
                      values.get("source"), values.get("split"))  # fmt: skip


def _decode(b64: str) -> bytes | None:
    """The image bytes of a base64 field when PIL recognises them (only the header is read), else None."""
    try:
        data = base64.b64decode(b64, validate=True)
        with Image.open(io.BytesIO(data)):
            return data
    except (binascii.Error, ValueError, UnidentifiedImageError):
        return None


def _resolve_images(rows: list[MMBenchRow], counts: dict[str, int]) -> None:
    """Follow image fields that name another row's index, decode each image once; count those that do not decode."""
    by_index = {r.id: r.image for r in rows}
    decoded: dict[Any, bytes | None] = {None: None}
    for r in rows:
        ref = r.image
        if ref is not None and len(ref) <= 64 and ref.strip().isdigit():
            ref = by_index.get(int(ref.strip()))
        if ref not in decoded:
            decoded[ref] = _decode(ref)
        r.image = decoded[ref]
        counts["missing_images"] += r.image is None


def read_mmbench_tsv(path: str | Path, limit: int | None = None) -> tuple[list[MMBenchRow], dict[str, int]]:
    """The rows of an official MMBench TSV (copies included) and the counts; `limit`: whole questions, a fixed
    subset of that many, stratified by category."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such MMBench TSV file")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # base64 images are far longer than csv's 128 KiB default
    counts = {"duplicate_questions": 0, "missing_images": 0}
    rows: list[MMBenchRow] = []
    seen: set[int] = set()
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        cols = _columns(reader.fieldnames, path)
        for raw in reader:
            try:
                row = _parse_row(raw, cols)
            except ValueError as exc:
                raise DataError(f"{path}: line {reader.line_num} is not an MMBench row: {exc}") from None
            counts["duplicate_questions"] += row.id in seen
            if row.id not in seen:
                seen.add(row.id)
                rows.append(row)
    if limit:  # keep whole questions: the chosen bases and all their copies
        category = {r.base: r.category for r in rows}
        keep = set(fixed_subset(sorted(category), limit, key=category.get))
        rows = [r for r in rows if r.base in keep]
    _resolve_images(rows, counts)
    return rows, counts


def rotate(row: MMBenchRow, k: int) -> MMBenchRow:
    """Copy k of a row: options rotated left by k under fixed letters, the answer letter following its text."""
    n = len(row.options)
    answer = row.letters[(row.letters.index(row.answer) - k) % n] if row.answer is not None else None
    options = row.options[k:] + row.options[:k]
    return replace(row, id=row.id + k * CIRCULAR_OFFSET, options=options, answer=answer, rotation=k)


def circular_rows(rows: list[MMBenchRow], mode: str = "auto") -> tuple[list[MMBenchRow], str, int]:
    """(rows to run, "tsv" | "rotated" | "off", copies left out): the CircularEval set for `mode`."""
    if mode not in CIRCULAR_MODES:
        raise UserError(f"unknown circular mode '{mode}' (expected one of {list(CIRCULAR_MODES)})")
    if mode == "off":
        main = [r for r in rows if r.id < CIRCULAR_OFFSET]
        return main, "off", len(rows) - len(main)
    if any(r.id >= CIRCULAR_OFFSET for r in rows):
        return rows, "tsv", 0
    return [c for r in rows for c in (r, *(rotate(r, k) for k in range(1, len(r.options))))], "rotated", 0


def load_mmbench(path: str | Path, circular: str = "auto", limit: int | None = None) -> QuestionSet:
    """An MMBench TSV ready to run and score: rows read, images checked, circular copies found or made."""
    rows, counts = read_mmbench_tsv(path, limit)
    rows, how, left_out = circular_rows(rows, circular)
    counts.update(copies_left_out=left_out, unannotated=sum(r.answer is None for r in rows))
    split = next((r.split for r in rows if r.split), "unknown")
    return QuestionSet(str(path), rows, counts, split, "tsv", info={"circular": how})


def submission_rows(rows: Sequence[MMBenchRow], predictions: Mapping[int, str]) -> list[dict[str, Any]]:
    """OpenCompass's submission columns for the file's own rows (not the copies made here)."""
    # `prediction` is the letter read from the answer, or the raw answer when none could be (the server matches it).
    out = []
    for row in sorted((r for r in rows if r.rotation == 0), key=lambda r: r.id):
        pred = predictions.get(row.id, "")
        line: dict[str, Any] = {"index": row.id, "question": row.question}
        line.update({c: row.options[i] if i < len(row.options) else "" for i, c in enumerate("ABCD")})
        line.update(answer=row.answer or "", prediction=extract_choice(pred, row.options) or pred)
        out.append(line)
    return out


def write_submission(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """The submission as `.tsv`, or `.xlsx` when openpyxl is importable (it is not a dependency)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = [list(SUBMISSION_COLUMNS)] + [[row.get(c, "") for c in SUBMISSION_COLUMNS] for row in rows]
    if path.suffix == ".xlsx":
        try:
            from openpyxl import Workbook  # optional: only for the .xlsx the server also takes
        except ImportError as exc:
            raise UserError(f"{path}: writing .xlsx needs openpyxl (pip install openpyxl); use .tsv") from exc
        book = Workbook()
        for line in table:
            book.active.append(line)
        book.save(path)
        return path
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter="\t").writerows(table)
    return path


@dataclass
class MMBenchConfig(BenchConfig):
    tsv: str | None = field(default=None, metadata={"help": "official MMBench TSV (base64 images)"})
    prompt: Literal["llava", "lmms_eval"] = field(default="llava", metadata={"help": "prompt layout (default: llava)"})
    circular: Literal["auto", "off"] = field(default="auto", metadata={"help": "auto: the TSV's copies or rotations"})


@register
class MMBench(Benchmark):
    """MMBench: CircularEval accuracy from letters read without an API; OpenCompass submission TSV (and xlsx)."""

    name = "mmbench"
    description = "MMBench: CircularEval accuracy from letters read without an API; OpenCompass submission"
    Config = MMBenchConfig
    published = {"superclass_table11": 63.14, "llava15_7b": 64.3}
    folder = "mmbench"
    files = "mmbench_dev_20230712.tsv (the MMBench repository / OpenCompass)"
    rules = ("official", "lmms_eval")
    max_new_tokens_help = ("default: 16, ample for the option letter asked for (LLaVA's model_vqa_mmbench and "
                           "lmms-eval's mmbench allow 1024); pass 1024 to match them exactly")  # fmt: skip

    def load(self) -> QuestionSet:
        if self.config.tsv is None:
            raise UserError("mmbench needs --tsv (the official MMBench TSV, e.g. mmbench_dev_20230712.tsv)")
        return load_mmbench(self.config.tsv, self.config.circular, self.config.limit)

    def prompt(self, row: MMBenchRow) -> str:
        if self.config.prompt == "llava":
            return multiple_choice_prompt(row.question, list(row.options), row.hint)
        if self.config.prompt != "lmms_eval":
            raise UserError(f"unknown MMBench prompt layout '{self.config.prompt}' (expected llava or lmms_eval)")
        # lmms-eval joins its "\nAnswer with..." post-prompt with "\n": a blank line before the instruction
        options = "There are several options:\n" + "\n".join(f"{c}. {o}" for c, o in zip(row.letters, row.options))
        query = f"{row.hint} {row.question} {options}" if row.hint else f"{row.question} {options}"
        return f"{query}\n\n{LETTER_ANSWER_PROMPT}"

    def metrics(self, answers: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        if all(r.answer is None for r in self.questions):
            return None
        predictions = {k: v for k, v in answers.items() if isinstance(k, int)}
        return score_mmbench(self.questions, predictions, self.question_set.info["circular"], self.config.rule)

    def submission(self, out_dir: Path, answers: Mapping[QuestionId, str]) -> dict[str, str]:
        """`submission.tsv` always, `submission.xlsx` too when openpyxl is importable."""
        rows = submission_rows(self.questions, {k: v for k, v in answers.items() if isinstance(k, int)})
        files = {"submission_tsv": str(write_submission(out_dir / "submission.tsv", rows))}
        if importlib.util.find_spec("openpyxl") is not None:
            files["submission_xlsx"] = str(write_submission(out_dir / "submission.xlsx", rows))
        return files

    def describe_extra(self) -> dict[str, Any]:
        return {"num_questions": len({r.base for r in self.questions})}  # questions, not copies

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        tsv = first_file(folder, "mmbench_dev_20230712.tsv", "mmbench_dev*.tsv", "MMBench_DEV_EN*.tsv")
        return {"tsv": str(tsv)} if tsv else None

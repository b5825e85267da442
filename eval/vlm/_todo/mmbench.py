"""MMBench from its official TSV: prompts, circular evaluation, answer extraction without an API, submission files.

The TSV (`index, question, hint, A, B, C, D, answer, category, l2-category, image, source, split, ...`) holds
base64 images; a row whose image field is a short number points at another row's image (as VLMEvalKit's files
do for the circular copies). CircularEval: rows with the same `index % 1_000_000` are one question, which counts
only if every copy is answered right. A TSV without copies gets rotated copies made here (`circular="auto"`):
copy k shows the options rotated by k with the letters fixed, index + k * 1_000_000, the answer letter moved
with its text (LLaVA's `--all-rounds`). `circular="off"` scores the rows with index < 1_000_000 alone.
Answers are read from free text by `extract_choice` (letters first, then one option's text); an answer it cannot
read, or one that names several letters ("B, C", "A or B"), is wrong and counted as `unparsed` (lmms-eval would
ask GPT, or guess at random when offline).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import csv
import io
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from eval.vlm.answers import QuestionIndex
from eval.vlm.base import PromptItem, VLMBenchmark
from eval.vlm.files import first_file
from eval.vlm.ids import CIRCULAR_OFFSET, LETTERS, QuestionId
from eval.vlm.registry import BenchmarkSpec, register
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb  # the shared decoder (16-bit images scaled, not clipped)
from pretrain.runtime.errors import DataError, UserError
from vlm.templates import LETTER_ANSWER_PROMPT, multiple_choice_prompt

MMBENCH_PROMPTS = ("llava", "lmms_eval")
CIRCULAR_MODES = ("auto", "off")
REQUIRED_COLUMNS = ("index", "question", "A", "B", "image")
EMPTY_VALUES = {"", "nan", "none", "null"}  # what pandas (LLaVA, lmms-eval) reads as a missing option or hint
SUBMISSION_COLUMNS = ("index", "question", "A", "B", "C", "D", "answer", "prediction")


@dataclass
class MMBenchRow:
    """One TSV row (or a rotated copy of one): options A.. in order, the answer letter (None on test)."""

    index: int
    question: str
    options: list[str]
    answer: str | None
    hint: str | None
    category: str
    l2_category: str | None
    image_b64: str | None
    source: str | None = None
    split: str | None = None
    rotation: int = 0  # k > 0 for the copies made here

    @property
    def base(self) -> int:
        return self.index % CIRCULAR_OFFSET

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.options)]

    def load_image(self) -> Any:
        """The row's image as an RGB PIL image (decoded from base64 on demand)."""
        if self.image_b64 is None:
            raise DataError(f"MMBench row {self.index}: no image")
        return open_rgb(io.BytesIO(base64.b64decode(self.image_b64)))


@dataclass
class MMBenchSet:
    """The rows to run (copies included), how the circular copies came about, and what was skipped."""

    source: str
    rows: list[MMBenchRow]
    circular: str  # "tsv" (copies in the file), "rotated" (made here), "off"
    counts: dict[str, int]

    @property
    def has_answers(self) -> bool:
        return any(r.answer is not None for r in self.rows)


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


def _parse_row(raw: dict[str, str], cols: dict[str, str]) -> MMBenchRow | None:
    """A TSV row as an MMBenchRow with its raw image field, or None when the index, question or options are bad."""

    def get(name: str) -> str | None:
        value = raw.get(cols[name]) if name in cols else None
        return None if _empty(value) else value

    try:
        index = int(float(raw[cols["index"]]))
    except (TypeError, ValueError):
        return None
    options: list[str] = []
    for letter in LETTERS:
        value = get(letter)
        if value is None:
            break
        options.append(value)
    answer = get("answer")
    answer = answer.strip() if answer is not None else None
    question = get("question")
    if question is None or len(options) < 2 or (answer is not None and answer not in LETTERS[: len(options)]):
        return None
    return MMBenchRow(
        index=index,
        question=question,
        options=options,
        answer=answer,
        hint=get("hint"),
        category=get("category") or "unknown",
        l2_category=get("l2-category"),
        image_b64=raw.get(cols["image"]) or None,
        source=get("source"),
        split=get("split"),
    )


def _check_image(b64: str | None) -> bool:
    """Whether `b64` is valid base64 of a file PIL recognises (only the header is read)."""
    from PIL import Image, UnidentifiedImageError

    if not b64:
        return False
    try:
        with Image.open(io.BytesIO(base64.b64decode(b64, validate=True))):
            return True
    except (binascii.Error, ValueError, UnidentifiedImageError):
        return False


def _resolve_images(rows: list[MMBenchRow], counts: dict[str, int]) -> None:
    """Follow image fields that name another row's index; drop (and count) images that do not decode."""
    by_index = {r.index: r.image_b64 for r in rows}
    checked: dict[str, bool] = {}  # copies share their main row's image: decode each image once
    for r in rows:
        ref = r.image_b64
        if ref is not None and len(ref) <= 64 and ref.strip().isdigit():
            r.image_b64 = by_index.get(int(ref.strip()))
        if r.image_b64 is not None and r.image_b64 not in checked:
            checked[r.image_b64] = _check_image(r.image_b64)
        if r.image_b64 is None or not checked[r.image_b64]:
            r.image_b64 = None
            counts["bad_images"] += 1


def read_mmbench_tsv(path: str | Path, limit: int | None = None) -> tuple[list[MMBenchRow], dict[str, int]]:
    """The rows of an official MMBench TSV (all of them, copies included) and the counts of skipped ones."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such MMBench TSV file")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # base64 images are far longer than csv's 128 KiB default
    counts = {"malformed_rows": 0, "bad_images": 0, "duplicate_rows": 0}
    rows: list[MMBenchRow] = []
    seen: set[int] = set()
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t")
        cols = _columns(reader.fieldnames, path)
        for raw in reader:
            row = _parse_row(raw, cols)
            if row is None:
                counts["malformed_rows"] += 1
            elif row.index in seen:
                counts["duplicate_rows"] += 1
            else:
                seen.add(row.index)
                rows.append(row)
    if limit:  # keep whole questions: the first `limit` bases and all their copies
        category = {r.base: r.category for r in rows}
        bases = fixed_subset(sorted(category), limit, key=category.get)
        keep = set(bases)
        rows = [r for r in rows if r.base in keep]
    _resolve_images(rows, counts)
    return rows, counts


def rotate(row: MMBenchRow, k: int) -> MMBenchRow:
    """Copy k of a row: options rotated left by k under fixed letters, the answer letter following its text."""
    n = len(row.options)
    answer = row.letters[(row.letters.index(row.answer) - k) % n] if row.answer is not None else None
    options = row.options[k:] + row.options[:k]
    return replace(row, index=row.index + k * CIRCULAR_OFFSET, options=options, answer=answer, rotation=k)


def circular_rows(rows: list[MMBenchRow], mode: str = "auto") -> tuple[list[MMBenchRow], str, int]:
    """(rows to run, "tsv" | "rotated" | "off", copies left out): the CircularEval set for `mode`."""
    if mode not in CIRCULAR_MODES:
        raise UserError(f"unknown circular mode '{mode}' (expected one of {list(CIRCULAR_MODES)})")
    if mode == "off":
        main = [r for r in rows if r.index < CIRCULAR_OFFSET]
        return main, "off", len(rows) - len(main)
    if any(r.index >= CIRCULAR_OFFSET for r in rows):
        return rows, "tsv", 0
    return [c for r in rows for c in (r, *(rotate(r, k) for k in range(1, len(r.options))))], "rotated", 0


def load_mmbench(path: str | Path, circular: str = "auto", limit: int | None = None) -> MMBenchSet:
    """An MMBench TSV ready to run and score: rows read, images checked, circular copies found or made."""
    rows, counts = read_mmbench_tsv(path, limit)
    rows, how, left_out = circular_rows(rows, circular)
    counts["copies_left_out"] = left_out
    return MMBenchSet(str(path), rows, how, counts)


def mmbench_prompt(row: MMBenchRow, layout: str = "llava") -> str:
    """The question text in LLaVA's (model_vqa_mmbench.py) or lmms-eval's (en_utils.mmbench_doc_to_text) layout."""
    # llava: hint, question and "A. opt" lines joined by newlines. lmms_eval: "{hint} {question} There are several
    # options:\nA. opt..." then a blank line, since lmms-eval joins its "\nAnswer with..." post-prompt with "\n".
    if layout == "llava":
        return multiple_choice_prompt(row.question, list(row.options), row.hint)
    lines = [f"{letter}. {option}" for letter, option in zip(row.letters, row.options)]
    if layout == "lmms_eval":
        options = "There are several options:\n" + "\n".join(lines)
        query = f"{row.hint} {row.question} {options}" if row.hint else f"{row.question} {options}"
        return f"{query}\n\n{LETTER_ANSWER_PROMPT}"
    raise UserError(f"unknown MMBench prompt layout '{layout}' (expected one of {list(MMBENCH_PROMPTS)})")


_WRAPPED_LETTER = re.compile(r"[(\[]?([A-E])[)\]]?[.:,)]?")
_STATED_LETTER = re.compile(r"\b(?i:answer|option|choice)\b(?:\s+(?i:is))?\s*[:\-]?\s*[(\[]?([A-E])\b(?![-'])")
_LEADING_LETTER = re.compile(r"[(\[]?([A-E])(?:[)\]]|[.:,])")
_TOKEN_FORMS = ("{}", "{}.", "{},", "{}:", "{})", "{}).", "({})", "({}).", ":{}", "[{}]")


def _letter_tokens(text: str, letters: str) -> str | None:
    """lmms-eval's `can_infer_option`: exactly one letter written as a word or a punctuated token."""
    words = text.split()
    for form in _TOKEN_FORMS:
        # A bare "A" followed by another word is more likely the article than an option.
        hits = {
            c
            for c in letters
            for i, w in enumerate(words)
            if w == form.format(c) and not (form == "{}" and c == "A" and i + 1 < len(words))
        }
        if len(hits) == 1:
            return hits.pop()
    return None


_CONNECTORS = {"or", "and", "nor", "vs", "vs.", "versus", "/", "&"}


def _named_letters(text: str, options: Sequence[str], letters: str) -> set[str]:
    """Every option letter the text writes as a standalone letter form ("B", "(C)", "D.", "A/B" splits in two).

    Option texts quoted in the answer are taken out first ("B. Vitamin C" names B only). A bare "A" before an
    ordinary word is the article ("A dog ..."), but before "or"/"and"/"nor" it is a letter.
    """
    for option in sorted((o.strip() for o in options), key=len, reverse=True):
        if len(option) > 2:
            text = text.replace(option, " ")
    words = re.split(r"[\s/]+", text.strip())
    found = set()
    for i, word in enumerate(words):
        for c in letters:
            if not any(word == form.format(c) for form in _TOKEN_FORMS):
                continue
            after = words[i + 1].lower() if i + 1 < len(words) else None
            if not (word == "A" and after is not None and after not in _CONNECTORS):
                found.add(c)
    return found


def _norm_text(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _option_text(text: str, options: Sequence[str], letters: str) -> str | None:
    """The one option whose text the answer is, or alone contains as whole words (longest match wins ties)."""
    answer = _norm_text(text)
    normed = [_norm_text(o) for o in options]
    exact = [letters[i] for i, o in enumerate(normed) if o and o == answer]
    if len(exact) == 1:
        return exact[0]
    found = [i for i, o in enumerate(normed) if o and re.search(rf"(?<!\w){re.escape(o)}(?!\w)", answer)]
    found = [i for i in found if not any(i != j and normed[i] in normed[j] for j in found)]
    return letters[found[0]] if len(found) == 1 else None


def extract_choice(text: str, options: Sequence[str]) -> str | None:
    """The option letter a free-text answer names, or None when it names none or several (counted `unparsed`)."""
    letters = LETTERS[: len(options)]
    s = text.strip()
    if not s or len(_named_letters(s, options, letters)) > 1:  # a hedge ("B, C", "A or B", "neither A nor B")
        return None
    for pattern, fn in ((_WRAPPED_LETTER, re.fullmatch), (_STATED_LETTER, re.search), (_LEADING_LETTER, re.match)):
        m = fn(pattern, s)
        if m and m.group(1) in letters:
            return m.group(1)
    return _letter_tokens(s, letters) or _option_text(s, options, letters)


def _percent(hits: int, total: int) -> float | None:
    return round(100.0 * hits / total, 2) if total else None


def _breakdown(groups: dict[int, tuple[MMBenchRow, bool]], key: str) -> dict[str, float | None]:
    totals: dict[str, list[int]] = {}
    for main, hit in groups.values():
        name = getattr(main, key)
        if name is not None:
            totals.setdefault(name, [0, 0])
            totals[name][0] += hit
            totals[name][1] += 1
    return {k: _percent(h, t) for k, (h, t) in sorted(totals.items())}


def score_mmbench(mset: MMBenchSet, predictions: Mapping[int, str]) -> dict[str, Any]:
    """CircularEval accuracy (percent) overall, per category and l2-category; single-pass accuracy beside it."""
    missing = unparsed = 0
    groups: dict[int, tuple[MMBenchRow, bool]] = {}
    single = [0, 0]
    for row in sorted(mset.rows, key=lambda r: r.index):
        if row.answer is None:
            continue
        pred = predictions.get(row.index)
        if pred is None:
            missing += 1
            letter = None
        else:
            letter = extract_choice(pred, row.options)
            unparsed += letter is None
        right = letter == row.answer
        main, hit = groups.get(row.base, (row, True))
        groups[row.base] = (main, hit and right)
        if row.index < CIRCULAR_OFFSET:
            single[0] += right
            single[1] += 1
    ids = {r.index for r in mset.rows}
    return {
        "accuracy": _percent(sum(hit for _, hit in groups.values()), len(groups)),
        "accuracy_single_pass": _percent(*single),
        "circular": mset.circular,
        "num_questions": len(groups),
        "num_rows": sum(1 for r in mset.rows if r.answer is not None),
        "per_category": _breakdown(groups, "category"),
        "per_l2_category": _breakdown(groups, "l2_category"),
        "missing_predictions": missing,
        "unparsed": unparsed,
        "unknown_predictions": sum(1 for i in predictions if i not in ids),
    }


def submission_rows(mset: MMBenchSet, predictions: Mapping[int, str]) -> list[dict[str, Any]]:
    """OpenCompass's submission columns for the file's own rows (not the copies made here)."""
    # `prediction` is the letter read from the answer, or the raw answer when none could be (the server matches it).
    rows = []
    for row in sorted((r for r in mset.rows if r.rotation == 0), key=lambda r: r.index):
        pred = predictions.get(row.index, "")
        out: dict[str, Any] = {"index": row.index, "question": row.question}
        out.update({c: row.options[i] if i < len(row.options) else "" for i, c in enumerate("ABCD")})
        out["answer"] = row.answer or ""
        out["prediction"] = extract_choice(pred, row.options) or pred
        rows.append(out)
    return rows


def write_submission(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """The submission as `.tsv`, or `.xlsx` when openpyxl is importable (it is not a dependency)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".xlsx":
        try:
            from openpyxl import Workbook
        except ImportError as exc:
            raise UserError(f"{path}: writing .xlsx needs openpyxl (pip install openpyxl); use .tsv") from exc
        wb = Workbook()
        ws = wb.active
        ws.append(list(SUBMISSION_COLUMNS))
        for row in rows:
            ws.append([row.get(c, "") for c in SUBMISSION_COLUMNS])
        wb.save(path)
        return path
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(SUBMISSION_COLUMNS), delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


class MMBenchBenchmark(VLMBenchmark):
    """MMBench: CircularEval accuracy from letters read without an API; OpenCompass submission TSV (and xlsx)."""

    name = "mmbench"

    def __init__(self, mset: MMBenchSet, prompt: str = "llava") -> None:
        if prompt not in MMBENCH_PROMPTS:
            raise UserError(f"unknown MMBench prompt layout '{prompt}' (expected one of {list(MMBENCH_PROMPTS)})")
        self.mset, self.prompt = mset, prompt

    def prompt_items(self) -> list[PromptItem]:
        return [
            PromptItem(r.index, mmbench_prompt(r, self.prompt), r.load_image) for r in self.mset.rows if r.image_b64
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "split": next((r.split for r in self.mset.rows if r.split), "unknown"),
            "source": self.mset.source,
            "prompt": self.prompt,
            "circular": self.mset.circular,
            "num_questions": len({r.base for r in self.mset.rows}),
            "data_counts": dict(self.mset.counts),
        }

    def score(self, predictions: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        if not self.mset.has_answers:
            return None
        return score_mmbench(self.mset, {k: v for k, v in predictions.items() if isinstance(k, int)})

    def write_outputs(self, out_dir: Path, predictions: Mapping[QuestionId, str]) -> dict[str, str]:
        """`submission.tsv` always, `submission.xlsx` too when openpyxl is importable."""
        rows = submission_rows(self.mset, {k: v for k, v in predictions.items() if isinstance(k, int)})
        files = {"submission_tsv": str(write_submission(out_dir / "submission.tsv", rows))}
        try:
            import openpyxl  # noqa: F401
        except ImportError:
            return files
        files["submission_xlsx"] = str(write_submission(out_dir / "submission.xlsx", rows))
        return files

    def question_index(self) -> QuestionIndex:
        return QuestionIndex([r.index for r in self.mset.rows])


def mmbench_benchmark(
    tsv: str | Path, prompt: str = "llava", circular: str = "auto", limit: int | None = None
) -> MMBenchBenchmark:
    """MMBench from its official TSV."""
    return MMBenchBenchmark(load_mmbench(tsv, circular, limit), prompt)


def _mmbench_args(p: argparse.ArgumentParser) -> None:

    p.add_argument("--tsv", required=True, type=Path, help="official MMBench TSV (base64 images)")
    p.add_argument("--prompt", default="llava", choices=MMBENCH_PROMPTS, help="prompt layout (default: llava)")
    p.add_argument("--circular", default="auto", choices=CIRCULAR_MODES, help="auto: the TSV's copies or rotations")


def _mmbench(args: argparse.Namespace, run: bool) -> Any:
    return mmbench_benchmark(args.tsv, args.prompt, args.circular, args.limit)


def _mmbench_suite(folder: Path) -> dict[str, Any] | None:
    tsv = first_file(folder, "mmbench_dev_20230712.tsv", "mmbench_dev*.tsv", "MMBench_DEV_EN*.tsv")
    return {"tsv": tsv} if tsv else None


SPEC = register(
    BenchmarkSpec(
        name="mmbench",
        help="MMBench: CircularEval accuracy from letters read without an API; OpenCompass submission",
        add_args=_mmbench_args,
        build=_mmbench,
        max_new_tokens_help="default: 16, ample for the option letter asked for (LLaVA's model_vqa_mmbench and "
        "lmms-eval's mmbench allow 1024); pass 1024 to match them exactly",
        suite_args=_mmbench_suite,
        folder="mmbench",
        files="mmbench_dev_20230712.tsv (the MMBench repository / OpenCompass)",
        published={"superclass_table11": 63.14, "llava15_7b": 64.3},
    )
)

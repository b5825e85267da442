"""MMMU (validation) from the authors' parquet files: prompts, MMMU's rule-based answer parsing, accuracy overall, per
discipline and per subject.

usage: superclass eval mmmu run --model DIR --parquet MMMU --out OUT [--prompt llava|lmms_eval|mmmu] [--limit N]
       superclass eval mmmu score --parquet MMMU --predictions P.jsonl --out OUT [--parser mmmu|lmms_eval]

Files: the MMMU/MMMU hub dataset as distributed, one config per subject, `<Subject>/validation-*.parquet`, or
lmms-lab's MMMU (all subjects in `data/validation-*.parquet`); the columns are the same: id
("validation_Art_Theory_12"), question, options (a string holding a Python list), explanation, image_1..image_7
({"bytes", "path"} or null), img_type, answer (a letter; an open answer may hold a Python list of accepted
answers), topic_difficulty, question_type ("multiple-choice" / "open"), subfield. The subject comes from the id.
Reading needs pyarrow. Malformed rows (bad id, options, type or answer letter) are counted and left out; a question
whose image is missing is not asked and scores wrong (`missing_images`).

Prompt: LLaVA-1.5 has no MMMU script, so `llava` (default) is lmms-eval's mmmu_val task for llava
(lmms_eval/tasks/mmmu/utils.py `construct_prompt`, mmmu_val.yaml): "{question}\nA. opt\nB. opt\n\nAnswer with the
option's letter from the given choices directly." or "{question}\n\nAnswer the question using a single word or
phrase.", the "<image N>" placeholders left in the text (`interleaved_format: false`); `lmms_eval` is the same text
under the shared flag's name. `mmmu` is the MMMU repository's own LLaVA-1.5 runner (mmmu/run_llava.py,
configs/llava1.5.yaml, utils/data_utils.py `construct_prompt`): "{question}\n(A) opt\n(B) opt\n\nAnswer with ...".
max_new_tokens 128, as both.

Several images: lmms-eval's llava model (models/simple/llava.py) passes every image the prompt names with one
"<image>" each; our runner gives each question one image, so by default (`--multi-image skip`) a question naming
several images is neither asked nor scored (`skipped_multi_image`; accuracy is over the rest). `--multi-image first`
asks it with image_1 only, as the MMMU repository's run_llava.py does for every question.

Scoring, API-free: MMMU's rules (MMMU-Benchmark/MMMU mmmu/utils/eval_utils.py: `parse_multi_choice_response`,
`parse_open_response` with `extract_numbers` / `normalize_str` / `check_is_number`, `eval_multi_choice`, `eval_open`;
the same in lmms_eval/tasks/mmmu/utils.py), reimplemented below. A letter that cannot be read is a random choice, as
the official code does, from one `random.Random(42)` stream drawn in the official order (subjects alphabetically,
then file order), so a score is deterministic; those are counted as `random_guesses`. `--parser lmms_eval` reads
letters as lmms-eval 0.7 does (lmms_eval/tasks/_task_utils/mmmu_mcq_utils.py `parse_mmmu_multi_choice_response`:
"B " without the leading space, then "B." before the option texts). Accuracy is instance-level (MMMU's
`calculate_ins_level_acc`), per discipline (mmmu/utils/data_utils.py `DOMAIN_CAT2SUB_CAT`) and per subject.
"""

from __future__ import annotations

import ast
import io
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
from vlm.templates import LETTER_ANSWER_PROMPT, SHORT_ANSWER_PROMPT

MMMU_PROMPTS = ("llava", "lmms_eval", "mmmu")
MULTI_IMAGE_MODES = ("skip", "first")
PARSERS = ("mmmu", "lmms_eval")
GUESS_SEED = 42  # eval_utils.py: random.seed(42) at import, then random.choice for every unreadable letter
MAX_IMAGES = 7
REQUIRED_COLUMNS = ("id", "question", "options", "answer", "question_type", "image_1")
# The six disciplines and their subjects: MMMU's DOMAIN_CAT2SUB_CAT (mmmu/utils/data_utils.py), the paper's names.
DISCIPLINES = {
    "Art & Design": ("Art", "Art_Theory", "Design", "Music"),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Health & Medicine": ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                          "Pharmacy", "Public_Health"),
    "Humanities & Social Science": ("History", "Literature", "Sociology", "Psychology"),
    "Tech & Engineering": ("Agriculture", "Architecture_and_Engineering", "Computer_Science", "Electronics",
                           "Energy_and_Power", "Materials", "Mechanical_Engineering"),
}  # fmt: skip
DISCIPLINE_OF = {subject: name for name, subjects in DISCIPLINES.items() for subject in subjects}
_ID = re.compile(r"^([a-z]+)_(.+?)_(\d+)$")  # lmms-eval's extract_subset_name; MMMU's "_".join(id.split("_")[1:-1])
_PLACEHOLDER = re.compile(r"<image (\d+)>")
_UNANSWERED = {"", "?"}  # the test split's answer field
QUESTION_TYPES = {"multiple-choice": "multiple-choice", "open": "open", "short-answer": "open"}  # + answer_dict's


@dataclass
class MMMUQuestion:
    """One row: the question, its options (empty when open), the answer(s) (None on test) and its images."""

    id: str
    subject: str
    question: str
    options: list[str]
    answer: str | list[str] | None
    question_type: str  # "multiple-choice" or "open"
    images: dict[int, bytes] = field(default_factory=dict)  # image_N present in the row

    @property
    def placeholders(self) -> list[int]:
        """The image numbers the question and options name ("<image 2>"), sorted: lmms-eval's visuals."""
        text = " ".join([self.question, *self.options])
        return sorted({int(n) for n in _PLACEHOLDER.findall(text)})

    @property
    def multi_image(self) -> bool:
        return len(self.placeholders) > 1

    @property
    def image_number(self) -> int:
        """The one image shown: the only one named, else image_1 (MMMU's run_llava.py)."""
        named = self.placeholders
        return named[0] if len(named) == 1 else 1

    @property
    def letters(self) -> list[str]:
        return [chr(ord("A") + i) for i in range(len(self.options))]

    def load_image(self) -> Any:
        """The shown image as an RGB PIL image (decoded on demand)."""
        data = self.images.get(self.image_number)
        if data is None:
            raise DataError(f"MMMU question {self.id}: no image_{self.image_number}")
        return open_rgb(io.BytesIO(data))


@dataclass
class MMMUSet:
    """The questions read (after --limit), counts of what was skipped, and lmms-eval's doc_id order when known."""

    source: str
    split: str
    questions: list[MMMUQuestion]
    counts: dict[str, int]
    doc_rows: list[QuestionId | None] | None = None  # lmms-lab's single split: the id of each row, in order

    @property
    def has_answers(self) -> bool:
        return any(q.answer is not None for q in self.questions)


# ----------------------------------------------------------------------------------------------- reading
def parquet_files(path: Path, split: str) -> list[Path]:
    """The split's shards: the file itself, or every `{split}-*.parquet` under the folder (subject folders sorted)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path}: no such MMMU parquet file or folder")
    files = sorted(path.rglob(f"{split}-*.parquet"))
    if not files:
        found = sorted({f.name.split("-", 1)[0] for f in path.rglob("*.parquet")})
        raise DataError(
            f"{path}: no {split}-*.parquet file under it (expected MMMU/MMMU's <Subject>/{split}-*.parquet or "
            f"lmms-lab's data/{split}-*.parquet; splits found: {found or 'none'})"
        )
    return files


def _literal_list(text: Any) -> list[str] | None:
    """A string holding a Python list of strings (MMMU's `options`), as that list; None when it is not one."""
    try:
        value = ast.literal_eval(text) if isinstance(text, str) else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return [str(v) for v in value] if isinstance(value, list) else None


def _answer(raw: Any, question_type: str, letters: list[str]) -> tuple[bool, str | list[str] | None]:
    """(valid, answer): a letter of the options, an open answer (a list when it holds a Python list), or None."""
    if raw is None or (isinstance(raw, str) and raw.strip() in _UNANSWERED):
        return True, None
    text = str(raw).strip()
    if question_type == "multiple-choice":
        return text in letters, text
    # The official answer_dict_val.json holds lists for three open questions (validation_Math_15: ['24/7', '3.429']).
    listed = _literal_list(text) if text.startswith("[") else None
    return True, listed if listed else text


def parse_row(row: dict[str, Any]) -> MMMUQuestion | None:
    """A parquet row as an MMMUQuestion, or None when its id, options, question type or answer letter is bad."""
    qid, question = row.get("id"), row.get("question")
    match = _ID.match(qid) if isinstance(qid, str) else None
    options = _literal_list(row.get("options"))
    raw_type = row.get("question_type")
    qtype = QUESTION_TYPES.get(raw_type) if isinstance(raw_type, str) else None
    if match is None or not isinstance(question, str) or options is None or qtype is None:
        return None
    if qtype == "multiple-choice" and len(options) < 2:
        return None
    valid, answer = _answer(row.get("answer"), qtype, [chr(ord("A") + i) for i in range(len(options))])
    if not valid:
        return None
    images = {}
    for n in range(1, MAX_IMAGES + 1):
        image = row.get(f"image_{n}")
        data = image.get("bytes") if isinstance(image, dict) else image
        if isinstance(data, (bytes, bytearray)) and data:
            images[n] = bytes(data)
    return MMMUQuestion(qid, match.group(2), question, options, answer, qtype, images)


def load_mmmu(path: str | Path, split: str = "validation", limit: int | None = None) -> MMMUSet:
    """An MMMU split from the authors' per-subject parquet folders or lmms-lab's; `limit` keeps a fixed subset of
    questions, stratified by subject."""
    path = Path(path)
    files = parquet_files(path, split)
    counts = {"malformed_rows": 0, "duplicate_ids": 0, "missing_images": 0, "multi_image": 0}
    questions: list[MMMUQuestion] = []
    doc_rows: list[QuestionId | None] = []
    seen: set[str] = set()
    rows, _ = parquet_rows(files, split, REQUIRED_COLUMNS, f"MMMU's columns {list(REQUIRED_COLUMNS)}", batch_size=64)
    for row in rows:
        q = parse_row(row)
        doc_rows.append(q.id if q is not None else None)
        if q is None:
            counts["malformed_rows"] += 1
        elif q.id in seen:
            counts["duplicate_ids"] += 1
        else:
            seen.add(q.id)
            questions.append(q)
    questions = fixed_subset(questions, limit, key=lambda q: q.subject)
    counts["multi_image"] = sum(q.multi_image for q in questions)
    counts["missing_images"] = sum(q.image_number not in q.images for q in questions)
    # lmms-eval names MMMU samples only by doc_id, the row of lmms-lab's one split: known for that layout alone.
    single = len({f.parent for f in files}) == 1 and files[0].parent.name not in DISCIPLINE_OF
    return MMMUSet(str(path), split, questions, counts, doc_rows if single else None)


# ----------------------------------------------------------------------------------------------- prompts
def mmmu_prompt(q: MMMUQuestion, layout: str = "llava") -> str:
    """The question text in lmms-eval's mmmu_val layout (`llava`, `lmms_eval`) or the MMMU repo's (`mmmu`)."""
    if layout in ("llava", "lmms_eval"):
        if q.question_type == "open":
            return f"{q.question}\n\n{SHORT_ANSWER_PROMPT}"
        options = "\n".join(f"{letter}. {option}" for letter, option in zip(q.letters, q.options))
        return f"{q.question}\n{options}\n\n{LETTER_ANSWER_PROMPT}"
    if layout == "mmmu":  # configs/llava1.5.yaml "{}\n{}\nAnswer..." with the options as "(A) opt\n" lines
        if q.question_type == "open":
            return f"{q.question}\n{SHORT_ANSWER_PROMPT}"
        options = "".join(f"({letter}) {option}\n" for letter, option in zip(q.letters, q.options))
        return f"{q.question}\n{options}\n{LETTER_ANSWER_PROMPT}"
    raise UserError(f"unknown MMMU prompt layout '{layout}' (expected one of {list(MMMU_PROMPTS)})")


# ----------------------------------------------------------------------------------------------- MMMU's rules
def parse_multi_choice(
    response: str, options: Sequence[str], rng: random.Random, rule: str = "mmmu"
) -> tuple[str, bool]:
    """(letter, guessed): MMMU's `parse_multi_choice_response`; `guessed` when nothing was read and the letter is
    `rng`'s random choice. `rule="lmms_eval"`: lmms-eval 0.7's variant (see the module docstring)."""
    letters = [chr(ord("A") + i) for i in range(len(options))]
    for char in ",.!?;:'":  # one character at a time, from both ends, in this order
        response = response.strip(char)
    padded = f" {response} "  # so " B " matches at either end
    candidates = [c for c in letters if f"({c})" in padded]
    bracketed, by_letter = bool(candidates), True
    if not candidates:
        spaced = "{} " if rule == "lmms_eval" else " {} "
        candidates = [c for c in letters if spaced.format(c) in padded]
    if not candidates and rule == "lmms_eval":
        candidates = [c for c in letters if f"{c}." in padded]
    if not candidates and len(padded.split()) > 5:  # a sentence: look for an option's text
        candidates = [c for c, o in zip(letters, options) if o.lower() in padded.lower()]
        by_letter = False
    if not candidates:
        return rng.choice(letters), True
    if len(candidates) == 1:
        return candidates[0], False
    # Several: the one written last (np.argmax: the first of equal positions).
    if by_letter:
        positions = [padded.rfind(f"({c})" if bracketed else f" {c} ") for c in candidates]
    else:
        positions = [padded.lower().rfind(options[letters.index(c)].lower()) for c in candidates]
    return candidates[positions.index(max(positions))], False


def check_is_number(text: str) -> bool:
    """MMMU's `check_is_number`: float() accepts it once commas are dropped."""
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def normalize_str(text: str) -> list[str | float]:
    """MMMU's `normalize_str`: a number as a float rounded to 2 decimals; other text lower-cased, a single character
    padded both ways (" c", "c ") so that it only matches as a word."""
    text = text.strip()
    if check_is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    return [" " + text, text + " "] if len(text) == 1 else [text]


# MMMU's `extract_numbers`: numbers with thousands commas, in scientific notation, and plain ones.
_COMMA_NUMBER = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_SCIENTIFIC_NUMBER = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_SIMPLE_NUMBER = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")
_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_TRIVIAL = {":", ",", ".", "!", "?", ";", "'"}


def extract_numbers(text: str) -> list[str]:
    """Every number written in `text` (MMMU's `extract_numbers`), as strings."""
    return [*_COMMA_NUMBER.findall(text), *_SCIENTIFIC_NUMBER.findall(text), *_SIMPLE_NUMBER.findall(text)]


def _key_responses(response: str) -> list[str]:
    """MMMU's `get_key_subresponses`: per line, the shortest tail after an answer cue ("is ", "so ", ...; also "=" on
    the last line); the whole (lower-cased) response when no line has one."""
    response = response.strip().strip(".").lower()
    # The official split also cuts at ". " before a capital, which never occurs once lower-cased: lines only.
    lines = re.split(r"\.\s(?=[A-Z])|\n", response)
    keys = []
    for i, line in enumerate(lines):
        cues = (*_KEY_INDICATORS, "=") if i == len(lines) - 1 else _KEY_INDICATORS
        shortest = None
        for cue in cues:
            if cue in line:
                tail = line.split(cue)[-1].strip()
                if not shortest or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest.strip() not in _TRIVIAL:
            keys.append(shortest)
    return keys or [response]


def parse_open(response: str) -> list[str | float]:
    """MMMU's `parse_open_response`: the key phrases and every number in them, normalised, without duplicates."""
    keys = _key_responses(response)
    preds: list[str | float] = []
    for text in [*keys, *(n for key in keys for n in extract_numbers(key))]:
        preds.extend(normalize_str(text))
    return list(dict.fromkeys(preds))


def eval_multi_choice(gold: str | list[str], letter: str) -> bool:
    """MMMU's `eval_multi_choice`: the letter is the answer (or one of them)."""
    return letter in gold if isinstance(gold, list) else letter == gold


def eval_open(gold: str | list[str], preds: Sequence[str | float]) -> bool:
    """MMMU's `eval_open`: a text prediction contains a normalised answer text, or a number equals an answer number."""
    answers = [a for g in (gold if isinstance(gold, list) else [gold]) for a in normalize_str(g)]
    for pred in preds:
        if isinstance(pred, str):
            if any(isinstance(a, str) and a in pred for a in answers):
                return True
        elif pred in answers:
            return True
    return False


# ----------------------------------------------------------------------------------------------- scoring
def _percent(hits: int, total: int) -> float | None:
    return round(100.0 * hits / total, 2) if total else None


def _table(tally: dict[str, list[int]], order: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    names = [n for n in order if n in tally] if order is not None else sorted(tally)
    return {n: {"accuracy": _percent(*tally[n]), "num_questions": tally[n][1]} for n in names}


def official_order(questions: Sequence[MMMUQuestion]) -> list[MMMUQuestion]:
    """Subjects alphabetically (MMMU's CAT_SHORT2LONG order), then file order: the order the official scripts parse
    in, so the random guesses are drawn in the same sequence."""
    return sorted(questions, key=lambda q: q.subject)


def score_mmmu(
    questions: Sequence[MMMUQuestion], predictions: Mapping[QuestionId, str], rule: str = "mmmu"
) -> dict[str, Any]:
    """Accuracy (percent) overall, per discipline, per subject and per question type; random guesses counted."""
    if rule not in PARSERS:
        raise UserError(f"unknown MMMU parser '{rule}' (expected one of {list(PARSERS)})")
    rng = random.Random(GUESS_SEED)
    tallies: dict[str, dict[str, list[int]]] = {"discipline": {}, "subject": {}, "type": {}}
    hits = total = missing = guesses = 0
    for q in official_order([q for q in questions if q.answer is not None]):
        pred = predictions.get(q.id)
        if pred is None:
            missing += 1
            right = False
        elif q.question_type == "multiple-choice":
            letter, guessed = parse_multi_choice(pred, q.options, rng, rule)
            guesses += guessed
            right = eval_multi_choice(q.answer, letter)
        else:
            right = eval_open(q.answer, parse_open(pred))
        hits, total = hits + right, total + 1
        keys = {"discipline": DISCIPLINE_OF.get(q.subject), "subject": q.subject, "type": q.question_type}
        for kind, name in keys.items():
            if name is not None:
                cell = tallies[kind].setdefault(name, [0, 0])
                cell[0], cell[1] = cell[0] + right, cell[1] + 1
    ids = {q.id for q in questions}
    return {
        "accuracy": _percent(hits, total),
        "num_questions": total,
        "per_discipline": _table(tallies["discipline"], list(DISCIPLINES)),
        "per_subject": _table(tallies["subject"]),
        "per_question_type": _table(tallies["type"], ["multiple-choice", "open"]),
        "random_guesses": guesses,
        "missing_predictions": missing,
        "unknown_predictions": sum(1 for i in predictions if i not in ids),
    }


def submission(questions: Sequence[MMMUQuestion], predictions: Mapping[QuestionId, str], rule: str = "mmmu"):
    """MMMU's test submission {id: answer}: the letter read (or guessed) for multiple choice, the text for open."""
    rng = random.Random(GUESS_SEED)
    out = {}
    for q in official_order(questions):
        pred = predictions.get(q.id, "")
        out[q.id] = parse_multi_choice(pred, q.options, rng, rule)[0] if q.question_type != "open" else pred.strip()
    return out


# ----------------------------------------------------------------------------------------------- benchmark
class MMMUBenchmark(VLMBenchmark):
    """MMMU: one image per question (several-image questions skipped or shown image_1), MMMU's rule-based scoring."""

    name = "mmmu"
    max_new_tokens = 128  # lmms-eval's mmmu_val (_default_template_yaml) and MMMU's run_llava.py

    def __init__(self, mset: MMMUSet, prompt: str = "llava", multi_image: str = "skip", parser: str = "mmmu") -> None:
        checks = {"prompt layout": (prompt, MMMU_PROMPTS), "--multi-image mode": (multi_image, MULTI_IMAGE_MODES)}
        for what, (value, known) in {**checks, "parser": (parser, PARSERS)}.items():
            if value not in known:
                raise UserError(f"unknown MMMU {what} '{value}' (expected one of {list(known)})")
        self.mset, self.prompt, self.multi_image, self.parser = mset, prompt, multi_image, parser
        skip = multi_image == "skip"
        self.questions = [q for q in mset.questions if not (skip and q.multi_image)]  # the scored set

    def prompt_items(self) -> list[PromptItem]:
        return [
            PromptItem(q.id, mmmu_prompt(q, self.prompt), q.load_image)
            for q in self.questions
            if q.image_number in q.images
        ]

    def describe(self) -> dict[str, Any]:
        skipped = len(self.mset.questions) - len(self.questions)
        return {
            "benchmark": self.name,
            "split": self.mset.split,
            "source": self.mset.source,
            "prompt": self.prompt,
            "multi_image": self.multi_image,
            "parser": self.parser,
            "guess_seed": GUESS_SEED,
            "num_questions": len(self.questions),
            "skipped_multi_image": skipped,
            "data_counts": dict(self.mset.counts),
        }

    def score(self, predictions: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        if not self.mset.has_answers:
            return None
        return score_mmmu(self.questions, predictions, self.parser)

    def write_outputs(self, out_dir: Path, predictions: Mapping[QuestionId, str]) -> dict[str, str]:
        """`submission.json` ({id: answer}, MMMU's EvalAI format) for a split without answers (test)."""
        if self.mset.has_answers:
            return {}
        path = out_dir / "submission.json"
        write_text_atomically(path, json.dumps(submission(self.questions, predictions, self.parser)) + "\n")
        return {"submission": str(path)}

    def question_index(self) -> QuestionIndex:
        return QuestionIndex([q.id for q in self.questions], self.mset.doc_rows)


def mmmu_benchmark(
    parquet: str | Path,
    split: str = "validation",
    prompt: str = "llava",
    multi_image: str = "skip",
    parser: str = "mmmu",
    limit: int | None = None,
) -> MMMUBenchmark:
    """MMMU from the authors' or lmms-lab's parquet files."""
    return MMMUBenchmark(load_mmmu(parquet, split, limit), prompt, multi_image, parser)


# ----------------------------------------------------------------------------------------------- registry
def _add_args(p: Any) -> None:
    p.add_argument(
        "--parquet",
        required=True,
        type=Path,
        help="MMMU/MMMU snapshot (<Subject>/validation-*.parquet), lmms-lab's MMMU (data/validation-*.parquet) or one "
        "parquet file; needs pyarrow",
    )
    p.add_argument("--split", default="validation", help="file-name prefix of the split (default: validation)")
    p.add_argument(
        "--prompt",
        default="llava",
        choices=MMMU_PROMPTS,
        help="llava (default): lmms-eval's mmmu_val prompt for llava (LLaVA-1.5 has no MMMU script); lmms_eval: the "
        "same; mmmu: the MMMU repo's run_llava.py ((A) options)",
    )
    p.add_argument(
        "--multi-image",
        default="skip",
        choices=MULTI_IMAGE_MODES,
        help="questions naming several images: skip (default; counted as skipped_multi_image, not scored) or first "
        "(image_1 only, as MMMU's run_llava.py)",
    )
    p.add_argument(
        "--parser",
        default="mmmu",
        choices=PARSERS,
        help="letter reading: mmmu (default; the official eval_utils.py) or lmms_eval (0.7's, also reads 'B.')",
    )


def _build(args: Any, run: bool) -> MMMUBenchmark:
    return mmmu_benchmark(args.parquet, args.split, args.prompt, args.multi_image, args.parser, args.limit)


def _suite_args(folder: Path) -> dict[str, Any] | None:
    """ROOT/MMMU holding MMMU/MMMU's subject folders or lmms-lab's data/ folder of validation shards."""
    found = next(folder.rglob("validation-*.parquet"), None)
    return {"parquet": folder, "split": "validation"} if found is not None else None


SPEC = register(
    BenchmarkSpec(
        name="mmmu",
        help="MMMU (val): accuracy per discipline and subject, MMMU's rule-based parsing; lmms-eval's prompt",
        add_args=_add_args,
        build=_build,
        max_new_tokens_help="default: 128, as lmms-eval's mmmu_val and MMMU's run_llava.py",
        suite_args=_suite_args,
        folder="MMMU",
        files="the MMMU/MMMU hub dataset (<Subject>/validation-*.parquet) or lmms-lab/MMMU (data/validation-*.parquet)",
        published={"superclass_table11": 36.0},
    )
)

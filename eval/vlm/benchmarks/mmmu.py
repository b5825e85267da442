"""MMMU (validation) from the authors' parquet files: prompts, MMMU's rule-based answer parsing
(`eval.vlm.scoring.mmmu`), accuracy overall, per discipline and per subject.

usage: superclass eval mmmu run --model DIR --parquet MMMU --out OUT [--prompt llava|lmms_eval|mmmu] [--limit N]
       superclass eval mmmu score --parquet MMMU --predictions P.jsonl --out OUT [--rule official|lmms_eval]

Files: the MMMU/MMMU hub dataset (`<Subject>/validation-*.parquet`) or lmms-lab's MMMU (every subject in
`data/validation-*.parquet`), needing pyarrow; columns: id ("validation_Art_Theory_12", naming the subject), question,
options (a string holding a Python list), image_1..image_7 ({"bytes", "path"} or null), answer (a letter; an open
answer may hold a Python list of accepted ones), question_type ("multiple-choice" / "open"), ... Rows of another shape
are counted `malformed_questions` and left out; a question without an answer (test's "?") is `unannotated`; one
whose image is missing is not asked and scores wrong (`missing_images`).

Prompt: LLaVA-1.5 has no MMMU script, so `llava` (default) and `lmms_eval` are lmms-eval's mmmu_val for llava
(tasks/mmmu/utils.py `construct_prompt`): "{question}\\nA. opt\\nB. opt\\n\\n" + LETTER_ANSWER_PROMPT, or
"{question}\\n\\n" + SHORT_ANSWER_PROMPT, the "<image N>" placeholders left in (`interleaved_format: false`); `mmmu`
is the MMMU repository's LLaVA-1.5 runner (mmmu/run_llava.py, configs/llava1.5.yaml): "(A) opt" lines. Both allow
128 new tokens. Several images: lmms-eval's llava passes every image named; our runner gives each question one, so
`multi_image=skip` (default) neither asks nor scores a question naming several (`skipped_multi_image`), `first`
asks it with image_1 only, as MMMU's run_llava.py does for every question.

Rules (`eval.vlm.scoring.mmmu`): `official` is MMMU's eval_utils.py, an unreadable letter a seeded random guess
(`random_guesses`); `lmms_eval` reads letters as lmms-eval 0.7. Accuracy is instance-level (MMMU's
`calculate_ins_level_acc`), per discipline and subject. The test split writes `submission.json` ({id: answer}).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eval.vlm.base import BenchConfig, Benchmark, QuestionSet
from eval.vlm.files import parquet_image, parquet_rows
from eval.vlm.ids import QuestionId
from eval.vlm.scoring.mmmu import DISCIPLINE_OF, GUESS_SEED, letters_of, score_mmmu, submission
from eval.vlm.subset import fixed_subset
from pretrain.data.shards import open_rgb
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.evaluators import register
from vlm.templates import LETTER_ANSWER_PROMPT, SHORT_ANSWER_PROMPT

MAX_IMAGES = 7
REQUIRED_COLUMNS = ("id", "question", "options", "answer", "question_type", "image_1")
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
    image: bytes | None = None  # the one shown (`image_number`), None when the row lacks it

    @property
    def placeholders(self) -> list[int]:
        """The image numbers the question and options name ("<image 2>"), sorted: lmms-eval's visuals."""
        return sorted({int(n) for n in _PLACEHOLDER.findall(" ".join([self.question, *self.options]))})

    @property
    def multi_image(self) -> bool:
        return len(self.placeholders) > 1

    @property
    def image_number(self) -> int:
        """The one image shown: the only one named, else image_1 (MMMU's run_llava.py)."""
        named = self.placeholders
        return named[0] if len(named) == 1 else 1

    def load_image(self) -> Any:
        if self.image is None:
            raise DataError(f"MMMU question {self.id}: no image_{self.image_number}")
        return open_rgb(self.image)


def split_files(path: Path, split: str) -> list[Path]:
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
    qid, question, raw_type = row.get("id"), row.get("question"), row.get("question_type")
    match = _ID.match(qid) if isinstance(qid, str) else None
    options = _literal_list(row.get("options"))
    qtype = QUESTION_TYPES.get(raw_type) if isinstance(raw_type, str) else None
    if match is None or not isinstance(question, str) or options is None or qtype is None:
        return None
    if qtype == "multiple-choice" and len(options) < 2:
        return None
    valid, answer = _answer(row.get("answer"), qtype, letters_of(options))
    if not valid:
        return None
    images = {n: parquet_image(row.get(f"image_{n}")) for n in range(1, MAX_IMAGES + 1)}
    q = MMMUQuestion(qid, match.group(2), question, options, answer, qtype, {n: d for n, d in images.items() if d})
    q.image = q.images.get(q.image_number)
    return q


def load_mmmu(path: str | Path, split: str = "validation", limit: int | None = None, skip_multi_image: bool = True):
    """An MMMU split from the authors' per-subject parquet folders or lmms-lab's: a QuestionSet of the questions
    asked and scored (`limit`: a fixed subset stratified by subject, taken before questions naming several images
    are left out when `skip_multi_image`)."""
    files = split_files(Path(path), split)
    counts = dict.fromkeys(("malformed_questions", "duplicate_questions", "missing_images", "multi_image"), 0)
    questions: list[MMMUQuestion] = []
    doc_rows: list[QuestionId | None] = []
    seen: set[str] = set()
    rows, _ = parquet_rows(files, split, REQUIRED_COLUMNS, f"MMMU's columns {list(REQUIRED_COLUMNS)}", batch_size=64)
    for row in rows:
        q = parse_row(row)
        doc_rows.append(q.id if q is not None else None)
        counts["malformed_questions"] += q is None
        counts["duplicate_questions"] += q is not None and q.id in seen
        if q is not None and q.id not in seen:
            seen.add(q.id)
            questions.append(q)
    questions = fixed_subset(questions, limit, key=lambda q: q.subject)
    counts["multi_image"] = sum(q.multi_image for q in questions)
    counts["missing_images"] = sum(q.image is None for q in questions)
    asked = [q for q in questions if not (skip_multi_image and q.multi_image)]
    counts["unannotated"] = sum(q.answer is None for q in asked)
    # lmms-eval names MMMU samples only by doc_id, the row of lmms-lab's one split: known for that layout alone.
    single = len({f.parent for f in files}) == 1 and files[0].parent.name not in DISCIPLINE_OF
    info = {"skipped_multi_image": len(questions) - len(asked)}
    return QuestionSet(str(path), asked, counts, split, doc_rows=doc_rows if single else None, info=info)


def mmmu_prompt(q: MMMUQuestion, layout: str = "llava") -> str:
    """The question text in lmms-eval's mmmu_val layout (`llava`, `lmms_eval`) or the MMMU repo's (`mmmu`)."""
    letters = letters_of(q.options)
    if layout in ("llava", "lmms_eval"):
        if q.question_type == "open":
            return f"{q.question}\n\n{SHORT_ANSWER_PROMPT}"
        options = "\n".join(f"{letter}. {option}" for letter, option in zip(letters, q.options))
        return f"{q.question}\n{options}\n\n{LETTER_ANSWER_PROMPT}"
    if layout == "mmmu":  # configs/llava1.5.yaml "{}\n{}\nAnswer..." with the options as "(A) opt\n" lines
        if q.question_type == "open":
            return f"{q.question}\n{SHORT_ANSWER_PROMPT}"
        options = "".join(f"({letter}) {option}\n" for letter, option in zip(letters, q.options))
        return f"{q.question}\n{options}\n{LETTER_ANSWER_PROMPT}"
    raise UserError(f"unknown MMMU prompt layout '{layout}' (expected llava, lmms_eval or mmmu)")


@dataclass
class MMMUConfig(BenchConfig):
    parquet: str | None = field(
        default=None, metadata={"help": "MMMU/MMMU (<Subject>/validation-*.parquet), lmms-lab/MMMU or one file"}
    )
    split: str = field(default="validation", metadata={"help": "file-name prefix of the split (default: validation)"})
    prompt: Literal["llava", "lmms_eval", "mmmu"] = field(
        default="llava", metadata={"help": "llava = lmms_eval: lmms-eval's mmmu_val; mmmu: MMMU's run_llava.py"}
    )
    multi_image: Literal["skip", "first"] = field(
        default="skip", metadata={"help": "questions naming several images: skip (not scored) or first (image_1)"}
    )


@register
class MMMU(Benchmark):
    """MMMU: one image per question (several-image questions skipped or shown image_1), MMMU's rule-based scoring."""

    name = "mmmu"
    description = "MMMU (val): accuracy per discipline and subject, MMMU's rule-based parsing; lmms-eval's prompt"
    Config = MMMUConfig
    published = {"superclass_table11": 36.0}
    folder = "MMMU"
    files = "the MMMU/MMMU hub dataset (<Subject>/validation-*.parquet) or lmms-lab/MMMU (data/validation-*.parquet)"
    rules = ("official", "lmms_eval")
    max_new_tokens = 128  # lmms-eval's mmmu_val (_default_template_yaml) and MMMU's run_llava.py
    max_new_tokens_help = "default: 128, as lmms-eval's mmmu_val and MMMU's run_llava.py"

    def load(self) -> QuestionSet:
        cfg = self.config
        if cfg.parquet is None:
            raise UserError("mmmu needs --parquet (the MMMU/MMMU or lmms-lab/MMMU parquet files)")
        return load_mmmu(cfg.parquet, cfg.split, cfg.limit, cfg.multi_image == "skip")

    def prompt(self, item: MMMUQuestion) -> str:
        return mmmu_prompt(item, self.config.prompt)

    def metrics(self, answers: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        if not any(q.answer is not None for q in self.questions):
            return None
        return score_mmmu(self.questions, answers, self.config.rule)

    def describe_extra(self) -> dict[str, Any]:
        return {"multi_image": self.config.multi_image, "guess_seed": GUESS_SEED}

    def submission(self, out_dir: Path, answers: Mapping[QuestionId, str]) -> dict[str, str]:
        """`submission.json` ({id: answer}, MMMU's EvalAI format) for a split without answers (test)."""
        if any(q.answer is not None for q in self.questions):
            return {}
        path = out_dir / "submission.json"
        write_text_atomically(path, json.dumps(submission(self.questions, answers, self.config.rule)) + "\n")
        return {"submission": str(path)}

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        """ROOT/MMMU holding MMMU/MMMU's subject folders or lmms-lab's data/ folder of validation shards."""
        found = next(folder.rglob("validation-*.parquet"), None)
        return {"parquet": str(folder), "split": "validation"} if found is not None else None

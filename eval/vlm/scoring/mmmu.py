"""MMMU's rule-based answer parsing, API-free: how a generated answer is read as a letter or an open answer.

Ported from MMMU-Benchmark/MMMU mmmu/utils/eval_utils.py (`parse_multi_choice_response`, `parse_open_response` with
`extract_numbers` / `normalize_str` / `check_is_number` / `get_key_subresponses`, `eval_multi_choice`, `eval_open`;
the same code is in lmms_eval/tasks/mmmu/utils.py):
- `rule="official"`: those functions. A letter that cannot be read is a random choice, as the official code does
  (`random.seed(42)` at import, then `random.choice`): the caller passes one `random.Random(GUESS_SEED)` stream and
  draws in the official order (subjects alphabetically, then file order), so a score is deterministic.
- `rule="lmms_eval"`: lmms-eval 0.7's letter reading (lmms_eval/tasks/_task_utils/mmmu_mcq_utils.py
  `parse_mmmu_multi_choice_response`): "B " without the leading space, then "B." before the option texts.
The six disciplines are MMMU's DOMAIN_CAT2SUB_CAT (mmmu/utils/data_utils.py) under the paper's names. `score_mmmu`
and `submission` read questions with `id`, `subject`, `options`, `answer` (None: unannotated) and `question_type`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from eval.vlm.scoring.common import check_rule, percent

GUESS_SEED = 42  # eval_utils.py: random.seed(42) at import, then random.choice for every unreadable letter
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


def letters_of(options: Sequence[str]) -> list[str]:
    """The option letters A, B, ... of `options`."""
    return [chr(ord("A") + i) for i in range(len(options))]


def parse_multi_choice(
    response: str, options: Sequence[str], rng: random.Random, rule: str = "official"
) -> tuple[str, bool]:
    """(letter, guessed): MMMU's `parse_multi_choice_response`; `guessed` when nothing was read and the letter is
    `rng`'s random choice. `rule="lmms_eval"`: lmms-eval 0.7's variant (see the module docstring)."""
    check_rule(rule)
    letters = letters_of(options)
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


def _table(tally: dict[str, list[int]], order: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    names = [n for n in order if n in tally] if order is not None else sorted(tally)
    return {n: {"accuracy": percent(*tally[n]), "num_questions": tally[n][1]} for n in names}


def official_order(questions: Sequence[Any]) -> list[Any]:
    """Subjects alphabetically (MMMU's CAT_SHORT2LONG order), then file order: the order the official scripts parse
    in, so the random guesses are drawn in the same sequence."""
    return sorted(questions, key=lambda q: q.subject)


def score_mmmu(questions: Sequence[Any], predictions: Mapping[Any, str], rule: str = "official") -> dict[str, Any]:
    """Accuracy (percent) overall, per discipline, per subject and per question type; random guesses counted."""
    rng = random.Random(GUESS_SEED)
    tallies: dict[str, dict[str, list[int]]] = {"discipline": {}, "subject": {}, "type": {}}
    hits = total = missing = guesses = 0
    for q in official_order([q for q in questions if q.answer is not None]):
        pred = predictions.get(q.id)
        right = guessed = False
        if pred is not None and q.question_type == "multiple-choice":
            letter, guessed = parse_multi_choice(pred, q.options, rng, rule)
            right = eval_multi_choice(q.answer, letter)
        elif pred is not None:
            right = eval_open(q.answer, parse_open(pred))
        hits, total, missing, guesses = hits + right, total + 1, missing + (pred is None), guesses + guessed
        keys = {"discipline": DISCIPLINE_OF.get(q.subject), "subject": q.subject, "type": q.question_type}
        for kind, name in ((k, n) for k, n in keys.items() if n is not None):
            cell = tallies[kind].setdefault(name, [0, 0])
            cell[0], cell[1] = cell[0] + right, cell[1] + 1
    ids = {q.id for q in questions}
    return {
        "accuracy": percent(hits, total),
        "num_questions": total,
        "per_discipline": _table(tallies["discipline"], list(DISCIPLINES)),
        "per_subject": _table(tallies["subject"]),
        "per_question_type": _table(tallies["type"], ["multiple-choice", "open"]),
        "random_guesses": guesses,
        "missing_predictions": missing,
        "unknown_predictions": sum(1 for i in predictions if i not in ids),
    }


def submission(questions: Sequence[Any], predictions: Mapping[Any, str], rule: str = "official") -> dict[str, str]:
    """MMMU's test submission {id: answer}: the letter read (or guessed) for multiple choice, the text for open."""
    rng = random.Random(GUESS_SEED)
    out = {}
    for q in official_order(questions):
        pred = predictions.get(q.id, "")
        out[q.id] = parse_multi_choice(pred, q.options, rng, rule)[0] if q.question_type != "open" else pred.strip()
    return out

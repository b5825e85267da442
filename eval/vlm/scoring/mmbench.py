"""MMBench: the option letter read from a free-text answer, by this project's rule and by lmms-eval's.

- `extract_choice` (rule `official`; MMBench's own evaluator asks GPT, so no API-free official reading exists): letters
  first, then one option's text; an answer it cannot read, or one that names several letters ("B, C", "A or B"), is
  read as no letter (wrong, counted `unparsed`).
- `lmms_eval_choice` (rule `lmms_eval`): lmms-eval's `mmbench_en_dev_static` (EvolvingLMMs-Lab/lmms-eval 75571cfe):
  `mmbench_process_results` strips the answer; `MMBench_Evaluator.eval_sub_data(static_only=True)` in
  tasks/mmbench/mmbench_evals.py takes `prefetch_answer` (= `can_infer`: `can_infer_option`, else `can_infer_text`)
  and, where it reads nothing, `extract_mcq_answer` of tasks/_task_utils/mcq_extract.py with the question's letters.
  That last step picks one letter from hedges: "A or B" is A (a leading letter outranks a trailing one), "The answer
  is A or B" is B. CircularEval is the same in both: a question counts when every copy is read right.
`score_mmbench` reads rows with `id` (a copy's: index + k * CIRCULAR_OFFSET), `base`, `options`, `answer` (None:
unannotated), `category` and `l2_category`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from eval.vlm.ids import CIRCULAR_OFFSET, LETTERS
from eval.vlm.scoring.common import grouped_percent, percent

_WRAPPED_LETTER = re.compile(r"[(\[]?([A-E])[)\]]?[.:,)]?")
_STATED_LETTER = re.compile(r"\b(?i:answer|option|choice)\b(?:\s+(?i:is))?\s*[:\-]?\s*[(\[]?([A-E])\b(?![-'])")
_LEADING_LETTER = re.compile(r"[(\[]?([A-E])(?:[)\]]|[.:,])")
_TOKEN_FORMS = ("{}", "{}.", "{},", "{}:", "{})", "{}).", "({})", "({}).", ":{}", "[{}]")
_CONNECTORS = {"or", "and", "nor", "vs", "vs.", "versus", "/", "&"}


def _letter_tokens(text: str, letters: str) -> str | None:
    """lmms-eval's `can_infer_option`, loosely: exactly one letter written as a word or a punctuated token."""
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


# ------------------------------------------------------------------------------------------- lmms-eval's reading
# can_infer_option's punctuated forms (prefix, suffix), tried in this order after the bare letter
_LMMS_FORMS = (("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."), (":", ""), (":", ","),
               (":", "."), (":", ")"), (":", ")."))  # fmt: skip
# extract_mcq_answer's _ANSWER_PHRASES (English, Korean, Chinese, Japanese) and _FORMAT_PRIORITY
_MCQ_PHRASES = ("the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
                "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
                "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select",
                "i pick", "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选",
                "答えは")  # fmt: skip
_MCQ_FORMS = (("parentheses", "({})"), ("period", "{}."), ("colon", "{}:"), ("right_paren", "{})"), ("space", "{} "))
_MCQ_PRIORITY = {"start": 10, "end": 9, "phrase": 7, "parentheses": 6, "period": 5, "colon": 4, "right_paren": 3,
                 "space": 2, "fallback": 0}  # fmt: skip


def lmms_infer_option(answer: str) -> str | None:
    """`can_infer_option`: the one letter of A-E that the answer's words hold bare, else in one punctuated form (the
    first form that holds exactly one); a bare "A" among more than 3 words is skipped as a quantifier."""
    if "Failed to obtain answer via API" in answer:
        return None
    words = answer.split()
    for prefix, suffix in (("", ""), *_LMMS_FORMS):
        found = [c for c in "ABCDE" if prefix + c + suffix in words]
        if len(found) == 1 and not (not prefix + suffix and "A" in words and len(words) > 3):
            return found[0]
    return None


def lmms_infer_text(answer: str, options: Sequence[str]) -> str | None:
    """`can_infer_text`: the one option (A-D, as `build_choices` takes them) whose lower-cased text is a substring
    of the lower-cased answer."""
    found = [LETTERS[i] for i, option in enumerate(options[:4]) if str(option).lower() in answer.lower()]
    return found[0] if len(found) == 1 else None


def lmms_extract_mcq(response: str, letters: Sequence[str]) -> str:
    """`extract_mcq_answer`: every letter found in a known form (its last position), ranked by the form's priority
    then position; a leading letter beats a trailing one, which beats "the answer is X"; "" when none is found."""
    if not response.strip():
        return ""
    text = response.strip()
    for char in ",.!?;:'\"":
        text = text.strip(char)
    text = f" {text} "
    found = [
        (c, text.rfind(form.format(c)), name) for name, form in _MCQ_FORMS for c in letters if form.format(c) in text
    ]
    lower = text.lower()
    for phrase in _MCQ_PHRASES:
        at = lower.find(phrase)
        if at != -1:
            found += [(c, text.find(c, at + len(phrase)), "phrase") for c in letters if c in text[at + len(phrase) :]]
    bare = text.strip()
    found += [(c, 0, "start") for c in letters if bare.startswith(c) and (len(bare) == 1 or not bare[1].isalpha())]
    found += [
        (c, len(text) - 1, "end") for c in letters if bare.endswith(c) and (len(bare) == 1 or not bare[-2].isalpha())
    ]
    if not found:
        found = [(c, text.rfind(c), "fallback") for c in letters if c in text]
    if not found:
        return ""
    found.sort(key=lambda hit: (_MCQ_PRIORITY[hit[2]], hit[1]), reverse=True)
    return found[0][0]


def lmms_eval_choice(text: str, options: Sequence[str]) -> str | None:
    """The letter lmms-eval's mmbench_en_dev_static reads from an answer (None when it reads none)."""
    answer = text.strip()
    letter = lmms_infer_option(answer) or lmms_infer_text(answer, options)
    return letter or lmms_extract_mcq(answer, sorted(LETTERS[: min(len(options), 4)])) or None


def score_mmbench(
    rows: Sequence[Any], predictions: Mapping[int, str], circular: str, rule: str = "official"
) -> dict[str, Any]:
    """CircularEval accuracy (percent) overall, per category and l2-category; single-pass accuracy beside it."""
    read = lmms_eval_choice if rule == "lmms_eval" else extract_choice
    missing = unparsed = 0
    groups: dict[int, tuple[Any, bool]] = {}
    single = [0, 0]
    for row in sorted(rows, key=lambda r: r.id):
        if row.answer is None:
            continue
        pred = predictions.get(row.id)
        letter = read(pred, row.options) if pred is not None else None
        missing += pred is None
        unparsed += pred is not None and letter is None
        right = letter == row.answer
        main, hit = groups.get(row.base, (row, True))
        groups[row.base] = (main, hit and right)
        if row.id < CIRCULAR_OFFSET:
            single[0] += right
            single[1] += 1
    ids = {r.id for r in rows}
    return {
        "accuracy": percent(sum(hit for _, hit in groups.values()), len(groups)),
        "accuracy_single_pass": percent(*single),
        "circular": circular,
        "num_questions": len(groups),
        "num_rows": sum(1 for r in rows if r.answer is not None),
        "per_category": grouped_percent(([m.category], hit) for m, hit in groups.values()),
        "per_l2_category": grouped_percent(
            ([m.l2_category] if m.l2_category is not None else [], h) for m, h in groups.values()
        ),
        "missing_predictions": missing,
        "unparsed": unparsed,
        "unknown_predictions": sum(1 for i in predictions if i not in ids),
    }

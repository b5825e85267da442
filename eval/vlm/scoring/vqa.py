"""The VQA accuracy: a port of the official `vqaEval.py` (GT-Vision-Lab/VQA @ a013f00) and its two common variants.

Per question, acc = mean over the GT answers g of min(1, #(other GTs == prediction) / 3): the "10 choose 9"
leave-one-out average, so exactly 1, 2, 3 matching annotators give 0.3, 0.6, 0.9 and 4 or more give 1.0.
Normalisation modes (`NORMALIZATIONS`, described in one line each in `NORMALIZATION_RULES`):
- `official`: the score EvalAI gives the answer we submit. The prediction first goes through `evalai_normalize`,
  as our (and LLaVA's) submission file writes it; then the official rule: strip \\n, \\t and surrounding spaces,
  and only when the GT answers are not all identical apply `process_punctuation` then `process_digit_article` to
  the GTs and the prediction (unanimous GTs compare raw, case-sensitive). So "Yes" against ten "yes" scores 1,
  as it does on EvalAI; the raw official script would give 0.
- `always`: the two steps on prediction and GTs for every question: exactly lmms-eval's `vqav2_val` since 0.4
  (PR #760; 0 differences from lmms-eval 0.7.3 in 20,000 fuzzed cases). lmms-eval up to 0.3 ran the full EvalAI
  processor on the prediction first, so its old scores differ on capitals, ',' '?' and "'s" against unanimous GTs.
- `evalai`: the full `EvalAIAnswerProcessor` (LLaVA's m4c_evaluator / mmf): lower-case, drop ',' and '?',
  split "'s", then both steps, on prediction and GTs always; LLaVA's TextVQA scorer and its VQAv2 submission
  converter use it.
Scores are aggregated as the official code does: percent, rounded to 2 decimals, overall and per answer type
and question type.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NORMALIZATIONS = ("official", "always", "evalai")
NORMALIZATION_RULES = {
    "official": "prediction as submitted to EvalAI (evalai_normalize), then the official vqaEval.py rule: "
    "punctuation and digit/article processing of prediction and GTs only when the GT answers disagree",
    "always": "punctuation and digit/article processing of prediction and GTs on every question (lmms-eval >= 0.4)",
    "evalai": "the full EvalAI answer processor on prediction and GTs on every question (LLaVA's m4c scorer)",
}

# fmt: off
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
# fmt: on
MANUAL_MAP: dict[str, str] = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}  # fmt: skip
ARTICLES = ("a", "an", "the")
PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
# `(?!<=\d)` is the official code's typo for a look-behind; as written it is an empty look-ahead, so a period is
# dropped whenever no digit follows it: "3.5" keeps it, "dog." and "5." lose it. Kept as is for fidelity.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
EVALAI_COMMA_STRIP = re.compile(r"(?<=\d)(\,)+(?=\d)")  # mmf's form; it matches the same texts


def process_punctuation(text: str, comma_strip: re.Pattern[str] = COMMA_STRIP) -> str:
    """The official `processPunctuation`: drop a mark next to a space (or any when "d,d" occurs), else space it."""
    out = text
    drop_all = comma_strip.search(text) is not None
    for p in PUNCT:
        if drop_all or p + " " in text or " " + p in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The official call passes `re.UNICODE` (32) positionally, i.e. as `count`: at most 32 periods go.
    return PERIOD_STRIP.sub("", out, count=int(re.UNICODE))


def process_digit_article(text: str) -> str:
    """The official `processDigitArticle`: lower-case, number words to digits, drop articles, fix contractions."""
    words = [MANUAL_MAP.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def _strip_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def official_normalize(text: str) -> str:
    """`process_punctuation` then `process_digit_article`, as the official code applies them."""
    return process_digit_article(process_punctuation(_strip_whitespace(text)))


def evalai_normalize(text: str) -> str:
    """mmf's `EvalAIAnswerProcessor` (LLaVA's m4c_evaluator): word_tokenize, then the two official steps."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = _strip_whitespace(text)
    return process_digit_article(process_punctuation(text, EVALAI_COMMA_STRIP))


def check_normalization(mode: str) -> str:
    """`mode` if it is one of NORMALIZATIONS, else a ValueError naming the choices."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown VQA normalization '{mode}' (expected one of {list(NORMALIZATIONS)})")
    return mode


def vqa_accuracy(prediction: str, answers: Sequence[str], normalize: str = "official") -> float:
    """One question's soft accuracy in [0, 1]: the leave-one-out mean of min(1, matches among the others / 3).

    In `official` mode the prediction is scored as submitted (`evalai_normalize`d), as EvalAI receives it.
    """
    check_normalization(normalize)
    if not answers:
        raise ValueError("a VQA question needs at least one ground-truth answer")
    pred, gts = _strip_whitespace(prediction), [_strip_whitespace(a) for a in answers]
    if normalize == "official":  # what the submission holds, so the local score is the server's
        pred = evalai_normalize(pred)
    if normalize == "evalai":
        pred, gts = evalai_normalize(pred), [evalai_normalize(g) for g in gts]
    elif normalize == "always" or len(set(gts)) > 1:
        pred, gts = official_normalize(pred), [official_normalize(g) for g in gts]
    matches = sum(g == pred for g in gts)
    # Leaving out a matching GT leaves matches - 1 among the others; leaving out any other GT leaves all of them.
    return sum(min(1.0, (matches - (g == pred)) / 3.0) for g in gts) / len(gts)


def _percent(values: Sequence[float], digits: int) -> float | None:
    return round(100.0 * sum(values) / len(values), digits) if values else None


@dataclass(frozen=True)
class ScoredQuestion:
    """One scored question: its accuracy in [0, 1] and the official breakdown keys (None where a set has none)."""

    accuracy: float
    answer_type: str | None = None
    question_type: str | None = None


def aggregate(scored: Iterable[ScoredQuestion], digits: int = 2) -> dict[str, object]:
    """Overall, per-answer-type and per-question-type accuracy in percent, rounded as the official `setAccuracy`."""
    accs: list[float] = []
    by_answer: dict[str, list[float]] = {}
    by_question: dict[str, list[float]] = {}
    for s in scored:
        accs.append(s.accuracy)
        if s.answer_type is not None:
            by_answer.setdefault(s.answer_type, []).append(s.accuracy)
        if s.question_type is not None:
            by_question.setdefault(s.question_type, []).append(s.accuracy)
    return {
        "accuracy": _percent(accs, digits),
        "num_scored": len(accs),
        "per_answer_type": {k: _percent(v, digits) for k, v in sorted(by_answer.items())},
        "per_question_type": {k: _percent(v, digits) for k, v in sorted(by_question.items())},
    }

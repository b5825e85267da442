"""ScienceQA: the letter of a free-text answer read by LLaVA's rule (or lmms-eval's), and accuracy with its breakdowns.

Rules. `official`: LLaVA's llava/eval/eval_science_qa.py (`llava_letter`, its three rules, then the answer's letter).
`lmms_eval`: lmms-eval's tasks/scienceqa/utils.py `sqa_process_results` (`lmms_eval_right`). No prediction is wrong
(eval_science_qa.py's "FAILED" also leaves the IMG-Accuracy denominator; here it stays, counted). Accuracy in percent,
overall and, as lupantech/ScienceQA's tools/evaluate_acc.py, per subject, context (TXT: a hint, IMG: an image, NO:
neither) and grade band (G1-6, G7-12). `score_scienceqa` reads problems with `id`, `choices`, `answer` (an index;
None: unannotated), `subject`, `contexts` and `grade_band`.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from eval.vlm.scoring.common import percent

OPTIONS = "ABCDE"  # eval_science_qa.py's --options
SUBJECTS = ("natural science", "social science", "language science")
GRADE_BANDS = {"G1-6": range(1, 7), "G7-12": range(7, 13)}
CONTEXTS = ("TXT", "IMG", "NO")
METRIC_RULES = {
    "official": "LLaVA eval_science_qa.py: the answer is a letter when it is exactly 'A'..'E', starts with "
    "'<letter>. ', or has exactly one 'The answer is <letter>.'; right when that letter is the answer's",
    "lmms_eval": "lmms-eval sqa_process_results: the stripped answer is the letter (any case), or starts with an "
    "upper-case letter and '.' that is the answer's",
}
_STATED = re.compile(r"The answer is ([A-Z]).")  # eval_science_qa.py's pattern, its "." matching any character


def llava_letter(text: str) -> str | None:
    """The letter LLaVA's eval_science_qa.py reads from an answer, or None (its "FAILED"): the whole answer is one of
    A-E; it starts with "<A-E>. "; "The answer is <A-Z>" and any character occur exactly once. Nothing stripped."""
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


def _right(problem: Any, pred: str | None, rule: str) -> bool:
    if pred is None or problem.answer is None:
        return False
    if rule == "lmms_eval":
        return lmms_eval_right(pred, problem.answer)
    letter = llava_letter(pred)
    return letter is not None and letter in OPTIONS[: len(problem.choices)] and OPTIONS.index(letter) == problem.answer


def score_scienceqa(
    problems: Sequence[Any], predictions: Mapping[Hashable, str], rule: str = "official"
) -> dict[str, Any]:
    """Accuracy (percent) by `rule`, overall and per subject, context modality and grade band; unannotated left out."""
    names = {"subject": SUBJECTS, "context": CONTEXTS, "grade": tuple(GRADE_BANDS)}
    groups = {kind: {name: [0, 0] for name in kind_names} for kind, kind_names in names.items()}
    hits = total = missing = unparsed = 0
    for p in (p for p in problems if p.answer is not None):
        pred = predictions.get(p.id)
        right = _right(p, pred, rule)
        missing += pred is None
        unparsed += pred is not None and llava_letter(pred) is None
        hits, total = hits + right, total + 1
        keys = {"subject": [p.subject] if p.subject else [], "context": p.contexts, "grade": [p.grade_band]}
        for kind, names in keys.items():
            for name in (n for n in names if n is not None):
                tally = groups[kind].setdefault(name, [0, 0])
                tally[0], tally[1] = tally[0] + right, tally[1] + 1
    per = {kind: {k: percent(*v) for k, v in tallies.items()} for kind, tallies in groups.items()}
    out = {"accuracy": percent(hits, total), "num_questions": total}
    out.update(per_subject=per["subject"], per_context=per["context"], per_grade=per["grade"])
    out.update(missing_predictions=missing, metric_rule=METRIC_RULES[rule])
    return {**out, "unparsed": unparsed} if rule == "official" else out

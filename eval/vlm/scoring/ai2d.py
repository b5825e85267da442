"""AI2D test: the row mapping of AI2's question files and lmms-lab's parquet, the option prompt, and accuracy.

Metric. AI2D (Kembhavi et al., "A Diagram Is Worth A Dozen Images", ECCV 2016) scores multiple-choice accuracy: the
share of questions whose chosen option is `correctAnswer`. AI2 publishes data only (allenai ai2d-all.zip), no scorer
of generated text, so a rule must read the option from the model's text:
- `rule="official"` (this project's reading, the paper's accuracy): the stripped text is a single letter, either case,
  optionally in parentheses and/or followed by "." ("b", "(B)", "B."), or it starts with an upper-case letter and a
  delimiter, then white space and more text ("(B) the moon", "B. the moon", "B) the moon", "B: the moon"). A bare
  "A cat ..." is not read as option A. A letter beyond the question's options reads as no choice.
- `rule="lmms_eval"`: lmms-eval's ai2d task (EvolvingLMMs-Lab/lmms-eval 75571cfe, tasks/ai2d/ai2d.yaml and
  utils.py): the `MultiChoiceRegexFilter` keeps the letter of `^\\s*([A-Z])\\.` when the raw text matches it, else the
  whole text; `Task.process_results` strips it; `exact_match` with ignore_case and ignore_punctuation (Python's
  `string.punctuation` removed) compares it with the answer's letter. So "(b)" and "B)" are right there, "B the moon"
  and "The answer is B" are not.
A question with no prediction, or no letter read, is wrong. Accuracy is in percent, overall and per category when the
questions carry one (AI2's categories.json, e.g. "lifeCycles"; the parquet has none).

Files (AI2 ai2d-all.zip, from ai2-public-datasets.s3.amazonaws.com/diagrams/): `ai2d/questions/<imageName>.json`
(e.g. `0.png.json`), one per diagram: `{"imageName": "0.png", "questions": {"<question text>": {"abcLabel": bool,
"answerTexts": [4 options], "correctAnswer": <index>, "questionId": "0.png-0"}}}`; images `ai2d/images/<imageName>`;
`ai2d/annotations/<imageName>.json` (same file name) holds the text boxes and their `replacementText` letters;
`ai2d/categories.json` maps imageName to a category. The test split is the diagrams whose id (imageName before the first
".") is listed in `ai2d_test_ids.csv` (one id a line; s3-us-east-2.amazonaws.com/prior-datasets/, as
google-research/big_vision datasets/ai2d/ai2d.py uses it). For `abcLabel` questions the image shown has each text box
painted over with its replacementText (big_vision's `_draw_text`); lmms-lab/ai2d ships such images (lmms-eval's
`ai2d_no_mask` task is the unmasked variant). A question's id is its `questionId`; `from_official(file, category)`
maps one question file.
lmms-lab/ai2d parquet (split `test`, 3088 rows; built by lmms-eval's tasks/ai2d/upload_ai2d.py from those files,
restricted to the question ids of Qwen-VL's ai2diagram test.jsonl): columns `question`, `options` (list of str),
`answer` (the index as a string, "0".."3"), `image` (`{"bytes", "path"}`). The rows carry no questionId: a row's id is
its row index, lmms-eval's `doc_id`, so parquet and official ids differ (lmms-eval's README counts 3088 rows).
Question dicts: `id`, `question`, `image` (imageName, or the parquet struct), `choices` (list of str), `answer` (the
correct index; None when the row has none: unannotated), `category` (or None), and from AI2's files `abc_label`.

Prompt (`build_prompt`): lmms-eval's default `mcq` layout, the setting LLaVA-NeXT reports AI2D with:
`"{question}\\nA. {option}\\nB. {option}...\\nAnswer with the option's letter from the given choices directly."`.

Published LLaVA-1.5-7B: none found with a citable source: the LLaVA-1.5 paper does not report AI2D, and lmms-eval's
LLaVA-1.5 results sit in a Google Sheet its README links (not readable here). So `PUBLISHED` is empty.
"""

from __future__ import annotations

import re
import string
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from eval.vlm.scoring.common import annotated, check_rule, grouped_percent, percent, prediction_of, text_field
from vlm.templates import LETTER_ANSWER_PROMPT

# lmms-eval tasks/ai2d/ai2d.yaml default post_prompt (75571cfe), which is LLaVA's LETTER_ANSWER_PROMPT
LMMS_EVAL_POST_PROMPT = "\n" + LETTER_ANSWER_PROMPT
LETTERS = string.ascii_uppercase
PARQUET_COLUMNS = ("question", "options", "answer", "image")
PUBLISHED: dict[str, float] = {}

_ALONE = re.compile(r"\(?([A-Za-z])\)?\.?")  # the whole answer is one letter: "B", "b.", "(B)"
_LEADING = re.compile(r"(?:\(([A-Z])\)|([A-Z])[.):])\s")  # "(B) text", "B. text", "B) text", "B: text"
_LMMS_FILTER = re.compile(r"^\s*([A-Z])\.")  # lmms-eval ai2d MultiChoiceRegexFilter
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def build_prompt(question: str, choices: Sequence[str]) -> str:
    """lmms-eval's multiple-choice layout: the question, one "X. option" line per choice, the letter instruction."""
    lines = "\n".join(f"{LETTERS[i]}. {choice}" for i, choice in enumerate(choices))
    return f"{question}\n{lines}{LMMS_EVAL_POST_PROMPT}"


def _answer_index(value: Any, n: int) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        return None
    return value


def _question(qid: Any, question: Any, choices: Any, answer: Any, image: Any) -> dict[str, Any] | None:
    if not isinstance(question, str) or not question.strip() or image is None:
        return None
    if not isinstance(choices, (list, tuple)) or not 2 <= len(choices) <= len(LETTERS):
        return None
    if not all(isinstance(c, str) for c in choices):
        return None
    index = _answer_index(answer, len(choices))
    if index is None and answer is not None:
        return None  # no answer at all: a question without gold (answer None)
    return {"id": qid, "question": question, "image": image, "choices": list(choices), "answer": index}


def from_official(question_file: Mapping[str, Any], category: str | None = None) -> list[dict[str, Any] | None]:
    """The questions of one AI2 question file (ids: questionId); None for a malformed question or file."""
    image, questions = text_field(question_file, "imageName"), question_file.get("questions")
    if image is None or not isinstance(questions, Mapping):
        return [None]
    out: list[dict[str, Any] | None] = []
    for text, entry in questions.items():
        item = None
        if isinstance(entry, Mapping) and text_field(entry, "questionId"):
            item = _question(entry["questionId"], text, entry.get("answerTexts"), entry.get("correctAnswer"), image)
        if item is not None:
            item.update(abc_label=bool(entry.get("abcLabel")), category=category)
        out.append(item)
    return out


def from_parquet_row(row: Mapping[str, Any], index: int) -> dict[str, Any] | None:
    """One lmms-lab/ai2d row (its `index` is the id, lmms-eval's doc_id); None when malformed."""
    options = row.get("options")
    options = list(options) if isinstance(options, (list, tuple)) else options
    item = _question(index, row.get("question"), options, row.get("answer"), row.get("image"))
    if item is not None:
        item["category"] = None
    return item


def ai2d_choice(prediction: str | None, num_choices: int, rule: str = "official") -> int | None:
    """The option index a prediction names under `rule`, or None when it names none of the first `num_choices`."""
    check_rule(rule)
    if prediction is None:
        return None
    if rule == "lmms_eval":
        match = _LMMS_FILTER.match(prediction)
        text = (match.group(1) if match else prediction).strip().lower().translate(_PUNCTUATION)
        letter = text.upper() if len(text) == 1 else None
    else:
        text = prediction.strip()
        alone, leading = _ALONE.fullmatch(text), _LEADING.match(text)
        letter = alone.group(1).upper() if alone else (leading.group(1) or leading.group(2)) if leading else None
    index = LETTERS.find(letter) if letter and len(letter) == 1 else -1  # "ß".upper() is "SS"
    return index if 0 <= index < num_choices else None


def correct(prediction: str | None, question: Mapping[str, Any], rule: str = "official") -> bool:
    """Whether the prediction names the question's answer."""
    return ai2d_choice(prediction, len(question["choices"]), rule) == question["answer"]


def score(
    questions: Sequence[Mapping[str, Any]], predictions: Mapping[Hashable, str], rule: str = "official"
) -> dict[str, Any]:
    """Accuracy in percent, overall and per category, with the count of predictions naming no option, over the
    questions with an answer."""
    check_rule(rule)
    questions = annotated(questions, "answer")
    rows = []
    for q in questions:
        prediction = prediction_of(predictions, q["id"])
        choice = ai2d_choice(prediction, len(q["choices"]), rule)
        rows.append((q, prediction, choice == q["answer"], choice is None))
    categorised = [([q["category"]], float(ok)) for q, _, ok, _ in rows if q.get("category")]
    return {
        "accuracy": percent(sum(ok for _, _, ok, _ in rows), len(rows)),
        "accuracy_by_category": grouped_percent(categorised),
        "questions": len(rows),
        "missing_predictions": sum(p is None for _, p, _, _ in rows),
        "no_choice_read": sum(p is not None and unread for _, p, _, unread in rows),
        "rule": rule,
    }

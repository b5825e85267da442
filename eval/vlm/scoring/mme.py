"""MME: a yes/no answer read as the official eval_tool/calculation.py (or lmms-eval) reads it; acc and acc+ scores.

Rules: `official`: calculation.py `parse_pred_ans`; `lmms_eval`: lmms_eval/tasks/mme/utils.py `parse_pred_ans` (also
strips, drops ".", reads "y"/"n"). Per subtask acc, acc+ (images with both questions right) and score = 100 acc +
100 acc+; `perception` sums the 10 perception scores, `cognition` the 4 others. A missing prediction is "other".
`score_mme` reads questions with `id`, `subtask`, `image_id` and `truth` (the lower-cased official answer).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from eval.vlm.scoring.common import percent

# calculation.py's eval_type_dict, in its order
MME_SUBTASKS = {
    "perception": (
        "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
    ),
    "cognition": ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning"),
}  # fmt: skip
SUBTASK_GROUP = {name: group for group, names in MME_SUBTASKS.items() for name in names}
ANSWER_RULE = ("MME eval_tool/calculation.py parse_pred_ans on the lower-cased answer: exactly yes/no, else 'yes' in "
               "its first 4 characters -> yes, else 'no' in them -> no, else other (wrong)")  # fmt: skip
LMMS_RULE = "lmms-eval mme parse_pred_ans: lower, strip, '.' removed; yes/no, y/n, else the first-4-characters test"


def mme_answer(text: str, rule: str = "official") -> str:
    """The answer read as yes, no or other: calculation.py's `parse_pred_ans`, or lmms-eval's (`rule`)."""
    text = text.lower().strip().replace(".", "") if rule == "lmms_eval" else text.lower()
    if text in ("yes", "no"):
        return text
    if rule == "lmms_eval" and len(text) == 1:
        return {"y": "yes", "n": "no"}.get(text, "other")
    prefix = text[:4]
    return "yes" if "yes" in prefix else "no" if "no" in prefix else "other"


def score_mme(items: Sequence[Any], predictions: Mapping[Hashable, str], rule: str = "official") -> dict[str, Any]:
    """Per subtask acc, acc+ and score (= 100 acc + 100 acc+), and the perception and cognition totals."""
    said = {i.id: "other" if predictions.get(i.id) is None else mme_answer(predictions[i.id], rule) for i in items}
    per_subtask: dict[str, dict[str, Any]] = {}
    totals: dict[str, float | None] = dict.fromkeys(MME_SUBTASKS)
    for name, group in SUBTASK_GROUP.items():
        mine, images = [item for item in items if item.subtask == name], {}
        for item in mine:
            images[item.image_id] = images.get(item.image_id, True) and said[item.id] == item.truth
        if not mine:
            continue
        acc, acc_plus = sum(said[i.id] == i.truth for i in mine) / len(mine), sum(images.values()) / len(images)
        score = 100 * acc + 100 * acc_plus
        totals[group] = (totals[group] or 0.0) + score
        per_subtask[name] = {"accuracy": percent(acc, 1), "accuracy_plus": percent(acc_plus, 1),
                             "score": round(score, 2), "group": group, "questions": len(mine), "images": len(images),
                             "other": sum(said[i.id] == "other" for i in mine),
                             "missing": sum(predictions.get(i.id) is None for i in mine)}  # fmt: skip
    ids = {item.id for item in items}
    return {
        "perception": round(totals["perception"], 2) if totals["perception"] is not None else None,
        "cognition": round(totals["cognition"], 2) if totals["cognition"] is not None else None,
        "total": round(sum(v for v in totals.values() if v is not None), 2),
        "accuracy": percent(sum(said[i.id] == i.truth for i in items), len(items)),
        "num_questions": len(items),
        "num_images": sum(t["images"] for t in per_subtask.values()),
        "subtasks_scored": len(per_subtask),
        "per_subtask": per_subtask,
        "missing_predictions": sum(t["missing"] for t in per_subtask.values()),
        "other_answers": sum(t["other"] for t in per_subtask.values()),
        "answer_rule": ANSWER_RULE if rule == "official" else LMMS_RULE,
        "unknown_predictions": sum(1 for q in predictions if q not in ids),
    }

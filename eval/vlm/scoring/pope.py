"""POPE: a yes/no answer read by POPE's rule (or lmms-eval's), and the per-split and pooled binary metrics.

Rule `official` (POPE's evaluate.py = LLaVA's eval_pope.py per split): "no" when the first sentence, commas removed,
split on spaces, has "No", "not" or "no", else "yes"; per split accuracy, precision, recall, F1 of "yes", yes-ratio;
headline `f1_mean` (LLaVA-1.5's, F1 averaged over splits); a missing prediction is wrong; 0/0 gives 0. Rule
`lmms_eval` (lmms_eval/tasks/pope/utils.py pope_process_results, pope_aggregate_*): lower-cased and stripped, the
answer must be exactly yes or no (else wrong, and in neither precision nor recall); `lmms_eval_pooled` holds
lmms-eval's pooled numbers (its yes_ratio is the ground truth's). `score_pope` reads questions with `id`, `split` and
`label` ("yes" | "no").
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from eval.vlm.scoring.common import percent

SPLITS = ("adversarial", "popular", "random")
ANSWER_RULE = (
    "POPE evaluate.py / LLaVA eval_pope.py: first sentence (before the first '.'), commas removed, split on ' '; "
    "'No', 'not' or 'no' among the words -> no, else yes"
)
LMMS_RULE = "lmms-eval pope_process_results: answer.lower().strip() must equal yes or no; else wrong"


def pope_answer(text: str, rule: str = "official") -> str:
    """A free-text answer read as yes or no by POPE's rule; lmms-eval's: exactly yes or no, else "other"."""
    if rule == "lmms_eval":
        said = text.lower().strip()
        return said if said in ("yes", "no") else "other"
    words = text.split(".")[0].replace(",", "").split(" ")  # only the first sentence
    return "no" if "No" in words or "not" in words or "no" in words else "yes"


def binary_metrics(tp: int, fp: int, tn: int, fn: int, n: int | None = None) -> dict[str, float]:
    """Accuracy, precision, recall, F1 (of "yes") and the ratio of "yes" answers, as fractions; 0 for 0/0. `n`:
    the questions when some answers were neither yes nor no (lmms-eval's rule)."""
    n = tp + fp + tn + fn if n is None else n
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    yes = (tp + fp) / n if n else 0.0
    return {
        "accuracy": (tp + tn) / n if n else 0.0,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": yes,
    }


def _confusion(items: Sequence[Any], predictions: Mapping[Hashable, str], rule: str) -> dict[str, int]:
    """tp/fp/tn/fn of "yes", missing predictions and `n`, every question (lmms-eval's "other" answers: in n only)."""
    c = {"tp": 0, "fp": 0, "tn": 0, "fn": 0, "missing": 0, "n": len(items)}
    for item in items:
        pred = predictions.get(item.id)
        c["missing"] += pred is None
        wrong = "no" if item.label == "yes" else "yes"
        said = pope_answer(pred, rule) if pred is not None else (wrong if rule == "official" else "other")
        if said != "other":
            c[("t" if said == item.label else "f") + ("p" if said == "yes" else "n")] += 1
    return c


def score_pope(items: Sequence[Any], predictions: Mapping[Hashable, str], splits: Sequence[str] = SPLITS,
               rule: str = "official") -> dict[str, Any]:  # fmt: skip
    """Per split confusion counts and metrics (percent), the mean F1 over the splits and the pooled accuracy."""
    per_split, f1s = {}, []
    for split in dict.fromkeys(splits):
        c = _confusion([item for item in items if item.split == split], predictions, rule)
        if c["n"]:
            m = binary_metrics(c["tp"], c["fp"], c["tn"], c["fn"], c["n"])
            f1s.append(m["f1"])
            counts = {k: v for k, v in c.items() if k != "n"}
            per_split[split] = {**{k: percent(v, 1) for k, v in m.items()}, "questions": c["n"], **counts}
    pooled = _confusion(items, predictions, rule)
    ids = {item.id for item in items}
    out = {
        "f1_mean": percent(sum(f1s) / len(f1s), 1) if f1s else None,
        "accuracy": percent((pooled["tp"] + pooled["tn"]) / len(items), 1) if items else None,
        "num_questions": len(items),
        "per_split": per_split,
        "missing_predictions": pooled["missing"],
        "answer_rule": ANSWER_RULE if rule == "official" else LMMS_RULE,
        "unknown_predictions": sum(1 for q in predictions if q not in ids),
    }
    if rule == "lmms_eval":  # lmms-eval's pope task: every row pooled, yes_ratio of the ground truth
        m = binary_metrics(pooled["tp"], pooled["fp"], pooled["tn"], pooled["fn"], pooled["n"])
        m["yes_ratio"] = sum(item.label == "yes" for item in items) / len(items) if items else 0.0
        out["lmms_eval_pooled"] = {k: percent(v, 1) for k, v in m.items()}
    return out

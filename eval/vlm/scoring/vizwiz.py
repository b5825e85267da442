"""VizWiz-VQA: one answer's VQA accuracy as the VizWiz API's vqaEval.py (or lmms-eval) computes it, and the scores.

Rules. `official`: the VQA accuracy of the VizWiz API's vqaEval.py (vizwiz.org; a copy: TRI-ML/vlm-evaluation
vlm_eval/util/evaluation/vizwiz/eval.py) on the answer as submitted (LLaVA's scripts/convert_vizwiz_for_submission.py
applies the EvalAI processor): the prediction's punctuation and digit/article processing (`eval.vlm.scoring.vqa`),
compared with the raw annotator answers; acc = mean over the 10 leave-one-out subsets of min(1, matches / 3),
percent, overall and per answer type. `lmms_eval`: vizwiz_vqa_process_results, the EvalAI processor on the
prediction and every annotator answer, then the same formula. `score_vizwiz` reads questions with `id`, `answers`
(the annotators' strings; None: unannotated) and `answer_type`. Pure, like `eval.vlm.scoring.vqa` it builds on.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from eval.vlm.scoring.vqa import ScoredQuestion, aggregate, evalai_normalize, official_normalize, vqa_accuracy

RULE_TEXT = {
    "official": "prediction as submitted (EvalAI processor), then VizWiz vqaEval.py: punctuation and digit/article "
    "processing of the prediction only, compared with the raw annotator answers",
    "lmms_eval": "lmms-eval's vizwiz_vqa: the EvalAI processor on the prediction and every annotator answer",
}


def vizwiz_accuracy(prediction: str, answers: list[str], rule: str = "official") -> float:
    """One question's VQA accuracy in [0, 1] under the VizWiz API's rule (or lmms-eval's; see the module docstring)."""
    if rule == "lmms_eval":
        return vqa_accuracy(prediction, answers, "evalai")
    if rule != "official":
        raise ValueError(f"unknown VizWiz rule '{rule}' (expected one of {list(RULE_TEXT)})")
    if not answers:
        raise ValueError("a VizWiz question needs at least one annotator answer")
    pred = official_normalize(evalai_normalize(prediction))  # the submitted answer, as vqaEval.py processes it
    # The leave-one-out average of vqa_metric.vqa_accuracy, against the raw answers (which vqa_accuracy would
    # process): leaving out a matching answer leaves matches - 1 among the other nine.
    matches = sum(a == pred for a in answers)
    return sum(min(1.0, (matches - (a == pred)) / 3.0) for a in answers) / len(answers)


def score_vizwiz(items: Sequence[Any], predictions: Mapping[Hashable, str], rule: str = "official") -> dict[str, Any]:
    """VQA accuracy (percent) overall and per answer type over the annotated questions."""
    scored, missing = [], 0
    for item in items:
        if item.answers is None:
            continue
        pred = predictions.get(item.id)
        missing += pred is None
        scored.append(ScoredQuestion(vizwiz_accuracy(pred or "", item.answers, rule), item.answer_type))
    result = aggregate(scored)
    result.pop("per_question_type")
    ids = {item.id for item in items}
    unknown = sum(1 for qid in predictions if qid not in ids)
    return {**result, "num_questions": len(items), "missing_predictions": missing, "unknown_predictions": unknown}

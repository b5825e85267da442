"""The benchmark base: one evaluator interface for every VLM benchmark, in big_vision's manner, and its runner.

A benchmark builds generation requests (question text in LLaVA-1.5's `vicuna_v1` prompt, one `<image>`, a lazy
image loader) and scores a predictions mapping (question id -> answer text). `run_benchmark` hands the requests
to `eval.vlm.generation.generate_answers` (resumable `predictions.jsonl`, refused when `predictions.meta.json` says it
was made differently) and writes `metrics.json` (with image errors and generation counts) and the submission
files; `score_predictions` does the second half from an answer file of ours, of the LLaVA repo or of lmms-eval
(`eval.vlm.answers.read_answers` tells them apart). Both go through `finish`, which refuses predictions that
cannot be right: none of them for a question of the set is a one-line DataError; some questions without one, or
predictions for no question, are a warning with the counts.

max_new_tokens: 16 by default, lmms-eval's VQAv2 setting. LLaVA allows 128 (VQAv2, TextVQA) and 1024
(MMBench), lmms-eval 1024 for MMBench and the model's default (1024 for llava/llava_hf) for TextVQA; but a model
asked for "a single word or phrase" or "the option's letter directly" stops long before 16 tokens, and a longer
ramble would at best be parsed the same. Pass --max-new-tokens to match them exactly.
"""

from __future__ import annotations

import dataclasses
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.vlm.answers import QuestionIndex, read_answers
from eval.vlm.generation import Request, generate_answers
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.predictions import answers_of
from pretrain.runtime.distributed import rank_world
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.results import write_metrics
from vlm.templates import generation_prompt

DEFAULT_MAX_NEW_TOKENS = 16
BENCHMARK_TEMPLATES = ("vicuna_v1",)


def check_template(template: str) -> str:
    """`template` if benchmarks can be asked in it; `plain` (stage 1) is refused: its prompt is the bare image."""
    if template == "plain":
        raise UserError(
            "--template plain: a stage-1 prompt is the bare image, without the question; benchmarks need "
            f"one of {list(BENCHMARK_TEMPLATES)}"
        )
    if template not in BENCHMARK_TEMPLATES:
        raise UserError(f"--template {template!r}: expected one of {list(BENCHMARK_TEMPLATES)}")
    return template


@dataclass(frozen=True)
class PromptItem:
    """One question as a benchmark asks it: id, question text (no chat template yet) and a lazy image loader."""

    id: QuestionId
    text: str
    image: Callable[[], Any]


class VLMBenchmark(ABC):
    """The evaluator interface: questions to generate answers for, and scores and files from the answers."""

    name: str
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS

    @abstractmethod
    def prompt_items(self) -> list[PromptItem]:
        """The questions that can be run (those with an image), in file order."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What metrics.json records about the set and the protocol (split, prompt layout, skipped rows)."""

    @abstractmethod
    def score(self, predictions: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        """Metrics of `predictions`, or None when the set has no ground truth (a test split)."""

    @abstractmethod
    def write_outputs(self, out_dir: Path, predictions: Mapping[QuestionId, str]) -> dict[str, str]:
        """Submission files written into `out_dir` (name -> path); none when there is nothing to submit."""

    @abstractmethod
    def question_index(self) -> QuestionIndex:
        """Every question id (and how other tools' answer files name the questions), for matching predictions."""

    def requests(self, template: str = "vicuna_v1", max_new_tokens: int | None = None) -> list[Any]:
        """`eval.vlm.generation.Request`s: each question in the model's chat template with one `<image>`."""
        check_template(template)
        limit = max_new_tokens or self.max_new_tokens
        return [
            Request(
                id=p.id, prompt=generation_prompt(p.text, template, image=True), image=p.image, max_new_tokens=limit
            )
            for p in self.prompt_items()
        ]


def check_coverage(bench: VLMBenchmark, predictions: Mapping[QuestionId, str], source: str) -> dict[str, int]:
    """Counts of questions and predictions matched; a DataError when none matches, a warning line when some miss."""
    ids = set(bench.question_index().ids)
    matched = sum(1 for qid in predictions if qid in ids)
    counts = {"questions": len(ids), "predictions": len(predictions), "matched": matched}
    counts.update(missing=len(ids) - matched, unknown=len(predictions) - matched)
    if not predictions:
        raise DataError(f"{source}: no predictions in it (expected answers to the {len(ids)} {bench.name} questions)")
    if not matched:
        examples = ", ".join(repr(q) for q in list(predictions)[:3])
        known = ", ".join(repr(q) for q in list(bench.question_index().ids)[:3])
        raise DataError(
            f"{source}: none of its {len(predictions)} predictions is for one of the {len(ids)} {bench.name} "
            f"questions (its ids: {examples}, ...; the questions': {known}, ...); is it for another benchmark or split?"
        )
    notes = []
    if counts["missing"]:
        notes.append(f"{counts['missing']} of {len(ids)} questions have no prediction (counted wrong)")
    if counts["unknown"]:
        notes.append(f"{counts['unknown']} of {len(predictions)} predictions are for no question of the set (ignored)")
    if notes:
        print(f"warning: {source}: {'; '.join(notes)}", file=sys.stderr)
    return counts


def finish(
    bench: VLMBenchmark,
    predictions: Mapping[QuestionId, str],
    out_dir: str | Path,
    extra: dict[str, Any],
    source: str = "predictions",
) -> dict[str, Any]:
    """Check the predictions match the questions (`check_coverage`, naming `source`), score, write the submission
    files and `metrics.json` (accuracy null on a test split); the metrics."""
    coverage = check_coverage(bench, predictions, source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {**bench.describe(), **extra, "coverage": coverage}
    scores = bench.score(predictions)
    metrics["scored"] = scores is not None
    metrics.update(scores if scores is not None else {"accuracy": None, "num_predictions": len(predictions)})
    metrics["files"] = bench.write_outputs(out_dir, predictions)
    write_metrics(out_dir, metrics)
    return metrics


def score_predictions(bench: VLMBenchmark, predictions: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Score an answer file (ours, LLaVA's or lmms-eval's; `eval.vlm.answers`) into `out_dir`; image-error rows
    count as missing."""
    rows, stats = read_answers(predictions, bench.question_index())
    return finish(bench, answers_of(rows), out_dir, {"predictions": stats}, source=str(predictions))


def _is_main_rank() -> bool:
    return rank_world()[0] == 0


def run_benchmark(
    bench: VLMBenchmark, model_dir: str | Path, out_dir: str | Path, cfg: Any, template: str = "vicuna_v1"
) -> dict[str, Any] | None:
    """Generate (resumably) into out_dir/predictions.jsonl, then score on rank 0; other ranks return None.

    A rerun refuses predictions made with another model, template, prompt layout, max_new_tokens or dtype
    (`predictions.meta.json`); questions whose image failed to load are retried, and scored as missing.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    requests = bench.requests(template, cfg.max_new_tokens)
    signature = {"benchmark": bench.name, "template": template, "prompt": bench.describe()["prompt"]}
    answers, stats = generate_answers(model_dir, requests, out_dir / "predictions.jsonl", cfg, signature=signature)
    if not _is_main_rank():
        return None
    extra = {
        "model": str(model_dir),
        "template": template,
        "max_new_tokens": cfg.max_new_tokens or bench.max_new_tokens,
        "num_requests": len(requests),
        "image_errors": stats.failed,
        "generation": {**dataclasses.asdict(stats), "questions_per_s": round(stats.questions_per_s, 3)},
        "predictions": {"path": str(out_dir / "predictions.jsonl"), "rows": len(answers)},
    }
    answers = {norm_id(k): v for k, v in answers.items()}
    return finish(bench, answers, out_dir, extra, source=str(out_dir / "predictions.jsonl"))

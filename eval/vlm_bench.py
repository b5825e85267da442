"""VLM benchmarks (VQAv2, TextVQA, MMBench) behind one evaluator interface, in big_vision's manner.

A benchmark builds generation requests (question text in LLaVA-1.5's `vicuna_v1` prompt, one `<image>`, a lazy
image loader) and scores a predictions mapping (question id -> answer text). `run_benchmark` hands the requests
to `eval.generation.generate_answers` (resumable `predictions.jsonl`, refused when `predictions.meta.json` says it
was made differently) and writes `metrics.json` (with image errors and generation counts) and the submission
files; `score_predictions` does the second half from an answer file of ours, of the LLaVA repo or of lmms-eval
(`eval.answer_files.read_answers` tells them apart). Both go through `finish`, which refuses predictions that
cannot be right: none of them for a question of the set is a one-line DataError; some questions without one, or
predictions for no question, are a warning with the counts.

max_new_tokens: 16 for all three by default, lmms-eval's VQAv2 setting. LLaVA allows 128 (VQAv2, TextVQA) and 1024
(MMBench), lmms-eval 1024 for MMBench and the model's default (1024 for llava/llava_hf) for TextVQA; but a model
asked for "a single word or phrase" or "the option's letter directly" stops long before 16 tokens, and a longer
ramble would at best be parsed the same. Pass --max-new-tokens to match them exactly.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.answer_files import QuestionIndex
from eval.mmbench import MMBENCH_PROMPTS, MMBenchSet, load_mmbench, mmbench_prompt, score_mmbench, submission_rows
from eval.vqa_data import (
    TEXTVQA_PROMPTS,
    QuestionId,
    VQASet,
    load_parquet,
    load_textvqa,
    load_vqav2,
    norm_id,
    question_prompt,
    score_vqa,
)
from eval.vqa_data import submission_rows as vqa_submission_rows
from eval.vqa_metric import NORMALIZATION_RULES, check_normalization
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.results import write_metrics

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
        """`eval.generation.Request`s: each question in the model's chat template with one `<image>`."""
        from eval.generation import Request
        from vlm.templates import generation_prompt

        check_template(template)
        limit = max_new_tokens or self.max_new_tokens
        return [
            Request(
                id=p.id, prompt=generation_prompt(p.text, template, image=True), image=p.image, max_new_tokens=limit
            )
            for p in self.prompt_items()
        ]


class VQABenchmark(VLMBenchmark):
    """VQAv2 or TextVQA: soft VQA accuracy (official / always / evalai normalisation); EvalAI JSON for test."""

    def __init__(self, vset: VQASet, normalize: str = "official", prompt: str = "llava") -> None:
        self.vset, self.normalize, self.prompt = vset, check_normalization(normalize), prompt
        self.name = vset.name
        if vset.name == "textvqa" and prompt not in TEXTVQA_PROMPTS:
            raise UserError(f"unknown TextVQA prompt layout '{prompt}' (expected one of {list(TEXTVQA_PROMPTS)})")

    def prompt_items(self) -> list[PromptItem]:
        return [
            PromptItem(item.question_id, question_prompt(self.vset, item, self.prompt), item.load_image)
            for item in self.vset.items
            if item.image is not None
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "split": self.vset.split,
            "source": self.vset.source,
            "prompt": self.prompt if self.name == "textvqa" else "short_answer",
            "question_format": self.vset.format,
            "normalization": self.normalize,
            "normalization_rule": NORMALIZATION_RULES[self.normalize],
            "num_questions": len(self.vset.items),
            "data_counts": dict(self.vset.counts),
        }

    def score(self, predictions: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        return score_vqa(self.vset, predictions, self.normalize) if self.vset.has_answers else None

    def write_outputs(self, out_dir: Path, predictions: Mapping[QuestionId, str]) -> dict[str, str]:
        """`submission.json` for a test split (no answers or a `test*` subtype), padded with "" as LLaVA does."""
        if self.vset.has_answers and not self.vset.split.startswith("test"):
            return {}
        rows, empty = vqa_submission_rows(self.vset, predictions)
        path = out_dir / "submission.json"
        write_text_atomically(path, json.dumps(rows) + "\n")
        return {"submission": str(path), "submission_empty_answers": str(empty)}

    def question_index(self) -> QuestionIndex:
        by_image_question: dict[tuple[str, str], list[QuestionId]] | None = None
        if self.name == "textvqa":
            by_image_question = {}
            for item in self.vset.items:
                key = (str(item.image_id), item.question.lower())
                by_image_question.setdefault(key, []).append(item.question_id)
        ids = [item.question_id for item in self.vset.items]
        return QuestionIndex(ids, self.vset.doc_ids, by_image_question)


class MMBenchBenchmark(VLMBenchmark):
    """MMBench: CircularEval accuracy from letters read without an API; OpenCompass submission TSV (and xlsx)."""

    name = "mmbench"

    def __init__(self, mset: MMBenchSet, prompt: str = "llava") -> None:
        if prompt not in MMBENCH_PROMPTS:
            raise UserError(f"unknown MMBench prompt layout '{prompt}' (expected one of {list(MMBENCH_PROMPTS)})")
        self.mset, self.prompt = mset, prompt

    def prompt_items(self) -> list[PromptItem]:
        return [
            PromptItem(r.index, mmbench_prompt(r, self.prompt), r.load_image) for r in self.mset.rows if r.image_b64
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "split": next((r.split for r in self.mset.rows if r.split), "unknown"),
            "source": self.mset.source,
            "prompt": self.prompt,
            "circular": self.mset.circular,
            "num_questions": len({r.base for r in self.mset.rows}),
            "data_counts": dict(self.mset.counts),
        }

    def score(self, predictions: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        if not self.mset.has_answers:
            return None
        return score_mmbench(self.mset, {k: v for k, v in predictions.items() if isinstance(k, int)})

    def write_outputs(self, out_dir: Path, predictions: Mapping[QuestionId, str]) -> dict[str, str]:
        """`submission.tsv` always, `submission.xlsx` too when openpyxl is importable."""
        from eval.mmbench import write_submission

        rows = submission_rows(self.mset, {k: v for k, v in predictions.items() if isinstance(k, int)})
        files = {"submission_tsv": str(write_submission(out_dir / "submission.tsv", rows))}
        try:
            import openpyxl  # noqa: F401
        except ImportError:
            return files
        files["submission_xlsx"] = str(write_submission(out_dir / "submission.xlsx", rows))
        return files

    def question_index(self) -> QuestionIndex:
        return QuestionIndex([r.index for r in self.mset.rows])


def vqav2_benchmark(
    questions: str | Path | None = None,
    annotations: str | Path | None = None,
    image_root: str | Path | None = None,
    normalize: str = "official",
    limit: int | None = None,
    parquet: str | Path | None = None,
    split: str | None = None,
) -> VQABenchmark:
    """VQAv2 from the official JSON files or LLaVA's question JSONL (or an lmms-lab parquet file or folder; `split`
    picks a folder's shards)."""
    if parquet is not None:
        return VQABenchmark(load_parquet(parquet, "vqav2", limit, split), normalize)
    if questions is None:
        raise UserError("VQAv2 needs --questions (the official question JSON or LLaVA's question JSONL) or --parquet")
    return VQABenchmark(load_vqav2(questions, annotations, image_root, limit), normalize)


def textvqa_benchmark(
    data: str | Path | None = None,
    image_root: str | Path | None = None,
    prompt: str = "llava",
    normalize: str = "evalai",
    limit: int | None = None,
    parquet: str | Path | None = None,
    split: str | None = None,
    annotations: str | Path | None = None,
) -> VQABenchmark:
    """TextVQA from the official JSON, LLaVA's question JSONL (with the official JSON as `annotations`) or an lmms-lab
    parquet; LLaVA's OCR-token prompt unless `lmms_eval`."""
    if parquet is not None:
        return VQABenchmark(load_parquet(parquet, "textvqa", limit, split), normalize, prompt)
    if data is None:
        raise UserError("TextVQA needs --data (TextVQA_0.5.1_val.json or LLaVA's question JSONL) or --parquet")
    return VQABenchmark(load_textvqa(data, image_root, limit, annotations), normalize, prompt)


def mmbench_benchmark(
    tsv: str | Path, prompt: str = "llava", circular: str = "auto", limit: int | None = None
) -> MMBenchBenchmark:
    """MMBench from its official TSV."""
    return MMBenchBenchmark(load_mmbench(tsv, circular, limit), prompt)


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
    """Score an answer file (ours, LLaVA's or lmms-eval's; `eval.answer_files`) into `out_dir`; image-error rows
    count as missing."""
    from eval.answer_files import read_answers
    from eval.generation import answers_of

    rows, stats = read_answers(predictions, bench.question_index())
    return finish(bench, answers_of(rows), out_dir, {"predictions": stats}, source=str(predictions))


def _is_main_rank() -> bool:
    from pretrain.runtime.distributed import rank_world

    return rank_world()[0] == 0


def run_benchmark(
    bench: VLMBenchmark, model_dir: str | Path, out_dir: str | Path, cfg: Any, template: str = "vicuna_v1"
) -> dict[str, Any] | None:
    """Generate (resumably) into out_dir/predictions.jsonl, then score on rank 0; other ranks return None.

    A rerun refuses predictions made with another model, template, prompt layout, max_new_tokens or dtype
    (`predictions.meta.json`); questions whose image failed to load are retried, and scored as missing.
    """
    from eval.generation import generate_answers

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

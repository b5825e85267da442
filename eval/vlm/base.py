"""The benchmark base: every VLM benchmark is one small class on it, and an evaluator of the runtime's registry.

A benchmark supplies what is truly its own (big_vision's evaluators, lmms-eval's task utils):
- `name`, `headline`, `published` numbers, `folder`/`files` (its layout under a suite's data root), `rules`;
- a typed `Config` (a dataclass extending `BenchConfig`: its files, prompt layout, split; the CLI flags, `eval run
  NAME key=value`, recipes' `run.evals` and suites all fill it);
- `load(images)` -> a `QuestionSet`, `prompt(question)`, `metrics(answers)`, optionally `submission(...)` and
  `suite_config(folder)`.
The base supplies the rest: the fixed `--limit` subset, requests in the chat template, resumable generation
(`eval.vlm.generation`), reading answer files of ours, LLaVA's and lmms-eval's (`eval.vlm.answers`), the input
policy (`eval.vlm.policy`), scoring, `describe`, metrics.json and the Evaluator `run`.

max_new_tokens: 16 by default, lmms-eval's VQAv2 setting: a model asked for "a single word or phrase" or "the
option's letter directly" stops long before; pass --max-new-tokens to match another tool's larger cap exactly.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from eval.vlm.answers import QuestionIndex, read_answers
from eval.vlm.generation import GenerationConfig, Request, generate_answers
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.policy import apply_leniency, check_coverage, input_counts, warn
from eval.vlm.predictions import answers_of
from eval.vlm.subset import fixed_subset
from eval.vlm.synthetic_benchmarks import write_synthetic_benchmark
from pretrain.runtime.distributed import rank_world
from pretrain.runtime.errors import ConfigError, UserError
from pretrain.runtime.evaluators import Evaluator
from pretrain.runtime.results import write_metrics
from vlm.templates import generation_prompt

DEFAULT_MAX_NEW_TOKENS = 16
BENCHMARK_TEMPLATES = ("vicuna_v1",)
RULES = ("official", "lmms_eval")
GENERATION = {"generation": True}  # a run-only setting, read from the generation flags (`eval.vlm.flags`)


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


@dataclass
class BenchConfig:
    """Settings every benchmark has; a benchmark's `Config` adds its files and layouts (each field's `help` is its
    flag's help)."""

    limit: int | None = field(
        default=None, metadata={"help": "a fixed subset of N questions: the same every run (seeded), stratified"}
    )
    rule: str = field(
        default="official",
        metadata={"help": "scoring rule: official (the benchmark's own script) or lmms_eval (to reproduce lmms-eval)"},
    )
    strip_answers: bool = field(
        default=False, metadata={"help": "lenient: strip whitespace around answers first (the official scripts do not)"}
    )
    batch_size: int = field(default=32, metadata=GENERATION)
    max_new_tokens: int | None = field(default=None, metadata=GENERATION)  # None: the benchmark's own
    device: str = field(default="auto", metadata=GENERATION)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = field(default="auto", metadata=GENERATION)
    backend: Literal["hf", "vllm"] = field(default="hf", metadata=GENERATION)
    template: str = field(default="vicuna_v1", metadata=GENERATION)
    synthetic: int = field(default=0, metadata={"cli": False})  # N > 0: N held-out synthetic images instead of files


@dataclass
class QuestionSet:
    """A benchmark's questions (each with an `id`, an `image` or None, and what its metric reads), where they came
    from, and what the loader skipped (`counts`: malformed_questions, duplicate_questions, unannotated, ...)."""

    source: str
    items: list[Any]
    counts: dict[str, int]
    split: str = "unknown"
    format: str = "official"
    doc_rows: list[QuestionId | None] | None = None  # parquet: each row's id (lmms-eval's doc_id), None if skipped
    info: dict[str, Any] = field(default_factory=dict)  # more of what describe() records (e.g. MMBench's circular)


@dataclass(frozen=True)
class PromptItem:
    """One question as a benchmark asks it: id, question text (no chat template yet) and a lazy image loader."""

    id: QuestionId
    text: str
    image: Callable[[], Any]


class Benchmark(Evaluator):
    """A VLM benchmark: a LLaVA directory in, answers (predictions.jsonl) and metrics.json out."""

    consumes = "llava"
    Config: ClassVar[type] = BenchConfig
    published: ClassVar[dict[str, float]] = {}  # {"superclass_table11": .., "llava15_7b": ..}
    folder: ClassVar[str] = ""  # its folder under a suite's --data-root
    files: ClassVar[str] = ""  # where its files come from (README, `missing` rows of a suite)
    rules: ClassVar[tuple[str, ...]] = ("official",)  # + "lmms_eval" where lmms-eval scores it differently
    suites: ClassVar[tuple[str, ...]] = ()  # suites it joins beyond the lists in eval.vlm.registry.SUITES
    max_new_tokens: ClassVar[int] = DEFAULT_MAX_NEW_TOKENS
    max_new_tokens_help: ClassVar[str] = "default: 16, ample for the short answer or letter asked for"
    prompt_layout: ClassVar[str] = "llava"  # the `prompt` recorded when the Config has no `prompt` setting

    def __init__(self, config: Any, images: bool = True) -> None:
        super().__init__(config)
        self.images = images  # run reads images; score does not
        self._qset: QuestionSet | None = None
        if config.limit is not None and config.limit < 1:
            raise ConfigError(f"{self.name}: limit {config.limit}: expected a positive number of questions")
        if config.rule not in self.rules:
            raise ConfigError(f"{self.name}: rule {config.rule!r}: expected one of {list(self.rules)}")

    @classmethod
    def of(cls, images: bool = True, **settings: Any) -> Benchmark:
        """The benchmark with its Config built from keyword settings (as `eval run NAME key=value` takes them)."""
        return cls(cls.Config(**settings), images=images)

    # ---------------------------------------------------------------- what a benchmark supplies
    @abstractmethod
    def load(self) -> QuestionSet:
        """Every question of the configured files (images looked up when `self.images`), with skip counts."""

    @abstractmethod
    def prompt(self, item: Any) -> str:
        """The question text of `item` as the benchmark asks it (the chat template is added by the base)."""

    @abstractmethod
    def metrics(self, answers: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        """Metrics of `answers` over `self.questions` (a missing one is wrong), or None without gold (a test split)."""

    def submission(self, out_dir: Path, answers: Mapping[QuestionId, str]) -> dict[str, str]:
        """Files to upload (name -> path) written into `out_dir`; none by default."""
        return {}

    def category(self, item: Any) -> Any:
        """What `--limit` stratifies by (None: a plain seeded sample)."""
        return None

    def subset(self, items: list[Any]) -> list[Any]:
        """The `--limit` subset of `items` (all without a limit): the same every run, stratified by `category`, in
        file order. A loader takes it before it looks up images, so that counts describe the questions asked."""
        key = None if not items or self.category(items[0]) is None else self.category
        return fixed_subset(items, self.config.limit, key=key)

    def describe_extra(self) -> dict[str, Any]:
        """More of what metrics.json records about the protocol (e.g. a normalisation)."""
        return {}

    def question_index(self) -> QuestionIndex:
        """How answer files may name the questions (their ids; lmms-eval's doc_id rows)."""
        return QuestionIndex([item.id for item in self.questions], self.question_set.doc_rows)

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        """Config values for the files under a suite's `ROOT/<folder>`, or None when they are not there."""
        return None

    # ---------------------------------------------------------------- what the base supplies
    @property
    def layout(self) -> str:
        """The prompt layout metrics.json and predictions.meta.json record (a rerun in another is refused)."""
        return getattr(self.config, "prompt", None) or self.prompt_layout

    @property
    def question_set(self) -> QuestionSet:
        """The loaded set (loaded once)."""
        if self._qset is None:
            self._qset = self.load()
        return self._qset

    @property
    def questions(self) -> list[Any]:
        return self.question_set.items

    def describe(self) -> dict[str, Any]:
        """What metrics.json records about the set and the protocol."""
        qset = self.question_set
        out = {"benchmark": self.name, "split": qset.split, "source": qset.source, "prompt": self.layout}
        out.update(question_format=qset.format, rule=self.config.rule, num_questions=len(self.questions))
        out.update(data_counts=dict(qset.counts), **qset.info)
        return {**out, **self.describe_extra()}

    def prompt_items(self) -> list[PromptItem]:
        """The questions asked (those with an image), in file order, as the benchmark words them."""
        return [
            PromptItem(item.id, self.prompt(item), item.load_image) for item in self.questions if item.image is not None
        ]

    def requests(self) -> list[Request]:
        """Each question asked, in the model's chat template with one `<image>`."""
        template = check_template(self.config.template)
        limit = self.config.max_new_tokens or self.max_new_tokens
        return [
            Request(p.id, generation_prompt(p.text, template, image=True), p.image, limit) for p in self.prompt_items()
        ]

    def finish(self, answers: Mapping[QuestionId, str], out_dir: Path, extra: dict, stats: Mapping) -> dict:
        """Apply the input policy, score, write the submission files and metrics.json; the metrics."""
        source = str(stats.get("path", out_dir / "predictions.jsonl"))
        ids = [item.id for item in self.questions]
        coverage = check_coverage(self.name, ids, answers, source)
        counts = input_counts(coverage, stats, self.question_set.counts)
        coverage.update(missing=counts["missing_predictions"], unknown=counts["unknown_ids"])
        if counts["unannotated"] >= len(ids):  # a test split: a submission, not a partly unannotated set
            counts["unannotated"] = 0
        warn(source, counts, coverage)
        answers = apply_leniency(answers, self.config.strip_answers)
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics = {**self.describe(), **extra, "coverage": coverage, "input": counts}
        if self.config.strip_answers:
            metrics["leniency"] = {"strip_answers": True}
        scores = self.metrics(answers)
        metrics["scored"] = scores is not None
        metrics.update(scores if scores is not None else {self.headline: None, "num_predictions": len(answers)})
        metrics["files"] = self.submission(out_dir, answers)
        write_metrics(out_dir, metrics)
        return metrics

    def score(self, predictions: str | Path, out_dir: str | Path) -> dict[str, Any]:
        """Score an answer file (ours, LLaVA's or lmms-eval's) into `out_dir`; image-error rows count as missing."""
        rows, stats = read_answers(predictions, self.question_index())
        return self.finish(answers_of(rows), Path(out_dir), {"predictions": stats}, stats)

    def generate(self, model: str | Path, out_dir: str | Path, progress: bool = True) -> dict[str, Any] | None:
        """Answer (resumably, into out_dir/predictions.jsonl), then score on rank 0; other ranks return None.

        A rerun refuses predictions made with another model, template, prompt layout, max_new_tokens or dtype
        (`predictions.meta.json`); questions whose image failed to load are retried, and scored as missing.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.config
        gen = GenerationConfig(
            batch_size=cfg.batch_size,
            max_new_tokens=cfg.max_new_tokens or self.max_new_tokens,
            device=cfg.device,
            dtype=cfg.precision,
            backend=cfg.backend,
            progress=progress,
        )
        requests = self.requests()
        signature = {"benchmark": self.name, "template": cfg.template, "prompt": self.layout}
        path = out_dir / "predictions.jsonl"
        answers, stats = generate_answers(model, requests, path, gen, signature=signature)
        if rank_world()[0] != 0:
            return None
        extra = {
            "model": str(model),
            "template": cfg.template,
            "max_new_tokens": gen.max_new_tokens,
            "num_requests": len(requests),
            "image_errors": stats.failed,
            "generation": {**dataclasses.asdict(stats), "questions_per_s": round(stats.questions_per_s, 3)},
            "predictions": {"path": str(path), "rows": len(answers)},
        }
        answers = {norm_id(k): v for k, v in answers.items()}
        return self.finish(answers, out_dir, extra, {"path": str(path)})

    def run(self, model: str | Path, out_dir: str | Path) -> dict[str, Any]:
        """The Evaluator entry (`eval run NAME`, a recipe's `run.evals`): generate and score, quietly; with
        `synthetic=N`, on N held-out synthetic images written in the benchmark's own format."""
        if self.config.synthetic:
            files = write_synthetic_benchmark(self.name, Path(out_dir) / "data", self.config.synthetic)
            self.config = dataclasses.replace(self.config, **{k: str(v) for k, v in files.items()})
            self._qset = None
        return self.generate(model, out_dir, progress=False) or {}

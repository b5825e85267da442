"""OCRBench (Liu et al., "On the Hidden Mystery of OCR in Large Multimodal Models", 2023): the authors' OCRBench.json
or the echo840/OCRBench parquet lmms-eval reads, scored by the authors' per-dataset matching rules and the 1000-point
total (`eval.vlm.scoring.ocrbench`, which cites Yuliang-Liu/MultimodalOCR's scripts).

usage: superclass eval ocrbench run --model DIR --questions OCRBench.json --image-root OCRBench_Images --out OUT
       superclass eval ocrbench score --parquet OCRBench/data --predictions P.jsonl --out OUT [--rule lmms_eval]

Files. MultimodalOCR's `OCRBench/OCRBench/OCRBench.json`: a JSON list of 1000 `{"dataset_name", "id", "image_path",
"question", "answers", "type"}`, images at `OCRBench_Images/<image_path>`. Its `id` repeats, so a question's id is
its position (0..999), which is lmms-eval's doc_id: lmms-eval's samples score against this file too. A row of another
shape is refused in one line naming file and row (from 0); a row without answers is counted `unannotated`.
`--parquet`: echo840/OCRBench (`dataset`, `question`, `question_type`, `answer`, `image`), the row index as id.
Prompt: `lmms_eval` (default, LLaVA-NeXT's setting): the question stripped, no instruction; `llava15`: the question +
"\\nAnswer the question using a single word or phrase." (MultimodalOCR OCRBench/scripts/LLaVA1_5.py).
Metric: a question is right when a gold answer is contained in the prediction (lower-cased; HME100k: spaces removed,
case kept); the headline `final_score` is the number right (out of 1000 on the full set), with `text_recognition`,
`by_type` and `by_dataset` as the authors' script prints them. `--rule lmms_eval`: the prediction stripped and
full-width ASCII folded (ocrbench_process_results). Published LLaVA-1.5-7B: the leaderboard lists its Text
Recognition types only (`eval.vlm.scoring.ocrbench.PUBLISHED_CATEGORIES`, recorded as `published_text_recognition`
in metrics.json); no final score with a source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eval.vlm.files import parquet_folder, read_list
from eval.vlm.scored import Mapped, ScoredBenchmark, ScoredConfig, ScoredItem
from eval.vlm.scoring import ocrbench
from pretrain.runtime.errors import UserError
from pretrain.runtime.evaluators import register


@dataclass
class OCRBenchConfig(ScoredConfig):
    questions: str | None = field(default=None, metadata={"help": "MultimodalOCR's OCRBench/OCRBench/OCRBench.json"})
    image_root: str | None = field(default=None, metadata={"help": "the OCRBench_Images folder; needed by run"})
    prompt: Literal["lmms_eval", "llava15"] = field(
        default="lmms_eval", metadata={"help": "lmms_eval: the question alone; llava15: the authors' LLaVA-1.5 script"}
    )


@register
class OCRBench(ScoredBenchmark):
    """OCRBench: the authors' containment rules per source dataset; the headline is the 1000-point final score."""

    name = "ocrbench"
    description = "OCRBench: answer-in-prediction per the authors' rules, the final score out of 1000 and per type"
    Config = OCRBenchConfig
    headline = "final_score"
    published = ocrbench.PUBLISHED
    folder = "ocrbench"
    files = ("OCRBench.json + OCRBench_Images/ (github.com/Yuliang-Liu/MultimodalOCR), or echo840/OCRBench's "
             "data/test-*.parquet")  # fmt: skip
    rules = ("official", "lmms_eval")
    scoring = ocrbench
    shape = "{dataset_name, image_path, question, answers, type: one of OCRBench's ten types}"
    positional_ids = True
    max_new_tokens = 128
    max_new_tokens_help = "default: 128, lmms-eval's ocrbench setting (a recognised text or formula can be long)"

    def read_files(self) -> tuple[str, str, Mapped]:
        path = self.config.questions
        if path is None:
            raise UserError("ocrbench needs --questions (OCRBench.json) or --parquet (echo840/OCRBench)")
        rows = read_list(Path(path), "OCRBench questions")
        return path, "test", zip((f"{path}: row {i}" for i in range(len(rows))), ocrbench.from_official(rows))

    def prompt(self, item: ScoredItem) -> str:
        return ocrbench.build_prompt(item.q["question"], self.config.prompt)

    def describe_extra(self) -> dict[str, Any]:
        return {"published_text_recognition": ocrbench.PUBLISHED_CATEGORIES}

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        """ocrbench/: OCRBench.json + OCRBench_Images/ (or the repository's OCRBench/OCRBench/ folder beside them);
        else echo840/OCRBench's parquet (data/test-*.parquet)."""
        for questions in (folder / "OCRBench.json", folder / "OCRBench" / "OCRBench" / "OCRBench.json"):
            if questions.is_file() and (folder / "OCRBench_Images").is_dir():
                return {"questions": str(questions), "image_root": str(folder / "OCRBench_Images")}
        return parquet_folder(folder, "test")

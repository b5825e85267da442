"""ChartQA test (Masry et al., Findings of ACL 2022): the authors' files or lmms-lab's parquet, asked as lmms-eval asks
it (LLaVA-NeXT's setting), scored by relaxed accuracy (`eval.vlm.scoring.chartqa`, which cites its sources).

usage: superclass eval chartqa run --model DIR --annotation-dir "ChartQA Dataset/test" --out OUT
       superclass eval chartqa score --parquet ChartQA/data --predictions P.jsonl --out OUT [--rule lmms_eval]

Files. vis-nlp/ChartQA "ChartQA Dataset/{split}/": `{split}_human.json` and `{split}_augmented.json` (JSON lists of
`{"imgname", "query", "label"}`), images in `png/`. A question's id is its position, human rows first: lmms-eval's
doc_id, so lmms-eval's samples score against these files too. `--parquet`: lmms-lab/ChartQA (`type`, `question`,
`answer`, `image`), the row index as id. A row of another shape is refused in one line naming file and row (rows
count from 0); a row without a label is counted `unannotated`.
Prompt: the question + "\\nAnswer the question with a single word." (lmms-eval tasks/chartqa/chartqa.yaml).
Metric: pix2struct's `relaxed_correctness` (within 5% of a nonzero number, else equal ignoring case); the headline is
`relaxed_accuracy` over both splits, with `human`, `augmented` and `split_mean`. `--rule lmms_eval`: lmms-eval strips
the answer first (chartqa_process_results after Task.process_results). Published LLaVA-1.5-7B: none with a source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.vlm.files import parquet_folder, read_list
from eval.vlm.scored import Mapped, ScoredBenchmark, ScoredConfig, ScoredItem
from eval.vlm.scoring import chartqa
from pretrain.runtime.errors import UserError
from pretrain.runtime.evaluators import register


@dataclass
class ChartQAConfig(ScoredConfig):
    annotation_dir: str | None = field(
        default=None, metadata={"help": "ChartQA's 'ChartQA Dataset/test' folder: test_human.json, test_augmented.json"}
    )
    image_root: str | None = field(default=None, metadata={"help": "the chart images; default: ANNOTATION_DIR/png"})
    split: str | None = field(
        default=None, metadata={"help": "the files' split (test, val: their name prefix); --parquet: the shards'"}
    )


@register
class ChartQA(ScoredBenchmark):
    """ChartQA: relaxed accuracy (5% numeric tolerance) over the human and augmented questions."""

    name = "chartqa"
    description = "ChartQA test: relaxed accuracy (5 percent on numbers), human + augmented; lmms-eval's prompt"
    Config = ChartQAConfig
    headline = "relaxed_accuracy"
    published = chartqa.PUBLISHED
    folder = "chartqa"
    files = ("ChartQA Dataset/test/{test_human,test_augmented}.json + png/ (github.com/vis-nlp/ChartQA), or "
             "lmms-lab/ChartQA's data/test-*.parquet")  # fmt: skip
    rules = ("official", "lmms_eval")
    scoring = chartqa
    shape = "{imgname, query, label}"
    image_dirs = (".", "png")
    positional_ids = True
    max_new_tokens_help = "default: 16, lmms-eval's chartqa setting, ample for the single word asked for"

    def read_files(self) -> tuple[str, str, Mapped]:
        cfg = self.config
        if cfg.annotation_dir is None:
            raise UserError("chartqa needs --annotation-dir (ChartQA's 'ChartQA Dataset/test') or --parquet")
        split, folder = cfg.split or "test", Path(cfg.annotation_dir)
        paths = [folder / f"{split}_{part}.json" for part in chartqa.SPLITS]
        lists = [read_list(path, "ChartQA questions") for path in paths]
        wheres = [f"{path}: row {i}" for path, rows in zip(paths, lists) for i in range(len(rows))]
        return str(folder), split, zip(wheres, chartqa.from_official(*lists))

    def image_root(self) -> str:
        return self.config.image_root or self.config.annotation_dir

    def prompt(self, item: ScoredItem) -> str:
        return chartqa.build_prompt(item.q["question"])

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        """chartqa/: "ChartQA Dataset/test/" (or test/, or the folder itself) with png/; else lmms-lab's parquet."""
        for d in (folder / "ChartQA Dataset" / "test", folder / "test", folder):
            if all((d / f"test_{part}.json").is_file() for part in chartqa.SPLITS) and (d / "png").is_dir():
                return {"annotation_dir": str(d), "image_root": str(d / "png")}
        return parquet_folder(folder, "test")

"""A benchmark on a scoring module: the document and chart benchmarks (ChartQA, DocVQA, AI2D, OCRBench) map rows to
the question dicts of an `eval.vlm.scoring` module and let it score them; `ScoredBenchmark` is what they share.

Rows are mapped by the module; one that maps to nothing is refused in one line naming file and row (a file broken in
part is never scored); repeated ids are counted and the first kept; questions without gold are counted `unannotated`;
images are looked up on `run` only.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from eval.vlm.base import BenchConfig, Benchmark, QuestionSet
from eval.vlm.files import ImageFinder, parquet_image, parquet_image_name, parquet_rows
from eval.vlm.ids import QuestionId
from pretrain.data.shards import open_rgb
from pretrain.runtime.errors import DataError, UserError

Mapped = Iterable[tuple[str, dict[str, Any] | None]]  # (where: "FILE: row N", the question dict or None) per row


@dataclass
class ScoredItem:
    """One question: its id, its image (a file, encoded bytes, or None when not looked up or missing) and the
    scoring module's question dict `q` (its `image` is the file's name for the image)."""

    id: QuestionId
    image: Path | bytes | None
    q: dict[str, Any]

    def load_image(self) -> Any:
        if self.image is None:
            raise DataError(f"question {self.id}: image {self.q['image']} not found")
        return open_rgb(self.image)


@dataclass
class ScoredConfig(BenchConfig):
    parquet: str | None = field(default=None, metadata={"help": "lmms-lab's parquet file or folder instead"})
    split: str | None = field(default=None, metadata={"help": "--parquet folder: the shards' file-name prefix"})
    image_root: str | None = field(default=None, metadata={"help": "the authors' image folder; needed by run"})


def collect(mapped: Mapped, shape: str) -> tuple[list[dict[str, Any]], list[QuestionId | None]]:
    """The questions of `mapped`, the first of each id, and each row's id (None for a repeat). A row that maps to
    None is refused in one line naming file and row: a file broken in part is never scored."""
    questions, rows, seen = [], [], set()
    for where, q in mapped:
        if q is None:
            raise DataError(f"{where} is not {shape}; the file is damaged or of another version")
        repeat = q["id"] in seen
        rows.append(None if repeat else q["id"])
        if not repeat:
            seen.add(q["id"])
            questions.append(q)
    return questions, rows


class ScoredBenchmark(Benchmark):
    """A benchmark whose questions are an `eval.vlm.scoring` module's dicts: rows mapped by the module, refused
    when malformed, counted when repeated or without gold, images looked up on `run`; the module scores them."""

    scoring: ClassVar[ModuleType]
    gold: ClassVar[str] = "answers"  # the question dict's gold key (None: unannotated)
    shape: ClassVar[str] = ""  # a well-formed row, named when one is not
    image_dirs: ClassVar[tuple[str, ...]] = (".",)  # where under the image root the images may be
    positional_ids: ClassVar[bool] = False  # the authors' files' ids are lmms-eval's doc_ids
    stratify: ClassVar[bool] = True  # `--limit` keeps each `category`'s share
    prompt_layout = "lmms_eval"

    @abstractmethod
    def read_files(self) -> tuple[str, str, Mapped]:
        """(source, split, the mapped rows) of the authors' files; a one-line UserError when none are given."""

    def parquet_question(self, row: Mapping[str, Any], index: int) -> dict[str, Any] | None:
        return self.scoring.from_parquet_row(row, index)

    def image_root(self) -> str:
        if self.config.image_root is None:
            raise UserError(f"{self.name} run needs --image-root (the authors' images) or --parquet")
        return self.config.image_root

    def image_names(self, q: Mapping[str, Any]) -> list[str]:
        return [q["image"]]

    def item(self, q: dict[str, Any]) -> ScoredItem:
        return ScoredItem(q["id"], q.pop("image_bytes", None), q)

    def category(self, item: ScoredItem) -> Any:
        return item.q.get("category") if self.stratify else None

    def _parquet(self) -> tuple[str, Mapped]:
        """The split and mapped rows of the parquet; the image cell kept as bytes on `run` only, and as its name."""
        cfg = self.config
        rows, split = parquet_rows(cfg.parquet, cfg.split, self.scoring.PARQUET_COLUMNS, f"lmms-lab's {self.name}")

        def mapped() -> Mapped:
            for index, row in enumerate(rows):
                q = self.parquet_question(row, index)
                if q is not None:
                    cell, q["image"] = q["image"], parquet_image_name(q["image"]) or f"row {index}"
                    q["image_bytes"] = parquet_image(cell) if self.images else None
                yield f"{cfg.parquet}: row {index}", q

        return split, mapped()

    def load(self) -> QuestionSet:
        parquet = self.config.parquet is not None
        if parquet:
            source, (split, mapped) = str(self.config.parquet), self._parquet()
        else:
            source, split, mapped = self.read_files()
        questions, rows = collect(mapped, self.shape)
        if not questions:
            raise DataError(f"{source}: no {self.name} question in it")
        items = self.subset([self.item(q) for q in questions])
        counts = {"duplicate_questions": len(rows) - len(questions), "missing_images": 0}
        counts["unannotated"] = sum(item.q[self.gold] is None for item in items)
        if self.images and not parquet:
            finder = ImageFinder(self.image_root(), self.image_dirs)
            for item in items:
                item.image = finder.find(self.image_names(item.q))
        if self.images:
            counts["missing_images"] = sum(item.image is None for item in items)
        doc_rows = rows if parquet or self.positional_ids else None
        return QuestionSet(source, items, counts, split, "parquet" if parquet else "official", doc_rows)

    def metrics(self, answers: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        if all(item.q[self.gold] is None for item in self.questions):
            return None  # a test split: no gold to score against
        return self.scoring.score([item.q for item in self.questions], answers, self.config.rule)

"""A whole benchmark in one file, outside the package: short answers about images, scored by exact match.

Files: `questions.jsonl`, one `{"id", "image", "question", "answer"}` per line (`answer` absent on a test split),
images beside it. README "Adding a benchmark" shows this file; tests/eval/vlm/test_registry.py imports it and finds
it in `superclass eval`, `eval run` and a suite with no other edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.vlm.base import BenchConfig, Benchmark, QuestionSet
from eval.vlm.files import ImageFinder
from eval.vlm.ids import QuestionId, norm_id
from eval.vlm.scoring.common import percent
from pretrain.data.shards import open_rgb
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.evaluators import register
from pretrain.runtime.jsonl import read_jsonl_file
from vlm.templates import SHORT_ANSWER_PROMPT


@dataclass
class Item:
    """One question: the base reads `id`, `image` and `load_image`; the metric reads `answer`."""

    id: QuestionId
    question: str
    answer: str | None
    image_name: str
    image: Path | None = None

    def load_image(self) -> Any:
        return open_rgb(self.image)


@dataclass
class ExampleConfig(BenchConfig):  # BenchConfig brings limit, rule, strip_answers and the generation settings
    questions: str | None = field(default=None, metadata={"help": "questions.jsonl: {id, image, question, answer}"})


@register  # the runtime's one evaluator registry: `superclass eval`, `eval run` and suites read it
class ExactMatchExample(Benchmark):
    name = "exact_match_example"
    description = "an example: short answers about images, exact match of the lower-cased answer"
    Config = ExampleConfig
    folder = "exact_match_example"  # its folder under a suite's --data-root
    files = "questions.jsonl + its images"
    suites = ("examples",)  # joins the suite `examples`

    def load(self) -> QuestionSet:
        if self.config.questions is None:
            raise UserError(f"{self.name} needs --questions (a questions.jsonl)")
        path = Path(self.config.questions)
        rows, bad = read_jsonl_file(path, ("id", "image", "question"), "{id, image, question, answer} lines")
        if bad:  # a data file broken in part is refused, never scored
            raise DataError(f"{path}: {bad} unreadable line(s)")
        items = self.subset([Item(norm_id(r["id"]), r["question"], r.get("answer"), r["image"]) for r in rows])
        finder = ImageFinder(path.parent, ["."])
        for item in items:
            item.image = finder.find([item.image_name])
        counts = {
            "unannotated": sum(i.answer is None for i in items),
            "missing_images": sum(not i.image for i in items),
        }
        return QuestionSet(str(path), items, counts, split=path.stem)

    def prompt(self, item: Item) -> str:
        return f"{item.question}\n{SHORT_ANSWER_PROMPT}"

    def metrics(self, answers: Mapping[QuestionId, str]) -> dict[str, Any] | None:
        gold = [item for item in self.questions if item.answer is not None]
        if not gold:
            return None  # a test split: no score, the answers are the output
        right = sum(answers.get(item.id, "").lower() == item.answer.lower() for item in gold)
        return {"accuracy": percent(right, len(gold)), "num_scored": len(gold)}

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        questions = folder / "questions.jsonl"
        return {"questions": str(questions)} if questions.is_file() else None

"""AI2D test (Kembhavi et al., ECCV 2016): AI2's diagram files or lmms-lab's parquet, multiple choice asked as lmms-eval
asks it (LLaVA-NeXT's setting), scored by accuracy (`eval.vlm.scoring.ai2d`, which cites its sources and both rules).

usage: superclass eval ai2d run --model DIR --data-dir ai2d [--test-ids ai2d_test_ids.csv] --out OUT
       superclass eval ai2d score --parquet ai2d/data --predictions P.jsonl --out OUT [--rule lmms_eval]

Files. ai2d-all.zip's `ai2d/`: `questions/<imageName>.json` (one diagram's questions, keyed by their text),
`images/`, `annotations/<imageName>.json` (text boxes and their replacement letters) and `categories.json`; the test
split is the diagrams listed in `ai2d_test_ids.csv` (big_vision's split: in DATA_DIR or beside it, or `--test-ids`),
read in diagram-number order. The id is `questionId` ("0.png-0"); a question of another shape is refused in one line
naming the file and its position (from 0). An `abcLabel` question is shown with every text box painted white and its
replacementText drawn in (big_vision datasets/ai2d/ai2d.py `_draw_text`; Pillow's default font stands in for DM
Sans). `--parquet`: lmms-lab/ai2d (`question`, `options`, `answer`, `image` already drawn), the row index as id
(lmms-eval's doc_id).
Prompt: the question, one "X. option" line per choice, "Answer with the option's letter from the given choices
directly." (lmms-eval tasks/ai2d). Metric: accuracy in percent (the headline), per category from AI2's files.
`official` reads "B", "(B)", "B." or "B. text"; `--rule lmms_eval` is lmms-eval's regex filter and exact match.
Published LLaVA-1.5-7B: none with a source.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from eval.vlm.files import parquet_folder, read_json
from eval.vlm.scored import Mapped, ScoredBenchmark, ScoredConfig, ScoredItem
from eval.vlm.scoring import ai2d
from pretrain.runtime.errors import DataError, UserError
from pretrain.runtime.evaluators import register

TEST_IDS = "ai2d_test_ids.csv"


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size)


def _fitting_font(text: str, width: float, height: float) -> Any:
    """The largest font (size 100 down) whose box for `text` fits width x height, as big_vision's loop finds it."""
    for size in range(100, 0, -1):
        _, _, right, bottom = _font(size).getbbox(text)
        if right <= width and bottom <= height:
            return _font(size)
    return _font(1)


def draw_letters(image: Image.Image, path: Path) -> Image.Image:
    """`image` with each text box of AI2's annotation file `path` painted white and its replacementText drawn in,
    centred across (big_vision's `_draw_text`)."""
    doc = read_json(path, "AI2D annotation")
    boxes = doc.get("text") if isinstance(doc, dict) else None
    if not isinstance(boxes, dict):
        raise DataError(f"{path}: no 'text' object of text boxes (expected AI2's annotations/<imageName>.json)")
    draw = ImageDraw.Draw(image)
    for key, box in boxes.items():
        try:
            (x0, y0), (x1, y1) = box["rectangle"]
            text = str(box["replacementText"])
        except (KeyError, TypeError, ValueError):
            expected = "a rectangle [[x0, y0], [x1, y1]] and a replacementText"
            raise DataError(f"{path}: text box {key} has not {expected}") from None
        draw.rectangle([(x0, y0), (x1, y1)], fill="white")
        font = _fitting_font(text, x1 - x0, y1 - y0)
        draw.text((x0 + (x1 - x0 - font.getbbox(text)[2]) // 2, y0), text, fill="black", font=font)
    return image


@dataclass
class AI2DItem(ScoredItem):
    boxes: Path | None = None  # an abcLabel question's annotation file: its text boxes are drawn over

    def load_image(self) -> Any:
        image = super().load_image()
        return draw_letters(image, self.boxes) if self.boxes is not None else image


def _diagram_order(path: Path) -> tuple[int, str]:
    stem = path.name.split(".")[0]
    return (int(stem) if stem.isdigit() else -1, path.name)


@dataclass
class AI2DConfig(ScoredConfig):
    data_dir: str | None = field(
        default=None, metadata={"help": "AI2's ai2d folder: questions/, images/, annotations/, categories.json"}
    )
    test_ids: str | None = field(default=None, metadata={"help": f"{TEST_IDS} (default: in DATA_DIR or beside it)"})
    image_root: str | None = field(default=None, metadata={"help": "the diagrams; default: DATA_DIR/images"})


@register
class AI2D(ScoredBenchmark):
    """AI2D: multiple-choice accuracy over the test diagrams' questions, per category."""

    name = "ai2d"
    description = "AI2D test: multiple-choice accuracy (letter read by AI2D's or lmms-eval's rule); lmms-eval's prompt"
    Config = AI2DConfig
    headline = "accuracy"
    published = ai2d.PUBLISHED
    folder = "ai2d"
    files = (f"ai2d/{{questions,images,annotations}}/ + categories.json (AI2's ai2d-all.zip) + {TEST_IDS}, or "
             "lmms-lab/ai2d's data/test-*.parquet")  # fmt: skip
    rules = ("official", "lmms_eval")
    scoring = ai2d
    gold = "answer"
    shape = "{imageName, questions: {text: {answerTexts, correctAnswer, questionId, abcLabel}}}"
    max_new_tokens_help = "default: 16, lmms-eval's ai2d setting, ample for the letter asked for"

    def _test_ids(self, folder: Path) -> set[str]:
        found = [Path(self.config.test_ids)] if self.config.test_ids else [folder / TEST_IDS, folder.parent / TEST_IDS]
        path = next((p for p in found if p.is_file()), None)
        if path is None:
            raise UserError(f"ai2d needs --test-ids ({TEST_IDS}, the test diagrams): not found at {found[0]}")
        return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}

    def read_files(self) -> tuple[str, str, Mapped]:
        if self.config.data_dir is None:
            raise UserError("ai2d needs --data-dir (AI2's ai2d folder) or --parquet (lmms-lab/ai2d)")
        folder = Path(self.config.data_dir)
        ids = self._test_ids(folder)
        files = [p for p in (folder / "questions").glob("*.json") if p.name.split(".")[0] in ids]
        if not files:
            raise DataError(f"{folder / 'questions'}: no question file of a diagram listed in the test ids")
        categories = folder / "categories.json"
        names = read_json(categories, "AI2D categories") if categories.is_file() else {}
        if not isinstance(names, dict):
            raise DataError(f"{categories}: expected a JSON object of imageName -> category")
        return str(folder), "test", self._mapped(sorted(files, key=_diagram_order), names)

    @staticmethod
    def _mapped(files: list[Path], categories: Any) -> Iterator[tuple[str, dict[str, Any] | None]]:
        for path in files:
            doc = read_json(path, "AI2D question")
            category = categories.get(doc.get("imageName")) if isinstance(doc, dict) else None
            questions = ai2d.from_official(doc, category) if isinstance(doc, dict) else [None]
            yield from ((f"{path}: question {k}", q) for k, q in enumerate(questions))

    def image_root(self) -> str:
        return self.config.image_root or str(Path(self.config.data_dir) / "images")

    def item(self, q: dict[str, Any]) -> AI2DItem:
        boxes = None
        if q.get("abc_label") and self.config.parquet is None:  # lmms-lab's images are drawn already
            boxes = Path(self.config.data_dir) / "annotations" / f"{q['image']}.json"
        return AI2DItem(q["id"], q.pop("image_bytes", None), q, boxes)

    def prompt(self, item: ScoredItem) -> str:
        return ai2d.build_prompt(item.q["question"], item.q["choices"])

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        """ai2d/: AI2's ai2d/ folder (questions/, images/) with ai2d_test_ids.csv in it or beside it; else lmms-lab's
        parquet (data/test-*.parquet)."""
        for d in (folder / "ai2d", folder):
            if (d / "questions").is_dir() and (d / "images").is_dir():
                ids = next((p for p in (d / TEST_IDS, folder / TEST_IDS) if p.is_file()), None)
                if ids is not None:
                    return {"data_dir": str(d), "test_ids": str(ids)}
        return parquet_folder(folder, "test")

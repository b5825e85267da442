"""DocVQA val (single-page Task 1; Mathew et al., WACV 2021): the Robust Reading Competition's files or lmms-lab's
parquet, asked as lmms-eval asks it (LLaVA-NeXT's setting), scored by ANLS (`eval.vlm.scoring.docvqa`, which cites
the RRC scorer it ports).

usage: superclass eval docvqa run --model DIR --questions val/val_v1.0_withQT.json --image-root val --out OUT
       superclass eval docvqa score --parquet DocVQA --split validation --predictions P.jsonl --out OUT

Files. RRC DocVQA Task 1 (rrc.cvc.uab.es/?ch=17): `val_v1.0_withQT.json` (or `val_v1.0.json`) = `{"dataset_name",
"dataset_split", ..., "data": [{"questionId", "question", "question_types", "image": "documents/x.png", "answers",
...}]}`; images under the split folder (`val/documents/`) or flat (`spdocvqa_images/`). The id is `questionId`; a
repeated one is counted (`duplicate_questions`) and the first kept; a row of another shape is refused in one line
naming file and row (rows count from 0). `test_v1.0.json` has no answers: its questions are `unannotated`, nothing is
scored, and `docvqa_test_for_submission.json` (`[{"questionId", "answer"}]`, as lmms-eval's docvqa_test writes it)
is the file to upload to the RRC. `--parquet`: lmms-lab/DocVQA's `DocVQA` config (`validation-*`, `test-*` shards:
`--split`), the same columns and ids; lmms-eval's samples name questions by doc_id, so they are scored with it.
Prompt: the question + "\\nAnswer the question using a single word or phrase." (lmms-eval docvqa template).
Metric: ANLS with threshold 0.5, in percent over the annotated questions (the headline `anls`) and per question type
(`anls_by_type`). `--rule lmms_eval`: lmms-eval strips the answer first, which changes the length ANLS divides by.
Published LLaVA-1.5-7B: none with a source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.vlm.files import field_list, first_file, parquet_folder, read_json
from eval.vlm.ids import QuestionId
from eval.vlm.scored import Mapped, ScoredBenchmark, ScoredConfig, ScoredItem
from eval.vlm.scoring import docvqa
from pretrain.runtime.atomic import write_text_atomically
from pretrain.runtime.errors import UserError
from pretrain.runtime.evaluators import register

SUBMISSION = "docvqa_test_for_submission.json"  # lmms-eval docvqa_test_aggregate_results' file name
QA_FILES = ("val_v1.0_withQT.json", "val_v1.0.json")


@dataclass
class DocVQAConfig(ScoredConfig):
    questions: str | None = field(
        default=None,
        metadata={"help": "the RRC QA file: val_v1.0_withQT.json or val_v1.0.json (test_v1.0.json: a submission)"},
    )
    image_root: str | None = field(
        default=None, metadata={"help": "the split folder holding documents/, or spdocvqa_images/; needed by run"}
    )


@register
class DocVQA(ScoredBenchmark):
    """DocVQA: ANLS over the annotated questions, per question type; an RRC submission file for the test split."""

    name = "docvqa"
    description = "DocVQA val: ANLS (threshold 0.5) per question type; lmms-eval's prompt; test: RRC submission"
    Config = DocVQAConfig
    headline = "anls"
    published = docvqa.PUBLISHED
    folder = "docvqa"
    files = ("val/val_v1.0_withQT.json + val/documents/ (RRC DocVQA Task 1, rrc.cvc.uab.es/?ch=17), or "
             "lmms-lab/DocVQA's DocVQA/validation-*.parquet")  # fmt: skip
    rules = ("official", "lmms_eval")
    scoring = docvqa
    shape = "{questionId, question, image, answers: [str]}"
    stratify = False  # a question has several types
    max_new_tokens = 32
    max_new_tokens_help = "default: 32, lmms-eval's docvqa setting"

    def read_files(self) -> tuple[str, str, Mapped]:
        path = self.config.questions
        if path is None:
            raise UserError("docvqa needs --questions (the RRC's val_v1.0_withQT.json) or --parquet (lmms-lab/DocVQA)")
        doc = read_json(path, "DocVQA QA")
        rows = field_list(doc, "data", path, "DocVQA QA file {dataset_name, data: [...]}")
        wheres = [f"{path}: data row {i}" for i in range(len(rows))]
        return path, str(doc.get("dataset_split") or "unknown"), zip(wheres, docvqa.from_official(rows))

    def parquet_question(self, row: Mapping[str, Any], index: int) -> dict[str, Any] | None:
        return docvqa.from_parquet_row(row)

    def image_names(self, q: Mapping[str, Any]) -> list[str]:
        return [q["image"], Path(q["image"]).name]  # documents/x.png under val/, or x.png in spdocvqa_images/

    def prompt(self, item: ScoredItem) -> str:
        return docvqa.build_prompt(item.q["question"])

    def submission(self, out_dir: Path, answers: Mapping[QuestionId, str]) -> dict[str, str]:
        """The RRC's upload for a set without answers (the test split): every question, "" where unanswered."""
        if any(item.q["answers"] is not None for item in self.questions):
            return {}
        rows = [{"questionId": item.id, "answer": answers.get(item.id, "")} for item in self.questions]
        return {"rrc_submission": str(write_text_atomically(out_dir / SUBMISSION, json.dumps(rows)))}

    @classmethod
    def suite_config(cls, folder: Path) -> dict[str, Any] | None:
        """docvqa/: val/ (a QA file + documents/) or spdocvqa_qas/ + spdocvqa_images/; else lmms-lab/DocVQA's parquet
        (DocVQA/validation-*.parquet)."""
        for qas, images, check in (
            (folder / "val", folder / "val", folder / "val" / "documents"),
            (folder / "spdocvqa_qas", folder / "spdocvqa_images", folder / "spdocvqa_images"),
            (folder, folder, folder / "documents"),
        ):
            found = first_file(qas, *QA_FILES) if qas.is_dir() else None
            if found is not None and check.is_dir():
                return {"questions": str(found), "image_root": str(images)}
        return parquet_folder(folder, "validation", "DocVQA")

"""usage: python bench/peers.py [--quick] [--only openclip,llava_eval,llava_train,lmms_eval] [--device cpu|cuda]
                              [--json OUT.json]

Side by side with the codebases users would otherwise pick: the same work on identical inputs, the peer's own code
in its own environment and ours in ours, outputs compared, one table of items/s and the ratio ours / theirs.

    openclip     OpenCLIP's CLIP step (open_clip.CLIP, ClipLoss, open_clip_train's train_one_epoch) vs our `clip`
                 task on the Trainer: same ViT, text tower, weights, batch; the first step's loss
                 (bench/peer_openclip.py)
    llava_eval   the LLaVA codebase's model_vqa_loader loop (batch 1) on our `--to llava` export vs
                 `superclass eval vqav2 run` on the HF directory: every answer identical (bench/peer_llava.py)
    llava_train  LLaVA's train.py data path + LlavaLlamaForCausalLM vs vlm.data + LlavaTask on the Trainer, stage 2:
                 ids, label masks, pixels and the first step's loss (<= 1e-4 in fp32)
    lmms_eval    lmms-eval's `llava_hf` model (its generate_until, batch 1) vs `superclass eval vqav2 run` on the same
                 HF directory and questions: every answer identical (bench/peer_lmms_side.py)

The peers' environments are found as the parity tests find them, through environment variables holding their
interpreters: LLAVA_PYTHON (`bash tests/vlm/make_llava_venv.sh` builds it) and LMMS_EVAL_PYTHON (`bash
bench/make_lmms_eval_venv.sh` builds one); a row whose interpreter is not given is skipped, with the reason.
OpenCLIP is our dependency: it runs in this interpreter. Point the variables at venvs with other versions to
compare against those.
Full sizes: ViT-B/16 at 224 (+ OpenCLIP's B/16 text tower), a LLaMA-shaped LLM of ~150M parameters with a B/16
tower (196 image tokens); `--quick`: tiny shapes, seconds per row (the test suite's form).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ siblings by bare name, as the other benches

import peer_llava  # noqa: E402
import peer_openclip  # noqa: E402

ROWS = ("openclip", "llava_eval", "llava_train", "lmms_eval")
PEER_PYTHON = {"llava_eval": "LLAVA_PYTHON", "llava_train": "LLAVA_PYTHON", "lmms_eval": "LMMS_EVAL_PYTHON"}
LLM_TINY = {"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4}
LLM_FULL = {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 12, "num_attention_heads": 16}
SIZES = {
    "quick": {
        "openclip": {"arch": "vit_tiny", "text": "text_tiny", "batch": 8, "steps": 1, "rounds": 1},
        "llava": {"tower": "vit_tiny", "llm": LLM_TINY, "questions": 6, "max_new_tokens": 4, "eval_batch": 4,
                  "repeats": 1, "train_batch": 2, "steps": 1, "rounds": 1},
    },
    "full": {
        "openclip": {"arch": "vit_b16", "text": "text_b", "batch": 8, "steps": 2, "rounds": 3},
        "llava": {"tower": "vit_b16", "llm": LLM_FULL, "questions": 16, "max_new_tokens": 8, "eval_batch": 8,
                  "repeats": 2, "train_batch": 4, "steps": 2, "rounds": 2},
    },
}  # fmt: skip


@dataclasses.dataclass
class PeerRow:
    """One comparison: outputs equal (None: not run), items/s on each side and what was compared."""

    name: str
    what: str = ""
    equal: bool | None = None
    ours: float = 0.0
    theirs: float = 0.0
    unit: str = ""
    detail: str = ""
    seconds: float = 0.0
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.ours / self.theirs if self.theirs > 0 else 0.0


def peer_python(row: str, given: dict[str, str]) -> str:
    """The interpreter a row's peer runs in ('' = this one, for OpenCLIP); raises when it is not given."""
    if row not in PEER_PYTHON:
        return ""
    var = PEER_PYTHON[row]
    python = given.get(var) or os.environ.get(var, "")
    if not python:
        raise LookupError(f"{var} is not set (the peer's venv interpreter; README, Benchmarks)")
    if not Path(python).is_file():
        raise LookupError(f"{var}={python}: no such interpreter")
    return python


def _run_one(name: str, fn: Callable[[], dict[str, Any]]) -> PeerRow:
    start = time.monotonic()
    row = PeerRow(name)
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - a failing comparison is a row; the others still run
        traceback.print_exc()
        row.detail = f"error: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
        row.equal = False
    else:
        row.what, row.equal, row.detail = result.pop("what"), bool(result.pop("equal")), result.pop("detail")
        row.ours, row.theirs, row.unit = result.pop("ours"), result.pop("theirs"), result.pop("unit")
        row.figures = result
    row.seconds = time.monotonic() - start
    print(f"[peers] {name}: {'equal' if row.equal else 'NOT equal'}, {row.detail} ({row.seconds:.0f} s)", flush=True)
    return row


def run_rows(names: list[str], sizes: dict[str, Any], device: torch.device, given: dict[str, str]) -> list[PeerRow]:
    """Run the named comparisons (skipping those whose peer interpreter is missing), in ROWS order."""
    return list(iter_rows(names, sizes, device, given))


def iter_rows(
    names: list[str], sizes: dict[str, Any], device: torch.device, given: dict[str, str]
) -> Iterator[PeerRow]:
    """`run_rows`, each row as soon as it is measured (bench/gpu_acceptance.py keeps those done before a timeout)."""
    llava_fixture: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="peers_") as tmp:
        for name in [r for r in ROWS if r in names]:
            try:
                python = peer_python(name, given)
            except LookupError as exc:
                print(f"[peers] {name}: skipped: {exc}", flush=True)
                yield PeerRow(name, detail=f"skipped: {exc}")
                continue
            if name == "openclip":
                yield _run_one(name, lambda: peer_openclip.compare(sizes["openclip"], device))
                continue
            compare = {"llava_eval": peer_llava.compare_eval, "llava_train": peer_llava.compare_train,
                       "lmms_eval": peer_llava.compare_lmms}[name]  # fmt: skip

            def with_fixture(compare: Callable = compare, python: str = python) -> dict[str, Any]:
                if not llava_fixture:  # built once, for the LLaVA and lmms-eval rows
                    llava_fixture.update(peer_llava.build_fixture(Path(tmp), sizes["llava"]))
                return compare(llava_fixture, sizes["llava"], device, python)

            yield _run_one(name, with_fixture)


def table(rows: list[PeerRow]) -> str:
    """The one table: row, outputs equal, ours/s, theirs/s, ratio (ours / theirs); what ran, below it."""
    lines = ["| row | outputs equal | ours/s | theirs/s | ratio |", "|---|---|---|---|---|"]
    for r in rows:
        if r.equal is None:
            lines.append(f"| {r.name} | {r.detail} | | | |")
            continue
        equal = "yes" if r.equal else "**no**"
        ours, theirs = (f"{x:,.2f} {r.unit}" if x else "-" for x in (r.ours, r.theirs))
        lines.append(f"| {r.name} | {equal} | {ours} | {theirs} | {r.ratio:.2f}x |")
    lines.append("")
    lines += [f"- {r.name}: {r.what}; {r.detail} ({r.seconds:.0f} s)" for r in rows if r.equal is not None]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[2])
    parser.add_argument("--quick", action="store_true", help="tiny shapes: seconds per row (the test suite's form)")
    parser.add_argument("--only", default=",".join(ROWS), help=f"comma-separated rows (default: all of {ROWS})")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--llava-python", default="", help="the LLaVA venv's interpreter (default: $LLAVA_PYTHON)")
    parser.add_argument("--lmms-python", default="", help="lmms-eval's venv interpreter (default: $LMMS_EVAL_PYTHON)")
    parser.add_argument("--json", default="", help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(ROWS)
    if unknown:
        parser.error(f"--only: unknown rows {sorted(unknown)} (expected some of {list(ROWS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    given = {"LLAVA_PYTHON": args.llava_python, "LMMS_EVAL_PYTHON": args.lmms_python}
    sizes = SIZES["quick" if args.quick else "full"]
    print(f"peers ({'quick' if args.quick else 'full'} sizes) on {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)  # fmt: skip
    rows = run_rows(args.only.split(","), sizes, device, given)
    if args.json:
        doc = {"quick": args.quick, "device": str(device), "sizes": sizes,
               "rows": [{**dataclasses.asdict(r), "ratio": r.ratio} for r in rows]}  # fmt: skip
        Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print("\n" + table(rows), flush=True)
    return 0 if all(r.equal is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""usage: bash bench/gpu_acceptance.sh [--only P1,P4] [--budget 500]   (on a lent H100 or H200: see below)
       python bench/gpu_acceptance.py --dry-run [--out DIR]                (tiny shapes on the CPU, under a minute)

The device call, after `bash bench/stage_wheels.sh` here (README, Benchmarks):
    run(command="bash bench/gpu_acceptance.sh", carry=[".whl"], timeout_s=540)

Every GPU acceptance check in one process, most important first, each under its own time limit and the whole run
under `--budget` seconds; a check that fails, raises or runs out of time is a row of the table, never the end of
the run, and a check that would not fit in the time left is skipped (P6, P7 and the P1 reference are last).

    env   the GPU and the packages the checks import (the carried wheels: open_clip_torch, ftfy, pycocoevalcap)
    P1    SuperClass B/16 @ 224 training step, bf16 weight copies, compiled with its loss: >= 50% MFU at 790 TFLOP/s
    P2    the same step, SuperClass vs CLIP (same backbone, batch, precision, compile): >= 1.15x images/s
    P3a   shard -> decode -> augmented batch, 16 workers (pre-resized 512 px JPEGs): >= the P1 step's images/s
    P3b   feature extraction, --decode gpu vs cpu, 16 workers: data path < 20% of the bare forward (gpu decode)
    P4    Vicuna-7B-shaped LLaVA + L/14-336 tower, batched VQA answering vs one at a time: >= 50 q/s, >= 10x, same
    P5    the same model, stage-2 step with LoRA: >= 40% MFU
    gpu   pytest -m gpu (the files that hold GPU tests): all pass
    P5f   the same step, full fine-tuning (fp32 masters + AdamW: ~112 GB for 7B): >= 40% MFU; on a card under
          120 GiB (the H100 kind) an optional skipped row, decided before the model is built
    P6    5k images end to end: B/16 features -> batched beam-5 (GPT-2-small body) -> CIDEr: < 60 s
    P7    LiT step on cached features vs a full CLIP step on B/16: >= 5x images/s
    openclip, llava_eval, llava_train, lmms_eval
          bench/peers.py's comparisons with the peer codebases (OpenCLIP's step at B/16 batch 256 in bf16; the
          LLaVA codebase and lmms-eval only where LLAVA_PYTHON / LMMS_EVAL_PYTHON name their venvs, else skipped
          rows that do not fail the run): outputs equal, ratio ours / theirs >= 1.0
    P1b   P1's step under autocast with the towers compiled (the lever's reference): P1 >= this

Writes OUT/gpu_acceptance.json (every figure) and OUT/gpu_acceptance.md (the table) after each check, so a run cut
short keeps what it measured; the shell wrapper tees the log to OUT/gpu_acceptance.log. The table is printed last.
`--dry-run` runs the same checks with tiny shapes on the CPU (compile through aot_eager: capture without code
generation) so that a session with a GPU spends no minutes on a typo; its rows say `ran`, not pass/fail.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
START = time.monotonic()
REFERENCE_STEP_RATE = 3700.0  # img/s of a B/16 SuperClass step at 50% MFU: P3a's bar when P1 did not run
FULL_FT_GIB = 120  # P5f: 7B bf16 weights + fp32 masters + AdamW moments (~112 GB) + activations
REQUIRED = ("open_clip", "ftfy", "pycocoevalcap", "timm", "transformers", "peft", "torchvision", "PIL", "yaml")

# The shapes of each check: the real ones for an H100/H200, tiny ones for the CPU dry run.
REAL = {
    "pretrain": {"arch": "vit_b16", "text": "text_b", "batch": 1024, "steps": 6, "rounds": 3, "warmup": 3},
    "data": {"source": 512, "unique": 128, "workers": 16, "batch": 256, "images": 8192},
    "features": {"arch": "vit_b16", "source": 320, "unique": 512, "images": 8192, "batch": 256, "workers": 16},
    "vqa": {"preset": "vicuna7b", "questions": 512, "baseline": 32, "batch": 64, "max_new_tokens": 8, "rounds": 1},
    "vlm_train": {"preset": "vicuna7b", "tower": "l14", "batch": 8, "seq": 1024, "steps": 3, "rounds": 2, "warmup": 2},
    "caption": {"images": 5000, "arch": "vit_b16", "batch": 256, "workers": 16, "gpt2_shape": True},
    "lit": {"arch": "vit_b16", "text": "text_b", "batch": 256, "steps": 5, "rounds": 3},
    "peers": {"openclip": {"arch": "vit_b16", "text": "text_b", "batch": 256, "steps": 4, "rounds": 3},
              "llava": {"tower": "vit_b16", "llm": {"hidden_size": 1024, "intermediate_size": 2816,
                        "num_hidden_layers": 12, "num_attention_heads": 16}, "questions": 128, "max_new_tokens": 8,
                        "eval_batch": 32, "repeats": 1, "train_batch": 8, "steps": 4, "rounds": 2}},
}  # fmt: skip
DRY = {
    "pretrain": {"arch": "vit_tiny", "text": "text_tiny", "batch": 8, "steps": 1, "rounds": 1, "warmup": 1},
    "data": {"source": 64, "unique": 16, "workers": 2, "batch": 8, "images": 16},
    "features": {"arch": "vit_tiny", "source": 48, "unique": 16, "images": 16, "batch": 8, "workers": 0},
    "vqa": {"preset": "tiny", "questions": 4, "baseline": 2, "batch": 4, "max_new_tokens": 2, "rounds": 1},
    "vlm_train": {"preset": "tiny", "tower": "tiny", "batch": 2, "seq": 32, "steps": 1, "rounds": 1, "warmup": 1},
    "caption": {"images": 16, "arch": "vit_tiny", "batch": 8, "workers": 0, "gpt2_shape": False},
    "lit": {"arch": "vit_tiny", "text": "text_tiny", "batch": 8, "steps": 1, "rounds": 1},
    "peers": {"quick": True},  # bench/peers.py's --quick sizes
}


@dataclasses.dataclass
class Row:
    """One line of the table (and of the JSON, with the figures behind it in `details`)."""

    id: str
    what: str
    target: str
    measured: str = ""
    result: str = "not run"  # pass | FAIL | ran (dry run) | error | timeout | skipped | not run
    seconds: float = 0.0
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Check:
    """A measurement producing one or more rows; `limit_s` caps its time, `need_s` is the least worth starting."""

    ids: tuple[str, ...]
    fn: Callable[[Context], Iterable[Row]]  # rows as they are measured: a timeout keeps the earlier ones
    limit_s: float
    need_s: float


@dataclasses.dataclass
class Context:
    args: argparse.Namespace
    device: torch.device
    shapes: dict[str, dict[str, Any]]
    results: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # figures later checks use

    @property
    def dry(self) -> bool:
        return self.args.dry_run

    def verdict(self, ok: bool) -> str:
        return "ran" if self.dry else ("pass" if ok else "FAIL")


class CheckTimeout(Exception):
    """A check ran past its time budget (recorded in the table as a timeout; the next check runs)."""


def log(message: str) -> None:
    print(f"[{time.monotonic() - START:6.1f} s] {message}", flush=True)


def bench_module(name: str) -> Any:
    """A bench script as a module (they import their siblings by bare name, so bench/ goes on the path)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ------------------------------------------------------------------------------------------------------ checks
def check_env(ctx: Context) -> list[Row]:
    missing = []
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any import failure is what this row reports
            missing.append(f"{name} ({type(exc).__name__})")
    gpu = torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu (dry run)"
    ok = not missing and (ctx.dry or ctx.device.type == "cuda")
    measured = f"{gpu}; torch {torch.__version__}; " + (f"missing: {', '.join(missing)}" if missing else "imports ok")
    row = Row("env", "GPU and the packages the checks import", "a CUDA device; every import works", measured)
    row.result, row.details = ctx.verdict(ok), {"missing": missing, "gpu": gpu, "torch": torch.__version__}
    return [row]


def _pretrain_args(ctx: Context, precision: str, scope: str) -> argparse.Namespace:
    s = ctx.shapes["pretrain"]
    argv = ["--device", str(ctx.device), "--arch", s["arch"], "--text", s["text"], "--batch", str(s["batch"]),
            "--steps", str(s["steps"]), "--rounds", str(s["rounds"]), "--warmup", str(s["warmup"]),
            "--precision", precision, "--compile", "--compile-scope", scope,
            "--compile-backend", "aot_eager" if ctx.dry else "inductor"]  # fmt: skip
    return bench_module("pretrain_throughput").parser().parse_args(argv)


def check_pretrain(ctx: Context) -> Iterator[Row]:
    """P1 (SuperClass alone), then P2 (both methods interleaved), all with the lever: bf16 weights, task compiled."""
    pt, steps = bench_module("pretrain_throughput"), bench_module("steps")
    from torch._dynamo.utils import counters

    args = _pretrain_args(ctx, "bf16_weights", "task")
    start = time.monotonic()
    sc_trainer, sc_batch, flops = pt.prepare("superclass", args, ctx.device)
    built_s = time.monotonic() - start  # build + FLOP count + compile + warm-up
    sc = (sc_trainer, sc_batch)
    rate = statistics.median(steps.interleaved({"sc": sc}, args.steps, args.rounds, ctx.device)["sc"])
    mfu = pt.mfu(flops, args.batch, rate) if ctx.device.type == "cuda" else 0.0
    shape = f"{args.arch} @ {sc_trainer.task.arch.image_size}, batch {args.batch}"
    ctx.results["P1"] = {"images_per_s": rate, "mfu": mfu}
    dynamo = {"stats": dict(counters["stats"]), "graph_breaks": sum(counters["graph_break"].values())}
    yield Row("P1", f"SuperClass {shape}: bf16 weight copies, compiled with its loss, training step",
              ">= 50% MFU at 790 TFLOP/s (~3,700 img/s; 46.9% before)",
              f"{rate:,.0f} img/s, MFU {100 * mfu:.1f}% (@989: {100 * mfu * 790 / 989:.1f}%)", ctx.verdict(mfu >= 0.50),
              details={"images_per_s": rate, "mfu": mfu, "gflop_per_image": flops / args.batch / 1e9,
                       "prepare_s": built_s, "dynamo": dynamo})  # fmt: skip
    clip_trainer, clip_batch, clip_flops = pt.prepare("clip", args, ctx.device)
    pair = {"superclass": sc, "clip": (clip_trainer, clip_batch)}
    both = steps.interleaved(pair, args.steps, args.rounds, ctx.device)
    rates = {method: statistics.median(r) for method, r in both.items()}
    ratio = rates["superclass"] / rates["clip"]
    yield Row("P2", f"same step, SuperClass vs CLIP ({args.text} text tower), interleaved", ">= 1.15x images/s",
              f"{ratio:.2f}x ({rates['superclass']:,.0f} vs {rates['clip']:,.0f} img/s)", ctx.verdict(ratio >= 1.15),
              details={"rates": rates, "clip_gflop_per_image": clip_flops / args.batch / 1e9})  # fmt: skip


def check_pretrain_reference(ctx: Context) -> list[Row]:
    """P1b: the step as before the lever (autocast, towers compiled), to see what the lever gave."""
    pt, steps = bench_module("pretrain_throughput"), bench_module("steps")
    args = _pretrain_args(ctx, "bf16", "units")
    trainer, batch, flops = pt.prepare("superclass", args, ctx.device)
    rate = statistics.median(steps.interleaved({"ref": (trainer, batch)}, args.steps, args.rounds, ctx.device)["ref"])
    mfu = pt.mfu(flops, args.batch, rate) if ctx.device.type == "cuda" else 0.0
    lever = ctx.results.get("P1", {}).get("images_per_s", 0.0)
    gain = f"; lever {lever / rate:.2f}x" if lever else ""
    return [Row("P1b", "P1's step under autocast, towers compiled (the lever's reference)", "P1 >= this",
                f"{rate:,.0f} img/s, MFU {100 * mfu:.1f}%{gain}", ctx.verdict(lever >= rate),
                details={"images_per_s": rate, "mfu": mfu})]  # fmt: skip


def check_data(ctx: Context) -> Iterator[Row]:
    """P3a (the training loader) and P3b (feature extraction, decode gpu vs cpu)."""
    dt, ft = bench_module("data_throughput"), bench_module("features_throughput")
    d, f = ctx.shapes["data"], ctx.shapes["features"]
    step = ctx.results.get("P1", {}).get("images_per_s") or REFERENCE_STEP_RATE
    with tempfile.TemporaryDirectory() as tmp:
        _, resized, _ = dt.prepare(Path(tmp), d["source"], d["unique"], 256)
        loader = dt.images_per_second(resized, d["workers"], d["images"], d["batch"], 224)
        yield Row("P3a", f"shard -> decode -> augment -> batch, {d['workers']} workers ({d['source']} px JPEGs, "
                  "pre-resized; cpu decode: the training stream has no --decode gpu)", "loader >= the P1 step rate",
                  f"{loader:,.0f} img/s vs step {step:,.0f} img/s", ctx.verdict(loader >= step),
                  details={"loader_images_per_s": loader, "step_images_per_s": step})  # fmt: skip
        root = ft.write_jpegs(Path(tmp) / "jpegs", f["unique"], f["source"])
        fargs = argparse.Namespace(images=f["images"], batch_size=f["batch"], bf16=ctx.device.type == "cuda",
                                   workers=f["workers"], decode="cpu,gpu")  # fmt: skip
        rows = ft.bench_arch(f["arch"], root, fargs, ctx.device)
    share = {r[2]: r[6] for r in rows}  # rows: (arch, precision, decode, extract, forward, data-only, share)
    extract = {r[2]: r[3] for r in rows}
    yield Row("P3b", f"feature extraction {f['arch']}, {f['workers']} workers, --decode gpu vs cpu",
              "data share < 20% of the bare forward (gpu decode)",
              f"gpu {100 * share['gpu']:.0f}% ({extract['gpu']:,.0f} img/s), cpu {100 * share['cpu']:.0f}% "
              f"({extract['cpu']:,.0f} img/s); forward {rows[0][4]:,.0f} img/s", ctx.verdict(share["gpu"] < 0.20),
              details={"rows": [list(r) for r in rows]})  # fmt: skip


def check_vqa(ctx: Context) -> list[Row]:
    """P4: batched VQA answering vs one at a time on the Vicuna-7B-shaped LLaVA."""
    ve, s = bench_module("vlm_eval_throughput"), ctx.shapes["vqa"]
    argv = ["--device", str(ctx.device), "--preset", s["preset"], "--questions", str(s["questions"]),
            "--baseline", str(s["baseline"]), "--batch", str(s["batch"]), "--max-new-tokens",
            str(s["max_new_tokens"]), "--rounds", str(s["rounds"])]  # fmt: skip
    m = ve.measure(ve.parse_args(argv))
    ok = m["batched_qps"] >= 50 and m["speedup"] >= 10 and m["agree"] == m["baseline_questions"]
    what = (f"LLaVA {s['preset']} (+ tower {ve.PRESETS[s['preset']][1]}), {m['prompt_tokens']}-token prompts, "
            f"{s['max_new_tokens']} new tokens: batched ({s['batch']}) vs one at a time")  # fmt: skip
    measured = (f"{m['batched_qps']:.1f} q/s, {m['speedup']:.1f}x, {m['agree']}/{m['baseline_questions']} "
                "answers identical")  # fmt: skip
    return [Row("P4", what, ">= 50 q/s (goal 90), >= 10x, answers identical", measured, ctx.verdict(ok), details=m)]


def _vlm_train(ctx: Context, row_id: str, mode: str) -> list[Row]:
    vt, s = bench_module("vlm_train_throughput"), ctx.shapes["vlm_train"]
    args = vt.parse_args(["--device", str(ctx.device), "--preset", s["preset"], "--tower", s["tower"], "--batch",
                          str(s["batch"]), "--seq", str(s["seq"]), "--steps", str(s["steps"]), "--rounds",
                          str(s["rounds"]), "--warmup", str(s["warmup"])])  # fmt: skip
    what = f"LLaVA {s['preset']} + {s['tower']} stage-2 step, {mode}, batch {s['batch']} x {s['seq']} tokens"
    row = Row(row_id, what, ">= 40% MFU")
    try:
        rate, flops, peak = vt.run_mode(args, mode, ctx.device)
    except torch.OutOfMemoryError:
        free_memory()
        row.measured, row.result = "out of memory on this GPU", "skipped" if mode == "full" else "FAIL"
        return [row]
    mfu = flops * rate / (args.batch * args.seq) / bench_module("steps").H200_MEASURED
    mfu = mfu if ctx.device.type == "cuda" else 0.0
    row.measured = f"{rate:,.0f} tokens/s, MFU {100 * mfu:.1f}%, peak {peak:.0f} GiB"
    row.result, row.details = ctx.verdict(mfu >= 0.40), {"tokens_per_s": rate, "flops_per_step": flops, "mfu": mfu}
    return [row]


def check_lora(ctx: Context) -> list[Row]:
    return _vlm_train(ctx, "P5", "lora")


def card_gib(device: torch.device) -> float | None:
    """The card's memory in GiB (None on the CPU): the H100 kind has ~79, the H200 ~140."""
    return torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else None


def check_full(ctx: Context) -> list[Row]:
    """P5f, on a card with room for it; on a smaller one an optional skipped row, before a 7B model is built."""
    gib = card_gib(ctx.device)
    if not ctx.dry and gib is not None and gib < FULL_FT_GIB:
        why = f"needs ~{FULL_FT_GIB} GiB, this card has {gib:.0f}: measure it on kind nvidia-h200"
        return [Row("P5f", *WHAT["P5f"], why, "skipped", details={"optional": True, "reason": why, "gib": gib})]
    return _vlm_train(ctx, "P5f", "full")


def check_pytest(ctx: Context) -> list[Row]:
    """pytest -m gpu over the test files that hold GPU tests (collecting all of tests/ imports every package)."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text())
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n", flush=True)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", last)}
    ok = proc.returncode == 0 and not counts.get("failed") and (ctx.dry or counts.get("passed", 0) > 0)
    row = Row("gpu", f"pytest -m gpu ({len(files)} files)", "all pass", last.strip("= ") or f"rc {proc.returncode}")
    row.result, row.details = ctx.verdict(ok), {"counts": counts, "returncode": proc.returncode, "files": files}
    return [row]


def check_caption(ctx: Context) -> list[Row]:
    """P6: a COCO-test-sized caption run end to end."""
    ct, s = bench_module("caption_throughput"), ctx.shapes["caption"]
    argv = ["--end-to-end", str(s["images"]), "--device", str(ctx.device), "--arch", s["arch"],
            "--batch", str(s["batch"]), "--workers", str(s["workers"])]  # fmt: skip
    argv += ["--gpt2-shape"] if s["gpt2_shape"] else []
    r = ct.end_to_end(ct.parse_args(argv))
    lm = "GPT-2-small body" if s["gpt2_shape"] else "tiny GPT-2"
    measured = (f"{r['total_s']:.1f} s (features {r['features_s']:.1f}, beam-5 {r['decode_s']:.1f}, "
                f"CIDEr {r['score_s']:.1f})")  # fmt: skip
    what = f"{r['images']} images: {s['arch']} features -> batched beam-5 ({lm}, batch {s['batch']}) -> CIDEr"
    return [Row("P6", what, "< 60 s", measured, ctx.verdict(r["total_s"] < 60), details=r)]


def check_lit(ctx: Context) -> list[Row]:
    """P7: LiT on cached features vs a full CLIP step."""
    lt, s = bench_module("lit_throughput"), ctx.shapes["lit"]
    argv = ["--device", str(ctx.device), "--arch", s["arch"], "--text", s["text"], "--batch", str(s["batch"]),
            "--steps", str(s["steps"]), "--rounds", str(s["rounds"])]  # fmt: skip
    med = lt.measure(lt.parse_args(argv))
    ratio = med["cached"] / med["clip"]
    measured = f"{ratio:.1f}x ({med['cached']:,.0f} vs {med['clip']:,.0f} img/s; live LiT {med['lit']:,.0f})"
    what = f"LiT step on cached features vs a full CLIP step, {s['arch']} + {s['text']}, batch {s['batch']}"
    return [Row("P7", what, ">= 5x", measured, ctx.verdict(ratio >= 5), details=med)]


def check_peers(ctx: Context) -> Iterator[Row]:
    """bench/peers.py's rows: a peer codebase's own code and ours on the same inputs, outputs compared."""
    pe = bench_module("peers")
    sizes = pe.SIZES["quick"] if ctx.shapes["peers"].get("quick") else ctx.shapes["peers"]
    for peer in pe.iter_rows(list(pe.ROWS), sizes, ctx.device, {}):
        row = Row(peer.name, peer.what or WHAT[peer.name][0], WHAT[peer.name][1], peer.detail)
        if peer.equal is None:  # its venv is not given here: not a failure of the run
            row.result, row.details = "skipped", {"optional": True, "reason": peer.detail}
            yield row
            continue
        row.measured = f"{peer.ratio:.2f}x ({peer.ours:,.1f} vs {peer.theirs:,.1f} {peer.unit}); {peer.detail}"
        row.result = ctx.verdict(bool(peer.equal) and peer.ratio >= 1.0)
        row.details = {"ours": peer.ours, "theirs": peer.theirs, "unit": peer.unit, "equal": peer.equal,
                       "ratio": peer.ratio, **peer.figures}  # fmt: skip
        yield row


CHECKS = [  # priority order; limits sized for the H200/H100 (inductor: ~1 min per model, cold, there)
    Check(("env",), check_env, 30, 0),
    Check(("P1", "P2"), check_pretrain, 240, 120),
    Check(("P3a", "P3b"), check_data, 90, 40),
    Check(("P4",), check_vqa, 100, 50),
    Check(("P5",), check_lora, 80, 40),
    Check(("gpu",), check_pytest, 70, 25),
    Check(("P5f",), check_full, 80, 50),
    Check(("P6",), check_caption, 90, 60),
    Check(("P7",), check_lit, 60, 30),
    Check(("openclip", "llava_eval", "llava_train", "lmms_eval"), check_peers, 90, 30),
    Check(("P1b",), check_pretrain_reference, 120, 75),
]
WHAT = {  # row texts for checks that did not run (the checks write their own when they do)
    "env": ("GPU and the packages the checks import", "a CUDA device; every import works"),
    "P1": ("SuperClass B/16 @ 224, bf16 weight copies, compiled with its loss, training step", ">= 50% MFU"),
    "P2": ("same step, SuperClass vs CLIP", ">= 1.15x images/s"),
    "P3a": ("shard -> decode -> augmented batch, 16 workers", "loader >= the P1 step rate"),
    "P3b": ("feature extraction, --decode gpu vs cpu, 16 workers", "data share < 20% of the bare forward"),
    "P4": ("Vicuna-7B-shaped LLaVA + L/14-336: batched VQA vs one at a time", ">= 50 q/s, >= 10x, identical"),
    "P5": ("same model, stage-2 step, LoRA", ">= 40% MFU"),
    "gpu": ("pytest -m gpu", "all pass"),
    "P5f": ("same model, stage-2 step, full fine-tuning (if it fits)", ">= 40% MFU"),
    "P6": ("5k images: features -> batched beam-5 -> CIDEr", "< 60 s"),
    "P7": ("LiT step with cached features vs a full CLIP step, B/16", ">= 5x"),
    "openclip": ("OpenCLIP's CLIP step (train_one_epoch) vs our clip task, B/16 + text_b", "equal loss, >= 1.0x"),
    "llava_eval": ("LLaVA's model_vqa_loader loop vs superclass eval vqav2 run", "same answers, >= 1.0x"),
    "llava_train": ("LLaVA's LlavaLlamaForCausalLM stage-2 step vs LlavaTask", "equal loss, >= 1.0x"),
    "lmms_eval": ("lmms-eval llava_hf vs superclass eval vqav2 run", "same answers, >= 1.0x"),
    "P1b": ("P1's step under autocast, towers compiled (reference)", "P1 >= this"),
}


# ------------------------------------------------------------------------------------------------------ runner
def _on_alarm(signum: int, frame: Any) -> None:
    raise CheckTimeout


def _unfinished(ids: tuple[str, ...], measured: str, result: str, since: float) -> list[Row]:
    return [Row(i, *WHAT[i], measured, result, time.monotonic() - since) for i in ids]


def run_check(check: Check, ctx: Context, budget_end: float) -> list[Row]:
    """The check's rows; an exception or a timeout becomes their result instead of ending the run."""
    left = budget_end - time.monotonic()
    if left < check.need_s:
        return [Row(i, *WHAT[i], f"{left:.0f} s left, needs {check.need_s:.0f}", "skipped") for i in check.ids]
    limit = max(1.0, min(check.limit_s, left - 5.0))
    log(f"{'/'.join(check.ids)}: start (limit {limit:.0f} s)")
    start = mark = time.monotonic()
    rows: list[Row] = []
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        for row in check.fn(ctx):
            row.seconds, mark = time.monotonic() - mark, time.monotonic()
            rows.append(row)
    except CheckTimeout:
        rows += _unfinished(check.ids[len(rows) :], f"stopped at the check's {limit:.0f} s limit", "timeout", mark)
    except Exception as exc:  # noqa: BLE001 - a failing check is a row; the others still run
        traceback.print_exc()
        line = (str(exc).strip().splitlines() or [""])[0][:200]
        rows += _unfinished(check.ids[len(rows) :], f"{type(exc).__name__}: {line}", "error", mark)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        free_memory()
    log(f"{'/'.join(check.ids)}: {', '.join(f'{r.id} {r.result}' for r in rows)} ({time.monotonic() - start:.0f} s)")
    return rows


def table(rows: list[Row]) -> str:
    cell = lambda text: str(text).replace("|", "/")  # noqa: E731 - keeps a cell from splitting the row
    lines = ["| id | what | measured | target | result | s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.id} | {cell(r.what)} | {cell(r.measured)} | {cell(r.target)} | {r.result} | {r.seconds:.0f} |"
              for r in rows]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, rows: list[Row], ctx: Context) -> None:
    """The JSON and the table, rewritten whole after each check (temp file + rename)."""
    report = {
        "issue": 18,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dry_run": ctx.dry,
        "device": torch.cuda.get_device_name(ctx.device) if ctx.device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
        "budget_s": ctx.args.budget,
        "elapsed_s": round(time.monotonic() - START, 1),
        "shapes": ctx.shapes,
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    texts = {"gpu_acceptance.json": json.dumps(report, indent=2, default=str), "gpu_acceptance.md": table(rows)}
    for name, text in texts.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_acceptance", help="default: $OUT")
    parser.add_argument("--budget", type=float, default=0, help="seconds for all checks (default 500; dry run 600)")
    parser.add_argument("--only", default="", help="comma-separated check ids to run (e.g. P1,P4); env always runs")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU: proves the code paths")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.budget = args.budget or (600.0 if args.dry_run else 500.0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu") if args.dry_run else torch.device("cuda", 0)
    ctx = Context(args, device, DRY if args.dry_run else REAL)
    only = {i.strip() for i in args.only.split(",") if i.strip()}
    budget_end = START + args.budget
    signal.signal(signal.SIGALRM, _on_alarm)
    card = "dry run, CPU" if args.dry_run else f"{torch.cuda.get_device_name(device)}, {card_gib(device):.0f} GiB"
    log(f"gpu acceptance ({card}), budget {args.budget:.0f} s, out {out}")
    rows: list[Row] = []
    for check in CHECKS:
        if only and check.ids[0] != "env" and not only & set(check.ids):
            continue
        rows += run_check(check, ctx, budget_end)
        with contextlib.suppress(OSError):
            write_outputs(out, rows, ctx)
    write_outputs(out, rows, ctx)
    where = "dry run (tiny shapes, CPU)" if args.dry_run else torch.cuda.get_device_name(device)
    print(f"\nGPU acceptance, {where}, {time.monotonic() - START:.0f} s; figures in {out}/gpu_acceptance.json\n")
    print(table(rows), flush=True)
    optional = lambda r: r.result == "skipped" and r.details.get("optional")  # noqa: E731 - a peer venv not given
    return 0 if all(r.result in ("pass", "ran") or optional(r) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

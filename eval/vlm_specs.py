"""The registry entries of VQAv2, TextVQA and MMBench, and the import that registers every other benchmark module.

The suite runs the benchmarks in the order of the SuperClass paper's Table 11 (VQAv2, GQA, VizWiz, ScienceQA,
POPE, MMMU, TextVQA, MMBench), then LLaVA-1.5's extra MME and SEED-Bench. Published numbers: `superclass_table11`
is SuperClass's row of Table 11 (arXiv 2411.03313), `llava15_7b` LLaVA-1.5-7B's (the LLaVA README / MODEL_ZOO).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

from eval.vlm_registry import SUITES, BenchmarkSpec, register


def _first(folder: Path, *names: str) -> Path | None:
    """The first of `names` (glob patterns) present in `folder`."""
    for name in names:
        found = sorted(folder.glob(name))
        if found:
            return found[0]
    return None


# ----------------------------------------------------------------------------------------------- VQAv2
def _vqav2_args(p: argparse.ArgumentParser) -> None:
    from eval.vqa_metric import NORMALIZATIONS

    p.add_argument(
        "--questions",
        type=Path,
        help="official question JSON (v2_OpenEnded_mscoco_*_questions.json) or LLaVA's question JSONL "
        "(llava_vqav2_mscoco_test-dev2015.jsonl; its text is the prompt, verbatim)",
    )
    p.add_argument("--annotations", type=Path, help="official annotation JSON (val); without it: submission only")
    _common_vqa_args(p, "official", NORMALIZATIONS)


def _common_vqa_args(p: argparse.ArgumentParser, normalize: str, choices: Any) -> None:
    p.add_argument("--image-root", type=Path, help="image folder (COCO root or train_images); needed by run")
    p.add_argument("--parquet", type=Path, help="an lmms-lab parquet file or folder instead (needs pyarrow)")
    p.add_argument("--split", help="with a --parquet folder: the split's file-name prefix (validation, testdev, test)")
    p.add_argument("--normalize", default=normalize, choices=choices, help=f"default: {normalize}")


def _needs_images(args: argparse.Namespace, run: bool) -> None:
    from pretrain.runtime.errors import UserError

    if run and getattr(args, "parquet", None) is None and args.image_root is None:
        raise UserError(f"{args.bench} run needs --image-root (or --parquet with the images inside)")


def _vqav2(args: argparse.Namespace, run: bool) -> Any:
    from eval.vlm_bench import vqav2_benchmark

    _needs_images(args, run)
    return vqav2_benchmark(
        args.questions, args.annotations, args.image_root, args.normalize, args.limit, args.parquet, args.split
    )


def _vqav2_suite(folder: Path) -> dict[str, Any] | None:
    llava = folder / "llava_vqav2_mscoco_test-dev2015.jsonl"
    if llava.is_file() and (folder / "test2015").is_dir():  # LLaVA's eval layout: test-dev, EvalAI submission
        return {"questions": llava, "image_root": folder / "test2015"}
    questions = _first(folder, "v2_OpenEnded_mscoco_val2014_questions.json")
    annotations = _first(folder, "v2_mscoco_val2014_annotations.json")
    if questions and annotations and (folder / "val2014").is_dir():
        return {"questions": questions, "annotations": annotations, "image_root": folder}
    return None


register(
    BenchmarkSpec(
        name="vqav2",
        help="VQAv2: soft VQA accuracy (official normalisation), EvalAI submission for test-dev/test",
        add_args=_vqav2_args,
        build=_vqav2,
        max_new_tokens_help="default: 16, as lmms-eval's vqav2, ample for the single word or phrase asked for "
        "(LLaVA's model_vqa_loader allows 128; pass 128 to match it exactly)",
        suite_args=_vqav2_suite,
        folder="vqav2",
        files="LLaVA's eval.zip (llava_vqav2_mscoco_test-dev2015.jsonl) + COCO test2015, or the official val2014 "
        "questions/annotations + COCO val2014 (visualqa.org)",
        published={"superclass_table11": 75.24, "llava15_7b": 78.5},
    )
)


# ----------------------------------------------------------------------------------------------- TextVQA
def _textvqa_args(p: argparse.ArgumentParser) -> None:
    from eval.vqa_data import TEXTVQA_PROMPTS
    from eval.vqa_metric import NORMALIZATIONS

    p.add_argument(
        "--data",
        type=Path,
        help="official TextVQA JSON (TextVQA_0.5.1_val.json) or LLaVA's question JSONL "
        "(llava_textvqa_val_v051_ocr.jsonl, with --annotations)",
    )
    p.add_argument(
        "--annotations",
        type=Path,
        help="with a LLaVA JSONL in --data: TextVQA_0.5.1_val.json, matched by (image, question) as LLaVA does",
    )
    p.add_argument("--prompt", default="llava", choices=TEXTVQA_PROMPTS, help="llava: with OCR tokens (default)")
    _common_vqa_args(p, "evalai", NORMALIZATIONS)


def _textvqa(args: argparse.Namespace, run: bool) -> Any:
    from eval.vlm_bench import textvqa_benchmark

    _needs_images(args, run)
    return textvqa_benchmark(
        args.data, args.image_root, args.prompt, args.normalize, args.limit, args.parquet, args.split, args.annotations
    )


def _textvqa_suite(folder: Path) -> dict[str, Any] | None:
    official = folder / "TextVQA_0.5.1_val.json"
    if not official.is_file() or not (folder / "train_images").is_dir():
        return None
    llava = folder / "llava_textvqa_val_v051_ocr.jsonl"
    if llava.is_file():
        return {"data": llava, "annotations": official, "image_root": folder / "train_images"}
    return {"data": official, "image_root": folder / "train_images"}


register(
    BenchmarkSpec(
        name="textvqa",
        help="TextVQA: VQA accuracy with the EvalAI processor; LLaVA (OCR tokens) or lmms-eval prompt",
        add_args=_textvqa_args,
        build=_textvqa,
        max_new_tokens_help="default: 16, ample for the single word or phrase asked for (LLaVA's model_vqa_loader "
        "allows 128, lmms-eval the model's default, 1024 for llava_hf); pass those to match them exactly",
        suite_args=_textvqa_suite,
        folder="textvqa",
        files="TextVQA_0.5.1_val.json + train_images (textvqa.org), and LLaVA's llava_textvqa_val_v051_ocr.jsonl",
        published={"superclass_table11": 39.20, "llava15_7b": 58.2},
    )
)


# ----------------------------------------------------------------------------------------------- MMBench
def _mmbench_args(p: argparse.ArgumentParser) -> None:
    from eval.mmbench import CIRCULAR_MODES, MMBENCH_PROMPTS

    p.add_argument("--tsv", required=True, type=Path, help="official MMBench TSV (base64 images)")
    p.add_argument("--prompt", default="llava", choices=MMBENCH_PROMPTS, help="prompt layout (default: llava)")
    p.add_argument("--circular", default="auto", choices=CIRCULAR_MODES, help="auto: the TSV's copies or rotations")


def _mmbench(args: argparse.Namespace, run: bool) -> Any:
    from eval.vlm_bench import mmbench_benchmark

    return mmbench_benchmark(args.tsv, args.prompt, args.circular, args.limit)


def _mmbench_suite(folder: Path) -> dict[str, Any] | None:
    tsv = _first(folder, "mmbench_dev_20230712.tsv", "mmbench_dev*.tsv", "MMBench_DEV_EN*.tsv")
    return {"tsv": tsv} if tsv else None


register(
    BenchmarkSpec(
        name="mmbench",
        help="MMBench: CircularEval accuracy from letters read without an API; OpenCompass submission",
        add_args=_mmbench_args,
        build=_mmbench,
        max_new_tokens_help="default: 16, ample for the option letter asked for (LLaVA's model_vqa_mmbench and "
        "lmms-eval's mmbench allow 1024); pass 1024 to match them exactly",
        suite_args=_mmbench_suite,
        folder="mmbench",
        files="mmbench_dev_20230712.tsv (the MMBench repository / OpenCompass)",
        published={"superclass_table11": 63.14, "llava15_7b": 64.3},
    )
)

# The benchmark modules register themselves on import; the suite runs them in this order.
BENCHMARK_MODULES = ("gqa", "vizwiz", "scienceqa", "pope", "mmmu", "mme", "seedbench")
for _module in BENCHMARK_MODULES:
    importlib.import_module(f"eval.{_module}")
SUITES["llava15"] = ("vqav2", "gqa", "vizwiz", "scienceqa", "pope", "mmmu", "textvqa", "mmbench", "mme", "seedbench")

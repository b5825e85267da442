"""Questions/s of `generate_answers` (sorted left-padded batches, KV cache) vs one-at-a-time HF generate, one run.

usage: python bench/vlm_eval_throughput.py [--device cpu] [--preset tiny|vicuna7b] [--questions N] [--baseline N]
                                          [--batch 32] [--max-new-tokens 8] [--rounds 3]
GPU:   python bench/vlm_eval_throughput.py --device cuda --preset vicuna7b --batch 32

Both modes answer the same VQA-style requests (vicuna_v1 prompt, one in-memory 640x480 image each, so image
preprocessing is timed but not JPEG decoding); the one-at-a-time baseline (LLaVA's own eval loop: batch 1) runs on
the first `--baseline` of them. Model loading is not timed. `--preset vicuna7b` (use with `--device cuda`) builds a
LLaVA-1.5-7B-shaped model with random bf16 weights directly on the GPU (Vicuna-7B body, vocab 32,064, CLIP-L/14-336
tower: 576 image tokens); nothing is downloaded. Its tokenizer is the tiny BPE, so text prompts are shorter than
Vicuna's (the 576 image tokens dominate either way), and random weights rarely emit EOS, so every answer runs to
`--max-new-tokens` (real VQAv2 answers stop after 2-4 tokens): the figures are for full-length answers.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from llava_shapes import TOWERS, random_llava
from PIL import Image

from eval.vlm.generation import GenerationConfig, Request, generate_answers, generate_one_by_one
from vlm.templates import SHORT_ANSWER_PROMPT, VICUNA_SYSTEM, generation_prompt
from vlm.tiny_llama import build_tiny_tokenizer

VQAV2_TEST_DEV = 107_394
PRESETS = {  # preset -> (LLM, tower, questions in the batched run, questions in the one-at-a-time run)
    "tiny": ("tiny", "tiny", 64, 64),
    "vicuna7b": ("vicuna7b", "l14", 512, 32),
}
QUESTIONS = [
    "What color is the bus?",
    "How many people are in the picture?",
    "Is the man on the left holding an umbrella?",
    "What sport is being played?",
    "What is on the table next to the laptop?",
    "Are there any clouds in the sky?",
    "What room is this?",
    "What is the woman in the red jacket looking at?",
]


def build_llava(preset: str, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """A random LLaVA of `preset` built on `device` in `dtype` (no disk, no download) and its processor."""
    from transformers import CLIPImageProcessor, LlavaProcessor

    llm, tower = PRESETS[preset][:2]
    tokenizer = build_tiny_tokenizer([VICUNA_SYSTEM, SHORT_ANSWER_PROMPT, *QUESTIONS] * 4, vocab=500)
    ids = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    model = random_llava(llm, tower, device, dtype, image_token, len(tokenizer), **ids).eval()
    size, patch = TOWERS[tower]["image_size"], TOWERS[tower]["patch_size"]
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)  # fmt: skip
    return model, processor


def make_requests(n: int, seed: int = 0) -> list[Request]:
    """`n` VQAv2-style requests, each with its own random 640x480 image held in memory."""
    rng = np.random.default_rng(seed)
    requests = []
    for i in range(n):
        image = Image.fromarray(rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8))
        prompt = generation_prompt(f"{QUESTIONS[i % len(QUESTIONS)]}\n{SHORT_ANSWER_PROMPT}")
        requests.append(Request(i, prompt, lambda image=image: image))
    return requests


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_at_a_time(model: Any, processor: Any, requests: list[Request], max_new_tokens: int) -> tuple[dict, float]:
    """Answers and questions/s of the batch-1 reference loop."""
    _sync(model.device)
    start = time.perf_counter()
    answers = {r.id: generate_one_by_one(model, processor, r, max_new_tokens) for r in requests}
    _sync(model.device)
    return answers, len(requests) / (time.perf_counter() - start)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Build the preset's model, then run the batched and the one-at-a-time modes `args.rounds` times, alternating.

    Returns the medians (q/s), the agreement of the two modes' answers and the shapes, for `main` or a caller.
    """
    device = torch.device(args.device)
    dtype_name = args.dtype if args.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    n = args.questions or PRESETS[args.preset][2]
    n_base = min(n, args.baseline or PRESETS[args.preset][3])
    start = time.perf_counter()
    model, processor = build_llava(args.preset, device, dtype)
    params = sum(p.numel() for p in model.parameters())
    build_s = time.perf_counter() - start
    print(f"built {args.preset} ({params / 1e9:.2f}B params) on {device} in {build_s:.0f}s")
    requests = make_requests(n)
    generate_one_by_one(model, processor, requests[0], args.max_new_tokens)  # warm-up (kernels, allocator)
    cfg = GenerationConfig(batch_size=args.batch, max_new_tokens=args.max_new_tokens, device=args.device,
                           dtype=dtype_name, progress=False)  # fmt: skip
    batched_rates, single_rates = [], []
    for r in range(args.rounds):  # alternate the two modes so drifting machine load hits both alike
        with tempfile.TemporaryDirectory() as tmp:
            batched, stats = generate_answers(
                "(in memory)", requests, Path(tmp) / "p.jsonl", cfg, loaded=(model, processor)
            )
        batched_rates.append(stats.questions_per_s)
        reference, rate = one_at_a_time(model, processor, requests[:n_base], args.max_new_tokens)
        single_rates.append(rate)
        print(f"round {r}: batched {batched_rates[-1]:.2f} q/s, one at a time {rate:.2f} q/s")
    prompt_tokens = len(processor(images=[requests[0].image()], text=[requests[0].prompt])["input_ids"][0])
    batched_rate, single_rate = statistics.median(batched_rates), statistics.median(single_rates)
    return {
        "preset": args.preset, "device": str(device), "dtype": dtype_name, "params": params, "build_s": build_s,
        "questions": n, "baseline_questions": n_base, "batch": args.batch, "max_new_tokens": args.max_new_tokens,
        "prompt_tokens": prompt_tokens, "rounds": args.rounds, "batched_qps": batched_rate,
        "single_qps": single_rate, "speedup": batched_rate / single_rate,
        "agree": sum(batched[k] == v for k, v in reference.items()),
    }  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--questions", type=int, default=0, help="batched run size (0 = the preset's)")
    parser.add_argument("--baseline", type=int, default=0, help="one-at-a-time subset size (0 = the preset's)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--dtype", default="auto", help="auto: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the table shows medians")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    m = measure(args)
    print(f"preset {m['preset']}, device {m['device']}, {m['dtype']}, {m['prompt_tokens']} prompt tokens (image "
          f"included), {m['max_new_tokens']} new tokens max")  # fmt: skip
    print(f"medians of {m['rounds']} round(s)")
    print(f"{'mode':<22} {'questions':>9} {'q/s':>9} {'VQAv2 test-dev, 1 device':>26}")
    rows = ((f"batched ({m['batch']})", m["questions"], m["batched_qps"]),
            ("one at a time", m["baseline_questions"], m["single_qps"]))  # fmt: skip
    for name, count, rate in rows:
        print(f"{name:<22} {count:>9} {rate:>9.2f} {VQAV2_TEST_DEV / rate / 3600:>24.2f} h")
    print(f"speed-up               {m['speedup']:.2f}x")
    print(f"agreement              {m['agree']}/{m['baseline_questions']} answers identical (batched vs one at a time)")


if __name__ == "__main__":
    main()

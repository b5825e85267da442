"""Captions/s of batched beam-5 decoding vs one image at a time (ClipCap mapper + tiny GPT-2, CPU by default).

usage: python bench/caption_throughput.py [--images 64] [--beam 5] [--batch 32] [--lm DIR] [--device cpu] [--gpt2-shape]

`--gpt2-shape` builds a random LM with GPT-2 small's body (the hub is not reachable on the benchmark machines); its
vocabulary is the tiny tokenizer's, so the per-step softmax is smaller than GPT-2's 50,257 entries.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from captioning.decode import DecodeConfig, caption_features
from captioning.model import CaptionModelConfig, ClipCapModel, load_lm, load_tokenizer
from captioning.tiny_lm import build_tiny_lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=20)
    parser.add_argument("--lm", default="", help="HF causal LM name or dir ('' = a tiny random GPT-2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpt2-shape", action="store_true", help="random LM with GPT-2's body (768 wide, 12 layers)")
    args = parser.parse_args()
    shape = {"width": 768, "layers": 12, "heads": 12} if args.gpt2_shape else {"width": 64}
    lm_name = args.lm or str(build_tiny_lm(["a red circle on the left"] * 8, tempfile.mkdtemp(), **shape))
    torch.manual_seed(0)
    cfg = CaptionModelConfig(lm=lm_name, mapper="mlp", prefix_length=10)
    model = ClipCapModel(cfg, 256, load_lm(lm_name)).to(args.device).eval()
    tokenizer = load_tokenizer(lm_name)
    feats = torch.randn(args.images, 256)
    rates = {}
    for name, batch in (("batched", args.batch), ("one_at_a_time", 1)):
        dcfg = DecodeConfig(beam=args.beam, max_tokens=args.max_tokens, stop="", batch_size=batch)
        start = time.perf_counter()
        caption_features(model, tokenizer, feats, dcfg)
        rates[name] = args.images / (time.perf_counter() - start)
    print(f"beam {args.beam}, {args.images} images, device {args.device}, max {args.max_tokens} tokens")
    for name, rate in rates.items():
        print(f"{name:<14} {rate:8.1f} captions/s")
    print(f"speed-up       {rates['batched'] / rates['one_at_a_time']:8.2f}x")


if __name__ == "__main__":
    main()

"""Captions/s of batched beam-5 decoding vs one image at a time (ClipCap mapper + tiny GPT-2, CPU by default), or
a COCO-test-sized caption run end to end (`--end-to-end N`: features -> batched beam-5 -> CIDEr, timed per stage).

usage: python bench/caption_throughput.py [--images 64] [--beam 5] [--batch 32] [--lm DIR] [--device cpu] [--gpt2-shape]
       python bench/caption_throughput.py --end-to-end 5000 --device cuda --gpt2-shape --arch vit_b16 --batch 256

`--gpt2-shape` builds a random LM with GPT-2 small's body (the hub is not reachable on the benchmark machines); its
vocabulary is the tiny tokenizer's, so the per-step softmax is smaller than GPT-2's 50,257 entries. The end-to-end
run captions N procedural images held in memory (no JPEG decoding) with a random encoder of `--arch`, so every
caption runs to `--max-tokens`; the score is pycocoevalcap's CIDEr(-D) alone over 5 references per image, on the
simple tokenizer (no Java: PTB, METEOR and SPICE are `superclass caption score`'s): a timing, not a quality figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import torch

from captioning.decode import DecodeConfig, caption_features
from captioning.model import CaptionModelConfig, ClipCapModel, load_lm, load_tokenizer
from captioning.tiny_gpt2 import build_tiny_lm


def build_captioner(args: argparse.Namespace, feature_dim: int) -> tuple[ClipCapModel, Any]:
    """A ClipCap MLP mapper over a random LM (tiny, or GPT-2 small's body with `--gpt2-shape`) on `args.device`."""
    shape = {"width": 768, "layers": 12, "heads": 12} if args.gpt2_shape else {"width": 64}
    lm_name = args.lm or str(build_tiny_lm(["a red circle on the left"] * 8, tempfile.mkdtemp(), **shape))
    torch.manual_seed(0)
    cfg = CaptionModelConfig(lm=lm_name, mapper="mlp", prefix_length=10)
    return ClipCapModel(cfg, feature_dim, load_lm(lm_name)).to(args.device).eval(), load_tokenizer(lm_name)


def decode_rates(args: argparse.Namespace) -> dict[str, float]:
    """Captions/s of batched decoding (`args.batch` images at a time) and of one image at a time."""
    model, tokenizer = build_captioner(args, 256)
    feats = torch.randn(args.images, 256)
    rates = {}
    for name, batch in (("batched", args.batch), ("one_at_a_time", 1)):
        dcfg = DecodeConfig(beam=args.beam, max_tokens=args.max_tokens, stop="", batch_size=batch)
        start = time.perf_counter()
        caption_features(model, tokenizer, feats, dcfg)
        rates[name] = args.images / (time.perf_counter() - start)
    return rates


def end_to_end(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per stage of captioning `args.end_to_end` images: encoder features, batched beam search, CIDEr."""
    from pycocoevalcap.cider.cider import Cider

    from captioning.data import synthetic_images
    from captioning.score import check_ids, simple_tokenize
    from pretrain.encoder import Encoder, default_preprocess
    from pretrain.features import compute_features
    from pretrain.models.backbone import build_backbone
    from pretrain.models.presets import get_preset

    split = synthetic_images(args.end_to_end, seed=1, size=64, references=5)  # the test split's stand-in
    arch = get_preset(args.arch)
    encoder = Encoder(build_backbone(arch), arch, {"preprocessing": default_preprocess(arch)}).to(args.device).eval()
    model, tokenizer = build_captioner(args, arch.width)
    times: dict[str, float] = {}
    start = time.perf_counter()
    features = compute_features(encoder, split.images, ("default",), 256, args.workers, args.device).get("default")
    times["features_s"] = time.perf_counter() - start
    dcfg = DecodeConfig(beam=args.beam, max_tokens=args.max_tokens, stop=".", batch_size=args.batch)
    captions = caption_features(model, tokenizer, features, dcfg)
    times["decode_s"] = time.perf_counter() - start - times["features_s"]
    refs = {i: split.captions[key] for i, key in enumerate(split.keys)}
    results = {i: [c] for i, c in enumerate(captions)}
    check_ids(results, refs)
    cider = float(Cider().compute_score(simple_tokenize(refs), simple_tokenize(results))[0])  # CIDEr-D alone
    times["total_s"] = time.perf_counter() - start
    times["score_s"] = times["total_s"] - times["features_s"] - times["decode_s"]
    return {"images": len(captions), "cider": cider, **times}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=20)
    parser.add_argument("--lm", default="", help="HF causal LM name or dir ('' = a tiny random GPT-2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpt2-shape", action="store_true", help="random LM with GPT-2's body (768 wide, 12 layers)")
    parser.add_argument("--end-to-end", type=int, default=0, metavar="N", help="caption N images end to end instead")
    parser.add_argument("--arch", default="vit_tiny", help="--end-to-end: the encoder preset (GPU: vit_b16)")
    parser.add_argument("--workers", type=int, default=0, help="--end-to-end: feature DataLoader workers")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_args()
    if args.end_to_end:
        r = end_to_end(args)
        print(f"{r['images']} images, {args.arch} features, beam {args.beam}, batch {args.batch}, {args.device}")
        print(f"features {r['features_s']:.1f} s, decode {r['decode_s']:.1f} s, score {r['score_s']:.1f} s: "
              f"{r['total_s']:.1f} s in all; CIDEr {r['cider']:.3f} (random weights)")  # fmt: skip
        return
    rates = decode_rates(args)
    print(f"beam {args.beam}, {args.images} images, device {args.device}, max {args.max_tokens} tokens")
    for name, rate in rates.items():
        print(f"{name:<14} {rate:8.1f} captions/s")
    print(f"speed-up       {rates['batched'] / rates['one_at_a_time']:8.2f}x")


if __name__ == "__main__":
    main()

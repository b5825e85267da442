"""`superclass demo [--out DIR]`: the chain on synthetic data, on CPU, in minutes, with a report.

Stages: (1) write synthetic captioned images as webdataset shards; (2) pretrain a tiny SuperClass and
a tiny CLIP encoder on them with the shared runtime; (3) check what each objective learned on held-out
images (SuperClass: does its head rank the image's colour word first among the colour words; CLIP:
image-to-text retrieval); (4) probe both frozen encoders on a held-out attribute task (linear probe and
10-shot); (5) LiT on each encoder: zero-shot colour classes and retrieval; (6) ClipCap with a tiny LM: CIDEr;
(7) LLaVA-1.5 (a text stage for the tiny LLaMA, once, then both stages) on each encoder, scored on synthetic
VQAv2, MMBench, POPE and ScienceQA files by the benchmark code, next to a text-only baseline (the most common
training answer to the same question); (8) a gallery of held-out images with each encoder's ClipCap caption and LLaVA
answers beside the truth.
Writes DIR/report.md and DIR/report.html (the same report, its pictures embedded), DIR/loss_curves.png,
DIR/stage_loss_curves.png, the gallery's images under DIR/gallery/, and each encoder artifact under
DIR/<method>/encoder. Each stage lives in its own module of this package; this one runs them in order.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from pretrain.data.synthetic import write_shards
from pretrain.recipes import get_recipe
from pretrain.runtime.cli import one_line_errors, run_cli
from superclass.demo.caption import caption_stage
from superclass.demo.config import IMAGE_SIZE, DemoConfig
from superclass.demo.gallery import GALLERY_DIR, EncoderModels, build_gallery, gallery_markdown
from superclass.demo.lit import lit_stage
from superclass.demo.pretrain import pretrain_stage
from superclass.demo.probes import probe_stage
from superclass.demo.report import Report, plot_loss_curves
from superclass.demo.vlm import LlavaInputs, prepare_llava, vlm_stage

# what run_demo writes under --out, besides the report files
DEMO_DIRS = ("data", "superclass", "clip", "llava", GALLERY_DIR)
DEMO_FILES = ("report.md", "report.html", "loss_curves.png", "stage_loss_curves.png")


def clear_previous_demo(out: Path) -> None:
    """Remove an earlier demo's outputs under `out` (only the demo's own names), so a rerun starts fresh.

    The runs refuse a fresh start into a directory that holds another run's checkpoints; the demo always starts over.
    """
    for name in DEMO_DIRS:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    for name in DEMO_FILES:
        (out / name).unlink(missing_ok=True)


def run_demo(cfg: DemoConfig) -> Report:
    """Every stage in order; returns the report (also written to cfg.out)."""
    start = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    clear_previous_demo(cfg.out)
    shards = write_shards(
        cfg.out / "data" / "shards", cfg.samples, max(cfg.samples // 8, 1), seed=0, image_size=IMAGE_SIZE
    )
    pattern = str(shards[0].parent / f"{{{shards[0].stem}..{shards[-1].stem}}}.tar")
    report = Report(title="SuperClass toolkit demo (synthetic data, CPU)")
    runs: dict[str, Path] = {}
    models: list[EncoderModels] = []
    llava: LlavaInputs | None = None
    for name in ("superclass_tiny", "clip_tiny"):
        encoder = pretrain_stage(report, name, cfg, Path(pattern))
        runs[name] = encoder.run_dir
        method, artifact = encoder.method, encoder.artifact
        probe_stage(report, method, artifact, cfg)
        lit_stage(report, method, artifact, cfg)
        captions = caption_stage(report, method, artifact, cfg)
        llava = llava or prepare_llava(cfg, artifact)  # once: its LLaMA serves both encoders
        models.append(EncoderModels(method, captions, vlm_stage(report, method, artifact, cfg, llava)))
    plot_loss_curves(runs, cfg.out / "loss_curves.png")
    report.figures.append(("Training loss of the two tiny encoders", "loss_curves.png"))
    _plot_stage_losses(report, cfg, [m.method for m in models])
    print(f"[demo] gallery: {cfg.gallery_images} held-out images, each encoder's caption and answers ...", flush=True)
    gallery = gallery_markdown(build_gallery(cfg.out, cfg.gallery_images, models))
    report.sections = _notes(cfg, time.perf_counter() - start) + _gap_note(report, cfg) + report.sections
    report.sections.append(
        "- Chat with the two LLaVA models side by side in a browser (`pip install -e '.[serve]'`): "
        f"`superclass vlm serve --model {models[0].llava_dir} --model {models[1].llava_dir}`"
    )
    report.sections += ["", *gallery]
    report.write(cfg.out)
    return report


def _plot_stage_losses(report: Report, cfg: DemoConfig, methods: list[str]) -> None:
    """The LiT, ClipCap and LLaVA stage-2 training losses of each encoder (their run dirs' metrics.jsonl)."""
    stages = {"LiT": "lit", "ClipCap": "caption", "LLaVA stage 2": "llava/stage2"}
    runs = {
        f"{stage} ({method})": cfg.out / method / sub
        for method in methods
        for stage, sub in stages.items()
        if (cfg.out / method / sub / "metrics.jsonl").is_file()
    }
    if runs:
        plot_loss_curves(runs, cfg.out / "stage_loss_curves.png", "training loss per stage", columns=len(stages))
        caption = "Training loss of LiT, ClipCap and LLaVA stage 2 on each encoder"
        report.figures.append((caption, "stage_loss_curves.png"))


def _gap_note(report: Report, cfg: DemoConfig) -> list[str]:
    """This run's SuperClass - CLIP probe gap, and where its spread and cause are measured."""
    probe = {(r.model, r.metric): r.value for r in report.rows if r.stage == "probe"}
    metric = f"linear probe top-1, {cfg.attribute} (%)"
    if ("superclass", metric) not in probe or ("clip", metric) not in probe:
        return []
    gap = probe[("superclass", metric)] - probe[("clip", metric)]
    lr = get_recipe("superclass_tiny").optim.lr
    return [
        "## SuperClass vs CLIP here",
        "",
        f"The two recipes differ only in the objective (same ViT, data, batch, {cfg.steps} steps, lr {lr:g}: the"
        f" validation pick of `superclass pretrain sweep demo_fair` for both). This run's colour linear-probe gap,"
        f" SuperClass minus CLIP: {gap:+.1f} points (one seed). `superclass pretrain sweep demo_gap` measures its"
        " spread over seeds and its cause, one candidate per arm (README: 'What the demo's SuperClass vs CLIP gap"
        " means'): at this budget SuperClass learns more slowly per sample, and 4x the steps close the gap; IDF"
        " is not the cause.",
        "",
    ]


def _notes(cfg: DemoConfig, seconds: float) -> list[str]:
    return [
        "## What ran",
        "",
        f"- {cfg.samples} synthetic captioned images ({IMAGE_SIZE} px) written as webdataset shards under"
        " `data/shards/`.",
        f"- `superclass_tiny` and `clip_tiny` recipes, {cfg.steps} steps each, same ViT backbone; artifacts in"
        " `superclass/encoder` and `clip/encoder`.",
        f"- LiT (`lit_tiny`, {cfg.downstream_steps} steps) and ClipCap (`clipcap_tiny`: MLP mapper + a tiny GPT-2"
        f" with a tokenizer trained on the synthetic captions, {cfg.caption_steps} steps) on each frozen encoder; the"
        " caption baseline is one constant caption (the most common training caption) scored the same way.",
        f"- LLaVA-1.5 (`llava_tiny_stage1/2`: {cfg.vlm_stage1_steps} + {cfg.vlm_stage2_steps} steps) on each frozen"
        f" encoder with a tiny LLaMA trained from scratch, which first learns the questions on the scenes told in"
        f" words ({cfg.vlm_text_steps} text steps, once for both), scored by `superclass eval"
        " vqav2/mmbench/pope/scienceqa` code on synthetic files in the official formats; its baseline answers from"
        " the question alone (the most common training answer to the same question; POPE: always 'yes'), so beating"
        f" it means the model looks at the image. Both stages centre the projector on {cfg.vlm_projector_centring}"
        " images' mean tower feature (`projector_centring`). The MMBench and ScienceQA rows are reported outside"
        " the verdict: their lettered answers need the letter of the option that matches the image, and the tiny"
        " LLaMA does not learn that option-to-letter lookup within these steps, even on scenes told in words (README:"
        " 'Why the VLM rows failed, and what fixed them'). A constant letter scores 0 under CircularEval.",
        "- Chance levels: the SuperClass head's colour-word ranking is 6-way (1/6); retrieval is 1/N; probes are"
        " 1/#classes. The tiny 2-layer ViT learns colour within 300 steps; shape needs a larger model or longer.",
        f"- Held-out images come from a different synthetic seed than training. Total time: {seconds:.0f} s.",
        "",
    ]


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="superclass demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"))
    parser.add_argument("--steps", type=int, default=300, help="pretraining steps per encoder")
    parser.add_argument("--samples", type=int, default=4096, help="synthetic training images")
    args = one_line_errors(parser).parse_args(argv)
    report = run_demo(DemoConfig(out=args.out, steps=args.steps, samples=args.samples))
    print(report.to_markdown())
    print(f"[demo] report: {args.out / 'report.md'}")
    return 0 if report.all_beat_chance() else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)

"""`superclass demo [--out DIR]`: the chain on synthetic data, on CPU, in minutes, with a report.

Stages: (1) write synthetic captioned images as webdataset shards; (2) pretrain a tiny SuperClass and
a tiny CLIP encoder on them with the shared runtime; (3) check what each objective learned on held-out
images (SuperClass: does its head rank the image's colour word first among the colour words; CLIP:
image-to-text retrieval); (4) probe both frozen encoders on a held-out attribute task (linear probe and
10-shot); (5) LiT on each encoder: zero-shot colour classes and retrieval; (6) ClipCap with a tiny LM: CIDEr;
(7) LLaVA-1.5 (both stages) with a tiny LLaMA on each encoder, scored on synthetic VQAv2 and MMBench files by the
benchmark code, next to a text-only baseline (the most common training answer to the same question).
Writes DIR/report.md, DIR/loss_curves.png and each encoder artifact under DIR/<method>/encoder.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from pretrain.data.synthetic import COLOURS, make_sample
from pretrain.encoder import load_encoder
from pretrain.labels import build_tokenizer
from pretrain.recipes import PretrainRecipe, get_recipe
from pretrain.runtime.cli import one_line_errors, run_cli
from pretrain.runtime.config import resolve
from pretrain.train import load_trained_task, train
from superclass.report import Report, Row, plot_loss_curves

HELD_OUT_SEED = 1  # the encoders train on dataset seed 0; every evaluation image comes from seed 1


@dataclass
class DemoConfig:
    out: Path
    steps: int = 300
    samples: int = 4096
    probe_train: int = 600
    probe_val: int = 400
    eval_images: int = 200
    attribute: str = "colour"
    downstream_steps: int = 300  # LiT steps per encoder (150 left the SuperClass text->image R@1 at chance, 1 of 100)
    caption_steps: int = 400  # ClipCap steps per encoder (fewer collapse to one caption for every image)
    vlm_stage1_steps: int = 30  # LLaVA stage 1 (projector) steps per encoder
    vlm_stage2_steps: int = 600  # LLaVA stage 2 (projector + LLM) steps per encoder
    vlm_samples: int = 2000  # synthetic stage-2 conversations (stage 1 gets a third as many captions)
    vlm_eval_images: int = 60  # synthetic VQAv2 images (4 questions each) and MMBench questions (4 copies each)


def _recipe(name: str, cfg: DemoConfig, shards: Path) -> PretrainRecipe:
    return resolve(
        get_recipe(name),
        None,
        [
            f"run.out_dir={cfg.out / name.split('_')[0]}",
            f"run.steps={cfg.steps}",
            f"run.save_every={max(cfg.steps // 2, 1)}",
            "run.device=cpu",
            "data.kind=shards",
            f"data.train={shards}",
        ],
    )


def _held_out(n: int, image_size: int = 40) -> tuple[list[Image.Image], list[str]]:
    samples = [make_sample(i, seed=HELD_OUT_SEED, image_size=image_size) for i in range(n)]
    return [s.image for s in samples], [s.caption for s in samples]


@torch.no_grad()
def superclass_colour_accuracy(task: nn.Module, recipe: PretrainRecipe, n: int) -> float:
    """How often the head scores the held-out image's colour word above the other colour words (6-way).

    The head predicts caption tokens from pixels alone, so this checks it learned image content, not just
    which tokens are frequent (wording tokens in the synthetic captions are random and carry no signal).
    """
    tokenizer = build_tokenizer(recipe.labels)
    colour_ids = [int(tokenizer([name])[0][0, 1]) for name in COLOURS]  # first word piece after SOT
    samples = [make_sample(i, seed=HELD_OUT_SEED, image_size=40) for i in range(n)]
    preprocess = load_encoder(Path(recipe.run.out_dir) / "encoder").preprocess
    logits = task.head(task.backbone(torch.stack([preprocess(s.image) for s in samples])))
    predicted = logits[:, colour_ids].argmax(dim=1)
    truth = torch.tensor([list(COLOURS).index(s.attributes["colour"]) for s in samples])
    return 100 * (predicted == truth).float().mean().item()


@torch.no_grad()
def clip_retrieval_at_1(task: nn.Module, recipe: PretrainRecipe, n: int) -> float:
    """Image-to-text R@1 over n held-out pairs (a hit: the image's own caption ranks first)."""
    images, captions = _held_out(n)
    tokenizer = build_tokenizer(recipe.labels)
    preprocess = load_encoder(Path(recipe.run.out_dir) / "encoder").preprocess
    image_emb = task.model.encode_image(torch.stack([preprocess(im) for im in images]))
    text_emb = task.model.encode_text(tokenizer(captions)[0])
    ranks = (image_emb @ text_emb.T).argmax(dim=1)
    return 100 * (ranks == torch.arange(n)).float().mean().item()


def probe(artifact: Path, cfg: DemoConfig) -> dict:
    """Linear probe and 10-shot on a held-out attribute task (eval.probes.probe)."""
    from eval.probes.probe import probe_encoder
    from pretrain.data.labelled import SYNTHETIC_SPLIT_SEEDS, synthetic_attribute_dataset

    seeds = SYNTHETIC_SPLIT_SEEDS  # scored on the held-out "test" draw (seed 1), as the sweeps' test split
    train = synthetic_attribute_dataset(cfg.attribute, cfg.probe_train, seed=seeds["train"], image_size=40)
    val = synthetic_attribute_dataset(cfg.attribute, cfg.probe_val, seed=seeds["test"], image_size=40)
    return probe_encoder(artifact, train, val, shots=10, seeds=3)


def downstream(report: Report, method: str, artifact: Path, cfg: DemoConfig) -> None:
    """LiT (zero-shot colour classes, retrieval) and ClipCap (CIDEr vs a constant caption) on one encoder."""
    from captioning.train import caption_demo
    from lit.demo import lit_demo

    print(f"[demo] LiT and ClipCap on the {method} encoder ...", flush=True)
    lit = lit_demo(artifact, cfg.out / method / "lit", steps=cfg.downstream_steps, n_eval=cfg.eval_images)
    colour = "zero-shot top-1, colour classes (%)"
    report.add(Row("lit", method, colour, 100 * lit["zeroshot_colour_top1"], 100 * lit["zeroshot_colour_chance"]))
    r1 = "text-to-image R@1 of 100 (%)"
    report.add(Row("lit", method, r1, 100 * lit["retrieval_t2i_r1"], 100 * lit["retrieval_chance"]))
    caption = caption_demo(artifact, cfg.out / method / "caption", steps=cfg.caption_steps)
    report.add(Row("caption", method, "CIDEr on held-out images", caption["cider"], caption["baseline_cider"]))


def vlm(report: Report, method: str, artifact: Path, cfg: DemoConfig) -> Path:
    """LLaVA-1.5 on one encoder: VQAv2, circular MMBench, POPE and ScienceQA accuracy, each against its baseline;
    returns the stage-2 LLaVA directory."""
    from eval.vlm.demo import score_synthetic_vlm
    from vlm.demo import llava_demo

    print(f"[demo] LLaVA stages 1 and 2 on the {method} encoder ...", flush=True)
    out = cfg.out / method / "llava"
    model_dir, train_json = llava_demo(
        artifact, out, cfg.vlm_stage1_steps, cfg.vlm_stage2_steps, cfg.vlm_samples // 3, cfg.vlm_samples
    )
    scores = score_synthetic_vlm(model_dir, out / "scores", train_json, num_images=cfg.vlm_eval_images)
    vqa, mmb = "VQAv2-format accuracy vs text-only (%)", "MMBench-format CircularEval vs random letters (%)"
    report.add(Row("vlm", method, vqa, scores["vqav2_accuracy"], scores["vqav2_text_only_accuracy"]))
    # A 2-layer LLaMA trained from scratch in minutes learns the answer formats (a letter, yes/no) but not yet the
    # image-dependent choice among them: these rows are measured and shown, outside the verdict (README: demo).
    report.add(Row("vlm", method, mmb, scores["mmbench_accuracy"], scores["mmbench_random_chance"], required=False))
    pope, sqa = "POPE-format accuracy vs always 'yes' (%)", "ScienceQA-format accuracy vs text-only (%)"
    report.add(Row("vlm", method, pope, scores["pope_accuracy"], scores["pope_always_yes_accuracy"], required=False))
    sqa_score, sqa_blind = scores["scienceqa_accuracy"], scores["scienceqa_text_only_accuracy"]
    report.add(Row("vlm", method, sqa, sqa_score, sqa_blind, required=False))
    report.sections.append(
        f"- MMBench text-only baseline ({method}): {scores['mmbench_text_only_accuracy']:.2f}% (the prior answer's"
        f" letter, rotation-consistent) against the model's {scores['mmbench_accuracy']:.2f}%."
    )
    return model_dir


DEMO_DIRS = ("data", "superclass", "clip")  # what run_demo writes under --out, besides the report files
DEMO_FILES = ("report.md", "loss_curves.png")


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
    from pretrain.data.synthetic import write_shards

    start = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    clear_previous_demo(cfg.out)
    shards = write_shards(cfg.out / "data" / "shards", cfg.samples, max(cfg.samples // 8, 1), seed=0, image_size=40)
    pattern = str(shards[0].parent / f"{{{shards[0].stem}..{shards[-1].stem}}}.tar")
    report = Report(title="SuperClass toolkit demo (synthetic data, CPU)")
    runs: dict[str, Path] = {}
    llava_dirs: list[Path] = []
    for name in ("superclass_tiny", "clip_tiny"):
        recipe = _recipe(name, cfg, Path(pattern))
        print(f"[demo] pretraining {name} for {cfg.steps} steps ...", flush=True)
        artifact = train(recipe)
        runs[name] = Path(recipe.run.out_dir)
        task = load_trained_task(recipe).eval()
        method = recipe.method
        if method == "superclass":
            accuracy = superclass_colour_accuracy(task, recipe, cfg.eval_images)
            report.add(Row("pretrain", method, "colour word ranked first by the head, 6-way (%)", accuracy, 100 / 6))
        else:
            r1 = clip_retrieval_at_1(task, recipe, cfg.eval_images)
            report.add(
                Row("pretrain", method, f"image-to-text R@1 of {cfg.eval_images} (%)", r1, 100 / cfg.eval_images)
            )
        print(f"[demo] probing {method} ({cfg.attribute} task) ...", flush=True)
        result = probe(artifact, cfg)
        report.add(
            Row(
                "probe",
                method,
                f"linear probe top-1, {cfg.attribute} (%)",
                result["linear_probe_top1"],
                result["chance"],
            )
        )
        report.add(
            Row("probe", method, f"10-shot top-1, {cfg.attribute} (%)", result["fewshot_top1"], result["chance"])
        )
        downstream(report, method, artifact, cfg)
        llava_dirs.append(vlm(report, method, artifact, cfg))
    plot_loss_curves({name: path for name, path in runs.items()}, cfg.out / "loss_curves.png")
    report.figures.append(("Training loss of the two tiny encoders", "loss_curves.png"))
    report.sections = _notes(cfg, time.perf_counter() - start) + _gap_note(report, cfg) + report.sections
    report.sections.append(
        "- Chat with the two LLaVA models side by side in a browser (`pip install -e '.[serve]'`): "
        f"`superclass vlm serve --model {llava_dirs[0]} --model {llava_dirs[1]}`"
    )
    report.write(cfg.out)
    return report


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
        f"- {cfg.samples} synthetic captioned images (40 px) written as webdataset shards under `data/shards/`.",
        f"- `superclass_tiny` and `clip_tiny` recipes, {cfg.steps} steps each, same ViT backbone; artifacts in"
        " `superclass/encoder` and `clip/encoder`.",
        f"- LiT (`lit_tiny`, {cfg.downstream_steps} steps) and ClipCap (`clipcap_tiny`: MLP mapper + a tiny GPT-2"
        f" with a tokenizer trained on the synthetic captions, {cfg.caption_steps} steps) on each frozen encoder; the"
        " caption baseline is one constant caption (the most common training caption) scored the same way.",
        f"- LLaVA-1.5 (`llava_tiny_stage1/2`: {cfg.vlm_stage1_steps} + {cfg.vlm_stage2_steps} steps) with a tiny"
        " LLaMA trained from scratch on each frozen encoder, scored by `superclass eval vqav2/mmbench/pope/scienceqa`"
        " code on synthetic files in the official formats; its baseline answers from the question alone (the most"
        " common training answer to the same question; POPE: always 'yes'), so beating it means the model looks at"
        " the image. The MMBench, POPE and ScienceQA rows are reported outside the verdict: with labels exactly as"
        " LLaVA's (the space before an answer supervised), the tiny LLaMA learns to answer with a letter or yes/no"
        " within these steps but not yet which one the image calls for (a constant letter scores 0 under"
        " CircularEval).",
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

"""LLaVA-1.5 against the LLaVA codebase itself (bench/peers.py): VQA answering and the stage-2 training step.

One random-weight LLaVA is built from configs (nothing downloaded): our encoder artifact of the asked preset as
tower, a LLaMA-shaped LLM on a SentencePiece tokenizer as Vicuna ships one (`<image>` and `<pad>` inside its
vocabulary, so our HF model and LLaVA's have the same vocabulary, no rows added or trimmed), a fresh mlp2x_gelu
projector. It is saved as our HF directory and exported `--to llava`; the side venv's interpreter runs
bench/peer_llava_side.py on the export, we run the HF directory:
- eval: `superclass eval vqav2 run` (batched) vs `model_vqa_loader`'s loop (batch 1) on the same LLaVA question
  JSONL; equal when every answer is identical. Rates exclude model loading on both sides.
- train: `vlm.data` (LlavaSamples + collate) and `LlavaTask` on the shared Trainer vs train.py's dataset, collator
  and `LlavaLlamaForCausalLM` on the same LLaVA JSON rows; equal when the token ids, label masks and pixels agree
  and the first step's losses are within 1e-4 (fp32).
lmms-eval's row uses the same HF directory and questions (bench/peer_lmms_side.py under its venv's interpreter).
Answer rows run theirs and ours in turn `repeats` times (the machine's load drifts) and take the median rates.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from steps import timed_steps  # bench/steps.py

from pretrain.encoder import default_preprocess, save_encoder
from pretrain.models.backbone import build_backbone
from pretrain.models.presets import get_preset
from pretrain.runtime.distributed import DistInfo
from pretrain.runtime.loop import RunConfig, Trainer
from pretrain.runtime.optim import OptimConfig
from vlm.assemble import PAD_TOKEN, build_llava
from vlm.data import LlavaSamples, collate
from vlm.llava_codebase import export_llava_codebase
from vlm.llava_dir import load_llava, save_llava
from vlm.model_config import VLMModelConfig
from vlm.processor import num_image_tokens, process_images
from vlm.task import LlavaTask
from vlm.templates import IGNORE_INDEX, IMAGE_TOKEN
from vlm.tiny_llama import sentencepiece_tokenizer

SIDE = Path(__file__).with_name("peer_llava_side.py")
LMMS_SIDE = Path(__file__).with_name("peer_lmms_side.py")
LLAVA_IMAGE_ID = -200  # LLaVA's IMAGE_TOKEN_INDEX
SHORT = "\nAnswer the question using a single word or phrase."
QUESTIONS = ["What colour is the circle?", "How many squares are there?", "Is there a green triangle?",
             "What is on the left?", "What colour is the square on the right?"]  # fmt: skip
ANSWERS = ["red", "2", "a blue square on the left", "green", "3 squares and a circle"]
LR = 2e-5  # LLaVA-1.5 finetune.sh


def run_side(python: str, script: Path, mode: str, request: dict[str, Any], work: Path) -> dict[str, Any]:
    """A peer's side script (`mode`) under the peer venv's interpreter; its saved output."""
    (work / f"{script.stem}_{mode}.json").write_text(json.dumps(request))
    out = work / f"{script.stem}_{mode}.pt"
    env = {**os.environ, "PYTHONPATH": ""}  # their torch and transformers, never ours
    done = subprocess.run([python, str(script), mode, str(work / f"{script.stem}_{mode}.json"), str(out)],
                          capture_output=True, text=True, env=env, timeout=1800)  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{script.name} {mode} failed: {last}\n{done.stderr.strip()[-2000:]}")
    return torch.load(out, weights_only=True)


def llm_dir(path: Path, shape: dict[str, int]) -> Path:
    """A random LLaMA of `shape` on a SentencePiece tokenizer holding `<image>` and `<pad>` (ids 3 and 4), which
    answers in words (never byte pieces, `<unk>`, `<s>`, `<image>` or `<pad>`) and may stop (`</s>`)."""
    import sentencepiece as spm
    from transformers import LlamaConfig, LlamaForCausalLM

    sentencepiece_tokenizer(path, legacy=False, user_symbols=(IMAGE_TOKEN, PAD_TOKEN))
    vocab = spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model")).get_piece_size()
    cfg = LlamaConfig(vocab_size=vocab, num_key_value_heads=shape["num_attention_heads"], max_position_embeddings=2048,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, **shape)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    # Words only: a random model's argmax otherwise lands on byte-fallback pieces, whose invalid UTF-8 the slow
    # (LLaVA) and fast (ours) tokenizers decode to different replacement text although the ids are the same.
    sp = spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model"))
    silent = [i for i in range(vocab) if sp.is_byte(i) or sp.is_unknown(i) or i == sp.bos_id() or i in (3, 4)]
    with torch.no_grad():
        model.lm_head.weight[silent] = 0.0  # logit 0 never beats the largest of ~300 random word logits
    model.save_pretrained(path)
    return path


def image_sizes(side: int) -> list[tuple[int, int]]:
    """Wide, tall and square images whose padded square is the tower's size: pixels equal exactly on both sides."""
    return [(side, side * 5 // 7), (side * 2 // 3, side), (side, side)]


def build_fixture(root: Path, sizes: dict[str, Any]) -> dict[str, Path]:
    """The HF directory, its `--to llava` export, PNG images, a question JSONL and a LLaVA training JSON."""
    arch = get_preset(sizes["tower"])
    torch.manual_seed(0)
    save_encoder(root / "encoder", build_backbone(arch), arch, default_preprocess(arch), {"method": "superclass"})
    llm = llm_dir(root / "llm", sizes["llm"])
    model, processor = build_llava(VLMModelConfig(encoder=str(root / "encoder"), llm=str(llm), llm_dtype="fp32"))
    hf = save_llava(model, processor, root / "hf")
    export = export_llava_codebase(hf, root / "llava-v1.5-bench")  # "llava" in the name: load_pretrained_model needs it
    images = root / "images"
    images.mkdir()
    names = []
    for i, (w, h) in enumerate(image_sizes(arch.image_size)):
        pixels = np.random.default_rng(i).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i}.png")
        names.append(f"{i}.png")
    qs = [{"question_id": k, "image": names[k % len(names)], "text": QUESTIONS[k % len(QUESTIONS)] + SHORT,
           "category": "default"} for k in range(sizes["questions"])]  # fmt: skip
    (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in qs))
    rows = []
    for k in range(sizes["train_batch"]):
        turns = [{"from": "human", "value": f"<image>\n{QUESTIONS[k % 5]}"}, {"from": "gpt", "value": ANSWERS[k % 5]}]
        if k % 2:  # a second round, as most of LLaVA's mix665k conversations have
            turns += [{"from": "human", "value": QUESTIONS[(k + 1) % 5]}, {"from": "gpt", "value": ANSWERS[k % 3]}]
        rows.append({"id": str(k), "image": names[k % len(names)], "conversations": turns})
    (root / "train.json").write_text(json.dumps(rows))
    return {"hf": hf, "llava": export, "images": images, "questions": root / "questions.jsonl",
            "train": root / "train.json"}  # fmt: skip


def our_answers(fixture: dict[str, Path], sizes: dict[str, Any], device: torch.device, out: Path) -> dict[str, Any]:
    """`superclass eval vqav2 run` on the HF directory into `out`: {question_id: answer} and questions/s."""
    precision = "fp32" if device.type == "cpu" else "fp16"  # LLaVA's eval runs fp16 on GPUs
    cmd = [sys.executable, "-m", "superclass", "eval", "vqav2", "run", "--model", str(fixture["hf"]),
           "--questions", str(fixture["questions"]), "--image-root", str(fixture["images"]), "--out", str(out),
           "--batch-size", str(sizes["eval_batch"]), "--max-new-tokens", str(sizes["max_new_tokens"]),
           "--device", str(device), "--precision", precision, "--no-progress"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"superclass eval vqav2 run failed: {done.stderr.strip()[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "predictions.jsonl") as f:
        rows = [{"question_id": row["question_id"], "text": row["answer"]} for row in map(json.loads, f)]
    return {"rows": rows, "items_per_s": metrics["generation"]["questions_per_s"]}


def compare_answers(
    fixture: dict[str, Path], sizes: dict[str, Any], device: torch.device, peer: Callable, tag: str
) -> dict:  # fmt: skip
    """Their run and ours taking turns `repeats` times (machine load drifts): answers every time, median rates."""
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "theirs": []}
    for k in range(sizes["repeats"]):
        runs["theirs"].append(peer())
        out = fixture["hf"].parent / f"ours_{tag}_{k}"  # a fresh run directory: an existing one would resume
        runs["ours"].append(our_answers(fixture, sizes, device, out))
    answers = {
        side: [{r["question_id"]: r["text"] for r in run["rows"]} for run in done] for side, done in runs.items()
    }
    ours, theirs = answers["ours"][0], answers["theirs"][0]
    n, same = len(theirs), sum(ours.get(q) == a for q, a in theirs.items())
    differing = [(q, ours.get(q), a) for q, a in theirs.items() if ours.get(q) != a][:3]
    stable = all(a == ours for a in answers["ours"]) and all(a == theirs for a in answers["theirs"])
    return {
        "equal": same == n == len(ours) and n > 0 and stable,
        "detail": f"{same}/{n} answers identical"
        + (f", e.g. {differing}" if differing else "")
        + ("" if stable else "; answers changed between repeats"),
        "ours": statistics.median(run["items_per_s"] for run in runs["ours"]),
        "theirs": statistics.median(run["items_per_s"] for run in runs["theirs"]),
        "unit": "questions/s",
        "answers": {"ours": ours, "theirs": theirs},
        "rates": {side: [run["items_per_s"] for run in done] for side, done in runs.items()},
        "load_s": [run["load_s"] for run in runs["theirs"]],
    }


def _eval_request(fixture: dict[str, Path], model: Path, sizes: dict[str, Any], device: torch.device) -> dict:
    dtype = "float32" if device.type == "cpu" else "float16"
    return {"model": str(model), "questions": str(fixture["questions"]), "image_folder": str(fixture["images"]),
            "max_new_tokens": sizes["max_new_tokens"], "device": str(device), "dtype": dtype}  # fmt: skip


def _compare_answering(fixture: dict[str, Path], sizes: dict[str, Any], device: torch.device, python: str,
                       peer: str) -> dict:  # fmt: skip
    """`superclass eval vqav2 run` vs a peer's answering loop on the same questions: answers and questions/s."""
    llava = peer == "llava_eval"  # LLaVA's model_vqa_loader reads our --to llava export; lmms-eval the HF dir
    request = _eval_request(fixture, fixture["llava" if llava else "hf"], sizes, device)
    theirs = lambda: run_side(python, SIDE if llava else LMMS_SIDE, "eval", request, fixture["hf"].parent)  # noqa: E731
    result = compare_answers(fixture, sizes, device, theirs, peer)
    loop = "model_vqa_loader (batch 1)" if llava else "lmms-eval llava_hf (batch 1, its only one)"
    result["what"] = (f"VQAv2 answering, {sizes['questions']} questions, {sizes['max_new_tokens']} new tokens, "
                      f"{request['dtype']}: `superclass eval vqav2 run` (batch {sizes['eval_batch']}) vs {loop}, "
                      "model loading left out")  # fmt: skip
    return result


def compare_eval(fixture: dict[str, Path], sizes: dict[str, Any], device: torch.device, python: str) -> dict:
    """Against the LLaVA codebase's model_vqa_loader loop on our `--to llava` export."""
    return _compare_answering(fixture, sizes, device, python, "llava_eval")


def compare_lmms(fixture: dict[str, Path], sizes: dict[str, Any], device: torch.device, python: str) -> dict:
    """Against lmms-eval's `llava_hf` on the same HF directory."""
    return _compare_answering(fixture, sizes, device, python, "lmms_eval")


def _collapse(ids: list[int], labels: list[int], image_id: int) -> tuple[list[int], list[int]]:
    """Our expanded image block as LLaVA keeps it before its forward: one -200 id (label ignored)."""
    keep = [i for i, t in enumerate(ids) if t != image_id or i == 0 or ids[i - 1] != image_id]
    return [LLAVA_IMAGE_ID if ids[i] == image_id else ids[i] for i in keep], [labels[i] for i in keep]


def same_inputs(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor], image_id: int) -> str:
    """'' when both data paths made the same ids, label masks and pixels; else what differs first."""
    for i in range(ours["input_ids"].shape[0]):
        mask = ours["attention_mask"][i].bool()
        ids, labels = _collapse(ours["input_ids"][i][mask].tolist(), ours["labels"][i][mask].tolist(), image_id)
        their_mask = theirs["attention_mask"][i].bool()
        if ids != theirs["input_ids"][i][their_mask].tolist():
            return f"sample {i}: token ids differ"
        if labels != theirs["labels"][i][their_mask].tolist():
            return f"sample {i}: label masks differ"
        if all(x == IGNORE_INDEX for x in labels):
            return f"sample {i}: nothing supervised"
    gap = (ours["pixel_values"] - theirs["images"]).abs().max().item()
    return "" if gap <= 1e-5 else f"pixels differ by {gap:.2e}"


def our_trainer(fixture: dict[str, Path], batch_size: int, device: torch.device) -> tuple[Trainer, dict, int]:
    """The HF directory in `LlavaTask` (stage 2, full) on the shared Trainer, and its batch from `vlm.data`."""
    model, processor = load_llava(fixture["hf"], dtype=torch.float32)
    samples = LlavaSamples.from_json(
        fixture["train"], fixture["images"], tokenizer=processor.tokenizer, template="vicuna_v1",
        num_image_tokens=num_image_tokens(model.config), max_length=2048,
        image_transform=lambda image: process_images(processor, [image], pad=True)[0],
    )  # fmt: skip
    built = [samples.build(i) for i in range(batch_size)]
    if any(isinstance(b, str) for b in built):
        raise RuntimeError(f"our data path skipped samples: {[b for b in built if isinstance(b, str)]}")
    batch = collate(built, processor.tokenizer.pad_token_id)  # type: ignore[arg-type]
    task = LlavaTask(model.to(device), processor, stage=2)
    run = RunConfig(out_dir=str(fixture["hf"].parent / "ours_train"), steps=10**6, global_batch_size=batch_size,
                    device=str(device), precision="fp32" if device.type == "cpu" else "bf16")  # fmt: skip
    optim = OptimConfig(
        lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0, schedule="constant", clip_grad_norm=1.0
    )  # HF Trainer's AdamW and max_grad_norm, LLaVA's lr and weight decay
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    trainer = Trainer(task, loader=None, run=run, optim=optim, dist_info=info)  # type: ignore[arg-type]
    return trainer, batch, int(model.config.image_token_id)


def compare_train(fixture: dict[str, Path], sizes: dict[str, Any], device: torch.device, python: str) -> dict:
    """Stage-2 step on the same rows: inputs, first-step loss and samples/s (theirs runs first, alone)."""
    b, steps, rounds = sizes["train_batch"], sizes["steps"], sizes["rounds"]
    request = {"model": str(fixture["llava"]), "data": str(fixture["train"]), "image_folder": str(fixture["images"]),
               "batch": b, "steps": steps, "rounds": rounds, "lr": LR, "device": str(device),
               "dtype": "float32" if device.type == "cpu" else "bfloat16"}  # fmt: skip
    theirs = run_side(python, SIDE, "train", request, fixture["hf"].parent)
    trainer, batch, image_id = our_trainer(fixture, b, device)
    inputs = same_inputs(batch, theirs["batch"], image_id)
    on_device = {k: v.to(device) for k, v in batch.items()}
    ours_loss = float(trainer.train_step([on_device])["loss"])
    rates = [timed_steps(trainer, on_device, steps, device, per_step=b) for _ in range(rounds)]
    gap = abs(ours_loss - theirs["loss"])
    tolerance = 1e-4 if device.type == "cpu" else 2e-2 * max(1.0, abs(ours_loss))
    llm = sum(p.numel() for p in trainer.task.model.model.language_model.parameters()) / 1e6
    tokens = int(batch["attention_mask"].sum()) // b
    return {
        "equal": not inputs and gap <= tolerance,
        "detail": (inputs or "ids, label masks, pixels equal")
        + f"; first-step loss {ours_loss:.6f} vs {theirs['loss']:.6f} (|gap| {gap:.1e}, tolerance {tolerance:.0e})",
        "ours": statistics.median(rates),
        "theirs": statistics.median(theirs["rates"]),
        "unit": "samples/s",
        "what": f"LLaVA stage-2 step (full), {sizes['tower']} tower + {llm:.0f}M LLaMA, batch {b} x ~{tokens} "
        f"tokens: LlavaTask on the Trainer vs LlavaLlamaForCausalLM",
        "rates": {"ours": rates, "theirs": theirs["rates"]},
        "losses": {"ours": ours_loss, "theirs": theirs["loss"]},
    }

"""LLaVA training: what each stage trains, LoRA merge, overfitting a few samples, exact resume, CLI errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from vlm_fixtures import llava_parts

from pretrain.runtime.config import resolve
from pretrain.runtime.optim import OptimConfig, build_optimizer
from vlm.assemble import build_llava
from vlm.cli import main as vlm_main
from vlm.data import LlavaBatches, LlavaSamples
from vlm.llava_dir import load_llava
from vlm.lora import LoraSettings, merge_lora_state
from vlm.model_config import VLMModelConfig
from vlm.processor import num_image_tokens, process_images
from vlm.recipes import get_recipe
from vlm.task import LlavaTask
from vlm.train import train


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return llava_parts(tmp_path_factory.mktemp("vlm_train"), 24)


def _llava(parts, aspect="pad"):
    torch.manual_seed(0)
    return build_llava(VLMModelConfig(encoder=str(parts["encoder"]), llm=str(parts["llm"]), image_aspect_ratio=aspect))


def _batch(parts, model, processor, n=6):
    samples = LlavaSamples.from_json(
        parts["data"], tokenizer=processor.tokenizer, template="vicuna_v1", max_length=512,
        num_image_tokens=num_image_tokens(model.config),
        image_transform=lambda im: process_images(processor, [im], pad=True)[0],
    )  # fmt: skip
    return next(iter(LlavaBatches(samples, n, pad_token_id=processor.tokenizer.pad_token_id)))


def _changed(task, batch, lr=1e-2):
    before = {k: v.clone() for k, v in task.state_dict().items()}
    opt = build_optimizer(task, OptimConfig(lr=lr, warmup_steps=0, weight_decay=0.0), task.lr_scales())
    task.train()
    task(batch)["loss"].backward()
    with_grad = {n for n, p in task.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    opt.step()
    changed = {k for k, v in task.state_dict().items() if not torch.equal(v, before[k])}
    return with_grad, changed


@pytest.mark.parametrize("stage,lora", [(1, False), (2, False), (2, True)])
def test_only_the_stage_parameters_get_gradients(parts, stage, lora):
    model, processor = _llava(parts)
    batch = _batch(parts, model, processor)
    task = LlavaTask(model, processor, stage, LoraSettings(enabled=lora, r=4, alpha=8), projector_lr_scale=0.1)
    with_grad, changed = _changed(task, batch)
    assert changed == with_grad
    assert any(n.startswith("model.model.multi_modal_projector.") for n in with_grad)
    assert not any("vision_tower" in n for n in changed)  # the tower never trains
    llm = {n for n in changed if "language_model" in n or n.startswith("model.lm_head")}
    if stage == 1:
        assert not llm
    elif lora:
        assert llm and all(".lora_" in n for n in llm)
        assert not any("lora_" in n for n in changed if "language_model" not in n)  # no adapter outside the LLM
        groups = build_optimizer(task, OptimConfig(lr=2e-4), task.lr_scales()).param_groups
        scales = {g["lr_scale"] for g in groups for n in g["param_names"] if "multi_modal_projector" in n}
        assert scales == {0.1}  # LLaVA's mm_projector_lr 2e-5 next to LoRA's 2e-4
    else:
        assert any("layers.0.self_attn.q_proj" in n for n in llm) and "model.lm_head.weight" in llm


@pytest.mark.parametrize("lora", [False, True])
def test_trainable_weights_are_fp32_masters_in_a_bf16_model(parts, tmp_path, lora):
    cfg = VLMModelConfig(encoder=str(parts["encoder"]), llm=str(parts["llm"]), llm_dtype="bf16")
    model, processor = build_llava(cfg)
    task = LlavaTask(model, processor, 2, LoraSettings(enabled=lora, r=4, alpha=8))
    trainable = {n: p for n, p in task.named_parameters() if p.requires_grad}
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    frozen = [p for p in task.parameters() if not p.requires_grad]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    batch = _batch(parts, model, processor)
    batch["pixel_values"] = batch["pixel_values"].to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with_grad, changed = _changed(task, batch, lr=2e-5)  # a bf16 weight near 0.02 would not move at this lr
    assert changed == with_grad and len(with_grad) > len(trainable) // 2  # LoRA's A gets no gradient while B = 0
    out = task.export_artifact(tmp_path, task.state_dict(), samples_seen=6)
    assert {t.dtype for t in load_file(str(out / "model.safetensors")).values()} == {torch.bfloat16}


def test_lora_merge_gives_the_unmerged_outputs(parts, tmp_path):
    model, processor = _llava(parts)
    batch = _batch(parts, model, processor, n=3)
    task = LlavaTask(model, processor, 2, LoraSettings(enabled=True, r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # peft starts B at zero: make the adapter do something
        for name, p in task.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.5)
    task.eval()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        unmerged = task.model(**inputs).logits
    out = task.export_artifact(tmp_path, task.state_dict(), samples_seen=3)
    merged_model, _ = load_llava(out)
    with torch.no_grad():
        merged = merged_model(**inputs).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-4, rtol=1e-4)
    assert not any("lora" in k for k in merged_model.state_dict())
    state = {"a.base_layer.weight": torch.eye(2), "a.lora_A.default.weight": torch.ones(1, 2),
             "a.lora_B.default.weight": torch.full((2, 1), 0.5), "b.weight": torch.zeros(1)}  # fmt: skip
    by_hand = torch.eye(2) + 2.0 * torch.full((2, 1), 0.5) @ torch.ones(1, 2)  # alpha / r = 2
    merged_state = merge_lora_state(state, LoraSettings(r=1, alpha=2))
    assert set(merged_state) == {"a.weight", "b.weight"} and torch.equal(merged_state["a.weight"], by_hand)


def test_tiny_llava_overfits_a_handful_of_samples(parts):
    model, processor = _llava(parts)
    batch = _batch(parts, model, processor, n=4)
    task = LlavaTask(model, processor, 2)
    opt = build_optimizer(task, OptimConfig(lr=3e-3, warmup_steps=0, weight_decay=0.0))
    task.train()
    losses = []
    for _ in range(60):
        loss = task(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], losses[::10]


def _recipe(parts, out: Path, steps: int, resume: str = ""):
    overrides = [f"model.encoder={parts['encoder']}", f"model.llm={parts['llm']}", f"run.out_dir={out}",
                 f"run.steps={steps}", "run.save_every=2", "run.global_batch_size=4", "data.synthetic_samples=40",
                 "data.synthetic_image_size=32", "data.max_length=512", f"run.resume={resume}"]  # fmt: skip
    return resolve(get_recipe("llava_tiny_stage2"), None, overrides)


def test_interrupted_training_resumes_exactly(parts, tmp_path):
    straight = load_llava(train(_recipe(parts, tmp_path / "a", 4)))[0].state_dict()
    train(_recipe(parts, tmp_path / "b", 2))
    checkpoint = tmp_path / "b" / "checkpoints"
    step2 = load_file(str(sorted(checkpoint.iterdir())[-1] / "model.safetensors"))
    assert step2 and not any("vision_tower" in k for k in step2)  # frozen weights stay out of checkpoints
    resumed = load_llava(train(_recipe(parts, tmp_path / "b", 4, resume="latest")))[0].state_dict()
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


def test_train_cli_errors_are_one_line(parts, capsys):
    assert vlm_main(["train", "--stage", "1", "--recipe", "llava_tiny_stage2"]) == 2  # the recipe picks the stage
    assert "--recipe llava15_stage1" in capsys.readouterr().err
    encoder = f"model.encoder={parts['encoder']}"
    assert vlm_main(["train", "--recipe", "llava_tiny_stage2", "data.kind=llava_json", encoder]) == 2
    assert "data.json is empty" in capsys.readouterr().err
    assert vlm_main(["recipe", "llava15_stage2_lora"]) == 0
    text = capsys.readouterr().out
    assert "r: 128" in text and "alpha: 256" in text and "projector_lr: 2.0e-05" in text


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_a_data_file_the_recipe_does_not_read_is_refused(parts, tmp_path, capsys):
    """llava_tiny_stage1 reads synthetic scenes: data.json alone would be ignored, and the run would exit 0."""
    out = tmp_path / "run"
    args = ["train", "--recipe", "llava_tiny_stage1", f"model.encoder={parts['encoder']}", f"run.out_dir={out}"]
    assert vlm_main([*args, f"data.json={parts['data']}"]) == 2
    assert "data.json: set to" in _one_line_error(capsys) and not out.exists()
    recipe = resolve(get_recipe("llava_tiny_stage1"), None, ["data.kind=llava_json", f"data.json={parts['data']}"])
    assert recipe.data.json == str(parts["data"])


def test_the_tiny_llm_is_named_and_an_empty_llm_is_refused(parts, tmp_path, capsys):
    """model.llm=tiny names what "" silently meant; "" is a one-line error naming it, before any file is written."""
    assert get_recipe("llava_tiny_stage1").model.llm == get_recipe("llava_tiny_stage2").model.llm == "tiny"
    out = tmp_path / "run"
    for start in (f"model.encoder={parts['encoder']}", f"init={parts['root']}"):  # built, or from a stage-1 dir
        assert vlm_main(["train", "--recipe", "llava_tiny_stage1", start, "model.llm=", f"run.out_dir={out}"]) == 2
        assert "model.llm=tiny for a tiny LLaMA" in _one_line_error(capsys) and not out.exists()
    assert vlm_main(["build", "--encoder", str(parts["encoder"]), "--llm", "tiny", "--out", str(out)]) == 2
    assert "only `vlm train` builds the tiny LLaMA" in _one_line_error(capsys) and not out.exists()


def test_the_encoder_is_checked_before_the_data_and_the_llm_are_built(parts, tmp_path, capsys):
    llava = tmp_path / "llava"  # a LLaVA directory passed as the encoder
    llava.mkdir()
    (llava / "config.json").write_text(json.dumps({"model_type": "llava"}))
    no_cls = tmp_path / "no_cls"  # an artifact a CLIP tower cannot hold
    shutil.copytree(parts["encoder"], no_cls)
    config = json.loads((no_cls / "config.json").read_text())
    config["architecture"]["class_token"] = False
    (no_cls / "config.json").write_text(json.dumps(config))
    for encoder, says in ((llava, "expected format 'superclass-encoder'"), (no_cls, "class_token is false")):
        out = tmp_path / f"run_{encoder.name}"
        args = ["train", "--recipe", "llava_tiny_stage1", f"model.encoder={encoder}", f"run.out_dir={out}"]
        assert vlm_main(args) == 2
        assert says in _one_line_error(capsys)
        assert not out.exists(), "no synthetic data or tiny LM before the encoder is checked"


def test_chat_flag_mistakes_are_one_line(tmp_path, capsys):
    assert vlm_main(["chat", "--model", str(tmp_path), "--image", "x.png", "--max-new-tokens", "abc"]) == 2
    assert "superclass vlm chat: argument --max-new-tokens: invalid int value: 'abc'" in _one_line_error(capsys)


@pytest.mark.parametrize("lora", [False, True])
def test_two_process_fsdp2_trains_and_exports(parts, tmp_path, lora):
    """FSDP2 over the LLM's decoder layers (2 gloo processes): frozen tower untouched, a loadable export."""
    out = tmp_path / "fsdp"
    rows = json.loads(parts["data"].read_text())[:12]  # LLaVA JSON with two bad rows the ranks meet or skip up front
    rows[3] = {**rows[3], "image": "images/missing.jpg", "conversations": rows[5]["conversations"]}
    rows.append({"id": "bad", "conversations": [{"from": "human", "value": "hi"}]})
    data = tmp_path / "mixed.json"
    data.write_text(json.dumps(rows))
    args = [f"model.encoder={parts['encoder']}", f"model.llm={parts['llm']}", f"run.out_dir={out}", "run.steps=3",
            "run.save_every=0", "run.global_batch_size=4", "run.strategy=fsdp", "data.kind=llava_json",
            f"data.json={data}", f"data.image_folder={parts['data'].parent}", "data.max_length=512",
            f"lora.enabled={lora}", "lora.r=4", "lora.alpha=8"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}  # an abort shows every thread's stack
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "vlm", "train",
           "--recipe", "llava_tiny_stage2", *args]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{result.stdout[-1500:]}\n{result.stderr[-3000:]}"
    skipped = json.loads((out / "skipped.json").read_text())  # summed over both ranks, rows skipped up front once
    assert skipped == {"bad_conversation": 1, "missing_image": 1}, skipped  # 3 steps x 4 cover all 12 usable rows
    assert "of 13 samples" in result.stdout, result.stdout[-2000:]
    trained = load_llava(out / "llava")[0].state_dict()
    initial = _llava(parts)[0].state_dict()
    tower = [k for k in initial if "vision_tower" in k]
    assert tower and all(torch.equal(trained[k], initial[k]) for k in tower)
    assert not torch.equal(trained["model.multi_modal_projector.linear_1.weight"],
                           initial["model.multi_modal_projector.linear_1.weight"])  # fmt: skip
    q_proj = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(trained[q_proj], initial[q_proj])  # full, or LoRA merged into it

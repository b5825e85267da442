"""Checkpoints of the official SuperClass code (x-cls/superclass) come in whole: the tower with its average pooling,
the head and the IDF statistics in head.safetensors, `method: superclass`, the tokenizer, and one warning line for
what is not carried over. The tests write a tiny checkpoint in the official key layout as `main.py` saves it: DDP's
`module.` prefix, a {"epoch", "name", "state_dict", "optimizer", "scaler"} pickle, and as safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip.factory
import pytest
import torch
from open_clip.model import _build_vision_tower
from safetensors.torch import save_file

from pretrain.cli import main as pretrain_main
from pretrain.encoder import load_encoder
from pretrain.labels import build_tokenizer
from pretrain.recipes import get_recipe
from pretrain.runtime.config import resolve
from pretrain.runtime.distributed import DistInfo
from pretrain.runtime.errors import ConfigError
from pretrain.train import build_task, init_from_artifact, train

WIDTH, VOCAB, STEPS = 64, 100, 7.0
VISION = {"image_size": 32, "layers": 2, "width": WIDTH, "head_width": 32, "patch_size": 8}
CLS_CONFIG = {  # the shape of the official model_configs/CLS-ViT-B-16.json, tiny
    "embed_dim": 0,
    "vision_cfg": {**VISION, "pool_type": "avg"},
    "text_cfg": {"context_length": 77, "vocab_size": VOCAB, "layers": 0, "mlp_ratio": 4},
}
PLAIN_CONFIG = {  # an open_clip model name's config: class-token pooling and a projection (as ViT-B-16's)
    "embed_dim": 32,
    "vision_cfg": VISION,
    "text_cfg": {"context_length": 16, "vocab_size": VOCAB, "width": 32, "heads": 2, "layers": 1},
}


def _official_model(vocab: int = VOCAB) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, torch.Tensor]]:
    """(visual, head, state dict) of a random official `Classifier`: visual.*, text_decoder.*, cap_fq, num_samples."""
    torch.manual_seed(0)
    visual = _build_vision_tower(0, CLS_CONFIG["vision_cfg"])
    visual.proj = None  # the official VisionTransformer has none for embed_dim 0
    head = torch.nn.Sequential(torch.nn.LayerNorm(WIDTH), torch.nn.Linear(WIDTH, vocab))  # MixClsHead, layers=0
    with torch.no_grad():
        for module in (visual, head):
            for p in module.parameters():
                p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.ndim == 1 and p.shape[0] == WIDTH else 0.0))
    state = {f"visual.{k}": v for k, v in visual.state_dict().items()}
    state["text_decoder.ln_mlp.weight"], state["text_decoder.ln_mlp.bias"] = head[0].weight, head[0].bias
    state["text_decoder.text_projection.weight"], state["text_decoder.text_projection.bias"] = (
        head[1].weight,
        head[1].bias,
    )
    state["cap_fq"] = torch.rand(1, vocab, dtype=torch.float64) * STEPS
    state["num_samples"] = torch.full((1, 1), STEPS, dtype=torch.float64)
    return visual.eval(), head.eval(), {f"module.{k}": v.detach().clone() for k, v in state.items()}  # DDP's prefix


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    root = tmp_path_factory.mktemp("official")
    visual, head, state = _official_model()
    checkpoint = {"epoch": 1, "name": "cls_tiny", "state_dict": state, "optimizer": {"state": {}, "param_groups": []}}
    torch.save(checkpoint, root / "epoch_1.pt")  # as main.py saves it
    save_file(state, str(root / "epoch_1.safetensors"))
    (root / "CLS-tiny.json").write_text(json.dumps(CLS_CONFIG))
    return {"root": root, "visual": visual, "head": head, "state": state}


def _import(capsys, source: Path, out: Path, *args: str) -> str:
    assert pretrain_main(["import", "--from", "open_clip", "--model", str(source), "--out", str(out), *args]) == 0
    return capsys.readouterr().err


@pytest.mark.parametrize("file", ["epoch_1.pt", "epoch_1.safetensors"])
def test_an_official_checkpoint_comes_in_whole(official, tmp_path, capsys, file):
    root = official["root"]
    err = _import(capsys, root / file, tmp_path / "enc", "--arch-config", str(root / "CLS-tiny.json"))
    enc = load_encoder(tmp_path / "enc")
    provenance = enc.config["provenance"]
    assert provenance["method"] == "superclass" and provenance["tokenizer"] == "clip_bpe"
    assert provenance["vocab_size"] == VOCAB and provenance["labels_mode"] == "official"
    assert provenance["source"]["format"] == "superclass_official" and enc.arch.pool == "avg"
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pooled = enc(x)
        torch.testing.assert_close(pooled, official["visual"](x), rtol=0, atol=1e-5)  # the official pooled feature
        loaded = enc.load_head()
        assert loaded is not None
        head, idf = loaded
        torch.testing.assert_close(head(pooled), official["head"](pooled), rtol=0, atol=0)  # the head's logits
    state = official["state"]
    assert torch.equal(idf["doc_freq"], state["module.cap_fq"][0]) and float(idf["num_steps"]) == STEPS
    assert float(idf["batch_size"]) == 16384  # not in the checkpoint: the paper's, and the warning says so
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: {root / file}: an official SuperClass checkpoint")
    assert "global batch size" in lines[0] and ("training state" in lines[0]) == file.endswith(".pt")


def test_a_plain_open_clip_arch_still_pools_by_average(official, tmp_path, capsys, monkeypatch):
    """`--arch ViT-B-16` names class-token pooling; SuperClass pooled by average, which the keys give away."""
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "tiny-ViT", PLAIN_CONFIG)
    root = official["root"]
    err = _import(capsys, root / "epoch_1.pt", tmp_path / "enc", "--arch", "tiny-ViT", "--idf-batch-size", "256")
    enc = load_encoder(tmp_path / "enc")
    assert enc.arch.pool == "avg" and enc.config["provenance"]["method"] == "superclass"
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(enc(x), official["visual"](x), rtol=0, atol=1e-5)
    assert float(enc.load_head()[1]["batch_size"]) == 256 and "global batch size" not in err


def test_what_is_not_carried_is_named_in_one_line(official, tmp_path, capsys):
    root = official["root"]
    state = {**official["state"], "module.logit_scale": torch.ones([])}  # a tensor the artifact has no place for
    save_file(state, str(tmp_path / "extra.safetensors"))
    args = ["--arch-config", str(root / "CLS-tiny.json"), "--idf-batch-size", "64"]
    err = _import(capsys, tmp_path / "extra.safetensors", tmp_path / "enc", *args)
    assert err.strip() == (
        f"warning: {tmp_path / 'extra.safetensors'}: an official SuperClass checkpoint; not carried over: "
        "logit_scale (no place in the artifact)"
    )


def test_an_official_config_name_points_to_arch_config(official, tmp_path, capsys):
    args = ["--model", str(official["root"] / "epoch_1.pt"), "--out", str(tmp_path / "enc"), "--arch", "CLS-ViT-B-16"]
    assert pretrain_main(["import", "--from", "open_clip", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--arch: open_clip knows no model 'CLS-ViT-B-16'" in err
    assert "--arch-config CLS-ViT-B-16.json" in err and not (tmp_path / "enc").exists()


def test_training_continues_from_an_imported_official_checkpoint(tmp_path, capsys):
    """model.init_from: the tower, the head and the online IDF statistics start the run (here vit_tiny, CLIP BPE)."""
    visual, head, state = _official_model(vocab=49408)  # the CLIP BPE vocabulary the official code labels with
    save_file(state, str(tmp_path / "official.safetensors"))
    (tmp_path / "cls.json").write_text(json.dumps(CLS_CONFIG))
    args = ["--arch-config", str(tmp_path / "cls.json"), "--idf-batch-size", "16"]
    _import(capsys, tmp_path / "official.safetensors", tmp_path / "enc", *args)
    fast = ["run.device=cpu", "data.num_workers=0", "data.synthetic_samples=64", "run.global_batch_size=16"]
    overrides = [*fast, f"model.init_from={tmp_path / 'enc'}", "run.evals=[]"]
    recipe = resolve(get_recipe("superclass_tiny"), None, overrides)
    tokenizer = build_tokenizer(recipe.labels)
    task = build_task(recipe, tokenizer, DistInfo(0, 1, 0, torch.device("cpu"))).eval()
    init_from_artifact(task, recipe, tokenizer)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(task.head(task.backbone(x)), head(visual(x)), rtol=0, atol=1e-4)
    assert torch.equal(task.idf.doc_freq, state["module.cap_fq"][0]) and float(task.idf.num_steps) == STEPS

    run = [*overrides, "run.steps=2", f"run.out_dir={tmp_path / 'run'}"]
    artifact = load_encoder(train(resolve(get_recipe("superclass_tiny"), None, run)))
    idf = artifact.load_head()[1]
    assert float(idf["num_steps"]) == STEPS + 2 and float(idf["batch_size"]) == 16  # the statistics went on
    assert bool((idf["doc_freq"] >= state["module.cap_fq"][0]).all())
    word = ["labels.tokenizer=word", "labels.tokenizer_path=synthetic"]
    with pytest.raises(ConfigError, match=r"model.init_from .*: its head has 49408 labels of tokenizer 'clip_bpe'"):
        train(resolve(get_recipe("superclass_tiny"), None, [*overrides, *word, f"run.out_dir={tmp_path / 'w'}"]))

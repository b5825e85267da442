"""A pretrained Hugging Face text encoder from a local path as LiT's text tower: it trains, and zero-shot uses it."""

from __future__ import annotations

import json

import pytest
import torch
from lit_fixtures import tiny_encoder
from safetensors.torch import load_file

from lit.cli import main
from lit.model import HFTextTower, lit_tokenizer, load_lit
from pretrain.data.synthetic import make_sample


@pytest.fixture(scope="module")
def hf_bert(tmp_path_factory):
    """A tiny BERT (hidden 32, 2 layers) and a WordPiece tokenizer trained on synthetic captions, saved as HF does."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    corpus = [make_sample(i, seed=0).caption for i in range(300)]
    tk = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.train_from_iterator(
        corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    )
    cls_id, sep_id = tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    out = tmp_path_factory.mktemp("tiny_bert")
    fast.save_pretrained(out)
    config = BertConfig(
        vocab_size=len(fast),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=fast.pad_token_id,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(out)
    return out


def test_hf_text_tower_trains_and_serves_zero_shot(hf_bert, tmp_path):
    enc = tiny_encoder(tmp_path / "enc")
    run = tmp_path / "run"
    args = ["train", f"encoder={enc}", "text.kind=hf", f"text.hf_path={hf_bert}", "text.embed_dim=32"]
    args += ["labels.context_length=32", "run.steps=24", "run.global_batch_size=16", "run.log_every=4"]
    args += ["run.save_every=0", "optim.lr=5e-3", "optim.warmup_steps=4", "data.synthetic_samples=256"]
    args += ["augment=false", "cache_features=true"]  # the locked tower once, so the steps are the text tower's
    assert main([*args, f"run.out_dir={run}", "data.num_workers=0", "run.device=cpu"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]  # not the run.evals rows
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.1, losses

    lit_dir = run / "lit"
    config = json.loads((lit_dir / "config.json").read_text())
    assert config["text"]["kind"] == "hf" and config["tokenizer"]["tokenizer"] == "hf"
    trained = load_file(str(lit_dir / "model.safetensors"))
    start = load_file(str(hf_bert / "model.safetensors"))
    name = "embeddings.word_embeddings.weight"
    assert not torch.equal(trained[f"text.model.{name}"], start[name])  # the pretrained tower was fine-tuned

    hf_bert.rename(hf_bert.with_name("moved"))  # the LiT directory must not need the original HF path
    try:
        model = load_lit(lit_dir)
        assert isinstance(model.text, HFTextTower)
        tokenizer = lit_tokenizer(lit_dir)
        assert tokenizer.name.startswith("hf:") and tokenizer.pad_id == 0
        data = tmp_path / "data"
        for split in ("train", "val"):
            for i in range(12):
                sample = make_sample(i, seed=1, image_size=40)
                folder = data / split / sample.attributes["colour"]
                folder.mkdir(parents=True, exist_ok=True)
                sample.image.save(folder / f"{i}.png")
        out = tmp_path / "zs"
        zs = ["zeroshot", "--model", str(lit_dir), "--data", str(data), "--templates", "simple", "--out", str(out)]
        assert main(zs) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["num_images"] == 12 and 0.0 <= metrics["top1"] <= metrics["top5"] <= 100.0  # percent
    finally:
        hf_bert.with_name("moved").rename(hf_bert)

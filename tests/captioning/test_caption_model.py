"""ClipCap model and decoding: frozen LM, greedy vs beam, beam beats greedy on a constructed LM, batching."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from eval_fixtures import tiny_encoder
from lit_fixtures import tiny_cnn_encoder
from torch import nn

from captioning.decode import beam_search, greedy_search
from captioning.model import CaptionModelConfig, ClipCapModel, load_lm, load_tokenizer
from captioning.task import CaptionTask, captioner_encoder, load_captioner, save_captioner
from captioning.tiny_gpt2 import build_tiny_lm
from pretrain.encoder import load_encoder
from pretrain.features import encoder_identity
from pretrain.runtime.errors import UserError
from pretrain.runtime.optim import OptimConfig, build_optimizer

CAPTIONS = ["a red circle on the left", "two blue squares at the top", "a green triangle in the center"] * 5


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return build_tiny_lm(CAPTIONS, tmp_path_factory.mktemp("lm"), width=32, layers=2, heads=2, vocab=300)


def _model(lm_dir, **kw) -> ClipCapModel:
    torch.manual_seed(0)
    cfg = CaptionModelConfig(lm=str(lm_dir), **{"mapper": "transformer", "prefix_length": 4, "clip_length": 3,
                                                "num_layers": 1, "num_heads": 2, **kw})  # fmt: skip
    return ClipCapModel(cfg, 16, load_lm(str(lm_dir)))


@pytest.mark.parametrize("mapper,tokens", [("mlp", False), ("transformer", False), ("transformer", True)])
def test_only_mapper_changes_when_lm_frozen(lm_dir, mapper, tokens):
    model = _model(lm_dir, mapper=mapper, tokens=tokens)
    task = CaptionTask(model, None, 16, "enc")
    before = {k: v.clone() for k, v in task.state_dict().items()}
    opt = build_optimizer(task, OptimConfig(lr=1e-2, warmup_steps=0))
    feats = torch.randn(3, 5, 16) if tokens else torch.randn(3, 16)
    tokens_ = torch.randint(1, 50, (3, 6))
    targets = tokens_.clone()
    targets[:, 4:] = -100
    task.train()
    assert not model.lm.training
    task({"features": feats, "tokens": tokens_, "targets": targets})["loss"].backward()
    opt.step()
    changed = {k for k, v in task.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("model.mapper.") for k in changed)
    assert all(p.grad is None for p in model.lm.parameters())


def test_captioner_roundtrip(lm_dir, tmp_path):
    model = _model(lm_dir, mapper="mlp", freeze_lm=False)
    out = save_captioner(tmp_path / "cap", model, load_tokenizer(str(lm_dir)), 16, "enc")
    loaded, _, config = load_captioner(out)
    x = torch.randn(2, 16)
    assert config["encoder"] == str(Path("enc").absolute())  # absolute: generate finds it from anywhere
    torch.testing.assert_close(loaded.prefix(x), model.eval().prefix(x))


@pytest.mark.parametrize(
    "corrupt,needle",
    [
        (lambda c: "{not json", "not valid JSON"),
        (lambda c: json.dumps({k: v for k, v in c.items() if k != "model"}), "'model'"),
        (lambda c: json.dumps({**c, "feature_dim": "16"}), "'feature_dim'"),
        (lambda c: json.dumps({**c, "model": {**c["model"], "mapper": 3}}), "mapper"),
        (lambda c: json.dumps({**c, "model": {**c["model"], "bogus": 1}}), "bogus"),
        (lambda c: json.dumps({**c, "feature_dim": 8}), "mapper.safetensors"),
    ],
)
def test_broken_captioner_config_is_a_one_line_error(lm_dir, tmp_path, corrupt, needle):
    out = save_captioner(tmp_path / "cap", _model(lm_dir, mapper="mlp"), load_tokenizer(str(lm_dir)), 16, "enc")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(corrupt(config))
    with pytest.raises(UserError) as info:
        load_captioner(out)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_captioner_encoder_defaults_to_its_own_and_checks_an_override(tmp_path):
    enc = tiny_encoder(tmp_path / "enc")
    loaded = load_encoder(enc)
    config = {"feature_dim": loaded.num_features, "encoder": str(enc), "encoder_identity": encoder_identity(loaded)}
    assert captioner_encoder(tmp_path / "cap", config).num_features == loaded.num_features  # no override needed
    moved = shutil.copytree(enc, tmp_path / "moved")
    assert captioner_encoder(tmp_path / "cap", {**config, "encoder": str(tmp_path / "gone")}, str(moved)) is not None
    for override, needle in [
        (tiny_encoder(tmp_path / "other", seed=1), "weights_hash"),  # same width, other weights
        (tiny_cnn_encoder(tmp_path / "cnn"), "-d features"),  # another width
        (tmp_path / "nowhere", "not found"),
    ]:
        with pytest.raises(UserError) as info:
            captioner_encoder(tmp_path / "cap", config, str(override))
        message = str(info.value)
        assert needle in message and "config.json" in message and "\n" not in message


def test_beam_one_equals_greedy_and_batching_is_exact(lm_dir):
    model = _model(lm_dir).eval()
    prefix = model.prefix(torch.randn(4, 16) * 3)
    greedy = greedy_search(model.lm, prefix, 12, {14}, 0)
    assert beam_search(model.lm, prefix, 1, 12, {14}, 0) == greedy
    assert [greedy_search(model.lm, prefix[i : i + 1], 12, {14}, 0)[0] for i in range(4)] == greedy
    beams = beam_search(model.lm, prefix, 3, 12, {14}, 0)
    assert [beam_search(model.lm, prefix[i : i + 1], 3, 12, {14}, 0)[0] for i in range(4)] == beams


class BigramLM(nn.Module):
    """Logits set by hand: the first step from `first`, later steps from `table[last token]`; a tuple cache."""

    def __init__(self, first: torch.Tensor, table: torch.Tensor) -> None:
        super().__init__()
        self.first, self.table = first, table

    def forward(self, inputs_embeds=None, input_ids=None, past_key_values=None, use_cache=True):
        if inputs_embeds is not None:
            b = inputs_embeds.shape[0]
            logits = self.first.log().expand(b, 1, -1)
            past = (torch.arange(b)[:, None],)
        else:
            logits = self.table[input_ids[:, -1]].log()[:, None]
            past = (torch.cat([past_key_values[0], input_ids], 1),)
        return SimpleNamespace(logits=logits, past_key_values=past)


def test_beam_finds_higher_scoring_sequence_than_greedy():
    # tokens: 0 EOS, 1 'A', 2 'B', 3..9 filler. A is likelier first, but only B leads to a confident end.
    v = 10
    first = torch.full((v,), 1e-6)
    first[1], first[2] = 0.55, 0.45
    table = torch.full((v, v), 1e-6)
    table[1, 3:] = 1 / 7  # after A: seven equally likely fillers
    table[2, 0] = 1.0  # after B: EOS
    table[3:, 0] = 1.0  # after a filler: EOS
    table = table / table.sum(-1, keepdim=True)
    first = first / first.sum()
    lm = BigramLM(first, table)
    prefix = torch.zeros(2, 3, 4)
    greedy = greedy_search(lm, prefix, 5, set(), 0)
    beam = beam_search(lm, prefix, 3, 5, set(), 0)
    assert greedy[0][0] == 1 and beam[0] == [2] and beam[1] == [2]

    def logp(seq):
        p, prev = first[seq[0]].log(), seq[0]
        for t in seq[1:] + [0]:
            p, prev = p + table[prev, t].log(), t
        return float(p)

    assert logp(beam[0]) > logp(greedy[0])

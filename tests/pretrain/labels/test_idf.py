"""IDF weights: hand-computed online values, parity with the official code, offline counts files, checkpoints."""

import math

import pytest
import torch
import torch.nn.functional as F

from pretrain.labels.idf import IDFConfig, IDFCounts, IDFWeights, compute_idf_counts, load_idf_counts, save_idf_counts
from pretrain.labels.khot import label_ids
from pretrain.labels.losses import superclass_loss
from pretrain.labels.tokenizers import ClipBPETokenizer
from pretrain.runtime.errors import ConfigError


def _sparse(rows: list[list[int]], length: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse labels for rows of distinct ids (no specials, no padding)."""
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    lengths = torch.tensor([len(r) for r in rows])
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return label_ids(ids, lengths, (), official=False)


def test_online_idf_hand_computed():
    idf = IDFWeights(6)
    # step 1, B=2: {1,2}, {2,3} -> df = [0, .5, 1, .5, 0, 0]; w = log((1 + 1/2) / (df + 1/2))
    idf.update(*_sparse([[1, 2], [2, 3]]))
    expected = [math.log(3), math.log(1.5), 0.0, math.log(1.5), math.log(3), math.log(3)]
    assert torch.allclose(idf.weights().double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6)
    # step 2, B=4: {1}, {1,4}, {5}, {} -> df = [0, 1, 1, .5, .25, .25]; w = log((2 + 1/4) / (df + 1/4))
    idf.update(*_sparse([[1], [1, 4], [5], []]))
    expected = [math.log(9), math.log(1.8), math.log(1.8), math.log(3), math.log(4.5), math.log(4.5)]
    assert torch.allclose(idf.weights().double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6)
    # step 3, B=1: {0} -> df = [1, 1, 1, .5, .25, .25]; w = log(4 / (df + 1))
    idf.update(*_sparse([[0]]))
    expected = [math.log(2), math.log(2), math.log(2), math.log(4 / 1.5), math.log(4 / 1.25), math.log(4 / 1.25)]
    assert torch.allclose(idf.weights().double(), torch.tensor(expected, dtype=torch.float64), atol=1e-6)
    assert idf.num_steps.item() == 3 and idf.doc_freq.dtype == torch.float64


class OfficialClsLoss:
    """The official `ClsLoss.reweight_targets` + loss (official-code.md), at world_size 1 (AVG is the identity)."""

    def __init__(self, vocab_size: int, world_size: int = 1):
        self.cap_fq = torch.zeros([1, vocab_size], dtype=torch.float64)
        self.num_samples = torch.zeros([1, 1], dtype=torch.float64)
        self.world_size = world_size
        self.vocab_size = vocab_size

    def reweight_targets(self, text: torch.Tensor) -> torch.Tensor:
        labels = text.clone()
        targets = torch.zeros(labels.shape[0], self.vocab_size, dtype=torch.float32)
        targets.scatter_(dim=1, index=labels, value=1.0)
        self.cap_fq += targets.sum(dim=0, keepdim=True) / targets.shape[0]
        self.num_samples += 1
        all_batch_size = self.world_size * targets.shape[0]
        w = torch.log((self.num_samples + 1.0 / all_batch_size) / (self.cap_fq + 1.0 / all_batch_size))
        return targets * w.to(dtype=targets.dtype)

    def __call__(self, logits: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        norm_item = F.normalize(self.reweight_targets(text), p=1, dim=1)
        return -(F.log_softmax(logits, dim=1) * norm_item).sum(dim=1).mean()


def _random_text(gen: torch.Generator, n: int, vocab: int, length: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP-layout token rows: SOT, words from a small vocabulary (0 = the real "!" included), EOT, padding 0."""
    sot, eot = vocab - 2, vocab - 1
    text = torch.zeros(n, length, dtype=torch.long)
    lengths = torch.randint(2, length + 1, (n,), generator=gen)
    for i in range(n):
        k = int(lengths[i])
        text[i, 0], text[i, k - 1] = sot, eot
        text[i, 1 : k - 1] = torch.randint(0, 12, (k - 2,), generator=gen)
    return text, lengths


def test_official_formula_parity():
    gen = torch.Generator().manual_seed(0)
    vocab = 40
    official = OfficialClsLoss(vocab)
    ours = IDFWeights(vocab)
    for batch in (8, 8, 5, 8):
        text, lengths = _random_text(gen, batch, vocab)
        logits = torch.randn(batch, vocab, generator=gen) * 3
        ref_loss = official(logits, text)
        ids, valid = label_ids(text, lengths, (vocab - 2, vocab - 1), official=True)
        weights = ours(ids, valid)
        ref_w = torch.log((official.num_samples + 1.0 / batch) / (official.cap_fq + 1.0 / batch))[0]
        torch.testing.assert_close(weights.double(), ref_w, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(superclass_loss(logits, ids, valid, weights), ref_loss, rtol=1e-5, atol=1e-6)


def test_state_dict_round_trip_keeps_float64_statistics():
    gen = torch.Generator().manual_seed(1)
    idf = IDFWeights(40)
    for _ in range(3):
        text, lengths = _random_text(gen, 6, 40)
        idf.update(*label_ids(text, lengths, (38, 39)))
    state = idf.state_dict()
    assert set(state) == {"doc_freq", "num_steps", "batch_size"}
    assert all(t.dtype == torch.float64 for t in state.values())
    fresh = IDFWeights(40)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.weights(), idf.weights())


def test_off_and_eval_modes():
    off = IDFWeights(7, IDFConfig(mode="off"))
    assert torch.equal(off(*_sparse([[1, 2]])), torch.ones(7)) and off.state_dict() == {}
    idf = IDFWeights(7).eval()
    idf(*_sparse([[1, 2]]))
    assert idf.num_steps.item() == 0  # eval mode never updates the statistics
    with pytest.raises(ConfigError, match="idf.mode"):
        IDFWeights(7, IDFConfig(mode="sometimes"))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tok():
    return ClipBPETokenizer()


def test_offline_counts_from_a_caption_stream(tmp_path, tok):
    captions = ["a dog", "a cat", "the dog", "a dog and a dog"]
    counts = compute_idf_counts(iter(captions), tok, official=False, batch_size=3)
    dog, cat, a, the = 1929, 2368, 320, 518
    assert counts.num_samples == 4 and counts.doc_freq.dtype == torch.long
    assert [int(counts.doc_freq[i]) for i in (dog, cat, a, the, 49406, 0)] == [3, 1, 3, 1, 0, 0]
    same = compute_idf_counts(captions, tok, official=False, batch_size=100)
    assert torch.equal(same.doc_freq, counts.doc_freq)
    official = compute_idf_counts(captions, tok, official=True)
    assert [int(official.doc_freq[i]) for i in (49406, 49407, 0)] == [4, 4, 4]  # specials and padding counted

    path = tmp_path / "idf" / "counts.safetensors"
    save_idf_counts(counts, path, tokenizer_name=tok.name)
    loaded = load_idf_counts(path)
    assert loaded.num_samples == 4 and torch.equal(loaded.doc_freq, counts.doc_freq)
    idf = IDFWeights(tok.vocab_size, IDFConfig(mode="offline", counts_path=str(path)))
    w = idf.weights()
    assert w[dog].item() == pytest.approx(math.log(5 / 4)) and w[cat].item() == pytest.approx(math.log(5 / 2))
    assert w[12345].item() == pytest.approx(math.log(5))
    assert set(idf.state_dict()) == {"doc_freq", "num_samples"}


def test_bad_counts_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.safetensors"):
        IDFWeights(10, IDFConfig(mode="offline", counts_path=str(tmp_path / "nowhere.safetensors")))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="garbage.safetensors"):
        load_idf_counts(garbage)
    good = tmp_path / "small.safetensors"
    save_idf_counts(IDFCounts(doc_freq=torch.tensor([1, 0, 2]), num_samples=2), good)
    with pytest.raises(ConfigError, match="small.safetensors"):
        IDFWeights(10, IDFConfig(mode="offline", counts_path=str(good)))
    bad = tmp_path / "bad.safetensors"
    save_idf_counts(IDFCounts(doc_freq=torch.tensor([5, 0, 2]), num_samples=2), bad)
    with pytest.raises(ConfigError, match="bad.safetensors"):
        load_idf_counts(bad)


def test_counts_file_records_mode_and_tokenizer_and_a_run_with_others_is_refused(tmp_path, tok):
    captions = ["a dog", "a cat"]
    path = tmp_path / "official.safetensors"
    save_idf_counts(compute_idf_counts(captions, tok, official=True), path)
    loaded = load_idf_counts(path)
    assert (loaded.mode, loaded.tokenizer) == ("official", tok.name)
    offline = IDFConfig(mode="offline", counts_path=str(path))
    IDFWeights(tok.vocab_size, offline, tokenizer=tok.name, label_mode="official")  # matching: fine
    with pytest.raises(ConfigError, match=r"official.safetensors .*labels\.mode 'official'.* 'masked'") as info:
        IDFWeights(tok.vocab_size, offline, tokenizer=tok.name, label_mode="masked")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="tokenizer 'clip_bpe'"):
        load_idf_counts(path, tokenizer="word:vocab.txt", mode="official")
    unrecorded = tmp_path / "old.safetensors"  # files written before the metadata existed still load
    save_idf_counts(IDFCounts(doc_freq=torch.zeros(tok.vocab_size, dtype=torch.long), num_samples=2), unrecorded)
    assert load_idf_counts(unrecorded, tokenizer=tok.name, mode="masked").num_samples == 2

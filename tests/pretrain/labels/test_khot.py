"""K-hot labels on hand-tokenised captions: padding vs the real "!", specials, duplicates, sparse == dense."""

import pytest
import torch

from pretrain.labels.khot import count_labels, khot, label_ids
from pretrain.labels.tokenizers import ClipBPETokenizer

SOT, EOT = 49406, 49407
V = 49408
# Golden CLIP BPE ids, token by token ('!"!' gives the real token "!" = 0, the same id as padding).
CAPTIONS = {
    'a dog !"!': [SOT, 320, 1929, 0, 10377, EOT],
    "the the cat": [SOT, 518, 518, 2368, EOT],
    "": [SOT, EOT],
}


@pytest.fixture(scope="module")
def tok():
    return ClipBPETokenizer(context_length=77)


def _labels(ids, valid):
    return [sorted(ids[i][valid[i]].tolist()) for i in range(ids.shape[0])]


def test_golden_clip_bpe_ids(tok):
    ids, lengths = tok(list(CAPTIONS))
    for row, expected in enumerate(CAPTIONS.values()):
        assert ids[row, : len(expected)].tolist() == expected
        assert (ids[row, len(expected) :] == 0).all()  # padding is 0, like the real "!"
        assert lengths[row] == len(expected)


def test_masked_mode_keeps_real_bang_drops_padding_and_specials(tok):
    ids, lengths = tok(list(CAPTIONS))
    sparse, valid = label_ids(ids, lengths, tok.special_ids, official=False)
    assert _labels(sparse, valid) == [[0, 320, 1929, 10377], [518, 2368], []]


def test_official_mode_keeps_every_position(tok):
    ids, lengths = tok(list(CAPTIONS))
    sparse, valid = label_ids(ids, lengths, tok.special_ids, official=True)
    # padding id 0 and SOT/EOT are labels, as `targets.scatter_(1, text, 1.0)` makes them; duplicates collapse
    assert _labels(sparse, valid) == [[0, 320, 1929, 10377, SOT, EOT], [0, 518, 2368, SOT, EOT], [0, SOT, EOT]]
    dense = khot(sparse, valid, V)
    reference = torch.zeros(3, V).scatter_(1, ids, 1.0)
    assert torch.equal(dense, reference)


def test_no_padding_means_no_zero_label(tok):
    # a caption without "!" that fills the context: official mode has no 0 label, masked mode never has one
    ids, lengths = tok(["dog " * 100])
    assert lengths.tolist() == [77] and ids[0, -1] == EOT
    for official in (False, True):
        sparse, valid = label_ids(ids, lengths, tok.special_ids, official=official)
        assert 0 not in sparse[valid].tolist()
        assert (1929 in sparse[valid].tolist()) and valid.sum() == (3 if official else 1)


def test_sparse_equals_dense_on_random_rows():
    gen = torch.Generator().manual_seed(0)
    n, length, vocab = 16, 12, 20
    ids = torch.randint(0, vocab, (n, length), generator=gen)
    lengths = torch.randint(0, length + 1, (n,), generator=gen)
    specials = (18, 19)
    for official in (False, True):
        sparse, valid = label_ids(ids, lengths, specials, official=official)
        dense = khot(sparse, valid, vocab)
        for i in range(n):
            row = ids[i] if official else ids[i, : lengths[i]]
            expected = set(row.tolist()) - (set() if official else set(specials))
            assert set(torch.nonzero(dense[i]).flatten().tolist()) == expected
            assert int(valid[i].sum()) == len(expected)
        assert dense.max() <= 1.0
        assert torch.equal(count_labels(sparse, valid, vocab), dense.sum(0).double())

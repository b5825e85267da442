"""SuperClass losses: the paper's formula in float64, empty rows, bf16 autocast, ablations vs references, CLIP loss."""

import pytest
import torch
import torch.nn.functional as F

from pretrain.labels.khot import khot, label_ids
from pretrain.labels.losses import LossConfig, clip_loss, superclass_loss
from pretrain.runtime.errors import ConfigError

KINDS = ["softmax", "bce", "asl", "soft_margin", "two_way"]


def _problem(seed: int = 0, n: int = 6, vocab: int = 50, length: int = 9):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, length), generator=gen)
    lengths = torch.randint(1, length + 1, (n,), generator=gen)
    sparse, valid = label_ids(ids, lengths, (vocab - 1,), official=False)
    logits = torch.randn(n, vocab, generator=gen) * 2
    weights = torch.rand(vocab, generator=gen) * 5
    weights[:5] = 0.0  # zero-IDF labels, like SOT/EOT in the official mode
    return logits, sparse, valid, weights


def test_softmax_equals_paper_formula_in_float64():
    for seed in range(3):
        logits, ids, valid, weights = _problem(seed)
        y = khot(ids, valid, logits.shape[1]).double()
        wy = weights.double()[None] * y
        y_hat = wy / wy.sum(1, keepdim=True)
        expected = -(y_hat * F.log_softmax(logits.double(), dim=1)).sum(1).mean()
        loss = superclass_loss(logits, ids, valid, weights)
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)


def test_sparse_gradient_equals_dense_gradient():
    logits, ids, valid, weights = _problem(3)
    x = logits.clone().requires_grad_(True)
    superclass_loss(x, ids, valid, weights).backward()
    wy = weights[None] * khot(ids, valid, logits.shape[1])
    dense = torch.softmax(logits, 1) * (wy.sum(1, keepdim=True) > 0) - wy / wy.sum(1, keepdim=True).clamp_min(1e-12)
    torch.testing.assert_close(x.grad, dense / logits.shape[0], rtol=1e-5, atol=1e-7)


def test_hand_written_backward_passes_gradcheck():
    logits, ids, valid, weights = _problem(9, n=3, vocab=12, length=5)
    x = logits.double().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: superclass_loss(t, ids, valid, weights), (x,))
    xb = logits.bfloat16().requires_grad_(True)
    superclass_loss(xb, ids, valid, weights).backward()
    assert xb.grad.dtype == torch.bfloat16


def test_rows_without_weighted_labels_contribute_zero():
    logits, ids, valid, weights = _problem(4)
    valid[0] = False  # no labels at all
    ids[1], valid[1] = 2, False
    valid[1, 0] = True  # a single label whose IDF is 0
    x = logits.clone().requires_grad_(True)
    loss = superclass_loss(x, ids, valid, weights)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    assert (x.grad[:2] == 0).all()
    rest = superclass_loss(logits[2:], ids[2:], valid[2:], weights)
    torch.testing.assert_close(loss, rest * (logits.shape[0] - 2) / logits.shape[0])


def test_bf16_autocast_runs_in_fp32_and_stays_close():
    torch.manual_seed(0)
    _, ids, valid, weights = _problem(5)
    head = torch.nn.Linear(16, 50)
    feats = torch.randn(6, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(feats)
        loss = superclass_loss(logits, ids, valid, weights)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    torch.testing.assert_close(loss, superclass_loss(logits.float(), ids, valid, weights))  # same math in fp32
    torch.testing.assert_close(loss, superclass_loss(head(feats), ids, valid, weights), rtol=2e-2, atol=2e-2)


def _two_way_reference(x, y, tp=4.0, tn=1.0):
    """Kobayashi's TwoWayLoss (tk1980/TwoWayMultiLabelLoss, utils/criterion.py)."""
    class_mask = (y > 0).any(dim=0)
    sample_mask = (y > 0).any(dim=1)
    pmask = y.masked_fill(y <= 0, -100).masked_fill(y > 0, 0.0)
    plogit_class = torch.logsumexp(-x / tp + pmask, dim=0).mul(tp)[class_mask]
    plogit_sample = torch.logsumexp(-x / tp + pmask, dim=1).mul(tp)[sample_mask]
    nmask = y.masked_fill(y != 0, -100).masked_fill(y == 0, 0.0)
    nlogit_class = torch.logsumexp(x / tn + nmask, dim=0).mul(tn)[class_mask]
    nlogit_sample = torch.logsumexp(x / tn + nmask, dim=1).mul(tn)[sample_mask]
    return F.softplus(nlogit_class + plogit_class).mean() + F.softplus(nlogit_sample + plogit_sample).mean()


def _asl_reference(x, y, gamma_neg=4.0, gamma_pos=0.0, clip=0.05, eps=1e-8):
    """Ben-Baruch et al.'s AsymmetricLoss (Alibaba-MIIL/ASL), summed over classes and averaged over the batch."""
    xs_pos = torch.sigmoid(x)
    xs_neg = (1 - xs_pos + clip).clamp(max=1)
    loss = y * torch.log(xs_pos.clamp(min=eps)) + (1 - y) * torch.log(xs_neg.clamp(min=eps))
    pt = xs_pos * y + xs_neg * (1 - y)
    loss = loss * torch.pow(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
    return -loss.sum(dim=1).mean()


def test_ablations_match_references_with_uniform_weights():
    logits, ids, valid, _ = _problem(6)
    ones = torch.ones(logits.shape[1])
    y = khot(ids, valid, logits.shape[1])
    n = logits.shape[0]

    def loss(kind, **kw):
        return superclass_loss(logits, ids, valid, ones, LossConfig(kind=kind, **kw))

    torch.testing.assert_close(loss("bce"), F.binary_cross_entropy_with_logits(logits, y, reduction="sum") / n)
    torch.testing.assert_close(loss("soft_margin"), F.multilabel_soft_margin_loss(logits, y))
    torch.testing.assert_close(loss("asl"), _asl_reference(logits, y))
    torch.testing.assert_close(loss("asl", asl_gamma_pos=1.0), _asl_reference(logits, y, gamma_pos=1.0))
    torch.testing.assert_close(loss("two_way"), _two_way_reference(logits, y))
    torch.testing.assert_close(loss("two_way", two_way_tp=2.0), _two_way_reference(logits, y, tp=2.0))


def test_weighted_ablations_use_idf_on_positives():
    logits, ids, valid, weights = _problem(7)
    y = khot(ids, valid, logits.shape[1])
    expected = -(y * weights * F.logsigmoid(logits) + (1 - y) * F.logsigmoid(-logits)).sum(1).mean()
    torch.testing.assert_close(superclass_loss(logits, ids, valid, weights, LossConfig(kind="bce")), expected)
    two_way = LossConfig(kind="two_way")
    a = superclass_loss(logits, ids, valid, weights, two_way)
    b = superclass_loss(logits, ids, valid, weights * 7.0, two_way)
    torch.testing.assert_close(a, b)  # IDF enters the two-way loss scale-free


@pytest.mark.parametrize("kind", KINDS)
def test_every_loss_is_finite_and_trains_a_toy_head(kind):
    torch.manual_seed(0)
    n, dim, vocab = 32, 24, 60
    feats = torch.randn(n, dim)
    ids = torch.randint(0, vocab, (n, 5))
    sparse, valid = label_ids(ids, torch.full((n,), 5), (), official=False)
    weights = torch.rand(vocab) * 3 + 0.1
    head = torch.nn.Linear(dim, vocab)
    opt = torch.optim.SGD(head.parameters(), lr=0.5 if kind in ("softmax", "two_way") else 0.05)
    cfg = LossConfig(kind=kind)
    if kind == "soft_margin":
        opt = torch.optim.SGD(head.parameters(), lr=5.0)  # its loss is bce / V
    losses = []
    for _ in range(15):
        loss = superclass_loss(head(feats), sparse, valid, weights, cfg)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_unknown_kind_is_config_error():
    logits, ids, valid, weights = _problem(8)
    with pytest.raises(ConfigError, match="loss.kind"):
        superclass_loss(logits, ids, valid, weights, LossConfig(kind="hinge"))  # type: ignore[arg-type]


def test_clip_loss_factory():
    from open_clip.loss import ClipLoss

    loss_fn = clip_loss(world_size=1, rank=0)
    assert isinstance(loss_fn, ClipLoss)
    assert loss_fn.local_loss and loss_fn.gather_with_grad and loss_fn.cache_labels
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(4, 8), dim=-1), F.normalize(torch.randn(4, 8), dim=-1)
    loss = loss_fn(img, txt, torch.tensor(10.0))
    labels = torch.arange(4)
    logits = 10.0 * img @ txt.T
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(loss, expected)

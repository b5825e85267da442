"""SuperClass head: the official init and shapes."""

import torch

from pretrain.models.heads import SuperClassHead


def test_init_matches_the_official_code():
    torch.manual_seed(0)
    width, vocab = 768, 4000
    head = SuperClassHead(width, vocab)
    w = head.proj.weight
    assert w.shape == (vocab, width)
    assert abs(w.std().item() - width**-0.5) < 0.01 * width**-0.5
    assert abs(w.mean().item()) < 1e-3
    assert torch.count_nonzero(head.proj.bias) == 0
    assert torch.equal(head.norm.weight, torch.ones(width)) and torch.count_nonzero(head.norm.bias) == 0
    assert head.norm.eps == 1e-5


def test_forward_is_layernorm_then_linear():
    torch.manual_seed(0)
    head = SuperClassHead(32, 100)
    pooled = torch.randn(4, 32) * 5 + 3
    logits = head(pooled)
    assert logits.shape == (4, 100)
    normed = (pooled - pooled.mean(-1, keepdim=True)) / torch.sqrt(pooled.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(logits, normed @ head.proj.weight.T, rtol=1e-4, atol=1e-5)
    logits.sum().backward()
    assert all(p.grad is not None for p in head.parameters())

"""On a GPU: labels, online IDF and every loss run without host syncs, and match the CPU results."""

import pytest
import torch

from pretrain.labels.idf import IDFWeights
from pretrain.labels.khot import khot, label_ids
from pretrain.labels.losses import LossConfig, superclass_loss

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

V = 49408
SPECIALS = (49406, 49407)


def _batch(n: int = 64, length: int = 77) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49406, (n, length), generator=gen)
    lengths = torch.randint(2, length + 1, (n,), generator=gen)
    return ids, lengths


@pytest.mark.parametrize("kind", ["softmax", "bce", "asl", "soft_margin", "two_way"])
@pytest.mark.parametrize("official", [False, True])
def test_no_host_sync_and_cpu_parity(kind, official):
    ids, lengths = _batch()
    logits = torch.randn(ids.shape[0], V, generator=torch.Generator().manual_seed(1))
    cpu_idf = IDFWeights(V)
    cpu_sparse = label_ids(ids, lengths, SPECIALS, official)
    cpu_loss = superclass_loss(logits, *cpu_sparse, cpu_idf(*cpu_sparse), LossConfig(kind=kind))

    dev = torch.device("cuda")
    gpu_idf = IDFWeights(V).to(dev)
    ids_d, lengths_d = ids.to(dev), lengths.to(dev)
    x = logits.to(dev).requires_grad_(True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        sparse = label_ids(ids_d, lengths_d, SPECIALS, official)
        weights = gpu_idf(*sparse)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = superclass_loss(x, *sparse, weights, LossConfig(kind=kind))
        loss.backward()
        khot(*sparse, V)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(loss.cpu(), cpu_loss, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gpu_idf.doc_freq.cpu(), cpu_idf.doc_freq)
    assert torch.isfinite(x.grad).all()

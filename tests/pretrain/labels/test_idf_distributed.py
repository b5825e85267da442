"""Online IDF over 2 gloo ranks equals the 1-process IDF on the concatenated batch (even with unequal halves),
and, with equal halves, the official code's per-rank mean + all_reduce(AVG) formulation."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pretrain.labels.idf import IDFWeights
from pretrain.labels.khot import label_ids

VOCAB = 30
SPECIALS = (28, 29)


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three steps of (ids, lengths), each split over ranks below."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for n in (8, 6, 10):
        ids = torch.randint(0, VOCAB, (n, 7), generator=gen)
        lengths = torch.randint(0, 8, (n,), generator=gen)
        out.append((ids, lengths))
    return out


SPLITS = (4, 2, 7)  # rows of each step that rank 0 gets; rank 1 gets the rest (unequal on purpose)
EQUAL = (4, 3, 5)


def _official_weights(rank: int) -> torch.Tensor:
    """The official `reweight_targets` statistics with equal local batches (AVG = SUM / world size on gloo)."""
    cap_fq = torch.zeros([1, VOCAB], dtype=torch.float64)
    num_samples = torch.zeros([1, 1], dtype=torch.float64)
    for (ids, _), split in zip(_batches(), EQUAL):
        text = ids[:split] if rank == 0 else ids[split:]
        targets = torch.zeros(text.shape[0], VOCAB).scatter_(1, text, 1.0)
        cap_fq += targets.sum(dim=0, keepdim=True) / targets.shape[0]
        num_samples += 1
        for stat in (cap_fq, num_samples):
            dist.all_reduce(stat, op=dist.ReduceOp.SUM)
            stat /= 2
        all_batch_size = 2 * targets.shape[0]
    return torch.log((num_samples + 1.0 / all_batch_size) / (cap_fq + 1.0 / all_batch_size))[0].float()


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        idf = IDFWeights(VOCAB)
        for (ids, lengths), split in zip(_batches(), SPLITS):
            part = slice(0, split) if rank == 0 else slice(split, None)
            idf.update(*label_ids(ids[part], lengths[part], SPECIALS))
        official = IDFWeights(VOCAB)
        for (ids, lengths), split in zip(_batches(), EQUAL):
            part = slice(0, split) if rank == 0 else slice(split, None)
            official.update(*label_ids(ids[part], lengths[part], SPECIALS, official=True))
        result = {"weights": idf.weights(), **idf.state_dict()}
        result.update(official_ours=official.weights(), official_ref=_official_weights(rank))
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_idf_summed_across_ranks_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    single = IDFWeights(VOCAB)
    for ids, lengths in _batches():
        single.update(*label_ids(ids, lengths, SPECIALS))
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(got["weights"], single.weights(), rtol=0, atol=1e-6)
        torch.testing.assert_close(got["doc_freq"], single.doc_freq, rtol=1e-12, atol=1e-12)
        assert got["num_steps"].item() == 3 and got["batch_size"].item() == 10
        torch.testing.assert_close(got["official_ours"], got["official_ref"], rtol=1e-6, atol=1e-6)

"""The one top-k accuracy every evaluator reports: percent, k capped at the classes, NaN on an empty set."""

from __future__ import annotations

import math

import torch

import eval.probes.linear_probe
import lit.zeroshot
import pretrain.runtime.results
from pretrain.metrics import topk_accuracy


def test_topk_accuracy_in_percent():
    logits = torch.tensor([[3.0, 2, 1, 0, -1, -2], [0, 1, 2, 3, 4, 5]])
    assert topk_accuracy(logits, torch.tensor([1, 0]), ks=(1, 5)) == {"top1": 0.0, "top5": 50.0}
    assert topk_accuracy(logits, torch.tensor([0, 5]), ks=(1,)) == {"top1": 100.0}


def test_k_is_capped_at_the_classes_and_empty_is_nan():
    logits = torch.tensor([[0.0, 1.0, 2.0]])
    assert topk_accuracy(logits, torch.tensor([0]), ks=(1, 5)) == {"top1": 0.0, "top5": 100.0}
    empty = topk_accuracy(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert set(empty) == {"top1", "top5"} and all(math.isnan(v) for v in empty.values())


def test_every_evaluator_uses_the_same_definition():
    assert lit.zeroshot.topk_accuracy is topk_accuracy
    assert pretrain.runtime.results.topk_accuracy is topk_accuracy
    assert eval.probes.linear_probe.topk_accuracy is topk_accuracy

"""big_vision fewshot_lsr port: support sampling, the ridge solution, accuracy bounds, and no test leakage."""

import json

import numpy as np
import pytest
import torch
from eval_fixtures import feature_set, random_labels, separable

from eval.probes.fewshot import BIAS_CONSTANT, FewShotConfig, ridge_precompute, run_fewshot, sample_support
from pretrain.runtime.errors import DataError


def test_support_is_k_per_class_and_deterministic_per_seed():
    labels = np.repeat(np.arange(5), 30)
    np.random.default_rng(0).shuffle(labels)
    a, b = sample_support(labels, 10, seed=1, num_classes=5), sample_support(labels, 10, seed=1, num_classes=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sample_support(labels, 10, seed=2, num_classes=5))
    assert len(set(a.tolist())) == 50
    assert np.bincount(labels[a], minlength=5).tolist() == [10] * 5
    # big_vision takes the first k of one permutation per class: fewer shots are a subset
    assert set(sample_support(labels, 3, seed=1, num_classes=5)) <= set(a.tolist())
    # the same draw as big_vision's code
    rng = np.random.default_rng(1)
    ref = np.concatenate([rng.permutation(np.where(labels == c)[0])[:10] for c in range(5)])
    np.testing.assert_array_equal(a, ref)


@pytest.mark.parametrize("n,dim", [(40, 6), (12, 30)])  # N >= D (primal) and D > N (dual)
def test_ridge_matches_a_direct_solve(n, dim):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=g) * 3 + 1
    y = torch.arange(n) % 4
    l2 = 7.5
    cache = ridge_precompute(x, y, 4)
    xn = x.double().numpy()
    xs = (xn - xn.mean(0)) / (xn.std(0) + 1e-5)
    xs = np.concatenate([xs, np.full((n, 1), BIAS_CONSTANT)], axis=1)
    t = 2.0 * np.eye(4)[y.numpy()] - 1.0
    w = np.linalg.solve(xs.T @ xs + l2 * np.eye(dim + 1), xs.T @ t)
    np.testing.assert_allclose(cache.weights(l2).numpy(), w, rtol=1e-6, atol=1e-8)
    x_test = torch.randn(9, dim, generator=g)
    xt = (x_test.double().numpy() - xn.mean(0)) / (xn.std(0) + 1e-5)
    expected = (np.concatenate([xt, np.full((9, 1), BIAS_CONSTANT)], axis=1) @ w).argmax(1)
    np.testing.assert_array_equal(cache.predict(x_test, l2).numpy(), expected)


def test_separable_reaches_100_and_random_labels_stay_at_chance(tmp_path):
    cfg = FewShotConfig()
    good = run_fewshot(cfg, separable(200, 5, seed=0), separable(300, 5, seed=1, offset=10**6), tmp_path, False)
    assert good["top1"] == 100.0 and good["top1_std"] == 0.0 and good["shots"] == 10
    assert good["results"]["10"]["support_size"] == [50, 50, 50]
    rand = run_fewshot(cfg, random_labels(300, 4, seed=0), random_labels(600, 4, seed=1, offset=10**6), None, False)
    assert abs(rand["top1"] - 25.0) < 8.0
    assert len(rand["results"]["10"]["per_seed"]) == 3
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["protocol"] == "big_vision_fewshot_lsr" and metrics["config"]["l2_reg"] == 1024.0
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 3 * 300


def test_support_never_contains_a_test_image():
    train = separable(100, 4, seed=0)
    test = feature_set(train.get("default")[:20], train.labels[:20], 4)  # the same items (same keys)
    with pytest.raises(DataError, match="also in the test split"):
        run_fewshot(FewShotConfig(shots=(25,)), train, test, None, False)


def test_l2_sweep_uses_only_held_out_train():
    train, test = random_labels(200, 4, seed=0), random_labels(100, 4, seed=1, offset=10**6)
    cfg = FewShotConfig(shots=(5,), l2_sweep=(1.0, 1024.0, 2.0**14))
    first = run_fewshot(cfg, train, test, None, False)
    shuffled = feature_set(test.get("default"), test.labels.roll(1), 4, offset=10**6)
    second = run_fewshot(cfg, train, shuffled, None, False)
    assert first["results"]["5"]["l2"] == second["results"]["5"]["l2"]  # the test split never chooses
    assert set(first["results"]["5"]["l2"]) <= {1.0, 1024.0, 2.0**14}
    assert first["protocol"].endswith("l2_sweep_on_heldout_train")

"""1-D k-means for weight sharing."""
from __future__ import annotations

import time

import numpy as np
import pytest

from compression.coding import kmeans1d as K


def _mse(x, centroids, indices):
    return float(np.mean((centroids[indices].astype(np.float64) - x.astype(np.float64)) ** 2))


def _weights(n=300_000, seed=0):
    rng = np.random.default_rng(seed)
    # Gaussian bulk plus a heavy tail, like trained layers.
    w = rng.standard_normal(n) * 0.02
    w[: n // 100] = rng.standard_t(2, n // 100) * 0.05
    return rng.permutation(w).astype(np.float32)


@pytest.mark.parametrize("init", K.INITS)
@pytest.mark.parametrize("k", [1, 2, 16, 32, 256, 300])
def test_at_most_k_values_and_consistent_indices(init, k):
    x = _weights(50_000)
    c, idx = K.kmeans_1d(x, k, init=init, seed=3)
    assert c.dtype == np.float32 and c.shape == (k,)
    assert np.all(np.diff(c) >= 0)
    assert idx.dtype == (np.uint8 if k <= 256 else np.uint16) and idx.shape == x.shape
    assert np.unique(c[idx]).size <= k
    np.testing.assert_array_equal(idx, K.assign(x, c))


def test_indices_are_nearest_centroid():
    x = _weights(100_000, seed=1)
    c, idx = K.kmeans_1d(x, 32, init="density")
    d = np.abs(x[:, None].astype(np.float64) - c[None, :].astype(np.float64))
    np.testing.assert_allclose(d[np.arange(x.size), idx], d.min(axis=1), rtol=0, atol=0)


@pytest.mark.parametrize("init", K.INITS)
def test_distortion_never_increases(init):
    x = _weights(seed=2)
    # The recorded history, and independently the MSE after i iterations.
    h = np.array(K.fit(x, 32, init=init, seed=5, iters=200).distortion)
    assert np.all(np.diff(h) <= 1e-9 * h[0])
    direct = [_mse(x, *K.kmeans_1d(x, 32, init=init, seed=5, iters=i)) for i in range(0, 12)]
    assert np.all(np.diff(direct) <= 1e-7 * direct[0])
    assert direct[-1] < direct[0]
    np.testing.assert_allclose(h[:12] / x.size, direct, rtol=1e-5)


def test_beats_uniform_and_quantile_quantization():
    x = _weights(seed=4)
    for k in (8, 32):
        uniform = np.linspace(x.min(), x.max(), k, dtype=np.float32)
        quantile = np.quantile(x, (np.arange(k) + 0.5) / k).astype(np.float32)
        base_u = _mse(x, uniform, K.assign(x, uniform))
        base_q = _mse(x, quantile, K.assign(x, quantile))
        for init in K.INITS:
            c, idx = K.kmeans_1d(x, k, init=init, seed=0)
            assert _mse(x, c, idx) <= min(base_u, base_q) * (1 + 1e-6)


def test_converges_to_a_fixed_point():
    x = _weights(seed=5)
    r = K.fit(x, 16, init="density", iters=5000)
    assert r.converged and r.iterations < 5000
    # Fixed point: every centroid is the mean of its cluster.
    for j in range(16):
        members = x[r.indices == j]
        if members.size:
            assert r.centroids[j] == pytest.approx(members.astype(np.float64).mean(), rel=1e-6, abs=1e-9)


def test_deterministic_given_seed():
    x = _weights(seed=6)
    a = K.kmeans_1d(x, 32, init="random", seed=11)
    b = K.kmeans_1d(x.copy(), 32, init="random", seed=11)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = K.kmeans_1d(x, 32, init="random", seed=12, iters=0)
    assert not np.array_equal(a[0], c[0])


def test_inits_as_in_deep_compression():
    x = np.arange(1000, dtype=np.float32)
    np.testing.assert_allclose(K.kmeans_1d(x, 5, init="linear", iters=0)[0], [0, 249.75, 499.5, 749.25, 999])
    np.testing.assert_array_equal(K.kmeans_1d(x, 4, init="density", iters=0)[0], [125, 375, 625, 875])
    forgy = K.kmeans_1d(x, 8, init="random", seed=1, iters=0)[0]
    assert np.unique(forgy).size == 8 and np.isin(forgy, x).all()


def test_empty_clusters_and_degenerate_inputs():
    # Fewer distinct values than k: every value is represented exactly.
    x = np.array([1, 1, 1, 2, 2, 9] * 100, np.float32)
    for init in K.INITS:
        c, idx = K.kmeans_1d(x, 8, init=init, seed=0)
        np.testing.assert_array_equal(c[idx], x)
    # Linear init on an outlier leaves most centroids empty at first; they get reused.
    y = np.concatenate([np.random.default_rng(0).standard_normal(10_000), [1000.0]]).astype(np.float32)
    r = K.fit(y, 16, init="linear")
    assert np.unique(r.indices).size == 16
    c, idx = K.kmeans_1d(np.full(100, 3.0), 4)
    np.testing.assert_array_equal(c[idx], 3.0)
    c, idx = K.kmeans_1d(np.zeros(0, np.float32), 4)
    assert idx.size == 0 and c.shape == (4,)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError):
        K.kmeans_1d(np.array([1.0, np.nan]), 2)
    with pytest.raises(ValueError):
        K.kmeans_1d(np.ones(4), 0)
    with pytest.raises(ValueError):
        K.kmeans_1d(np.ones(4), 2, init="kmeans++")
    with pytest.raises(ValueError):
        K.assign(np.ones(4), np.array([np.inf]))


def test_assign_matches_brute_force_including_ties_and_unsorted_codebooks():
    rng = np.random.default_rng(7)
    c = np.sort(rng.standard_normal(40).astype(np.float32))
    c[10] = c[11]  # duplicate centroid
    mids = ((c[:-1].astype(np.float64) + c[1:]) / 2).astype(np.float32)
    x = np.concatenate([rng.standard_normal(100_000) * 2, mids, c, [-1e30, 1e30]]).astype(np.float32)
    idx = K.assign(x, c)
    d = np.abs(x[:, None].astype(np.float64) - c[None, :].astype(np.float64))
    np.testing.assert_array_equal(d[np.arange(x.size), idx], d.min(axis=1))
    np.testing.assert_array_equal(idx, np.searchsorted(K.thresholds(c), x, side="right"))
    perm = rng.permutation(c.size)
    idx_p = K.assign(x, c[perm])
    np.testing.assert_array_equal(c[perm][idx_p], c[idx])
    # Tightly packed thresholds take the binary-search path; same answer.
    tight = np.sort(np.concatenate([np.linspace(0, 1e-6, 30), [-5, 5]])).astype(np.float32)
    np.testing.assert_array_equal(K.assign(x, tight), np.searchsorted(K.thresholds(tight), x, side="right"))


def test_speed_is_sort_bound():
    """Measured 20M values, k=32: ~0.3-0.45 s to full convergence."""
    x = _weights(2_000_000, seed=8)
    start = time.perf_counter()
    K.kmeans_1d(x, 32, init="linear")
    assert time.perf_counter() - start < 5

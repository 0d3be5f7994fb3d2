import numpy as np
import pytest

from mmar.errors import ShapeError
from mmar.eval.t2m import (
    diversity,
    fid,
    frechet_distance,
    gaussian_stats,
    interval,
    mm_dist,
    multimodality,
    r_precision,
    repeat_with_interval,
)


def test_fid_identical_sets_is_zero():
    x = np.random.default_rng(0).normal(size=(500, 16))
    assert fid(x, x) == pytest.approx(0.0, abs=1e-8)


def test_fid_independent_samples_of_one_gaussian_is_small():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(20000, 4)), rng.normal(size=(20000, 4))
    assert fid(a, b) < 0.01


def test_fid_shift_equals_squared_norm():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8))  # correlated
    shift = np.arange(8) * 0.1
    # same covariance exactly: the trace term vanishes
    assert fid(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_frechet_distance_diagonal_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_non_commuting_2x2():
    # for 2x2 M with positive eigenvalues, tr sqrt(M) = sqrt(tr M + 2 sqrt(det M))
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[1.0, -0.4], [-0.4, 3.0]])
    m = s1 @ s2
    tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    expected = np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(np.zeros(2), s1, np.zeros(2), s2) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(200, 12)), rng.normal(size=(150, 12)) * 1.5 + 0.3
    mu1, s1 = gaussian_stats(a)
    mu2, s2 = gaussian_stats(b)
    covmean = np.real(scipy_linalg.sqrtm(s1 @ s2))
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert fid(a, b) == pytest.approx(expected, rel=1e-6)


def test_fid_shape_errors():
    with pytest.raises(ShapeError):
        fid(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(ShapeError):
        fid(np.zeros(10), np.zeros(10))


def test_r_precision_perfect_match():
    x = np.random.default_rng(4).normal(size=(96, 16))
    np.testing.assert_allclose(r_precision(x, x), [1.0, 1.0, 1.0])


def test_r_precision_random_is_chance():
    rng = np.random.default_rng(5)
    t, m = rng.normal(size=(32 * 200, 8)), rng.normal(size=(32 * 200, 8))
    acc = r_precision(t, m, batch_size=32, top_k=3)
    np.testing.assert_allclose(acc, [1 / 32, 2 / 32, 3 / 32], atol=0.012)
    assert np.all(np.diff(acc) > 0)


def test_r_precision_ranks_and_drop_last():
    # 1D embeddings; batch of 4, the 5th pair is dropped (its motion would win everywhere)
    text = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    motion = np.array([[0.1], [1.1], [2.1], [3.1], [0.0]])
    np.testing.assert_allclose(r_precision(text, motion, batch_size=4, top_k=2), [1.0, 1.0])
    # text 0 (at 0): its own motion at 0.7 is beaten by motion 1 at 0.6 -> rank 1;
    # text 1 (at 1): motion 0 at 0.7 (distance 0.3) beats its own at 0.6 (0.4) -> rank 1
    motion2 = np.array([[0.7], [0.6], [2.0], [3.0], [0.0]])
    acc = r_precision(text, motion2, batch_size=4, top_k=2)
    np.testing.assert_allclose(acc, [0.5, 1.0])
    # text 0: motions at 0.5 and 0.6 are both closer than its own at 0.9 -> rank 2
    motion3 = np.array([[0.9], [0.5], [0.6], [3.0], [0.0]])
    acc = r_precision(text, motion3, batch_size=4, top_k=3)
    # text 1 (own 0.5, dist 0.5): 0.9 (0.1) and 0.6 (0.4) closer -> rank 2
    # text 2 (own 0.6, dist 1.4): 0.9 (1.1) closer, 3.0 (1.0) closer -> rank 2
    # text 3 (own 3.0): rank 0
    np.testing.assert_allclose(acc, [0.25, 0.25, 1.0])
    with pytest.raises(ShapeError):
        r_precision(text[:3], motion[:3], batch_size=4)


def test_mm_dist():
    t = np.zeros((4, 2))
    m = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, 0.0], [6.0, 8.0]])
    assert mm_dist(t, m) == pytest.approx((5 + 1 + 0 + 10) / 4)


def test_diversity_known_sets():
    assert diversity(np.ones((400, 5)), rng=0) == 0.0
    # scaled basis vectors: every pair of distinct items is sqrt(2) * 3 apart
    emb = 3.0 * np.eye(1000)
    d = diversity(emb, num_pairs=300, rng=1)
    # a pair may join an item with itself (expected 0.3 of 300 pairs)
    assert 3 * np.sqrt(2) * (1 - 3 / 300) <= d <= 3 * np.sqrt(2) + 1e-12
    # same rng -> same pairs; distances scale linearly
    x = np.random.default_rng(6).normal(size=(500, 4))
    assert diversity(2 * x, rng=7) == pytest.approx(2 * diversity(x, rng=7))
    with pytest.raises(ShapeError):
        diversity(np.zeros((10, 3)), num_pairs=300)


def test_multimodality_known_sets():
    same = np.repeat(np.random.default_rng(7).normal(size=(5, 1, 3)), 30, axis=1)
    assert multimodality(same, rng=0) == pytest.approx(0.0)
    # repeats are two points 2 apart along x: distance 2 unless a pair joins equal points
    pts = np.zeros((3, 20, 2))
    pts[:, 10:, 0] = 2.0
    mm = multimodality(pts, num_pairs=10, rng=2)
    assert 0.0 <= mm <= 2.0
    with pytest.raises(ShapeError):
        multimodality(np.zeros((3, 5, 2)), num_pairs=10)
    with pytest.raises(ShapeError):
        multimodality(np.zeros((3, 5)))


def test_interval_formula():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    mean, half = interval(values)
    assert mean == pytest.approx(2.5)
    assert half == pytest.approx(1.96 * np.std(values) / np.sqrt(4))


def test_repeat_with_interval_scalar_array_dict():
    seq = iter([1.0, 2.0, 3.0, 4.0])
    mean, half = repeat_with_interval(lambda: next(seq), repeats=4)
    assert mean == pytest.approx(2.5)
    assert half == pytest.approx(1.96 * np.std([1, 2, 3, 4]) / 2)

    mean, half = repeat_with_interval(lambda rng: np.array([rng.uniform(), 5.0]), repeats=20)
    assert mean.shape == (2,) and mean[1] == 5.0 and half[1] == 0.0 and half[0] > 0

    mean, half = repeat_with_interval(lambda rng: {"a": 1.0, "b": rng.normal()}, repeats=5, seed=3)
    assert mean["a"] == 1.0 and half["a"] == 0.0 and half["b"] > 0
    again, _ = repeat_with_interval(lambda rng: {"a": 1.0, "b": rng.normal()}, repeats=5, seed=3)
    assert again["b"] == mean["b"]  # reproducible from the seed


def test_repeat_r_precision_with_shuffling():
    rng = np.random.default_rng(8)
    t = rng.normal(size=(256, 8))
    m = t + 0.3 * rng.normal(size=(256, 8))
    mean, half = repeat_with_interval(lambda g: r_precision(t, m, rng=g), repeats=5)
    assert mean.shape == (3,) and np.all(mean <= 1.0) and np.all(half >= 0)
    assert mean[0] > 0.5

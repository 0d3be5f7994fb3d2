"""Accuracy tables: group averages from per-clip metrics, and the paired bootstrap comparison."""
from __future__ import annotations

import numpy as np
import pytest

from mmar.errors import DataFormatError
from mmar.eval.report import grouped_metrics, group_averages, markdown_table, paired_difference
from mmar.eval.sparse import sparse_metrics


def _clips(names, seed=0, noise=0.01):
    rng = np.random.default_rng(seed)
    gt, pred = {}, {}
    for i, n in enumerate(names):
        T = 20 + 3 * i
        joints = np.cumsum(rng.normal(scale=0.01, size=(T, 22, 3)), 0).astype(np.float32) + [0, 1, 0]
        rot = np.tile(np.array([1, 0, 0, 0, 1, 0], np.float32), (T, 22, 1))
        gt[n] = {"joints": joints, "rot6d": rot, "fps": 30.0}
        pred[n] = {"joints": joints + rng.normal(scale=noise, size=joints.shape).astype(np.float32),
                   "rot6d": rot, "fps": 30.0}
    return pred, gt


def test_grouped_metrics_are_clip_averages_per_group():
    names = ["dataset-1_a", "dataset-1_b", "dataset-2_c"]
    pred, gt = _clips(names)
    pred["extra"] = pred["dataset-2_c"]  # predictions of clips without ground truth are ignored
    out = grouped_metrics(pred, gt, 30.0)
    assert out["all"]["clips"] == 3 and out["dataset-1"]["clips"] == 2
    whole = sparse_metrics({n: pred[n] for n in names}, gt, 30.0)
    part = sparse_metrics({n: pred[n] for n in names[:2]}, {n: gt[n] for n in names[:2]}, 30.0)
    for k, v in whole.items():
        assert out["all"][k] == pytest.approx(v, rel=1e-6)
        assert out["dataset-1"][k] == pytest.approx(part[k], rel=1e-6)
    assert group_averages({"dataset-2_c": {"mpjpe_cm": 1.0}}) == {"all": {"mpjpe_cm": 1.0, "clips": 1}}
    assert "| m (dataset-1) | 2 |" in markdown_table({"m": out})


def test_paired_difference_sees_a_small_consistent_gain_that_unpaired_means_would_hide():
    rng = np.random.default_rng(1)
    base_vals = rng.uniform(1.0, 10.0, 200)  # clips of very different difficulty
    base = {f"c{i}": {"mpjpe_cm": float(v)} for i, v in enumerate(base_vals)}
    better = {f"c{i}": {"mpjpe_cm": float(v - 0.1 + rng.normal(scale=0.02))} for i, v in enumerate(base_vals)}
    d = paired_difference(base, better, resamples=2000)
    assert d["clips"] == 200 and d["diff"] == pytest.approx(-0.1, abs=0.01)
    assert d["ci_low"] < d["diff"] < d["ci_high"] < 0  # excludes zero although the clips vary by 9 cm
    assert d["other_lower"] > 0.95
    assert d["base_mean"] == pytest.approx(base_vals.mean())
    # the same model against itself: no difference, a zero-width interval
    same = paired_difference(base, base, resamples=100)
    assert same["diff"] == same["ci_low"] == same["ci_high"] == 0.0 and same["other_lower"] == 0.0
    # noise without a gain: the interval covers zero; the seed makes it reproducible
    noisy = {k: {"mpjpe_cm": v["mpjpe_cm"] + float(rng.normal(scale=1.0))} for k, v in base.items()}
    a, b = paired_difference(base, noisy, seed=3), paired_difference(base, noisy, seed=3)
    assert a == b and a["ci_low"] < 0 < a["ci_high"]


def test_paired_difference_refuses_different_clips_or_missing_metrics():
    base = {"a": {"mpjpe_cm": 1.0}, "b": {"mpjpe_cm": 2.0}}
    with pytest.raises(DataFormatError, match="different clips"):
        paired_difference(base, {"a": {"mpjpe_cm": 1.0}})
    with pytest.raises(DataFormatError, match="jitter_m_s3"):
        paired_difference(base, base, "jitter_m_s3")
    with pytest.raises(DataFormatError, match="no clips"):
        paired_difference({}, {})

"""tools/error_over_time.py pools per-frame joint errors by the frame's index in its clip."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import error_over_time as eot  # noqa: E402


def test_bins_pool_frames_over_clips():
    gt = {"a": {"joints": np.zeros((5, 2, 3))}, "b": {"joints": np.zeros((3, 2, 3))}}
    pa = np.zeros((5, 2, 3))
    pa[:, :, 0] = np.arange(5)[:, None] * 0.01  # frame t off by t cm
    pb = np.zeros((3, 2, 3))
    pb[:, :, 1] = 0.10  # 10 cm everywhere
    rows = eot.error_by_time({"a": {"joints": pa}, "b": {"joints": pb}}, gt, edges=(0, 1, 3))
    assert [(r["start"], r["stop"], r["frames"]) for r in rows] == [(0, 1, 2), (1, 3, 4), (3, None, 2)]
    np.testing.assert_allclose([r["mpjpe_cm"] for r in rows], [5.0, (1 + 2 + 10 + 10) / 4, 3.5])


def test_bad_input_is_named():
    gt = {"a": {"joints": np.zeros((4, 2, 3))}}
    with pytest.raises(ValueError, match="edges"):
        eot.error_by_time(gt, gt, edges=(1, 3))
    with pytest.raises(ValueError, match="clip 'a'"):
        eot.error_by_time({"a": {"joints": np.zeros((3, 2, 3))}}, gt)
    with pytest.raises(KeyError, match="no ground truth"):
        eot.error_by_time({"z": {"joints": np.zeros((4, 2, 3))}}, gt)

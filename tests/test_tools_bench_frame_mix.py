"""tools/bench_frame_mix_layout.py times three layouts of AGRoL's frame mixing: they must be
the same network, or the timings compare different work."""
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import bench_frame_mix_layout as fm  # noqa: E402


def test_the_three_layouts_compute_the_same_network():
    params = fm.init(jax.random.PRNGKey(0), dim=16, depth=2)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, fm.WINDOW, fm.SPARSE))
    ref = np.asarray(fm.net(params, x, "einsum"))
    assert ref.shape == (3, fm.WINDOW, fm.JOINTS, 6)
    for variant in ("batched", "time_major"):
        np.testing.assert_allclose(np.asarray(fm.net(params, x, variant)), ref, atol=1e-5)

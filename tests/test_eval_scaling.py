"""mmar.eval.scaling: power-law fits with bootstrap intervals, the compute frontier, the plot."""
from __future__ import annotations

import numpy as np
import pytest

from mmar.eval import scaling as sc


def synthetic(n, e=1.8, a=40.0, alpha=0.35, noise=0.01, seed=0, lo=1e5, hi=1e7):
    x = np.geomspace(lo, hi, n)
    rng = np.random.default_rng(seed)
    return x, e + a * x ** -alpha + rng.normal(0, noise, n)


def test_exact_data_recovers_the_parameters():
    x, y = synthetic(8, noise=0.0)
    f = sc.fit_power_law(x, y, x_name="params")
    assert f.ok and f.message == "ok"
    assert f.alpha == pytest.approx(0.35, rel=2e-3)
    assert f.E == pytest.approx(1.8, abs=2e-3) and f.A == pytest.approx(40.0, rel=2e-2)
    assert f.rmse < 1e-3 and f.spearman == -1.0
    np.testing.assert_allclose(f.predict(x), y, atol=1e-3)


@pytest.mark.parametrize("n, method", [(5, "residual"), (16, "pairs")])
def test_bootstrap_intervals_cover_the_truth(n, method):
    x, y = synthetic(n, noise=0.01, seed=3)
    f = sc.fit_with_bootstrap(x, y, x_name="params", n_boot=300, seed=1)
    assert f.ok and f.bootstrap["method"] == method and f.bootstrap["ok"] >= 250
    for name, truth in (("alpha", 0.35), ("E", 1.8), ("A", 40.0)):
        lo, med, hi = f.intervals[name]
        assert lo <= truth <= hi, (name, f.intervals[name])
        assert lo <= med <= hi
    lo, hi = f.interval("alpha")
    assert hi - lo < 0.5
    assert f.summary().startswith(f"alpha = {f.alpha:.3g} [") and method in f.summary()
    # seeded: the same seed gives the same intervals
    again = sc.fit_with_bootstrap(x, y, x_name="params", n_boot=300, seed=1)
    assert again.intervals == f.intervals


def test_e_min_and_alpha_bound_notes():
    x = np.geomspace(1e3, 1e6, 6)
    f = sc.fit_power_law(x, 5.0 * x ** -0.2)  # E = 0: at its bound
    assert f.ok and f.E == pytest.approx(0.0, abs=1e-9) and any("E at its bound" in s for s in f.notes)
    g = sc.fit_power_law(x, -1.0 + 5.0 * x ** -0.2, e_min=None)  # a free E may be negative
    assert g.ok and g.E == pytest.approx(-1.0, abs=1e-2)
    h = sc.fit_power_law(x, 2.0 + np.array([1.0, 1e-12, 0, 0, 0, 0]), alpha_bounds=(0.01, 0.5))  # a step
    assert h.ok and any("upper bound" in s for s in h.notes)


@pytest.mark.parametrize("y, words", [
    ([3.0, 3.1, 3.2, 3.5, 3.9], "does not decrease"),  # the loss rises
    ([3.0, 3.0, 3.0, 3.0, 3.0], "does not decrease"),  # flat
    ([3.0, 2.0, np.nan, np.inf, np.nan], "at least 3 distinct"),  # two finite points
])
def test_degenerate_data_gives_a_message_not_a_crash(y, words):
    f = sc.fit_with_bootstrap(np.geomspace(1e5, 1e7, 5), y, x_name="parameters", n_boot=50)
    assert not f.ok and words in f.message and f.alpha is None and not f.intervals
    assert "no power-law fit against parameters" in f.summary()
    with pytest.raises(ValueError):
        f.predict([1.0])


def test_noisy_nonmonotone_data_still_fits_and_counts_constant_resamples():
    x = np.geomspace(1e5, 1e6, 5)
    f = sc.fit_with_bootstrap(x, [3.0, 2.9, 3.05, 2.85, 2.9], n_boot=200, seed=0)
    assert f.ok  # a weak decrease: fitted, with a wide interval or a note about constant resamples
    assert f.bootstrap["ok"] + f.bootstrap["constant_fits"] == 200
    if f.intervals:
        lo, hi = f.interval("alpha")
        assert lo <= f.alpha <= hi or f.bootstrap["constant_fits"] > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="differ in length"):
        sc.fit_power_law([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="bootstrap method"):
        sc.fit_with_bootstrap([1, 2, 3], [3, 2, 1], method="jackknife")


def test_compute_frontier():
    pts = [(1, 3.0), (2, 2.5), (2, 2.4), (3, 2.6), (4, 2.0), (4, 2.0), (5, float("nan")), (0, 1.0), (6, 1.9)]
    assert sc.compute_frontier(pts) == [0, 2, 4, 8]
    assert sc.compute_frontier([]) == []
    # a slightly cheaper but worse point (1 % less compute) is the same compute: not kept
    near = [(1.00e12, 4.45), (1.01e12, 3.94), (2.0e12, 3.5), (2.01e12, 3.6)]
    assert sc.compute_frontier(near) == [1, 2]
    assert sc.compute_frontier(near, merge_rtol=0.0) == [0, 1, 2]


def test_plot_is_written(tmp_path):
    x, y = synthetic(5, seed=2)
    runs = [{"name": f"depth{k}", "params": float(p), "final": float(v),
             "points": [{"flops": float(p) * s * 1e3, "value": float(v) + 1.0 / s} for s in (1, 2, 4)]}
            for k, (p, v) in enumerate(zip(x, y))]
    pts = [(p["flops"], p["value"]) for r in runs for p in r["points"]]
    frontier = [pts[i] for i in sc.compute_frontier(pts)]
    fp = sc.fit_with_bootstrap(x, y, n_boot=50)
    fc = sc.fit_with_bootstrap(*zip(*frontier), n_boot=50)
    bad = sc.fit_power_law(x, y[::-1])
    for name, (a, b) in {"ok.png": (fp, fc), "degenerate.png": (bad, None)}.items():
        out = sc.plot_scaling(tmp_path / "sub" / name, runs, metric="val_ce", params_fit=a, compute_fit=b,
                              frontier=frontier, title="test")
        data = out.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["degenerate.png", "ok.png"]

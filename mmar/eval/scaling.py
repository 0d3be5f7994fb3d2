"""Scaling-law fits: ``L = E + A * x^(-alpha)`` against parameters or training compute, with
bootstrap intervals, and the plot of a sweep (:mod:`mmar.sweep`).

The fit
    For a fixed ``alpha`` the model is linear in ``(E, A)``: least squares gives them in closed
    form, under the constraints ``A >= 0`` (the loss may not rise with ``x``) and ``E >= e_min``
    (default 0: a cross-entropy or a squared error is never negative; ``e_min=None`` frees it).
    ``alpha`` is found on a log-spaced grid over ``alpha_bounds`` (default 1e-3..4), then on a
    finer grid around the best point (relative precision about 1e-4). ``x`` is divided by its
    geometric mean inside the fit (conditioning); ``A`` is reported for ``x`` in its own units.
    numpy only.

Intervals (seeded, ``np.random.default_rng(seed)``)
    ``method="residual"``: the fitted curve plus residuals resampled with replacement (centred
    and inflated by ``sqrt(n / (n - 3))`` for the three fitted parameters), refitted ``n_boot``
    times; ``method="pairs"``: the points themselves resampled with replacement (resamples with
    fewer than 3 distinct ``x`` are skipped and counted). ``"auto"`` (default) takes pairs from
    :data:`PAIRS_MIN_POINTS` points on and residuals below: with five runs a pairs resample often
    has only two or three distinct ``x``. Reported: the median and the 2.5 / 97.5 percentiles of
    ``alpha``, ``E`` and ``A``.

Degenerate data
    Fewer than 3 distinct finite ``x``, or a loss that does not decrease with ``x`` (the best
    constrained fit has ``A = 0``, or the Spearman rank correlation of ``x`` and the loss is not
    negative) give a :class:`PowerLawFit` with ``ok=False`` and a message that says so plainly; no
    exception. An exponent at the edge of ``alpha_bounds`` is flagged in ``notes``.

Which points (:func:`compute_frontier`)
    Against parameters, one point per run (its final validation loss at the sweep's budget).
    Against compute, the runs of a matched-compute sweep all end at the same compute, so their
    final points alone cannot give an exponent: every evaluation of every run is a
    (training FLOPs so far, loss) point and the fit uses their lower envelope, the points that
    no point of less or equal compute beats (the compute-efficient frontier, as in Kaplan et al.
    2020 and Hoffmann et al. 2022, approach 1); points within 2 % of each other's compute count
    as the same compute (the runs of a matched sweep are evaluated at nearly equal fractions of
    the budget). Caveat: an intermediate point belongs to a run
    whose learning-rate schedule ends later, so it over-estimates the loss a run stopped there
    would reach; the frontier is an upper bound away from the budget.

Public API: :class:`PowerLawFit`, :func:`fit_power_law`, :func:`fit_with_bootstrap`,
:func:`compute_frontier`, :func:`plot_scaling`, :data:`PAIRS_MIN_POINTS`.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["PowerLawFit", "fit_power_law", "fit_with_bootstrap", "compute_frontier", "plot_scaling",
           "PAIRS_MIN_POINTS", "ALPHA_BOUNDS"]

PAIRS_MIN_POINTS = 10  # "auto" bootstrap: resample points from this many on, residuals below
ALPHA_BOUNDS = (1e-3, 4.0)
_COARSE = 400
_FINE = 200


# --------------------------------------------------------------------------- the fit


def _profile(alphas: np.ndarray, u: np.ndarray, y: np.ndarray, e_min: float | None):
    """For each ``alpha``: the constrained least-squares ``(E, A)`` of ``y ~ E + A exp(-alpha u)``
    (``u = log x / x_ref``) and the SSE. Vectorised over ``alphas``; ``A >= 0``, ``E >= e_min``."""
    z = np.exp(-np.outer(alphas, u))  # (k, n)
    n = y.size
    sz, szz = z.sum(1), (z * z).sum(1)
    sy, szy = y.sum(), z @ y
    var_z = szz - sz * sz / n
    with np.errstate(divide="ignore", invalid="ignore"):
        a_free = np.where(var_z > 1e-300, (szy - sz * sy / n) / var_z, 0.0)
    e_free = (sy - a_free * sz) / n
    cands = [(e_free, a_free)]
    # boundaries of the box: A = 0 (a constant), E = e_min (a pure power law)
    e_const = np.full_like(sz, sy / n)
    cands.append((e_const if e_min is None else np.maximum(e_const, e_min), np.zeros_like(sz)))
    if e_min is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            a_e = np.where(szz > 0, (szy - e_min * sz) / szz, 0.0)
        cands.append((np.full_like(sz, e_min), np.maximum(a_e, 0.0)))
    best_sse = np.full(alphas.shape, np.inf)
    best_e, best_a = np.zeros_like(sz), np.zeros_like(sz)
    for e, a in cands:
        feasible = (a >= 0) & (True if e_min is None else (e >= e_min - 1e-12))
        sse = ((y[None, :] - e[:, None] - a[:, None] * z) ** 2).sum(1)
        better = feasible & (sse < best_sse)
        best_sse = np.where(better, sse, best_sse)
        best_e, best_a = np.where(better, e, best_e), np.where(better, a, best_a)
    return best_sse, best_e, best_a


def _fit_core(u: np.ndarray, y: np.ndarray, e_min: float | None, bounds: tuple[float, float]):
    """``(alpha, E, A_normalised, sse)`` minimising the SSE (coarse then fine log grid)."""
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    grid = np.exp(np.linspace(lo, hi, _COARSE))
    sse, e, a = _profile(grid, u, y, e_min)
    i = int(np.argmin(sse))
    step = (hi - lo) / (_COARSE - 1)
    fine = np.exp(np.linspace(max(lo, math.log(grid[i]) - step), min(hi, math.log(grid[i]) + step), _FINE))
    sse2, e2, a2 = _profile(fine, u, y, e_min)
    j = int(np.argmin(sse2))
    if sse2[j] <= sse[i]:
        return float(fine[j]), float(e2[j]), float(a2[j]), float(sse2[j])
    return float(grid[i]), float(e[i]), float(a[i]), float(sse[i])


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(v.size)
        r[order] = np.arange(v.size)
        for val in np.unique(v):  # ties: mean rank
            m = v == val
            r[m] = r[m].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


@dataclasses.dataclass
class PowerLawFit:
    """A fit of ``L = E + A * x^(-alpha)``. ``ok`` False: no power law was fitted (``message``
    says why) and the estimates are None. ``intervals``: ``{"alpha"|"E"|"A": [2.5 %, median,
    97.5 %]}`` of the bootstrap (absent without one)."""

    x_name: str
    n: int
    ok: bool
    message: str
    alpha: float | None = None
    E: float | None = None
    A: float | None = None
    x_ref: float | None = None
    rmse: float | None = None
    spearman: float | None = None
    intervals: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    bootstrap: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    x: list[float] = dataclasses.field(default_factory=list)
    y: list[float] = dataclasses.field(default_factory=list)

    def predict(self, x) -> np.ndarray:
        if not self.ok:
            raise ValueError(f"no fit: {self.message}")
        return self.E + self.A * np.asarray(x, np.float64) ** (-self.alpha)

    def interval(self, name: str = "alpha") -> tuple[float, float] | None:
        iv = self.intervals.get(name)
        return None if not iv else (iv[0], iv[2])

    def summary(self) -> str:
        """One line: ``alpha = 0.31 [0.12, 0.55] (95 % bootstrap, residual, 1000), E = ...``."""
        if not self.ok:
            return f"no power-law fit against {self.x_name}: {self.message}"
        iv = self.interval("alpha")
        ivs = f" [{iv[0]:.3g}, {iv[1]:.3g}]" if iv else ""
        how = (f" (95 % {self.bootstrap.get('method')} bootstrap, {self.bootstrap.get('ok')} fits)"
               if self.bootstrap else "")
        e_iv = self.interval("E")
        e_ivs = f" [{e_iv[0]:.3g}, {e_iv[1]:.3g}]" if e_iv else ""
        return (f"alpha = {self.alpha:.3g}{ivs}{how}, E = {self.E:.4g}{e_ivs}, A = {self.A:.4g} "
                f"(n = {self.n}, rmse {self.rmse:.3g})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _clean(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray, int]:
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y differ in length ({x.size} vs {y.size})")
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0)
    return x[keep], y[keep], int((~keep).sum())


def fit_power_law(x: Sequence[float], y: Sequence[float], *, x_name: str = "x", e_min: float | None = 0.0,
                  alpha_bounds: tuple[float, float] = ALPHA_BOUNDS) -> PowerLawFit:
    """Least-squares ``L = E + A * x^(-alpha)`` (no interval; see :func:`fit_with_bootstrap`).
    Points with a non-finite value or ``x <= 0`` are dropped (counted in ``notes``)."""
    x, y, dropped = _clean(x, y)
    notes = [f"{dropped} point(s) with a non-finite value or x <= 0 dropped"] if dropped else []
    base = dict(x_name=x_name, n=int(x.size), notes=notes, x=x.tolist(), y=y.tolist())
    if np.unique(x).size < 3:
        return PowerLawFit(ok=False, message=f"needs at least 3 distinct {x_name} values, got "
                           f"{np.unique(x).size}", **base)
    rho = _spearman(x, y)
    base["spearman"] = rho
    if rho >= 0:
        return PowerLawFit(ok=False, message=f"the loss does not decrease with {x_name} (Spearman rank correlation "
                           f"{rho:+.2f}); no power law with A > 0 fits", **base)
    x_ref = float(np.exp(np.log(x).mean()))
    u = np.log(x / x_ref)
    alpha, e, a_norm, sse = _fit_core(u, y, e_min, alpha_bounds)
    if a_norm <= 0:
        return PowerLawFit(ok=False, message=f"the best fit is a constant (A = 0): the loss does not decrease with "
                           f"{x_name} as a power law", **base)
    for bound, word in ((alpha_bounds[0], "lower"), (alpha_bounds[1], "upper")):
        if abs(math.log(alpha / bound)) < 1e-3:
            notes.append(f"alpha at the {word} bound of the search ({bound:g}): poorly determined")
    if e_min is not None and abs(e - e_min) < 1e-12:
        notes.append(f"E at its bound ({e_min:g}): a pure power law fits best")
    return PowerLawFit(ok=True, message="ok", alpha=alpha, E=e, A=a_norm * x_ref ** alpha, x_ref=x_ref,
                       rmse=math.sqrt(sse / x.size), **base)


def fit_with_bootstrap(x: Sequence[float], y: Sequence[float], *, x_name: str = "x", n_boot: int = 1000,
                       method: str = "auto", seed: int = 0, e_min: float | None = 0.0,
                       alpha_bounds: tuple[float, float] = ALPHA_BOUNDS) -> PowerLawFit:
    """:func:`fit_power_law` plus bootstrap intervals (module doc): ``method`` is ``"auto"``,
    ``"residual"`` or ``"pairs"``; ``n_boot`` resamples from ``np.random.default_rng(seed)``."""
    if method not in ("auto", "residual", "pairs"):
        raise ValueError(f"bootstrap method must be auto, residual or pairs, got {method!r}")
    fit = fit_power_law(x, y, x_name=x_name, e_min=e_min, alpha_bounds=alpha_bounds)
    if not fit.ok or n_boot <= 0:
        return fit
    xs, ys = np.asarray(fit.x), np.asarray(fit.y)
    n = xs.size
    if method == "auto":
        method = "pairs" if n >= PAIRS_MIN_POINTS else "residual"
    rng = np.random.default_rng(seed)
    u = np.log(xs / fit.x_ref)
    yhat = fit.predict(xs)
    resid = ys - yhat
    resid = (resid - resid.mean()) * math.sqrt(n / max(n - 3, 1))
    draws, skipped, constant = [], 0, 0
    for _ in range(int(n_boot)):
        if method == "pairs":
            idx = rng.integers(0, n, n)
            if np.unique(xs[idx]).size < 3:
                skipped += 1
                continue
            ub, yb = u[idx], ys[idx]
        else:
            ub, yb = u, yhat + resid[rng.integers(0, n, n)]
        alpha, e, a_norm, _ = _fit_core(ub, yb, e_min, alpha_bounds)
        if a_norm <= 0:  # this resample's best fit is a constant: no exponent
            constant += 1
            continue
        draws.append((alpha, e, a_norm * fit.x_ref ** alpha))
    fit.bootstrap = {"method": method, "n_boot": int(n_boot), "seed": int(seed), "ok": len(draws),
                     "skipped_few_distinct_x": skipped, "constant_fits": constant}
    if len(draws) < max(10, n_boot // 10):
        fit.notes.append(f"only {len(draws)} of {n_boot} bootstrap resamples gave a power law: no interval")
        return fit
    d = np.asarray(draws)
    for k, name in enumerate(("alpha", "E", "A")):
        lo, med, hi = np.percentile(d[:, k], [2.5, 50, 97.5])
        fit.intervals[name] = [float(lo), float(med), float(hi)]
    if constant:
        fit.notes.append(f"{constant} of {n_boot} bootstrap resamples were fitted best by a constant (A = 0); "
                         "the intervals are over the others")
    return fit


# --------------------------------------------------------------------------- points


def compute_frontier(points: Sequence[tuple[float, float]], merge_rtol: float = 0.02) -> list[int]:
    """Indices of the lower envelope of ``(compute, loss)`` points: a point is kept when every
    point of less or equal compute has a higher loss (ties in compute: the lowest loss). Points
    whose compute is within ``merge_rtol`` (relative) of a lower-compute point count as the same
    compute: only the lowest loss among them can be kept (matched-compute sweeps evaluate every
    run at nearly the same fractions of the budget, and a slightly cheaper but much worse point
    is not a frontier point). Sorted by compute; non-finite points are never kept."""
    order = sorted((i for i, (c, l) in enumerate(points) if math.isfinite(c) and math.isfinite(l) and c > 0),
                   key=lambda i: (points[i][0], points[i][1]))
    groups: list[list[int]] = []
    for i in order:
        if groups and points[i][0] <= points[groups[-1][0]][0] * (1.0 + merge_rtol):
            groups[-1].append(i)
        else:
            groups.append([i])
    keep, best = [], math.inf
    for g in groups:
        i = min(g, key=lambda j: points[j][1])
        if points[i][1] < best:
            keep.append(i)
            best = points[i][1]
    return keep


# --------------------------------------------------------------------------- plot


def _fit_label(fit: PowerLawFit, symbol: str) -> str:
    iv = fit.interval("alpha")
    ivs = f" [{iv[0]:.2g}, {iv[1]:.2g}]" if iv else " (no interval)"
    return f"fit {fit.E:.3g} + A·{symbol}^-α, α = {fit.alpha:.3g}{ivs}"


def _draw_fit(ax, fit: PowerLawFit | None, xs: np.ndarray, symbol: str) -> None:
    if fit is None:
        return
    if fit.ok:
        grid = np.exp(np.linspace(np.log(xs.min()) - 0.1, np.log(xs.max()) + 0.1, 200))
        ax.plot(grid, fit.predict(grid), "k--", lw=1.2, label=_fit_label(fit, symbol))
    else:
        import textwrap

        ax.text(0.02, 0.02, "no power-law fit:\n" + textwrap.fill(fit.message, 55), transform=ax.transAxes,
                fontsize=7, va="bottom", bbox=dict(facecolor="white", alpha=0.8, edgecolor="0.7"))


def plot_scaling(path: str | Path, runs: Sequence[dict[str, Any]], *, metric: str, params_fit: PowerLawFit | None,
                 compute_fit: PowerLawFit | None, frontier: Sequence[tuple[float, float]] = (),
                 title: str = "") -> Path:
    """A PNG (matplotlib, Agg; no global pyplot state) with two panels: ``metric`` against
    parameters (one point per run, its final value) and against training FLOPs (each run's
    evaluations as a line, the frontier points circled), log x, the fits dashed, the exponent
    and its 95 % interval in the legend. ``runs``: dicts with ``name``, ``params``, ``final``
    and ``points`` (``[{"flops", "value"}]``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 5), dpi=120)
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    cmap = __import__("matplotlib").colormaps["viridis"]
    n = max(len(runs), 1)
    px, py = [], []
    for k, r in enumerate(runs):
        color = cmap(k / max(n - 1, 1) * 0.9)
        if r.get("params") and r.get("final") is not None and math.isfinite(r["final"]):
            ax1.plot([r["params"]], [r["final"]], "o", color=color, ms=7, label=r["name"])
            px.append(r["params"])
            py.append(r["final"])
        pts = [(p["flops"], p["value"]) for p in r.get("points", [])
               if p.get("value") is not None and math.isfinite(p["value"]) and (p.get("flops") or 0) > 0]
        if pts:
            c, v = zip(*pts)
            ax2.plot(c, v, ".-", color=color, lw=1, ms=5, label=r["name"])
    if frontier:
        fc, fv = zip(*frontier)
        ax2.plot(fc, fv, "o", mfc="none", mec="k", ms=10, mew=1.2, label="frontier (fitted)")
    if px:
        _draw_fit(ax1, params_fit, np.asarray(px), "N")
    if frontier:
        _draw_fit(ax2, compute_fit, np.asarray([c for c, _ in frontier]), "C")
    ax1.set_xscale("log")
    ax2.set_xscale("log")
    ax1.set_xlabel("parameters N")
    ax2.set_xlabel("training FLOPs C")
    for ax, what in ((ax1, "final"), (ax2, "every evaluation")):
        ax.set_ylabel(f"validation {metric} ({what})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path

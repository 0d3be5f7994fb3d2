"""Text-to-motion metrics on embeddings (Guo et al. 2022, HumanML3D protocol).

All functions take embeddings produced by a (frozen) text and motion feature
extractor as numpy arrays of shape ``(N, D)`` and compute in float64 numpy.
Distances are Euclidean in embedding units; the metrics are unitless apart from
that.

* :func:`fid` / :func:`frechet_distance` -- Frechet distance between Gaussians fitted
  to real and generated motion embeddings.
* :func:`r_precision` -- top-k retrieval accuracy of the matching motion among
  ``batch_size`` (32) candidates per text.
* :func:`mm_dist` -- mean Euclidean distance between matched text/motion pairs.
* :func:`diversity` -- mean distance between ``num_pairs`` (300) random motion pairs.
* :func:`multimodality` -- mean distance between ``num_pairs`` (10) random pairs of
  motions generated for the same text.
* :func:`repeat_with_interval` -- mean of 20 repeats with a 95% interval, as the
  published tables report.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import numpy as np

from mmar.errors import ShapeError

RngLike = np.random.Generator | int | None


def _rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _emb2d(x: Any, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ShapeError(f"{what} must be (N, D) embeddings, got shape {x.shape}")
    return x


# --------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------

def gaussian_stats(emb: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (``ddof=1``, as ``np.cov``) of ``(N, D)``."""
    emb = _emb2d(emb, "embeddings")
    if emb.shape[0] < 2:
        raise ShapeError(f"need at least 2 embeddings for a covariance, got {emb.shape[0]}")
    return emb.mean(axis=0), np.cov(emb, rowvar=False).reshape(emb.shape[1], emb.shape[1])


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(0.5 * (s + s.T))
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Frechet distance ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` of two Gaussians.

    ``tr (S1 S2)^(1/2)`` is computed as the sum of square roots of the eigenvalues of
    the symmetric PSD matrix ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as ``S1 S2``), which
    is stable and real-valued; tiny negative eigenvalues from rounding are clipped to 0.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ShapeError(
            f"frechet_distance: shapes mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, "
            f"sigma2 {s2.shape} do not agree"
        )
    a = _sqrt_psd(s1)
    m = a @ s2 @ a
    eig = np.linalg.eigvalsh(0.5 * (m + m.T))
    tr_covmean = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def fid(real_emb: Any, gen_emb: Any) -> float:
    """Frechet Inception-style distance between real and generated ``(N, D)`` embeddings."""
    real_emb, gen_emb = _emb2d(real_emb, "real_emb"), _emb2d(gen_emb, "gen_emb")
    if real_emb.shape[1] != gen_emb.shape[1]:
        raise ShapeError(f"fid: embedding sizes differ, {real_emb.shape[1]} vs {gen_emb.shape[1]}")
    return frechet_distance(*gaussian_stats(real_emb), *gaussian_stats(gen_emb))


# --------------------------------------------------------------------------
# retrieval and distances
# --------------------------------------------------------------------------

def _pair_check(text_emb: Any, motion_emb: Any) -> tuple[np.ndarray, np.ndarray]:
    t, m = _emb2d(text_emb, "text_emb"), _emb2d(motion_emb, "motion_emb")
    if t.shape != m.shape:
        raise ShapeError(f"text_emb {t.shape} and motion_emb {m.shape} must have the same shape")
    return t, m


def _cdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = np.sum(a * a, 1)[:, None] + np.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(sq, 0.0, None))


def r_precision(
    text_emb: Any,
    motion_emb: Any,
    batch_size: int = 32,
    top_k: int = 3,
    rng: RngLike = None,
) -> np.ndarray:
    """R-precision: for each text, is its own motion among the ``k`` nearest (Euclidean)
    of the ``batch_size`` motions in its batch?

    Row ``i`` of ``text_emb`` matches row ``i`` of ``motion_emb``. Pairs are cut into
    consecutive batches of ``batch_size`` (after a random permutation if ``rng`` is
    given); an incomplete last batch is dropped, as the reference evaluation loader
    does (``drop_last``). Ties count against the match only if they rank before it
    (stable sort).

    Returns:
      ``(top_k,)`` float array: top-1, top-2, ..., top-k accuracy in ``[0, 1]``
      (chance level for top-k is ``k / batch_size``).
    """
    t, m = _pair_check(text_emb, motion_emb)
    if batch_size < 1 or top_k < 1 or top_k > batch_size:
        raise ValueError(f"need 1 <= top_k <= batch_size, got top_k={top_k}, batch_size={batch_size}")
    n_batches = t.shape[0] // batch_size
    if n_batches == 0:
        raise ShapeError(f"r_precision needs at least batch_size={batch_size} pairs, got {t.shape[0]}")
    if rng is not None:
        perm = _rng(rng).permutation(t.shape[0])
        t, m = t[perm], m[perm]
    n = n_batches * batch_size
    t = t[:n].reshape(n_batches, batch_size, -1)
    m = m[:n].reshape(n_batches, batch_size, -1)
    hits = np.zeros(top_k)
    for b in range(n_batches):
        dist = _cdist(t[b], m[b])
        # rank of the true match = number of candidates strictly closer (+ earlier ties)
        own = np.diag(dist)[:, None]
        idx = np.arange(batch_size)
        closer = (dist < own) | ((dist == own) & (idx[None, :] < idx[:, None]))
        rank = closer.sum(axis=1)
        hits += (rank[:, None] < np.arange(1, top_k + 1)[None, :]).sum(axis=0)
    return hits / n


def mm_dist(text_emb: Any, motion_emb: Any) -> float:
    """Multimodal distance: mean Euclidean distance between matched text/motion rows.

    Uses every pair (the reference code averages over its ``drop_last`` batches, so the
    values agree when ``N`` is a multiple of 32)."""
    t, m = _pair_check(text_emb, motion_emb)
    return float(np.linalg.norm(t - m, axis=1).mean())


def diversity(emb: Any, num_pairs: int = 300, rng: RngLike = None) -> float:
    """Mean Euclidean distance between ``num_pairs`` random pairs of ``(N, D)`` embeddings.

    Two index sets of size ``num_pairs`` are drawn independently, each without
    replacement (as Guo et al.; a pair may join an item with itself).
    """
    emb = _emb2d(emb, "emb")
    if emb.shape[0] < num_pairs:
        raise ShapeError(f"diversity needs at least num_pairs={num_pairs} embeddings, got {emb.shape[0]}")
    g = _rng(rng)
    first = g.choice(emb.shape[0], num_pairs, replace=False)
    second = g.choice(emb.shape[0], num_pairs, replace=False)
    return float(np.linalg.norm(emb[first] - emb[second], axis=1).mean())


def multimodality(emb: Any, num_pairs: int = 10, rng: RngLike = None) -> float:
    """Mean distance between motions generated for the same text.

    Args:
      emb: ``(num_texts, num_repeats, D)`` motion embeddings, ``num_repeats`` generations
        per text.
      num_pairs: pairs per text; the same two index sets (each without replacement) are
        used for every text, as in the reference implementation.
    """
    emb = np.asarray(emb, np.float64)
    if emb.ndim != 3:
        raise ShapeError(f"multimodality expects (num_texts, num_repeats, D), got shape {emb.shape}")
    if emb.shape[1] < num_pairs:
        raise ShapeError(f"multimodality needs num_repeats >= num_pairs={num_pairs}, got {emb.shape[1]}")
    g = _rng(rng)
    first = g.choice(emb.shape[1], num_pairs, replace=False)
    second = g.choice(emb.shape[1], num_pairs, replace=False)
    return float(np.linalg.norm(emb[:, first] - emb[:, second], axis=2).mean())


# --------------------------------------------------------------------------
# repeats
# --------------------------------------------------------------------------

def _takes_argument(fn: Callable) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL,):
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            return True
    return False


def interval(values: Any) -> tuple[Any, Any]:
    """Mean and 95% half-interval ``1.96 * std / sqrt(n)`` along axis 0 (``std`` with
    ``ddof=0``, as the reference evaluation)."""
    v = np.asarray(values, np.float64)
    n = v.shape[0]
    mean = v.mean(axis=0)
    half = 1.96 * v.std(axis=0) / np.sqrt(n)
    if mean.ndim == 0:
        return float(mean), float(half)
    return mean, half


def repeat_with_interval(fn: Callable, repeats: int = 20, seed: int = 0) -> tuple[Any, Any]:
    """Run ``fn`` ``repeats`` times and return ``(mean, half_interval)``.

    ``fn`` is called as ``fn(rng)`` with a fresh ``np.random.Generator`` per repeat
    (derived from ``seed``), or as ``fn()`` if it takes no positional argument. It may
    return a scalar, an array (reduced elementwise) or a mapping of those (reduced per
    key, returning two dicts). The 95% interval is ``mean +- 1.96 * std / sqrt(repeats)``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    with_rng = _takes_argument(fn)
    seeds = np.random.SeedSequence(seed).spawn(repeats)
    outs = [fn(np.random.default_rng(s)) if with_rng else fn() for s in seeds]
    if isinstance(outs[0], Mapping):
        means, halves = {}, {}
        for k in outs[0]:
            means[k], halves[k] = interval([o[k] for o in outs])
        return means, halves
    return interval(outs)

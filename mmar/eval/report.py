"""Accuracy tables for the sparse-to-full-body models on Bandai.

Every table reports the whole test split and its dataset-1 part separately (dataset-2 is
repetitive gestures and walks, dataset-1 is varied), with the prediction's jitter beside the
ground truth's.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from mmar.errors import DataFormatError
from mmar.eval.sparse import average_clip_metrics, sparse_metrics_per_clip

# Named subsets of a split: name -> predicate on the clip name.
BANDAI_GROUPS: dict[str, Callable[[str], bool]] = {
    "all": lambda name: True,
    "dataset-1": lambda name: name.startswith("dataset-1_"),
}

COLUMNS = (
    ("mpjre_deg", "MPJRE [deg]"),
    ("mpjpe_cm", "MPJPE [cm]"),
    ("mpjve_cm_s", "MPJVE [cm/s]"),
    ("jitter_m_s3", "Jitter [m/s^3]"),
    ("gt_jitter_m_s3", "GT Jitter [m/s^3]"),
    ("hand_pe_cm", "Hand PE [cm]"),
    ("upper_pe_cm", "Upper PE [cm]"),
    ("lower_pe_cm", "Lower PE [cm]"),
    ("root_pe_cm", "Root PE [cm]"),
)


def grouped_metrics(
    pred: Mapping[str, Mapping],
    gt: Mapping[str, Mapping],
    fps: float | None = None,
    groups: Mapping[str, Callable[[str], bool]] = BANDAI_GROUPS,
    per_clip: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, dict[str, float]]:
    """``{group: metrics}`` for each non-empty group; each clip weighs the same (AGRoL).

    ``per_clip``: the clips' metrics if already measured (:func:`clip_metrics_of`); measured
    here otherwise. Every clip is measured once, whatever the number of groups."""
    if per_clip is None:
        per_clip = clip_metrics_of(pred, gt, fps)
    return group_averages(per_clip, groups)


def clip_metrics_of(pred: Mapping[str, Mapping], gt: Mapping[str, Mapping],
                    fps: float | None = None) -> dict[str, dict[str, float]]:
    """``{clip: metrics}`` of every ground-truth clip (``pred`` may hold more clips)."""
    return sparse_metrics_per_clip({n: pred[n] for n in gt}, gt, fps)


def group_averages(per_clip: Mapping[str, Mapping[str, float]],
                   groups: Mapping[str, Callable[[str], bool]] = BANDAI_GROUPS) -> dict[str, dict[str, float]]:
    """``{group: clip-averaged metrics + "clips"}`` for each non-empty group of ``per_clip``."""
    out = {}
    for group, keep in groups.items():
        names = [n for n in per_clip if keep(n)]
        if not names:
            continue
        m = average_clip_metrics({n: per_clip[n] for n in names})
        m["clips"] = len(names)
        out[group] = m
    return out


def paired_difference(
    base: Mapping[str, Mapping[str, float]],
    other: Mapping[str, Mapping[str, float]],
    metric: str = "mpjpe_cm",
    resamples: int = 10000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """How much ``other`` differs from ``base`` in a clip-averaged ``metric``, with a paired
    percentile bootstrap over clips.

    ``base`` and ``other`` are ``{clip: metrics}`` of the same clips (e.g. the ``per_clip`` of
    two ``mmar eval --per-clip`` outputs). Clips are resampled with replacement, the same draw
    for both models, so what the interval says is how much the difference depends on which clips
    were measured; it does not include the spread between training seeds, and clips of one
    performer or one repeated gesture are not independent (a narrow interval is a lower bound
    on the uncertainty).

    Returns ``{"clips", "base_mean", "other_mean", "diff" (other - base), "ci_low", "ci_high",
    "other_lower" (fraction of clips where other's value is lower)}``.
    Raises DataFormatError when the clip sets differ or the metric is missing."""
    if set(base) != set(other):
        only_b, only_o = sorted(set(base) - set(other)), sorted(set(other) - set(base))
        raise DataFormatError(f"the two evaluations cover different clips ({len(only_b)} only in the first, e.g. "
                              f"{only_b[:3]}; {len(only_o)} only in the second, e.g. {only_o[:3]}): compare "
                              f"evaluations of the same split")
    if not base:
        raise DataFormatError("no clips to compare")
    if not 0.0 < level < 1.0 or resamples < 1:
        raise ValueError(f"level must be in (0, 1) and resamples >= 1, got {level}, {resamples}")
    names = sorted(base)
    missing = [n for n in names if metric not in base[n] or metric not in other[n]]
    if missing:
        raise DataFormatError(f"metric {metric!r} missing for {len(missing)} clip(s), e.g. {missing[0]!r}")
    a = np.array([base[n][metric] for n in names], np.float64)
    b = np.array([other[n][metric] for n in names], np.float64)
    d = b - a
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(d), size=(resamples, len(d)))
    boot = d[idx].mean(1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return {"clips": len(names), "base_mean": float(a.mean()), "other_mean": float(b.mean()), "diff": float(d.mean()),
            "ci_low": float(lo), "ci_high": float(hi), "other_lower": float(np.mean(b < a))}


def markdown_table(rows: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """``rows = {model: {group: metrics}}`` -> one Markdown table, a row per (model, group)."""
    head = "| model | clips | " + " | ".join(title for _, title in COLUMNS) + " |"
    sep = "|---|---|" + "---|" * len(COLUMNS)
    lines = [head, sep]
    for model, groups in rows.items():
        for group, m in groups.items():
            cells = [f"{m[k]:.2f}" if k in m else "-" for k, _ in COLUMNS]
            lines.append(f"| {model} ({group}) | {m.get('clips', '-')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

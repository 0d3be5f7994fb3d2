"""Accuracy tables for the sparse-to-full-body models on Bandai.

Every table reports the whole test split and its dataset-1 part separately (dataset-2 is
repetitive gestures and walks, dataset-1 is varied), with the prediction's jitter beside the
ground truth's.
"""
from __future__ import annotations

from typing import Callable, Mapping

from mmar.eval.sparse import sparse_metrics

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
) -> dict[str, dict[str, float]]:
    """``{group: metrics}`` for each non-empty group; each clip weighs the same (AGRoL)."""
    out = {}
    for group, keep in groups.items():
        names = [n for n in gt if keep(n)]
        if not names:
            continue
        m = sparse_metrics({n: pred[n] for n in names}, {n: gt[n] for n in names}, fps)
        m["clips"] = len(names)
        out[group] = m
    return out


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

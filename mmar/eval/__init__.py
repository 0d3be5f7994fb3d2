"""Evaluation metrics: sparse-to-full-body reconstruction (AGRoL conventions),
text-to-motion embedding metrics (Guo et al.) and model efficiency."""
from mmar.eval.efficiency import count_params, flops, latency
from mmar.eval.sparse import (
    METRIC_KEYS,
    ClipPoses,
    average_clip_metrics,
    clip_metrics,
    load_clip_npz,
    metrics_from_npz,
    sparse_metrics,
    sparse_metrics_per_clip,
)
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

__all__ = [
    "METRIC_KEYS",
    "ClipPoses",
    "average_clip_metrics",
    "clip_metrics",
    "count_params",
    "diversity",
    "fid",
    "flops",
    "frechet_distance",
    "gaussian_stats",
    "interval",
    "latency",
    "load_clip_npz",
    "metrics_from_npz",
    "mm_dist",
    "multimodality",
    "r_precision",
    "repeat_with_interval",
    "sparse_metrics",
    "sparse_metrics_per_clip",
]

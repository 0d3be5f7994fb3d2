"""Evaluating a trained run (``mmar eval``): online prediction over the benchmark split or any
motion input, the metrics of the whole set and of its dataset-1 part, and predictions in the
``mmar convert`` layout."""
from __future__ import annotations

from typing import Mapping

from mmar.eval.report import grouped_metrics

__all__ = ["evaluate_run", "prediction_arrays"]


def prediction_arrays(pred: Mapping[str, Mapping], gt: Mapping[str, Mapping]) -> dict[str, dict]:
    """Predictions in the ``mmar convert`` layout (for ``mmar metrics`` and ``mmar render``):
    the predicted ``rot6d``, ``joints`` and ``fps``, the ground truth's ``sparse`` input and
    ``offsets``, and the predicted pelvis as ``root``."""
    return {n: {**p, "sparse": gt[n]["sparse"], "offsets": gt[n]["offsets"], "root": p["joints"][:, 0]}
            for n, p in pred.items()}


def evaluate_run(run, data: str | None = None, split: str = "test", workers: int = 2,
                 progress: bool = True) -> dict:
    """Evaluate a loaded run (:func:`mmar.run.load`) online on ``data`` (a BVH file, directory,
    archive or converted npz) or on the benchmark's ``split``.

    Returns ``{"metrics": {group: metrics}, "checkpoint": {...}, "skipped": [errors],
    "pred": {clip: arrays}, "gt": {clip: arrays}}``; ``checkpoint`` says which run directory
    and step were evaluated (``{"run", "step", "dir", "skipped_steps"}``; ``skipped_steps``
    lists newer steps that could not be read, ``[{"step", "error"}]``, empty normally);
    ``skipped`` the input files or clips left out (unreadable, or NaN/Inf values)."""
    from mmar.data.inputs import load_eval_arrays

    fps = float(run.config.data.fps)
    if data:
        gt, skipped = load_eval_arrays(data, fps, workers)
    else:
        gt, skipped = run.task.benchmark[split], []
    pred = run.task.predict_clips(run.variables, gt, progress=progress)
    return {"metrics": grouped_metrics(pred, gt, fps),
            "checkpoint": {"run": str(run.workdir), "step": run.step, "dir": str(run.checkpoint),
                           "skipped_steps": list(getattr(run, "skipped_steps", []))},
            "skipped": skipped, "pred": pred, "gt": gt}

"""Evaluating a trained run (``mmar eval``): online prediction over the benchmark split or any
motion input, the metrics of the whole set and of its dataset-1 part, and predictions in the
``mmar convert`` layout; for a text-to-motion run (``task.is_text_to_motion``) the T2M metrics of
its generations under a frozen evaluator (:func:`evaluate_t2m_run`)."""
from __future__ import annotations

from typing import Mapping

from mmar.eval.report import clip_metrics_of, grouped_metrics

__all__ = ["evaluate_run", "prediction_arrays", "evaluate_t2m_run", "t2m_eval_dataset"]


def prediction_arrays(pred: Mapping[str, Mapping], gt: Mapping[str, Mapping]) -> dict[str, dict]:
    """Predictions in the ``mmar convert`` layout (for ``mmar metrics`` and ``mmar render``):
    the predicted ``rot6d``, ``joints`` and ``fps``, the ground truth's ``sparse`` input and
    ``offsets``, and the predicted pelvis as ``root``."""
    return {n: {**p, "sparse": gt[n]["sparse"], "offsets": gt[n]["offsets"], "root": p["joints"][:, 0]}
            for n, p in pred.items()}


def evaluate_run(run, data: str | None = None, split: str = "test", workers: int = 2,
                 progress: bool = True, transform=None) -> dict:
    """Evaluate a loaded run (:func:`mmar.run.load`) online on ``data`` (a BVH file, directory,
    archive or converted npz) or on the benchmark's ``split``.

    Returns ``{"metrics": {group: metrics}, "per_clip": {clip: metrics}, "checkpoint": {...},
    "skipped": [errors], "pred": {clip: arrays}, "gt": {clip: arrays}}``; ``checkpoint`` says which run directory
    and step were evaluated (``{"run", "step", "dir", "skipped_steps"}``; ``skipped_steps``
    lists newer steps that could not be read, ``[{"step", "error"}]``, empty normally);
    ``skipped`` the input files or clips left out (unreadable, or NaN/Inf values).
    ``transform``: applied to the ground-truth clips before predicting (e.g.
    :func:`mmar.eval.sparse.turn_clips` for ``mmar eval --yaw/--shift``)."""
    from mmar.data.inputs import load_eval_arrays

    fps = float(run.config.data.fps)
    if data:
        gt, skipped = load_eval_arrays(data, fps, workers)
    else:
        gt, skipped = run.task.benchmark[split], []
    if transform is not None:
        gt = transform(gt)
    pred = run.task.predict_clips(run.variables, gt, progress=progress)
    per_clip = clip_metrics_of(pred, gt, fps)
    return {"metrics": grouped_metrics(pred, gt, fps, per_clip=per_clip), "per_clip": per_clip,
            "checkpoint": _checkpoint_info(run),
            "skipped": skipped, "pred": pred, "gt": gt}


def _checkpoint_info(run) -> dict:
    return {"run": str(run.workdir), "step": run.step, "dir": str(run.checkpoint),
            "skipped_steps": list(getattr(run, "skipped_steps", []))}


def t2m_eval_dataset(run, ev, splits, base=None):
    """The captioned motions of ``splits`` for the T2M protocol, normalised with the evaluator's
    mean / std: the splits that ``base`` (default ``run.task.dataset``, the data the run was
    trained on) holds, the others (the test split, normally) loaded with ``run.config.data``
    (``source``, ``root``, ``fps``, ``min_len``; Bandai ``max_clips``, ``workers``) and
    ``base.max_len``. The run's own dataset is not changed (its generator may denormalise with
    it). Refuses an evaluator trained on another source or feature size."""
    from mmar.data import hml_features as hf
    from mmar.data.t2m import T2MDataset, load_t2m
    from mmar.errors import ConfigError

    base = run.task.dataset if base is None else base
    src = ev.info.get("source")
    if src is not None and src != base.source:
        raise ConfigError(f"the evaluator was trained on {src} motions, the run on {base.source}: "
                          "score a run with an evaluator of its own data")
    if ev.feature_dim != base.feature_dim:
        raise ConfigError(f"the evaluator reads {ev.feature_dim} features per frame, the run's data has "
                          f"{base.feature_dim}")
    splits = tuple(dict.fromkeys(splits))
    have = {s: base.splits[s] for s in splits if s in base.splits}
    missing = tuple(s for s in splits if s not in have)
    info = dict(base.info, stats="evaluator")
    if missing:
        d = run.config.data
        kw = {"max_clips": getattr(d, "max_clips", None), "workers": getattr(d, "workers", 2)} \
            if base.source == "bandai" else {}
        extra = load_t2m(base.source, getattr(d, "root", None), getattr(d, "fps", None), base.min_len,
                         base.max_len, splits=missing, stats=hf.Normalizer(ev.mean, ev.std), progress=False, **kw)
        have.update(extra.splits)
        info["loaded_for_eval"] = list(missing)
    return T2MDataset(base.source, base.kind, base.fps, base.min_len, base.max_len,
                      {s: have[s] for s in splits}, ev.mean, ev.std, info)


def evaluate_t2m_run(run, evaluator: str, split: str = "test", repeats: int = 20, seed: int = 0,
                     steps=None, guidance: float | None = None, top_p: float | None = None,
                     temperature: float | None = None, *, reference: str = "train", batch_size: int = 32,
                     multimodality: int = 0, evaluator_checkpoint: str = "best", dataset=None,
                     progress: bool = True) -> dict:
    """T2M metrics of a loaded text-to-motion run's generations
    (:func:`mmar.eval.t2m_protocol.generated_row`) under the frozen evaluator at ``evaluator``
    (a ``t2m_evaluator`` run directory: its ``best/`` checkpoint, or a checkpoint folder;
    :func:`~mmar.tasks.t2m_evaluator.load_evaluator`). ``steps``, ``guidance``, ``top_p``,
    ``temperature``: sampling overrides (``None``: the run's config). ``dataset``: the motions to
    use instead of ``run.task.dataset`` (:func:`t2m_eval_dataset` renormalises them either way).
    Evaluating on the test split is allowed (selecting checkpoints on it is not).

    Returns JSON-able ``{"metrics": {"mean", "ci95"}, "fingerprint", "evaluator": info,
    "settings", "sampling", "seconds", "checkpoint", "dataset"}`` (plus ``"multimodality"``
    when asked)."""
    from mmar.eval.t2m_protocol import generated_row, generator_for_run
    from mmar.tasks.t2m_evaluator import load_evaluator

    ev = load_evaluator(evaluator, checkpoint=evaluator_checkpoint)
    ds = t2m_eval_dataset(run, ev, (reference, split), base=dataset)
    sampling = {"steps": steps, "guidance": guidance, "top_p": top_p, "temperature": temperature,
                "batch_size": batch_size}
    gen = generator_for_run(run, **sampling)
    res = generated_row(gen, ev, ds, split, reference, repeats, seed, batch_size=batch_size,
                        multimodality=multimodality, progress=progress)
    out = {"metrics": {"mean": res["mean"], "ci95": res["ci95"]}, "fingerprint": res["fingerprint"],
           "evaluator": dict(ev.info), "settings": res["settings"],
           "sampling": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sampling.items()},
           "seconds": res["seconds"], "checkpoint": _checkpoint_info(run),
           "dataset": {"source": ds.source, **{s: ds[s].summary() for s in ds.splits}}}
    if "multimodality" in res:
        out["multimodality"] = res["multimodality"]
    return out

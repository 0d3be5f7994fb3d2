"""``mmar export``: a trained sparse-to-full-body checkpoint -> ``.tflite`` plus a JSON model card.

Modes: AGRoL-MLP and MotionMAR ``window`` (a window of W sparse frames in, the last frame's
pose out; MotionMAR as one graph with all scales, the VQ-VAE decoder and the refiner);
Mem-MLP ``stream`` (one frame and the state in, the pose and the next state out). The card
beside the model holds the tensor names, shapes and dtypes, units, coordinate frame, fps, the
sparse-input layout, the model's config and training data, the quantization and what it means,
and the parity and single-thread latency measured at export time on a random sparse sequence
(for stream models with a note on why quantized streams drift from JAX there: the nearest-code
choice of the memory). ``python -m mmar.export.runtime`` reads the card to run the model on a
BVH file.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable, NamedTuple

import numpy as np

from mmar.errors import ConfigError

SPARSE_LAYOUT = {
    "joints": ["head (SMPL 15)", "left wrist (SMPL 20)", "right wrist (SMPL 21)"],
    "0:18": "global rotation, 6D (first two matrix columns), per joint",
    "18:36": "rotation velocity R_{t-1}^T R_t, 6D, per joint (identity at the first frame)",
    "36:45": "global position [m], per joint",
    "45:54": "position difference p_t - p_{t-1} [m], per joint (zero at the first frame)",
}

STREAM_PARITY_NOTE = (
    "The stream feeds back a nearest-code choice (argmin over the VQ codebook) through its memory: "
    "any rounding difference (float16 or int8 weights, even another summation order) flips that choice "
    "where two codes nearly tie, and every later memory then differs. A random sequence makes codes tie "
    "often, so the parity above is a worst case, not a measure of accuracy; tools/bench_export.py "
    "measures accuracy and code flips on real clips (docs/results.md).")


def export_checkpoint(checkpoint: str, out: str, quantize: str = "none", mode: str | None = None,
                      latency_iters: int = 200) -> dict:
    """Export a run (:func:`mmar.run.load`): write ``out`` and its card (``out`` with ``.json``);
    returns the card.

    ``quantize``: one of :data:`mmar.export.tflite.QUANTIZE` (see that module for what each
    means). ``mode``: the task's ``export_modes`` (``window`` for AGRoL-MLP and MotionMAR,
    ``stream`` for Mem-MLP); default: the first. Raises :class:`ConfigError` for an unsupported
    option or a model that is not a sparse-to-full-body predictor and :class:`CheckpointError`
    for a missing run; nothing is written then.
    """
    from mmar.run import load

    _check_quantize(quantize)
    run = load(checkpoint)
    return export_model(run.task, run.variables, run.config, out, quantize=quantize, mode=mode,
                        latency_iters=latency_iters, source=str(run.checkpoint))


def _check_quantize(quantize: str) -> None:
    from mmar.export.tflite import QUANTIZE

    if quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {quantize!r} is not supported ({', '.join(QUANTIZE)})")


def export_mode(task, mode: str | None, source: str | None = None) -> str:
    """The export mode of ``task`` (``mode`` checked against its ``export_modes``)."""
    modes = task.export_modes
    if not modes:
        raise ConfigError(f"{source or 'model'}: a {task.cfg.task!r} model is not a sparse-to-full-body "
                              f"model to export")
    mode = mode or modes[0]
    if mode not in modes:
        raise ConfigError(f"--mode {mode} is not available for {task.cfg.task} (available: {', '.join(modes)})")
    return mode


class Exported(NamedTuple):
    """A converted model with what parity and latency need: ``reference(sparse)`` runs the
    same computation in JAX, ``run_tflite(sparse)`` the converted file over the same input, and
    ``call_once()`` one call of the file as a headset makes it (one window or one stream step)."""

    specs: dict
    state_spec: dict | None
    reference: Callable
    run_tflite: Callable
    call_once: Callable


def export_fn(task, variables, mode: str) -> tuple[Callable, dict]:
    """``(fn, input_specs)``: the pure function of ``task``'s model with ``variables`` (as saved)
    that is converted in ``mode`` (``window``: a window of sparse frames in, the last frame's
    pose out; ``stream``: one frame and the state in, the pose and the next state out)."""
    import jax
    import jax.numpy as jnp

    from mmar.export import tflite as T

    variables = jax.tree.map(jnp.asarray, variables)
    mcfg = task.model.config
    if mode == "stream":
        fn = T.mem_mlp_stream_fn(task.model, task.model_vars(variables), task.vq_model, variables.get("vqvae"))
        return fn, T.mem_mlp_stream_specs(mcfg)
    if task.cfg.task == "motionmar":  # the whole window model as one graph (mmar/export/motionmar.py)
        from mmar.export import motionmar as MM

        m = task.m
        fn = MM.motionmar_window_fn(MM.export_model(mcfg), variables, task.vq_model, variables["vqvae"],
                                    decode=m.decode, temperature=m.soft_temperature, guidance=m.guidance,
                                    refine=m.refine)
        return fn, MM.motionmar_window_specs(mcfg)
    return T.agrol_window_fn(task.model, task.model_vars(variables)), T.agrol_window_specs(mcfg)


def convert(task, variables, out: str, quantize: str, mode: str, sparse: np.ndarray) -> Exported:
    """Convert ``task``'s model with ``variables`` (as saved) to ``out`` in ``mode``."""
    import jax
    import jax.numpy as jnp

    from mmar.export import tflite as T
    from mmar.export.runtime import StreamRuntime, TFLiteModel

    fn, specs = export_fn(task, variables, mode)
    T.export_tflite(fn, specs, out, quantize)
    W = task.model.config.window
    if mode == "window":
        model = TFLiteModel(out)
        x = sparse[None, :W]
        return Exported(specs, None, lambda s: np.asarray(fn(jnp.asarray(s[None, :W]))["rot6d"]),
                        lambda s: model({"sparse": s[None, :W]})["rot6d"], lambda: model({"sparse": x}))
    from mmar.models.mem_mlp import predict_clip

    variables = jax.tree.map(jnp.asarray, variables)
    model_vars, vq_vars = task.model_vars(variables), variables.get("vqvae")
    state_spec = T.mem_mlp_state_spec(task.model.config)
    rt = StreamRuntime(out, state_spec)

    def reference(s):
        return np.asarray(predict_clip(task.model, model_vars, jnp.asarray(s[None]), task.vq_model, vq_vars)["rot6d"][0])

    return Exported(specs, state_spec, reference, rt.run_clip, lambda: rt.step(sparse[0]))


def parity(exported: Exported, sparse: np.ndarray) -> float:
    """Largest absolute difference of the converted model's poses from JAX's on ``sparse``."""
    return float(np.max(np.abs(exported.run_tflite(sparse) - exported.reference(sparse))))


def latency(call_once: Callable, iters: int = 200, warmup: int = 5) -> dict:
    """Single-call latency in ms: median and p99 of ``iters`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        call_once()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        call_once()
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median": float(np.median(times)), "p99": float(np.percentile(times, 99)), "iters": iters}


def export_model(task, variables, cfg, out: str, quantize: str = "none", mode: str | None = None,
                 latency_iters: int = 200, source: str | None = None) -> dict:
    """Export a loaded model (a task of :mod:`mmar.tasks`, ``variables`` as saved: params plus
    extra collections, ``cfg`` the run config) to ``out`` and write its card beside it; returns
    the card.

    The card records the parity with JAX (largest absolute difference of the poses on a random
    sparse sequence: one window in window mode, ``2 W`` streamed frames in stream mode) and the
    single-thread LiteRT latency of one call (``latency_iters`` calls after 5 warm-up calls).
    """
    _check_quantize(quantize)
    mode = export_mode(task, mode, source)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    T_frames = 2 * task.model.config.window
    sparse = np.random.default_rng(0).normal(scale=0.3, size=(T_frames, 54)).astype(np.float32)
    exported = convert(task, variables, out, quantize, mode, sparse)
    card = model_card(task, cfg, out, quantize, mode, exported, parity=parity(exported, sparse),
                      latency_ms=latency(exported.call_once, latency_iters), source=source)
    card_file = os.path.splitext(out)[0] + ".json"
    tmp = card_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(card, f, indent=1)
    os.replace(tmp, card_file)
    return card


def model_card(task, cfg, out: str, quantize: str, mode: str, exported: Exported, parity: float, latency_ms: dict,
               source: str | None) -> dict:
    """The JSON model card of an exported file."""
    from mmar.export import tflite as T

    mcfg = task.model.config
    T_frames = 2 * mcfg.window
    return {
        "format": "mmar-tflite-card/1",
        "model": cfg.task,
        "mode": mode,
        "quantize": quantize,
        "quantization": T.QUANTIZE_NOTES[quantize],
        "file": os.path.basename(out),
        "file_bytes": os.path.getsize(out),
        "inputs": {k: {"shape": list(s), "dtype": np.dtype(d).name} for k, (s, d) in exported.specs.items()},
        "state": None if exported.state_spec is None else
        {k: {"shape": list(s), "dtype": np.dtype(d).name, "initial": 0} for k, (s, d) in exported.state_spec.items()},
        "outputs": {"rot6d" if mode == "window" else "pose":
                    "local joint rotations (1, 22, 6), 6D = first two matrix columns, SMPL-22 order, "
                    "root orientation included; place the body by FK with the user's offsets and "
                    "translate so joint 15 (head) meets the tracked head"},
        "units": "metres, radians (6D unitless)",
        "coordinate_frame": "Y up, right-handed, metres (docs/design.md)",
        "fps": float(cfg.data.fps),
        "window": int(mcfg.window),
        "sparse_layout": SPARSE_LAYOUT,
        "normalisation": "none (the model reads the raw sparse features)",
        "config": {"kind": cfg.task, **json.loads(json.dumps(cfg.model.__dict__, default=str))},
        "training_data": "Bandai Namco Research Motion Dataset 1+2 (CC BY-NC 4.0, Bandai Namco Research Inc.; "
                         "non-commercial use only), mmar fixed split, train part",
        "checkpoint": source,
        "parity_max_abs_vs_jax": parity,
        "parity_input": f"random sparse sequence of {T_frames} frames" if mode == "stream" else "random window",
        **({"parity_note": STREAM_PARITY_NOTE} if mode == "stream" else {}),
        "latency_ms_single_thread": latency_ms,
        "runtime": "python -m mmar.export.runtime MODEL.tflite INPUT.bvh --out pred.npz (numpy + ai-edge-litert)",
        "version": __import__("mmar").__dict__.get("__version__", "0.1.0"),
    }

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
from pathlib import Path

import numpy as np

from mmar.errors import CheckpointError, ConfigError

MODES = {"agrol_mlp": ("window",), "mem_mlp": ("stream",), "motionmar": ("window",)}
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


def _load(checkpoint: str):
    """``(task, variables, cfg)`` of a run directory; checks the model kind can be exported."""
    from mmar.tasks import make_task
    from mmar.train.checkpoint import load_params
    from mmar.train.config import load_saved_config

    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise CheckpointError(f"{checkpoint}: no such checkpoint directory")
    from mmar.cli import _base_config

    cfg, _ = load_saved_config(ckpt, base=_base_config(str(ckpt)))
    kind = cfg.model.kind
    if kind not in MODES:
        raise ConfigError(f"{checkpoint}: a {kind!r} checkpoint is not a sparse-to-full-body model to export "
                          f"(exportable: {', '.join(MODES)})")
    variables, _ = load_params(ckpt)
    return make_task(cfg), variables, cfg


def export_checkpoint(checkpoint: str, out: str, quantize: str = "none", mode: str | None = None,
                      latency_iters: int = 200) -> dict:
    """Export a run directory: write ``out`` and its card (``out`` with ``.json``); returns the card.

    ``quantize``: one of :data:`mmar.export.tflite.QUANTIZE` (see that module for what each
    means). ``mode``: ``window`` (AGRoL-MLP) or ``stream`` (Mem-MLP); default: the kind's.
    Raises :class:`ConfigError` for an unsupported option and :class:`CheckpointError` for a
    missing run or a model that is not a sparse-to-full-body predictor; nothing is written then.
    """
    from mmar.export.tflite import QUANTIZE

    if quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {quantize!r} is not supported ({', '.join(QUANTIZE)})")
    task, variables, cfg = _load(checkpoint)
    return export_model(task, variables, cfg, out, quantize=quantize, mode=mode, latency_iters=latency_iters,
                        source=str(Path(checkpoint).absolute()))


def export_model(task, variables, cfg, out: str, quantize: str = "none", mode: str | None = None,
                 latency_iters: int = 200, source: str | None = None) -> dict:
    """Export a loaded model (``task``: :class:`mmar.tasks.sparse_body.SparseBodyTask`,
    ``variables`` as saved: params plus extra collections, ``cfg`` the run config) to ``out``
    and write its card beside it; returns the card.

    The card records the parity with JAX (largest absolute difference of the poses on a random
    sparse sequence: one window in window mode, ``2 W`` streamed frames in stream mode) and the
    single-thread LiteRT latency of one call (``latency_iters`` calls after 5 warm-up calls).
    """
    import jax
    import jax.numpy as jnp

    from mmar.export import tflite as T
    from mmar.export.runtime import StreamRuntime, TFLiteModel

    if quantize not in T.QUANTIZE:
        raise ConfigError(f"--quantize {quantize!r} is not supported ({', '.join(T.QUANTIZE)})")
    kind = cfg.model.kind
    if kind not in MODES:
        raise ConfigError(f"{source or 'model'}: a {kind!r} model is not a sparse-to-full-body model to export")
    mode = mode or MODES[kind][0]
    if mode not in MODES[kind]:
        raise ConfigError(f"--mode {mode} is not available for {kind} (available: {', '.join(MODES[kind])})")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    variables = jax.tree.map(jnp.asarray, variables)
    params = variables["params"]
    extra = {k: v for k, v in variables.items() if k != "params"}
    model_vars = task._model_vars(params, extra) if kind != "motionmar" else None
    mcfg = task.model.config
    rng = np.random.default_rng(0)
    T_frames = 2 * mcfg.window
    sparse = rng.normal(scale=0.3, size=(T_frames, 54)).astype(np.float32)

    if mode == "window":
        if kind == "motionmar":  # the whole window model as one graph (mmar/export/motionmar.py)
            from mmar.export import motionmar as MM

            m = cfg.model
            specs = MM.motionmar_window_specs(mcfg)
            fn = MM.motionmar_window_fn(MM.export_model(mcfg), variables, task.vq_model, extra["vqvae"],
                                        decode=m.decode, temperature=m.soft_temperature, guidance=m.guidance,
                                        refine=m.refine)
        else:
            specs = T.agrol_window_specs(mcfg)
            fn = T.agrol_window_fn(task.model, model_vars)
        T.export_tflite(fn, specs, out, quantize)
        model = TFLiteModel(out)
        x = sparse[None, : mcfg.window]
        ref = np.asarray(fn(jnp.asarray(x))["rot6d"])
        got = model({"sparse": x})["rot6d"]
        run_once = lambda: model({"sparse": x})  # noqa: E731
        state_spec = None
    else:
        specs = T.mem_mlp_stream_specs(mcfg)
        fn = T.mem_mlp_stream_fn(task.model, model_vars, task.vq_model, extra.get("vqvae"))
        T.export_tflite(fn, specs, out, quantize)
        from mmar.models.mem_mlp import predict_clip

        ref = np.asarray(predict_clip(task.model, model_vars, jnp.asarray(sparse[None]), task.vq_model,
                                      extra.get("vqvae"))["rot6d"][0])
        state_spec = T.mem_mlp_state_spec(mcfg)
        rt = StreamRuntime(out, state_spec)
        got = rt.run_clip(sparse)
        run_once = lambda: rt.step(sparse[0])  # noqa: E731
    parity = float(np.max(np.abs(got - ref)))
    for _ in range(5):
        run_once()
    times = []
    for _ in range(latency_iters):
        t0 = time.perf_counter()
        run_once()
        times.append((time.perf_counter() - t0) * 1e3)
    card = {
        "format": "mmar-tflite-card/1",
        "model": kind,
        "mode": mode,
        "quantize": quantize,
        "quantization": T.QUANTIZE_NOTES[quantize],
        "file": os.path.basename(out),
        "file_bytes": os.path.getsize(out),
        "inputs": {k: {"shape": list(s), "dtype": np.dtype(d).name} for k, (s, d) in specs.items()},
        "state": None if state_spec is None else
        {k: {"shape": list(s), "dtype": np.dtype(d).name, "initial": 0} for k, (s, d) in state_spec.items()},
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
        "config": json.loads(json.dumps(cfg.model.__dict__, default=str)),
        "training_data": "Bandai Namco Research Motion Dataset 1+2 (CC BY-NC 4.0, Bandai Namco Research Inc.; "
                         "non-commercial use only), mmar fixed split, train part",
        "checkpoint": source,
        "parity_max_abs_vs_jax": parity,
        "parity_input": f"random sparse sequence of {T_frames} frames" if mode == "stream" else "random window",
        **({"parity_note": STREAM_PARITY_NOTE} if mode == "stream" else {}),
        "latency_ms_single_thread": {"median": float(np.median(times)), "p99": float(np.percentile(times, 99)),
                                     "iters": latency_iters},
        "runtime": "python -m mmar.export.runtime MODEL.tflite INPUT.bvh --out pred.npz (numpy + ai-edge-litert)",
        "version": __import__("mmar").__dict__.get("__version__", "0.1.0"),
    }
    card_file = os.path.splitext(out)[0] + ".json"
    tmp = card_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(card, f, indent=1)
    os.replace(tmp, card_file)
    return card

"""``mmar export``: a trained sparse-to-full-body checkpoint -> ``.tflite`` plus a JSON model card.

Modes: AGRoL-MLP ``window`` (a window of W sparse frames in, the last frame's pose out);
Mem-MLP ``stream`` (one frame and the state in, the pose and the next state out). The card
beside the model holds the tensor names, shapes and dtypes, units, coordinate frame, fps, the
sparse-input layout, the model's config and training data, and the parity and single-thread
latency measured at export time on a random sparse sequence.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from mmar.errors import CheckpointError, ConfigError

MODES = {"agrol_mlp": ("window",), "mem_mlp": ("stream",)}
SPARSE_LAYOUT = {
    "joints": ["head (SMPL 15)", "left wrist (SMPL 20)", "right wrist (SMPL 21)"],
    "0:18": "global rotation, 6D (first two matrix columns), per joint",
    "18:36": "rotation velocity R_{t-1}^T R_t, 6D, per joint (identity at the first frame)",
    "36:45": "global position [m], per joint",
    "45:54": "position difference p_t - p_{t-1} [m], per joint (zero at the first frame)",
}


def _load(checkpoint: str):
    from mmar.tasks.sparse_body import SparseBodyTask
    from mmar.train.checkpoint import load_params
    from mmar.train.config import load_saved_config

    ckpt = Path(checkpoint)
    if not ckpt.exists():
        raise CheckpointError(f"{checkpoint}: no such checkpoint directory")
    variables, _ = load_params(ckpt)
    from mmar.cli import _base_config

    cfg, _ = load_saved_config(ckpt, base=_base_config())
    return SparseBodyTask(cfg), variables, cfg


def export_checkpoint(checkpoint: str, out: str, quantize: str = "none", mode: str | None = None,
                      latency_iters: int = 200) -> dict:
    """Export and write ``out`` and ``out`` with ``.json``; returns the card."""
    import jax
    import jax.numpy as jnp

    from mmar.export import tflite as T
    from mmar.export.runtime import StreamRuntime, TFLiteModel

    if quantize not in ("none", "fp16"):
        raise ConfigError(f"--quantize {quantize!r} is not supported (none, fp16)")
    task, variables, cfg = _load(checkpoint)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    kind = cfg.model.kind
    if kind not in MODES:
        raise ConfigError(f"{checkpoint}: a {kind!r} checkpoint is not a sparse-to-full-body model to export")
    mode = mode or MODES[kind][0]
    if mode not in MODES[kind]:
        raise ConfigError(f"--mode {mode} is not available for {kind} (available: {', '.join(MODES[kind])})")
    variables = jax.tree.map(jnp.asarray, variables)
    params = variables["params"]
    extra = {k: v for k, v in variables.items() if k != "params"}
    model_vars = task._model_vars(params, extra)
    mcfg = task.model.config
    rng = np.random.default_rng(0)
    T_frames = 2 * mcfg.window
    sparse = rng.normal(scale=0.3, size=(T_frames, 54)).astype(np.float32)

    if mode == "window":
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
        "checkpoint": str(Path(checkpoint).absolute()),
        "parity_max_abs_vs_jax": parity,
        "parity_input": f"random sparse sequence of {T_frames} frames" if mode == "stream" else "random window",
        "latency_ms_single_thread": {"median": float(np.median(times)), "p99": float(np.percentile(times, 99)),
                                     "iters": latency_iters},
        "version": __import__("mmar").__dict__.get("__version__", "0.1.0"),
    }
    tmp = out + ".json.tmp"
    with open(tmp, "w") as f:
        json.dump(card, f, indent=1)
    os.replace(tmp, os.path.splitext(out)[0] + ".json")
    return card

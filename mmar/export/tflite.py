"""Export JAX functions and the sparse-body models to TFLite (builtin ops only).

Path: ``jax2tf.convert`` (native StableHLO serialization, the default) -> ``tf.function``
with a fixed input signature -> SavedModel (temporary folder) -> ``TFLiteConverter`` with ``TFLITE_BUILTINS`` only (no Flex ops, so the model runs
on a stock LiteRT interpreter). JAX and TensorFlow must agree on the StableHLO version;
``tests/test_export_tflite.py`` guards that.

Naming: the SavedModel step keeps names (``from_concrete_functions`` would rename the
outputs ``output_0, output_1, ...``). The model's signature (``serving_default``) uses the keys of ``input_specs`` as input
names and, when ``fn`` returns a dict, its keys as output names (otherwise ``output_0``...).
:func:`run_tflite` maps by those names (see :mod:`mmar.export.runtime` for the fallback on
models without a signature).

Streaming Mem-MLP (:func:`mem_mlp_stream_fn`): the state of
:class:`mmar.models.mem_mlp.StreamState` becomes explicit tensors -- ``window (1,W,54)``,
``memory_sparse (1,W,54)``, ``memory_rot6d (1,W,22,6)``, ``memory_code (1,W,code_dim)``,
``t (1,)`` -- inputs under those names and outputs as ``next_<name>``; all start at zero.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, Mapping

import numpy as np

from mmar.errors import ConfigError

QUANTIZE = ("none", "fp16")


def export_tflite(fn: Callable, input_specs: Mapping[str, tuple], out_path, quantize: str = "none") -> bytes:
    """Convert ``fn`` (JAX, positional arguments in the order of ``input_specs``) to TFLite.

    ``input_specs``: ``name -> (shape, dtype)``. ``quantize``: ``"none"`` (float32) or
    ``"fp16"`` (float16 weights). Writes ``out_path`` atomically (temporary file in the same
    folder, then rename): on any failure no partial file is left and an existing file is
    untouched. Returns the model bytes.
    """
    if quantize not in QUANTIZE:
        raise ConfigError(f"export_tflite: quantize must be one of {QUANTIZE}, got {quantize!r}")
    if not input_specs:
        raise ConfigError("export_tflite: input_specs is empty")
    import tensorflow as tf
    from jax.experimental import jax2tf

    sig = [tf.TensorSpec(tuple(shape), tf.as_dtype(np.dtype(dtype)), name=name)
           for name, (shape, dtype) in input_specs.items()]
    tff = tf.function(jax2tf.convert(fn, with_gradient=False),  # native (StableHLO) serialization
                      autograph=False, input_signature=sig)
    # Via a SavedModel so that the TFLite signature keeps the input and output names
    # (from_concrete_functions names the outputs output_0, output_1, ...).
    module = tf.Module()
    module.f = tff
    with tempfile.TemporaryDirectory(prefix="mmar-tflite-") as sm_dir:
        tf.saved_model.save(module, sm_dir, signatures={"serving_default": tff.get_concrete_function()})
        conv = tf.lite.TFLiteConverter.from_saved_model(sm_dir, signature_keys=["serving_default"])
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize == "fp16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        model = conv.convert()

    out_path = os.fspath(out_path)
    folder = os.path.dirname(os.path.abspath(out_path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".tflite", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return model


def run_tflite(path_or_bytes, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a TFLite model once on ``inputs`` (name -> array); returns name -> array."""
    from mmar.export.runtime import TFLiteModel

    return TFLiteModel(path_or_bytes)(inputs)


# --------------------------------------------------------------------------
# model wrappers
# --------------------------------------------------------------------------

def agrol_window_fn(model, variables) -> Callable:
    """AGRoL-MLP: ``sparse (1, W, 54) -> {"rot6d": (1, 22, 6)}`` (the window's last frame)."""

    def fn(sparse):
        return {"rot6d": model.apply(variables, sparse)[:, -1]}

    return fn


def agrol_window_specs(config) -> dict:
    return {"sparse": ((1, config.window, config.sparse_dim), np.float32)}


def mem_mlp_state_spec(config) -> dict:
    """State tensors of the exported Mem-MLP stream step, ``name -> (shape, dtype)``."""
    W = config.window
    return {
        "window": ((1, W, config.sparse_dim), np.float32),
        "memory_sparse": ((1, W, config.sparse_dim), np.float32),
        "memory_rot6d": ((1, W, config.num_joints, 6), np.float32),
        "memory_code": ((1, W, config.code_dim), np.float32),
        "t": ((1,), np.float32),
    }


def mem_mlp_stream_specs(config) -> dict:
    """``input_specs`` for :func:`mem_mlp_stream_fn`: the frame, then the state."""
    return {"sparse_frame": ((1, config.sparse_dim), np.float32), **mem_mlp_state_spec(config)}


def mem_mlp_stream_fn(model, variables, vq_model=None, vq_variables=None) -> Callable:
    """One :func:`mmar.models.mem_mlp.stream_step` with the state as explicit tensors.

    ``fn(sparse_frame, window, memory_sparse, memory_rot6d, memory_code, t)`` returns
    ``{"pose": rot6d (1, 22, 6), "next_window", "next_memory_sparse", "next_memory_rot6d",
    "next_memory_code", "next_t"}`` (with the position head also ``pos (1, 22, 3)``).
    ``t`` is ``(1,)`` (int32 or float32; only ``t == 0`` matters: edge padding).
    """
    import jax.numpy as jnp

    from mmar.models.mem_mlp import StreamState, stream_step

    def fn(sparse_frame, window, memory_sparse, memory_rot6d, memory_code, t):
        state = StreamState(window, {"sparse": memory_sparse, "rot6d": memory_rot6d, "code": memory_code}, t[0])
        new, pose = stream_step(model, variables, state, sparse_frame, vq_model, vq_variables)
        out = {
            "pose": pose["rot6d"],
            "next_window": new.window,
            "next_memory_sparse": new.memory["sparse"],
            "next_memory_rot6d": new.memory["rot6d"],
            "next_memory_code": jnp.asarray(new.memory["code"], memory_code.dtype),
            "next_t": jnp.reshape(new.t, (1,)).astype(t.dtype),
        }
        if "pos" in pose:
            out["pos"] = pose["pos"]
        return out

    return fn

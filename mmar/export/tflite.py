"""Export JAX functions and the sparse-body models to TFLite (builtin ops only).

Path: ``jax2tf.convert`` (native StableHLO serialization, the default) -> ``tf.function``
with a fixed input signature -> SavedModel (temporary folder) -> ``TFLiteConverter`` with
``TFLITE_BUILTINS`` only (no Flex ops, so the model runs on a stock LiteRT interpreter). JAX
and TensorFlow must agree on the StableHLO version; ``tests/test_export_tflite.py`` guards that.

Naming: the SavedModel step keeps names (``from_concrete_functions`` would rename the
outputs ``output_0, output_1, ...``). The model's signature (``serving_default``) uses the
keys of ``input_specs`` as input names and, when ``fn`` returns a dict, its keys as output
names (otherwise ``output_0``...). :func:`run_tflite` maps by those names (see
:mod:`mmar.export.runtime` for the fallback on models without a signature).

Quantization (``quantize``, recorded with :data:`QUANTIZE_NOTES` in the model card):

* ``"none"``: float32.
* ``"fp16"``: float16 weights. The file is about half the size; on a CPU the weights are
  turned back into float32 when the model loads, so latency is that of float32.
* ``"int8"``: **dynamic-range** quantization (the converter's ``Optimize.DEFAULT`` without a
  representative dataset): int8 weights, float32 activations, inputs, outputs and stream state;
  the hybrid kernels quantize each activation to int8 on the fly. This is the standard choice
  for a regression model on a headset CPU: no calibration data, a third of the file, 1.4-1.7
  times faster than float32 on the CPU measured. Full-integer quantization (int8 activations
  with ranges calibrated on sparse frames, ``export_tflite(..., representative_data=...)``) was
  measured
  on the same models and was worse on every count -- higher MPJPE and jitter, and slower
  (the converter runs every op in int8, the LayerNorm statistics and SiLUs included;
  ``tools/bench_export.py --full-int8``, ``docs/results.md``); ``mmar export`` does not offer
  it. Dynamic range adds frame-to-frame noise (each call's activation rounding differs), which
  shows as several times the jitter of float32; measure before using it.

Streaming Mem-MLP (:func:`mem_mlp_stream_fn`): the state of
:class:`mmar.models.mem_mlp.StreamState` becomes explicit tensors -- ``window (1,W,54)``,
``memory_sparse (1,W,54)``, ``memory_rot6d (1,W,22,6)``, ``memory_code (1,W,code_dim)``,
``t (1,)`` -- inputs under those names and outputs as ``next_<name>``; all start at zero.
A step runs the whole window through the backbone and the rotation head (the next memory needs
the prediction of every frame of the window) and then the frozen VQ encoder and nearest-code
search on that prediction; the position head, whose output is only read for the newest frame,
runs on that frame alone. Profile and latency: ``tools/bench_export.py --profile``.

Heading frame (``model.frame="heading"``, :mod:`mmar.models.heading`): the exported graphs take
and return the same world-frame tensors as in world mode and contain the transform (a few
elementwise ops): the window model expresses its window in the last frame's heading frame and
turns the root orientation back; the stream step carries its memory in the world (``memory_code``
stays zero), expresses it in the current frame and encodes it before the network, and turns
its outputs back into the world.

Quantized Mem-MLP streams do not reproduce the float32 stream exactly, and no partial
float32 graph fixes that: the memory feeds the model's own prediction through the VQ
encoder into an ``argmin`` over the codebook, a discontinuous function. float16 or int8
weights anywhere in the step perturb the prediction by ~1e-3, the encoder output moves by
as much, and wherever two codes nearly tie the choice flips; the flipped code changes the
next memory and so every later frame. Keeping the VQ encoder and codebook in float32 was
measured (``tools/bench_export.py --simulate-fp16``) and flips as many codes: their input, the
prediction, is still perturbed. Only the very same float32 arithmetic keeps the code sequence;
even float32 kernels with another summation order flip codes that tie to ~1e-6. On real clips
the flips of fp16 do not cost accuracy (``docs/results.md``); on the random parity input of the
model card codes tie often, which is where the large differences seen at export come from.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, Iterable, Mapping

import numpy as np

from mmar.errors import ConfigError

QUANTIZE = ("none", "fp16", "int8")
QUANTIZE_NOTES = {
    "none": "float32 weights and activations",
    "fp16": "float16 weights (post-training float16 quantization): stored in half precision, "
            "dequantized to float32 when the model loads; all arithmetic in float32",
    "int8": "dynamic-range quantization: int8 weights (per output channel for fully connected layers), "
            "float32 activations; the hybrid kernels quantize each activation tensor to int8 on the fly "
            "(scale from its current range) and accumulate in int32; inputs, outputs and state stay "
            "float32; no calibration data",
}


def export_tflite(fn: Callable, input_specs: Mapping[str, tuple], out_path, quantize: str = "none",
                  representative_data: Callable[[], Iterable[Mapping[str, np.ndarray]]] | None = None) -> bytes:
    """Convert ``fn`` (JAX, positional arguments in the order of ``input_specs``) to TFLite.

    ``input_specs``: ``name -> (shape, dtype)``. ``quantize``: ``"none"`` (float32),
    ``"fp16"`` (float16 weights) or ``"int8"`` (dynamic-range: int8 weights, float
    activations); see :data:`QUANTIZE_NOTES` and the module docstring.
    ``representative_data`` (only with ``"int8"``): a callable returning an iterable of input
    dicts (``name -> array`` of the ``input_specs`` shapes); it switches to full-integer
    post-training quantization: int8 weights *and* activations, ranges calibrated on those
    inputs, float32 inputs and outputs, float kernels where no int8 one exists. It measured
    worse than dynamic range on the sparse-body models (``docs/results.md``), so
    ``mmar export`` does not offer it; ``tools/bench_export.py --full-int8`` measures it.

    Writes ``out_path`` atomically (temporary file in the same folder, then rename): on any
    failure no partial file is left and an existing file is untouched. Returns the model bytes.
    """
    if quantize not in QUANTIZE:
        raise ConfigError(f"export_tflite: quantize must be one of {QUANTIZE}, got {quantize!r}")
    if not input_specs:
        raise ConfigError("export_tflite: input_specs is empty")
    if representative_data is not None and quantize != "int8":
        raise ConfigError(f"export_tflite: representative_data is for quantize='int8' (full integer), "
                          f"not {quantize!r}")
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
        elif quantize == "int8":
            # without a representative dataset: dynamic range (int8 weights, float activations)
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            if representative_data is not None:  # full integer, float fallback, float I/O
                names = list(input_specs)

                def rep():
                    for sample in representative_data():
                        yield {n: np.asarray(sample[n], np.dtype(input_specs[n][1])) for n in names}

                conv.representative_dataset = rep
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                                  tf.lite.OpsSet.TFLITE_BUILTINS]
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
    """AGRoL-MLP: ``sparse (1, W, 54) -> {"rot6d": (1, 22, 6)}`` (the window's last frame;
    :func:`mmar.models.agrol_mlp.predict_window`, heading frame included when configured)."""
    from mmar.models.agrol_mlp import predict_window

    def fn(sparse):
        return {"rot6d": predict_window(model, variables, sparse)}

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

    Same outputs as ``stream_step``, less work: the rotation head runs on the whole window
    (the next memory needs every frame of it) but the position head only on the last frame,
    the only one a stream step returns (:func:`mem_mlp_window_last_pos`).
    """
    import jax.numpy as jnp

    from mmar.models import heading
    from mmar.models import mem_mlp as M
    from mmar.models.mem_mlp import require_vq_model, advance_window, make_memory

    cfg = model.config
    require_vq_model(cfg, vq_model)

    def fn(sparse_frame, window, memory_sparse, memory_rot6d, memory_code, t):
        memory = {"sparse": memory_sparse, "rot6d": memory_rot6d, "code": memory_code}
        new_window = advance_window(window, sparse_frame, t[0], cfg.pad_mode)
        if cfg.frame == "heading":  # as mmar.models.mem_mlp._window_step
            frame = heading.window_frame(new_window)
            layers = cfg.active_memory_layers()
            mem_in = M.heading_step_memory(cfg, memory, frame, t[0], vq_model, vq_variables) if layers else memory
            out = M.outputs_from_frame(
                mem_mlp_window_last_pos(model, variables, heading.sparse_to_frame(new_window, frame), mem_in), frame)
            new_mem = M.heading_next_memory(new_window, out["rot6d"], cfg.code_dim) if layers else memory
        else:
            out = mem_mlp_window_last_pos(model, variables, new_window, memory)
            if cfg.active_memory_layers():
                new_mem = make_memory(new_window, out["rot6d"], vq_model if cfg.use_code else None, vq_variables,
                                      cfg.code_dim)
            else:
                new_mem = memory
        result = {
            "pose": out["rot6d"][:, -1],
            "next_window": new_window,
            "next_memory_sparse": new_mem["sparse"],
            "next_memory_rot6d": new_mem["rot6d"],
            "next_memory_code": jnp.asarray(new_mem["code"], memory_code.dtype),
            "next_t": (t + 1).astype(t.dtype),
        }
        if "pos" in out:
            result["pos"] = out["pos"]
        return result

    return fn


def _mlp_block_last_frame(block_params, x, extra):
    """:class:`mmar.models.agrol_mlp.MLPBlock` evaluated for the last output frame only:
    ``(..., W, C)`` (and ``extra (..., M, C)``) -> ``(..., C)``. The frame-mixing map is
    linear per output frame, so only its last row is needed."""
    import flax.linen as nn
    import jax.numpy as jnp

    h = x if extra is None else jnp.concatenate([x, extra], axis=-2)
    y = nn.LayerNorm().apply({"params": block_params["norm0"]}, h)
    kernel, bias = block_params["fc0"]["kernel"], block_params["fc0"]["bias"]
    y = jnp.einsum("f,...fc->...c", kernel[-1].astype(y.dtype), y) + bias[-1].astype(y.dtype)
    x = x[..., -1, :] + nn.silu(y)
    y = nn.LayerNorm().apply({"params": block_params["norm1"]}, x)
    y = nn.Dense(x.shape[-1]).apply({"params": block_params["fc1"]}, y)
    return x + nn.silu(y)


def mem_mlp_window_last_pos(model, variables, window, memory) -> dict:
    """``MemMLP.apply(variables, window, memory)`` at inference, with ``pos`` of the last frame.

    Returns ``rot6d (B, W, 22, 6)`` for every frame (as the model) and, with the position
    head, ``pos (B, 22, 3)`` of the window's last frame only. Evaluates the same submodules
    with the same parameters as :class:`mmar.models.mem_mlp.MemMLP` (``train=False``); the
    parity tests of ``tests/test_export_tflite.py`` compare it with the model itself.
    """
    import flax.linen as nn

    from mmar.models.agrol_mlp import MLPBlock
    from mmar.models.mem_mlp import MemoryBlock

    cfg = model.config
    if cfg.use_pos_head and cfg.head_depth < 1:  # pragma: no cover - MemMLPConfig forbids it
        raise ConfigError("Mem-MLP export needs head_depth >= 1")
    p = variables["params"]
    W, J = cfg.window, cfg.num_joints
    batch = window.shape[:-2]
    feats = {}
    for layer in cfg.active_memory_layers():
        code = memory["code"] if cfg.use_code else None
        feats[layer] = MemoryBlock(cfg.dim, cfg.use_code, cfg.alpha_per_channel, cfg.eval_alpha).apply(
            {"params": p[f"memory{layer}"]}, memory["sparse"], memory["rot6d"].reshape(batch + (W, J * 6)),
            code, None, False)
    x = nn.Dense(cfg.dim).apply({"params": p["input_fc"]}, window)
    pending = None
    for i in range(cfg.depth):
        x = MLPBlock(cfg.dim, W).apply({"params": p[f"block{i}"]}, x, pending)
        pending = feats.get(i + 1)

    def head_blocks(hp, n):
        h = x
        for i in range(n):
            h = MLPBlock(cfg.dim, W).apply({"params": hp[f"block{i}"]}, h, pending if i == 0 else None)
        return h

    rp = p["rot_head"]
    rot = nn.Dense(J * 6).apply({"params": rp["out_fc"]}, head_blocks(rp, cfg.head_depth))
    out = {"rot6d": rot.reshape(batch + (W, J, 6))}
    if cfg.use_pos_head:
        pp = p["pos_head"]
        last = cfg.head_depth - 1
        h = _mlp_block_last_frame(pp[f"block{last}"], head_blocks(pp, last), pending if last == 0 else None)
        rel = nn.Dense(J * 3).apply({"params": pp["out_fc"]}, h).reshape(batch + (J, 3))
        out["pos"] = rel + window[..., -1, 36:39][..., None, :]
    return out


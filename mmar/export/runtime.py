"""Reference streaming runtime for exported TFLite models.

Depends only on numpy and ``ai_edge_litert`` (no JAX, no TensorFlow), so it runs on the
device side exactly as it would in an application.

Tensor naming: models written by :func:`mmar.export.tflite.export_tflite` carry one
signature (``serving_default``) whose input names are the keys of ``input_specs`` and whose
output names are the keys of the dict the exported function returns. :class:`TFLiteModel`
maps by those signature names. A model without a signature (e.g. converted elsewhere) is
mapped by order instead: inputs in the interpreter's input order, outputs returned as
``output_0, output_1, ...`` -- the converter may mangle or reorder tensor names, so prefer
models with a signature.

Streaming models (:func:`mmar.export.tflite.mem_mlp_stream_fn`) take the current frame plus
the state tensors as inputs and return the pose plus the next state; the output carrying the
next value of state input ``name`` is ``next_<name>``. :class:`StreamRuntime` feeds them back.
"""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np


def _interpreter(model):
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, (bytes, bytearray)):
        it = Interpreter(model_content=bytes(model), num_threads=1)
    else:
        it = Interpreter(model_path=os.fspath(model), num_threads=1)
    it.allocate_tensors()
    return it


class TFLiteModel:
    """A loaded TFLite model called with and returning dicts of numpy arrays."""

    def __init__(self, model):
        self.interpreter = _interpreter(model)
        sigs = self.interpreter.get_signature_list()
        self._runner = None
        if sigs:
            key = "serving_default" if "serving_default" in sigs else next(iter(sigs))
            self._runner = self.interpreter.get_signature_runner(key)
            self.input_names = list(sigs[key]["inputs"])
            self.output_names = list(sigs[key]["outputs"])
            details = self._runner.get_input_details()
            self.input_details = {n: (tuple(details[n]["shape"]), details[n]["dtype"]) for n in self.input_names}
        else:
            ins = self.interpreter.get_input_details()
            self.input_names = [d["name"] for d in ins]
            self.output_names = [f"output_{i}" for i in range(len(self.interpreter.get_output_details()))]
            self.input_details = {d["name"]: (tuple(d["shape"]), d["dtype"]) for d in ins}

    def __call__(self, inputs: Mapping[str, np.ndarray] | None = None, **kw) -> dict[str, np.ndarray]:
        inputs = dict(inputs or {}, **kw)
        missing = [n for n in self.input_names if n not in inputs]
        extra = [n for n in inputs if n not in self.input_names]
        if missing or extra:
            raise KeyError(f"TFLite inputs: expected {self.input_names}, missing {missing}, unexpected {extra}")
        feed = {}
        for n in self.input_names:
            shape, dtype = self.input_details[n]
            a = np.asarray(inputs[n], dtype=dtype)
            if a.shape != shape:
                raise ValueError(f"TFLite input {n!r}: expected shape {shape}, got {a.shape}")
            feed[n] = a
        if self._runner is not None:
            out = self._runner(**feed)
            return {k: np.asarray(v) for k, v in out.items()}
        it = self.interpreter
        for d, n in zip(it.get_input_details(), self.input_names):
            it.set_tensor(d["index"], feed[n])
        it.invoke()
        return {f"output_{i}": np.array(it.get_tensor(d["index"])) for i, d in enumerate(it.get_output_details())}


class StreamRuntime:
    """Frame-by-frame driver of an exported streaming model.

    ``state_spec`` maps each state input name to ``(shape, dtype)`` (the initial value is
    zeros, as in :func:`mmar.models.mem_mlp.init_stream_state`); the output ``next_<name>``
    replaces it after every step. ``frame_input`` names the per-frame input and
    ``pose_output`` the pose output.
    """

    def __init__(self, tflite_path, state_spec: Mapping[str, tuple], frame_input: str = "sparse_frame",
                 pose_output: str = "pose"):
        self.model = TFLiteModel(tflite_path)
        self.state_spec = {k: (tuple(s), np.dtype(d)) for k, (s, d) in state_spec.items()}
        self.frame_input = frame_input
        self.pose_output = pose_output
        expected = set(self.state_spec) | {frame_input}
        if set(self.model.input_names) != expected:
            raise KeyError(f"StreamRuntime: model inputs {self.model.input_names} != state + frame {sorted(expected)}")
        for k in self.state_spec:
            if f"next_{k}" not in self.model.output_names:
                raise KeyError(f"StreamRuntime: model has no output next_{k} (outputs {self.model.output_names})")
        self.frame_shape = self.model.input_details[frame_input][0]
        self.reset()

    def reset(self) -> None:
        self.state = {k: np.zeros(s, d) for k, (s, d) in self.state_spec.items()}

    def step(self, sparse_frame: np.ndarray) -> np.ndarray:
        """One frame ``(54,)`` -> this frame's pose ``(22, 6)``; updates the carried state."""
        frame = np.asarray(sparse_frame, np.float32).reshape(self.frame_shape)
        out = self.model({self.frame_input: frame, **self.state})
        self.state = {k: out[f"next_{k}"] for k in self.state_spec}
        return out[self.pose_output][0]

    def run_clip(self, sparse: np.ndarray) -> np.ndarray:
        """Stream a whole clip ``(T, 54)`` from a fresh state -> ``(T, 22, 6)``."""
        self.reset()
        return np.stack([self.step(f) for f in np.asarray(sparse, np.float32)])

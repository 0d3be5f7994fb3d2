"""Reference runtime for exported TFLite models: BVH file in, full-body poses out.

Depends only on numpy and ``ai_edge_litert`` (no JAX, no TensorFlow), so it runs on the
device side exactly as it would in an application; ``tests/test_export_runtime.py`` runs it
in a fresh interpreter where importing JAX, TensorFlow or Flax fails. (``tqdm`` draws a
progress bar when it is installed; nothing else is needed.)

Command line::

    python -m mmar.export.runtime MODEL.tflite INPUT.bvh --out pred.npz [--scale 0.01] [--gt-out gt.npz]

reads the model card ``MODEL.json`` written beside the model by ``mmar export`` (mode, fps,
window, state tensors), parses the BVH, retargets it to SMPL-22 (joint map guessed from the
joint names, as ``mmar convert`` does), resamples it to the model's frame rate, computes the
54-number sparse input as training does, streams it frame by frame through the model and
writes the predictions in the ``mmar convert`` npz layout (``<clip>/joints``, ``rot6d``,
``root``, ``sparse``, ``fps``, ``offsets``), so ``mmar metrics --pred pred.npz --gt gt.npz``
and ``mmar render pred.npz`` read it. ``--gt-out`` writes the input clip itself (same frame
rate, same layout) for ``mmar metrics``.

The input pipeline is the numpy counterpart of training's (``mmar.data.benchmark``): numpy
BVH parser and retarget (:mod:`mmar.data.bvh`, the code of the import workers), slerp
resampling (:meth:`mmar.data.bvh.BvhData.resample`, the time grid of
:func:`mmar.data.clip.resample_clips`), float64 forward kinematics and the sparse input
(:func:`mmar.geometry_np.smpl22_arrays`). Training computes the same quantities in float32
JAX; the two agree to float32 rounding. The body is placed as in evaluation
(``docs/design.md``, :func:`mmar.geometry_np.body_in_world`): FK of the predicted local
rotations with the clip's own offsets, root at the origin, then translated so the predicted
head meets the tracked head.

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
Window models (:func:`mmar.export.tflite.agrol_window_fn`) take the last ``W`` frames;
:class:`WindowRuntime` keeps them, edge-padded with the first frame at the start of a clip
(as :func:`mmar.models.agrol_mlp.predict_online`).

Errors: a missing or malformed BVH raises :class:`mmar.errors.DataFormatError` naming the
file (and line); a missing model, a missing or inconsistent model card, or a file that is
not a pose model raises :class:`mmar.errors.CheckpointError`. The command line prints them
on one line and exits with status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from mmar.errors import CheckpointError, ConfigError, DataFormatError, MmarError
from mmar.geometry_np import body_in_world, smpl22_arrays

CARD_FORMAT = "mmar-tflite-card/1"


def _interpreter(model):
    from ai_edge_litert.interpreter import Interpreter

    where = "<model bytes>" if isinstance(model, (bytes, bytearray)) else os.fspath(model)
    if where != "<model bytes>" and not os.path.isfile(where):
        raise CheckpointError(f"{where}: no such model file")
    try:
        if isinstance(model, (bytes, bytearray)):
            it = Interpreter(model_content=bytes(model), num_threads=1)
        else:
            it = Interpreter(model_path=where, num_threads=1)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f"{where}: not a loadable TFLite model ({str(e).strip().splitlines()[0]})") from e
    return it


class TFLiteModel:
    """A loaded TFLite model called with and returning dicts of numpy arrays (one thread)."""

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
        self.model = tflite_path if isinstance(tflite_path, TFLiteModel) else TFLiteModel(tflite_path)
        self.state_spec = {k: (tuple(s), np.dtype(d)) for k, (s, d) in state_spec.items()}
        self.frame_input = frame_input
        self.pose_output = pose_output
        expected = set(self.state_spec) | {frame_input}
        if set(self.model.input_names) != expected:
            raise KeyError(f"StreamRuntime: model inputs {self.model.input_names} != state + frame {sorted(expected)}")
        for k in self.state_spec:
            if f"next_{k}" not in self.model.output_names:
                raise KeyError(f"StreamRuntime: model has no output next_{k} (outputs {self.model.output_names})")
        if pose_output not in self.model.output_names:
            raise KeyError(f"StreamRuntime: model has no output {pose_output} (outputs {self.model.output_names})")
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


class WindowRuntime:
    """Frame-by-frame driver of an exported window model (``sparse (1, W, 54) -> rot6d``).

    Keeps the last ``W`` frames; the first frame of a clip fills the whole window (edge
    padding, :func:`mmar.models.agrol_mlp.pad_clip_start`), so frame ``t``'s pose comes from
    frames ``t-W+1 .. t`` as in :func:`mmar.models.agrol_mlp.predict_online`.
    """

    def __init__(self, tflite_path, window_input: str = "sparse", pose_output: str = "rot6d"):
        self.model = tflite_path if isinstance(tflite_path, TFLiteModel) else TFLiteModel(tflite_path)
        if self.model.input_names != [window_input]:
            raise KeyError(f"WindowRuntime: model inputs {self.model.input_names} != [{window_input!r}]")
        if pose_output not in self.model.output_names:
            raise KeyError(f"WindowRuntime: model has no output {pose_output} (outputs {self.model.output_names})")
        self.window_input, self.pose_output = window_input, pose_output
        self.window_shape = self.model.input_details[window_input][0]
        if len(self.window_shape) != 3 or self.window_shape[0] != 1:
            raise KeyError(f"WindowRuntime: input {window_input!r} must be (1, W, D), got {self.window_shape}")
        self.reset()

    def reset(self) -> None:
        self.window = np.zeros(self.window_shape, np.float32)
        self.t = 0

    def step(self, sparse_frame: np.ndarray) -> np.ndarray:
        """One frame ``(54,)`` -> this frame's pose ``(22, 6)``."""
        frame = np.asarray(sparse_frame, np.float32).reshape(self.window_shape[2])
        if self.t == 0:
            self.window[...] = frame
        else:
            self.window[0, :-1] = self.window[0, 1:]
            self.window[0, -1] = frame
        self.t += 1
        return self.model({self.window_input: self.window})[self.pose_output][0]

    def run_clip(self, sparse: np.ndarray) -> np.ndarray:
        """A whole clip ``(T, 54)`` from a fresh window -> ``(T, 22, 6)``."""
        self.reset()
        return np.stack([self.step(f) for f in np.asarray(sparse, np.float32)])


# --------------------------------------------------------------------------
# model card and pose models
# --------------------------------------------------------------------------

def card_path(model_path) -> Path:
    """The model card beside ``model_path``: same name, ``.json``."""
    return Path(model_path).with_suffix(".json")


def load_card(model_path) -> dict:
    """Read and check the model card ``mmar export`` wrote beside ``model_path``."""
    p = card_path(model_path)
    if not p.is_file():
        raise CheckpointError(f"{model_path}: no model card {p.name} beside it (write both with mmar export)")
    try:
        card = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{p}: not a readable JSON model card ({e})") from e
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        got = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise CheckpointError(f"{p}: not an mmar model card (format {got!r}, expected {CARD_FORMAT!r})")
    for key in ("mode", "fps", "window", "inputs"):
        if key not in card:
            raise CheckpointError(f"{p}: model card has no {key!r} entry")
    if card["mode"] not in ("window", "stream"):
        raise CheckpointError(f"{p}: unknown mode {card['mode']!r} (window, stream)")
    if card["mode"] == "stream" and not card.get("state"):
        raise CheckpointError(f"{p}: a stream model card must list its state tensors")
    return card


def load_pose_model(model_path) -> tuple[StreamRuntime | WindowRuntime, dict]:
    """The frame-by-frame runtime of an exported pose model and its card.

    Checks that the model's tensors are the ones its card lists (names, shapes), so a card
    beside the wrong ``.tflite`` is reported instead of producing garbage.
    """
    if not os.path.isfile(model_path):
        raise CheckpointError(f"{model_path}: no such model file")
    card = load_card(model_path)
    model = TFLiteModel(model_path)
    want = {k: tuple(v["shape"]) for k, v in card["inputs"].items()}
    have = {k: tuple(int(d) for d in s) for k, (s, _) in model.input_details.items()}
    if want != have:
        raise CheckpointError(f"{model_path}: the model's inputs {have} are not those of its card "
                              f"{card_path(model_path).name} {want}")
    try:
        if card["mode"] == "window":
            rt = WindowRuntime(model)
        else:
            state = {k: (v["shape"], v["dtype"]) for k, v in card["state"].items()}
            rt = StreamRuntime(model, state)
    except KeyError as e:
        raise CheckpointError(f"{model_path}: not a pose model of mode {card['mode']!r} ({e.args[0]})") from e
    return rt, card


# --------------------------------------------------------------------------
# BVH -> sparse input -> poses
# --------------------------------------------------------------------------

def clip_name(path) -> str:
    """The clip name ``mmar convert`` gives a file: its name without the extension."""
    base = Path(path).name
    return base.rsplit(".", 1)[0] if "." in base else base


def bvh_arrays(path, fps: float | None = None, scale: float = 0.01, joint_map=None) -> dict[str, np.ndarray]:
    """A BVH file as SMPL-22 arrays in the ``mmar convert`` layout (numpy only).

    Parse (:func:`mmar.data.bvh.parse_bvh_arrays`, lengths times ``scale``: 0.01 for
    centimetres), retarget to SMPL-22 with ``joint_map`` (a name of
    :data:`mmar.data.arrays.JOINT_MAPS` or a 22-entry map; default: guessed from the joint
    names), resample to ``fps`` (slerp; ``None`` keeps the file's rate), then forward
    kinematics and the sparse input (:func:`mmar.geometry_np.smpl22_arrays`).
    Raises :class:`DataFormatError` naming the file.
    """
    from mmar.data.arrays import JOINT_MAPS, guess_joint_map
    from mmar.data.bvh import parse_bvh_arrays
    from mmar.skeleton import SMPL22_NAMES, SMPL22_PARENTS

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise DataFormatError("no such file", p)
    try:
        with open(p, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        raise DataFormatError(f"cannot read file ({e.strerror})", p) from e
    data = parse_bvh_arrays(text, p, scale)
    if joint_map is None:
        try:
            joint_map = guess_joint_map(data.names)
        except KeyError as e:
            raise DataFormatError(f"{e.args[0]} (see mmar.data.arrays.register_joint_map)", p) from None
    if isinstance(joint_map, str):
        if joint_map not in JOINT_MAPS:
            raise ConfigError(f"unknown joint map {joint_map!r} (registered: {', '.join(JOINT_MAPS)})")
        mapping = JOINT_MAPS[joint_map]
    else:
        mapping = tuple(joint_map)
    try:
        data = data.retarget(mapping, SMPL22_NAMES, SMPL22_PARENTS)
    except (KeyError, ValueError) as e:
        raise DataFormatError(f"cannot retarget to SMPL-22 ({e.args[0]})", p) from None
    if fps is not None:
        data = data.resample(float(fps))
    return smpl22_arrays(data.local_rot, data.offsets, data.root_pos, data.fps)


def predict_arrays(runtime: StreamRuntime | WindowRuntime, arrays: Mapping[str, np.ndarray],
                   progress: bool = False) -> tuple[dict[str, np.ndarray], float]:
    """Stream one clip's ``sparse (T, 54)`` frame by frame through ``runtime`` (from a fresh
    state).

    Returns ``(pred, ms_per_frame)``: ``pred`` in the ``mmar convert`` layout -- ``rot6d
    (T,22,6)``, ``joints (T,22,3)`` placed by the tracked head, ``root`` (= ``joints[:, 0]``)
    and the input's ``sparse``, ``fps`` and ``offsets`` -- and the mean wall time of one
    model step in milliseconds.
    """
    sparse = np.asarray(arrays["sparse"], np.float32)
    frames = range(len(sparse))
    bar = None
    if progress:
        try:
            from tqdm import tqdm
        except ImportError:  # optional: no bar without tqdm
            tqdm = None
        if tqdm is not None:
            bar = frames = tqdm(frames, desc="streaming", unit="frame", leave=False)
    runtime.reset()
    poses = np.empty((len(sparse), 22, 6), np.float32)
    t0 = time.perf_counter()
    for t in frames:
        poses[t] = runtime.step(sparse[t])
    elapsed = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    joints = body_in_world(poses, arrays["offsets"], sparse)
    pred = {"rot6d": poses, "joints": joints, "root": joints[:, 0].copy(), "sparse": sparse,
            "fps": np.asarray(arrays["fps"], np.float32), "offsets": np.asarray(arrays["offsets"], np.float32)}
    return pred, 1e3 * elapsed / max(len(sparse), 1)


@dataclasses.dataclass
class BvhPrediction:
    """What :func:`predict_bvh` returns: ``pred`` and ``gt`` are ``{name: arrays}`` in the
    ``mmar convert`` layout at the model's frame rate (``gt`` is the retargeted, resampled
    input clip), ``card`` the model card, ``ms_per_frame`` the mean model step time."""

    name: str
    pred: dict[str, dict[str, np.ndarray]]
    gt: dict[str, dict[str, np.ndarray]]
    card: dict
    ms_per_frame: float


def predict_bvh(model_path, bvh_path, scale: float = 0.01, joint_map=None, progress: bool = False) -> BvhPrediction:
    """Run an exported pose model over a BVH file (see :func:`bvh_arrays` and
    :func:`predict_arrays`); the clip is resampled to the frame rate of the model's card."""
    runtime, card = load_pose_model(model_path)  # model problems first: no BVH work wasted
    arrays = bvh_arrays(bvh_path, fps=float(card["fps"]), scale=scale, joint_map=joint_map)
    name = clip_name(bvh_path)
    pred, ms = predict_arrays(runtime, arrays, progress=progress)
    return BvhPrediction(name, {name: pred}, {name: arrays}, card, ms)


def main(argv: list[str] | None = None) -> int:
    """``python -m mmar.export.runtime MODEL.tflite INPUT.bvh --out pred.npz``."""
    from mmar.data.arrays import save_arrays

    ap = argparse.ArgumentParser(prog="python -m mmar.export.runtime",
                                 description="Stream a BVH file through an exported pose model (numpy + LiteRT only).")
    ap.add_argument("model", help="MODEL.tflite written by mmar export (its card MODEL.json beside it)")
    ap.add_argument("bvh", help="input BVH file")
    ap.add_argument("--out", required=True, help="predictions, npz in the mmar convert layout")
    ap.add_argument("--gt-out", default=None, help="also write the input clip (SMPL-22, model fps) here")
    ap.add_argument("--scale", type=float, default=0.01, help="BVH length unit in metres (0.01 = cm)")
    ap.add_argument("--joint-map", default=None, help="joint map name (default: guessed from the joint names)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        res = predict_bvh(args.model, args.bvh, scale=args.scale, joint_map=args.joint_map,
                          progress=not args.no_progress)
        save_arrays(args.out, res.pred)
        if args.gt_out:
            save_arrays(args.gt_out, res.gt)
    except MmarError as e:
        print(f"mmar.export.runtime: error: {e}", file=sys.stderr)
        return 2
    p = res.pred[res.name]
    print(json.dumps({"out": args.out, "clip": res.name, "frames": int(len(p["rot6d"])), "fps": float(p["fps"]),
                      "mode": res.card["mode"], "quantize": res.card.get("quantize"),
                      "ms_per_frame": round(res.ms_per_frame, 4)}))
    return 0

if __name__ == "__main__":
    sys.exit(main())

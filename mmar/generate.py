"""Text to motion: sample a trained text-to-motion run and write the motions (``mmar generate``).

The command line (:func:`mmar.cli.cmd_generate`) is a thin layer over four steps:

1. :func:`generate_motions` checks the captions and the requested duration, then calls the
   run's task ``generate`` (a task with ``is_text_to_motion = True``, e.g. MoScale) once for all
   captions (``num`` samples each), which batches them by ``batch_size``;
2. :func:`motions_to_arrays` turns the denormalised HumanML3D features into joint positions
   with :func:`mmar.data.hml_features.recover_from_ric` and lays them out as in ``mmar
   convert``: ``<name>/joints (T, 22, 3)`` metres, Y up (KIT: 21 joints), ``<name>/root``,
   ``<name>/fps``, plus ``<name>/features (T, D)`` and ``<name>/caption`` (a 0-d unicode array,
   read without pickle); SMPL-22 motions also get ``rot6d``, ``sparse`` and ``offsets`` of the
   skeleton step 3 fits (the BVH's rotations), so ``mmar metrics`` reads the file too;
3. :func:`joints_to_bvh_clip` fits an SMPL-22 skeleton with constant bone lengths and local
   rotations to the positions (swing inverse kinematics, see its docstring), so a generated
   motion can be written as BVH and opened in Blender;
4. :func:`save_generated` writes the npz, optionally a GIF (or MP4) of the first
   :data:`GIF_PANELS` motions side by side and the BVH file(s).

Lengths: motions are ``min_frames`` to ``max_frames`` frames long, a multiple of
``frame_multiple`` (the task's attributes; 40, 196 and 4 when it has none, i.e. 2 to 9.8 s at
20 fps). ``seconds`` is turned into frames by :func:`seconds_to_frames`; with neither seconds nor
lengths the task's length estimator picks each length.

Reproducibility: the same run, captions, options and ``seed`` give the same motions. The
``num`` samples of all captions go to the task in one call, sample-major (every caption's
sample 0, then every caption's sample 1, ...), and come back caption-major.

Motion names (the npz clip names, the GIF titles' prefix) are ``<slug>_<k>``: the caption in
lower-case ASCII letters, digits and ``_`` (at most :data:`SLUG_CHARS` characters, ``motion``
when nothing is left) and ``k`` counting the motions with that slug (``0 .. num-1`` for the
samples of one caption).
"""
from __future__ import annotations

import math
import numbers
import os
import re
import unicodedata
from typing import Any, Sequence

import numpy as np

from mmar import geometry_np as gnp
from mmar.errors import CheckpointError, ConfigError, DataFormatError, MmarError, OutputError, ShapeError
from mmar.models.generated import GeneratedMotions
from mmar.skeleton import NUM_JOINTS, SMPL22_PARENTS

__all__ = [
    "MIN_FRAMES", "MAX_FRAMES", "FRAME_MULTIPLE", "GIF_PANELS",
    "text_to_motion_task", "use_decoder", "frame_limits", "check_texts", "read_texts", "check_seconds",
    "seconds_to_frames",
    "parse_steps", "check_options", "generate_motions", "motion_names", "motions_to_arrays", "joints_to_bvh_clip",
    "write_bvh_atomic", "bvh_paths", "check_outputs", "save_generated",
]

#: defaults of a task's ``min_frames`` / ``max_frames`` / ``frame_multiple`` (HumanML3D: 2 to 9.8 s at 20 fps)
MIN_FRAMES = 40
MAX_FRAMES = 196
FRAME_MULTIPLE = 4
#: the GIF shows at most this many motions side by side (the first ones)
GIF_PANELS = 4
#: longest caption part of a motion name
SLUG_CHARS = 48
_TITLE_CHARS = 60
_ANIMATION_EXTS = (".gif", ".mp4", ".m4v", ".mov")


# --------------------------------------------------------------------------
# checks of the request
# --------------------------------------------------------------------------

def _task_name(run) -> str:
    name = getattr(getattr(run, "config", None), "task", None)
    return str(name) if name else type(getattr(run, "task", None)).__name__


def text_to_motion_task(run):
    """The task of ``run`` when it generates motions from text, else :class:`CheckpointError`
    naming the run and its task."""
    task = getattr(run, "task", None)
    if not getattr(task, "is_text_to_motion", False) or not callable(getattr(task, "generate", None)):
        where = getattr(run, "workdir", None) or getattr(run, "checkpoint", None) or "the run"
        raise CheckpointError(f"{where}: task {_task_name(run)!r} is not a text-to-motion model; generating "
                              f"motions from text needs a run of a text-to-motion task (e.g. moscale)")
    return task


def use_decoder(run, path) -> dict:
    """``run.variables`` decoding with the decoder of the tokenizer run at ``path``
    (``with_decoder`` of the run's task; :class:`ConfigError` for a task without one)."""
    task = text_to_motion_task(run)
    if not callable(getattr(task, "with_decoder", None)):
        raise ConfigError(f"task {_task_name(run)!r} cannot swap its tokenizer's decoder")
    return task.with_decoder(run.variables, path)


def frame_limits(task) -> tuple[int, int, int, float]:
    """``(min_frames, max_frames, frame_multiple, fps)`` of a text-to-motion task (defaults
    :data:`MIN_FRAMES`, :data:`MAX_FRAMES`, :data:`FRAME_MULTIPLE`, 20 fps)."""
    lo = int(getattr(task, "min_frames", MIN_FRAMES))
    hi = int(getattr(task, "max_frames", MAX_FRAMES))
    mult = int(getattr(task, "frame_multiple", FRAME_MULTIPLE))
    fps = float(getattr(task, "fps", 20.0))
    return lo, hi, mult, fps


def _joints_of_task(task) -> int | None:
    spec = getattr(task, "spec", None)
    n = getattr(spec, "num_joints", None)
    return int(n) if n is not None else None


def check_texts(texts: Sequence[str]) -> list[str]:
    """The captions stripped of surrounding white space; :class:`ConfigError` for no caption,
    a caption that is not a string, or one that is blank (naming it by its 1-based number)."""
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not texts:
        raise ConfigError("no caption given: give at least one text")
    out = []
    for i, t in enumerate(texts, 1):
        if not isinstance(t, str):
            raise ConfigError(f"caption {i} of {len(texts)} is not text: {t!r}")
        t = t.strip()
        if not t:
            raise ConfigError(f"caption {i} of {len(texts)} is empty: a motion needs a description")
        out.append(t)
    return out


def read_texts(path: str) -> list[str]:
    """Captions of a text file, one per line (UTF-8; white space around a line is dropped and
    blank lines are skipped). Raises :class:`DataFormatError` naming the file when it cannot be
    read, is not UTF-8 text, or holds no caption."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataFormatError("file not found", p) from None
    except IsADirectoryError:
        raise DataFormatError("is a directory; --texts needs a text file with one caption per line", p) from None
    except OSError as e:
        raise DataFormatError(f"cannot read file ({e.strerror or e})", p) from e
    if b"\x00" in raw:
        raise DataFormatError("not a text file (it has NUL bytes); give one caption per line in UTF-8", p)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataFormatError("not UTF-8 text", p, line) from None
    texts = [line.strip() for line in text.splitlines()]
    texts = [t for t in texts if t]
    if not texts:
        raise DataFormatError("no caption in the file (one caption per line; blank lines are skipped)", p)
    return texts


def check_seconds(seconds: Any) -> float:
    """``seconds`` as a positive finite float, else :class:`ConfigError` (the range of the
    model is checked by :func:`seconds_to_frames`)."""
    if isinstance(seconds, bool):
        raise ConfigError(f"seconds: expected a duration in seconds, got {seconds!r}")
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        raise ConfigError(f"seconds: expected a duration in seconds, got {seconds!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise ConfigError(f"seconds must be a positive, finite duration, got {seconds!r}")
    return s


def _range_text(lo: int, hi: int, mult: int, fps: float) -> str:
    return (f"this model makes motions of {lo} to {hi} frames (a multiple of {mult}), {lo / fps:g} to "
            f"{hi / fps:g} s at {fps:g} fps")


def seconds_to_frames(seconds: float, fps: float = 20.0, min_frames: int = MIN_FRAMES, max_frames: int = MAX_FRAMES,
                      multiple: int = FRAME_MULTIPLE) -> int:
    """Frames of a motion of ``seconds``: ``round(seconds * fps)`` rounded down to a multiple of
    ``multiple``; :class:`ConfigError` unless ``seconds`` is positive and finite and the frames
    are within ``[min_frames, max_frames]`` (the message gives the range in seconds)."""
    s = check_seconds(seconds)
    x = s * float(fps)
    if not math.isfinite(x) or x > max_frames + multiple:
        raise ConfigError(f"seconds {s:g} is too long: {_range_text(min_frames, max_frames, multiple, fps)}")
    frames = int(round(x)) // multiple * multiple
    if not min_frames <= frames <= max_frames:
        raise ConfigError(f"seconds {s:g} gives {frames} frames: {_range_text(min_frames, max_frames, multiple, fps)}")
    return frames


def _check_lengths(lengths, n: int, lo: int, hi: int, mult: int, fps: float) -> np.ndarray:
    arr = np.asarray(lengths)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.shape != (n,):
        raise ConfigError(f"lengths: one length per caption ({n}) or one for all, got shape {arr.shape}")
    out = np.empty(n, np.int32)
    for i, v in enumerate(arr.tolist()):
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and float(v).is_integer()
        if not ok or not lo <= int(v) <= hi or int(v) % mult:
            raise ConfigError(f"length {v!r} of caption {i + 1} is not usable: {_range_text(lo, hi, mult, fps)}")
        out[i] = int(v)
    return out


def _positive_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < 1:
        raise ConfigError(f"{what} must be a positive whole number, got {v!r}")
    return int(v)


def parse_steps(steps) -> int | tuple[int, ...] | None:
    """Sampling steps: ``None``, a positive int, or one positive int per scale given as a
    sequence or as text (``"10"``, ``"10,8,6"``); :class:`ConfigError` otherwise."""
    if steps is None:
        return None
    if isinstance(steps, str):
        parts = [s.strip() for s in steps.split(",")]
        try:
            vals = [int(s) for s in parts]
        except ValueError:
            raise ConfigError(f"steps: expected a whole number or a comma-separated list of them, "
                              f"got {steps!r}") from None
        return _parse_step_values(vals, steps)
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool):
        return _parse_step_values([steps], steps)
    if isinstance(steps, (list, tuple)):
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in steps):
            raise ConfigError(f"steps: whole numbers expected, got {steps!r}")
        out = _parse_step_values(list(steps), steps)
        return out if isinstance(out, tuple) else (out,)
    raise ConfigError(f"steps: expected a whole number or a list of them, got {steps!r}")


def _parse_step_values(vals: list, given):
    if not vals or any(int(v) < 1 for v in vals):
        raise ConfigError(f"steps must be positive, got {given!r}")
    vals = [int(v) for v in vals]
    return vals[0] if len(vals) == 1 and not isinstance(given, (list, tuple)) else tuple(vals)


def _finite(v, what: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: expected a number, got {v!r}") from None
    bad = not math.isfinite(x) or (lo is not None and (x <= lo if lo_open else x < lo)) or (hi is not None and x > hi)
    if bad:
        rng = "" if lo is None else f" ({'>' if lo_open else '>='} {lo:g}"
        rng += "" if lo is None else ("" if hi is None else f", <= {hi:g}") + ")"
        raise ConfigError(f"{what} must be a finite number{rng}, got {v!r}")
    return x


# --------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------

def check_options(*, seconds=None, lengths=None, num=1, seed=0, steps=None, guidance=None, temperature=None,
                  top_p=None, batch_size=32) -> dict[str, Any]:
    """The options of :func:`generate_motions` checked without the model (what needs the model's
    frame range is checked there): ``num`` and ``batch_size`` positive ints, ``seed`` an int,
    ``seconds`` positive and finite and not with ``lengths``, ``steps`` by :func:`parse_steps`,
    ``guidance`` finite, ``temperature > 0``, ``0 < top_p <= 1``. Returns them normalised;
    raises :class:`ConfigError`."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ConfigError(f"seed must be a whole number, got {seed!r}")
    if seconds is not None and lengths is not None:
        raise ConfigError("give the duration either in seconds or as lengths in frames, not both")
    return {
        "seconds": None if seconds is None else check_seconds(seconds),
        "lengths": lengths,
        "num": _positive_int(num, "num"),
        "seed": int(seed),
        "steps": parse_steps(steps),
        "guidance": _finite(guidance, "guidance"),
        "temperature": _finite(temperature, "temperature", 0.0, lo_open=True),
        "top_p": _finite(top_p, "top_p", 0.0, 1.0, lo_open=True),
        "batch_size": _positive_int(batch_size, "batch_size"),
    }


def generate_motions(run, texts: Sequence[str], *, seconds: float | None = None, lengths=None, num: int = 1,
                     seed: int = 0, steps=None, guidance: float | None = None, temperature: float | None = None,
                     top_p: float | None = None, batch_size: int = 32) -> GeneratedMotions:
    """Sample ``num`` motions per caption with the text-to-motion run ``run`` (a
    :class:`mmar.run.Run` or anything with ``task`` and ``variables``).

    Args:
      texts: the captions (white space around each is dropped; a blank one is an error).
      seconds: duration of every motion, turned into frames by :func:`seconds_to_frames`.
      lengths: frames per caption (or one int for all): multiples of the task's
        ``frame_multiple`` within ``[min_frames, max_frames]``. Not with ``seconds``; with
        neither the task's length estimator picks each length.
      num: samples per caption.
      seed: the random seed; the same request and seed give the same motions.
      steps, guidance, temperature, top_p: sampling options passed to the task when given
        (``steps``: an int or one per scale, see :func:`parse_steps`).
      batch_size: motions sampled at once.

    Returns:
      :class:`GeneratedMotions` with ``len(texts) * num`` motions, caption-major: the ``num``
      samples of caption 0, then those of caption 1, ...

    Raises:
      CheckpointError: the run's task is not a text-to-motion model.
      ConfigError: a blank caption, a duration or length out of the model's range (negative,
        zero, NaN, too short or too long), bad sampling options.
    """
    task = text_to_motion_task(run)
    texts = check_texts(texts)
    opts = check_options(seconds=seconds, lengths=lengths, num=num, seed=seed, steps=steps, guidance=guidance,
                         temperature=temperature, top_p=top_p, batch_size=batch_size)
    num, seed, batch_size = opts.pop("num"), opts.pop("seed"), opts.pop("batch_size")
    lo, hi, mult, fps = frame_limits(task)
    per_text = None
    if seconds is not None:
        per_text = np.full(len(texts), seconds_to_frames(seconds, fps, lo, hi, mult), np.int32)
    elif lengths is not None:
        per_text = _check_lengths(lengths, len(texts), lo, hi, mult, fps)
    options = {k: v for k, v in opts.items() if v is not None and k not in ("seconds", "lengths")}
    n = len(texts)
    batch_texts = [t for _ in range(num) for t in texts]  # sample-major
    batch_lengths = None if per_text is None else np.tile(per_text, num)
    gen = task.generate(run.variables, batch_texts, batch_lengths, seed=int(seed), batch_size=batch_size, **options)
    if not isinstance(gen, GeneratedMotions) or len(gen) != len(batch_texts):
        got = len(gen) if isinstance(gen, GeneratedMotions) else type(gen).__name__
        raise MmarError(f"task {_task_name(run)!r} returned {got} motions for {len(batch_texts)} requested")
    order = np.array([k * n + i for i in range(n) for k in range(num)], np.int64)
    return GeneratedMotions(gen.features[order], gen.lengths[order], [gen.texts[int(o)] for o in order],
                            gen.fps, gen.kind, gen.seconds)


# --------------------------------------------------------------------------
# arrays of the convert layout
# --------------------------------------------------------------------------

def _slug(text: str) -> str:
    s = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii").lower()
    s = re.sub(r"[^a-z0-9]+", "_", s).strip("_")[:SLUG_CHARS].strip("_")
    return s or "motion"


def motion_names(texts: Sequence[str]) -> list[str]:
    """``<slug>_<k>`` per caption (see the module docstring); unique, never containing ``/``."""
    seen: dict[str, int] = {}
    out = []
    for t in texts:
        s = _slug(t)
        k = seen.get(s, 0)
        seen[s] = k + 1
        out.append(f"{s}_{k}")
    return out


def motions_to_arrays(gen: GeneratedMotions, names: Sequence[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """``{name: arrays}`` of the generated motions in the ``mmar convert`` layout.

    Per motion: ``joints (T, J, 3)`` float32 metres, Y up, SMPL-22 order (KIT-ML: its 21
    joints), ``root (T, 3)`` (joint 0), ``fps`` (0-d float32), ``features (T, D)`` (the
    denormalised HumanML3D / KIT features the joints come from) and ``caption`` (0-d unicode
    array: ``str(arrays["caption"])``). ``T`` is the motion's length; positions come from
    :func:`mmar.data.hml_features.recover_from_ric` (root on the floor trajectory of the
    features, starting at the origin). ``names`` default to :func:`motion_names` of the
    captions. Values are not checked for NaN here (:func:`save_generated` does).
    """
    from mmar.data.hml_features import get_spec, recover_from_ric

    try:
        spec = get_spec(gen.kind)
    except ValueError as e:
        raise ShapeError(f"generated motions: {e}") from None
    if gen.features.shape[-1] != spec.feature_dim:
        raise ShapeError(f"generated {spec.kind} motions need {spec.feature_dim} features per frame, "
                         f"got {gen.features.shape[-1]}")
    names = motion_names(gen.texts) if names is None else [str(n) for n in names]
    if len(names) != len(gen):
        raise ConfigError(f"{len(names)} names for {len(gen)} motions")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError("motion names must be unique, got " + ", ".join(dup))
    for nm in names:
        if not nm or "/" in nm:
            raise ConfigError(f"motion name {nm!r} must be non-empty and must not contain '/'")
    if len(gen) == 0:
        return {}
    T = gen.features.shape[1]
    for i, n in enumerate(gen.lengths.tolist()):
        if not 1 <= n <= T:
            raise ShapeError(f"motion {names[i]}: length {n} outside 1..{T} frames")
    joints = np.asarray(recover_from_ric(gen.features, spec.num_joints), np.float32)
    fps = np.asarray(gen.fps, np.float32)
    out = {}
    for i, nm in enumerate(names):
        n = int(gen.lengths[i])
        j = np.ascontiguousarray(joints[i, :n])
        out[nm] = {"joints": j, "root": j[:, 0].copy(), "fps": fps, "features": gen.motion(i).copy(),
                   "caption": np.asarray(str(gen.texts[i]))}
        if spec.num_joints == NUM_JOINTS and np.isfinite(j).all():
            out[nm].update(_fitted_rotations(j, float(gen.fps)))
    return out


def _fitted_rotations(joints: np.ndarray, fps: float) -> dict[str, np.ndarray]:
    """``rot6d (T, 22, 6)``, ``sparse (T, 54)`` and ``offsets (22, 3)`` of the skeleton fitted to
    ``joints`` (:func:`joints_to_bvh_clip`, the BVH's rotations), so ``mmar metrics`` reads a
    generated file like a converted one."""
    clip = joints_to_bvh_clip(joints, fps)
    a = gnp.smpl22_arrays(clip.local_rot, clip.skeleton.offsets, clip.root_pos, fps)
    return {k: a[k] for k in ("rot6d", "sparse", "offsets")}


# --------------------------------------------------------------------------
# BVH: an SMPL-22 skeleton fitted to joint positions
# --------------------------------------------------------------------------

#: rest direction (in the parent's frame) of the bone ending at each joint whose parent has one
#: child: legs down, spine and head up, feet forward (+Z), arms out sideways (left = +X): a
#: T-pose facing +Z. The bones leaving the pelvis and spine3 take their rest offsets from the data.
_REST_DIR = {
    4: (0, -1, 0), 5: (0, -1, 0), 6: (0, 1, 0), 7: (0, -1, 0), 8: (0, -1, 0), 9: (0, 1, 0),
    10: (0, 0, 1), 11: (0, 0, 1), 15: (0, 1, 0), 16: (1, 0, 0), 17: (-1, 0, 0), 18: (1, 0, 0),
    19: (-1, 0, 0), 20: (1, 0, 0), 21: (-1, 0, 0),
}
#: joints with several children: (primary child, left child, right child) giving their frame
_FRAME_JOINTS = {0: (3, 1, 2), 9: (12, 13, 14)}


def _fill(bad: np.ndarray, x: np.ndarray, default: np.ndarray) -> np.ndarray:
    """``x (T, ...)`` with each frame where ``bad`` replaced by the nearest good frame (``default``
    when no frame is good)."""
    if not bad.any():
        return x
    good = np.flatnonzero(~bad)
    if good.size == 0:
        return np.broadcast_to(default, x.shape).copy()
    idx = np.arange(len(x))
    pos = np.clip(np.searchsorted(good, idx), 0, good.size - 1)
    prev = good[np.clip(pos - 1, 0, good.size - 1)]
    nxt = good[pos]
    nearest = np.where(np.abs(idx - prev) <= np.abs(nxt - idx), prev, nxt)
    return x[nearest]


def _body_frame(origin: np.ndarray, p: np.ndarray, primary: int, left: int, right: int) -> np.ndarray:
    """World rotation ``(T, 3, 3)`` of a joint at ``origin (T, 3)``: columns ``x`` (to the left,
    the ``right -> left`` child vector made perpendicular to ``y``), ``y`` (towards the primary
    child), ``z = x cross y`` (forward). Degenerate frames take the nearest good frame."""
    up = p[:, primary] - origin
    lr = p[:, left] - p[:, right]
    n_up = np.linalg.norm(up, axis=-1, keepdims=True)
    y = up / np.maximum(n_up, 1e-12)
    x = lr - np.sum(lr * y, -1, keepdims=True) * y
    n_x = np.linalg.norm(x, axis=-1, keepdims=True)
    x = x / np.maximum(n_x, 1e-12)
    F = np.stack([x, y, np.cross(x, y)], -1)
    bad = (n_up[:, 0] < 1e-6) | (n_x[:, 0] < 1e-6 * np.maximum(np.linalg.norm(lr, axis=-1), 1e-6))
    return _fill(bad, F, np.eye(3))


def _swing(u: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The shortest rotations ``(T, 3, 3)`` taking direction ``u (3,)`` onto ``d (T, 3)``;
    frames where ``d`` has no length keep the previous good frame's rotation."""
    n = np.linalg.norm(d, axis=-1)
    bad = n < 1e-9
    q = gnp.quaternion_between(np.broadcast_to(np.asarray(u, np.float64), d.shape),
                               d / np.maximum(n, 1e-12)[:, None])
    return gnp.quaternion_to_matrix(_fill(bad, q, np.array([1.0, 0.0, 0.0, 0.0])))


def joints_to_bvh_clip(joints: np.ndarray, fps: float, name: str = "motion"):
    """An SMPL-22 :class:`~mmar.data.clip.Clip` whose forward kinematics reproduces ``joints
    (T, 22, 3)`` (metres, Y up, facing +Z at rest): constant bone lengths, root translation and
    local rotations, ready for :func:`mmar.data.bvh.write_bvh`.

    The skeleton's rest pose is a T-pose facing +Z (left = +X): legs down, spine and head up,
    feet forward, arms straight out sideways, each bone as long as its mean length over the
    motion; the pelvis' three bones (hips, spine) and spine3's (neck, collars) keep their
    median shape in the joint's own frame. Rotations (swing inverse kinematics from positions):

    * the pelvis and spine3 have several children, which fix their whole rotation: the frame
      built from the direction to the primary child (spine1 / neck, the frame's +Y) and the
      right-to-left vector of the hips / collars (made perpendicular, +X);
    * every other joint with one child gets the shortest rotation, relative to its parent,
      that turns the rest direction of its bone towards the observed child position (no twist
      about the bone); joints without children (head, wrists, feet) keep their parent's
      orientation.

    Bones are aimed from where forward kinematics put their start (not from the observed
    start), so for a rigid body (real motions, or features computed from them) FK gives back
    the input positions to float rounding, and for generated motions, whose bone lengths vary a
    little between frames, each joint is off by about its own bone's length difference rather
    than by the errors accumulated along its chain.

    Raises ShapeError for joints that are not ``(T >= 1, 22, 3)`` or not finite.
    """
    from mmar.data.clip import Clip, smpl22_skeleton

    p = np.asarray(joints, np.float64)
    if p.ndim != 3 or p.shape[1:] != (NUM_JOINTS, 3) or p.shape[0] < 1:
        raise ShapeError(f"BVH export needs SMPL-22 joints (T, {NUM_JOINTS}, 3), got {p.shape}")
    if not np.isfinite(p).all():
        raise ShapeError(f"BVH export: joint positions of motion {name!r} are not finite")
    T = p.shape[0]
    par = SMPL22_PARENTS
    child = {par[c]: c for c in _REST_DIR}  # the one child of each single-child joint
    # rest offsets: the median shape of the bones leaving the pelvis and spine3 in their frame,
    # the mean length along the T-pose direction for every other bone
    offsets = np.zeros((NUM_JOINTS, 3))
    for j, kids in _FRAME_JOINTS.items():
        F = _body_frame(p[:, j], p, *kids)
        for c in kids:
            offsets[c] = np.median(np.einsum("tij,ti->tj", F, p[:, c] - p[:, j]), 0)  # F^T v
    for c, u in _REST_DIR.items():
        offsets[c] = float(np.mean(np.linalg.norm(p[:, c] - p[:, par[c]], axis=-1))) * np.asarray(u, np.float64)
    # rotations, root to leaves; each bone aims from where FK put its start at the observed end,
    # so that differences in bone length (generated motions) do not add up along the chains
    G = np.empty((T, NUM_JOINTS, 3, 3))
    L = np.empty((T, NUM_JOINTS, 3, 3))
    P = np.empty((T, NUM_JOINTS, 3))
    P[:, 0] = p[:, 0]
    for j in range(NUM_JOINTS):
        Gp = G[:, par[j]] if j else np.broadcast_to(np.eye(3), (T, 3, 3))
        if j:
            P[:, j] = P[:, par[j]] + gnp.matvec(Gp, offsets[j])
        if j in _FRAME_JOINTS:
            G[:, j] = _body_frame(P[:, j], p, *_FRAME_JOINTS[j])
            L[:, j] = np.swapaxes(Gp, -1, -2) @ G[:, j]
        elif j in child:
            c = child[j]
            d = gnp.matvec(np.swapaxes(Gp, -1, -2), p[:, c] - P[:, j])  # the bone in the parent's frame
            L[:, j] = _swing(np.asarray(_REST_DIR[c], np.float64), d)
            G[:, j] = Gp @ L[:, j]
        else:
            L[:, j] = np.eye(3)
            G[:, j] = Gp
    return Clip(name=name, skeleton=smpl22_skeleton(offsets.astype(np.float32)), local_rot=L.astype(np.float32),
                root_pos=p[:, 0].astype(np.float32), fps=float(fps))


def write_bvh_atomic(clip, path: str, scale: float = 0.01) -> None:
    """:func:`mmar.data.bvh.write_bvh` through a temporary file in the same directory renamed
    into place (an existing file survives a failed write; no partial file is left).
    ``scale`` is the file's length unit in metres: 0.01 writes centimetres (as the Bandai
    files; ``mmar convert`` reads them back with its default ``--scale 0.01``; in Blender
    import with Scale 0.01 for a 1.7 m tall body), 1.0 writes metres."""
    from mmar.data.bvh import write_bvh

    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.tmp.bvh")
    try:
        try:
            write_bvh(clip, tmp, scale=scale)
            os.replace(tmp, path)
        except OSError as e:
            raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def bvh_paths(bvh: str, count: int) -> list[str]:
    """``[bvh]`` for one motion, else ``<stem>_<k><ext>`` for ``k = 0 .. count-1`` (``ext``
    defaults to ``.bvh``)."""
    if count == 1:
        return [str(bvh)]
    stem, ext = os.path.splitext(str(bvh))
    return [f"{stem}_{k}{ext or '.bvh'}" for k in range(count)]


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------

def check_outputs(out_npz: str | None = None, gif: str | None = None, bvh: str | None = None,
                  joints_num: int | None = None, bvh_scale: float = 0.01) -> None:
    """Before any work: each output can be written (:func:`mmar.data.arrays.check_writable`),
    the animation is ``.gif`` or ``.mp4`` (the latter with imageio-ffmpeg), ``bvh_scale`` is
    positive, and a GIF or BVH is asked for SMPL-22 motions only (``joints_num``, when known).
    Raises :class:`OutputError` or :class:`ConfigError`."""
    from mmar.data.arrays import check_writable

    _finite(bvh_scale, "bvh_scale", 0.0, lo_open=True)

    for p, what in ((out_npz, "--out"), (gif, "--gif"), (bvh, "--bvh")):
        if p:
            check_writable(p, what)
    if gif:
        from mmar.viz.render import writer_for

        writer_for(gif)
    if joints_num is not None and joints_num != NUM_JOINTS and (gif or bvh):
        raise ConfigError(f"the model makes {joints_num}-joint motions (KIT-ML); GIF and BVH output are for "
                          f"SMPL-22 ({NUM_JOINTS} joints) only: write the npz alone")


def _title(caption: str) -> str:
    c = " ".join(str(caption).split())
    return c if len(c) <= _TITLE_CHARS else c[: _TITLE_CHARS - 3].rstrip() + "..."


def save_generated(gen: GeneratedMotions, out_npz: str, gif: str | None = None, bvh: str | None = None, *,
                   names: Sequence[str] | None = None, bvh_scale: float = 0.01, gif_max_frames: int | None = None,
                   gif_size: tuple[int, int] = (480, 480), progress: bool = False) -> dict[str, Any]:
    """Write generated motions: ``out_npz`` (:func:`motions_to_arrays`, by
    :func:`mmar.data.clip.save_arrays`: atomic), optionally ``gif`` (``.gif`` or ``.mp4``; the
    first :data:`GIF_PANELS` motions side by side, titled with their captions) and ``bvh`` (one
    file for one motion, else ``<stem>_<k>.bvh`` per motion in npz order; ``bvh_scale`` is the
    file's unit in metres, see :func:`write_bvh_atomic`). Existing files are replaced.

    A motion whose joints or features are not finite is left out of every file and listed in
    ``skipped``; when none is left, :class:`MmarError`.

    Returns ``{"out", "names", "lengths" (frames), "fps", "gif", "gif_motions" (how many the
    animation shows), "bvh" (list of paths), "skipped"}``.
    """
    arrays = motions_to_arrays(gen, names)
    joints_num = int(next(iter(arrays.values()))["joints"].shape[1]) if arrays else None
    check_outputs(out_npz, gif, bvh, joints_num, bvh_scale)
    good, skipped = {}, []
    for nm, a in arrays.items():
        if np.isfinite(a["joints"]).all() and np.isfinite(a["features"]).all():
            good[nm] = a
        else:
            skipped.append(f"motion {nm}: non-finite values (NaN/Inf) in the generated features; left out")
    if not good:
        raise MmarError("no motion written: " + (skipped[0] if skipped else "nothing was generated"))
    from mmar.data.clip import save_arrays

    save_arrays(out_npz, good)
    fps = float(gen.fps)
    shown = list(good)[:GIF_PANELS]
    if gif:
        from mmar.viz.render import render

        titles = [_title(str(good[n]["caption"])) for n in shown]
        render([good[n]["joints"] for n in shown], gif, fps, titles=titles, max_frames=gif_max_frames, size=gif_size,
               progress=progress)
    written = []
    if bvh:
        for nm, path in zip(good, bvh_paths(bvh, len(good))):
            write_bvh_atomic(joints_to_bvh_clip(good[nm]["joints"], fps, name=nm), path, scale=bvh_scale)
            written.append(path)
    return {
        "out": str(out_npz),
        "names": list(good),
        "lengths": [int(a["joints"].shape[0]) for a in good.values()],
        "fps": fps,
        "gif": str(gif) if gif else None,
        "gif_motions": len(shown) if gif else 0,
        "bvh": written,
        "skipped": skipped,
    }

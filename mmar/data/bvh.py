"""A fast BVH reader and writer.

:func:`parse_bvh` turns BVH text into a :class:`mmar.data.clip.Clip` on the file's own
skeleton:

* any rotation channel order per joint (``Zrotation Xrotation Yrotation`` means
  ``R = Rz(a0) Rx(a1) Ry(a2)``, angles in degrees, as in ``docs/design.md``); joints with
  fewer than three rotation channels rotate about the axes they list;
* position channels on any joint: they replace that joint's ``OFFSET`` for the frame. The
  root's go to ``Clip.root_pos``; when any other joint has position channels the per-frame
  translations of every joint are stored in ``Clip.local_trans`` (``OFFSET`` where a joint has
  none);
* ``End Site`` blocks are read and dropped (they carry no channels);
* CRLF or LF line endings, tabs or runs of spaces;
* ``Frame Time`` becomes ``fps``: ``1 / frame_time`` rounded to the nearest integer when it is
  within ``1e-3`` of one, or when the frame time is that integer rate's period written with six
  decimals (``0.0333333`` gives exactly ``30.0``, ``0.008333`` gives ``120.0``);
* ``scale`` multiplies every length (Bandai Namco files are in centimetres: ``scale=0.01``);
* text in UTF-8 or ASCII, or UTF-16 / UTF-32 with a byte-order mark (:func:`decode_text`); a file
  with NUL bytes otherwise (binary, or UTF-16 without a mark) is refused as not being text.

Numbers must be finite when read and stay finite after every step (scaling to float32,
retargeting, resampling): a value that overflows is reported with the file and the line of the
frame, never passed on as NaN/Inf. ``Frame Time`` must give a rate within
:data:`mmar.data.arrays.FPS_RANGE`.

The MOTION block is converted by numpy in one call and the Euler angles of the whole clip are
turned into matrices at once (:func:`mmar.geometry_np.euler_to_matrix`, float64, cast to
float32), so a clip of a few hundred frames parses in a few milliseconds. Malformed input raises
:class:`mmar.errors.DataFormatError` naming the file and the 1-based line.

Retargeting to SMPL-22 (:meth:`BvhData.retarget`, the one implementation behind
:meth:`mmar.data.clip.Clip.retarget` and the import workers) expresses global rotations from
the canonical T-pose (:func:`rest_alignment`, docs/design.md "Canonical rest pose"), so the
sparse input does not depend on the file's local axes or rest pose. The joint maps of CMU
ASF/BVH and Mixamo skeletons are registered here (``cmu_asf``, ``cmu_bvh``, ``mixamo``).

The numpy-only core (:func:`parse_bvh_arrays`) imports neither JAX nor
:mod:`mmar.data.clip` (its geometry is :mod:`mmar.geometry_np`), so worker processes of
:mod:`mmar.data.sources` start quickly.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from typing import TYPE_CHECKING, Sequence

import numpy as np

from mmar.data.arrays import FPS_RANGE, JOINT_MAPS, nonfinite_report, register_joint_map
from mmar.data.bandai import BANDAI_TPOSE
from mmar.errors import DataFormatError
from mmar.geometry_np import (
    axis_vector,
    euler_to_matrix,
    forward_kinematics,
    frame_from_directions,
    matrix_to_euler,
    matrix_to_quaternion,
    matvec,
    quaternion_to_matrix,
    resample_index,
    slerp,
)
from mmar.skeleton import CANONICAL_REST_RULES, CANONICAL_REST_TOLERANCE_DEG, NUM_JOINTS, SMPL22_NAMES

if TYPE_CHECKING:  # pragma: no cover
    from mmar.data.clip import Clip

__all__ = [
    "BvhData",
    "parse_bvh",
    "parse_bvh_arrays",
    "read_bvh",
    "write_bvh",
    "fps_from_frame_time",
    "decode_text",
    "RestAlignment",
    "rest_alignment",
    "register_rest_pose",
    "REST_POSES",
    "CANONICAL_MAPS",
    "FILE_FRAMES",
]

_ROT_CHANNELS = {"xrotation": "X", "yrotation": "Y", "zrotation": "Z"}
_POS_CHANNELS = {"xposition": 0, "yposition": 1, "zposition": 2}
_MOTION_RE = re.compile(r"^[ \t]*MOTION[ \t]*\r?$", re.M)


@dataclasses.dataclass
class BvhData:
    """The arrays of a parsed BVH file (numpy only; see :func:`parse_bvh_arrays`).

    ``local_rot`` is float32 ``(T, J, 3, 3)``; ``root_pos`` ``(T, 3)``; ``local_trans``
    ``(T, J, 3)`` or ``None``; lengths already multiplied by ``scale``. ``channels`` lists
    each joint's channel names as written in the file.
    """

    names: tuple[str, ...]
    parents: tuple[int, ...]
    offsets: np.ndarray
    channels: tuple[tuple[str, ...], ...]
    local_rot: np.ndarray
    root_pos: np.ndarray
    local_trans: np.ndarray | None
    fps: float
    frame_time: float

    @property
    def num_frames(self) -> int:
        return int(self.local_rot.shape[0])

    def global_transforms(self) -> tuple[np.ndarray, np.ndarray]:
        """Forward kinematics in float64 numpy: ``(global_rot (T,J,3,3), global_pos (T,J,3))``."""
        offs = self.offsets if self.local_trans is None else self.local_trans
        return forward_kinematics(self.local_rot, offs, self.parents, self.root_pos)

    def retarget(self, mapping: Sequence, names: Sequence[str], parents: Sequence[int],
                 canonical: bool | str = "auto") -> "BvhData":
        """numpy twin of :meth:`mmar.data.clip.Clip.retarget` (same rules, float64 inside):
        ``mapping`` lists, for each target joint, a source joint name, ``("mid", a, b)`` (the
        midpoint of ``a`` and ``b``, ``a``'s rotation) or ``("at", a, b)`` (``a``'s rotation at
        ``b``'s position). Global rotations and positions of mapped joints are kept, local
        rotations re-derived on the target tree, offsets are the per-frame bone vectors' median
        over time.

        For an SMPL-22 target the global rotations are first re-expressed from the canonical
        T-pose (:func:`rest_alignment`; ``canonical``: ``"auto"`` keeps the file's joint frames,
        with a warning, when the skeleton's rest pose is not recognised; ``True`` raises
        :class:`DataFormatError` then; ``False`` always keeps the file's frames). Joint
        positions do not depend on it."""
        g_rot, g_pos = self.global_transforms()
        idx = {n: i for i, n in enumerate(self.names)}

        def col(n):
            try:
                return idx[n]
            except KeyError:
                raise KeyError(f"joint {n!r} not in skeleton {self.names}") from None

        rots, poss = [], []
        for spec in mapping:
            if isinstance(spec, tuple):
                kind, a, b = spec
                if kind == "mid":
                    rots.append(g_rot[:, col(a)])
                    poss.append(0.5 * (g_pos[:, col(a)] + g_pos[:, col(b)]))
                elif kind == "at":
                    rots.append(g_rot[:, col(a)])
                    poss.append(g_pos[:, col(b)])
                else:
                    raise ValueError(f"unknown joint spec {spec}")
            else:
                rots.append(g_rot[:, col(spec)])
                poss.append(g_pos[:, col(spec)])
        G = np.stack(rots, 1)
        P = np.stack(poss, 1)
        if canonical and tuple(names) == SMPL22_NAMES:
            align = rest_alignment(self.names, self.parents, self.offsets, mapping)
            if align.rest == FILE_FRAMES:
                msg = (f"the rest pose of this skeleton is not recognised as a standing T- or A-pose "
                       f"({align.reason}); global rotations stay in the file's joint frames, not the canonical "
                       f"ones (see mmar.data.bvh.register_rest_pose)")
                if canonical is True:
                    raise DataFormatError(msg)
                warnings.warn(msg, stacklevel=2)
            else:
                G = G @ align.rotations
        par = np.asarray(parents[1:], np.int64)
        Gp_T = np.swapaxes(G[:, par], -1, -2)
        local = np.concatenate([G[:, :1], Gp_T @ G[:, 1:]], 1)
        off = matvec(Gp_T, P[:, 1:] - P[:, par])
        offsets = np.concatenate([np.zeros((1, 3)), np.median(off, 0)], 0)
        out = BvhData(
            names=tuple(names),
            parents=tuple(int(p) for p in parents),
            offsets=offsets.astype(np.float32),
            channels=(),
            local_rot=local.astype(np.float32),
            root_pos=P[:, 0].astype(np.float32),
            local_trans=None,
            fps=self.fps,
            frame_time=self.frame_time,
        )
        out.check_finite("retargeting")
        return out

    def check_finite(self, step: str) -> None:
        """Raise :class:`DataFormatError` when an array is not finite after ``step``."""
        report = nonfinite_report({"offsets": self.offsets, "local_rot": self.local_rot,
                                   "root_pos": self.root_pos, "local_trans": self.local_trans})
        if report is not None:
            raise DataFormatError(f"{step} gives non-finite values: {report}")

    def resample(self, fps: float) -> "BvhData":
        """numpy twin of :meth:`mmar.data.clip.Clip.resample`: slerp rotations, lerp
        translations onto the same time grid as :mod:`mmar.geometry`'s resampling."""
        fps = float(fps)
        if abs(fps - self.fps) < 1e-6:
            return self
        i0, i1, w = resample_index(self.num_frames, self.fps, fps)

        def lerp(x):
            ww = w.reshape((-1,) + (1,) * (x.ndim - 1))
            return (x[i0] * (1 - ww) + x[i1] * ww).astype(np.float32)

        q = matrix_to_quaternion(self.local_rot)
        rot = quaternion_to_matrix(slerp(q[i0], q[i1], w.reshape((-1,) + (1,) * (q.ndim - 1))))
        out = dataclasses.replace(
            self, local_rot=rot.astype(np.float32), root_pos=lerp(self.root_pos),
            local_trans=None if self.local_trans is None else lerp(self.local_trans),
            fps=fps, frame_time=1.0 / fps,
        )
        out.check_finite(f"resampling to {fps:g} fps")
        return out

    def to_clip(self, name: str, source: str = "", labels: dict | None = None) -> "Clip":
        from mmar.data.clip import Clip, Skeleton

        return Clip(
            name=name,
            skeleton=Skeleton(self.names, self.parents, self.offsets),
            local_rot=self.local_rot,
            root_pos=self.root_pos,
            fps=self.fps,
            local_trans=self.local_trans,
            labels=dict(labels or {}),
            source=source,
        )


# --------------------------------------------------------------------------
# frame rate
# --------------------------------------------------------------------------

def fps_from_frame_time(frame_time: float) -> float:
    """``1 / frame_time``, snapped to the nearest integer ``r`` when it is within 1e-3 of it
    or when ``frame_time`` is ``1 / r`` written with 6 decimals (``0.008333`` -> 120.0)."""
    ft = float(frame_time)
    fps = 1.0 / ft
    r = round(fps)
    if r > 0 and (abs(fps - r) < 1e-3 or abs(1.0 / r - ft) <= 5.000001e-7):
        return float(r)
    return fps


# --------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------

def _float(tok: str, path: str, line: int, what: str) -> float:
    try:
        v = float(tok)
    except ValueError:
        raise DataFormatError(f"bad number {tok!r} in {what}", path, line) from None
    if not math.isfinite(v):
        raise DataFormatError(f"non-finite number {tok!r} in {what}", path, line)
    return v


def _parse_hierarchy(text: str, path: str, end_line: int):
    """Joint names, parents, raw offsets, channel lists from the text before MOTION.

    Line oriented: ``ROOT``/``JOINT`` (name = rest of the line, an optional trailing ``{``),
    ``End Site``, ``OFFSET x y z``, ``CHANNELS n names...``; braces may stand alone or share
    a line with each other.
    """
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    has_offset: list[bool] = []
    offset_lines: list[int] = []  # per joint: the line of its OFFSET (or of the joint)
    stack: list[int] = []  # joint index per open block; -2 for an End Site
    pending: tuple[int, str, int] | None = None  # (joint or -2, what, line) awaiting '{'
    seen_header = False
    root_closed = False
    roots = 0
    ln = 0
    for ln, line in enumerate(text.split("\n"), 1):
        toks = line.split()
        if not toks:
            continue
        if not seen_header:
            if toks[0] != "HIERARCHY":
                raise DataFormatError(f"expected HIERARCHY, found {toks[0]!r}", path, ln)
            seen_header = True
            toks = toks[1:]
        i = 0
        n = len(toks)
        while i < n:
            tok = toks[i]
            if root_closed:
                if tok == "ROOT":
                    raise DataFormatError("more than one ROOT is not supported", path, ln)
                raise DataFormatError(f"unexpected {tok!r} after the ROOT block", path, ln)
            if pending is not None:
                if tok != "{":
                    raise DataFormatError(f"missing '{{' after {pending[1]}, found {tok!r}", path, ln)
                stack.append(pending[0])
                pending = None
                i += 1
                continue
            if tok == "}":
                if not stack:
                    raise DataFormatError("unmatched '}'", path, ln)
                stack.pop()
                root_closed = not stack
                i += 1
                continue
            if tok == "{":
                raise DataFormatError("unexpected '{'", path, ln)
            rest = toks[i + 1:]
            if tok in ("ROOT", "JOINT"):
                if tok == "ROOT":
                    if stack:
                        raise DataFormatError("ROOT inside another joint (missing '}'?)", path, ln)
                    if roots:
                        raise DataFormatError("more than one ROOT is not supported", path, ln)
                    roots += 1
                else:
                    if not stack:
                        raise DataFormatError("JOINT outside of ROOT (missing ROOT or extra '}')", path, ln)
                    if stack[-1] == -2:
                        raise DataFormatError("JOINT inside an End Site", path, ln)
                brace = bool(rest) and rest[-1] == "{"
                if brace:
                    rest = rest[:-1]
                if not rest:
                    raise DataFormatError(f"{tok} without a name", path, ln)
                name = " ".join(rest)
                if name in names:
                    raise DataFormatError(f"duplicate joint name {name!r}", path, ln)
                names.append(name)
                parents.append(stack[-1] if stack else -1)
                offsets.append([0.0, 0.0, 0.0])
                channels.append(())
                has_offset.append(False)
                offset_lines.append(ln)
                if brace:
                    stack.append(len(names) - 1)
                else:
                    pending = (len(names) - 1, f"{tok} {name}", ln)
                break
            if tok == "End":
                if not rest or rest[0] != "Site":
                    raise DataFormatError("expected 'End Site'", path, ln)
                if not stack or stack[-1] == -2:
                    raise DataFormatError("End Site outside of a joint", path, ln)
                pending = (-2, "End Site", ln)
                i += 2
                continue
            if tok == "OFFSET":
                if not stack:
                    raise DataFormatError("OFFSET outside of a joint", path, ln)
                if len(rest) != 3:
                    raise DataFormatError(f"OFFSET needs 3 numbers, found {len(rest)}", path, ln)
                try:
                    vals = [float(rest[0]), float(rest[1]), float(rest[2])]
                except ValueError:
                    vals = [_float(t, path, ln, "OFFSET") for t in rest]
                if not all(math.isfinite(v) for v in vals):
                    raise DataFormatError("non-finite number in OFFSET", path, ln)
                jt = stack[-1]
                if jt >= 0:
                    if has_offset[jt]:
                        raise DataFormatError(f"second OFFSET for joint {names[jt]!r}", path, ln)
                    offsets[jt] = vals
                    has_offset[jt] = True
                    offset_lines[jt] = ln
                break
            if tok == "CHANNELS":
                if not stack or stack[-1] == -2:
                    raise DataFormatError("CHANNELS outside of a joint", path, ln)
                if not rest:
                    raise DataFormatError("CHANNELS without a count", path, ln)
                try:
                    cnt = int(rest[0])
                except ValueError:
                    raise DataFormatError(f"bad channel count {rest[0]!r}", path, ln) from None
                chans = tuple(rest[1:])
                if cnt != len(chans):
                    raise DataFormatError(f"CHANNELS {cnt} lists {len(chans)} channel names", path, ln)
                low = [c.lower() for c in chans]
                for c, lc in zip(chans, low):
                    if lc not in _ROT_CHANNELS and lc not in _POS_CHANNELS:
                        raise DataFormatError(f"unknown channel {c!r}", path, ln)
                if len(set(low)) != len(low):
                    raise DataFormatError("a channel is listed twice", path, ln)
                jt = stack[-1]
                if channels[jt]:
                    raise DataFormatError(f"second CHANNELS line for joint {names[jt]!r}", path, ln)
                channels[jt] = chans
                break
            raise DataFormatError(f"unknown keyword {tok!r}", path, ln)
    if not seen_header:
        raise DataFormatError("empty file: expected HIERARCHY", path, 1)
    if pending is not None:
        raise DataFormatError(f"missing '{{' after {pending[1]}", path, end_line)
    if stack:
        raise DataFormatError(f"missing '}}': {len(stack)} block(s) not closed before MOTION", path, end_line)
    if not names:
        raise DataFormatError("no ROOT joint in HIERARCHY", path, end_line)
    return names, parents, offsets, channels, offset_lines


def _scan_tokens(raw: np.ndarray):
    """Token start/end byte offsets and newline offsets of ``raw`` (uint8), by numpy."""
    nonws = raw > 32
    edge = np.diff(nonws.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edge == 1)
    ends = np.flatnonzero(edge == -1)
    newlines = np.flatnonzero(raw == 10)
    return starts, ends, newlines


def _fast_values(raw: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """Decimal numbers of the frame block without ``strtod``.

    numpy's text-to-float conversion is several times slower than its text-to-int one, so
    every token ``[+-]digits[.digits][(e|E)[+-]digits]`` is read as an integer mantissa (the
    '.' removed) and an integer exponent ('e' replaced by a space), then scaled by an exact
    power of ten (a single correctly rounded division for up to 15-16 significant digits).
    Returns None when any token does not fit this pattern; the caller then falls back to
    Python's ``float``.
    """
    n = starts.size
    L = raw.size
    dots = np.flatnonzero(raw == 46)
    es = np.flatnonzero((raw | 32) == 101)
    tdot = np.searchsorted(starts, dots, "right") - 1
    te = np.searchsorted(starts, es, "right") - 1
    if (tdot.size > 1 and not (np.diff(tdot) > 0).all()) or (te.size > 1 and not (np.diff(te) > 0).all()):
        return None  # two dots or two exponents in one token
    mend = ends.copy()
    mend[te] = es
    if tdot.size and (dots >= mend[tdot]).any():
        return None  # a dot inside the exponent
    frac = np.zeros(n, np.int64)
    frac[tdot] = mend[tdot] - dots - 1
    # mantissa characters other than a leading sign and the dot must be digits (the integer
    # conversion below rejects anything else); require 1..18 of them
    first = raw[starts]
    has_dot = np.zeros(n, np.int64)
    has_dot[tdot] = 1
    mdig = mend - starts - ((first == 45) | (first == 43)) - has_dot
    if n and (mdig.min() < 1 or mdig.max() > 18):
        return None  # no digit (a lone sign) or more than int64 holds
    if te.size:
        after = raw[np.minimum(es + 1, L - 1)]
        edig = ends[te] - es - 1 - ((after == 45) | (after == 43))
        if edig.min() < 1 or edig.max() > 4:
            return None
    if dots.size:
        buf = raw[raw != 46]  # drop the dots (a copy)
        es_shifted = es - np.searchsorted(dots, es)
    else:
        buf = raw.copy()
        es_shifted = es
    buf[es_shifted] = 32  # the exponent becomes a separate integer token
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            ints = np.fromstring(buf.tobytes(), dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            return None
    if ints.size != n + te.size:
        return None
    if te.size:
        has_e = np.zeros(n, np.int64)
        has_e[te] = 1
        midx = np.arange(n) + np.cumsum(has_e) - has_e
        mant = ints[midx]
        net = -frac
        net[te] += ints[midx[te] + 1]
    else:
        mant = ints
        net = -frac
    vals = mant.astype(np.float64)
    neg = net < 0
    if neg.any():
        vals[neg] /= 10.0 ** (-net[neg]).astype(np.float64)
    pos = net > 0
    if pos.any():
        vals[pos] *= 10.0 ** net[pos].astype(np.float64)
    return vals


def _slow_values(data: str, first_line: int, path: str) -> np.ndarray:
    """Reference path: Python ``float`` per token; raises at the first bad token's line."""
    out: list[float] = []
    for k, line in enumerate(data.split("\n")):
        for t in line.split():
            try:
                v = float(t)
            except ValueError:
                raise DataFormatError(f"bad number {t!r} in frame data", path, first_line + k) from None
            if not math.isfinite(v):
                raise DataFormatError(f"non-finite number {t!r} in frame data", path, first_line + k)
            out.append(v)
    return np.asarray(out, np.float64)


def _header_line(text: str, pos: int, lineno: int, path: str, key: str):
    """Read the next non-blank line at ``pos``; return (value string, line number, new pos)."""
    n = len(text)
    while True:
        if pos >= n:
            raise DataFormatError(f"missing '{key}' line", path, lineno)
        e = text.find("\n", pos)
        e = n if e < 0 else e
        line = text[pos:e].strip()
        if line:
            break
        pos = e + 1
        lineno += 1
    m = re.fullmatch(re.escape(key).replace(r"\ ", r"\s+") + r"\s*(.*)", line)
    if not m:
        raise DataFormatError(f"expected '{key}', found {line[:40]!r}", path, lineno)
    return m.group(1).strip(), lineno, e + 1


_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def decode_text(raw: bytes) -> str:
    """Text of a file: UTF-16 / UTF-32 / UTF-8 by their byte-order mark, else UTF-8 (undecodable
    bytes replaced). Whether the result is text at all is :func:`parse_bvh_arrays`' check."""
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            try:
                return raw.decode(codec)
            except UnicodeDecodeError:
                break
    return raw.decode("utf-8", "replace")


def parse_bvh_arrays(text: str, path: str = "<string>", scale: float = 1.0) -> BvhData:
    """Parse BVH text into numpy arrays (no JAX). See the module docstring."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\x00" in text[:65536]:
        raise DataFormatError("not UTF-8/ASCII text (it has NUL bytes: a binary file, or UTF-16/UTF-32 "
                              "without a byte-order mark)", path)
    if "\n" not in text and "\r" in text:  # classic Mac line endings
        text = text.replace("\r", "\n")
    m = _MOTION_RE.search(text)
    if m is None:
        last = text.count("\n") + 1
        raise DataFormatError("missing MOTION section", path, last)
    motion_line = text.count("\n", 0, m.start()) + 1
    names, parents, offsets, channels, offset_lines = _parse_hierarchy(text[: m.start()], path, motion_line)

    pos = m.end()
    if pos < len(text) and text[pos] == "\n":
        pos += 1
    nframes_s, frames_line, pos = _header_line(text, pos, motion_line + 1, path, "Frames:")
    try:
        nframes = int(nframes_s)
    except ValueError:
        raise DataFormatError(f"bad frame count {nframes_s!r}", path, frames_line) from None
    if nframes < 1:
        raise DataFormatError(f"Frames: {nframes}: a clip needs at least one frame", path, frames_line)
    ft_s, ft_line, pos = _header_line(text, pos, frames_line + 1, path, "Frame Time:")
    frame_time = _float(ft_s, path, ft_line, "Frame Time")
    if frame_time <= 0:
        raise DataFormatError(f"Frame Time must be positive, got {frame_time}", path, ft_line)
    lo, hi = FPS_RANGE
    if not 1.0 / hi <= frame_time <= 1.0 / lo:
        raise DataFormatError(f"Frame Time {ft_s} is not a usable frame period: the rate must be between "
                              f"{lo:g} and {hi:g} frames per second", path, ft_line)
    fps = fps_from_frame_time(frame_time)

    C = sum(len(c) for c in channels)
    data = text[pos:]
    first = ft_line + 1
    filled = None
    if C > 0:
        raw = np.frombuffer(data.encode("utf-8", "surrogatepass"), np.uint8)
        starts, ends, newlines = _scan_tokens(raw)
        before = np.searchsorted(starts, newlines)  # tokens before each newline
        counts = np.diff(before, prepend=0, append=starts.size)
        filled = np.flatnonzero(counts)  # indices of non-blank lines
        head = filled[:nframes]
        bad = head[counts[head] != C]
        if bad.size:
            k = int(bad[0])
            raise DataFormatError(f"frame line has {int(counts[k])} values, expected {C}", path, first + k)
        if filled.size < nframes:
            raise DataFormatError(
                f"Frames: {nframes} but the file has {filled.size} frame lines", path, frames_line
            )
        if filled.size > nframes:
            raise DataFormatError(
                f"Frames: {nframes} but more frame lines follow", path, first + int(filled[nframes])
            )
        vals = _fast_values(raw, starts, ends)
        if vals is None:
            vals = _slow_values(data, first, path)
        elif not np.isfinite(vals).all():
            k = int(np.flatnonzero(~np.isfinite(vals))[0])
            raise DataFormatError(
                "number out of range in frame data", path, first + int(np.searchsorted(newlines, starts[k]))
            )
        if vals.size != nframes * C:  # pragma: no cover - guarded by the line counts above
            raise DataFormatError(f"expected {nframes * C} values, read {vals.size}", path, first)
        vals = vals.reshape(nframes, C)
    else:
        vals = np.zeros((nframes, 0), np.float64)

    out = _arrays_from_values(names, parents, offsets, channels, vals, fps, frame_time, scale)
    _check_converted(out, path, lambda k: first + int(filled[k]) if filled is not None else None, offset_lines)
    return out


def _check_converted(d: BvhData, path: str, line_of_frame, offset_lines) -> None:
    """Every value finite after scaling to float32: name the joint or the frame (and its line)."""
    bad = ~np.isfinite(d.offsets).all(1)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise DataFormatError(f"OFFSET of joint {d.names[j]!r} is out of float32 range after scaling", path,
                              offset_lines[j])
    for what, arr in (("root position", d.root_pos), ("joint position", d.local_trans),
                      ("rotation", d.local_rot)):
        if arr is None:
            continue
        bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(1)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            n = int((~np.isfinite(arr)).sum())
            raise DataFormatError(f"{what} of frame {k} is out of float32 range after scaling ({n} non-finite "
                                  f"values in {int(bad.sum())} frame(s))", path, line_of_frame(k))


def _arrays_from_values(names, parents, offsets, channels, vals, fps, frame_time, scale) -> BvhData:
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked (and named) after
        return _arrays_from_values_unchecked(names, parents, offsets, channels, vals, fps, frame_time, scale)


def _arrays_from_values_unchecked(names, parents, offsets, channels, vals, fps, frame_time, scale) -> BvhData:
    T, C = vals.shape
    J = len(names)
    offs = np.asarray(offsets, np.float64).reshape(J, 3)
    # column layout: one extra zero column at index C for missing channels
    V = np.concatenate([vals, np.zeros((T, 1))], 1)
    rot_idx = np.full((J, 3), C, np.int64)
    pos_idx = np.full((J, 3), -1, np.int64)
    orders: list[str] = []
    col = 0
    for j, chans in enumerate(channels):
        rot_axes: list[str] = []
        for c in chans:
            lc = c.lower()
            if lc in _ROT_CHANNELS:
                rot_idx[j, len(rot_axes)] = col
                rot_axes.append(_ROT_CHANNELS[lc])
            else:
                pos_idx[j, _POS_CHANNELS[lc]] = col
            col += 1
        # missing axes get angle 0 (identity), appended after the listed ones
        orders.append("".join(rot_axes) + "".join(a for a in "XYZ" if a not in rot_axes))

    angles = V[:, rot_idx]  # (T, J, 3)
    local_rot = np.empty((T, J, 3, 3), np.float32)
    for order in sorted(set(orders)):
        js = [j for j, o in enumerate(orders) if o == order]
        local_rot[:, js] = euler_to_matrix(angles[:, js], order, degrees=True)

    has_pos = pos_idx >= 0
    trans = None
    if has_pos[1:].any():
        trans = np.broadcast_to(offs, (T, J, 3)).copy()
        jj, kk = np.nonzero(has_pos)
        trans[:, jj, kk] = vals[:, pos_idx[jj, kk]]
        root = trans[:, 0].copy()
        trans = (trans * scale).astype(np.float32)
    else:
        root = np.broadcast_to(offs[0], (T, 3)).copy()
        kk = np.flatnonzero(has_pos[0])
        root[:, kk] = vals[:, pos_idx[0, kk]]
    return BvhData(
        names=tuple(names),
        parents=tuple(parents),
        offsets=(offs * scale).astype(np.float32),
        channels=tuple(tuple(c) for c in channels),
        local_rot=local_rot,
        root_pos=(root * scale).astype(np.float32),
        local_trans=trans,
        fps=fps,
        frame_time=float(frame_time),
    )


def _clip_name(path: str) -> str:
    base = os.path.basename(str(path).replace("\\", "/").rsplit(":", 1)[-1])
    if base.lower().endswith(".bvh"):
        base = base[:-4]
    return base or "clip"


def parse_bvh(text: str, path: str = "<string>", scale: float = 1.0, name: str | None = None) -> "Clip":
    """Parse BVH text into a :class:`~mmar.data.clip.Clip` on the file's own skeleton.

    ``path`` is only used in error messages and as ``Clip.source``; ``name`` defaults to the
    file name without ``.bvh``.
    """
    data = parse_bvh_arrays(text, path, scale)
    return data.to_clip(name or _clip_name(path), source=path)


def read_bvh(path, scale: float = 1.0, name: str | None = None) -> "Clip":
    """Read a BVH file (any line endings; UTF-8, or UTF-16/32 with a byte-order mark;
    undecodable UTF-8 bytes replaced)."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataFormatError(f"cannot read file ({e.strerror})", p) from e
    return parse_bvh(decode_text(raw), p, scale, name)


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------

def write_bvh(
    clip: "Clip",
    path,
    channels: Sequence[Sequence[str]] | None = None,
    order: str = "ZXY",
    scale: float = 1.0,
    precision: int = 9,
) -> None:
    """Write ``clip`` as BVH.

    ``channels`` gives each joint's channel names in file order (any mix of
    ``X/Y/Zposition`` and ``X/Y/Zrotation``; a joint without the three rotation channels must
    have an identity rotation). By default the root gets ``X/Y/Zposition`` plus rotations in
    ``order``, and every other joint gets rotations only, or positions too when the clip has
    ``local_trans``. Joints are written depth first, so a skeleton whose joint order is not
    depth-first reads back with its joints in that order. Lengths are divided by ``scale``
    (``scale=0.01`` writes centimetres for a clip in metres). Leaf joints get an ``End Site``
    with a zero offset. A joint whose channel list has fewer than three rotation channels
    (e.g. ``Xposition Yposition Zposition`` only) must have the rotation those channels can
    express; nothing else is written.
    """
    sk = clip.skeleton
    J = sk.num_joints
    T = clip.num_frames
    if channels is None:
        rot = [f"{a}rotation" for a in order.upper()]
        pos = ["Xposition", "Yposition", "Zposition"]
        channels = [pos + rot if (j == 0 or clip.local_trans is not None) else list(rot) for j in range(J)]
    channels = [list(c) for c in channels]
    if len(channels) != J:
        raise ValueError(f"channels lists {len(channels)} joints, skeleton has {J}")
    inv = 1.0 / scale
    trans = clip.local_trans if clip.local_trans is not None else np.broadcast_to(sk.offsets, (T, J, 3))
    trans = np.array(trans, np.float64)
    trans[:, 0] = clip.root_pos
    joint_cols: list[list[np.ndarray]] = []
    for j, chans in enumerate(channels):
        cols: list[np.ndarray] = []
        joint_cols.append(cols)
        rot_axes = "".join(_ROT_CHANNELS[c.lower()] for c in chans if c.lower() in _ROT_CHANNELS)
        eul = None
        if len(rot_axes) == 3:
            eul = matrix_to_euler(clip.local_rot[:, j], rot_axes, degrees=True)
        elif rot_axes:
            full = rot_axes + "".join(a for a in "XYZ" if a not in rot_axes)
            eul = matrix_to_euler(clip.local_rot[:, j], full, degrees=True)
        r = 0
        for c in chans:
            lc = c.lower()
            if lc in _ROT_CHANNELS:
                cols.append(eul[:, r])
                r += 1
            elif lc in _POS_CHANNELS:
                cols.append(trans[:, j, _POS_CHANNELS[lc]] * inv)
            else:
                raise ValueError(f"unknown channel {c!r}")
    children = [[] for _ in range(J)]
    for j, p in enumerate(sk.parents):
        if p >= 0:
            children[p].append(j)
    # the MOTION columns follow the depth-first order of the hierarchy
    dfs: list[int] = []
    todo = [0]
    while todo:
        j = todo.pop()
        dfs.append(j)
        todo.extend(reversed(children[j]))
    cols = [c for j in dfs for c in joint_cols[j]]
    out: list[str] = ["HIERARCHY"]
    fmt = f"{{:.{precision}g}}"

    def emit(j: int, depth: int) -> None:
        ind = "  " * depth
        kw = "ROOT" if j == 0 else "JOINT"
        out.append(f"{ind}{kw} {sk.names[j]}")
        out.append(f"{ind}{{")
        off = np.asarray(sk.offsets[j], np.float64) * inv
        out.append(f"{ind}  OFFSET " + " ".join(fmt.format(v) for v in off))
        if channels[j]:
            out.append(f"{ind}  CHANNELS {len(channels[j])} " + " ".join(channels[j]))
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:
            out.append(f"{ind}  End Site")
            out.append(f"{ind}  {{")
            out.append(f"{ind}    OFFSET 0 0 0")
            out.append(f"{ind}  }}")
        out.append(f"{ind}}}")

    emit(0, 0)
    out.append("MOTION")
    out.append(f"Frames: {T}")
    out.append(f"Frame Time: {1.0 / clip.fps:.{precision}g}")
    if cols:
        M = np.stack(cols, 1)
        row_fmt = " ".join([fmt] * M.shape[1])
        out.extend(row_fmt.format(*row) for row in M.tolist())
    else:
        out.extend("" for _ in range(T))
    with open(os.fspath(path), "w", newline="\n") as f:
        f.write("\n".join(out) + "\n")


# --------------------------------------------------------------------------
# the canonical rest pose
# --------------------------------------------------------------------------

#: Joint maps whose skeletons already have the canonical joint frames (identity global
#: rotations in the canonical T-pose): SMPL-22 files, e.g. written by mmar itself.
CANONICAL_MAPS: set[str] = {"smpl22"}

#: Declared T-poses of skeletons whose rest pose (all rotations zero) is not a standing pose:
#: joint map name -> {source joint: (world direction of its local X axis, of its local Y
#: axis) when the body stands in the canonical T-pose}. Joints not listed turn with their
#: parent (the root: not at all).
REST_POSES: dict[str, dict[str, tuple[str, str]]] = {"bandai": dict(BANDAI_TPOSE)}

#: ``RestAlignment.rest`` when no rest pose was recognised: the file's joint frames are kept.
FILE_FRAMES = "file frames"

# Further skeletons (registered with mmar.data.arrays.register_joint_map on import).
# CMU and HDM05 ASF/AMC bone names (mmar.data.asf: a joint sits where its bone starts). The
# head rotates with the skull ("head") but sits at the top of the lower neck bone
# ("upperneck" starts there), 10 cm above the neck base, where Bandai's head joint also sits;
# the wrist is the middle of the short "lwrist" bone (its start is 5 cm short of the wrist, its
# end 6 cm past it on HDM05's bk) and turns with the hand ("lhand", the palm).
_EXTRA_JOINT_MAPS = {
    "cmu_asf": (
        "root", "lfemur", "rfemur", "lowerback", "ltibia", "rtibia", "upperback", "lfoot", "rfoot",
        "thorax", "ltoes", "rtoes", "lowerneck", "lclavicle", "rclavicle", ("at", "head", "upperneck"),
        "lhumerus", "rhumerus", "lradius", "rradius", ("mid", "lhand", "lwrist"), ("mid", "rhand", "rwrist"),
    ),
    # the same bones under the names of the CMU BVH conversions (LHipJoint, LowerBack, Neck1, ...)
    "cmu_bvh": (
        "Hips", "LeftUpLeg", "RightUpLeg", "LowerBack", "LeftLeg", "RightLeg", "Spine", "LeftFoot", "RightFoot",
        "Spine1", "LeftToeBase", "RightToeBase", "Neck", "LeftShoulder", "RightShoulder", ("at", "Head", "Neck1"),
        "LeftArm", "RightArm", "LeftForeArm", "RightForeArm", ("mid", "LeftFingerBase", "LeftHand"),
        ("mid", "RightFingerBase", "RightHand"),
    ),
    # Mixamo rigs (joint names with the "mixamorig:" prefix)
    "mixamo": tuple(
        f"mixamorig:{n}" for n in (
            "Hips", "LeftUpLeg", "RightUpLeg", "Spine", "LeftLeg", "RightLeg", "Spine1", "LeftFoot", "RightFoot",
            "Spine2", "LeftToeBase", "RightToeBase", "Neck", "LeftShoulder", "RightShoulder", "Head", "LeftArm",
            "RightArm", "LeftForeArm", "RightForeArm", "LeftHand", "RightHand")
    ),
}
for _name, _mapping in _EXTRA_JOINT_MAPS.items():
    if _name not in JOINT_MAPS:
        register_joint_map(_name, _mapping)


def register_rest_pose(name: str, pose: dict[str, tuple[str, str]]) -> None:
    """Declare the T-pose of the skeleton of joint map ``name`` (see :data:`REST_POSES`), for
    skeletons whose zero-rotation pose is not a standing pose."""
    checked = {}
    for joint, (x, y) in pose.items():
        a, b = axis_vector(x), axis_vector(y)
        if abs(float(a @ b)) > 1e-9:
            raise ValueError(f"rest pose {name!r}: joint {joint!r} needs two orthogonal axes, got {x} and {y}")
        checked[str(joint)] = (x, y)
    REST_POSES[name] = checked


@dataclasses.dataclass(frozen=True)
class RestAlignment:
    """How a skeleton's joint frames relate to the canonical T-pose frames.

    ``rotations (22, 3, 3)``: per SMPL-22 joint, ``K`` with ``canonical global rotation =
    source global rotation @ K`` (the source joint whose rotation the joint map uses);
    ``rest``: which rest pose gave them (``"canonical"``, ``"zero pose"``, ``"declared
    T-pose of '<map>'"`` or :data:`FILE_FRAMES`, then ``K`` is the identity); ``reason``: why
    each candidate rest pose was refused."""

    rotations: np.ndarray
    rest: str
    reason: str = ""


def _map_name(mapping: Sequence) -> str | None:
    m = tuple(mapping)
    for key, value in JOINT_MAPS.items():
        if tuple(value) == m:
            return key
    return None


def _spec_joints(spec) -> tuple[str, tuple[str, ...]]:
    """``(joint whose rotation is used, joints whose positions are averaged)`` of a map entry."""
    if isinstance(spec, tuple):
        kind, a, b = spec
        if kind == "mid":
            return a, (a, b)
        if kind == "at":
            return a, (b,)
        raise ValueError(f"unknown joint spec {spec}")
    return spec, (spec,)


def canonical_rest_frames(pos: np.ndarray) -> tuple[np.ndarray, str | None]:
    """The canonical frames ``R (22, 3, 3)`` of SMPL-22 joints at rest positions ``pos (22,
    3)`` by :data:`mmar.skeleton.CANONICAL_REST_RULES`, and ``None``, or a sentence saying why
    the pose is not a standing T- or A-pose (a degenerate frame, or a bone more than
    :data:`~mmar.skeleton.CANONICAL_REST_TOLERANCE_DEG` from its canonical direction)."""
    pos = np.asarray(pos, np.float64)
    R = np.tile(np.eye(3), (NUM_JOINTS, 1, 1))
    order = [0, 9] + [j for j in range(NUM_JOINTS) if j not in (0, 9)]
    for j in order:
        pa, (a, b), sa, ref = CANONICAL_REST_RULES[j]
        primary = pos[b] - pos[a]
        if ref[0] == "joints":
            secondary = pos[ref[2]] - pos[ref[1]]
        else:
            secondary = R[ref[1]] @ axis_vector(sa)
        if np.linalg.norm(primary) < 1e-6:
            return R, f"{SMPL22_NAMES[a]} and {SMPL22_NAMES[b]} are at the same place"
        R[j], sin = frame_from_directions(primary, secondary, pa, sa)
        if sin < 0.25:
            return R, f"the frame of {SMPL22_NAMES[j]} is degenerate ({SMPL22_NAMES[a]} -> {SMPL22_NAMES[b]} is " \
                      f"nearly parallel to its reference direction)"
    body = R[0].T
    for j in range(1, NUM_JOINTS):
        pa, (a, b), _, _ = CANONICAL_REST_RULES[j]
        d = body @ (pos[b] - pos[a])
        cos = float(d @ axis_vector(pa)) / max(float(np.linalg.norm(d)), 1e-12)
        ang = math.degrees(math.acos(min(1.0, max(-1.0, cos))))
        if ang > CANONICAL_REST_TOLERANCE_DEG[j]:
            return R, (f"{SMPL22_NAMES[a]} -> {SMPL22_NAMES[b]} is {ang:.0f} degrees from its T-pose direction "
                       f"({pa} in the pelvis frame)")
    hips = pos[1] - pos[2]
    up = pos[9] - pos[0]
    ang = math.degrees(math.acos(float(hips @ up) / max(float(np.linalg.norm(hips) * np.linalg.norm(up)), 1e-12)))
    if abs(ang - 90.0) > 40.0:
        return R, f"the hips are {ang:.0f} degrees from the spine"
    return R, None


def _rest_fk(parents: Sequence[int], offsets: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """Positions of a pose given by global rotations ``rot (J, 3, 3)`` (root at the origin)."""
    off = np.asarray(offsets, np.float64)
    pos = np.zeros((len(parents), 3))
    for j in range(1, len(parents)):
        p = parents[j]
        pos[j] = pos[p] + rot[p] @ off[j]
    return pos


def _declared_rotations(names: Sequence[str], parents: Sequence[int], pose: dict) -> np.ndarray:
    rot = np.tile(np.eye(3), (len(names), 1, 1))
    for j, n in enumerate(names):
        if n in pose:
            x, y = (axis_vector(a) for a in pose[n])
            rot[j] = np.stack([x, y, np.cross(x, y)], -1)
        elif parents[j] >= 0:
            rot[j] = rot[parents[j]]
    return rot


def rest_alignment(names: Sequence[str], parents: Sequence[int], offsets: np.ndarray,
                   mapping: Sequence) -> RestAlignment:
    """Tie a skeleton's joint frames to the canonical T-pose frames (docs/design.md,
    "Canonical rest pose").

    The rest pose is the first of: the skeleton's zero-rotation pose (its ``offsets``), when
    that is a standing T- or A-pose (:func:`canonical_rest_frames` says so); the T-pose
    declared for its joint map in :data:`REST_POSES` (Bandai's rig, whose zero pose is not a
    body pose). Maps in :data:`CANONICAL_MAPS` are canonical as they are. With rest-pose
    global rotations ``G_rest`` and the canonical frames ``R`` built from the rest positions,
    ``K = G_rest^T R`` per joint, so that ``G @ K`` is the canonical global rotation of any
    pose ``G``; it depends on neither the local axes nor on whether the rest pose is a T- or
    an A-pose (arms lowered in the body's frontal plane). When no rest pose is recognised,
    ``K`` is the identity and ``rest`` is :data:`FILE_FRAMES`.
    """
    ident = np.tile(np.eye(3), (NUM_JOINTS, 1, 1))
    name = _map_name(mapping)
    if name in CANONICAL_MAPS:
        return RestAlignment(ident, "canonical")
    idx = {n: i for i, n in enumerate(names)}
    try:
        specs = [_spec_joints(spec) for spec in mapping]
        rot_idx = [idx[r] for r, _ in specs]
        pos_idx = [[idx[p] for p in ps] for _, ps in specs]
    except KeyError as e:
        raise KeyError(f"joint {e.args[0]!r} not in skeleton {tuple(names)}") from None
    candidates = [("zero pose", np.tile(np.eye(3), (len(names), 1, 1)))]
    if name in REST_POSES:
        candidates.append((f"declared T-pose of {name!r}", _declared_rotations(names, parents, REST_POSES[name])))
    reasons = []
    for rest, rot in candidates:
        P = _rest_fk(parents, offsets, rot)
        pos = np.stack([P[ps].mean(0) for ps in pos_idx])
        R, problem = canonical_rest_frames(pos)
        if problem is None:
            K = np.swapaxes(rot[rot_idx], -1, -2) @ R
            return RestAlignment(K, rest)
        reasons.append(f"{rest}: {problem}")
    return RestAlignment(ident, FILE_FRAMES, "; ".join(reasons))

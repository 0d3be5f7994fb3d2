"""ASF/AMC (Acclaim skeleton and motion files, the format of the CMU and HDM05 databases).

:func:`read_asf_amc` reads a skeleton (``.asf``) and one motion (``.amc``) into the same
:class:`mmar.data.clip.Clip` the BVH reader produces, on the ASF's own skeleton; its
:meth:`~mmar.data.clip.Clip.retarget` maps it to SMPL-22 (joint map ``"cmu_asf"`` of
:data:`mmar.data.arrays.JOINT_MAPS`, picked by the bone names) with the canonical rest pose of
``docs/design.md``.

**ASF.** Sections ``:units`` (``mass``, ``length``, ``angle deg|rad``), ``:documentation``
(skipped), ``:root`` (``order`` of the AMC root values, e.g. ``TX TY TZ RX RY RZ``; ``axis``,
the rotation order of ``orientation``; ``position``; ``orientation``), ``:bonedata`` (one
``begin`` ... ``end`` block per bone: ``id``, ``name``, ``direction``, ``length``, ``axis ax ay
az ORDER``, optional ``dof`` (``rx ry rz`` in any order and subset), ``limits`` (one ``(lo
hi)`` pair per dof, read and checked for count), ``bodymass``, ``cofmass``) and
``:hierarchy`` (``begin``, lines ``parent child...``, ``end``). Other sections (``:skin``) are
skipped. ``#`` starts a comment; commas and parentheses are blanks.

**AMC.** Header lines starting with ``:`` (``:FULLY-SPECIFIED``; ``:DEGREES`` or
``:RADIANS``, default: the ASF's angle unit), then frames: a line with the frame number, then
one line per bone with degrees of freedom: its name and one value per dof, in the dof order
(the root: one value per ``order`` token). Frame numbers must count up by one; every frame must
give every such bone exactly once (as ``:FULLY-SPECIFIED`` files do).

**Kinematics** (the standard CMU convention). The skeleton is defined in a world frame in
its rest pose: each bone starts where its parent ends (children of the root at the root) and
points along ``direction`` (world axes) for ``length``. A bone's ``axis`` angles give the
matrix ``C`` of its local frame; ``axis ... XYZ`` means ``C = Rz(az) Ry(ay) Rx(ax)`` (rotations
about the fixed axes, X first), and its dof values give ``M`` in the same way, in dof order
(``dof rx ry rz`` gives ``M = Rz(rz) Ry(ry) Rx(rx)``). The bone turns by ``L = C M C^-1`` in its
parent's frame; the root by ``C M C^-1`` with ``C`` from ``orientation`` in the ``axis`` order and
``M`` from its rotation values in ``order``. With ``L`` as the local rotations, the clip's
joint frames are the world axes at rest (all values zero), and forward kinematics is that of
:mod:`mmar.geometry_np`.

As a :class:`~mmar.data.clip.Clip`: one joint per bone, placed where the bone *starts*
(``root`` first, then the bones depth first in the order of ``:hierarchy``), turning with the
bone's rotation; its offset is the parent bone's vector (zero for the root's children). The end
points of bones without children (head top, toe and finger tips) are dropped, like BVH ``End
Site`` blocks. ``root_pos`` is the AMC root translation (``position`` for a missing
component).

**Units.** ``length`` is the ASF's length multiplier: a file length divided by it is in
inches (the Acclaim definition; CMU and HDM05 write ``length 0.45``), so metres = value x
0.0254 / length: 0.056444 m per unit for CMU and HDM05 (HDM05's performer "bk" is 1.74 m from
toe joints to head top in the rest pose). ``scale`` overrides it. AMC files carry no frame
rate: ``fps`` (default 120, the rate of CMU and HDM05) gives it.

Malformed input raises :class:`mmar.errors.DataFormatError` naming the file and the line.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import TYPE_CHECKING, Sequence

import numpy as np

import mmar.data.bvh  # noqa: F401 (registers the "cmu_asf" joint map)
from mmar.data.bvh import _float as _bvh_float
from mmar.data.arrays import check_fps
from mmar.errors import DataFormatError
from mmar.geometry_np import euler_to_matrix

if TYPE_CHECKING:  # pragma: no cover
    from mmar.data.clip import Clip

__all__ = [
    "AsfBone",
    "AsfSkeleton",
    "AmcMotion",
    "ASF_FPS",
    "INCH",
    "parse_asf",
    "read_asf",
    "parse_amc",
    "read_amc",
    "asf_clip",
    "read_asf_amc",
    "load_amc_inputs",
]

ASF_FPS = 120.0  # CMU and HDM05 capture rate (AMC files do not say)
INCH = 0.0254

_ROT_DOFS = ("rx", "ry", "rz")
_BONE_KEYS = ("id", "name", "direction", "length", "axis", "dof", "limits", "bodymass", "cofmass")
_BLANKS = re.compile(r"[,()]")


@dataclasses.dataclass
class AsfBone:
    """One ``:bonedata`` block; angles in radians, ``direction`` a unit vector, ``length`` in
    file units."""

    name: str
    direction: np.ndarray
    length: float
    axis: np.ndarray
    axis_order: str
    dof: tuple[str, ...]
    line: int
    id: int | None = None

    def frame(self) -> np.ndarray:
        """``C``: the bone's local axes in world coordinates (float64)."""
        return _fixed_axes(self.axis, self.axis_order)


@dataclasses.dataclass
class AsfSkeleton:
    """A parsed ASF file: units, root, bones (file order) and the hierarchy."""

    path: str
    name: str
    length: float  # the `length` multiplier of :units
    angle: str  # "deg" or "rad"
    root_order: tuple[str, ...]  # e.g. ("TX", "TY", "TZ", "RX", "RY", "RZ")
    root_axis: str  # rotation order of `orientation`
    root_position: np.ndarray
    root_orientation: np.ndarray  # radians
    bones: dict[str, AsfBone]
    children: dict[str, list[str]]  # parent ("root" or a bone) -> children in :hierarchy order

    @property
    def metres_per_unit(self) -> float:
        return INCH / self.length

    def joint_order(self) -> list[str]:
        """``root`` then every bone, depth first in ``:hierarchy`` order (parents first)."""
        out, todo = [], ["root"]
        while todo:
            n = todo.pop()
            out.append(n)
            todo.extend(reversed(self.children.get(n, [])))
        return out

    def parents(self) -> dict[str, str]:
        return {c: p for p, cs in self.children.items() for c in cs}

    def rest_positions(self, scale: float | None = None) -> dict[str, np.ndarray]:
        """World positions of each bone's start and of the end of every leaf bone
        (``"<bone>:end"``), in metres (``scale``: metres per file unit), root at the origin."""
        s = self.metres_per_unit if scale is None else float(scale)
        par = self.parents()
        out = {"root": np.zeros(3)}
        for n in self.joint_order()[1:]:
            p = par[n]
            out[n] = out[p] + (self._vector(p) * s if p != "root" else 0.0)
            if not self.children.get(n):
                out[f"{n}:end"] = out[n] + self._vector(n) * s
        return out

    def _vector(self, bone: str) -> np.ndarray:
        b = self.bones[bone]
        return b.direction * b.length


@dataclasses.dataclass
class AmcMotion:
    """The values of an AMC file: ``root (T, len(root_order))``, ``bones`` name -> ``(T,
    len(dof))`` (file units; angles in the file's unit, ``radians`` says which)."""

    path: str
    root: np.ndarray
    bones: dict[str, np.ndarray]
    radians: bool
    first_frame: int

    @property
    def num_frames(self) -> int:
        return int(self.root.shape[0])


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _fixed_axes(angles: np.ndarray, order: str) -> np.ndarray:
    """Rotations about fixed axes applied in ``order`` (``"XYZ"``: X first):
    ``R = R_order[2] R_order[1] R_order[0]``; ``angles`` in radians, in X, Y, Z slots."""
    order = order.upper()
    slot = {"X": 0, "Y": 1, "Z": 2}
    a = np.asarray(angles, np.float64)
    rev = order[::-1]
    return euler_to_matrix(np.stack([a[..., slot[c]] for c in rev], -1), rev)


def _lines(text: str):
    """``(line number, tokens)`` of every non-blank line, comments and ``,()`` removed."""
    for ln, raw in enumerate(text.split("\n"), 1):
        line = raw.split("#", 1)[0]
        if "," in line or "(" in line or ")" in line:
            line = _BLANKS.sub(" ", line)
        toks = line.split()
        if toks:
            yield ln, toks


_num = _bvh_float  # one finite number of the file, or a DataFormatError naming file and line


def _nums(toks: Sequence[str], n: int, path: str, ln: int, what: str) -> list[float]:
    if len(toks) != n:
        raise DataFormatError(f"{what} needs {n} number{'s' if n != 1 else ''}, found {len(toks)}", path, ln)
    return [_num(t, path, ln, what) for t in toks]


def _read_text(path) -> tuple[str, str]:
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataFormatError(f"cannot read file ({e.strerror})", p) from e
    if b"\x00" in raw[:65536]:
        raise DataFormatError("not a text file (it has NUL bytes)", p)
    return raw.decode("utf-8", "replace"), p


# --------------------------------------------------------------------------
# ASF
# --------------------------------------------------------------------------

def parse_asf(text: str, path: str = "<string>") -> AsfSkeleton:
    """Parse ASF text (see the module docstring)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    name = ""
    length, angle = 1.0, "deg"
    root_order: tuple[str, ...] | None = None
    root_axis = "XYZ"
    root_pos = np.zeros(3)
    root_orient = np.zeros(3)
    raw_bones: list[dict] = []
    hierarchy: list[tuple[int, list[str]]] = []
    section = None
    bone: dict | None = None
    in_hier = False
    last_limits_owner: dict | None = None
    for ln, toks in _lines(text):
        head = toks[0]
        if head.startswith(":"):
            if bone is not None:
                raise DataFormatError(f"bone block not closed ('end' missing) before {head}", path, ln)
            key = head[1:].lower()
            section = key
            last_limits_owner = None
            if key == "name":
                name = " ".join(toks[1:])
            elif key in ("version", "units", "documentation", "root", "bonedata", "hierarchy"):
                pass
            else:
                section = "skip"  # e.g. :skin
            if key in ("units", "root") and len(toks) > 1:
                raise DataFormatError(f"unexpected text after {head}", path, ln)
            continue
        if section is None:
            raise DataFormatError(f"expected a ':' keyword, found {head!r}", path, ln)
        if section in ("documentation", "skip", "version", "name"):
            continue
        if section == "units":
            k = head.lower()
            if k in ("mass", "length"):
                (v,) = _nums(toks[1:], 1, path, ln, f"units {k}")
                if v <= 0:
                    raise DataFormatError(f"units {k} must be positive, got {v:g}", path, ln)
                if k == "length":
                    length = v
            elif k == "angle":
                if len(toks) != 2 or toks[1].lower() not in ("deg", "rad"):
                    raise DataFormatError("units angle must be 'deg' or 'rad'", path, ln)
                angle = toks[1].lower()
            else:
                raise DataFormatError(f"unknown unit {head!r}", path, ln)
            continue
        if section == "root":
            k = head.lower()
            if k == "order":
                order = tuple(t.upper() for t in toks[1:])
                bad = [t for t in order if t not in ("TX", "TY", "TZ", "RX", "RY", "RZ")]
                if bad or len(set(order)) != len(order):
                    raise DataFormatError(f"root order must list TX TY TZ RX RY RZ at most once each, got "
                                          f"{' '.join(toks[1:])!r}", path, ln)
                root_order = order
            elif k == "axis":
                if len(toks) != 2 or sorted(toks[1].upper()) != ["X", "Y", "Z"]:
                    raise DataFormatError("root axis must be an order of X, Y and Z (e.g. XYZ)", path, ln)
                root_axis = toks[1].upper()
            elif k == "position":
                root_pos = np.array(_nums(toks[1:], 3, path, ln, "root position"))
            elif k == "orientation":
                root_orient = np.array(_nums(toks[1:], 3, path, ln, "root orientation"))
            else:
                raise DataFormatError(f"unknown root field {head!r}", path, ln)
            continue
        if section == "bonedata":
            k = head.lower()
            if k == "begin":
                if bone is not None:
                    raise DataFormatError("'begin' inside a bone block ('end' missing)", path, ln)
                bone = {"line": ln}
                last_limits_owner = None
                continue
            if bone is None:
                raise DataFormatError(f"{head!r} outside a begin ... end bone block", path, ln)
            if k == "end":
                raw_bones.append(bone)
                bone = None
                continue
            if k not in _BONE_KEYS:
                if last_limits_owner is not None and re.fullmatch(r"[-+0-9.eE]+|[-+]?inf", head):
                    # a further (lo hi) pair of `limits`
                    bone["limits"].append((ln, toks))
                    continue
                raise DataFormatError(f"unknown bone field {head!r}", path, ln)
            if k in bone and k != "limits":
                raise DataFormatError(f"second {k!r} in the bone block", path, ln)
            last_limits_owner = None
            if k == "id":
                bone["id"] = (ln, toks[1:])
            elif k == "name":
                if len(toks) != 2:
                    raise DataFormatError("bone name must be one word", path, ln)
                bone["name"] = (ln, toks[1])
            elif k == "direction":
                bone["direction"] = (ln, np.array(_nums(toks[1:], 3, path, ln, "direction")))
            elif k == "length":
                bone["length"] = (ln, _nums(toks[1:], 1, path, ln, "length")[0])
            elif k == "axis":
                if len(toks) != 5 or sorted(toks[4].upper()) != ["X", "Y", "Z"]:
                    raise DataFormatError("axis needs three angles and an order of X, Y and Z (e.g. "
                                          "'axis 0 0 20 XYZ')", path, ln)
                bone["axis"] = (ln, np.array(_nums(toks[1:4], 3, path, ln, "axis")), toks[4].upper())
            elif k == "dof":
                dof = tuple(t.lower() for t in toks[1:])
                for t in dof:
                    if t in ("tx", "ty", "tz", "l"):
                        raise DataFormatError(f"translation / length degree of freedom {t!r} is not supported "
                                              f"(only rx, ry, rz)", path, ln)
                    if t not in _ROT_DOFS:
                        raise DataFormatError(f"unknown degree of freedom {t!r}", path, ln)
                if len(set(dof)) != len(dof):
                    raise DataFormatError("a degree of freedom is listed twice", path, ln)
                bone["dof"] = (ln, dof)
            elif k == "limits":
                bone["limits"] = [(ln, toks[1:])] if len(toks) > 1 else []
                bone["limits_line"] = ln
                last_limits_owner = bone
            # bodymass, cofmass: not used
            continue
        if section == "hierarchy":
            k = head.lower()
            if k == "begin":
                in_hier = True
                continue
            if k == "end":
                in_hier = False
                continue
            if not in_hier:
                raise DataFormatError(f"hierarchy line {head!r} outside begin ... end", path, ln)
            if len(toks) < 2:
                raise DataFormatError(f"hierarchy line lists {head!r} without children", path, ln)
            hierarchy.append((ln, toks))
            continue
    if bone is not None:
        raise DataFormatError("bone block not closed ('end' missing)", path, bone["line"])
    scale_angle = math.pi / 180.0 if angle == "deg" else 1.0
    if root_order is None:
        raise DataFormatError("no ':root' section with an 'order' line", path)
    bones: dict[str, AsfBone] = {}
    for b in raw_bones:
        ln = b["line"]
        for key in ("name", "direction", "length"):
            if key not in b:
                raise DataFormatError(f"bone block without {key!r}", path, ln)
        bln, bname = b["name"]
        if bname == "root":
            raise DataFormatError("a bone may not be called 'root'", path, bln)
        if bname in bones:
            raise DataFormatError(f"duplicate bone name {bname!r}", path, bln)
        dln, d = b["direction"]
        n = float(np.linalg.norm(d))
        if n < 1e-9:
            raise DataFormatError(f"bone {bname!r}: direction is zero", path, dln)
        lln, L = b["length"]
        if L < 0:
            raise DataFormatError(f"bone {bname!r}: negative length {L:g}", path, lln)
        if "axis" in b:
            _, ax, order = b["axis"]
        else:
            ax, order = np.zeros(3), "XYZ"
        dof = b.get("dof", (None, ()))[1]
        if "limits" in b:
            pairs = []
            for lim_ln, toks in b["limits"]:
                if len(toks) % 2:
                    raise DataFormatError(f"bone {bname!r}: limits need (lo hi) pairs", path, lim_ln)
                pairs.extend(toks[i:i + 2] for i in range(0, len(toks), 2))
            if len(pairs) != len(dof):
                raise DataFormatError(f"bone {bname!r}: {len(pairs)} limits for {len(dof)} degrees of freedom", path,
                                      b["limits_line"])
        bid = None
        if "id" in b:
            iln, itoks = b["id"]
            try:
                bid = int(itoks[0]) if len(itoks) == 1 else None
            except ValueError:
                bid = None
            if bid is None:
                raise DataFormatError("bone id must be one integer", path, iln)
        bones[bname] = AsfBone(bname, d / n, float(L), ax * scale_angle, order, dof, ln, bid)
    if not bones:
        raise DataFormatError("no bones in ':bonedata'", path)
    children: dict[str, list[str]] = {}
    parent_of: dict[str, str] = {}
    for ln, toks in hierarchy:
        p = toks[0]
        if p != "root" and p not in bones:
            raise DataFormatError(f"hierarchy names bone {p!r}, which ':bonedata' does not define", path, ln)
        for c in toks[1:]:
            if c not in bones:
                raise DataFormatError(f"hierarchy names bone {c!r}, which ':bonedata' does not define", path, ln)
            if c in parent_of:
                raise DataFormatError(f"bone {c!r} has two parents ({parent_of[c]!r} and {p!r})", path, ln)
            parent_of[c] = p
            children.setdefault(p, []).append(c)
    if not hierarchy:
        raise DataFormatError("no ':hierarchy' section (or it is empty)", path)
    # every bone must hang below the root, without cycles
    reached, todo = set(), ["root"]
    while todo:
        n = todo.pop()
        if n in reached:
            continue
        reached.add(n)
        todo.extend(children.get(n, []))
    missing = [b for b in bones if b not in reached]
    if missing:
        b0 = bones[missing[0]]
        raise DataFormatError(f"bone{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing[:5]))} "
                              f"{'are' if len(missing) > 1 else 'is'} not connected to the root in ':hierarchy'",
                              path, b0.line)
    return AsfSkeleton(path=path, name=name, length=length, angle=angle, root_order=root_order, root_axis=root_axis,
                       root_position=root_pos, root_orientation=root_orient * scale_angle, bones=bones,
                       children=children)


def read_asf(path) -> AsfSkeleton:
    """Read an ASF file."""
    text, p = _read_text(path)
    return parse_asf(text, p)


# --------------------------------------------------------------------------
# AMC
# --------------------------------------------------------------------------

def parse_amc(text: str, skeleton: AsfSkeleton, path: str = "<string>") -> AmcMotion:
    """Parse AMC text for ``skeleton`` (see the module docstring)."""
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    counts = {"root": len(skeleton.root_order)}
    counts.update({n: len(b.dof) for n, b in skeleton.bones.items() if b.dof})
    radians = skeleton.angle == "rad"
    values: dict[str, list[list[float]]] = {n: [] for n in counts}
    frame_lines: list[int] = []
    seen: dict[str, int] = {}
    first = None
    prev = None

    def close_frame(end_line: int) -> None:
        if prev is None:
            return
        missing = [n for n in counts if n not in seen]
        if missing:
            raise DataFormatError(f"frame {prev} lacks {len(missing)} bone{'s' if len(missing) > 1 else ''}: "
                                  f"{', '.join(map(repr, missing[:8]))}{' ...' if len(missing) > 8 else ''}", path,
                                  frame_lines[-1])

    for ln, toks in _lines(text):
        head = toks[0]
        if head.startswith(":"):
            if prev is not None:
                raise DataFormatError(f"header line {head!r} after the first frame", path, ln)
            k = head.upper()
            if k == ":DEGREES":
                radians = False
            elif k == ":RADIANS":
                radians = True
            continue
        if len(toks) == 1 and re.fullmatch(r"[+-]?\d+", head):
            close_frame(ln)
            num = int(head)
            if prev is None:
                first = num
            elif num != prev + 1:
                raise DataFormatError(f"frame {num} follows frame {prev} (frame numbers must count up by one)", path,
                                      ln)
            prev = num
            frame_lines.append(ln)
            seen = {}
            continue
        if prev is None:
            raise DataFormatError(f"bone values before the first frame number: {head!r}", path, ln)
        if head not in counts:
            if head in skeleton.bones:
                raise DataFormatError(f"bone {head!r} has no degrees of freedom in the ASF but values here", path,
                                      ln)
            raise DataFormatError(f"bone {head!r} is not in the skeleton {skeleton.path}", path, ln)
        if head in seen:
            raise DataFormatError(f"bone {head!r} given twice in frame {prev}", path, ln)
        n = counts[head]
        if len(toks) - 1 != n:
            raise DataFormatError(f"bone {head!r} needs {n} value{'s' if n != 1 else ''}, found {len(toks) - 1}",
                                  path, ln)
        try:
            vals = [float(t) for t in toks[1:]]
        except ValueError:
            vals = [_num(t, path, ln, f"the values of {head!r}") for t in toks[1:]]
        if not all(math.isfinite(v) for v in vals):
            raise DataFormatError(f"non-finite value for bone {head!r}", path, ln)
        seen[head] = ln
        values[head].append(vals)
    if prev is None:
        raise DataFormatError("no frames", path)
    close_frame(0)
    T = len(frame_lines)
    arrays = {n: np.asarray(v, np.float64).reshape(T, counts[n]) for n, v in values.items()}
    root = arrays.pop("root")
    return AmcMotion(path=path, root=root, bones=arrays, radians=radians, first_frame=int(first))


def read_amc(path, skeleton: AsfSkeleton) -> AmcMotion:
    """Read an AMC file for ``skeleton``."""
    text, p = _read_text(path)
    return parse_amc(text, skeleton, p)


# --------------------------------------------------------------------------
# clips
# --------------------------------------------------------------------------

def _dof_matrices(values: np.ndarray, dof: Sequence[str], radians: bool) -> np.ndarray:
    """``M`` of every frame: rotations about the fixed axes in ``dof`` order (first listed
    first), angles in the AMC's unit."""
    T = values.shape[0]
    ang = values if radians else np.deg2rad(values)
    M = np.tile(np.eye(3), (T, 1, 1))
    for k, d in enumerate(dof):
        M = _axis_rotation(d[1].upper(), ang[:, k]) @ M
    return M


def _axis_rotation(axis: str, ang: np.ndarray) -> np.ndarray:
    c, s = np.cos(ang), np.sin(ang)
    o, z = np.ones_like(ang), np.zeros_like(ang)
    if axis == "X":
        rows = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == "Y":
        rows = [[c, z, s], [z, o, z], [-s, z, c]]
    else:
        rows = [[c, -s, z], [s, c, z], [z, z, o]]
    return np.stack([np.stack(r, -1) for r in rows], -2)


def asf_clip(skeleton: AsfSkeleton, motion: AmcMotion, fps: float = ASF_FPS, scale: float | None = None,
             name: str | None = None) -> "Clip":
    """The :class:`~mmar.data.clip.Clip` of ``motion`` on ``skeleton`` (module docstring)."""
    from mmar.data.arrays import check_finite
    from mmar.data.clip import Clip, Skeleton

    fps = check_fps(fps, "fps")
    s = skeleton.metres_per_unit if scale is None else float(scale)
    if not (s > 0 and math.isfinite(s)):
        raise DataFormatError(f"scale must be a positive number of metres per unit, got {scale!r}", motion.path)
    names = skeleton.joint_order()
    index = {n: i for i, n in enumerate(names)}
    par = skeleton.parents()
    parents = [-1] + [index[par[n]] for n in names[1:]]
    offsets = np.zeros((len(names), 3))
    for j, n in enumerate(names[1:], 1):
        p = par[n]
        if p != "root":
            b = skeleton.bones[p]
            offsets[j] = b.direction * b.length * s
    T = motion.num_frames
    local = np.tile(np.eye(3), (T, len(names), 1, 1))
    # root
    order = skeleton.root_order
    rots = [t for t in order if t.startswith("R")]
    rvals = np.stack([motion.root[:, order.index(t)] for t in rots], -1) if rots else np.zeros((T, 0))
    M = _dof_matrices(rvals, [t.lower() for t in rots], motion.radians)
    C = _fixed_axes(skeleton.root_orientation, skeleton.root_axis)
    local[:, 0] = C @ M @ C.T
    root_pos = np.broadcast_to(skeleton.root_position, (T, 3)).copy()
    for k, t in enumerate(("TX", "TY", "TZ")):
        if t in order:
            root_pos[:, k] = motion.root[:, order.index(t)]
    root_pos *= s
    for n, b in skeleton.bones.items():
        if not b.dof:
            continue
        C = b.frame()
        M = _dof_matrices(motion.bones[n], b.dof, motion.radians)
        local[:, index[n]] = C @ M @ C.T
    clip_name = name or _clip_name(motion.path)
    check_finite({"local_rot": local, "root_pos": root_pos, "offsets": offsets}, "ASF/AMC conversion", motion.path)
    return Clip(name=clip_name, skeleton=Skeleton(tuple(names), tuple(parents), offsets.astype(np.float32)),
                local_rot=local.astype(np.float32), root_pos=root_pos.astype(np.float32), fps=fps, source=motion.path)


def _clip_name(path: str) -> str:
    base = os.path.basename(str(path).replace("\\", "/"))
    if base.lower().endswith(".amc"):
        base = base[:-4]
    return base or "clip"


def read_asf_amc(asf_path, amc_path, fps: float = ASF_FPS, scale: float | None = None,
                 name: str | None = None, skeleton: AsfSkeleton | None = None) -> "Clip":
    """Read an ASF skeleton and an AMC motion into a :class:`~mmar.data.clip.Clip` on the
    ASF's skeleton (joint per bone, metres, ``fps`` frames per second; ``name`` defaults to
    the AMC file name without ``.amc``). Pass an already parsed ``skeleton`` to read many AMC
    files of one ASF. ``clip.retarget()`` maps it to SMPL-22."""
    sk = skeleton if skeleton is not None else read_asf(asf_path)
    motion = read_amc(amc_path, sk)
    return asf_clip(sk, motion, fps=fps, scale=scale, name=name)


def load_amc_inputs(paths: Sequence[str], asf: str | None = None, fps: float = ASF_FPS,
                    retarget: bool = True) -> tuple[list, list[str]]:
    """Clips of the AMC files among ``paths`` on the skeleton ``asf`` (or the one ``.asf``
    file among ``paths``), retargeted to SMPL-22 unless ``retarget`` is false -> ``(clips,
    errors)``: a missing or malformed AMC file is reported in ``errors`` (file and line) and
    the others are still read (the command line's ``mmar convert --asf``)."""
    asfs = [p for p in paths if str(p).lower().endswith(".asf")]
    amcs = [p for p in paths if not str(p).lower().endswith(".asf")]
    if asf is not None:
        asfs = [asf] + [p for p in asfs if os.path.abspath(p) != os.path.abspath(asf)]
    if not asfs:
        return [], [f"{amcs[0]}: an AMC file needs its skeleton: pass --asf SKELETON.asf"] if amcs else []
    if len(asfs) > 1:
        return [], [f"{asfs[1]}: several ASF skeletons given ({', '.join(map(str, asfs[:3]))}); convert the "
                    f"motions of one skeleton at a time"]
    if not amcs:
        return [], [f"{asfs[0]}: no AMC motion file given with the skeleton"]
    try:
        sk = read_asf(asfs[0])
    except DataFormatError as e:
        return [], [str(e)]
    clips, errors = [], []
    for p in amcs:
        if not os.path.isfile(p):
            errors.append(f"{p}: no such file")
            continue
        try:
            c = read_asf_amc(asfs[0], p, fps=fps, skeleton=sk)
            clips.append(c.retarget() if retarget else c)
        except DataFormatError as e:  # MissingJointsError too
            errors.append(str(e))
        except KeyError as e:  # no registered joint map fits the bone names
            errors.append(f"{p}: {e.args[0]}")
    return clips, errors

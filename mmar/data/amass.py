"""AMASS motion files (SMPL-H axis-angle, Z up) to SMPL-22 clips (Y up, metres).

Users bring two licensed inputs: the AMASS ``*_poses.npz`` files and an SMPL-H body model
``model.npz`` (the AMASS/MANO-merged SMPL+H file). Only the rest-pose joints of the body
model are needed: ``J = J_regressor @ (v_template + shapedirs[..., :n] @ betas[:n])``.

SMPL forward kinematics, which :func:`load_amass_clip` reproduces exactly on the 22 body joints:
every joint j has the transform ``A_j = A_parent [R_j, J_j - J_parent]`` with
``A_0 = [R_0, J_0]``, and the posed joint is ``trans + A_j[:3, 3]``. Hence the pelvis sits at
``trans + J_0`` (the root rotation acts about ``J_0``) and, with rest offsets
``J_j - J_parent``, the mmar FK ``p_j = p_parent + G_parent offset_j`` gives every joint.

Up-axis conversion (``frame``). For an orthogonal ``M`` acting on positions, the clip with
positions ``M p``, global rotations ``M G M^T``, local rotations ``M L M^T`` and offsets
``M offset`` has exactly the transformed joints:
``M p_par + (M G_par M^T)(M off) = M (p_par + G_par off)``. Every local rotation, not only the
root's, is conjugated (``L'_j = G'_par^T G'_j = M L_j M^T``), and ``M R M^T`` is a proper
rotation even when ``M`` is a reflection (``det = det(M)^2 det(R) = 1``).

* ``frame="humanml3d"`` (default, ``docs/design.md``): ``M = [[-1,0,0],[0,0,1],[0,1,0]]``
  (the HumanML3D swap, then x negated, as the published HumanML3D processing does) -- a
  proper rotation (180 deg about Y after -90 deg about X), so the body keeps its chirality.
* ``frame="swap"``: ``M = S = [[1,0,0],[0,0,1],[0,1,0]]``, the swap matrix alone. ``S`` is a
  reflection, so the converted body is the mirror image of the captured one (its left side is
  where a right side would be for its facing); kept only for comparison with code that uses it.
* ``frame="z_up"``: no conversion.

AGRoL protocol (``fps=60``): 120 fps captures are taken with stride 2 (60 fps ones as they
are); other integer ratios use a stride too, and non-integer ratios slerp
(:meth:`mmar.data.clip.Clip.resample`). AGRoL evaluates every clip with the male model and zero
betas (``use_betas=False``), following AvatarPoser.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import zipfile
from typing import Mapping, Sequence

import numpy as np

from mmar import geometry
from mmar.data.clip import Clip, smpl22_skeleton
from mmar.errors import DataFormatError
from mmar.skeleton import NUM_JOINTS, SMPL22_PARENTS

SWAP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
FRAMES: dict[str, np.ndarray] = {
    "swap": SWAP,
    "humanml3d": np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]),
    "z_up": np.eye(3),
}

# AGRoL protocol S1: three subsets, each split 90/10 by file. Older AMASS releases name them
# BioMotionLab_NTroje / CMU / MPI_HDM05, newer ones BMLrub / CMU / HDM05.
S1_SUBSETS: tuple[str, ...] = ("CMU", "BioMotionLab_NTroje", "MPI_HDM05")
SUBSET_ALIASES: dict[str, tuple[str, ...]] = {
    "CMU": ("CMU",),
    "BioMotionLab_NTroje": ("BioMotionLab_NTroje", "BMLrub"),
    "MPI_HDM05": ("MPI_HDM05", "HDM05"),
}


# --------------------------------------------------------------------------
# body model
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BodyModel:
    """Rest-pose joint regression of an SMPL-H model.

    ``joints(betas) = j_template + j_shapedirs @ betas`` for all 52 joints (the regressor is
    linear, so it is applied to the template and to the shape directions once at load time).
    """

    path: str
    j_template: np.ndarray  # (J, 3) float64
    j_shapedirs: np.ndarray  # (J, 3, B) float64
    parents: tuple[int, ...]  # (J,)

    @property
    def num_betas(self) -> int:
        return int(self.j_shapedirs.shape[-1])

    def rest_joints(self, betas: np.ndarray | None = None, num_betas: int | None = None) -> np.ndarray:
        """Rest joint positions ``(J, 3)``; betas beyond the model's shape space are ignored."""
        j = self.j_template.copy()
        if betas is None:
            return j
        b = np.asarray(betas, np.float64).reshape(-1)
        n = min(b.shape[0], self.num_betas)
        if num_betas is not None:
            n = min(n, int(num_betas))
        if n:
            j = j + self.j_shapedirs[..., :n] @ b[:n]
        return j

    def body_offsets(self, betas: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(rest joints (22, 3), offsets (22, 3))`` of the body joints in the model frame;
        ``offsets[0] = 0`` and ``offsets[j] = J_j - J_parent``."""
        J = self.rest_joints(betas)[:NUM_JOINTS]
        par = np.array(SMPL22_PARENTS[1:])
        off = np.zeros((NUM_JOINTS, 3))
        off[1:] = J[1:] - J[par]
        return J, off


def _npz_get(z, key: str, path: str, allow_pickle: bool):
    try:
        arr = z[key]
    except ValueError as e:  # object array in a file opened without pickle
        if not allow_pickle:
            raise DataFormatError(
                f"array {key!r} is stored as a pickled object (e.g. a scipy sparse matrix); "
                "pass allow_pickle=True to read it (only for files you trust)",
                path,
            ) from e
        raise DataFormatError(f"cannot read array {key!r} ({e})", path) from e
    if arr.dtype == object:
        obj = arr.item() if arr.shape == () else arr
        if hasattr(obj, "toarray"):
            obj = obj.toarray()
        try:
            arr = np.asarray(obj, np.float64)
        except (TypeError, ValueError) as e:
            raise DataFormatError(f"array {key!r} is an unreadable object ({type(obj).__name__})", path) from e
    return arr


def load_body_model(path: str, allow_pickle: bool = False) -> BodyModel:
    """Read an SMPL-H ``model.npz`` (keys ``v_template``, ``shapedirs``, ``J_regressor``,
    ``kintree_table``; others are ignored). ``J_regressor`` may be dense or a pickled scipy
    sparse matrix; the latter needs ``allow_pickle=True`` (and scipy)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataFormatError("body model file not found", path)
    try:
        z = np.load(path, allow_pickle=allow_pickle)
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise DataFormatError(f"not a readable npz file ({e})", path) from e
    if not hasattr(z, "files"):
        raise DataFormatError("expected an .npz archive with the SMPL-H arrays", path)
    with z:
        missing = [k for k in ("v_template", "shapedirs", "J_regressor", "kintree_table") if k not in z.files]
        if missing:
            raise DataFormatError(f"body model lacks keys {missing} (has {sorted(z.files)})", path)
        try:
            v_template = _npz_get(z, "v_template", path, allow_pickle)
            shapedirs = _npz_get(z, "shapedirs", path, allow_pickle)
            j_reg = _npz_get(z, "J_regressor", path, allow_pickle)
            kintree = _npz_get(z, "kintree_table", path, allow_pickle)
        except ModuleNotFoundError as e:
            raise DataFormatError(f"reading this file needs the module {e.name!r}", path) from e
    V = v_template.shape[0] if v_template.ndim == 2 else -1
    if v_template.ndim != 2 or v_template.shape[1] != 3:
        raise DataFormatError(f"v_template must be (V, 3), got {v_template.shape}", path)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (V, 3):
        raise DataFormatError(f"shapedirs must be ({V}, 3, B), got {shapedirs.shape}", path)
    if j_reg.ndim != 2 or j_reg.shape[1] != V or j_reg.shape[0] < NUM_JOINTS:
        raise DataFormatError(f"J_regressor must be (J>={NUM_JOINTS}, {V}), got {j_reg.shape}", path)
    J = j_reg.shape[0]
    if kintree.ndim != 2 or kintree.shape[0] != 2 or kintree.shape[1] != J:
        raise DataFormatError(f"kintree_table must be (2, {J}), got {kintree.shape}", path)
    order = np.asarray(kintree[1]).astype(np.int64)
    raw_par = np.asarray(kintree[0]).astype(np.int64)
    parents = np.full(J, -1, np.int64)
    for child, par in zip(order, raw_par):
        if not 0 <= child < J:
            raise DataFormatError(f"kintree_table names joint {child} outside 0..{J - 1}", path)
        parents[child] = par if 0 <= par < J else -1
    if tuple(int(p) for p in parents[:NUM_JOINTS]) != SMPL22_PARENTS:
        raise DataFormatError(
            f"the first {NUM_JOINTS} joints of kintree_table do not form the SMPL body tree "
            f"(parents {parents[:NUM_JOINTS].tolist()})",
            path,
        )
    j_template = j_reg @ v_template
    j_shapedirs = np.einsum("jv,vkb->jkb", j_reg, shapedirs)
    return BodyModel(path, j_template, j_shapedirs, tuple(int(p) for p in parents))


# --------------------------------------------------------------------------
# one clip
# --------------------------------------------------------------------------

def _read_amass(path: str) -> dict:
    if not os.path.exists(path):
        raise DataFormatError("file not found", path)
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise DataFormatError(f"not a readable npz file ({e})", path) from e
    if not hasattr(z, "files"):
        raise DataFormatError("expected an AMASS .npz archive", path)
    out = {}
    with z:
        rate_key = next((k for k in ("mocap_framerate", "mocap_frame_rate") if k in z.files), None)
        missing = [k for k in ("poses", "trans") if k not in z.files]
        if rate_key is None:
            missing.append("mocap_framerate")
        if missing:
            raise DataFormatError(f"AMASS file lacks keys {missing} (has {sorted(z.files)})", path)
        try:
            out["poses"] = np.asarray(z["poses"], np.float64)
            out["trans"] = np.asarray(z["trans"], np.float64)
            out["fps"] = float(np.asarray(z[rate_key]).reshape(-1)[0])
            out["betas"] = np.asarray(z["betas"], np.float64).reshape(-1) if "betas" in z.files else None
        except ValueError as e:
            raise DataFormatError(f"cannot read arrays ({e})", path) from e
        gender = "neutral"
        if "gender" in z.files:
            try:
                g = np.asarray(z["gender"]).reshape(-1)[0]
                gender = (g.decode() if isinstance(g, bytes) else str(g)).strip().lower()
            except (ValueError, IndexError, UnicodeDecodeError):
                pass
        out["gender"] = gender
    poses, trans = out["poses"], out["trans"]
    if poses.ndim != 2 or poses.shape[1] < 3 * NUM_JOINTS:
        raise DataFormatError(f"poses must be (F, >= {3 * NUM_JOINTS}) axis-angle, got {poses.shape}", path)
    if trans.shape != (poses.shape[0], 3):
        raise DataFormatError(f"trans must be ({poses.shape[0]}, 3), got {trans.shape}", path)
    if poses.shape[0] < 1:
        raise DataFormatError("file has no frames", path)
    if not (out["fps"] > 0):
        raise DataFormatError(f"mocap_framerate must be positive, got {out['fps']}", path)
    if not (np.all(np.isfinite(poses[:, : 3 * NUM_JOINTS])) and np.all(np.isfinite(trans))):
        raise DataFormatError("poses or trans contain NaN or inf", path)
    return out


_AA_JIT = None


def _axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """``geometry.axis_angle_to_matrix`` on ``(..., 3)``, jitted on row counts padded to a power
    of two so that clips of different lengths share a few compiled shapes."""
    global _AA_JIT
    if _AA_JIT is None:
        import jax

        _AA_JIT = jax.jit(geometry.axis_angle_to_matrix)
    flat = np.asarray(aa, np.float32).reshape(-1, 3)
    n = flat.shape[0]
    size = max(1024, 1 << (n - 1).bit_length())
    padded = np.zeros((size, 3), np.float32)
    padded[:n] = flat
    out = np.asarray(_AA_JIT(padded))[:n]
    return out.reshape(aa.shape[:-1] + (3, 3)).astype(np.float64)


def _stride(src_fps: float, dst_fps: float) -> int | None:
    ratio = src_fps / dst_fps
    k = int(round(ratio))
    if k >= 1 and abs(ratio - k) < 1e-3 * max(1.0, ratio):
        return k
    return None


def _pick_model(body_model, gender: str, path: str) -> BodyModel:
    if isinstance(body_model, BodyModel):
        return body_model
    if isinstance(body_model, Mapping):
        for key in (gender, "neutral"):
            if key in body_model:
                return body_model[key]
        raise DataFormatError(
            f"no body model for gender {gender!r} (have {sorted(body_model)})", path
        )
    raise TypeError("body_model must be a BodyModel or a mapping gender -> BodyModel")


def clip_name(path: str, root_dir: str | None = None) -> str:
    """``CMU/01/01_02_poses.npz`` -> ``CMU-01-01_02`` (clip names must not contain '/')."""
    rel = os.path.relpath(path, root_dir) if root_dir else os.path.basename(path)
    rel = rel.replace(os.sep, "/")
    if rel.endswith(".npz"):
        rel = rel[:-4]
    if rel.endswith("_poses"):
        rel = rel[: -len("_poses")]
    return rel.replace("/", "-")


def load_amass_clip(
    npz_path: str,
    body_model: BodyModel | Mapping[str, BodyModel],
    fps: float | None = None,
    use_betas: bool = True,
    frame: str = "humanml3d",
    name: str | None = None,
) -> Clip:
    """One AMASS file as a SMPL-22 :class:`Clip` (Y up for the default ``frame``).

    Args:
      npz_path: an AMASS ``*_poses.npz``.
      body_model: a :class:`BodyModel`, or ``{"male": ..., "female": ..., "neutral": ...}``
        picked by the file's ``gender`` (falling back to ``"neutral"``).
      fps: output rate; ``None`` keeps the capture rate. Integer ratios take every k-th frame,
        others slerp.
      use_betas: apply the file's shape coefficients (``False``: the template body, as AGRoL).
      frame: ``"swap"`` | ``"humanml3d"`` | ``"z_up"`` (see the module doc).
      name: clip name; defaults to the file name without ``_poses.npz``.
    """
    path = os.fspath(npz_path)
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {sorted(FRAMES)}, got {frame!r}")
    d = _read_amass(path)
    model = _pick_model(body_model, d["gender"], path)
    betas = d["betas"] if use_betas else None
    if use_betas and betas is None:
        raise DataFormatError("AMASS file lacks key 'betas' (pass use_betas=False for the template body)", path)
    poses, trans, src_fps = d["poses"], d["trans"], d["fps"]
    out_fps = src_fps
    k = None
    if fps is not None:
        k = _stride(src_fps, float(fps))
        if k is not None:
            poses, trans = poses[::k], trans[::k]
            out_fps = float(fps)
    J0, offsets = model.body_offsets(betas)
    T = poses.shape[0]
    aa = poses[:, : 3 * NUM_JOINTS].reshape(T, NUM_JOINTS, 3)
    local = _axis_angle_to_matrix(aa)
    root = trans + J0[0]
    M = FRAMES[frame]
    local = np.einsum("ab,tjbc,dc->tjad", M, local, M)
    root = root @ M.T
    offsets = offsets @ M.T
    clip = Clip(
        name=name or clip_name(path),
        skeleton=smpl22_skeleton(offsets),
        local_rot=local.astype(np.float32),
        root_pos=root.astype(np.float32),
        fps=float(out_fps),
        labels={"gender": d["gender"], "source_fps": src_fps, "dataset": "amass", "frame": frame},
        source=path,
    )
    if fps is not None and k is None:
        clip = clip.resample(float(fps))
    return clip


# --------------------------------------------------------------------------
# directory trees and the AGRoL split
# --------------------------------------------------------------------------

def find_amass_files(root_dir: str, subsets: Sequence[str] | None = None) -> list[str]:
    """Relative paths (``/``-separated, sorted) of every ``*_poses.npz`` under
    ``<root>/<subset>/<subject>/`` (any depth); ``shape.npz`` and other files are skipped.
    ``subsets`` filters the first path component (aliases such as BMLrub are accepted)."""
    root_dir = os.fspath(root_dir)
    if not os.path.isdir(root_dir):
        raise DataFormatError("AMASS root directory not found", root_dir)
    wanted = None
    if subsets is not None:
        wanted = set()
        for s in subsets:
            wanted.update(SUBSET_ALIASES.get(s, (s,)))
            for key, names in SUBSET_ALIASES.items():
                if s in names:
                    wanted.update(names)
    out = []
    for sub in sorted(os.listdir(root_dir)):
        full = os.path.join(root_dir, sub)
        if not os.path.isdir(full) or (wanted is not None and sub not in wanted):
            continue
        for dirpath, dirnames, filenames in os.walk(full):
            dirnames.sort()
            for fn in sorted(filenames):
                if fn.endswith("_poses.npz"):
                    rel = os.path.relpath(os.path.join(dirpath, fn), root_dir)
                    out.append(rel.replace(os.sep, "/"))
    return out


def load_amass(
    root_dir: str,
    body_model: BodyModel | Mapping[str, BodyModel],
    fps: float | None = 60,
    subsets: Sequence[str] | None = None,
    workers: int = 2,
    files: Sequence[str] | None = None,
    use_betas: bool = True,
    frame: str = "humanml3d",
    progress: bool = True,
) -> list[Clip]:
    """Load every AMASS clip under ``root_dir`` (or the relative paths ``files``) in sorted
    order, with ``workers`` threads. Clip names are the relative paths with ``/`` -> ``-``."""
    root_dir = os.fspath(root_dir)
    rels = list(files) if files is not None else find_amass_files(root_dir, subsets)

    def one(rel):
        path = os.path.join(root_dir, rel)
        return load_amass_clip(path, body_model, fps=fps, use_betas=use_betas, frame=frame,
                               name=clip_name(path, root_dir))

    bar = None
    if progress and rels:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rels), desc="AMASS", unit="clip")
    clips: list[Clip] = []
    try:
        if workers <= 1:
            for rel in rels:
                clips.append(one(rel))
                if bar is not None:
                    bar.update(1)
        else:
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as ex:
                for clip in ex.map(one, rels):
                    clips.append(clip)
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return clips


def _read_split_file(path: str) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(line.replace("\\", "/"))
    return out


def agrol_s1_split(
    root_dir: str | None = None,
    split_dir: str | None = None,
    files: Sequence[str] | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Train/test file lists of protocol S1 (CMU, BMLrub, HDM05; 90/10 by file).

    * With ``split_dir`` (AGRoL's ``prepare_data/data_split`` folder: ``<subset>/train_split.txt``
      and ``test_split.txt``, one relative path per line) the published lists are used.
    * Otherwise each subset's files (from ``files`` or found under ``root_dir``) are shuffled
      with ``seed`` and ``round(test_fraction * n)`` of them become the test set. This is a
      reproducible 90/10 split, not AGRoL's exact lists.

    Returns ``{"train": [...], "test": [...]}`` with ``/``-separated relative paths.
    """
    split = {"train": [], "test": []}
    if split_dir is not None:
        for subset in S1_SUBSETS:
            found = False
            for alias in SUBSET_ALIASES[subset]:
                d = os.path.join(split_dir, alias)
                if os.path.isdir(d):
                    found = True
                    for phase in ("train", "test"):
                        p = os.path.join(d, f"{phase}_split.txt")
                        if not os.path.exists(p):
                            raise DataFormatError("split list not found", p)
                        split[phase].extend(_read_split_file(p))
                    break
            if not found:
                raise DataFormatError(f"no split lists for subset {subset}", split_dir)
        return split
    if files is None:
        if root_dir is None:
            raise ValueError("pass root_dir, files or split_dir")
        files = find_amass_files(root_dir, S1_SUBSETS)
    files = [f.replace("\\", "/") for f in files]
    for subset in S1_SUBSETS:
        names = SUBSET_ALIASES[subset]
        mine = sorted(f for f in files if f.split("/", 1)[0] in names)
        if not mine:
            continue
        rng = np.random.default_rng([seed, sum(ord(c) for c in subset)])
        perm = rng.permutation(len(mine))
        n_test = int(round(test_fraction * len(mine)))
        test = set(perm[:n_test].tolist())
        for i, f in enumerate(mine):
            split["test" if i in test else "train"].append(f)
    return split


__all__ = [
    "BodyModel", "load_body_model", "load_amass_clip", "load_amass", "find_amass_files",
    "agrol_s1_split", "clip_name", "FRAMES", "SWAP", "S1_SUBSETS", "SUBSET_ALIASES",
]

"""The Bandai Namco Research Motion Datasets 1 and 2 (CC BY-NC 4.0, Bandai Namco Research Inc.).

The data lives outside the project (``../shared/data/bandai-namco`` beside the checkout, or
``$MMAR_BANDAI_DIR``) as one ``.tar.xz`` archive for dataset 1 and one per content for
dataset 2; :func:`load_bandai` reads the archives directly (nothing is extracted or written).

Clips are named ``dataset-N_<content>_<style>_<take>``. Each clip's JSON holds content and
style indices into ``cfg-N/content_label.txt`` and ``cfg-N/style_label.txt``; the labels
attached to a clip are::

    {"dataset": 1 | 2, "content": "walk", "style": "happy",
     "content_id": 0, "style_id": 1, "take": 1}

with the ``dataset-N_`` prefix of the label lists removed.

What the files hold (checked on all 2,789 clips): 377,373 frames (dataset 1: 156 clips,
28,965 frames; dataset 2: 2,633 clips, 348,408 frames; 19 to 1,901 frames, median 120), all at
30 fps, centimetres (scaled by 0.01 to metres), Y up, ``joint_Root`` above ``Hips``, every
joint with 6 channels. Only ``joint_Root`` and ``Hips`` have position channels that differ
from their OFFSET; every other bone has the same length in every frame of every clip (spread
below 1e-6 m), so retargeting to SMPL-22 is exact (FK of the SMPL-22 clip reproduces the
mapped source joints to float precision). ``joint_Root`` never rotates and stays at the origin
except in three dataset-1 clips (``run_normal_001``, ``dash_normal_001``, ``walk_normal_002``),
where it carries the forward travel (up to 2.7 m) instead of ``Hips``. The pelvis is about
0.91 m above y = 0 and the lowest foot joint (ankle/toe joint centres) 2.5-5.5 cm above it:
the floor is y = 0 and no clip is translated.

Joint frames: every bone runs along its joint's local X axis (``+X`` on the left side and the
spine, ``-X`` on the right: the right limbs' frames are the left ones turned half a turn), so the
pose with all rotations zero is no body pose (the spine, the left leg and the left arm all point
the same way). The canonical rest pose (:func:`mmar.data.bvh.rest_alignment`) therefore uses
the T-pose declared in :data:`BANDAI_TPOSE`: where each joint's local X and Y axes point when the
body stands in the canonical T-pose (facing +Z, Y up, left towards +X). It was read off the data:
over all 28,965 frames of dataset 1, each joint's frame, expressed in the body frame of that
frame (hips and chest) and turned by the smallest rotation that brings its bone onto its T-pose
direction, has its Y axis within 8 degrees (median; 4-11 for legs, feet and spine, 24-32 for the
arms, which move most) of the axis listed.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from mmar.errors import DataFormatError

if TYPE_CHECKING:  # pragma: no cover
    from mmar.data.clip import Clip

__all__ = [
    "BANDAI_SCALE",
    "BANDAI_TPOSE",
    "BANDAI_FPS",
    "bandai_root",
    "bandai_archives",
    "bandai_label_lists",
    "parse_clip_name",
    "bandai_labels",
    "list_bandai_clips",
    "load_bandai",
]

BANDAI_SCALE = 0.01  # centimetres -> metres

# Where each joint's local X and Y axes point in the canonical T-pose (see the module docstring).
_SPINE, _LEFT_ARM, _RIGHT_ARM = ("+Y", "+Z"), ("+X", "+Y"), ("+X", "-Y")
BANDAI_TPOSE: dict[str, tuple[str, str]] = {
    "Hips": ("+Y", "-X"),
    "Spine": _SPINE, "Chest": _SPINE, "Neck": _SPINE, "Head": _SPINE,
    "Shoulder_L": _LEFT_ARM, "UpperArm_L": _LEFT_ARM, "LowerArm_L": _LEFT_ARM, "Hand_L": _LEFT_ARM,
    "Shoulder_R": _RIGHT_ARM, "UpperArm_R": _RIGHT_ARM, "LowerArm_R": _RIGHT_ARM, "Hand_R": _RIGHT_ARM,
    "UpperLeg_L": ("-Y", "+X"), "LowerLeg_L": ("-Y", "+X"), "Foot_L": ("+Z", "+X"), "Toes_L": ("+Z", "+X"),
    "UpperLeg_R": ("+Y", "+X"), "LowerLeg_R": ("+Y", "+X"), "Foot_R": ("-Z", "+X"), "Toes_R": ("-Z", "+X"),
}
BANDAI_FPS = 30.0
ENV_VAR = "MMAR_BANDAI_DIR"
_ARCHIVE_GLOB = {
    1: "Bandai-Namco-Research-Motiondataset-1.tar.xz",
    2: "Bandai-Namco-Research-Motiondataset-2_*.tar.xz",
}
_NAME_RE = re.compile(r"^dataset-(\d+)_([^_]+)_([^_]+)_(\d+)$")


def _candidates() -> list[Path]:
    repo = Path(__file__).resolve().parents[2]
    cwd = Path.cwd()
    out = [repo.parent / "shared" / "data" / "bandai-namco"]
    for base in (cwd, *cwd.parents[:2]):
        out.append(base.parent / "shared" / "data" / "bandai-namco")
        out.append(base / "shared" / "data" / "bandai-namco")
    seen, uniq = set(), []
    for p in out:
        if p not in seen:
            seen.add(p)
            uniq.append(p)
    return uniq


def bandai_root(path=None) -> Path:
    """The Bandai Namco data directory: ``path`` if given, else ``$MMAR_BANDAI_DIR``, else
    ``../shared/data/bandai-namco`` beside the repository (or the working directory).

    Raises :class:`DataFormatError` when the directory does not exist.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise DataFormatError("Bandai Namco data directory not found", str(p))
        return p
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise DataFormatError(f"${ENV_VAR} does not name a directory", str(p))
        return p
    tried = _candidates()
    for p in tried:
        if p.is_dir():
            return p.resolve()
    raise DataFormatError(
        "Bandai Namco data not found; set $MMAR_BANDAI_DIR or pass the directory (looked in "
        + ", ".join(str(p) for p in tried) + ")"
    )


def bandai_archives(root=None, datasets: Iterable[int] = (1, 2), contents: Iterable[str] | None = None) -> list[Path]:
    """The archives of the requested datasets, sorted by name. ``contents`` keeps only the
    dataset-2 archives of those contents (dataset 1 is a single archive)."""
    r = bandai_root(root)
    keep = None if contents is None else set(contents)
    out: list[Path] = []
    for d in datasets:
        if d not in _ARCHIVE_GLOB:
            raise ValueError(f"Bandai Namco dataset must be 1 or 2, got {d!r}")
        found = sorted(r.glob(_ARCHIVE_GLOB[d]))
        if not found:
            raise DataFormatError(f"no archive {_ARCHIVE_GLOB[d]} for dataset {d}", str(r))
        if d == 2 and keep is not None:
            found = [a for a in found if a.name[: -len(".tar.xz")].split("_", 1)[1] in keep]
        out.extend(found)
    return out


def _read_list(path: Path, dataset: int) -> list[str]:
    prefix = f"dataset-{dataset}_"
    names = []
    with open(path, encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            s = line.strip()
            if not s:
                continue
            if not s.startswith(prefix):
                raise DataFormatError(f"label {s!r} lacks the prefix {prefix!r}", str(path), ln)
            names.append(s[len(prefix):])
    return names


@functools.lru_cache(maxsize=8)
def _label_lists_cached(root: str, dataset: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    cfg = Path(root) / f"cfg-{dataset}"
    return (
        tuple(_read_list(cfg / "content_label.txt", dataset)),
        tuple(_read_list(cfg / "style_label.txt", dataset)),
    )


def bandai_label_lists(dataset: int, root=None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(contents, styles)`` of a dataset from ``cfg-N/``, without the ``dataset-N_`` prefix."""
    r = bandai_root(root)
    return _label_lists_cached(str(r), int(dataset))


def parse_clip_name(name: str) -> dict:
    """``dataset-2_walk-turn-left_active_015`` -> ``{"dataset": 2, "content":
    "walk-turn-left", "style": "active", "take": 15}``."""
    m = _NAME_RE.match(name)
    if not m:
        raise ValueError(f"not a Bandai Namco clip name: {name!r}")
    return {"dataset": int(m.group(1)), "content": m.group(2), "style": m.group(3), "take": int(m.group(4))}


def bandai_labels(name: str, json_labels: dict | None, contents: Sequence[str], styles: Sequence[str],
                  source: str = "") -> dict:
    """Labels of a clip from its JSON indices and the label lists; the name gives dataset and
    take, and the content/style when the JSON is missing. A JSON that disagrees with the
    file name raises :class:`DataFormatError`."""
    lab = parse_clip_name(name)
    if json_labels is None:
        ci = contents.index(lab["content"]) if lab["content"] in contents else -1
        si = styles.index(lab["style"]) if lab["style"] in styles else -1
    else:
        try:
            ci, si = int(json_labels["content"]), int(json_labels["style"])
        except (KeyError, TypeError, ValueError):
            raise DataFormatError("labels JSON needs integer 'content' and 'style'", source) from None
        if not (0 <= ci < len(contents) and 0 <= si < len(styles)):
            raise DataFormatError(f"label indices {ci}, {si} out of range", source)
        if contents[ci] != lab["content"] or styles[si] != lab["style"]:
            raise DataFormatError(
                f"JSON labels ({contents[ci]}, {styles[si]}) disagree with the file name", source
            )
    return {
        "dataset": lab["dataset"], "content": lab["content"], "style": lab["style"],
        "content_id": ci, "style_id": si, "take": lab["take"],
    }


# --------------------------------------------------------------------------
# listing and loading
# --------------------------------------------------------------------------

def _list_archive(path: str) -> list[str]:
    from mmar.data.sources import list_bvh_names

    return list_bvh_names(path)


def list_bandai_clips(root=None, datasets: Iterable[int] = (1, 2), workers: int = 2) -> list[str]:
    """Sorted clip names of the requested datasets, read from the archives' member lists
    (no BVH is parsed; the archives are still decompressed, a few seconds in all)."""
    archives = [str(p) for p in bandai_archives(root, datasets)]
    if workers <= 1 or len(archives) <= 1:
        lists = [_list_archive(a) for a in archives]
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        order = sorted(archives, key=lambda a: -os.path.getsize(a))
        with ProcessPoolExecutor(min(workers, len(archives)), mp_context=multiprocessing.get_context("spawn")) as ex:
            lists = list(ex.map(_list_archive, order))
    return sorted(n for lst in lists for n in lst)


def load_bandai(
    root=None,
    datasets: Iterable[int] = (1, 2),
    retarget: bool = True,
    fps: float | None = None,
    workers: int = 2,
    progress: bool = True,
    on_error: str = "warn",
    captions: bool = True,
    contents: Iterable[str] | None = None,
) -> list["Clip"]:
    """Load Bandai Namco clips straight from the archives, sorted by name.

    Args:
      root: data directory (see :func:`bandai_root`).
      datasets: which of dataset 1 and 2.
      retarget: map to SMPL-22 with the ``"bandai"`` joint map (done in the worker
        processes in numpy, equal to :meth:`Clip.retarget` up to float32 rounding);
        ``False`` keeps the 22-joint source skeleton with its per-frame translations.
      fps: resample to this frame rate in the workers (the files are 30 fps).
      workers: processes (one archive per task).
      progress: show a progress bar.
      on_error: ``"warn"``, ``"ignore"`` or ``"raise"`` for malformed files.
      captions: fill ``Clip.texts`` from :func:`mmar.data.captions.captions_for`.
      contents: only clips of these contents (label names such as ``"walk"``); dataset-2
        archives of other contents are not even opened.
    """
    from mmar.data.sources import load_clips

    r = bandai_root(root)
    datasets = tuple(datasets)
    contents = None if contents is None else tuple(contents)
    archives = bandai_archives(r, datasets, contents)
    lists = {d: bandai_label_lists(d, r) for d in datasets}
    clips, _errors = load_clips(
        [str(a) for a in archives], scale=BANDAI_SCALE, workers=workers, progress=progress,
        on_error=on_error, retarget="bandai" if retarget else None, fps=fps, description="Bandai Namco",
    )
    out = []
    for c in clips:
        try:
            d = parse_clip_name(c.name)["dataset"]
            content_list, style_list = lists[d]
            c.labels = bandai_labels(c.name, c.labels or None, content_list, style_list, c.source)
        except (ValueError, KeyError) as e:
            err = e if isinstance(e, DataFormatError) else DataFormatError(str(e), c.source)
            if on_error == "raise":
                raise err from None
            if on_error == "warn":
                import warnings

                warnings.warn(f"skipped: {err}", stacklevel=2)
            continue
        if contents is not None and c.labels["content"] not in contents:
            continue
        if captions:
            from mmar.data.captions import captions_for

            c.texts = captions_for(c.labels)
        out.append(c)
    out.sort(key=lambda c: c.name)
    return out

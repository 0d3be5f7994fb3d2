"""The fixed train / val / test split of the Bandai Namco clips.

Rule (version ``SPLIT_VERSION``):

1. A clip's *stratum* is ``(dataset, content)`` from its name
   ``dataset-N_<content>_<style>_<take>`` (e.g. ``(2, "walk-turn-left")``).
2. Inside a stratum the clips are ordered by ``sha256(SALT + ":" + name)`` (hex digest), a
   fixed salted hash of the name: no random generator state is involved.
3. With ``n`` clips in the stratum, the first ``n_test`` of that order go to ``test``, the
   next ``n_val`` to ``val`` and the rest to ``train``, where ``n_test = n_val =
   floor(0.1 * n + 0.5)`` (about 80/10/10), except that a stratum of 3 or more clips always
   gets at least one test clip, and strata of 1 or 2 clips are all ``train``.

The split depends on the set of clip names of each stratum, so it is defined over the whole
released data (2,789 clips). :func:`split_of` uses that full list (read once from the
archives, a few seconds) unless ``names`` is given; :func:`split_clips` uses the clips it is
given, which gives the same answer whenever whole strata are passed (``load_bandai`` always
loads whole datasets), so split before filtering clips. Styles are not balanced explicitly;
with stratum sizes of 12-27 (dataset 1) and 161-409 (dataset 2) every split has a spread of
styles.

On the released data this gives train 2,235 / val 277 / test 277 clips. Dataset-1 contents
with fewer than 3 clips (``call`` and ``slash``: 2; ``kick``, ``punch``, ``dance-short``: 1)
are train only; ``respond`` and ``dance-long`` are in the label list but have no clips.
"""
from __future__ import annotations

import functools
import hashlib
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

from mmar.data.bandai import parse_clip_name

__all__ = ["SALT", "SPLIT_VERSION", "SPLITS", "stratum_of", "assign_splits", "split_of", "split_clips"]

SPLIT_VERSION = 1
SALT = "mmar-bandai-split-v1"
SPLITS = ("train", "val", "test")
FRACTION = 0.1


def stratum_of(name: str) -> tuple[int, str]:
    """``(dataset, content)`` of a Bandai clip name."""
    lab = parse_clip_name(name)
    return lab["dataset"], lab["content"]


def _key(name: str) -> str:
    return hashlib.sha256(f"{SALT}:{name}".encode()).hexdigest()


def _quota(n: int) -> tuple[int, int]:
    if n < 3:
        return 0, 0
    k = int(FRACTION * n + 0.5)
    return max(1, k), k


def assign_splits(names: Iterable[str]) -> dict[str, str]:
    """``{name: "train" | "val" | "test"}`` for a complete list of clip names."""
    strata: dict[tuple[int, str], list[str]] = defaultdict(list)
    for n in set(names):
        strata[stratum_of(n)].append(n)
    out: dict[str, str] = {}
    for members in strata.values():
        members.sort(key=_key)
        n_test, n_val = _quota(len(members))
        for i, name in enumerate(members):
            out[name] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


@functools.lru_cache(maxsize=4)
def _default_assignment(root: str | None) -> Mapping[str, str]:
    from mmar.data.bandai import list_bandai_clips

    return assign_splits(list_bandai_clips(root))


def split_of(clip_name: str, names: Sequence[str] | None = None, root=None) -> str:
    """The split of one clip. Without ``names`` the full Bandai Namco clip list is read from
    the archives under ``root`` (see :func:`mmar.data.bandai.bandai_root`) once per process."""
    table = assign_splits(names) if names is not None else _default_assignment(
        None if root is None else str(root)
    )
    try:
        return table[clip_name]
    except KeyError:
        raise KeyError(f"{clip_name!r} is not a clip of the Bandai Namco list") from None


def split_clips(clips, names: Sequence[str] | None = None) -> dict[str, list]:
    """Group clips (``Clip`` objects or names) into ``{"train", "val", "test"}`` lists, each in
    the input order. The split is computed over ``names`` if given, else over the names of
    ``clips`` themselves (pass whole strata)."""
    clips = list(clips)
    cnames = [c if isinstance(c, str) else c.name for c in clips]
    table = assign_splits(cnames if names is None else list(names) + cnames)
    out: dict[str, list] = {s: [] for s in SPLITS}
    for c, n in zip(clips, cnames):
        out[table[n]].append(c)
    return out

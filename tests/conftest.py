"""Shared test fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _bandai_path() -> Path:
    env = os.environ.get("MMAR_BANDAI_DIR")
    if env:
        return Path(env).expanduser()
    return REPO_ROOT.parent / "shared" / "data" / "bandai-namco"


@pytest.fixture(scope="session")
def bandai_dir() -> Path:
    """The Bandai Namco data directory (``$MMAR_BANDAI_DIR`` or ``../shared/data/bandai-namco``
    beside the repository). Tests using it are skipped when it is absent. Read only: never
    copy the data (or anything converted from it) into the repository."""
    p = _bandai_path()
    if not p.is_dir() or not any(p.glob("*.tar.xz")):
        pytest.skip(f"Bandai Namco data not found at {p}")
    return p


@pytest.fixture(scope="session")
def bandai_clip_names(bandai_dir) -> list[str]:
    """Sorted names of every Bandai Namco clip, listed from the archives (no BVH parsed; the
    archives are decompressed once per test session, a few seconds)."""
    from mmar.data.bandai import list_bandai_clips

    return list_bandai_clips(bandai_dir, workers=2)

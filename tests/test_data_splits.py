"""The fixed, stratified Bandai Namco train / val / test split."""
from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from mmar.data import splits
from mmar.data.splits import assign_splits, split_clips, split_of, stratum_of


def test_split_is_deterministic_and_ignores_rng_state(bandai_clip_names):
    a = assign_splits(bandai_clip_names)
    random.seed(123)
    shuffled = list(bandai_clip_names)
    random.shuffle(shuffled)
    assert assign_splits(shuffled) == a
    assert assign_splits(reversed(bandai_clip_names)) == a


def test_split_sets_are_disjoint_and_cover_everything(bandai_clip_names):
    assert len(bandai_clip_names) == 2789 == len(set(bandai_clip_names))
    groups = split_clips(bandai_clip_names)
    sets = {k: set(v) for k, v in groups.items()}
    assert set(groups) == {"train", "val", "test"}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"])
    assert not (sets["val"] & sets["test"])
    assert sets["train"] | sets["val"] | sets["test"] == set(bandai_clip_names)
    # fixed: these counts change only if the rule or the salt changes (bump SPLIT_VERSION)
    assert {k: len(v) for k, v in groups.items()} == {"train": 2235, "val": 277, "test": 277}
    assert splits.SPLIT_VERSION == 1


def test_split_is_stratified_by_dataset_and_content(bandai_clip_names):
    table = assign_splits(bandai_clip_names)
    per = defaultdict(Counter)
    for n, s in table.items():
        per[stratum_of(n)][s] += 1
    assert len(per) == 25  # 15 contents of dataset 1 present in the data + 10 of dataset 2
    for (dataset, content), cnt in per.items():
        n = sum(cnt.values())
        if n >= 3:
            assert cnt["test"] >= 1, (dataset, content)
            assert abs(cnt["test"] - 0.1 * n) <= 1 and abs(cnt["val"] - 0.1 * n) <= 1, (dataset, content, cnt)
        else:
            assert cnt["train"] == n
        if n >= 100:
            assert 0.78 <= cnt["train"] / n <= 0.82


def test_split_of_matches_split_clips(bandai_dir, bandai_clip_names, monkeypatch):
    monkeypatch.setattr(splits, "_default_assignment",
                        lambda root: assign_splits(bandai_clip_names))
    groups = split_clips(bandai_clip_names[::-1])
    for name in bandai_clip_names[::37]:
        assert name in groups[split_of(name)]
    for name in bandai_clip_names[::401]:
        assert split_of(name, names=bandai_clip_names) == split_of(name)
    with pytest.raises(KeyError):
        split_of("dataset-1_walk_normal_999")


def test_split_clips_accepts_clip_objects():
    class C:
        def __init__(self, name):
            self.name = name

    names = [f"dataset-1_walk_normal_{i:03d}" for i in range(1, 21)] + ["dataset-1_kick_normal_001"]
    clips = [C(n) for n in names]
    groups = split_clips(clips)
    assert sum(len(v) for v in groups.values()) == 21
    assert len(groups["test"]) == 2 and len(groups["val"]) == 2
    assert groups["train"][-1].name == "dataset-1_kick_normal_001"  # 1-clip stratum: train
    assert [c.name for c in groups["train"]] == [n for n in names if n in {c.name for c in groups["train"]}]

"""BenchmarkTask's data sources: the npz-cache benchmark and a prepared tfds dataset
(``data.tfds_dir``) give the same training batches and evaluation clips for the same clips."""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from _sparse_body_fixtures import tiny_config
from mmar import geometry as g
from mmar.data import tfds_builders as tb
from mmar.data.benchmark import SparseBenchmark, TfdsBenchmark
from mmar.data.clip import Clip, clips_to_arrays, smpl22_skeleton
from mmar.errors import ConfigError, DataFormatError
from mmar.tasks import make_task

FPS = 60.0
SPLIT_SIZES = {"train": 7, "val": 3, "test": 2}


def _clips(seed=0):
    rng = np.random.default_rng(seed)
    offsets = rng.normal(scale=0.15, size=(22, 3)).astype(np.float32)
    out = {}
    for split, n in SPLIT_SIZES.items():
        clips = []
        for i in range(n):
            T = int(rng.integers(12, 40))
            aa = rng.normal(scale=0.3, size=(T, 22, 3)).astype(np.float32)
            root = np.cumsum(rng.normal(scale=0.01, size=(T, 3)), 0).astype(np.float32)
            name = f"dataset-{1 + i % 2}_walk_normal_{split}{i:02d}"
            clips.append(Clip(name, smpl22_skeleton(offsets), np.asarray(g.axis_angle_to_matrix(aa)),
                              root, FPS, labels={"dataset": 1 + i % 2, "content": "walk",
                                                 "style": "normal"}))
        out[split] = clips
    return out


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """The same clips as a SparseBenchmark and as a prepared bandai_namco/fps60 dataset."""
    by_split = _clips()
    bench = SparseBenchmark(FPS, {s: dict(zip([c.name for c in cs], clips_to_arrays(cs)))
                                  for s, cs in by_split.items()})
    root = tmp_path_factory.mktemp("tasks_base")
    manual = root / "raw"
    manual.mkdir()
    (manual / "README").write_text("placeholder: tfds wants a non-empty manual_dir")
    split_of = {c.name: s for s, cs in by_split.items() for c in cs}
    every = [c for cs in by_split.values() for c in cs]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tb, "_bandai_clips", lambda manual_dir, config, workers: every)
        mp.setattr(tb, "_split_clips", lambda cs: {s: [c for c in cs if split_of[c.name] == s]
                                                   for s in SPLIT_SIZES})
        tb.prepare("bandai_namco", root / "tfds", manual, config="fps60")
    return bench, str(root / "tfds")


def _tasks(sources, **data):
    bench, tfds_dir = sources
    cfg = tiny_config("agrol_mlp")
    cfg.data = dataclasses.replace(cfg.data, **data)
    npz = make_task(cfg, benchmark=bench)
    cfg_t = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, tfds_dir=tfds_dir))
    return npz, make_task(cfg_t)


def _assert_same_clips(a, b):
    assert list(a) == list(b)
    for n in a:
        assert set(a[n]) == set(b[n]), n
        for k in a[n]:
            x, y = np.asarray(a[n][k]), np.asarray(b[n][k])
            assert x.dtype == y.dtype and x.shape == y.shape, (n, k)
            np.testing.assert_array_equal(x, y, err_msg=f"{n}/{k}")


@pytest.mark.parametrize("max_train_clips", [None, 4])
def test_same_batches_from_both_sources(sources, max_train_clips):
    npz, tfds = _tasks(sources, max_train_clips=max_train_clips)
    assert isinstance(tfds.benchmark, TfdsBenchmark) and tfds.benchmark.fps == FPS
    a, b = npz.train_iterator(seed=3), tfds.train_iterator(seed=3)
    assert a.get_state()["pipeline"] == b.get_state()["pipeline"]
    for _ in range(6):  # more than an epoch of these few windows
        x, y = next(a), next(b)
        assert set(x) == set(y) == {"sparse", "rot6d", "joints"}
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    other = tfds.train_iterator(seed=4)
    assert not np.array_equal(next(other)["sparse"], next(tfds.train_iterator(seed=3))["sparse"])


def test_same_eval_clips_from_both_sources(sources):
    npz, tfds = _tasks(sources, max_eval_clips=2)
    _assert_same_clips(npz.eval_clips(), tfds.eval_clips())
    assert len(tfds.eval_clips()) == 2
    _assert_same_clips(npz.benchmark["test"], tfds.benchmark["test"])
    _assert_same_clips(npz.benchmark.subset("train", 3), tfds.benchmark.subset("train", 3))
    assert tfds.benchmark.names("val") == sorted(npz.benchmark["val"])


def test_tfds_source_errors(sources, tmp_path):
    _, tfds_dir = sources
    with pytest.raises(ConfigError, match="60 fps clips, the task expects 30 fps"):
        TfdsBenchmark(tfds_dir, 30.0, config="fps60")
    cfg = tiny_config("agrol_mlp")
    cfg.data = dataclasses.replace(cfg.data, fps=30.0, tfds_dir=tfds_dir)  # fps30 is not prepared
    with pytest.raises(DataFormatError, match="not prepared"):
        make_task(cfg).train_iterator(seed=0)
    with pytest.raises(DataFormatError, match="not prepared"):
        TfdsBenchmark(str(tmp_path), FPS).subset("val")
    with pytest.raises(ConfigError, match="unknown dataset"):
        TfdsBenchmark(tfds_dir, FPS, name="nope")


def test_tfds_source_does_not_import_tensorflow(sources):
    """Reading the records (index, partial decode, grain threads) needs no TensorFlow."""
    _, tfds_dir = sources
    code = ("import sys; from mmar.data.benchmark import TfdsBenchmark; "
            f"b = TfdsBenchmark({tfds_dir!r}, {FPS!r}); "
            "a = b.clip_arrays('train', None, ('sparse', 'rot6d', 'joints')); b.subset('val', 2); "
            "assert a.num_clips == 7, a.num_clips; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)

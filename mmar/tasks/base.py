"""What every task of the Bandai sparse-to-full-body benchmark shares.

A task binds one model to its data, loss and evaluation (the :class:`mmar.train.Task` protocol
of the trainer). :class:`BenchmarkTask` supplies the benchmark, the training iterator, online
evaluation and the clip batching of prediction; a task file adds its model config, ``init``,
``loss`` and ``predict_batch`` (or ``evaluate`` for a tokenizer). ``mmar/tasks/agrol_mlp.py`` is
the shortest complete example.

Evaluation runs each model *online*, as a headset would: frame ``t`` is predicted from the sparse
input up to ``t`` only (start edge-padded), the body is placed by the tracked head
(``docs/design.md``) and scored with the AGRoL metrics of :mod:`mmar.eval.sparse`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from mmar.errors import CheckpointError, ConfigError

__all__ = ["TaskBase", "BenchmarkDataConfig", "BenchmarkTask", "frozen_config", "load_stage_variables"]


@dataclasses.dataclass
class BenchmarkDataConfig:
    """The Bandai benchmark (:mod:`mmar.data.benchmark`) as every sparse-body task reads it.

    Two sources of the same clips: the npz cache of :func:`mmar.data.benchmark.load_sparse_benchmark`
    (``tfds_dir=None``, built from ``root`` on first use), or the ArrayRecord files that
    :func:`mmar.data.tfds_builders.prepare` wrote to ``tfds_dir``, read through grain
    (:class:`mmar.data.benchmark.TfdsBenchmark`): only the training arrays and the evaluation
    clips are decoded, so memory follows what training holds; other prepared datasets (e.g.
    ``tfds_name="amass"`` with ``eval_split="test"``) train the same way. Identical clips give
    identical batches from either source."""

    root: str | None = None  # Bandai data directory (default: ../shared/data/bandai-namco)
    fps: float = 60.0
    max_train_clips: int | None = None
    eval_split: str = "val"
    max_eval_clips: int | None = 24  # evenly spaced clips of eval_split for the validation passes
    eval_batch: int = 64  # clips (or windows, for window models) per compiled evaluation call
    tfds_dir: str | None = None  # tfds data dir of a prepared dataset; None = the npz cache
    tfds_name: str = "bandai_namco"  # dataset in tfds_dir (mmar.data.tfds_builders.BUILDERS)
    tfds_config: str | None = None  # its config; None = f"fps{fps:g}" for Bandai, else the default
    # training signal (docs/results.md, "Learning more per CPU-hour"): Bandai's dataset-1 clips (the varied
    # 8% of the training frames) repeated this many times in the training stream
    dataset1_repeat: int = 1
    mirror: float = 0.0  # probability of a left-right mirrored training window (mmar.data.augment)
    yaw_augment: bool = False  # turn every training window by a random yaw (for model.frame="world")


def repeat_dataset1(clips, times: int):
    """``clips`` (a :class:`mmar.data.pipeline.ClipArrays`) with every Bandai dataset-1 clip
    (name ``dataset-1_*``) present ``times`` times, so that an epoch's windows are not 92%
    dataset-2's repeated gestures and walks. ``times=1`` returns ``clips`` itself."""
    times = int(times)
    if times < 1:
        raise ConfigError(f"data.dataset1_repeat must be >= 1, got {times}")
    if times == 1:
        return clips
    idx = [i for i, n in enumerate(clips.names) for _ in range(times if n.startswith("dataset-1_") else 1)]
    return clips.subset(idx)


def frozen_config(cls: type, source: Any, **values: Any) -> Any:
    """An instance of the (frozen) model config ``cls`` with every field taken from the task's
    model config ``source`` by name, or from ``values``. A field of ``cls`` that ``source`` lacks
    keeps its default only when it is listed in ``cls.FIXED`` (e.g. the 54 sparse inputs);
    otherwise this is a bug of the task file: every model field must be reachable with ``--set``."""
    fixed = getattr(cls, "FIXED", ("sparse_dim", "num_joints"))
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            kwargs[f.name] = values[f.name]
        elif hasattr(source, f.name):
            kwargs[f.name] = getattr(source, f.name)
        elif f.name not in fixed:
            raise ConfigError(f"{type(source).__name__} has no field {f.name!r} of {cls.__name__}")
    return cls(**kwargs)


def load_stage_variables(workdir: str, task: str, collections: tuple[str, ...], model_cfg, fields: tuple[str, ...]) -> dict:
    """The variables of a first-stage run (e.g. the frozen VQ-VAE of Mem-MLP): ``collections``
    of its latest checkpoint, after checking that the run belongs to ``task`` and that its
    model config agrees with ``model_cfg`` (this stage's copy of the architecture) on ``fields``."""
    from mmar.run import load

    run = load(workdir)
    if run.config.task != task:
        raise CheckpointError(f"{workdir}: model.vqvae_workdir must be a {task} run, this is a {run.config.task} run")
    differ = [f"{f}={getattr(model_cfg, f)!r} (the run has {getattr(run.config.model, f)!r})" for f in fields
              if getattr(run.config.model, f) != getattr(model_cfg, f)]
    if differ:
        raise ConfigError(f"{workdir}: the first-stage run does not match this config: model." + ", model.".join(differ))
    return {k: v for k, v in run.variables.items() if k in collections}


class TaskBase:
    """What every task shares: its config sections (``ModelConfig``, ``DataConfig``, checked on
    construction), the export modes and the typed default config a saved run is read into."""

    ModelConfig: ClassVar[type]
    DataConfig: ClassVar[type]
    #: exportable TFLite modes (:mod:`mmar.export`), the first is the default; () = not a predictor
    export_modes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg):
        for section, cls in (("model", self.ModelConfig), ("data", self.DataConfig)):
            if not isinstance(getattr(cfg, section), cls):
                raise ConfigError(f"task {cfg.task!r} needs {section} = {cls.__name__}, "
                                  f"got {type(getattr(cfg, section)).__name__}")
        self.cfg = cfg
        self.m = cfg.model
        self.d = cfg.data

    @property
    def process_batch_size(self) -> int:
        """Rows of every batch this process feeds: ``train.batch_size`` is the global batch, split
        evenly over the processes of a multi-host run (:func:`mmar.train.train` checks it divides)."""
        import jax

        return int(self.cfg.train.batch_size) // jax.process_count()

    @classmethod
    def default_config(cls):
        """The typed config a saved run is read into (:func:`mmar.run.load`)."""
        from mmar.train.config import Config

        return Config(model=cls.ModelConfig(), data=cls.DataConfig())


class BenchmarkTask(TaskBase):
    """Base of the sparse-to-full-body tasks. Subclasses set ``ModelConfig`` (their ``cfg.model``
    dataclass) and implement ``init``, ``loss`` and either ``predict_batch`` or ``evaluate``."""

    DataConfig: ClassVar[type] = BenchmarkDataConfig
    #: the frozen first-stage model (a VQ-VAE) the model reads, if any
    vq_model = None

    def __init__(self, cfg, benchmark=None):
        super().__init__(cfg)
        self._benchmark = benchmark

    # ------------------------------------------------------------------ data
    @property
    def benchmark(self):
        """The clips: a :class:`mmar.data.benchmark.TfdsBenchmark` when ``data.tfds_dir`` is set,
        else the npz cache (:class:`mmar.data.benchmark.SparseBenchmark`)."""
        if self._benchmark is None:
            if self.d.tfds_dir:
                from mmar.data.benchmark import TfdsBenchmark

                self._benchmark = TfdsBenchmark(self.d.tfds_dir, self.d.fps, name=self.d.tfds_name,
                                                config=self.d.tfds_config)
            else:
                from mmar.data.benchmark import load_sparse_benchmark

                self._benchmark = load_sparse_benchmark(self.d.root, self.d.fps)
        return self._benchmark

    @property
    def frames_per_window(self) -> int:
        """Frames of one training window."""
        return int(self.m.window)

    @property
    def tokens_per_sample(self) -> int:
        """Frames of a training window: the trainer's tokens/s (:mod:`mmar.train.compute`)."""
        return self.frames_per_window

    #: the arrays of a training batch
    train_keys: ClassVar[tuple[str, ...]] = ("sparse", "rot6d", "joints")

    def train_iterator(self, seed: int, start_state=None):
        from mmar.data.pipeline import ClipArrays, make_train_iterator

        bench, keys = self.benchmark, self.train_keys
        if hasattr(bench, "clip_arrays"):  # only the batch arrays are held
            clips = bench.clip_arrays("train", self.d.max_train_clips, keys)
        else:
            clips = ClipArrays.from_arrays(bench.subset("train", self.d.max_train_clips), keys)
        clips = repeat_dataset1(clips, self.d.dataset1_repeat)
        return make_train_iterator(clips, self.frames_per_window, self.process_batch_size, seed, keys=keys)

    def augment(self, batch: dict, rng) -> dict:
        """The training batch after ``data.mirror`` / ``data.yaw_augment`` (identity when off);
        every sparse task's ``loss`` starts with it."""
        from mmar.data.augment import augment_batch

        return augment_batch(batch, rng, mirror=float(self.d.mirror), yaw=bool(self.d.yaw_augment))

    def eval_clips(self) -> dict[str, dict]:
        return self.benchmark.subset(self.d.eval_split, self.d.max_eval_clips)

    # ------------------------------------------------------------------ inference
    def model_vars(self, variables: dict) -> dict:
        """The Flax variables the model is applied with, from the variables as saved (params plus
        the task's extra collections)."""
        return variables

    def predict_batch(self, variables: dict, sparse: np.ndarray, offsets: np.ndarray):
        """``(sparse (B, T, 54), offsets (B, 22, 3)) -> (rot6d (B, T, 22, 6), joints (B, T, 22, 3))``,
        every frame predicted online. Compiled once per shape."""
        raise ConfigError(f"a {self.cfg.task} model is not a sparse-to-full-body predictor")

    def predict_clips(self, variables, clips: dict[str, dict], batch: int | None = None, bucket: int = 128,
                      progress: bool = False) -> dict[str, dict]:
        """Online predictions for ``{clip: arrays}``: clips are grouped into batches padded to a
        multiple of ``bucket`` frames (padding is at the end, so causal predictions of real frames
        are unaffected), so a few compilations serve every clip length."""
        batch = int(batch or self.d.eval_batch)
        names = sorted(clips, key=lambda n: clips[n]["sparse"].shape[0])
        out = {}
        groups = [names[i:i + batch] for i in range(0, len(names), batch)]
        if progress:
            from tqdm import tqdm

            groups = tqdm(groups, desc="predicting", unit="batch")
        for group in groups:
            T = max(clips[n]["sparse"].shape[0] for n in group)
            T = -(-T // bucket) * bucket
            sp = np.zeros((batch, T, 54), np.float32)
            off = np.zeros((batch, 22, 3), np.float32)
            for i, n in enumerate(group):
                s = clips[n]["sparse"]
                sp[i, :len(s)] = s
                sp[i, len(s):] = s[-1]
                off[i] = clips[n]["offsets"]
            rot, joints = (np.asarray(x) for x in self.predict_batch(variables, sp, off))
            for i, n in enumerate(group):
                t = clips[n]["sparse"].shape[0]
                out[n] = {"rot6d": rot[i, :t], "joints": joints[i, :t], "fps": clips[n]["fps"]}
        return out

    def evaluate(self, params, extra_vars) -> dict[str, float]:
        """Online sparse metrics on the validation clips (the trainer's evaluation)."""
        from mmar.eval.sparse import sparse_metrics

        clips = self.eval_clips()
        return sparse_metrics(self.predict_clips({"params": params, **extra_vars}, clips), clips)

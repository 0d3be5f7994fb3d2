"""tensorflow-datasets builders that write the motion datasets as ArrayRecord files.

Three ``tfds.core.GeneratorBasedBuilder``s read the raw data from a *manual* folder (nothing
is downloaded) and write ``file_format="array_record"`` shards, read back by
:mod:`mmar.data.pipeline` through ``builder.as_data_source(split)`` (random access, no
TensorFlow):

``BandaiNamco`` (``"bandai_namco"``)
    ``manual_dir`` = the folder of the Bandai Namco archives with ``cfg-1/`` and ``cfg-2/``
    (``../shared/data/bandai-namco``). Clips are retargeted to SMPL-22
    (:func:`mmar.data.bandai.load_bandai`) and split by the fixed rule of :mod:`mmar.data.splits`.
    Configs ``fps30`` (native, default), ``fps60`` and ``fps20`` (slerp resampling).
    Features: ``name``, ``joints (T, 22, 3)``, ``rot6d (T, 22, 6)``, ``root (T, 3)``,
    ``sparse (T, 54)``, ``offsets (22, 3)``, ``fps``, ``dataset`` (1 or 2), ``content``,
    ``style``, ``captions`` (:func:`mmar.data.captions.captions_for`).
``Amass`` (``"amass"``)
    ``manual_dir`` = the AMASS root holding one folder per subset (``CMU``, ``BMLrub`` or
    ``BioMotionLab_NTroje``, ``HDM05`` or ``MPI_HDM05``) and the SMPL-H body model (the
    config's ``body_model``, relative to ``manual_dir`` or absolute; default
    ``body_models/smplh/male/model.npz``). Config ``s1``: protocol S1 (CMU, BMLrub, HDM05 at
    60 fps, template male body as AGRoL, splits train / test from
    :func:`mmar.data.amass.agrol_s1_split`: AGRoL's published lists when
    ``<manual_dir>/data_split/`` holds them, else a seeded 90/10 split by file). Same motion
    features as Bandai plus ``subset``.
``HumanML3D`` (``"humanml3d"``)
    ``manual_dir`` = the HumanML3D root (``new_joint_vecs/``, ``texts/``, ``train.txt``...),
    read by :func:`mmar.data.humanml3d.load_humanml3d` (every entry of the published loader:
    whole motions and captioned sub-clips). Features ``name``, ``features (T, 263)``,
    ``texts``, ``fps``. Configs ``humanml3d`` (default) and ``kit`` (KIT-ML, ``(T, 251)``).
    Splits train / val / test.

Splits without any clip are not written. Records are stored in tfds' key-hash order;
:class:`mmar.data.pipeline.ClipArrays` sorts them by name.

Helpers: :func:`prepare` builds (or reuses) a dataset, :func:`data_source` opens a split
(every feature decoded), :class:`ClipRecords` opens a split for the training pipeline: the
per-frame arrays stay zlib-encoded until asked for, and ``names`` / ``lengths`` index the
split, so a reader decodes only the arrays and clips it keeps
(:meth:`mmar.data.pipeline.ClipArrays.from_tfds`). The sparse-body tasks read a prepared
dataset with ``data.tfds_dir`` (:class:`mmar.tasks.base.BenchmarkDataConfig`).

Example::

    from mmar.data import tfds_builders, pipeline
    tfds_builders.prepare("bandai_namco", "~/tfds", "../shared/data/bandai-namco", config="fps60")
    ds = pipeline.WindowDataset.from_tfds("~/tfds", "train", window=41, config="fps60")
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds

from mmar.errors import ConfigError, DataFormatError
from mmar.skeleton import NUM_JOINTS, SPARSE_DIM

FILE_FORMAT = "array_record"
# Float motion arrays gain ~10-20% from zlib; decoding is one pass at load time.
ENCODING = tfds.features.Encoding.ZLIB
# Clips converted at once in _generate_examples (bounds memory while building).
_CONVERT_BATCH = 256

_BANDAI_CITATION = """Bandai Namco Research Motion Dataset, Bandai Namco Research Inc., 2022.
https://github.com/BandaiNamcoResearchInc/Bandai-Namco-Research-Motiondataset (CC BY-NC 4.0)"""


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the mmar builders (data from ``manual_dir`` only).

    ``code_path`` is the module file: tfds' own lookup of a package's resources needs the
    ``importlib_resources`` backport, which is not a dependency here."""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        import inspect

        from etils import epath

        return epath.Path(inspect.getfile(cls))


def _tensor(shape):
    return tfds.features.Tensor(shape=shape, dtype=np.float32, encoding=ENCODING)


def motion_features(**extra) -> tfds.features.FeaturesDict:
    """The per-clip motion features (the ``mmar convert`` arrays) plus ``extra``."""
    return tfds.features.FeaturesDict({
        "name": tfds.features.Text(),
        "joints": _tensor((None, NUM_JOINTS, 3)),
        "rot6d": _tensor((None, NUM_JOINTS, 6)),
        "root": _tensor((None, 3)),
        "sparse": _tensor((None, SPARSE_DIM)),
        "offsets": tfds.features.Tensor(shape=(NUM_JOINTS, 3), dtype=np.float32),
        "fps": tfds.features.Scalar(dtype=np.float32),
        **extra,
    })


def _motion_examples(clips: Sequence[Any], extra_fn) -> Iterable[tuple[str, dict]]:
    """``(key, example)`` for SMPL-22 clips; ``extra_fn(clip) -> dict`` adds features."""
    from mmar.data.pipeline import clips_to_arrays

    for i in range(0, len(clips), _CONVERT_BATCH):
        part = clips[i:i + _CONVERT_BATCH]
        for clip, arrays in zip(part, clips_to_arrays(part)):
            yield clip.name, {
                "name": clip.name,
                "joints": arrays["joints"],
                "rot6d": arrays["rot6d"],
                "root": arrays["root"],
                "sparse": arrays["sparse"],
                "offsets": arrays["offsets"],
                "fps": np.float32(arrays["fps"]),
                **extra_fn(clip),
            }


def _split_generators_by(builder, groups: dict[str, list]) -> dict[str, Any]:
    """Generators of the non-empty splits (tfds refuses a split without examples)."""
    out = {s: builder._generate_examples(items) for s, items in groups.items() if items}
    if not out:
        raise DataFormatError("no clips found", str(builder._manual_dir_for_errors))
    return out


# --------------------------------------------------------------------------
# Bandai Namco
# --------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class BandaiNamcoConfig(tfds.core.BuilderConfig):
    """``fps``: frame rate of the stored clips (30 is native; others are slerp-resampled).
    ``datasets``: which of the Bandai Namco datasets (1, 2) to include."""

    fps: float = 30.0
    datasets: tuple[int, ...] = (1, 2)


def _bandai_clips(manual_dir: str, config: BandaiNamcoConfig, workers: int) -> list:
    """SMPL-22 clips of the Bandai Namco data (a seam for tests)."""
    from mmar.data.bandai import load_bandai
    from mmar.data.pipeline import resample_clips

    clips = load_bandai(root=manual_dir, datasets=tuple(config.datasets), retarget=True,
                        fps=None, workers=workers, on_error="raise")
    # resampled here, batched (one compilation) rather than clip by clip
    return resample_clips(clips, config.fps)


def _split_clips(clips: list) -> dict[str, list]:
    """``{"train", "val", "test"}`` lists by :func:`mmar.data.splits.split_clips`: the split
    rule works per (dataset, content) stratum, and ``load_bandai`` (with ``on_error="raise"``)
    returns whole datasets, so this equals :func:`mmar.data.splits.split_of` on the full
    release."""
    from mmar.data.splits import split_clips

    return split_clips(clips)


def _captions_for(labels: dict) -> list[str]:
    from mmar.data.captions import captions_for

    return [str(t) for t in captions_for(labels)]


def _dataset_number(clip) -> int:
    v = clip.labels.get("dataset")
    for s in (v, clip.name):
        if isinstance(s, (int, np.integer)):
            return int(s)
        if isinstance(s, str):
            digits = s.split("_", 1)[0].rsplit("-", 1)[-1]
            if digits.isdigit():
                return int(digits)
    raise DataFormatError(f"clip {clip.name}: cannot tell its Bandai dataset number", clip.source)


class BandaiNamco(_Builder):
    """Bandai Namco Research Motion Datasets 1 and 2, retargeted to SMPL-22."""

    name = "bandai_namco"
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"1.0.0": "SMPL-22 arrays, sparse features, labels and captions.",
                     "2.0.0": "Rotations from the canonical T-pose (docs/design.md, Canonical rest pose)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Point manual_dir at the folder holding the Bandai-Namco-Research-Motiondataset-*.tar.xz "
        "archives and the cfg-1/ cfg-2/ label lists (e.g. ../shared/data/bandai-namco)."
    )
    BUILDER_CONFIGS = [
        BandaiNamcoConfig(name="fps30", fps=30.0, description="native 30 fps"),
        BandaiNamcoConfig(name="fps60", fps=60.0, description="slerp-resampled to 60 fps"),
        BandaiNamcoConfig(name="fps20", fps=20.0, description="slerp-resampled to 20 fps"),
    ]
    DEFAULT_CONFIG_NAME = "fps30"
    # Worker processes for reading the archives (set by ``prepare(..., workers=)``).
    workers: int = 2

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Bandai Namco Research Motion Datasets 1 and 2 on the SMPL-22 skeleton "
                        "(Y up, metres). CC BY-NC 4.0, credit Bandai Namco Research Inc.",
            features=motion_features(
                dataset=tfds.features.Scalar(dtype=np.int32),
                content=tfds.features.Text(),
                style=tfds.features.Text(),
                captions=tfds.features.Sequence(tfds.features.Text()),
            ),
            homepage="https://github.com/BandaiNamcoResearchInc/Bandai-Namco-Research-Motiondataset",
            citation=_BANDAI_CITATION,
            license="CC BY-NC 4.0",
        )

    def _split_generators(self, dl_manager):
        self._manual_dir_for_errors = dl_manager.manual_dir
        manual = os.fspath(dl_manager.manual_dir)
        clips = sorted(_bandai_clips(manual, self.builder_config, self.workers),
                       key=lambda c: c.name)
        groups = _split_clips(clips)
        return _split_generators_by(self, groups)

    def _generate_examples(self, clips):
        def extra(c):
            return {
                "dataset": np.int32(_dataset_number(c)),
                "content": str(c.labels.get("content", "")),
                "style": str(c.labels.get("style", "")),
                "captions": [str(t) for t in c.texts] or _captions_for(c.labels),
            }

        yield from _motion_examples(clips, extra)


# --------------------------------------------------------------------------
# AMASS
# --------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class AmassConfig(tfds.core.BuilderConfig):
    """``fps``: frame rate of the stored clips (120 fps captures are taken with stride 2).
    ``body_model``: SMPL-H ``model.npz``, relative to ``manual_dir`` or absolute.
    ``use_betas``: apply each file's shape (AGRoL uses the template body: False).
    ``test_fraction``, ``seed``: the reproducible 90/10 split used when ``manual_dir`` has no
    ``data_split/`` folder of published lists (:func:`mmar.data.amass.agrol_s1_split`).
    ``frame``: up-axis conversion of :func:`mmar.data.amass.load_amass_clip`."""

    fps: float = 60.0
    body_model: str = "body_models/smplh/male/model.npz"
    use_betas: bool = False
    test_fraction: float = 0.1
    seed: int = 0
    frame: str = "humanml3d"


def _amass_subset(rel: str) -> str:
    """The S1 subset key (``CMU``, ``BioMotionLab_NTroje``, ``MPI_HDM05``) of a file path."""
    from mmar.data.amass import SUBSET_ALIASES

    first = rel.split("/", 1)[0]
    for key, names in SUBSET_ALIASES.items():
        if first in names:
            return key
    return first


def _resolve_amass_file(manual_dir: str, rel: str) -> str | None:
    """``rel`` as found under ``manual_dir``, trying the other release name of its subset
    (published lists may say ``BioMotionLab_NTroje`` where the folder is ``BMLrub``)."""
    from mmar.data.amass import SUBSET_ALIASES

    if os.path.isfile(os.path.join(manual_dir, rel)):
        return rel
    first, _, rest = rel.partition("/")
    for names in SUBSET_ALIASES.values():
        if first in names:
            for alt in names:
                if os.path.isfile(os.path.join(manual_dir, alt, rest)):
                    return f"{alt}/{rest}"
    return None


def _amass_split_files(manual_dir: str, config: AmassConfig) -> dict[str, list[str]]:
    """``{"train": [...], "test": [...]}`` relative paths of protocol S1 (a seam for tests)."""
    from mmar.data.amass import agrol_s1_split

    split_dir = os.path.join(manual_dir, "data_split")
    if not os.path.isdir(split_dir):
        split_dir = None
    return agrol_s1_split(root_dir=manual_dir, split_dir=split_dir,
                          test_fraction=config.test_fraction, seed=config.seed)


def _amass_clips(manual_dir: str, files: list[str], config: AmassConfig) -> list:
    """SMPL-22 clips of the given AMASS files (a seam for tests)."""
    from mmar.data.amass import load_amass, load_body_model

    bm = config.body_model
    bm = bm if os.path.isabs(bm) else os.path.join(manual_dir, bm)
    return load_amass(manual_dir, load_body_model(bm), fps=config.fps, files=files,
                      use_betas=config.use_betas, frame=config.frame)


class Amass(_Builder):
    """AMASS motion on SMPL-22 (Y up) for the sparse-to-full-body protocols."""

    name = "amass"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "SMPL-22 arrays and sparse features."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the AMASS subsets CMU, BMLrub (BioMotionLab_NTroje) and HDM05 (MPI_HDM05) "
        "(SMPL+H G) from https://amass.is.tue.mpg.de and the SMPL-H body model; point "
        "manual_dir at the folder holding one folder per subset and put the model at "
        "<manual_dir>/body_models/smplh/male/model.npz (or set AmassConfig.body_model). "
        "Optionally copy AGRoL's prepare_data/data_split/ to <manual_dir>/data_split/ for the "
        "published file lists."
    )
    BUILDER_CONFIGS = [
        AmassConfig(name="s1", description="Protocol S1: CMU, BMLrub, HDM05 at 60 fps, "
                                           "90/10 by file, template male body."),
    ]
    DEFAULT_CONFIG_NAME = "s1"

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="AMASS subsets on the SMPL-22 skeleton (Y up, metres) with sparse "
                        "head and wrist features.",
            features=motion_features(subset=tfds.features.Text()),
            homepage="https://amass.is.tue.mpg.de",
        )

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        manual = os.fspath(dl_manager.manual_dir)
        self._manual_dir_for_errors = manual
        bm = cfg.body_model if os.path.isabs(cfg.body_model) else os.path.join(manual, cfg.body_model)
        if not os.path.isfile(bm):
            raise DataFormatError("SMPL-H body model not found (AmassConfig.body_model)", bm)
        groups: dict[str, list] = {}
        for split, rels in _amass_split_files(manual, cfg).items():
            found = [f for f in (_resolve_amass_file(manual, r) for r in rels) if f is not None]
            if len(found) < len(rels):
                import warnings

                warnings.warn(f"AMASS {split}: {len(rels) - len(found)} of {len(rels)} listed "
                              f"files are missing under {manual}", stacklevel=2)
            clips = _amass_clips(manual, found, cfg) if found else []
            for clip, rel in zip(clips, found):
                clip.labels = dict(clip.labels, subset=_amass_subset(rel))
            groups[split] = sorted(clips, key=lambda c: c.name)
        return _split_generators_by(self, groups)

    def _generate_examples(self, clips):
        yield from _motion_examples(clips, lambda c: {"subset": str(c.labels.get("subset", ""))})


# --------------------------------------------------------------------------
# HumanML3D
# --------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class HumanML3DConfig(tfds.core.BuilderConfig):
    """``kind``: ``"humanml3d"`` (22 joints, 263 features, 20 fps) or ``"kit"`` (KIT-ML in
    the same layout: 21 joints, 251 features, 12.5 fps), passed to
    :func:`mmar.data.humanml3d.load_humanml3d`; ``feature_dim`` and ``fps`` follow it."""

    kind: str = "humanml3d"
    feature_dim: int = 263
    fps: float = 20.0


def _humanml3d_records(root: str, split: str, kind: str) -> list:
    """Entries with ``.name``, ``.features (T, D)``, ``.texts`` (a seam for tests)."""
    from mmar.data.humanml3d import load_humanml3d

    return load_humanml3d(root, split, kind)


class HumanML3D(_Builder):
    """HumanML3D (or KIT-ML) text-to-motion features with captions."""

    name = "humanml3d"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Features and captions of every entry of the published loader."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Build HumanML3D (https://github.com/EricGuo5513/HumanML3D) or KIT-ML and point "
        "manual_dir at its root (new_joint_vecs/, texts/, train.txt, val.txt, test.txt)."
    )
    BUILDER_CONFIGS = [
        HumanML3DConfig(name="humanml3d", description="HumanML3D: 263 features, 20 fps"),
        HumanML3DConfig(name="kit", kind="kit", feature_dim=251, fps=12.5,
                        description="KIT-ML: 251 features, 12.5 fps"),
    ]
    DEFAULT_CONFIG_NAME = "humanml3d"
    SPLITS = ("train", "val", "test")

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description="Text-to-motion features (HumanML3D layout) with captions. Entries follow "
                        "the published loader: whole motions and captioned sub-clips "
                        "(<id>_<first>_<stop>).",
            features=tfds.features.FeaturesDict({
                "name": tfds.features.Text(),
                "features": _tensor((None, cfg.feature_dim)),
                "texts": tfds.features.Sequence(tfds.features.Text()),
                "fps": tfds.features.Scalar(dtype=np.float32),
            }),
            homepage="https://github.com/EricGuo5513/HumanML3D",
        )

    def _split_generators(self, dl_manager):
        root = os.fspath(dl_manager.manual_dir)
        self._manual_dir_for_errors = root
        groups = {}
        for split in self.SPLITS:
            if not os.path.isfile(os.path.join(root, f"{split}.txt")):
                continue
            groups[split] = _humanml3d_records(root, split, self.builder_config.kind)
        return _split_generators_by(self, groups)

    def _generate_examples(self, records):
        cfg = self.builder_config
        seen = set()
        for r in records:
            name = str(r.name)
            if name in seen:
                raise DataFormatError(f"duplicate entry {name}", getattr(r, "source", None))
            seen.add(name)
            feats = np.asarray(r.features, np.float32)
            if feats.ndim != 2 or feats.shape[1] != cfg.feature_dim:
                raise DataFormatError(f"entry {name}: features must be (T, {cfg.feature_dim}), "
                                      f"got {feats.shape}", getattr(r, "source", None))
            yield name, {"name": name, "features": feats, "texts": [str(t) for t in r.texts],
                         "fps": np.float32(getattr(r, "fps", cfg.fps))}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "bandai_namco": BandaiNamco,
    "bandai": BandaiNamco,
    "amass": Amass,
    "humanml3d": HumanML3D,
}


def builder_class(name: str) -> type[tfds.core.GeneratorBasedBuilder]:
    key = name.lower().replace("-", "_")
    if key not in BUILDERS:
        raise ConfigError(f"unknown dataset {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[key]


def get_builder(name: str, data_dir: str, config: str | tfds.core.BuilderConfig | None = None):
    """The builder of dataset ``name`` in ``data_dir`` (nothing is built)."""
    return builder_class(name)(data_dir=os.path.expanduser(os.fspath(data_dir)), config=config,
                               file_format=FILE_FORMAT)


def prepare(name: str, data_dir: str, manual_dir: str,
            config: str | tfds.core.BuilderConfig | None = None, workers: int | None = None):
    """Build dataset ``name`` (``"bandai_namco"``, ``"amass"``, ``"humanml3d"``) into
    ``data_dir`` from the raw files in ``manual_dir``; a dataset already built there is
    reused. ``config`` is a config name (e.g. ``"fps60"``) or a config object. Returns the
    builder."""
    manual_dir = os.path.expanduser(os.fspath(manual_dir))
    if not os.path.isdir(manual_dir):
        raise DataFormatError("manual_dir is not a folder", manual_dir)
    builder = get_builder(name, data_dir, config)
    if workers is not None:
        builder.workers = int(workers)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    return builder


def prepared_builder(name: str, data_dir: str,
                     config: str | tfds.core.BuilderConfig | None = None, split: str | None = None):
    """The builder of a prepared dataset (``DataFormatError`` if it is not prepared in
    ``data_dir``; ``ConfigError`` if ``split`` is given and the dataset has no such split)."""
    builder = get_builder(name, data_dir, config)
    if not builder.is_prepared():
        raise DataFormatError(
            f"dataset {builder.name}/{builder.builder_config.name} is not prepared; run "
            f"mmar.data.tfds_builders.prepare first", builder.data_dir)
    if split is not None and split not in builder.info.splits:
        raise ConfigError(f"split {split!r} not in {builder.name} "
                          f"(have {sorted(builder.info.splits)})")
    return builder


def data_source(name: str, split: str, data_dir: str,
                config: str | tfds.core.BuilderConfig | None = None):
    """Random-access source of a prepared split (``builder.as_data_source``): ``len(src)``,
    ``src[i] -> dict`` of numpy arrays, ``bytes`` texts; every feature is decoded."""
    return prepared_builder(name, data_dir, config, split).as_data_source(split=split)


def _text(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _per_frame(feature) -> bool:
    shape = getattr(feature, "shape", None)
    return isinstance(feature, tfds.features.Tensor) and bool(shape) and shape[0] is None


class ClipRecords:
    """The clips of a prepared split, read at random and decoded only as far as asked.

    ``data_source`` decodes every feature of a record, and the per-frame arrays (``(T, ...)``
    tensors: ``joints``, ``rot6d``, ``root``, ``sparse``; ``features`` for HumanML3D) are
    zlib-compressed: decoding them is the cost of reading a split. Here they stay encoded
    until :meth:`read` is asked for them. :attr:`names` and :attr:`lengths` index the split
    (one pass that decodes only the smallest per-frame array), so that a reader can choose
    clips and allocate its arrays before reading. Safe to read from several threads.

    Attributes:
      builder: the tfds builder; ``features``: its ``FeaturesDict``.
      frame_keys: the per-frame features.
    """

    def __init__(self, name: str, split: str, data_dir: str,
                 config: str | tfds.core.BuilderConfig | None = None):
        self.builder = prepared_builder(name, data_dir, config, split)
        self.split = split
        self.features = self.builder.info.features
        self.frame_keys = tuple(k for k, f in self.features.items() if _per_frame(f))
        if "name" not in self.features or not self.frame_keys:
            raise DataFormatError(f"{self.builder.name}: records need a name and per-frame "
                                  f"arrays", self.builder.data_dir)
        self._source = self.builder.as_data_source(
            split=split, decoders={k: tfds.decode.SkipDecoding() for k in self.frame_keys})
        self._index: tuple[tuple[str, ...], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._source)

    def _build_index(self) -> tuple[tuple[str, ...], np.ndarray]:
        if self._index is None:
            probe = min(self.frame_keys,
                        key=lambda k: int(np.prod(self.features[k].shape[1:], dtype=np.int64)))
            names, lengths = [], []
            for i in range(len(self._source)):
                rec = self._source[i]
                names.append(_text(rec["name"]))
                lengths.append(self.features[probe].decode_example_np(rec[probe]).shape[0])
            self._index = (tuple(names), np.asarray(lengths, np.int64))
        return self._index

    @property
    def names(self) -> tuple[str, ...]:
        """Clip names in record order."""
        return self._build_index()[0]

    @property
    def lengths(self) -> np.ndarray:
        """Frames of each clip, in record order."""
        return self._build_index()[1]

    def read(self, i: int, keys: Iterable[str] | None = None) -> dict[str, Any]:
        """Record ``i``: ``name`` (``str``), the per-frame arrays of ``keys`` (default: all)
        decoded (read-only float32 arrays), every other feature as tfds decodes it."""
        keys = None if keys is None else set(keys)
        rec = self._source[int(i)]
        out: dict[str, Any] = {}
        for k, v in rec.items():
            if k in self.frame_keys:
                if keys is None or k in keys:
                    out[k] = self.features[k].decode_example_np(v)
            elif k == "name":
                out[k] = _text(v)
            else:
                out[k] = v
        return out


__all__ = [
    "BandaiNamco", "BandaiNamcoConfig", "Amass", "AmassConfig", "HumanML3D", "HumanML3DConfig",
    "BUILDERS", "motion_features", "get_builder", "prepare", "prepared_builder", "data_source",
    "ClipRecords",
]

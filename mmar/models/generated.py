"""What a text-to-motion generator returns (:meth:`generate` of the MoScale and next-token
tasks), read by ``mmar generate``, ``mmar eval`` and :mod:`mmar.eval.t2m_protocol`."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from mmar.errors import ShapeError

__all__ = ["GeneratedMotions", "EditResult"]


@dataclasses.dataclass
class GeneratedMotions:
    """``features (B, T, D)`` float32, *denormalised* HumanML3D features (263, KIT 251), zero
    beyond each motion's length; ``lengths (B,)`` int32 frames; ``texts``: the B captions;
    ``fps``: frames per second of the features (20 for HumanML3D / Bandai, 12.5 for KIT);
    ``kind``: ``'humanml3d'`` or ``'kit'`` (the feature layout, :func:`mmar.data.hml_features.get_spec`);
    ``seconds``: wall time of the sampling (excluding compilation when it could be told apart)."""

    features: np.ndarray
    lengths: np.ndarray
    texts: Sequence[str]
    fps: float
    kind: str = "humanml3d"
    seconds: float = 0.0

    def __post_init__(self):
        self.features = np.asarray(self.features, np.float32)
        self.lengths = np.asarray(self.lengths, np.int32)
        self.texts = list(self.texts)
        if self.features.ndim != 3 or self.lengths.shape != (self.features.shape[0],):
            raise ShapeError(f"GeneratedMotions: features (B, T, D) and lengths (B,), got {self.features.shape}, "
                             f"{self.lengths.shape}")
        if len(self.texts) != self.features.shape[0]:
            raise ShapeError(f"GeneratedMotions: {len(self.texts)} texts for {self.features.shape[0]} motions")

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def motion(self, i: int) -> np.ndarray:
        """The features of motion ``i`` cut to its length ``(lengths[i], D)``."""
        return self.features[i, : int(self.lengths[i])]


@dataclasses.dataclass
class EditResult:
    """What a task's ``edit`` returns (:meth:`mmar.tasks.scalemogen.ScaleMoGenTask.edit`,
    :meth:`mmar.tasks.moscale.MoScaleTask.edit`): the edited motions (features un-normalised,
    ``(n, frames, F)``), the source decoded through the tokenizer (``recon``), the source's and
    the edits' tokens per scale (bits for ScaleMoGen, codes for MoScale), the editable-token
    masks, and the sampling time."""

    edited: GeneratedMotions
    recon: np.ndarray
    source_bits: list
    edited_bits: list
    editable: list
    seconds: float

"""MotionMAR as one TFLite graph: the sparse window in, the last frame's pose out.

The whole window model -- SAC, the three cached transformer passes (one per scale, a static
Python loop), the soft codebook mix, phi and up-sampling, the VQ-VAE decoder and the Bi-GRU
MRN (unrolled over the 20 frames, so the graph has no while loop) -- converts as a single
function with fixed shapes. Decoding is deterministic (the soft codebook mix, or the argmax
code); no RNG op is exported. A headset runs it like the AGRoL-MLP window model: keep the last
20 sparse frames (the first frame repeated before the stream starts) and call it once per new
frame (:class:`mmar.export.runtime.WindowRuntime`).

Heading frame (``frame="heading"`` in the config): the graph's input and output stay in the
world; it expresses the window in its last frame's heading frame before the SAC, the decoder and
the MRN and turns the root orientation back (:func:`mmar.models.motionmar.infer_window`; a few
elementwise ops, no trigonometry).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


def export_model(ar_config):
    """The :class:`~mmar.models.motionmar.MotionMAR` module to export (GRUs unrolled); the
    parameters are the same as the trained model's."""
    from mmar.models.motionmar import MotionMAR

    return MotionMAR(dataclasses.replace(ar_config, mrn_unroll=True))


def motionmar_window_fn(model, variables, vq_model, vq_variables, *, decode: str = "soft",
                        temperature: float = 2.75, guidance: float = 1.0, refine: bool = True) -> Callable:
    """``sparse (1, W, 54) -> {"rot6d": (1, 22, 6)}`` (the window's last frame, root orientation in
    the world; with ``model.config.frame == "heading"`` the heading-frame transform and its
    inverse are part of the function, as in :func:`mmar.models.motionmar.infer_window`)."""
    from mmar.errors import ConfigError
    from mmar.models.motionmar import infer_window

    if decode not in ("soft", "greedy"):
        raise ConfigError(f"MotionMAR export decodes deterministically ('soft' or 'greedy'), got {decode!r}")
    params = {"params": variables["params"]}

    def fn(sparse):
        out = infer_window(model, params, vq_model, vq_variables, sparse, decode=decode, temperature=temperature,
                           guidance=guidance, refine=refine)
        return {"rot6d": out["pose"][:, -1].reshape(sparse.shape[0], -1, 6)}

    return fn


def motionmar_window_specs(ar_config) -> dict:
    return {"sparse": ((1, ar_config.window, ar_config.sparse_dim), np.float32)}

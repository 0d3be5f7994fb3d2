"""Sparse-to-full-body models (head + hands -> 22-joint body) as Flax Linen modules.

* :mod:`mmar.models.agrol_mlp` -- AGRoL-MLP (:class:`AGRoLMLP`), and the shared AGRoL MLP block.
* :mod:`mmar.models.mlp_vqvae` -- the per-frame MLP VQ-VAE whose frozen encoder feeds Mem-MLP.
* :mod:`mmar.models.mem_mlp` -- Mem-MLP (:class:`MemMLP`), its losses, memory helpers and
  streaming / offline autoregressive inference.
* :mod:`mmar.models.body` -- sparse layout, 6D -> FK, placing the body at the tracked head.
* :mod:`mmar.models.ik` -- optional L-BFGS IK from the rotation head toward the position head.
* :mod:`mmar.models.text` -- pluggable text encoders for text conditioning: the caption
  :class:`Tokenizer`, the :class:`TextEncoder` protocol, :class:`TransformerTextEncoder`,
  :class:`PrecomputedTextFeatures` (T5/CLIP features from files) and the optional
  :class:`FlaxT5TextEncoder` adapter.

Every model takes windows ``sparse (B, W, 54)`` and predicts local 6D rotations of the 22
SMPL joints (root orientation included), ``(B, W, 22, 6)``.

Model size at the paper configurations (``sum(x.size for x in jax.tree.leaves(params))``;
FLOPs from ``jax.jit(f).lower(...).compile().cost_analysis()['flops']`` for one window at
batch 1 on the CPU backend; XLA counts 2 FLOPs per multiply-add, so multiply-adds are half):

==================================  ===========  ==========  ======================
model (config)                      params       GFLOPs      paper (params, FLOPs)
==================================  ===========  ==========  ======================
AGRoL-MLP (window 196)              3,735,668    1.774       3.74M
AGRoL-MLP (window 41)               3,292,988    0.293       --
Mem-MLP-41 (``MemMLPConfig()``)     5,199,965    0.477       4.10M, 0.25G
Mem-MLP-60 (``window=60``)          5,244,406    0.725       4.59M, 0.38G
Mem-MLP-41, no memory               4,392,550    0.391       --
Mem-MLP-41, no position head        4,631,574    0.425       --
MLP VQ-VAE (encoder+codebook)       362,816      0.030/win   not reported
==================================  ===========  ==========  ======================

Mem-MLP's FLOPs match the paper's if the paper counts multiply-adds (0.239 G and 0.363 G
multiply-adds vs 0.25G and 0.38G; the same 1.52 ratio between the two windows). Its
parameter counts cannot be reproduced from its description: the 12 AGRoL blocks (3.21M at
W=41) plus the four 512-wide predictor blocks (1.07M) already exceed 4.10M before any
Memory-Block, and its 0.49M growth from W=41 to W=60 is far larger than the window-dependent
weights (frame-mixing convolutions, +44k here). The whole VQ-VAE (with decoder, used only
for its own training) has 679,108 parameters.
"""
from mmar.models.agrol_mlp import AGRoLMLP, AGRoLMLPConfig, FrameMix, MLPBlock, pad_clip_start, predict_online
from mmar.models.body import (
    HEAD,
    SPARSE_POS,
    SPARSE_POSVEL,
    SPARSE_ROT6D,
    SPARSE_ROTVEL,
    body_in_world,
    fk_rot6d,
    head_relative,
    place_at_head,
    rot6d_to_local,
    sparse_positions,
    sparse_rotations,
    tracked_head,
)
from mmar.models.ik import ik_objective, ik_refine
from mmar.models.mem_mlp import (
    LOSS_TERMS,
    MemMLP,
    MemMLPConfig,
    MemoryBlock,
    StreamState,
    advance_window,
    init_loss_uncertainty,
    init_stream_state,
    make_memory,
    make_streamer,
    mem_mlp_loss,
    predict_clip,
    stream_step,
    training_memory,
    zero_memory,
)
from mmar.models.mlp_vqvae import MLPVQVAE, MLPVQVAEConfig, vqvae_loss
from mmar.models.text import (
    CaptionNotFoundError,
    FlaxT5TextEncoder,
    PrecomputedTextFeatures,
    TextEncoder,
    TextEncoderConfig,
    TextFeatures,
    TextInputError,
    TextTruncatedWarning,
    Tokenizer,
    TransformerTextEncoder,
    hf_tokenize,
    precompute_text_features,
    save_text_features,
)

__all__ = [
    "AGRoLMLP", "AGRoLMLPConfig", "FrameMix", "MLPBlock", "pad_clip_start", "predict_online",
    "HEAD", "SPARSE_POS", "SPARSE_POSVEL", "SPARSE_ROT6D", "SPARSE_ROTVEL",
    "body_in_world", "fk_rot6d", "head_relative", "place_at_head", "rot6d_to_local",
    "sparse_positions", "sparse_rotations", "tracked_head",
    "ik_objective", "ik_refine",
    "LOSS_TERMS", "MemMLP", "MemMLPConfig", "MemoryBlock", "StreamState", "init_loss_uncertainty",
    "advance_window", "init_stream_state", "make_memory", "make_streamer", "mem_mlp_loss", "predict_clip",
    "stream_step", "training_memory", "zero_memory",
    "MLPVQVAE", "MLPVQVAEConfig", "vqvae_loss",
    "CaptionNotFoundError", "FlaxT5TextEncoder", "PrecomputedTextFeatures", "TextEncoder", "TextEncoderConfig",
    "TextFeatures", "TextInputError", "TextTruncatedWarning", "Tokenizer", "TransformerTextEncoder",
    "hf_tokenize", "precompute_text_features", "save_text_features",
]

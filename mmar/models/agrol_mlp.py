"""AGRoL-MLP (Du et al., CVPR 2023, "Avatars Grow Legs"), the MLP baseline and backbone of
Mem-MLP, as a Flax Linen module.

Architecture (the public reference implementation's ``PureMLP``, re-implemented)::

    sparse (B, W, 54) -> Linear(54, C)
      -> depth x MLPBlock
      -> Linear(C, 22 * 6) -> (B, W, 22, 6) local 6D rotations (root orientation included)

with each ``MLPBlock`` (pre-norm, two residual branches)::

    x = x + SiLU(FrameMix(LayerNorm(x)))      # Conv1d(W, W, kernel 1): frames are channels
    x = x + SiLU(Linear(C, C)(LayerNorm(x)))

Deviation note: a shorter description of the block that circulates ("Conv1D, LayerNorm,
SiLU, Linear with one residual, then a final LayerNorm") does not match the published code.
The published block normalises *before* each sub-layer, applies SiLU *after* each sub-layer,
has two residual additions, and there is no LayerNorm after the last block. This file follows
the published code. Its parameter count at the published configuration (``window=196``,
``dim=512``, ``depth=12``) is 3,735,668, which matches the 3.74M reported for AGRoL-MLP in
the Mem-MLP paper (Table 16).

Frame-mixing convolution: PyTorch's ``nn.Conv1d(W_in, W_out, 1)`` applied to a
``(B, W, C)`` tensor treats the W frames as channels and the C features as the length, i.e.
``y[b, i, c] = sum_j K[i, j] x[b, j, c] + bias[i]``. :class:`FrameMix` computes exactly that
(with PyTorch's default uniform initialisation ``U(-1/sqrt(W_in), 1/sqrt(W_in))``).

Outputs are raw 6D (first two columns of the local rotation matrix, ``mmar.geometry``
convention); use :func:`mmar.geometry.rot6d_to_matrix` (Gram-Schmidt) to get matrices.
AGRoL normalises its targets with a dataset mean/std; that is a data-pipeline choice and is
left to the trainer.

Online use (:func:`predict_online`): the pose of frame t is the last output frame of the
window ``t-W+1 .. t``; before the clip has W frames the window is edge-padded by repeating
the first frame (as the reference test script pads short clips).

Input frame (``AGRoLMLPConfig.frame``): ``"world"`` is AGRoL's original layout (the network
reads the 54 world-frame numbers and predicts the root orientation in the world). With
``"heading"`` every window is expressed in the heading frame of its last frame's head
(:mod:`mmar.models.heading`): the network reads ``sparse_to_frame(window)`` and predicts the
root orientation in that frame; :func:`predict_window` and :func:`predict_online` turn it back
into the world. The module itself is the same network either way (same parameters).
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmar.errors import ConfigError, ShapeError
from mmar.models import heading
from mmar.skeleton import NUM_JOINTS, SPARSE_DIM

Array = jax.Array


# --------------------------------------------------------------------------
# shared layers (also used by Mem-MLP)
# --------------------------------------------------------------------------

def _torch_uniform(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class FrameMix(nn.Module):
    """``Conv1d(F_in, out_frames, kernel_size=1)`` over a ``(..., F_in, C)`` array whose
    frames act as channels: a learned linear map across frames, shared by all features.

    Computed as one matmul per sample (the kernel broadcast over the leading axes), as PyTorch's
    ``Conv1d`` does: XLA's CPU backend wraps the plain ``einsum("gf,...fc->...gc")`` in
    transposes, and the AGRoL-MLP-41 training step is 9% faster this way
    (``docs/results.md``, "AGRoL-MLP beside the PyTorch original")."""

    out_frames: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        f_in = x.shape[-2]
        kernel = self.param("kernel", _torch_uniform(f_in), (self.out_frames, f_in))
        bias = self.param("bias", _torch_uniform(f_in), (self.out_frames,))
        lead = x.shape[:-2]
        k = jnp.broadcast_to(kernel.astype(x.dtype), lead + kernel.shape)
        y = jnp.einsum("...gf,...fc->...gc", k, x)
        return y + bias.astype(x.dtype)[:, None]


class MLPBlock(nn.Module):
    """AGRoL's MLP block on ``(..., W, C)`` features.

    ``extra`` (``(..., M, C)``, optional) is concatenated to ``x`` along the frame axis
    before the frame-mixing convolution, which then maps ``W + M`` frames to ``W``; the
    residual path carries ``x`` only. Mem-MLP uses this to inject memory features.
    """

    dim: int
    frames: int

    @nn.compact
    def __call__(self, x: Array, extra: Array | None = None) -> Array:
        h = x if extra is None else jnp.concatenate([x, extra], axis=-2)
        y = nn.LayerNorm(name="norm0")(h)
        y = FrameMix(self.frames, name="fc0")(y)
        x = x + nn.silu(y)
        y = nn.LayerNorm(name="norm1")(x)
        y = nn.Dense(self.dim, name="fc1")(y)
        return x + nn.silu(y)


# --------------------------------------------------------------------------
# AGRoL-MLP
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AGRoLMLPConfig:
    """Configuration of :class:`AGRoLMLP`.

    The defaults are the published AGRoL-MLP configuration (window 196, latent 512,
    12 blocks; 3,735,668 parameters). The Mem-MLP ablation base "AGRoL-MLP-41" is
    ``AGRoLMLPConfig(window=41)`` (3,292,988 parameters). ``frame``: ``"world"`` (AGRoL's
    layout) or ``"heading"`` (each window in its last frame's heading frame, see the module
    docstring); it changes what the network reads and predicts, not its parameters.
    """

    window: int = 196
    dim: int = 512
    depth: int = 12
    frame: str = "world"
    sparse_dim: int = SPARSE_DIM
    num_joints: int = NUM_JOINTS

    def __post_init__(self):
        for name in ("window", "dim", "depth", "sparse_dim", "num_joints"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"AGRoLMLPConfig.{name} must be >= 1, got {getattr(self, name)}")
        heading.check_frame(self.frame, "AGRoLMLPConfig.frame")


class AGRoLMLP(nn.Module):
    """AGRoL-MLP: ``sparse (B, W, 54) -> local rot6d (B, W, 22, 6)``.

    ``W`` must equal ``config.window`` (the frame-mixing convolutions have W channels).
    """

    config: AGRoLMLPConfig = AGRoLMLPConfig()

    @nn.compact
    def __call__(self, sparse: Array, train: bool = False) -> Array:  # noqa: ARG002 - API symmetry
        cfg = self.config
        _check_sparse(sparse, cfg.window, cfg.sparse_dim, "AGRoLMLP")
        x = nn.Dense(cfg.dim, name="input_fc")(sparse)
        for i in range(cfg.depth):
            x = MLPBlock(cfg.dim, cfg.window, name=f"block{i}")(x)
        y = nn.Dense(cfg.num_joints * 6, name="output_fc")(x)
        return y.reshape(y.shape[:-1] + (cfg.num_joints, 6))


def _check_sparse(sparse: Array, window: int, sparse_dim: int, who: str) -> None:
    if sparse.ndim < 2 or sparse.shape[-2] != window or sparse.shape[-1] != sparse_dim:
        raise ShapeError(
            f"{who}: sparse input must be (..., {window}, {sparse_dim}), got {tuple(sparse.shape)}"
        )


def pad_clip_start(clip: Array, window: int, mode: str = "edge") -> Array:
    """Prepend ``window - 1`` frames to ``clip (B, T, D)`` along axis 1.

    ``mode="edge"`` repeats the first frame (the online padding used by every streaming
    function in :mod:`mmar.models`), ``"zero"`` prepends zeros.
    """
    if mode not in ("edge", "zero"):
        raise ConfigError(f"pad mode must be 'edge' or 'zero', got {mode!r}")
    first = clip[:, :1]
    if mode == "zero":
        first = jnp.zeros_like(first)
    pad = jnp.repeat(first, window - 1, axis=1)
    return jnp.concatenate([pad, clip], axis=1)


def predict_window(model: AGRoLMLP, params, window: Array) -> Array:
    """The pose of a window's last frame, ``(B, W, 54) -> (B, 22, 6)``, root orientation in
    the world: with ``frame="heading"`` the window is expressed in its last frame's heading
    frame before the network and the root orientation is turned back after it."""
    if model.config.frame == "heading":
        frame = heading.window_frame(window)
        out = model.apply(params, heading.sparse_to_frame(window, frame))
        return heading.pose_from_frame(out[:, -1], frame)
    return model.apply(params, window)[:, -1]


def predict_online(model: AGRoLMLP, params, sparse_clip: Array, pad_mode: str = "edge") -> Array:
    """Causal online prediction for a whole clip ``(B, T, 54) -> (B, T, 22, 6)``.

    Frame t is the last output frame of the window ``t-W+1 .. t`` of the padded clip
    (see :func:`pad_clip_start`), by :func:`predict_window` (each window in its own heading
    frame with ``frame="heading"``). ``params`` are the module's variables
    (``{"params": ...}``). Runs as a ``lax.scan`` with ``T`` iterations.
    """
    W = model.config.window
    if sparse_clip.ndim != 3:
        raise ShapeError(f"predict_online: sparse clip must be (B, T, D), got {tuple(sparse_clip.shape)}")
    padded = pad_clip_start(sparse_clip, W, pad_mode)
    T = sparse_clip.shape[1]

    def step(carry, t):
        win = jax.lax.dynamic_slice_in_dim(padded, t, W, axis=1)
        return carry, predict_window(model, params, win)

    _, ys = jax.lax.scan(step, None, jnp.arange(T))
    return jnp.moveaxis(ys, 0, 1)

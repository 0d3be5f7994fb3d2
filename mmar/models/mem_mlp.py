"""Mem-MLP (real-time full body from head + hands): MLP backbone with Memory-Blocks, a
multi-task (rotation + position) predictor, uncertainty-weighted losses and streaming
inference.

Architecture (``W`` = window, ``C`` = latent width)::

    sparse (B, W, 54) -> Linear(54, C)
    for l = 1 .. depth:                        # AGRoL MLP blocks (see agrol_mlp.MLPBlock)
        x = MLPBlock_l(x, extra=m_{l-1})       # m_{l-1}: memory feature after block l-1
        m_l = MemoryBlock_l(memory)  if l in memory_layers else None
    rot head: 2 MLP blocks (the first receives m_depth) -> Linear(C, 22*6) -> rot6d (B,W,22,6)
    pos head: 2 MLP blocks (the first receives m_depth) -> Linear(C, 22*3) -> pos_rel
    pos = pos_rel + tracked head position of each frame        -> pos (B,W,22,3), world

Memory (per window ending at frame t) is the *previous* window, frames ``t-W .. t-1``:
``{"sparse": (B,W,54), "rot6d": (B,W,22,6), "code": (B,W,64)}`` -- its sparse signal,
full-body motion (ground truth in training, the model's own previous prediction at
inference, zeros before the first frame) and the frozen VQ-VAE code vectors of that motion
(:func:`make_memory`). A Memory-Block projects each input with its own Linear -> LayerNorm
-> SiLU to ``h_x, h_y, h_c`` and returns::

    m = h_x + alpha * h_y + (1 - alpha) * h_c      (use_code=False: m = h_x + h_y)

with ``alpha ~ U(0, 1)`` during training (drawn per sample and per channel, independently
per Memory-Block) and ``alpha = 0.5`` (its mean) at inference.

The memory feature ``m_l (B, W, C)`` is "concatenated with the output of the even-numbered
MLP block": we concatenate it along the frame axis, so the next block's frame-mixing
convolution maps ``2W -> W`` frames (the memory-blocks' input length is W, as the paper
states) while the residual stream stays ``(B, W, C)``. Memory after the last block goes into
the first block of both heads ("MB in the multi-task predictor", the paper's default).

Paper configuration ("Mem-MLP-41"): ``MemMLPConfig()`` (window 41, C=512, 12 blocks, memory
on blocks 2,4,...,12, heads of 2 blocks, code dim 64). Measured here: 5,199,965 parameters and
0.477 GFLOPs per window (XLA count, 2 per multiply-add, i.e. 0.239 G multiply-adds) vs the
paper's 4.10M / 0.25G; Mem-MLP-60 (``window=60``): 5,244,406 / 0.725 GFLOPs (0.363 G
multiply-adds) vs 4.59M / 0.38G. The FLOPs agree with the paper if it counts multiply-adds;
the parameter counts cannot agree with its description (the 12 backbone blocks plus four
512-wide head blocks alone exceed 4.2M). A streaming step adds the frozen VQ encoder on the
previous window (+0.030 GFLOPs at W=41; encoder + codebook 362,816 parameters). See the
table in ``mmar/models/__init__.py``.

Decisions where the paper's text is ambiguous or its symbols were lost:

* Block: the AGRoL block as published (pre-LayerNorm, frame-mixing Conv1d + SiLU residual,
  then Linear + SiLU residual).
* Memory = the previous window shifted by one frame (length W); fused by frame-axis
  concatenation (above). Blend ``alpha`` mixes the motion and code-vector latents (our
  reading of "blend these features ... to simulate inference conditions").
* The optional self-feeding scheme (blend ground-truth memory with the model's own previous
  prediction, :func:`training_memory`) is offered in addition to the latent blend.
* Position head: the paper predicts global positions. The head outputs positions relative
  to the tracked head (world axes) and the tracked head is added back, so ``pos`` is global
  and translation-invariant to learn; the loss is on ``pos`` (global), as in the paper.
* Losses (Eqs. 1-4; exact norms not legible): mean per-joint L2 distances (AGRoL's loss) on
  6D rotations, 6D rotation velocities (frame differences), global positions, and lower-body
  position velocities; weighted by learned homoscedastic uncertainty
  ``sum_i exp(-s_i) L_i + s_i`` or by fixed weights (ablation).
* Streaming: the pose of frame t is the last output frame of window ``t-W+1 .. t``; before
  W frames have arrived the window is edge-padded with the first frame (AGRoL pads short
  clips the same way). ``pad_mode="zero"`` is available.
* Predicted rotations are re-orthonormalised (6D -> matrix -> 6D) before entering memory.

Input frame (``MemMLPConfig.frame``, :mod:`mmar.models.heading`): ``"world"`` is the layout
above. With ``"heading"`` a window ending at frame t is expressed in the heading frame of
frame t's head: its sparse input, its targets (root orientation ``H^T R``, positions
``H^T (p - o)``) and -- before the VQ code is computed -- its memory: the previous window's
sparse input and motion are expressed in the *current* window's frame, not in their own, so
the network sees one consistent frame and the code vectors encode what it sees. Outputs are
turned back into the world (:func:`outputs_from_frame`). Because the memory's frame is only
known once the next frame has arrived, the streaming state carries the memory in the world
(the previous window and its prediction with the root orientation in the world) and every
step expresses it in its own frame and encodes it (:func:`heading_step_memory`); the carried
``code`` is then unused and kept at zero. A step costs one VQ encoding of a window either way
(at the end of the step in world mode, at its start in heading mode). Before the first frame
the memory is all zeros in either mode (zeros are not moved into the frame).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmar import geometry
from mmar.errors import ConfigError, ShapeError
from mmar.models import heading
from mmar.models.agrol_mlp import MLPBlock, pad_clip_start
from mmar.models.body import tracked_head
from mmar.skeleton import LOWER, NUM_JOINTS, SPARSE_DIM

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class MemMLPConfig:
    """Configuration of :class:`MemMLP`; the defaults are the paper's Mem-MLP-41.

    Mem-MLP-60 is ``MemMLPConfig(window=60)``. Ablations: ``use_memory=False`` (no
    Memory-Blocks), ``use_pos_head=False`` (single rotation head, no multi-task),
    ``use_code=False`` (Memory-Blocks without VQ code vectors), ``memory_into_heads=False``
    (no memory into the predictor heads), ``memory_layers=(2, 4)`` etc. (placement; 1-based
    block indices after which memory is injected; ``None`` = every even block). ``frame``:
    ``"world"`` or ``"heading"`` (module docstring); it does not change the parameters.
    """

    window: int = 41
    dim: int = 512
    depth: int = 12
    head_depth: int = 2
    use_memory: bool = True
    memory_layers: tuple[int, ...] | None = None
    memory_into_heads: bool = True
    use_code: bool = True
    code_dim: int = 64
    use_pos_head: bool = True
    alpha_per_channel: bool = True
    eval_alpha: float = 0.5
    pad_mode: str = "edge"
    frame: str = "world"
    sparse_dim: int = SPARSE_DIM
    num_joints: int = NUM_JOINTS

    def __post_init__(self):
        for name in ("window", "dim", "depth", "head_depth", "code_dim", "sparse_dim", "num_joints"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"MemMLPConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.memory_layers is not None:
            object.__setattr__(self, "memory_layers", tuple(int(l) for l in self.memory_layers))
            bad = [l for l in self.memory_layers if not 1 <= l <= self.depth]
            if bad:
                raise ConfigError(f"MemMLPConfig.memory_layers must lie in 1..{self.depth}, got {bad}")
        if self.pad_mode not in ("edge", "zero"):
            raise ConfigError(f"MemMLPConfig.pad_mode must be 'edge' or 'zero', got {self.pad_mode!r}")
        if not 0.0 <= self.eval_alpha <= 1.0:
            raise ConfigError(f"MemMLPConfig.eval_alpha must lie in [0, 1], got {self.eval_alpha}")
        heading.check_frame(self.frame, "MemMLPConfig.frame")

    def active_memory_layers(self) -> tuple[int, ...]:
        """1-based block indices whose output receives a memory feature."""
        if not self.use_memory:
            return ()
        layers = self.memory_layers
        if layers is None:
            layers = tuple(range(2, self.depth + 1, 2))
        layers = tuple(sorted(set(layers)))
        if not self.memory_into_heads:
            layers = tuple(l for l in layers if l < self.depth)
        return layers


class MemoryBlock(nn.Module):
    """One Memory-Block: ``(sparse, motion, code)`` of the previous window -> ``(..., W, C)``."""

    dim: int
    use_code: bool = True
    alpha_per_channel: bool = True
    eval_alpha: float = 0.5

    def _proj(self, x: Array, name: str) -> Array:
        x = nn.Dense(self.dim, name=f"{name}_fc")(x)
        return nn.silu(nn.LayerNorm(name=f"{name}_norm")(x))

    @nn.compact
    def __call__(self, sparse: Array, motion: Array, code: Array | None, key: Array | None, train: bool) -> Array:
        h_x = self._proj(sparse, "sparse")
        h_y = self._proj(motion, "motion")
        if not self.use_code:
            return h_x + h_y
        h_c = self._proj(code, "code")
        if train:
            if key is None:
                raise ConfigError("MemoryBlock: training needs a PRNG key for the blend coefficient")
            shape = h_y.shape[:-2] + (1, self.dim if self.alpha_per_channel else 1)
            alpha = jax.random.uniform(key, shape, h_y.dtype)
        else:
            alpha = jnp.asarray(self.eval_alpha, h_y.dtype)
        return h_x + alpha * h_y + (1.0 - alpha) * h_c


class _Head(nn.Module):
    dim: int
    window: int
    depth: int
    out_dim: int

    @nn.compact
    def __call__(self, x: Array, extra: Array | None) -> Array:
        for i in range(self.depth):
            x = MLPBlock(self.dim, self.window, name=f"block{i}")(x, extra if i == 0 else None)
        return nn.Dense(self.out_dim, name="out_fc")(x)


class MemMLP(nn.Module):
    """Mem-MLP window model.

    ``__call__(sparse (B, W, 54), memory=None, train=False, rng=None)`` returns a dict with
    ``rot6d (B, W, 22, 6)`` (local 6D, root orientation included) and, with the position
    head, ``pos (B, W, 22, 3)`` (global joint positions) and ``pos_rel`` (positions minus the
    tracked head). ``memory`` is the dict described in the module docstring (``None`` =
    zeros, the first-frame fallback); it is ignored when ``use_memory=False``. In training
    mode the blend coefficients are drawn from ``rng`` (or from the ``"memory"`` RNG stream
    when ``rng`` is None).
    """

    config: MemMLPConfig = MemMLPConfig()

    @nn.compact
    def __call__(self, sparse: Array, memory: dict | None = None, train: bool = False, rng: Array | None = None) -> dict:
        cfg = self.config
        W, J = cfg.window, cfg.num_joints
        if sparse.ndim < 2 or sparse.shape[-2:] != (W, cfg.sparse_dim):
            raise ShapeError(f"MemMLP: sparse must be (..., {W}, {cfg.sparse_dim}), got {tuple(sparse.shape)}")
        batch = sparse.shape[:-2]
        layers = cfg.active_memory_layers()

        mem_feats: dict[int, Array] = {}
        if layers:
            if memory is None:
                memory = zero_memory(cfg, batch, sparse.dtype)
            m_sparse, m_motion, m_code = _check_memory(memory, cfg, batch)
            key = None
            if train and cfg.use_code:
                key = rng if rng is not None else self.make_rng("memory")
            for l in layers:
                mem_feats[l] = MemoryBlock(
                    cfg.dim, cfg.use_code, cfg.alpha_per_channel, cfg.eval_alpha, name=f"memory{l}"
                )(m_sparse, m_motion, m_code, None if key is None else jax.random.fold_in(key, l), train)

        x = nn.Dense(cfg.dim, name="input_fc")(sparse)
        pending = None
        for i in range(cfg.depth):
            x = MLPBlock(cfg.dim, W, name=f"block{i}")(x, pending)
            pending = mem_feats.get(i + 1)

        rot = _Head(cfg.dim, W, cfg.head_depth, J * 6, name="rot_head")(x, pending)
        out = {"rot6d": rot.reshape(batch + (W, J, 6))}
        if cfg.use_pos_head:
            rel = _Head(cfg.dim, W, cfg.head_depth, J * 3, name="pos_head")(x, pending)
            rel = rel.reshape(batch + (W, J, 3))
            out["pos_rel"] = rel
            out["pos"] = rel + tracked_head(sparse)[..., None, :]
        return out


# --------------------------------------------------------------------------
# memory construction
# --------------------------------------------------------------------------

def _check_memory(memory: dict, cfg: MemMLPConfig, batch: tuple[int, ...]):
    W, J = cfg.window, cfg.num_joints
    try:
        m_sparse, m_rot = memory["sparse"], memory["rot6d"]
    except (KeyError, TypeError) as e:
        raise ShapeError("MemMLP: memory must be a dict with 'sparse', 'rot6d' and 'code'") from e
    if m_sparse.shape != batch + (W, cfg.sparse_dim):
        raise ShapeError(f"MemMLP: memory['sparse'] must be {batch + (W, cfg.sparse_dim)}, got {tuple(m_sparse.shape)}")
    if m_rot.shape != batch + (W, J, 6):
        raise ShapeError(f"MemMLP: memory['rot6d'] must be {batch + (W, J, 6)}, got {tuple(m_rot.shape)}")
    m_code = None
    if cfg.use_code:
        m_code = memory.get("code")
        if m_code is None or m_code.shape != batch + (W, cfg.code_dim):
            got = None if m_code is None else tuple(m_code.shape)
            raise ShapeError(f"MemMLP: memory['code'] must be {batch + (W, cfg.code_dim)}, got {got}")
    return m_sparse, m_rot.reshape(batch + (W, J * 6)), m_code


def zero_memory(config: MemMLPConfig, batch_shape: int | Sequence[int], dtype=jnp.float32) -> dict:
    """The all-zero memory used before the first frame."""
    batch = (batch_shape,) if isinstance(batch_shape, int) else tuple(batch_shape)
    W = config.window
    return {
        "sparse": jnp.zeros(batch + (W, config.sparse_dim), dtype),
        "rot6d": jnp.zeros(batch + (W, config.num_joints, 6), dtype),
        "code": jnp.zeros(batch + (W, config.code_dim), dtype),
    }


def _orthonormal_rot6d(rot6d: Array) -> Array:
    return geometry.matrix_to_rot6d(geometry.rot6d_to_matrix(rot6d))


def make_memory(
    sparse_prev: Array,
    rot6d_prev: Array,
    vq_model=None,
    vq_params=None,
    code_dim: int = 64,
    frame: "heading.HeadingFrame | None" = None,
) -> dict:
    """Memory dict from the previous window.

    Args:
      sparse_prev: ``(B, W, 54)`` sparse features of frames ``t-W .. t-1``.
      rot6d_prev: ``(B, W, 22, 6)`` motion of those frames (ground truth, or prediction).
        Re-orthonormalised before use.
      vq_model, vq_params: the frozen :class:`~mmar.models.mlp_vqvae.MLPVQVAE` and its
        variables; codes are ``encode(rot6d, sparse)`` under ``stop_gradient``. Without a VQ
        model the codes are zeros of size ``code_dim`` (for ``use_code=False``).
      frame: heading mode: the current window's :class:`~mmar.models.heading.HeadingFrame`
        (batch ``(B,)``); ``sparse_prev`` and ``rot6d_prev`` are then given in the world and
        expressed in that frame before the codes are computed.
    """
    rot = jax.lax.stop_gradient(_orthonormal_rot6d(rot6d_prev))
    sparse_prev = jax.lax.stop_gradient(sparse_prev)
    if frame is not None:
        rot = heading.pose_to_frame(rot, frame)
        sparse_prev = heading.sparse_to_frame(sparse_prev, frame)
    if vq_model is None:
        code = jnp.zeros(sparse_prev.shape[:-1] + (code_dim,), sparse_prev.dtype)
    else:
        code = vq_model.apply(vq_params, rot, sparse_prev, method=type(vq_model).encode)
        code = jax.lax.stop_gradient(code)
    return {"sparse": sparse_prev, "rot6d": rot, "code": code}


def training_memory(
    sparse_prev: Array,
    rot6d_prev: Array,
    vq_model=None,
    vq_params=None,
    rot6d_prev_pred: Array | None = None,
    rng: Array | None = None,
    code_dim: int = 64,
    frame: "heading.HeadingFrame | None" = None,
    mix: Array | float = 1.0,
    noise: float = 0.0,
    noise_rng: Array | None = None,
) -> dict:
    """Training memory for windows whose previous window is ``(sparse_prev, rot6d_prev)``.

    With ``rot6d_prev_pred`` (the model's own prediction for the previous window, e.g. from a
    gradient-free forward pass on it), the motion is the per-sample random blend
    ``beta * ground_truth + (1 - beta) * prediction`` with ``beta ~ U(0, 1)`` (needs ``rng``),
    so training sees memories between teacher forcing and inference conditions; the code
    vectors are re-encoded from the blended motion. Without it this is ``make_memory`` on the
    ground truth (the paper's scheme, whose inference gap is covered by the latent blend inside
    each Memory-Block). ``mix`` in ``[0, 1]`` scales the prediction's share: ``beta = 1 - mix *
    (1 - u)``, ``u ~ U(0, 1)`` (``mix=1``: the blend above; ``0``: ground truth), for a schedule
    from teacher forcing to the blend. ``frame``: as in :func:`make_memory` (every input, the
    prediction too, in the world).

    ``noise > 0`` (needs ``noise_rng``) perturbs the memory motion the way an online model's own
    errors do: a per-sample scale ``s ~ U(0, noise)``, then a per-joint offset ``N(0, s^2)`` held
    for the whole window (drift: it cannot be averaged away over frames) plus per-frame
    ``N(0, (s/2)^2)`` (jitter), added to every 6D component before re-orthonormalisation. The
    model so learns to check the memory against the tracked input instead of copying it; without
    it, an online model trusts its fed-back past (docs/results.md, "Mem-MLP's memory at
    inference").

    Typical use with windows of ``W + 1`` frames ``sparse_ext, rot_ext``::

        mem = training_memory(sparse_ext[:, :-1], rot_ext[:, :-1], vq, vq_vars)
        out = model.apply(vars, sparse_ext[:, 1:], mem, train=True, rng=key)
    """
    if rot6d_prev_pred is not None:
        if rng is None:
            raise ConfigError("training_memory: blending with predictions needs rng")
        beta = 1.0 - mix * (1.0 - jax.random.uniform(rng, rot6d_prev.shape[:-3] + (1, 1, 1), rot6d_prev.dtype))
        rot6d_prev = beta * rot6d_prev + (1.0 - beta) * jax.lax.stop_gradient(rot6d_prev_pred)
    if noise:
        if noise_rng is None:
            raise ConfigError("training_memory: memory noise needs noise_rng")
        k_s, k_d, k_j = jax.random.split(noise_rng, 3)
        lead = rot6d_prev.shape[:-3]
        scale = noise * jax.random.uniform(k_s, lead + (1, 1, 1), rot6d_prev.dtype)
        drift = jax.random.normal(k_d, lead + (1,) + rot6d_prev.shape[-2:], rot6d_prev.dtype)
        jitter = jax.random.normal(k_j, rot6d_prev.shape, rot6d_prev.dtype)
        rot6d_prev = rot6d_prev + scale * (drift + 0.5 * jitter)
    return make_memory(sparse_prev, rot6d_prev, vq_model, vq_params, code_dim, frame)


# --------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------

LOSS_TERMS: tuple[str, ...] = ("rot", "rot_vel", "pos", "vel")


def init_loss_uncertainty(use_pos_head: bool = True, value: float = 0.0) -> dict:
    """Learned log-variances ``s_i`` (one scalar per loss term), initialised to ``value``."""
    terms = LOSS_TERMS if use_pos_head else LOSS_TERMS[:2]
    return {k: jnp.asarray(value, jnp.float32) for k in terms}


def _masked_mean(x: Array, mask: Array | None) -> Array:
    if mask is None:
        return jnp.mean(x)
    m = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)).astype(x.dtype), x.shape)
    return jnp.sum(x * m) / jnp.maximum(jnp.sum(m), 1.0)


def mem_mlp_loss(
    outputs: dict,
    batch: dict,
    params_uncertainty: dict | None = None,
    *,
    weighting: str = "uncertainty",
    weights: dict | None = None,
    lower_joints: Sequence[int] = LOWER,
) -> tuple[Array, dict]:
    """Mem-MLP objective.

    Args:
      outputs: :class:`MemMLP` outputs (``rot6d``, optionally ``pos``).
      batch: ``rot6d (B, W, 22, 6)`` ground-truth local 6D, ``joints (B, W, 22, 3)`` ground-truth
        global joint positions (needed with the position head; ``pos`` is accepted as an alias),
        ``sparse (B, W, 54)`` (unused by the terms, accepted for symmetry), optional
        ``mask (B, W)`` (1 = valid frame; velocity terms need both frames valid).
      params_uncertainty: ``{term: s_term}`` learned log-variances (see
        :func:`init_loss_uncertainty`), required for ``weighting="uncertainty"``.
      weighting: ``"uncertainty"``: ``sum_i exp(-s_i) L_i + s_i`` (Kendall et al. 2018);
        ``"fixed"``: ``sum_i w_i L_i`` with ``weights`` (default 1 for every term).

    Terms (mean per-joint L2 distances): ``rot`` 6D rotations; ``rot_vel`` 6D frame
    differences; ``pos`` global positions [m]; ``vel`` lower-body position frame differences.
    The position terms are used only when ``outputs`` has ``pos``.

    Returns ``(loss, metrics)``; metrics hold each term, ``w_<term>`` (the effective weight),
    and ``loss``.
    """
    pred_r, gt_r = outputs["rot6d"], batch["rot6d"]
    if pred_r.shape != gt_r.shape:
        raise ShapeError(f"mem_mlp_loss: rot6d prediction {pred_r.shape} vs ground truth {gt_r.shape}")
    mask = batch.get("mask")
    mask_v = None if mask is None else mask[..., 1:] * mask[..., :-1]

    terms = {
        "rot": _masked_mean(jnp.linalg.norm(pred_r - gt_r, axis=-1), mask),
        "rot_vel": _masked_mean(
            jnp.linalg.norm(jnp.diff(pred_r, axis=-3) - jnp.diff(gt_r, axis=-3), axis=-1), mask_v
        ),
    }
    if "pos" in outputs:
        gt_p = batch.get("joints", batch.get("pos"))
        if gt_p is None:
            raise ShapeError("mem_mlp_loss: the position head needs batch['joints'] (B, W, 22, 3)")
        pred_p = outputs["pos"]
        if pred_p.shape != gt_p.shape:
            raise ShapeError(f"mem_mlp_loss: position prediction {pred_p.shape} vs ground truth {gt_p.shape}")
        lo = jnp.asarray(tuple(lower_joints))
        dv = jnp.diff(pred_p[..., lo, :], axis=-3) - jnp.diff(gt_p[..., lo, :], axis=-3)
        terms["pos"] = _masked_mean(jnp.linalg.norm(pred_p - gt_p, axis=-1), mask)
        terms["vel"] = _masked_mean(jnp.linalg.norm(dv, axis=-1), mask_v)

    metrics = dict(terms)
    total = jnp.zeros((), jnp.float32)
    if weighting == "uncertainty":
        if params_uncertainty is None:
            raise ConfigError("mem_mlp_loss: weighting='uncertainty' needs params_uncertainty")
        for k, v in terms.items():
            if k not in params_uncertainty:
                raise ConfigError(f"mem_mlp_loss: params_uncertainty has no entry for term {k!r}")
            s = params_uncertainty[k]
            total = total + jnp.exp(-s) * v + s
            metrics[f"w_{k}"] = jnp.exp(-s)
            metrics[f"s_{k}"] = s
    elif weighting == "fixed":
        weights = weights or {}
        for k, v in terms.items():
            w = float(weights.get(k, 1.0))
            total = total + w * v
            metrics[f"w_{k}"] = jnp.asarray(w, jnp.float32)
    else:
        raise ConfigError(f"mem_mlp_loss: weighting must be 'uncertainty' or 'fixed', got {weighting!r}")
    metrics["loss"] = total
    return total, metrics


# --------------------------------------------------------------------------
# streaming and offline inference
# --------------------------------------------------------------------------

class StreamState(NamedTuple):
    """State of the online predictor: the last W sparse frames, the memory (previous window
    and its prediction; in heading mode in the world, with a zero code, see the module
    docstring) and the number of frames seen."""

    window: Array  # (B, W, 54)
    memory: dict
    t: Array  # int32 scalar


def init_stream_state(config: MemMLPConfig, batch_size: int, dtype=jnp.float32) -> StreamState:
    """Empty stream: zero window (filled with the first frame on the first step when
    ``pad_mode="edge"``), zero memory, ``t = 0``."""
    return StreamState(
        window=jnp.zeros((batch_size, config.window, config.sparse_dim), dtype),
        memory=zero_memory(config, (batch_size,), dtype),
        t=jnp.zeros((), jnp.int32),
    )


def require_vq_model(cfg: MemMLPConfig, vq_model) -> None:
    """Raise ConfigError when ``cfg``'s memory needs the frozen VQ-VAE and ``vq_model`` is None."""
    if cfg.active_memory_layers() and cfg.use_code and vq_model is None:
        raise ConfigError("Mem-MLP streaming with code vectors needs the frozen VQ-VAE (vq_model)")


def outputs_from_frame(out: dict, frame: "heading.HeadingFrame") -> dict:
    """:class:`MemMLP` outputs of a heading-frame window back in the world: ``rot6d`` (root
    orientation ``H R``), ``pos`` (``H p + o``) and ``pos_rel`` (``H d``), with or without
    the frame axis (the frame's batch shape is the window batch ``(B,)``)."""
    conv = {"rot6d": heading.pose_from_frame, "pos": heading.points_from_frame, "pos_rel": heading.vectors_from_frame}
    return {k: conv[k](v, frame) for k, v in out.items()}


def heading_step_memory(config: MemMLPConfig, memory: dict, frame: "heading.HeadingFrame", t: Array,
                        vq_model=None, vq_params=None) -> dict:
    """Heading mode: the carried world memory (previous window and its prediction, root
    orientation in the world) expressed in the current window's ``frame`` and encoded with the
    frozen VQ-VAE; all zeros while ``t == 0`` (no previous window yet, as :func:`zero_memory`)."""
    mem = make_memory(memory["sparse"], memory["rot6d"], vq_model if config.use_code else None, vq_params,
                      config.code_dim, frame)
    first = jnp.asarray(t).reshape(()) == 0
    return {k: jnp.where(first, jnp.zeros_like(v), v.astype(memory["sparse"].dtype)) for k, v in mem.items()}


def heading_next_memory(window: Array, rot6d_world: Array, code_dim: int) -> dict:
    """Heading mode: the memory a step carries to the next one: its window and prediction in the
    world (re-orthonormalised) and a zero ``code`` (codes are computed in the next step's frame)."""
    return {"sparse": window, "rot6d": jax.lax.stop_gradient(_orthonormal_rot6d(rot6d_world)),
            "code": jnp.zeros(window.shape[:-1] + (code_dim,), window.dtype)}


def _window_step(model: "MemMLP", params, vq_model, vq_params, window: Array, memory: dict, t: Array | int = 1):
    cfg = model.config
    layers = cfg.active_memory_layers()
    if cfg.frame == "heading":
        frame = heading.window_frame(window)
        mem_in = heading_step_memory(cfg, memory, frame, t, vq_model, vq_params) if layers else memory
        out = model.apply(params, heading.sparse_to_frame(window, frame), mem_in, train=False)
        out = outputs_from_frame(out, frame)
        new_mem = heading_next_memory(window, out["rot6d"], cfg.code_dim) if layers else memory
        return new_mem, {k: v[:, -1] for k, v in out.items()}
    out = model.apply(params, window, memory, train=False)
    if layers:
        new_mem = make_memory(window, out["rot6d"], vq_model if cfg.use_code else None, vq_params, cfg.code_dim)
    else:
        new_mem = memory
    pose = {k: v[:, -1] for k, v in out.items()}
    return new_mem, pose


def advance_window(window: Array, sparse_frame: Array, t: Array, pad_mode: str = "edge") -> Array:
    """Shift the ``(B, W, D)`` window by one frame and append ``sparse_frame (B, D)``.

    At ``t == 0`` with ``pad_mode="edge"`` the window is first filled with the frame, so the
    stream reproduces :func:`~mmar.models.agrol_mlp.pad_clip_start`."""
    if pad_mode == "edge":
        window = jnp.where(t == 0, jnp.broadcast_to(sparse_frame[:, None].astype(window.dtype), window.shape), window)
    return jnp.concatenate([window[:, 1:], sparse_frame[:, None].astype(window.dtype)], axis=1)


def stream_step(
    model: MemMLP,
    params,
    state: StreamState,
    sparse_frame: Array,
    vq_model=None,
    vq_params=None,
) -> tuple[StreamState, dict]:
    """Consume one sparse frame ``(B, 54)``; return the new state and this frame's pose
    (``rot6d (B, 22, 6)`` and, with the position head, ``pos``/``pos_rel (B, 22, 3)``).

    ``params`` are the Mem-MLP variables (``{"params": ...}``); ``vq_params`` the frozen
    VQ-VAE variables. Jit-able (e.g. ``jax.jit(functools.partial(stream_step, model))``).
    """
    cfg = model.config
    require_vq_model(cfg, vq_model)
    if sparse_frame.shape != state.window.shape[:1] + (cfg.sparse_dim,):
        raise ShapeError(f"stream_step: frame must be {state.window.shape[:1] + (cfg.sparse_dim,)}, got {sparse_frame.shape}")
    window = advance_window(state.window, sparse_frame, state.t, cfg.pad_mode)
    new_mem, pose = _window_step(model, params, vq_model, vq_params, window, state.memory, state.t)
    return StreamState(window, new_mem, state.t + 1), pose


def make_streamer(model: MemMLP, vq_model=None) -> tuple[Callable, Callable]:
    """Bind a model (and its frozen VQ-VAE) into the two streaming functions::

        init_stream_state(batch_size) -> state
        stream_step(params, state, sparse_frame) -> (state, pose)    # jitted

    with ``params = {"mem_mlp": mem_mlp_variables, "vqvae": vqvae_variables}``.
    """
    require_vq_model(model.config, vq_model)

    def init(batch_size: int, dtype=jnp.float32) -> StreamState:
        return init_stream_state(model.config, batch_size, dtype)

    @jax.jit
    def step(params, state, sparse_frame):
        return stream_step(model, params["mem_mlp"], state, sparse_frame, vq_model, params.get("vqvae"))

    return init, step


def predict_clip(
    model: MemMLP,
    params,
    sparse_clip: Array,
    vq_model=None,
    vq_params=None,
) -> dict:
    """Offline autoregressive prediction of a clip ``(B, T, 54)``: a ``lax.scan`` with T
    iterations over the windows of the start-padded clip, carrying the memory. Equals
    running :func:`stream_step` frame by frame. Returns ``rot6d (B, T, 22, 6)`` (and ``pos``,
    ``pos_rel (B, T, 22, 3)`` with the position head)."""
    cfg = model.config
    require_vq_model(cfg, vq_model)
    if sparse_clip.ndim != 3 or sparse_clip.shape[-1] != cfg.sparse_dim:
        raise ShapeError(f"predict_clip: sparse clip must be (B, T, {cfg.sparse_dim}), got {tuple(sparse_clip.shape)}")
    B, T = sparse_clip.shape[:2]
    W = cfg.window
    padded = pad_clip_start(sparse_clip, W, cfg.pad_mode)

    def body(memory, t):
        win = jax.lax.dynamic_slice_in_dim(padded, t, W, axis=1)
        return _window_step(model, params, vq_model, vq_params, win, memory, t)

    _, poses = jax.lax.scan(body, zero_memory(cfg, (B,), sparse_clip.dtype), jnp.arange(T))
    return {k: jnp.moveaxis(v, 0, 1) for k, v in poses.items()}

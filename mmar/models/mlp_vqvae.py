"""The per-frame MLP VQ-VAE of Mem-MLP (supplementary "VQ-VAE Details").

The VQ-VAE is trained first, then frozen; Mem-MLP only uses its encoder + codebook
(:meth:`MLPVQVAE.encode`) to turn a pose (and the sparse signal of the same frame) into a
64-d code vector that feeds the Memory-Blocks.

Architecture (paper: "each MLP block comprises layer normalization, a single linear layer
and a SiLU activation; this block is used uniformly in both the encoder and decoder")::

    encoder: concat(rot6d (132), sparse (54)) -> Linear(., H)
             -> enc_depth x [x + SiLU(Linear(LayerNorm(x)))] -> LayerNorm -> Linear(H, 64)
    quantiser: nearest codebook entry (squared L2), straight-through estimator
    decoder: Linear(64, H) -> dec_depth x block -> LayerNorm -> Linear(H, 132)

Choices where the paper is silent or its numbers were lost:

* Encoder input: the main text says the encoder is "conditioned on both sparse signals and
  corresponding full-body motions", so by default the encoder sees the frame's local rot6d
  and its 54 sparse numbers (``use_sparse=True``); ``use_sparse=False`` encodes poses only.
  The decoder reconstructs rotations only (the paper's VQ loss is a rotation
  reconstruction loss plus the commitment loss).
* Hidden width ``H=256`` and depths 4 / 4 (the paper ablates encoder depths 2, 4, 6; its
  baseline values are not legible in our copy). Codebook size 512 (not legible; config).
* Blocks are residual (the paper lists the layers of a block but not whether it is
  residual; residual blocks train more reliably at these depths). ``residual=False``
  gives plain blocks.
* Codebook learning: the original VQ-VAE objective, codebook term
  ``||sg(z_e) - e||^2`` plus commitment ``beta ||z_e - sg(e)||^2`` with ``beta=0.25``.
* Dead codes: with this objective alone the codebook collapses on the Bandai data (at the
  quickstart's budget one of 512 codes was left in use, so the Memory-Blocks saw a constant
  vector). The trainer therefore re-initialises codes whose EMA hit count fell below a
  threshold with random encoder outputs of the current batch (:func:`revive_dead_codes`, the
  remedy of the TMT VQ-VAE; ``vq_revive_every`` / ``vq_revive_threshold`` in
  :class:`mmar.tasks.mlp_vqvae.MLPVQVAEModelConfig`). The paper does not say how its
  codebook is kept alive.

Per-frame model: every leading axis is a batch axis, so ``(B, W, 22, 6)`` windows work.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmar.errors import ConfigError, ShapeError
from mmar.skeleton import NUM_JOINTS, SPARSE_DIM

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class MLPVQVAEConfig:
    """Configuration of :class:`MLPVQVAE` (defaults: the configuration used with Mem-MLP)."""

    hidden: int = 256
    enc_depth: int = 4
    dec_depth: int = 4
    code_dim: int = 64
    codebook_size: int = 512
    use_sparse: bool = True
    residual: bool = True
    beta: float = 0.25
    num_joints: int = NUM_JOINTS
    sparse_dim: int = SPARSE_DIM

    def __post_init__(self):
        for name in ("hidden", "code_dim", "codebook_size", "num_joints", "sparse_dim"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"MLPVQVAEConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.enc_depth < 0 or self.dec_depth < 0:
            raise ConfigError("MLPVQVAEConfig depths must be >= 0")


class _Block(nn.Module):
    dim: int
    residual: bool = True

    @nn.compact
    def __call__(self, x):
        y = nn.silu(nn.Dense(self.dim)(nn.LayerNorm()(x)))
        return x + y if self.residual else y


class _MLP(nn.Module):
    hidden: int
    depth: int
    out_dim: int
    residual: bool

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.hidden, name="in_fc")(x)
        for i in range(self.depth):
            x = _Block(self.hidden, self.residual, name=f"block{i}")(x)
        x = nn.LayerNorm(name="out_norm")(x)
        return nn.Dense(self.out_dim, name="out_fc")(x)


def _codebook_init(key, shape, dtype=jnp.float32):
    # unit-scale codes: comparable to the encoder's O(1) outputs at initialisation
    return jax.random.normal(key, shape, dtype) / jnp.sqrt(shape[-1]).astype(dtype)


class MLPVQVAE(nn.Module):
    """Per-frame MLP VQ-VAE.

    ``__call__(rot6d (..., 22, 6), sparse (..., 54) | None)`` returns a dict:
    ``recon (..., 22, 6)``, ``z_e``/``z_q`` ``(..., 64)`` (``z_q`` straight-through),
    ``indices (...)``, ``commit_loss``, ``codebook_loss``, ``perplexity`` (exp of the entropy
    of the batch code histogram), ``usage`` (fraction of codebook entries used in the batch),
    ``counts (codebook_size,)`` (the batch code histogram, for the dead-code statistics).

    Methods (call with ``model.apply(variables, ..., method=MLPVQVAE.encode)``):
    ``encode`` -> quantised code vectors, ``encode_indices`` -> code indices,
    ``decode`` -> rot6d from code vectors.
    """

    config: MLPVQVAEConfig = MLPVQVAEConfig()

    def setup(self):
        cfg = self.config
        self.encoder = _MLP(cfg.hidden, cfg.enc_depth, cfg.code_dim, cfg.residual)
        self.decoder = _MLP(cfg.hidden, cfg.dec_depth, cfg.num_joints * 6, cfg.residual)
        self.codebook = self.param("codebook", _codebook_init, (cfg.codebook_size, cfg.code_dim))

    # -- pieces --------------------------------------------------------------------
    def _encoder_input(self, rot6d: Array, sparse: Array | None) -> Array:
        cfg = self.config
        if rot6d.shape[-2:] != (cfg.num_joints, 6):
            raise ShapeError(f"MLPVQVAE: rot6d must be (..., {cfg.num_joints}, 6), got {tuple(rot6d.shape)}")
        x = rot6d.reshape(rot6d.shape[:-2] + (cfg.num_joints * 6,))
        if cfg.use_sparse:
            if sparse is None:
                raise ShapeError("MLPVQVAE: this configuration (use_sparse=True) needs the sparse features")
            if sparse.shape[:-1] != x.shape[:-1] or sparse.shape[-1] != cfg.sparse_dim:
                raise ShapeError(
                    f"MLPVQVAE: sparse must be {x.shape[:-1] + (cfg.sparse_dim,)}, got {tuple(sparse.shape)}"
                )
            x = jnp.concatenate([x, sparse.astype(x.dtype)], axis=-1)
        return x

    def _nearest(self, z_e: Array) -> tuple[Array, Array]:
        cb = jnp.asarray(self.codebook, z_e.dtype)
        d = (
            jnp.sum(z_e * z_e, -1, keepdims=True)
            - 2.0 * z_e @ cb.T
            + jnp.sum(cb * cb, -1)
        )
        idx = jnp.argmin(d, axis=-1)
        return idx, cb[idx]

    def encode_continuous(self, rot6d: Array, sparse: Array | None = None) -> Array:
        """Encoder output ``z_e (..., code_dim)`` before quantisation."""
        return self.encoder(self._encoder_input(rot6d, sparse))

    def encode_indices(self, rot6d: Array, sparse: Array | None = None) -> Array:
        return self._nearest(self.encode_continuous(rot6d, sparse))[0]

    def encode(self, rot6d: Array, sparse: Array | None = None) -> Array:
        """Quantised code vectors ``(..., code_dim)`` (codebook entries; what Mem-MLP uses)."""
        return self._nearest(self.encode_continuous(rot6d, sparse))[1]

    def decode(self, z: Array) -> Array:
        y = self.decoder(z)
        return y.reshape(y.shape[:-1] + (self.config.num_joints, 6))

    # -- full pass -----------------------------------------------------------------
    def __call__(self, rot6d: Array, sparse: Array | None = None, train: bool = False) -> dict:  # noqa: ARG002
        cfg = self.config
        z_e = self.encode_continuous(rot6d, sparse)
        idx, e = self._nearest(z_e)
        z_q = z_e + jax.lax.stop_gradient(e - z_e)  # straight-through
        commit = jnp.mean(jnp.sum((z_e - jax.lax.stop_gradient(e)) ** 2, -1))
        codebook = jnp.mean(jnp.sum((jax.lax.stop_gradient(z_e) - e) ** 2, -1))
        counts = jnp.zeros((cfg.codebook_size,), jnp.float32).at[idx.reshape(-1)].add(1.0)
        p = counts / jnp.maximum(counts.sum(), 1.0)
        entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
        return {
            "recon": self.decode(z_q),
            "z_e": z_e,
            "z_q": z_q,
            "indices": idx,
            "commit_loss": commit,
            "codebook_loss": codebook,
            "perplexity": jnp.exp(entropy),
            "usage": jnp.mean((counts > 0).astype(jnp.float32)),
            "counts": counts,
        }


def vqvae_loss(outputs: dict, rot6d: Array, beta: float = 0.25, mask: Array | None = None) -> tuple[Array, dict]:
    """VQ-VAE objective: rotation reconstruction (mean per-joint 6D L2 distance, Mem-MLP Eq. 1)
    + codebook loss + ``beta`` x commitment loss.

    Args:
      outputs: the dict of :class:`MLPVQVAE`.
      rot6d: ground truth ``(..., 22, 6)``.
      mask: optional ``(...)`` frame weights (1 = valid) for the reconstruction term.

    Returns ``(loss, metrics)`` with metrics ``rec``, ``commit``, ``codebook``,
    ``perplexity``, ``usage``.
    """
    err = jnp.linalg.norm(outputs["recon"] - rot6d, axis=-1)  # (..., J)
    rec = _masked_mean(jnp.mean(err, -1), mask)
    loss = rec + outputs["codebook_loss"] + beta * outputs["commit_loss"]
    metrics = {
        "loss": loss,
        "rec": rec,
        "commit": outputs["commit_loss"],
        "codebook": outputs["codebook_loss"],
        "perplexity": outputs["perplexity"],
        "usage": outputs["usage"],
    }
    return loss, metrics


def revive_dead_codes(params: dict, code_count: Array, z_e: Array, rng: Array, threshold: float) -> tuple[dict, Array]:
    """Re-initialise dead codes (EMA hit count ``< threshold``) with random rows of ``z_e
    (N, code_dim)`` (the batch's encoder outputs); pure. Returns ``(params, code_count)``, the
    revived codes' counts set to ``threshold`` so they are not revived again at once."""
    from mmar.models.quantizers.temporal import revive_dead_codes as _revive

    cb = {"codebook": params["codebook"]}
    new_cb, stats, _ = _revive(cb, {"code_count": code_count}, z_e.reshape(-1, z_e.shape[-1]), rng,
                               threshold=threshold)
    return {**params, "codebook": new_cb["codebook"]}, stats["code_count"]


def _masked_mean(x: Array, mask: Array | None) -> Array:
    if mask is None:
        return jnp.mean(x)
    mask = jnp.broadcast_to(mask.astype(x.dtype), x.shape)
    return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)

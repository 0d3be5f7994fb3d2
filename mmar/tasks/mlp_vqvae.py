"""Mem-MLP's per-frame MLP VQ-VAE (stage 1 of Mem-MLP; trained first, then frozen).

Loss: :func:`mmar.models.mlp_vqvae.vqvae_loss` (reconstruction + codebook + 0.25 x commitment).
The paper does not say how the codebook is kept in use; trained plainly it collapses on Bandai
to one code within 100 steps, so every ``revive_every`` steps codes whose EMA hit count (decay
0.99) falls below ``revive_threshold`` are re-initialised from random encoder outputs of the
current batch (:meth:`MLPVQVAETask.post_update`; ``docs/design.md``). Evaluation: 6D
reconstruction error, perplexity and codebook usage on the validation clips.

``model.frame`` must be the frame of the Mem-MLP that will read this VQ-VAE (checked when the
Mem-MLP task is built, :func:`check_stage_frame`): ``"world"`` (default; runs saved before the
option read as it) trains on world-frame frames; with ``"heading"`` every training window -- its
poses (root orientation ``H^T R``) and sparse input -- is expressed in the heading frame of its
last frame's head (:mod:`mmar.models.heading`), the frame a heading-mode Mem-MLP expresses its
memory in before encoding it. The evaluation then expresses every frame in its own heading frame
(the last frame of a window).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import CheckpointError, ConfigError
from mmar.models import heading
from mmar.models.mlp_vqvae import MLPVQVAE, MLPVQVAEConfig, revive_dead_codes, vqvae_loss
from mmar.tasks.base import BenchmarkTask

__all__ = ["MLPVQVAEModelConfig", "MLPVQVAETask", "TASK", "build_vqvae", "check_stage_frame"]


@dataclasses.dataclass
class MLPVQVAEModelConfig:
    """``cfg.model`` of the ``mlp_vqvae`` task (:class:`mmar.models.mlp_vqvae.MLPVQVAEConfig`)."""

    window: int = 41  # frames per training window (the VQ-VAE itself is per frame)
    vq_hidden: int = 256
    vq_depth: int = 4  # encoder and decoder blocks
    vq_code_dim: int = 64
    vq_codebook_size: int = 512
    vq_use_sparse: bool = True  # the decoder also reads the frame's sparse input
    vq_residual: bool = True  # residual MLP blocks
    vq_beta: float = 0.25  # commitment weight
    vq_revive_every: int = 100  # dead-code remedy every N steps (0 disables)
    vq_revive_threshold: float = 0.05  # dead: EMA (decay 0.99) of hits per batch below this
    # 'world' | 'heading': each training window in the heading frame of its last frame's head (must be
    # the frame of the Mem-MLP that reads this VQ-VAE)
    frame: str = "world"


def build_vqvae(m) -> MLPVQVAE:
    """The MLP VQ-VAE of a config with the ``vq_*`` fields (this task's, or Mem-MLP's copy)."""
    return MLPVQVAE(MLPVQVAEConfig(hidden=m.vq_hidden, enc_depth=m.vq_depth, dec_depth=m.vq_depth,
                                   code_dim=m.vq_code_dim, codebook_size=m.vq_codebook_size,
                                   use_sparse=m.vq_use_sparse, residual=m.vq_residual, beta=m.vq_beta))


def check_stage_frame(workdir: str | None, task: str, frame: str, who: str) -> None:
    """A second stage in ``frame`` over the first-stage run at ``workdir`` (a ``task`` run): raise
    :class:`ConfigError` when that run was trained in another ``model.frame`` (a run saved before
    the option reads as ``"world"``). Only the run's ``config.json`` is read. A workdir that is not
    (or no longer) a readable run of ``task`` is passed over: reading its variables reports that
    (``load_stage_variables``, which checks the frame too), and a trained second stage keeps its
    frozen first stage in its own checkpoint."""
    if not workdir:
        return
    from mmar.run import load_run_config

    try:
        run = load_run_config(workdir)
    except (CheckpointError, ConfigError):
        return
    if run.task != task:
        return
    have = getattr(run.model, "frame", "world")
    if have != frame:
        raise ConfigError(f"{who} has model.frame={frame!r} but its first stage {workdir} ({task}) was trained with "
                          f"model.frame={have!r}: the VQ-VAE must see windows in the frame its second stage feeds "
                          f"it (retrain it with --set model.frame={frame}, or set model.frame={have})")


def window_in_frame(rot6d, sparse):
    """Heading mode: training windows ``rot6d (B, W, 22, 6)``, ``sparse (B, W, 54)`` expressed in
    the heading frame of each window's last frame (root orientation ``H^T R``)."""
    f = heading.window_frame(sparse)
    return heading.pose_to_frame(rot6d, f), heading.sparse_to_frame(sparse, f)


class MLPVQVAETask(BenchmarkTask):
    ModelConfig = MLPVQVAEModelConfig

    def __init__(self, cfg, benchmark=None):
        super().__init__(cfg, benchmark)
        heading.check_frame(self.m.frame)
        self.model = build_vqvae(self.m)

    def init(self, rng, batch):
        W = self.m.window
        variables = dict(self.model.init(rng, jnp.asarray(batch["rot6d"][:, -W:]), jnp.asarray(batch["sparse"][:, -W:])))
        n = int(np.prod(batch["rot6d"].shape[:2]))  # frames per batch: the revival candidates
        variables["vq_stats"] = {"code_count": jnp.zeros((self.m.vq_codebook_size,), jnp.float32)}
        variables["revive"] = {"z_e": jnp.zeros((n, self.m.vq_code_dim), jnp.float32)}
        return variables

    def model_vars(self, variables):
        return {"params": variables["params"]}

    def loss(self, params, extra_vars, batch, rng, step):
        batch = self.augment(batch, rng)
        rot, sparse = batch["rot6d"], batch["sparse"]
        if self.m.frame == "heading":
            rot, sparse = window_in_frame(rot, sparse)
        out = self.model.apply({"params": params}, rot, sparse, train=True)
        loss, metrics = vqvae_loss(out, rot, beta=self.m.vq_beta)
        if "vq_stats" not in extra_vars:  # a run from before the dead-code remedy
            return loss, (metrics, None)
        count = 0.99 * extra_vars["vq_stats"]["code_count"] + 0.01 * out["counts"]
        metrics["dead"] = jnp.mean((count < self.m.vq_revive_threshold).astype(jnp.float32))
        z_e = jax.lax.stop_gradient(out["z_e"]).reshape(-1, self.m.vq_code_dim)
        return loss, (metrics, {"vq_stats": {"code_count": count}, "revive": {"z_e": z_e}})

    def post_update(self, params, extra_vars, rng, step):
        """Dead-code remedy of the codebook (every ``vq_revive_every`` steps)."""
        if self.m.vq_revive_every <= 0 or "vq_stats" not in extra_vars:
            return params, extra_vars
        new, count = revive_dead_codes(params, extra_vars["vq_stats"]["code_count"], extra_vars["revive"]["z_e"], rng,
                                       self.m.vq_revive_threshold)
        do = ((step + 1) % self.m.vq_revive_every == 0) & (step > 0)
        params = {**params, "codebook": jnp.where(do, new["codebook"], params["codebook"])}
        count = jnp.where(do, count, extra_vars["vq_stats"]["code_count"])
        return params, {**extra_vars, "vq_stats": {"code_count": count}}

    def evaluate(self, params, extra_vars):
        clips = self.eval_clips()
        rot = np.concatenate([c["rot6d"][1:] for c in clips.values()])
        sp = np.concatenate([c["sparse"][1:] for c in clips.values()])
        in_frame = self.m.frame == "heading"

        @jax.jit
        def run(r, s):
            if in_frame:  # every frame in its own heading frame (a window's last frame)
                r, s = (x[:, 0] for x in window_in_frame(r[:, None], s[:, None]))
            return self.model.apply({"params": params}, r, s), r

        out, rot = run(rot, sp)
        err = float(jnp.mean(jnp.linalg.norm(out["recon"] - rot, axis=-1)))
        return {"rot6d_l2": err, "perplexity": float(out["perplexity"]), "usage": float(out["usage"])}


TASK = MLPVQVAETask

"""The TMT VQ-VAE of MotionMAR (stage 1): a temporal multi-scale VQ-VAE on 20-frame windows of
22 x 6D local rotations, its decoder reading the sparse window.

Loss: per-joint 6D L2 + ``vel_weight`` x the same on frame differences + ``vq_weight`` x the
quantiser's codebook/commitment loss. Dead codes (EMA hit count below ``vq_revive_threshold``)
are re-initialised every ``vq_revive_every`` steps from the current batch's residuals
(:meth:`TMTVQVAETask.post_update`; the official code has none). Evaluation: reconstruction MPJPE
/ 6D error per number of scales used (the coarse-to-fine claim in numbers), and codebook usage
and perplexity per scale.

``model.frame`` must be the frame of the MotionMAR that will read this VQ-VAE (checked when the
MotionMAR task is built): ``"world"`` (default; runs saved before the option read as it), or
``"heading"``: every window -- its poses (root orientation ``H^T R``) and the sparse window the
decoder reads -- in the heading frame of its last frame's head (:mod:`mmar.models.heading`), as
MotionMAR feeds it in that mode (teacher-forcing codes, decoding); the evaluation's
reconstructions are turned back to the world before forward kinematics.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError
from mmar.models import body, heading
from mmar.models.motionmar import pose_features_from_frame, window_to_frame
from mmar.models.vqvae import TemporalVQVAE
from mmar.tasks.base import BenchmarkTask

__all__ = ["TMTVQVAEModelConfig", "TMTVQVAETask", "TASK", "vqvae_config"]


@dataclasses.dataclass
class TMTVQVAEModelConfig:
    """``cfg.model`` of the ``tmt_vqvae`` task (:data:`mmar.models.vqvae.MOTIONMAR_VQVAE` with these
    fields replaced)."""

    lengths: tuple[int, ...] = (5, 10, 20)  # temporal scales; the last one is the window
    vq_width: int = 512
    vq_depth: int = 3
    vq_attn: bool = False
    codebook_size: int = 1024
    code_dim: int = 64
    vq_weight: float = 1.0
    vel_weight: float = 0.5
    vq_revive_every: int = 100  # 0 disables the dead-code remedy
    vq_revive_threshold: float = 0.05
    # 'world' | 'heading': each window in the heading frame of its last frame's head (must be the frame
    # of the MotionMAR that reads this VQ-VAE)
    frame: str = "world"


def vqvae_config(m):
    """The frozen VQ-VAE config of a model config with the TMT VQ-VAE fields (this task's, or
    MotionMAR's copy of them)."""
    from mmar.models.quantizers.temporal import MOTIONMAR_TEMPORAL
    from mmar.models.vqvae import MOTIONMAR_VQVAE

    q = dataclasses.replace(MOTIONMAR_TEMPORAL, lengths=tuple(m.lengths), codebook_size=m.codebook_size,
                            code_dim=m.code_dim)
    return dataclasses.replace(MOTIONMAR_VQVAE, width=m.vq_width, depth=m.vq_depth, attn=m.vq_attn, quantizer=q)


def pose_features(rot6d):
    """``(B, W, 22, 6)`` rotations -> the VQ-VAE's ``(B, W, 132)`` input."""
    r = jnp.asarray(rot6d, jnp.float32)
    return r.reshape(r.shape[0], r.shape[1], -1)


class TMTVQVAETask(BenchmarkTask):
    ModelConfig = TMTVQVAEModelConfig

    def __init__(self, cfg, benchmark=None):
        super().__init__(cfg, benchmark)
        heading.check_frame(self.m.frame)
        self.vq_cfg = vqvae_config(self.m)
        self.vq_model = TemporalVQVAE(self.vq_cfg)

    def _inputs(self, batch):
        """``(sparse (B, W, 54), pose (B, W, 132))`` of a batch, in each window's heading frame in
        heading mode."""
        sparse = jnp.asarray(batch["sparse"], jnp.float32)
        pose = pose_features(batch["rot6d"])
        if self.m.frame == "heading":
            _, sparse, pose = window_to_frame(sparse, pose)
        return sparse, pose

    @property
    def frames_per_window(self) -> int:
        return int(self.m.lengths[-1])

    window = frames_per_window

    def init(self, rng, batch):
        sparse, pose = self._inputs(batch)
        r1, r2, r3 = jax.random.split(rng, 3)
        variables = dict(self.vq_model.init({"params": r1, "dropout": r2, "vq": r3}, pose, None, sparse))
        out = self.vq_model.apply(variables, pose, None, sparse)
        n = out["residuals"].shape[0]
        variables["revive"] = {"x": jnp.zeros((n, self.m.code_dim), jnp.float32), "w": jnp.zeros((n,), jnp.float32)}
        return variables

    def loss(self, params, extra_vars, batch, rng, step):
        batch = self.augment(batch, rng)
        sparse, pose = self._inputs(batch)
        r1, r2 = jax.random.split(rng)
        out, mutated = self.vq_model.apply({"params": params, "vq": extra_vars["vq"]}, pose, None, sparse, train=True,
                                           rngs={"dropout": r1, "vq": r2}, mutable=["vq"])
        J = pose.shape[-1] // 6
        rec = jnp.mean(jnp.linalg.norm((out["recon"] - pose).reshape(*pose.shape[:2], J, 6), axis=-1))
        vel = jnp.mean(jnp.linalg.norm((jnp.diff(out["recon"], axis=1) - jnp.diff(pose, axis=1))
                                       .reshape(pose.shape[0], -1, J, 6), axis=-1))
        loss = rec + self.m.vel_weight * vel + self.m.vq_weight * out["loss"]
        metrics = {"rec": rec, "vel": vel, "vq": out["loss"], "commit": out["commit_loss"],
                   "usage": jnp.mean(out["usage"]), "perplexity": jnp.mean(out["perplexity"])}
        revive = {"x": jax.lax.stop_gradient(out["residuals"]), "w": out["residual_mask"]}
        return loss, (metrics, {"vq": mutated["vq"], "revive": revive})

    def post_update(self, params, extra_vars, rng, step):
        """Dead-code remedy of the learned codebook."""
        if self.m.vq_revive_every <= 0:
            return params, extra_vars
        from mmar.models.quantizers.temporal import revive_dead_codes

        qp, qs, _ = revive_dead_codes(params["quantizer"], extra_vars["vq"]["quantizer"], extra_vars["revive"]["x"], rng,
                                      residual_mask=extra_vars["revive"]["w"], threshold=self.m.vq_revive_threshold)
        do = ((step + 1) % self.m.vq_revive_every == 0) & (step > 0)
        pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(do, a, b), new, old)  # noqa: E731
        params = {**params, "quantizer": pick(qp, params["quantizer"])}
        vq = {**extra_vars["vq"], "quantizer": pick(qs, extra_vars["vq"]["quantizer"])}
        return params, {**extra_vars, "vq": vq}

    def evaluate(self, params, extra_vars):
        return self.evaluate_vqvae({"params": params, **extra_vars}, self.eval_clips())

    def evaluate_vqvae(self, variables, clips: dict[str, dict], batch: int = 256) -> dict[str, float]:
        """Reconstruction of non-overlapping windows of ``clips`` from the first ``n`` scales
        (``mpjpe_cm_scales{n}``, ``rot6d_l2_scales{n}``) and codebook usage / perplexity per
        scale (``usage_scale{k}``, ``perplexity_scale{k}``; usage = fraction of the codebook hit
        at that scale over all windows)."""
        W = self.window
        K = len(self.m.lengths)
        vq_vars = {k: v for k, v in variables.items() if k in ("params", "vq")}
        sp, rot, joints, off = [], [], [], []
        for c in clips.values():
            n = (c["sparse"].shape[0] - 1) // W
            for i in range(n):
                sl = slice(1 + i * W, 1 + (i + 1) * W)  # frame 0 has no velocity features
                sp.append(c["sparse"][sl])
                rot.append(c["rot6d"][sl].reshape(W, -1))
                joints.append(c["joints"][sl])
                off.append(c["offsets"])
        if not sp:
            raise ConfigError(f"no clip is longer than the {W}-frame window")
        sp, rot, joints, off = (np.stack(a).astype(np.float32) for a in (sp, rot, joints, off))

        codes_all, errs = [], {n: [] for n in range(1, K + 1)}
        for a in range(0, len(sp), batch):
            s, r, j, o = (x[a:a + batch] for x in (sp, rot, joints, off))
            m = len(s)
            if m < batch:  # pad to a fixed shape (one compilation)
                pad = lambda x: np.concatenate([x, np.repeat(x[-1:], batch - m, 0)])  # noqa: E731
                s, r, j, o = pad(s), pad(r), pad(j), pad(o)
            codes, recs = self._vq_scales(vq_vars)(s, r)
            codes_all.append(np.stack([np.pad(np.asarray(c[:m]), ((0, 0), (0, W - c.shape[1])), constant_values=-1)
                                       for c in codes], 1))
            for n, y in enumerate(recs, start=1):
                pos = np.asarray(self._fk(jnp.reshape(y, (batch, W, 22, 6)), o, s))[:m]
                y = np.asarray(y[:m]).reshape(m, W, 22, 6)
                errs[n].append((np.linalg.norm(pos - j[:m], axis=-1).mean(axis=(1, 2)),
                                np.linalg.norm(y - r[:m].reshape(m, W, 22, 6), axis=-1).mean(axis=(1, 2))))
        codes_all = np.concatenate(codes_all)  # (windows, K, W) padded with -1
        out: dict[str, float] = {"windows": float(len(sp))}
        for n in range(1, K + 1):
            out[f"mpjpe_cm_scales{n}"] = float(np.concatenate([e[0] for e in errs[n]]).mean() * 100)
            out[f"rot6d_l2_scales{n}"] = float(np.concatenate([e[1] for e in errs[n]]).mean())
        V = self.m.codebook_size
        total = np.zeros(V)
        for k in range(K):
            ids = codes_all[:, k, :self.m.lengths[k]].reshape(-1)
            counts = np.bincount(ids[ids >= 0], minlength=V).astype(np.float64)
            total += counts
            p = counts / max(counts.sum(), 1)
            out[f"usage_scale{k}"] = float((counts > 0).mean())
            out[f"perplexity_scale{k}"] = float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
        p = total / total.sum()
        out["usage"] = float((total > 0).mean())
        out["perplexity"] = float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))
        out["mpjpe_cm"] = out[f"mpjpe_cm_scales{K}"]
        return out

    def _vq_scales(self, vq_vars):
        return functools.partial(_vq_scales, vq_vars, vq_cfg=self.vq_cfg, frame=self.m.frame)

    @staticmethod
    @jax.jit
    def _fk(rot, offsets, sparse):
        off = jnp.broadcast_to(offsets[:, None], rot.shape[:3] + (3,))
        return body.body_in_world(rot, off, sparse)


@functools.partial(jax.jit, static_argnames=("vq_cfg", "frame"))
def _vq_scales(vq_vars, sparse, pose, *, vq_cfg, frame="world"):
    """Codes of ``pose (B, W, 132)`` and its reconstructions from the first 1..K scales (in the
    world; with ``frame="heading"`` coded and decoded in each window's heading frame)."""
    from mmar.models.vqvae import TemporalVQVAE

    vq = TemporalVQVAE(vq_cfg)
    f = None
    if frame == "heading":
        f, sparse, pose = window_to_frame(sparse, pose)
    codes = vq.apply(vq_vars, pose, method=lambda m, x: m.encode_codes(x))
    recs = []
    for n in range(1, vq_cfg.quantizer.num_scales + 1):
        rec = vq.apply(vq_vars, codes, sparse, method=lambda m, c, s_, n=n: m.decode_latent(
            m.quantizer.partial_reconstruction(c, n), None, s_))
        recs.append(rec if f is None else pose_features_from_frame(rec, f))
    return codes, recs


TASK = TMTVQVAETask

"""Training and evaluation of MotionMAR on the Bandai sparse-to-full-body benchmark.

Two stages, one task (``model.kind``):

1. ``"tmt_vqvae"`` -- the TMT VQ-VAE on 20-frame windows of 22 x 6D local rotations, its
   decoder reading the sparse window. Loss: per-joint 6D L2 + ``vel_weight`` x the same on
   frame differences + ``vq_weight`` x the quantiser's codebook/commitment loss. Dead codes
   (EMA hit count below ``vq_revive_threshold``) are re-initialised every
   ``vq_revive_every`` steps from the current batch's residuals (:meth:`post_update`).
   Evaluation: reconstruction MPJPE / 6D error per number of scales used (the coarse-to-fine
   claim in numbers), and codebook usage and perplexity per scale.
2. ``"motionmar"`` -- MAN + SAC + MRN over the frozen VQ-VAE (``model.vqvae_workdir``; kept in
   the checkpoint as ``extra_vars["vqvae"]``, so a MotionMAR checkpoint is self-contained).
   Loss: :func:`mmar.models.motionmar.ar_loss`. Evaluation: the same online protocol and
   metrics as the MLPs (:mod:`mmar.tasks.sparse_body`): frame ``t`` is predicted from the
   window ending at ``t``; the body is placed by the tracked head.

Data, split and metrics are those of :class:`mmar.tasks.sparse_body.SparseBodyDataConfig`.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import CheckpointError, ConfigError
from mmar.models import body
from mmar.tasks.sparse_body import SparseBodyDataConfig

KINDS = ("motionmar", "tmt_vqvae")


@dataclasses.dataclass
class MotionMARModelConfig:
    kind: str = "motionmar"
    lengths: tuple[int, ...] = (5, 10, 20)  # temporal scales; the last one is the window
    # TMT VQ-VAE
    vq_width: int = 512
    vq_depth: int = 3
    vq_attn: bool = False
    codebook_size: int = 1024
    code_dim: int = 64
    vq_weight: float = 1.0
    vel_weight: float = 0.5
    vq_revive_every: int = 100  # 0 disables the dead-code remedy
    vq_revive_threshold: float = 0.05
    # MAN + SAC + MRN
    width: int = 512
    depth: int = 8
    heads: int = 8
    drop_path: float = 0.1 * 8 / 24
    cond_drop_prob: float = 0.1
    sac_align: bool = True
    mrn: bool = True
    mrn_hidden: int = 256
    mrn_layers: int = 2
    mrn_weight: float = 1.0
    vqvae_workdir: str | None = None
    # inference
    decode: str = "soft"  # 'soft' | 'greedy'
    soft_temperature: float = 2.75
    guidance: float = 1.0  # classifier-free guidance weight (1 = conditional only)
    refine: bool = True  # apply the MRN (False = the "without MRN" ablation)
    hop: int = 1  # frames predicted per window in `mmar eval` (1 = fully online)
    eval_hop: int = 4  # the same for the validation passes during training
    predict_chunk: int = 256  # windows per compiled inference call


def vqvae_config(m: MotionMARModelConfig):
    from mmar.models.quantizers.temporal import MOTIONMAR_TEMPORAL
    from mmar.models.vqvae import MOTIONMAR_VQVAE

    q = dataclasses.replace(MOTIONMAR_TEMPORAL, lengths=tuple(m.lengths), codebook_size=m.codebook_size,
                            code_dim=m.code_dim)
    return dataclasses.replace(MOTIONMAR_VQVAE, width=m.vq_width, depth=m.vq_depth, attn=m.vq_attn, quantizer=q)


def ar_config(m: MotionMARModelConfig):
    from mmar.models.motionmar import MotionMARConfig

    return MotionMARConfig(lengths=tuple(m.lengths), code_dim=m.code_dim, vocab_size=m.codebook_size, width=m.width,
                           depth=m.depth, heads=m.heads, drop_path=m.drop_path, cond_drop_prob=m.cond_drop_prob,
                           sac_align=m.sac_align, mrn=m.mrn, mrn_hidden=m.mrn_hidden, mrn_layers=m.mrn_layers)


def load_vqvae_variables(workdir: str) -> dict:
    from mmar.train.checkpoint import load_params

    variables, cfg = load_params(workdir)
    kind = ((cfg or {}).get("model") or {}).get("kind")
    if kind != "tmt_vqvae":
        raise CheckpointError(f"{workdir}: model.vqvae_workdir must be a tmt_vqvae run, this is {kind!r}")
    return {k: v for k, v in variables.items() if k in ("params", "vq")}


class MotionMARTask:
    """The :class:`mmar.train.Task` of MotionMAR (both stages)."""

    def __init__(self, cfg, benchmark=None):
        from mmar.models.motionmar import MotionMAR, check_compatible
        from mmar.models.vqvae import TemporalVQVAE

        self.cfg = cfg
        self.m: MotionMARModelConfig = cfg.model
        self.d: SparseBodyDataConfig = cfg.data
        if self.m.kind not in KINDS:
            raise ConfigError(f"model.kind must be one of {KINDS}, got {self.m.kind!r}")
        if self.m.decode not in ("soft", "greedy"):
            raise ConfigError(f"model.decode must be 'soft' or 'greedy' for evaluation, got {self.m.decode!r}")
        self.vq_cfg = vqvae_config(self.m)
        self.vq_model = TemporalVQVAE(self.vq_cfg)
        self.model = None
        if self.m.kind == "motionmar":
            if not self.m.vqvae_workdir:
                raise ConfigError("motionmar needs model.vqvae_workdir (train configs/motionmar_vqvae.py first)")
            self.ar_cfg = ar_config(self.m)
            check_compatible(self.ar_cfg, self.vq_cfg)
            self.model = MotionMAR(self.ar_cfg)
        self._benchmark = benchmark

    @property
    def window(self) -> int:
        return int(self.m.lengths[-1])

    # ------------------------------------------------------------------ data
    @property
    def benchmark(self):
        if self._benchmark is None:
            from mmar.data.benchmark import load_sparse_benchmark

            self._benchmark = load_sparse_benchmark(self.d.root, self.d.fps)
        return self._benchmark

    def train_iterator(self, seed: int, start_state=None):
        from mmar.data.pipeline import ClipArrays, make_train_iterator

        clips = self.benchmark.subset("train", self.d.max_train_clips)
        return make_train_iterator(ClipArrays.from_arrays(clips), self.window, self.cfg.train.batch_size, seed,
                                   keys=("sparse", "rot6d", "joints"))

    @staticmethod
    def _pose(batch_rot6d):
        r = jnp.asarray(batch_rot6d, jnp.float32)
        return r.reshape(r.shape[0], r.shape[1], -1)

    # ------------------------------------------------------------------ model
    def init(self, rng, batch):
        sparse = jnp.asarray(batch["sparse"], jnp.float32)
        if self.m.kind == "tmt_vqvae":
            pose = self._pose(batch["rot6d"])
            r1, r2, r3 = jax.random.split(rng, 3)
            variables = dict(self.vq_model.init({"params": r1, "dropout": r2, "vq": r3}, pose, None, sparse))
            out = self.vq_model.apply(variables, pose, None, sparse)
            n = out["residuals"].shape[0]
            variables["revive"] = {"x": jnp.zeros((n, self.m.code_dim), jnp.float32), "w": jnp.zeros((n,), jnp.float32)}
            return variables
        from mmar.models.motionmar import init_motionmar

        variables = dict(init_motionmar(self.model, rng))
        variables["vqvae"] = jax.tree.map(jnp.asarray, load_vqvae_variables(self.m.vqvae_workdir))
        return variables

    def loss(self, params, extra_vars, batch, rng, step):
        sparse = jnp.asarray(batch["sparse"], jnp.float32)
        pose = self._pose(batch["rot6d"])
        if self.m.kind == "tmt_vqvae":
            return self._vq_loss(params, extra_vars, sparse, pose, rng)
        from mmar.models.motionmar import ar_loss

        vq_vars = extra_vars["vqvae"]
        infer_kw = {"decode": self.m.decode, "temperature": self.m.soft_temperature}
        loss, metrics = ar_loss(self.model, params, {}, self.vq_model, vq_vars, sparse, pose, rng,
                                mrn_weight=self.m.mrn_weight, infer_kw=infer_kw)
        return loss, (metrics, None)

    def _vq_loss(self, params, extra_vars, sparse, pose, rng):
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
        """Dead-code remedy of the learned codebook (TMT VQ-VAE stage only)."""
        if self.m.kind != "tmt_vqvae" or self.m.vq_revive_every <= 0:
            return params, extra_vars
        from mmar.models.quantizers.temporal import revive_dead_codes

        qp, qs, _ = revive_dead_codes(params["quantizer"], extra_vars["vq"]["quantizer"], extra_vars["revive"]["x"], rng,
                                      residual_mask=extra_vars["revive"]["w"], threshold=self.m.vq_revive_threshold)
        do = ((step + 1) % self.m.vq_revive_every == 0) & (step > 0)
        pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(do, a, b), new, old)  # noqa: E731
        params = {**params, "quantizer": pick(qp, params["quantizer"])}
        vq = {**extra_vars["vq"], "quantizer": pick(qs, extra_vars["vq"]["quantizer"])}
        return params, {**extra_vars, "vq": vq}

    # ------------------------------------------------------------------ inference
    def window_fn(self, variables, hop: int | None = None, refine: bool | None = None):
        """``(sparse windows (C, W, 54), offsets (C, 22, 3)) -> (rot6d (C, hop, 22, 6), joints
        (C, hop, 22, 3))`` for the last ``hop`` frames of each window; compiled once per model
        configuration and ``(C, hop, refine)``, whatever the task instance or weights."""
        if self.model is None:
            raise ConfigError("the TMT VQ-VAE is not a sparse-to-full-body predictor")
        m = self.m
        hop = m.hop if hop is None else hop
        refine = m.refine if refine is None else refine
        if not 1 <= hop <= self.window:
            raise ConfigError(f"hop must lie in [1, {self.window}], got {hop}")
        variables = jax.tree.map(jnp.asarray, variables)
        params, vq_vars = variables["params"], variables["vqvae"]
        static = dict(ar_cfg=self.ar_cfg, vq_cfg=self.vq_cfg, hop=hop, decode=m.decode,
                      temperature=float(m.soft_temperature), guidance=float(m.guidance), refine=bool(refine))
        return lambda sparse, offsets: _predict_windows(params, vq_vars, sparse, offsets, **static)

    def predict_clips(self, variables, clips: dict[str, dict], batch: int | None = None, hop: int | None = None,
                      refine: bool | None = None, progress: bool = False) -> dict[str, dict]:
        """Online predictions for ``{clip: arrays}``: every clip is cut into sliding windows
        (window ``i`` ends at frame ``(i + 1) hop - 1``; frames before 0 repeat frame 0; the
        clip end is padded with its last frame to a multiple of ``hop``), and all windows of all
        clips run in fixed-size chunks through one compiled function."""
        hop = self.m.hop if hop is None else hop
        chunk = int(batch or self.m.predict_chunk)
        fn = self.window_fn(variables, hop, refine)
        W = self.window
        names = sorted(clips)
        jobs = []  # (clip index, window end)
        padded = []
        for ci, n in enumerate(names):
            s = np.asarray(clips[n]["sparse"], np.float32)
            t = s.shape[0]
            tp = -(-t // hop) * hop
            s = np.concatenate([np.repeat(s[:1], W - 1, 0), s, np.repeat(s[-1:], tp - t, 0)])
            padded.append(s)
            jobs.extend((ci, e) for e in range(hop - 1, tp, hop))
        offsets = [np.asarray(clips[n]["offsets"], np.float32) for n in names]
        rot_out = [np.zeros((len(p) - W + 1, 22, 6), np.float32) for p in padded]
        pos_out = [np.zeros((len(p) - W + 1, 22, 3), np.float32) for p in padded]
        starts = range(0, len(jobs), chunk)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="predicting", unit="chunk")
        for a in starts:
            part = jobs[a:a + chunk]
            sp = np.zeros((chunk, W, 54), np.float32)
            off = np.zeros((chunk, 22, 3), np.float32)
            for i, (ci, e) in enumerate(part):
                sp[i] = padded[ci][e:e + W]
                off[i] = offsets[ci]
            sp[len(part):] = sp[len(part) - 1] if part else 0
            rot, pos = (np.asarray(x) for x in fn(sp, off))
            for i, (ci, e) in enumerate(part):
                rot_out[ci][e - hop + 1:e + 1] = rot[i]
                pos_out[ci][e - hop + 1:e + 1] = pos[i]
        out = {}
        for ci, n in enumerate(names):
            t = clips[n]["sparse"].shape[0]
            out[n] = {"rot6d": rot_out[ci][:t], "joints": pos_out[ci][:t], "fps": clips[n]["fps"]}
        return out

    def evaluate(self, params, extra_vars):
        clips = self.benchmark.subset(self.d.eval_split, self.d.max_eval_clips)
        if self.m.kind == "tmt_vqvae":
            return self.evaluate_vqvae({"params": params, **extra_vars}, clips)
        from mmar.eval.sparse import sparse_metrics

        pred = self.predict_clips({"params": params, **extra_vars}, clips, hop=self.m.eval_hop)
        return sparse_metrics(pred, clips)

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
        return functools.partial(_vq_scales, vq_vars, vq_cfg=self.vq_cfg)

    @staticmethod
    @jax.jit
    def _fk(rot, offsets, sparse):
        off = jnp.broadcast_to(offsets[:, None], rot.shape[:3] + (3,))
        return body.body_in_world(rot, off, sparse)


@functools.partial(jax.jit, static_argnames=("vq_cfg",))
def _vq_scales(vq_vars, sparse, pose, *, vq_cfg):
    """Codes of ``pose (B, W, 132)`` and its reconstructions from the first 1..K scales."""
    from mmar.models.vqvae import TemporalVQVAE

    vq = TemporalVQVAE(vq_cfg)
    codes = vq.apply(vq_vars, pose, method=lambda m, x: m.encode_codes(x))
    recs = []
    for n in range(1, vq_cfg.quantizer.num_scales + 1):
        recs.append(vq.apply(vq_vars, codes, sparse, method=lambda m, c, s_, n=n: m.decode_latent(
            m.quantizer.partial_reconstruction(c, n), None, s_)))
    return codes, recs


@functools.partial(jax.jit, static_argnames=("ar_cfg", "vq_cfg", "hop", "decode", "temperature", "guidance", "refine"))
def _predict_windows(params, vq_vars, sparse, offsets, *, ar_cfg, vq_cfg, hop, decode, temperature, guidance, refine):
    from mmar.models.motionmar import MotionMAR, infer_window
    from mmar.models.vqvae import TemporalVQVAE

    W = ar_cfg.window
    out = infer_window(MotionMAR(ar_cfg), {"params": params}, TemporalVQVAE(vq_cfg), vq_vars, sparse, decode=decode,
                       temperature=temperature, guidance=guidance, refine=refine)
    rot = out["pose"][:, W - hop:].reshape(sparse.shape[0], hop, -1, 6)
    off = jnp.broadcast_to(offsets[:, None], rot.shape[:3] + (3,))
    return rot, body.body_in_world(rot, off, sparse[:, W - hop:])


def task_from_config(cfg, benchmark=None) -> MotionMARTask:
    return MotionMARTask(cfg, benchmark)

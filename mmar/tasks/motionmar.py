"""MotionMAR (stage 2): MAN + SAC + MRN over the frozen TMT VQ-VAE of ``tmt_vqvae``
(``model.vqvae_workdir``; kept in the checkpoint as ``extra_vars["vqvae"]``, so a MotionMAR
checkpoint is self-contained).

Loss: :func:`mmar.models.motionmar.ar_loss` (teacher forcing, 10 % condition dropout, the MRN
trained on the model's own inference output). Evaluation: the online protocol of the MLPs:
frame ``t`` is predicted from the window ending at ``t``; the body is placed by the tracked head.
``model.frame="heading"`` expresses each window -- its sparse input, its pose targets (so the
teacher-forcing codes) and what the MRN reads -- in the heading frame of its last frame's head and
turns the predicted root orientations back to the world (:mod:`mmar.models.motionmar`); the TMT
VQ-VAE run must have been trained with the same ``model.frame`` (checked when the task is built).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError
from mmar.models import body
from mmar.models.motionmar import MotionMAR, MotionMARConfig, check_compatible
from mmar.models.vqvae import TemporalVQVAE
from mmar.tasks.base import BenchmarkTask, frozen_config, load_stage_variables
from mmar.tasks.mlp_vqvae import check_stage_frame
from mmar.tasks.tmt_vqvae import pose_features, vqvae_config

__all__ = ["MotionMARModelConfig", "MotionMARTask", "TASK"]


@dataclasses.dataclass
class MotionMARModelConfig:
    """``cfg.model`` of the ``motionmar`` task: MAN + SAC + MRN
    (:class:`mmar.models.motionmar.MotionMARConfig`), inference options, and the architecture of
    the frozen TMT VQ-VAE (must match its run; see :mod:`mmar.tasks.tmt_vqvae`)."""

    lengths: tuple[int, ...] = (5, 10, 20)  # temporal scales; the last one is the window
    # the TMT VQ-VAE
    vq_width: int = 512
    vq_depth: int = 3
    vq_attn: bool = False
    codebook_size: int = 1024
    code_dim: int = 64
    vqvae_workdir: str | None = None
    # MAN + SAC + MRN
    width: int = 512
    depth: int = 8
    heads: int = 8
    drop_path: float = 0.1 * 8 / 24
    cond_drop_prob: float = 0.1
    sac_align: bool = True
    sac_resample: str = "linear"
    mrn: bool = True
    mrn_hidden: int = 256
    mrn_layers: int = 2
    mrn_weight: float = 1.0
    pos_weight: float = 0.0  # FK joint-position loss on the MRN output (not in the paper; 0 = the paper's loss)
    remat: str = "none"  # per-block rematerialisation of the MAN: none | full | dots | dots_no_batch
    # 'world' | 'heading': each window in the heading frame of its last frame's head (the TMT VQ-VAE run
    # must have the same model.frame)
    frame: str = "world"
    # inference
    decode: str = "soft"  # 'soft' | 'greedy'
    soft_temperature: float = 2.75
    guidance: float = 1.0  # classifier-free guidance weight (1 = conditional only)
    refine: bool = True  # apply the MRN (False = the "without MRN" ablation)
    hop: int = 1  # frames predicted per window in `mmar eval` (1 = fully online)
    eval_hop: int = 4  # the same for the validation passes during training
    predict_chunk: int = 256  # windows per compiled inference call


#: the fields this config shares with its tmt_vqvae run
VQ_FIELDS = ("lengths", "vq_width", "vq_depth", "vq_attn", "codebook_size", "code_dim", "frame")


class MotionMARTask(BenchmarkTask):
    ModelConfig = MotionMARModelConfig
    export_modes = ("window",)

    def __init__(self, cfg, benchmark=None):
        super().__init__(cfg, benchmark)
        m = self.m
        if m.decode not in ("soft", "greedy"):
            raise ConfigError(f"model.decode must be 'soft' or 'greedy' for evaluation, got {m.decode!r}")
        if not m.vqvae_workdir:
            raise ConfigError("motionmar needs model.vqvae_workdir (train configs/motionmar_vqvae.py first)")
        self.vq_cfg = vqvae_config(m)
        self.vq_model = TemporalVQVAE(self.vq_cfg)
        self.ar_cfg = frozen_config(MotionMARConfig, m, vocab_size=m.codebook_size, pose_dim=132, mrn_unroll=False)
        check_compatible(self.ar_cfg, self.vq_cfg)
        check_stage_frame(m.vqvae_workdir, "tmt_vqvae", self.ar_cfg.frame, "motionmar")
        self.model = MotionMAR(self.ar_cfg)

    @property
    def window(self) -> int:
        return int(self.m.lengths[-1])

    frames_per_window = window

    @property
    def train_keys(self):
        return ("sparse", "rot6d", "joints", "offsets") if self.m.pos_weight else ("sparse", "rot6d", "joints")

    def init(self, rng, batch):
        from mmar.models.motionmar import init_motionmar

        variables = dict(init_motionmar(self.model, rng))
        variables["vqvae"] = jax.tree.map(jnp.asarray, load_stage_variables(self.m.vqvae_workdir, "tmt_vqvae",
                                                                            ("params", "vq"), self.m, VQ_FIELDS))
        return variables

    def loss(self, params, extra_vars, batch, rng, step):
        from mmar.models.motionmar import ar_loss

        batch = self.augment(batch, rng)
        sparse = jnp.asarray(batch["sparse"], jnp.float32)
        infer_kw = {"decode": self.m.decode, "temperature": self.m.soft_temperature}
        pos_kw = {}
        if self.m.pos_weight:
            pos_kw = dict(pos_weight=self.m.pos_weight, joints=jnp.asarray(batch["joints"], jnp.float32),
                          offsets=jnp.asarray(batch["offsets"], jnp.float32))
        loss, metrics = ar_loss(self.model, params, {}, self.vq_model, extra_vars["vqvae"], sparse,
                                pose_features(batch["rot6d"]), rng, mrn_weight=self.m.mrn_weight, infer_kw=infer_kw,
                                **pos_kw)
        return loss, (metrics, None)

    # ------------------------------------------------------------------ inference
    def window_fn(self, variables, hop: int | None = None, refine: bool | None = None):
        """``(sparse windows (C, W, 54), offsets (C, 22, 3)) -> (rot6d (C, hop, 22, 6), joints
        (C, hop, 22, 3))`` for the last ``hop`` frames of each window; compiled once per model
        configuration and ``(C, hop, refine)``, whatever the task instance or weights."""
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
        from mmar.eval.sparse import sparse_metrics

        clips = self.eval_clips()
        pred = self.predict_clips({"params": params, **extra_vars}, clips, hop=self.m.eval_hop)
        return sparse_metrics(pred, clips)


@functools.partial(jax.jit, static_argnames=("ar_cfg", "vq_cfg", "hop", "decode", "temperature", "guidance", "refine"))
def _predict_windows(params, vq_vars, sparse, offsets, *, ar_cfg, vq_cfg, hop, decode, temperature, guidance, refine):
    """The last ``hop`` frames of each window, in the world (in heading mode ``infer_window`` decodes
    each window in its last frame's heading frame and turns every returned root orientation back
    with that heading)."""
    from mmar.models.motionmar import MotionMAR, infer_window
    from mmar.models.vqvae import TemporalVQVAE

    W = ar_cfg.window
    out = infer_window(MotionMAR(ar_cfg), {"params": params}, TemporalVQVAE(vq_cfg), vq_vars, sparse, decode=decode,
                       temperature=temperature, guidance=guidance, refine=refine)
    rot = out["pose"][:, W - hop:].reshape(sparse.shape[0], hop, -1, 6)
    off = jnp.broadcast_to(offsets[:, None], rot.shape[:3] + (3,))
    return rot, body.body_in_world(rot, off, sparse[:, W - hop:])


TASK = MotionMARTask

"""MoScale's residual tokenizer (the "HRVQVAE", stage 1 of MoScale) on captioned motion data.

Model: :class:`mmar.models.vqvae.TemporalVQVAE` with the MoScale quantiser
(:data:`mmar.models.quantizers.temporal.MOSCALE_TEMPORAL`): HumanML3D features ``(B, 196, 263)``
-> conv/attention encoder -> 49 latent steps x 512 -> multi-scale residual quantisation at
6 / 12 / 24 / 49 tokens with one EMA codebook 512 x 512 (mu 0.99, data initialisation, dead-code
reset, Gumbel code assignment at temperature 0.5 in training), phi = identity ("no phi":
``quant_resi: 0``) -> decoder. Every field of the frozen VQ-VAE and quantiser configs is a field
of :class:`MoScaleVQVAEModelConfig` (``--set model.<field>=...``); the defaults are the official
``config/train_hrvqvae.yaml`` (``../shared/reference/next-scale-notes.md`` section 1).

Data (:class:`MoScaleDataConfig`): :func:`mmar.data.t2m.load_t2m` (``bandai`` | ``humanml3d`` |
``kit``), the MoScale / MoMask training loader (:func:`mmar.data.t2m.make_t2m_train_iterator`:
whole motions cropped to a multiple of 4 frames, randomly one unit shorter, zero padded to 196
with a mask). The tokenizer ignores the captions: the batches the trainer sees hold only
``motion``, ``mask`` and ``length``.

Loss (official ``trainers/hrvqvae_trainer.py``)::

    loss = SmoothL1(recon, x)                       masked mean over valid frames x all features
         + vel_weight  * SmoothL1(recon, x)[4:67]   (official ``loss_vel``, lambda_expicit 0.5:
                                                     the root-relative joint positions)
         + root_weight * SmoothL1(recon, x)[0:4]    (official ``loss_global``, lambda 0)
         + vq_weight   * beta * commitment          (lambda_commit 0.02; commitment = mean over
                                                     scales of the masked MSE(z, sg(f_hat_k)))

The EMA codebook is updated inside the quantiser's training forward (``mutable=['vq']``); the
new collection is returned as the task's extra variables, so no ``post_update`` is needed.

Padding: frames beyond ``length`` are zeroed before the encoder (they are already 0), the
encoder attention masks them as keys, the residual is zeroed beyond the valid latent length
``length // 4`` before every scale, tokens beyond ``floor(valid / factor_k)`` are code ``-1``
and left out of the EMA sums / counts, the dead-code reset draws, the data initialisation, the
commitment loss and the usage statistics; the decoder input is zeroed beyond the valid latent
length and the reconstruction loss is a masked mean. What remains (as in the official code):
the convolutions see the zero padding at the end of a short motion (no mask in a conv), and
the area down-sampling of a coarse scale averages over a window that can reach past the last
valid latent step (where the residual is 0).

Evaluation (:meth:`MoScaleVQVAETask.evaluate`) on ``data.eval_split`` (validation by default):
every motion once, the centred window of ``min(T, 196) // 4 * 4`` frames
(:func:`mmar.data.t2m.make_t2m_eval_iterator`), deterministic codes (argmin), decoded from the
first ``n`` scales, ``n = 1..K``. Per ``n``: ``rec_scales{n}`` (masked SmoothL1 of the
normalised features, the training ``rec`` term), ``feat_l1_scales{n}`` (mean absolute error of
the normalised features), ``mpjpe_cm_scales{n}`` (joints recovered with
:func:`mmar.data.hml_features.recover_from_ric` from the denormalised features, root trajectory
integrated from the window's start, mean over valid frames and joints, cm) and
``mpjpe_root_cm_scales{n}`` (the same after subtracting the pelvis in every frame: MoScale's
``calculate_mpjpe_batch``). Per scale ``k``: ``usage_scale{k}`` (fraction of the codebook used by
the valid tokens of that scale over the whole split) and ``perplexity_scale{k}``; ``usage`` /
``perplexity`` over all scales. ``mpjpe_cm`` / ``mpjpe_root_cm`` / ``rec`` are the full-scale
values; the configs keep the best checkpoint by ``mpjpe_cm``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError
from mmar.tasks.base import TaskBase, frozen_config

__all__ = ["MoScaleVQVAEModelConfig", "MoScaleDataConfig", "MoScaleVQVAETask", "TASK", "vqvae_config",
           "BATCH_KEYS"]

#: what the trainer sees of a T2M batch (text and bookkeeping dropped: the trainer shards arrays)
BATCH_KEYS = ("motion", "mask", "length")


@dataclasses.dataclass
class MoScaleVQVAEModelConfig:
    """``cfg.model`` of the ``moscale_vqvae`` task: every field of
    :class:`~mmar.models.vqvae.TemporalVQVAEConfig` (but ``in_dim``, fixed by the data, and
    ``cond_dim``, 0) and of its :class:`~mmar.models.quantizers.temporal.TemporalQuantizerConfig`,
    flat, plus the loss weights. Defaults: MoScale's official HRVQVAE."""

    # -- encoder / decoder (model/cnn_networks.py; config/train_hrvqvae.yaml `model`)
    width: int = 512
    down_t: int = 2  # 196 -> 98 -> 49
    depth: int = 3  # ResConv1D blocks per Resnet1D (dilations 9, 3, 1)
    dilation_growth: int = 3
    activation: str = "relu"
    dropout: float = 0.2
    attn: bool = True
    attn_heads: int = 8
    attn_dropout: float = 0.1
    latent_rounding: str = "floor"  # valid latent steps = length // 4
    # -- quantiser (model/vq/quantizer.py MSQuantizer; `quantizer`)
    lengths: tuple[int, ...] = (6, 12, 24, 49)
    factors: tuple[float, ...] | None = (8, 4, 2, 1)  # valid tokens of scale k = floor(valid / f_k)
    valid_rounding: str = "floor"
    codebook_size: int = 512
    code_dim: int = 512
    codebook: str = "ema"  # 'ema' (official) | 'learned'
    distance: str = "l2"
    beta: float = 1.0  # commitment weight inside the quantiser's loss (vq_weight scales it)
    ema_decay: float = 0.99  # mu
    down: str = "area"
    up: str = "linear"
    tf_down: str | None = "area"
    phi: float = 0.0  # "no phi": quant_resi 0
    phi_share: int = 4
    phi_kernel: int = 3
    sample_temperature: float = 0.5  # Gumbel code assignment in training (hrvqvae.py temperature)
    dead_threshold: float = 1.0  # EMA count below which a code is reset
    reset_min_factor: float = 5.0  # reset only when a batch holds > 5 x codebook_size valid vectors
    data_init: bool = True  # codebook from the first training batch's scale-0 residuals
    init_std: float = 1.0
    # -- loss (trainers/hrvqvae_trainer.py; `training`)
    recon: str = "smooth_l1"  # 'smooth_l1' (l1_smooth) | 'l2'
    vel_weight: float = 0.5  # lambda_expicit, on features vel_slice ("loss_vel")
    vel_slice: tuple[int, ...] = (4, 67)  # root-relative joint positions (HumanML3D; KIT: 4, 64)
    root_weight: float = 0.0  # lambda_global, on features 0:4
    vq_weight: float = 0.02  # lambda_commit

    def __post_init__(self):
        if self.recon not in ("smooth_l1", "l2"):
            raise ConfigError(f"model.recon must be 'smooth_l1' or 'l2', got {self.recon!r}")
        if len(tuple(self.vel_slice)) != 2:
            raise ConfigError(f"model.vel_slice must be (start, stop), got {self.vel_slice!r}")


@dataclasses.dataclass
class MoScaleDataConfig:
    """Captioned motion data (:func:`mmar.data.t2m.load_t2m`); the window is the model's
    ``lengths[-1] * 2**down_t`` frames (196)."""

    source: str = "bandai"  # 'bandai' | 'humanml3d' | 'kit'
    root: str | None = None  # Bandai: default ../shared/data/bandai-namco; required for the folders
    fps: float | None = None  # Bandai only (default 20)
    min_len: int | None = None  # default 40 (KIT 24)
    max_clips: int | None = None  # Bandai only: at most this many clips per split (quick runs)
    stats: str = "train"  # 'train' | 'folder' (HumanML3D / KIT Mean.npy, Std.npy) | an npz path
    unit_drop_prob: float = 1.0 / 3.0  # the loaders' "one unit shorter" coin
    eval_split: str = "val"
    eval_batch: int = 64
    workers: int = 2  # Bandai archive parsing (first load only; then the cache)


def vqvae_config(m: MoScaleVQVAEModelConfig, in_dim: int = 263):
    """The frozen :class:`~mmar.models.vqvae.TemporalVQVAEConfig` of a model config."""
    from mmar.models.quantizers.temporal import TemporalQuantizerConfig
    from mmar.models.vqvae import TemporalVQVAEConfig

    q = frozen_config(TemporalQuantizerConfig, m, lengths=tuple(m.lengths),
                      factors=None if m.factors is None else tuple(m.factors))
    return frozen_config(TemporalVQVAEConfig, m, in_dim=int(in_dim), cond_dim=0, quantizer=q)


class _ArraysOnly:
    """A checkpointable T2M iterator yielding only :data:`BATCH_KEYS`."""

    def __init__(self, it, keys=BATCH_KEYS):
        self._it, self._keys = it, tuple(keys)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        b = next(self._it)
        return {k: np.asarray(b[k]) for k in self._keys}

    def get_state(self):
        return self._it.get_state()

    def set_state(self, state) -> None:
        self._it.set_state(state)


class MoScaleVQVAETask(TaskBase):
    """MoScale's HRVQVAE as a task of :func:`mmar.train.train` (see the module docstring).

    ``dataset`` (or ``benchmark``, the name :func:`mmar.run.load` passes): a preloaded
    :class:`mmar.data.t2m.T2MDataset`; otherwise ``cfg.data`` is loaded on first use."""

    ModelConfig: ClassVar[type] = MoScaleVQVAEModelConfig
    DataConfig: ClassVar[type] = MoScaleDataConfig

    def __init__(self, cfg, benchmark=None, dataset=None):
        super().__init__(cfg)
        from mmar.data import hml_features as hf
        from mmar.data.t2m import SOURCES
        from mmar.models.vqvae import TemporalVQVAE

        if self.d.source not in SOURCES:
            raise ConfigError(f"data.source must be one of {SOURCES}, got {self.d.source!r}")
        self._dataset = dataset if dataset is not None else benchmark
        kind = "kit" if self.d.source == "kit" else "humanml3d"
        if self._dataset is not None:
            kind = self._dataset.kind
        self.spec = hf.get_spec(kind)
        self.vq_cfg = vqvae_config(self.m, self.spec.feature_dim)
        self.vq_model = TemporalVQVAE(self.vq_cfg)
        a, b = (int(v) for v in self.m.vel_slice)
        if not 0 <= a < b <= self.spec.feature_dim:
            raise ConfigError(f"model.vel_slice {self.m.vel_slice} is outside the {self.spec.feature_dim} features")
        self._terms = tuple(t for t in ((a, b, float(self.m.vel_weight)), (0, 4, float(self.m.root_weight))))


    # ------------------------------------------------------------------ data
    @property
    def num_frames(self) -> int:
        return int(self.vq_cfg.num_frames)

    @property
    def dataset(self):
        """The :class:`mmar.data.t2m.T2MDataset` (loaded on first use)."""
        if self._dataset is None:
            from mmar.data.t2m import load_t2m

            d = self.d
            splits = tuple(dict.fromkeys(("train", d.eval_split)))
            kw = {}
            if d.source == "bandai":
                kw = dict(max_clips=d.max_clips, workers=d.workers)
            self._dataset = load_t2m(d.source, root=d.root, fps=d.fps, min_len=d.min_len, max_len=self.num_frames,
                                     splits=splits, stats=d.stats, **kw)
        ds = self._dataset
        if ds.feature_dim != self.vq_cfg.in_dim:
            raise ConfigError(f"the dataset has {ds.feature_dim} features, the model {self.vq_cfg.in_dim}")
        return ds

    def train_iterator(self, seed: int, start_state=None):
        from mmar.data.t2m import make_t2m_train_iterator

        it = make_t2m_train_iterator(self.dataset, self.process_batch_size, seed, crop_len=self.num_frames,
                                     unit_drop_prob=self.d.unit_drop_prob)
        return _ArraysOnly(it)

    # ------------------------------------------------------------------ training
    def init(self, rng, batch):
        x, mask = self._inputs(batch)
        r1, r2, r3 = jax.random.split(rng, 3)
        return self.vq_model.init({"params": r1, "dropout": r2, "vq": r3}, x, mask)

    @staticmethod
    def _inputs(batch):
        return jnp.asarray(batch["motion"], jnp.float32), jnp.asarray(batch["mask"], bool)

    def loss(self, params, extra_vars, batch, rng, step):
        from mmar.models.vqvae import vqvae_loss

        x, mask = self._inputs(batch)
        r1, r2 = jax.random.split(rng)
        out, mutated = self.vq_model.apply({"params": params, "vq": extra_vars["vq"]}, x, mask, train=True,
                                           rngs={"dropout": r1, "vq": r2}, mutable=["vq"])
        loss, lm = vqvae_loss(out, x, mask, terms=self._terms, vq_weight=self.m.vq_weight, recon=self.m.recon)
        metrics = {"rec": lm["rec"], "vel": lm["term0"], "root": lm["term1"], "commit": out["commit_loss"],
                   "usage": jnp.mean(out["usage"]), "perplexity": out["perplexity_all"],
                   "valid_frames": jnp.sum(mask.astype(jnp.float32)) / mask.shape[0]}
        for k in range(self.vq_cfg.quantizer.num_scales):
            metrics[f"perplexity_scale{k}"] = out["perplexity"][k]
        return loss, (metrics, {"vq": mutated["vq"]})

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, params, extra_vars) -> dict[str, float]:
        return self.evaluate_vqvae({"params": params, **extra_vars})

    def evaluate_vqvae(self, variables: dict, split: str | None = None, batch: int | None = None) -> dict[str, float]:
        """Reconstruction of every motion of ``split`` (default ``data.eval_split``) from the
        first ``n`` scales and codebook use per scale (module docstring)."""
        from mmar.data.t2m import make_t2m_eval_iterator

        ds = self.dataset
        split = split or self.d.eval_split
        batch = int(batch or self.d.eval_batch)
        vq_vars = {k: v for k, v in variables.items() if k in ("params", "vq")}
        q = self.vq_cfg.quantizer
        K, V = q.num_scales, q.codebook_size
        mean = jnp.asarray(ds.mean, jnp.float32)
        std = jnp.asarray(ds.std, jnp.float32)
        fn = functools.partial(_eval_batch, vq_cfg=self.vq_cfg, joints_num=self.spec.num_joints)
        sums = np.zeros((K, 5), np.float64)  # rec, feat_l1 (per element); mpjpe, root mpjpe (per frame); frames
        counts = np.zeros((K, V), np.float64)
        motions = 0
        for b in make_t2m_eval_iterator(ds, split, batch, crop_len=self.num_frames):
            valid = np.asarray(b["valid"])
            mask = np.asarray(b["mask"]) & valid[:, None]
            s, codes = jax.device_get(fn(vq_vars, b["motion"], mask, mean, std))
            sums += np.asarray(s, np.float64)
            for k, c in enumerate(codes):
                c = np.asarray(c)[valid].reshape(-1)
                counts[k] += np.bincount(c[c >= 0], minlength=V)
            motions += int(valid.sum())
        frames = sums[0, 4]
        out: dict[str, float] = {"motions": float(motions), "frames": float(frames)}
        D = self.spec.feature_dim
        for n in range(1, K + 1):
            r = sums[n - 1]
            out[f"rec_scales{n}"] = float(r[0] / max(frames * D, 1))
            out[f"feat_l1_scales{n}"] = float(r[1] / max(frames * D, 1))
            out[f"mpjpe_cm_scales{n}"] = float(r[2] / max(frames, 1) * 100)
            out[f"mpjpe_root_cm_scales{n}"] = float(r[3] / max(frames, 1) * 100)
        for k in range(K):
            out[f"usage_scale{k}"] = float((counts[k] > 0).mean())
            out[f"perplexity_scale{k}"] = _perplexity(counts[k])
            out[f"tokens_scale{k}"] = float(counts[k].sum())
        total = counts.sum(0)
        out["usage"] = float((total > 0).mean())
        out["perplexity"] = _perplexity(total)
        out["mpjpe_cm"] = out[f"mpjpe_cm_scales{K}"]
        out["mpjpe_root_cm"] = out[f"mpjpe_root_cm_scales{K}"]
        out["rec"] = out[f"rec_scales{K}"]
        return out


def _perplexity(counts: np.ndarray) -> float:
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


@functools.partial(jax.jit, static_argnames=("vq_cfg", "joints_num"))
def _eval_batch(vq_vars, x, mask, mean, std, *, vq_cfg, joints_num):
    """Per number of scales ``n = 1..K``: ``[sum SmoothL1, sum |err|, sum per-frame MPJPE (m),
    sum per-frame root-aligned MPJPE (m), valid frames]`` over the valid frames of ``x``, and the
    deterministic codes of every scale."""
    from mmar.data.hml_features import recover_from_ric
    from mmar.models.vqvae import TemporalVQVAE, smooth_l1

    vq = TemporalVQVAE(vq_cfg)
    x = jnp.asarray(x, jnp.float32)
    w = jnp.asarray(mask, jnp.float32)
    codes = vq.apply(vq_vars, x, mask, method=lambda m, x_, k_: m.encode_codes(x_, k_))
    gt = recover_from_ric(x * std + mean, joints_num)
    gt_rel = gt - gt[..., :1, :]
    rows = []
    for n in range(1, vq_cfg.quantizer.num_scales + 1):
        y = vq.apply(vq_vars, codes, mask, method=lambda m, c, k_, n=n: m.decode_latent(
            m.quantizer.partial_reconstruction(c, n), k_))
        err = y - x
        pos = recover_from_ric(y * std + mean, joints_num)
        e_glob = jnp.linalg.norm(pos - gt, axis=-1).mean(-1)  # (B, T)
        e_root = jnp.linalg.norm(pos - pos[..., :1, :] - gt_rel, axis=-1).mean(-1)
        rows.append(jnp.stack([
            jnp.sum(smooth_l1(y, x) * w[..., None]), jnp.sum(jnp.abs(err) * w[..., None]),
            jnp.sum(e_glob * w), jnp.sum(e_root * w), jnp.sum(w),
        ]))
    return jnp.stack(rows), codes


TASK = MoScaleVQVAETask

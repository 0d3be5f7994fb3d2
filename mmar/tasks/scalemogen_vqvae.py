"""ScaleMoGen's skeletal-temporal BSQ tokenizer (stage 1 of ScaleMoGen) on captioned motion data.

Model: :class:`mmar.models.vqvae.SkeletalVQVAE` with :class:`~mmar.models.quantizers.skeletal.SkeletalQuantizer`
(``../shared/reference/next-scale-notes.md`` section 3): HumanML3D features ``(B, 196, 263)`` ->
per-joint MLPs (22 x 384) -> 2 levels of ResSTConv + STPool (22 -> 12 -> 7 body groups, 196 ->
49 steps) -> Linear 384 -> 24 -> multi-scale residual BSQ over 11 scales (``ctf_mapping_id: 5``:
1, 2, 4, 6, 14, 21, 36, 72, 120, 245, 343 tokens of 24 bits) -> Linear 24 -> 384 -> decoder. In
training each non-final scale is dropped with p = 0.5 for the whole batch (VQ stochastic depth).
Every field of the frozen :class:`~mmar.models.vqvae.SkeletalVQVAEConfig`, of its
:class:`~mmar.models.quantizers.skeletal.SkeletalQuantizerConfig` and of its
:class:`~mmar.models.quantizers.bsq.BSQConfig` is a field of :class:`ScaleMoGenVQVAEModelConfig`
(``--set model.<field>=...``; the BSQ ``dim`` is ``model.code_dim``; nested tuples such as
``mapping`` are given as JSON, ``model.mapping=[[0,0],[1,0],...]``). Defaults: the official
ScaleMoGen tokenizer (:data:`mmar.models.vqvae.SCALEMOGEN_VQVAE`). Only the SMG-22 skeleton
(HumanML3D-format features: ``bandai`` / ``humanml3d``) is defined; ``kit`` is refused.

Data (:class:`mmar.tasks.moscale_vqvae.MoScaleDataConfig`): :func:`mmar.data.t2m.load_t2m`, the
training loader :func:`mmar.data.t2m.make_t2m_train_iterator` (crops of a multiple of 4 frames,
zero padded to 196 with a mask); the batches the trainer sees hold ``motion``, ``mask``, ``length``.

Loss (official ``scalemogen/training/vq_trainer.py``; :data:`mmar.models.vqvae.SCALEMOGEN_LOSS`)::

    loss = SmoothL1(recon, x)                       masked mean over valid frames x 263 features
         + root_weight * SmoothL1(recon, x)[0:4]    (0.5, root)
         + vel_weight  * SmoothL1(recon, x)[193:259] (0.5, local joint velocities)
         + vq_weight   * mean over kept scales of the BSQ auxiliary loss
                                                    (4.0: lambda_commit 1 x 4; aux = 0.25 commit
                                                     + 0.1 (H_per-sample - H_codebook) / 100)

BSQ has no state: no extra variables (``loss`` returns ``None`` for them).

Evaluation (:meth:`ScaleMoGenVQVAETask.evaluate`) on ``data.eval_split``: every motion once, the
centred window of ``min(T, 196) // 4 * 4`` frames, deterministic (no stochastic depth), decoded
from the first ``n`` scales, ``n = 1..K`` (K = 11). Per ``n``: ``rec_scales{n}`` (masked SmoothL1
of the normalised features), ``feat_l1_scales{n}``, ``mpjpe_cm_scales{n}`` (joints recovered with
:func:`mmar.data.hml_features.recover_from_ric` from the denormalised features, mean over valid
frames and joints, cm) and ``mpjpe_root_cm_scales{n}`` (pelvis subtracted in every frame). Per
scale ``k`` (0-based, valid tokens over the whole split): ``bit_ones_scale{k}`` (fraction of bits
that are +1), ``bit_entropy_scale{k}`` (mean over the 24 bits of the binary entropy of the bit's
frequency, in bits: 1 = every bit used evenly), ``distinct_scale{k}`` (distinct codes / valid
tokens) and ``tokens_scale{k}``; ``bit_ones`` / ``bit_entropy`` over all scales. ``mpjpe_cm`` /
``mpjpe_root_cm`` / ``rec`` are the full-scale values; the configs keep the best checkpoint by
``mpjpe_cm``. ``jerk_recon`` / ``jerk_data``: mean jerk (m/s^3, as :func:`mmar.eval.editing.jerk`)
of the full-scale decoding and of the data over the valid 4-frame windows.

``model.jerk_weight`` (0 in the paper) adds ``jerk_weight * jerk_error`` (:func:`jerk_error`, the
mean |jerk(decoding) - jerk(data)| of the recovered joints, m/s^3) to the loss; with
``train.init_from`` and ``optim.frozen`` it fine-tunes the decoder of a trained tokenizer alone
(``configs/scalemogen_vqvae_smooth.py``): the codes stay the same, so a predictor trained on the
tokenizer stays valid.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError
from mmar.models.quantizers.skeletal import SCALEMOGEN_GROUP_CHAINS, SCALEMOGEN_MAPPING, SCALEMOGEN_TIME_FACTORS
from mmar.tasks.base import TaskBase, frozen_config
from mmar.tasks.moscale_vqvae import BATCH_KEYS, MoScaleDataConfig, _ArraysOnly

__all__ = ["ScaleMoGenVQVAEModelConfig", "ScaleMoGenVQVAETask", "TASK", "vqvae_config", "jerk_error", "MoScaleDataConfig"]


@dataclasses.dataclass
class ScaleMoGenVQVAEModelConfig:
    """``cfg.model`` of the ``scalemogen_vqvae`` task: every field of
    :class:`~mmar.models.vqvae.SkeletalVQVAEConfig` (but ``num_joints``, 22), of its
    :class:`~mmar.models.quantizers.skeletal.SkeletalQuantizerConfig` and of its
    :class:`~mmar.models.quantizers.bsq.BSQConfig` (``dim`` is ``code_dim``), flat, plus the
    loss weights. Defaults: ScaleMoGen's official tokenizer (HumanML3D config)."""

    # -- encoder / decoder (models/vq/encdec.py, models/skeleton/{conv,pool}.py)
    layout: str = "hml263"  # per-joint split of the 263 HumanML3D features
    per_joint_dim: int = 6  # only for layout 'per_joint'
    latent_dim: int = 384
    n_layers: int = 2  # pooling levels: 22 -> 12 -> 7 joints, 196 -> 49 steps
    n_extra_layers: int = 1  # 2 ResSTConv per level
    kernel_size: int = 3
    activation: str = "gelu"
    dropout: float = 0.1
    latent_rounding: str = "ceil"  # valid latent steps = ceil(length / 4)
    # -- quantiser (models/vq/bsq_quantizer.py, ctf_mapping_id 5)
    num_steps: int = 49
    num_groups: int = 7
    time_factors: tuple[int, ...] = SCALEMOGEN_TIME_FACTORS
    group_chains: tuple = SCALEMOGEN_GROUP_CHAINS
    mapping: tuple = SCALEMOGEN_MAPPING
    drop_rate: float = 0.5  # VQ stochastic depth
    keep_first: bool = False
    keep_last: bool = True
    down: str = "area"
    up: str = "linear"
    tf_down: str = "linear"
    detach_residual: bool = False  # remove_residual_detach: True
    valid_rounding: str = "ceil"
    # -- BSQ
    code_dim: int = 24  # BSQConfig.dim (bits per token)
    inv_temperature: float = 100.0
    commit_weight: float = 0.25
    entropy_weight: float = 0.1
    gamma0: float = 1.0
    gamma: float = 1.0
    zeta: float = 1.0
    ste: str = "identity"
    # -- loss (training/vq_trainer.py)
    recon: str = "smooth_l1"  # 'smooth_l1' | 'l2'
    root_weight: float = 0.5  # on features 0:4
    vel_weight: float = 0.5  # on features vel_slice (local joint velocities)
    vel_slice: tuple[int, ...] = (193, 259)
    vq_weight: float = 4.0  # x mean BSQ aux loss over kept scales
    # not in the paper: x mean |jerk(recon) - jerk(data)| of the recovered joint positions (m/s^3;
    # a smoother decoder for editing seams, docs/results.md); 0 = the official loss
    jerk_weight: float = 0.0

    def __post_init__(self):
        if self.recon not in ("smooth_l1", "l2"):
            raise ConfigError(f"model.recon must be 'smooth_l1' or 'l2', got {self.recon!r}")
        if len(tuple(self.vel_slice)) != 2:
            raise ConfigError(f"model.vel_slice must be (start, stop), got {self.vel_slice!r}")
        if self.jerk_weight < 0:
            raise ConfigError(f"model.jerk_weight must be >= 0, got {self.jerk_weight}")


def _deep_tuple(v):
    return tuple(_deep_tuple(x) for x in v) if isinstance(v, (list, tuple)) else v


def vqvae_config(m: ScaleMoGenVQVAEModelConfig):
    """The frozen :class:`~mmar.models.vqvae.SkeletalVQVAEConfig` of a model config."""
    from mmar.models.quantizers.bsq import BSQConfig
    from mmar.models.quantizers.skeletal import SkeletalQuantizerConfig
    from mmar.models.vqvae import SkeletalVQVAEConfig

    bsq = frozen_config(BSQConfig, m, dim=int(m.code_dim))
    q = frozen_config(SkeletalQuantizerConfig, m, bsq=bsq, time_factors=_deep_tuple(m.time_factors),
                      group_chains=_deep_tuple(m.group_chains), mapping=_deep_tuple(m.mapping))
    return frozen_config(SkeletalVQVAEConfig, m, quantizer=q)


class ScaleMoGenVQVAETask(TaskBase):
    """ScaleMoGen's skeletal-temporal BSQ tokenizer as a task of :func:`mmar.train.train` (see
    the module docstring). ``dataset`` (or ``benchmark``): a preloaded
    :class:`mmar.data.t2m.T2MDataset`; otherwise ``cfg.data`` is loaded on first use."""

    ModelConfig: ClassVar[type] = ScaleMoGenVQVAEModelConfig
    DataConfig: ClassVar[type] = MoScaleDataConfig

    def __init__(self, cfg, benchmark=None, dataset=None):
        super().__init__(cfg)
        from mmar.data import hml_features as hf
        from mmar.data.t2m import SOURCES
        from mmar.models.vqvae import SkeletalVQVAE

        if self.d.source not in SOURCES:
            raise ConfigError(f"data.source must be one of {SOURCES}, got {self.d.source!r}")
        self._dataset = dataset if dataset is not None else benchmark
        kind = "kit" if self.d.source == "kit" else "humanml3d"
        if self._dataset is not None:
            kind = self._dataset.kind
        if kind != "humanml3d":
            raise ConfigError("scalemogen_vqvae: only HumanML3D-format data (22 joints) is supported, not KIT")
        self.spec = hf.get_spec(kind)
        self.vq_cfg = vqvae_config(self.m)
        if self.vq_cfg.layout != "hml263" or self.vq_cfg.feature_dim != self.spec.feature_dim:
            raise ConfigError(f"model.layout must be 'hml263' for {self.spec.feature_dim}-d HumanML3D features")
        self.vq_model = SkeletalVQVAE(self.vq_cfg)
        a, b = (int(v) for v in self.m.vel_slice)
        if not 0 <= a < b <= self.spec.feature_dim:
            raise ConfigError(f"model.vel_slice {self.m.vel_slice} is outside the {self.spec.feature_dim} features")
        self._terms = ((0, 4, float(self.m.root_weight)), (a, b, float(self.m.vel_weight)))

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
        if ds.feature_dim != self.vq_cfg.feature_dim:
            raise ConfigError(f"the dataset has {ds.feature_dim} features, the model {self.vq_cfg.feature_dim}")
        return ds

    def train_iterator(self, seed: int, start_state=None):
        from mmar.data.t2m import make_t2m_train_iterator

        it = make_t2m_train_iterator(self.dataset, self.process_batch_size, seed, crop_len=self.num_frames,
                                     unit_drop_prob=self.d.unit_drop_prob)
        return _ArraysOnly(it, BATCH_KEYS)

    # ------------------------------------------------------------------ training
    @staticmethod
    def _inputs(batch):
        return jnp.asarray(batch["motion"], jnp.float32), jnp.asarray(batch["mask"], bool)

    def init(self, rng, batch):
        x, mask = self._inputs(batch)
        r1, r2, r3 = jax.random.split(rng, 3)
        return self.vq_model.init({"params": r1, "dropout": r2, "vq": r3}, x, mask)

    def loss(self, params, extra_vars, batch, rng, step):
        from mmar.models.vqvae import vqvae_loss

        x, mask = self._inputs(batch)
        r1, r2 = jax.random.split(rng)
        out = self.vq_model.apply({"params": params, **extra_vars}, x, mask, train=True,
                                  rngs={"dropout": r1, "vq": r2})
        loss, lm = vqvae_loss(out, x, mask, terms=self._terms, vq_weight=self.m.vq_weight, recon=self.m.recon)
        extra = {}
        if self.m.jerk_weight:
            ds = self.dataset
            err = jerk_error(out["recon"], x, mask, jnp.asarray(ds.mean, jnp.float32), jnp.asarray(ds.std, jnp.float32),
                             self.spec.num_joints, float(ds.fps))
            loss = loss + self.m.jerk_weight * err
            extra["jerk_err"] = err
        keep = out["keep"]
        kept = jnp.maximum(jnp.sum(keep), 1.0)
        metrics = {"rec": lm["rec"], "root": lm["term0"], "vel": lm["term1"], "vq": lm["vq"],
                   "commit": jnp.sum(out["commit"] * keep) / kept,
                   "per_sample_entropy": jnp.sum(out["per_sample_entropy"] * keep) / kept,
                   "codebook_entropy": jnp.sum(out["codebook_entropy"] * keep) / kept,
                   "scales_kept": jnp.sum(keep),
                   "valid_frames": jnp.sum(mask.astype(jnp.float32)) / mask.shape[0], **extra}
        return loss, (metrics, None)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, params, extra_vars) -> dict[str, float]:
        return self.evaluate_vqvae({"params": params, **extra_vars})

    def evaluate_vqvae(self, variables: dict, split: str | None = None, batch: int | None = None) -> dict[str, float]:
        """Reconstruction of every motion of ``split`` (default ``data.eval_split``) from the
        first ``n`` scales and bit use per scale (module docstring)."""
        from mmar.data.t2m import make_t2m_eval_iterator

        ds = self.dataset
        split = split or self.d.eval_split
        batch = int(batch or self.d.eval_batch)
        q = self.vq_cfg.quantizer
        K, C = q.num_scales, q.code_dim
        mean = jnp.asarray(ds.mean, jnp.float32)
        std = jnp.asarray(ds.std, jnp.float32)
        fn = functools.partial(_eval_batch, vq_cfg=self.vq_cfg, joints_num=self.spec.num_joints)
        sums = np.zeros((K, 5), np.float64)  # rec, feat_l1 (per element); mpjpe, root mpjpe (per frame); frames
        ones = np.zeros((K, C), np.float64)
        tokens = np.zeros((K,), np.float64)
        seen: list[set] = [set() for _ in range(K)]
        weights = 1 << np.arange(C - 1, -1, -1, dtype=np.int64)
        jerks = np.zeros((3,), np.float64)  # sum jerk of the full-scale decoding, of the data; windows
        motions = 0
        for b in make_t2m_eval_iterator(ds, split, batch, crop_len=self.num_frames):
            valid = np.asarray(b["valid"])
            mask = np.asarray(b["mask"]) & valid[:, None]
            s, codes, tmasks, jk = jax.device_get(fn(variables, b["motion"], mask, mean, std))
            sums += np.asarray(s, np.float64)
            jerks += np.asarray(jk, np.float64)
            for k in range(K):
                m = np.asarray(tmasks[k], bool) & valid[:, None]
                bits = np.asarray(codes[k])[m].astype(np.int64)  # (n, C)
                ones[k] += bits.sum(0)
                tokens[k] += len(bits)
                seen[k].update((bits * weights).sum(-1).tolist())
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
            p = ones[k] / max(tokens[k], 1)
            out[f"bit_ones_scale{k}"] = float(p.mean())
            out[f"bit_entropy_scale{k}"] = float(_binary_entropy(p).mean())
            out[f"distinct_scale{k}"] = float(len(seen[k]) / max(tokens[k], 1))
            out[f"tokens_scale{k}"] = float(tokens[k])
        p_all = ones.sum(0) / max(tokens.sum(), 1)
        out["bit_ones"] = float(p_all.mean())
        out["bit_entropy"] = float(_binary_entropy(p_all).mean())
        out["mpjpe_cm"] = out[f"mpjpe_cm_scales{K}"]
        out["mpjpe_root_cm"] = out[f"mpjpe_root_cm_scales{K}"]
        out["rec"] = out[f"rec_scales{K}"]
        fps3 = float(ds.fps) ** 3
        out["jerk_recon"] = float(jerks[0] / max(jerks[2], 1) * fps3)
        out["jerk_data"] = float(jerks[1] / max(jerks[2], 1) * fps3)
        return out


def _third_difference(p):
    """``p[t+3] - 3 p[t+2] + 3 p[t+1] - p[t]`` over axis 1 (frames)."""
    return p[:, 3:] - 3.0 * p[:, 2:-1] + 3.0 * p[:, 1:-2] - p[:, :-3]


def jerk_error(recon, x, mask, mean, std, joints_num: int, fps: float):
    """Mean over valid 4-frame windows and joints of ``|jerk(recon) - jerk(x)|`` (m/s^3) of the
    joint positions recovered from the denormalised features (``model.jerk_weight``'s term)."""
    from mmar.data.hml_features import recover_from_ric

    p = recover_from_ric(recon * std + mean, joints_num)
    g = recover_from_ric(x * std + mean, joints_num)
    d = (_third_difference(p) - _third_difference(g)) * fps**3
    e = jnp.sqrt(jnp.sum(d * d, -1) + 1e-12).mean(-1)  # (B, T - 3); eps: no NaN gradient at 0
    m = jnp.asarray(mask, bool)
    w = (m[:, 3:] & m[:, :-3]).astype(jnp.float32)
    return jnp.sum(e * w) / jnp.maximum(jnp.sum(w), 1.0)


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    """Binary entropy in bits (0 at p = 0 or 1)."""
    p = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


@functools.partial(jax.jit, static_argnames=("vq_cfg", "joints_num"))
def _eval_batch(variables, x, mask, mean, std, *, vq_cfg, joints_num):
    """Per number of scales ``n = 1..K``: ``[sum SmoothL1, sum |err|, sum per-frame MPJPE (m),
    sum per-frame root-aligned MPJPE (m), valid frames]`` over the valid frames of ``x``; the
    deterministic bits of every scale and their token masks."""
    from mmar.data.hml_features import recover_from_ric
    from mmar.models.vqvae import SkeletalVQVAE, smooth_l1

    vq = SkeletalVQVAE(vq_cfg)
    x = jnp.asarray(x, jnp.float32)
    w = jnp.asarray(mask, jnp.float32)

    def quantize(m, x_, k_):
        lat_mask = m._latent_mask(k_, x_.shape[0])
        res = m.quantizer(m.encode(x_, k_), lat_mask)
        return res["codes"], res["token_masks"], lat_mask

    codes, tmasks, lat_mask = vq.apply(variables, x, mask, method=quantize)
    gt = recover_from_ric(x * std + mean, joints_num)
    gt_rel = gt - gt[..., :1, :]
    rows = []
    pos = gt
    for n in range(1, vq_cfg.quantizer.num_scales + 1):
        y = vq.apply(variables, codes, mask, lat_mask, method=lambda m, c, k_, lm, n=n: m.decode_latent(
            m.quantizer.partial_reconstruction(c, n, lm), k_))
        pos = recover_from_ric(y * std + mean, joints_num)
        e_glob = jnp.linalg.norm(pos - gt, axis=-1).mean(-1)  # (B, T)
        e_root = jnp.linalg.norm(pos - pos[..., :1, :] - gt_rel, axis=-1).mean(-1)
        rows.append(jnp.stack([
            jnp.sum(smooth_l1(y, x) * w[..., None]), jnp.sum(jnp.abs(y - x) * w[..., None]),
            jnp.sum(e_glob * w), jnp.sum(e_root * w), jnp.sum(w),
        ]))
    m = jnp.asarray(mask, bool)
    w4 = (m[:, 3:] & m[:, :-3]).astype(jnp.float32)  # valid 4-frame windows
    jerk_of = lambda p: jnp.linalg.norm(_third_difference(p), axis=-1).mean(-1)  # noqa: E731 (B, T - 3)
    jerks = jnp.stack([jnp.sum(jerk_of(pos) * w4), jnp.sum(jerk_of(gt) * w4), jnp.sum(w4)])
    return jnp.stack(rows), codes, tmasks, jerks


TASK = ScaleMoGenVQVAETask

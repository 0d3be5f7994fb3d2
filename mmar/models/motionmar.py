"""MotionMAR: full-body motion from sparse head and hand tracking, coarse to fine in time.

The four parts of the paper (``../shared/seeds/motionmar.txt``), built from the shared pieces:

* **TMT VQ-VAE** -- :class:`mmar.models.vqvae.TemporalVQVAE` with the temporal multi-scale
  residual quantiser (scales ``(5, 10, 20)`` over a 20-frame window, one learned 1024 x 64
  codebook, cosine code search, VAR's phi convs); its decoder reads the 54 sparse features
  (``MOTIONMAR_VQVAE``). Trained first, then frozen.
* **MAN** -- :class:`mmar.models.scale_ar.ScaleARTransformer` (``motionmar_config``):
  block-causal across scales, bidirectional within a scale, AdaLN. Scale 0 reads the SAC's
  start tokens; scale ``k > 0`` reads ``Linear(f_hat_{<k} resized to L_k)`` (VAR's
  ``word_embed`` of the teacher-forcing input). Teacher forcing in training, one cached
  forward pass per scale at inference.
* **SAC** -- :class:`mmar.models.conditioning.SparseScaleControl`: the sparse window is
  encoded (``Linear -> Conv1d -> ReLU -> Conv1d``), resized to every scale's length and added
  to that scale's tokens; its mean over all tokens plus a learned start vector is the global
  AdaLN condition. ``sac_align=False`` is the ablation without per-scale alignment. Condition
  dropout (10 %) zeroes the features, so classifier-free guidance (``w c - (w - 1) u``) is
  available at inference.
* **MRN** -- :class:`BiGRURefiner`: a multi-layer bidirectional GRU over the decoded pose
  window (with the sparse input beside it) predicting a residual that is added to the pose.
  Its output layer starts at zero, so an untrained MRN is the identity.

Decoding (:func:`infer_window`): for each scale the logits give code vectors -- MotionMAR's
soft codebook mix ``softmax(logits / 2.75) @ codebook`` (default), the argmax code, or a
Gumbel-max sample whose noise is an input -- which are up-sampled, passed through phi and
accumulated into ``f_hat``; the VQ-VAE decoder turns ``f_hat`` and the sparse window into 22 x
6D local rotations, and the MRN refines them. Every loop is a Python loop over the static
scale count; shapes are fixed, so the whole window model is one jit-able (and exportable)
graph.

Online use (:func:`predict_online`): a sliding window over the stream. Frame ``t`` is the
last frame of the window ``[t - W + 1, t]`` (start edge-padded), so the output never looks
ahead; ``hop > 1`` predicts ``hop`` frames per window (the last ``hop``) for faster offline
evaluation at the cost of up to ``hop - 1`` frames of latency.

Input frame (``MotionMARConfig.frame``, :mod:`mmar.models.heading`): ``"world"`` is the layout
above. With ``"heading"`` each window is expressed in the heading frame of its **last** frame's
head before anything reads it: the SAC, the VQ-VAE decoder and the MRN read
``sparse_to_frame(window)``, the teacher-forcing codes of :func:`ar_loss` come from the window's
poses with the root orientation ``H^T R`` (:func:`window_to_frame`), and :func:`infer_window`
turns the root orientation of every returned frame back to the world (``H R``, the window's
last-frame heading for all of them, so with ``hop > 1`` every predicted frame uses it). The
frozen TMT VQ-VAE must have been trained in the same frame (``tmt_vqvae``'s ``model.frame``).
The modules and their parameters are the same in either mode.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import ConfigError, ShapeError
from mmar.models import heading
from mmar.models.conditioning import Conditioning, SparseScaleControl
from mmar.models.sampling import MOTIONMAR_SOFT_TEMPERATURE, gumbel_max, soft_codebook_mix
from mmar.models.scale_ar import REMAT_POLICIES, ScaleARConfig, ScaleARTransformer, ScaleSchedule, cfg_logits, \
    motionmar_config, sample_cond_drop

Array = jax.Array
DECODES = ("soft", "greedy", "sample")


@dataclasses.dataclass(frozen=True)
class MotionMARConfig:
    """MotionMAR's autoregressive part (MAN + SAC + MRN). Defaults: the official S1 model."""

    lengths: tuple[int, ...] = (5, 10, 20)  # must equal the VQ-VAE quantiser's scales
    code_dim: int = 64
    vocab_size: int = 1024
    width: int = 512
    depth: int = 8
    heads: int = 8
    drop_path: float = 0.1 * 8 / 24
    cond_drop_prob: float = 0.1
    sparse_dim: int = 54
    pose_dim: int = 132  # 22 joints x 6D
    sac_align: bool = True
    sac_resample: str = "linear"
    mrn: bool = True
    mrn_hidden: int = 256
    mrn_layers: int = 2
    mrn_unroll: bool = False  # unroll the GRUs over the window (export: no while loop in the graph)
    remat: str = "none"  # per-block rematerialisation of the MAN (ScaleARConfig.remat)
    frame: str = "world"  # 'world' | 'heading': each window in its last frame's heading frame (module docstring)

    def __post_init__(self):
        object.__setattr__(self, "lengths", tuple(int(x) for x in self.lengths))
        heading.check_frame(self.frame, "MotionMARConfig.frame")
        if self.remat not in REMAT_POLICIES:
            raise ConfigError(f"MotionMARConfig.remat must be one of {REMAT_POLICIES}, got {self.remat!r}")
        if not self.lengths or any(b < a for a, b in zip(self.lengths, self.lengths[1:])):
            raise ConfigError(f"MotionMARConfig.lengths must be non-decreasing, got {self.lengths}")
        if self.mrn_layers < 1 or self.mrn_hidden < 1:
            raise ConfigError("MotionMARConfig: mrn_layers and mrn_hidden must be >= 1")

    @property
    def window(self) -> int:
        return self.lengths[-1]

    @property
    def schedule(self) -> ScaleSchedule:
        return ScaleSchedule.from_lengths(self.lengths)

    def ar_config(self) -> ScaleARConfig:
        return motionmar_config(schedule=self.schedule, width=self.width, depth=self.depth, heads=self.heads,
                                drop_path=self.drop_path, vocab_size=self.vocab_size,
                                cond_drop_prob=self.cond_drop_prob, remat=self.remat)


class BiGRURefiner(nn.Module):
    """MRN: ``Linear([pose | sparse]) -> layers x BiGRU -> Linear`` = a pose residual.

    ``unroll=True`` unrolls the GRUs over the (short, static) window, so the graph has no while
    loop (used for export); training keeps the scan, which compiles much faster."""

    hidden: int = 256
    layers: int = 2
    out_dim: int = 132
    unroll: bool = False

    @nn.compact
    def __call__(self, pose: Array, sparse: Array) -> Array:
        h = nn.Dense(self.hidden, name="in_proj")(jnp.concatenate([pose, sparse], axis=-1))
        for i in range(self.layers):
            unroll = pose.shape[1] if self.unroll else 1
            fwd = nn.RNN(nn.GRUCell(self.hidden, name=f"gru{i}_fwd_cell"), unroll=unroll, name=f"gru{i}_fwd")
            bwd = nn.RNN(nn.GRUCell(self.hidden, name=f"gru{i}_bwd_cell"), unroll=unroll, name=f"gru{i}_bwd")
            h = nn.Bidirectional(fwd, bwd, name=f"bigru{i}")(h)
        return nn.Dense(self.out_dim, kernel_init=nn.initializers.zeros, name="out")(h)


class MotionMAR(nn.Module):
    """MAN + SAC + MRN (the frozen VQ-VAE is a separate module, see :func:`infer_window`).

    * ``__call__(sparse (B, W, 54), tf_inputs [(B, L_k, D) for k >= 1], drop=None, train=False)``
      -> teacher-forced logits ``(B, N, V)``. In training ``drop`` is drawn (``cond_drop_prob``)
      from the ``'dropout'`` rng when not given.
    * ``condition``, ``decode_scale`` and ``refine`` are the inference pieces.
    """

    config: MotionMARConfig = MotionMARConfig()

    def setup(self):
        c = self.config
        self.sac = SparseScaleControl(c.schedule, c.width, sparse_dim=c.sparse_dim, align=c.sac_align,
                                      resample=c.sac_resample)
        self.word_embed = nn.Dense(c.width)
        self.transformer = ScaleARTransformer(c.ar_config())
        if c.mrn:
            self.mrn = BiGRURefiner(c.mrn_hidden, c.mrn_layers, c.pose_dim, c.mrn_unroll)

    def _check_sparse(self, sparse: Array) -> None:
        c = self.config
        if sparse.ndim != 3 or sparse.shape[1:] != (c.window, c.sparse_dim):
            raise ShapeError(f"MotionMAR: sparse must be (B, {c.window}, {c.sparse_dim}), got {tuple(sparse.shape)}")

    def condition(self, sparse: Array, drop: Array | None = None) -> Conditioning:
        self._check_sparse(sparse)
        return self.sac(sparse, drop)

    def __call__(self, sparse: Array, tf_inputs, drop: Array | None = None, train: bool = False) -> Array:
        c = self.config
        if len(tf_inputs) != len(c.lengths) - 1:
            raise ShapeError(f"MotionMAR: expected {len(c.lengths) - 1} teacher-forcing inputs, got {len(tf_inputs)}")
        if drop is None and train and c.cond_drop_prob > 0:
            drop = sample_cond_drop(self.make_rng("dropout"), sparse.shape[0], c.cond_drop_prob)
        cond = self.condition(sparse, drop)
        parts = [cond.sos] + ([self.word_embed(jnp.concatenate(tf_inputs, axis=1))] if tf_inputs else [])
        x = jnp.concatenate(parts, axis=1)
        return self.transformer(x, cond.adaln, additive=cond.additive, train=train)

    def decode_scale(self, cache: dict, prev: Array | None, k: int, cond: Conditioning):
        """Logits of scale ``k`` (static) given ``prev`` = ``f_hat`` resized to ``L_k`` (None
        at ``k = 0``) and the cached K/V of the coarser scales. Returns ``(logits, cache)``."""
        sch = self.config.schedule
        x = cond.sos if k == 0 else self.word_embed(prev)
        add = None if cond.additive is None else cond.additive[:, sch.starts[k]:sch.ends[k]]
        return self.transformer.decode_step(cache, x, k, cond.adaln, add, None, None, None, None)

    def refine(self, pose: Array, sparse: Array) -> Array:
        """MRN: ``pose (B, W, 132)`` -> refined pose (identity when the config has no MRN)."""
        if not self.config.mrn:
            return pose
        return pose + self.mrn(pose, sparse)

    def init_all(self, sparse: Array, tf_inputs, pose: Array) -> Array:
        """Touches every sub-module (use as the ``method`` of ``init``)."""
        return self(sparse, tf_inputs), self.refine(pose, sparse)


def init_motionmar(model: MotionMAR, rng: Array, batch: int = 1) -> dict:
    """Initial variables of ``model`` (shapes only depend on the config)."""
    c = model.config
    sparse = jnp.zeros((batch, c.window, c.sparse_dim), jnp.float32)
    tf = [jnp.zeros((batch, n, c.code_dim), jnp.float32) for n in c.lengths[1:]]
    pose = jnp.zeros((batch, c.window, c.pose_dim), jnp.float32)
    return model.init({"params": rng, "dropout": rng}, sparse, tf, pose, method=MotionMAR.init_all)


# --------------------------------------------------------------------------
# the frozen VQ-VAE, through small pure helpers
# --------------------------------------------------------------------------

def _vq_codebook(vq_model, vq_vars) -> Array:
    return vq_model.apply(vq_vars, method=lambda m: m.quantizer.codebook_vectors())


def _vq_contribution(vq_model, vq_vars, k: int, e: Array) -> Array:
    return vq_model.apply(vq_vars, e, method=lambda m, e: m.quantizer.scale_contribution(k, e))


def _vq_next_input(vq_model, vq_vars, f_hat: Array, k: int) -> Array:
    return vq_model.apply(vq_vars, f_hat, method=lambda m, f: m.quantizer.next_scale_input(f, k))


def teacher_forcing(vq_model, vq_vars, pose: Array) -> tuple[list[Array], list[Array]]:
    """Ground-truth codes per scale and the teacher-forcing inputs of scales ``1..K-1`` for a
    pose window ``(B, W, 132)`` (all stop-gradient)."""
    codes = vq_model.apply(vq_vars, pose, method=lambda m, x: m.encode_codes(x))
    tf = vq_model.apply(vq_vars, codes, method=lambda m, c: m.quantizer.teacher_forcing_inputs(c))
    sg = jax.lax.stop_gradient
    return [sg(c) for c in codes], [sg(x) for x in tf]


def check_compatible(config: MotionMARConfig, vq_config) -> None:
    """The AR model and the VQ-VAE must agree on scales, codebook and window."""
    q = vq_config.quantizer
    if tuple(q.lengths) != tuple(config.lengths):
        raise ConfigError(f"MotionMAR scales {config.lengths} differ from the VQ-VAE's {q.lengths}")
    if q.codebook_size != config.vocab_size or q.code_dim != config.code_dim:
        raise ConfigError(f"MotionMAR codebook {config.vocab_size} x {config.code_dim} differs from the VQ-VAE's "
                          f"{q.codebook_size} x {q.code_dim}")
    if vq_config.num_frames != config.window or vq_config.in_dim != config.pose_dim:
        raise ConfigError(f"MotionMAR window {config.window} x {config.pose_dim} differs from the VQ-VAE's "
                          f"{vq_config.num_frames} x {vq_config.in_dim}")


# --------------------------------------------------------------------------
# the heading frame of a window
# --------------------------------------------------------------------------

def _pose_frames(pose: Array, frame: "heading.HeadingFrame", inverse: bool) -> Array:
    if pose.shape[-1] % 6:
        raise ShapeError(f"pose features must be joints x 6D, got shape {tuple(pose.shape)}")
    r = pose.reshape(pose.shape[:-1] + (pose.shape[-1] // 6, 6))
    r = heading.pose_from_frame(r, frame) if inverse else heading.pose_to_frame(r, frame)
    return r.reshape(pose.shape)


def pose_features_to_frame(pose: Array, frame: "heading.HeadingFrame") -> Array:
    """Pose features ``(..., J * 6)`` (local 6D, joint 0 the global root orientation) with the
    root orientation in ``frame`` (``H^T R_root``); the other joints are unchanged."""
    return _pose_frames(pose, frame, inverse=False)


def pose_features_from_frame(pose: Array, frame: "heading.HeadingFrame") -> Array:
    """Inverse of :func:`pose_features_to_frame` (``H R_root``)."""
    return _pose_frames(pose, frame, inverse=True)


def window_to_frame(sparse: Array, pose: Array | None = None):
    """Windows ``sparse (B, W, 54)`` (and ``pose (B, W, J * 6)``) in the heading frame of each
    window's last frame: ``(frame, sparse_in_frame, pose_in_frame or None)``."""
    f = heading.window_frame(sparse)
    return f, heading.sparse_to_frame(sparse, f), None if pose is None else pose_features_to_frame(pose, f)


# --------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------

def infer_window(model: MotionMAR, variables, vq_model, vq_vars, sparse: Array, *, decode: str = "soft",
                 temperature: float = MOTIONMAR_SOFT_TEMPERATURE, guidance: float = 1.0,
                 noise: Array | None = None, refine: bool = True) -> dict:
    """One window: ``sparse (B, W, 54)`` -> ``{'pose_raw', 'pose'}`` each ``(B, W, 132)`` and the
    (guided) ``logits (B, N, V)`` of every scale.

    ``decode``: ``'soft'`` (MotionMAR's soft codebook mix at ``temperature``), ``'greedy'``
    (argmax code) or ``'sample'`` (Gumbel-max at ``temperature`` with ``noise (B, N, V)``
    given as an input). ``guidance != 1`` runs the conditional and the condition-dropped
    rows together and mixes the logits as MotionMAR does (``w c - (w - 1) u``). ``refine``
    applies the MRN. One cached transformer pass per scale; fixed shapes throughout.

    ``sparse`` is in the world either way; with ``frame="heading"`` the window is decoded in
    its last frame's heading frame and the root orientation of every returned frame is turned
    back to the world (``H R``).
    """
    kw = dict(decode=decode, temperature=temperature, guidance=guidance, noise=noise, refine=refine)
    if model.config.frame == "heading":
        f, sparse_f, _ = window_to_frame(sparse)
        out = _infer_window(model, variables, vq_model, vq_vars, sparse_f, **kw)
        return {**out, "pose_raw": pose_features_from_frame(out["pose_raw"], f),
                "pose": pose_features_from_frame(out["pose"], f)}
    return _infer_window(model, variables, vq_model, vq_vars, sparse, **kw)


def _infer_window(model: MotionMAR, variables, vq_model, vq_vars, sparse: Array, *, decode: str,
                  temperature: float, guidance: float, noise: Array | None, refine: bool) -> dict:
    """:func:`infer_window` in the frame ``sparse`` is given in (no frame transform)."""
    if decode not in DECODES:
        raise ConfigError(f"decode must be one of {DECODES}, got {decode!r}")
    c = model.config
    sch = c.schedule
    if decode == "sample" and (noise is None or noise.shape != (sparse.shape[0], sch.total, c.vocab_size)):
        raise ShapeError(f"decode='sample' needs noise of shape (B, {sch.total}, {c.vocab_size})")
    B = sparse.shape[0]
    cfg_on = guidance != 1.0
    sp = jnp.concatenate([sparse, sparse]) if cfg_on else sparse
    drop = jnp.concatenate([jnp.zeros((B,), bool), jnp.ones((B,), bool)]) if cfg_on else None
    cond = model.apply(variables, sp, drop, method=MotionMAR.condition)
    codebook = _vq_codebook(vq_model, vq_vars)
    cache = ScaleARTransformer(c.ar_config()).init_cache(sp.shape[0])
    f_hat = jnp.zeros((B, c.window, c.code_dim), jnp.float32)
    prev = None
    all_logits = []
    for k in range(sch.num_scales):
        logits, cache = model.apply(variables, cache, prev, k, cond, method=MotionMAR.decode_scale)
        if cfg_on:
            logits = cfg_logits(logits[:B], logits[B:], k, sch.num_scales, "motionmar", guidance)
        all_logits.append(logits)
        if decode == "soft":
            e = soft_codebook_mix(logits, codebook, temperature)
        else:
            ids = (jnp.argmax(logits, axis=-1) if decode == "greedy"
                   else gumbel_max(logits, noise[:, sch.starts[k]:sch.ends[k]], temperature))
            e = jnp.take(codebook, ids, axis=0)
        f_hat = f_hat + _vq_contribution(vq_model, vq_vars, k, e)
        if k + 1 < sch.num_scales:
            prev = _vq_next_input(vq_model, vq_vars, f_hat, k)
            if cfg_on:
                prev = jnp.concatenate([prev, prev])
    pose_raw = vq_model.apply(vq_vars, f_hat, None, sparse, method=lambda m, z, mk, s: m.decode_latent(z, mk, s))
    pose = model.apply(variables, pose_raw, sparse, method=MotionMAR.refine) if refine else pose_raw
    return {"pose_raw": pose_raw, "pose": pose, "logits": jnp.concatenate(all_logits, axis=1)}


def sliding_windows(sparse: Array, window: int, hop: int = 1) -> Array:
    """``sparse (B, T, F)`` -> windows ``(B, T // hop, window, F)``; window ``i`` ends at frame
    ``(i + 1) hop - 1``; frames before 0 repeat frame 0 (the stream's first observation)."""
    B, T, F = sparse.shape
    if hop < 1 or T % hop:
        raise ShapeError(f"sliding_windows: hop {hop} must divide the length {T}")
    padded = jnp.concatenate([jnp.broadcast_to(sparse[:, :1], (B, window - 1, F)), sparse], axis=1)
    ends = np.arange(hop - 1, T, hop)  # in real frames; padded index = end + window - 1
    idx = ends[:, None] + np.arange(window)[None, :]  # (n, W) padded indices
    return padded[:, idx]


def predict_online(model: MotionMAR, variables, vq_model, vq_vars, sparse: Array, *, hop: int = 1,
                   chunk: int = 256, **infer_kw) -> Array:
    """Online predictions ``(B, T, 132)`` for whole sequences ``sparse (B, T, 54)`` with the
    sliding window (see the module docstring); ``chunk`` windows run at a time."""
    c = model.config
    W = c.window
    if hop > W:
        raise ConfigError(f"hop {hop} exceeds the window {W}")
    B, T, _ = sparse.shape
    wins = sliding_windows(sparse, W, hop)  # (B, n, W, 54)
    n = wins.shape[1]
    flat = wins.reshape(B * n, W, -1)
    total = flat.shape[0]
    chunk = max(1, min(chunk, total))
    pad = (-total) % chunk
    flat = jnp.concatenate([flat, jnp.broadcast_to(flat[-1:], (pad,) + flat.shape[1:])]) if pad else flat
    run = functools.partial(infer_window, model, variables, vq_model, vq_vars, **infer_kw)

    def body(x):
        return run(x)["pose"][:, W - hop:]

    out = jax.lax.map(body, flat.reshape(-1, chunk, W, flat.shape[-1]))  # (nc, chunk, hop, 132)
    out = out.reshape(-1, hop, c.pose_dim)[:total]
    return out.reshape(B, n * hop, c.pose_dim)


def ar_loss(model: MotionMAR, params, model_vars_extra: dict, vq_model, vq_vars, sparse: Array, pose: Array,
            rng: Array, *, mrn_weight: float = 1.0, infer_kw: dict | None = None, pos_weight: float = 0.0,
            joints: Array | None = None, offsets: Array | None = None) -> tuple[Array, dict]:
    """MotionMAR's training loss on windows ``sparse (B, W, 54)``, ``pose (B, W, 132)``:

    * cross-entropy of the teacher-forced logits against the VQ-VAE's codes of every scale
      (condition dropout inside the model);
    * the MRN term: the model's own inference output (cached scale loop, soft decoding, no
      gradient into the transformer) refined by the MRN, against the ground-truth pose
      (mean per-joint 6D L2 plus the same on frame-to-frame velocities);
    * with ``pos_weight > 0`` (not in the paper; the MLP presets' FK loss), that weight times the
      mean joint-position error (metres) of the refined pose's forward kinematics with
      ``offsets (B, 22, 3)`` against the world ``joints (B, W, 22, 3)``, both placed at the head.

    Because no gradient flows from the MRN term into MAN/SAC, a model evaluated with
    ``refine=False`` is exactly the "without MRN" ablation of the same training run.

    ``sparse`` and ``pose`` are in the world; with ``frame="heading"`` both are expressed in each
    window's last-frame heading frame first (root orientation ``H^T R``), so the codes, the
    logits, the MRN and both error terms live in that frame (the errors are those of the
    turned-back outputs: a rotation keeps the L2 norms).
    """
    c = model.config
    frame = None
    if c.frame == "heading":
        frame, sparse, pose = window_to_frame(sparse, pose)
    kw = {**dict(decode="soft", temperature=MOTIONMAR_SOFT_TEMPERATURE, guidance=1.0, noise=None), **(infer_kw or {}),
          "refine": False}  # the MRN input: the unrefined decoding, in the window's frame
    codes, tf = teacher_forcing(vq_model, vq_vars, pose)
    variables = {"params": params, **model_vars_extra}
    r_drop, _ = jax.random.split(rng)
    logits = model.apply(variables, sparse, tf, train=True, rngs={"dropout": r_drop})
    targets = jnp.concatenate(codes, axis=1)
    import optax

    ce_tok = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    ce = jnp.mean(ce_tok)
    hit = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    metrics = {"ce": ce}
    for k, sl in enumerate(c.schedule.scale_slice(k) for k in range(c.schedule.num_scales)):
        metrics[f"acc_scale{k}"] = jnp.mean(hit[:, sl])
    loss = ce
    if c.mrn and mrn_weight > 0:
        frozen = {"params": jax.lax.stop_gradient(params), **model_vars_extra}
        raw = jax.lax.stop_gradient(_infer_window(model, frozen, vq_model, vq_vars, sparse, **kw)["pose_raw"])
        refined = model.apply(variables, raw, sparse, method=MotionMAR.refine)
        J = c.pose_dim // 6
        err = jnp.mean(jnp.linalg.norm((refined - pose).reshape(*pose.shape[:2], J, 6), axis=-1))
        vel = jnp.mean(jnp.linalg.norm((jnp.diff(refined, axis=1) - jnp.diff(pose, axis=1))
                                       .reshape(pose.shape[0], -1, J, 6), axis=-1))
        raw_err = jnp.mean(jnp.linalg.norm((raw - pose).reshape(*pose.shape[:2], J, 6), axis=-1))
        metrics.update(mrn_rot=err, mrn_vel=vel, raw_rot=raw_err)
        loss = loss + mrn_weight * (err + vel)
        if pos_weight:
            from mmar.tasks.agrol_mlp import position_error

            pos = position_error(refined.reshape(*pose.shape[:2], J, 6), joints, offsets, frame)
            metrics["mrn_pos"] = pos
            loss = loss + mrn_weight * pos_weight * pos
    return loss, metrics

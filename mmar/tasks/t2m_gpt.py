"""A next-token text-to-motion baseline (T2M-GPT style) as a task, built to be compared with
MoScale (:mod:`mmar.tasks.moscale`): :mod:`mmar.models.t2m_gpt` trained on the *finest-scale*
tokens of the same frozen ``moscale_vqvae`` run, with the same text encoder, conditioning,
length head, data, validation and checkpoint layout.

::

    mmar train configs/t2m_gpt_small.py --workdir runs/t2m_gpt \\
        --set model.tokenizer_workdir=runs/moscale_vq --set data.evaluator_workdir=runs/t2m_eval
    mmar generate --checkpoint runs/t2m_gpt --text "a person walks happily" --out m.npz
    .venv/bin/python tools/t2m_token_floor.py --tokenizer runs/moscale_vq    # what the tokens can reach

Tokens (:func:`finest_tokens`): the frozen tokenizer encodes the window; every one of the
``T' = 49`` latent steps takes the code of the tokenizer's (shared) codebook nearest to ``z``
(deterministic argmin, the tokenizer's distance; one scale, no residual: the codebook was
trained on the residuals of all MoScale scales, so these tokens reconstruct worse than the
4-scale pyramid -- :func:`token_floor` measures both); ``-1`` beyond the valid latent length
``length // 4``.

Training step (:meth:`T2MGPTTask.loss`): T2M-GPT's input corruption (``model.pkeep``: each
input code kept with probability ``pkeep``, else a uniform random code; ``pkeep < 0``: the keep
probability is drawn from U(0, 1) once per batch, the official ``--pkeep -1``); inputs =
[text start token, corrupted tokens 0..T'-2]; the loss is T2M-GPT's cross-entropy of the clean
tokens over each motion's valid positions (mean per motion, then over the batch) plus
``model.length_weight`` times the length head's cross-entropy (as MoScale). The caption is
dropped (learned rows) with probability ``model.cond_drop_prob`` for classifier-free guidance
(T2M-GPT has none; kept so that both systems sample alike).

Validation (:meth:`evaluate`): teacher-forced cross-entropy / accuracy of the clean tokens over
all valid positions (``val_ce``, ``val_acc``, per token), and with ``data.evaluator_workdir`` the
generation metrics of :func:`mmar.eval.t2m_protocol.generated_row` (best checkpoint by ``fid``).

Sampling (:meth:`generate`, the signature of :meth:`MoScaleTask.generate`): ``T'`` next-token
steps with a KV cache, CFG with the constant weight ``model.guidance`` (``(1 + s) c - s u``; 5
as MoScale, without MoScale's per-scale ramp), top-p ``model.top_p`` 0.9, temperature 1.
``steps`` does not apply (one step per token): None or 1 only.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import CheckpointError, ConfigError
from mmar.models.generated import GeneratedMotions
from mmar.tasks.base import frozen_config
from mmar.tasks.moscale import ASSETS, TOKENIZER, MoScaleGenDataConfig, MoScaleTask, _check_remat, check_lengths, \
    text_assets

__all__ = ["T2MGPTModelConfig", "T2MGPTTask", "TASK", "finest_tokens", "token_floor"]


@dataclasses.dataclass
class T2MGPTModelConfig:
    """``cfg.model`` of the ``t2m_gpt`` task: MoScale's fields where they apply (defaults the
    MoScale ones) but learned absolute positions, no level embedding, no ``pos_start``."""

    tokenizer_workdir: str = ""  # the moscale_vqvae run (required for training)
    # -- transformer (every ScaleARConfig field but the fixed ones)
    width: int = 768
    depth: int = 16
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    attn_dropout: float = 0.0
    drop_path: float = 0.1 * 16 / 24
    attn_scale: str = "var"
    positions: str = "learned_abs"
    rope_freq_repeat: int = 1
    cond_dim: int = 384
    memory_dim: int = 384
    pool_heads: int = 3
    cond_drop_prob: float = 0.1
    mlp_round: int = 1
    cosine_sqrt_d: bool = False
    rope_base: float = 1e4
    rope_time_extent: int | None = None
    rope_group_extent: int | None = None
    level_embedding: bool = False
    num_levels: int | None = None
    pos_start: bool = False
    shared_adaln: bool = False
    head_adaln: bool = True
    norm_eps: float = 1e-6
    init_std: float | None = None
    init_head: float = 0.02
    init_adaln: float = 0.5
    init_adaln_gamma: float = 1e-5
    remat: str = "none"  # per-block rematerialisation: none | full | dots | dots_no_batch (ScaleARConfig.remat)
    # -- text encoder (trained with the predictor)
    text_width: int = 256
    text_depth: int = 4
    text_heads: int = 4
    text_dropout: float = 0.1
    max_text_len: int = 22
    min_word_count: int = 1
    # -- training corruption (T2M-GPT)
    pkeep: float = 0.5  # keep probability of an input code; < 0: U(0, 1) per batch
    # -- length estimator
    length_hidden: int = 256
    length_weight: float = 0.1
    # -- sampling defaults
    guidance: float = 5.0
    top_p: float = 0.9
    temperature: float = 1.0

    def __post_init__(self):
        if not (self.pkeep < 0 or 0.0 < float(self.pkeep) <= 1.0):
            raise ConfigError(f"model.pkeep must lie in (0, 1] (or be < 0: U(0, 1) per batch), got {self.pkeep}")
        _check_remat(self.remat)


def finest_tokens(vq, vq_vars, x, mask):
    """``(B, T')`` int32 codes nearest to the tokenizer's latent (argmin), ``-1`` beyond the
    valid latent length; ``vq`` a :class:`~mmar.models.vqvae.TemporalVQVAE`."""
    from mmar.models.quantizers.temporal import nearest_codes

    def f(m, x_, mk):
        z = m.encode(x_, mk)
        codes = nearest_codes(z, m.quantizer.codebook_vectors(), m.config.quantizer.distance)
        return jnp.where(m._latent_mask(mk, x_.shape[0]), codes, -1)

    return jax.lax.stop_gradient(vq.apply(vq_vars, jnp.asarray(x, jnp.float32), jnp.asarray(mask, bool), method=f))


class T2MGPTTask(MoScaleTask):
    """The next-token baseline; see the module docstring. Data, caption tokenizer, stage-1
    loading and the validation generation protocol are :class:`MoScaleTask`'s."""

    ModelConfig = T2MGPTModelConfig
    DataConfig = MoScaleGenDataConfig
    edit_groups = None  # no editing: a next-token model has no scale to keep

    def net_config(self, vq_cfg, vocab_size: int):
        from mmar.models.scale_ar import ScaleARConfig, ScaleSchedule
        from mmar.models.t2m_gpt import T2MGPTConfig
        from mmar.models.text import TextEncoderConfig

        m = self.m
        q = vq_cfg.quantizer
        t = frozen_config(ScaleARConfig, m, schedule=ScaleSchedule.from_lengths((1,) * q.latent_length),
                          input_dim=None, cross_attention=True, null_cond=False, head="categorical",
                          vocab_size=q.codebook_size, num_bits=24)
        text = TextEncoderConfig(vocab_size=int(vocab_size), width=m.text_width, depth=m.text_depth,
                                 heads=m.text_heads, max_len=m.max_text_len, dropout=m.text_dropout)
        unit = vq_cfg.num_frames // q.latent_length
        return T2MGPTConfig(transformer=t, text=text, code_dim=q.code_dim, codebook_size=q.codebook_size,
                            pool_heads=m.pool_heads, length_hidden=m.length_hidden,
                            length_classes=vq_cfg.num_frames // unit, unit=unit)

    def sampling(self, **overrides):
        from mmar.models.t2m_gpt import T2MSamplingConfig

        m = self.m
        kw = dict(guidance=float(m.guidance), top_p=float(m.top_p), temperature=float(m.temperature))
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return T2MSamplingConfig(**kw)

    # ------------------------------------------------------------------ training
    def init(self, rng, batch):
        from mmar.models.t2m_gpt import T2MGPT, shift_inputs
        from mmar.models.vqvae import TemporalVQVAE

        vq_cfg, vq_vars, vq_model_cfg = self.stage1()
        net_cfg = self.net_config(vq_cfg, self.tokenizer.vocab_size)
        codes = finest_tokens(TemporalVQVAE(vq_cfg), vq_vars, batch["motion"], batch["mask"])
        r1, r2 = jax.random.split(rng)
        variables = T2MGPT(net_cfg).init({"params": r1, "dropout": r2}, jnp.asarray(batch["text_ids"]),
                                         jnp.asarray(batch["text_mask"]), shift_inputs(codes, net_cfg.pad_id))
        assets = text_assets(self.tokenizer, self.dataset.mean, self.dataset.std, vq_model_cfg)
        return {"params": variables["params"], TOKENIZER: vq_vars,
                ASSETS: {k: jnp.asarray(v) for k, v in assets.items()}}

    def loss(self, params, extra_vars, batch, rng, step):
        import optax

        from mmar.models.moscale import length_bins
        from mmar.models.scale_ar import sample_cond_drop
        from mmar.models.t2m_gpt import T2MGPT, corrupt_codes, shift_inputs
        from mmar.models.vqvae import TemporalVQVAE

        vq_cfg = self.stage1()[0]
        net_cfg = self.net_config(vq_cfg, self.tokenizer.vocab_size)
        r_corrupt, r_drop, r_dropout = jax.random.split(rng, 3)
        codes = finest_tokens(TemporalVQVAE(vq_cfg), extra_vars[TOKENIZER], batch["motion"], batch["mask"])
        inp = corrupt_codes(r_corrupt, codes, net_cfg.codebook_size, float(self.m.pkeep))
        drop = sample_cond_drop(r_drop, codes.shape[0], self.m.cond_drop_prob)
        logits, len_logits = T2MGPT(net_cfg).apply(
            {"params": params}, jnp.asarray(batch["text_ids"]), jnp.asarray(batch["text_mask"]),
            shift_inputs(inp, net_cfg.pad_id), drop, True, rngs={"dropout": r_dropout})
        w = (codes >= 0).astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(codes, 0))
        per_motion = jnp.sum(ce * w, 1) / jnp.maximum(jnp.sum(w, 1), 1.0)
        token_loss = jnp.mean(per_motion)
        acc = jnp.sum((jnp.argmax(logits, -1) == codes) * w) / jnp.maximum(jnp.sum(w), 1.0)
        bins = length_bins(batch["length"], net_cfg.unit, net_cfg.length_classes)
        len_ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(len_logits, bins))
        loss = token_loss + self.m.length_weight * len_ce
        shifted = codes[:, :-1]  # the inputs that were corrupted (positions 1..T'-1)
        metrics = {"ce": token_loss, "acc": acc, "length_ce": len_ce,
                   "length_acc": jnp.mean(jnp.argmax(len_logits, -1) == bins),
                   "tokens": jnp.sum(w) / codes.shape[0],
                   "corrupted": jnp.sum((inp[:, :-1] != shifted) & (shifted >= 0)) / jnp.maximum(
                       jnp.sum(shifted >= 0), 1)}
        return loss, (metrics, None)

    # ------------------------------------------------------------------ validation
    def evaluate(self, params, extra_vars) -> dict[str, float]:
        """Teacher-forced validation loss; generation scored by the evaluator when configured."""
        vq_cfg = self.stage1()[0]
        net_cfg = self.net_config(vq_cfg, self.tokenizer.vocab_size)
        sums = np.zeros(3)
        for b in self._val_batches():
            s = _val_step(params, extra_vars[TOKENIZER], {k: v for k, v in b.items() if k != "valid"},
                          net_cfg=net_cfg, vq_cfg=vq_cfg)
            sums += np.asarray(jax.device_get(s), np.float64)
        out = {"val_ce": float(sums[0] / max(sums[2], 1)), "val_acc": float(sums[1] / max(sums[2], 1))}
        if self.d.evaluator_workdir:
            out.update(self._generation_metrics({"params": params, **extra_vars}))
        return out

    # ------------------------------------------------------------------ generation
    def _frozen(self, variables):
        out = super()._frozen(variables)
        if _shapes(variables["params"]) != _param_shapes(out[0]):
            raise CheckpointError(f"the variables' params are not those of a {self.cfg.task} model of this config "
                                  f"(a checkpoint of another task or size?)")
        return out

    @staticmethod
    def net_class():
        from mmar.models.t2m_gpt import T2MGPT

        return T2MGPT

    def generate(self, variables, texts: Sequence[str], lengths=None, *, seed: int = 0, steps=None, guidance=None,
                 top_p=None, temperature=None, batch_size: int = 32, use_cache: bool = True,
                 return_codes: bool = False) -> GeneratedMotions:
        """Motions for ``texts`` (one each) of ``lengths`` frames (None: the length head's
        choice); sampling settings default to ``cfg.model``'s; ``steps`` must be None or 1
        (one step per token). Batches of ``batch_size`` (the last one padded: one
        compilation). ``return_codes``: also the tokens ``(N, T')`` (-1 at padding)."""
        if steps is not None and tuple(np.atleast_1d(np.asarray(steps)).tolist()) != (1,):
            raise ConfigError(f"steps: a next-token model samples one token per step; only None or 1, got {steps!r}")
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise ConfigError("no text to generate from")
        net_cfg, vq_cfg, tok, mean, std = self._frozen(variables)
        ids, tmask = tok.encode(texts)  # raises on an empty text
        if lengths is None:
            lengths = self.predict_lengths(variables, texts, seed)
        lengths = check_lengths(lengths, len(texts), net_cfg.unit, self.min_frames, self.max_frames)
        sc = self.sampling(guidance=guidance, top_p=top_p, temperature=temperature, use_cache=use_cache)
        B = int(min(batch_size, len(texts)))
        feats, codes = [], []
        t0 = time.perf_counter()
        for s in range(0, len(texts), B):
            i, m, n = ids[s:s + B], tmask[s:s + B], lengths[s:s + B]
            k = len(i)
            if k < B:
                i, m, n = (np.concatenate([a, np.repeat(a[:1], B - k, 0)]) for a in (i, m, n))
            key = jax.random.fold_in(jax.random.PRNGKey(int(seed)), s // B)
            out = _generate(variables["params"], variables[TOKENIZER], jnp.asarray(i), jnp.asarray(m),
                            jnp.asarray(n), key, net_cfg=net_cfg, vq_cfg=vq_cfg, sc=sc)
            out = jax.device_get(out)
            feats.append(np.asarray(out["features"])[:k])
            codes.append(np.asarray(out["codes"])[:k])
        seconds = time.perf_counter() - t0
        x = np.concatenate(feats) * std + mean
        x = x * (np.arange(x.shape[1])[None, :, None] < lengths[:, None, None])
        g = GeneratedMotions(x.astype(np.float32), lengths, texts, self.fps, self.spec.kind, seconds)
        return (g, np.concatenate(codes)) if return_codes else g


# --------------------------------------------------------------------------
# jitted pieces (static configs; weights as arguments)
# --------------------------------------------------------------------------

def _shapes(tree) -> list:
    return sorted((jax.tree_util.keystr(p), tuple(np.shape(x))) for p, x in jax.tree_util.tree_leaves_with_path(tree))


@functools.lru_cache(maxsize=8)
def _param_shapes(net_cfg) -> list:
    from mmar.models.t2m_gpt import T2MGPT

    ids = jnp.zeros((1, net_cfg.text.max_len), jnp.int32)
    inputs = jnp.zeros((1, net_cfg.length - 1), jnp.int32)
    shapes = jax.eval_shape(lambda k: T2MGPT(net_cfg).init(k, ids, ids > 0, inputs), jax.random.PRNGKey(0))
    return _shapes(shapes["params"])


@functools.partial(jax.jit, static_argnames=("net_cfg", "vq_cfg"))
def _val_step(params, vq_vars, batch, *, net_cfg, vq_cfg):
    """Sums of the CE, of the correct predictions and the token count over valid positions."""
    import optax

    from mmar.models.t2m_gpt import T2MGPT, shift_inputs
    from mmar.models.vqvae import TemporalVQVAE

    codes = finest_tokens(TemporalVQVAE(vq_cfg), vq_vars, batch["motion"], batch["mask"])
    logits, _ = T2MGPT(net_cfg).apply({"params": params}, batch["text_ids"], batch["text_mask"],
                                      shift_inputs(codes, net_cfg.pad_id))
    w = (codes >= 0).astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(codes, 0))
    return jnp.stack([jnp.sum(ce * w), jnp.sum((jnp.argmax(logits, -1) == codes) * w), jnp.sum(w)])


@functools.partial(jax.jit, static_argnames=("net_cfg", "vq_cfg", "sc"))
def _generate(params, vq_vars, ids, mask, lengths, key, *, net_cfg, vq_cfg, sc):
    from mmar.models.t2m_gpt import T2MGPT, sample
    from mmar.models.vqvae import TemporalVQVAE

    return sample(T2MGPT(net_cfg), params, TemporalVQVAE(vq_cfg), vq_vars, ids, mask, lengths, key, sc)


# --------------------------------------------------------------------------
# the reconstruction floor of the two token sets
# --------------------------------------------------------------------------

def token_floor(vq_cfg, vq_vars, dataset, split: str = "val", batch: int = 32, joints_num: int = 22) -> dict:
    """What the frozen tokenizer reconstructs on every motion of ``split`` (the centred window of
    :func:`mmar.data.t2m.make_t2m_eval_iterator`) from its 4-scale tokens (MoScale's), from the
    single-scale finest tokens (:func:`finest_tokens`, this task's) and from the unquantised
    latent ``z`` (for reference only: the decoder was trained on quantised latents, so this is
    no strict floor): per set ``mpjpe_root_cm`` (pelvis subtracted per frame), ``mpjpe_cm`` (root
    trajectory integrated from the window's start), ``feat_l1`` (normalised features); and the
    codebook use / perplexity of the single-scale tokens."""
    from mmar.data.t2m import make_t2m_eval_iterator
    from mmar.tasks.moscale_vqvae import _perplexity

    vq_vars = {k: v for k, v in vq_vars.items() if k in ("params", "vq")}
    mean = jnp.asarray(dataset.mean, jnp.float32)
    std = jnp.asarray(dataset.std, jnp.float32)
    V = vq_cfg.quantizer.codebook_size
    sums = np.zeros((3, 4))
    counts = np.zeros(V)
    motions = 0
    for b in make_t2m_eval_iterator(dataset, split, batch, crop_len=vq_cfg.num_frames):
        valid = np.asarray(b["valid"])
        mask = np.asarray(b["mask"]) & valid[:, None]
        s, c = jax.device_get(_floor_batch(vq_vars, b["motion"], mask, mean, std, vq_cfg=vq_cfg,
                                           joints_num=joints_num))
        sums += np.asarray(s, np.float64)
        c = np.asarray(c)[valid].reshape(-1)
        counts += np.bincount(c[c >= 0], minlength=V)
        motions += int(valid.sum())
    out = {"split": split, "motions": motions, "frames": float(sums[0, 3]),
           "latent_steps": int(vq_cfg.quantizer.latent_length), "scales": list(vq_cfg.quantizer.lengths)}
    D = int(dataset.mean.shape[0])
    for name, r in zip(("multiscale", "finest", "latent"), sums):
        f = max(r[3], 1.0)
        out[name] = {"mpjpe_root_cm": float(r[1] / f * 100), "mpjpe_cm": float(r[0] / f * 100),
                     "feat_l1": float(r[2] / (f * D))}
    out["finest"]["usage"] = float((counts > 0).mean())
    out["finest"]["perplexity"] = _perplexity(counts)
    return out


@functools.partial(jax.jit, static_argnames=("vq_cfg", "joints_num"))
def _floor_batch(vq_vars, x, mask, mean, std, *, vq_cfg, joints_num):
    from mmar.data.hml_features import recover_from_ric
    from mmar.models.quantizers.temporal import _lookup
    from mmar.models.vqvae import TemporalVQVAE

    vq = TemporalVQVAE(vq_cfg)
    x = jnp.asarray(x, jnp.float32)
    w = jnp.asarray(mask, jnp.float32)
    codes = finest_tokens(vq, vq_vars, x, mask)
    gt = recover_from_ric(x * std + mean, joints_num)
    gt_rel = gt - gt[..., :1, :]
    latents = [
        vq.apply(vq_vars, x, mask, method=lambda m, x_, k_: m.quantizer.decode_codes(m.encode_codes(x_, k_))),
        vq.apply(vq_vars, codes, method=lambda m, c: _lookup(m.quantizer.codebook_vectors(), c)),
        vq.apply(vq_vars, x, mask, method=lambda m, x_, k_: m.encode(x_, k_)),
    ]
    rows = []
    for z in latents:
        y = vq.apply(vq_vars, z, mask, method=lambda m, z_, k_: m.decode_latent(z_, k_))
        pos = recover_from_ric(y * std + mean, joints_num)
        e_glob = jnp.linalg.norm(pos - gt, axis=-1).mean(-1)
        e_root = jnp.linalg.norm(pos - pos[..., :1, :] - gt_rel, axis=-1).mean(-1)
        rows.append(jnp.stack([jnp.sum(e_glob * w), jnp.sum(e_root * w), jnp.sum(jnp.abs(y - x) * w[..., None]),
                               jnp.sum(w)]))
    return jnp.stack(rows), codes


TASK = T2MGPTTask

"""ScaleMoGen's text-to-motion predictor (stage 2) as a task: :mod:`mmar.models.scalemogen`
trained on the bit pyramids of a frozen ``scalemogen_vqvae`` run (stage 1).

::

    mmar train configs/scalemogen_vqvae_small.py --workdir runs/scalemogen_vq        # stage 1
    mmar train configs/t2m_evaluator.py --workdir runs/t2m_eval                      # the metric
    mmar train configs/scalemogen_small.py --workdir runs/scalemogen \\
        --set model.tokenizer_workdir=runs/scalemogen_vq --set data.evaluator_workdir=runs/t2m_eval
    mmar generate --checkpoint runs/scalemogen --text "a person walks happily" --out m.npz --gif m.gif
    mmar edit --checkpoint runs/scalemogen --source walk.bvh --text "a person waves" \\
        --keep-joints lower --out edited.npz --gif edited.gif

Training step (:meth:`ScaleMoGenTask.loss`): the frozen tokenizer encodes the batch's windows
and, with ``model.flip_max > 0``, runs its bit correction
(:meth:`~mmar.models.quantizers.skeletal.SkeletalQuantizer.corrupt_and_requantize`: per scale a
flip rate ``~ U{0, 0.01, ..., flip_max}`` for the batch, flipped bits feed the next-scale inputs
and the residual, later labels are re-quantised); the loss is the per-bit cross-entropy
weighted ``1 / sqrt(N_k)`` (:func:`mmar.models.scalemogen.bit_loss`) plus ``model.length_weight``
times the length head's cross-entropy. Captions are dropped (learned rows) with probability
``model.cond_drop_prob`` for classifier-free guidance.

Validation, checkpoint contents (``params``; the frozen tokenizer as collection ``tokenizer``;
``assets``: caption tokenizer, mean / std, the tokenizer run's model config) and the generation
protocol are :class:`~mmar.tasks.moscale.MoScaleTask`'s; ``val_ce`` / ``val_bit_acc`` are the
teacher-forced loss and bit accuracy on clean bits.

Editing (:meth:`ScaleMoGenTask.edit`): the source is tokenized by the frozen tokenizer and
regenerated with a new text under :func:`mmar.models.scalemogen.edit_bits`'s rule (see
:mod:`mmar.edit`).

A smoother decoder (:meth:`~mmar.tasks.moscale.MoScaleTask.with_decoder`, ``mmar edit/generate
--decoder RUN``): the decoder-side params (:attr:`ScaleMoGenTask.decoder_params`: ``project_out``,
``decoder``, ``joint_out``) of a tokenizer run fine-tuned with its encoder frozen
(``configs/scalemogen_vqvae_smooth.py``) replace the checkpoint's; the codes, and so this
predictor, stay valid.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import CheckpointError, ConfigError, ShapeError
from mmar.models.generated import EditResult, GeneratedMotions
from mmar.tasks.base import frozen_config
from mmar.tasks.moscale import ASSETS, TOKENIZER, MoScaleGenDataConfig, MoScaleTask, _check_remat, text_assets

__all__ = ["ScaleMoGenModelConfig", "ScaleMoGenTask", "TASK"]


@dataclasses.dataclass
class ScaleMoGenModelConfig:
    """``cfg.model`` of the ``scalemogen`` task. Defaults: the official ``scalemogen_layer12``
    (notes section 3) with this package's text encoder in place of frozen Flan-T5-XL."""

    tokenizer_workdir: str = ""  # the scalemogen_vqvae run (required for training)
    # -- transformer
    width: int = 768
    depth: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0
    mlp_round: int = 256
    dropout: float = 0.0
    attn_dropout: float = 0.0
    drop_path: float = 0.1
    attn_scale: str = "cosine"
    cosine_sqrt_d: bool = True
    positions: str = "rope_2d_scale_normalized"
    rope_freq_repeat: int = 1
    rope_base: float = 1e4
    rope_time_extent: int | None = None
    rope_group_extent: int | None = None
    level_embedding: bool = True
    num_levels: int | None = 15
    pos_start: bool = True
    shared_adaln: bool = True
    head_adaln: bool = True
    cond_dim: int | None = None  # the pooled text / AdaLN width; None = width
    memory_dim: int = 768
    pool_heads: int = 16
    cond_drop_prob: float = 0.1
    norm_eps: float = 1e-6
    init_std: float | None = None  # None: sqrt(1 / (9 width)), ScaleMoGen's choice
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
    # -- training (notes section 3)
    flip_max: float = 0.30  # bit-correction flip rate ~ U{0, 0.01, ..., flip_max}; 0 = off
    area_weighting: bool = True  # tokens of scale k weighted 1 / sqrt(N_k)
    # -- length estimator
    length_hidden: int = 256
    length_weight: float = 0.1
    # -- sampling defaults
    guidance: float = 7.0
    temperature: float = 1.3
    # -- editing defaults (AREdit rule)
    edit_gamma: int = 3
    edit_tau: float = 0.1

    def __post_init__(self):
        if not 0.0 <= float(self.flip_max) <= 0.5:
            raise ConfigError(f"model.flip_max must lie in [0, 0.5], got {self.flip_max}")
        if float(self.temperature) <= 0:
            raise ConfigError(f"model.temperature must be > 0, got {self.temperature}")
        _check_remat(self.remat)


class ScaleMoGenTask(MoScaleTask):
    """ScaleMoGen's predictor; see the module docstring. Data, caption tokenizer, validation
    generation and the checkpoint layout are :class:`~mmar.tasks.moscale.MoScaleTask`'s."""

    ModelConfig = ScaleMoGenModelConfig
    DataConfig = MoScaleGenDataConfig
    stage1_task = "scalemogen_vqvae"
    edit_groups: ClassVar[int] = 7  # body groups of the latent grid (mmar.edit.edit_grid)
    decoder_params: ClassVar[tuple[str, ...]] = ("project_out", "decoder", "joint_out")

    def net_config(self, vq_cfg, vocab_size: int):
        from mmar.models.scale_ar import ScaleARConfig
        from mmar.models.scalemogen import ScaleMoGenConfig, schedule_of
        from mmar.models.text import TextEncoderConfig

        m = self.m
        q = vq_cfg.quantizer
        init_std = m.init_std if m.init_std is not None else math.sqrt(1.0 / m.width / 9.0)
        t = frozen_config(ScaleARConfig, m, schedule=schedule_of(q), input_dim=None, cross_attention=True,
                          null_cond=False, head="bitwise", vocab_size=1024, num_bits=q.code_dim, init_std=init_std)
        text = TextEncoderConfig(vocab_size=int(vocab_size), width=m.text_width, depth=m.text_depth,
                                 heads=m.text_heads, max_len=m.max_text_len, dropout=m.text_dropout)
        unit = vq_cfg.num_frames // q.num_steps
        return ScaleMoGenConfig(transformer=t, text=text, quantizer=q, pool_heads=m.pool_heads,
                                length_hidden=m.length_hidden, length_classes=vq_cfg.num_frames // unit, unit=unit)

    def sampling(self, **overrides):
        from mmar.models.scalemogen import SamplingConfig

        kw = dict(guidance=float(self.m.guidance), temperature=float(self.m.temperature))
        kw.update({k: float(v) for k, v in overrides.items() if v is not None and k in kw})
        return SamplingConfig(**kw)

    # ------------------------------------------------------------------ training
    def init(self, rng, batch):
        from mmar.models.scalemogen import ScaleMoGen

        vq_cfg, vq_vars, vq_model_cfg = self.stage1()
        net = ScaleMoGen(self.net_config(vq_cfg, self.tokenizer.vocab_size))
        tgt = _targets(vq_vars, batch["motion"], batch["mask"], None, vq_cfg=vq_cfg, flip_max=0.0)
        r1, r2 = jax.random.split(rng)
        variables = net.init({"params": r1, "dropout": r2}, jnp.asarray(batch["text_ids"]),
                             jnp.asarray(batch["text_mask"]), tgt["inputs"], tgt["key_mask"])
        assets = text_assets(self.tokenizer, self.dataset.mean, self.dataset.std, vq_model_cfg)
        return {"params": variables["params"], TOKENIZER: vq_vars,
                ASSETS: {k: jnp.asarray(v) for k, v in assets.items()}}

    def loss(self, params, extra_vars, batch, rng, step):
        import optax

        from mmar.models.moscale import length_bins
        from mmar.models.scale_ar import sample_cond_drop
        from mmar.models.scalemogen import ScaleMoGen, bit_loss

        vq_cfg = self.stage1()[0]
        net_cfg = self.net_config(vq_cfg, self.tokenizer.vocab_size)
        r_flip, r_drop, r_dropout = jax.random.split(rng, 3)
        tgt = _targets(extra_vars[TOKENIZER], batch["motion"], batch["mask"], r_flip, vq_cfg=vq_cfg,
                       flip_max=float(self.m.flip_max))
        drop = sample_cond_drop(r_drop, tgt["bits"].shape[0], self.m.cond_drop_prob)
        logits, len_logits = ScaleMoGen(net_cfg).apply(
            {"params": params}, jnp.asarray(batch["text_ids"]), jnp.asarray(batch["text_mask"]), tgt["inputs"],
            tgt["key_mask"], drop, True, rngs={"dropout": r_dropout})
        token_loss, metrics = bit_loss(logits, tgt["bits"], tgt["key_mask"], net_cfg.transformer.schedule,
                                       bool(self.m.area_weighting))
        bins = length_bins(batch["length"], net_cfg.unit, net_cfg.length_classes)
        len_ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(len_logits, bins))
        metrics.update({"ce": token_loss, "length_ce": len_ce,
                        "length_acc": jnp.mean(jnp.argmax(len_logits, -1) == bins),
                        "flipped": tgt["flipped"]})
        return token_loss + self.m.length_weight * len_ce, (metrics, None)

    # ------------------------------------------------------------------ validation
    def evaluate(self, params, extra_vars) -> dict[str, float]:
        """Teacher-forced loss and bit accuracy on clean bits; generation scored by the
        evaluator when configured."""
        vq_cfg = self.stage1()[0]
        net_cfg = self.net_config(vq_cfg, self.tokenizer.vocab_size)
        sums = np.zeros(3)
        for b in self._val_batches():
            s = _val_step(params, extra_vars[TOKENIZER], {k: v for k, v in b.items() if k != "valid"},
                          net_cfg=net_cfg, vq_cfg=vq_cfg, area_weighting=bool(self.m.area_weighting))
            sums += np.asarray(jax.device_get(s), np.float64)
        out = {"val_ce": float(sums[0] / max(sums[2], 1)), "val_bit_acc": float(sums[1] / max(sums[2], 1))}
        if self.d.evaluator_workdir:
            out.update(self._generation_metrics({"params": params, **extra_vars}))
        return out

    # ------------------------------------------------------------------ generation
    def _frozen(self, variables):
        """``(net_cfg, vq_cfg, caption tokenizer, mean, std)`` of saved variables."""
        from mmar.tasks.moscale import _unbytes, tokenizer_from_assets
        from mmar.tasks.scalemogen_vqvae import ScaleMoGenVQVAEModelConfig, vqvae_config

        for col in (TOKENIZER, ASSETS, "params"):
            if col not in variables:
                raise CheckpointError(f"the variables have no {col!r} collection: not a {self.cfg.task} checkpoint")
        a = variables[ASSETS]
        tok = tokenizer_from_assets(a)
        mean, std = np.asarray(a["mean"], np.float32), np.asarray(a["std"], np.float32)
        raw = _unbytes(a["vq_model"])
        names = {f.name for f in dataclasses.fields(ScaleMoGenVQVAEModelConfig)}
        if "time_factors" not in raw:
            raise CheckpointError("the checkpoint's tokenizer is not a scalemogen_vqvae model")
        vq_cfg = vqvae_config(ScaleMoGenVQVAEModelConfig(**{k: v for k, v in raw.items() if k in names}))
        net_cfg = self.net_config(vq_cfg, tok.vocab_size)
        if "word_embed" not in variables["params"]:
            raise CheckpointError(f"the variables' params are not those of a {self.cfg.task} model")
        return net_cfg, vq_cfg, tok, mean, std

    @staticmethod
    def net_class():
        from mmar.models.scalemogen import ScaleMoGen

        return ScaleMoGen

    def generate(self, variables, texts: Sequence[str], lengths=None, *, seed: int = 0, steps=None, guidance=None,
                 top_p=None, temperature=None, batch_size: int = 32, use_cache: bool = True) -> GeneratedMotions:
        """Motions for ``texts`` (one each) of ``lengths`` frames (None: the length head's
        choice). ``guidance`` / ``temperature`` default to ``cfg.model``'s (7 and 1.3); one
        pass per scale, so ``steps`` must be None or 1; ``top_p`` must be None or 0 (the
        official sampler draws every bit from its full distribution). Batches of
        ``batch_size`` (the last one padded: one compilation)."""
        if steps is not None and tuple(np.atleast_1d(np.asarray(steps)).tolist()) != (1,):
            raise ConfigError(f"steps: ScaleMoGen samples each scale in one pass; only None or 1, got {steps!r}")
        if top_p not in (None, 0, 0.0):
            raise ConfigError(f"top_p: ScaleMoGen draws each bit from its own two-way distribution; got {top_p!r}")
        if not use_cache:
            raise ConfigError("ScaleMoGen always decodes with the KV cache (one pass per scale)")
        sc = self.sampling(guidance=guidance, temperature=temperature)

        def sample(net_cfg, vq_cfg, ids, mask, lengths, key):
            return _generate(variables["params"], variables[TOKENIZER], ids, mask, lengths, key, net_cfg=net_cfg,
                             vq_cfg=vq_cfg, sc=sc)["features"]

        return self.generate_in_batches(variables, texts, lengths, seed, batch_size, sample)

    # ------------------------------------------------------------------ editing
    def edit(self, variables, features: np.ndarray, length: int, text: str, editable_grid: np.ndarray, *,
             semantic: bool = False, source_text: str | None = None, num: int = 1, seed: int = 0,
             guidance: float | None = None, temperature: float | None = None, gamma: int | None = None,
             tau: float | None = None) -> EditResult:
        """Zero-shot editing of one source motion.

        ``features (T, F)`` un-normalised HumanML3D features of ``length`` frames (``T >=
        length``); ``editable_grid (num_steps, num_groups)`` bool: the latent cells the edit may
        regenerate (:func:`mmar.edit.edit_grid`); a token of any scale is regenerated only
        when every cell it reads is editable. ``semantic``: nothing is hard-kept; scales ``<
        gamma`` copy the source, later bits are resampled where the new text lowers the source
        bit's probability by more than ``tau`` (the source's probability comes from
        ``source_text``, or the unconditional model when None). ``num`` edits with different
        seeds. Returns an :class:`EditResult`."""
        from mmar.edit import skeletal_token_masks
        from mmar.models.scalemogen import EditInputs

        net_cfg, vq_cfg, tok, mean, std = self._frozen(variables)
        q = vq_cfg.quantizer
        x, fmask, length = self.edit_source(features, length, net_cfg, vq_cfg, mean, std)
        grid = np.asarray(editable_grid, bool)
        if grid.shape != (q.num_steps, q.num_groups):
            raise ShapeError(f"editable_grid must be ({q.num_steps}, {q.num_groups}), got {grid.shape}")
        editable = [np.asarray(m, bool) for m in skeletal_token_masks(q, grid, -(-length // net_cfg.unit))]
        if not semantic and not any(m.any() for m in editable):
            raise ConfigError("the edit region covers no whole token of any scale: widen the frames or joints to "
                              "regenerate")
        num = int(num)
        if num < 1:
            raise ConfigError(f"num must be >= 1, got {num}")
        sc = self.sampling(guidance=guidance, temperature=temperature)
        ids, tmask = tok.encode([text])
        src_text = source_text if source_text else text
        sids, smask = tok.encode([src_text])
        t0 = time.perf_counter()
        src = _encode_source(variables[TOKENIZER], jnp.asarray(x), jnp.asarray(fmask), vq_cfg=vq_cfg)
        p_src = _source_probs(variables["params"], jnp.asarray(sids), jnp.asarray(smask), src["bits"],
                              jnp.asarray([length]), jnp.asarray([bool(source_text)]), net_cfg=net_cfg, sc=sc)
        rep = lambda a: jnp.repeat(jnp.asarray(a), num, axis=0)  # noqa: E731
        ed = EditInputs(bits=[rep(b) for b in src["bits"]], editable=[rep(m[None]) for m in editable],
                        p_src=[rep(p) for p in p_src],
                        gamma=int(self.m.edit_gamma if gamma is None else gamma),
                        tau=float(self.m.edit_tau if tau is None else tau), soft=bool(semantic))
        out = _edit(variables["params"], variables[TOKENIZER], rep(ids), rep(tmask), jnp.full((num,), length),
                    jax.random.PRNGKey(int(seed)), ed, net_cfg=net_cfg, vq_cfg=vq_cfg, sc=sc)
        return self.edit_result(jax.device_get(out), jax.device_get(src), "bits", length, text, mean, std, editable,
                                time.perf_counter() - t0)


# --------------------------------------------------------------------------
# jitted pieces (static configs; weights as arguments: compiled once per shape)
# --------------------------------------------------------------------------

def _targets(vq_vars, motion, mask, rng, *, vq_cfg, flip_max: float) -> dict:
    """Next-scale inputs, target bits ``(B, N, C)`` and valid tokens ``(B, N)`` of a batch;
    with ``rng`` and ``flip_max > 0`` the inputs come from the bit-flip correction pass."""
    from mmar.models.vqvae import SkeletalVQVAE

    vq = SkeletalVQVAE(vq_cfg)
    x, mk = jnp.asarray(motion, jnp.float32), jnp.asarray(mask, bool)

    def run(m, x_, mk_, r):
        z = m.encode(x_, mk_)
        lat = m._latent_mask(mk_, x_.shape[0])
        if r is None or flip_max <= 0:
            codes = m.quantizer.encode_codes(z, lat)
            return {"input_bits": codes, "target_bits": codes,
                    "inputs": m.quantizer.teacher_forcing_inputs(codes, lat),
                    "token_masks": [mm for mm in _masks(m.quantizer.config, lat)]}
        return m.quantizer.corrupt_and_requantize(z, r, flip_max, lat)

    out = vq.apply(vq_vars, x, mk, rng, method=run)
    flipped = sum(jnp.sum((a != b) & tm[..., None]) for a, b, tm in
                  zip(out["input_bits"], out["target_bits"], out["token_masks"]))
    n_bits = sum(jnp.sum(tm) for tm in out["token_masks"]) * vq_cfg.quantizer.code_dim
    return {"inputs": out["inputs"], "bits": jnp.concatenate(out["target_bits"], 1),
            "key_mask": jnp.concatenate(out["token_masks"], 1), "flipped": flipped / jnp.maximum(n_bits, 1)}


def _masks(q, lat_mask):
    from mmar.models.scalemogen import token_masks

    return token_masks(q, jnp.sum(lat_mask.astype(jnp.int32), axis=1))


@functools.partial(jax.jit, static_argnames=("net_cfg", "vq_cfg", "area_weighting"))
def _val_step(params, vq_vars, batch, *, net_cfg, vq_cfg, area_weighting):
    """Sums of the weighted CE per motion, of bit accuracy x valid tokens, and the counts."""
    from mmar.models.scalemogen import ScaleMoGen, bit_loss

    tgt = _targets(vq_vars, batch["motion"], batch["mask"], None, vq_cfg=vq_cfg, flip_max=0.0)
    logits, _ = ScaleMoGen(net_cfg).apply({"params": params}, batch["text_ids"], batch["text_mask"], tgt["inputs"],
                                          tgt["key_mask"])
    valid_rows = jnp.any(tgt["key_mask"], axis=1).astype(jnp.float32)
    loss, metrics = bit_loss(logits, tgt["bits"], tgt["key_mask"], net_cfg.transformer.schedule, area_weighting)
    B = valid_rows.shape[0]
    return jnp.stack([loss * B, metrics["bit_acc"] * B, jnp.asarray(B, jnp.float32)])


@functools.partial(jax.jit, static_argnames=("net_cfg", "vq_cfg", "sc"))
def _generate(params, vq_vars, ids, mask, lengths, key, *, net_cfg, vq_cfg, sc):
    from mmar.models.scalemogen import ScaleMoGen, sample
    from mmar.models.vqvae import SkeletalVQVAE

    return sample(ScaleMoGen(net_cfg), params, SkeletalVQVAE(vq_cfg), vq_vars, ids, mask, lengths, key, sc)


@functools.partial(jax.jit, static_argnames=("net_cfg", "vq_cfg", "sc"))
def _edit(params, vq_vars, ids, mask, lengths, key, edit, *, net_cfg, vq_cfg, sc):
    from mmar.models.scalemogen import ScaleMoGen, sample
    from mmar.models.vqvae import SkeletalVQVAE

    return sample(ScaleMoGen(net_cfg), params, SkeletalVQVAE(vq_cfg), vq_vars, ids, mask, lengths, key, sc,
                  edit=edit)


@functools.partial(jax.jit, static_argnames=("vq_cfg",))
def _encode_source(vq_vars, x, fmask, *, vq_cfg):
    from mmar.models.vqvae import SkeletalVQVAE

    def f(m, x_, mk):
        lat = m._latent_mask(mk, x_.shape[0])
        codes = m.quantizer.encode_codes(m.encode(x_, mk), lat)
        return {"bits": codes, "features": m.decode_codes(codes, mk) * mk[..., None]}

    return SkeletalVQVAE(vq_cfg).apply(vq_vars, x, fmask, method=f)


@functools.partial(jax.jit, static_argnames=("net_cfg", "sc"))
def _source_probs(params, ids, mask, bits, lengths, conditional, *, net_cfg, sc):
    from mmar.models.scalemogen import ScaleMoGen, source_bit_probs

    return source_bit_probs(ScaleMoGen(net_cfg), params, ids, mask, bits, lengths, sc, conditional)


TASK = ScaleMoGenTask

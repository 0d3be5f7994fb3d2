"""MoScale's text-to-motion predictor (stage 2) as a task: :mod:`mmar.models.moscale` trained on
the token pyramids of a frozen ``moscale_vqvae`` run (stage 1).

::

    mmar train configs/moscale_vqvae_small.py --workdir runs/moscale_vq          # stage 1
    mmar train configs/t2m_evaluator.py --workdir runs/t2m_eval                  # the metric
    mmar train configs/moscale_small.py --workdir runs/moscale \\
        --set model.tokenizer_workdir=runs/moscale_vq --set data.evaluator_workdir=runs/t2m_eval
    mmar generate --checkpoint runs/moscale --text "a person walks happily" --out m.npz --gif m.gif

Training step (:meth:`MoScaleTask.loss`): the frozen tokenizer encodes the batch's windows; with
``model.gamma_max > 0`` its quantiser corrupts every scale's codes at a rate ``gamma_k ~ U[0,
gamma_max]`` drawn per batch and scale and re-quantises the finer scales' labels from the
corrupted residual (:meth:`~mmar.models.quantizers.temporal.TemporalQuantizer.corrupt_and_requantize`);
the token channel is the (corrupted) codes with MaskGIT masking over all scales
(:func:`mmar.models.moscale.maskgit_tokens`); the loss is the cross-entropy of the labels at the
masked positions plus ``model.length_weight`` times the length head's cross-entropy (the window
length in units of 4 frames). The caption is dropped (learned rows) with probability
``model.cond_drop_prob`` for classifier-free guidance.

Validation (:meth:`evaluate`, on ``data.eval_split``, never the test split): the teacher-forced
cross-entropy and accuracy at a fixed set of masks (``val_ce``, ``val_acc``), and, when
``data.evaluator_workdir`` names a trained ``t2m_evaluator`` run, one pass of generation for the
split's captions at their lengths scored by it (``fid``, ``rprec_top1``, ``rprec_top3``,
``mm_dist``, ``diversity``; :func:`mmar.eval.t2m_protocol.generated_row`), so the best
checkpoint is chosen by validation FID.

What a checkpoint holds: the predictor's ``params``; the frozen tokenizer's variables
(collection ``tokenizer``); and ``assets``: the caption tokenizer (JSON bytes), the feature mean
and std, and the tokenizer run's model config (JSON bytes), so a checkpoint alone generates
(:meth:`generate`): the tokenizer run is read only when training starts.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from typing import Any, ClassVar, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmar.errors import CheckpointError, ConfigError, ShapeError
from mmar.models.generated import EditResult, GeneratedMotions
from mmar.tasks.base import TaskBase, frozen_config
from mmar.tasks.moscale_vqvae import MoScaleDataConfig, MoScaleVQVAEModelConfig, vqvae_config

__all__ = ["MoScaleModelConfig", "MoScaleGenDataConfig", "MoScaleTask", "TASK", "TokenizedBatches",
           "text_assets", "tokenizer_from_assets", "vq_config_from_assets", "check_lengths", "TOKENIZER", "ASSETS"]

TOKENIZER = "tokenizer"  # extra collection: the frozen stage-1 variables
ASSETS = "assets"  # extra collection: caption tokenizer, mean / std, stage-1 model config


def _check_remat(remat: str) -> None:
    """A clear error for an unknown ``model.remat`` (flax is imported only for a non-default value)."""
    if remat != "none":
        from mmar.models.scale_ar import REMAT_POLICIES

        if remat not in REMAT_POLICIES:
            raise ConfigError(f"model.remat must be one of {REMAT_POLICIES}, got {remat!r}")


@dataclasses.dataclass
class MoScaleModelConfig:
    """``cfg.model`` of the ``moscale`` task. Defaults: the official transformer
    (``config/train_moscale.yaml``; notes section 2) with this package's text encoder."""

    tokenizer_workdir: str = ""  # the moscale_vqvae run (required for training)
    # -- transformer
    width: int = 768
    depth: int = 16
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    attn_dropout: float = 0.0
    drop_path: float = 0.1 * 16 / 24
    attn_scale: str = "var"
    positions: str = "rope_1d_scale_normalized"
    rope_freq_repeat: int = 2
    cond_dim: int = 384
    memory_dim: int = 384
    pool_heads: int = 3
    cond_drop_prob: float = 0.1
    mlp_round: int = 1
    cosine_sqrt_d: bool = False
    rope_base: float = 1e4
    rope_time_extent: int | None = None
    rope_group_extent: int | None = None
    level_embedding: bool = True
    num_levels: int | None = None
    pos_start: bool = True
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
    max_text_len: int = 22  # tokens with [CLS] / [EOS]: 20 words
    min_word_count: int = 1
    # -- training corruption (notes section 2)
    gamma_max: float = 0.6  # cross-scale corruption rate ~ U[0, gamma_max]; 0 = off
    mask_random_frac: float = 0.1
    mask_keep_frac: float = 0.1
    visible_noise_max: float = 0.1
    # -- length estimator
    length_hidden: int = 256
    length_weight: float = 0.1
    # -- sampling defaults
    steps: tuple[int, ...] = (1, 2, 5, 10)
    guidance: float = 5.0
    guidance_step: float = 0.25
    top_p: float = 0.9
    temperature: float = 1.0

    def __post_init__(self):
        if not 0.0 <= float(self.gamma_max) < 1.0:
            raise ConfigError(f"model.gamma_max must lie in [0, 1), got {self.gamma_max}")
        if any(int(s) < 1 for s in self.steps):
            raise ConfigError(f"model.steps must be >= 1 per scale, got {self.steps}")
        _check_remat(self.remat)


@dataclasses.dataclass
class MoScaleGenDataConfig(MoScaleDataConfig):
    """Captioned motion data (as the tokenizer's) and the validation protocol."""

    evaluator_workdir: str = ""  # a t2m_evaluator run: validation FID / R-precision when set
    eval_seed: int = 0
    val_masks: int = 4  # fixed mask draws for the teacher-forced validation loss


# --------------------------------------------------------------------------
# data and assets
# --------------------------------------------------------------------------

class TokenizedBatches:
    """A T2M training iterator with captions tokenized on the host: ``motion``, ``mask``,
    ``length``, ``text_ids``, ``text_mask`` (arrays only); its position is the wrapped one's."""

    def __init__(self, it, tokenizer):
        self._it, self._tok = it, tokenizer

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        b = next(self._it)
        ids, mask = self._tok.encode(b["text"])
        return {"motion": np.asarray(b["motion"]), "mask": np.asarray(b["mask"]),
                "length": np.asarray(b["length"], np.int32), "text_ids": ids, "text_mask": mask}

    def get_state(self):
        return self._it.get_state()

    def set_state(self, state) -> None:
        self._it.set_state(state)


def _bytes(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8"), np.uint8).copy()


def _unbytes(a) -> Any:
    return json.loads(np.asarray(a, np.uint8).tobytes().decode("utf-8"))


def text_assets(tokenizer, mean, std, vq_model_cfg) -> dict[str, np.ndarray]:
    """The ``assets`` collection: caption tokenizer and stage-1 model config as JSON bytes, mean, std."""
    return {"text_tokenizer": _bytes(tokenizer.to_json()), "mean": np.asarray(mean, np.float32),
            "std": np.asarray(std, np.float32), "vq_model": _bytes(dataclasses.asdict(vq_model_cfg))}


def tokenizer_from_assets(assets):
    from mmar.models.text import Tokenizer

    return Tokenizer.from_json(_unbytes(assets["text_tokenizer"]))


def vq_config_from_assets(assets, feature_dim: int):
    """The frozen tokenizer config saved with a stage-2 checkpoint."""
    raw = _unbytes(assets["vq_model"])
    names = {f.name for f in dataclasses.fields(MoScaleVQVAEModelConfig)}
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in names}
    return vqvae_config(MoScaleVQVAEModelConfig(**kw), feature_dim)


def check_lengths(lengths, batch: int, unit: int, lo: int, hi: int) -> np.ndarray:
    """Frame lengths ``(batch,)`` as int32 multiples of ``unit`` within ``[lo, hi]``; a clear
    error for anything else (NaN, negative, too long, wrong count)."""
    a = np.asarray(lengths, np.float64).reshape(-1)
    if a.shape != (batch,):
        raise ShapeError(f"{batch} lengths expected (one per text), got {a.shape[0]}")
    if not np.all(np.isfinite(a)):
        raise ConfigError(f"motion lengths must be finite numbers of frames, got {a.tolist()[:5]}")
    bad = (a < lo) | (a > hi)
    if bad.any():
        raise ConfigError(f"motion lengths must lie in [{lo}, {hi}] frames, got {a[bad].tolist()[:5]}")
    return (a.astype(np.int64) // unit * unit).astype(np.int32)


# --------------------------------------------------------------------------
# the task
# --------------------------------------------------------------------------

class MoScaleTask(TaskBase):
    """MoScale's predictor; see the module docstring. ``benchmark`` / ``dataset``: a preloaded
    :class:`~mmar.data.t2m.T2MDataset` (tests)."""

    ModelConfig: ClassVar[type] = MoScaleModelConfig
    DataConfig: ClassVar[type] = MoScaleGenDataConfig
    is_text_to_motion: ClassVar[bool] = True
    min_frames: ClassVar[int] = 40
    max_frames: ClassVar[int] = 196
    stage1_task: ClassVar[str] = "moscale_vqvae"  # the task of model.tokenizer_workdir
    edit_groups: ClassVar[int | None] = 1  # the latent grid has one group: temporal and semantic edits only
    decoder_params: ClassVar[tuple[str, ...]] = ("decoder",)  # tokenizer params that only decoding uses

    def __init__(self, cfg, benchmark=None, dataset=None):
        super().__init__(cfg)
        from mmar.data import hml_features as hf
        from mmar.data.t2m import SOURCES

        if self.d.source not in SOURCES:
            raise ConfigError(f"data.source must be one of {SOURCES}, got {self.d.source!r}")
        _check_remat(self.m.remat)  # --set overrides skip the config's __post_init__
        if self.d.eval_split == "test":
            raise ConfigError("data.eval_split='test': checkpoints are selected on the validation split, never on "
                              "the test split")
        gen_metrics = ("fid", "rprec_top1", "rprec_top3", "mm_dist", "diversity")
        if cfg.train.best_metric in gen_metrics and not self.d.evaluator_workdir:
            raise ConfigError(f"train.best_metric={cfg.train.best_metric!r} needs data.evaluator_workdir (a trained "
                              "t2m_evaluator run); or set train.best_metric=val_ce")
        self._dataset = dataset if dataset is not None else benchmark
        self.spec = hf.get_spec("kit" if self.d.source == "kit" else "humanml3d")
        self.fps = float(self.d.fps or (12.5 if self.d.source == "kit" else 20.0))
        self._stage1 = None
        self._tokenizer = None
        self._val = None
        self._evaluator = None

    # ------------------------------------------------------------------ stage 1
    def stage1(self):
        """``(vq model config, vq variables, stage-1 model config)`` of ``model.tokenizer_workdir``."""
        if self._stage1 is None:
            from mmar.run import load

            if not self.m.tokenizer_workdir:
                raise ConfigError(f"model.tokenizer_workdir is empty: name the {self.stage1_task} run to train on")
            run = load(self.m.tokenizer_workdir)
            if run.config.task not in (self.stage1_task, f"mmar.tasks.{self.stage1_task}"):
                raise CheckpointError(f"{self.m.tokenizer_workdir}: model.tokenizer_workdir must be a "
                                      f"{self.stage1_task} run, this is a {run.config.task} run")
            if run.config.data.source != self.d.source:
                raise ConfigError(f"the tokenizer was trained on {run.config.data.source!r} data, this config "
                                  f"reads {self.d.source!r}")
            vq_vars = {k: v for k, v in run.variables.items() if k in ("params", "vq")}
            self._stage1 = (run.task.vq_cfg, vq_vars, run.config.model)
        return self._stage1

    def net_config(self, vq_cfg, vocab_size: int):
        from mmar.models.moscale import MoScaleConfig
        from mmar.models.scale_ar import ScaleARConfig, ScaleSchedule
        from mmar.models.text import TextEncoderConfig

        m = self.m
        q = vq_cfg.quantizer
        t = frozen_config(ScaleARConfig, m, schedule=ScaleSchedule.from_lengths(q.lengths), input_dim=m.width,
                          cross_attention=True, null_cond=False, head="categorical", vocab_size=q.codebook_size,
                          num_bits=24)
        text = TextEncoderConfig(vocab_size=int(vocab_size), width=m.text_width, depth=m.text_depth,
                                 heads=m.text_heads, max_len=m.max_text_len, dropout=m.text_dropout)
        unit = vq_cfg.num_frames // q.latent_length
        return MoScaleConfig(transformer=t, text=text, code_dim=q.code_dim, codebook_size=q.codebook_size,
                             pool_heads=m.pool_heads, length_hidden=m.length_hidden,
                             length_classes=vq_cfg.num_frames // unit, unit=unit)

    def sampling(self, **overrides):
        from mmar.models.moscale import SamplingConfig

        m = self.m
        kw = dict(steps=tuple(int(s) for s in m.steps), guidance=float(m.guidance),
                  guidance_step=float(m.guidance_step), top_p=float(m.top_p), temperature=float(m.temperature))
        kw.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(kw["steps"], (int, np.integer)):
            kw["steps"] = (int(kw["steps"]),) * len(m.steps)
        kw["steps"] = tuple(int(s) for s in kw["steps"])
        return SamplingConfig(**kw)

    # ------------------------------------------------------------------ data
    @property
    def dataset(self):
        if self._dataset is None:
            from mmar.data.t2m import load_t2m

            d = self.d
            splits = tuple(dict.fromkeys(("train", d.eval_split)))
            kw = dict(max_clips=d.max_clips, workers=d.workers) if d.source == "bandai" else {}
            self._dataset = load_t2m(d.source, root=d.root, fps=d.fps, min_len=d.min_len, max_len=self.max_frames,
                                     splits=splits, stats=d.stats, **kw)
        return self._dataset

    @property
    def tokenizer(self):
        """The caption tokenizer, built from the training captions."""
        if self._tokenizer is None:
            from mmar.models.text import Tokenizer

            caps = [c for mo in self.dataset["train"] for c in mo.captions]
            self._tokenizer = Tokenizer.build(caps, min_count=self.m.min_word_count, max_len=self.m.max_text_len)
        return self._tokenizer

    def train_iterator(self, seed: int, start_state=None):
        from mmar.data.t2m import make_t2m_train_iterator

        it = make_t2m_train_iterator(self.dataset, self.process_batch_size, seed, crop_len=self.max_frames,
                                     unit_drop_prob=self.d.unit_drop_prob)
        return TokenizedBatches(it, self.tokenizer)

    # ------------------------------------------------------------------ training
    def init(self, rng, batch):
        from mmar.models.moscale import MoScale

        vq_cfg, vq_vars, vq_model_cfg = self.stage1()
        net = MoScale(self.net_config(vq_cfg, self.tokenizer.vocab_size))
        tokens, var_inputs = self._clean_inputs(vq_cfg, vq_vars, batch)
        r1, r2 = jax.random.split(rng)
        variables = net.init({"params": r1, "dropout": r2}, jnp.asarray(batch["text_ids"]),
                             jnp.asarray(batch["text_mask"]), tokens, var_inputs)
        assets = text_assets(self.tokenizer, self.dataset.mean, self.dataset.std, vq_model_cfg)
        return {"params": variables["params"], TOKENIZER: vq_vars,
                ASSETS: {k: jnp.asarray(v) for k, v in assets.items()}}

    @staticmethod
    def _clean_inputs(vq_cfg, vq_vars, batch):
        from mmar.models.vqvae import TemporalVQVAE

        vq = TemporalVQVAE(vq_cfg)
        x, mask = jnp.asarray(batch["motion"], jnp.float32), jnp.asarray(batch["mask"], bool)
        codes = vq.apply(vq_vars, x, mask, method=TemporalVQVAE.encode_codes)
        inputs = vq.apply(vq_vars, codes, method=lambda m, c: m.quantizer.teacher_forcing_inputs(c))
        return jnp.concatenate(codes, 1), inputs

    def _targets(self, vq_cfg, vq_vars, batch, rng):
        """``(input codes (B, N), label codes (B, N), VAR inputs)`` with cross-scale corruption
        when ``model.gamma_max > 0`` (-1 at padded positions)."""
        from mmar.models.vqvae import TemporalVQVAE

        if self.m.gamma_max <= 0:
            codes, inputs = self._clean_inputs(vq_cfg, vq_vars, batch)
            return codes, codes, inputs
        vq = TemporalVQVAE(vq_cfg)
        x, mask = jnp.asarray(batch["motion"], jnp.float32), jnp.asarray(batch["mask"], bool)

        def corrupt(m, x_, mk, r):
            z = m.encode(x_, mk)
            return m.quantizer.corrupt_and_requantize(z, r, self.m.gamma_max, m._latent_mask(mk, x_.shape[0]))

        out = vq.apply(vq_vars, x, mask, rng, method=corrupt)
        return jnp.concatenate(out["input_codes"], 1), jnp.concatenate(out["target_codes"], 1), out["inputs"]

    def loss(self, params, extra_vars, batch, rng, step):
        from mmar.models.moscale import MoScale, length_bins, maskgit_tokens
        from mmar.models.scale_ar import sample_cond_drop

        vq_cfg = self.stage1()[0]
        net_cfg = self.net_config(vq_cfg, self.tokenizer.vocab_size)
        r_corrupt, r_mask, r_drop, r_dropout = jax.random.split(rng, 4)
        inp, labels, var_inputs = self._targets(vq_cfg, extra_vars[TOKENIZER], batch, r_corrupt)
        tokens, masked = maskgit_tokens(r_mask, inp, net_cfg, random_frac=self.m.mask_random_frac,
                                        keep_frac=self.m.mask_keep_frac, visible_noise_max=self.m.visible_noise_max)
        drop = sample_cond_drop(r_drop, tokens.shape[0], self.m.cond_drop_prob)
        logits, len_logits = MoScale(net_cfg).apply(
            {"params": params}, jnp.asarray(batch["text_ids"]), jnp.asarray(batch["text_mask"]), tokens,
            var_inputs, drop, True, rngs={"dropout": r_dropout})
        w = masked.astype(jnp.float32)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
        n = jnp.maximum(jnp.sum(w), 1.0)
        token_loss = jnp.sum(ce * w) / n
        acc = jnp.sum((jnp.argmax(logits, -1) == labels) * w) / n
        bins = length_bins(batch["length"], net_cfg.unit, net_cfg.length_classes)
        len_ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(len_logits, bins))
        loss = token_loss + self.m.length_weight * len_ce
        metrics = {"ce": token_loss, "acc": acc, "length_ce": len_ce,
                   "length_acc": jnp.mean(jnp.argmax(len_logits, -1) == bins), "masked": n / tokens.shape[0],
                   "corrupted": jnp.mean(((inp != labels) & (labels >= 0)).astype(jnp.float32))}
        return loss, (metrics, None)

    # ------------------------------------------------------------------ validation
    def _val_batches(self):
        if self._val is None:
            from mmar.data.t2m import make_t2m_eval_iterator

            out = []
            for b in make_t2m_eval_iterator(self.dataset, self.d.eval_split, self.d.eval_batch,
                                            crop_len=self.max_frames):
                texts = [t if v else b["text"][0] for t, v in zip(b["text"], b["valid"])]  # padding rows
                ids, tmask = self.tokenizer.encode(texts)
                out.append({"motion": b["motion"], "mask": b["mask"] & b["valid"][:, None], "length": b["length"],
                            "text_ids": ids, "text_mask": tmask, "valid": b["valid"]})
            self._val = out
        return self._val

    def evaluate(self, params, extra_vars) -> dict[str, float]:
        """Teacher-forced validation loss; generation scored by the evaluator when configured."""
        vq_cfg = self.stage1()[0]
        net_cfg = self.net_config(vq_cfg, self.tokenizer.vocab_size)
        sums = np.zeros(3)
        for i, b in enumerate(self._val_batches()):
            for j in range(int(self.d.val_masks)):
                key = jax.random.fold_in(jax.random.PRNGKey(self.d.eval_seed), i * 1000 + j)
                s = _val_step(params, extra_vars[TOKENIZER], {k: v for k, v in b.items() if k != "valid"}, key,
                              net_cfg=net_cfg, vq_cfg=vq_cfg, m=_loss_settings(self.m))
                sums += np.asarray(jax.device_get(s), np.float64)
        out = {"val_ce": float(sums[0] / max(sums[2], 1)), "val_acc": float(sums[1] / max(sums[2], 1))}
        if self.d.evaluator_workdir:
            out.update(self._generation_metrics({"params": params, **extra_vars}))
        return out

    def _generation_metrics(self, variables) -> dict[str, float]:
        from mmar.eval.t2m_protocol import generated_row
        from mmar.tasks.t2m_evaluator import load_evaluator

        if self._evaluator is None:
            self._evaluator = load_evaluator(self.d.evaluator_workdir)
        ev = self._evaluator

        def gen(texts, lengths, seed=0):
            return self.generate(variables, texts, lengths, seed=seed, batch_size=self.d.eval_batch)

        row = generated_row(gen, ev, self.dataset, split=self.d.eval_split, reference="train", repeats=1,
                            seed=self.d.eval_seed, progress=False)
        return {k: float(v) for k, v in row["mean"].items() if k in ("fid", "rprec_top1", "rprec_top3", "mm_dist",
                                                                      "diversity")}

    # ------------------------------------------------------------------ generation
    def _frozen(self, variables):
        """``(net_cfg, vq_cfg, caption tokenizer, mean, std)`` of saved variables."""
        for col in (TOKENIZER, ASSETS, "params"):
            if col not in variables:
                raise CheckpointError(f"the variables have no {col!r} collection: not a {self.cfg.task} checkpoint")
        a = variables[ASSETS]
        tok = tokenizer_from_assets(a)
        mean, std = np.asarray(a["mean"], np.float32), np.asarray(a["std"], np.float32)
        vq_cfg = vq_config_from_assets(a, mean.shape[0])
        return self.net_config(vq_cfg, tok.vocab_size), vq_cfg, tok, mean, std

    def with_decoder(self, variables, path) -> dict:
        """``variables`` whose frozen tokenizer decodes with the decoder of the stage-1 run at
        ``path``: a copy of the tokenizer trained on with its decoder fine-tuned alone
        (``train.init_from`` + ``optim.frozen``, e.g. ``configs/scalemogen_vqvae_smooth.py``).

        Refused (:class:`ConfigError` / :class:`CheckpointError` naming what differs) unless the
        run is of :attr:`stage1_task` with the same architecture and every tokenizer param outside
        :attr:`decoder_params` (and every other tokenizer collection) is bit for bit the
        checkpoint's: then every motion keeps its codes and the predictor stays valid."""
        from mmar.run import load_run_config, load_variables
        from mmar.tasks import make_task

        vq_cfg = self._frozen(variables)[1]
        cfg = load_run_config(path)
        if cfg.task not in (self.stage1_task, f"mmar.tasks.{self.stage1_task}"):
            raise CheckpointError(f"{path}: a decoder must come from a {self.stage1_task} run, this is a "
                                  f"{cfg.task} run")
        if make_task(cfg).vq_cfg != vq_cfg:
            raise ConfigError(f"{path}: its tokenizer architecture differs from the one this checkpoint was "
                              "trained on")
        new, step_dir, _ = load_variables(path)
        old = variables[TOKENIZER]
        changed = []
        for col in old:
            if col not in new:
                raise CheckpointError(f"{step_dir}: no {col!r} collection (the checkpoint's tokenizer has one)")
            flat_old = jax.tree_util.tree_leaves_with_path(old[col])
            flat_new = dict(jax.tree_util.tree_leaves_with_path(new[col]))
            for k, v in flat_old:
                top = str(getattr(k[0], "key", k[0]))
                w = flat_new.get(k)
                if w is None or np.shape(w) != np.shape(v):
                    raise CheckpointError(f"{step_dir}: tokenizer {col}{jax.tree_util.keystr(k)} is missing or of "
                                          "another shape")
                if not np.array_equal(np.asarray(w), np.asarray(v)) and not (col == "params"
                                                                             and top in self.decoder_params):
                    changed.append(f"{col}{jax.tree_util.keystr(k)}")
        if changed:
            raise ConfigError(f"{path}: its encoder side differs from the checkpoint's tokenizer ({changed[0]}"
                              + (f" and {len(changed) - 1} more" if len(changed) > 1 else "") + "): motions would "
                              f"get other codes than the predictor was trained on; only {list(self.decoder_params)} "
                              "may change (fine-tune with optim.frozen)")
        params = {**old["params"], **{k: new["params"][k] for k in self.decoder_params if k in new["params"]}}
        return {**variables, TOKENIZER: {**old, "params": params}}

    @staticmethod
    def net_class():
        """The network class of this task's ``net_config`` (the length head lives on it)."""
        from mmar.models.moscale import MoScale

        return MoScale

    def predict_lengths(self, variables, texts: Sequence[str], seed: int = 0) -> np.ndarray:
        """Frame lengths sampled from the length head (MoMask's estimator)."""
        net_cfg, _, tok, _, _ = self._frozen(variables)
        ids, mask = tok.encode(list(texts))
        bins = sample_lengths(variables["params"], jnp.asarray(ids), jnp.asarray(mask),
                              jax.random.PRNGKey(int(seed)), net_cfg=net_cfg, net_cls=self.net_class())
        frames = (np.asarray(bins) + 1) * net_cfg.unit
        return np.clip(frames, self.min_frames, self.max_frames).astype(np.int32)

    def generate(self, variables, texts: Sequence[str], lengths=None, *, seed: int = 0, steps=None, guidance=None,
                 top_p=None, temperature=None, batch_size: int = 32, use_cache: bool = True) -> GeneratedMotions:
        """Motions for ``texts`` (one each) of ``lengths`` frames (None: the length head's
        choice); sampling settings default to ``cfg.model``'s. Batches of ``batch_size``
        (the last one padded: one compilation)."""
        net_cfg = self._frozen(variables)[0]
        sc = self.sampling(steps=steps, guidance=guidance, top_p=top_p, temperature=temperature, use_cache=use_cache)
        if len(sc.steps) != len(net_cfg.lengths):
            raise ConfigError(f"steps: one count per scale ({len(net_cfg.lengths)}) or one int, got {sc.steps}")

        def sample(net_cfg, vq_cfg, ids, mask, lengths, key):
            return _generate(variables["params"], variables[TOKENIZER], ids, mask, lengths, key, net_cfg=net_cfg,
                             vq_cfg=vq_cfg, sc=sc)["features"]

        return self.generate_in_batches(variables, texts, lengths, seed, batch_size, sample)

    def generate_in_batches(self, variables, texts: Sequence[str], lengths, seed: int, batch_size: int,
                            sample) -> GeneratedMotions:
        """What the generators of this family share: captions tokenized (an empty one is an
        error), lengths from the length head when None and checked, batches of ``batch_size``
        (the last one padded: one compilation) drawn by ``sample(net_cfg, vq_cfg, ids, mask,
        lengths, key) -> normalised features (B, T, F)`` with the key of ``seed`` folded by
        batch, denormalised and zeroed beyond each length."""
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
        B = int(min(batch_size, len(texts)))
        feats = []
        t0 = time.perf_counter()
        for s in range(0, len(texts), B):
            i, m, n = ids[s:s + B], tmask[s:s + B], lengths[s:s + B]
            k = len(i)
            if k < B:
                i, m, n = (np.concatenate([a, np.repeat(a[:1], B - k, 0)]) for a in (i, m, n))
            key = jax.random.fold_in(jax.random.PRNGKey(int(seed)), s // B)
            out = sample(net_cfg, vq_cfg, jnp.asarray(i), jnp.asarray(m), jnp.asarray(n), key)
            feats.append(np.asarray(jax.device_get(out))[:k])
        seconds = time.perf_counter() - t0
        x = np.concatenate(feats) * std + mean
        x = x * (np.arange(x.shape[1])[None, :, None] < lengths[:, None, None])
        return GeneratedMotions(x.astype(np.float32), lengths, texts, self.fps, self.spec.kind, seconds)

    # ------------------------------------------------------------------ editing
    def edit(self, variables, features: np.ndarray, length: int, text: str, editable_grid: np.ndarray, *,
             semantic: bool = False, source_text: str | None = None, num: int = 1, seed: int = 0,
             guidance: float | None = None, temperature: float | None = None, gamma: int | None = None,
             tau: float | None = None, steps=None):
        """Zero-shot editing of one source motion (temporal or semantic; MoScale's tokens cover
        the whole body). ``features (T, F)`` un-normalised, ``length`` frames,
        ``editable_grid (latent_length, 1)`` (:func:`mmar.edit.edit_grid` with one group): a
        token is regenerated only when every latent step it reads is editable; the others are
        fixed to the source's codes during mask-and-repredict. ``semantic``: scales ``< gamma``
        (default 2) are the source's, the rest follow the new text. ``tau`` and ``source_text``
        belong to ScaleMoGen's per-bit rule and are not used. Returns an
        :class:`mmar.models.generated.EditResult` (codes in place of bits)."""
        from mmar.edit import temporal_token_masks
        from mmar.models.moscale import EditInputs

        net_cfg, vq_cfg, tok, mean, std = self._frozen(variables)
        q = vq_cfg.quantizer
        x, fmask, length = self.edit_source(features, length, net_cfg, vq_cfg, mean, std)
        grid = np.asarray(editable_grid, bool).reshape(q.latent_length, -1)
        if grid.shape[1] != 1:
            raise ConfigError("MoScale's tokens cover the whole body: body-part edits need a skeletal tokenizer "
                              "(a scalemogen run)")
        editable = [np.asarray(m, bool) for m in temporal_token_masks(
            q.lengths, q.latent_length, q.down, grid[:, 0], -(-length // net_cfg.unit))]
        if not semantic and not any(m.any() for m in editable):
            raise ConfigError("the edit region covers no whole token of any scale: widen the frames to regenerate")
        num = int(num)
        if num < 1:
            raise ConfigError(f"num must be >= 1, got {num}")
        sc = self.sampling(steps=steps, guidance=guidance, temperature=temperature)
        ids, tmask = tok.encode([text])
        t0 = time.perf_counter()
        src = _encode_source(variables[TOKENIZER], jnp.asarray(x), jnp.asarray(fmask), vq_cfg=vq_cfg)
        rep = lambda a: jnp.repeat(jnp.asarray(a), num, axis=0)  # noqa: E731
        ed = EditInputs(codes=[rep(c) for c in src["codes"]], editable=[rep(m[None]) for m in editable],
                        gamma=int(2 if gamma is None else gamma), semantic=bool(semantic))
        out = _edit(variables["params"], variables[TOKENIZER], rep(ids), rep(tmask), jnp.full((num,), length),
                    jax.random.PRNGKey(int(seed)), ed, net_cfg=net_cfg, vq_cfg=vq_cfg, sc=sc)
        return self.edit_result(jax.device_get(out), jax.device_get(src), "codes", length, text, mean, std, editable,
                                time.perf_counter() - t0)

    # ---- shared by the editing tasks
    def edit_source(self, features, length: int, net_cfg, vq_cfg, mean, std):
        """``(x (1, T, F) normalised, frame mask (1, T), length)`` of a source motion
        ``features (frames, F)`` (un-normalised) of ``length`` frames; clear errors for another
        skeleton's features or a length out of range."""
        feats = np.asarray(features, np.float32)
        if feats.ndim != 2 or feats.shape[1] != mean.shape[0]:
            raise ShapeError(f"the source must be (frames, {mean.shape[0]}) features of this model's skeleton, got "
                             f"{feats.shape}")
        length = int(check_lengths([length], 1, net_cfg.unit, self.min_frames, self.max_frames)[0])
        if feats.shape[0] < length:
            raise ShapeError(f"the source has {feats.shape[0]} frames, fewer than its length {length}")
        T = vq_cfg.num_frames
        x = np.zeros((1, T, feats.shape[1]), np.float32)
        x[0, :length] = (feats[:length] - mean) / std
        return x, np.arange(T)[None] < length, length

    def edit_result(self, out, src, key: str, length: int, text: str, mean, std, editable, seconds) -> EditResult:
        """An :class:`EditResult` from the sampler's output ``out`` and the encoded source
        ``src`` (``features`` normalised, the tokens per scale under ``key``)."""
        feats = np.asarray(out["features"])
        num, T = feats.shape[:2]
        valid = np.arange(T)[None, :, None] < length
        edited = (feats * std + mean) * valid
        recon = (np.asarray(src["features"]) * std + mean) * valid
        gen = GeneratedMotions(edited.astype(np.float32), np.full((num,), length, np.int32), [text] * num, self.fps,
                               self.spec.kind, seconds)
        return EditResult(edited=gen, recon=recon[0].astype(np.float32),
                          source_bits=[np.asarray(c)[0] for c in src[key]],
                          edited_bits=[np.asarray(c) for c in out[key]], editable=editable, seconds=seconds)


# --------------------------------------------------------------------------
# jitted pieces (static configs; weights as arguments: compiled once per shape)
# --------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("vq_cfg",))
def _encode_source(vq_vars, x, fmask, *, vq_cfg):
    from mmar.models.vqvae import TemporalVQVAE

    def f(m, x_, mk):
        codes = m.encode_codes(x_, mk)
        return {"codes": codes, "features": m.decode_codes(codes, mk) * mk[..., None]}

    return TemporalVQVAE(vq_cfg).apply(vq_vars, x, fmask, method=f)


@functools.partial(jax.jit, static_argnames=("net_cfg", "vq_cfg", "sc"))
def _edit(params, vq_vars, ids, mask, lengths, key, edit, *, net_cfg, vq_cfg, sc):
    from mmar.models.moscale import MoScale, sample
    from mmar.models.vqvae import TemporalVQVAE

    return sample(MoScale(net_cfg), params, TemporalVQVAE(vq_cfg), vq_vars, ids, mask, lengths, key, sc, edit=edit)


@dataclasses.dataclass(frozen=True)
class _LossSettings:
    gamma_max: float
    mask_random_frac: float
    mask_keep_frac: float
    visible_noise_max: float


def _loss_settings(m) -> _LossSettings:
    return _LossSettings(float(m.gamma_max), float(m.mask_random_frac), float(m.mask_keep_frac),
                         float(m.visible_noise_max))


@functools.partial(jax.jit, static_argnames=("net_cfg", "vq_cfg", "m"))
def _val_step(params, vq_vars, batch, key, *, net_cfg, vq_cfg, m):
    """Sum of masked CE, of correct predictions and the masked count, clean codes, no dropout."""
    from mmar.models.moscale import MoScale, maskgit_tokens

    codes, var_inputs = MoScaleTask._clean_inputs(vq_cfg, vq_vars, batch)
    tokens, masked = maskgit_tokens(key, codes, net_cfg, random_frac=m.mask_random_frac, keep_frac=m.mask_keep_frac,
                                    visible_noise_max=0.0)
    logits, _ = MoScale(net_cfg).apply({"params": params}, batch["text_ids"], batch["text_mask"], tokens, var_inputs)
    w = masked.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(codes, 0))
    return jnp.stack([jnp.sum(ce * w), jnp.sum((jnp.argmax(logits, -1) == codes) * w), jnp.sum(w)])


@functools.partial(jax.jit, static_argnames=("net_cfg", "vq_cfg", "sc"))
def _generate(params, vq_vars, ids, mask, lengths, key, *, net_cfg, vq_cfg, sc):
    from mmar.models.moscale import MoScale, sample
    from mmar.models.vqvae import TemporalVQVAE

    return sample(MoScale(net_cfg), params, TemporalVQVAE(vq_cfg), vq_vars, ids, mask, lengths, key, sc)


@functools.partial(jax.jit, static_argnames=("net_cfg", "net_cls"))
def sample_lengths(params, ids, mask, key, *, net_cfg, net_cls):
    """Length classes sampled from the length head of a ``net_cls(net_cfg)`` network (any model
    of this family with ``condition`` and ``length_logits``)."""

    def f(m, i, k):
        _, pooled = m.condition(i, k)
        return m.length_logits(pooled)

    logits = net_cls(net_cfg).apply({"params": params}, ids, mask, method=f)
    return jax.random.categorical(key, logits, axis=-1)


TASK = MoScaleTask

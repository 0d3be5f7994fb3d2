"""The text-motion evaluator (Guo et al.'s ``text_mot_match``, :mod:`mmar.models.t2m_evaluator`)
trained on a captioned dataset (:mod:`mmar.data.t2m`: Bandai, HumanML3D or KIT-ML).

Training reads the *training* split only (the MoMask / MoScale loader: a random caption, a random
window of ``length // 4 * 4`` frames, one unit less with probability 1/3); :meth:`evaluate`
reads the *validation* split only (``data.eval_split``; ``"test"`` is refused: no checkpoint
is ever selected on the test split) and the best checkpoint is kept by ``train.best_metric``
(``rprec_top1``, mode ``max``).

Validation metrics (:meth:`T2MEvaluatorTask.evaluate`): every validation motion is embedded once
(its centred window, the evaluation iterator's), every caption of it once; then
``data.eval_repeats`` times (seeded by ``data.eval_seed``: the same draws at every evaluation)
one caption per motion is drawn, the pairs are shuffled and cut into pools of
``data.pool_size`` (32; the remainder left out, as ``drop_last``), and R-precision top-1/2/3 and
the matching score (MM-Dist) are averaged over the repeats: ``rprec_top1``, ``rprec_top2``,
``rprec_top3``, ``mm_dist``. ``rprec_top1_first`` is the variant without caption draws (first
caption, as ScaleMoGen's loader) in one fixed shuffle: unshuffled pools would follow the split
order, which on Bandai is sorted by clip name, so a pool would hold the takes of a few
content / style classes whose captions cannot tell them apart (top-1 0.26 against 0.69 with
shuffled pools in a pilot run).

Tokenizer and statistics travel with the weights. The :class:`~mmar.models.text.Tokenizer` is
built from the training captions (``model.max_text_len`` tokens with ``[CLS]`` / ``[EOS]``: the
official 20 words + sos + eos; ``model.min_word_count``) and the feature mean / std are the
training split's; both are stored in the run's checkpoints as the extra collection ``assets``
(``tokenizer``: the tokenizer's JSON as uint8 bytes; ``mean``, ``std``: float32), so a
checkpoint alone is the frozen evaluator: :func:`load_evaluator` rebuilds it (no data needed)
as a :class:`~mmar.models.t2m_evaluator.FrozenT2MEvaluator` with its fingerprint. Batches are
tokenized on the host by the training iterator (``text_ids (B, L) int32``, ``text_mask (B, L)``,
plus ``group (B,)``: the id of the motion's caption set, so that two motions described by the
same captions are never used as each other's negatives)::

    mmar train configs/t2m_evaluator.py --workdir /tmp/runs/t2m_eval
    ev = load_evaluator("/tmp/runs/t2m_eval")       # its best/ checkpoint
    print(ev.fingerprint)
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import CheckpointError, ConfigError
from mmar.eval.t2m import mm_dist, r_precision
from mmar.models.t2m_evaluator import LOSSES, FrozenT2MEvaluator, T2MEvaluator, T2MEvaluatorConfig, matching_loss
from mmar.tasks.base import TaskBase, frozen_config

__all__ = ["T2MEvaluatorModelConfig", "T2MEvaluatorDataConfig", "T2MEvaluatorTask", "TASK",
           "load_evaluator", "pooled_retrieval", "caption_groups", "ASSETS"]

ASSETS = "assets"  # the extra collection holding the tokenizer and the statistics


@dataclasses.dataclass
class T2MEvaluatorModelConfig:
    """``cfg.model``: the evaluator's sizes (defaults: Guo et al.'s) and loss."""

    word_dim: int = 300
    text_hidden: int = 512
    movement_hidden: int = 512
    movement_latent: int = 512
    motion_hidden: int = 1024
    embed_dim: int = 512
    dropout: float = 0.2  # movement encoder
    contact_dims: int = 4  # trailing foot-contact channels the evaluator does not read
    loss: str = "margin"  # 'margin' (official) | 'infonce'
    margin: float = 10.0  # official negative_margin
    temperature: float = 0.1  # infonce only
    exclude_same_captions: bool = True  # motions with the same caption set are not negatives
    max_text_len: int = 22  # tokens, [CLS] and [EOS] included (official: 20 words + sos + eos)
    min_word_count: int = 1  # training-caption count for a word to enter the vocabulary


@dataclasses.dataclass
class T2MEvaluatorDataConfig:
    """``cfg.data``: which captioned motions (:func:`mmar.data.t2m.load_t2m`) and the validation
    protocol."""

    source: str = "bandai"  # 'bandai' | 'humanml3d' | 'kit'
    root: str | None = None  # Bandai default: ../shared/data/bandai-namco; the folder for the others
    fps: float | None = None
    min_len: int | None = None
    max_len: int = 196
    max_clips: int | None = None  # Bandai only: at most this many clips per split (quick runs)
    unit_drop_prob: float = 1.0 / 3.0  # training windows one unit shorter with this probability
    eval_split: str = "val"  # never 'test'
    pool_size: int = 32  # R-precision pool
    eval_repeats: int = 20  # caption / pool draws averaged per validation
    eval_seed: int = 0
    workers: int = 2  # Bandai conversion workers (first load only)


def caption_groups(split) -> np.ndarray:
    """``(N,) int32``: per motion of a :class:`~mmar.data.t2m.T2MSplit` the id of its caption set
    (motions with identical caption lists share an id; first appearance order)."""
    ids: dict[tuple[str, ...], int] = {}
    return np.array([ids.setdefault(tuple(m.captions), len(ids)) for m in split], np.int32)


def pooled_retrieval(text_emb: np.ndarray, motion_emb: np.ndarray, pool_size: int = 32,
                     rng: np.random.Generator | None = None, top_k: int = 3) -> dict[str, float]:
    """R-precision top-1..k and MM-Dist of matched rows, shuffled by ``rng`` (split order without)
    and cut into pools of ``pool_size``, the remainder left out (``drop_last``)."""
    N = len(text_emb)
    n = N // pool_size * pool_size
    if n == 0:
        raise ConfigError(f"{N} pairs: fewer than one pool of {pool_size}")
    sel = (rng.permutation(N) if rng is not None else np.arange(N))[:n]
    t, m = text_emb[sel], motion_emb[sel]
    rp = r_precision(t, m, pool_size, top_k)
    out = {f"rprec_top{k + 1}": float(rp[k]) for k in range(top_k)}
    out["mm_dist"] = mm_dist(t, m)
    return out


class _TokenizedBatches:
    """The t2m training iterator with captions tokenized: batches of arrays only (``motion``,
    ``length``, ``text_ids``, ``text_mask``, ``group``); its position is the wrapped one's."""

    def __init__(self, it, tokenizer, groups: np.ndarray):
        self._it, self._tok, self._groups = it, tokenizer, groups

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        b = next(self._it)
        ids, mask = self._tok.encode(b["text"])
        return {"motion": b["motion"], "length": np.asarray(b["length"], np.int32), "text_ids": ids,
                "text_mask": mask, "group": self._groups[np.asarray(b["index"])]}

    def get_state(self):
        return self._it.get_state()

    def set_state(self, state) -> None:
        self._it.set_state(state)


class T2MEvaluatorTask(TaskBase):
    """Trains the text-motion evaluator; see the module doc. ``benchmark``: a
    :class:`~mmar.data.t2m.T2MDataset` to use instead of loading ``cfg.data`` (tests)."""

    ModelConfig: ClassVar[type] = T2MEvaluatorModelConfig
    DataConfig: ClassVar[type] = T2MEvaluatorDataConfig

    def __init__(self, cfg, benchmark=None):
        super().__init__(cfg)
        if cfg.model.loss not in LOSSES:
            raise ConfigError(f"model.loss must be one of {LOSSES}, got {cfg.model.loss!r}")
        if cfg.data.eval_split == "test":
            raise ConfigError("data.eval_split='test': the evaluator is selected on the validation split, "
                              "never on the test split")
        self._dataset = benchmark
        self._tokenizer = None
        self._val = None


    # ------------------------------------------------------------------ data
    @property
    def dataset(self):
        if self._dataset is None:
            from mmar.data.t2m import load_t2m

            d = self.d
            kw = {"max_clips": d.max_clips, "workers": d.workers} if d.source == "bandai" else {}
            self._dataset = load_t2m(d.source, d.root, d.fps, d.min_len, d.max_len,
                                     splits=("train", d.eval_split), progress=False, **kw)
        return self._dataset

    @property
    def tokenizer(self):
        """Built from the training captions (deterministic: words by falling count)."""
        if self._tokenizer is None:
            from mmar.models.text import Tokenizer

            caps = [c for mo in self.dataset["train"] for c in mo.captions]
            self._tokenizer = Tokenizer.build(caps, min_count=self.m.min_word_count, max_len=self.m.max_text_len)
        return self._tokenizer

    def net_config(self, vocab_size: int | None = None) -> T2MEvaluatorConfig:
        return frozen_config(T2MEvaluatorConfig, self.m,
                             vocab_size=self.tokenizer.vocab_size if vocab_size is None else int(vocab_size))

    def train_iterator(self, seed: int, start_state=None):
        from mmar.data.t2m import make_t2m_train_iterator

        ds = self.dataset
        it = make_t2m_train_iterator(ds, self.process_batch_size, seed, unit_drop_prob=self.d.unit_drop_prob)
        return _TokenizedBatches(it, self.tokenizer, caption_groups(ds["train"]))

    # ------------------------------------------------------------------ model
    def assets(self) -> dict[str, np.ndarray]:
        """The tokenizer (JSON as uint8) and the training mean / std, as saved with the weights."""
        raw = json.dumps(self.tokenizer.to_json(), sort_keys=True, ensure_ascii=False).encode("utf-8")
        return {"tokenizer": np.frombuffer(raw, np.uint8).copy(),
                "mean": np.asarray(self.dataset.mean, np.float32), "std": np.asarray(self.dataset.std, np.float32)}

    def init(self, rng, batch):
        net = self.net_config()
        r1, r2 = jax.random.split(rng)
        variables = T2MEvaluator(net).init({"params": r1, "dropout": r2}, batch["motion"], batch["length"],
                                           batch["text_ids"], batch["text_mask"])
        return {"params": variables["params"], ASSETS: {k: jnp.asarray(v) for k, v in self.assets().items()}}

    def loss(self, params, extra_vars, batch, rng, step):
        net = self.net_config()
        r_drop, r_shift = jax.random.split(rng)
        text_emb, motion_emb = T2MEvaluator(net).apply(
            {"params": params}, batch["motion"], batch["length"], batch["text_ids"], batch["text_mask"],
            train=True, rngs={"dropout": r_drop})
        loss, metrics = matching_loss(text_emb, motion_emb, r_shift, kind=self.m.loss, margin=self.m.margin,
                                      temperature=self.m.temperature,
                                      group=batch["group"] if self.m.exclude_same_captions else None)
        return loss, (metrics, None)

    def frozen(self, variables: dict, info: dict | None = None) -> FrozenT2MEvaluator:
        """The frozen evaluator of saved ``variables`` (``params`` + ``assets``); needs no data."""
        from mmar.models.text import Tokenizer

        if ASSETS not in variables:
            raise CheckpointError(f"the variables have no {ASSETS!r} collection: not a t2m evaluator checkpoint")
        a = variables[ASSETS]
        tok = Tokenizer.from_json(json.loads(np.asarray(a["tokenizer"], np.uint8).tobytes().decode("utf-8")))
        return FrozenT2MEvaluator(self.net_config(tok.vocab_size), variables["params"], tok, a["mean"], a["std"],
                                  info=info, max_len=self.d.max_len)

    # ------------------------------------------------------------------ validation
    def _val_data(self):
        """Validation motions (centred windows, normalised) and every caption with its motion."""
        if self._val is None:
            from mmar.data.t2m import make_t2m_eval_iterator

            ds = self.dataset
            motions, lengths = [], []
            for b in make_t2m_eval_iterator(ds, self.d.eval_split, batch_size=32, captions="first"):
                v = b["valid"]
                motions.append(b["motion"][v])
                lengths.append(b["length"][v])
            sp = ds[self.d.eval_split]
            texts = [c for mo in sp for c in mo.captions]
            owner = np.repeat(np.arange(len(sp)), sp.num_captions)
            self._val = (np.concatenate(motions), np.concatenate(lengths), texts, owner,
                         np.asarray(sp.num_captions))
        return self._val

    def evaluate(self, params, extra_vars) -> dict[str, float]:
        """Retrieval on the validation split (module doc)."""
        motion, lengths, texts, owner, ncap = self._val_data()
        ev = FrozenT2MEvaluator(self.net_config(), params, self.tokenizer, self.dataset.mean, self.dataset.std,
                                max_len=self.d.max_len)
        m_emb = ev.embed_motion(motion, lengths, normalized=True)
        t_all = ev.embed_text(texts)
        first = np.concatenate([[0], np.cumsum(ncap)[:-1]])
        rng = np.random.default_rng(self.d.eval_seed)
        out = {"rprec_top1_first": pooled_retrieval(t_all[first], m_emb, self.d.pool_size, rng)["rprec_top1"]}
        runs = []
        for _ in range(int(self.d.eval_repeats)):
            pick = first + rng.integers(0, ncap)
            runs.append(pooled_retrieval(t_all[pick], m_emb, self.d.pool_size, rng))
        for k in runs[0]:
            out[k] = float(np.mean([r[k] for r in runs]))
        return out


def load_evaluator(path: str | Path, *, step: int | None = None, checkpoint: str = "best") -> FrozenT2MEvaluator:
    """The frozen evaluator of a run (:func:`mmar.run.load`): for a run directory its ``best/``
    checkpoint (selected on validation; ``checkpoint="latest"`` for the newest periodic one,
    or when the run has no best), else exactly the folder given. ``info`` records the run,
    step and checkpoint."""
    from mmar.run import find_workdir, load
    from mmar.train.checkpoint import BEST_DIR, step_dirs

    if checkpoint not in ("best", "latest"):
        raise ConfigError(f"checkpoint must be 'best' or 'latest', got {checkpoint!r}")
    workdir, ckpt = find_workdir(path)
    target = Path(ckpt)
    if ckpt == workdir and checkpoint == "best" and step_dirs(workdir / BEST_DIR):
        target = workdir / BEST_DIR
    run = load(target, step=step)
    if not isinstance(run.task, T2MEvaluatorTask):
        raise CheckpointError(f"{workdir}: a {run.config.task} run, not a text-motion evaluator")
    info = {"workdir": str(run.workdir), "step": run.step, "checkpoint": str(run.checkpoint),
            "selected": "best (validation)" if run.checkpoint.parent.name == BEST_DIR else "latest",
            "source": run.config.data.source, "eval_split": run.config.data.eval_split}
    return run.task.frozen(run.variables, info)


TASK = T2MEvaluatorTask

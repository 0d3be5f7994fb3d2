"""The text-to-motion evaluation protocol: motions scored by a frozen text-motion evaluator
(:func:`mmar.tasks.t2m_evaluator.load_evaluator`), the real-motion row
(:func:`real_motion_row`: the ground-truth motions, the ceiling every generator is read against)
and a generator's row (:func:`generated_row`), on the same draws.

Protocol (Guo et al. / MoScale ``utils/eval_t2m.py``, ``../shared/reference/next-scale-notes.md``
section 4), per repeat (20 by default; repeat ``r`` draws from
``np.random.default_rng(np.random.SeedSequence(seed).spawn(repeats)[r])``, as
:func:`mmar.eval.t2m.repeat_with_interval`): every motion of the split once, one of its captions
drawn at random, a random window of ``min(T, 196) // 4 * 4`` frames (one unit less with
probability 1/3, never below the shortest motion: :func:`mmar.data.t2m.train_lengths`), the pairs
shuffled and cut into pools of 32 with the remainder left out (drop_last); on those pairs

* R-precision top-1/2/3 (is the motion among the k nearest of its pool to its caption?),
* MM-Dist (mean caption-to-motion distance),
* Diversity (mean distance of ``min(300, pairs)`` random motion pairs: the Bandai test split has
  236 motions, 224 in full pools, fewer than the official 300),
* FID of these embeddings against the reference split's (``train``: every training motion,
  centred window, embedded once), and ``fid_test_centre``: against the same split's centred
  windows (for real motions the real-vs-real floor the published "Real" FID of 0.002 measures);

reported as mean and 95% half-interval over the repeats (:func:`mmar.eval.t2m.interval`).

The rows differ only in where a pair's motion comes from. :func:`real_motion_row` cuts the drawn
window from the ground truth; :func:`generated_row` makes the same draws in the same order
(lengths, window starts -- drawn and unused, so that the random stream stays the real row's --,
captions, shuffle, diversity pairs) and asks the generator for the pairs that enter a pool only
(``N // 32 * 32`` of them): ``generate(texts, lengths, seed=...)`` with the drawn captions and
window lengths (frames, multiples of 4), in chunks of ``batch_size``, each chunk with its own
seed derived from the repeat's ``SeedSequence`` (:func:`generation_seed`). Generated features come
back denormalised (:class:`~mmar.models.generated.GeneratedMotions`) and are normalised with the
*evaluator's* mean / std before embedding. A generator that returns the drawn ground-truth
windows therefore reproduces the real row (``tests/test_eval_t2m_protocol.py``).

MultiModality (``multimodality=K``, off by default): ``K`` motions of the split drawn at random
(their own seeded stream), a random caption and length each, ``multimodality_samples`` (30, as
Guo et al.) generations per caption with different seeds, and
:func:`mmar.eval.t2m.multimodality` over ``multimodality_pairs`` (10) pairs: one estimate, no
interval.

Every T2M result carries the evaluator's fingerprint. ``tools/t2m_real_motion.py`` prints the
real row; ``mmar eval --checkpoint RUN --evaluator EVAL_RUN`` a text-to-motion run's row
(:func:`mmar.eval.checkpoint.evaluate_t2m_run`)."""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from mmar.errors import ConfigError, MmarError, ShapeError

__all__ = ["METRICS", "centre_embeddings", "real_motion_row", "generated_row", "format_row",
           "generator_for_run", "generation_seed"]

METRICS = ("rprec_top1", "rprec_top2", "rprec_top3", "mm_dist", "diversity", "fid", "fid_test_centre")

Generate = Callable[..., Any]  # (texts, lengths, *, seed) -> GeneratedMotions


def _windows(split, starts, lengths, normalize):
    from mmar.data.t2m import pad_windows

    wins = [normalize(m.features[s:s + n]) for m, s, n in zip(split, starts, lengths)]
    x, _ = pad_windows(wins, max(int(max(lengths)), 4))
    return x


def centre_embeddings(ev, dataset, split: str) -> np.ndarray:
    """Embeddings of every motion of ``split``, its centred evaluation window."""
    from mmar.data.t2m import UNIT_LENGTH, eval_window

    sp = dataset[split]
    win = [eval_window(L, dataset.max_len, UNIT_LENGTH) for L in sp.lengths]
    out = []
    for s in range(0, len(sp), 256):  # bounded memory
        part = sp.motions[s:s + 256]
        st = [w[0] for w in win[s:s + 256]]
        n = [w[1] for w in win[s:s + 256]]
        out.append(ev.embed_motion(_windows(part, st, n, dataset.normalize), np.asarray(n), normalized=True))
    return np.concatenate(out)


class _Fixed:
    """What every repeat shares: the reference and centred statistics, every caption embedded
    once, the first caption of each motion."""

    def __init__(self, ev, dataset, split: str, reference: str, pool_size: int, diversity_pairs: int):
        from mmar.eval.t2m import gaussian_stats

        if not (np.allclose(dataset.mean, ev.mean) and np.allclose(dataset.std, ev.std)):
            raise ValueError("the dataset is not normalised with the evaluator's mean / std")
        t0 = time.perf_counter()
        self.sp = sp = dataset[split]
        self.N = N = len(sp)
        self.n_pairs = N // pool_size * pool_size
        if self.n_pairs == 0:
            raise ValueError(f"split {split!r} has {N} motions, fewer than one pool of {pool_size}")
        self.n_div = min(int(diversity_pairs), self.n_pairs)
        self.ref = centre_embeddings(ev, dataset, reference)
        self.ref_stats = gaussian_stats(self.ref)
        self.centre = centre_embeddings(ev, dataset, split)
        self.centre_stats = gaussian_stats(self.centre)
        self.texts = [c for m in sp for c in m.captions]
        self.t_all = ev.embed_text(self.texts)
        self.ncap = np.asarray(sp.num_captions)
        self.first = np.concatenate([[0], np.cumsum(self.ncap)[:-1]])
        self.lo = min(dataset.min_len, dataset.max_len)
        self.seconds = time.perf_counter() - t0

    def draw(self, rng: np.random.Generator, dataset, unit_drop_prob: float):
        """One repeat's draws, in the real row's order: ``(lengths, starts, caption index, the
        shuffled pairs kept)``."""
        from mmar.data.t2m import UNIT_LENGTH, train_lengths

        sp = self.sp
        n = train_lengths(sp.lengths, rng, dataset.max_len, UNIT_LENGTH, unit_drop_prob, self.lo)
        starts = rng.integers(0, sp.lengths - n + 1)
        pick = self.first + rng.integers(0, self.ncap)
        sel = rng.permutation(self.N)[:self.n_pairs]
        return n, starts, pick, sel

    def score(self, t: np.ndarray, m: np.ndarray, rng: np.random.Generator, pool_size: int) -> dict:
        """The metrics of one repeat's shuffled pairs (text and motion embeddings)."""
        from mmar.eval.t2m import diversity, frechet_distance, gaussian_stats
        from mmar.tasks.t2m_evaluator import pooled_retrieval

        out = pooled_retrieval(t, m, pool_size)  # already shuffled
        out["diversity"] = diversity(m, self.n_div, rng)
        mu, cov = gaussian_stats(m)
        out["fid"] = frechet_distance(*self.ref_stats, mu, cov)
        out["fid_test_centre"] = frechet_distance(*self.centre_stats, mu, cov)
        return out

    def settings(self, split, reference, repeats, seed, pool_size, unit_drop_prob, dataset) -> dict:
        return {"split": split, "reference": reference, "repeats": int(repeats), "seed": int(seed),
                "pool_size": int(pool_size), "motions": self.N, "pairs_per_repeat": self.n_pairs,
                "diversity_pairs": self.n_div, "reference_motions": int(len(self.ref)), "captions": len(self.texts),
                "unit_drop_prob": unit_drop_prob, "max_len": dataset.max_len}


def _summarise(outs: list[dict]) -> tuple[dict, dict]:
    from mmar.eval.t2m import interval

    mean, half = {}, {}
    for k in METRICS:
        mean[k], half[k] = interval([o[k] for o in outs])
    return {k: float(v) for k, v in mean.items()}, {k: float(v) for k, v in half.items()}


def real_motion_row(ev, dataset, split: str = "test", reference: str = "train", repeats: int = 20,
                    seed: int = 0, pool_size: int = 32, diversity_pairs: int = 300,
                    unit_drop_prob: float = 1.0 / 3.0) -> dict:
    """The real-motion row of ``split`` under evaluator ``ev`` (module doc). ``dataset`` must be
    normalised with ``ev``'s mean / std. Returns ``{"mean", "ci95", "deterministic",
    "settings", "seconds"}``; ``deterministic``: the first captions with the centred windows,
    pools in split order and in one shuffle (ScaleMoGen's loader), and their FID."""
    from mmar.eval.t2m import fid, repeat_with_interval
    from mmar.tasks.t2m_evaluator import pooled_retrieval

    fx = _Fixed(ev, dataset, split, reference, pool_size, diversity_pairs)
    first = fx.first
    det = {"split_order": pooled_retrieval(fx.t_all[first], fx.centre, pool_size),
           "shuffled": pooled_retrieval(fx.t_all[first], fx.centre, pool_size, np.random.default_rng(seed))}

    def one(rng: np.random.Generator) -> dict:
        n, starts, pick, sel = fx.draw(rng, dataset, unit_drop_prob)
        m_emb = ev.embed_motion(_windows(fx.sp.motions, starts, n, dataset.normalize), n, normalized=True)
        return fx.score(fx.t_all[pick][sel], m_emb[sel], rng, pool_size)

    t1 = time.perf_counter()
    mean, half = repeat_with_interval(one, repeats, seed)
    return {
        "mean": {k: float(mean[k]) for k in METRICS}, "ci95": {k: float(half[k]) for k in METRICS},
        "deterministic": {**det, "fid": float(fid(fx.ref, fx.centre))},
        "settings": fx.settings(split, reference, repeats, seed, pool_size, unit_drop_prob, dataset),
        "seconds": {"fixed": fx.seconds, "repeats": time.perf_counter() - t1},
    }


def generation_seed(seq: np.random.SeedSequence, index: int) -> int:
    """The generator seed of chunk ``index`` under the repeat's ``seq``: the first word (31 bits)
    of its child ``index`` (``SeedSequence(seq.entropy, spawn_key=seq.spawn_key + (index,))``);
    ``seq`` itself is not changed, and the repeat's own random stream is untouched."""
    child = np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, int(index)))
    return int(child.generate_state(1, np.uint32)[0] >> 1)


class _Sampler:
    """Calls the generator chunk by chunk and embeds what it returns."""

    def __init__(self, generate: Generate, ev, batch_size: int, bar):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.generate, self.ev, self.batch_size, self.bar = generate, ev, int(batch_size), bar
        self.motions, self.seconds, self.wall = 0, 0.0, 0.0

    def chunks(self, n: int) -> int:
        return -(-n // self.batch_size)

    def __call__(self, texts: list[str], lengths: np.ndarray, seq: np.random.SeedSequence,
                 offset: int = 0) -> np.ndarray:
        """``(len(texts), E)`` embeddings of generations for ``texts`` / ``lengths``; chunk ``c``
        is seeded by ``generation_seed(seq, offset + c)``."""
        out = []
        B = self.batch_size
        for c, s in enumerate(range(0, len(texts), B)):
            tx, ln = texts[s:s + B], np.asarray(lengths[s:s + B], np.int64)
            t0 = time.perf_counter()
            g = self.generate(tx, ln, seed=generation_seed(seq, offset + c))
            self.wall += time.perf_counter() - t0
            out.append(self._embed(g, len(tx)))
            self.seconds += float(getattr(g, "seconds", 0.0) or 0.0)
            self.motions += len(tx)
            if self.bar is not None:
                self.bar.update(len(tx))
        return np.concatenate(out)

    def _embed(self, g, n: int) -> np.ndarray:
        ev = self.ev
        x = np.asarray(g.features, np.float32)
        L = np.asarray(g.lengths, np.int64)
        if x.ndim != 3 or x.shape[0] != n or L.shape != (n,):
            raise ShapeError(f"the generator returned features {x.shape} and lengths {L.shape} for {n} captions")
        if x.shape[2] != ev.feature_dim:
            raise ShapeError(f"the generator returned {x.shape[2]} features per frame, the evaluator reads "
                             f"{ev.feature_dim}")
        if (L < 1).any() or (L > x.shape[1]).any():
            raise ShapeError(f"the generator returned lengths outside [1, {x.shape[1]}]: {L.min()}..{L.max()}")
        valid = np.arange(x.shape[1])[None, :] < L[:, None]
        x = np.where(valid[..., None], ev.normalize(x), 0.0).astype(np.float32)
        bad = ~np.isfinite(x).all(axis=(1, 2))
        if bad.any():
            raise MmarError(f"the generator returned non-finite features for {int(bad.sum())} of {n} motions")
        return ev.embed_motion(x, L, normalized=True)


def generated_row(generate: Generate, ev, dataset, split: str = "test", reference: str = "train",
                  repeats: int = 20, seed: int = 0, pool_size: int = 32, diversity_pairs: int = 300,
                  unit_drop_prob: float = 1.0 / 3.0, batch_size: int = 32, multimodality: int = 0,
                  multimodality_samples: int = 30, multimodality_pairs: int = 10,
                  progress: bool = True) -> dict:
    """A generator's row of ``split`` under evaluator ``ev`` (module doc), on the real row's
    draws. ``generate(texts, lengths, seed=int)`` returns a
    :class:`~mmar.models.generated.GeneratedMotions` (denormalised features) for ``texts`` with
    ``lengths`` frames; it is called for the pooled pairs only, ``batch_size`` at a time.
    ``dataset`` must be normalised with ``ev``'s mean / std (the reference and centred real
    windows). ``multimodality > 0`` adds MultiModality over that many captions.

    Returns ``{"mean", "ci95", "settings", "seconds", "fingerprint"}`` (plus ``"multimodality":
    {"value", "captions", "samples", "pairs"}`` when asked): ``mean`` / ``ci95`` hold
    :data:`METRICS`; ``seconds``: ``fixed`` (reference embeddings), ``repeats`` (wall time of the
    repeats, sampling included), ``sampling`` (sum of the generator's own ``seconds``),
    ``sampling_wall`` (wall time inside ``generate``), ``sampling_per_motion`` (``sampling`` per
    generated motion), ``motions`` (how many were generated)."""
    from mmar.data.t2m import UNIT_LENGTH, train_lengths

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    fx = _Fixed(ev, dataset, split, reference, pool_size, diversity_pairs)
    mm = int(multimodality)
    if mm < 0 or (mm and multimodality_samples < multimodality_pairs):
        raise ConfigError(f"multimodality needs K >= 0 captions and samples >= pairs, got {mm}, "
                          f"{multimodality_samples} samples, {multimodality_pairs} pairs")
    mm = min(mm, fx.N)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=repeats * fx.n_pairs + mm * multimodality_samples, desc="generating", unit="motion")
    sample = _Sampler(generate, ev, batch_size, bar)
    t1 = time.perf_counter()
    try:
        outs = []
        for seq in np.random.SeedSequence(seed).spawn(repeats):
            rng = np.random.default_rng(seq)
            n, _starts, pick, sel = fx.draw(rng, dataset, unit_drop_prob)
            texts = [fx.texts[i] for i in pick[sel]]
            m_emb = sample(texts, n[sel], seq)
            outs.append(fx.score(fx.t_all[pick][sel], m_emb, rng, pool_size))
        t_rep = time.perf_counter() - t1
        mm_res = None
        if mm:
            from mmar.eval.t2m import multimodality as mm_metric

            seq = np.random.SeedSequence([int(seed), 0x4D4D])  # its own stream, not a repeat's
            rng = np.random.default_rng(seq)
            idx = rng.choice(fx.N, mm, replace=False)
            n = train_lengths(fx.sp.lengths[idx], rng, dataset.max_len, UNIT_LENGTH, unit_drop_prob, fx.lo)
            pick = fx.first[idx] + rng.integers(0, fx.ncap[idx])
            texts = [fx.texts[i] for i in pick]
            per = sample.chunks(mm)
            emb = np.stack([sample(texts, n, seq, j * per) for j in range(multimodality_samples)], axis=1)
            mm_res = {"value": mm_metric(emb, multimodality_pairs, rng), "captions": mm,
                      "samples": int(multimodality_samples), "pairs": int(multimodality_pairs)}
    finally:
        if bar is not None:
            bar.close()
    mean, half = _summarise(outs)
    settings = fx.settings(split, reference, repeats, seed, pool_size, unit_drop_prob, dataset)
    settings["batch_size"] = int(batch_size)
    res = {
        "mean": mean, "ci95": half, "settings": settings,
        "seconds": {"fixed": fx.seconds, "repeats": t_rep, "sampling": sample.seconds,
                    "sampling_wall": sample.wall, "motions": sample.motions,
                    "sampling_per_motion": sample.seconds / max(sample.motions, 1)},
        "fingerprint": ev.fingerprint,
    }
    if mm_res is not None:
        res["multimodality"] = mm_res
    return res


def generator_for_run(run, **sampling) -> Callable[..., Any]:
    """``generate(texts, lengths, seed=0) -> GeneratedMotions`` of a loaded text-to-motion run
    (:func:`mmar.run.load`): ``run.task.generate(run.variables, texts, lengths, seed=seed,
    **sampling)``; ``sampling`` overrides (``steps``, ``guidance``, ``top_p``, ``temperature``,
    ``batch_size``) that are ``None`` are left out (the run's config defaults)."""
    if not getattr(run.task, "is_text_to_motion", False):
        raise ConfigError(f"a {getattr(run.config, 'task', type(run.task).__name__)} run does not generate "
                          f"motions from text")
    kw = {k: v for k, v in sampling.items() if v is not None}

    def generate(texts, lengths=None, seed: int = 0):
        return run.task.generate(run.variables, list(texts), lengths, seed=int(seed), **kw)

    return generate


def format_row(res: dict, label: str | None = None) -> str:
    """One markdown table row (R-precision top-1/2/3, FID, MM-Dist, Diversity; mean ± 95%);
    ``label`` defaults to ``Real (<split>)``."""
    m, h = res["mean"], res["ci95"]

    def cell(k, nd=3):
        return f"{m[k]:.{nd}f} ± {h[k]:.{nd}f}"

    label = f"Real ({res['settings']['split']})" if label is None else label
    return (f"| {label} | {cell('rprec_top1')} | {cell('rprec_top2')} | "
            f"{cell('rprec_top3')} | {cell('fid')} | {cell('mm_dist')} | {cell('diversity')} |")

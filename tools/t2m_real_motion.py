"""The real-motion row of the text-to-motion table: ground-truth test motions scored by a trained
text-motion evaluator (``mmar.tasks.t2m_evaluator``), the ceiling every generator is read
against. Prints the evaluator's fingerprint (every T2M result must) and writes JSON::

    .venv/bin/python tools/t2m_real_motion.py --evaluator /tmp/runs/t2m_eval --out /tmp/real_row.json

Protocol (Guo et al. / MoScale ``utils/eval_t2m.py``, ``../shared/reference/next-scale-notes.md``
section 4), per repeat (20 by default, each with its own ``numpy`` generator from ``--seed``):
every test motion once, one of its captions drawn at random, a random window of
``min(T, 196) // 4 * 4`` frames (one unit less with probability 1/3, never below the shortest
motion), the pairs shuffled and cut into pools of 32 with the remainder left out (drop_last);
on those pairs

* R-precision top-1/2/3 (is the motion among the k nearest of its pool to its caption?),
* MM-Dist (mean caption-to-motion distance),
* Diversity (mean distance of ``min(300, pairs)`` random motion pairs: the Bandai test split has
  236 motions, 224 in full pools, fewer than the official 300),
* FID of these test embeddings against the training split's (every training motion, centred
  window, embedded once), and ``fid_test_centre``: against the same test motions' centred
  windows (the real-vs-real floor the published "Real" FID of 0.002 measures);

reported as mean and 95% half-interval over the repeats (``mmar.eval.t2m.repeat_with_interval``).
A deterministic row (first caption, centred windows: ScaleMoGen's loader) is printed too, with
the pools in split order (ScaleMoGen) and in one seeded shuffle: on Bandai the split order is
sorted by clip name, so unshuffled pools hold a few content / style classes each, whose
captions cannot tell their takes apart. The dataset is loaded with the evaluator's own mean / std. The evaluator is the
run's ``best/`` checkpoint (selected on the validation split) unless ``--checkpoint latest``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

METRICS = ("rprec_top1", "rprec_top2", "rprec_top3", "mm_dist", "diversity", "fid", "fid_test_centre")



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


def real_motion_row(ev, dataset, split: str = "test", reference: str = "train", repeats: int = 20,
                    seed: int = 0, pool_size: int = 32, diversity_pairs: int = 300,
                    unit_drop_prob: float = 1.0 / 3.0) -> dict:
    """The real-motion row of ``split`` under evaluator ``ev`` (module doc). ``dataset`` must be
    normalised with ``ev``'s mean / std. Returns ``{"mean", "ci95", "deterministic",
    "settings"}``."""
    from mmar.data.t2m import UNIT_LENGTH, train_lengths
    from mmar.eval.t2m import diversity, fid, gaussian_stats, frechet_distance, repeat_with_interval
    from mmar.tasks.t2m_evaluator import pooled_retrieval

    if not (np.allclose(dataset.mean, ev.mean) and np.allclose(dataset.std, ev.std)):
        raise ValueError("the dataset is not normalised with the evaluator's mean / std")
    sp = dataset[split]
    N = len(sp)
    n_pairs = N // pool_size * pool_size
    if n_pairs == 0:
        raise ValueError(f"split {split!r} has {N} motions, fewer than one pool of {pool_size}")
    n_div = min(int(diversity_pairs), n_pairs)
    t0 = time.perf_counter()
    ref = centre_embeddings(ev, dataset, reference)
    ref_stats = gaussian_stats(ref)
    centre = centre_embeddings(ev, dataset, split)
    centre_stats = gaussian_stats(centre)
    texts = [c for m in sp for c in m.captions]
    t_all = ev.embed_text(texts)
    ncap = np.asarray(sp.num_captions)
    first = np.concatenate([[0], np.cumsum(ncap)[:-1]])
    det = {"split_order": pooled_retrieval(t_all[first], centre, pool_size),
           "shuffled": pooled_retrieval(t_all[first], centre, pool_size, np.random.default_rng(seed))}
    t_fixed = time.perf_counter() - t0
    lo = min(dataset.min_len, dataset.max_len)

    def one(rng: np.random.Generator) -> dict:
        n = train_lengths(sp.lengths, rng, dataset.max_len, UNIT_LENGTH, unit_drop_prob, lo)
        starts = rng.integers(0, sp.lengths - n + 1)
        pick = first + rng.integers(0, ncap)
        m_emb = ev.embed_motion(_windows(sp.motions, starts, n, dataset.normalize), n, normalized=True)
        sel = rng.permutation(N)[:n_pairs]
        t, m = t_all[pick][sel], m_emb[sel]
        out = pooled_retrieval(t, m, pool_size)  # already shuffled
        out["diversity"] = diversity(m, n_div, rng)
        mu, cov = gaussian_stats(m)
        out["fid"] = frechet_distance(*ref_stats, mu, cov)
        out["fid_test_centre"] = frechet_distance(*centre_stats, mu, cov)
        return out

    t1 = time.perf_counter()
    mean, half = repeat_with_interval(one, repeats, seed)
    return {
        "mean": {k: float(mean[k]) for k in METRICS}, "ci95": {k: float(half[k]) for k in METRICS},
        "deterministic": {**det, "fid": float(fid(ref, centre))},  # first captions, centred windows
        "settings": {"split": split, "reference": reference, "repeats": int(repeats), "seed": int(seed),
                     "pool_size": int(pool_size), "motions": N, "pairs_per_repeat": n_pairs,
                     "diversity_pairs": n_div, "reference_motions": int(len(ref)), "captions": len(texts),
                     "unit_drop_prob": unit_drop_prob, "max_len": dataset.max_len},
        "seconds": {"fixed": t_fixed, "repeats": time.perf_counter() - t1},
    }


def format_row(res: dict) -> str:
    m, h = res["mean"], res["ci95"]

    def cell(k, nd=3):
        return f"{m[k]:.{nd}f} ± {h[k]:.{nd}f}"

    return (f"| Real ({res['settings']['split']}) | {cell('rprec_top1')} | {cell('rprec_top2')} | "
            f"{cell('rprec_top3')} | {cell('fid')} | {cell('mm_dist')} | {cell('diversity')} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--evaluator", required=True, help="a t2m_evaluator run directory (or a checkpoint folder in it)")
    ap.add_argument("--checkpoint", default="best", choices=("best", "latest"),
                    help="for a run directory: its best (validation) or newest checkpoint")
    ap.add_argument("--step", type=int, default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--reference", default="train", help="split the FID is measured against")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default=None, help="data directory (default: the run's data.root)")
    ap.add_argument("--max-clips", type=int, default=None, help="Bandai: clips per split (default: the run's)")
    ap.add_argument("--out", default=None, help="write the JSON here")
    args = ap.parse_args(argv)

    from mmar.data import hml_features as hf
    from mmar.eval.efficiency import cpu_model
    from mmar.data.t2m import load_t2m
    from mmar.run import load_run_config
    from mmar.tasks.t2m_evaluator import load_evaluator

    t0 = time.perf_counter()
    ev = load_evaluator(args.evaluator, step=args.step, checkpoint=args.checkpoint)
    print(f"evaluator fingerprint {ev.fingerprint} ({ev.info['selected']} checkpoint, step {ev.info['step']}, "
          f"{ev.info['checkpoint']})", flush=True)
    d = load_run_config(ev.info["workdir"]).data
    root = args.root if args.root is not None else d.root
    max_clips = args.max_clips if args.max_clips is not None else d.max_clips
    splits = tuple(dict.fromkeys((args.reference, args.split)))
    kw = {"max_clips": max_clips, "workers": d.workers} if d.source == "bandai" else {}
    ds = load_t2m(d.source, root, d.fps, d.min_len, d.max_len, splits=splits, stats=hf.Normalizer(ev.mean, ev.std),
                  progress=False, **kw)
    res = real_motion_row(ev, ds, args.split, args.reference, args.repeats, args.seed)
    res.update(
        fingerprint=ev.fingerprint, evaluator=ev.info, source=d.source,
        dataset={s: ds[s].summary() for s in splits},
        command=" ".join([os.path.relpath(sys.argv[0], REPO_ROOT) if argv is None else "t2m_real_motion.py",
                          *(sys.argv[1:] if argv is None else argv)]),
        date=datetime.datetime.now().isoformat(timespec="seconds"), cpu=cpu_model(),
        wall_s=time.perf_counter() - t0)
    s = res["settings"]
    print(f"{d.source} {args.split}: {s['motions']} motions, {s['pairs_per_repeat']} pairs in pools of "
          f"{s['pool_size']} per repeat, {s['repeats']} repeats (95% intervals), diversity over "
          f"{s['diversity_pairs']} pairs, FID against {s['reference_motions']} {args.reference} motions")
    print("| motions | R-prec top-1 | top-2 | top-3 | FID | MM-Dist | Diversity |")
    print("|---|---|---|---|---|---|---|")
    print(format_row(res))
    m, h = res["mean"], res["ci95"]
    print(f"FID against the same test motions' centred windows: {m['fid_test_centre']:.3f} "
          f"± {h['fid_test_centre']:.3f}")
    dt = res["deterministic"]
    for how in ("split_order", "shuffled"):
        r = dt[how]
        print(f"deterministic (first caption, centred windows, {how.replace('_', '-')} pools): top-1/2/3 "
              f"{r['rprec_top1']:.3f} / {r['rprec_top2']:.3f} / {r['rprec_top3']:.3f}, MM-Dist {r['mm_dist']:.3f}")
    print(f"FID of the centred test windows against the training split: {dt['fid']:.3f}")
    print(f"evaluator fingerprint {ev.fingerprint}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

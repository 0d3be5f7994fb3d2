"""The real-motion row of the text-to-motion table: ground-truth test motions scored by a trained
text-motion evaluator (``mmar.tasks.t2m_evaluator``), the ceiling every generator is read
against. Prints the evaluator's fingerprint (every T2M result must) and writes JSON::

    .venv/bin/python tools/t2m_real_motion.py --evaluator /tmp/runs/t2m_eval --out /tmp/real_row.json

The protocol is the library's, :mod:`mmar.eval.t2m_protocol` (this tool is a thin command line
over :func:`~mmar.eval.t2m_protocol.real_motion_row`; ``METRICS``, ``centre_embeddings``,
``real_motion_row`` and ``format_row`` are re-exported here). Per repeat (20 by default, each
with its own ``numpy`` generator from ``--seed``): every test motion once, one of its captions
drawn at random, a random window of ``min(T, 196) // 4 * 4`` frames (one unit less with
probability 1/3, never below the shortest motion), the pairs shuffled and cut into pools of 32
with the remainder left out (drop_last); R-precision top-1/2/3, MM-Dist, Diversity
(``min(300, pairs)`` pairs: the Bandai test split has 236 motions, 224 in full pools), FID
against the training split's centred windows and ``fid_test_centre`` (against the same test
motions' centred windows: the real-vs-real floor the published "Real" FID of 0.002 measures);
mean and 95% half-interval over the repeats. A generator's row on the same draws is
:func:`mmar.eval.t2m_protocol.generated_row`, printed by ``mmar eval --checkpoint RUN
--evaluator EVAL_RUN`` for a text-to-motion run.

A deterministic row (first caption, centred windows: ScaleMoGen's loader) is printed too, with
the pools in split order (ScaleMoGen) and in one seeded shuffle: on Bandai the split order is
sorted by clip name, so unshuffled pools hold a few content / style classes each, whose
captions cannot tell their takes apart. The dataset is loaded with the evaluator's own mean /
std. The evaluator is the run's ``best/`` checkpoint (selected on the validation split) unless
``--checkpoint latest``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from mmar.eval.t2m_protocol import (  # noqa: E402  (the protocol lives in the library)
    METRICS,
    _windows,
    centre_embeddings,
    format_row,
    real_motion_row,
)

__all__ = ["METRICS", "_windows", "centre_embeddings", "real_motion_row", "format_row", "main"]


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

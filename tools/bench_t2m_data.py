"""Text-to-motion data (mmar.data.t2m): size of each split, time to build (first, then from the
cache) and the throughput of the training and evaluation iterators.

    .venv/bin/python tools/bench_t2m_data.py                       # all Bandai clips
    .venv/bin/python tools/bench_t2m_data.py --source humanml3d --root /data/HumanML3D

The Bandai cache is written to a new directory under /tmp (``--cache-dir`` to choose one
outside the repository), so the first load really converts the clips.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))



def _rate(it, n: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        next(it)
    t = time.perf_counter()
    for _ in range(n):
        next(it)
    return n / (time.perf_counter() - t)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", default="bandai", choices=("bandai", "humanml3d", "kit"))
    ap.add_argument("--root", default=None, help="data directory (Bandai: the shared data by default)")
    ap.add_argument("--cache-dir", default=None, help="Bandai cache directory (default: a new one under /tmp)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=300, help="batches timed per iterator")
    ap.add_argument("--threads", type=int, default=1, help="grain read threads of the training iterator")
    ap.add_argument("--workers", type=int, default=2, help="Bandai loading processes")
    args = ap.parse_args(argv)

    import os

    cache = Path(args.cache_dir or tempfile.mkdtemp(prefix="t2m_bench_", dir="/tmp")).resolve()
    if cache == REPO_ROOT or REPO_ROOT in cache.parents:
        raise SystemExit(f"--cache-dir {cache} lies inside the repository; use /tmp")
    os.environ["MMAR_CACHE_DIR"] = str(cache)
    from mmar.data.t2m import load_t2m
    from mmar.eval.efficiency import cpu_model

    print(f"# bench_t2m_data: {' '.join(sys.argv)}")
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')}, CPU {cpu_model()}, "
          f"{os.cpu_count()} logical CPUs, python {platform.python_version()}")
    kw = {"root": args.root, "workers": args.workers} if args.source == "bandai" else {"root": args.root}
    t = time.perf_counter()
    ds = load_t2m(args.source, progress=False, **kw)
    first = time.perf_counter() - t
    t = time.perf_counter()
    ds = load_t2m(args.source, progress=False, **kw)
    second = time.perf_counter() - t
    info = ds.info
    if args.source == "bandai":
        print(f"\nbuild: {first:.1f} s first (of which parsing the archives {info.get('parse_s', 0):.1f} s), "
              f"{second:.2f} s from the cache ({info.get('cached')}; {info.get('cache')}, "
              f"{Path(info['cache']).stat().st_size / 2**20:.0f} MiB)")
    else:
        print(f"\nload: {first:.1f} s, again {second:.1f} s (folder sources are not cached)")
    print(f"{ds.source}: {ds.kind} features ({ds.feature_dim}) at {ds.fps:g} fps, motions of "
          f"{ds.min_len}-{ds.max_len} frames\n")
    print("| split | clips | motions | frames | min / median / max length | captions | clips < min_len "
          "| tail frames dropped |")
    print("|---|---|---|---|---|---|---|---|")
    for s, sp in ds.splits.items():
        sm = sp.summary()
        dropped = len(info.get("dropped_clips", {}).get(s, [])) if "dropped_clips" in info else "-"
        tail = info.get("dropped_tail_frames", {}).get(s, "-")
        print(f"| {s} | {sm['clips']} | {sm['motions']} | {sm['frames']} | {sm['min_len']} / "
              f"{sm['median_len']:g} / {sm['max_len']} | {sm['captions']} | {dropped} | {tail} |")
    if "dropped_clips" in info:
        names = [n for v in info["dropped_clips"].values() for n in v]
        print(f"\nclips shorter than {ds.min_len} feature frames (dropped): {len(names)}")
    lengths = [m.length for m in ds["train"]]
    print(f"train segments of exactly {ds.max_len} frames: {sum(L == ds.max_len for L in lengths)} of "
          f"{len(lengths)}; median {statistics.median(lengths):g}")

    it = ds.train_iterator(args.batch, seed=0, shard=None, num_threads=args.threads)
    r_train = _rate(it, args.batches)
    it.close()
    ev = ds.eval_iterator("test", batch_size=args.batch)

    def loop():
        while True:
            yield from ev

    r_eval = _rate(loop(), args.batches)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"\ntraining iterator: {r_train:.0f} batches/s of {args.batch} x {ds.max_len} x {ds.feature_dim} "
          f"({r_train * args.batch:.0f} motions/s; grain, {args.threads} read thread(s), prefetch 2)")
    print(f"evaluation iterator (test): {r_eval:.0f} batches/s of {args.batch}")
    print(f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()

"""Throughput of the window pipeline (mmar.data.pipeline) on one CPU core.

Loads the Bandai Namco train split from the ArrayRecord files of the tfds builder when they
are prepared in ``--data-dir`` (``--prepare`` builds them first), else straight from the
archives with ``mmar.data.bandai.load_bandai``; then times ``make_train_iterator`` with
``worker_count=0`` pinned to one core and prints windows/s and batches/s.

    .venv/bin/python tools/bench_pipeline.py --data-dir /tmp/mmar_tfds
    .venv/bin/python tools/bench_pipeline.py --keys sparse,rot6d,joints,root,head --window 196
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def _load(args):
    from mmar.data import pipeline as P

    keys = args.keys.split(",")
    t = time.perf_counter()
    source = None
    if args.data_dir:
        from mmar.data import tfds_builders as tb

        builder = tb.get_builder("bandai_namco", args.data_dir, args.config)
        if not builder.is_prepared() and args.prepare:
            from mmar.data.bandai import bandai_root

            tb.prepare("bandai_namco", args.data_dir, str(bandai_root(args.bandai_dir)),
                       config=args.config, workers=args.workers)
            builder = tb.get_builder("bandai_namco", args.data_dir, args.config)
        if builder.is_prepared():
            arrays = P.ClipArrays.from_tfds(args.data_dir, "train", config=args.config, keys=keys)
            source = f"tfds ArrayRecord ({builder.data_dir})"
    if source is None:
        from mmar.data.bandai import load_bandai
        from mmar.data.splits import split_clips

        fps = {"fps30": 30.0, "fps60": 60.0, "fps20": 20.0}[args.config]
        clips = load_bandai(args.bandai_dir, workers=args.workers)
        clips = P.resample_clips(split_clips(clips)["train"], fps)
        arrays = P.ClipArrays.from_clips(clips, keys=keys)
        source = "load_bandai (archives)"
    return arrays, source, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("MMAR_TFDS_DIR"),
                    help="tfds data dir (default $MMAR_TFDS_DIR)")
    ap.add_argument("--config", default="fps30", choices=["fps30", "fps60", "fps20"])
    ap.add_argument("--prepare", action="store_true", help="build the tfds dataset if missing")
    ap.add_argument("--bandai-dir", default=None, help="Bandai Namco folder (default: auto)")
    ap.add_argument("--workers", type=int, default=2, help="processes for reading archives")
    ap.add_argument("--window", type=int, default=41)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--keys", default="sparse", help="comma-separated batch arrays")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=0, help="grain read threads (0: none)")
    ap.add_argument("--all-cores", action="store_true", help="do not pin to one core")
    args = ap.parse_args(argv)

    from mmar.data import pipeline as P

    arrays, source, load_s = _load(args)
    print(f"source: {source}; {arrays.num_clips} train clips, {arrays.num_frames} frames, "
          f"loaded in {load_s:.1f} s")
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    keys = args.keys.split(",")
    ds = P.WindowDataset(arrays, args.window, keys=keys)
    print(f"window {args.window}: {len(ds)} windows ({len(ds.skipped)} clips shorter than "
          f"{args.window + 1} frames skipped); keys {keys}; batch {args.batch_size}; "
          f"cores {cores}; worker_count 0; grain threads {args.threads}")
    it = P.make_train_iterator(ds, batch_size=args.batch_size, seed=0, shard=None,
                               worker_count=0, num_threads=args.threads)
    for _ in range(3):
        next(it)
    n = 0
    t = time.perf_counter()
    while time.perf_counter() - t < args.seconds:
        next(it)
        n += 1
    dt = time.perf_counter() - t
    print(f"{n * args.batch_size / dt:,.0f} windows/s, {n / dt:,.1f} batches/s "
          f"({n} batches in {dt:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

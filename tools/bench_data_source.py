"""Data source of the sparse-body tasks: the npz cache against the tfds ArrayRecord files.

For the Bandai train split at the benchmark's 60 fps, every variant runs in a fresh
subprocess, loads the split as the tasks do and runs ``make_train_iterator`` with the tasks'
settings (window 41, batch 256, keys ``sparse``, ``rot6d``, ``joints``). Reported per variant:
the time to the first batch from the child's start (imports, then the load of the split into
a ``ClipArrays``, then the first batch), steady windows/s (the best of five intervals, as the
machine may be shared) and windows per CPU second of the process, the RSS after the imports
and the peak RSS of the process (``VmHWM``), and a digest of the first batch (the same clips
and seed must give the same batch from every source). ``--repeat N`` runs the variants N times,
interleaved, and reports the median of each figure (the maximum of the peak RSS).

Variants:
  ``npz``       ``load_sparse_benchmark`` -> ``ClipArrays.from_arrays`` with every key (the tasks'
                path before ``data.tfds_dir``).
  ``npz-keys``  ``load_sparse_benchmark`` -> ``SparseBenchmark.clip_arrays`` of the batch keys
                (the tasks' path with ``data.tfds_dir`` unset).
  ``tfds-all``  ``tfds_builders.data_source`` (every feature decoded) ->
                ``ClipArrays.from_data_source`` (the former ``ClipArrays.from_tfds``).
  ``tfds``      ``TfdsBenchmark.clip_arrays``: the ``ClipRecords`` index, then a grain pass with
                ``--threads`` read threads that decodes only the batch keys (the tasks' path with
                ``data.tfds_dir`` set).

The one-time conversions are made (and timed, in a subprocess) when missing: the npz cache of
``load_sparse_benchmark`` under ``$MMAR_CACHE_DIR`` and the ``bandai_namco`` / ``fps60`` tfds
dataset under ``--tfds-dir``; ``--measure-build`` times both from scratch in temporary
folders (about three more minutes on two cores). Nothing is written into the project.

    MMAR_CACHE_DIR=/tmp/mmar_cache .venv/bin/python tools/bench_data_source.py --tfds-dir /tmp/mmar_tfds
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

VARIANTS = ("npz", "npz-keys", "tfds-all", "tfds")
KEYS = ("sparse", "rot6d", "joints")


def _status(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _digest(batch) -> str:
    h = hashlib.sha1()
    for k in sorted(batch):
        h.update(k.encode())
        h.update(batch[k].tobytes())
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------
# child: one variant
# --------------------------------------------------------------------------

def _child(args) -> dict:
    t0 = time.perf_counter()
    from mmar.data import pipeline as P
    from mmar.data import benchmark as B

    if args.child.startswith("tfds"):
        from mmar.data import tfds_builders as tb  # noqa: F401  (imports tensorflow_datasets)
    t_import = time.perf_counter() - t0
    rss_import = _status("VmRSS")

    t1 = time.perf_counter()
    if args.child == "npz":
        bench = B.load_sparse_benchmark(args.bandai_dir, args.fps, progress=False)
        clips = P.ClipArrays.from_arrays(bench.subset("train"))
    elif args.child == "npz-keys":
        bench = B.load_sparse_benchmark(args.bandai_dir, args.fps, progress=False)
        clips = bench.clip_arrays("train", None, KEYS)
    elif args.child == "tfds-all":
        src = tb.data_source("bandai_namco", "train", args.tfds_dir, config=args.config)
        clips = P.ClipArrays.from_data_source(src, KEYS)
    elif args.child == "tfds":
        bench = B.TfdsBenchmark(args.tfds_dir, args.fps, config=args.config, num_threads=args.threads)
        clips = bench.clip_arrays("train", None, KEYS)
    else:
        raise SystemExit(f"unknown variant {args.child}")
    t_load = time.perf_counter() - t1

    t2 = time.perf_counter()
    it = P.make_train_iterator(clips, args.window, args.batch_size, 0, shard=None, keys=KEYS)
    first = next(it)
    t_first = time.perf_counter() - t2
    total = time.perf_counter() - t0

    for _ in range(3):
        next(it)
    rates, windows, cpu0 = [], 0, time.process_time()
    for _ in range(5):
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < args.seconds / 5:
            next(it)
            n += 1
        rates.append(n * args.batch_size / (time.perf_counter() - t))
        windows += n * args.batch_size
    cpu = time.process_time() - cpu0
    return {
        "variant": args.child, "import_s": t_import, "load_s": t_load, "first_s": t_first,
        "to_first_batch_s": total, "windows_per_s": max(rates), "windows_per_cpu_s": windows / cpu,
        "rss_import_mb": rss_import,
        "peak_rss_mb": _status("VmHWM"), "rss_end_mb": _status("VmRSS"),
        "clips": clips.num_clips, "frames": clips.num_frames,
        "held_mb": sum(v.nbytes for v in clips.frames.values()) / 2**20,
        "frame_keys": sorted(clips.frames), "batch_digest": _digest(first),
    }


# --------------------------------------------------------------------------
# parent
# --------------------------------------------------------------------------

def _run(cmd: list[str], env: dict | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - t, out.stdout


_BUILD_NPZ = ("import resource; from mmar.data.benchmark import load_sparse_benchmark; "
              "load_sparse_benchmark({root!r}, {fps!r}, progress=False); "
              "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
_BUILD_TFDS = ("import resource; from mmar.data import tfds_builders as tb; "
               "from mmar.data.bandai import bandai_root; "
               "tb.prepare('bandai_namco', {data_dir!r}, str(bandai_root({root!r})), "
               "config={config!r}, workers={workers}); "
               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")


def _build_npz(args, cache_dir: str) -> tuple[float, float]:
    env = dict(os.environ, MMAR_CACHE_DIR=cache_dir)
    dt, out = _run([sys.executable, "-c", _BUILD_NPZ.format(root=args.bandai_dir, fps=args.fps)], env)
    return dt, float(out.split()[-1])


def _build_tfds(args, data_dir: str) -> tuple[float, float]:
    code = _BUILD_TFDS.format(data_dir=data_dir, root=args.bandai_dir, config=args.config,
                              workers=args.workers)
    dt, out = _run([sys.executable, "-c", code])
    return dt, float(out.split()[-1])


def _du(paths) -> float:
    return sum(os.path.getsize(p) for p in paths) / 2**20


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tfds-dir", default=os.environ.get("MMAR_TFDS_DIR", "/tmp/mmar_tfds"),
                    help="tfds data dir (default $MMAR_TFDS_DIR or /tmp/mmar_tfds)")
    ap.add_argument("--bandai-dir", default=None, help="Bandai Namco folder (default: auto)")
    ap.add_argument("--fps", type=float, default=60.0)
    ap.add_argument("--window", type=int, default=41)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=6.0, help="steady-state measurement per variant")
    ap.add_argument("--threads", type=int, default=2, help="grain read threads of the tfds variant")
    ap.add_argument("--workers", type=int, default=2, help="processes reading the archives (build)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--repeat", type=int, default=1, help="runs of each variant (interleaved)")
    ap.add_argument("--measure-build", action="store_true",
                    help="time both one-time conversions from scratch in temporary folders")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.config = f"fps{args.fps:g}"

    if args.child:
        print(json.dumps(_child(args)))
        return 0

    from mmar.data import benchmark as B
    from mmar.data.bandai import bandai_root

    root = bandai_root(args.bandai_dir)
    args.bandai_dir = str(root)
    npz = {s: B.cache_dir() / f"bandai-{B._data_key(root, args.fps)}-{s}.npz" for s in B.SPLITS}
    builds = []
    if args.measure_build:
        with tempfile.TemporaryDirectory(prefix="mmar_bench_npz_") as d:
            builds.append(("npz cache (load_sparse_benchmark, 3 splits)", *_build_npz(args, d)))
        with tempfile.TemporaryDirectory(prefix="mmar_bench_tfds_") as d:
            builds.append((f"tfds build (prepare bandai_namco/{args.config}, 3 splits)",
                           *_build_tfds(args, d)))
    if not all(p.exists() for p in npz.values()):
        builds.append(("npz cache (missing, built now)", *_build_npz(args, str(B.cache_dir()))))
    from mmar.data import tfds_builders as tb

    if not tb.get_builder("bandai_namco", args.tfds_dir, args.config).is_prepared():
        builds.append(("tfds build (missing, built now)", *_build_tfds(args, args.tfds_dir)))
    tfds_version = os.fspath(tb.get_builder("bandai_namco", args.tfds_dir, args.config).data_dir)

    runs: dict[str, list[dict]] = {}
    for v in [v for _ in range(args.repeat) for v in args.variants.split(",")]:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", v, "--tfds-dir", args.tfds_dir,
               "--bandai-dir", args.bandai_dir, "--fps", str(args.fps), "--window", str(args.window),
               "--batch-size", str(args.batch_size), "--seconds", str(args.seconds),
               "--threads", str(args.threads)]
        _, out = _run(cmd)
        runs.setdefault(v, []).append(json.loads(out.strip().splitlines()[-1]))
    rows = []
    for v, rs in runs.items():
        row = dict(rs[0])
        for k, x in row.items():
            if isinstance(x, float):
                vals = sorted(r[k] for r in rs)
                row[k] = max(vals) if k == "peak_rss_mb" else vals[len(vals) // 2]
        if len({r["batch_digest"] for r in rs}) > 1:
            row["batch_digest"] = "differs"
        rows.append(row)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    tfds_train = [os.path.join(tfds_version, f) for f in os.listdir(tfds_version)
                  if f.startswith("bandai_namco-train.array_record")]
    r0 = rows[0]
    if args.repeat > 1:
        print(f"median of {args.repeat} interleaved runs per variant (peak RSS: the maximum)")
    print(f"Bandai train split at {args.fps:g} fps: {r0['clips']} clips, {r0['frames']:,} frames; "
          f"window {args.window}, batch {args.batch_size}, keys {','.join(KEYS)}; {cores} cores")
    print(f"on disk: npz train {_du([npz['train']]):,.0f} MB ({B.cache_dir()}); tfds train "
          f"{_du(tfds_train):,.0f} MB in {len(tfds_train)} ArrayRecord shards ({tfds_version})")
    for name, dt, rss in builds:
        print(f"one-time: {name}: {dt:.0f} s, peak RSS {rss:,.0f} MB")
    print()
    head = ("| variant | imports s | load s | first batch s | to first batch s | windows/s | "
            "windows/CPU s | RSS after imports MB | peak RSS MB | arrays held MB | first batch |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        print(f"| {r['variant']} | {r['import_s']:.1f} | {r['load_s']:.1f} | {r['first_s']:.2f} | "
              f"{r['to_first_batch_s']:.1f} | {r['windows_per_s']:,.0f} | {r['windows_per_cpu_s']:,.0f} | "
              f"{r['rss_import_mb']:,.0f} | "
              f"{r['peak_rss_mb']:,.0f} | {r['held_mb']:,.0f} ({'+'.join(r['frame_keys'])}) | "
              f"{r['batch_digest']} |")
    same = len({r["batch_digest"] for r in rows}) == 1
    print(f"\nfirst batches identical across variants: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

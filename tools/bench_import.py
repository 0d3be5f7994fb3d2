"""Time importing the Bandai Namco archives to SMPL-22 arrays.

    python tools/bench_import.py [--root DIR] [--workers 2] [--datasets 1 2] [--profile]

Prints clips, frames, seconds and frames/s for ``load_bandai`` (decompression, BVH parsing,
Euler angles, forward kinematics and retargeting, in worker processes) and for the SMPL-22
joint positions of every clip (numpy forward kinematics in this process). ``--profile`` also
times each stage in one process on a sample of clips. Nothing is written to disk.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _profile(root, n_per_archive: int = 40) -> None:
    import numpy as np

    from mmar.data import bvh
    from mmar.data.bandai import BANDAI_SCALE, bandai_archives
    from mmar.data.clip import JOINT_MAPS
    from mmar.data.sources import iter_archive_raw
    from mmar.skeleton import SMPL22_NAMES, SMPL22_PARENTS

    t = dict.fromkeys(["decompress", "hierarchy+numbers", "euler", "fk+retarget", "smpl fk"], 0.0)
    frames = 0
    clips = 0
    for a in bandai_archives(root):
        it = iter_archive_raw(str(a))
        t0 = time.perf_counter()
        texts = []
        for k, (name, text, _j, src, _js) in enumerate(it):
            texts.append((text, src))
            if k + 1 >= n_per_archive:
                break
        t["decompress"] += time.perf_counter() - t0
        for text, src in texts:
            t0 = time.perf_counter()
            euler = bvh.euler_to_matrix
            calls = []

            def timed(*args, **kw):
                s = time.perf_counter()
                out = euler(*args, **kw)
                calls.append(time.perf_counter() - s)
                return out

            bvh.euler_to_matrix = timed
            try:
                d = bvh.parse_bvh_arrays(text, src, BANDAI_SCALE)
            finally:
                bvh.euler_to_matrix = euler
            t1 = time.perf_counter()
            t["euler"] += sum(calls)
            t["hierarchy+numbers"] += (t1 - t0) - sum(calls)
            r = d.retarget(JOINT_MAPS["bandai"], SMPL22_NAMES, SMPL22_PARENTS)
            t2 = time.perf_counter()
            t["fk+retarget"] += t2 - t1
            r.global_transforms()
            t["smpl fk"] += time.perf_counter() - t2
            frames += d.num_frames
            clips += 1
    print(f"profile on {clips} clips, {frames} frames (one process; decompression of the first "
          f"{n_per_archive} members per archive only):")
    for k, v in t.items():
        print(f"  {k:20s} {v:7.3f} s  {1e6 * v / max(frames, 1):8.2f} us/frame")
    del np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--datasets", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)

    from mmar.data.bandai import load_bandai
    from mmar.geometry_np import forward_kinematics

    import resource

    def cpu() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    c0 = cpu()
    t0 = time.perf_counter()
    clips = load_bandai(args.root, datasets=args.datasets, workers=args.workers,
                        progress=not args.no_progress, captions=True)
    t1 = time.perf_counter()
    c1 = cpu()
    frames = sum(c.num_frames for c in clips)
    for c in clips:
        forward_kinematics(c.local_rot, c.skeleton.offsets, c.skeleton.parents, c.root_pos)
    t2 = time.perf_counter()
    c2 = cpu()
    print(f"clips {len(clips)}  frames {frames}  workers {args.workers}  cpus {os.cpu_count()}")
    print(f"load_bandai (to SMPL-22): {t1 - t0:6.2f} s  {frames / (t1 - t0):9,.0f} frames/s"
          f"   (CPU {c1 - c0:.1f} s, workers included)")
    print(f"SMPL-22 joint positions:  {t2 - t1:6.2f} s  {frames / max(t2 - t1, 1e-9):9,.0f} frames/s"
          f"   (CPU {c2 - c1:.1f} s)")
    print(f"total:                    {t2 - t0:6.2f} s  {frames / (t2 - t0):9,.0f} frames/s")
    try:
        print(f"load average (1, 5, 15 min): {os.getloadavg()}  (other processes share the CPUs)")
    except OSError:
        pass
    if args.profile:
        _profile(args.root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

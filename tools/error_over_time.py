"""Where in a clip an online model's error sits: per-frame MPJPE of a run on a split, binned by
the frame's index in its clip (the first frame, the frames whose window is still padded with it,
and later ones). An online model that drifts shows error growing with time; one that recovers
from a poor start shows it shrinking.

    python tools/error_over_time.py RUN [--split val] [--ema] [--edges 0,1,41,120,300]
"""
from __future__ import annotations

import argparse
from typing import Mapping, Sequence

import numpy as np

DEFAULT_EDGES = (0, 1, 41, 120, 300)


def error_by_time(pred: Mapping[str, Mapping], gt: Mapping[str, Mapping],
                  edges: Sequence[int] = DEFAULT_EDGES) -> list[dict]:
    """Mean per-joint position error [cm] of every frame, pooled over clips, per bin of frame
    index ``[edges[i], edges[i+1])`` (the last bin open-ended). ``pred`` and ``gt`` map clip
    names to arrays with ``joints (T, J, 3)`` in metres. Returns ``[{"start", "stop", "mpjpe_cm",
    "frames"}]`` (``stop`` None for the last bin); bins without frames are left out."""
    edges = [int(e) for e in edges]
    if not edges or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"edges must start at 0 and increase, got {edges}")
    bounds = list(zip(edges, edges[1:] + [None]))
    sums = np.zeros(len(bounds))
    counts = np.zeros(len(bounds), int)
    for name, p in pred.items():
        if name not in gt:
            raise KeyError(f"clip {name!r} has a prediction but no ground truth")
        pj, gj = np.asarray(p["joints"]), np.asarray(gt[name]["joints"])
        if pj.shape != gj.shape:
            raise ValueError(f"clip {name!r}: prediction {pj.shape} vs ground truth {gj.shape}")
        e = np.linalg.norm(pj - gj, axis=-1).mean(-1) * 100.0
        for i, (a, b) in enumerate(bounds):
            seg = e[a:b]
            sums[i] += seg.sum()
            counts[i] += seg.size
    return [{"start": a, "stop": b, "mpjpe_cm": float(s / c), "frames": int(c)}
            for (a, b), s, c in zip(bounds, sums, counts) if c]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--split", default="val")
    ap.add_argument("--ema", action="store_true", help="the EMA weights")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--edges", default=",".join(map(str, DEFAULT_EDGES)))
    args = ap.parse_args(argv)
    from mmar import run as mrun
    from mmar.eval.checkpoint import evaluate_run

    r = mrun.load(args.run, overrides=args.set, ema=args.ema)
    res = evaluate_run(r, split=args.split)
    for row in error_by_time(res["pred"], res["gt"], [int(x) for x in args.edges.split(",")]):
        stop = "end" if row["stop"] is None else row["stop"]
        print(f"frames [{row['start']}, {stop}): {row['mpjpe_cm']:.3f} cm over {row['frames']} frames")


if __name__ == "__main__":
    main()

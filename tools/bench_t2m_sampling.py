"""Sampling time of a text-to-motion run (MoScale, ScaleMoGen or the next-token baseline): seconds per
motion at batch 1 and batch 32, compilation excluded (one warm-up call per setting), median of
``--repeats`` timed calls. Prints one JSON object per setting::

    .venv/bin/python tools/bench_t2m_sampling.py --checkpoint /tmp/runs/moscale_small/best \\
        --steps 1,1,1,1 --steps 1,2,5,10 --steps 10

``--steps`` (MoScale only; repeatable): refinement steps per scale, or one count for every
scale. The length is fixed (``--frames``, default 196: the longest motion, the slowest case).
Run it alone on the machine: figures taken under load are noise.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

TEXT = "a person walks happily"


def _steps(s: str):
    parts = [int(p) for p in s.split(",")]
    return parts[0] if len(parts) == 1 else tuple(parts)


def time_setting(run, batch: int, frames: int, repeats: int, steps=None, use_cache: bool = True) -> dict:
    kw = {} if steps is None else {"steps": steps}
    if "use_cache" in run.task.generate.__code__.co_varnames:
        kw["use_cache"] = use_cache
    texts = [TEXT] * batch
    lengths = [frames] * batch
    t0 = time.perf_counter()
    run.task.generate(run.variables, texts, lengths, seed=0, batch_size=batch, **kw)
    first = time.perf_counter() - t0
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        run.task.generate(run.variables, texts, lengths, seed=r + 1, batch_size=batch, **kw)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"batch": batch, "frames": frames, "steps": steps, "use_cache": use_cache, "first_call_s": round(first, 3),
            "median_call_s": round(med, 4), "s_per_motion": round(med / batch, 5), "repeats": repeats}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--steps", action="append", type=_steps, default=None)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--frames", type=int, default=196)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-cache", action="store_true", help="also time the uncached sampler")
    args = ap.parse_args(argv)

    from mmar.eval.efficiency import cpu_model
    from mmar.run import load

    run = load(args.checkpoint)
    machine = {"cpu": cpu_model(), "jax": __import__("jax").__version__,
               "device": str(__import__("jax").devices()[0])}
    print(json.dumps({"checkpoint": str(run.checkpoint), "task": run.config.task, "step": run.step, **machine}))
    for steps in args.steps or [None]:
        for b in (int(x) for x in args.batches.split(",")):
            for cache in (True, False) if args.no_cache else (True,):
                print(json.dumps(time_setting(run, b, args.frames, args.repeats, steps, cache)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

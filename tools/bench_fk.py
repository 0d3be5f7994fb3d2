"""Forward kinematics throughput under jax.jit on this machine's CPU.

Prints frames per second of SMPL-22 FK (local rotation matrices + offsets -> global rotations
and positions) and of FK from 6D rotations, for a few batch sizes.

    .venv/bin/python tools/bench_fk.py
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmar import geometry as g
from mmar.skeleton import SMPL22_PARENTS


def bench(fn, *args, iters=20):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, nargs="+", default=[1, 256, 4096, 65536])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    offsets = jnp.asarray(rng.normal(size=(22, 3)), jnp.float32)
    fk_mat = jax.jit(lambda r, p: g.forward_kinematics(r, offsets, SMPL22_PARENTS, p))
    fk_6d = jax.jit(lambda d, p: g.forward_kinematics(g.rot6d_to_matrix(d), offsets, SMPL22_PARENTS, p)[1])
    rows = []
    for n in args.frames:
        d6 = jnp.asarray(rng.normal(size=(n, 22, 6)), jnp.float32)
        rot = g.rot6d_to_matrix(d6)
        root = jnp.zeros((n, 3), jnp.float32)
        t_mat = bench(fk_mat, rot, root)
        t_6d = bench(fk_6d, d6, root)
        rows.append({"frames": n, "fk_matrix_frames_per_s": n / t_mat, "fk_6d_frames_per_s": n / t_6d,
                     "ms_per_call": t_mat * 1e3})
    print(json.dumps({"device": str(jax.devices()[0]), "cpu": platform.processor() or platform.machine(),
                      "jax": jax.__version__, "results": rows}, indent=1))


if __name__ == "__main__":
    main()

"""The operations of an AGRoL-MLP-41 block at paper size (batch 256 x 41 frames x 512 features),
each jit-compiled alone in JAX beside the same operation in PyTorch, forward only: the dense
GEMM, the frame mixing (``Conv1d(41, 41, 1)``), LayerNorm and SiLU. Shows where XLA's CPU code
is slower than PyTorch's (``docs/results.md``, "AGRoL-MLP beside the PyTorch original").
Needs PyTorch (the optional ``bench`` extra). Run it alone, pinned or not::

    .venv/bin/python tools/bench_cpu_ops.py [--threads 2]
    taskset -c 0 .venv/bin/python tools/bench_cpu_ops.py --threads 1

Prints one JSON object of median milliseconds (100 calls each).
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np


def _time_jax(f, *args, n: int = 100) -> float:
    f = jax.jit(f)
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _time_torch(f, *args, n: int = 100) -> float:
    import torch

    with torch.no_grad():
        f(*args)
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            f(*args)
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256 * 41, 512), np.float32)
    w = rng.standard_normal((512, 512), np.float32)
    k = rng.standard_normal((41, 41), np.float32)
    y = rng.standard_normal((256, 41, 512), np.float32)
    tx, tw, tk, ty = (torch.from_numpy(a) for a in (x, w, k, y))
    ms = {
        "dense_jax": _time_jax(lambda a, b: a @ b, x, w),
        "dense_torch": _time_torch(lambda a, b: a @ b, tx, tw),
        "frame_mix_jax": _time_jax(lambda k, y: jnp.einsum("gf,bfc->bgc", k, y), k, y),
        "frame_mix_torch": _time_torch(lambda k, y: F.conv1d(y, k[:, :, None]), tk, ty),
        "layer_norm_jax": _time_jax(lambda a: jax.nn.standardize(a, axis=-1), x),
        "layer_norm_torch": _time_torch(lambda a: F.layer_norm(a, (512,)), tx),
        "silu_jax": _time_jax(jax.nn.silu, x),
        "silu_torch": _time_torch(F.silu, tx),
    }
    print(json.dumps({f"{name}_ms": round(1e3 * t, 3) for name, t in ms.items()} | {"torch_threads": args.threads}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

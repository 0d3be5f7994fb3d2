"""MotionMAR efficiency: parameters, FLOPs per window and latency per new frame, beside the
paper's figures (42.36M parameters, 1.47 GFLOPs, 61.76 FPS).

    .venv/bin/python tools/bench_motionmar.py                     # the paper-size model
    .venv/bin/python tools/bench_motionmar.py --width 256 --depth 4 --heads 4 --vq-width 256 \\
        --vq-depth 2 --mrn-hidden 128                              # the small CPU model

Online use runs one 20-frame window per new frame (the last frame's pose is the output), so
the latency of one window at batch 1 is the latency per new frame and 1000 / latency is the
frames per second of a single stream. Weights are random (speed does not depend on them).
FLOPs are XLA's count for the compiled window function (a multiply-add counts 2).
``--threads 1`` pins XLA's CPU backend to one thread (set before JAX starts).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

PAPER = {"params_m": 42.36, "gflops": 1.47, "fps": 61.76}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--vq-width", type=int, default=512)
    ap.add_argument("--vq-depth", type=int, default=3)
    ap.add_argument("--mrn-hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1, help="windows per call (1 = one stream)")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0, help="XLA CPU threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={args.threads}")

    import jax
    import jax.numpy as jnp
    import numpy as np

    from mmar.eval.efficiency import count_params, flops, latency
    from mmar.models.motionmar import MotionMAR, infer_window, init_motionmar
    from mmar.models.vqvae import TemporalVQVAE
    from mmar.tasks.motionmar import MotionMARModelConfig, ar_config, vqvae_config

    m = MotionMARModelConfig(width=args.width, depth=args.depth, heads=args.heads, vq_width=args.vq_width,
                             vq_depth=args.vq_depth, mrn_hidden=args.mrn_hidden)
    model, vq = MotionMAR(ar_config(m)), TemporalVQVAE(vqvae_config(m))
    key = jax.random.PRNGKey(0)
    variables = init_motionmar(model, key)
    sp = jnp.asarray(np.random.default_rng(0).normal(size=(args.batch, 20, 54)), jnp.float32)
    pose = jnp.zeros((args.batch, 20, 132), jnp.float32)
    vq_vars = vq.init({"params": key, "dropout": key, "vq": key}, pose, None, sp)
    p = variables["params"]
    parts = {
        "vqvae": count_params(vq_vars["params"]),
        "man": count_params(p["transformer"]) + count_params(p["word_embed"]),
        "sac": count_params(p["sac"]),
        "mrn": count_params(p["mrn"]),
    }
    total = sum(parts.values())
    fn = jax.jit(lambda s: infer_window(model, variables, vq, vq_vars, s)["pose"][:, -1])
    gf = flops(lambda s: infer_window(model, variables, vq, vq_vars, s)["pose"][:, -1], sp) / 1e9 / args.batch
    lat = latency(fn, sp, iters=args.iters)
    out = {
        "device": str(jax.devices()[0]),
        "config": {k: getattr(args, k) for k in ("width", "depth", "heads", "vq_width", "vq_depth", "mrn_hidden",
                                                 "batch", "threads")},
        "params_m": round(total / 1e6, 3),
        "params_m_by_part": {k: round(v / 1e6, 3) for k, v in parts.items()},
        "gflops_per_window": round(gf, 3),
        "latency_ms_per_call": {k: round(v, 3) for k, v in lat.items()},
        "fps_single_stream": round(1000.0 * args.batch / lat["median_ms"], 1),
        "paper": PAPER,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

"""Training throughput (samples/s) of the sparse-to-full-body models: one jit-compiled
AdamW step on random data of the right shapes, timed after compilation.

    .venv/bin/python tools/bench_train.py --kind mem_mlp --window 41 --batch 256
    .venv/bin/python tools/bench_train.py --kind agrol_mlp --window 196 --batch 256

Prints the device, parameters, compile time, steps/s and samples/s. The data pipeline is left
out on purpose (it makes > 300,000 windows/s on one core, see docs/results.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", default="mem_mlp", choices=["mem_mlp", "agrol_mlp"])
    ap.add_argument("--window", type=int, default=41)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from mmar.models.mlp_vqvae import MLPVQVAE, MLPVQVAEConfig
    from mmar.models.agrol_mlp import AGRoLMLP, AGRoLMLPConfig
    from mmar.models.mem_mlp import MemMLP, MemMLPConfig

    if args.kind == "agrol_mlp":
        model = AGRoLMLP(AGRoLMLPConfig(window=args.window, dim=args.dim, depth=args.depth))
    else:
        model = MemMLP(MemMLPConfig(window=args.window, dim=args.dim, depth=args.depth))
    W, B = args.window, args.batch
    rng = np.random.default_rng(0)
    frames = W + (1 if args.kind == "mem_mlp" else 0)
    batch = {
        "sparse": jnp.asarray(rng.normal(size=(B, frames, 54)), jnp.float32),
        "rot6d": jnp.asarray(rng.normal(size=(B, frames, 22, 6)), jnp.float32),
        "joints": jnp.asarray(rng.normal(size=(B, frames, 22, 3)), jnp.float32),
    }
    key = jax.random.PRNGKey(0)
    if args.kind == "agrol_mlp":
        params = model.init(key, batch["sparse"])["params"]

        def loss_fn(p, b, k):
            pred = model.apply({"params": p}, b["sparse"])
            return jnp.mean(jnp.linalg.norm(pred - b["rot6d"], axis=-1))
    else:
        from mmar.models.mem_mlp import init_loss_uncertainty, mem_mlp_loss, training_memory

        vq = MLPVQVAE(MLPVQVAEConfig())
        vq_vars = vq.init(key, batch["rot6d"][:, :W], batch["sparse"][:, :W])
        params = {"model": model.init({"params": key, "memory": key}, batch["sparse"][:, 1:], None)["params"],
                  "s": init_loss_uncertainty()}

        def loss_fn(p, b, k):
            mem = training_memory(b["sparse"][:, :-1], b["rot6d"][:, :-1], vq, vq_vars)
            out = model.apply({"params": p["model"]}, b["sparse"][:, 1:], mem, train=True, rng=k)
            cur = {"rot6d": b["rot6d"][:, 1:], "joints": b["joints"][:, 1:], "sparse": b["sparse"][:, 1:]}
            return mem_mlp_loss(out, cur, p["s"])[0]

    tx = optax.adamw(3e-4, weight_decay=1e-4)
    opt = tx.init(params)

    @jax.jit
    def step(p, o, b, k):
        loss, g = jax.value_and_grad(loss_fn)(p, b, k)
        upd, o = tx.update(g, o, p)
        return optax.apply_updates(p, upd), o, loss

    t0 = time.perf_counter()
    params, opt, loss = step(params, opt, batch, key)
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(args.steps):
        params, opt, loss = step(params, opt, batch, jax.random.fold_in(key, i))
    jax.block_until_ready(loss)
    dt = time.perf_counter() - t0
    n = sum(x.size for x in jax.tree.leaves(params))
    print(json.dumps({"device": str(jax.devices()[0].device_kind), "kind": args.kind, "window": W,
                      "dim": args.dim, "depth": args.depth, "batch": B, "params": int(n),
                      "compile_s": round(compile_s, 1), "steps_per_s": round(args.steps / dt, 3),
                      "samples_per_s": round(args.steps * B / dt, 1)}))


if __name__ == "__main__":
    main()

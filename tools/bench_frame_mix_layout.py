"""Where AGRoL-MLP's frame mixing costs time: the paper-size AGRoL-MLP-41 training step
(width 512, 12 blocks, batch 256, forward, backward and AdamW; plain JAX, no Flax, so only the
layout changes) with the ``Conv1d(W, W, 1)`` over frames written three ways:

* ``einsum``: ``einsum("gf,bfc->bgc")``, as :class:`mmar.models.agrol_mlp.FrameMix` does; XLA
  puts the contracted frame axis in the middle and transposes around each dot;
* ``batched``: the kernel broadcast over the batch, a batched matmul per sample (what PyTorch's
  ``Conv1d`` does);
* ``time_major``: the whole network in ``(frames, batch, features)`` layout, so that the frame
  mixing is one GEMM ``(W, W) x (W, B * C)`` and the feature Linear stays one GEMM.

Prints one JSON line per variant: median step time of 20 steps, samples/s, and how many
transposes and copies the compiled HLO holds. Run it alone: timings under load are noise::

    .venv/bin/python tools/bench_frame_mix_layout.py [einsum batched time_major]
"""
from __future__ import annotations

import json
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

WINDOW, JOINTS, SPARSE = 41, 22, 54


def init(key, dim: int = 512, depth: int = 12) -> dict:
    keys = iter(jax.random.split(key, 3 * depth + 2))

    def uniform(shape, fan_in):  # PyTorch's default Linear / Conv1d initialisation
        return jax.random.uniform(next(keys), shape, jnp.float32, -fan_in ** -0.5, fan_in ** -0.5)

    block = lambda: {"k": uniform((WINDOW, WINDOW), WINDOW), "kb": uniform((WINDOW,), WINDOW),
                     "w": uniform((dim, dim), dim), "b": jnp.zeros(dim), "g0": jnp.ones(dim),
                     "b0": jnp.zeros(dim), "g1": jnp.ones(dim), "b1": jnp.zeros(dim)}
    return {"in_w": uniform((SPARSE, dim), SPARSE), "in_b": jnp.zeros(dim),
            "out_w": uniform((dim, JOINTS * 6), dim), "out_b": jnp.zeros(JOINTS * 6),
            "blocks": [block() for _ in range(depth)]}


def layer_norm(x, g, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) * jax.lax.rsqrt(v + 1e-6) * g + b


def mix_einsum(k, kb, y):  # y (B, F, C)
    return jnp.einsum("gf,bfc->bgc", k, y) + kb[:, None]


def mix_batched(k, kb, y):  # y (B, F, C), one matmul per sample
    return jnp.einsum("bgf,bfc->bgc", jnp.broadcast_to(k, (y.shape[0],) + k.shape), y) + kb[:, None]


def mix_time_major(k, kb, y):  # y (F, B, C), one GEMM
    return (k @ y.reshape(y.shape[0], -1)).reshape((k.shape[0],) + y.shape[1:]) + kb[:, None, None]


VARIANTS = {"einsum": (mix_einsum, False), "batched": (mix_batched, False), "time_major": (mix_time_major, True)}


def net(p, x, variant: str):
    """AGRoL's PureMLP, ``x (B, W, 54) -> (B, W, 22, 6)``, with the frame mixing of ``variant``."""
    mix, time_major = VARIANTS[variant]
    if time_major:
        x = jnp.swapaxes(x, 0, 1)
    h = x @ p["in_w"] + p["in_b"]
    for bl in p["blocks"]:
        h = h + jax.nn.silu(mix(bl["k"], bl["kb"], layer_norm(h, bl["g0"], bl["b0"])))
        h = h + jax.nn.silu(layer_norm(h, bl["g1"], bl["b1"]) @ bl["w"] + bl["b"])
    y = h @ p["out_w"] + p["out_b"]
    if time_major:
        y = jnp.swapaxes(y, 0, 1)
    return y.reshape(y.shape[:-1] + (JOINTS, 6))


def bench(variant: str, batch: int = 256, steps: int = 20) -> dict:
    params = init(jax.random.PRNGKey(0))
    tx = optax.adamw(1e-3)
    opt = tx.init(params)
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, WINDOW, SPARSE))
    target = jax.random.normal(jax.random.PRNGKey(2), (batch, WINDOW, JOINTS, 6))

    def step(p, o, x, t):
        loss, g = jax.value_and_grad(lambda p: jnp.mean(jnp.linalg.norm(net(p, x, variant) - t, axis=-1)))(p)
        u, o = tx.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt, x, target).compile()
    hlo = compiled.as_text()
    params, opt, loss = compiled(params, opt, x, target)
    jax.block_until_ready(loss)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        params, opt, loss = compiled(params, opt, x, target)
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {"variant": variant, "step_s": round(med, 4), "samples_per_s": round(batch / med, 1),
            "transposes_in_hlo": hlo.count(" transpose("), "copies_in_hlo": hlo.count(" copy(")}


if __name__ == "__main__":
    for name in sys.argv[1:] or list(VARIANTS):
        print(json.dumps(bench(name)), flush=True)

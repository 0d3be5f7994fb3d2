"""Compute accounting, mixed precision, gradient accumulation and profiling of the trainer
(mmar.train.compute, mmar.train.precision, mmar.train.loop)."""
from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _toy_task import ToyTask, flat_params, toy_config
from mmar.errors import ConfigError
from mmar.train import compile_step, estimate_step_cost, train
from mmar.train.compute import (COMPUTE_FILENAME, StepCost, device_peak_flops, jaxpr_flops, read_step_cost,
                                throughput)
from mmar.train.precision import cast_floating, with_compute_dtype


# --------------------------------------------------------------------------- counting FLOPs


def test_jaxpr_flops_counts_matmuls_convs_and_loop_trips():
    x, w = jnp.ones((64, 32)), jnp.ones((32, 16))
    mm = 2 * 64 * 32 * 16
    assert jaxpr_flops(jax.make_jaxpr(lambda a, b: jnp.tanh(a @ b))(x, w)) == mm
    # batched einsum: batch 3
    xb, wb = jnp.ones((3, 8, 5)), jnp.ones((3, 5, 7))
    assert jaxpr_flops(jax.make_jaxpr(lambda a, b: jnp.einsum("bij,bjk->bik", a, b))(xb, wb)) == 2 * 3 * 8 * 5 * 7

    def scanned(a, b):  # 10 trips: XLA's cost analysis counts the body once, we count 10 times
        def body(c, _):
            return jnp.tanh(c @ b[:, :32].T @ b[:, :32]), None
        return jax.lax.scan(body, a, None, length=10)[0]

    w2 = jnp.ones((32, 32))
    per_trip = 2 * (2 * 64 * 32 * 32)
    assert jaxpr_flops(jax.make_jaxpr(scanned)(x, w2)) == 10 * per_trip
    xla = jax.jit(scanned).lower(x, w2).compile().cost_analysis()
    xla = xla[0] if isinstance(xla, (list, tuple)) else xla
    assert xla["flops"] < 2 * per_trip  # the loop undercount this module works around

    # cond: the costlier branch
    def branchy(p, a):
        return jax.lax.cond(p, lambda v: v @ w, lambda v: v[:, :16] * 2.0, a)

    assert jaxpr_flops(jax.make_jaxpr(branchy)(True, x)) == mm
    # convolution: 2 * output size * in features * window
    img, ker = jnp.ones((2, 10, 10, 3)), jnp.ones((3, 3, 3, 4))
    conv = jax.make_jaxpr(lambda a, k: jax.lax.conv_general_dilated(a, k, (1, 1), "SAME",
                                                                    dimension_numbers=("NHWC", "HWIO", "NHWC")))
    assert jaxpr_flops(conv(img, ker)) == 2 * (2 * 10 * 10 * 4) * 3 * 9
    # gradients are counted too
    g = jax.make_jaxpr(jax.grad(lambda b, a: jnp.sum(jnp.tanh(a @ b))))(w, x)
    assert jaxpr_flops(g) == 2 * mm  # d/dw needs one backward matmul (no d/dx)


def test_device_peaks_and_throughput():
    assert device_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert device_peak_flops("NVIDIA H100 PCIe", "bfloat16") == 756e12
    assert device_peak_flops("NVIDIA H200") == 989e12
    assert device_peak_flops("NVIDIA A100-SXM4-80GB", "float32") == 156e12
    assert device_peak_flops("TPU v4") == 275e12
    assert device_peak_flops("TPU v5 lite") == 197e12
    assert device_peak_flops("TPU v5") == 459e12
    assert device_peak_flops("cpu") is None
    gpu = StepCost(flops=1e12, xla_flops=None, params=10, samples=64, tokens=64 * 100, devices=8,
                   device_kind="NVIDIA H100 80GB HBM3", compute_dtype="bfloat16", peak_flops_per_device=989e12)
    t = throughput(gpu, 2.0)
    assert t["samples_per_sec"] == 128 and t["tokens_per_sec"] == 12800 and t["step_time"] == 0.5
    assert t["mfu"] == pytest.approx(2e12 / (8 * 989e12))
    cpu = StepCost(flops=1e9, xla_flops=1e9, params=10, samples=8, tokens=None, devices=1, device_kind="cpu",
                   compute_dtype="float32", peak_flops_per_device=None)
    t = throughput(cpu, 4.0)
    assert "mfu" not in t and "tokens_per_sec" not in t and t["flops_per_sec"] == 4e9


def test_training_logs_cost_and_throughput(tmp_path):
    cfg = toy_config(steps=4, log_every=2)
    state, history = train(ToyTask(cfg), cfg, tmp_path)
    cost = read_step_cost(tmp_path)
    # one step of the toy MLP (8 -> 16 -> 1, batch 16): forward 2*16*(8*16+16*1) plus backward
    fwd = 2 * 16 * (8 * 16 + 16 * 1)
    assert fwd < cost.flops <= 3 * fwd
    assert cost.samples == 16 and cost.devices == 1 and cost.peak_flops_per_device is None
    assert cost.params == sum(v.size for v in flat_params(state.params).values())
    assert json.loads((tmp_path / COMPUTE_FILENAME).read_text())["compute_dtype"] == "float32"
    rows = [h for h in history if "train/loss" in h]
    assert rows and all(h["train/samples_per_sec"] == pytest.approx(16 * h["train/steps_per_sec"]) for h in rows)
    assert all("train/step_time" in h and "train/mfu" not in h for h in rows)  # no known CPU peak


def test_estimate_step_cost_matches_the_training_run(tmp_path):
    cfg = toy_config(steps=4)
    est = estimate_step_cost(cfg, ToyTask(cfg))
    train(ToyTask(cfg), cfg, tmp_path)
    assert est.flops == read_step_cost(tmp_path).flops and est.params == read_step_cost(tmp_path).params
    c = compile_step(ToyTask(cfg), cfg)
    state, metrics = c.step(c.state, c.next_batch())
    assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))


def test_profile_trace_is_written(tmp_path):
    cfg = toy_config(steps=4, profile_steps=(1, 3))
    train(ToyTask(cfg), cfg, tmp_path)
    traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
    assert traces, list((tmp_path / "profile").rglob("*"))
    with pytest.raises(ConfigError, match="profile_steps"):
        bad = toy_config(steps=4, profile_steps=(3, 1))
        train(ToyTask(bad), bad, tmp_path / "bad")


# --------------------------------------------------------------------------- mixed precision


class _Probe(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4, name="inner")(x)
        return h, h.dtype == jnp.bfloat16


def test_compute_dtype_policy():
    model = _Probe()
    x = jnp.ones((2, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    seen = {}

    def loss(params, extra, batch, rng, step):
        out, inner_bf16 = model.apply({"params": params}, batch["x"])
        seen["inner_bf16"], seen["out_dtype"], seen["batch_dtype"] = inner_bf16, out.dtype, batch["x"].dtype
        seen["param_dtype"] = params["inner"]["kernel"].dtype
        return jnp.mean(out ** 2), ({"m": jnp.mean(out)}, {"stats": {"s": jnp.ones(2, jnp.bfloat16)}})

    f = with_compute_dtype(loss, "bfloat16")
    extra = {"stats": {"s": jnp.zeros(2, jnp.float32)}}
    value, (metrics, new_extra) = jax.jit(f)(variables["params"], extra, {"x": x}, None, 0)
    assert seen == {"inner_bf16": True, "out_dtype": jnp.float32, "batch_dtype": jnp.float32,
                    "param_dtype": jnp.bfloat16}
    assert value.dtype == jnp.float32 and metrics["m"].dtype == jnp.float32
    assert new_extra["stats"]["s"].dtype == jnp.float32  # stored dtype kept
    grads = jax.grad(lambda p: f(p, extra, {"x": x}, None, 0)[0])(variables["params"])
    assert grads["inner"]["kernel"].dtype == jnp.float32  # fp32 master gradients
    assert with_compute_dtype(loss, "float32") is loss
    with pytest.raises(ConfigError, match="compute_dtype"):
        with_compute_dtype(loss, "float16")
    assert cast_floating({"a": jnp.ones(2), "i": jnp.ones(2, jnp.int32)}, jnp.bfloat16)["i"].dtype == jnp.int32


def test_bfloat16_training_tracks_float32(tmp_path):
    """bf16 compute with fp32 master weights: the loss falls, stays within 5% of fp32's after
    the same 20 steps, and params and optimizer state stay fp32."""
    runs = {}
    for dtype in ("float32", "bfloat16"):
        cfg = toy_config(steps=20, log_every=4, compute_dtype=dtype, optim=dict(ema_decay=None, lr=3e-2))
        state, history = train(ToyTask(cfg), cfg, tmp_path / dtype)
        runs[dtype] = (state, [h["train/loss"] for h in history if "train/loss" in h])
    (s16, l16), (s32, l32) = runs["bfloat16"], runs["float32"]
    assert l16[-1] < 0.5 * l16[0]
    assert abs(l16[-1] - l32[-1]) <= 0.05 * l32[-1]
    assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(s16.params))
    assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(s16.opt_state)
               if jnp.issubdtype(v.dtype, jnp.floating))
    assert read_step_cost(tmp_path / "bfloat16").compute_dtype == "bfloat16"


# --------------------------------------------------------------------------- gradient accumulation


def test_gradient_accumulation_equals_the_whole_batch(tmp_path):
    """Two (four) micro-batches of 8 (4) give the same update as one batch of 16 (a plain-mean
    loss without RNG: micro-batches draw their own random numbers), with the micro-batch loop
    scanned or unrolled (``train.grad_accum_unroll``)."""
    finals = {}
    for label, k, unroll in (("1", 1, 1), ("2", 2, 1), ("4", 4, 1), ("4 unrolled", 4, 4)):
        cfg = toy_config(steps=4, grad_accum=k, grad_accum_unroll=unroll, optim=dict(decay_steps=6))
        task = ToyTask(cfg, norm=False, noise=0.0)
        state, history = train(task, cfg, tmp_path / f"k{k}u{unroll}")
        finals[label] = (flat_params(state.params), [h["train/loss"] for h in history if "train/loss" in h])
        if k > 1:
            assert read_step_cost(tmp_path / f"k{k}u{unroll}").samples == 16
    for k in ("2", "4", "4 unrolled"):
        for name, v in finals["1"][0].items():
            np.testing.assert_allclose(finals[k][0][name], v, rtol=1e-5, atol=1e-6, err_msg=name)
    bad = toy_config(steps=2, grad_accum=3)
    with pytest.raises(ConfigError, match="grad_accum"):
        train(ToyTask(bad), bad, tmp_path / "bad")


def test_gradient_accumulation_threads_batch_stats(tmp_path):
    """With BatchNorm, each micro-batch updates the running statistics in turn (k updates)."""
    cfg = toy_config(steps=1, grad_accum=2, optim=dict(ema_decay=None))
    state, _ = train(ToyTask(cfg), cfg, tmp_path)
    mean = np.asarray(state.extra_vars["batch_stats"]["bn"]["mean"])
    assert np.all(np.isfinite(mean)) and np.abs(mean).max() > 0

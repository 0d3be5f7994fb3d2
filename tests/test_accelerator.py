"""Checks that only mean something on a GPU or TPU (``pytest -m accelerator``; skipped on CPU).
``tools/accelerator_check.py`` runs them."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from _toy_task import ToyTask, toy_config
from mmar.train import compile_step, train
from mmar.train.compute import device_peak_flops, read_step_cost

pytestmark = [
    pytest.mark.accelerator,
    pytest.mark.skipif(jax.default_backend() == "cpu", reason="needs a GPU or TPU"),
]


def test_the_device_has_a_known_peak():
    kind = jax.devices()[0].device_kind
    assert device_peak_flops(kind, "bfloat16"), f"add {kind!r} to mmar.train.compute.DEVICE_PEAKS"


def test_bf16_step_multiplies_in_bf16():
    cfg = toy_config(steps=2, compute_dtype="bfloat16")
    c = compile_step(ToyTask(cfg), cfg)
    hlo = c.step.as_text()
    assert "bf16" in hlo and "dot" in hlo


def test_bf16_training_logs_mfu(tmp_path):
    cfg = toy_config(steps=8, log_every=4, compute_dtype="bfloat16", optim=dict(lr=3e-2))
    state, history = train(ToyTask(cfg), cfg, tmp_path)
    rows = [h for h in history if "train/loss" in h]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    assert all(0 < h["train/mfu"] < 1 for h in rows)
    assert read_step_cost(tmp_path).peak_flops_per_device is not None
    assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(state.params))

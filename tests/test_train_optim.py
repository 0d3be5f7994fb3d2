"""The optax-built learning-rate schedules equal mmar's original hand-written ones (mmar.train.optim)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar.errors import ConfigError
from mmar.train.config import OptimConfig
from mmar.train.optim import make_optimizer, make_schedule


def reference_schedule(cfg: OptimConfig, total_steps: int):
    """mmar's schedule before it was built from optax's, copied verbatim as the reference."""
    lr = float(cfg.lr)
    warmup = int(cfg.warmup_steps)

    def warm(step):
        if warmup == 0:
            return jnp.ones((), jnp.float32)
        return jnp.minimum(1.0, step.astype(jnp.float32) / warmup)

    kind = cfg.schedule
    if kind == "constant":

        def sched(step):
            step = jnp.asarray(step)
            return lr * warm(step)

    elif kind == "cosine":
        decay_steps = int(cfg.decay_steps if cfg.decay_steps is not None else total_steps)
        span = max(decay_steps - warmup, 1)
        end = lr * float(cfg.end_lr_factor)

        def sched(step):
            step = jnp.asarray(step)
            t = jnp.clip((step.astype(jnp.float32) - warmup) / span, 0.0, 1.0)
            cos = end + (lr - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
            return jnp.where(step < warmup, lr * warm(step), cos)

    elif kind == "step":
        bounds = jnp.asarray(sorted(int(b) for b in cfg.boundaries), jnp.int32)
        factor = float(cfg.decay_factor)

        def sched(step):
            step = jnp.asarray(step)
            n = jnp.sum(step >= bounds) if bounds.size else 0
            return lr * warm(step) * factor**n

    return sched


TOTAL = 2000
CONFIGS = {
    # cosine
    "cos-default": OptimConfig(),
    "cos-warmup": OptimConfig(lr=3e-4, warmup_steps=100, end_lr_factor=0.05),
    "cos-long-warmup-to-0": OptimConfig(lr=1e-3, warmup_steps=777, decay_steps=1900),
    "cos-no-warmup": OptimConfig(lr=2e-3, warmup_steps=0, end_lr_factor=0.1),
    "cos-decay-before-end": OptimConfig(lr=1e-3, warmup_steps=10, decay_steps=500, end_lr_factor=0.01),
    "cos-decay-past-end": OptimConfig(lr=1e-3, warmup_steps=50, decay_steps=5000),
    "cos-decay<warmup": OptimConfig(lr=1e-3, warmup_steps=300, decay_steps=100, end_lr_factor=0.2),
    "cos-decay=warmup": OptimConfig(lr=1e-3, warmup_steps=300, decay_steps=300),
    "cos-decay=warmup+1": OptimConfig(lr=1e-3, warmup_steps=300, decay_steps=301, end_lr_factor=0.5),
    "cos-decay=0": OptimConfig(lr=1e-3, warmup_steps=0, decay_steps=0),
    "cos-end=1": OptimConfig(lr=1e-3, warmup_steps=20, end_lr_factor=1.0),
    "cos-end>1": OptimConfig(lr=1e-3, warmup_steps=20, end_lr_factor=3.0),
    "cos-warmup=1": OptimConfig(lr=0.1, warmup_steps=1, decay_steps=1000),
    "cos-lr=0": OptimConfig(lr=0.0, warmup_steps=10),
    # step
    "step-no-boundaries": OptimConfig(lr=1e-3, schedule="step"),
    "step": OptimConfig(lr=1e-3, schedule="step", boundaries=(500, 1000, 1500), decay_factor=0.5),
    "step-warmup": OptimConfig(lr=5e-4, warmup_steps=333, schedule="step", boundaries=(700, 1400), decay_factor=0.3),
    "step-unsorted-duplicates": OptimConfig(lr=1e-3, schedule="step", boundaries=(1200, 300, 1200, 300, 300)),
    "step-in-warmup": OptimConfig(lr=1e-3, warmup_steps=400, schedule="step", boundaries=(0, 200, 2000, 5000)),
    "step-factor-0": OptimConfig(lr=1e-3, warmup_steps=5, schedule="step", boundaries=(1000,), decay_factor=0.0),
    "step-factor>1": OptimConfig(lr=1e-3, schedule="step", boundaries=(100, 200), decay_factor=7.0),
    "step-many": OptimConfig(lr=1e-3, warmup_steps=7, schedule="step", boundaries=(100, 200, 300, 400, 500), decay_factor=0.3),
    # constant
    "constant": OptimConfig(lr=1e-3, schedule="constant"),
    "constant-warmup": OptimConfig(lr=3e-4, warmup_steps=1999, schedule="constant"),
    "constant-warmup-past-end": OptimConfig(lr=3e-4, warmup_steps=3000, schedule="constant"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_schedule_equals_reference_at_every_step(name):
    cfg = CONFIGS[name]
    steps = jnp.arange(TOTAL + 300, dtype=jnp.int32)  # past the end of training as well
    new = jax.jit(jax.vmap(make_schedule(cfg, TOTAL)))(steps)
    ref = jax.jit(jax.vmap(reference_schedule(cfg, TOTAL)))(steps)
    assert new.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(new), np.asarray(ref), rtol=1e-6, atol=0)
    if cfg.schedule != "step":  # same float32 rounding: training is bit for bit the same
        np.testing.assert_array_equal(np.asarray(new), np.asarray(ref))
    # unbatched Python ints (as in the tests and the logs) and optax's int32 step counter
    for s in (0, 1, cfg.warmup_steps, cfg.warmup_steps + 1, TOTAL - 1, TOTAL):
        want = float(reference_schedule(cfg, TOTAL)(s))
        assert float(make_schedule(cfg, TOTAL)(s)) == pytest.approx(want, rel=1e-6, abs=0)
        assert float(make_schedule(cfg, TOTAL)(jnp.int32(s))) == pytest.approx(want, rel=1e-6, abs=0)


def test_schedule_exact_values_and_errors():
    cos = make_schedule(OptimConfig(lr=1.0, warmup_steps=4, decay_steps=4, end_lr_factor=0.25), 10)
    assert [float(cos(s)) for s in (0, 1, 2, 4, 5, 9)] == [0.0, 0.25, 0.5, 1.0, 0.25, 0.25]
    with pytest.raises(ConfigError, match="optim.warmup_steps"):
        make_schedule(OptimConfig(warmup_steps=-1), 10)
    with pytest.raises(ConfigError, match="optim.decay_factor"):
        make_schedule(OptimConfig(schedule="step", boundaries=(3,), decay_factor=-0.5), 10)
    with pytest.raises(ConfigError, match="optim.schedule"):
        make_schedule(OptimConfig(schedule="exponential"), 10)


def test_optimizer_uses_the_schedule():
    # A constant gradient of 1: Adam's direction is 1 (up to float32 bias correction), the update is -lr.
    cfg = OptimConfig(lr=0.5, warmup_steps=3, schedule="step", boundaries=(1,), decay_factor=0.5, grad_clip=None)
    tx, schedule = make_optimizer(cfg, 10)
    p = {"w": jnp.zeros(())}
    state = tx.init(p)
    for s in range(4):
        upd, state = tx.update({"w": jnp.ones(())}, state, p)
        assert float(upd["w"]) == pytest.approx(-float(schedule(s)), rel=1e-4)


def test_ema_decay_warms_up():
    """``min(decay, (1 + t) / (10 + t))``: the average forgets the initial weights early."""
    from mmar.train.optim import ema_decay_at

    assert float(ema_decay_at(0.999, 0)) == pytest.approx(0.1)
    assert float(ema_decay_at(0.999, 90)) == pytest.approx(0.91)
    assert float(ema_decay_at(0.999, 10**6)) == pytest.approx(0.999)
    assert ema_decay_at(0.999, 5, warmup=False) == 0.999
    # the initial weights' share after 1,000 updates: 0.999^1000 = 37% without warm-up
    share = np.prod([float(ema_decay_at(0.999, t)) for t in range(1000)])
    assert share < 0.01


def test_frozen_params_get_no_update_and_bad_patterns_are_named():
    from mmar.train.optim import frozen_labels

    params = {"encoder": {"kernel": jnp.ones((3, 2))}, "decoder": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones(3)}}
    assert frozen_labels(params, ("^encoder/",)) == {"encoder": {"kernel": "frozen"},
                                                     "decoder": {"kernel": "train", "bias": "train"}}
    tx, _ = make_optimizer(OptimConfig(lr=0.1, frozen=("^encoder/",), weight_decay=0.1), 10)
    state = tx.init(params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    updates, _ = tx.update(grads, state, params)
    assert np.all(np.asarray(updates["encoder"]["kernel"]) == 0)
    assert np.all(np.asarray(updates["decoder"]["kernel"]) < 0)
    with pytest.raises(ConfigError, match=r"\['\^decoder_x/'\] match no param"):
        tx2, _ = make_optimizer(OptimConfig(frozen=("^decoder_x/",)), 10)
        tx2.init(params)
    with pytest.raises(ConfigError, match="freeze every param"):
        make_optimizer(OptimConfig(frozen=("coder",)), 10)[0].init(params)
    with pytest.raises(ConfigError, match="bad regular expression"):
        make_optimizer(OptimConfig(frozen=("(",)), 10)

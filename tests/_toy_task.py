"""A tiny deterministic regression task for the trainer tests (not a test module)."""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmar.train.config import Config, OptimConfig, TrainConfig
from mmar.train.loop import StatefulIterator


@dataclasses.dataclass
class ToyModelConfig:
    width: int = 16
    dim: int = 8


class MLP(nn.Module):
    width: int
    norm: bool = True

    @nn.compact
    def __call__(self, x, train: bool = True):
        # no bias before BatchNorm (its gradient is zero; Adam would amplify rounding noise)
        h = nn.Dense(self.width, use_bias=not self.norm, name="hidden")(x)
        if self.norm:
            h = nn.BatchNorm(use_running_average=not train, momentum=0.9, name="bn")(h)
        h = nn.relu(h)
        h = h + nn.Embed(4, self.width, name="pos_embed")(jnp.zeros(x.shape[:1], jnp.int32))
        return nn.Dense(1, name="out")(h)[..., 0]


@functools.partial(jax.jit, static_argnums=0)
def _eval_mse(model, params, extra_vars, x, y):
    pred = model.apply({"params": params, **extra_vars}, x, train=False)
    return jnp.mean((pred - y) ** 2)


def make_batch(seed: int, index: int, batch_size: int, dim: int) -> dict[str, np.ndarray]:
    """Batch ``index`` of the stream: a fixed linear target plus noise."""
    rng = np.random.default_rng([seed, index])
    x = rng.normal(size=(batch_size, dim)).astype(np.float32)
    w = np.linspace(-1.0, 1.0, dim, dtype=np.float32)
    y = (x @ w + 0.1 * rng.normal(size=batch_size)).astype(np.float32)
    return {"x": x, "y": y}


class ToyTask:
    """MLP regression on ``make_batch``; the loss uses the step RNG (input noise).

    ``nan_at``: from this step on the loss is NaN. ``norm=False``: no BatchNorm (a loss that is a
    plain mean over the batch, so micro-batches add up to the whole batch exactly); ``noise``: the
    scale of the input noise drawn from the step RNG. ``on_batch_sharding``: called (at trace
    time) with the sharding of ``batch['x']`` inside the train step.
    """

    @classmethod
    def default_config(cls) -> Config:
        return Config(model=ToyModelConfig())

    def __init__(self, cfg: Config, nan_at: int | None = None, on_batch_sharding=None, seekable: bool = False,
                 norm: bool = True, noise: float = 0.01):
        self.cfg = cfg
        self.noise = noise
        self.model = MLP(cfg.model.width, norm=norm)
        self.nan_at = nan_at
        self.on_batch_sharding = on_batch_sharding
        self.seekable = seekable
        self.iterators_made: list[object] = []

    def init(self, rng, batch):
        return self.model.init(rng, batch["x"], train=False)

    def loss(self, params, extra_vars, batch, rng, step):
        if self.on_batch_sharding is not None:
            jax.debug.inspect_array_sharding(batch["x"], callback=self.on_batch_sharding)
        x = batch["x"] + self.noise * jax.random.normal(rng, batch["x"].shape)
        pred, new_vars = self.model.apply({"params": params, **extra_vars}, x, train=True, mutable=["batch_stats"])
        mse = jnp.mean((pred - batch["y"]) ** 2)
        loss = mse
        if self.nan_at is not None:
            loss = loss + jnp.where(step >= self.nan_at, jnp.nan, 0.0)
        return loss, ({"mse": mse}, new_vars)

    def train_iterator(self, seed, start_state):
        per_process = self.cfg.train.batch_size // jax.process_count()
        dim = self.cfg.model.dim

        if self.seekable:

            def factory(start):
                i = start
                while True:
                    yield make_batch(seed, i, per_process, dim)
                    i += 1

        else:

            def factory():
                i = 0
                while True:
                    if i == 1:
                        _gate()
                    yield make_batch(seed, i, per_process, dim)
                    i += 1

        it = StatefulIterator(factory, seekable=self.seekable)
        self.iterators_made.append(start_state)
        return it

    def evaluate(self, params, extra_vars):
        b = make_batch(12345, 0, 64, self.cfg.model.dim)
        return {"val_mse": float(_eval_mse(self.model, params, extra_vars, b["x"], b["y"]))}


def _gate() -> None:
    """With ``$MMAR_TOY_GATE`` set (a directory): say ``started`` there, then wait for ``go``
    (lets a test hold a training process at its second batch, with the work directory locked)."""
    gate = os.environ.get("MMAR_TOY_GATE")
    if not gate:
        return
    Path(gate, "started").touch()
    deadline = time.time() + 300
    while not Path(gate, "go").exists() and time.time() < deadline:
        time.sleep(0.05)


# ``cfg.task = "_toy_task"`` names this module as the task (mmar.tasks.task_class)
TASK = ToyTask


def toy_config(**train_kw) -> Config:
    optim_kw = train_kw.pop("optim", {})
    t = dict(steps=8, batch_size=16, seed=0, log_every=2, eval_every=0, ckpt_every=4, keep_checkpoints=2, progress=False)
    t.update(train_kw)
    o = dict(lr=1e-2, warmup_steps=2, schedule="cosine", weight_decay=1e-4, grad_clip=1.0, ema_decay=0.9)
    o.update(optim_kw)
    return Config(name="toy", model=ToyModelConfig(), optim=OptimConfig(**o), train=TrainConfig(**t))


def flat_params(tree) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)}

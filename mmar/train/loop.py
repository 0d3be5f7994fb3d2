"""The generic training loop every mmar model uses.

A model plugs in by implementing the :class:`Task` protocol::

    class MyTask:
        def init(self, rng, batch) -> dict:
            # Flax variables: {'params': ..., 'batch_stats': ..., ...}
        def loss(self, params, extra_vars, batch, rng, step):
            # -> (scalar loss, (metrics: dict[str, scalar], new_extra_vars or None))
        def train_iterator(self, seed, start_state):
            # -> iterator of this process's batches (dicts of numpy arrays, leading axis =
            #    train.batch_size / process count) with get_state() / set_state(state).
        def evaluate(self, params, extra_vars) -> dict[str, float]:   # optional
        def post_update(self, params, extra_vars, rng, step):          # optional, traced
            # -> (params, extra_vars) after the optimizer update (e.g. dead-code revival)

``init`` and ``loss`` are traced under ``jax.jit``; ``batch`` inside them is the global batch.
``step`` is the number of updates done before this one (0-based). ``start_state`` is the saved
iterator state when resuming (None otherwise); tasks may ignore it, the trainer also calls
``set_state`` with it. Grain ``DataLoader``/``DatasetIterator`` iterators qualify directly; a
plain Python iterator can be wrapped in :class:`StatefulIterator`. ``new_extra_vars`` may hold only the collections that changed (merged into the old ones).
``evaluate`` receives the EMA
weights when ``optim.ema_decay`` is set, the live weights otherwise.

``train(task, cfg, workdir) -> (TrainState, history)``:

1. saves ``cfg`` to ``workdir/config.json``; builds the ('data', 'fsdp') mesh;
2. builds the state (params replicated, or FSDP-sharded by rule with ``train.fsdp``) with a
   jitted init placed by ``out_shardings`` — or, when ``workdir/checkpoints`` has a checkpoint,
   restores params, optimizer state, EMA, extra collections, RNG and data-iterator position
   from the latest one and continues from its step;
3. runs ONE jit-compiled train step (state donated, explicit in/out shardings, batch split over
   all devices) ``train.steps`` times in total, with a rich progress bar (steps/s, loss);
4. every ``log_every`` steps logs the mean train metrics (plus lr, grad_norm, steps_per_sec) to
   TensorBoard (``workdir/tb``) and the history; every ``eval_every`` steps and at the end runs
   ``evaluate`` and logs ``eval/*``; keeps the best checkpoint by ``train.best_metric``;
5. saves a checkpoint every ``ckpt_every`` steps and at the end (async, keep-N);
6. raises :class:`TrainingDivergedError` naming the step when the loss or the gradient norm
   becomes NaN/Inf. The step that produced them is not applied (the state stays the last finite
   one) and no checkpoint is written after it. Divergence is checked whenever metrics are
   fetched (log, eval and checkpoint steps), so it surfaces at most ``log_every`` steps late.

``history`` is a list of dicts ``{'step': s, 'train/loss': ..., ...}`` and
``{'step': s, 'eval/<name>': ...}`` for this call of ``train``.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmar.errors import ConfigError, MmarError
from mmar.train import sharding as shd
from mmar.train.checkpoint import CheckpointManager
from mmar.train.config import Config, config_to_dict, save_config
from mmar.train.logging import MetricWriter, TrainProgress
from mmar.train.optim import ema_update, make_optimizer

__all__ = ["Task", "TrainState", "StatefulIterator", "TrainingDivergedError", "DataExhaustedError", "train"]

log = logging.getLogger("mmar.train")


class TrainingDivergedError(MmarError, FloatingPointError):
    """The loss or the gradients became NaN/Inf. ``step`` is the 0-based step at fault."""

    def __init__(self, message: str, step: int):
        self.step = step
        super().__init__(message)


class DataExhaustedError(MmarError):
    """The training iterator ended before ``train.steps`` steps."""


@runtime_checkable
class Task(Protocol):
    """What a model provides to :func:`train` (``evaluate`` is optional; see module doc)."""

    def init(self, rng: jax.Array, batch: Any) -> Any: ...

    def loss(
        self, params: Any, extra_vars: Any, batch: Any, rng: jax.Array, step: jax.Array
    ) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]: ...

    def train_iterator(self, seed: int, start_state: Any | None) -> Iterator[Any]: ...


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree saved whole in checkpoints."""

    step: jax.Array  # int32 scalar: updates done
    params: Any
    extra_vars: Any  # non-trainable collections ('batch_stats', 'vq', ...), dict
    opt_state: Any
    ema_params: Any  # None when optim.ema_decay is None
    rng: jax.Array  # uint32[2] key, split once per step


class StatefulIterator:
    """Make a plain Python iterator checkpointable.

    ``factory()`` must return a fresh iterator yielding the same sequence every time; the state
    is the number of items consumed and ``set_state`` replays that many. With
    ``seekable=True`` the factory is called as ``factory(start)`` and must start at item
    ``start`` (no replay).
    """

    def __init__(self, factory: Callable[..., Iterator[Any]], seekable: bool = False):
        self._factory = factory
        self._seekable = seekable
        self._consumed = 0
        self._it = factory(0) if seekable else factory()

    def __iter__(self) -> "StatefulIterator":
        return self

    def __next__(self) -> Any:
        item = next(self._it)
        self._consumed += 1
        return item

    def get_state(self) -> dict:
        return {"consumed": self._consumed}

    def set_state(self, state: dict) -> None:
        n = int(state["consumed"])
        if self._seekable:
            self._it = self._factory(n)
        else:
            self._it = self._factory()
            for _ in range(n):
                next(self._it)
        self._consumed = n


# --------------------------------------------------------------------------- helpers


def _check_cfg(cfg: Config) -> None:
    t = cfg.train
    for name in ("steps", "batch_size", "log_every"):
        if int(getattr(t, name)) <= 0:
            raise ConfigError(f"train.{name}: must be > 0, got {getattr(t, name)}")
    for name in ("eval_every", "ckpt_every"):
        if int(getattr(t, name)) < 0:
            raise ConfigError(f"train.{name}: must be >= 0, got {getattr(t, name)}")
    if int(t.keep_checkpoints) < 1:
        raise ConfigError(f"train.keep_checkpoints: must be >= 1, got {t.keep_checkpoints}")
    if t.batch_size % jax.process_count():
        raise ConfigError(f"train.batch_size: {t.batch_size} does not divide over {jax.process_count()} processes")


def _check_iterator(it: Any) -> None:
    for attr in ("get_state", "set_state", "__next__"):
        if not callable(getattr(it, attr, None)):
            raise ConfigError(
                f"Task.train_iterator must return an iterator with get_state()/set_state() "
                f"(missing {attr}); wrap plain iterators in mmar.train.loop.StatefulIterator"
            )


def _next_batch(it: Any, step: int) -> Any:
    try:
        return next(it)
    except StopIteration:
        raise DataExhaustedError(f"the training iterator ended before step {step}") from None


def _check_batch(batch: Any, cfg: Config) -> None:
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        raise ConfigError("the training iterator yielded an empty batch")
    want = cfg.train.batch_size // jax.process_count()
    for x in leaves:
        n = np.shape(x)[0] if np.ndim(x) else None
        if n != want:
            raise ConfigError(
                f"train.batch_size: expected a leading batch axis of {want} per process "
                f"(global {cfg.train.batch_size}), the iterator yielded {np.shape(x)}"
            )


def _to_float(x: Any) -> float:
    return float(np.asarray(x))


# --------------------------------------------------------------------------- train


def train(task: Task, cfg: Config, workdir: str | Path) -> tuple[TrainState, list[dict[str, Any]]]:
    """Train ``task`` as configured; resumes from ``workdir`` when it has a checkpoint."""
    shd.maybe_initialize_distributed()
    _check_cfg(cfg)
    tcfg, ocfg = cfg.train, cfg.optim
    workdir = Path(workdir).absolute()
    is_main = jax.process_index() == 0
    if is_main:
        save_config(cfg, workdir)
    cfg_dict = config_to_dict(cfg)

    mesh = shd.make_mesh(tcfg.num_devices, tcfg.mesh_shape, tcfg.fsdp)
    tx, schedule = make_optimizer(ocfg, tcfg.steps)
    ema_decay = ocfg.ema_decay
    ckpt = CheckpointManager(
        workdir, max_to_keep=tcfg.keep_checkpoints, async_save=tcfg.async_checkpoint, best_mode=tcfg.best_mode
    )
    writer = MetricWriter(workdir / "tb", enabled=is_main)
    try:
        return _run(task, cfg, cfg_dict, mesh, tx, schedule, ema_decay, ckpt, writer, is_main)
    finally:
        try:
            ckpt.close()
        finally:
            writer.close()


def _run(task, cfg, cfg_dict, mesh, tx, schedule, ema_decay, ckpt, writer, is_main):
    tcfg = cfg.train
    total = int(tcfg.steps)
    has_eval = callable(getattr(task, "evaluate", None))
    if tcfg.best_metric and not has_eval:
        log.warning("train.best_metric=%r is set but the task has no evaluate(): no best checkpoint", tcfg.best_metric)

    # ---- data + where to start
    start_step = ckpt.latest_step()
    data_state = ckpt.data_state(start_step) if start_step is not None else None
    it = task.train_iterator(int(tcfg.seed), data_state)
    _check_iterator(it)
    if data_state is not None:
        it.set_state(data_state)
    step = int(start_step or 0)
    batch = _next_batch(it, step)  # the batch of this step; also gives the shapes for init

    # ---- state
    def init_state(rng: jax.Array, batch: Any) -> TrainState:
        init_rng, train_rng = jax.random.split(rng)
        variables = flax.core.unfreeze(task.init(init_rng, batch))
        if "params" not in variables:
            raise ConfigError("Task.init must return Flax variables with a 'params' collection")
        params = variables.pop("params")
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            extra_vars=dict(variables),
            opt_state=tx.init(params),
            ema_params=jax.tree_util.tree_map(jnp.copy, params) if ema_decay is not None else None,
            rng=train_rng,
        )

    rng0 = jax.random.PRNGKey(int(tcfg.seed))
    _check_batch(batch, cfg)
    gbatch = shd.shard_batch(batch, mesh)
    abstract = jax.eval_shape(init_state, rng0, gbatch)
    shardings = shd.state_shardings(abstract, mesh, fsdp=tcfg.fsdp, min_size=tcfg.fsdp_min_size)
    if start_step is not None:
        target = jax.tree_util.tree_map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
        )
        state = ckpt.restore(target, start_step).state
        log.info("resumed from %s at step %d", ckpt.latest_dir, start_step)
        if step >= total:
            log.info("checkpoint at step %d >= train.steps=%d: nothing to train", step, total)
            return state, []
    else:
        state = jax.jit(init_state, out_shardings=shardings)(rng0, gbatch)

    # ---- the train step
    def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        rng, step_rng = jax.random.split(state.rng)

        def loss_fn(params):
            return task.loss(params, state.extra_vars, batch, step_rng, state.step)

        (loss, (metrics, new_extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        extra_vars = {**state.extra_vars, **flax.core.unfreeze(new_extra or {})}
        if hasattr(task, "post_update"):
            params, extra_vars = task.post_update(params, extra_vars, jax.random.fold_in(step_rng, 1), state.step)
        new = state.replace(
            step=state.step + 1,
            params=params,
            extra_vars=extra_vars,
            opt_state=opt_state,
            ema_params=ema_update(state.ema_params, params, ema_decay) if ema_decay is not None else None,
            rng=rng,
        )
        # A non-finite step is not applied: keep the last finite state.
        new = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, state)
        out = {k: jnp.mean(jnp.asarray(v, jnp.float32)) for k, v in (metrics or {}).items()}
        out.update(loss=jnp.asarray(loss, jnp.float32), grad_norm=grad_norm, lr=schedule(state.step), finite=finite)
        return new, out

    step_fn = jax.jit(
        train_step,
        in_shardings=(shardings, shd.batch_sharding(mesh)),
        out_shardings=(shardings, shd.replicated(mesh)),
        donate_argnums=(0,),
    )

    # ---- loop
    pending: list[tuple[int, Any]] = []  # (0-based step, metrics) since the last log
    fetched_upto = 0  # pending[:fetched_upto] are host values already checked

    def check_pending() -> None:
        nonlocal fetched_upto
        if fetched_upto == len(pending):
            return
        host = jax.device_get([m for _, m in pending[fetched_upto:]])
        for j, m in enumerate(host):
            s, _ = pending[fetched_upto + j]
            pending[fetched_upto + j] = (s, m)
            if not bool(m["finite"]):
                loss, gnorm = float(m["loss"]), float(m["grad_norm"])
                what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {gnorm}"
                raise TrainingDivergedError(
                    f"training diverged at step {s}: {what}; the step was not applied and no later "
                    f"checkpoint is saved (workdir {ckpt.workdir}, last checkpoint: step {ckpt.latest_step()})",
                    step=s,
                )
        fetched_upto = len(pending)

    def eval_params(st: TrainState) -> Any:
        return st.ema_params if ema_decay is not None else st.params

    t_last, step_last = time.perf_counter(), step
    with TrainProgress(total, start=step, enabled=is_main and tcfg.progress) as bar:
        while step < total:
            state, metrics = step_fn(state, gbatch)
            pending.append((step, metrics))
            step += 1
            last = step == total
            do_log = step % tcfg.log_every == 0 or last
            do_ckpt = (tcfg.ckpt_every > 0 and step % tcfg.ckpt_every == 0) or last
            do_eval = has_eval and ((tcfg.eval_every > 0 and step % tcfg.eval_every == 0) or last)
            if do_log or do_ckpt or do_eval:
                check_pending()
            if do_log:
                now = time.perf_counter()
                rate = (step - step_last) / max(now - t_last, 1e-9)
                t_last, step_last = now, step
                names = [k for k in pending[0][1] if k != "finite"]
                mean = {k: float(np.mean([_to_float(m[k]) for _, m in pending])) for k in names}
                mean["steps_per_sec"] = rate
                writer.scalars(step, mean, "train")
                bar.update(step, rate, mean.get("loss"))
                pending.clear()
                fetched_upto = 0
            else:
                bar.update(step)
            if do_ckpt:
                ckpt.save(step, state, it.get_state(), cfg_dict)
            if do_eval:
                results = {k: _to_float(v) for k, v in task.evaluate(eval_params(state), state.extra_vars).items()}
                writer.scalars(step, results, "eval")
                if tcfg.best_metric:
                    if tcfg.best_metric not in results:
                        raise ConfigError(
                            f"train.best_metric: {tcfg.best_metric!r} is not an eval metric (have {sorted(results)})"
                        )
                    ckpt.save_best(step, state, it.get_state(), tcfg.best_metric, results[tcfg.best_metric], cfg_dict)
            if do_log or do_eval:
                writer.flush()
            if not last:
                batch = _next_batch(it, step)
                gbatch = shd.shard_batch(batch, mesh)
    ckpt.wait()
    return state, writer.history

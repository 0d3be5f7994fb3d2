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

``train(task, cfg, workdir, allow_config_change=False) -> (TrainState, history)``:

1. locks the work directory (``workdir/.lock``, held until ``train`` returns: a second
   ``train`` on the same directory fails at once with :class:`WorkdirBusyError`); when the run
   has checkpoints, compares ``cfg`` with the config it was trained with (its ``config.json``,
   else the newest checkpoint's) and refuses a changed config with :class:`ConfigError` naming
   the fields, unless ``allow_config_change`` (see :func:`mmar.train.config.resume_conflicts`:
   the loop's own fields and ``train.steps`` may change); nothing is written before these checks;
2. builds the ('data', 'fsdp') mesh and the state (params replicated, or FSDP-sharded by rule
   with ``train.fsdp``) with a jitted init placed by ``out_shardings`` — or, when
   ``workdir/checkpoints`` has a checkpoint, restores params, optimizer state, EMA, extra
   collections, RNG and data-iterator position from the latest one, logs (INFO) and prints on
   stderr (process 0) the one line ``resumed from step N (<checkpoint dir>)`` and continues
   from step N. Only then is ``cfg`` written to ``workdir/config.json`` (atomically), with its
   ``config_history``: which steps ran under which config. When the step resumed from was an
   evaluation step whose evaluation did not complete (interrupted; ``workdir/evals.jsonl``
   records each completed one), that evaluation (and the best checkpoint) is done first;
3. compiles ONE train step ahead of time (state donated, explicit in/out shardings, batch split
   over all devices; ``train.compute_dtype`` and ``train.grad_accum``), writes its cost
   (:mod:`mmar.train.compute`: FLOPs by XLA and by the jaxpr, parameters, samples) to
   ``workdir/compute.json`` and runs it ``train.steps`` times in total, with a rich progress bar
   (steps/s, samples/s, MFU, loss); ``train.profile_steps=(a, b)`` records a ``jax.profiler``
   trace of steps a..b-1 in ``workdir/profile``;
4. every ``log_every`` steps logs the mean train metrics (plus lr, grad_norm and the throughput
   of :func:`mmar.train.compute.throughput`: steps_per_sec, step_time, samples_per_sec,
   tokens_per_sec, flops_per_sec and, where the device's peak is known, mfu) to TensorBoard
   (``workdir/tb``) and the history; every ``eval_every`` steps and at the end runs
   ``evaluate`` and logs ``eval/*``; keeps the best checkpoint by ``train.best_metric``;
5. saves a checkpoint every ``ckpt_every`` steps and at the end (async, keep-N);
6. raises :class:`TrainingDivergedError` naming the step when the loss or the gradient norm
   becomes NaN/Inf. The step that produced them is not applied (the state stays the last finite
   one) and no checkpoint is written after it. Divergence is checked whenever metrics are
   fetched (log, eval and checkpoint steps), so it surfaces at most ``log_every`` steps late.

``history`` is a list of dicts ``{'step': s, 'train/loss': ..., ...}`` and
``{'step': s, 'eval/<name>': ...}`` for this call of ``train``.

Inside: :func:`make_context` builds a :class:`TrainContext` (config, mesh, optimizer,
checkpoint manager, metric writer); :func:`create_state` and :func:`make_train_step` build the
state and the jitted step; :func:`run_loop` runs it and after each step calls the :data:`HOOKS`
in order (divergence check, train metrics, progress bar, checkpoint, evaluation, best
checkpoint, evaluation record, flush), each reading and updating the :class:`LoopState`.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from mmar.errors import ConfigError, MmarError, shorten
from mmar.train import sharding as shd
from mmar.train.checkpoint import LATEST_DIR, CheckpointManager, read_meta, step_dirs
from mmar.train.config import (
    CONFIG_FILENAME,
    Config,
    config_changes,
    config_defaults,
    config_history,
    config_overrides,
    config_to_dict,
    read_saved_config,
    resume_conflicts,
    save_config,
)
from mmar.train.compute import StepCost, step_cost, throughput, tokens_per_sample
from mmar.train.logging import MetricWriter, TrainProgress, announce
from mmar.train.optim import ema_decay_at, ema_update, make_optimizer
from mmar.train.precision import _like, check_compute_dtype, with_compute_dtype

__all__ = ["Task", "TrainState", "StatefulIterator", "TrainingDivergedError", "DataExhaustedError",
           "WorkdirBusyError", "train", "compile_step", "CompiledStep", "evaluated_steps", "EVALS_FILENAME", "LOCK_FILENAME",
           "PROFILE_DIR"]

log = logging.getLogger("mmar.train")

EVALS_FILENAME = "evals.jsonl"  # one line {"step", metrics...} per completed evaluation
LOCK_FILENAME = ".lock"
PROFILE_DIR = "profile"  # jax.profiler traces of train.profile_steps


class WorkdirBusyError(MmarError):
    """Another ``train`` holds the work directory's lock."""


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
    check_compute_dtype(t.compute_dtype)
    if int(t.grad_accum) < 1:
        raise ConfigError(f"train.grad_accum: must be >= 1, got {t.grad_accum}")
    if int(t.grad_accum_unroll) < 1:
        raise ConfigError(f"train.grad_accum_unroll: must be >= 1, got {t.grad_accum_unroll}")
    prof = tuple(t.profile_steps or ())
    if prof and (len(prof) != 2 or not 0 <= int(prof[0]) < int(prof[1])):
        raise ConfigError(f"train.profile_steps: expected (start, stop) with 0 <= start < stop, got {prof}")


def _check_accumulation(cfg: Config, mesh: Mesh) -> None:
    k, n = int(cfg.train.grad_accum), int(mesh.devices.size)
    if cfg.train.batch_size % (k * n):
        raise ConfigError(f"train.batch_size: {cfg.train.batch_size} must divide by train.grad_accum x devices = "
                          f"{k} x {n} (every micro-batch is split over all devices)")


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


@dataclasses.dataclass
class TrainContext:
    """What one call of :func:`train` works with; built once, read by every part of the loop."""

    task: Task
    cfg: Config
    cfg_dict: dict[str, Any]  # the config as saved in checkpoints
    mesh: Mesh
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    ckpt: CheckpointManager
    writer: MetricWriter
    is_main: bool  # process 0: writes TensorBoard files, config.json and draws the progress bar
    history: list[dict] = dataclasses.field(default_factory=list)  # config_history of the run so far
    cost: StepCost | None = None  # FLOPs and samples of one step (set once the step is compiled)
    profiling: bool = False  # a jax.profiler trace is being recorded

    @property
    def ema_decay(self) -> float | None:
        return self.cfg.optim.ema_decay

    @functools.cached_property
    def has_eval(self) -> bool:
        return callable(getattr(self.task, "evaluate", None))

    def close(self) -> None:
        try:
            self.ckpt.close()
        finally:
            self.writer.close()


def train(task: Task, cfg: Config, workdir: str | Path, *,
          allow_config_change: bool = False) -> tuple[TrainState, list[dict[str, Any]]]:
    """Train ``task`` as configured; resumes from ``workdir`` when it has a checkpoint (refusing
    a config that differs from the run's unless ``allow_config_change``; module doc, step 1)."""
    shd.maybe_initialize_distributed()
    _check_cfg(cfg)
    workdir = Path(workdir).absolute()
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
    try:
        history = check_run_config(cfg, workdir, allow_config_change)
        ctx = make_context(task, cfg, workdir)
        ctx.history = history
        try:
            return _run(ctx)
        finally:
            ctx.close()
    finally:
        if lock is not None:
            lock.release()


class WorkdirLock:
    """An exclusive ``flock`` on ``workdir/.lock`` (which names the holder), taken at once or
    :class:`WorkdirBusyError`. Released by :meth:`release` or when the process ends, however."""

    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.path = workdir / LOCK_FILENAME
        self._f = open(self.path, "a+")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._f.seek(0)
            holder = self._f.read().strip()
            self._f.close()
            raise WorkdirBusyError(
                f"{workdir}: another mmar train is running in this work directory "
                f"({holder or 'holder unknown'}); wait for it to end or use another --workdir") from None
        self._f.seek(0)
        self._f.truncate()
        self._f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self._f.flush()

    def release(self) -> None:
        if not self._f.closed:
            self._f.close()  # closing the file drops the flock


def check_run_config(cfg: Config, workdir: Path, allow_change: bool) -> list[dict]:
    """Before anything is written: the ``config_history`` of the run in ``workdir`` ([] when it
    has no checkpoint: a fresh start), after checking that ``cfg`` may resume it."""
    steps = step_dirs(workdir / LATEST_DIR)
    if not steps:
        return []
    payload = None
    if (workdir / CONFIG_FILENAME).exists():
        try:
            payload = read_saved_config(workdir)
        except ConfigError as e:
            log.warning("%s; comparing with the config saved in the newest checkpoint", e)
    old = payload["config"] if payload else (read_meta(steps[-1]) or {}).get("config")
    if not isinstance(old, dict):
        if allow_change:
            return []
        raise ConfigError(f"{workdir}: has checkpoints but no readable {CONFIG_FILENAME} or checkpoint config to "
                          f"compare with; pass --allow-config-change to resume it with this config")
    conflicts = resume_conflicts(old, config_to_dict(cfg), config_defaults(cfg))
    if conflicts and not allow_change:
        more = f"; and {len(conflicts) - 6} more" if len(conflicts) > 6 else ""
        raise ConfigError(
            f"{workdir}: this run was trained (up to step {steps[-1].name}) under another config and resuming "
            f"would mix the two; use a new --workdir, or --allow-config-change to resume under this config "
            f"(config.json records which steps ran under which). Changed: "
            + "; ".join(shorten(c, 80) for c in conflicts[:6]) + more)
    if conflicts:
        log.warning("%s: resuming under a changed config (allowed): %s", workdir, shorten("; ".join(conflicts)))
    return config_history(payload) if payload else [{"from_step": 0, "config": old, "overrides": []}]


def record_config(ctx: TrainContext, start_step: int | None) -> None:
    """Write ``config.json`` (process 0) with its history extended by this call's config when
    it differs from the last entry (or a new history for a fresh run)."""
    if not ctx.is_main:
        return
    entry = {"from_step": int(start_step or 0), "config": ctx.cfg_dict, "overrides": config_overrides(ctx.cfg)}
    history = list(ctx.history)
    if start_step is None or not history:
        history = [entry]
    else:
        changes = config_changes(history[-1].get("config") or {}, ctx.cfg_dict)
        if changes:
            entry["changed"] = {k: [a, b] for k, a, b in changes}
            history.append(entry)
    save_config(ctx.cfg, ctx.ckpt.workdir, history=history)
    ctx.history = history


def make_context(task: Task, cfg: Config, workdir: Path) -> TrainContext:
    """Build the mesh, optimizer, checkpoint manager and metric writer (the config is written
    by :func:`record_config` once the state is built or restored)."""
    tcfg = cfg.train
    is_main = jax.process_index() == 0
    cfg_dict = config_to_dict(cfg)
    mesh = shd.make_mesh(tcfg.num_devices, tcfg.mesh_shape, tcfg.fsdp)
    _check_accumulation(cfg, mesh)
    tx, schedule = make_optimizer(cfg.optim, tcfg.steps)
    ckpt = CheckpointManager(
        workdir, max_to_keep=tcfg.keep_checkpoints, async_save=tcfg.async_checkpoint, best_mode=tcfg.best_mode
    )
    writer = MetricWriter(workdir / "tb", enabled=is_main)
    return TrainContext(task, cfg, cfg_dict, mesh, tx, schedule, ckpt, writer, is_main)


def _run(ctx: TrainContext) -> tuple[TrainState, list[dict[str, Any]]]:
    tcfg = ctx.cfg.train
    if tcfg.best_metric and not ctx.has_eval:
        log.warning("train.best_metric=%r is set but the task has no evaluate(): no best checkpoint", tcfg.best_metric)
    start_step = ctx.ckpt.latest_step()
    it, batch = start_data(ctx, start_step)
    gbatch = first_global_batch(ctx, batch)
    state, shardings = create_state(ctx, gbatch, start_step)
    record_config(ctx, start_step)
    if start_step is not None:
        redo_interrupted_evaluation(ctx, state, start_step)
    if start_step is not None and start_step >= tcfg.steps:
        log.info("checkpoint at step %d >= train.steps=%d: nothing to train", start_step, tcfg.steps)
        return state, ctx.writer.history
    step_fn = make_train_step(ctx.task, ctx.tx, ctx.schedule, ctx.ema_decay, shardings, ctx.mesh,
                              compute_dtype=tcfg.compute_dtype, grad_accum=int(tcfg.grad_accum),
                              grad_accum_unroll=int(tcfg.grad_accum_unroll), ema_warmup=bool(ctx.cfg.optim.ema_warmup))
    step_fn, ctx.cost = aot_compile(step_fn, state, gbatch, ctx.cfg, ctx.mesh, ctx.task)
    record_cost(ctx, int(start_step or 0))
    loop = LoopState(state=state, step=int(start_step or 0), it=it)
    with TrainProgress(int(tcfg.steps), start=loop.step, enabled=ctx.is_main and tcfg.progress) as loop.bar:
        run_loop(ctx, loop, step_fn, gbatch)
    ctx.ckpt.wait()
    return loop.state, ctx.writer.history


# --------------------------------------------------------------------------- data and state


class _SavedPosition:
    """The data position saved with a checkpoint, standing for the iterator (``get_state``)."""

    def __init__(self, state: Any):
        self._state = state

    def get_state(self) -> Any:
        return self._state


def evaluated_steps(workdir: str | Path) -> set[int]:
    """Steps whose evaluation completed (``workdir/evals.jsonl``; unreadable lines ignored)."""
    try:
        lines = (Path(workdir) / EVALS_FILENAME).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return set()
    out = set()
    for line in lines:
        try:
            out.add(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def redo_interrupted_evaluation(ctx: TrainContext, state: TrainState, step: int) -> None:
    """When ``step`` (resumed from) is an evaluation step whose evaluation never completed
    (interrupted by Ctrl-C or a kill), evaluate it now and keep the best checkpoint."""
    if not Due.at(ctx, step).eval or step in evaluated_steps(ctx.ckpt.workdir):
        return
    announce(f"evaluating step {step} (its evaluation did not complete)", log, enabled=ctx.is_main)
    loop = LoopState(state=state, step=step, it=_SavedPosition(ctx.ckpt.data_state(step)))
    loop.due = Due(log=False, ckpt=False, eval=True)
    for hook in (run_evaluation, save_best_checkpoint, record_evaluation, flush_metrics):
        hook(ctx, loop)


def start_data(ctx: TrainContext, start_step: int | None) -> tuple[Any, Any]:
    """The training iterator (at the saved position when resuming) and the batch of the first step."""
    data_state = ctx.ckpt.data_state(start_step) if start_step is not None else None
    it = ctx.task.train_iterator(int(ctx.cfg.train.seed), data_state)
    _check_iterator(it)
    if data_state is not None:
        it.set_state(data_state)
    return it, _next_batch(it, int(start_step or 0))


def first_global_batch(ctx: TrainContext, batch: Any) -> Any:
    """The first batch of this process, checked, as one global array split over all devices."""
    _check_batch(batch, ctx.cfg)
    return shd.shard_batch(batch, ctx.mesh)


def make_init(task: Task, tx: optax.GradientTransformation, ema_decay: float | None) -> Callable:
    """``init(rng, batch) -> TrainState`` (traced): the task's variables, optimizer state and EMA."""

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

    return init_state


def create_state(ctx: TrainContext, gbatch: Any, start_step: int | None) -> tuple[TrainState, Any]:
    """``(state, shardings)``: a fresh state from a jitted init placed by ``out_shardings``, or
    the checkpoint at ``start_step`` restored into the same shardings."""
    tcfg = ctx.cfg.train
    init_state = make_init(ctx.task, ctx.tx, ctx.ema_decay)
    rng0 = jax.random.PRNGKey(int(tcfg.seed))
    abstract = jax.eval_shape(init_state, rng0, gbatch)
    shardings = shd.state_shardings(abstract, ctx.mesh, fsdp=tcfg.fsdp, min_size=tcfg.fsdp_min_size)
    if start_step is None:
        state = jax.jit(init_state, out_shardings=shardings)(rng0, gbatch)
        if tcfg.init_from:
            state = warm_start(state, tcfg.init_from, announce_to=ctx.is_main)
        return state, shardings
    target = jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    state = ctx.ckpt.restore(target, start_step).state
    announce(f"resumed from step {start_step} ({ctx.ckpt.latest_dir / str(start_step)})", log, enabled=ctx.is_main)
    return state, shardings


def _leaf_shapes(tree: Any) -> dict[str, tuple]:
    return {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def _structure_problems(mine: Any, theirs: Any) -> list[str]:
    a, b = _leaf_shapes(mine), _leaf_shapes(theirs)
    out = [f"{k}: missing in the run" for k in a if k not in b]
    out += [f"{k}: not in this model" for k in b if k not in a]
    out += [f"{k}: shape {b[k]} in the run, {a[k]} here" for k in a if k in b and a[k] != b[k]]
    return out


def warm_start(state: TrainState, source: str, *, announce_to: bool = True) -> TrainState:
    """``state`` with its params (and EMA copy), and every extra collection the run also has,
    taken from the run at ``source`` (``train.init_from``); the optimizer state stays fresh.
    The trees must match leaf for leaf in path and shape, or :class:`ConfigError` lists where
    they differ."""
    from mmar.run import load_variables

    variables, step_dir, _ = load_variables(source)
    problems = _structure_problems(state.params, variables.get("params", {}))
    extra = {}
    for col, value in variables.items():
        if col != "params" and col in state.extra_vars:
            problems += [f"[{col!r}]{p}" for p in _structure_problems(state.extra_vars[col], value)]
            extra[col] = value
    if problems:
        more = f" (+{len(problems) - 8} more)" if len(problems) > 8 else ""
        raise ConfigError(f"train.init_from={source}: its params do not fit this model: "
                          + "; ".join(problems[:8]) + more)

    def place(new: Any, like: Any) -> Any:
        return jax.tree_util.tree_map(lambda v, x: jax.device_put(np.asarray(v, x.dtype), x.sharding), new, like)

    params = place(variables["params"], state.params)
    extra_vars = {**state.extra_vars, **{c: place(v, state.extra_vars[c]) for c, v in extra.items()}}
    ema = place(variables["params"], state.ema_params) if state.ema_params is not None else None
    announce(f"params initialised from {step_dir}" + (f" (and {', '.join(extra)})" if extra else ""), log,
             enabled=announce_to)
    return state.replace(params=params, extra_vars=extra_vars, ema_params=ema)


# --------------------------------------------------------------------------- the train step


def make_train_step(
    task: Task,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    ema_decay: float | None,
    shardings: Any,
    mesh: Mesh,
    *,
    compute_dtype: str = "float32",
    grad_accum: int = 1,
    grad_accum_unroll: int = 1,
    ema_warmup: bool = True,
) -> Callable[[TrainState, Any], tuple[TrainState, dict[str, jax.Array]]]:
    """The jitted ``step(state, global_batch) -> (state, metrics)``; ``state`` is donated.

    ``compute_dtype``: the forward/backward precision (:mod:`mmar.train.precision`; params and
    optimizer state stay fp32). ``grad_accum`` > 1 splits the global batch into that many
    micro-batches (each still spread over every device), runs them in a ``lax.scan`` and applies
    the mean gradient once; extra collections (BatchNorm statistics, codebook EMAs) are threaded
    through the micro-batches in order, each micro-batch gets its own RNG. ``grad_accum_unroll``:
    the scan's unroll factor (the same numbers; a straight-line step when equal to ``grad_accum``).
    """
    update = make_update(task, tx, ema_decay, ema_warmup)
    loss_fn = with_compute_dtype(task.loss, compute_dtype)
    micro_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, shd.BATCH_AXES))

    def grads_of(params, extra_vars, batch, rng, step):
        return jax.value_and_grad(lambda p: loss_fn(p, extra_vars, batch, rng, step), has_aux=True)(params)

    def accumulated(state: TrainState, batch: Any, step_rng: jax.Array):
        k = int(grad_accum)

        def split(x):  # rows j, j + k, j + 2k, ... form micro-batch j: each stays on its device
            x = jnp.asarray(x)
            x = x.reshape((x.shape[0] // k, k) + x.shape[1:]).swapaxes(0, 1)
            return jax.lax.with_sharding_constraint(x, micro_sharding)

        micro = jax.tree_util.tree_map(split, batch)

        def body(carry, xs):
            gsum, extra = carry
            mb, i = xs
            (loss, (metrics, new_extra)), g = grads_of(state.params, extra, mb, jax.random.fold_in(step_rng, i),
                                                       state.step)
            if new_extra:
                extra = _like({**extra, **flax.core.unfreeze(new_extra)}, extra)
            gsum = jax.tree_util.tree_map(lambda a, b: a + b.astype(a.dtype), gsum, g)
            metrics = {name: jnp.mean(jnp.asarray(v, jnp.float32)) for name, v in (metrics or {}).items()}
            return (gsum, extra), (loss, metrics)

        zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
        (gsum, extra), (losses, metrics) = jax.lax.scan(
            body, (zeros, dict(state.extra_vars)), (micro, jnp.arange(k)), unroll=max(1, min(int(grad_accum_unroll), k)))
        grads = jax.tree_util.tree_map(lambda g: g / k, gsum)
        metrics = {name: jnp.mean(v) for name, v in metrics.items()}
        return (jnp.mean(losses), (metrics, extra)), grads

    def train_step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
        rng, step_rng = jax.random.split(state.rng)
        if grad_accum > 1:
            (loss, (metrics, new_extra)), grads = accumulated(state, batch, step_rng)
        else:
            (loss, (metrics, new_extra)), grads = grads_of(state.params, state.extra_vars, batch, step_rng,
                                                           state.step)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = update(state, grads, new_extra, step_rng).replace(rng=rng)
        # A non-finite step is not applied: keep the last finite state.
        new = jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, state)
        out = {k: jnp.mean(jnp.asarray(v, jnp.float32)) for k, v in (metrics or {}).items()}
        out.update(loss=jnp.asarray(loss, jnp.float32), grad_norm=grad_norm, lr=schedule(state.step), finite=finite)
        return new, out

    return jax.jit(
        train_step,
        in_shardings=(shardings, shd.batch_sharding(mesh)),
        out_shardings=(shardings, shd.replicated(mesh)),
        donate_argnums=(0,),
    )


def aot_compile(step_fn: Callable, state: TrainState, gbatch: Any, cfg: Config, mesh: Mesh,
                task: Task) -> tuple[Callable, StepCost]:
    """Trace, lower and compile the step ahead of time (once) and account for its cost
    (:mod:`mmar.train.compute`): ``(compiled step, StepCost)``."""
    traced = step_fn.trace(state, gbatch)
    compiled = traced.lower().compile()
    cost = step_cost(traced, compiled, params=state.params, samples=int(cfg.train.batch_size), mesh=mesh,
                     compute_dtype=cfg.train.compute_dtype, tokens_per_sample=tokens_per_sample(task))
    return compiled, cost


def record_cost(ctx: TrainContext, step: int) -> None:
    """Write ``compute.json`` and log the step's FLOPs once (process 0)."""
    c = ctx.cost
    if not ctx.is_main or c is None:
        return
    c.save(ctx.ckpt.workdir)
    values = {"flops_per_step": c.flops, "params": c.params, "samples_per_step": c.samples}
    if c.xla_flops is not None:
        values["xla_flops_per_step"] = c.xla_flops
    ctx.writer.scalars(step, values, "compute", record=False)
    peak = f", peak {c.peak_flops / 1e12:.0f} TFLOP/s" if c.peak_flops else ", no known peak (no MFU)"
    log.info("step cost: %.4g FLOPs (XLA: %s), %d params, %d samples, %d x %s%s", c.flops,
             f"{c.xla_flops:.4g}" if c.xla_flops is not None else "n/a", c.params, c.samples, c.devices,
             c.device_kind, peak)


@dataclasses.dataclass
class CompiledStep:
    """What :func:`compile_step` builds: the compiled step, a fresh state, the first global
    batch, the iterator (positioned after it), the mesh and the step's cost."""

    step: Callable  # (state, global batch) -> (state, metrics); state donated
    state: TrainState
    batch: Any
    iterator: Any
    mesh: Mesh
    cost: StepCost

    def next_batch(self) -> Any:
        """The iterator's next batch as a global sharded batch."""
        return shd.shard_batch(next(self.iterator), self.mesh)


def compile_step(task: Task, cfg: Config) -> CompiledStep:
    """The compiled train step of ``cfg`` with a freshly initialised state and the step's
    :class:`StepCost`, built as :func:`train` builds them (real batches from the task's
    iterator) but with nothing read from or written to a work directory."""
    shd.maybe_initialize_distributed()
    _check_cfg(cfg)
    tcfg = cfg.train
    mesh = shd.make_mesh(tcfg.num_devices, tcfg.mesh_shape, tcfg.fsdp)
    _check_accumulation(cfg, mesh)
    tx, schedule = make_optimizer(cfg.optim, tcfg.steps)
    it = task.train_iterator(int(tcfg.seed), None)
    batch = _next_batch(it, 0)
    _check_batch(batch, cfg)
    gbatch = shd.shard_batch(batch, mesh)
    init_state = make_init(task, tx, cfg.optim.ema_decay)
    rng0 = jax.random.PRNGKey(int(tcfg.seed))
    abstract = jax.eval_shape(init_state, rng0, gbatch)
    shardings = shd.state_shardings(abstract, mesh, fsdp=tcfg.fsdp, min_size=tcfg.fsdp_min_size)
    state = jax.jit(init_state, out_shardings=shardings)(rng0, gbatch)
    step_fn = make_train_step(task, tx, schedule, cfg.optim.ema_decay, shardings, mesh,
                              compute_dtype=tcfg.compute_dtype, grad_accum=int(tcfg.grad_accum),
                              grad_accum_unroll=int(tcfg.grad_accum_unroll), ema_warmup=bool(cfg.optim.ema_warmup))
    compiled, cost = aot_compile(step_fn, state, gbatch, cfg, mesh, task)
    return CompiledStep(compiled, state, gbatch, it, mesh, cost)


def make_update(task: Task, tx: optax.GradientTransformation, ema_decay: float | None,
                ema_warmup: bool = True) -> Callable:
    """``update(state, grads, new_extra, step_rng) -> state`` (traced): the optimizer update, the
    new extra collections merged in, the task's optional ``post_update``, the EMA; step + 1."""

    def update(state: TrainState, grads: Any, new_extra: Any, step_rng: jax.Array) -> TrainState:
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        extra_vars = {**state.extra_vars, **flax.core.unfreeze(new_extra or {})}
        if hasattr(task, "post_update"):
            params, extra_vars = task.post_update(params, extra_vars, jax.random.fold_in(step_rng, 1), state.step)
        return state.replace(
            step=state.step + 1,
            params=params,
            extra_vars=extra_vars,
            opt_state=opt_state,
            ema_params=(ema_update(state.ema_params, params, ema_decay_at(ema_decay, state.step, ema_warmup))
                        if ema_decay is not None else None),
        )

    return update


# --------------------------------------------------------------------------- the loop and its hooks


@dataclasses.dataclass(frozen=True)
class Due:
    """What happens after a step: fetch+log train metrics, save a checkpoint, evaluate."""

    log: bool
    ckpt: bool
    eval: bool

    @classmethod
    def at(cls, ctx: TrainContext, step: int) -> "Due":
        tcfg = ctx.cfg.train
        last = step == tcfg.steps
        return cls(
            log=step % tcfg.log_every == 0 or last,
            ckpt=(tcfg.ckpt_every > 0 and step % tcfg.ckpt_every == 0) or last,
            eval=ctx.has_eval and ((tcfg.eval_every > 0 and step % tcfg.eval_every == 0) or last),
        )


@dataclasses.dataclass
class LoopState:
    """The loop's state, read and updated by the hooks after each step."""

    state: TrainState
    step: int  # updates done
    it: Any  # the training iterator; the batch of the step being run is already taken
    bar: TrainProgress | None = None
    due: Due = Due(False, False, False)
    pending: list[tuple[int, Any]] = dataclasses.field(default_factory=list)  # (0-based step, metrics) since the last log
    fetched_upto: int = 0  # pending[:fetched_upto] are host values already checked
    logged: dict[str, float] | None = None  # the train metrics logged after this step
    eval_results: dict[str, float] | None = None  # the eval metrics of this step
    t_last: float = dataclasses.field(init=False)  # time and step of the last log (for steps/s)
    step_last: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.t_last, self.step_last = time.perf_counter(), self.step


Hook = Callable[[TrainContext, LoopState], None]


def run_loop(ctx: TrainContext, loop: LoopState, step_fn: Callable, gbatch: Any) -> None:
    """Run ``step_fn`` up to ``train.steps``, calling each of :data:`HOOKS` after each step."""
    total = int(ctx.cfg.train.steps)
    try:
        while loop.step < total:
            profile_trace(ctx, loop)
            loop.state, metrics = step_fn(loop.state, gbatch)
            loop.pending.append((loop.step, metrics))
            loop.step += 1
            loop.due, loop.logged, loop.eval_results = Due.at(ctx, loop.step), None, None
            for hook in HOOKS:
                hook(ctx, loop)
            if loop.step < total:
                gbatch = shd.shard_batch(_next_batch(loop.it, loop.step), ctx.mesh)
        profile_trace(ctx, loop)
    finally:
        if ctx.profiling:
            jax.profiler.stop_trace()
            ctx.profiling = False


def profile_trace(ctx: TrainContext, loop: LoopState) -> None:
    """Before step ``start`` of ``train.profile_steps``: start a ``jax.profiler`` trace in
    ``workdir/profile`` (open it with TensorBoard's profile plugin or Perfetto); before step
    ``stop`` (or at the end): wait for the device and stop it."""
    prof = tuple(ctx.cfg.train.profile_steps or ())
    if not prof:
        return
    start, stop = int(prof[0]), int(prof[1])
    if not ctx.profiling and start <= loop.step < stop:
        jax.profiler.start_trace(str(ctx.ckpt.workdir / PROFILE_DIR))
        ctx.profiling = True
        announce(f"profiling steps {loop.step}..{stop - 1} into {ctx.ckpt.workdir / PROFILE_DIR}", log,
                 enabled=ctx.is_main)
    elif ctx.profiling and (loop.step >= stop or loop.step >= int(ctx.cfg.train.steps)):
        jax.block_until_ready(loop.state)
        jax.profiler.stop_trace()
        ctx.profiling = False


def check_divergence(ctx: TrainContext, loop: LoopState) -> None:
    """On log, checkpoint and eval steps: fetch the new metrics; raise if a step diverged."""
    if not (loop.due.log or loop.due.ckpt or loop.due.eval) or loop.fetched_upto == len(loop.pending):
        return
    host = jax.device_get([m for _, m in loop.pending[loop.fetched_upto :]])
    for j, m in enumerate(host):
        s, _ = loop.pending[loop.fetched_upto + j]
        loop.pending[loop.fetched_upto + j] = (s, m)
        if not bool(m["finite"]):
            raise _diverged(ctx, s, m)
    loop.fetched_upto = len(loop.pending)


def _diverged(ctx: TrainContext, step: int, metrics: dict[str, Any]) -> TrainingDivergedError:
    loss, gnorm = float(metrics["loss"]), float(metrics["grad_norm"])
    what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {gnorm}"
    return TrainingDivergedError(
        f"training diverged at step {step}: {what}; the step was not applied and no later "
        f"checkpoint is saved (workdir {ctx.ckpt.workdir}, last checkpoint: step {ctx.ckpt.latest_step()})",
        step=step,
    )


def log_train_metrics(ctx: TrainContext, loop: LoopState) -> None:
    """On log steps: the mean train metrics since the last log, plus steps_per_sec."""
    if not loop.due.log:
        return
    now = time.perf_counter()
    rate = (loop.step - loop.step_last) / max(now - loop.t_last, 1e-9)
    loop.t_last, loop.step_last = now, loop.step
    names = [k for k in loop.pending[0][1] if k != "finite"]
    mean = {k: float(np.mean([_to_float(m[k]) for _, m in loop.pending])) for k in names}
    mean.update(throughput(ctx.cost, rate))  # steps/s, step time, samples/s, tokens/s, MFU
    ctx.writer.scalars(loop.step, mean, "train")
    loop.logged = mean
    loop.pending.clear()
    loop.fetched_upto = 0


def update_progress(ctx: TrainContext, loop: LoopState) -> None:
    """Advance the progress bar; show steps/s and the loss when they were just logged."""
    if loop.logged is None:
        loop.bar.update(loop.step)
    else:
        loop.bar.update(loop.step, loop.logged["steps_per_sec"], loop.logged.get("loss"),
                        loop.logged.get("samples_per_sec"), loop.logged.get("mfu"))


def save_checkpoint(ctx: TrainContext, loop: LoopState) -> None:
    """On checkpoint steps: save the state and the iterator position (async, keep-N)."""
    if loop.due.ckpt:
        ctx.ckpt.save(loop.step, loop.state, loop.it.get_state(), ctx.cfg_dict)


def run_evaluation(ctx: TrainContext, loop: LoopState) -> None:
    """On eval steps: ``task.evaluate`` on the EMA (or live) weights, logged as ``eval/*``."""
    if not loop.due.eval:
        return
    st = loop.state
    params = st.ema_params if ctx.ema_decay is not None else st.params
    if ctx.cfg.train.fsdp:  # evaluation code (its own jits, numpy) sees whole arrays
        params, extra = _replicated(ctx.mesh, (params, st.extra_vars))
    else:
        extra = st.extra_vars
    loop.eval_results = {k: _to_float(v) for k, v in ctx.task.evaluate(params, extra).items()}
    ctx.writer.scalars(loop.step, loop.eval_results, "eval")


def _replicated(mesh: Mesh, tree: Any) -> Any:
    """``tree`` with every array replicated over ``mesh``."""
    return jax.jit(lambda t: t, out_shardings=shd.replicated(mesh))(tree)


def save_best_checkpoint(ctx: TrainContext, loop: LoopState) -> None:
    """After an evaluation: keep the checkpoint when ``train.best_metric`` improved."""
    metric, results = ctx.cfg.train.best_metric, loop.eval_results
    if results is None or not metric:
        return
    if metric not in results:
        raise ConfigError(f"train.best_metric: {metric!r} is not an eval metric (have {sorted(results)})")
    ctx.ckpt.save_best(loop.step, loop.state, loop.it.get_state(), metric, results[metric], ctx.cfg_dict)


def record_evaluation(ctx: TrainContext, loop: LoopState) -> None:
    """After an evaluation: once its checkpoints are on disk, append it to ``evals.jsonl`` (a
    resumed run redoes an evaluation step that is not recorded there)."""
    if loop.eval_results is None:
        return
    ctx.ckpt.wait()
    if ctx.is_main:
        row = {"step": loop.step, **{k: (v if math.isfinite(v) else str(v)) for k, v in loop.eval_results.items()}}
        with open(ctx.ckpt.workdir / EVALS_FILENAME, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def flush_metrics(ctx: TrainContext, loop: LoopState) -> None:
    """After logging or evaluating: flush the TensorBoard files."""
    if loop.due.log or loop.due.eval:
        ctx.writer.flush()


# Called in this order after every step.
HOOKS: tuple[Hook, ...] = (
    check_divergence,
    log_train_metrics,
    update_progress,
    save_checkpoint,
    run_evaluation,
    save_best_checkpoint,
    record_evaluation,
    flush_metrics,
)

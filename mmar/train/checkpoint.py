"""Checkpoints with orbax: periodic keep-N saves, a best-by-metric copy, resume, export loading.

Layout of a work directory::

    workdir/checkpoints/<step>/state   train state (StandardSave: params, opt_state, ema, ...)
    workdir/checkpoints/<step>/meta    JSON: step, data-iterator state(s), config, best metric
    workdir/best/<step>/...            the same, for the best eval metric so far (one kept)

Periodic checkpoints keep the newest ``max_to_keep``; the best checkpoint lives in its own
directory so the latest checkpoint is always there to resume from. Saves are asynchronous
(orbax writes to a temporary directory and renames on commit, and old steps are removed only
after a new one committed), so a failed save or restore never deletes or overwrites what is
already on disk; an existing step is never saved again.

The data-iterator state must be JSON-serialisable, or ``bytes`` (grain ``DataLoader``
iterators), which are stored base64-encoded. In a multi-process run the states of all
processes are gathered and each process gets its own back on restore.

Public API:

- ``CheckpointManager(workdir, max_to_keep=3, async_save=True, best_mode='min')`` with
  ``latest_step()``, ``all_steps()``, ``save(step, state, data_state, config=None)``,
  ``save_best(step, state, data_state, metric, value, config=None)`` (saves only on
  improvement), ``best() -> (step, value) | None``, ``data_state(step)``,
  ``restore(abstract_state=None, step=None, best=False) -> Restored``, ``wait()``, ``close()``.
- ``restore_latest(workdir, abstract_state=None) -> Restored(state, data_state, step, meta)``
  (``abstract_state``: pytree of ``jax.ShapeDtypeStruct`` with shardings; without it arrays are
  restored as numpy with the checkpoint's own tree structure).
- ``load_params(checkpoint_dir, *, ema=False, step=None) -> (variables, config_dict)`` for
  evaluation/export without the Task: ``variables = {'params': ..., **extra_collections}``
  (EMA weights as 'params' with ``ema=True``). ``checkpoint_dir`` may be a work directory, its
  ``checkpoints``/``best`` directory, or one step directory.

- ``step_dirs(directory) -> [Path]``: every step folder (``<directory>/<step>``) in step
  order, readable or not; ``read_meta(step_dir) -> dict | None``: its JSON metadata.

Missing or unreadable checkpoints raise :class:`mmar.errors.CheckpointError` naming the
directory. After a failed restore, tensorstore may still complete reads on the event loop orbax
already closed, and the read coroutines orbax abandoned report their error when collected; those
errors ("Event loop is closed", "Exception ignored in: <coroutine ...>") are dropped (only those:
:func:`quiet_closed_loop_callbacks`) instead of printing tracebacks after the one-line error.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from mmar.errors import CheckpointError

__all__ = [
    "LATEST_DIR",
    "BEST_DIR",
    "CheckpointManager",
    "Restored",
    "restore_latest",
    "load_params",
    "resolve_step_dir",
    "step_dirs",
    "read_meta",
    "quiet_closed_loop_callbacks",
    "encode_data_state",
    "decode_data_state",
]

LATEST_DIR = "checkpoints"
BEST_DIR = "best"
_ITEMS = ("state", "meta")
FORMAT_VERSION = 1


def _describe(e: BaseException, limit: int = 400) -> str:
    text = f"{type(e).__name__}: {e}"
    return text if len(text) <= limit else text[:limit] + " ..."


def _is_closed_loop_callback(u) -> bool:
    """An unraisable ``RuntimeError('Event loop is closed')`` raised by
    ``loop.call_soon_threadsafe`` (a tensorstore read finishing after orbax closed its loop), or
    the error of an orbax read coroutine that the failed restore abandoned, raised when it is
    garbage-collected."""
    code = getattr(u.object, "cr_code", None)
    if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
        return True
    if u.exc_type is not RuntimeError or str(u.exc_value) != "Event loop is closed":
        return False
    tb = u.exc_traceback
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "call_soon_threadsafe":
            return True
        tb = tb.tb_next
    return False


def quiet_closed_loop_callbacks() -> None:
    """Drop the "Event loop is closed" callback errors a failed orbax restore leaves behind
    (every other unraisable exception still goes to the previous ``sys.unraisablehook``).
    Installed once, when a restore fails."""
    previous = sys.unraisablehook
    if getattr(previous, "_mmar_quiet_loop", False):
        return

    def hook(u):
        if not _is_closed_loop_callback(u):
            previous(u)

    hook._mmar_quiet_loop = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


class Restored(NamedTuple):
    state: Any
    data_state: Any
    step: int
    meta: dict


# --------------------------------------------------------------------------- data state


def encode_data_state(state: Any) -> dict:
    """Iterator state -> JSON-ready dict ({'kind': 'json'|'bytes', 'value': ...})."""
    if isinstance(state, (bytes, bytearray)):
        return {"kind": "bytes", "value": base64.b64encode(bytes(state)).decode("ascii")}
    try:
        json.dumps(state)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"data iterator state is not JSON-serialisable: {e}") from e
    return {"kind": "json", "value": state}


def decode_data_state(d: dict) -> Any:
    if not isinstance(d, dict) or "kind" not in d:
        raise CheckpointError(f"malformed data iterator state {d!r}")
    if d["kind"] == "bytes":
        return base64.b64decode(d["value"])
    return d["value"]


def _gather_across_processes(obj: Any) -> list:
    """Every process's JSON-ready ``obj`` (list indexed by process), on every process."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    raw = np.frombuffer(json.dumps(obj).encode("utf-8"), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.asarray([raw.size], np.int64))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: raw.size] = raw
    allv = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(allv[i, : int(sizes[i])]).decode("utf-8")) for i in range(len(sizes))]


def _pick_process_state(meta: dict, where: Path) -> Any:
    states = meta.get("data_state")
    if not isinstance(states, list) or not states:
        raise CheckpointError(f"{where}: checkpoint has no data iterator state")
    i = jax.process_index()
    if len(states) != jax.process_count():
        logging.warning(
            "%s: checkpoint was written by %d processes, now %d; process %d uses the state of process %d",
            where, len(states), jax.process_count(), i, i % len(states),
        )
    return decode_data_state(states[i % len(states)])


# --------------------------------------------------------------------------- manager


class CheckpointManager:
    """Periodic (keep-N) and best-metric checkpoints of one work directory."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        max_to_keep: int = 3,
        async_save: bool = True,
        best_mode: str = "min",
    ):
        if best_mode not in ("min", "max"):
            raise CheckpointError(f"train.best_mode: must be 'min' or 'max', got {best_mode!r}")
        self.workdir = Path(workdir).absolute()
        self.latest_dir = self.workdir / LATEST_DIR
        self.best_dir = self.workdir / BEST_DIR
        self.best_mode = best_mode
        opts = dict(create=True, enable_async_checkpointing=async_save)
        try:
            self._latest = ocp.CheckpointManager(
                self.latest_dir,
                options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, **opts),
                item_names=_ITEMS,
            )
            self._best = ocp.CheckpointManager(
                self.best_dir,
                options=ocp.CheckpointManagerOptions(max_to_keep=1, **opts),
                item_names=_ITEMS,
            )
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{self.workdir}: cannot open checkpoint directories: {e}") from e
        self._best_value: tuple[int, float] | None | bool = False  # False = not read yet

    # -- queries
    def latest_step(self) -> int | None:
        return self._latest.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._latest.all_steps())

    def best(self) -> tuple[int, float] | None:
        """(step, metric value) of the best checkpoint, or None."""
        if self._best_value is False:
            self._best_value = None
            step = self._best.latest_step()
            if step is not None:
                meta = self._restore_meta(self._best, self.best_dir, step)
                b = meta.get("best") or {}
                if "value" in b:
                    self._best_value = (step, float(b["value"]))
        return self._best_value  # type: ignore[return-value]

    def is_better(self, value: float) -> bool:
        best = self.best()
        if best is None:
            return bool(np.isfinite(value))
        if not np.isfinite(value):
            return False
        return value < best[1] if self.best_mode == "min" else value > best[1]

    # -- saving
    def _meta(self, step: int, data_state: Any, config: dict | None, best: dict | None) -> dict:
        return {
            "format": FORMAT_VERSION,
            "step": int(step),
            "data_state": _gather_across_processes(encode_data_state(data_state)),
            "config": config,
            "best": best,
        }

    def _save(self, mngr: ocp.CheckpointManager, where: Path, step: int, state: Any, meta: dict) -> bool:
        if step in mngr.all_steps():
            return False  # never overwrite an existing step
        try:
            return bool(
                mngr.save(
                    int(step),
                    args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                    force=True,
                )
            )
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{where}: saving step {step} failed: {_describe(e)}") from e

    def save(self, step: int, state: Any, data_state: Any, config: dict | None = None) -> bool:
        """Save a periodic checkpoint (asynchronously). Returns False if the step exists."""
        return self._save(self._latest, self.latest_dir, step, state, self._meta(step, data_state, config, None))

    def save_best(
        self, step: int, state: Any, data_state: Any, metric: str, value: float, config: dict | None = None
    ) -> bool:
        """Save ``state`` as the best checkpoint if ``value`` improves on the best so far."""
        if not self.is_better(value):
            return False
        meta = self._meta(step, data_state, config, {"metric": metric, "value": float(value), "mode": self.best_mode})
        saved = self._save(self._best, self.best_dir, step, state, meta)
        if saved:
            self._best_value = (int(step), float(value))
        return saved

    def wait(self) -> None:
        for mngr, where in ((self._latest, self.latest_dir), (self._best, self.best_dir)):
            try:
                mngr.wait_until_finished()
            except Exception as e:  # noqa: BLE001
                raise CheckpointError(f"{where}: asynchronous save failed: {_describe(e)}") from e

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._latest.close()
            self._best.close()

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- restoring
    @staticmethod
    def _restore_meta(mngr: ocp.CheckpointManager, where: Path, step: int) -> dict:
        try:
            out = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
            meta = out["meta"]
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"{where}/{step}: cannot read checkpoint metadata: {_describe(e)}") from e
        if not isinstance(meta, dict):
            raise CheckpointError(f"{where}/{step}: malformed checkpoint metadata")
        return meta

    def data_state(self, step: int) -> Any:
        """This process's data-iterator state saved with periodic checkpoint ``step``."""
        meta = self._restore_meta(self._latest, self.latest_dir, step)
        return _pick_process_state(meta, self.latest_dir / str(step))

    def restore(self, abstract_state: Any = None, step: int | None = None, best: bool = False) -> Restored:
        mngr, where = (self._best, self.best_dir) if best else (self._latest, self.latest_dir)
        if step is None:
            step = mngr.latest_step()
            if step is None:
                raise CheckpointError(f"{where}: no checkpoint found")
        elif step not in mngr.all_steps():
            raise CheckpointError(f"{where}: no checkpoint for step {step}")
        state_args = ocp.args.StandardRestore(abstract_state) if abstract_state is not None else ocp.args.StandardRestore()
        try:
            out = mngr.restore(step, args=ocp.args.Composite(state=state_args, meta=ocp.args.JsonRestore()))
            state, meta = out["state"], out["meta"]
        except Exception as e:  # noqa: BLE001
            quiet_closed_loop_callbacks()
            raise CheckpointError(f"{where}/{step}: cannot restore checkpoint: {_describe(e)}") from e
        if not isinstance(meta, dict):
            raise CheckpointError(f"{where}/{step}: malformed checkpoint metadata")
        return Restored(state, _pick_process_state(meta, where / str(step)), int(step), meta)


def restore_latest(workdir: str | os.PathLike, abstract_state: Any = None) -> Restored:
    """Restore the newest periodic checkpoint of ``workdir`` (CheckpointError if none)."""
    workdir = Path(workdir)
    if not (workdir / LATEST_DIR).is_dir():
        raise CheckpointError(f"{workdir / LATEST_DIR}: no checkpoint found")
    mngr = CheckpointManager(workdir)
    try:
        return mngr.restore(abstract_state)
    finally:
        mngr.close()


# --------------------------------------------------------------------------- export loading


def _is_step_dir(p: Path) -> bool:
    return p.name.isdigit() and (p / "state").is_dir()


def step_dirs(directory: str | os.PathLike) -> list[Path]:
    """Every step folder ``<directory>/<step>`` in step order, committed and readable or not
    (orbax writes a step under a temporary name and renames it when complete)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted((c for c in d.iterdir() if c.name.isdigit() and c.is_dir()), key=lambda c: int(c.name))


def read_meta(step_dir: str | os.PathLike) -> dict | None:
    """The JSON metadata of a step folder (step, data state, config, best), or None if unreadable."""
    try:
        meta = json.loads((Path(step_dir) / "meta" / "metadata").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def _committed_steps(d: Path) -> list[int]:
    if not d.is_dir():
        return []
    return sorted(int(c.name) for c in d.iterdir() if c.is_dir() and _is_step_dir(c))


def resolve_step_dir(checkpoint_dir: str | os.PathLike, step: int | None = None) -> Path:
    """The step directory of ``checkpoint_dir``: itself when it is one, else its newest committed
    step (or ``step``), looked up in ``checkpoint_dir/checkpoints`` when that exists."""
    checkpoint_dir = Path(checkpoint_dir)
    if _is_step_dir(checkpoint_dir):
        if step is not None and int(checkpoint_dir.name) != step:
            raise CheckpointError(f"{checkpoint_dir}: is step {checkpoint_dir.name}, not {step}")
        return checkpoint_dir
    base = checkpoint_dir / LATEST_DIR if (checkpoint_dir / LATEST_DIR).is_dir() else checkpoint_dir
    steps = _committed_steps(base)
    if not steps:
        raise CheckpointError(f"{checkpoint_dir}: no checkpoint found")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise CheckpointError(f"{base}: no checkpoint for step {step} (have {steps})")
    return base / str(step)


def load_params(
    checkpoint_dir: str | os.PathLike, *, ema: bool = False, step: int | None = None
) -> tuple[dict, dict | None]:
    """Load model variables and the saved config dict from a checkpoint, as numpy arrays.

    Returns ``({'params': params, **extra_collections}, config_dict)``. With ``ema=True`` the
    EMA weights are returned as 'params' (CheckpointError if the run kept no EMA).
    """
    checkpoint_dir = Path(checkpoint_dir).absolute()  # orbax reads metadata only from absolute paths
    step_dir = resolve_step_dir(checkpoint_dir, step)
    state_dir = step_dir / "state"
    try:
        meta_tree = ocp.PyTreeCheckpointer().metadata(state_dir)
        tree = meta_tree.item_metadata.tree if hasattr(meta_tree, "item_metadata") else meta_tree
        if hasattr(tree, "tree"):
            tree = tree.tree
        if not isinstance(tree, dict) or "params" not in tree:
            raise CheckpointError(f"{state_dir}: not an mmar train-state checkpoint")
        want = ["params", "extra_vars"] + (["ema_params"] if ema else [])
        sub = {k: tree[k] for k in want if k in tree}
        if ema and sub.get("ema_params") is None:
            raise CheckpointError(f"{state_dir}: checkpoint has no EMA weights (optim.ema_decay was None)")
        restore_args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), sub)
        out = ocp.PyTreeCheckpointer().restore(
            state_dir, args=ocp.args.PyTreeRestore(item=sub, restore_args=restore_args, partial_restore=True)
        )
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001
        quiet_closed_loop_callbacks()
        raise CheckpointError(f"{state_dir}: cannot load parameters: {_describe(e)}") from e
    config = (read_meta(step_dir) or {}).get("config")
    variables = {"params": out["ema_params"] if ema else out["params"]}
    variables.update(out.get("extra_vars") or {})
    return variables, config

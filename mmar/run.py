"""Runs: the one way to find and load what ``mmar train`` wrote.

A *run* is a work directory with ``config.json`` (the experiment config, naming its task),
``checkpoints/<step>/`` (periodic checkpoints), ``best/<step>/`` (the best one by
``train.best_metric``) and ``tb/`` (TensorBoard). :func:`load` accepts, by one explicit rule:

* the run directory itself -> its newest periodic checkpoint (or ``step``);
* ``<run>/checkpoints`` or ``<run>/best`` -> the newest step there (or ``step``);
* ``<run>/checkpoints/<step>`` or ``<run>/best/<step>`` -> that step.

Nothing else is guessed: a directory without ``config.json`` (or whose parent, for the forms
above, has none) is refused with an error naming it; no directory further up is looked at.

Which step: ``step`` (or a step folder) is loaded or the load fails naming that step. Without
one, the newest step is loaded; when its folder is incomplete or unreadable, the newest readable
older step is loaded instead, and that is never silent: :attr:`Run.skipped_steps` lists each
newer step passed over and why, and a warning is logged (``mmar eval`` prints it and puts it in
its JSON). ``eval``, ``export``, the tools and the
quickstart all load runs through here::

    run = mmar.run.load("runs/mem_mlp_41")
    pred = run.task.predict_clips(run.variables, clips)
"""
from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Iterable

from mmar.errors import CheckpointError, ConfigError
from mmar.train.checkpoint import BEST_DIR, LATEST_DIR, load_params, resolve_step_dir, step_dirs
from mmar.train.config import CONFIG_FILENAME, Config, apply_overrides, config_from_dict, read_saved_config

__all__ = ["Run", "load", "load_variables", "load_run_config", "find_workdir"]

log = logging.getLogger("mmar.run")


@dataclasses.dataclass
class Run:
    """A loaded run: its config (with any overrides applied), task, variables as saved
    (``{'params': ..., **extra_collections}``, numpy) and which checkpoint they came from.
    ``skipped_steps``: newer steps passed over because unreadable, ``[{"step", "error"}]``."""

    workdir: Path
    config: Config
    task: Any
    variables: dict
    step: int
    checkpoint: Path
    skipped_steps: list = dataclasses.field(default_factory=list)


def find_workdir(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(run directory, checkpoint directory or run directory)`` of ``path`` by the rule above."""
    p = Path(path).absolute()
    if not p.exists():
        raise CheckpointError(f"{path}: no such run or checkpoint directory")
    candidates = [(p, p)]
    if p.name in (LATEST_DIR, BEST_DIR):
        candidates.append((p.parent, p))
    if p.name.isdigit() and p.parent.name in (LATEST_DIR, BEST_DIR):
        candidates.append((p.parent.parent, p))
    for workdir, ckpt in candidates:
        if (workdir / CONFIG_FILENAME).is_file():
            return workdir, ckpt
    raise CheckpointError(f"{path}: not a run directory (no {CONFIG_FILENAME}); pass a directory written by "
                          f"mmar train, its {LATEST_DIR}/ or {BEST_DIR}/ folder, or one step folder in them")


def _migrate(payload: dict, where: Path) -> tuple[str, dict]:
    """``(task, config dict)``; configs saved before tasks were named (``model.kind``) are mapped
    onto today's task configs (fields of other models that the old shared section carried are
    dropped)."""
    import copy

    from mmar.tasks import task_class

    d = copy.deepcopy(payload["config"])
    task = payload.get("task") or d.get("task")
    if task is None:
        model = d.get("model") or {}
        task = model.pop("kind", None)
        if task is None:
            raise ConfigError(f"{where}: the saved config names no task")
        known = {f.name for f in dataclasses.fields(task_class(task).ModelConfig)}
        dropped = sorted(set(model) - known)
        d["model"] = {k: v for k, v in model.items() if k in known}
        if dropped:
            log.info("%s: old config format; fields not of the %s model ignored: %s", where, task, dropped)
    d["task"] = task
    return task, d


def load_run_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """The typed config of the run at ``path`` (any form :func:`load` accepts), with
    ``"key=value"`` overrides applied."""
    from mmar.tasks import task_class

    workdir, _ = find_workdir(path)
    task, d = _migrate(read_saved_config(workdir), workdir / CONFIG_FILENAME)
    cfg = config_from_dict(d, task_class(task).default_config())
    return apply_overrides(cfg, list(overrides))


def load(path: str | os.PathLike, *, overrides: Iterable[str] = (), step: int | None = None, ema: bool = False,
         benchmark=None) -> Run:
    """Load the run at ``path``: config (plus ``overrides``, e.g. ``model.ik=true``), its task
    (built on that config; ``benchmark`` is passed to the task) and the variables of the chosen
    checkpoint (``ema``: the EMA weights). Raises :class:`CheckpointError` or
    :class:`ConfigError` naming what is missing."""
    from mmar.tasks import make_task

    workdir, _ = find_workdir(path)
    cfg = load_run_config(workdir, overrides)
    if ema and cfg.optim.ema_decay is None:
        raise CheckpointError(f"{workdir}: the run kept no EMA weights (optim.ema_decay was None)")
    variables, step_dir, skipped = load_variables(path, step=step, ema=ema)
    return Run(workdir, cfg, make_task(cfg, benchmark=benchmark), variables, int(step_dir.name), step_dir,
               skipped)


def load_variables(path: str | os.PathLike, *, step: int | None = None, ema: bool = False
                   ) -> tuple[dict, Path, list[dict]]:
    """``(variables, step folder, skipped steps)`` of the run at ``path`` by the rules of
    :func:`load`, without building its task (no data is loaded): what fine-tuning
    (``train.init_from``) starts from."""
    workdir, ckpt = find_workdir(path)
    explicit = step is not None or (ckpt != workdir and ckpt.name.isdigit())
    if explicit:
        if step is None and not (ckpt / "state").is_dir():
            raise CheckpointError(f"step {ckpt.name} was asked for and cannot be loaded: {ckpt}: incomplete "
                                  f"checkpoint (no state/ folder)")
        step_dir = resolve_step_dir(ckpt, step)
        try:
            variables, _ = load_params(step_dir, ema=ema)
        except CheckpointError as e:
            raise CheckpointError(f"step {step_dir.name} was asked for and cannot be loaded: {e}") from e
        return variables, step_dir, []
    step_dir, variables, skipped = _newest_readable(ckpt, ema)
    return variables, step_dir, skipped


def _newest_readable(ckpt: Path, ema: bool) -> tuple[Path, dict, list[dict]]:
    """The newest step of ``ckpt`` (a run or its checkpoints/best folder) that loads, its
    variables and the newer steps passed over (each with why)."""
    base = ckpt / LATEST_DIR if (ckpt / LATEST_DIR).is_dir() else ckpt
    dirs = step_dirs(base)
    if not dirs:
        raise CheckpointError(f"{ckpt}: no checkpoint found")
    skipped: list[dict] = []
    for d in reversed(dirs):
        if not (d / "state").is_dir():
            skipped.append({"step": int(d.name), "error": f"{d}: incomplete checkpoint (no state/ folder)"})
            continue
        try:
            variables, _ = load_params(d, ema=ema)
        except CheckpointError as e:
            skipped.append({"step": int(d.name), "error": str(e)})
            continue
        if skipped:
            log.warning("%s: newest checkpoint step(s) %s unreadable; loaded step %s instead (%s)", base,
                        ", ".join(str(x["step"]) for x in skipped), d.name, skipped[0]["error"])
        return d, variables, skipped
    raise CheckpointError(f"{base}: no readable checkpoint (steps " + ", ".join(d.name for d in dirs) + "); newest: "
                          + skipped[0]["error"])

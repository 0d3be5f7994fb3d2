"""Tasks bind one model to its data, loss and evaluation for :func:`mmar.train.train`.

One module per task; ``cfg.task`` names it (big_vision's registry by module name):

| task | module | model |
|---|---|---|
| ``agrol_mlp`` | :mod:`mmar.tasks.agrol_mlp` | AGRoL-MLP |
| ``mlp_vqvae`` | :mod:`mmar.tasks.mlp_vqvae` | Mem-MLP's MLP VQ-VAE (stage 1) |
| ``mem_mlp`` | :mod:`mmar.tasks.mem_mlp` | Mem-MLP (stage 2) |
| ``tmt_vqvae`` | :mod:`mmar.tasks.tmt_vqvae` | MotionMAR's TMT VQ-VAE (stage 1) |
| ``motionmar`` | :mod:`mmar.tasks.motionmar` | MotionMAR: MAN + SAC + MRN (stage 2) |
| ``moscale_vqvae`` | :mod:`mmar.tasks.moscale_vqvae` | MoScale's residual tokenizer (HRVQVAE, stage 1) |
| ``scalemogen_vqvae`` | :mod:`mmar.tasks.scalemogen_vqvae` | ScaleMoGen's skeletal-temporal BSQ tokenizer (stage 1) |
| ``t2m_evaluator`` | :mod:`mmar.tasks.t2m_evaluator` | Guo et al.'s text-motion evaluator (frozen after training) |
| ``moscale`` | :mod:`mmar.tasks.moscale` | MoScale's next-scale text-to-motion predictor (stage 2) |
| ``t2m_gpt`` | :mod:`mmar.tasks.t2m_gpt` | next-token (T2M-GPT style) baseline on MoScale's finest tokens (stage 2) |
| ``scalemogen`` | :mod:`mmar.tasks.scalemogen` | ScaleMoGen's bit-wise next-scale predictor and zero-shot editing (stage 2) |

A task module defines its ``cfg.model`` dataclass and its task class, and ends with
``TASK = <class>``. A task outside this package is named by its full module path
(``cfg.task = "mypackage.my_task"``).
"""
from __future__ import annotations

import importlib

from mmar.errors import ConfigError

__all__ = ["TASKS", "task_class", "make_task"]

TASKS: tuple[str, ...] = ("agrol_mlp", "mlp_vqvae", "mem_mlp", "tmt_vqvae", "motionmar", "moscale_vqvae",
                         "scalemogen_vqvae", "t2m_evaluator", "moscale", "t2m_gpt", "scalemogen")


def task_class(name: str | None) -> type:
    """The task class registered under ``name`` (a name of :data:`TASKS` or a module path)."""
    if not name:
        raise ConfigError("config has no task (set cfg.task to one of " + ", ".join(TASKS) + ")")
    module_name = f"mmar.tasks.{name}" if name in TASKS else name
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise ConfigError(f"task {name!r}: no such task (known: {', '.join(TASKS)})") from None
        raise
    cls = getattr(module, "TASK", None)
    if cls is None:
        raise ConfigError(f"task {name!r}: module {module_name} defines no TASK")
    return cls


def make_task(cfg, **kwargs):
    """The task of an experiment config (``cfg.task``), built on it."""
    return task_class(cfg.task)(cfg, **kwargs)

"""Generic trainer for mmar models (Mesh + NamedSharding + jit with donation, orbax checkpoints).

- ``train(task, cfg, workdir) -> (TrainState, history)``: see :mod:`mmar.train.loop`.
- ``Task``: the protocol a model implements (``init``, ``loss``, ``train_iterator``, optional
  ``evaluate``); ``TrainState``: the saved pytree.
- ``load_config(path_or_module, overrides)``: configs are code, see :mod:`mmar.train.config`.
- ``load_params(checkpoint_dir) -> (variables, config_dict)``: see :mod:`mmar.train.checkpoint`.
- ``compile_step(task, cfg)``: the compiled step, a fresh state and its ``StepCost`` (FLOPs,
  samples, MFU peak; :mod:`mmar.train.compute`) without a work directory;
  ``estimate_step_cost(cfg)`` just the cost. Mixed precision: :mod:`mmar.train.precision`.
"""
from mmar.train.checkpoint import load_params
from mmar.train.config import Config, OptimConfig, TrainConfig, load_config
from mmar.train.compute import StepCost, estimate_step_cost
from mmar.train.loop import CompiledStep, StatefulIterator, Task, TrainingDivergedError, TrainState, compile_step, train

__all__ = [
    "train",
    "Task",
    "TrainState",
    "load_config",
    "load_params",
    "Config",
    "OptimConfig",
    "TrainConfig",
    "StatefulIterator",
    "TrainingDivergedError",
    "compile_step",
    "CompiledStep",
    "estimate_step_cost",
    "StepCost",
]

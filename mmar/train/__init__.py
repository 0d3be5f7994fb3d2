"""Generic trainer for mmar models (Mesh + NamedSharding + jit with donation, orbax checkpoints).

- ``train(task, cfg, workdir) -> (TrainState, history)``: see :mod:`mmar.train.loop`.
- ``Task``: the protocol a model implements (``init``, ``loss``, ``train_iterator``, optional
  ``evaluate``); ``TrainState``: the saved pytree.
- ``load_config(path_or_module, overrides)``: configs are code, see :mod:`mmar.train.config`.
- ``load_params(checkpoint_dir) -> (variables, config_dict)``: see :mod:`mmar.train.checkpoint`.
"""
from mmar.train.checkpoint import load_params
from mmar.train.config import Config, OptimConfig, TrainConfig, load_config
from mmar.train.loop import StatefulIterator, Task, TrainingDivergedError, TrainState, train

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
]

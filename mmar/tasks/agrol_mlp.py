"""AGRoL-MLP on the Bandai benchmark: windows of ``W`` frames, loss = mean per-joint 6D L2
distance (AGRoL's rotation loss); online prediction slides the window one frame at a time.
``model.frame="heading"`` expresses each window (input and target root orientation) in the
heading frame of its last frame's head (:mod:`mmar.models.heading`); ``"world"`` (default) is
AGRoL's layout.

This is the shortest task file: copy it to add a model (a model config, ``init``, ``loss``,
``predict_batch``, then ``TASK = ...``; the registry of :mod:`mmar.tasks` finds it by the module's
name).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from mmar.models import body, heading
from mmar.models.agrol_mlp import AGRoLMLP, AGRoLMLPConfig, predict_online
from mmar.tasks.base import BenchmarkTask, frozen_config

__all__ = ["AGRoLMLPModelConfig", "AGRoLMLPTask", "TASK"]


@dataclasses.dataclass
class AGRoLMLPModelConfig:
    """``cfg.model`` of the ``agrol_mlp`` task (:class:`mmar.models.agrol_mlp.AGRoLMLPConfig`)."""

    window: int = 196  # frames per window (AGRoL: 196; the Mem-MLP paper's baseline: 41)
    dim: int = 512
    depth: int = 12
    frame: str = "world"  # 'world' (AGRoL's layout) | 'heading' (each window in its last frame's heading frame)


class AGRoLMLPTask(BenchmarkTask):
    ModelConfig = AGRoLMLPModelConfig
    export_modes = ("window",)

    def __init__(self, cfg, benchmark=None):
        super().__init__(cfg, benchmark)
        self.net = frozen_config(AGRoLMLPConfig, self.m)
        self.model = AGRoLMLP(self.net)

    def init(self, rng, batch):
        return self.model.init(rng, jnp.asarray(batch["sparse"][:, -self.m.window:]))

    def loss(self, params, extra_vars, batch, rng, step):
        sparse, target = batch["sparse"], batch["rot6d"]
        if self.m.frame == "heading":
            frame = heading.window_frame(sparse)
            sparse, target = heading.sparse_to_frame(sparse, frame), heading.pose_to_frame(target, frame)
        pred = self.model.apply({"params": params}, sparse)
        err = jnp.mean(jnp.linalg.norm(pred - target, axis=-1))
        return err, ({"rot": err}, None)

    def predict_batch(self, variables, sparse, offsets):
        return _predict({"params": variables["params"]}, sparse, offsets, net=self.net)


@functools.partial(jax.jit, static_argnames=("net",))
def _predict(variables, sparse, offsets, *, net):
    rot = predict_online(AGRoLMLP(net), variables, sparse)
    off = jnp.broadcast_to(offsets[:, None], rot.shape[:2] + offsets.shape[1:])
    return rot, body.body_in_world(rot, off, sparse)


TASK = AGRoLMLPTask

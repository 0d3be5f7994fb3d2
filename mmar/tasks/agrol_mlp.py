"""AGRoL-MLP on the Bandai benchmark: windows of ``W`` frames, loss = mean per-joint 6D L2
distance (AGRoL's rotation loss), plus ``model.pos_weight`` times the mean joint-position
error (metres) of the forward kinematics of the predicted rotations with the clip's bone
offsets, both bodies placed at the head (our addition: the metric the benchmark reports);
online prediction slides the window one frame at a time.
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
    pos_weight: float = 0.0  # weight of the FK joint-position loss (0: AGRoL's rotation loss only)


class AGRoLMLPTask(BenchmarkTask):
    ModelConfig = AGRoLMLPModelConfig
    export_modes = ("window",)

    def __init__(self, cfg, benchmark=None):
        super().__init__(cfg, benchmark)
        self.net = frozen_config(AGRoLMLPConfig, self.m)
        self.model = AGRoLMLP(self.net)

    @property
    def train_keys(self):
        return ("sparse", "rot6d", "joints", "offsets") if self.m.pos_weight else ("sparse", "rot6d", "joints")

    def init(self, rng, batch):
        return self.model.init(rng, jnp.asarray(batch["sparse"][:, -self.m.window:]))

    def loss(self, params, extra_vars, batch, rng, step):
        batch = self.augment(batch, rng)
        sparse, target = batch["sparse"], batch["rot6d"]
        frame = None
        if self.m.frame == "heading":
            frame = heading.window_frame(sparse)
            sparse, target = heading.sparse_to_frame(sparse, frame), heading.pose_to_frame(target, frame)
        pred = self.model.apply({"params": params}, sparse)
        err = jnp.mean(jnp.linalg.norm(pred - target, axis=-1))
        metrics = {"rot": err}
        if self.m.pos_weight:
            pos = position_error(pred, batch["joints"], batch["offsets"], frame)
            metrics["pos"] = pos
            err = err + self.m.pos_weight * pos
        return err, (metrics, None)

    def predict_batch(self, variables, sparse, offsets):
        return _predict({"params": variables["params"]}, sparse, offsets, net=self.net)


def position_error(pred_rot6d, joints, offsets, frame=None):
    """Mean joint-position error (metres) between the forward kinematics of ``pred_rot6d
    (B, W, 22, 6)`` (in ``frame`` when given, else the world) with ``offsets (B, 22, 3)`` and the
    world ``joints (B, W, 22, 3)``, both bodies translated so that their head is at the origin."""
    off = jnp.broadcast_to(offsets[:, None], pred_rot6d.shape[:2] + offsets.shape[1:])
    _, fk = body.fk_rot6d(pred_rot6d, off)
    rel = joints - joints[..., body.HEAD:body.HEAD + 1, :]
    if frame is not None:
        rel = heading.vectors_to_frame(rel, frame)
    d = fk - fk[..., body.HEAD:body.HEAD + 1, :] - rel
    return jnp.mean(jnp.sqrt(jnp.sum(d * d, -1) + 1e-12))  # the head's own error is 0: keep its gradient finite


@functools.partial(jax.jit, static_argnames=("net",))
def _predict(variables, sparse, offsets, *, net):
    rot = predict_online(AGRoLMLP(net), variables, sparse)
    off = jnp.broadcast_to(offsets[:, None], rot.shape[:2] + offsets.shape[1:])
    return rot, body.body_in_world(rot, off, sparse)


TASK = AGRoLMLPTask

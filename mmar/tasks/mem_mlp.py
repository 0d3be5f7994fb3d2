"""Mem-MLP on the Bandai benchmark (stage 2, over the frozen MLP VQ-VAE of ``mlp_vqvae``).

Training windows have ``W + 1`` frames so that every window has its previous window as memory
(``W + 2`` with ``memory_feed="blend"``). The frozen VQ-VAE (``model.vqvae_workdir``) is loaded
at ``init`` and kept in the checkpoint (``extra_vars["vqvae"]``), so a Mem-MLP checkpoint is
self-contained. Loss: :func:`mmar.models.mem_mlp.mem_mlp_loss` (rotation and position heads,
uncertainty weighting). Online prediction feeds the model its own previous predictions as
memory; ``ik=True`` adds the L-BFGS IK from the rotation head toward the position head.
``model.frame="heading"`` expresses each window -- its input, its targets and its memory (the
previous window, before the code vectors are computed) -- in the heading frame of its last
frame's head (:mod:`mmar.models.heading`, :mod:`mmar.models.mem_mlp`); ``"world"`` (default) is
the paper's layout. ``model.pos_weight`` adds AGRoL-MLP's FK joint-position loss on the rotation
head (our addition, measured in docs/results.md).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from mmar.errors import ConfigError
from mmar.models import body, heading
from mmar.models.mem_mlp import MemMLP, MemMLPConfig, init_loss_uncertainty, mem_mlp_loss, predict_clip, training_memory
from mmar.tasks.agrol_mlp import position_error
from mmar.tasks.base import BenchmarkTask, frozen_config, load_stage_variables
from mmar.tasks.mlp_vqvae import build_vqvae, check_stage_frame

__all__ = ["MemMLPModelConfig", "MemMLPTask", "TASK"]


@dataclasses.dataclass
class MemMLPModelConfig:
    """``cfg.model`` of the ``mem_mlp`` task: the network (:class:`mmar.models.mem_mlp.MemMLPConfig`),
    its training and inference options, and the architecture of the frozen VQ-VAE."""

    window: int = 41
    dim: int = 512
    depth: int = 12
    head_depth: int = 2
    use_memory: bool = True  # ablation: no Memory-Blocks
    memory_layers: tuple[int, ...] | None = None  # 1-based blocks followed by memory (None: every even one)
    memory_into_heads: bool = True
    use_code: bool = True  # ablation: Memory-Blocks without VQ code vectors
    use_pos_head: bool = True  # ablation: rotation head only
    alpha_per_channel: bool = True
    eval_alpha: float = 0.5
    pad_mode: str = "edge"  # 'edge' | 'zero': frames before the clip's start
    # 'world' (the paper's layout) | 'heading': each window, its memory included, in the heading frame of
    # its last frame's head (mmar.models.heading)
    frame: str = "world"
    weighting: str = "uncertainty"  # 'uncertainty' | 'fixed'
    # training memory: 'gt' = the previous window's ground truth (the paper's scheme); 'blend' =
    # a per-sample random blend of it with the model's own gradient-free prediction of that
    # window (whose memory is ground truth), to narrow the gap to inference; 'scheduled' = ground truth at
    # step 0, the prediction's share growing linearly to the 'blend' over the first memory_ramp of the steps
    memory_feed: str = "gt"
    memory_ramp: float = 0.5  # fraction of train.steps of the 'scheduled' ramp
    # training memory motion perturbed like an online model's own errors (mem_mlp.training_memory):
    # per-sample scale U(0, memory_noise) of a per-joint drift held over the window plus per-frame
    # jitter, in 6D units. 0: none
    memory_noise: float = 0.0
    # weight of an FK joint-position loss on the rotation head (as AGRoL-MLP's model.pos_weight: the
    # forward kinematics of the predicted rotations with the clip's bone offsets against the true joints,
    # both placed at the head; added outside the uncertainty weighting). 0: the paper's loss only
    pos_weight: float = 0.0
    ik: bool = False  # L-BFGS IK from the rotation head toward the position head at inference
    ik_iters: int = 15
    # 0: every frame's IK solved on its own (the paper). >0: frames in order, each frame's head-relative
    # joints pulled toward the previous frame's solution with this weight (mmar.models.ik; not in the paper)
    ik_smooth: float = 0.0
    ik_reg: float = 1e-3  # weight of the IK's pull toward the rotation head's output
    vqvae_workdir: str | None = None  # the trained mlp_vqvae run (needed with use_memory and use_code)
    # architecture of that VQ-VAE (must match its run; see mmar.tasks.mlp_vqvae)
    vq_hidden: int = 256
    vq_depth: int = 4
    vq_code_dim: int = 64
    vq_codebook_size: int = 512
    vq_use_sparse: bool = True
    vq_residual: bool = True
    vq_beta: float = 0.25


#: the fields this config shares with its mlp_vqvae run (``frame``: the VQ-VAE must have been trained on
#: windows in the frame this model expresses its memory in)
VQ_FIELDS = ("vq_hidden", "vq_depth", "vq_code_dim", "vq_codebook_size", "vq_use_sparse", "vq_residual", "frame")


class MemMLPTask(BenchmarkTask):
    ModelConfig = MemMLPModelConfig
    export_modes = ("stream",)

    def __init__(self, cfg, benchmark=None):
        super().__init__(cfg, benchmark)
        m = self.m
        if m.memory_feed not in ("gt", "blend", "scheduled"):
            raise ConfigError(f"model.memory_feed must be 'gt', 'blend' or 'scheduled', got {m.memory_feed!r}")
        if m.memory_feed == "scheduled" and not 0.0 < m.memory_ramp <= 1.0:
            raise ConfigError(f"model.memory_ramp must be in (0, 1], got {m.memory_ramp}")
        if m.memory_noise < 0:
            raise ConfigError(f"model.memory_noise must be >= 0, got {m.memory_noise}")
        if m.weighting not in ("uncertainty", "fixed"):
            raise ConfigError(f"model.weighting must be 'uncertainty' or 'fixed', got {m.weighting!r}")
        self.needs_vq = m.use_memory and m.use_code
        if self.needs_vq and not m.vqvae_workdir:
            raise ConfigError("mem_mlp with code vectors needs model.vqvae_workdir (train configs/mem_mlp_vqvae.py first)")
        self.net = frozen_config(MemMLPConfig, m, code_dim=m.vq_code_dim)
        self.model = MemMLP(self.net)
        self.vq_model = build_vqvae(m) if self.needs_vq else None
        if self.needs_vq:
            check_stage_frame(m.vqvae_workdir, "mlp_vqvae", self.net.frame, "mem_mlp")

    @property
    def train_keys(self):
        return ("sparse", "rot6d", "joints", "offsets") if self.m.pos_weight else ("sparse", "rot6d", "joints")

    @property
    def frames_per_window(self) -> int:
        return self.m.window + (2 if self._self_fed else 1)

    @property
    def _self_fed(self) -> bool:
        return bool(self.m.use_memory and self.m.memory_feed in ("blend", "scheduled"))

    def init(self, rng, batch):
        sparse = jnp.asarray(batch["sparse"][:, -self.m.window:])
        variables = dict(self.model.init({"params": rng, "memory": rng}, sparse, None, train=False))
        params = dict(variables.pop("params"))
        if self.m.weighting == "uncertainty":
            params["loss_uncertainty"] = init_loss_uncertainty(self.m.use_pos_head)
        out = {"params": params, **variables}
        if self.vq_model is not None:
            vq = load_stage_variables(self.m.vqvae_workdir, "mlp_vqvae", ("params",), self.m, VQ_FIELDS)
            out["vqvae"] = jax.tree.map(jnp.asarray, vq)  # not the training statistics of the dead-code remedy
        return out

    def model_vars(self, variables):
        p = {k: v for k, v in variables["params"].items() if k != "loss_uncertainty"}
        return {"params": p, **{k: v for k, v in variables.items() if k not in ("params", "vqvae")}}

    def loss(self, params, extra_vars, batch, rng, step):
        W, m = self.m.window, self.m
        batch = self.augment(batch, rng)
        sparse, rot, joints = batch["sparse"], batch["rot6d"], batch["joints"]
        vq_vars = extra_vars.get("vqvae")
        model_vars = self.model_vars({"params": params, **extra_vars})
        mem = None
        blend = self._self_fed
        mix = 1.0
        if m.memory_feed == "scheduled":
            ramp = max(m.memory_ramp * self.cfg.train.steps, 1.0)
            mix = jnp.minimum(jnp.asarray(step, jnp.float32) / ramp, 1.0)
        r_model, r_blend = jax.random.split(rng) if blend else (rng, None)
        r_noise = jax.random.fold_in(rng, 0x6E6F) if m.memory_noise else None
        # heading mode: a window's input, targets and memory in its last frame's heading frame
        in_frame = m.frame == "heading"
        frame = heading.window_frame(sparse) if in_frame else None
        if m.use_memory:
            prev = (slice(None), slice(-W - 1, -1))  # the previous window, frames t-W .. t-1
            pred_prev = None
            if blend:  # the model's own prediction of that window (in the world, in heading mode)
                f_prev = heading.window_frame(sparse[prev]) if in_frame else None
                mem0 = training_memory(sparse[:, :W], rot[:, :W], self.vq_model, vq_vars, code_dim=m.vq_code_dim,
                                       frame=f_prev)
                x_prev = heading.sparse_to_frame(sparse[prev], f_prev) if in_frame else sparse[prev]
                pred_prev = self.model.apply(jax.lax.stop_gradient(model_vars), x_prev, mem0)["rot6d"]
                if in_frame:
                    pred_prev = heading.pose_from_frame(pred_prev, f_prev)
            mem = training_memory(sparse[prev], rot[prev], self.vq_model, vq_vars, rot6d_prev_pred=pred_prev,
                                  rng=r_blend, code_dim=m.vq_code_dim, frame=frame, mix=mix,
                                  noise=m.memory_noise, noise_rng=r_noise)
        cur = {"sparse": sparse[:, -W:], "rot6d": rot[:, -W:], "joints": joints[:, -W:]}
        if in_frame:
            cur = {"sparse": heading.sparse_to_frame(cur["sparse"], frame),
                   "rot6d": heading.pose_to_frame(cur["rot6d"], frame),
                   "joints": heading.points_to_frame(cur["joints"], frame)}
        out = self.model.apply(model_vars, cur["sparse"], mem, train=True, rng=r_model)
        loss, metrics = mem_mlp_loss(out, cur, params.get("loss_uncertainty"), weighting=m.weighting)
        if m.pos_weight:  # both bodies are in the same frame (heading or world) and placed at the head
            fk_pos = position_error(out["rot6d"], cur["joints"], batch["offsets"])
            metrics["fk_pos"] = fk_pos
            loss = loss + m.pos_weight * fk_pos
        return loss, (metrics, None)

    def predict_batch(self, variables, sparse, offsets):
        vq_net = None if self.vq_model is None else self.vq_model.config
        return _predict(self.model_vars(variables), variables.get("vqvae"), sparse, offsets, net=self.net,
                        vq_net=vq_net, ik_iters=int(self.m.ik_iters) if self.m.ik else 0,
                        ik_smooth=float(self.m.ik_smooth), ik_reg=float(self.m.ik_reg))


@functools.partial(jax.jit, static_argnames=("net", "vq_net", "ik_iters", "ik_smooth", "ik_reg"))
def _predict(model_vars, vq_vars, sparse, offsets, *, net, vq_net, ik_iters, ik_smooth=0.0, ik_reg=1e-3):
    from mmar.models.mlp_vqvae import MLPVQVAE

    out = predict_clip(MemMLP(net), model_vars, sparse, None if vq_net is None else MLPVQVAE(vq_net), vq_vars)
    rot = out["rot6d"]
    if ik_iters and out.get("pos") is not None:
        from mmar.models.ik import ik_refine

        rot = ik_refine(rot, out["pos"], offsets[:, None], body.tracked_head(sparse), iters=ik_iters,
                        smooth=ik_smooth, reg=ik_reg)
    off = jnp.broadcast_to(offsets[:, None], rot.shape[:2] + offsets.shape[1:])
    return rot, body.body_in_world(rot, off, sparse)


TASK = MemMLPTask

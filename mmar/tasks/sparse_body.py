"""Training and evaluation of the sparse-to-full-body models on the Bandai benchmark.

One :class:`SparseBodyTask` serves the three model kinds of ``configs/``:

* ``"agrol_mlp"``: AGRoL-MLP, windows of ``W`` frames, loss = mean per-joint 6D L2 distance
  (AGRoL's rotation loss);
* ``"mlp_vqvae"``: Mem-MLP's MLP VQ-VAE (trained first, then frozen);
* ``"mem_mlp"``: Mem-MLP; windows of ``W + 1`` frames so that every window has its previous
  window as memory; the frozen VQ-VAE (``model.vqvae_workdir``) is loaded at ``init`` and kept in
  the checkpoint (``extra_vars["vqvae"]``), so a Mem-MLP checkpoint is self-contained.

Evaluation runs each model *online*, as a headset would: frame ``t`` is predicted from the
sparse input up to ``t`` only (start edge-padded), Mem-MLP with its own previous predictions as
memory. The body is placed by the tracked head (``docs/design.md``) and scored with the AGRoL
metrics of :mod:`mmar.eval.sparse`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from mmar.errors import CheckpointError, ConfigError
from mmar.models import body

KINDS = ("agrol_mlp", "mem_mlp", "mlp_vqvae")


@dataclasses.dataclass
class SparseBodyModelConfig:
    kind: str = "mem_mlp"
    window: int = 41
    dim: int = 512
    depth: int = 12
    head_depth: int = 2
    # Mem-MLP ablations
    use_memory: bool = True
    use_pos_head: bool = True
    use_code: bool = True
    weighting: str = "uncertainty"  # 'uncertainty' | 'fixed'
    # training memory: 'gt' = the previous window's ground truth (the paper's scheme); 'blend' =
    # a per-sample random blend of it with the model's own gradient-free prediction of that
    # window (whose memory is ground truth), to narrow the gap to inference
    memory_feed: str = "gt"
    ik: bool = False  # L-BFGS IK from the rotation head toward the position head at inference
    ik_iters: int = 15
    vqvae_workdir: str | None = None  # a trained mlp_vqvae run (required by mem_mlp with codes)
    # MLP VQ-VAE
    vq_hidden: int = 256
    vq_depth: int = 4
    vq_code_dim: int = 64
    vq_codebook_size: int = 512
    vq_revive_every: int = 100  # dead-code remedy of the MLP VQ-VAE every N steps (0 disables)
    vq_revive_threshold: float = 0.05  # dead: EMA (decay 0.99) of hits per batch below this


@dataclasses.dataclass
class SparseBodyDataConfig:
    root: str | None = None  # Bandai data directory (default: ../shared/data/bandai-namco)
    fps: float = 60.0
    max_train_clips: int | None = None
    eval_split: str = "val"
    max_eval_clips: int | None = 24
    eval_batch: int = 64  # clips per compiled evaluation call


def build_model(m: SparseBodyModelConfig):
    """The Flax module of a model config."""
    if m.kind == "agrol_mlp":
        from mmar.models.agrol_mlp import AGRoLMLP, AGRoLMLPConfig

        return AGRoLMLP(AGRoLMLPConfig(window=m.window, dim=m.dim, depth=m.depth))
    if m.kind == "mem_mlp":
        from mmar.models.mem_mlp import MemMLP, MemMLPConfig

        return MemMLP(MemMLPConfig(window=m.window, dim=m.dim, depth=m.depth, head_depth=m.head_depth,
                                   use_memory=m.use_memory, use_pos_head=m.use_pos_head,
                                   use_code=m.use_code, code_dim=m.vq_code_dim))
    if m.kind == "mlp_vqvae":
        return build_vqvae(m)
    raise ConfigError(f"model.kind must be one of {KINDS}, got {m.kind!r}")


def build_vqvae(m: SparseBodyModelConfig):
    from mmar.models.mlp_vqvae import MLPVQVAE, MLPVQVAEConfig

    return MLPVQVAE(MLPVQVAEConfig(hidden=m.vq_hidden, enc_depth=m.vq_depth, dec_depth=m.vq_depth,
                                   code_dim=m.vq_code_dim, codebook_size=m.vq_codebook_size))


def _needs_vq(m: SparseBodyModelConfig) -> bool:
    return m.kind == "mem_mlp" and m.use_memory and m.use_code


def load_vqvae_variables(workdir: str):
    from mmar.train.checkpoint import load_params

    try:
        variables, cfg = load_params(workdir)
    except CheckpointError:
        raise
    except Exception as e:  # pragma: no cover - defensive
        raise CheckpointError(f"{workdir}: cannot load the VQ-VAE ({e})") from e
    kind = (cfg.get("model") or {}).get("kind")
    if kind != "mlp_vqvae":
        raise CheckpointError(f"{workdir}: model.vqvae_workdir must be an mlp_vqvae run, this is {kind!r}")
    return {"params": variables["params"]}  # not the training statistics of the dead-code remedy


class SparseBodyTask:
    """The :class:`mmar.train.Task` of the sparse-to-full-body models."""

    def __init__(self, cfg, benchmark=None):
        self.cfg = cfg
        self.m: SparseBodyModelConfig = cfg.model
        self.d: SparseBodyDataConfig = cfg.data
        if self.m.kind not in KINDS:
            raise ConfigError(f"model.kind must be one of {KINDS}, got {self.m.kind!r}")
        if self.m.memory_feed not in ("gt", "blend"):
            raise ConfigError(f"model.memory_feed must be 'gt' or 'blend', got {self.m.memory_feed!r}")
        if _needs_vq(self.m) and not self.m.vqvae_workdir:
            raise ConfigError("mem_mlp with code vectors needs model.vqvae_workdir (train configs/mem_mlp_vqvae.py first)")
        self.model = build_model(self.m)
        self.vq_model = build_vqvae(self.m) if _needs_vq(self.m) else None
        self._benchmark = benchmark
        self._eval_fn = None

    # ------------------------------------------------------------------ data
    @property
    def benchmark(self):
        if self._benchmark is None:
            from mmar.data.benchmark import load_sparse_benchmark

            self._benchmark = load_sparse_benchmark(self.d.root, self.d.fps)
        return self._benchmark

    @property
    def frames_per_window(self) -> int:
        if self.m.kind != "mem_mlp":
            return self.m.window
        return self.m.window + (2 if self.m.use_memory and self.m.memory_feed == "blend" else 1)

    def train_iterator(self, seed: int, start_state=None):
        from mmar.data.pipeline import ClipArrays, make_train_iterator

        clips = self.benchmark.subset("train", self.d.max_train_clips)
        source = ClipArrays.from_arrays(clips)
        return make_train_iterator(source, self.frames_per_window, self.cfg.train.batch_size, seed,
                                   keys=("sparse", "rot6d", "joints"))

    # ------------------------------------------------------------------ model
    def init(self, rng, batch):
        W = self.m.window
        sparse = jnp.asarray(batch["sparse"][:, -W:])
        if self.m.kind == "agrol_mlp":
            return self.model.init(rng, sparse)
        if self.m.kind == "mlp_vqvae":
            variables = dict(self.model.init(rng, jnp.asarray(batch["rot6d"][:, -W:]), sparse))
            n = int(np.prod(batch["rot6d"].shape[:2]))  # frames per batch: the revival candidates
            variables["vq_stats"] = {"code_count": jnp.zeros((self.m.vq_codebook_size,), jnp.float32)}
            variables["revive"] = {"z_e": jnp.zeros((n, self.m.vq_code_dim), jnp.float32)}
            return variables
        from mmar.models.mem_mlp import init_loss_uncertainty

        variables = dict(self.model.init({"params": rng, "memory": rng}, sparse, None, train=False))
        params = dict(variables.pop("params"))
        if self.m.weighting == "uncertainty":
            params["loss_uncertainty"] = init_loss_uncertainty(self.m.use_pos_head)
        out = {"params": params, **variables}
        if self.vq_model is not None:
            out["vqvae"] = jax.tree.map(jnp.asarray, load_vqvae_variables(self.m.vqvae_workdir))
        return out

    def _model_vars(self, params, extra_vars):
        if self.m.kind == "mlp_vqvae":
            return {"params": params}
        p = {k: v for k, v in params.items() if k != "loss_uncertainty"}
        return {"params": p, **{k: v for k, v in extra_vars.items() if k != "vqvae"}}

    def loss(self, params, extra_vars, batch, rng, step):
        W = self.m.window
        if self.m.kind == "agrol_mlp":
            pred = self.model.apply(self._model_vars(params, extra_vars), batch["sparse"])
            err = jnp.mean(jnp.linalg.norm(pred - batch["rot6d"], axis=-1))
            return err, ({"rot": err}, None)
        if self.m.kind == "mlp_vqvae":
            from mmar.models.mlp_vqvae import vqvae_loss

            out = self.model.apply(self._model_vars(params, extra_vars), batch["rot6d"], batch["sparse"], train=True)
            loss, metrics = vqvae_loss(out, batch["rot6d"])
            if "vq_stats" not in extra_vars:  # a run from before the dead-code remedy
                return loss, (metrics, None)
            count = 0.99 * extra_vars["vq_stats"]["code_count"] + 0.01 * out["counts"]
            metrics["dead"] = jnp.mean((count < self.m.vq_revive_threshold).astype(jnp.float32))
            z_e = jax.lax.stop_gradient(out["z_e"]).reshape(-1, self.m.vq_code_dim)
            return loss, (metrics, {"vq_stats": {"code_count": count}, "revive": {"z_e": z_e}})
        from mmar.models.mem_mlp import mem_mlp_loss, training_memory

        sparse, rot, joints = batch["sparse"], batch["rot6d"], batch["joints"]
        vq_vars = extra_vars.get("vqvae")
        model_vars = self._model_vars(params, extra_vars)
        mem = None
        blend = self.m.use_memory and self.m.memory_feed == "blend"
        r_model, r_blend = jax.random.split(rng) if blend else (rng, None)
        if self.m.use_memory:
            prev = (slice(None), slice(-W - 1, -1))  # the previous window, frames t-W .. t-1
            pred_prev = None
            if blend:  # the model's own prediction of that window
                mem0 = training_memory(sparse[:, :W], rot[:, :W], self.vq_model, vq_vars, code_dim=self.m.vq_code_dim)
                pred_prev = self.model.apply(jax.lax.stop_gradient(model_vars), sparse[prev], mem0)["rot6d"]
            mem = training_memory(sparse[prev], rot[prev], self.vq_model, vq_vars, rot6d_prev_pred=pred_prev,
                                  rng=r_blend, code_dim=self.m.vq_code_dim)
        out = self.model.apply(model_vars, sparse[:, -W:], mem, train=True, rng=r_model)
        cur = {"sparse": sparse[:, -W:], "rot6d": rot[:, -W:], "joints": joints[:, -W:]}
        loss, metrics = mem_mlp_loss(out, cur, params.get("loss_uncertainty"), weighting=self.m.weighting)
        return loss, (metrics, None)

    def post_update(self, params, extra_vars, rng, step):
        """Dead-code remedy of the MLP VQ-VAE's codebook (every ``vq_revive_every`` steps)."""
        if self.m.kind != "mlp_vqvae" or self.m.vq_revive_every <= 0 or "vq_stats" not in extra_vars:
            return params, extra_vars
        from mmar.models.mlp_vqvae import revive_dead_codes

        new, count = revive_dead_codes(params, extra_vars["vq_stats"]["code_count"], extra_vars["revive"]["z_e"], rng,
                                       self.m.vq_revive_threshold)
        do = ((step + 1) % self.m.vq_revive_every == 0) & (step > 0)
        params = {**params, "codebook": jnp.where(do, new["codebook"], params["codebook"])}
        count = jnp.where(do, count, extra_vars["vq_stats"]["code_count"])
        return params, {**extra_vars, "vq_stats": {"code_count": count}}

    # ------------------------------------------------------------------ inference
    def predict_fn(self, variables):
        """A jitted ``(sparse (B, T, 54), offsets (B, 22, 3)) -> (rot6d (B,T,22,6), joints (B,T,22,3))``
        running the model online over the clips (``variables`` as saved: params + extras)."""
        m = self.m
        variables = jax.tree.map(jnp.asarray, variables)
        params = variables["params"]
        extra = {k: v for k, v in variables.items() if k != "params"}
        model_vars = self._model_vars(params, extra)
        vq_vars = extra.get("vqvae")

        @jax.jit
        def fn(sparse, offsets):
            if m.kind == "agrol_mlp":
                from mmar.models.agrol_mlp import predict_online

                rot = predict_online(self.model, model_vars, sparse)
                pos_head = None
            elif m.kind == "mem_mlp":
                from mmar.models.mem_mlp import predict_clip

                out = predict_clip(self.model, model_vars, sparse, self.vq_model, vq_vars)
                rot, pos_head = out["rot6d"], out.get("pos")
            else:
                raise ConfigError("the MLP VQ-VAE is not a sparse-to-full-body predictor")
            if m.ik and pos_head is not None:
                from mmar.models.ik import ik_refine

                rot = ik_refine(rot, pos_head, offsets[:, None], body.tracked_head(sparse), iters=m.ik_iters)
            off = jnp.broadcast_to(offsets[:, None], rot.shape[:2] + offsets.shape[1:])
            joints = body.body_in_world(rot, off, sparse)
            return rot, joints

        return fn

    def predict_clips(self, variables, clips: dict[str, dict], batch: int = 64, bucket: int = 128,
                      progress: bool = False) -> dict[str, dict]:
        """Online predictions for ``{clip: arrays}``: clips are grouped into batches padded to a
        multiple of ``bucket`` frames (padding is at the end, so causal predictions of real frames
        are unaffected), so a few compilations serve every clip length."""
        fn = self.predict_fn(variables)
        names = sorted(clips, key=lambda n: clips[n]["sparse"].shape[0])
        out = {}
        groups = [names[i:i + batch] for i in range(0, len(names), batch)]
        if progress:
            from tqdm import tqdm

            groups = tqdm(groups, desc="predicting", unit="batch")
        for group in groups:
            T = max(clips[n]["sparse"].shape[0] for n in group)
            T = -(-T // bucket) * bucket
            sp = np.zeros((batch, T, 54), np.float32)
            off = np.zeros((batch, 22, 3), np.float32)
            for i, n in enumerate(group):
                s = clips[n]["sparse"]
                sp[i, :len(s)] = s
                sp[i, len(s):] = s[-1]
                off[i] = clips[n]["offsets"]
            rot, joints = (np.asarray(x) for x in fn(sp, off))
            for i, n in enumerate(group):
                t = clips[n]["sparse"].shape[0]
                out[n] = {"rot6d": rot[i, :t], "joints": joints[i, :t], "fps": clips[n]["fps"]}
        return out

    def evaluate(self, params, extra_vars):
        if self.m.kind == "mlp_vqvae":
            return self._evaluate_vqvae(params, extra_vars)
        from mmar.eval.sparse import sparse_metrics

        clips = self.benchmark.subset(self.d.eval_split, self.d.max_eval_clips)
        pred = self.predict_clips({"params": params, **extra_vars}, clips, batch=self.d.eval_batch)
        return sparse_metrics(pred, clips)

    def _evaluate_vqvae(self, params, extra_vars):
        clips = self.benchmark.subset(self.d.eval_split, self.d.max_eval_clips)
        rot = np.concatenate([c["rot6d"][1:] for c in clips.values()])
        sp = np.concatenate([c["sparse"][1:] for c in clips.values()])
        out = jax.jit(lambda r, s: self.model.apply(self._model_vars(params, extra_vars), r, s))(rot, sp)
        err = float(jnp.mean(jnp.linalg.norm(out["recon"] - rot, axis=-1)))
        return {"rot6d_l2": err, "perplexity": float(out["perplexity"]), "usage": float(out["usage"])}


def task_from_config(cfg, benchmark=None) -> SparseBodyTask:
    return SparseBodyTask(cfg, benchmark)


"""Compiled memory and FLOPs of a config's training gradient under each remat policy
(``model.remat``: ``none``, ``full``, ``dots``, ``dots_no_batch``; see
:attr:`mmar.models.scale_ar.ScaleARConfig.remat`)::

    .venv/bin/python tools/bench_remat.py configs/moscale.py --batch 8
    .venv/bin/python tools/bench_remat.py configs/scalemogen_small.py --policies none full

For every policy, ``jax.value_and_grad`` of the task's own ``loss`` (the real training step:
stage-1 tokenisation, corruption, masking, forward, loss; no optimiser update) is lowered on
*abstract* inputs (``jax.ShapeDtypeStruct`` parameters, frozen stage-1 variables and batch) and
compiled for this machine's default device; nothing is run and no data, checkpoint or
tokenizer run is read. The frozen stage-1 model is the default config of the task's stage-1
(``configs/<stage1_task>.py``, or ``--tokenizer-config``), the caption vocabulary has
``--text-vocab`` words. Prints one JSON object per policy: ``temp_bytes`` (XLA's temporary
buffers: the activations kept for the backward pass and the scratch space), ``argument_bytes``,
``output_bytes``, ``flops`` (``cost_analysis``) and compile seconds. Supported tasks: ``moscale``,
``scalemogen``, ``t2m_gpt`` and ``motionmar``.

On the CPU backend XLA removes ``jax.checkpoint``'s optimisation barriers in its HLO
optimisation pipeline (pass ``cse_barrier_expander``), before scheduling and buffer assignment,
so the recomputation is merged back into the forward pass or scheduled there, and a default CPU
build shows no saving; the GPU compiler removes them only after scheduling and its own
rematerialisation. To measure what an accelerator build gets, this tool compiles with that pass
disabled on CPU (``"cpu_keep_barriers": true`` in the output; LLVM optimisation is off too, which
changes neither buffers nor costs); ``--cpu-default-passes`` keeps the CPU defaults.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

POLICIES = ("none", "full", "dots", "dots_no_batch")


class _Vocab:
    """Stands in for the caption tokenizer: only its size shapes the model."""

    def __init__(self, n: int):
        self.vocab_size = int(n)

    def to_json(self):
        return {}


class _Stats:
    """Stands in for the dataset: only the feature statistics' shapes are read (assets)."""

    def __init__(self, dim: int):
        import numpy as np

        self.mean = np.zeros((dim,), np.float32)
        self.std = np.ones((dim,), np.float32)


def _sds(shape, dtype):
    import jax

    return jax.ShapeDtypeStruct(tuple(int(s) for s in shape), dtype)


def _abstract_t2m(task, batch: int, tokenizer_config: str | None, text_vocab: int):
    """``(params, extra_vars, batch)`` shapes of a text-to-motion task (MoScale and its subclasses)."""
    import jax
    import jax.numpy as jnp

    from mmar.tasks import make_task
    from mmar.train import load_config

    stage1_cfg = load_config(tokenizer_config or str(REPO_ROOT / "configs" / f"{task.stage1_task}.py"))
    if stage1_cfg.task not in (task.stage1_task, f"mmar.tasks.{task.stage1_task}"):
        raise SystemExit(f"--tokenizer-config must be a {task.stage1_task} config, got a {stage1_cfg.task} one")
    stage1_cfg.data.source = task.d.source
    stage1 = make_task(stage1_cfg)
    frames, dim = int(stage1.vq_cfg.num_frames), int(task.spec.feature_dim)
    s1_batch = {"motion": _sds((batch, frames, dim), jnp.float32), "mask": _sds((batch, frames), bool)}
    vq_vars = jax.eval_shape(stage1.init, _sds((2,), jnp.uint32), s1_batch)
    vq_vars = {k: v for k, v in vq_vars.items() if k in ("params", "vq")}
    # what the task would read from the tokenizer run and the dataset
    task._tokenizer = _Vocab(text_vocab)
    task._dataset = _Stats(dim)
    L = int(task.m.max_text_len)
    b = {"motion": _sds((batch, frames, dim), jnp.float32), "mask": _sds((batch, frames), bool),
         "length": _sds((batch,), jnp.int32), "text_ids": _sds((batch, L), jnp.int32),
         "text_mask": _sds((batch, L), bool)}

    def init(rng, bt, vv):  # the frozen variables traced, not closed over
        task._stage1 = (stage1.vq_cfg, vv, stage1_cfg.model)
        return task.init(rng, bt)

    variables = jax.eval_shape(init, _sds((2,), jnp.uint32), b, vq_vars)
    task._stage1 = (stage1.vq_cfg, vq_vars, stage1_cfg.model)  # the loss reads the config only
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}, b


def _abstract_motionmar(task, batch: int):
    import jax
    import jax.numpy as jnp

    from mmar.models.motionmar import init_motionmar

    W = task.window
    pose, sparse = _sds((batch, W, 132), jnp.float32), _sds((batch, W, 54), jnp.float32)
    rng = _sds((2,), jnp.uint32)
    params = jax.eval_shape(lambda r: init_motionmar(task.model, r), rng)["params"]
    vq = jax.eval_shape(lambda r, p, s: task.vq_model.init({"params": r, "dropout": r, "vq": r}, p, None, s),
                        rng, pose, sparse)
    b = {"sparse": sparse, "rot6d": _sds((batch, W, 22, 6), jnp.float32)}
    return params, {"vqvae": {k: v for k, v in vq.items() if k in ("params", "vq")}}, b


#: compiler options that keep jax.checkpoint's barriers through CPU scheduling (see the module doc)
CPU_KEEP_BARRIERS = {"xla_disable_hlo_passes": "cse_barrier_expander"}
#: LLVM optimisation off on CPU: faster compiles; the HLO passes, buffer assignment and costs are the same
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def measure(config: str, sets, policy: str, batch: int, tokenizer_config: str | None = None,
            text_vocab: int = 2000, cpu_keep_barriers: bool = True) -> dict:
    """Compiled memory / FLOPs of the task's gradient for one remat policy."""
    import jax
    import jax.numpy as jnp

    from mmar.tasks import make_task
    from mmar.train import load_config

    cfg = load_config(config, list(sets) + [f"model.remat={policy}"])
    if cfg.task in ("motionmar", "mmar.tasks.motionmar") and not cfg.model.vqvae_workdir:
        cfg.model.vqvae_workdir = "<abstract>"  # never read: the VQ-VAE's variables are shapes here
    if hasattr(cfg.data, "evaluator_workdir") and not cfg.data.evaluator_workdir:
        cfg.train.best_metric = "val_ce"  # nothing is evaluated here
    task = make_task(cfg)
    if hasattr(task, "stage1_task"):
        params, extra, b = _abstract_t2m(task, batch, tokenizer_config, text_vocab)
    elif cfg.task in ("motionmar", "mmar.tasks.motionmar"):
        params, extra, b = _abstract_motionmar(task, batch)
    else:
        raise SystemExit(f"bench_remat: task {cfg.task!r} has no remat option")

    def grad_fn(p, e, bt, rng):
        (loss, _), g = jax.value_and_grad(task.loss, has_aux=True)(p, e, bt, rng, 0)
        return loss, g

    keep = bool(cpu_keep_barriers and jax.default_backend() == "cpu")
    t0 = time.perf_counter()
    lowered = jax.jit(grad_fn).lower(params, extra, b, _sds((2,), jnp.uint32))
    opts = dict(FAST_COMPILE, **(CPU_KEEP_BARRIERS if keep else {})) if jax.default_backend() == "cpu" else None
    compiled = lowered.compile(compiler_options=opts)
    compile_s = time.perf_counter() - t0
    out = {"config": config, "task": cfg.task, "remat": policy, "batch": batch,
           "device": str(jax.devices()[0]), "cpu_keep_barriers": keep, "jax": jax.__version__,
           "params": int(sum(math.prod(x.shape) for x in jax.tree.leaves(params))),
           "compile_s": round(compile_s, 1)}
    mem = compiled.memory_analysis()
    if mem is not None:
        for k in ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes"):
            out[k.replace("_size_in", "")] = int(getattr(mem, k, -1))
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if cost:
        out["flops"] = float(cost.get("flops", float("nan")))
        out["bytes_accessed"] = float(cost.get("bytes accessed", float("nan")))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    ap.add_argument("--tokenizer-config", default=None, help="stage-1 config (default configs/<stage1_task>.py)")
    ap.add_argument("--text-vocab", type=int, default=2000, help="caption vocabulary size")
    ap.add_argument("--cpu-default-passes", action="store_true",
                    help="on CPU, compile with the default passes (barriers removed: no remat saving shows)")
    args = ap.parse_args(argv)

    base = None
    for policy in args.policies:
        row = measure(args.config, args.set, policy, args.batch, args.tokenizer_config, args.text_vocab,
                      cpu_keep_barriers=not args.cpu_default_passes)
        if base is None and "temp_bytes" in row:
            base = row
        elif base is not None:
            row["temp_vs_first"] = round(row["temp_bytes"] / max(base["temp_bytes"], 1), 3)
            if "flops" in row and "flops" in base:
                row["flops_vs_first"] = round(row["flops"] / max(base["flops"], 1.0), 3)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""AGRoL-MLP training step: mmar (JAX, the trainer's compiled step) beside the same MLP written
in PyTorch, timed in one process so the ratio is measured under the same conditions.

The PyTorch model is AGRoL's ``PureMLP`` as published (input Linear(54, C); ``depth`` blocks of
[LayerNorm, Conv1d(W, W, 1) over the frame axis, SiLU, residual; LayerNorm, Linear(C, C), SiLU,
residual]; output Linear(C, 22 * 6)), trained with AdamW on the same loss (mean per-joint 6D L2
distance), the same batch size and the same number of threads. mmar's side is
:func:`mmar.train.compile_step` on ``configs/agrol_mlp_41.py`` (or ``--config``): the donated,
ahead-of-time compiled step ``mmar train`` runs, on real Bandai batches drawn before timing
(the data pipeline is not timed on either side). PyTorch is an optional benchmark dependency
(``pip install torch``), not a runtime one::

    .venv/bin/python tools/bench_agrol_torch.py --threads 2 --steps 20

Prints one JSON object: samples/s of each side, their ratio, parameters (equal by
construction), the versions and the machine. Run it alone: timings under load are noise.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def torch_agrol(window: int, dim: int, depth: int, sparse_dim: int = 54, joints: int = 22):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm0, self.norm1 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.fc0 = nn.Conv1d(window, window, 1)  # frames as channels
            self.fc1 = nn.Linear(dim, dim)
            self.act = nn.SiLU()

        def forward(self, x):
            x = x + self.act(self.fc0(self.norm0(x)))
            return x + self.act(self.fc1(self.norm1(x)))

    class PureMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_fc = nn.Linear(sparse_dim, dim)
            self.blocks = nn.Sequential(*[Block() for _ in range(depth)])
            self.out = nn.Linear(dim, joints * 6)

        def forward(self, sparse):
            return self.out(self.blocks(self.input_fc(sparse))).reshape(sparse.shape[0], window, joints, 6)

    return PureMLP()


def time_torch(model, batches, steps: int, lr: float, weight_decay: float) -> list[float]:
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    xs = [(torch.from_numpy(b["sparse"]), torch.from_numpy(b["rot6d"])) for b in batches]

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = torch.linalg.vector_norm(model(x) - y, dim=-1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    step(*xs[0])  # warm-up
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(*xs[(i + 1) % len(xs)])
        times.append(time.perf_counter() - t0)
    return times


def time_jax(c, state, batches, steps: int) -> tuple[list[float], object]:
    """Step times, and the state to go on from (the compiled step donates its input state)."""
    import jax

    from mmar.train import sharding as shd

    gb = [shd.shard_batch(b, c.mesh) for b in batches]
    state, m = c.step(state, gb[0])
    jax.block_until_ready(m)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        state, m = c.step(state, gb[(i + 1) % len(gb)])
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    return times, state


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/agrol_mlp_41.py")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads (XLA uses every core)")
    ap.add_argument("--rounds", type=int, default=2, help="alternate the two sides this many times")
    args = ap.parse_args(argv)

    import jax
    import numpy as np
    import torch

    from mmar.eval.efficiency import cpu_model
    from mmar.tasks import make_task
    from mmar.train import compile_step, load_config

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [*args.set, "train.progress=false"])
    c = compile_step(make_task(cfg), cfg)
    batches = [{k: np.asarray(v) for k, v in next(c.iterator).items()} for _ in range(4)]
    m = cfg.model
    model = torch_agrol(m.window, m.dim, m.depth)
    n_torch = sum(p.numel() for p in model.parameters())
    jt, tt, state = [], [], c.state
    for _ in range(args.rounds):
        times, state = time_jax(c, state, batches, args.steps)
        jt += times
        tt += time_torch(model, batches, args.steps, cfg.optim.lr, cfg.optim.weight_decay)
    bsz = cfg.train.batch_size
    j, t = statistics.median(jt), statistics.median(tt)
    print(json.dumps({
        "config": args.config, "batch": bsz, "params_mmar": c.cost.params, "params_torch": n_torch,
        "mmar_step_s": round(j, 4), "torch_step_s": round(t, 4), "mmar_samples_per_s": round(bsz / j, 1),
        "torch_samples_per_s": round(bsz / t, 1), "mmar_over_torch": round(t / j, 3),
        "flops_per_step": c.cost.flops, "torch_threads": args.threads, "jax": jax.__version__,
        "torch": torch.__version__, "cpu": cpu_model(), "cores": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training-step time of any experiment config (its task's loss + the config's optimiser, one
jit-compiled step with donated state) on the task's real training batches, timed after
compilation. Works for every task, text-to-motion ones included::

    .venv/bin/python tools/bench_task_step.py configs/moscale_small.py \\
        --set model.tokenizer_workdir=/tmp/runs/moscale_vq --steps 20
    .venv/bin/python tools/bench_task_step.py configs/t2m_gpt_small.py \\
        --set model.tokenizer_workdir=/tmp/runs/moscale_vq

Prints one JSON object: device, parameters (trained ``params`` only), batch, compile seconds,
median step seconds, steps/s and samples/s. The batches are drawn before timing (the data
pipeline is not measured). Run it alone: figures taken under load are noise.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)

    import jax
    import numpy as np

    from mmar.eval.efficiency import cpu_model
    from mmar.tasks import make_task
    from mmar.train import load_config
    from mmar.train.optim import make_optimizer

    cfg = load_config(args.config, args.set)
    task = make_task(cfg)
    it = task.train_iterator(0)
    batches = [next(it) for _ in range(args.steps + 1)]
    variables = jax.jit(task.init)(jax.random.PRNGKey(0), batches[0])
    params = variables["params"]
    extra = {k: v for k, v in variables.items() if k != "params"}
    tx, _ = make_optimizer(cfg.optim, cfg.train.steps)
    opt_state = tx.init(params)

    def step(p, s, b, rng):
        (loss, _), g = jax.value_and_grad(task.loss, has_aux=True)(p, extra, b, rng, 0)
        u, s = tx.update(g, s, p)
        return jax.tree.map(lambda a, d: a + d, p, u), s, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    t0 = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, batches[0], jax.random.PRNGKey(0))
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - t0
    times = []
    for i, b in enumerate(batches[1:]):
        t0 = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, b, jax.random.PRNGKey(i + 1))
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    bsz = int(np.asarray(batches[0][next(iter(batches[0]))]).shape[0])
    print(json.dumps({
        "config": args.config, "task": cfg.task, "device": str(jax.devices()[0]), "cpu": cpu_model(),
        "jax": jax.__version__, "params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(params))),
        "batch": bsz, "compile_s": round(compile_s, 2), "step_s": round(med, 4), "steps_per_s": round(1 / med, 3),
        "samples_per_s": round(bsz / med, 1), "final_loss": float(loss), "timed_steps": len(times),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

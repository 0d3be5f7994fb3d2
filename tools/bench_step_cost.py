"""FLOPs per training step and throughput of every model at paper size, on whatever device JAX
sees (CPU here; a GPU or TPU when one is present), with the trainer's own compiled step.

For each model the experiment config is read (``configs/<name>.py``, the papers' sizes and
batch sizes), the task is built on its real training data, and :func:`mmar.train.compile_step`
compiles the exact step ``mmar train`` runs (donated state, shardings, ``train.compute_dtype``).
Models that read a frozen first stage (a VQ-VAE or tokenizer) get an *untrained* first-stage run
of the paper-size first-stage config, written once under ``--stages`` (one step, so the
shapes and the step's cost are those of the real pipeline; the figures do not depend on the
first stage's weights). Then ``--steps`` steps are timed after compilation (median);
``--flops-only`` compiles and counts without running a step.

Prints one JSON line per model and, at the end, a markdown table: parameters, batch, FLOPs per
step (the jaxpr's matmul FLOPs with loops counted, and XLA's count, loop bodies once),
compile seconds, step seconds, samples/s, achieved TFLOP/s and MFU (where the device's peak is
known; none for CPUs)::

    .venv/bin/python tools/bench_step_cost.py                        # every model, fp32
    .venv/bin/python tools/bench_step_cost.py --only moscale,motionmar --dtype bfloat16 --steps 5

Run it alone: timings taken under load are noise (FLOPs are not affected).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

#: name -> (label, config, the field naming its first-stage run, that run's config)
MODELS: dict[str, tuple[str, str, str | None, str | None]] = {
    "agrol_mlp_196": ("AGRoL-MLP (window 196)", "configs/agrol_mlp_196.py", None, None),
    "agrol_mlp_41": ("AGRoL-MLP (window 41)", "configs/agrol_mlp_41.py", None, None),
    "mem_mlp_vqvae": ("Mem-MLP VQ-VAE", "configs/mem_mlp_vqvae.py", None, None),
    "mem_mlp_41": ("Mem-MLP (window 41)", "configs/mem_mlp_41.py", "model.vqvae_workdir", "mem_mlp_vqvae"),
    "motionmar_vqvae": ("MotionMAR TMT VQ-VAE", "configs/motionmar_vqvae.py", None, None),
    "motionmar": ("MotionMAR", "configs/motionmar.py", "model.vqvae_workdir", "motionmar_vqvae"),
    "t2m_evaluator": ("T2M evaluator (Guo et al.)", "configs/t2m_evaluator.py", None, None),
    "moscale_vqvae": ("MoScale tokenizer", "configs/moscale_vqvae.py", None, None),
    "moscale": ("MoScale", "configs/moscale.py", "model.tokenizer_workdir", "moscale_vqvae"),
    "t2m_gpt": ("T2M-GPT (next-token baseline)", "configs/t2m_gpt.py", "model.tokenizer_workdir", "moscale_vqvae"),
    "scalemogen_vqvae": ("ScaleMoGen tokenizer", "configs/scalemogen_vqvae.py", None, None),
    "scalemogen": ("ScaleMoGen", "configs/scalemogen.py", "model.tokenizer_workdir", "scalemogen_vqvae"),
}


def untrained_run(name: str, root: Path, overrides: list[str]) -> Path:
    """An untrained first-stage run of ``configs/<name>.py`` (its initial state saved as step 0,
    written once under ``root``)."""
    from mmar.tasks import make_task
    from mmar.train import compile_step
    from mmar.train.checkpoint import CheckpointManager
    from mmar.train.config import config_to_dict, load_config, save_config

    workdir = root / name
    if (workdir / "config.json").exists() and (workdir / "checkpoints").is_dir():
        return workdir
    cfg = load_config(MODELS[name][1], ["train.steps=1", *overrides])
    c = compile_step(make_task(cfg), cfg)
    with CheckpointManager(workdir, async_save=False) as ckpt:  # the initial state, as step 0
        ckpt.save(0, c.state, c.iterator.get_state(), config_to_dict(cfg))
    save_config(cfg, workdir)
    return workdir


def measure(name: str, stages: Path, steps: int, overrides: list[str], flops_only: bool = False) -> dict:
    import jax

    from mmar.tasks import make_task
    from mmar.train import compile_step
    from mmar.train.compute import throughput
    from mmar.train.config import load_config

    label, config, stage_field, stage = MODELS[name]
    sets = list(overrides)
    if stage_field:
        sets.append(f"{stage_field}={untrained_run(stage, stages, overrides)}")
    cfg = load_config(config, sets)
    task = make_task(cfg)
    t0 = time.perf_counter()
    c = compile_step(task, cfg)
    compile_s = time.perf_counter() - t0
    cost = c.cost
    if flops_only:
        return {"model": name, "label": label, "config": config, "device": cost.device_kind, "devices": cost.devices,
                "dtype": cost.compute_dtype, "params": cost.params, "batch": cost.samples,
                "tokens_per_step": cost.tokens, "flops_per_step": cost.flops, "xla_flops_per_step": cost.xla_flops,
                "compile_s": round(compile_s, 1), "step_s": None, "samples_per_s": None, "tflops_per_s": None,
                "mfu": None, "timed_steps": 0, "loss": None}
    batches = [c.next_batch() for _ in range(steps)]
    state, m = c.step(c.state, c.batch)  # first call: buffers settle
    jax.block_until_ready(m)
    times = []
    for b in batches:
        t0 = time.perf_counter()
        state, m = c.step(state, b)
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    t = throughput(cost, 1.0 / step_s)
    return {
        "model": name, "label": label, "config": config, "device": cost.device_kind, "devices": cost.devices,
        "dtype": cost.compute_dtype, "params": cost.params, "batch": cost.samples, "tokens_per_step": cost.tokens,
        "flops_per_step": cost.flops, "xla_flops_per_step": cost.xla_flops, "compile_s": round(compile_s, 1),
        "step_s": round(step_s, 4), "samples_per_s": round(t["samples_per_sec"], 2),
        "tflops_per_s": round(t["flops_per_sec"] / 1e12, 4), "mfu": t.get("mfu"), "timed_steps": len(times),
        "loss": float(m["loss"]),
    }


def table(rows: list[dict]) -> str:
    head = ("| model | parameters | batch | GFLOPs / step | XLA GFLOPs / step | step (s) | samples/s | "
            "TFLOP/s | MFU |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        xla = f"{r['xla_flops_per_step'] / 1e9:,.1f}" if r["xla_flops_per_step"] is not None else "n/a"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        timed = r["step_s"] is not None
        step = f"{r['step_s']:.3f}" if timed else "not timed"
        sps = f"{r['samples_per_s']:,.1f}" if timed else "-"
        tfl = f"{r['tflops_per_s']:.3f}" if timed else "-"
        lines.append(f"| {r['label']} | {r['params']:,} | {r['batch']} | {r['flops_per_step'] / 1e9:,.1f} | {xla} | "
                     f"{step} | {sps} | {tfl} | {mfu} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated model names (default: all): " + ",".join(MODELS))
    ap.add_argument("--steps", type=int, default=3, help="timed steps per model (median)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="train.compute_dtype")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every model")
    ap.add_argument("--stages", default=None, help="folder for the untrained first-stage runs (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    ap.add_argument("--flops-only", action="store_true", help="compile and count, do not time")
    args = ap.parse_args(argv)

    import jax

    from mmar.eval.efficiency import cpu_model

    names = [n for n in args.only.split(",") if n] or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    stages = Path(args.stages) if args.stages else Path(tempfile.mkdtemp(prefix="mmar_stages_"))
    overrides = [f"train.compute_dtype={args.dtype}", "train.progress=false", *args.set]
    rows, failed = [], {}
    for name in names:
        try:
            row = measure(name, stages, args.steps, overrides, flops_only=args.flops_only)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: report it and go on
            failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            print(f"{name}: FAILED {failed[name]}", file=sys.stderr, flush=True)
            continue
        rows.append(row)
        print(json.dumps(row), flush=True)
    dev = jax.devices()[0]
    where = cpu_model() if dev.platform == "cpu" else dev.device_kind
    print(f"\n{len(jax.devices())} x {dev.platform} ({where}), JAX {jax.__version__}, {args.dtype}\n")
    print(table(rows))
    for name, why in failed.items():
        print(f"\n{name}: failed: {why}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The accelerator check: one script to run the moment a GPU or TPU is available.

In under eight minutes (``--budget``), on whatever accelerator JAX sees, it

1. measures the training step of every model at paper size in bf16 (``train.compute_dtype=
   bfloat16``, fp32 master weights) with the trainer's own compiled step
   (``tools/bench_step_cost.py``): parameters, FLOPs per step, step time, samples/s, TFLOP/s
   and MFU against the card's peak (:data:`mmar.train.compute.DEVICE_PEAKS`); models are taken
   cheapest first and the ones that would overrun the budget are listed as skipped, not dropped
   silently;
2. runs the tests that need an accelerator (``pytest -m accelerator``: bf16 matmuls really run
   in bf16, the card's peak is in the table, MFU is logged);
3. writes ``--out``/accelerator_check.json and .md (the table for ``docs/results.md``, with the
   card's name, JAX version and date).

It needs the same data as training (``MMAR_BANDAI_DIR`` or ``../shared/data/bandai-namco``;
``--set data.max_train_clips=...`` keeps loading short)::

    python tools/accelerator_check.py --out /tmp/accel            # on the accelerator machine
    python tools/accelerator_check.py --allow-cpu --only agrol_mlp_41 --budget 120   # dry run here
"""
from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for p in (REPO_ROOT, REPO_ROOT / "tools"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

# cheapest first, so a short budget still measures most models
ORDER = ("agrol_mlp_41", "mem_mlp_vqvae", "mem_mlp_41", "agrol_mlp_196", "motionmar_vqvae", "motionmar",
         "t2m_evaluator", "moscale_vqvae", "scalemogen_vqvae", "t2m_gpt", "moscale", "scalemogen")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="accelerator_check", help="folder for the JSON and markdown results")
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for the measurements (tests run after)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per model")
    ap.add_argument("--only", default="", help="comma-separated models (default: all)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every model")
    ap.add_argument("--allow-cpu", action="store_true", help="run even without an accelerator (a dry run)")
    ap.add_argument("--no-tests", action="store_true")
    args = ap.parse_args(argv)

    import jax

    import bench_step_cost as bsc

    dev = jax.devices()[0]
    if dev.platform == "cpu" and not args.allow_cpu:
        print("no accelerator: JAX sees only CPUs (pass --allow-cpu for a dry run)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.only.split(",") if n] or list(ORDER)
    overrides = ["train.compute_dtype=bfloat16", "train.progress=false", *args.set]
    stages = out / "stages"
    t_start = time.perf_counter()
    rows, skipped, failed = [], [], {}
    for name in names:
        spent = time.perf_counter() - t_start
        if rows and spent + max(r["_seconds"] for r in rows) > args.budget:
            skipped.append(name)
            continue
        t0 = time.perf_counter()
        try:
            row = bsc.measure(name, stages, args.steps, overrides)
        except Exception as e:  # noqa: BLE001 - report and go on with the next model
            failed[name] = f"{type(e).__name__}: {e}"
            print(f"{name}: FAILED {failed[name]}", flush=True)
            continue
        row["_seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    tests_rc = None
    if not args.no_tests:
        tests_rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-m", "accelerator",
                                    str(REPO_ROOT / "tests" / "test_accelerator.py")], cwd=REPO_ROOT)
    header = (f"{len(jax.devices())} x {dev.device_kind} ({dev.platform}), JAX {jax.__version__}, bf16 compute, "
              f"{datetime.date.today().isoformat()}")
    md = [header, "", bsc.table(rows)]
    if skipped:
        md.append(f"\nSkipped (over the {args.budget:.0f} s budget): {', '.join(skipped)}")
    if failed:
        md.append("\nFailed: " + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    if tests_rc is not None:
        verdict = "passed" if tests_rc == 0 else f"FAILED (exit {tests_rc})"
        md.append(f"\nAccelerator tests: {'skipped (no accelerator)' if dev.platform == 'cpu' else verdict}")
    (out / "accelerator_check.md").write_text("\n".join(md) + "\n")
    (out / "accelerator_check.json").write_text(json.dumps(
        {"device": dev.device_kind, "platform": dev.platform, "jax": jax.__version__, "rows": rows,
         "skipped": skipped, "failed": failed, "tests_rc": tests_rc}, indent=2) + "\n")
    print("\n".join(md))
    return 0 if not failed and tests_rc in (None, 0) else 1


if __name__ == "__main__":
    raise SystemExit(main())

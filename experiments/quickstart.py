"""The main job: a small Mem-MLP trained on Bandai Namco motion capture on CPU in minutes.

    bash tools/setup.sh && .venv/bin/python experiments/quickstart.py

1. imports the Bandai Namco clips (SMPL-22, 60 fps, the fixed train/val/test split; cached
   under ~/.cache/mmar after the first run),
2. trains the MLP VQ-VAE, then a small Mem-MLP with it frozen (configs/mem_mlp_41.py with a
   narrower, shallower backbone and a short schedule),
3. evaluates it online on the whole test split and on its dataset-1 part, beside the
   nearest-neighbour floor,
4. writes a side-by-side animation (prediction | ground truth) of a dataset-1 test clip,
5. prints where everything went.

Runs are resumable: run the same command again and training continues from the checkpoints.
``--steps`` and ``--dim`` trade time for accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/quickstart")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--vq-steps", type=int, default=400)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--data", default=None, help="Bandai data directory (default ../shared/data/bandai-namco)")
    args = ap.parse_args()

    from configs.mem_mlp_41 import get_config as mem_config
    from configs.mem_mlp_vqvae import get_config as vq_config
    from mmar.data.benchmark import load_sparse_benchmark
    from mmar.data.clip import save_arrays
    from mmar.eval.report import grouped_metrics, markdown_table
    from mmar.models.nearest import NearestNeighbor
    from mmar.eval.checkpoint import prediction_arrays
    from mmar.run import load
    from mmar.tasks import make_task
    from mmar.train import train
    from mmar.viz.render import render_npz

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print("[1/5] Bandai Namco benchmark (CC BY-NC 4.0, Bandai Namco Research Inc.)")
    bench = load_sparse_benchmark(args.data, fps=60.0)
    print({s: len(bench[s]) for s in ("train", "val", "test")}, "clips")

    def small(cfg, steps):
        cfg.data.root = args.data
        cfg.model.dim, cfg.model.depth, cfg.model.head_depth = args.dim, args.depth, 1
        cfg.train.steps, cfg.train.batch_size = steps, args.batch
        cfg.train.eval_every = cfg.train.ckpt_every = max(steps // 2, 1)
        cfg.train.log_every = 50
        cfg.optim.lr, cfg.optim.warmup_steps = 1e-3, min(100, steps // 10)
        cfg.data.max_eval_clips = 16
        return cfg

    print("[2/5] training the MLP VQ-VAE, then Mem-MLP with it frozen")
    vq_cfg = small(vq_config(), args.vq_steps)
    train(make_task(vq_cfg, benchmark=bench), vq_cfg, out / "mem_mlp_vqvae")
    cfg = small(mem_config(), args.steps)
    cfg.model.vqvae_workdir = str(out / "mem_mlp_vqvae")
    train(make_task(cfg, benchmark=bench), cfg, out / "mem_mlp")

    print("[3/5] evaluating online on the test split")
    run = load(out / "mem_mlp", benchmark=bench)
    test = bench["test"]
    pred = run.task.predict_clips(run.variables, test, progress=True)
    nn = NearestNeighbor(stride=4).fit([a["sparse"] for a in bench["train"].values()],
                                       [a["rot6d"] for a in bench["train"].values()])
    nn_pred = nn.predict_clips(test)
    rows = {"Mem-MLP (quickstart)": grouped_metrics(pred, test), "nearest neighbour": grouped_metrics(nn_pred, test)}
    table = markdown_table(rows)
    (out / "metrics.json").write_text(json.dumps(rows, indent=1))
    (out / "metrics.md").write_text(table + "\n")
    print(table)

    print("[4/5] rendering a dataset-1 test clip")
    clip = next((n for n in sorted(test) if n.startswith("dataset-1_")), sorted(test)[0])
    pred_npz, gt_npz = out / "test_pred.npz", out / "test_gt.npz"
    save_arrays(str(pred_npz), prediction_arrays({clip: pred[clip]}, test))
    save_arrays(str(gt_npz), {clip: test[clip]})
    gif = out / f"{clip}.gif"
    render_npz(str(pred_npz), str(gif), clip=clip, compare=str(gt_npz), stride=2)

    print("[5/5] done in %.0f s" % (time.time() - t0))
    for what, where in [
        ("VQ-VAE run", out / "mem_mlp_vqvae"), ("Mem-MLP run (checkpoints, TensorBoard in tb/)", out / "mem_mlp"),
        ("test metrics", out / "metrics.md"), ("animation (prediction | ground truth)", gif),
        ("evaluate again", f"mmar eval --checkpoint {out / 'mem_mlp'}"),
    ]:
        print(f"  {what}: {where}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()

"""Text-to-motion on the Bandai captioned motions, end to end: tokenizer, evaluator, MoScale and
the next-token baseline at the same budget, the T2M table, and a GIF of generated motions.

    bash tools/setup.sh && .venv/bin/python experiments/text_to_motion.py --out runs/t2m

Stages (each a resumable ``mmar`` command; rerun the script to continue where it stopped):

1. ``mmar train configs/moscale_vqvae_small.py``  -> ``OUT/tokenizer``   (MoScale's residual tokenizer)
2. ``mmar train configs/t2m_evaluator.py`` (CPU size) -> ``OUT/evaluator`` (Guo et al.'s evaluator,
   selected on validation, frozen with a fingerprint)
3. ``mmar train configs/moscale_small.py``  -> ``OUT/moscale``     (next-scale; best by validation FID)
4. ``mmar train configs/t2m_gpt_small.py``  -> ``OUT/next_token``  (next-token; same budget)
5. ``mmar eval --evaluator OUT/evaluator`` for both runs on the test split (``--repeats``),
   JSON in ``OUT/eval_*.json``, and the real-motion row (``tools/t2m_real_motion.py``)
6. ``mmar generate`` for a few captions -> ``OUT/samples.npz`` and ``OUT/samples.gif``

``--steps`` sets the predictors' steps (the cosine schedule is planned over the config's 3,000
steps either way, as the official run stops at epoch 120 of a planned 250); ``--skip-ablation``
leaves out MoScale without corruption (``gamma_max=0``). On a 2-core CPU the defaults take
several hours; with an accelerator use the paper-size configs (``configs/moscale.py``,
``configs/t2m_gpt.py``, ``configs/moscale_vqvae.py``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = ("a person walks happily", "a person dances energetically", "a person bows politely",
            "a person runs tiredly")
EVALUATOR_CPU = ("model.motion_hidden=512", "model.text_hidden=256", "model.movement_hidden=256",
                 "model.movement_latent=256", "model.word_dim=128", "train.steps=3000", "train.eval_every=295",
                 "train.ckpt_every=295", "optim.lr=3e-4", "optim.schedule=cosine", "optim.end_lr_factor=0.05")


def mmar(*args: str) -> None:
    cmd = [sys.executable, "-m", "mmar", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def train(config: str, workdir: Path, *sets: str) -> None:
    mmar("train", config, "--workdir", str(workdir), *[x for s in sets for x in ("--set", s)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/t2m")
    ap.add_argument("--steps", type=int, default=3000, help="training steps of the two predictors")
    ap.add_argument("--repeats", type=int, default=20, help="evaluation repeats (95%% intervals)")
    ap.add_argument("--skip-ablation", action="store_true", help="no MoScale without cross-scale corruption")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    train("configs/moscale_vqvae_small.py", out / "tokenizer")
    train("configs/t2m_evaluator.py", out / "evaluator", *EVALUATOR_CPU)
    common = (f"model.tokenizer_workdir={out / 'tokenizer'}", f"data.evaluator_workdir={out / 'evaluator'}",
              f"train.steps={args.steps}")
    runs = {"moscale": ("configs/moscale_small.py", ()), "next_token": ("configs/t2m_gpt_small.py", ())}
    if not args.skip_ablation:
        runs["moscale_no_corruption"] = ("configs/moscale_small.py", ("model.gamma_max=0",))
    for name, (config, extra) in runs.items():
        train(config, out / name, *common, *extra)

    mmar_tool = [sys.executable, "tools/t2m_real_motion.py", "--evaluator", str(out / "evaluator"),
                 "--repeats", str(args.repeats), "--out", str(out / "eval_real.json")]
    print("+", " ".join(mmar_tool), flush=True)
    subprocess.run(mmar_tool, check=True, cwd=ROOT)
    for name in runs:
        mmar("eval", "--checkpoint", str(out / name / "best"), "--evaluator", str(out / "evaluator"),
             "--repeats", str(args.repeats), "--out", str(out / f"eval_{name}.json"))

    texts = out / "captions.txt"
    texts.write_text("\n".join(CAPTIONS) + "\n")
    mmar("generate", "--checkpoint", str(out / "moscale" / "best"), "--texts", str(texts), "--seconds", "6",
         "--out", str(out / "samples.npz"), "--gif", str(out / "samples.gif"), "--bvh", str(out / "samples.bvh"))
    rows = {p.stem[5:]: json.loads(p.read_text()) for p in sorted(out.glob("eval_*.json"))}
    print(json.dumps({"out": str(out), "rows": sorted(rows)}, indent=1))


if __name__ == "__main__":
    main()

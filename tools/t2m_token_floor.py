"""The reconstruction floor of the two token sets a frozen MoScale tokenizer gives: its 4-scale
token pyramid (what MoScale predicts) and the single-scale finest tokens (the codes nearest to the
latent at the 49 steps: what the next-token baseline ``t2m_gpt`` predicts), plus the
unquantised latent (for reference: the decoder was trained on quantised latents, so it is no
strict floor), on every motion of the validation split. Prints JSON
(:func:`mmar.tasks.t2m_gpt.token_floor`: MPJPE root-aligned and global in cm, feature L1,
codebook use of the single-scale tokens)::

    .venv/bin/python tools/t2m_token_floor.py --tokenizer runs/moscale_vq [--split val] [--out floor.json]

``--tokenizer`` is read as :func:`mmar.run.load` reads any run (the run directory: its newest
checkpoint, which is what the stage-2 tasks load; or ``RUN/best``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))


def main(argv=None) -> int:
    import mmar.run
    from mmar.tasks.t2m_gpt import token_floor

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", required=True, help="a moscale_vqvae run (or its best/ folder)")
    p.add_argument("--split", default="val", help="evaluation split (default val; never select on test)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--out", default=None, help="also write the JSON here")
    a = p.parse_args(argv)
    run = mmar.run.load(a.tokenizer)
    if run.config.task not in ("moscale_vqvae", "mmar.tasks.moscale_vqvae"):
        raise SystemExit(f"{a.tokenizer}: a moscale_vqvae run is needed, this is a {run.config.task} run")
    if a.split != run.config.data.eval_split:  # load the asked split too
        run.config.data.eval_split = a.split
    out = token_floor(run.task.vq_cfg, run.variables, run.task.dataset, a.split, a.batch, run.task.spec.num_joints)
    out["tokenizer"] = str(run.checkpoint)
    text = json.dumps(out, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

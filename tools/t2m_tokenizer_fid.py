"""What a frozen text-to-motion tokenizer lets a predictor reach: every motion of a split (its
centred window of at most 196 frames) encoded and decoded by the tokenizer, scored by the
text-motion evaluator against the training split, beside the same windows unquantised::

    .venv/bin/python tools/t2m_tokenizer_fid.py --tokenizer runs/scalemogen_vq --evaluator runs/t2m_eval \\
        [--split test] [--out floor.json]

Prints JSON: for ``real`` and ``tokenizer`` windows, FID against the training split's centred
windows, R-precision (pools of 32, each motion with its first caption, split order) and
MM-Dist, and the mean jerk of the joints (m/s^3; decoded motion carries frame-level noise).
Works for ``moscale_vqvae`` and ``scalemogen_vqvae`` runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def main(argv=None) -> int:
    import jax
    import jax.numpy as jnp

    import mmar.run
    from mmar.data.hml_features import recover_from_ric
    from mmar.data.t2m import eval_window, load_t2m
    from mmar.eval.editing import data_jerk
    from mmar.eval.t2m import fid
    from mmar.eval.t2m_protocol import centre_embeddings
    from mmar.eval.checkpoint import t2m_eval_dataset
    from mmar.tasks.t2m_evaluator import load_evaluator, pooled_retrieval

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--evaluator", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    run = mmar.run.load(a.tokenizer)
    if run.config.task.rsplit(".", 1)[-1] not in ("moscale_vqvae", "scalemogen_vqvae"):
        raise SystemExit(f"{a.tokenizer}: a moscale_vqvae or scalemogen_vqvae run is needed, not {run.config.task}")
    task = run.task
    d = run.config.data
    ds = load_t2m(d.source, root=d.root, fps=d.fps, min_len=d.min_len, max_len=196, splits=("train", a.split),
                  stats=d.stats, **({"max_clips": d.max_clips, "workers": d.workers} if d.source == "bandai" else {}))
    ev = load_evaluator(a.evaluator)
    evds = t2m_eval_dataset(run, ev, ("train", a.split), base=ds)
    ref = centre_embeddings(ev, evds, "train")
    model = task.vq_model if hasattr(task, "vq_model") else None
    if model is None:
        from mmar.models.vqvae import TemporalVQVAE

        model = TemporalVQVAE(task.vq_cfg)
    frames = task.vq_cfg.num_frames
    variables = {k: v for k, v in run.variables.items() if k in ("params", "vq")}

    @jax.jit
    def recon(x, m):
        return model.apply(variables, x, m)["recon"] * m[..., None]

    sp = ds[a.split]
    real, rec, lengths, caps = [], [], [], []
    for s in range(0, len(sp), a.batch):
        chunk = sp.motions[s:s + a.batch]
        x = np.zeros((a.batch, frames, ds.feature_dim), np.float32)
        m = np.zeros((a.batch, frames), bool)
        for i, mo in enumerate(chunk):
            st, n = eval_window(mo.length, frames)
            x[i, :n] = (mo.features[st:st + n] - ds.mean) / ds.std
            m[i, :n] = True
            lengths.append(n)
            caps.append(mo.captions[0])
        r = np.asarray(recon(jnp.asarray(x), jnp.asarray(m)))
        real.append(x[:len(chunk)] * ds.std + ds.mean)
        rec.append(r[:len(chunk)] * ds.std + ds.mean)
    real, rec, lengths = np.concatenate(real), np.concatenate(rec), np.asarray(lengths)
    t_emb = ev.embed_text(caps)
    out = {"tokenizer": str(run.checkpoint), "task": run.config.task, "split": a.split, "motions": len(lengths),
           "evaluator": ev.info}
    for name, feats in (("real", real), ("tokenizer", rec)):
        emb = ev.embed_motion(feats, lengths, normalized=False)
        row = pooled_retrieval(t_emb, emb, 32)
        row["fid"] = fid(ref, emb)
        row["jerk"] = float(np.mean([data_jerk(np.asarray(recover_from_ric(f[:n], 22)), ds.fps)
                                     for f, n in zip(feats, lengths)]))
        out[name] = row
    text = json.dumps(out, indent=1)
    if a.out:
        Path(a.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

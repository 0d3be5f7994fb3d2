"""Zero-shot editing, measured: every kind of edit on test-split motions, for a ScaleMoGen (or
MoScale) run, scored against the source and by the text-motion evaluator.

    .venv/bin/python experiments/editing.py --checkpoint runs/scalemogen_small/best \\
        --evaluator runs/t2m_eval --motions 64 --out runs/edit_scalemogen.json

``--decoder RUN`` decodes with a tokenizer run's decoder fine-tuned alone
(``configs/scalemogen_vqvae_smooth.py``; ``mmar edit --decoder``); ``--also RAMP:FADE,...``
scores extra blends on the very same samples.

Edits go through :func:`mmar.edit.keep_root_channels` as ``mmar edit`` does by default (body-part
edits that keep the root get the source's root velocities back). For ``--motions`` test motions (a fixed random choice; each cut to its first ``min(T, 196)``
frames, a multiple of 4) and a new caption each (the caption of another test motion with
another content label), one edit per kind:

* ``inbetween``: keep frames ``[0, L/3)`` and ``[2L/3, L)``, fill the middle;
* ``prefix``: keep ``[0, L/2)``, continue; ``suffix``: keep ``[L/2, L)``, lead into it;
* ``keep_lower`` / ``keep_upper``: keep the lower (root + legs) / upper body (ScaleMoGen only);
* ``semantic``: nothing hard-kept, the paper's source-bit rule.

Per kind: the error of the kept (frame, joint) cells against the source (cm; global,
root-relative, and local = the HumanML3D joint positions relative to the root with the heading
removed, i.e. the pose whatever way the body faces) beside the tokenizer's own reconstruction error on the same cells; mean jerks
(m/s^3, means over the motions): of the source (``data``), of the source decoded through the
tokenizer (``recon``: decoded motion carries frame-level noise that the third difference
amplifies, so the decoder's own jerk is the fair reference), of the edit, and within 3 frames of
the seams for the edit and the source, with their ratios (and within ``--wide-window`` frames,
24 by default, which holds the whole fade of every blend: a blend that only moves its jerk away
from the seam shows there); the mean change of the edited cells
(cm); and the T2M
metrics of the edited motions against their *new* captions (R-precision in pools of 32,
MM-Dist, FID against the training split) beside three references: the unedited sources against
the same captions (``source``: how well the motion matched the new text before the edit), the
sources against their own captions (``source_own_caption``: the evaluator's ceiling on these
motions), and free generation from the new captions at the same lengths (``generated``: what
the model makes of the text with nothing kept). One sample per motion and kind (seed = motion
index): no interval on the T2M numbers, and FID over 64 motions is biased upwards (compare rows
with each other, not with the 224-motion table).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KINDS = ("inbetween", "prefix", "suffix", "keep_lower", "keep_upper", "semantic")
RAMPS = ("smooth", "linear", "septic", "minjerk")


def request_for(kind: str, text: str, n: int, groups: int):
    from mmar.edit import make_request

    third, half = n // 12 * 4, n // 8 * 4
    if kind == "inbetween":
        return make_request(text, n, keep_frames=f"0:{third},{n - third}:{n}", num_groups=groups)
    if kind == "prefix":
        return make_request(text, n, keep_frames=f"0:{half}", num_groups=groups)
    if kind == "suffix":
        return make_request(text, n, keep_frames=f"{half}:{n}", num_groups=groups)
    if kind == "keep_lower":
        return make_request(text, n, keep_joints="lower", num_groups=groups)
    if kind == "keep_upper":
        return make_request(text, n, keep_joints="upper", num_groups=groups)
    return make_request(text, n, num_groups=groups)


def wide_seam(row: dict, src_joints, ed_joints, window: int) -> dict:
    """``row`` plus ``seam_jerk_wide`` / ``source_seam_jerk_wide``: the seam jerk of the edit and
    of the source within ``window`` frames of the seams (None without seams)."""
    from mmar.eval.editing import seam_jerk

    seams = row.get("seam_frames")
    row["seam_jerk_wide"] = row["source_seam_jerk_wide"] = None
    if seams:
        row["seam_jerk_wide"] = seam_jerk(ed_joints, seams, 20.0, window)
        row["source_seam_jerk_wide"] = seam_jerk(src_joints, seams, 20.0, window)
    return row


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def _ratio_ci(pairs, n: int = 4000, seed: int = 1):
    """95% paired-bootstrap interval (over motions) of ``mean(a) / mean(b)`` for ``[(a, b), ...]``
    (None without pairs)."""
    pm = np.array([p for p in pairs if p[0] is not None and p[1] is not None], np.float64)
    if not len(pm):
        return None
    idx = np.random.default_rng(seed).integers(0, len(pm), (n, len(pm)))
    ratio = pm[idx, 0].mean(1) / pm[idx, 1].mean(1)
    return [float(x) for x in np.percentile(ratio, [2.5, 97.5])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--evaluator", default=None,
                    help="text-motion evaluator run (without it: no T2M columns; kept errors and jerks only)")
    ap.add_argument("--motions", type=int, default=64)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fade", type=int, default=16, help="cross-fade frames of the compositing")
    ap.add_argument("--keep-from", choices=("source", "decoding"), default="source",
                    help="where the composited kept frames come from")
    ap.add_argument("--ramp", choices=RAMPS, default="smooth", help="cross-fade shape")
    ap.add_argument("--wide-window", type=int, default=24,
                    help="frames either side of a seam for the wide seam jerk (the whole fade of every blend)")
    ap.add_argument("--also", default="",
                    help="more seam blends scored on the same samples, RAMP:FADE[,RAMP:FADE...] "
                         "(e.g. smooth:24,minjerk:16; temporal kinds; kept frames from --keep-from)")
    ap.add_argument("--no-composite", dest="composite", action="store_false",
                    help="temporal edits: keep the decoded kept frames as sampled (no compositing)")
    ap.add_argument("--decoder", default=None, metavar="RUN",
                    help="decode with this tokenizer run's decoder (fine-tuned alone; mmar edit --decoder)")
    ap.add_argument("--out", required=True, help="JSON of the table")
    args = ap.parse_args(argv)
    also = []
    for item in filter(None, args.also.split(",")):
        ramp, _, fade = item.partition(":")
        if ramp not in RAMPS or not fade.isdigit():
            ap.error(f"--also takes RAMP:FADE items (ramp {'|'.join(RAMPS)}), got {item!r}")
        also.append((ramp, int(fade)))

    from rich.progress import track

    from mmar.edit import composite_kept_frames, edit_grid, edit_task, keep_root_channels
    from mmar.eval.checkpoint import t2m_eval_dataset
    from mmar.eval.editing import data_jerk, kept_cells_mask, summarize_edit
    from mmar.eval.t2m import fid
    from mmar.eval.t2m_protocol import centre_embeddings
    from mmar.run import load
    from mmar.tasks.t2m_evaluator import load_evaluator, pooled_retrieval

    run = load(args.checkpoint)
    task = edit_task(run)
    if args.decoder:
        from mmar.generate import use_decoder

        run.variables = use_decoder(run, args.decoder)
    groups = int(task.edit_groups)
    kinds = [k for k in args.kinds.split(",") if groups > 1 or not k.startswith("keep_")]
    ev = load_evaluator(args.evaluator) if args.evaluator else None
    if ev is not None:
        ds = t2m_eval_dataset(run, ev, ("train", "test"))
        test = ds["test"]
    else:  # the test split with the run's own statistics (features are kept unnormalised)
        from mmar.data import hml_features as hf
        from mmar.data.t2m import load_t2m

        base, d = run.task.dataset, run.config.data
        kw = {"max_clips": getattr(d, "max_clips", None), "workers": getattr(d, "workers", 2)} \
            if base.source == "bandai" else {}
        test = load_t2m(base.source, getattr(d, "root", None), getattr(d, "fps", None), base.min_len, base.max_len,
                        splits=("test",), stats=hf.Normalizer(base.mean, base.std), progress=False, **kw)["test"]
    rng = np.random.default_rng(args.seed)
    idx = rng.permutation(len(test))[: args.motions]
    contents = [m.clip.split("_")[1] if "_" in m.clip else m.clip for m in test]
    picks = []
    for i in idx:
        others = [j for j in range(len(test)) if contents[j] != contents[i]] or list(range(len(test)))
        j = int(rng.choice(others))
        picks.append((int(i), test[j].captions[int(rng.integers(len(test[j].captions)))]))
    ref = centre_embeddings(ev, ds, "train") if ev is not None else None

    def embed(f, n):
        return ev.embed_motion(f[None], np.array([n]), normalized=False)[0] if ev is not None else None
    from mmar.data.hml_features import recover_from_ric

    rows: dict[str, list] = {k: [] for k in kinds}
    extra: dict[tuple, list] = {(b, k): [] for b in also for k in kinds}
    emb: dict[str, list] = {k: [] for k in kinds}
    src_emb, texts, own_texts, lengths, gen_emb, gen_jerk = [], [], [], [], [], []
    t0 = time.perf_counter()
    for n_i, (i, text) in enumerate(track(picks, description="editing")):
        mo = test[i]
        n = min(mo.length, 196) // 4 * 4
        feats = mo.features[:n]
        src_joints = np.asarray(recover_from_ric(feats, 22), np.float32)
        src_emb.append(embed(feats, n))
        texts.append(text)
        own_texts.append(mo.captions[0])
        lengths.append(n)
        g = task.generate(run.variables, [text], [n], seed=n_i)
        gen_emb.append(embed(g.features[0, :n], n))
        gen_jerk.append(data_jerk(np.asarray(recover_from_ric(g.features[0, :n], 22), np.float32), 20.0))
        for kind in kinds:
            req = request_for(kind, text, n, groups)
            res = task.edit(run.variables, feats, n, text, edit_grid(req, n, num_groups=groups),
                            semantic=req.kind == "semantic", source_text=mo.captions[0], seed=n_i)
            ed = keep_root_channels(res.edited.features, feats, req)
            if req.keep_frames is not None:
                for ramp, fade in also:
                    kept_motion = feats if args.keep_from == "source" else res.recon
                    e2 = composite_kept_frames(ed, kept_motion, req, fade=fade, ramp=ramp)[0, :n]
                    e2_j = np.asarray(recover_from_ric(e2, 22), np.float32)
                    r2 = wide_seam(summarize_edit(src_joints, e2_j, req, 20.0), src_joints, e2_j, args.wide_window)
                    extra[(ramp, fade), kind].append(r2)
            if args.composite:
                kept_motion = feats if args.keep_from == "source" else res.recon
                ed = composite_kept_frames(ed, kept_motion, req, fade=args.fade, ramp=args.ramp)
            ed = ed[0, :n]
            rec_j = np.asarray(recover_from_ric(res.recon[:n], 22), np.float32)
            ed_j = np.asarray(recover_from_ric(ed, 22), np.float32)
            row = wide_seam(summarize_edit(src_joints, ed_j, req, 20.0, rec_j), src_joints, ed_j, args.wide_window)
            cells = kept_cells_mask(req, n, 22)[:, 1:]  # pelvis excluded: its local position is 0
            if cells.any():  # local (root-relative, heading-free) positions: HumanML3D ric features
                local = lambda f: f[:, 4:67].reshape(n, 21, 3)  # noqa: E731
                row["kept_error_local_cm"] = float(np.linalg.norm(local(ed) - local(feats), axis=-1)[cells].mean() * 100)
                row["recon_kept_error_local_cm"] = float(
                    np.linalg.norm(local(res.recon[:n]) - local(feats), axis=-1)[cells].mean() * 100)
            row["recon_jerk"] = data_jerk(rec_j, 20.0)
            rows[kind].append(row)
            emb[kind].append(embed(ed, n))
    seconds = time.perf_counter() - t0
    t_emb = ev.embed_text(texts) if ev is not None else None
    pool = 32 if len(picks) >= 32 else len(picks)

    def t2m(m_emb):
        if ev is None:
            return None
        m_emb = np.asarray(m_emb)
        out = pooled_retrieval(t_emb, m_emb, pool)
        out["fid"] = fid(ref, m_emb)
        return out

    table = {"source": {"t2m": t2m(src_emb)}, "generated": {"t2m": t2m(gen_emb),
                                                                      "edit_jerk": _mean(gen_jerk)}}
    if ev is not None:
        own = pooled_retrieval(ev.embed_text(own_texts), np.asarray(src_emb), pool)
        table["source_own_caption"] = {"t2m": {**own, "fid": fid(ref, np.asarray(src_emb))}}
    for kind in kinds:
        r = rows[kind]
        table[kind] = {
            "kept_error_cm": _mean(x["kept_error_cm"] for x in r),
            "kept_error_root_cm": _mean(x["kept_error_root_cm"] for x in r),
            "recon_kept_error_cm": _mean(x["recon_kept_error_cm"] for x in r),
            "recon_kept_error_root_cm": _mean(x["recon_kept_error_root_cm"] for x in r),
            "kept_error_local_cm": _mean(x.get("kept_error_local_cm") for x in r),
            "recon_kept_error_local_cm": _mean(x.get("recon_kept_error_local_cm") for x in r),
            # jerk: means over the motions (m/s^3), then ratios of the means (a ratio per motion is
            # dominated by the motions that barely move)
            "data_jerk": _mean(x["data_jerk"] for x in r),
            "recon_jerk": _mean(x["recon_jerk"] for x in r),
            "edit_jerk": _mean(x["edit_jerk"] for x in r),
            "seam_jerk": _mean(x["seam_jerk"] for x in r),
            "source_seam_jerk": _mean(x["source_seam_jerk"] for x in r),
            "seam_jerk_wide": _mean(x["seam_jerk_wide"] for x in r),
            "source_seam_jerk_wide": _mean(x["source_seam_jerk_wide"] for x in r),
            "edited_change_cm": _mean(x["edited_change_cm"] for x in r),
            "t2m": t2m(emb[kind]),
        }
        t = table[kind]
        t["seam_over_source_ci95"] = _ratio_ci([(x["seam_jerk"], x["source_seam_jerk"]) for x in r])
        t["wide_over_source_ci95"] = _ratio_ci([(x["seam_jerk_wide"], x["source_seam_jerk_wide"]) for x in r])
        if t["seam_jerk"] is not None:
            t["seam_over_recon_jerk"] = t["seam_jerk"] / t["recon_jerk"]
            t["seam_over_edit_jerk"] = t["seam_jerk"] / t["edit_jerk"]
            t["source_seam_over_data_jerk"] = t["source_seam_jerk"] / t["data_jerk"]
    blends = {}
    for (ramp, fade), kind in extra:
        r = extra[(ramp, fade), kind]
        if not r:
            continue
        b = {key: _mean(x[key] for x in r) for key in ("seam_jerk", "source_seam_jerk", "data_jerk", "edit_jerk",
                                                        "kept_error_cm", "kept_error_root_cm", "edited_change_cm",
                                                        "seam_jerk_wide", "source_seam_jerk_wide")}
        b["seam_over_source"] = b["seam_jerk"] / b["source_seam_jerk"]
        b["seam_over_source_ci95"] = _ratio_ci([(x["seam_jerk"], x["source_seam_jerk"]) for x in r])
        b["wide_over_source_ci95"] = _ratio_ci([(x["seam_jerk_wide"], x["source_seam_jerk_wide"]) for x in r])
        blends.setdefault(f"{ramp}:{fade}", {})[kind] = b
    if blends:
        table["blends"] = blends
    out = {"checkpoint": str(run.checkpoint), "decoder": args.decoder, "task": run.config.task,
           "evaluator": ev.info if ev else None, "fingerprint": ev.fingerprint if ev else None,
           "wide_window": args.wide_window,
           "composite": {"on": args.composite, "keep_from": args.keep_from, "fade": args.fade, "ramp": args.ramp},
           "motions": len(picks), "pool_size": pool, "seconds": round(seconds, 1), "table": table}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps(out["table"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Coarse-to-fine check of the two multi-scale quantisers: reconstruction error per number of
scales used, and codebook usage per scale.

Two modes, each printing markdown tables (and optionally writing a JSON of the numbers and a
figure):

``temporal`` -- a trained TMT VQ-VAE run (MotionMAR stage 1, task ``tmt_vqvae``) on the
Bandai test split at 60 fps: :meth:`mmar.tasks.tmt_vqvae.TMTVQVAETask.evaluate_vqvae` gives
MPJPE and 6D error when decoding from the first ``n`` scales and codebook usage / perplexity per
scale. The decoder of this VQ-VAE also reads the 54 sparse tracking features (head and wrists)
and the body is placed by the tracked head, so the error is the error *given the tracking
input*; the script adds ``n = 0`` (a zero latent, the sparse input alone) to show how much of the
pose the tracking input already fixes::

    .venv/bin/python tools/vq_scales.py temporal --run /tmp/runs/mm_vq \\
        --figure /tmp/vq_scales/temporal.png --json /tmp/vq_scales/temporal.json

``skeletal`` -- a trained ``scalemogen_vqvae`` run of the one trainer (ScaleMoGen's
skeletal-temporal BSQ VQ-VAE, :class:`mmar.models.vqvae.SkeletalVQVAE`, e.g. the preset's
11-scale quantiser over 49 latent steps, i.e. 196-frame windows), read with
:func:`mmar.run.load` (``--run DIR``: its latest checkpoint and its data statistics; trained with
e.g. ``mmar train configs/scalemogen_vqvae_small.py --workdir /tmp/runs/scalemogen_vq``; this
script trains nothing). Evaluation on HumanML3D-format 263-d features computed from the Bandai
test clips at 20 fps (:mod:`mmar.data.hml_features`; every third frame of the 60-fps benchmark
arrays, z-normalised with the run's statistics; clips shorter than 40 feature frames dropped as
in HumanML3D), cut into non-overlapping windows of the model's length (a last partial window of
at least 40 frames is kept, masked): MPJPE of the joints recovered with
:func:`mmar.data.hml_features.recover_from_ric` when decoding from the first ``n`` scales,
``n = 1..11``, and per-scale bit usage (per-bit entropy of the empirical bit frequencies,
fraction of distinct 24-bit codes among the scale's tokens, and the BSQ per-sample and
codebook entropies the quantiser computes)::

    .venv/bin/python tools/vq_scales.py skeletal --run /tmp/runs/scalemogen_vq \\
        --figure /tmp/vq_scales/skeletal.png --json /tmp/vq_scales/skeletal.json

The figure shows, for one test clip (default: the longest one), the height over time of the
root, the left wrist and the left foot for the ground truth and the reconstructions from
1, 2, ..., all scales, and MPJPE against the number of scales.

Nothing is written inside the repository (output paths inside it are refused): the data and
anything derived from it stay outside.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from mmar.data import hml_features as hf  # noqa: E402
from mmar.data import t2m  # noqa: E402
from mmar.models import body  # noqa: E402
from mmar.models.vqvae import SkeletalVQVAE  # noqa: E402

#: joints drawn in the figure: (SMPL-22 index, label); the height (y) of each is plotted.
FIGURE_JOINTS: tuple[tuple[int, str], ...] = ((0, "root (pelvis)"), (20, "left wrist"), (10, "left foot"))
HML_FPS = 20.0
MIN_MOTION_LEN = t2m.DEFAULT_MIN_LEN["humanml3d"]  # HumanML3D drops motions shorter than 40 frames


def _outside_repo(path: str | os.PathLike | None, what: str) -> None:
    if path is None:
        return
    p = Path(path).expanduser().resolve()
    if p == REPO_ROOT or REPO_ROOT in p.parents:
        raise SystemExit(f"{what} {p} lies inside the repository; write outputs under /tmp instead")


# ======================================================================================
# temporal (TMT VQ-VAE of MotionMAR)
# ======================================================================================

def load_temporal_run(run: str | os.PathLike, benchmark=None):
    """``(task, variables)`` of a TMT VQ-VAE work directory (its latest checkpoint)."""
    from mmar.errors import ConfigError
    from mmar.run import load

    loaded = load(run, benchmark=benchmark)
    if loaded.config.task != "tmt_vqvae":
        raise ConfigError(f"{run}: not a TMT VQ-VAE run (task {loaded.config.task!r})")
    return loaded.task, loaded.variables


def temporal_windows(clips: dict[str, dict], window: int) -> dict[str, np.ndarray]:
    """The non-overlapping windows of :meth:`TMTVQVAETask.evaluate_vqvae` (frame 0 skipped):
    ``sparse (N, W, 54)``, ``rot6d (N, W, 22, 6)``, ``joints (N, W, 22, 3)``, ``offsets (N, 22, 3)``."""
    out = {k: [] for k in ("sparse", "rot6d", "joints", "offsets")}
    for c in clips.values():
        for i in range((c["sparse"].shape[0] - 1) // window):
            sl = slice(1 + i * window, 1 + (i + 1) * window)
            for k in ("sparse", "rot6d", "joints"):
                out[k].append(np.asarray(c[k][sl], np.float32))
            out["offsets"].append(np.asarray(c["offsets"], np.float32))
    return {k: np.stack(v) if v else np.zeros((0,), np.float32) for k, v in out.items()}


@functools.partial(jax.jit, static_argnames=("model", "frame"))
def _temporal_recons(model, vq_vars, pose, sparse, offsets, frame="world"):
    """Rotations and head-placed joints decoded from the first ``n`` scales, ``n = 0..K``, and
    from the plain forward pass (last entry), in one compiled function (``frame="heading"``:
    coded and decoded in each window's heading frame, turned back before the body is placed)."""
    from mmar.models.motionmar import pose_features_from_frame, window_to_frame

    K = model.config.quantizer.num_scales
    world_sparse, f = sparse, None
    if frame == "heading":
        f, sparse, pose = window_to_frame(sparse, pose)
    codes = model.apply(vq_vars, pose, method=lambda m, x: m.encode_codes(x))
    recs = [model.apply(vq_vars, codes, sparse, method=lambda m, c, s, n=n: m.decode_latent(
        m.quantizer.partial_reconstruction(c, n), None, s)) for n in range(K + 1)]
    recs.append(model.apply(vq_vars, pose, None, sparse)["recon"])
    if f is not None:
        recs = [pose_features_from_frame(r, f) for r in recs]
    sparse = world_sparse
    out = []
    for rec in recs:
        rot = rec.reshape(pose.shape[0], pose.shape[1], -1, 6)
        off = jnp.broadcast_to(offsets[:, None], rot.shape[:3] + (3,))
        out.append((rot, body.body_in_world(rot, off, sparse)))
    return out


def temporal_reconstruct(task, variables, windows: dict[str, np.ndarray], batch: int = 256) -> dict:
    """``{n: (rot6d (N, W, 22, 6), joints (N, W, 22, 3))}`` decoded from the first ``n`` scales,
    ``n = 0..K`` (``0``: a zero latent, the sparse input alone), and under the key ``"full"``
    the plain forward pass; the body is placed by the tracked head as in ``evaluate_vqvae``."""
    vq_vars = {k: v for k, v in variables.items() if k in ("params", "vq")}
    n_win, W = windows["sparse"].shape[:2]
    K = task.vq_cfg.quantizer.num_scales
    keys = list(range(K + 1)) + ["full"]
    parts = {k: ([], []) for k in keys}
    for a in range(0, n_win, batch):
        s, r, o = (windows[k][a:a + batch] for k in ("sparse", "rot6d", "offsets"))
        m = len(s)
        if m < batch:  # one compiled shape
            pad = lambda x: np.concatenate([x, np.repeat(x[-1:], batch - m, 0)])  # noqa: E731
            s, r, o = pad(s), pad(r), pad(o)
        outs = _temporal_recons(task.vq_model, vq_vars, r.reshape(batch, W, -1), s, o, frame=task.m.frame)
        for k, (rot, pos) in zip(keys, outs):
            parts[k][0].append(np.asarray(rot[:m]))
            parts[k][1].append(np.asarray(pos[:m]))
    return {k: (np.concatenate(v[0]), np.concatenate(v[1])) for k, v in parts.items()}


def window_errors(rot, pos, windows) -> tuple[float, float]:
    """``(MPJPE in cm, mean 6D l2)``, averaged per window then over windows (as evaluate_vqvae)."""
    mpjpe = np.linalg.norm(pos - windows["joints"], axis=-1).mean(axis=(1, 2)).mean() * 100
    r6 = np.linalg.norm(rot - windows["rot6d"], axis=-1).mean(axis=(1, 2)).mean()
    return float(mpjpe), float(r6)


def temporal_metrics(task, variables, clips: dict[str, dict], batch: int = 256) -> dict:
    """``evaluate_vqvae`` plus the ``n = 0`` (sparse input only) row and the token counts."""
    out = dict(task.evaluate_vqvae(variables, clips, batch=batch))
    win = temporal_windows(clips, task.window)
    rec = temporal_reconstruct(task, variables, win, batch)
    out["mpjpe_cm_scales0"], out["rot6d_l2_scales0"] = window_errors(*rec[0], win)
    out["mpjpe_cm_full"], out["rot6d_l2_full"] = window_errors(*rec["full"], win)
    out["lengths"] = [int(x) for x in task.m.lengths]
    out["codebook_size"] = int(task.m.codebook_size)
    return out


def temporal_table(metrics: dict) -> str:
    lengths = metrics["lengths"]
    K = len(lengths)
    rows = ["| scales used | tokens per window | MPJPE [cm] | 6D error (l2) |", "|---|---|---|---|"]
    rows.append(f"| 0 (sparse input only) | 0 | {metrics['mpjpe_cm_scales0']:.2f} | "
                f"{metrics['rot6d_l2_scales0']:.4f} |")
    for n in range(1, K + 1):
        rows.append(f"| {n} | {sum(lengths[:n])} | {metrics[f'mpjpe_cm_scales{n}']:.2f} | "
                    f"{metrics[f'rot6d_l2_scales{n}']:.4f} |")
    if "mpjpe_cm_full" in metrics:
        rows.append(f"| forward pass (check) | {sum(lengths)} | {metrics['mpjpe_cm_full']:.2f} | "
                    f"{metrics['rot6d_l2_full']:.4f} |")
    rows += ["", f"| scale | tokens per window | codebook usage (of {metrics['codebook_size']}) | perplexity |",
             "|---|---|---|---|"]
    for k in range(K):
        rows.append(f"| {k + 1} | {lengths[k]} | {metrics[f'usage_scale{k}']:.3f} | "
                    f"{metrics[f'perplexity_scale{k}']:.1f} |")
    rows.append(f"| all | {sum(lengths)} | {metrics['usage']:.3f} | {metrics['perplexity']:.1f} |")
    return "\n".join(rows)


def temporal_figure_data(task, variables, clip: dict, max_frames: int | None = None, batch: int = 256) -> dict:
    """GT and per-scale reconstructions of one clip's consecutive windows (frames 1, 2, ...)."""
    W = task.window
    c = clip
    if max_frames is not None:
        c = {k: (v[: 1 + max_frames] if np.ndim(v) and k != "offsets" else v) for k, v in clip.items()}
    win = temporal_windows({"clip": c}, W)
    rec = temporal_reconstruct(task, variables, win, batch)
    recons = {n: v[1].reshape(-1, 22, 3) for n, v in rec.items() if n != "full"}
    return {"gt": win["joints"].reshape(-1, 22, 3), "recons": recons, "fps": float(np.asarray(clip["fps"]))}


# ======================================================================================
# skeletal (ScaleMoGen's skeletal-temporal BSQ VQ-VAE) on HumanML3D-format features
# ======================================================================================

def clip_hml_features(joints: np.ndarray, step: int = 1) -> np.ndarray:
    """HumanML3D 263-d features ``(T' - 1, 263)`` of joint positions ``(T, 22, 3)`` taken every
    ``step`` frames (3 turns the 60-fps benchmark arrays into 20 fps): :func:`mmar.data.t2m.clip_features`."""
    return t2m.clip_features(joints, step)


def build_hml_features(clips: dict[str, dict], step: int = 3, min_len: int = MIN_MOTION_LEN,
                       progress: bool = True, desc: str = "features") -> dict[str, np.ndarray]:
    """``{clip: features}`` of the clips with at least ``min_len`` feature frames (the rule of
    :func:`mmar.data.t2m.load_t2m`, which drops shorter Bandai clips the same way)."""
    out = {}
    for name in tqdm(sorted(clips), desc=desc, unit="clip", disable=not progress):
        if (clips[name]["joints"].shape[0] - 1) // step + 1 < 2:
            continue
        f = clip_hml_features(clips[name]["joints"], step)
        if len(f) >= min_len:
            out[name] = f
    return out


def cut_windows(feats: dict[str, np.ndarray], num_frames: int, min_len: int = MIN_MOTION_LEN):
    """Non-overlapping windows ``x (N, T, F)`` (zero padded), ``mask (N, T)`` and
    ``index [(clip, start, length)]``: the segments of :func:`mmar.data.t2m.segment_bounds`
    (a last partial window is kept when ``>= min_len``)."""
    windows, index = [], []
    for name in sorted(feats):
        f = feats[name]
        for s, e in t2m.segment_bounds(len(f), num_frames, min_len):
            windows.append(f[s:e])
            index.append((name, s, e - s))
    if not windows:
        raise ValueError("no window: every clip is shorter than min_len")
    x, m = t2m.pad_windows(windows, num_frames)
    return x, m, index


def load_skeletal_run(run: str | os.PathLike, benchmark=None):
    """``(model, params, normalizer, info)`` of a ``scalemogen_vqvae`` work directory (its latest
    checkpoint; the normaliser is its dataset's statistics, so ``benchmark`` -- a preloaded
    :class:`mmar.data.t2m.T2MDataset` -- or the run's ``cfg.data`` must give the same data)."""
    from mmar.errors import ConfigError
    from mmar.run import load

    loaded = load(run, benchmark=benchmark)
    if loaded.config.task != "scalemogen_vqvae":
        raise ConfigError(f"{run}: not a scalemogen_vqvae run (task {loaded.config.task!r})")
    ds = loaded.task.dataset
    params = loaded.variables["params"]
    info = {"run": str(run), "steps": int(loaded.step), "batch": int(loaded.config.train.batch_size),
            "params": int(sum(np.size(p) for p in jax.tree.leaves(params)))}
    return loaded.task.vq_model, params, hf.Normalizer(ds.mean, ds.std), info


@functools.partial(jax.jit, static_argnames=("model",))
def _skel_encode(model, params, x, mask):
    return model.apply({"params": params}, x, mask, method=lambda m, x, mk: m.encode(x, mk))


@functools.partial(jax.jit, static_argnames=("model",))
def _skel_quantize(model, params, z, lat_mask):
    return model.apply({"params": params}, z, lat_mask, method=lambda m, z, mk: m.quantizer(z, mk))


@functools.partial(jax.jit, static_argnames=("model",))
def _skel_partials(model, params, codes, lat_mask):
    """The latent grids decoded from the first ``n`` scales, ``n = 1..K``."""
    K = model.config.quantizer.num_scales
    return [model.apply({"params": params}, codes, lat_mask, method=lambda m, c, mk, n=n:
                        m.quantizer.partial_reconstruction(c, n, mk)) for n in range(1, K + 1)]


@functools.partial(jax.jit, static_argnames=("model",))
def _skel_decode(model, params, z_q, mask):
    return model.apply({"params": params}, z_q, mask, method=lambda m, z, mk: m.decode_latent(z, mk))


@functools.partial(jax.jit, static_argnames=("model",))
def _skel_full(model, params, x, mask):
    return model.apply({"params": params}, x, mask)["recon"]


def _batched(fn, arrays: Sequence[np.ndarray], batch: int, desc: str | None = None, progress: bool = False):
    """``fn`` over fixed-size batches (the last one padded by repetition), outputs concatenated."""
    n = len(arrays[0])
    outs = []
    for a in tqdm(range(0, n, batch), desc=desc, disable=not progress, leave=False):
        part = [x[a:a + batch] for x in arrays]
        m = len(part[0])
        if m < batch:
            part = [np.concatenate([x, np.repeat(x[-1:], batch - m, 0)]) for x in part]
        outs.append(np.asarray(fn(*part))[:m])
    return np.concatenate(outs)


def _joints(features_norm: np.ndarray, normalizer: hf.Normalizer) -> np.ndarray:
    return np.asarray(hf.recover_from_ric(normalizer.denormalize(np.asarray(features_norm, np.float32))))


def _position_errors(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """``(MPJPE, root-aligned MPJPE)`` in cm, mean over valid frames and joints of all windows."""
    w = mask.astype(np.float64)
    err = np.linalg.norm(pred - gt, axis=-1).mean(-1)
    rel = np.linalg.norm((pred - pred[..., :1, :]) - (gt - gt[..., :1, :]), axis=-1).mean(-1)
    return float((err * w).sum() / w.sum() * 100), float((rel * w).sum() / w.sum() * 100)


def _bit_entropy(bits: np.ndarray) -> np.ndarray:
    p = np.clip(bits.mean(0), 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def skeletal_scale_eval(model: SkeletalVQVAE, params, x: np.ndarray, mask: np.ndarray, normalizer: hf.Normalizer,
                        batch: int = 32, keep: Sequence[int] = (), progress: bool = True) -> dict:
    """Reconstruction from the first ``n`` scales (``n = 1..K``) of normalised windows ``x (N, T, F)``
    with frame ``mask (N, T)``, per-scale bit statistics, and the plain forward pass.

    Returns a dict: ``mpjpe_cm (K,)`` and ``mpjpe_root_cm (K,)`` (root-aligned), ``feat_l1 (K,)``
    (mean |error| of the normalised features on valid frames), ``full_mpjpe_cm`` /
    ``full_mpjpe_root_cm`` / ``full_feat_l1`` (``model(x)['recon']``), per scale ``tokens``
    (per window), ``valid_tokens``, ``distinct_frac`` (distinct codes / valid tokens),
    ``bit_entropy`` (mean over the 24 bits of the entropy of the empirical bit frequency, in
    bits), ``bsq_per_sample_entropy`` and ``bsq_codebook_entropy`` (nats, the quantiser's own
    terms over all windows at once), ``bsq_loss``, ``commit``; ``windows``, ``frames``; and
    ``kept``: ``{i: {"gt": (T, 22, 3), n: (T, 22, 3)}}`` joints of the windows in ``keep``.
    """
    cfg = model.config
    K = cfg.quantizer.num_scales
    x = np.asarray(x, np.float32)
    mask = np.asarray(mask, bool)
    N = len(x)
    f = 2 ** cfg.n_layers
    lengths = mask.sum(1)
    lat_len = -(-lengths // f) if cfg.latent_rounding == "ceil" else lengths // f
    lat_mask = np.arange(cfg.quantizer.num_steps)[None] < np.minimum(lat_len, cfg.quantizer.num_steps)[:, None]

    z = _batched(lambda a, b: _skel_encode(model, params, a, b), (x, mask), batch)
    q = jax.device_get(_skel_quantize(model, params, z, lat_mask))  # all windows at once
    codes = [np.asarray(c) for c in q["codes"]]
    gt = _batched(lambda a: _joints(a, normalizer), (x,), batch)
    w = mask[..., None].astype(np.float64)
    out: dict = {"windows": int(N), "frames": int(mask.sum()), "num_scales": K,
                 "kept": {i: {"gt": gt[i]} for i in keep}}
    for key in ("mpjpe_cm", "mpjpe_root_cm", "feat_l1"):
        out[key] = []
    partials = _skel_partials(model, params, codes, lat_mask)
    for n in tqdm(range(1, K + 1), desc="decode per scale", unit="scale", disable=not progress):
        z_q = np.asarray(partials[n - 1])
        rec = _batched(lambda a, b: _skel_decode(model, params, a, b), (z_q, mask), batch)
        pos = _batched(lambda a: _joints(a, normalizer), (rec,), batch)
        e, r = _position_errors(pos, gt, mask)
        out["mpjpe_cm"].append(e)
        out["mpjpe_root_cm"].append(r)
        out["feat_l1"].append(float((np.abs(rec - x) * w).sum() / (w.sum() * x.shape[-1])))
        for i in keep:
            out["kept"][i][n] = pos[i]
    full = _batched(lambda a, b: _skel_full(model, params, a, b), (x, mask), batch)
    out["full_mpjpe_cm"], out["full_mpjpe_root_cm"] = _position_errors(
        _batched(lambda a: _joints(a, normalizer), (full,), batch), gt, mask)
    out["full_feat_l1"] = float((np.abs(full - x) * w).sum() / (w.sum() * x.shape[-1]))

    scales = []
    for k in range(K):
        length, _, groups = cfg.quantizer.scale(k)
        m = np.asarray(q["token_masks"][k], bool)
        bits = codes[k][m]
        idx = (bits.astype(np.int64) << np.arange(bits.shape[-1] - 1, -1, -1)).sum(-1) if len(bits) else bits[:, 0]
        scales.append({
            "scale": k + 1, "time_steps": int(length), "groups": len(groups), "tokens": int(length * len(groups)),
            "valid_tokens": int(m.sum()),
            "distinct_codes": int(len(np.unique(idx))),
            "distinct_frac": float(len(np.unique(idx)) / max(len(idx), 1)),
            "bit_entropy": float(_bit_entropy(bits).mean()) if len(bits) else 0.0,
            "bsq_per_sample_entropy": float(q["per_sample_entropy"][k]),
            "bsq_codebook_entropy": float(q["codebook_entropy"][k]),
            "bsq_loss": float(q["scale_losses"][k]),
            "commit": float(q["commit"][k]),
        })
    out["scales"] = scales
    return out


def skeletal_table(res: dict) -> str:
    K = res["num_scales"]
    sc = res["scales"]
    rows = ["| scales used | tokens per window | MPJPE [cm] | root-aligned MPJPE [cm] | feature L1 (normalised) |",
            "|---|---|---|---|---|"]
    cum = 0
    for n in range(1, K + 1):
        cum += sc[n - 1]["tokens"]
        rows.append(f"| {n} | {cum} | {res['mpjpe_cm'][n - 1]:.2f} | {res['mpjpe_root_cm'][n - 1]:.2f} | "
                    f"{res['feat_l1'][n - 1]:.4f} |")
    rows.append(f"| forward pass (check) | {cum} | {res['full_mpjpe_cm']:.2f} | {res['full_mpjpe_root_cm']:.2f} | "
                f"{res['full_feat_l1']:.4f} |")
    rows += ["", "| scale | time steps x groups | valid tokens | distinct codes / tokens | per-bit entropy [bit] | "
             "BSQ per-sample entropy [nat] | BSQ codebook entropy [nat] | commit |",
             "|---|---|---|---|---|---|---|---|"]
    for s in sc:
        rows.append(f"| {s['scale']} | {s['time_steps']} x {s['groups']} | {s['valid_tokens']} | "
                    f"{s['distinct_codes']} / {s['valid_tokens']} = {s['distinct_frac']:.3f} | "
                    f"{s['bit_entropy']:.3f} | "
                    f"{s['bsq_per_sample_entropy']:.4f} | {s['bsq_codebook_entropy']:.2f} | {s['commit']:.4f} |")
    return "\n".join(rows)


# ======================================================================================
# figure
# ======================================================================================

def plot_scales(path: str | os.PathLike, title: str, fps: float, gt: np.ndarray, recons: dict,
                errors: dict, error_label: str = "MPJPE [cm]", extra_errors: dict | None = None,
                joints: Sequence[tuple[int, str]] = FIGURE_JOINTS, coord: int = 1) -> None:
    """Height (``coord``) over time of ``joints`` for ``gt (T, J, 3)`` and ``recons {n: (T, J, 3)}``,
    plus a panel of ``errors {n: value}`` against the number of scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(recons)
    cmap = plt.get_cmap("viridis")
    colour = {n: cmap(0.05 + 0.85 * i / max(len(ns) - 1, 1)) for i, n in enumerate(ns)}
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    t = np.arange(len(gt)) / fps
    for ax, (j, name) in zip(axes.flat[:3], joints):
        for n in ns:
            lab = "0 scales (sparse only)" if n == 0 else f"{n} scale{'s' if n > 1 else ''}"
            ax.plot(t, recons[n][:, j, coord], color=colour[n], lw=1.0, alpha=0.85, label=lab)
        ax.plot(t, gt[:, j, coord], color="k", lw=2.0, ls="--", label="ground truth")
        ax.set_title(f"{name}: height")
        ax.set_xlabel("time [s]")
        ax.set_ylabel("y [m]")
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=8, frameon=False)
    ax = axes.flat[3]
    xs = sorted(errors)
    ax.plot(xs, [errors[n] for n in xs], "o-", color="C3", label=error_label)
    for name, vals in (extra_errors or {}).items():
        ks = sorted(vals)
        ax.plot(ks, [vals[n] for n in ks], "s--", color="C0", label=name)
    ax.set_xticks(xs)
    ax.set_xlabel("scales used")
    ax.set_ylabel("error [cm]")
    ax.set_title("test split: error vs number of scales")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06 if len(labels) > 7 else 0.035, 1, 1))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pick_clip(clips: dict[str, dict], name: str | None) -> str:
    if name is not None:
        if name not in clips:
            raise SystemExit(f"clip {name!r} is not in the test split")
        return name
    return max(sorted(clips), key=lambda n: clips[n]["joints"].shape[0])  # the longest test clip


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


# ======================================================================================
# CLI
# ======================================================================================

def run_temporal(args) -> dict:
    from mmar.data.benchmark import load_sparse_benchmark

    bench = load_sparse_benchmark(args.data, 60)
    clips = bench["test"]
    task, variables = load_temporal_run(args.run, bench)
    t0 = time.time()
    metrics = temporal_metrics(task, variables, clips, batch=args.batch)
    metrics["eval_wall_s"] = time.time() - t0
    print(f"\n## Temporal (TMT VQ-VAE, MotionMAR stage 1): {args.run}, Bandai test split, "
          f"{len(clips)} clips, {int(metrics['windows'])} windows of {task.window} frames at 60 fps\n")
    print(temporal_table(metrics))
    print("\nThe decoder also reads the sparse tracking input (head and wrists) and the body is placed by the "
          "tracked head, so these errors are reconstruction errors *given* the tracking input; row 0 decodes a "
          "zero latent (the tracking input alone).")
    if args.figure:
        name = _pick_clip(clips, args.clip)
        d = temporal_figure_data(task, variables, clips[name], max_frames=int(round(args.seconds * 60)))
        plot_scales(args.figure, f"TMT VQ-VAE (temporal scales {tuple(task.m.lengths)}), test clip {name}", d["fps"],
                    d["gt"], d["recons"],
                    {n: metrics[f"mpjpe_cm_scales{n}"] for n in range(0, len(task.m.lengths) + 1)},
                    error_label="MPJPE [cm] (body placed by tracked head)")
        metrics["figure_clip"] = name
        print(f"\nfigure: {args.figure} (clip {name})")
    return metrics


def run_skeletal(args) -> dict:
    from mmar.data.benchmark import load_sparse_benchmark

    bench = load_sparse_benchmark(args.data, 60)
    model, params, normalizer, info = load_skeletal_run(args.run)
    print(f"the scalemogen_vqvae run {args.run} ({info['steps']} steps)")
    test_feats = build_hml_features(bench["test"], desc="test features (20 fps)")
    T = model.config.num_frames
    x, mask, index = cut_windows({k: normalizer.normalize(v) for k, v in test_feats.items()}, T)
    name = _pick_clip({k: bench["test"][k] for k in test_feats}, args.clip)
    keep = [i for i, (c, s, _) in enumerate(index) if c == name and s == 0]
    t0 = time.time()
    res = skeletal_scale_eval(model, params, x, mask, normalizer, batch=args.eval_batch, keep=keep)
    res["eval_wall_s"] = time.time() - t0
    res["train"] = info
    res["test_clips"] = len(test_feats)
    print(f"\n## Skeletal (ScaleMoGen BSQ VQ-VAE, width {model.config.latent_dim}, "
          f"{model.config.n_extra_layers + 1} ResSTConv per level, {info['params']} parameters; "
          f"{info['steps']} steps x {info['batch']} windows): Bandai test split as HumanML3D features at 20 fps, "
          f"{len(test_feats)} clips, {res['windows']} windows of {T} frames ({res['frames']} valid frames)\n")
    print(skeletal_table(res))
    kept = res.pop("kept")
    if args.figure and keep:
        k = kept[keep[0]]
        n_valid = index[keep[0]][2]
        K = res["num_scales"]
        plot_scales(args.figure,
                    f"ScaleMoGen skeletal BSQ VQ-VAE ({K} scales; {info['steps']} steps), test clip {name}",
                    HML_FPS, k["gt"][:n_valid], {n: k[n][:n_valid] for n in range(1, K + 1)},
                    {n: res["mpjpe_cm"][n - 1] for n in range(1, K + 1)}, error_label="MPJPE [cm]",
                    extra_errors={"root-aligned MPJPE [cm]": {n: res["mpjpe_root_cm"][n - 1] for n in range(1, K + 1)}})
        res["figure_clip"] = name
        print(f"\nfigure: {args.figure} (clip {name}, first {n_valid} frames)")
    return res


class _Removed(argparse.Action):
    """An option of the removed stand-alone training loop: fail with a pointer to the trainer."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string}: this script no longer trains; train the tokenizer with "
                     "`mmar train configs/scalemogen_vqvae_small.py --workdir DIR` and measure it with "
                     "`tools/vq_scales.py skeletal --run DIR`")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default=None, help="Bandai Namco directory (default: the shared data)")
    common.add_argument("--figure", default=None, help="PNG to write (outside the repository)")
    common.add_argument("--json", default=None, help="write the measured numbers here (outside the repository)")
    common.add_argument("--clip", default=None, help="test clip of the figure (default: the longest)")
    t = sub.add_parser("temporal", parents=[common], help="a trained TMT VQ-VAE run (MotionMAR stage 1)")
    t.add_argument("--run", required=True, help="work directory of a tmt_vqvae run")
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--seconds", type=float, default=9.8, help="span of the figure clip")
    s = sub.add_parser("skeletal", parents=[common], help="a trained scalemogen_vqvae run (ScaleMoGen tokenizer)")
    s.add_argument("--workdir", nargs="?", action=_Removed, help=argparse.SUPPRESS)
    s.add_argument("--run", required=True, help="work directory of a scalemogen_vqvae run (mmar train)")
    s.add_argument("--eval-batch", type=int, default=32)
    args = ap.parse_args(argv)
    for what in ("figure", "json"):
        _outside_repo(getattr(args, what, None), f"--{what}")
    res = run_temporal(args) if args.mode == "temporal" else run_skeletal(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=_json_default) + "\n")
        print(f"numbers: {args.json}")


if __name__ == "__main__":
    main()

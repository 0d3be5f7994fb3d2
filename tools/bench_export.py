"""TFLite export benchmark: size, single-thread latency and accuracy of fp32 / fp16 / int8 models.

    .venv/bin/python tools/bench_export.py RUN_DIR... [--split test] [--max-clips N] \\
        [--quantize none,fp16,int8] [--iters 500] [--out-dir DIR] [--profile] [--full-int8 N] \\
        [--simulate-fp16] [--kmeans-codebook]

For each checkpoint (an ``mmar train`` run of AGRoL-MLP, Mem-MLP or MotionMAR) and each
quantization it exports the model with :func:`mmar.export.card.export_model` (AGRoL-MLP and
MotionMAR in window mode, Mem-MLP in stream mode) and prints, as one Markdown table:

* the file size;
* the single-thread LiteRT latency of one frame (one model call: a window for AGRoL-MLP, a
  stream step with its state for Mem-MLP), median and p99 over ``--iters`` calls on real
  frames after 20 warm-up calls, through :class:`mmar.export.runtime.TFLiteModel` (Python
  call overhead included), beside ``jax.jit`` of the same exported function on the same CPU
  (XLA set to one thread, see below);
* accuracy on the Bandai split (:func:`mmar.data.benchmark.load_sparse_benchmark`): every clip
  streamed frame by frame through the ``.tflite`` by the numpy runtime, the body placed by the
  tracked head, scored with :func:`mmar.eval.sparse.sparse_metrics` (MPJPE in cm, jitter in
  m/s^3); the fp32 JAX model's online prediction (``task.predict_clips``) gives the
  reference row, and the largest / mean absolute difference of the predicted 6D rotations from
  it is reported per quantization.

For Mem-MLP the table also counts *code flips*: the fraction of frames whose newest memory code
(nearest codebook entry) differs from the first variant's (float32 by default).

Options beyond the table:

* ``--profile`` (Mem-MLP): single-thread LiteRT latency and XLA FLOP count of the parts of a
  stream step, each part exported and timed on its own, interleaved;
* ``--full-int8 N``: also a full-integer int8 model (activation ranges calibrated on ``N``
  training windows, or stream steps with the states the float model reaches), which
  ``mmar export`` does not offer;
* ``--simulate-fp16`` (Mem-MLP, no export): float16 weights simulated in JAX in all weights,
  all but the VQ-VAE, or the VQ-VAE only -- code flips and accuracy;
* ``--kmeans-codebook`` (Mem-MLP, diagnostic): the VQ codebook replaced by k-means centres of the
  encoder's outputs on training frames, to study code flips when the trained codebook has
  collapsed to a few codes (the model was not trained with these codes);
* ``--quantize ""`` skips the exports (e.g. with ``--simulate-fp16``).

Single thread: LiteRT runs with ``num_threads=1``; for JAX this script sets
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` before JAX
is imported (unless ``XLA_FLAGS`` is already set). Timings on a machine shared with other
jobs are noisy (see the p99); say so when quoting them. Exported files go to ``--out-dir``
(default: a temporary folder, removed at the end).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _timeit(call, iters: int, warmup: int = 20):
    """``(median, p99)`` in ms of ``call()`` over ``iters`` calls after ``warmup`` calls."""
    import numpy as np

    for _ in range(warmup):
        call()
    ts = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        call()
        ts[i] = time.perf_counter() - t0
    ts *= 1e3
    return float(np.median(ts)), float(np.percentile(ts, 99))


def _runtime(path, mode, mcfg):
    """The frame-by-frame runtime of an exported model (no card needed)."""
    from mmar.export.runtime import StreamRuntime, WindowRuntime
    from mmar.export.tflite import mem_mlp_state_spec

    return WindowRuntime(path) if mode == "window" else StreamRuntime(path, mem_mlp_state_spec(mcfg))


def _predict_tflite(rt, clips, desc, codebook=None):
    """Stream every clip through the runtime ``rt`` -> ``({clip: {rot6d, joints, fps}},
    {clip: code indices})``; the indices (nearest ``codebook`` row of the newest memory code
    after each step) only for a stream model with a codebook."""
    import numpy as np
    from tqdm import tqdm

    from mmar.geometry_np import body_in_world

    out, codes = {}, {}
    for name in tqdm(sorted(clips), desc=desc, unit="clip"):
        a = clips[name]
        rt.reset()
        poses, cs = [], []
        for f in np.asarray(a["sparse"], np.float32):
            poses.append(rt.step(f))
            if codebook is not None:
                cs.append(rt.state["memory_code"][0, -1])
        rot = np.stack(poses)
        out[name] = {"rot6d": rot, "joints": body_in_world(rot, a["offsets"], a["sparse"]), "fps": a["fps"]}
        if codebook is not None:
            c = np.stack(cs)
            codes[name] = np.argmin((c * c).sum(-1)[:, None] - 2 * c @ codebook.T + (codebook * codebook).sum(-1), -1)
    return out, codes


def _kmeans_codebook(task, variables, train_clips, k: int, frames: int = 20000, iters: int = 15, seed: int = 0):
    """Diagnostic: ``variables`` with the VQ codebook replaced by ``k`` k-means centres of the
    frozen encoder's outputs on ``frames`` random training frames (a codebook whose codes are
    used, for studying code flips when the trained one has collapsed)."""
    import jax.numpy as jnp
    import numpy as np

    from mmar.models.mlp_vqvae import MLPVQVAE

    rng = np.random.default_rng(seed)
    rot = np.concatenate([a["rot6d"] for a in train_clips.values()])
    sp = np.concatenate([a["sparse"] for a in train_clips.values()])
    sel = rng.choice(len(rot), min(frames, len(rot)), replace=False)
    vqv = variables["vqvae"]
    z = np.asarray(task.vq_model.apply(vqv, jnp.asarray(rot[sel]), jnp.asarray(sp[sel]),
                                       method=MLPVQVAE.encode_continuous), np.float64)
    c = z[rng.choice(len(z), k, replace=False)].copy()
    for _ in range(iters):
        a = np.argmin((z * z).sum(1)[:, None] - 2 * z @ c.T + (c * c).sum(1)[None], 1)
        for j in np.unique(a):
            c[j] = z[a == j].mean(0)
    out = dict(variables)
    out["vqvae"] = {**vqv, "params": {**vqv["params"], "codebook": np.asarray(c, np.float32)}}
    return out


def _step_functions(task, variables, cfg, frames):
    """``(jax_fn, jax_args, tflite_feed)`` of one exported call on real ``frames (T, 54)``:
    a window of the first ``W`` frames, or stream step ``W`` with the state the model reaches
    by streaming the frames before it (not the all-zero start)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mmar.export import tflite as T
    from mmar.export.card import export_fn

    fn, specs = export_fn(task, variables, task.export_modes[0])
    W = task.model.config.window
    if cfg.task in ("agrol_mlp", "motionmar"):
        feed = {"sparse": np.asarray(frames[None, :W], np.float32)}
    else:
        spec = T.mem_mlp_state_spec(task.model.config)
        state = {k: jnp.zeros(s, d) for k, (s, d) in spec.items()}
        step = jax.jit(fn)
        for f in frames[:W]:
            out = step(jnp.asarray(f[None]), *state.values())
            state = {k: out[f"next_{k}"] for k in spec}
        feed = {"sparse_frame": np.asarray(frames[W:W + 1], np.float32), **{k: np.asarray(v) for k, v in state.items()}}
    assert list(feed) == list(specs)
    jfn = jax.jit(fn)
    return jfn, [jnp.asarray(feed[k]) for k in feed], feed


def _representative(task, variables, cfg, train_clips, n: int, seed: int = 0):
    """Calibration inputs for full-integer quantization from training clips: ``n`` random
    windows (window mode) or ``n`` stream steps with the states the fp32 JAX model reaches
    (stream mode), as a list of input dicts."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mmar.export import tflite as T

    rng = np.random.default_rng(seed)
    mcfg = task.model.config
    W = mcfg.window
    names = sorted(n_ for n_, a in train_clips.items() if len(a["sparse"]) >= 2 * W)
    if cfg.task in ("agrol_mlp", "motionmar"):
        out = []
        for _ in range(n):
            s = train_clips[names[rng.integers(len(names))]]["sparse"]
            i = rng.integers(0, len(s) - W + 1)
            out.append({"sparse": s[None, i:i + W]})
        return out
    variables = jax.tree.map(jnp.asarray, variables)
    extra = {k: v for k, v in variables.items() if k != "params"}
    fn = jax.jit(T.mem_mlp_stream_fn(task.model, task.model_vars(variables), task.vq_model,
                                     extra.get("vqvae")))
    spec = T.mem_mlp_state_spec(mcfg)
    out = []
    while len(out) < n:
        s = train_clips[names[rng.integers(len(names))]]["sparse"]
        state = {k: jnp.zeros(sh, d) for k, (sh, d) in spec.items()}
        for t in range(min(len(s), 4 * W)):
            frame = s[t:t + 1].astype(np.float32)
            if rng.random() < 0.25 and len(out) < n:
                out.append({"sparse_frame": frame, **{k: np.asarray(v) for k, v in state.items()}})
            res = fn(jnp.asarray(frame), *state.values())
            state = {k: res[f"next_{k}"] for k in spec}
    return out


def _simulate_fp16(task, variables, clips):
    """JAX simulation of float16 weights (stored in half, computed in float32, as TFLite's fp16
    does on a CPU) in a Mem-MLP stream, applied to all weights, to all but the VQ-VAE (encoder
    and codebook kept float32), or to the VQ-VAE only. Rows ``(variant, code flip fraction vs
    float32, codes used, max |rot6d diff|, MPJPE, jitter)``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mmar.eval.sparse import sparse_metrics
    from mmar.geometry_np import body_in_world
    from mmar.models.agrol_mlp import pad_clip_start
    from mmar.models.mem_mlp import make_memory, zero_memory
    from mmar.models.mlp_vqvae import MLPVQVAE

    variables = jax.tree.map(jnp.asarray, variables)
    extra = {k: v for k, v in variables.items() if k != "params"}
    mv, vqv = task.model_vars(variables), extra["vqvae"]
    model, vq, cfg = task.model, task.vq_model, task.model.config
    names = sorted(clips)
    T = max(len(clips[n]["sparse"]) for n in names)
    sp = np.stack([np.concatenate([clips[n]["sparse"], np.repeat(clips[n]["sparse"][-1:], T - len(clips[n]["sparse"]), 0)])
                   for n in names]).astype(np.float32)

    @jax.jit
    def run(m, q):
        padded = pad_clip_start(jnp.asarray(sp), cfg.window, cfg.pad_mode)

        def body(memory, t):
            win = jax.lax.dynamic_slice_in_dim(padded, t, cfg.window, axis=1)
            rot = model.apply(m, win, memory)["rot6d"]
            mem = make_memory(win, rot, vq, q, cfg.code_dim)
            idx = vq.apply(q, mem["rot6d"][:, -1], win[:, -1], method=MLPVQVAE.encode_indices)
            return mem, (rot[:, -1], idx)

        _, (rot, idx) = jax.lax.scan(body, zero_memory(cfg, (len(names),)), jnp.arange(T))
        return jnp.moveaxis(rot, 0, 1), idx.T

    half = lambda t: jax.tree.map(lambda a: a.astype(jnp.float16).astype(jnp.float32), t)  # noqa: E731
    variants = {"float32": (mv, vqv), "all weights float16": (half(mv), half(vqv)),
                "float16, VQ-VAE kept float32": (half(mv), vqv), "only the VQ-VAE float16": (mv, half(vqv))}
    out = {k: [np.asarray(x) for x in run(*v)] for k, v in variants.items()}
    ref_rot, ref_idx = out["float32"]
    rows = []
    for k, (rot, idx) in out.items():
        pred, flips, total, diff = {}, 0, 0, 0.0
        for i, n in enumerate(names):
            L = len(clips[n]["sparse"])
            flips += int(np.sum(idx[i, :L] != ref_idx[i, :L]))
            total += L
            diff = max(diff, float(np.abs(rot[i, :L] - ref_rot[i, :L]).max()))
            pred[n] = {"rot6d": rot[i, :L], "fps": clips[n]["fps"],
                       "joints": body_in_world(rot[i, :L], clips[n]["offsets"], clips[n]["sparse"])}
        met = sparse_metrics(pred, clips)
        rows.append((k, flips / total, len(np.unique(idx)), diff, met["mpjpe_cm"], met["jitter_m_s3"]))
    return rows


def _profile_stream(task, variables, frames, iters):
    """Latency (LiteRT, one thread) and XLA FLOPs of the parts of a Mem-MLP stream step."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mmar.eval.efficiency import flops
    from mmar.export import tflite as T
    from mmar.export.runtime import TFLiteModel
    from mmar.models.mem_mlp import make_memory

    variables = jax.tree.map(jnp.asarray, variables)
    extra = {k: v for k, v in variables.items() if k != "params"}
    mv = task.model_vars(variables)
    model, vq, vqv = task.model, task.vq_model, extra.get("vqvae")
    cfg = model.config
    _, _, feed = _step_functions(task, variables, task.cfg, frames)
    win = feed["window"]
    mem = {"sparse": feed["memory_sparse"], "rot6d": feed["memory_rot6d"], "code": feed["memory_code"]}
    parts = {
        "whole stream step (exported)": (T.mem_mlp_stream_fn(model, mv, vq, vqv), feed),
        "backbone + rotation head (W frames)":
            (lambda w, s, r, c: {"rot6d": model.apply(mv, w, {"sparse": s, "rot6d": r, "code": c})["rot6d"]},
             {"w": win, "s": mem["sparse"], "r": mem["rot6d"], "c": mem["code"]}),
        "backbone + both heads (W frames, as MemMLP.apply)":
            (lambda w, s, r, c: model.apply(mv, w, {"sparse": s, "rot6d": r, "code": c}),
             {"w": win, "s": mem["sparse"], "r": mem["rot6d"], "c": mem["code"]}),
        "backbone + rotation head + position head on the last frame (exported)":
            (lambda w, s, r, c: T.mem_mlp_window_last_pos(model, mv, w, {"sparse": s, "rot6d": r, "code": c}),
             {"w": win, "s": mem["sparse"], "r": mem["rot6d"], "c": mem["code"]}),
        "next memory: 6D re-orthonormalisation + VQ encoder + nearest code (W frames)":
            (lambda w, r: make_memory(w, r, vq if cfg.use_code else None, vqv, cfg.code_dim),
             {"w": win, "r": mem["rot6d"]}),
        "I/O only (the step's input and output tensors, no work)":
            (lambda *a: {f"next_{i}": x + 0.0 for i, x in enumerate(a)}, feed),
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="mmar-profile-") as d:
        models = {}
        for i, (name, (fn, fd)) in enumerate(parts.items()):
            path = os.path.join(d, f"part{i}.tflite")
            T.export_tflite(fn, {k: (np.shape(v), np.float32) for k, v in fd.items()}, path)
            models[name] = (TFLiteModel(path), fd, fn)
        times = {n: [] for n in models}
        for _ in range(5):  # interleaved rounds: load changes hit every part alike
            for n, (m, fd, _) in models.items():
                times[n].append(_timeit(lambda m=m, fd=fd: m(fd), max(iters // 5, 50))[0])
        for n, (m, fd, fn) in models.items():
            args = [jnp.asarray(v) for v in fd.values()]
            try:
                gf = flops(fn, *args) / 1e9
            except RuntimeError:  # XLA reports no flops for a graph without arithmetic
                gf = 0.0
            rows.append((n, float(np.median(times[n])), gf))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="run directories of mmar train (AGRoL-MLP, Mem-MLP or MotionMAR)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-clips", type=int, default=None, help="evenly spaced subset of the split")
    ap.add_argument("--quantize", default="none,fp16,int8")
    ap.add_argument("--iters", type=int, default=500, help="timed calls per latency figure")
    ap.add_argument("--out-dir", default=None, help="keep the exported models here")
    ap.add_argument("--data", default=None, help="Bandai data directory (default ../shared/data/bandai-namco)")
    ap.add_argument("--profile", action="store_true", help="also time the parts of the Mem-MLP stream step")
    ap.add_argument("--full-int8", type=int, default=0, metavar="N",
                    help="also measure full-integer int8 calibrated on N training inputs (not offered by mmar export)")
    ap.add_argument("--simulate-fp16", action="store_true",
                    help="diagnostic: JAX simulation of float16 weights in all / all but the VQ-VAE / only the VQ-VAE "
                         "of a Mem-MLP stream: code flips and accuracy (no export)")
    ap.add_argument("--kmeans-codebook", action="store_true",
                    help="diagnostic: replace a Mem-MLP's VQ codebook by k-means centres (as many as it has codes) of "
                         "its encoder's outputs on training frames (a codebook in use, to study code flips)")
    args = ap.parse_args()

    import jax
    import numpy as np

    from mmar.data.benchmark import load_sparse_benchmark
    from mmar.eval.sparse import sparse_metrics
    from mmar.export.card import export_fn, export_model
    from mmar.export.runtime import TFLiteModel
    from mmar.export.tflite import export_tflite
    from mmar.run import load

    quants = [q.strip() for q in args.quantize.split(",") if q.strip()]
    tmp = None
    out_dir = args.out_dir
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mmar-bench-export-")
        out_dir = tmp.name
    os.makedirs(out_dir, exist_ok=True)

    rows, profiles, sims = [], {}, {}
    bench = None
    for ckpt in args.checkpoints:
        run = load(ckpt)
        task, variables, cfg = run.task, run.variables, run.config
        if bench is None or bench.fps != float(cfg.data.fps):
            bench = load_sparse_benchmark(args.data, fps=float(cfg.data.fps))
        clips = bench.subset(args.split, args.max_clips)
        label = f"{cfg.task} ({Path(ckpt).name})"
        codebook = None
        if task.vq_model is not None and cfg.task == "mem_mlp":
            if args.kmeans_codebook:
                k = int(np.shape(variables["vqvae"]["params"]["codebook"])[0])
                variables = _kmeans_codebook(task, variables, bench.subset("train", 300), k)
                label += f", k-means codebook of {k}"
            codebook = np.asarray(variables["vqvae"]["params"]["codebook"], np.float64)
        W = task.model.config.window
        print(f"== {ckpt}: {cfg.task}, window {W}; {len(clips)} {args.split} clips", flush=True)
        frames = next(iter(clips.values()))["sparse"]
        longest = max(clips.values(), key=lambda a: len(a["sparse"]))["sparse"]
        frames = longest if len(frames) < 2 * W else frames
        jfn, jargs, feed = _step_functions(task, variables, cfg, frames)
        jax_lat = _timeit(lambda: jax.block_until_ready(jfn(*jargs)), args.iters)
        ref = task.predict_clips(variables, clips, progress=True)
        ref_m = sparse_metrics(ref, clips)
        rows.append({"model": label, "quantize": "JAX fp32", "mpjpe": ref_m["mpjpe_cm"],
                     "jitter": ref_m["jitter_m_s3"], "gt_jitter": ref_m["gt_jitter_m_s3"], "jax": jax_lat})
        stem = Path(ckpt).name
        mode = task.export_modes[0]
        variants = list(quants) + (["int8 full integer"] if args.full_int8 else [])
        base_codes = None
        for q in variants:
            path = os.path.join(out_dir, f"{stem}_{q.replace(' ', '_')}.tflite")
            if q == "int8 full integer":
                rep = _representative(task, variables, cfg, bench.subset("train", 200), args.full_int8)
                fn, specs = export_fn(task, variables, task.export_modes[0])
                export_tflite(fn, specs, path, "int8", representative_data=lambda rep=rep: rep)
            else:
                export_model(task, variables, cfg, path, quantize=q, latency_iters=5, source=str(ckpt))
            m = TFLiteModel(path)
            lat = _timeit(lambda m=m: m(feed), args.iters)
            pred, codes = _predict_tflite(_runtime(m, mode, task.model.config), clips, f"{stem} {q}", codebook)
            met = sparse_metrics(pred, clips)
            d = np.concatenate([np.abs(pred[n]["rot6d"] - ref[n]["rot6d"]).reshape(-1) for n in clips])
            flips = None
            if codes:
                if base_codes is None:  # the first variant (float32 by default) is the reference
                    base_codes, base_q = codes, q
                c, b = np.concatenate([codes[n] for n in clips]), np.concatenate([base_codes[n] for n in clips])
                flips = (float(np.mean(c != b)), int(len(np.unique(c))), base_q)
            rows.append({"model": label, "quantize": q, "mode": mode, "bytes": os.path.getsize(path),
                         "lite": lat, "jax": jax_lat, "mpjpe": met["mpjpe_cm"], "jitter": met["jitter_m_s3"],
                         "gt_jitter": met["gt_jitter_m_s3"], "diff": (float(d.max()), float(d.mean())),
                         "flips": flips})
        if args.profile and cfg.task == "mem_mlp":
            profiles[label] = _profile_stream(task, variables, frames, args.iters)
        if args.simulate_fp16 and task.vq_model is not None and cfg.task == "mem_mlp":
            sims[label] = _simulate_fp16(task, variables, clips)

    print()
    print(f"Split: {args.split}, {len(clips)} clips; latency = one frame, single thread, "
          f"median / p99 over {args.iters} calls; jax.jit of the same exported function.")
    print()
    print("Code flips (stream models): fraction of frames whose newest memory code differs from the "
          "first variant's, and the number of distinct codes used.")
    print()
    print("| model | quantize | mode | file [MB] | LiteRT median / p99 [ms] | jax.jit median / p99 [ms] "
          "| MPJPE [cm] | Jitter [m/s^3] | GT Jitter [m/s^3] | rot6d diff vs JAX fp32 on the split, max / mean "
          "| code flips (codes used) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["quantize"] == "JAX fp32":
            print(f"| {r['model']} | JAX fp32 (reference) | - | - | - | {r['jax'][0]:.3f} / {r['jax'][1]:.3f} "
                  f"| {r['mpjpe']:.2f} | {r['jitter']:.1f} | {r['gt_jitter']:.1f} | - | - |")
        else:
            fl = "-"
            if r["flips"] is not None:
                fl = (f"reference ({r['flips'][1]})" if r["flips"][2] == r["quantize"]
                      else f"{100 * r['flips'][0]:.2f}% ({r['flips'][1]})")
            print(f"| {r['model']} | {r['quantize']} | {r['mode']} | {r['bytes'] / 1e6:.2f} "
                  f"| {r['lite'][0]:.3f} / {r['lite'][1]:.3f} | {r['jax'][0]:.3f} / {r['jax'][1]:.3f} "
                  f"| {r['mpjpe']:.2f} | {r['jitter']:.1f} | {r['gt_jitter']:.1f} "
                  f"| {r['diff'][0]:.2g} / {r['diff'][1]:.2g} | {fl} |")
    for label, prow in profiles.items():
        print()
        print(f"Stream-step profile, {label} (LiteRT fp32, one thread, median of 5 interleaved medians):")
        print()
        print("| part | LiteRT [ms] | XLA GFLOPs |")
        print("|---|---|---|")
        for name, ms, gf in prow:
            print(f"| {name} | {ms:.3f} | {gf:.4f} |")
    for label, srows in sims.items():
        print()
        print(f"float16 weights simulated in JAX, {label} (code flips vs the float32 stream):")
        print()
        print("| weights | code flips | codes used | max abs rot6d diff | MPJPE [cm] | Jitter [m/s^3] |")
        print("|---|---|---|---|---|---|")
        for k, fl, used, diff, mpjpe, jit in srows:
            print(f"| {k} | {100 * fl:.2f}% | {used} | {diff:.2g} | {mpjpe:.2f} | {jit:.1f} |")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()

"""The ``mmar`` command line. Each sub-command is a contract other tools rely on:

  mmar convert INPUT... --out FILE.npz [--fps N] [--body-model SMPLH.npz] [--kind humanml3d|kit]
               [--asf SKELETON.asf] (INPUT: also .amc motions of that ASF skeleton)
  mmar metrics --pred P.npz --gt G.npz [--fps N] [--no-align-head]
  mmar render FILE.npz [--clip NAME] [--compare OTHER.npz] --out anim.gif|mp4
  mmar train CONFIG [--set key=value ...] [--workdir DIR] [--allow-config-change]
  mmar sweep CONFIG --over KEY=V1,V2,... [--over ...] [--set key=value ...] --root DIR
             [--budget-flops F | --budget-of RUN=STEPS] [--evals K] [--metric NAME] [--mode min|max]
             [--commands FILE | --collect | --plan]
  mmar eval --checkpoint RUN [--data PATH] [--step N] [--out metrics.json] [--save-pred pred.npz]
  mmar eval --checkpoint T2M_RUN --evaluator EVAL_RUN [--repeats 20] [--seed 0] [--steps 1,2,5,10]
            [--guidance W] [--multimodality K] [--out metrics.json]
  mmar export --checkpoint RUN --out MODEL.tflite [--quantize none|fp16|int8] [--mode window|stream]
  mmar generate --checkpoint T2M_RUN --text "a person waves" | --texts FILE [--seconds S] [--num N]
                [--seed K] [--steps S|S1,S2,..] [--guidance W] --out motions.npz [--gif anim.gif] [--bvh m.bvh]
  mmar edit --checkpoint T2M_RUN --source motion.npz|clip.bvh --text "..." [--keep-frames 0:60,120:180]
            [--keep-joints lower|upper|left_arm|...] [--num N] [--seed K] --out edited.npz [--gif edited.gif]

The commands parse arguments and print; the work lives in the library (mmar.data.inputs,
mmar.train, mmar.sweep, mmar.run, mmar.eval.checkpoint, mmar.export, mmar.generate, mmar.edit). Exit codes and messages:

* errors in user input are reported in one line naming the file (cut to a few hundred
  characters), exit code 2; output paths (``--out``, ``--save-pred``) are checked before any
  work;
* with several inputs, a missing path or a malformed file (or a clip whose values are not
  finite after conversion) is reported and the others still convert; ``convert`` then exits 1,
  and so does ``eval --data`` when it skipped files or clips (listed in its JSON ``skipped``);
* results are printed as strict JSON: a NaN or Inf is an error naming the clip, never printed;
* Ctrl-C prints one line and exits 130, leaving no temporary file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

from mmar.errors import ConfigError, MmarError, shorten


def _fps_arg(text: str) -> float:
    """``--fps``: a finite frame rate within :data:`mmar.data.arrays.FPS_RANGE`."""
    from mmar.data.arrays import check_fps
    from mmar.errors import ConfigError

    try:
        return check_fps(text, "fps")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).split(": ", 1)[-1]) from None


def _nonfinite_key(obj, prefix: str = "") -> str | None:
    if isinstance(obj, float) and not math.isfinite(obj):
        return prefix or "value"
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = _nonfinite_key(v, f"{prefix}.{k}" if prefix else str(k))
            if found:
                return found
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _nonfinite_key(v, f"{prefix}[{i}]")
            if found:
                return found
    return None


def _json(obj, **kw) -> str:
    """Strict JSON (no NaN / Infinity): a non-finite number is an error naming its key."""
    key = _nonfinite_key(obj)
    if key is not None:
        raise MmarError(f"result {key} is not a finite number; nothing is reported")
    return json.dumps(obj, allow_nan=False, **kw)


def _check_out(*paths: str | None) -> None:
    from mmar.data.arrays import check_writable

    for p in paths:
        if p:
            check_writable(p)


def _write_json(path: str, obj) -> None:
    from mmar.errors import OutputError

    text = _json(obj, indent=1)
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e


def cmd_convert(args) -> int:
    from mmar.data.clip import resample_clips, save_arrays
    from mmar.data.inputs import checked_arrays, load_inputs

    _check_out(args.out)
    acclaim = [p for p in args.inputs if p.lower().endswith((".asf", ".amc"))]
    clips, errors = load_inputs([p for p in args.inputs if p not in acclaim], kind=args.kind, scale=args.scale,
                                fps=args.fps, body_model=args.body_model, splits=args.split, workers=args.workers)
    if acclaim or args.asf:  # ASF/AMC (CMU, HDM05): mmar.data.asf
        from mmar.data.asf import load_amc_inputs

        amc_clips, amc_errors = load_amc_inputs(acclaim, asf=args.asf, fps=args.amc_fps)
        clips, errors = clips + amc_clips, errors + amc_errors
    for e in errors:
        print(f"error: {shorten(e)}", file=sys.stderr)
    if not clips:
        raise MmarError("no clip converted")
    if args.fps:
        clips = resample_clips(clips, args.fps)
    names = [c.name for c in clips]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise MmarError(f"several inputs give clips named {dup[:5]}")
    out, bad = checked_arrays(clips, progress=True)
    for e in bad:
        print(f"error: {shorten(e)}", file=sys.stderr)
    errors += bad
    if not out:
        raise MmarError("no clip converted")
    save_arrays(args.out, out)
    frames = sum(int(v["joints"].shape[0]) for v in out.values())
    print(_json({"out": args.out, "clips": len(out), "frames": frames, "errors": len(errors)}))
    return 1 if errors else 0


def cmd_metrics(args) -> int:
    from mmar.eval.sparse import metrics_from_npz

    result = metrics_from_npz(args.pred, args.gt, fps=args.fps, align_head=not args.no_align_head)
    print(_json(result, indent=None, sort_keys=True))
    return 0


def cmd_render(args) -> int:
    from mmar.viz.render import render_npz

    _check_out(args.out)
    render_npz(args.file, args.out, clip=args.clip, compare=args.compare)
    print(json.dumps({"out": args.out}))
    return 0


#: ``mmar train`` splits a CPU into this many XLA devices (``MMAR_CPU_DEVICES``; 1 turns it off)
CPU_DEVICES_ENV = "MMAR_CPU_DEVICES"
#: how long one CPU device waits for the other at a collective before XLA aborts the process (XLA's
#: default is 40 s; a wait that long has been a hang, not a slow host: docs/results.md, "The two
#: devices and a busy host")
COLLECTIVE_TIMEOUT_S = 600
_COLLECTIVE_TIMEOUT_FLAG = "xla_cpu_collective_call_terminate_timeout_seconds"


def split_cpu_devices(cfg) -> int:
    """Split the host CPU into ``MMAR_CPU_DEVICES`` (default 2) XLA devices before JAX starts, so
    that the trainer's data-parallel mesh runs XLA's fused element-wise loops (single-threaded
    per device) on two cores instead of one: 8-13% off a step measured on a 2-core CPU, and the
    paper-size AGRoL-MLP step at 0.96-0.98 of PyTorch's instead of 0.83 (``docs/results.md``,
    "Two CPU devices"). Left alone when ``XLA_FLAGS`` already sets a device count, the config
    fixes the devices or mesh, the batch does not divide, the host has fewer cores, or a JAX
    backend is already up (the flag is read once). Harmless on accelerator hosts (the flag only
    concerns the CPU platform). The devices meet at every step's gradient all-reduce, and XLA
    aborts the process when one waits for the other over 40 s; the wait allowed is set to
    :data:`COLLECTIVE_TIMEOUT_S` unless ``XLA_FLAGS`` sets it. Rarely (three times on the 2-core
    machine, each while other jobs shared it) the two devices hang at a collective; the run then
    stops with XLA's "Termination timeout" and resumes from its checkpoint when rerun
    (``MMAR_CPU_DEVICES=1`` avoids it). Returns the count set (0: unchanged)."""
    raw = os.environ.get(CPU_DEVICES_ENV, "2")
    try:
        n = int(raw)
    except ValueError:
        raise ConfigError(f"{CPU_DEVICES_ENV} must be an integer, got {raw!r}") from None
    flags = os.environ.get("XLA_FLAGS", "")
    t = cfg.train
    if (n <= 1 or "xla_force_host_platform_device_count" in flags or t.num_devices is not None
            or t.mesh_shape is not None or t.batch_size % n or (os.cpu_count() or 1) < n):
        return 0
    try:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return 0
    except (ImportError, AttributeError):
        return 0
    add = f"--xla_force_host_platform_device_count={n}"
    if "collective_call_terminate_timeout" not in flags:
        add += f" --{_COLLECTIVE_TIMEOUT_FLAG}={COLLECTIVE_TIMEOUT_S}"
    os.environ["XLA_FLAGS"] = f"{flags} {add}".strip()
    return n


def cmd_train(args) -> int:
    from mmar.tasks import make_task
    from mmar.train import load_config, train

    cfg = load_config(args.config, args.set or [])
    split_cpu_devices(cfg)
    workdir = args.workdir or os.path.join("runs", cfg.name)
    task = make_task(cfg)
    _, history = train(task, cfg, workdir, allow_config_change=args.allow_config_change)
    import jax

    if jax.process_index() == 0:  # one summary per run, not one per host
        last = {k: v for h in history for k, v in h.items()}
        print(_json({"workdir": workdir, **{k: _jsonable(v) for k, v in last.items()}}))
    return 0


def cmd_sweep(args) -> int:
    """``mmar sweep``: a grid of runs of one config, collected with scaling fits (:mod:`mmar.sweep`)."""
    from mmar import sweep as sw

    spec = sw.SweepSpec(config=args.config, axes=sw.parse_over(args.over or []), root=args.root,
                        sets=args.set or [], metric=args.metric, mode=args.mode, budget_flops=args.budget_flops,
                        budget_of=sw.parse_budget_of(args.budget_of) if args.budget_of else None, evals=args.evals,
                        n_boot=args.bootstrap, seed=args.seed)
    if args.commands:
        _check_out(args.commands)
    runs = sw.plan_sweep(spec, log=sw.log_progress)
    plan = [{"name": r.name, "workdir": str(r.workdir), "steps": r.steps,
             "flops_per_step": (r.cost or {}).get("flops"), "params": (r.cost or {}).get("params"),
             "derived": {k: list(v) if isinstance(v, tuple) else v for k, v in r.derived.items()}} for r in runs]
    if args.plan:
        print(_json({"root": str(spec.root), "runs": plan}))
        return 0
    if args.commands:
        path = sw.write_commands(spec, runs, args.commands)
        print(_json({"commands": str(path), "runs": len(runs), "root": str(spec.root)}))
        return 0
    if args.collect:
        summary = sw.collect_sweep(spec, runs)
        sw.write_outputs(spec, summary, plot=not args.no_plot)
    else:
        summary = sw.run_sweep(spec, runs, plot=not args.no_plot)
    fits = summary.get("fits", {})
    out = {"root": str(spec.root), "table": str(spec.root / sw.SWEEP_MD), "metric": summary["metric"],
           "runs": {r["name"]: {"status": r["status"], "final": r["final"], "params": r["params"],
                                "training_flops": r["training_flops"]} for r in summary["runs"]},
           "alpha_params": _alpha(fits.get("params")), "alpha_compute": _alpha(fits.get("compute"))}
    print(_json(out))
    return 0 if all(r["status"] == "done" for r in summary["runs"]) else 1


def _alpha(fit) -> dict | None:
    if not fit:
        return None
    if not fit.get("ok"):
        return {"ok": False, "message": fit.get("message")}
    iv = (fit.get("intervals") or {}).get("alpha")
    return {"ok": True, "alpha": fit["alpha"], "interval": [iv[0], iv[2]] if iv else None}


def _jsonable(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def _steps_arg(text: str):
    """``--steps``: one int (every scale) or a comma list of ints (one per scale), each >= 1."""
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int or a comma list of ints, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"steps must be >= 1, got {text!r}")
    return vals[0] if len(vals) == 1 else vals


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


_T2M_ONLY = ("evaluator", "steps", "guidance", "multimodality")


def _eval_t2m(args, run) -> int:
    """``mmar eval`` of a text-to-motion run: the T2M metrics JSON (:func:`evaluate_t2m_run`)."""
    from mmar.eval.checkpoint import evaluate_t2m_run

    if not getattr(args, "evaluator", None):
        raise MmarError(f"{args.checkpoint}: a text-to-motion run ({run.config.task}) is scored by a text-motion "
                        "evaluator: pass --evaluator DIR (a t2m_evaluator run directory, e.g. from mmar train "
                        "configs/t2m_evaluator.py)")
    for flag, val in (("--data", args.data), ("--save-pred", args.save_pred)):
        if val:
            raise MmarError(f"{flag} is not for text-to-motion runs (they are scored on the split's captions)")
    result = evaluate_t2m_run(run, args.evaluator, split=args.split, repeats=getattr(args, "repeats", 20),
                              seed=getattr(args, "seed", 0), steps=getattr(args, "steps", None),
                              guidance=getattr(args, "guidance", None),
                              multimodality=getattr(args, "multimodality", 0))
    text = _json(result)
    if args.out:
        _write_json(args.out, result)
    print(text)
    return 0


def cmd_eval(args) -> int:
    from mmar.data.clip import save_arrays
    from mmar.eval.checkpoint import evaluate_run, prediction_arrays
    from mmar.run import load

    _check_out(args.out, args.save_pred)
    turn = None  # --yaw / --shift: the clips turned about the vertical axis and moved on the floor
    if getattr(args, "yaw", None) is not None or getattr(args, "shift", None) is not None:
        try:
            shift = tuple(float(v) for v in (args.shift or "0,0").split(","))
        except ValueError:
            shift = ()
        if len(shift) != 2 or not all(math.isfinite(v) for v in shift):
            raise ConfigError(f"--shift must be X,Z in metres (two numbers), got {args.shift!r}")
        yaw = float(args.yaw or 0.0)
        if not math.isfinite(yaw):
            raise ConfigError(f"--yaw must be a finite number of degrees, got {args.yaw!r}")
        turn = {"yaw_deg": yaw, "shift_m": list(shift)}
    run = load(args.checkpoint, overrides=args.set or [], ema=args.ema, step=args.step)
    for s in run.skipped_steps:
        print(f"warning: step {s['step']} not evaluated, unreadable: {shorten(s['error'])}", file=sys.stderr)
    if run.skipped_steps:
        print(f"warning: evaluating step {run.step}, the newest readable one", file=sys.stderr)
    if getattr(run.task, "is_text_to_motion", False):
        if turn is not None:
            raise MmarError("--yaw, --shift: for sparse-to-full-body runs only")
        return _eval_t2m(args, run)
    given = [f"--{k}" for k in _T2M_ONLY if getattr(args, k, None) not in (None, 0)]
    if given:
        raise MmarError(f"{', '.join(given)}: for text-to-motion runs only; {args.checkpoint} is a "
                        f"{run.config.task} run")
    transform = None
    if turn is not None:  # the clips turned and moved (mmar.eval.sparse.turn_clips)
        from mmar.eval.sparse import turn_clips

        def transform(clips):
            return turn_clips(clips, turn["yaw_deg"], turn["shift_m"])
    out = evaluate_run(run, data=args.data, split=args.split, workers=args.workers, transform=transform)
    skipped = [shorten(e) for e in out["skipped"]]
    for e in skipped:
        print(f"skipped: {e}", file=sys.stderr)
    result = {**out["metrics"], "checkpoint": out["checkpoint"], "skipped": skipped}
    if turn is not None:
        result["turn"] = turn
    if getattr(args, "per_clip", False):  # for tools/compare_runs.py (paired intervals over clips)
        result["per_clip"] = out["per_clip"]
    text = _json(result)
    if args.out:
        _write_json(args.out, result)
    if args.save_pred:
        save_arrays(args.save_pred, prediction_arrays(out["pred"], out["gt"]))
    print(text)
    return 1 if skipped else 0


def cmd_export(args) -> int:
    from mmar.export.card import export_checkpoint

    _check_out(args.out)
    card = export_checkpoint(args.checkpoint, args.out, quantize=args.quantize, mode=args.mode)
    print(json.dumps({k: card[k] for k in ("file", "mode", "quantize", "file_bytes", "parity_max_abs_vs_jax",
                                           "latency_ms_single_thread")}))
    return 0


def cmd_generate(args) -> int:
    """``mmar generate``: captions -> motions of a text-to-motion run (the work is :mod:`mmar.generate`)."""
    from mmar import generate as gen_lib
    from mmar.run import load

    texts = gen_lib.check_texts([args.text] if args.text is not None else gen_lib.read_texts(args.texts))
    opts = gen_lib.check_options(seconds=args.seconds, num=args.num, seed=args.seed, steps=args.steps,
                                 guidance=args.guidance, temperature=args.temperature, top_p=args.top_p,
                                 batch_size=args.batch_size)
    gen_lib.check_outputs(args.out, args.gif, args.bvh, bvh_scale=args.bvh_scale)
    run = load(args.checkpoint, overrides=args.set or [], ema=args.ema, step=args.step)
    for s in getattr(run, "skipped_steps", []):
        print(f"warning: step {s['step']} not used, unreadable: {shorten(s['error'])}", file=sys.stderr)
    task = gen_lib.text_to_motion_task(run)
    if args.decoder:
        run.variables = gen_lib.use_decoder(run, args.decoder)
    gen_lib.check_outputs(None, args.gif, args.bvh, bvh_scale=args.bvh_scale,
                          joints_num=getattr(getattr(task, "spec", None), "num_joints", None))
    opts.pop("lengths")
    gen = gen_lib.generate_motions(run, texts, **opts)
    out = gen_lib.save_generated(gen, args.out, gif=args.gif, bvh=args.bvh, bvh_scale=args.bvh_scale, progress=True)
    for e in out["skipped"]:
        print(f"skipped: {shorten(e)}", file=sys.stderr)
    n = len(out["names"])
    if args.gif and out["gif_motions"] < n:
        print(f"note: {args.gif} shows the first {out['gif_motions']} of {n} motions (render others with "
              f"mmar render {args.out} --clip NAME)", file=sys.stderr)
    print(_json({"out": out["out"], "gif": out["gif"], "gif_motions": out["gif_motions"], "bvh": out["bvh"],
                 "motions": n, "texts": len(texts), "names": out["names"], "lengths": out["lengths"],
                 "fps": out["fps"], "sampling_seconds": round(float(gen.seconds), 3),
                 "checkpoint": str(getattr(run, "checkpoint", args.checkpoint)),
                 "skipped": [shorten(e) for e in out["skipped"]]}))
    return 1 if out["skipped"] else 0


def cmd_edit(args) -> int:
    """``mmar edit``: keep part of a motion, regenerate the rest from a new text (the work is :mod:`mmar.edit`)."""
    from mmar import edit as edit_lib
    from mmar import generate as gen_lib
    from mmar.generate import check_outputs, check_texts
    from mmar.run import load

    text = check_texts([args.text])[0]
    if args.num < 1:
        raise ConfigError(f"--num must be >= 1, got {args.num}")
    check_outputs(args.out, args.gif)
    _check_out(args.json)
    source = edit_lib.load_source(args.source, start_frame=args.start_frame, name=args.name)
    if source.note:
        print(f"note: {args.source}: {source.note}", file=sys.stderr)
    run = load(args.checkpoint, overrides=args.set or [], step=args.step)
    task = edit_lib.edit_task(run)
    if args.decoder:
        run.variables = gen_lib.use_decoder(run, args.decoder)
    request = edit_lib.make_request(text, source.length, keep_frames=args.keep_frames, keep_joints=args.keep_joints,
                                    num_groups=int(task.edit_groups))
    result = edit_lib.edit_motion(run, source, request, num=args.num, seed=args.seed, source_text=args.source_text,
                                  guidance=args.guidance, temperature=args.temperature, gamma=args.gamma, tau=args.tau,
                                  root_from_source=not args.free_root, composite=not args.no_composite,
                                  keep_from=args.keep_from, fade=args.fade, ramp=args.ramp)
    out = edit_lib.save_edit(result, source, request, args.out, args.gif, progress=True)
    report = {"out": out["out"], "gif": out["gif"], "names": out["names"], "kind": request.kind,
              "source": str(args.source), "frames": source.length, "source_caption": source.caption,
              "text": text, "editable_tokens": result["editable_tokens"],
              "sampling_seconds": round(result["seconds"], 3), "metrics": result["metrics"],
              "checkpoint": str(getattr(run, "checkpoint", args.checkpoint))}
    if args.json:
        _write_json(args.json, report)
    print(_json(report))
    return 1 if out["skipped"] else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmar", description="Multi-scale autoregressive human motion models.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="BVH / ASF+AMC / AMASS / HumanML3D -> one npz in the mmar layout")
    c.add_argument("inputs", nargs="+", help="BVH files, directories, .tar.xz archives, .amc (with --asf), AMASS .npz, "
                   "HumanML3D folders")
    c.add_argument("--out", required=True)
    c.add_argument("--fps", type=_fps_arg, default=None, help="resample every clip to this rate")
    c.add_argument("--body-model", default=None, help="SMPL-H body model .npz for AMASS input")
    c.add_argument("--kind", choices=["bvh", "amass", "humanml3d", "kit"], default=None)
    c.add_argument("--split", nargs="+", default=["train", "val", "test"], help="HumanML3D splits")
    c.add_argument("--scale", type=float, default=0.01, help="BVH length unit in metres (0.01 = cm)")
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--asf", default=None, help="ASF skeleton of the .amc inputs (CMU, HDM05)")
    c.add_argument("--amc-fps", type=_fps_arg, default=120.0, help="frame rate of the .amc inputs (not in the files)")
    c.set_defaults(fn=cmd_convert)

    m = sub.add_parser("metrics", help="sparse-reconstruction metrics of two npz files, as JSON")
    m.add_argument("--pred", required=True)
    m.add_argument("--gt", required=True)
    m.add_argument("--fps", type=_fps_arg, default=None)
    m.add_argument("--no-align-head", action="store_true", help="do not align predicted head to tracked head")
    m.set_defaults(fn=cmd_metrics)

    r = sub.add_parser("render", help="animated skeleton (GIF or MP4)")
    r.add_argument("file")
    r.add_argument("--clip", default=None)
    r.add_argument("--compare", default=None)
    r.add_argument("--out", required=True)
    r.set_defaults(fn=cmd_render)

    t = sub.add_parser(
        "train", help="train an experiment config; rerun to resume",
        description="Train an experiment config in --workdir; rerun the same command to resume from its "
                    "latest checkpoint. The same command trains on one host or many.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
multi-host training (docs/design.md, "Multi-host training"):
  Start the same command once per host (one process per host, all devices of the host),
  with --workdir on a filesystem every host mounts at the same path (NFS, Lustre,
  Filestore; not a gs:// URL). train.batch_size is the global batch:
  each process feeds its own slice of it. Process 0 writes config.json and TensorBoard;
  every process takes part in writing the checkpoints (orbax).

  plain environment variables, one command per host (process 0 at 10.0.0.1):
    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \\
      mmar train configs/motionmar.py --workdir /shared/runs/motionmar
    JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 \\
      mmar train configs/motionmar.py --workdir /shared/runs/motionmar

  SLURM (one task per node; JAX reads the job's layout):
    srun --nodes=2 --ntasks-per-node=1 env MMAR_DISTRIBUTED=1 \\
      mmar train configs/motionmar.py --workdir /shared/runs/motionmar

  TPU pod slice (every worker of the slice, detected by JAX):
    gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command="cd ~/mmar && \\
      MMAR_DISTRIBUTED=1 mmar train configs/motionmar.py --workdir /mnt/shared/runs/motionmar"

  On CPU hosts the gloo collectives are used unless JAX_CPU_COLLECTIVES_IMPLEMENTATION
  says otherwise.
""")
    t.add_argument("config", help="configs/<experiment>.py")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field")
    t.add_argument("--workdir", default=None, help="run directory (default runs/<name>)")
    t.add_argument("--allow-config-change", action="store_true",
                   help="resume a run under a config that differs from its own (recorded in config.json's "
                        "config_history); without it a changed config is refused")
    t.set_defaults(fn=cmd_train)

    sw = sub.add_parser("sweep", help="train one config over a grid of overrides (optionally at matched "
                        "compute) and fit loss against parameters and compute")
    sw.add_argument("config", help="experiment config (configs/<name>.py or a module name)")
    sw.add_argument("--over", action="append", metavar="KEY=V1,V2,...", required=True,
                    help="a grid axis (values split on ',' or on ';' when given); several make the cartesian grid")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field of every run")
    sw.add_argument("--root", required=True, help="the sweep directory: one work directory per run, sweep.json, "
                    "sweep.md, sweep.png")
    b = sw.add_mutually_exclusive_group()
    b.add_argument("--budget-flops", type=float, default=None, metavar="F",
                   help="matched compute: training FLOPs per run (steps = F / FLOPs of one step)")
    b.add_argument("--budget-of", default=None, metavar="RUN=STEPS",
                   help="matched compute: the FLOPs of STEPS steps of the grid's run RUN (e.g. depth4=1000)")
    sw.add_argument("--evals", type=_positive_int, default=None, metavar="K",
                    help="evaluations per run, every ceil(steps / K) steps (default with a budget: 5; without: "
                         "the config's eval_every)")
    sw.add_argument("--metric", default=None, help="validation metric to collect and fit (default: the config's "
                    "train.best_metric)")
    sw.add_argument("--mode", default="min", choices=("min", "max"), help="whether lower or higher is better")
    sw.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples of the fits")
    sw.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    sw.add_argument("--no-plot", action="store_true", help="do not write sweep.png")
    m = sw.add_mutually_exclusive_group()
    m.add_argument("--commands", default=None, metavar="FILE",
                   help="write one 'mmar train ...' line per run to FILE (for a cluster scheduler) and train nothing")
    m.add_argument("--collect", action="store_true", help="only gather the runs' results (table, fits, plot)")
    m.add_argument("--plan", action="store_true", help="print each run's steps and cost and train nothing")
    sw.set_defaults(fn=cmd_sweep)

    e = sub.add_parser("eval", help="evaluate a checkpoint; prints sparse metrics (or, for a text-to-motion "
                       "run, T2M metrics) as JSON")
    e.add_argument("--checkpoint", required=True, help="a run directory (or its checkpoints/<step>)")
    e.add_argument("--data", default=None, help="BVH file, directory, archive or converted npz "
                   "(default: the benchmark split)")
    e.add_argument("--split", default="test")
    e.add_argument("--out", default=None, help="write the metrics JSON here")
    e.add_argument("--save-pred", default=None, help="predictions in the mmar convert layout")
    e.add_argument("--set", action="append", metavar="KEY=VALUE")
    e.add_argument("--ema", action="store_true", help="use the EMA weights")
    e.add_argument("--step", type=int, default=None, help="evaluate this step (default: the newest)")
    e.add_argument("--workers", type=int, default=2)
    e.add_argument("--yaw", type=float, default=None, metavar="DEG",
                   help="turn the clips by DEG degrees about the vertical axis through the origin before "
                        "predicting (heading invariance check; see docs/design.md, Heading frame)")
    e.add_argument("--per-clip", action="store_true",
                   help="also each clip's metrics, as \"per_clip\" (for tools/compare_runs.py: paired intervals)")
    e.add_argument("--shift", default=None, metavar="X,Z",
                   help="move the clips on the floor by X,Z metres (after --yaw; a negative X as --shift=-2,3)")
    g = e.add_argument_group("text-to-motion runs (mmar.eval.t2m_protocol)")
    g.add_argument("--evaluator", default=None, help="a t2m_evaluator run directory (its best/ checkpoint) or "
                   "checkpoint folder; required for a text-to-motion run")
    g.add_argument("--repeats", type=_positive_int, default=20, help="protocol repeats (95%% intervals)")
    g.add_argument("--seed", type=int, default=0, help="seed of the protocol's draws and the sampling")
    g.add_argument("--steps", type=_steps_arg, default=None,
                   help="sampling steps: one int for every scale or a comma list, e.g. 1,2,5,10 "
                        "(default: the run's config)")
    g.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale "
                   "(default: the run's config)")
    g.add_argument("--multimodality", type=int, default=0, metavar="K",
                   help="also MultiModality over K captions (30 generations each; default off)")
    e.set_defaults(fn=cmd_eval)

    x = sub.add_parser("export", help="checkpoint -> .tflite (builtin ops) + JSON model card")
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--out", required=True, help="model.tflite (the card is written beside it)")
    x.add_argument("--quantize", default="none",
                   help="none (float32) | fp16 (float16 weights) | int8 (dynamic range: int8 weights, float "
                        "activations); details in the model card and mmar/export/tflite.py")
    x.add_argument("--mode", default=None, help="stream (Mem-MLP) | window (AGRoL-MLP)")
    x.set_defaults(fn=cmd_export)

    gn = sub.add_parser("generate", help="motions from text with a text-to-motion run: npz (+ GIF, BVH)")
    gn.add_argument("--checkpoint", required=True, help="a text-to-motion run directory (or its checkpoints/<step>)")
    src = gn.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", default=None, help="one caption, e.g. \"a person waves with the right hand\"")
    src.add_argument("--texts", default=None, metavar="FILE", help="captions, one per line (blank lines skipped)")
    gn.add_argument("--seconds", type=float, default=None,
                    help="duration of every motion (default: the model's length estimator picks each)")
    gn.add_argument("--num", type=int, default=1, help="motions per caption")
    gn.add_argument("--seed", type=int, default=0, help="random seed (same seed, same motions)")
    gn.add_argument("--steps", default=None, help="sampling steps: an int or a comma list, one per scale "
                    "(default: the run's config)")
    gn.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the "
                    "run's config)")
    gn.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the run's config)")
    gn.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold (default: the run's config)")
    gn.add_argument("--batch-size", type=int, default=32, help="motions sampled at once")
    gn.add_argument("--out", required=True, help="motions.npz in the mmar convert layout (+ features, caption)")
    gn.add_argument("--gif", default=None, help="animation (.gif or .mp4) of the first 4 motions side by side")
    gn.add_argument("--bvh", default=None, help="BVH for Blender: this file for one motion, else <stem>_<k>.bvh each")
    gn.add_argument("--bvh-scale", type=float, default=0.01, help="BVH length unit in metres (0.01 = cm, as "
                    "mmar convert reads by default; import into Blender with scale 0.01)")
    gn.add_argument("--decoder", default=None, metavar="RUN", help="decode with the decoder of this tokenizer run "
                    "(its decoder fine-tuned alone, e.g. configs/scalemogen_vqvae_smooth.py); the encoder must be "
                    "the checkpoint's")
    gn.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field of the run")
    gn.add_argument("--ema", action="store_true", help="use the EMA weights")
    gn.add_argument("--step", type=int, default=None, help="use this step (default: the newest)")
    gn.set_defaults(fn=cmd_generate)

    ed = sub.add_parser("edit", help="zero-shot editing: keep frames or body parts of a motion, regenerate the "
                        "rest from a new text")
    ed.add_argument("--checkpoint", required=True, help="a scalemogen (or moscale) run directory")
    ed.add_argument("--source", required=True, help="the motion to edit: an npz of mmar generate / convert, or a "
                    "Bandai Namco BVH clip (at most 196 frames at 20 fps are edited; see --start-frame)")
    ed.add_argument("--text", required=True, help="the caption of the edited motion")
    ed.add_argument("--keep-frames", default=None, metavar="RANGES",
                    help="frames to keep, half-open ranges at 20 fps, e.g. 0:60,120:180 (in-betweening), 0:80 "
                         "(continue a prefix), 100: (complete towards a suffix)")
    ed.add_argument("--keep-joints", default=None, metavar="GROUPS",
                    help="body parts to keep, comma-separated: " + ", ".join(
                        ["root", "spine", "head", "torso", "left_leg", "right_leg", "legs", "lower", "left_arm",
                         "right_arm", "arms", "upper"]) + " (ScaleMoGen only)")
    ed.add_argument("--source-text", default=None, help="the source's caption for the semantic rule (default: the "
                    "source's own caption when known, else the unconditional model)")
    ed.add_argument("--name", default=None, help="the motion of a several-motion npz (default: the first)")
    ed.add_argument("--start-frame", type=int, default=0, help="first frame of the source to edit")
    ed.add_argument("--num", type=int, default=1, help="edits to sample (different noise, one batch)")
    ed.add_argument("--seed", type=int, default=0, help="random seed (same seed, same edits)")
    ed.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the run's)")
    ed.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the run's)")
    ed.add_argument("--gamma", type=int, default=None, help="scales below gamma keep the source outside the edit "
                    "region (semantic edits: copy it); default: the run's (3)")
    ed.add_argument("--tau", type=float, default=None, help="semantic edits: resample a bit where the new text "
                    "lowers its probability by more than tau (default: the run's, 0.1)")
    ed.add_argument("--free-root", action="store_true", help="keep the decoded root velocities (default: a body-part "
                    "edit that keeps the root gets the source's root channels back, so the kept body stays on its path)")
    ed.add_argument("--no-composite", action="store_true", help="temporal edits: leave the kept frames as sampled "
                    "(default: taken from --keep-from, cross-faded over --fade frames at each seam)")
    ed.add_argument("--keep-from", choices=("source", "decoding"), default="source",
                    help="temporal edits: where kept frames come from: the source's own frames (default) or the "
                    "source through the tokenizer")
    ed.add_argument("--fade", type=int, default=16, help="temporal edits: cross-fade frames at each seam (default 16)")
    ed.add_argument("--ramp", choices=("smooth", "linear", "septic", "minjerk"), default="smooth",
                    help="temporal edits: cross-fade shape (default smooth: quintic smootherstep; septic: degree 7, "
                         "no jerk step at the seam; minjerk: a minimum-jerk offset matching value, velocity and "
                         "acceleration at each seam)")
    ed.add_argument("--decoder", default=None, metavar="RUN", help="decode with the decoder of this tokenizer run "
                    "(its decoder fine-tuned alone, e.g. configs/scalemogen_vqvae_smooth.py); the encoder must be "
                    "the checkpoint's")
    ed.add_argument("--out", required=True, help="npz with source, source_recon and edit_<k> (mmar generate layout)")
    ed.add_argument("--gif", default=None, help="animation (.gif or .mp4): the source and the edits side by side")
    ed.add_argument("--json", default=None, help="also write the report (metrics) to this file")
    ed.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field of the run")
    ed.add_argument("--step", type=int, default=None, help="use this step (default: the newest)")
    ed.set_defaults(fn=cmd_edit)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except MmarError as e:
        print(f"mmar {args.command}: error: {shorten(str(e), 600)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmar {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

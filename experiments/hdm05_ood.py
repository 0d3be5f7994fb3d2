"""Bandai-trained sparse-to-full-body models on HDM05: motion, performer and skeleton never seen.

    .venv/bin/python experiments/hdm05_ood.py [--run RUN ...] [--out DIR]
    # a run with the options of ``mmar eval`` (quoted as one argument):
    .venv/bin/python experiments/hdm05_ood.py --run "runs/mem --ema --set model.ik=true --label Mem-MLP, EMA + IK"

1. unpacks ``../shared/data/hdm05-sample/HDM05-bk.tar.xz`` (one HDM05 performer, "bk": the ASF
   skeleton and 65 AMC clips at 120 fps, 11 actions) into a temporary directory, reads every clip
   (:mod:`mmar.data.asf`), maps it to SMPL-22 with the canonical rest pose and resamples it to the
   benchmark's rate (60 fps, as the Bandai test split is evaluated);
2. builds the nearest-neighbour floor from the Bandai train split
   (``mmar.models.nearest.NearestNeighbor(stride=4)``, as in docs/results.md) and loads each
   ``--run`` (a sparse-to-full-body run trained on Bandai, :func:`mmar.run.load`; after the path
   it takes ``--ema``, ``--step N``, ``--set key=value`` as ``mmar eval`` does, and ``--label``);
3. predicts online and measures the AGRoL metrics (:func:`mmar.eval.report.grouped_metrics`:
   per clip, averaged over clips; body placed by the tracked head; frame 0 skipped) on HDM05 as a
   whole and per action, and on the Bandai test split (whole, dataset-1) for comparison;
4. prints a Markdown table (and a compact per-action one) and writes ``hdm05_ood.json`` and
   ``hdm05_ood.md`` to ``--out``.

The HDM05 clips are out of distribution three ways: other motions (squats, kicks, lying down,
throwing...), another performer, and another skeleton (bone lengths, a head 10 cm above the
neck base, shoulders 25 cm from the spine against Bandai's 10 cm). Runs must have been trained on
the benchmark as converted since the canonical rest pose (benchmark cache version 2): older runs
saw rotations in Bandai's bone frames and cannot read this input.

HDM05 (MPI Informatik / Universitaet Bonn) is CC BY-SA 3.0: "The data used in this project was
obtained from HDM05." Nothing converted from it is written into the repository; ``--out``
receives metrics only.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ACTIONS = {  # HDM05 motion class -> short label
    "depositFloorR": "deposit on the floor",
    "elbowToKnee1RepsLelbowStart": "elbow to knee",
    "grabHighR": "grab high",
    "hopBothLegs1hops": "hop on both legs",
    "jogLeftCircle4StepsRstart": "jog in a circle",
    "kickLFront1Reps": "kick forward",
    "lieDownFloor": "lie down",
    "rotateArmsBothBackward1Reps": "rotate arms",
    "sneak2StepsLStart": "sneak",
    "squat1Reps": "squat",
    "throwBasketball": "throw",
}
_NAME = re.compile(r"^HDM_(?P<actor>[a-z]+)_(?P<action>.+)_(?P<take>\d{3})_(?P<fps>\d+)$")


class _RunSpecParser(argparse.ArgumentParser):
    def error(self, message):  # raise instead of exiting, so the caller can name the --run value
        raise ValueError(message)


def parse_run(spec: str) -> dict:
    """One ``--run`` value, ``"RUN [--ema] [--step N] [--set key=value ...] [--label NAME]"``
    (shell quoting), as ``{"path", "ema", "step", "overrides", "label"}``."""
    p = _RunSpecParser(prog="--run", add_help=False)
    p.add_argument("path")
    p.add_argument("--ema", action="store_true")
    p.add_argument("--step", type=int, default=None)
    p.add_argument("--set", action="append", default=[], dest="overrides")
    p.add_argument("--label", nargs="+", default=None)  # the rest of the words: no inner quotes needed
    try:
        a = p.parse_args(shlex.split(spec))
    except ValueError as e:
        raise SystemExit(f"--run {spec!r}: {e} (expected: RUN [--ema] [--step N] [--set key=value ...] "
                         f"[--label NAME])") from None
    for o in a.overrides:
        if "=" not in o:
            raise SystemExit(f"--run {spec!r}: --set {o!r} is not key=value")
    spec = vars(a)
    spec["label"] = " ".join(a.label) if a.label else None
    return spec


def run_label(spec: dict, task: str, workdir, step: int) -> str:
    """The table label of a run: ``--label``, else task, folder, step and the options given."""
    if spec["label"]:
        return spec["label"]
    extra = (["EMA"] if spec["ema"] else []) + list(spec["overrides"])
    return f"{task} ({Path(workdir).name}, step {step}{''.join(', ' + e for e in extra)})"


def action_of(name: str) -> str:
    m = _NAME.match(name)
    return m.group("action") if m else "other"


def unpack(archive: Path, into: Path) -> tuple[Path, list[Path]]:
    """The ASF and AMC files of the archive (regular files only, flat names)."""
    asf, amcs = None, []
    with tarfile.open(archive, "r:xz") as tf:
        for m in tf:
            base = os.path.basename(m.name)
            if not m.isfile() or not base.lower().endswith((".asf", ".amc")):
                continue
            dest = into / base
            dest.write_bytes(tf.extractfile(m).read())
            if base.lower().endswith(".asf"):
                asf = dest
            else:
                amcs.append(dest)
    if asf is None or not amcs:
        raise SystemExit(f"{archive}: expected an .asf skeleton and .amc clips")
    return asf, sorted(amcs)


def hdm05_arrays(archive: Path, fps: float) -> tuple[dict, dict]:
    """``({clip: arrays at fps}, info)`` of every HDM05 clip."""
    from mmar.data.asf import read_asf, read_asf_amc
    from mmar.data.bvh import rest_alignment
    from mmar.data.clip import JOINT_MAPS, clips_to_arrays, resample_clips

    with tempfile.TemporaryDirectory(prefix="hdm05_") as d:
        asf, amcs = unpack(archive, Path(d))
        sk = read_asf(asf)
        clips = [read_asf_amc(asf, p, skeleton=sk) for p in amcs]
    first = clips[0]
    rest = rest_alignment(first.skeleton.names, first.skeleton.parents, first.skeleton.offsets,
                          JOINT_MAPS["cmu_asf"]).rest
    smpl = resample_clips([c.retarget("cmu_asf", canonical=True) for c in clips], fps)
    arrays = dict(zip([c.name for c in smpl], clips_to_arrays(smpl)))
    info = {"clips": len(arrays), "frames_at_fps": int(sum(a["joints"].shape[0] for a in arrays.values())),
            "source_fps": float(first.fps), "rest_pose": rest,
            "actions": {a: sum(action_of(n) == a for n in arrays) for a in sorted({action_of(n) for n in arrays})}}
    return arrays, info


def groups_for(names) -> dict:
    g = {"all": lambda n: True}
    for act in sorted({action_of(n) for n in names}):
        g[act] = (lambda a: (lambda n: action_of(n) == a))(act)
    return g


def per_action_table(rows: dict) -> str:
    models = list(rows)
    cols = []
    for m in models:
        cols += [f"{m} MPJPE [cm]", f"{m} MPJRE [deg]", f"{m} Hand PE [cm]", f"{m} Jitter [m/s^3]"]
    head = "| action | clips | " + " | ".join(cols) + " | GT Jitter [m/s^3] |"
    lines = [head, "|---|---|" + "---|" * (len(cols) + 1)]
    groups = rows[models[0]]
    for g in groups:
        label = "**all HDM05**" if g == "all" else f"{ACTIONS.get(g, g)} (`{g}`)"
        cells = []
        for m in models:
            r = rows[m][g]
            cells += [f"{r['mpjpe_cm']:.2f}", f"{r['mpjre_deg']:.2f}", f"{r['hand_pe_cm']:.2f}",
                      f"{r['jitter_m_s3']:.0f}"]
        lines.append(f"| {label} | {groups[g]['clips']} | " + " | ".join(cells)
                     + f" | {groups[g]['gt_jitter_m_s3']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hdm05", default=None, help="HDM05-bk.tar.xz (default ../shared/data/hdm05-sample beside the "
                    "repository)")
    ap.add_argument("--data", default=None, help="Bandai data directory (default ../shared/data/bandai-namco)")
    ap.add_argument("--run", action="append", default=[], type=parse_run,
                    help='a Bandai-trained sparse-to-full-body run (repeatable); "RUN [--ema] [--step N] '
                         '[--set key=value ...] [--label NAME]" as one argument evaluates it as mmar eval would')
    ap.add_argument("--fps", type=float, default=60.0, help="benchmark frame rate (the runs' data.fps)")
    ap.add_argument("--stride", type=int, default=4, help="nearest-neighbour floor: every n-th training frame")
    ap.add_argument("--out", default="runs/hdm05_ood", help="directory for hdm05_ood.json / .md (metrics only)")
    args = ap.parse_args()

    from mmar.data.benchmark import load_sparse_benchmark
    from mmar.eval.report import BANDAI_GROUPS, grouped_metrics, markdown_table
    from mmar.models.nearest import NearestNeighbor

    t0 = time.time()
    archive = Path(args.hdm05) if args.hdm05 else (Path(__file__).resolve().parents[2] / "shared" / "data"
                                                   / "hdm05-sample" / "HDM05-bk.tar.xz")
    print(f"[1/4] HDM05 sample: {archive} (CC BY-SA 3.0; the data used here was obtained from HDM05)")
    hdm, info = hdm05_arrays(archive, args.fps)
    print(f"      {info['clips']} clips, {info['frames_at_fps']} frames at {args.fps:g} fps "
          f"(from {info['source_fps']:g}); rest pose: {info['rest_pose']}")
    print("[2/4] Bandai benchmark (CC BY-NC 4.0, Bandai Namco Research Inc.)")
    bench = load_sparse_benchmark(args.data, fps=args.fps)
    test = bench["test"]
    print(f"[3/4] predicting: nearest-neighbour floor (stride {args.stride}) and {len(args.run)} run(s)")
    nn = NearestNeighbor(stride=args.stride).fit([a["sparse"] for a in bench["train"].values()],
                                                 [a["rot6d"] for a in bench["train"].values()])
    models = {"nearest neighbour (floor)": nn.predict_clips}
    runs_info = {}
    for spec in args.run:
        from mmar.run import load

        path = spec["path"]
        run = load(path, overrides=spec["overrides"], step=spec["step"], ema=spec["ema"], benchmark=bench)
        if abs(float(run.config.data.fps) - args.fps) > 1e-6:
            raise SystemExit(f"{path}: trained at {run.config.data.fps:g} fps; pass --fps {run.config.data.fps:g}")
        label = run_label(spec, run.config.task, run.workdir, run.step)
        if label in models:
            raise SystemExit(f"--run {path}: a second run labelled {label!r}; give each a --label")
        runs_info[label] = {"workdir": str(run.workdir), "step": run.step, "task": run.config.task,
                            "ema": spec["ema"], "overrides": spec["overrides"]}
        models[label] = (lambda r: (lambda clips: r.task.predict_clips(r.variables, clips, progress=True)))(run)
    hdm_groups = groups_for(hdm)
    rows_hdm, rows_bandai = {}, {}
    for label, predict in models.items():
        rows_bandai[label] = grouped_metrics(predict(test), test, args.fps, BANDAI_GROUPS)
        rows_hdm[label] = grouped_metrics(predict(hdm), hdm, args.fps, hdm_groups)
    print("[4/4] results")
    both = {}
    for label in models:
        both[f"{label}, Bandai test"] = rows_bandai[label]
        both[f"{label}, HDM05"] = {"all": rows_hdm[label]["all"]}
    summary = markdown_table(both)
    growth = {label: rows_hdm[label]["all"]["mpjpe_cm"] / rows_bandai[label]["all"]["mpjpe_cm"] for label in models}
    actions = per_action_table(rows_hdm)
    text = (f"HDM05 (performer bk, {info['clips']} clips, {args.fps:g} fps) beside the Bandai test split\n\n"
            f"{summary}\n\nMPJPE on HDM05 / on the Bandai test split: "
            + ", ".join(f"{k}: x{v:.2f}" for k, v in growth.items()) + f"\n\nPer action (HDM05)\n\n{actions}\n")
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"hdm05": info, "fps": args.fps, "nn_stride": args.stride, "runs": runs_info,
              "bandai_test": rows_bandai, "hdm05_metrics": rows_hdm, "mpjpe_growth": growth,
              "seconds": round(time.time() - t0, 1)}
    (out / "hdm05_ood.json").write_text(json.dumps(result, indent=1))
    (out / "hdm05_ood.md").write_text(text)
    print(f"done in {time.time() - t0:.0f} s: {out / 'hdm05_ood.json'}, {out / 'hdm05_ood.md'}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()

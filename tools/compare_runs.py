"""Paired comparison of sparse-to-full-body evaluations: is one model really ahead of another?

Each input is the JSON of ``mmar eval ... --per-clip --out FILE`` (every clip's metrics). The
first is the baseline; every other is compared with it on the clips they share, per group of
the Bandai split (the whole split and its dataset-1 part), with a paired percentile bootstrap
over clips (:func:`mmar.eval.report.paired_difference`): the mean difference (other minus
baseline; negative means the other is better for errors), its 95% interval, and the share of
clips where the other is lower. ``LABEL=floor`` measures the nearest-neighbour floor (every 4th
training frame, as in docs/results.md) on ``--split`` instead of reading a file.

    .venv/bin/python tools/compare_runs.py "AGRoL-MLP=/tmp/a.json" "MotionMAR=/tmp/m.json" floor=floor \\
        [--metric mpjpe_cm --metric jitter_m_s3] [--resamples 10000] [--out table.md]

The interval says how much the difference depends on which clips were measured. It does not
include the spread between training seeds, and clips of one performer or one repeated gesture
are not independent: read a narrow interval as a lower bound on the uncertainty.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def read_per_clip(path: str) -> dict:
    """``per_clip`` of an ``mmar eval --per-clip`` JSON; a clear error otherwise."""
    from mmar.errors import DataFormatError

    p = Path(path)
    if not p.is_file():
        raise DataFormatError(f"{path}: no such file")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: not JSON ({e})") from None
    per_clip = d.get("per_clip") if isinstance(d, dict) else None
    if not isinstance(per_clip, dict) or not per_clip:
        raise DataFormatError(f"{path}: no per-clip metrics; evaluate with mmar eval ... --per-clip --out {path}")
    return per_clip


def floor_per_clip(bench, split: str = "test", stride: int = 4) -> dict:
    """The nearest-neighbour floor's metrics per clip of ``bench[split]``, fitted on
    ``bench["train"]`` (a :func:`mmar.data.benchmark.load_sparse_benchmark`)."""
    from mmar.eval.report import clip_metrics_of
    from mmar.models.nearest import NearestNeighbor

    train = bench["train"].values()
    nn = NearestNeighbor(stride=stride).fit([a["sparse"] for a in train], [a["rot6d"] for a in train])
    clips = bench[split]
    return clip_metrics_of(nn.predict_clips(clips), clips)


def compare(evals: dict, metrics: list[str], resamples: int = 10000, seed: int = 0,
            groups=None) -> list[dict]:
    """Rows ``{other, group, metric, **paired_difference}`` of every evaluation against the first."""
    from mmar.eval.report import BANDAI_GROUPS, paired_difference

    groups = groups or BANDAI_GROUPS
    (base_label, base), *others = evals.items()
    rows = []
    for label, other in others:
        for group, keep in groups.items():
            names = [n for n in base if keep(n)]
            if not names:
                continue
            for metric in metrics:
                d = paired_difference({n: base[n] for n in names}, {n: other[n] for n in names if n in other},
                                      metric, resamples=resamples, seed=seed)
                rows.append({"base": base_label, "other": label, "group": group, "metric": metric, **d})
    return rows


def _fmt(x: float, big: bool, sign: str = "") -> str:
    """Two decimals; none for metrics of 100 and more (jitter in m/s^3)."""
    return f"{x:{sign},.0f}" if big else f"{x:{sign}.2f}"


def markdown(rows: list[dict]) -> str:
    lines = ["| comparison | group | metric | clips | baseline | other | other - baseline | 95% interval "
             "| clips where other is lower |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        big = max(abs(r["base_mean"]), abs(r["other_mean"])) >= 100
        lines.append(f"| {r['other']} vs {r['base']} | {r['group']} | {r['metric']} | {r['clips']} | "
                     f"{_fmt(r['base_mean'], big)} | {_fmt(r['other_mean'], big)} | {_fmt(r['diff'], big, '+')} | "
                     f"[{_fmt(r['ci_low'], big, '+')}, {_fmt(r['ci_high'], big, '+')}] | {100 * r['other_lower']:.0f}% |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("evals", nargs="+", metavar="LABEL=FILE",
                    help="mmar eval --per-clip outputs (the first is the baseline); FILE 'floor' measures the "
                         "nearest-neighbour floor")
    ap.add_argument("--metric", action="append", default=None, help="metric key (repeatable; default mpjpe_cm)")
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None, help="Bandai data directory for the floor (default ../shared/data)")
    ap.add_argument("--split", default="test", help="split of the floor (the evaluations' split)")
    ap.add_argument("--stride", type=int, default=4, help="floor: every n-th training frame")
    ap.add_argument("--fps", type=float, default=60.0, help="floor: the benchmark's frame rate (the runs' data.fps)")
    ap.add_argument("--out", default=None, help="also write the table here (Markdown) and FILE.json")
    args = ap.parse_args(argv)

    from mmar.errors import MmarError

    if len(args.evals) < 2:
        ap.error("give a baseline and at least one evaluation to compare with it")
    evals, bench = {}, None
    try:
        for spec in args.evals:
            label, sep, path = spec.rpartition("=")
            if not sep or not label:
                raise MmarError(f"{spec!r}: expected LABEL=FILE")
            if label in evals:
                raise MmarError(f"label {label!r} given twice")
            if path == "floor":
                from mmar.data.benchmark import load_sparse_benchmark

                bench = bench or load_sparse_benchmark(args.data, fps=args.fps)
                evals[label] = floor_per_clip(bench, args.split, args.stride)
            else:
                evals[label] = read_per_clip(path)
        rows = compare(evals, args.metric or ["mpjpe_cm"], args.resamples, args.seed)
    except MmarError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = markdown(rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

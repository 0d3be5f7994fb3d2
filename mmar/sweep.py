"""Sweeps: one config trained over a grid of overrides, optionally at matched compute, collected
into one table with scaling-law fits (:mod:`mmar.eval.scaling`) and a plot.

``mmar sweep CONFIG --over model.depth=1,2,4 [--over model.width=128,256] --root DIR`` (the CLI
is a thin layer over :func:`plan_sweep`, :func:`run_sweep`, :func:`write_commands` and
:func:`collect_sweep`):

Grid
    Each ``--over KEY=V1,V2,...`` is an axis (values split on ``,``, or on ``;`` when the text
    has one, for values that hold commas); several axes make the cartesian grid, the first axis
    varying slowest. A run is named from the last part of each key and its value
    (``model.depth=4`` -> ``depth4``, two axes -> ``depth4_width128``), trains in
    ``ROOT/<name>`` and its config is ``load_config(CONFIG, sets + [KEY=V, ...] + derived)``.

Matched compute (``budget_flops``, or ``budget_of=(RUN, STEPS)``: the FLOPs of STEPS steps of
the grid's run RUN)
    The step cost of each grid point (:func:`mmar.train.compute.estimate_step_cost`: matmul
    FLOPs of one optimizer step, compiled without training; cached in ``ROOT/sweep_plan.json``
    by config) gives ``train.steps = round(budget / FLOPs per step)`` (at least 1). The recipe is
    stretched to those steps as the config's own proportions say: a cosine schedule with
    explicit ``optim.decay_steps`` gets ``decay_steps = steps x decay_steps / config steps`` (the
    same as ``steps`` when the config decays over its whole run); a ``step`` schedule's
    boundaries scale by ``steps / config steps``; the warm-up is scaled by the same ratio when
    the run is shorter than the config's (never lengthened). Evaluation (and checkpointing)
    every ``ceil(steps / evals)`` steps, so every run gives ``evals`` (compute, loss) points,
    the last at the budget. The table says what was done.

Running (:func:`run_sweep`)
    In sequence, in this process. A run whose latest checkpoint reached its steps and whose
    final evaluation is in ``evals.jsonl`` is collected, not retrained; any other is trained with
    :func:`mmar.train.train`, which resumes from its checkpoints. So rerunning the same command
    continues an interrupted sweep. A run that fails (divergence, busy work directory) is
    reported and the others go on; a config error stops the sweep. After each run the outputs
    are rewritten, so the table grows while the sweep runs. Progress lines go to stderr.

Cluster (:func:`write_commands`)
    One ``mmar train CONFIG --workdir ROOT/<name> --set ...`` line per run (shell-quoted), the
    same overrides the in-process sweep uses; then ``--collect`` with the same grid gathers.

Outputs (:func:`collect_sweep`, :func:`write_outputs`)
    ``ROOT/sweep.json`` (every run: grid values, status, params, FLOPs per step, steps, training
    FLOPs = FLOPs per step x steps, final and best metric, every evaluation as (step, FLOPs,
    value); the fits), ``ROOT/sweep.md`` (a markdown table and the fits) and ``ROOT/sweep.png``
    (:func:`mmar.eval.scaling.plot_scaling`). Params and FLOPs per step come from each run's
    ``compute.json`` (the step it trained), else the plan's estimate. The fits: the final metric
    of finished runs against parameters, and the compute-efficient frontier of every evaluation
    point of every run against training FLOPs (:mod:`mmar.eval.scaling`, which documents the
    choice and the bootstrap); only for a metric to minimise.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import re
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from mmar.errors import ConfigError, MmarError, OutputError, shorten

__all__ = ["SweepSpec", "SweepRun", "parse_over", "parse_budget_of", "grid_points", "run_name", "plan_sweep",
           "derive_overrides", "run_state", "run_sweep", "write_commands", "collect_sweep", "fit_sweep",
           "write_outputs", "render_markdown", "log_progress", "PLAN_FILENAME", "SWEEP_JSON", "SWEEP_MD", "SWEEP_PNG", "RUN_TIME_FILENAME"]

PLAN_FILENAME = "sweep_plan.json"
SWEEP_JSON, SWEEP_MD, SWEEP_PNG = "sweep.json", "sweep.md", "sweep.png"
RUN_TIME_FILENAME = "sweep_time.json"  # in a run's workdir: seconds the sweep spent training it


# --------------------------------------------------------------------------- grid


def parse_over(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["model.depth=1,2,4", ...]`` -> ``[("model.depth", ["1", "2", "4"]), ...]``."""
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--over {item!r}: expected KEY=V1,V2,... (e.g. model.depth=1,2,4)")
        key, text = (s.strip() for s in item.split("=", 1))
        if not key or not all(key.split(".")):
            raise ConfigError(f"--over {item!r}: malformed key {key!r}")
        sep = ";" if ";" in text else ","
        values = [v.strip() for v in text.split(sep)]
        if not text.strip() or any(not v for v in values):
            raise ConfigError(f"--over {item!r}: empty value (values are separated by {sep!r})")
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            raise ConfigError(f"--over {key}: value(s) {dup} given twice")
        if any(k == key for k, _ in axes):
            raise ConfigError(f"--over {key}: the key is given twice (put all its values in one --over)")
        axes.append((key, values))
    if not axes:
        raise ConfigError("a sweep needs at least one --over KEY=V1,V2,...")
    return axes


def grid_points(axes: Sequence[tuple[str, Sequence[str]]]) -> list[dict[str, str]]:
    """The cartesian grid of the axes (the first varies slowest), each point ``{key: value}``."""
    keys = [k for k, _ in axes]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


def run_name(point: dict[str, str]) -> str:
    """``{"model.depth": "4", "model.width": "128"}`` -> ``"depth4_width128"`` (characters outside
    ``[A-Za-z0-9.+-]`` become ``-``)."""
    parts = [re.sub(r"[^A-Za-z0-9.+-]+", "-", f"{k.rsplit('.', 1)[-1]}{v}").strip("-") for k, v in point.items()]
    return "_".join(parts) or "run"


def parse_budget_of(text: str) -> tuple[str, float]:
    """``"depth4=1000"`` -> ``("depth4", 1000.0)`` (the budget is 1000 steps of run depth4)."""
    if "=" not in text:
        raise ConfigError(f"--budget-of {text!r}: expected RUN=STEPS (e.g. depth4=1000)")
    name, raw = (s.strip() for s in text.split("=", 1))
    try:
        steps = float(raw)
    except ValueError:
        raise ConfigError(f"--budget-of {text!r}: STEPS must be a number") from None
    if not name or not (steps > 0 and math.isfinite(steps)):
        raise ConfigError(f"--budget-of {text!r}: expected RUN=STEPS with STEPS > 0")
    return name, steps


# --------------------------------------------------------------------------- plan


@dataclasses.dataclass
class SweepSpec:
    """What a sweep is: the config, the grid, the fixed overrides, where, what to compare."""

    config: str
    axes: list[tuple[str, list[str]]]
    root: Path
    sets: list[str] = dataclasses.field(default_factory=list)
    metric: str | None = None  # None: the config's train.best_metric
    mode: str = "min"
    budget_flops: float | None = None
    budget_of: tuple[str, float] | None = None
    evals: int | None = None  # evaluations per run (None: 5 with a budget, else the config's)
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        if self.mode not in ("min", "max"):
            raise ConfigError(f"--mode must be min or max, got {self.mode!r}")
        if self.budget_flops is not None and self.budget_of is not None:
            raise ConfigError("give --budget-flops or --budget-of, not both")
        if self.budget_flops is not None and not (self.budget_flops > 0 and math.isfinite(self.budget_flops)):
            raise ConfigError(f"--budget-flops must be a positive number, got {self.budget_flops}")
        if self.evals is not None and self.evals < 1:
            raise ConfigError(f"--evals must be >= 1, got {self.evals}")

    @property
    def matched(self) -> bool:
        return self.budget_flops is not None or self.budget_of is not None


@dataclasses.dataclass
class SweepRun:
    """One grid point: its name, values, work directory, overrides (the sweep's ``sets``, the
    grid values, then ``derived``: what matched compute set) and estimated step cost."""

    name: str
    point: dict[str, str]
    workdir: Path
    overrides: list[str]
    derived: dict[str, Any]
    cost: dict[str, Any] | None = None  # estimated StepCost (dict), with a budget
    steps: int | None = None  # train.steps of the run's config
    base: dict[str, Any] | None = None  # config_to_dict of the config before derived overrides


def _fmt_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def derive_overrides(cfg, steps: int, evals: int | None) -> dict[str, Any]:
    """The overrides that run ``cfg``'s recipe for ``steps`` steps (module doc, matched compute)."""
    o, t = cfg.optim, cfg.train
    old = max(int(t.steps), 1)
    ratio = steps / old
    out: dict[str, Any] = {"train.steps": int(steps)}
    if o.schedule == "cosine" and o.decay_steps is not None:
        out["optim.decay_steps"] = max(1, int(round(o.decay_steps * ratio)))
    if o.schedule == "step" and o.boundaries:
        out["optim.boundaries"] = tuple(max(1, int(round(b * ratio))) for b in o.boundaries)
    if o.warmup_steps and steps < old:
        out["optim.warmup_steps"] = max(1, int(round(o.warmup_steps * ratio)))
    if evals:
        every = max(1, math.ceil(steps / evals))
        out["train.eval_every"] = every
        out["train.ckpt_every"] = every
    return out


def _plan_cache(root: Path) -> dict:
    try:
        d = json.loads((root / PLAN_FILENAME).read_text())
        return d if isinstance(d, dict) and isinstance(d.get("runs"), dict) else {"runs": {}}
    except (OSError, ValueError):
        return {"runs": {}}


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=1, allow_nan=False, default=str) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e


def plan_sweep(spec: SweepSpec, *, estimate: Callable | None = None, log: Callable[[str], None] | None = None,
               ) -> list[SweepRun]:
    """The runs of the sweep with their overrides. With a budget, each grid point's step cost
    is estimated (``estimate(cfg) -> StepCost``; default :func:`estimate_step_cost`, cached in
    ``ROOT/sweep_plan.json`` by config) and its steps derived."""
    from mmar.train.config import config_to_dict, load_config

    log = log or (lambda s: None)
    points = grid_points(spec.axes)
    runs: list[SweepRun] = []
    names: dict[str, dict] = {}
    for p in points:
        name = run_name(p)
        if name in names:
            raise ConfigError(f"grid points {names[name]} and {p} both get the run name {name!r}")
        names[name] = p
        over = list(spec.sets) + [f"{k}={v}" for k, v in p.items()]
        cfg = load_config(spec.config, over)
        runs.append(SweepRun(name, p, spec.root / name, over, {}, steps=int(cfg.train.steps),
                             base=json.loads(json.dumps(config_to_dict(cfg), default=str))))
    if spec.budget_of is not None and spec.budget_of[0] not in names:
        raise ConfigError(f"--budget-of {spec.budget_of[0]}: not a run of this grid (runs: {', '.join(names)})")
    if not spec.matched:
        if spec.evals:
            for r in runs:
                r.derived = {f"train.{k}": max(1, math.ceil(r.steps / spec.evals)) for k in ("eval_every", "ckpt_every")}
                r.overrides += [f"{k}={_fmt_value(v)}" for k, v in r.derived.items()]
        return runs
    if estimate is None:
        from mmar.train.compute import estimate_step_cost as estimate
    cache = _plan_cache(spec.root)
    for i, r in enumerate(runs):
        hit = cache["runs"].get(r.name)
        if hit and hit.get("config") == r.base and isinstance(hit.get("cost"), dict):
            r.cost = hit["cost"]
            continue
        log(f"[plan {i + 1}/{len(runs)}] {r.name}: compiling one step to count its FLOPs")
        cfg = load_config(spec.config, r.overrides)
        cost = estimate(cfg)
        r.cost = cost.to_dict() if hasattr(cost, "to_dict") else dict(cost)
        if not (r.cost.get("flops") or 0) > 0:
            raise MmarError(f"{r.name}: the step has no counted FLOPs ({r.cost.get('flops')}); cannot match compute")
        cache["runs"][r.name] = {"config": r.base, "cost": r.cost}
        _write_json(spec.root / PLAN_FILENAME, cache)
    budget = _budget(spec, runs)
    evals = spec.evals or 5
    for r in runs:
        steps = max(1, int(round(budget / r.cost["flops"])))
        cfg = load_config(spec.config, r.overrides)
        r.derived = derive_overrides(cfg, steps, evals)
        r.overrides = r.overrides + [f"{k}={_fmt_value(v)}" for k, v in r.derived.items()]
        r.steps = steps
    return runs


def _budget(spec: SweepSpec, runs: Sequence[SweepRun]) -> float:
    if spec.budget_flops is not None:
        return float(spec.budget_flops)
    name, steps = spec.budget_of
    ref = next(r for r in runs if r.name == name)
    return float(ref.cost["flops"]) * steps


# --------------------------------------------------------------------------- running


def _latest_step(workdir: Path) -> int | None:
    from mmar.train.checkpoint import LATEST_DIR, step_dirs

    dirs = step_dirs(workdir / LATEST_DIR)
    return int(dirs[-1].name) if dirs else None


def _read_evals(workdir: Path) -> dict[int, dict[str, Any]]:
    """``evals.jsonl`` as ``{step: row}`` (a step evaluated twice: the last row; bad lines skipped)."""
    from mmar.train.loop import EVALS_FILENAME

    out: dict[int, dict[str, Any]] = {}
    try:
        lines = (workdir / EVALS_FILENAME).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return out
    for line in lines:
        try:
            row = json.loads(line)
            out[int(row["step"])] = row
        except (ValueError, KeyError, TypeError):
            continue
    return out


def run_state(run: SweepRun) -> tuple[str, int | None]:
    """``("done" | "partial" | "new", latest checkpoint step)``: done when the latest checkpoint
    reached the run's steps and the evaluation of that step is recorded."""
    latest = _latest_step(run.workdir)
    if latest is None:
        return "new", None
    if run.steps is not None and latest >= run.steps and run.steps in _read_evals(run.workdir):
        return "done", latest
    return "partial", latest


def _add_time(workdir: Path, seconds: float) -> None:
    path = workdir / RUN_TIME_FILENAME
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        d = {"seconds": 0.0, "sessions": 0}
    d = {"seconds": float(d.get("seconds", 0.0)) + seconds, "sessions": int(d.get("sessions", 0)) + 1}
    _write_json(path, d)


def log_progress(msg: str) -> None:
    print(f"[sweep {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_sweep(spec: SweepSpec, runs: Sequence[SweepRun] | None = None, *, train_fn: Callable | None = None,
              log: Callable[[str], None] = log_progress, plot: bool = True) -> dict[str, Any]:
    """Train the runs in sequence (finished ones are collected, not retrained), rewriting the
    outputs after each; returns :func:`collect_sweep`'s summary with ``failed`` (name -> error)."""
    if runs is None:
        runs = plan_sweep(spec, log=log)
    if train_fn is None:
        from mmar.tasks import make_task
        from mmar.train import train

        def train_fn(cfg, workdir):
            return train(make_task(cfg), cfg, workdir)

    from mmar.train.config import load_config

    failed: dict[str, str] = {}
    t_start, flops_done, secs_done = time.time(), 0.0, 0.0
    remaining = {r.name: _train_flops(r) for r in runs}
    for i, r in enumerate(runs):
        state, latest = run_state(r)
        head = f"[{i + 1}/{len(runs)}] {r.name}"
        if state == "done":
            log(f"{head}: finished earlier (step {latest}), collected")
            remaining.pop(r.name, None)
            continue
        what = f"{r.steps} steps" + (f", {_train_flops(r):.3g} FLOPs" if r.cost else "")
        eta = ""
        if flops_done > 0 and all(v for v in remaining.values()):
            eta = f"; sweep left about {_duration(secs_done / flops_done * sum(remaining.values()))}"
        log(f"{head}: {'resuming from step ' + str(latest) if latest is not None else 'training'} ({what}) in "
            f"{r.workdir}{eta}")
        cfg = load_config(spec.config, r.overrides)
        t0 = time.time()
        try:
            train_fn(cfg, r.workdir)
        except ConfigError:
            raise
        except MmarError as e:
            failed[r.name] = shorten(str(e), 300)
            log(f"{head}: FAILED: {failed[r.name]}")
            continue
        finally:
            if r.workdir.exists():
                _add_time(r.workdir, time.time() - t0)
        dt = time.time() - t0
        done_frac = 1.0 - (latest or 0) / max(r.steps or 1, 1)
        flops_done += (remaining.pop(r.name, 0.0) or 0.0) * done_frac
        secs_done += dt
        summary = collect_sweep(spec, runs)
        write_outputs(spec, summary, plot=plot)
        mine = next(x for x in summary["runs"] if x["name"] == r.name)
        log(f"{head}: done in {_duration(dt)}, final {summary['metric']} = {_num(mine.get('final'))} "
            f"(table: {spec.root / SWEEP_MD})")
    summary = collect_sweep(spec, runs)
    for name, err in failed.items():
        for x in summary["runs"]:
            if x["name"] == name:
                x["status"], x["error"] = "failed", err
    summary["failed"] = failed
    write_outputs(spec, summary, plot=plot)
    log(f"sweep finished in {_duration(time.time() - t_start)}: {spec.root / SWEEP_MD}")
    return summary


def _train_flops(r: SweepRun) -> float | None:
    return None if not r.cost or r.steps is None else float(r.cost["flops"]) * r.steps


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _num(v: Any, fmt: str = ".4g") -> str:
    return "-" if v is None else format(v, fmt)


def write_commands(spec: SweepSpec, runs: Sequence[SweepRun], path: str | os.PathLike) -> Path:
    """One ``mmar train`` line per run (its work directory and every override), for a scheduler."""
    lines = []
    for r in runs:
        args = ["mmar", "train", spec.config, "--workdir", str(r.workdir)]
        for o in r.overrides:
            args += ["--set", o]
        lines.append(" ".join(shlex.quote(a) for a in args))
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e
    return path


# --------------------------------------------------------------------------- collecting


def _run_record(r: SweepRun, metric: str, mode: str) -> dict[str, Any]:
    from mmar.train.compute import read_step_cost
    from mmar.train.config import read_saved_config

    rec: dict[str, Any] = {"name": r.name, "point": dict(r.point), "workdir": str(r.workdir)}
    steps = r.steps
    try:
        steps = int(read_saved_config(r.workdir)["config"]["train"]["steps"])
    except (MmarError, KeyError, TypeError, ValueError):
        pass
    cost = read_step_cost(r.workdir)
    cost_d = cost.to_dict() if cost is not None else (r.cost or {})
    state, latest = run_state(dataclasses.replace(r, steps=steps))
    evals = _read_evals(r.workdir)
    fps = cost_d.get("flops")
    points = [{"step": s, "flops": (s * fps if fps else None), "value": _finite(row.get(metric))}
              for s, row in sorted(evals.items())]
    valued = [p for p in points if p["value"] is not None]
    best = (min if mode == "min" else max)(valued, key=lambda p: p["value"]) if valued else None
    final = evals.get(steps, {}).get(metric) if steps is not None else None
    t = {}
    try:
        t = json.loads((r.workdir / RUN_TIME_FILENAME).read_text())
    except (OSError, ValueError):
        pass
    rec.update(
        status=state, steps=steps, steps_done=latest, params=cost_d.get("params"), flops_per_step=fps,
        training_flops=(fps * steps if fps and steps else None),
        cost_source="compute.json" if cost is not None else ("estimate" if r.cost else None),
        final=_finite(final) if state == "done" else None,
        last=(valued[-1]["value"] if valued else None), last_step=(valued[-1]["step"] if valued else None),
        best=(best["value"] if best else None), best_step=(best["step"] if best else None),
        points=points, evals=[evals[s] for s in sorted(evals)], seconds=t.get("seconds"), derived=dict(r.derived))
    if evals and not valued:
        have = sorted({k for row in evals.values() for k in row if k != "step"})
        rec["note"] = f"no {metric!r} in evals.jsonl (have {have})"
    return rec


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fit_sweep(records: Sequence[dict[str, Any]], metric: str, mode: str, *, n_boot: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    """The two fits of :mod:`mmar.eval.scaling` on collected runs: ``{"params", "compute",
    "frontier"}`` (fits as dicts, or a ``{"ok": False, "message"}`` when not fitted)."""
    from mmar.eval.scaling import compute_frontier, fit_with_bootstrap

    if mode != "min":
        msg = f"the fits are for a loss (a metric to minimise); {metric} is maximised"
        return {"params": {"ok": False, "message": msg}, "compute": {"ok": False, "message": msg}, "frontier": []}
    done = [r for r in records if r.get("final") is not None and r.get("params")]
    fp = fit_with_bootstrap([r["params"] for r in done], [r["final"] for r in done], x_name="parameters",
                            n_boot=n_boot, seed=seed)
    pts = [(p["flops"], p["value"]) for r in records for p in r.get("points", [])
           if p.get("flops") and p.get("value") is not None]
    keep = compute_frontier(pts)
    frontier = [pts[i] for i in keep]
    fc = fit_with_bootstrap([c for c, _ in frontier], [v for _, v in frontier], x_name="training FLOPs",
                            n_boot=n_boot, seed=seed)
    fc.notes.append(f"fitted on the frontier: {len(frontier)} of {len(pts)} evaluation points (the lowest loss "
                    "at each compute; intermediate points come from runs whose schedule ends later)")
    return {"params": fp.to_dict(), "compute": fc.to_dict(), "frontier": [list(p) for p in frontier]}


def collect_sweep(spec: SweepSpec, runs: Sequence[SweepRun] | None = None, *, fit: bool = True) -> dict[str, Any]:
    """Gather every run of the grid (``runs``: the plan; default :func:`plan_sweep`) into the
    summary that :func:`write_outputs` writes: runs, budget, matched-compute note, fits."""
    from mmar.train.config import load_config

    if runs is None:
        runs = plan_sweep(spec)
    metric = spec.metric
    if metric is None:
        metric = load_config(spec.config, runs[0].overrides).train.best_metric
        if not metric:
            raise ConfigError("no --metric given and the config has no train.best_metric: pass --metric NAME")
    records = [_run_record(r, metric, spec.mode) for r in runs]
    summary: dict[str, Any] = {
        "config": spec.config, "over": [[k, list(v)] for k, v in spec.axes], "sets": list(spec.sets),
        "root": str(spec.root), "metric": metric, "mode": spec.mode, "evals_per_run": spec.evals,
        "budget_flops": (_budget(spec, runs) if spec.matched and all(r.cost for r in runs) else None),
        "budget_of": list(spec.budget_of) if spec.budget_of else None, "matched": _matched_note(spec, runs),
        "runs": records,
    }
    if fit:
        summary["fits"] = fit_sweep(records, metric, spec.mode, n_boot=spec.n_boot, seed=spec.seed)
    return summary


def _matched_note(spec: SweepSpec, runs: Sequence[SweepRun]) -> str:
    if not spec.matched:
        return "not matched: every run trains the config's own steps" + (
            f"; evaluation every ceil(steps / {spec.evals}) steps" if spec.evals else "")
    budget = _budget(spec, runs) if all(r.cost for r in runs) else None
    of = f" (= {spec.budget_of[1]:g} steps of {spec.budget_of[0]})" if spec.budget_of else ""
    keys = sorted({k for r in runs for k in r.derived})
    return (f"matched compute: a budget of {_num(budget, '.4g')} training FLOPs per run{of}; train.steps = "
            f"round(budget / matmul FLOPs of one step), each step's FLOPs estimated by compiling it; "
            f"cosine decay_steps / step boundaries scaled with the steps, warm-up scaled when the run is shorter "
            f"than the config's; evaluation and checkpoints every ceil(steps / {spec.evals or 5}) steps "
            f"(set per run: {', '.join(keys)})")


# --------------------------------------------------------------------------- outputs


def _fit_line(f: dict[str, Any], what: str) -> str:
    if not f.get("ok"):
        return f"- against {what}: **no fit**: {f.get('message')}"
    iv = f.get("intervals") or {}

    def show(name, fmt=".3g"):
        v = f[name]
        if name in iv:
            lo, med, hi = iv[name]
            return f"{format(v, fmt)} [{format(lo, fmt)}, {format(hi, fmt)}]"
        return format(v, fmt)

    b = f.get("bootstrap") or {}
    how = (f"95 % interval: {b.get('method')} bootstrap, {b.get('ok')} of {b.get('n_boot')} resamples, seed "
           f"{b.get('seed')}" if b else "no bootstrap")
    notes = "; ".join(f.get("notes") or [])
    return (f"- against {what} (n = {f['n']}): **alpha = {show('alpha')}**, E = {show('E', '.4g')}, "
            f"A = {show('A', '.4g')}, rmse {f['rmse']:.3g} ({how})" + (f". {notes}" if notes else ""))


def render_markdown(summary: dict[str, Any], png: str | None = SWEEP_PNG) -> str:
    metric, keys = summary["metric"], [k for k, _ in summary["over"]]
    head = ["run", *keys, "params", "FLOPs/step", "steps", "training FLOPs", f"final {metric}",
            f"best {metric} (step)", "train time", "status"]
    lines = [f"Sweep of `{summary['config']}` over {', '.join(f'`{k}`' for k in keys)}"
             + (f" with {' '.join(f'`--set {s}`' for s in summary['sets'])}" if summary["sets"] else "") + ".",
             "", summary["matched"] + ".", "",
             f"Validation metric `{metric}` ({summary['mode']}); final = at the run's last step.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["runs"]:
        status = r["status"] if r["status"] != "partial" else f"partial (step {r.get('steps_done')})"
        if r.get("error"):
            status = f"failed: {shorten(r['error'], 80)}"
        best = "-" if r.get("best") is None else f"{r['best']:.4g} ({r['best_step']})"
        final = _num(r.get("final"))
        if r.get("final") is None and r.get("last") is not None:
            final = f"- (last {r['last']:.4g} at {r['last_step']})"
        row = [r["name"], *[r["point"].get(k, "") for k in keys], _num(r.get("params"), ",d") if r.get("params")
               else "-", _num(r.get("flops_per_step"), ".3g"), _num(r.get("steps"), "d"),
               _num(r.get("training_flops"), ".3g"), final, best,
               _duration(r["seconds"]) if r.get("seconds") else "-", status]
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    fits = summary.get("fits")
    if fits:
        lines += ["", "Fits of L = E + A·x^(-alpha):", "",
                  _fit_line(fits["params"], f"parameters (final {metric} of each finished run)"),
                  _fit_line(fits["compute"], "training FLOPs (frontier of every evaluation of every run)")]
    if png:
        lines += ["", f"![{metric} against parameters and training FLOPs]({png})"]
    return "\n".join(lines) + "\n"


def write_outputs(spec: SweepSpec, summary: dict[str, Any], *, plot: bool = True) -> dict[str, Path]:
    """``sweep.json``, ``sweep.md`` and (``plot``) ``sweep.png`` in ``spec.root``."""
    from mmar.eval.scaling import PowerLawFit, plot_scaling

    root = spec.root
    root.mkdir(parents=True, exist_ok=True)
    out = {"json": root / SWEEP_JSON, "md": root / SWEEP_MD}
    _write_json(out["json"], _jsonable(summary))
    png = None
    fits = summary.get("fits")
    if plot and fits is not None:
        def as_fit(d):
            names = {f.name for f in dataclasses.fields(PowerLawFit)}
            return PowerLawFit(**{k: v for k, v in d.items() if k in names}) if "x_name" in d else None

        keys = [k for k, _ in spec.axes]
        plot_scaling(root / SWEEP_PNG, summary["runs"], metric=summary["metric"], params_fit=as_fit(fits["params"]),
                     compute_fit=as_fit(fits["compute"]), frontier=[tuple(p) for p in fits["frontier"]],
                     title=f"{Path(spec.config).name} over {', '.join(keys)}")
        png = SWEEP_PNG
        out["png"] = root / SWEEP_PNG
    text = render_markdown(summary, png)
    tmp = out["md"].with_name(f".{SWEEP_MD}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, out["md"])
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj

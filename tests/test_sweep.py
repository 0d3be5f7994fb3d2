"""mmar.sweep and `mmar sweep`: grid parsing, matched-compute steps, commands, collection,
resume/skip of finished runs, and one end-to-end sweep of the toy task."""
from __future__ import annotations

import json
import shlex
import types
from pathlib import Path

import pytest

from mmar import cli
from mmar import sweep as sw
from mmar.errors import ConfigError
from mmar.train.config import Config, OptimConfig, TrainConfig

TESTS = Path(__file__).resolve().parent

TOY_EXPERIMENT = """
from _toy_task import toy_config


def get_config():
    cfg = toy_config(steps=40, ckpt_every=20, log_every=10, eval_every=20, optim=dict(decay_steps=40, warmup_steps=4))
    cfg.task = "_toy_task"
    cfg.train.best_metric = "val_mse"
    return cfg
"""


@pytest.fixture()
def toy_experiment(tmp_path, monkeypatch):
    path = tmp_path / "toy_exp.py"
    path.write_text(TOY_EXPERIMENT)
    monkeypatch.syspath_prepend(str(TESTS))
    return path


def fake_estimate(calls=None):
    """A StepCost stand-in: 1000 FLOPs per unit of width, params = 10 x width (no compiling)."""
    def estimate(cfg):
        if calls is not None:
            calls.append(cfg.model.width)
        w = cfg.model.width
        return types.SimpleNamespace(to_dict=lambda: {"flops": 1000.0 * w, "params": 10 * w})
    return estimate


# --------------------------------------------------------------------------- grid


def test_parse_over_and_grid():
    axes = sw.parse_over(["model.depth=1, 2,4", "model.width=128;256"])
    assert axes == [("model.depth", ["1", "2", "4"]), ("model.width", ["128", "256"])]
    pts = sw.grid_points(axes)
    assert len(pts) == 6 and pts[0] == {"model.depth": "1", "model.width": "128"}
    assert pts[1] == {"model.depth": "1", "model.width": "256"}  # the first axis varies slowest
    assert [sw.run_name(p) for p in pts[:2]] == ["depth1_width128", "depth1_width256"]
    assert sw.parse_over(["data.shape=1,2;3,4"]) == [("data.shape", ["1,2", "3,4"])]
    assert sw.run_name({"data.shape": "1,2"}) == "shape1-2"


@pytest.mark.parametrize("items, words", [
    ([], "at least one --over"),
    (["model.depth"], "KEY=V1,V2"),
    (["model..depth=1,2"], "malformed key"),
    (["model.depth=1,,2"], "empty value"),
    (["model.depth="], "empty value"),
    (["model.depth=1,2,1"], "given twice"),
    (["model.depth=1", "model.depth=2"], "key is given twice"),
])
def test_parse_over_errors(items, words):
    with pytest.raises(ConfigError, match=words):
        sw.parse_over(items)


def test_parse_budget_of():
    assert sw.parse_budget_of("depth4=1e3") == ("depth4", 1000.0)
    for bad in ("depth4", "depth4=x", "depth4=0", "=5"):
        with pytest.raises(ConfigError):
            sw.parse_budget_of(bad)


def test_spec_checks(tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        sw.SweepSpec("c.py", [("a", ["1"])], tmp_path, budget_flops=1.0, budget_of=("a1", 2))
    with pytest.raises(ConfigError, match="positive"):
        sw.SweepSpec("c.py", [("a", ["1"])], tmp_path, budget_flops=-1.0)
    with pytest.raises(ConfigError, match="mode"):
        sw.SweepSpec("c.py", [("a", ["1"])], tmp_path, mode="lowest")


# --------------------------------------------------------------------------- matched compute


def _cfg(steps=3000, warmup=150, decay=3000, schedule="cosine", boundaries=()):
    return Config(optim=OptimConfig(warmup_steps=warmup, decay_steps=decay, schedule=schedule, boundaries=boundaries),
                  train=TrainConfig(steps=steps))


def test_derive_overrides_stretches_the_recipe():
    d = sw.derive_overrides(_cfg(), 1000, 5)
    assert d == {"train.steps": 1000, "optim.decay_steps": 1000, "optim.warmup_steps": 50, "train.eval_every": 200,
                 "train.ckpt_every": 200}
    # planned decay beyond the stop (250 / 120 epochs) keeps its proportion; a longer run keeps its warm-up
    d = sw.derive_overrides(_cfg(steps=1200, decay=2500), 2400, 7)
    assert d["optim.decay_steps"] == 5000 and "optim.warmup_steps" not in d and d["train.eval_every"] == 343
    assert "optim.decay_steps" not in sw.derive_overrides(_cfg(decay=None), 100, 5)  # decays over train.steps
    d = sw.derive_overrides(_cfg(schedule="step", boundaries=(1500, 2250), decay=None), 300, None)
    assert d["optim.boundaries"] == (150, 225) and "train.eval_every" not in d


def test_plan_matches_compute_and_caches_the_estimates(toy_experiment, tmp_path):
    calls: list[int] = []
    spec = sw.SweepSpec(str(toy_experiment), sw.parse_over(["model.width=4,8,16"]), tmp_path / "s",
                        budget_of=("width8", 40), evals=4)
    runs = sw.plan_sweep(spec, estimate=fake_estimate(calls))
    assert calls == [4, 8, 16]
    assert [(r.name, r.steps) for r in runs] == [("width4", 80), ("width8", 40), ("width16", 20)]
    assert all(r.cost["flops"] * r.steps == 320_000 for r in runs)
    r = runs[2]
    assert r.workdir == tmp_path / "s" / "width16"
    assert r.overrides == ["model.width=16", "train.steps=20", "optim.decay_steps=20", "optim.warmup_steps=2",
                           "train.eval_every=5", "train.ckpt_every=5"]
    again = sw.plan_sweep(spec, estimate=fake_estimate(calls))  # cached in sweep_plan.json
    assert calls == [4, 8, 16] and [x.overrides for x in again] == [x.overrides for x in runs]
    spec2 = sw.SweepSpec(str(toy_experiment), spec.axes, spec.root, sets=["optim.lr=0.02"], budget_flops=3e5)
    runs2 = sw.plan_sweep(spec2, estimate=fake_estimate(calls))  # another config: estimated again
    assert calls[3:] == [4, 8, 16] and [x.steps for x in runs2] == [75, 38, 19]
    assert runs2[0].overrides[0] == "optim.lr=0.02" and "train.eval_every=15" in runs2[0].overrides
    with pytest.raises(ConfigError, match="not a run of this grid"):
        sw.plan_sweep(sw.SweepSpec(str(toy_experiment), spec.axes, spec.root, budget_of=("depth4", 10)),
                      estimate=fake_estimate())


def test_plan_rejects_colliding_names_and_bad_values(toy_experiment, tmp_path):
    with pytest.raises(ConfigError, match="both get the run name"):
        sw.plan_sweep(sw.SweepSpec(str(toy_experiment), [("name", ["a b", "a-b"])], tmp_path))
    with pytest.raises(ConfigError, match="model.width"):
        sw.plan_sweep(sw.SweepSpec(str(toy_experiment), sw.parse_over(["model.width=4,x"]), tmp_path))


def test_write_commands(toy_experiment, tmp_path):
    spec = sw.SweepSpec(str(toy_experiment), sw.parse_over(["model.width=4,8"]), tmp_path / "s",
                        sets=["optim.lr=0.02"], budget_flops=8e4)
    runs = sw.plan_sweep(spec, estimate=fake_estimate())
    path = sw.write_commands(spec, runs, tmp_path / "cmds" / "runs.txt")
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    args = shlex.split(lines[1])
    assert args[:5] == ["mmar", "train", str(toy_experiment), "--workdir", str(tmp_path / "s" / "width8")]
    sets = args[6::2]
    assert args[5::2] == ["--set"] * len(sets)
    assert sets[:3] == ["optim.lr=0.02", "model.width=8", "train.steps=10"]
    # the command line parses back to the same config as the sweep's own run
    ns = cli.build_parser().parse_args(args[1:])
    assert ns.set == runs[1].overrides and ns.workdir == str(runs[1].workdir)


# --------------------------------------------------------------------------- collection and resume (fake training)


def _fake_loss(step, width):
    return 1.0 + 2.0 / width ** 0.5 + 50.0 / (step * width) ** 0.5


def fake_train(log, fail=()):
    """A train_fn that writes what a finished run leaves (checkpoint folder, evals, compute.json)."""
    def train_fn(cfg, workdir):
        from mmar.errors import MmarError
        from mmar.train.config import save_config

        width = cfg.model.width
        log.append(width)
        if width in fail:
            raise MmarError(f"diverged at width {width}")
        workdir = Path(workdir)
        steps, every = cfg.train.steps, cfg.train.eval_every
        for s in range(every, steps + every, every):
            s = min(s, steps)
            (workdir / "checkpoints" / str(s) / "state").mkdir(parents=True, exist_ok=True)
            with open(workdir / "evals.jsonl", "a") as f:  # the loss falls with compute, more so when wider
                f.write(json.dumps({"step": s, "val_mse": _fake_loss(s, width), "val_acc": 0.5}) + "\n")
        (workdir / "compute.json").write_text(json.dumps({
            "flops": 1000.0 * width, "xla_flops": None, "params": 10 * width, "samples": 16, "tokens": None,
            "devices": 1, "device_kind": "cpu", "compute_dtype": "float32", "peak_flops_per_device": None}))
        save_config(cfg, workdir)
    return train_fn


def test_run_sweep_skips_finished_runs_and_reports_failures(toy_experiment, tmp_path):
    spec = sw.SweepSpec(str(toy_experiment), sw.parse_over(["model.width=2,4,8,16"]), tmp_path / "s",
                        budget_flops=3.2e5, evals=4, n_boot=200)
    runs = sw.plan_sweep(spec, estimate=fake_estimate())
    calls: list[int] = []
    lines: list[str] = []
    summary = sw.run_sweep(spec, runs, train_fn=fake_train(calls, fail=(8,)), log=lines.append, plot=False)
    assert calls == [2, 4, 8, 16]
    status = {r["name"]: r["status"] for r in summary["runs"]}
    assert status == {"width2": "done", "width4": "done", "width8": "failed", "width16": "done"}
    assert "diverged at width 8" in summary["failed"]["width8"]
    assert any("width8: FAILED" in x for x in lines)
    r4 = next(r for r in summary["runs"] if r["name"] == "width4")
    assert r4["steps"] == 80 and r4["params"] == 40 and r4["training_flops"] == 3.2e5
    assert [p["step"] for p in r4["points"]] == [20, 40, 60, 80]
    assert [p["flops"] for p in r4["points"]] == [8e4, 1.6e5, 2.4e5, 3.2e5]
    assert r4["final"] == pytest.approx(_fake_loss(80, 4)) and r4["best_step"] == 80
    assert r4["cost_source"] == "compute.json" and r4["seconds"] is not None
    # the rerun trains only the failed run
    calls.clear()
    summary = sw.run_sweep(spec, runs, train_fn=fake_train(calls), log=lines.append, plot=False)
    assert calls == [8] and all(r["status"] == "done" for r in summary["runs"])
    assert any("width2: finished earlier (step 160), collected" in x for x in lines)
    md = (spec.root / sw.SWEEP_MD).read_text()
    assert "| width4 | 4 | 40 | 4e+03 | 80 | 3.2e+05 |" in md and "matched compute: a budget of 3.2e+05" in md
    assert "alpha =" in md
    saved = json.loads((spec.root / sw.SWEEP_JSON).read_text())
    assert saved["fits"]["params"]["ok"] and saved["fits"]["compute"]["ok"]
    assert len(saved["fits"]["frontier"]) >= 3


def test_collect_reports_missing_and_partial_runs(toy_experiment, tmp_path, capsys):
    spec = sw.SweepSpec(str(toy_experiment), sw.parse_over(["model.width=2,4,8"]), tmp_path / "s",
                        budget_flops=1.6e5, evals=4, n_boot=100)
    runs = sw.plan_sweep(spec, estimate=fake_estimate())
    from mmar.train.config import load_config

    for r in runs[:2]:
        fake_train([])(load_config(spec.config, r.overrides), r.workdir)
    # width4: stopped half-way (its last checkpoint and evaluation lost)
    w4 = runs[1].workdir
    (w4 / "checkpoints" / "40" / "state").rmdir()
    (w4 / "checkpoints" / "40").rmdir()
    ev = (w4 / "evals.jsonl").read_text().splitlines()
    (w4 / "evals.jsonl").write_text("\n".join(ev[:-1]) + "\n")
    assert sw.run_state(runs[1]) == ("partial", 30) and sw.run_state(runs[2]) == ("new", None)
    summary = sw.collect_sweep(spec, runs)
    recs = {r["name"]: r for r in summary["runs"]}
    assert recs["width4"]["final"] is None and recs["width4"]["last_step"] == 30
    assert recs["width8"]["status"] == "new" and recs["width8"]["cost_source"] == "estimate"
    assert summary["fits"]["params"]["ok"] is False and "3 distinct" in summary["fits"]["params"]["message"]
    sw.write_outputs(spec, summary, plot=False)
    md = (spec.root / sw.SWEEP_MD).read_text()
    assert "partial (step 30)" in md and "- (last" in md and "**no fit**" in md
    # through the CLI (the step costs come from the plan's cache): exit 1 while runs are missing
    rc = cli.main(["sweep", str(toy_experiment), "--over", "model.width=2,4,8", "--root", str(spec.root),
                   "--budget-flops", "1.6e5", "--evals", "4", "--collect", "--no-plot", "--bootstrap", "50"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["runs"]["width2"]["status"] == "done" and out["runs"]["width8"]["status"] == "new"
    assert out["alpha_params"]["ok"] is False


def test_metric_defaults_to_best_metric_and_maximised_metrics_are_not_fitted(toy_experiment, tmp_path):
    spec = sw.SweepSpec(str(toy_experiment), sw.parse_over(["model.width=2,4,8"]), tmp_path / "s", mode="max")
    runs = sw.plan_sweep(spec)
    assert [r.steps for r in runs] == [40, 40, 40] and all(not r.derived for r in runs)
    summary = sw.collect_sweep(spec, runs)
    assert summary["metric"] == "val_mse" and "maximised" in summary["fits"]["params"]["message"]
    assert summary["matched"].startswith("not matched")


def test_cli_sweep_errors(toy_experiment, tmp_path, capsys):
    root = str(tmp_path / "s")
    assert cli.main(["sweep", str(toy_experiment), "--over", "model.width", "--root", root]) == 2
    assert "KEY=V1,V2" in capsys.readouterr().err
    assert cli.main(["sweep", str(toy_experiment), "--over", "model.widthh=1,2", "--root", root, "--plan"]) == 2
    assert "model.widthh" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: the two budgets exclude each other
        cli.main(["sweep", str(toy_experiment), "--over", "model.width=1,2", "--root", root, "--budget-flops", "1",
                  "--budget-of", "width1=2"])


# --------------------------------------------------------------------------- end to end (toy task, real training)


def test_sweep_end_to_end_resumes_and_skips(toy_experiment, tmp_path, capsys):
    """`mmar sweep` over two widths of the toy MLP at matched compute (real step costs, real
    training), then a rerun after the last run lost its final checkpoint: only that run is
    resumed, the other is collected."""
    root = tmp_path / "sweep"
    argv = ["sweep", str(toy_experiment), "--over", "model.width=8,16", "--root", str(root), "--budget-of",
            "width8=12", "--evals", "3", "--metric", "val_mse", "--bootstrap", "100"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert set(out["runs"]) == {"width8", "width16"}
    assert all(r["status"] == "done" for r in out["runs"].values())
    flops = [r["training_flops"] for r in out["runs"].values()]
    assert max(flops) / min(flops) < 1.1  # matched within the rounding of the steps
    assert "[2/2] width16: done in" in captured.err
    saved = json.loads((root / sw.SWEEP_JSON).read_text())
    w8 = next(r for r in saved["runs"] if r["name"] == "width8")
    assert w8["steps"] == 12 and [p["step"] for p in w8["points"]] == [4, 8, 12]
    assert w8["params"] == json.loads((root / "width8" / "compute.json").read_text())["params"]
    png = (root / sw.SWEEP_PNG).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| width8 | 8 |" in (root / sw.SWEEP_MD).read_text()

    w16 = root / "width16"
    steps16 = next(r for r in saved["runs"] if r["name"] == "width16")["steps"]
    import shutil

    shutil.rmtree(w16 / "checkpoints" / str(steps16))
    ev = (w16 / "evals.jsonl").read_text().splitlines()
    (w16 / "evals.jsonl").write_text("\n".join(ev[:-1]) + "\n")
    mtime8 = (root / "width8" / "evals.jsonl").stat().st_mtime_ns
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "[1/2] width8: finished earlier" in captured.err
    assert "[2/2] width16: resuming from step" in captured.err and "compiling one step" not in captured.err
    assert (root / "width8" / "evals.jsonl").stat().st_mtime_ns == mtime8
    assert json.loads(captured.out)["runs"]["width16"]["status"] == "done"

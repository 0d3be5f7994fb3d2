"""The command line's contract under misuse (issue 16): nothing of a run is damaged or mixed
silently, no bad number leaves with exit code 0, errors are one readable line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from _sparse_body_fixtures import synthetic_benchmark, tiny_config
from mmar import cli
from mmar import geometry as g
from mmar.data.bvh import write_bvh
from mmar.data.clip import Clip, load_arrays, smpl22_skeleton
from mmar.tasks import make_task
from mmar.train import train

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _smpl_clip(name: str, T: int = 40, seed: int = 0) -> Clip:
    rng = np.random.default_rng(seed)
    offsets = rng.normal(scale=0.15, size=(22, 3)).astype(np.float32)
    aa = (0.3 * np.sin(np.arange(T)[:, None, None] / 5.0 + rng.uniform(0, 6, (1, 22, 3)))).astype(np.float32)
    root = np.stack([np.linspace(0, 1, T), np.full(T, 0.9), np.zeros(T)], -1).astype(np.float32)
    return Clip(name, smpl22_skeleton(offsets), np.asarray(g.axis_angle_to_matrix(aa)), root, 30.0)


def _bvh(path: Path, name: str, seed: int = 0) -> Path:
    write_bvh(_smpl_clip(name, seed=seed), path, scale=0.01)
    return path


def _wide_bvh(path: Path, joints: int) -> Path:
    """A BVH whose root has ``joints - 1`` children: no joint map fits it."""
    lines = ["HIERARCHY", "ROOT j0", "{", "OFFSET 0 0 0", "CHANNELS 6 Xposition Yposition Zposition Zrotation "
             "Xrotation Yrotation"]
    for j in range(1, joints):
        lines += [f"JOINT joint_with_a_long_name_{j}", "{", "OFFSET 0 1 0", "CHANNELS 3 Zrotation Xrotation Yrotation",
                  "End Site", "{", "OFFSET 0 1 0", "}", "}"]
    lines += ["}", "MOTION", "Frames: 1", "Frame Time: 0.0333333", " ".join(["0"] * (6 + 3 * (joints - 1)))]
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- convert


def test_convert_reports_each_bad_input_and_converts_the_rest(tmp_path, capsys):
    """A missing path, a root position of 1e308 (case 6), UTF-16 without a mark and 3000
    unmappable joints are each reported in one short line; the good file is converted, rc 1."""
    good = _bvh(tmp_path / "good.bvh", "good")
    big = tmp_path / "big.bvh"
    text = good.read_text().splitlines()
    motion = text.index("MOTION")
    row = text[motion + 3].split()
    row[0] = "1e308"
    text[motion + 3] = " ".join(row)
    big.write_text("\n".join(text) + "\n")
    utf16 = tmp_path / "utf16.bvh"
    utf16.write_bytes(good.read_text().encode("utf-16-le"))
    wide = _wide_bvh(tmp_path / "wide.bvh", 3000)
    out = tmp_path / "out.npz"
    rc = cli.main(["convert", str(good), str(tmp_path / "missing.bvh"), str(big), str(utf16), str(wide),
                   "--out", str(out), "--workers", "1"])
    captured = capsys.readouterr()
    assert rc == 1
    assert _last_json(captured.out) == {"out": str(out), "clips": 1, "frames": 40, "errors": 4}
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4 and all(len(line) < 700 for line in errors)
    assert any("missing.bvh: no such file" in e for e in errors)
    assert any("big.bvh" in e and "out of float32 range" in e for e in errors)
    assert any("utf16.bvh" in e and "not UTF-8/ASCII text" in e for e in errors)
    assert any("wide.bvh" in e and "3000 joints" in e for e in errors)
    arrays = load_arrays(str(out))
    assert list(arrays) == ["good"] and all(np.isfinite(v).all() for v in arrays["good"].values())
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _last_json(out: str):
    return json.loads(out.strip().splitlines()[-1])  # progress bars may come before


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_convert_checks_out_and_fps_before_any_work(tmp_path, capsys, monkeypatch):
    import mmar.data.inputs as inputs

    def never(*a, **k):
        raise AssertionError("the inputs were read before --out was checked")

    monkeypatch.setattr(inputs, "load_inputs", never)
    good = _bvh(tmp_path / "good.bvh", "good")
    assert cli.main(["convert", str(good), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    (tmp_path / "f").write_text("")
    assert cli.main(["convert", str(good), "--out", str(tmp_path / "f" / "x.npz")]) == 2
    assert "not a directory" in capsys.readouterr().err
    for bad in ("0", "nan", "inf", "-30", "1e9"):  # case 8
        with pytest.raises(SystemExit) as e:
            cli.main(["convert", str(good), "--out", str(tmp_path / "o.npz"), "--fps", bad])
        assert e.value.code == 2
        assert "frame rate between" in capsys.readouterr().err


def test_ctrl_c_is_one_line_and_leaves_no_temp_file(tmp_path, capsys, monkeypatch):
    import mmar.data.arrays as arrays

    good = _bvh(tmp_path / "good.bvh", "good")

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(arrays.np, "savez", interrupted)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(["convert", str(good), "--out", str(tmp_path / "o.npz"), "--workers", "1"]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "mmar convert: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_long_error_lines_are_cut(tmp_path, capsys, monkeypatch):
    from mmar.errors import MmarError

    def boom(args):
        raise MmarError("joints " + ", ".join(f"j{i}" for i in range(20000)))

    monkeypatch.setattr(cli, "cmd_metrics", boom)  # build_parser binds the command at call time
    assert cli.main(["metrics", "--pred", "p.npz", "--gt", "g.npz"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and len(err) < 800 and "more characters" in err


# --------------------------------------------------------------------------- eval


@pytest.fixture(scope="module")
def agrol_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cli") / "agrol"
    cfg = tiny_config("agrol_mlp", steps=4)
    train(make_task(cfg, benchmark=synthetic_benchmark()), cfg, workdir)
    return workdir


def test_eval_says_what_it_skipped_and_which_step(agrol_run, tmp_path, capsys):
    """Case 9: bad files in an eval --data folder are listed in the output and the JSON (rc 1);
    case 3: an unreadable newest step is said, in the output and the JSON, and --step of it fails."""
    import shutil

    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        _bvh(data / f"clip{i}.bvh", f"clip{i}", seed=i)
    (data / "broken.bvh").write_text("HIERARCHY\nROOT x\n{\n")
    text = (data / "clip0.bvh").read_text().replace("Frame Time: 0.0333333333", "Frame Time: 1e-300")
    (data / "fast.bvh").write_text(text)
    out = tmp_path / "m.json"
    rc = cli.main(["eval", "--checkpoint", str(agrol_run), "--data", str(data), "--out", str(out), "--workers", "1"])
    captured = capsys.readouterr()
    assert rc == 1
    result = json.loads(out.read_text())
    assert result == _last_json(captured.out)
    assert result["all"]["clips"] == 2 and result["checkpoint"]["step"] == 4
    assert result["checkpoint"]["skipped_steps"] == []
    assert len(result["skipped"]) == 2
    assert any("broken.bvh" in s for s in result["skipped"]) and any("fast.bvh" in s for s in result["skipped"])
    assert captured.err.count("skipped: ") == 2
    # the newest step unreadable: step 2 is evaluated, and it says so
    run = tmp_path / "run"
    shutil.copytree(agrol_run, run)
    shutil.rmtree(run / "checkpoints" / "4" / "state")
    rc = cli.main(["eval", "--checkpoint", str(run), "--data", str(data / "clip0.bvh"), "--workers", "1"])
    captured = capsys.readouterr()
    assert rc == 0
    result = _last_json(captured.out)
    assert result["checkpoint"]["step"] == 2 and [s["step"] for s in result["checkpoint"]["skipped_steps"]] == [4]
    assert "step 4 not evaluated" in captured.err and "evaluating step 2" in captured.err
    assert cli.main(["eval", "--checkpoint", str(run), "--step", "4", "--data", str(data / "clip0.bvh")]) == 2
    assert "step 4" in capsys.readouterr().err


def test_eval_per_clip_gives_each_clip_and_the_groups_average_them(agrol_run, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        _bvh(data / f"clip{i}.bvh", f"clip{i}", seed=i)
    out = tmp_path / "m.json"
    assert cli.main(["eval", "--checkpoint", str(agrol_run), "--data", str(data), "--out", str(out),
                     "--workers", "1", "--per-clip"]) == 0
    result = json.loads(out.read_text())
    per_clip = result["per_clip"]
    assert len(per_clip) == 2 and all(len(v) >= 8 for v in per_clip.values())
    assert result["all"]["mpjpe_cm"] == pytest.approx(np.mean([v["mpjpe_cm"] for v in per_clip.values()]))
    capsys.readouterr()


def test_eval_checks_its_outputs_first(agrol_run, tmp_path, capsys):
    assert cli.main(["eval", "--checkpoint", str(agrol_run), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


# --------------------------------------------------------------------------- train

TOY_EXPERIMENT = """
from _toy_task import toy_config


def get_config():
    cfg = toy_config(steps=4, ckpt_every=2, log_every=2, optim=dict(decay_steps=8))
    cfg.task = "_toy_task"
    return cfg
"""


@pytest.fixture()
def toy_experiment(tmp_path, monkeypatch):
    path = tmp_path / "toy_exp.py"
    path.write_text(TOY_EXPERIMENT)
    monkeypatch.syspath_prepend(str(TESTS))
    return path


def test_train_refuses_a_changed_config_unless_allowed(toy_experiment, tmp_path, capsys):
    """Cases 1 and 2 through the command line: --set optim.lr on a resume is refused (rc 2,
    config.json untouched); --allow-config-change resumes and records the history."""
    work = tmp_path / "run"
    assert cli.main(["train", str(toy_experiment), "--workdir", str(work), "--set", "train.steps=2"]) == 0
    before = (work / "config.json").read_bytes()
    capsys.readouterr()
    assert cli.main(["train", str(toy_experiment), "--workdir", str(work), "--set", "optim.lr=0.05"]) == 2
    err = capsys.readouterr().err
    assert "optim.lr: 0.01 -> 0.05" in err and "--allow-config-change" in err and len(err.splitlines()) == 1
    assert (work / "config.json").read_bytes() == before
    assert cli.main(["train", str(toy_experiment), "--workdir", str(work), "--set", "optim.lr=0.05",
                     "--allow-config-change"]) == 0
    assert "resumed from step 2" in capsys.readouterr().err
    saved = json.loads((work / "config.json").read_text())
    assert [(h["from_step"], h["config"]["optim"]["lr"], h["overrides"]) for h in saved["config_history"]] == [
        (0, 0.01, ["train.steps=2"]), (2, 0.05, ["optim.lr=0.05"])]


def test_two_trainers_on_one_workdir_lose_nothing(toy_experiment, tmp_path):
    """Two `mmar train` processes on one work directory: while the first trains (held at its
    second batch), the second is refused at once and writes nothing; the first finishes a
    consistent run, which a third run resumes."""
    from _toy_task import ToyTask, toy_config
    from mmar.train.checkpoint import load_params, step_dirs

    work, gate = tmp_path / "run", tmp_path / "gate"
    gate.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")]),
           "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "mmar.cli", "train", str(toy_experiment), "--workdir", str(work)]
    first = subprocess.Popen(cmd, env={**env, "MMAR_TOY_GATE": str(gate)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.time() + 240
        while not (gate / "started").exists():
            assert first.poll() is None, first.communicate()
            assert time.time() < deadline, "the first trainer did not start"
            time.sleep(0.1)
        config_while_training = (work / "config.json").read_bytes()
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO, timeout=240)
        assert second.returncode == 2, second.stderr
        assert "another mmar train is running" in second.stderr and f"pid {first.pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert (work / "config.json").read_bytes() == config_while_training
    finally:
        (gate / "go").touch()
        out, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    assert [p.name for p in step_dirs(work / "checkpoints")] == ["2", "4"]
    saved = json.loads((work / "config.json").read_text())
    assert saved["config"]["train"]["steps"] == 4 and len(saved["config_history"]) == 1
    variables, _ = load_params(work)
    assert all(np.isfinite(v).all() for v in __import__("jax").tree_util.tree_leaves(variables))
    cfg = toy_config(steps=6, ckpt_every=2, log_every=2, optim=dict(decay_steps=8))
    cfg.task = "_toy_task"
    state, history = train(ToyTask(cfg), cfg, work)
    assert int(state.step) == 6 and min(h["step"] for h in history) > 4


def _two_core_host_before_jax(monkeypatch):
    """A toy config of batch 8 on a 2-core host whose JAX backend is not up yet."""
    from jax._src import xla_bridge

    from _toy_task import toy_config

    cfg = toy_config()
    cfg.train.batch_size = 8
    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.delenv("MMAR_CPU_DEVICES", raising=False)
    return cfg


def test_train_splits_the_cpu_into_two_devices_before_jax_starts(monkeypatch):
    """`mmar train` sets --xla_force_host_platform_device_count=2 (MMAR_CPU_DEVICES) when nothing
    else decides the devices and the batch divides; never once a backend is up, never over a
    user's own XLA_FLAGS count, a fixed mesh, an odd batch or a one-core host."""
    from jax._src import xla_bridge

    from _toy_task import toy_config
    from mmar.cli import split_cpu_devices
    from mmar.errors import ConfigError

    cfg = _two_core_host_before_jax(monkeypatch)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    assert split_cpu_devices(cfg) == 2
    assert os.environ["XLA_FLAGS"] == ("--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=2 "
                                       "--xla_cpu_collective_call_terminate_timeout_seconds=600")
    assert split_cpu_devices(cfg) == 0  # already set: unchanged
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_collective_call_terminate_timeout_seconds=60")
    assert split_cpu_devices(cfg) == 2  # the user's own timeout stays
    assert os.environ["XLA_FLAGS"] == ("--xla_cpu_collective_call_terminate_timeout_seconds=60 "
                                       "--xla_force_host_platform_device_count=2")
    for env, change in ((("MMAR_CPU_DEVICES", "1"), None), (None, ("batch_size", 7)), (None, ("num_devices", 1)),
                        (None, ("mesh_shape", (1, 1)))):
        monkeypatch.setenv("XLA_FLAGS", "")
        monkeypatch.delenv("MMAR_CPU_DEVICES", raising=False)
        c = toy_config()
        c.train.batch_size = 8
        if env:
            monkeypatch.setenv(*env)
        if change:
            setattr(c.train, *change)
        assert split_cpu_devices(c) == 0 and os.environ["XLA_FLAGS"] == "", (env, change)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert split_cpu_devices(cfg) == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: True)
    assert split_cpu_devices(cfg) == 0 and os.environ["XLA_FLAGS"] == ""
    monkeypatch.setenv("MMAR_CPU_DEVICES", "two")
    with pytest.raises(ConfigError, match="MMAR_CPU_DEVICES"):
        split_cpu_devices(cfg)


def test_split_cpu_flags_are_known_to_this_jax(monkeypatch):
    """XLA aborts on an unknown flag: the flags `mmar train` adds must start this jaxlib (a
    renamed flag in a newer XLA fails here, not in a user's run)."""
    from mmar.cli import split_cpu_devices

    cfg = _two_core_host_before_jax(monkeypatch)
    monkeypatch.setenv("XLA_FLAGS", "")
    assert split_cpu_devices(cfg) == 2
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", "import jax; print(len(jax.devices()))"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "2"

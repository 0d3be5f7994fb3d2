"""Multi-process training: two processes on localhost (``jax.distributed``, two CPU devices each,
a global mesh of four) run the real trainer on AGRoL-MLP, and their result is checked against one
process with four devices.

The pair and the single process are separate Python processes running
``tests/_distributed_worker.py``, launched with the environment a real launch sets
(``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``); the data is a few Bandai
clips (one archive, read here once) or, without the Bandai data, random arrays of the same
shapes. Checked:

* the pair's final parameters (and per-step losses) equal the one-process run's (rtol 1e-5, fp32),
  with replicated and with FSDP-sharded parameters;
* each process read only its own shard of the data: the windows the two processes read are
  disjoint, and at every step process 0's part followed by process 1's is the one-process batch;
* the checkpoint the pair wrote restores in one process: ``mmar.run.load`` gives the pair's
  parameters, and resuming it with ``train`` continues exactly like the one-process run
  (parameters, optimizer state, and data position carried over to another process count).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("_distributed_worker.py")
N, K = 4, 2  # steps of the pair; steps added when resuming its checkpoint in one process
CONFIG = dict(window=8, dim=32, depth=2, batch_size=8, ckpt_every=N, eval_every=N, fsdp_min_size=256)
RTOL, ATOL = 1e-5, 1e-7
LAUNCH_TIMEOUT = 240  # seconds for one launch (a hang fails the test, it cannot block CI)
BANDAI_ARCHIVE = "Bandai-Namco-Research-Motiondataset-2_raise-up-both-hands.tar.xz"


# --------------------------------------------------------------------------- data


def _bandai_root() -> Path | None:
    env = os.environ.get("MMAR_BANDAI_DIR")
    root = Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "data" / "bandai-namco"
    return root if (root / BANDAI_ARCHIVE).is_file() else None


def _random_clip(rng: np.random.Generator, frames: int) -> dict[str, np.ndarray]:
    f32 = np.float32
    return {"sparse": rng.normal(size=(frames, 54)).astype(f32), "rot6d": rng.normal(size=(frames, 22, 6)).astype(f32),
            "joints": rng.normal(size=(frames, 22, 3)).astype(f32), "root": rng.normal(size=(frames, 3)).astype(f32),
            "offsets": rng.normal(scale=0.1, size=(22, 3)).astype(f32), "fps": np.asarray(30.0, f32)}


def _write_benchmark(path: Path) -> tuple[str, float]:
    """A few clips per split as an npz the workers read (keys ``split|clip|array``); returns the
    source ("bandai" or "synthetic") and the frame rate."""
    from mmar.data.benchmark import spaced_names
    from mmar.data.clip import clips_to_arrays

    root = _bandai_root()
    if root is not None:
        from mmar.data.bandai import load_bandai

        clips = load_bandai(root, datasets=(2,), contents=["raise-up-both-hands"], workers=1, progress=False,
                            captions=False)
        by_name = {c.name: c for c in clips}
        names = spaced_names(by_name, 11)
        chosen = {"train": names[:8], "val": names[8:10], "test": names[10:]}
        arrays = dict(zip(names, clips_to_arrays([by_name[n] for n in names])))
        splits = {s: {n: arrays[n] for n in ns} for s, ns in chosen.items()}
        fps, source = float(clips[0].fps), "bandai"
    else:  # random arrays of the right shapes: training and evaluation only need those
        rng = np.random.default_rng(0)
        splits = {s: {f"synthetic_{s}{i:02d}": _random_clip(rng, int(rng.integers(30, 50))) for i in range(n)}
                  for s, n in (("train", 8), ("val", 2), ("test", 1))}
        fps, source = 30.0, "synthetic"
    flat = {f"{s}|{clip}|{k}": np.asarray(v) for s, clips in splits.items() for clip, arrays in clips.items()
            for k, v in arrays.items()}
    np.savez(path, __fps__=np.float64(fps), **flat)
    return source, fps


# --------------------------------------------------------------------------- launching


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int, process_id: int | None = None, num_processes: int = 1, port: int | None = None) -> dict:
    """The environment of one worker: CPU, ``devices`` local devices, and the plain-variable
    multi-process launch when ``process_id`` is given (nothing distributed inherited)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("JAX_", "MMAR_DISTRIBUTED", "SLURM_", "OMPI_", "PMI_"))}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    # unoptimised CPU code compiles in half the time (the same losses here); every worker uses it
    if not any("xla_backend_optimization_level" in f for f in flags):
        flags.append("--xla_backend_optimization_level=0")
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + paths)
    if process_id is not None:
        env["JAX_COORDINATOR_ADDRESS"] = f"localhost:{port}"
        env["JAX_NUM_PROCESSES"] = str(num_processes)
        env["JAX_PROCESS_ID"] = str(process_id)
    return env


def _tail(path: Path, chars: int = 4000) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    noise = ("[Gloo]", "W0000", "I0000", "WARNING: All log messages before absl")
    lines = [line for line in text.splitlines() if not line.startswith(noise)]
    text = "\n".join(lines)
    return text[-chars:] if len(text) > chars else text


def _launch(tmp: Path, tag: str, spec: dict, envs: list[dict], retry_port: bool = False) -> float:
    """Run one worker per environment on ``spec``; fail with the workers' stderr when one fails
    or the launch runs past :data:`LAUNCH_TIMEOUT` (every worker is killed then). With
    ``retry_port``, a coordinator port taken meanwhile by another program is retried once."""
    spec_path = tmp / f"{tag}.json"
    spec_path.write_text(json.dumps(spec))
    logs = [tmp / f"{tag}.{i}.log" for i in range(len(envs))]
    procs = []
    t0 = time.monotonic()
    for env, log in zip(envs, logs):
        with open(log, "wb") as f:
            procs.append(subprocess.Popen([sys.executable, str(WORKER), str(spec_path)], cwd=REPO_ROOT, env=env,
                                          stdout=f, stderr=subprocess.STDOUT))
    failed_at = None
    try:
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if failed_at is None and any(p.returncode not in (None, 0) for p in procs):
                failed_at = now  # the others may be waiting for the failed one: give them a moment
            if now - t0 > LAUNCH_TIMEOUT or (failed_at is not None and now - failed_at > 15):
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    seconds = time.monotonic() - t0
    if retry_port and any(p.returncode != 0 for p in procs) and any(
            "address already in use" in log.read_text(errors="replace").lower() for log in logs):
        port = _free_port()
        for env in envs:
            env["JAX_COORDINATOR_ADDRESS"] = f"localhost:{port}"
        return seconds + _launch(tmp, tag + "_retry", spec, envs)
    if any(p.returncode != 0 for p in procs):
        report = [f"{tag}: launch of {len(procs)} worker(s) failed after {seconds:.0f} s"
                  + (" (timed out)" if seconds > LAUNCH_TIMEOUT else "")]
        for i, (p, log) in enumerate(zip(procs, logs)):
            report.append(f"--- worker {i} (exit {p.returncode}), last output:\n{_tail(log)}")
        pytest.fail("\n".join(report), pytrace=False)
    return seconds


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Launch the pair (2 processes x 2 devices), then one process with 4 devices; the results."""
    tmp = tmp_path_factory.mktemp("distributed")
    out = tmp / "out"
    out.mkdir()
    source, fps = _write_benchmark(tmp / "bench.npz")
    base = {"data": str(tmp / "bench.npz"), "fps": fps, "config": CONFIG, "out": str(out)}
    pair_dir, pair_fsdp_dir, single_dir = tmp / "pair", tmp / "pair_fsdp", tmp / "single"

    port = _free_port()
    # Evaluation (compiled once per job, the slowest part) runs where it is compared: the pair
    # and the one-process run evaluate step N. The FSDP pair's checkpoint (each process writes
    # its own shards) is resumed in one process with replicated parameters.
    pair_spec = dict(base, jobs=[
        {"name": "pair", "workdir": str(pair_dir), "steps": N},
        {"name": "pair_fsdp", "workdir": str(pair_fsdp_dir), "steps": N, "fsdp": True},
    ])
    t_pair = _launch(tmp, "pair", pair_spec, [_env(2, i, 2, port) for i in range(2)], retry_port=True)

    single_spec = dict(base, jobs=[
        {"name": "single", "workdir": str(single_dir), "steps": N + K},
        {"name": "single_at_n", "load": str(single_dir), "step": N},
        {"name": "pair_loaded", "load": str(pair_dir)},
        {"name": "pair_fsdp_loaded", "load": str(pair_fsdp_dir)},
        {"name": "pair_fsdp_resumed", "workdir": str(pair_fsdp_dir), "steps": N + K, "fsdp": False,
         "evaluate": False},
    ])
    t_single = _launch(tmp, "single", single_spec, [_env(4)])

    def result(name: str, process: int = 0):
        return json.loads((out / f"{name}.p{process}.json").read_text())

    def params(name: str) -> dict[str, np.ndarray]:
        with np.load(out / f"{name}.npz") as z:
            return {k: z[k] for k in z.files}

    print(f"data: {source}; pair {t_pair:.1f} s, single {t_single:.1f} s")
    return dict(source=source, result=result, params=params, pair_fsdp_dir=pair_fsdp_dir)


def _assert_params_close(got: dict, want: dict, what: str, rtol: float = RTOL) -> None:
    assert got.keys() == want.keys(), what
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=ATOL, err_msg=f"{what}: {k}")


# --------------------------------------------------------------------------- the pair vs one process


def test_the_pair_is_one_global_run(runs):
    for i in range(2):
        r = runs["result"]("pair", i)
        assert (r["process"], r["process_count"], r["local_devices"], r["mesh_devices"]) == (i, 2, 2, 4)
        assert r["step"] == N
    single = runs["result"]("single")
    assert (single["process_count"], single["local_devices"], single["mesh_devices"]) == (1, 4, 4)


@pytest.mark.parametrize("pair", ["pair", "pair_fsdp"])
def test_two_processes_train_like_one(runs, pair):
    reference = runs["params"]("single_at_n")  # the one-process run, at step N
    got = runs["params"](pair)
    _assert_params_close(got, reference, f"{pair} vs one process")
    # the parameters moved: the comparison is not between two initialisations
    final = runs["params"]("single")
    assert any(not np.allclose(final[k], reference[k], rtol=1e-3) for k in reference)
    # the same loss at every step (the global batch mean, logged by both processes)
    want = runs["result"]("single")["losses"][:N]
    for i in range(2):
        losses = runs["result"](pair, i)["losses"]
        assert [s for s, _ in losses] == [s for s, _ in want]
        np.testing.assert_allclose([v for _, v in losses], [v for _, v in want], rtol=RTOL)
        assert all(np.isfinite(v) for _, v in losses)
    if pair == "pair_fsdp":  # some parameters really were split over the processes' devices
        assert any("fsdp" in s for s in runs["result"](pair, 0)["param_shardings"])


def test_the_pair_evaluates_like_one_process(runs):
    want = [e for e in runs["result"]("single")["evals"] if e["step"] == N]
    assert len(want) == 1
    for i in range(2):
        (got,) = runs["result"]("pair", i)["evals"]
        assert got.keys() == want[0].keys() and got["step"] == N
        for k in got:
            np.testing.assert_allclose(got[k], want[0][k], rtol=1e-4, err_msg=k)


def test_each_process_reads_only_its_own_shard(runs):
    p0, p1 = (runs["result"]("pair", i) for i in range(2))
    single = runs["result"]("single")
    per_process = CONFIG["batch_size"] // 2
    # grain's per-process sharding: process i of 2, the same global batch
    for i, r in enumerate((p0, p1)):
        pipeline = r["data_state"]["pipeline"]
        assert pipeline["shard"] == [i, 2] and pipeline["batch_size"] == per_process
        assert pipeline["global_batch_size"] == CONFIG["batch_size"]
        assert len(r["fed"]) == N and all(len(b) == per_process for b in r["fed"])
        assert {tuple(w) for b in r["fed"] for w in b} <= {tuple(w) for w in r["read"]}
    assert single["data_state"]["pipeline"]["shard"] == [0, 1]
    # what the two processes read (prefetch included) is disjoint...
    read0, read1 = ({tuple(w) for w in r["read"]} for r in (p0, p1))
    assert read0 and read1 and not read0 & read1
    # ...and together they fed exactly the one-process run's batches, in its order
    for step in range(N):
        assert p0["fed"][step] + p1["fed"][step] == single["fed"][step], f"step {step}"


# --------------------------------------------------------------------------- the pair's checkpoint in one process


@pytest.mark.parametrize("pair", ["pair", "pair_fsdp"])
def test_pair_checkpoint_loads_in_one_process(runs, pair):
    loaded = runs["result"](f"{pair}_loaded")
    assert loaded["step"] == N
    got, want = runs["params"](f"{pair}_loaded"), runs["params"](pair)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_pair_checkpoint_resumes_in_one_process(runs):
    """The FSDP pair's checkpoint, resumed by one process with replicated parameters."""
    resumed = runs["result"]("pair_fsdp_resumed")
    single = runs["result"]("single")
    assert resumed["process_count"] == 1 and resumed["step"] == N + K
    assert not any("fsdp" in s for s in resumed["param_shardings"])
    # the pair's data position carried over: the next batches of the one-process run
    assert resumed["fed"] == single["fed"][N:N + K]
    assert resumed["data_state"]["pipeline"]["shard"] == [0, 1]
    # optimizer state and parameters restored: training continues as in the one-process run
    _assert_params_close(runs["params"]("pair_fsdp_resumed"), runs["params"]("single"), "resumed pair vs one process")
    assert [s for s, _ in resumed["losses"]] == list(range(N + 1, N + K + 1))
    np.testing.assert_allclose([v for _, v in resumed["losses"]], [v for _, v in single["losses"][N:]], rtol=RTOL)
    # config.json (written by process 0 alone) records both parts of the run
    workdir = runs["pair_fsdp_dir"]
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["config"]["train"]["steps"] == N + K and saved["config"]["train"]["fsdp"] is False
    assert [h["from_step"] for h in saved["config_history"]] == [0, N]
    assert {int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()} == {N, N + K}


# --------------------------------------------------------------------------- units (no launch)


def test_global_stream_does_not_depend_on_the_process_count():
    """``make_train_iterator``: shards (i, n) of batch B/n together give the batches of one
    iterator of batch B, and a shard's saved position resumes in an unsharded iterator."""
    from mmar.data.pipeline import ClipArrays, make_train_iterator
    from mmar.errors import ConfigError

    lengths = [30, 45, 17, 60, 38]
    clips = ClipArrays([f"clip{i}" for i in range(len(lengths))], np.concatenate([[0], np.cumsum(lengths)]),
                       {"sparse": np.zeros((sum(lengths), 54), np.float32)}, {})
    keys = ["clip", "start"]
    whole = make_train_iterator(clips, 8, batch_size=12, seed=3, shard=None, keys=keys)
    parts = [make_train_iterator(clips, 8, batch_size=4, seed=3, shard=(i, 3), keys=keys) for i in range(3)]
    n_windows = whole.get_state()["pipeline"]["num_windows"]
    for _ in range(n_windows // 12 + 2):  # across an epoch boundary
        want = next(whole)
        got = [next(p) for p in parts]
        for k in keys:
            np.testing.assert_array_equal(np.concatenate([g[k] for g in got]), want[k])
    state = json.loads(json.dumps(parts[1].get_state()))
    fresh = make_train_iterator(clips, 8, batch_size=12, seed=3, shard=None, keys=keys)
    fresh.set_state(state)
    np.testing.assert_array_equal(next(fresh)["start"], next(whole)["start"])
    other = make_train_iterator(clips, 8, batch_size=8, seed=3, shard=None, keys=keys)  # another global batch
    with pytest.raises(ConfigError, match="global_batch_size"):
        other.set_state(state)


def test_maybe_initialize_distributed_reads_the_environment(monkeypatch):
    import jax

    from mmar.errors import ConfigError
    from mmar.train import sharding as shd

    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "MMAR_DISTRIBUTED"):
        monkeypatch.delenv(k, raising=False)
    assert shd.maybe_initialize_distributed() is False and calls == []
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    assert shd.maybe_initialize_distributed() is False and calls == []  # one process: nothing to do
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    assert shd.maybe_initialize_distributed() is True
    assert calls.pop() == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    monkeypatch.setenv("JAX_PROCESS_ID", "4")
    with pytest.raises(ConfigError, match="JAX_PROCESS_ID"):
        shd.maybe_initialize_distributed()
    monkeypatch.setenv("JAX_PROCESS_ID", "one")
    with pytest.raises(ConfigError, match="JAX_PROCESS_ID"):
        shd.maybe_initialize_distributed()
    for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("MMAR_DISTRIBUTED", "1")  # SLURM / TPU pod: JAX detects the cluster
    assert shd.maybe_initialize_distributed() is True and calls.pop() == {}


def test_cpu_collectives_default_to_gloo(monkeypatch):
    import jax

    from mmar.train import sharding as shd

    before = jax.config.jax_cpu_collectives_implementation
    monkeypatch.delenv("JAX_CPU_COLLECTIVES_IMPLEMENTATION", raising=False)
    try:
        jax.config.update("jax_cpu_collectives_implementation", None)
        monkeypatch.setattr(shd, "_platform_is_cpu", lambda: False)
        assert shd.select_cpu_collectives() is None  # an accelerator: left alone
        monkeypatch.setattr(shd, "_platform_is_cpu", lambda: True)
        assert shd.select_cpu_collectives() == "gloo" == jax.config.jax_cpu_collectives_implementation
        jax.config.update("jax_cpu_collectives_implementation", "mpi")
        assert shd.select_cpu_collectives() == "mpi"  # the user's choice is kept
    finally:
        jax.config.update("jax_cpu_collectives_implementation", before)

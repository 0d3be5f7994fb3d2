"""Trainer loop, checkpoints, resume, divergence and the optimizer (mmar.train.loop/checkpoint/optim)."""
from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _toy_task import ToyTask, flat_params, toy_config
from mmar.errors import CheckpointError, MmarError
from mmar.train import StatefulIterator, TrainingDivergedError, load_params, train
from mmar.train import checkpoint as ckpt_lib
from mmar.train.config import OptimConfig
from mmar.train.optim import decay_mask, ema_update, make_optimizer, make_schedule

N_STEPS, K_STEPS = 6, 3


def _cfg(steps: int):
    # decay_steps is fixed so the LR schedule does not depend on train.steps (k-run vs N-run).
    return toy_config(
        steps=steps, ckpt_every=3, eval_every=3, log_every=2, best_metric="val_mse", optim=dict(decay_steps=N_STEPS)
    )


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """N steps uninterrupted."""
    workdir = tmp_path_factory.mktemp("full")
    state, history = train(ToyTask(_cfg(N_STEPS)), _cfg(N_STEPS), workdir)
    return workdir, state, history


def test_train_logs_checkpoints_and_config(full_run):
    workdir, state, history = full_run
    assert int(state.step) == N_STEPS
    train_rows = [h for h in history if "train/loss" in h]
    eval_rows = [h for h in history if "eval/val_mse" in h]
    assert [h["step"] for h in train_rows] == [2, 4, 6]
    assert [h["step"] for h in eval_rows] == [3, 6]
    for h in train_rows:
        assert {"train/loss", "train/mse", "train/grad_norm", "train/lr", "train/steps_per_sec"} <= set(h)
        assert np.isfinite(h["train/loss"])
    assert train_rows[-1]["train/loss"] < train_rows[0]["train/loss"]  # it learns
    # warm-up: lr rises from 0 over 2 steps, then cosine-decays
    assert train_rows[0]["train/lr"] < 1e-2 and train_rows[1]["train/lr"] < 1e-2
    # TensorBoard events, saved config, periodic (keep 2) + best checkpoints
    assert list((workdir / "tb").glob("events.out.tfevents.*"))
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["config"]["train"]["steps"] == N_STEPS and saved["config"]["name"] == "toy"
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == [3, 6]
    best = [p.name for p in (workdir / "best").iterdir() if p.name.isdigit()]
    assert len(best) == 1
    # EMA is kept and differs from the live weights; BatchNorm stats were updated
    ema, live = flat_params(state.ema_params), flat_params(state.params)
    assert any(not np.allclose(ema[k], live[k]) for k in live)
    assert float(np.abs(np.asarray(state.extra_vars["batch_stats"]["bn"]["mean"])).sum()) > 0


def test_resume_is_exact(full_run, tmp_path):
    _, full_state, _ = full_run
    workdir = tmp_path / "resumed"
    part_state, _ = train(ToyTask(_cfg(K_STEPS)), _cfg(K_STEPS), workdir)
    assert int(part_state.step) == K_STEPS
    task = ToyTask(_cfg(N_STEPS))
    state, history = train(task, _cfg(N_STEPS), workdir)
    # The iterator was rebuilt from the saved position, training continued from step K.
    assert task.iterators_made == [{"consumed": K_STEPS}]
    assert min(h["step"] for h in history) > K_STEPS
    assert int(state.step) == N_STEPS
    for name in ("params", "opt_state", "ema_params", "extra_vars", "rng"):
        a, b = flat_params(getattr(full_state, name)), flat_params(getattr(state, name))
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}{k}")
    # Training again with the same number of steps is a no-op returning the saved state.
    again, hist2 = train(ToyTask(_cfg(N_STEPS)), _cfg(N_STEPS), workdir)
    assert hist2 == [] and int(again.step) == N_STEPS


def test_resume_prints_one_line(tmp_path, capsys, caplog):
    cfg = toy_config(steps=2, ckpt_every=2, log_every=2, optim=dict(decay_steps=3))
    with caplog.at_level("INFO", logger="mmar.train"):
        train(ToyTask(cfg), cfg, tmp_path)
        assert "resumed" not in capsys.readouterr().err  # a fresh run says nothing
        cfg3 = toy_config(steps=3, ckpt_every=2, log_every=2, optim=dict(decay_steps=3))
        state, _ = train(ToyTask(cfg3), cfg3, tmp_path)
    assert int(state.step) == 3
    lines = [line for line in capsys.readouterr().err.splitlines() if "resumed" in line]
    assert len(lines) == 1 and lines[0].startswith("resumed from step 2 ")
    assert str(tmp_path / "checkpoints" / "2") in lines[0]
    logged = [r for r in caplog.records if "resumed" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelname == "INFO"
    assert logged[0].getMessage() == lines[0]


def test_nan_loss_raises_and_saves_nothing_after(tmp_path):
    cfg = toy_config(steps=8, ckpt_every=2, log_every=4, optim=dict(ema_decay=None))
    with pytest.raises(TrainingDivergedError, match=r"step 3\b") as info:
        train(ToyTask(cfg, nan_at=3), cfg, tmp_path)
    assert info.value.step == 3
    assert isinstance(info.value, MmarError)
    # the checkpoint at step 2 exists, nothing at/after the NaN step was saved
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [2]
    variables, _ = load_params(tmp_path)
    assert all(np.all(np.isfinite(v)) for v in jax.tree_util.tree_leaves(variables))


def test_load_params_for_export(full_run):
    workdir, state, _ = full_run
    variables, config = load_params(workdir)
    assert config["name"] == "toy" and config["train"]["steps"] == N_STEPS
    assert set(variables) == {"params", "batch_stats"}
    live = flat_params(state.params)
    got = flat_params(variables["params"])
    assert live.keys() == got.keys()
    for k in live:
        assert isinstance(got[k], np.ndarray)
        np.testing.assert_array_equal(got[k], live[k])
    ema_vars, _ = load_params(workdir, ema=True)
    np.testing.assert_array_equal(
        flat_params(ema_vars["params"])["['hidden']['kernel']"], flat_params(state.ema_params)["['hidden']['kernel']"]
    )
    # an explicit step directory, and the best checkpoint, also load
    v3, _ = load_params(workdir / "checkpoints" / "3")
    assert not np.array_equal(flat_params(v3["params"])["['out']['kernel']"], live["['out']['kernel']"])
    vb, cb = load_params(workdir / "best")
    assert cb["name"] == "toy" and "params" in vb
    with pytest.raises(CheckpointError, match="step 5"):
        load_params(workdir, step=5)


# tensorstore may report a callback on orbax's closed event loop after a failed restore.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_missing_and_corrupt_checkpoints(full_run, tmp_path):
    workdir, _, _ = full_run
    with pytest.raises(CheckpointError, match=str(tmp_path / "nothing")):
        ckpt_lib.restore_latest(tmp_path / "nothing")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_params(tmp_path)
    # Corrupt the latest step's array data: restoring (and resuming) fails naming the directory,
    # and nothing on disk is removed.
    broken = tmp_path / "broken"
    shutil.copytree(workdir, broken)
    state_dir = broken / "checkpoints" / str(N_STEPS) / "state"
    for f in state_dir.rglob("*"):
        if f.is_file() and f.name not in ("_METADATA", "_sharding", "commit_success.txt"):
            f.write_bytes(b"garbage")
    def listing():
        return sorted(
            (str(p.relative_to(broken)), p.read_bytes() if p.is_file() else b"")
            for sub in ("checkpoints", "best")
            for p in (broken / sub).rglob("*")
        )

    before = listing()
    with pytest.raises(CheckpointError, match=str(broken / "checkpoints")):
        ckpt_lib.restore_latest(broken)
    with pytest.raises(CheckpointError, match=str(broken / "checkpoints")):
        train(ToyTask(_cfg(N_STEPS + 2)), _cfg(N_STEPS + 2), broken)
    assert listing() == before
    # Metadata that is not JSON: CheckpointError as well
    (broken / "checkpoints" / "3" / "meta" / "metadata").write_text("{not json")
    with pytest.raises(CheckpointError, match="checkpoints/3"):
        ckpt_lib.CheckpointManager(broken).data_state(3)


def test_restore_latest_without_target(full_run):
    workdir, state, _ = full_run
    restored = ckpt_lib.restore_latest(workdir)
    assert restored.step == N_STEPS
    assert restored.data_state == {"consumed": N_STEPS}
    assert restored.meta["config"]["name"] == "toy"
    np.testing.assert_array_equal(np.asarray(restored.state["rng"]), np.asarray(state.rng))


def test_checkpoint_manager_data_states_and_keep_n(tmp_path):
    # grain DataLoader iterators give bytes, DatasetIterators give dicts: both round-trip.
    import grain

    ds = grain.MapDataset.range(10).batch(2).to_iter_dataset()
    it = iter(ds)
    next(it)
    grain_state = it.get_state()
    tree = {"w": jnp.arange(3.0)}
    with ckpt_lib.CheckpointManager(tmp_path, max_to_keep=2, async_save=False) as mngr:
        assert mngr.save(1, tree, grain_state)
        assert mngr.save(2, tree, b"\x00\x01bytes-state")
        assert mngr.save(3, tree, {"consumed": 3})
        assert not mngr.save(3, tree, {"consumed": 99})  # an existing step is never overwritten
        mngr.wait()
        assert mngr.all_steps() == [2, 3]
        assert mngr.data_state(2) == b"\x00\x01bytes-state"
        assert mngr.data_state(3) == {"consumed": 3}
        with pytest.raises(CheckpointError, match="not JSON"):
            mngr.save(4, tree, {"bad": object()})
        # best checkpoint: only improvements are saved (mode 'min')
        assert mngr.save_best(1, tree, {}, "loss", 2.0)
        assert not mngr.save_best(2, tree, {}, "loss", 3.0)
        assert not mngr.save_best(2, tree, {}, "loss", float("nan"))
        assert mngr.save_best(3, tree, {}, "loss", 1.0)
        mngr.wait()
        assert mngr.best() == (3, 1.0)
    it2 = iter(ds)
    with ckpt_lib.CheckpointManager(tmp_path) as mngr:
        assert mngr.best() == (3, 1.0)  # read back from disk
        restored = mngr.restore()
        assert restored.step == 3
        np.testing.assert_array_equal(restored.state["w"], np.arange(3.0))
    it2.set_state(ckpt_lib.decode_data_state(ckpt_lib.encode_data_state(grain_state)))
    np.testing.assert_array_equal(next(it2), [2, 3])


def test_stateful_iterator_replay_and_seek():
    it = StatefulIterator(lambda: iter(range(100)))
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    state = it.get_state()
    assert json.loads(json.dumps(state)) == {"consumed": 5}
    it2 = StatefulIterator(lambda: iter(range(100)))
    it2.set_state(state)
    assert next(it2) == 5
    seek = StatefulIterator(lambda start: iter(range(start, 100)), seekable=True)
    seek.set_state({"consumed": 40})
    assert next(seek) == 40 and seek.get_state() == {"consumed": 41}


def test_train_rejects_stateless_iterator_and_bad_batch(tmp_path):
    cfg = toy_config(steps=2)

    class Stateless(ToyTask):
        def train_iterator(self, seed, start_state):
            return iter([])

    with pytest.raises(MmarError, match="get_state"):
        train(Stateless(cfg), cfg, tmp_path / "a")
    bad = toy_config(steps=2, batch_size=32)  # the iterator still yields 16 rows
    with pytest.raises(MmarError, match="train.batch_size"):
        train(ToyTask(cfg), bad, tmp_path / "b")


# --------------------------------------------------------------------------- optimizer


def test_schedules():
    cos = make_schedule(OptimConfig(lr=1.0, warmup_steps=10, schedule="cosine", end_lr_factor=0.1), 110)
    assert float(cos(0)) == 0.0
    assert float(cos(5)) == pytest.approx(0.5)
    assert float(cos(10)) == pytest.approx(1.0)
    assert float(cos(60)) == pytest.approx(0.55, abs=1e-6)
    assert float(cos(110)) == pytest.approx(0.1)
    assert float(cos(500)) == pytest.approx(0.1)
    step = make_schedule(OptimConfig(lr=1.0, schedule="step", boundaries=(5, 8), decay_factor=0.5), 10)
    assert [float(step(s)) for s in (0, 4, 5, 7, 8, 9)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    const = make_schedule(OptimConfig(lr=0.3, warmup_steps=3, schedule="constant"), 10)
    assert [round(float(const(s)), 6) for s in (0, 3, 9)] == [0.0, 0.3, 0.3]
    with pytest.raises(MmarError, match="optim.schedule"):
        make_schedule(OptimConfig(schedule="linear"), 10)


def test_weight_decay_mask_clip_and_ema():
    params = {
        "dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
        "norm": {"scale": jnp.ones(4)},
        "tok_embed": {"embedding": jnp.ones((10, 4))},
        "conv": {"kernel": jnp.ones((3, 3, 2, 2))},
    }
    mask = decay_mask(params)
    assert mask == {
        "dense": {"kernel": True, "bias": False},
        "norm": {"scale": False},
        "tok_embed": {"embedding": False},
        "conv": {"kernel": True},
    }
    # With zero gradients only decayed params move; clipping bounds the update of huge grads.
    tx, _ = make_optimizer(OptimConfig(lr=0.1, schedule="constant", weight_decay=0.5, grad_clip=1.0), 10)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    upd, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
    assert float(jnp.abs(upd["dense"]["kernel"]).max()) > 0
    assert float(jnp.abs(upd["dense"]["bias"]).max()) == 0
    assert float(jnp.abs(upd["tok_embed"]["embedding"]).max()) == 0
    # Clipping by global norm is in the chain: a huge first gradient changes the second update.
    def second_update(grad_clip):
        tx, _ = make_optimizer(OptimConfig(lr=0.1, schedule="constant", grad_clip=grad_clip), 10)

        @jax.jit
        def run(p):
            st = tx.init(p)
            _, st = tx.update({"w": jnp.array([1e4, 0.0, 0.0])}, st, p)
            return tx.update({"w": jnp.array([1.0, 1.0, 1.0])}, st, p)[0]["w"]

        return run({"w": jnp.ones(3)})

    assert not np.allclose(second_update(1.0), second_update(None))
    ema = ema_update({"w": jnp.zeros(2)}, {"w": jnp.ones(2)}, 0.9)
    np.testing.assert_allclose(ema["w"], [0.1, 0.1], rtol=1e-6)


# --------------------------------------------------------------------------- reliability (issue 16)


def _listing(root):
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else b"")
                  for sub in ("checkpoints", "best") for p in (root / sub).rglob("*"))


def test_changed_config_is_refused_before_anything_is_written(tmp_path):
    """Case 1: training another model into a run's workdir is refused and leaves its
    config.json and checkpoints byte for byte as they were, even with --allow-config-change
    (the restore then fails, before the config is written)."""
    from mmar.errors import ConfigError

    cfg = toy_config(steps=2, ckpt_every=2, optim=dict(decay_steps=2))
    train(ToyTask(cfg), cfg, tmp_path)
    config_before, files_before = (tmp_path / "config.json").read_bytes(), _listing(tmp_path)
    other = toy_config(steps=2, ckpt_every=2, optim=dict(decay_steps=2))
    other.model.width = 32
    with pytest.raises(ConfigError, match=r"--allow-config-change.*model\.width: 16 -> 32"):
        train(ToyTask(other), other, tmp_path)
    assert (tmp_path / "config.json").read_bytes() == config_before and _listing(tmp_path) == files_before
    with pytest.raises(CheckpointError, match="cannot restore"):
        train(ToyTask(other), other, tmp_path, allow_config_change=True)
    assert (tmp_path / "config.json").read_bytes() == config_before and _listing(tmp_path) == files_before
    assert json.loads(config_before)["config"]["model"]["width"] == 16
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_with_changed_hyperparameters_needs_the_flag_and_keeps_history(tmp_path, capsys):
    """Case 2: a resume under another learning rate is refused; allowed explicitly, config.json
    records which steps ran under which config. Extending train.steps stays allowed (unless it
    stretches the cosine schedule)."""
    from mmar.errors import ConfigError

    def cfg(steps, lr=1e-2, **optim):
        return toy_config(steps=steps, ckpt_every=2, log_every=2, optim=dict(decay_steps=8, lr=lr, **optim))

    train(ToyTask(cfg(2)), cfg(2), tmp_path)
    with pytest.raises(ConfigError, match=r"optim\.lr: 0\.01 -> 0\.05"):
        train(ToyTask(cfg(4, lr=0.05)), cfg(4, lr=0.05), tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["optim"]["lr"] == 0.01 and len(saved["config_history"]) == 1
    state, _ = train(ToyTask(cfg(4, lr=0.05)), cfg(4, lr=0.05), tmp_path, allow_config_change=True)
    assert int(state.step) == 4
    saved = json.loads((tmp_path / "config.json").read_text())
    hist = saved["config_history"]
    assert [h["from_step"] for h in hist] == [0, 2]
    assert [h["config"]["optim"]["lr"] for h in hist] == [0.01, 0.05]
    assert hist[1]["changed"] == {"optim.lr": [0.01, 0.05], "train.steps": [2, 4]}
    assert saved["config"]["optim"]["lr"] == 0.05
    # more steps under the same hyperparameters: no flag needed, one more history entry
    train(ToyTask(cfg(6, lr=0.05)), cfg(6, lr=0.05), tmp_path)
    hist = json.loads((tmp_path / "config.json").read_text())["config_history"]
    assert [h["from_step"] for h in hist] == [0, 2, 4] and hist[2]["changed"] == {"train.steps": [4, 6]}
    # a cosine schedule spanning train.steps would be stretched: refused
    stretched = toy_config(steps=8, ckpt_every=2, optim=dict(decay_steps=None, lr=0.05))
    other = tmp_path / "cos"
    first = toy_config(steps=2, ckpt_every=2, optim=dict(decay_steps=None, lr=0.05))
    train(ToyTask(first), first, other)
    with pytest.raises(ConfigError, match="stretches the cosine schedule"):
        train(ToyTask(stretched), stretched, other)


def test_interrupted_final_evaluation_is_redone(tmp_path, capsys):
    """Case 5: Ctrl-C during the last evaluation; the rerun evaluates that step and keeps the
    best checkpoint instead of finding nothing to do."""
    cfg = toy_config(steps=2, ckpt_every=2, log_every=2, best_metric="val_mse", optim=dict(decay_steps=2))

    class Interrupted(ToyTask):
        def evaluate(self, params, extra_vars):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(Interrupted(cfg), cfg, tmp_path)
    assert [p.name for p in ckpt_lib.step_dirs(tmp_path / "checkpoints")] == ["2"]
    assert ckpt_lib.step_dirs(tmp_path / "best") == []
    _, history = train(ToyTask(cfg), cfg, tmp_path)
    assert [h["step"] for h in history if "eval/val_mse" in h] == [2]
    assert "evaluating step 2" in capsys.readouterr().err
    assert [p.name for p in ckpt_lib.step_dirs(tmp_path / "best")] == ["2"]
    rows = [json.loads(line) for line in (tmp_path / "evals.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2] and np.isfinite(rows[0]["val_mse"])
    _, again = train(ToyTask(cfg), cfg, tmp_path)  # done now: nothing to redo
    assert again == []


def test_second_trainer_on_a_workdir_is_refused(tmp_path):
    from mmar.train.loop import WorkdirBusyError, WorkdirLock

    lock = WorkdirLock(tmp_path)
    try:
        cfg = toy_config(steps=2)
        with pytest.raises(WorkdirBusyError, match=f"pid {__import__('os').getpid()}"):
            train(ToyTask(cfg), cfg, tmp_path)
        assert not (tmp_path / "config.json").exists() and not (tmp_path / "checkpoints").exists()
    finally:
        lock.release()
    train(ToyTask(toy_config(steps=2)), toy_config(steps=2), tmp_path)  # released: trains


def test_failed_restore_callbacks_print_no_traceback(full_run, tmp_path, monkeypatch):
    """tensorstore reads finishing after orbax closed its event loop raise 'Event loop is
    closed' in a callback; after a failed restore those (and only those) are dropped."""
    import asyncio
    import sys

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    broken = tmp_path / "broken"
    shutil.copytree(full_run[0], broken)
    for f in (broken / "checkpoints" / str(N_STEPS) / "state").rglob("*"):
        if f.is_file() and f.name not in ("_METADATA", "_sharding", "commit_success.txt"):
            f.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot restore"):
        ckpt_lib.restore_latest(broken)
    loop = asyncio.new_event_loop()
    loop.close()

    def unraisable(make):
        from types import SimpleNamespace

        try:
            make()
        except BaseException as e:  # noqa: BLE001
            return SimpleNamespace(exc_type=type(e), exc_value=e, exc_traceback=e.__traceback__, err_msg=None,
                                   object=None)

    def other_error():
        raise RuntimeError("Event loop is closed")  # same text, not from a loop callback

    closed = unraisable(lambda: loop.call_soon_threadsafe(print))
    other = unraisable(other_error)
    sys.unraisablehook(closed)
    sys.unraisablehook(other)
    # other tests' collected event loops may report too in the same process: check these two
    kept = [u.exc_value for u in seen]
    assert any(e is other.exc_value for e in kept) and not any(e is closed.exc_value for e in kept)


def test_init_from_starts_a_fine_tune_from_a_run_with_frozen_params(full_run, tmp_path):
    """train.init_from: the run's params (and BatchNorm statistics) replace the init; with
    optim.frozen the matched params stay those of the run, bit for bit."""
    from mmar.errors import ConfigError
    from mmar.run import load_variables

    src, _, _ = full_run
    start = load_variables(src)[0]
    cfg = toy_config(steps=2, ckpt_every=2, init_from=str(src), optim=dict(frozen=("^hidden/",), ema_decay=None))
    state, _ = train(ToyTask(cfg), cfg, tmp_path / "ft")
    got, want = flat_params(state.params), flat_params(start["params"])
    assert np.array_equal(got["['hidden']['kernel']"], want["['hidden']['kernel']"])  # frozen
    assert not np.array_equal(got["['out']['kernel']"], want["['out']['kernel']"])  # trained on from the run's
    assert set(state.extra_vars) == {"batch_stats"}  # taken from the run too, then updated
    # a model of another shape: refused before a step, naming the param
    bad = toy_config(steps=2, init_from=str(src))
    bad.model.width = 8
    with pytest.raises(ConfigError, match=r"init_from.*\['hidden'\]\['kernel'\]: shape"):
        train(ToyTask(bad), bad, tmp_path / "bad")
    with pytest.raises(CheckpointError, match="no such run"):
        missing = toy_config(steps=2, init_from=str(tmp_path / "nowhere"))
        train(ToyTask(missing), missing, tmp_path / "missing")

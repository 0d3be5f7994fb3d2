"""mmar.run: the one way to load a run (explicit resolution rule, saved task name, old configs),
and the task registry (one task per model, every model field reachable with --set)."""
import dataclasses
import json

import numpy as np
import pytest

from _sparse_body_fixtures import synthetic_benchmark, tiny_config
from mmar import run as R
from mmar.errors import CheckpointError, ConfigError
from mmar.tasks import TASKS, make_task, task_class
from mmar.train import train


@pytest.fixture(scope="module")
def bench():
    return synthetic_benchmark()


@pytest.fixture(scope="module")
def agrol_run(bench, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run") / "agrol"
    cfg = tiny_config("agrol_mlp", steps=4)
    cfg.train.eval_every = 2
    cfg.train.best_metric = "mpjpe_cm"
    train(make_task(cfg, benchmark=bench), cfg, workdir)
    return workdir


def test_saved_config_names_its_task(agrol_run):
    payload = json.loads((agrol_run / "config.json").read_text())
    assert payload["task"] == "agrol_mlp" and payload["config"]["task"] == "agrol_mlp"
    assert "classes" not in payload  # no class re-import by qualified name


def test_load_resolves_by_one_rule(agrol_run, bench):
    run = R.load(agrol_run, benchmark=bench)
    assert run.step == 4 and run.checkpoint == agrol_run / "checkpoints" / "4"
    assert run.config.task == "agrol_mlp" and type(run.task).__name__ == "AGRoLMLPTask"
    assert R.load(agrol_run / "checkpoints").step == 4
    assert R.load(agrol_run / "checkpoints" / "2").step == 2
    assert R.load(agrol_run, step=2).step == 2
    best = R.load(agrol_run / "best")
    assert best.checkpoint.parent == agrol_run / "best"
    with pytest.raises(CheckpointError, match="step 3"):
        R.load(agrol_run, step=3)


def test_load_never_guesses_another_config(agrol_run, tmp_path):
    # a step folder copied out of its run has no config.json beside it: refused, not searched for
    import shutil

    lone = tmp_path / "x" / "y" / "4"
    shutil.copytree(agrol_run / "checkpoints" / "4", lone)
    (tmp_path / "config.json").write_text((agrol_run / "config.json").read_text())  # two levels up
    with pytest.raises(CheckpointError, match="not a run directory"):
        R.load(lone)
    with pytest.raises(CheckpointError, match="no such"):
        R.load(tmp_path / "missing")


def test_overrides_apply_to_the_loaded_config(agrol_run):
    run = R.load(agrol_run, overrides=["data.max_eval_clips=1"])
    assert run.config.data.max_eval_clips == 1
    with pytest.raises(ConfigError, match="model.nope"):
        R.load(agrol_run, overrides=["model.nope=1"])


def test_old_config_format_is_read(agrol_run, tmp_path):
    """Runs saved before tasks were named (model.kind, one shared model section) still load."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(agrol_run, old)
    payload = json.loads((old / "config.json").read_text())
    cfg = payload["config"]
    cfg.pop("task")
    cfg["model"].update(kind="agrol_mlp", use_memory=True, vq_hidden=256)  # fields of the other models
    (old / "config.json").write_text(json.dumps({"config": cfg, "classes": {"": "x:Config"}, "overrides": []}))
    run = R.load(old)
    assert run.config.task == "agrol_mlp" and run.config.model.window == 8
    assert not hasattr(run.config.model, "vq_hidden")


def test_prediction_compiles_once_for_any_weights(agrol_run, bench):
    from mmar.tasks import agrol_mlp

    run = R.load(agrol_run, benchmark=bench)
    clips = dict(list(sorted(bench["test"].items()))[:1])
    a = run.task.predict_clips(run.variables, clips)
    n = agrol_mlp._predict._cache_size()
    other = R.load(agrol_run, step=2, benchmark=bench)
    b = other.task.predict_clips(other.variables, clips)  # a new task, other weights
    assert agrol_mlp._predict._cache_size() == n
    name = next(iter(clips))
    assert not np.allclose(a[name]["rot6d"], b[name]["rot6d"])


@pytest.mark.parametrize("name", TASKS)
def test_every_model_field_is_a_config_field(name):
    """Every field of the network's own (frozen) config is reachable from cfg.model, so --set
    reaches it; the registry finds each task by its name."""
    from mmar.tasks.base import frozen_config

    cls = task_class(name)
    m = cls.ModelConfig()
    nets = {"agrol_mlp": ("mmar.models.agrol_mlp", "AGRoLMLPConfig", {}),
            "mem_mlp": ("mmar.models.mem_mlp", "MemMLPConfig", {"code_dim": 64}),
            "motionmar": ("mmar.models.motionmar", "MotionMARConfig", {"vocab_size": 1024, "pose_dim": 132,
                                                                       "mrn_unroll": False})}
    if name in nets:
        import importlib

        mod, net_name, given = nets[name]
        net = getattr(importlib.import_module(mod), net_name)
        frozen_config(net, m, **given)  # raises on a field the task config lacks
    if name == "mlp_vqvae":
        from mmar.models.mlp_vqvae import MLPVQVAEConfig
        from mmar.tasks.mlp_vqvae import build_vqvae

        other = dataclasses.replace(m, vq_hidden=7, vq_depth=3, vq_code_dim=5, vq_codebook_size=9,
                                    vq_use_sparse=False, vq_residual=False, vq_beta=0.5)
        built, default = build_vqvae(other).config, MLPVQVAEConfig()
        changed = {f.name for f in dataclasses.fields(MLPVQVAEConfig) if getattr(built, f.name) != getattr(default, f.name)}
        assert changed == {f.name for f in dataclasses.fields(MLPVQVAEConfig)} - {"num_joints", "sparse_dim"}
    assert cls.default_config().model == m


def test_unknown_task_is_named():
    with pytest.raises(ConfigError, match="transformer"):
        task_class("transformer")
    with pytest.raises(ConfigError, match="no task"):
        task_class(None)


def test_unreadable_newest_step_is_never_used_silently(agrol_run, tmp_path):
    """Case 3: the newest step's state is missing, or unreadable. Asked for, it fails naming the
    step; not asked for, the older step loaded says which newer ones were passed over and why."""
    import shutil

    for how in ("missing", "garbage"):
        run_dir = tmp_path / how
        shutil.copytree(agrol_run, run_dir)
        state = run_dir / "checkpoints" / "4" / "state"
        if how == "missing":
            shutil.rmtree(state)
        else:
            for f in state.rglob("*"):
                if f.is_file() and f.name not in ("_METADATA", "_sharding", "commit_success.txt"):
                    f.write_bytes(b"garbage")
        run = R.load(run_dir)
        assert run.step == 2 and run.checkpoint == run_dir / "checkpoints" / "2"
        assert [s["step"] for s in run.skipped_steps] == [4]
        assert str(run_dir / "checkpoints" / "4") in run.skipped_steps[0]["error"]
        with pytest.raises(CheckpointError, match=r"step 4"):
            R.load(run_dir, step=4)
        with pytest.raises(CheckpointError, match=r"step 4"):
            R.load(run_dir / "checkpoints" / "4")
    assert R.load(agrol_run).skipped_steps == []


def test_run_without_config_is_refused_not_searched_above(agrol_run, tmp_path, capsys):
    """Case 4: a run whose config.json is missing is refused by eval, even with an unrelated
    config.json one and two directories up."""
    import shutil

    from mmar import cli

    run_dir = tmp_path / "a" / "run"
    shutil.copytree(agrol_run, run_dir)
    (run_dir / "config.json").unlink()
    for up in (tmp_path / "a", tmp_path):
        (up / "config.json").write_text((agrol_run / "config.json").read_text())
    for target in (run_dir, run_dir / "checkpoints", run_dir / "checkpoints" / "4"):
        with pytest.raises(CheckpointError, match="not a run directory"):
            R.load(target)
    assert cli.main(["eval", "--checkpoint", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "not a run directory" in err and str(run_dir) in err

"""Configs as code: loading, --set overrides, saving and reloading (mmar.train.config)."""
from __future__ import annotations

import json
import textwrap
import types

import pytest

import _toy_task
from mmar.errors import ConfigError
from mmar.train import load_config
from mmar.train.config import (
    Config,
    OptimConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_saved_config,
    read_saved_config,
    save_config,
)

EXPERIMENT = textwrap.dedent(
    """
    import dataclasses
    from mmar.train.config import Config, OptimConfig, TrainConfig

    @dataclasses.dataclass
    class ModelConfig:
        width: int = 64
        dropout: float = 0.1
        depths: tuple[int, ...] = (2, 2)
        names: list[str] = dataclasses.field(default_factory=lambda: ["a", "b"])
        act: str = "gelu"
        norm: bool = True
        heads: int | None = None
        extra: dict = dataclasses.field(default_factory=dict)

    @dataclasses.dataclass
    class DataConfig:
        path: str = "data/x.npz"
        window: int = 64

    def get_config():
        return Config(name="exp", model=ModelConfig(), data=DataConfig(),
                      optim=OptimConfig(lr=3e-4), train=TrainConfig(steps=100))
    """
)


@pytest.fixture
def exp_file(tmp_path):
    p = tmp_path / "exp.py"
    p.write_text(EXPERIMENT)
    return p


def test_load_config_and_overrides(exp_file):
    cfg = load_config(exp_file)
    assert cfg.name == "exp" and cfg.model.width == 64 and cfg.optim.lr == 3e-4 and cfg.train.steps == 100
    cfg = load_config(
        str(exp_file),
        [
            "model.width=128",
            "model.dropout=0",
            "model.depths=1,2,3",
            "model.names=[\"x\", \"y\", \"z\"]",
            "model.act=relu",
            "model.norm=false",
            "model.heads=8",
            "model.extra={\"k\": 1}",
            "--set data.path=/tmp/a=b.npz",
            "optim.lr=1e-3",
            "optim.ema_decay=0.999",
            "optim.grad_clip=none",
            "optim.boundaries=[100, 200]",
            "train.fsdp=True",
            "train.mesh_shape=2,-1",
            "train.best_metric=val/mpjpe",
            "train.steps=2e3",
        ],
    )
    m = cfg.model
    assert m.width == 128 and isinstance(m.width, int)
    assert m.dropout == 0.0 and isinstance(m.dropout, float)
    assert m.depths == (1, 2, 3)
    assert m.names == ["x", "y", "z"]
    assert m.act == "relu" and m.norm is False and m.heads == 8 and m.extra == {"k": 1}
    assert cfg.data.path == "/tmp/a=b.npz"
    assert cfg.optim.lr == 1e-3 and cfg.optim.ema_decay == 0.999 and cfg.optim.grad_clip is None
    assert cfg.optim.boundaries == (100, 200)
    assert cfg.train.fsdp is True and cfg.train.mesh_shape == (2, -1) and cfg.train.steps == 2000
    assert cfg.train.best_metric == "val/mpjpe"


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.widht=3", "model.widht"),
        ("nope.x=3", "nope"),
        ("model.width=abc", "model.width"),
        ("model.width=1.5", "model.width"),
        ("model.norm=maybe", "model.norm"),
        ("model.depths=1,x", "model.depths"),
        ("optim.lr=None", "optim.lr"),
        ("model=3", "model"),
        ("model.width.x=3", "model.width"),
        ("train.steps", "train.steps"),
        ("model.extra=[1]", "model.extra"),
    ],
)
def test_bad_overrides_name_the_key(exp_file, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(exp_file, [override])


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="missing.py"):
        load_config(tmp_path / "missing.py")
    with pytest.raises(ConfigError, match="no_such_experiment"):
        load_config("no_such_experiment")
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="get_config"):
        load_config(bad)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="boom"):
        load_config(broken)


def test_load_config_from_module_object():
    mod = types.ModuleType("toy_exp")
    mod.get_config = lambda: _toy_task.toy_config()
    cfg = load_config(mod, ["model.width=4", "train.steps=3"])
    assert cfg.model.width == 4 and cfg.train.steps == 3


def test_save_and_reload(tmp_path, exp_file):
    cfg = load_config(exp_file, ["model.width=32", "model.depths=4,4"])
    path = save_config(cfg, tmp_path / "work")
    payload = json.loads(path.read_text())
    assert payload["overrides"] == ["model.width=32", "model.depths=4,4"]
    assert payload["config"]["model"]["depths"] == [4, 4]
    assert payload["format"] == 2 and "task" in payload
    assert read_saved_config(tmp_path / "work") == payload
    # Written into the experiment's own config as base, types (tuples) come back exactly.
    again, overrides = load_saved_config(tmp_path / "work", base=load_config(exp_file))
    assert again == cfg and overrides == payload["overrides"]
    toy = _toy_task.toy_config(steps=7)
    toy.train.mesh_shape = (1, -1)
    save_config(toy, tmp_path / "toy", overrides=["train.steps=7"])
    back, ov = load_saved_config(tmp_path / "toy", base=_toy_task.toy_config())
    assert back == toy and ov == ["train.steps=7"] and back.train.mesh_shape == (1, -1)
    # a saved field the base does not have is refused, naming it
    payload["config"]["model"]["nope"] = 1
    (tmp_path / "work" / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ConfigError, match="model.nope"):
        load_saved_config(tmp_path / "work", base=load_config(exp_file))
    (tmp_path / "work" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="malformed"):
        read_saved_config(tmp_path / "work")


def test_config_dict_round_trip():
    cfg = Config(name="x", optim=OptimConfig(boundaries=(3, 5)), train=TrainConfig(mesh_shape=(2, 4)))
    d = config_to_dict(cfg)
    json.dumps(d)
    assert d["optim"]["boundaries"] == [3, 5]
    assert config_from_dict(d, base=Config()) == cfg
    assert config_from_dict({"train": {"steps": 9}}, base=cfg).train.steps == 9
    with pytest.raises(ConfigError, match="train.nope"):
        config_from_dict({"train": {"nope": 1}}, base=cfg)
    # apply_overrides works on any dataclass config in place
    apply_overrides(cfg, ["train.keep_checkpoints=7"])
    assert cfg.train.keep_checkpoints == 7


def test_a_registered_task_named_by_its_module_path_is_the_same_task():
    from mmar.train.config import config_changes, resume_conflicts

    old = {"task": "mmar.tasks.moscale_vqvae", "train": {"steps": 10}}
    assert config_changes(old, {"task": "moscale_vqvae", "train": {"steps": 10}}) == []
    assert resume_conflicts(old, {"task": "moscale_vqvae", "train": {"steps": 10}}) == []
    assert resume_conflicts(old, {"task": "motionmar", "train": {"steps": 10}})  # another task still differs
    assert config_changes({"task": "mypkg.tasks.x"}, {"task": "x"})  # outside the registry: names differ


def test_a_run_saved_before_a_field_existed_resumes_when_the_field_keeps_its_default(tmp_path):
    """A field added to a config class after a run was saved (absent from its config.json) is no
    change while it holds its default; set to anything else it is one."""
    from _toy_task import ToyTask, toy_config
    from mmar.train import train
    from mmar.train.config import config_defaults, config_to_dict, resume_conflicts

    cfg = toy_config(steps=2, ckpt_every=2)
    new = config_to_dict(cfg)
    old = {**new, "optim": {k: v for k, v in new["optim"].items() if k != "frozen"},
           "train": {k: v for k, v in new["train"].items() if k != "init_from"}}
    defaults = config_defaults(cfg)
    assert defaults["optim.frozen"] == [] and defaults["train.init_from"] is None
    assert defaults["model.width"] == 16  # task sections too
    assert resume_conflicts(old, new) and resume_conflicts(old, new, defaults) == []
    changed = config_to_dict(toy_config(steps=2, ckpt_every=2, optim=dict(frozen=("^out/",))))
    assert resume_conflicts(old, changed, defaults) == ["optim.frozen: '<absent>' -> ['^out/']"]
    # end to end: a run whose config.json predates the fields resumes
    wd = tmp_path / "run"
    train(ToyTask(cfg), cfg, wd)
    payload = json.loads((wd / "config.json").read_text())
    for entry in [payload] + payload.get("config_history", []):
        entry["config"]["optim"].pop("frozen")
        entry["config"]["train"].pop("init_from")
    (wd / "config.json").write_text(json.dumps(payload))
    state, _ = train(ToyTask(cfg), cfg, wd)  # no ConfigError: nothing changed
    assert int(state.step) == 2


def _experiment_files():
    from conftest import REPO_ROOT

    return sorted(p for p in (REPO_ROOT / "configs").glob("*.py") if p.stem not in ("__init__", "common"))


@pytest.mark.parametrize("path", _experiment_files(), ids=lambda p: p.stem)
def test_every_experiment_config_loads(path):
    """Each configs/*.py returns a Config of a registered task whose model config is that task's,
    and survives a save/reload round trip (no training, no data)."""
    import dataclasses

    from mmar.tasks import task_class

    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.name
    assert type(cfg.model) is task_class(cfg.task).ModelConfig
    assert cfg.train.steps > 0 and cfg.train.batch_size > 0
    d = config_to_dict(cfg)
    json.dumps(d)
    assert config_to_dict(config_from_dict(d, base=load_config(path))) == d
    assert dataclasses.asdict(cfg.model)
    from mmar.train.config import config_defaults, flatten_config

    defaults = config_defaults(cfg)  # what a resume compares new fields with
    assert set(defaults) <= set(flatten_config(json.loads(json.dumps(d)))) and "optim.lr" in defaults

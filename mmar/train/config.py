"""Experiment configuration: configs are code.

An experiment is a Python file ``configs/<name>.py`` whose ``get_config()`` returns a
:class:`Config`: plain mutable dataclasses, one section per concern. ``task`` names the task
of :mod:`mmar.tasks` that trains the model (``"mem_mlp"``, ``"motionmar"``, ...); ``model`` and
``data`` are that task's own dataclasses; ``optim`` and ``train`` are shared::

    from mmar.tasks.agrol_mlp import AGRoLMLPModelConfig
    from mmar.train.config import Config, TrainConfig

    def get_config() -> Config:
        return Config(name="agrol", task="agrol_mlp", model=AGRoLMLPModelConfig(window=41),
                      train=TrainConfig(steps=10_000))

Dataclasses rather than ``ml_collections.ConfigDict``: a section is a typed class a reader can
open, its fields carry defaults and comments in one place, and a typo in a config file fails at
import instead of creating a new key (``docs/design.md``).

- ``load_config(path_or_module, overrides=()) -> Config``: import the experiment (a ``.py``
  path, a dotted module name, a bare name looked up as ``configs.<name>``, or a module object),
  call ``get_config()`` and apply ``"a.b.c=value"`` overrides (a leading ``--set`` is accepted).
  Values are parsed by the field's type annotation (int, float, bool, str, ``X | None``,
  tuples/lists from ``1,2,3`` or JSON, dicts from JSON); unknown keys and bad values raise
  :class:`mmar.errors.ConfigError` naming the key.
- ``config_to_dict(cfg)`` (JSON-ready) and ``config_from_dict(d, base)`` (values written into a
  copy of the typed ``base``).
- ``save_config(cfg, workdir, overrides=None, history=None)`` writes ``workdir/config.json``
  (``{"format", "task", "config", "overrides", "config_history"}``, atomically: a temporary file
  renamed into place); ``read_saved_config(workdir)`` returns that payload and
  ``load_saved_config(workdir, base)`` the typed config. :func:`mmar.run.load` picks ``base``
  from the task the file names.

Resuming a run (:func:`mmar.train.train`) compares the new config with the run's, both as their
:func:`config_to_dict` JSON, field by field (:func:`config_changes`, :func:`resume_conflicts`).
Only the fields of :data:`RESUME_FREE_FIELDS` may differ without ``allow_config_change``: they
change how the loop logs, saves and lays out devices, not what a step computes;
``train.steps`` too (extending a run), unless the cosine schedule is stretched over it
(``optim.decay_steps`` None). Every other difference, evaluation-only fields included, is refused,
except a field the saved config lacks (added to the code after the run was saved) that holds its
default (:func:`config_defaults`): a new field's default keeps what the code did before it.
``config_history`` lists which steps ran under which config: entries ``{"from_step", "config",
"overrides", "changed"}``, one more each time a resume runs under a config that differs from the
last entry (``changed``: ``{field: [old, new]}``); steps ``[from_step, next entry's from_step)``
ran under ``config``.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import json
import os
import sys
import types
import typing
import zlib
from pathlib import Path
from typing import Any, Iterable

from mmar.errors import ConfigError

__all__ = [
    "Config",
    "OptimConfig",
    "TrainConfig",
    "CONFIG_FILENAME",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "save_config",
    "read_saved_config",
    "RESUME_FREE_FIELDS",
    "flatten_config",
    "config_changes",
    "resume_conflicts",
    "config_defaults",
    "config_history",
    "load_saved_config",
]

CONFIG_FILENAME = "config.json"
SAVED_FORMAT = 2
_OVERRIDES_ATTR = "_mmar_overrides"


@dataclasses.dataclass
class OptimConfig:
    """AdamW with warm-up and a decay schedule (see :mod:`mmar.train.optim`)."""

    lr: float = 1e-3
    warmup_steps: int = 0
    schedule: str = "cosine"  # 'cosine' | 'step' | 'constant'
    # cosine: steps of the whole schedule, warm-up included (None = train.steps).
    decay_steps: int | None = None
    end_lr_factor: float = 0.0  # cosine ends at lr * end_lr_factor
    # step: lr is multiplied by decay_factor at each of these absolute steps.
    boundaries: tuple[int, ...] = ()
    decay_factor: float = 0.1
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    grad_clip: float | None = 1.0  # clip by global norm; None = off
    ema_decay: float | None = None  # EMA of the weights; None = off
    # EMA decay warm-up: min(ema_decay, (1 + t) / (10 + t)) at update t, so the average forgets the
    # initial weights (without it, decay 0.999 still holds 37% of them after 1,000 steps)
    ema_warmup: bool = True
    # params held fixed: regular expressions (re.search) over the '/'-joined param paths, e.g.
    # ("^encoder/", "^project_in/") to fine-tune a decoder alone; each must match a param
    frozen: tuple[str, ...] = ()


@dataclasses.dataclass
class TrainConfig:
    """Loop, logging, checkpointing and device layout (see :mod:`mmar.train.loop`)."""

    steps: int = 1000
    batch_size: int = 32  # global batch size (over all processes and devices)
    seed: int = 0
    log_every: int = 50
    eval_every: int = 0  # 0 = only at the end (when the task has `evaluate`)
    ckpt_every: int = 1000  # 0 = only at the end
    keep_checkpoints: int = 3
    async_checkpoint: bool = True
    best_metric: str | None = None  # eval metric name that picks the best checkpoint
    best_mode: str = "min"  # 'min' | 'max'
    # Device mesh (data, fsdp); None = all devices on 'data' (or on 'fsdp' when fsdp=True).
    # One entry may be -1 (filled with the remaining devices).
    mesh_shape: tuple[int, ...] | None = None
    num_devices: int | None = None  # use only the first N devices (None = all)
    fsdp: bool = False  # shard large params/optimizer state over the 'fsdp' axis
    fsdp_min_size: int = 2**16  # params with fewer elements stay replicated
    progress: bool = True  # rich progress bar
    # Precision and memory (mmar.train.precision): 'float32' | 'bfloat16' compute (fp32 master
    # weights and optimizer state either way); grad_accum micro-batches per optimizer step
    # (train.batch_size is the whole step's batch; it must divide by grad_accum x devices).
    compute_dtype: str = "float32"
    grad_accum: int = 1
    # the micro-batch loop's lax.scan unroll factor (grad_accum: one straight-line step). XLA's CPU
    # backend runs the convolutions of a scanned body far slower than outside a loop (ScaleMoGen's
    # tokenizer: 33x, docs/results.md); unrolled, XLA may hold every micro-batch's activations at
    # once, giving back the memory accumulation saves.
    grad_accum_unroll: int = 1
    # jax.profiler trace (workdir/profile) of the steps [start, stop), e.g. (10, 15); () = none.
    profile_steps: tuple[int, ...] = ()
    # a run (any form mmar.run.load accepts) whose params, and extra collections of the same
    # structure, start a fresh run instead of the task's init (fine-tuning); ignored on resume
    init_from: str | None = None


@dataclasses.dataclass
class Config:
    """Top-level experiment config. ``model`` and ``data`` are the task's own dataclasses."""

    name: str = "experiment"
    task: str | None = None  # a task of mmar.tasks (None: the caller passes the task to train())
    model: Any = None
    data: Any = None
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- loading


def _import_file(p: Path) -> types.ModuleType:
    resolved = p.resolve()
    mod_name = f"_mmar_config_{p.stem}_{zlib.crc32(str(resolved).encode()):08x}"
    stat = resolved.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    cached = sys.modules.get(mod_name)
    if cached is not None and getattr(cached, "__mmar_stamp__", None) == stamp:
        return cached  # unchanged file: same module, same dataclasses
    spec = importlib.util.spec_from_file_location(mod_name, p)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{p}: cannot import config file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses need the module registered
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - report any import failure as a config error
        sys.modules.pop(mod_name, None)
        raise ConfigError(f"{p}: error while importing config: {type(e).__name__}: {e}") from e
    module.__mmar_stamp__ = stamp
    return module


def _import_config_module(path_or_module: str | os.PathLike | types.ModuleType) -> types.ModuleType:
    if isinstance(path_or_module, types.ModuleType):
        return path_or_module
    text = os.fspath(path_or_module)
    if text.endswith(".py") or Path(text).is_file():
        if not Path(text).is_file():
            raise ConfigError(f"{text}: config file does not exist")
        return _import_file(Path(text))
    candidates = [text] if "." in text else [f"configs.{text}", text]
    for name in candidates:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and not name.startswith(e.name):  # the config imports something missing
                raise ConfigError(f"{name}: error while importing config: {e}") from e
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"{name}: error while importing config: {type(e).__name__}: {e}") from e
    raise ConfigError(f"{text}: no such config (tried {', '.join(candidates)})")


def load_config(path_or_module: str | os.PathLike | types.ModuleType, overrides: Iterable[str] = ()) -> Config:
    """Import an experiment config, call its ``get_config()`` and apply overrides (remembered
    on the returned object and written by :func:`save_config`)."""
    module = _import_config_module(path_or_module)
    where = getattr(module, "__file__", None) or getattr(module, "__name__", str(path_or_module))
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ConfigError(f"{where}: config module defines no get_config()")
    cfg = get_config()
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise ConfigError(f"{where}: get_config() must return a dataclass instance, got {type(cfg).__name__}")
    overrides = list(overrides)
    apply_overrides(cfg, overrides)
    object.__setattr__(cfg, _OVERRIDES_ATTR, tuple(overrides))
    return cfg


# --------------------------------------------------------------------------- overrides

_NONE_WORDS = {"none", "null"}
_TRUE_WORDS = {"true", "1", "yes", "on", "y", "t"}
_FALSE_WORDS = {"false", "0", "no", "off", "n", "f"}


def _split_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); other hints -> (hint, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else Any), len(args) < len(typing.get_args(hint))
    return hint, False


def _scalar(key: str, raw: Any, tp: type) -> Any:
    if not isinstance(raw, str):  # a decoded JSON element
        if tp is float and isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, tp) and not (tp is int and isinstance(raw, bool)):
            return raw
        raise ConfigError(f"{key}: expected {tp.__name__}, got {raw!r}")
    s = raw.strip()
    if tp is bool:
        if s.lower() in _TRUE_WORDS | _FALSE_WORDS:
            return s.lower() in _TRUE_WORDS
        raise ConfigError(f"{key}: expected a boolean (true/false), got {raw!r}")
    try:
        if tp is int:
            f = float(s)
            if not f.is_integer():
                raise ValueError
            return int(f)
        return float(s) if tp is float else raw
    except ValueError:
        raise ConfigError(f"{key}: expected {'an integer' if tp is int else 'a number'}, got {raw!r}") from None


def _parse(key: str, raw: str, hint: Any, current: Any) -> Any:
    """``raw`` (command-line text) as a value of the field's type ``hint``."""
    if hint is None or hint is Any:  # no annotation (a dict entry): the current value's type
        hint = type(current) if current is not None else Any
    tp, optional = _split_optional(hint)
    if raw.strip().lower() in _NONE_WORDS:
        if optional or (current is None and tp is not str):
            return None
        if tp is not str:
            raise ConfigError(f"{key}: None is not allowed for this field")
    origin = typing.get_origin(tp) or tp
    if dataclasses.is_dataclass(origin):
        raise ConfigError(f"{key}: is a config section; set one of its fields ({key}.<field>=...)")
    if origin in (bool, int, float, str):
        return _scalar(key, raw, origin)
    if origin in (tuple, list):
        s = raw.strip()
        try:
            items = json.loads("[" + s[1:-1] + "]") if s[:1] in "[(" else [x.strip() for x in s.split(",") if x.strip()]
        except json.JSONDecodeError as e:
            raise ConfigError(f"{key}: cannot parse {raw!r} as a list: {e}") from None
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        elem = args[0] if args and all(a is args[0] for a in args) else None
        if elem is None and current:
            elem = type(current[0])
        if elem in (bool, int, float, str):
            items = [_scalar(f"{key}[{i}]", x, elem) for i, x in enumerate(items)]
        return tuple(items) if origin is tuple else list(items)
    if origin is dict:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{key}: expected a JSON object, got {raw!r}: {e}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a JSON object, got {raw!r}")
        return value
    try:  # Any: a JSON literal, else the text
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _child(node: Any, part: str, path: str) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}:
        return getattr(node, part)
    raise ConfigError(f"{path}: unknown config key")


def _set_path(cfg: Any, key: str, raw: str) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"{key}: malformed key")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: i + 1]))
        if not (dataclasses.is_dataclass(node) or isinstance(node, dict)):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is not a config section (cannot set {key})")
    last = parts[-1]
    current = _child(node, last, key)
    if isinstance(node, dict):
        node[last] = _parse(key, raw, None, current)
    else:
        setattr(node, last, _parse(key, raw, typing.get_type_hints(type(node)).get(last), current))


def apply_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """Apply ``"a.b.c=value"`` strings to ``cfg`` in place and return it."""
    for item in overrides:
        text = item.strip()
        if text.startswith("--set"):
            text = text[len("--set"):].lstrip(" =")
        if "=" not in text:
            raise ConfigError(f"{text}: override must look like key.sub=value")
        key, raw = text.split("=", 1)
        _set_path(cfg, key.strip(), raw)
    return cfg


# --------------------------------------------------------------------------- (de)serialisation


def config_to_dict(cfg: Any) -> Any:
    """Nested dataclasses -> plain JSON-ready dicts/lists (tuples become lists)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {str(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, Path):
        return str(cfg)
    if cfg is None or isinstance(cfg, (bool, int, float, str)):
        return cfg
    if hasattr(cfg, "item") and callable(cfg.item):  # numpy scalar
        return cfg.item()
    raise ConfigError(f"config value {cfg!r} of type {type(cfg).__name__} is not JSON-serialisable")


def _merge(base: Any, d: Any, path: str) -> Any:
    if dataclasses.is_dataclass(base) and isinstance(d, dict):
        hints = typing.get_type_hints(type(base))
        names = {f.name for f in dataclasses.fields(base)}
        for k, v in d.items():
            if k not in names:
                raise ConfigError(f"{path + '.' if path else ''}{k}: unknown config key")
            value = _merge(getattr(base, k), v, f"{path}.{k}" if path else k)
            tp, _ = _split_optional(hints.get(k))
            if isinstance(value, list) and (typing.get_origin(tp) or tp) is tuple:
                value = tuple(value)
            setattr(base, k, value)
        return base
    if isinstance(base, dict) and isinstance(d, dict):
        return {**base, **{k: _merge(base.get(k), v, f"{path}.{k}") for k, v in d.items()}}
    if isinstance(base, tuple) and isinstance(d, list):
        return tuple(d)
    return d


def config_from_dict(d: dict, base: Any) -> Any:
    """Write the values of :func:`config_to_dict` output ``d`` into a deep copy of the typed
    ``base`` (e.g. the experiment's ``get_config()``); unknown keys raise ConfigError."""
    return _merge(copy.deepcopy(base), d, "")


def config_overrides(cfg: Any) -> list[str]:
    """The ``--set`` overrides :func:`load_config` applied to ``cfg`` (``[]`` if none)."""
    return list(getattr(cfg, _OVERRIDES_ATTR, ()))


def save_config(cfg: Any, workdir: str | os.PathLike, overrides: Iterable[str] | None = None,
                history: list[dict] | None = None) -> Path:
    """Write ``workdir/config.json`` atomically (a temporary file in the same directory, renamed
    into place) and return its path. ``history``: the ``config_history`` list to store."""
    if overrides is None:
        overrides = config_overrides(cfg)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    payload = {"format": SAVED_FORMAT, "task": getattr(cfg, "task", None), "config": config_to_dict(cfg),
               "overrides": list(overrides)}
    if history is not None:
        payload["config_history"] = history
    path = workdir / CONFIG_FILENAME
    tmp = workdir / f".{CONFIG_FILENAME}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(json.dumps(payload, indent=2, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------- resuming

#: Fields that may differ when a run is resumed without ``allow_config_change``: how the loop
#: logs, saves and lays out devices, not what a step computes. ``train.steps`` may change unless
#: the cosine schedule spans it (``optim.schedule="cosine"`` with ``optim.decay_steps=None``).
RESUME_FREE_FIELDS = frozenset({
    "train.steps", "train.progress", "train.log_every", "train.eval_every", "train.ckpt_every",
    "train.keep_checkpoints", "train.async_checkpoint", "train.num_devices", "train.mesh_shape",
    "train.fsdp", "train.fsdp_min_size", "train.profile_steps",
})

_ABSENT = "<absent>"


def flatten_config(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are values)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten_config(v, key))
        else:
            out[key] = v
    return out


def config_changes(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """``(field, old value, new value)`` for each field where two :func:`config_to_dict` dicts
    differ, compared as JSON (a field one side lacks has the value ``"<absent>"``)."""
    a = flatten_config(json.loads(json.dumps(old)))
    b = flatten_config(json.loads(json.dumps(new)))
    for d in (a, b):  # a registered task named by its module path is the same task
        if isinstance(d.get("task"), str):
            d["task"] = _task_name(d["task"])
    return [(k, a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b))
            if a.get(k, _ABSENT) != b.get(k, _ABSENT)]


def _task_name(task: str) -> str:
    """``'mmar.tasks.<name>'`` -> ``'<name>'`` for a task of the registry; other names unchanged."""
    from mmar.tasks import TASKS

    prefix = "mmar.tasks."
    return task[len(prefix):] if task.startswith(prefix) and task[len(prefix):] in TASKS else task


def config_defaults(cfg: Any) -> dict[str, Any]:
    """The flattened JSON default of every field of the typed ``cfg`` whose section dataclass
    can be built with no arguments (``{"optim.frozen": [], "model.jerk_weight": 0.0, ...}``)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if not (dataclasses.is_dataclass(node) and not isinstance(node, type)):
            return
        try:
            base = type(node)()
        except Exception:  # noqa: BLE001 (a section without defaults: its fields have none)
            base = None
        for f in dataclasses.fields(node):
            key = f"{prefix}.{f.name}" if prefix else f.name
            value = getattr(node, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                walk(value, key)
            elif base is not None:
                try:
                    out.update(flatten_config(json.loads(json.dumps(config_to_dict(getattr(base, f.name)))), key))
                except (TypeError, ValueError):  # not JSON: no default to compare with
                    pass

    walk(cfg, "")
    return out


def resume_conflicts(old: dict, new: dict, defaults: dict | None = None) -> list[str]:
    """The changes of :func:`config_changes` that resuming without ``allow_config_change``
    refuses, as ``"field: old -> new"`` lines (see :data:`RESUME_FREE_FIELDS`). With
    ``defaults`` (:func:`config_defaults`), a field the old config lacks and the new one holds at
    its default is no change: the run was saved before the field existed, and a new field's
    default keeps what the code did before it."""
    flat = flatten_config(new)
    stretched = flat.get("optim.schedule") == "cosine" and flat.get("optim.decay_steps") is None
    defaults = defaults or {}
    out = []
    for key, a, b in config_changes(old, new):
        if a == _ABSENT and key in defaults and defaults[key] == b:
            continue
        if key == "train.steps" and stretched:
            out.append(f"{key}: {a!r} -> {b!r} (stretches the cosine schedule, optim.decay_steps is None)")
        elif key not in RESUME_FREE_FIELDS:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


def config_history(payload: dict | None) -> list[dict]:
    """The ``config_history`` of a saved payload; a run saved without one gets a single entry
    (its config, from step 0)."""
    if not payload:
        return []
    history = payload.get("config_history")
    if isinstance(history, list) and history:
        return [dict(h) for h in history]
    return [{"from_step": 0, "config": payload.get("config"), "overrides": list(payload.get("overrides", []))}]


def read_saved_config(workdir: str | os.PathLike) -> dict:
    """The payload of ``workdir/config.json`` (``{"task", "config", "overrides", ...}``)."""
    path = Path(workdir) / CONFIG_FILENAME
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no saved config") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: malformed saved config: {e}") from e
    if not isinstance(payload, dict) or not isinstance(payload.get("config"), dict):
        raise ConfigError(f"{path}: malformed saved config (no 'config' section)")
    return payload


def load_saved_config(workdir: str | os.PathLike, base: Any) -> tuple[Any, list[str]]:
    """The config saved in ``workdir`` written into a copy of ``base`` -> (config, overrides)."""
    payload = read_saved_config(workdir)
    return config_from_dict(payload["config"], base), list(payload.get("overrides", []))

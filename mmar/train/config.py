"""Experiment configuration: configs are code.

An experiment is a Python file ``configs/<name>.py`` that defines ``get_config() -> Config``.
``Config`` is a nested, mutable dataclass with the common sections ``optim``
(:class:`OptimConfig`) and ``train`` (:class:`TrainConfig`) plus ``model`` and ``data``
sections that each experiment defines as its own dataclasses::

    # configs/toy.py
    import dataclasses
    from mmar.train.config import Config, OptimConfig, TrainConfig

    @dataclasses.dataclass
    class ModelConfig:
        width: int = 64
        depths: tuple[int, ...] = (2, 2)

    def get_config() -> Config:
        return Config(name="toy", model=ModelConfig(), optim=OptimConfig(lr=3e-4),
                      train=TrainConfig(steps=10_000, batch_size=64))

Public API:

- ``load_config(path_or_module, overrides=()) -> Config``: import the experiment (a ``.py``
  path, a dotted module name, a bare name looked up as ``configs.<name>``, or a module object),
  call ``get_config()`` and apply ``"a.b.c=value"`` overrides (a leading ``--set`` is accepted).
  Values are converted to the type of the existing field (int, float, bool, str, tuple/list
  from ``1,2,3`` or JSON ``[1, 2, 3]``, dict from JSON, ``None``/``null``); unknown keys and bad
  values raise :class:`mmar.errors.ConfigError` naming the key.
- ``apply_overrides(cfg, overrides) -> cfg`` (in place).
- ``config_to_dict(cfg) -> dict`` (JSON-ready), ``config_from_dict(d, base=None, classes=None)``.
- ``save_config(cfg, workdir, overrides=None)`` writes ``workdir/config.json`` with the config,
  the dataclass names of each section and the overrides; ``load_saved_config(workdir)`` reads it
  back (``-> (Config, overrides)``).
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
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "save_config",
    "load_saved_config",
]

CONFIG_FILENAME = "config.json"
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


@dataclasses.dataclass
class Config:
    """Top-level experiment config. ``model`` and ``data`` are experiment-defined dataclasses."""

    name: str = "experiment"
    model: Any = None
    data: Any = None
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


# --------------------------------------------------------------------------- loading


def _import_config_module(path_or_module: str | os.PathLike | types.ModuleType) -> types.ModuleType:
    if isinstance(path_or_module, types.ModuleType):
        return path_or_module
    text = os.fspath(path_or_module)
    p = Path(text)
    if text.endswith(".py") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"{text}: config file does not exist")
        resolved = p.resolve()
        mod_name = f"_mmar_config_{p.stem}_{zlib.crc32(str(resolved).encode()):08x}"
        stat = resolved.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = sys.modules.get(mod_name)
        if cached is not None and getattr(cached, "__mmar_stamp__", None) == stamp:
            return cached  # unchanged file: same module, same dataclasses
        spec = importlib.util.spec_from_file_location(mod_name, p)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{text}: cannot import config file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module  # dataclasses need the module registered
        try:
            spec.loader.exec_module(module)
            module.__mmar_stamp__ = stamp
        except Exception as e:  # noqa: BLE001 - report any import failure as a config error
            sys.modules.pop(mod_name, None)
            raise ConfigError(f"{text}: error while importing config: {type(e).__name__}: {e}") from e
        return module
    candidates = [text] if "." in text else [f"configs.{text}", text]
    for name in candidates:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and not name.startswith(e.name):
                # the config exists but imports something missing
                raise ConfigError(f"{name}: error while importing config: {e}") from e
        except Exception as e:  # noqa: BLE001 - report any import failure as a config error
            raise ConfigError(f"{name}: error while importing config: {type(e).__name__}: {e}") from e
    raise ConfigError(f"{text}: no such config (tried {', '.join(candidates)})")


def load_config(
    path_or_module: str | os.PathLike | types.ModuleType, overrides: Iterable[str] = ()
) -> Config:
    """Import an experiment config, call its ``get_config()`` and apply overrides.

    The applied overrides are remembered on the returned object and written by
    :func:`save_config`.
    """
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
    try:
        object.__setattr__(cfg, _OVERRIDES_ATTR, tuple(overrides))
    except Exception:  # noqa: BLE001 - slotted dataclasses cannot carry it
        pass
    return cfg


# --------------------------------------------------------------------------- overrides

_NONE_WORDS = {"none", "null"}
_TRUE_WORDS = {"true", "1", "yes", "on", "y", "t"}
_FALSE_WORDS = {"false", "0", "no", "off", "n", "f"}


def _field_hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(type(obj))
    except Exception:  # noqa: BLE001 - unresolved forward refs: fall back to values only
        return {}


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """Return (inner type, whether None is allowed) for ``X | None`` / ``Optional[X]``."""
    if tp is None:
        return None, False
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        allows_none = len(args) < len(typing.get_args(tp))
        return (args[0] if len(args) == 1 else None), allows_none
    return tp, tp is type(None)


def _convert(key: str, raw: str, current: Any, hint: Any) -> Any:
    inner, allows_none = _strip_optional(hint)
    if raw.strip().lower() in _NONE_WORDS:
        is_str_field = isinstance(current, str) or inner is str
        if current is None or allows_none or (hint is None and not is_str_field):
            return None
        if not is_str_field:
            raise ConfigError(f"{key}: None is not allowed for this field")
    # Decide the target type: the current value's type first, else the annotation.
    target: Any
    if current is not None:
        target = type(current)
    else:
        target = typing.get_origin(inner) or inner
    try:
        return _convert_to(key, raw, target, current, inner)
    except ConfigError:
        raise
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        tname = getattr(target, "__name__", str(target))
        raise ConfigError(f"{key}: cannot convert {raw!r} to {tname}: {e}") from e


def _convert_scalar(key: str, raw: str, target: Any) -> Any:
    s = raw.strip()
    if target is bool:
        low = s.lower()
        if low in _TRUE_WORDS:
            return True
        if low in _FALSE_WORDS:
            return False
        raise ConfigError(f"{key}: expected a boolean (true/false), got {raw!r}")
    if target is int:
        try:
            return int(s)
        except ValueError:
            f = float(s)
            if not f.is_integer():
                raise ConfigError(f"{key}: expected an integer, got {raw!r}") from None
            return int(f)
    if target is float:
        return float(s)
    if target is str:
        return raw
    raise ConfigError(f"{key}: cannot convert {raw!r} to {getattr(target, '__name__', target)}")


def _convert_to(key: str, raw: str, target: Any, current: Any, hint: Any) -> Any:
    if dataclasses.is_dataclass(target):
        raise ConfigError(f"{key}: is a config section; set one of its fields ({key}.<field>=...)")
    if target in (bool, int, float, str):
        return _convert_scalar(key, raw, target)
    if target in (tuple, list):
        s = raw.strip()
        if s.startswith("[") or s.startswith("("):
            js = "[" + s[1:-1] + "]" if s.startswith("(") and s.endswith(")") else s
            items = json.loads(js)
            if not isinstance(items, list):
                raise ConfigError(f"{key}: expected a list, got {raw!r}")
            raw_items = None
        else:
            raw_items = [x.strip() for x in s.split(",")] if s else []
            items = raw_items
        # Element type: from existing elements, else from the annotation.
        elem_type = None
        if current:
            elem_type = type(current[0])
            if not all(type(x) is elem_type for x in current):
                elem_type = None
        if elem_type is None and hint is not None:
            args = [a for a in typing.get_args(hint) if a is not Ellipsis]
            if args and all(a is args[0] for a in args) and args[0] in (bool, int, float, str):
                elem_type = args[0]
        out = []
        for i, x in enumerate(items):
            out.append(_convert_item(f"{key}[{i}]", x, elem_type, from_text=raw_items is not None))
        return tuple(out) if target is tuple else out
    if target is dict:
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a JSON object, got {raw!r}")
        return value
    if target is None or target is Any or target is type(None):
        return _guess_literal(raw)
    raise ConfigError(f"{key}: cannot set a field of type {getattr(target, '__name__', target)} from the command line")


def _convert_item(key: str, x: Any, elem_type: Any, from_text: bool) -> Any:
    """Convert one list element (a string from ``a,b,c`` or a decoded JSON value)."""
    if elem_type is None:
        return _guess_literal(x) if from_text else x
    if isinstance(x, str) and elem_type in (bool, int, float, str):
        return _convert_scalar(key, x, elem_type)
    if elem_type is float and isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    if elem_type is int and isinstance(x, int) and not isinstance(x, bool):
        return x
    if elem_type is bool and isinstance(x, bool):
        return x
    if elem_type is tuple and isinstance(x, list):
        return tuple(x)
    if elem_type is list and isinstance(x, list):
        return x
    raise ConfigError(f"{key}: expected {elem_type.__name__}, got {x!r}")


def _guess_literal(raw: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, ValueError):
        return raw


def _set_path(cfg: Any, key: str, raw: str) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"{key}: malformed key")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        sub = _get_child(node, part, ".".join(parts[: i + 1]))
        if not (dataclasses.is_dataclass(sub) or isinstance(sub, dict)):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: is not a config section (cannot set {key})")
        node = sub
    last = parts[-1]
    if isinstance(node, dict):
        if last not in node:
            raise ConfigError(f"{key}: unknown config key")
        node[last] = _convert(key, raw, node[last], None)
        return
    if last not in {f.name for f in dataclasses.fields(node)}:
        raise ConfigError(f"{key}: unknown config key")
    hint = _field_hints(node).get(last)
    setattr(node, last, _convert(key, raw, getattr(node, last), hint))


def _get_child(node: Any, part: str, path: str) -> Any:
    if isinstance(node, dict):
        if part not in node:
            raise ConfigError(f"{path}: unknown config key")
        return node[part]
    if dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}:
        return getattr(node, part)
    raise ConfigError(f"{path}: unknown config key")


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


def _config_classes(cfg: Any, prefix: str = "") -> dict[str, str]:
    """Map of section path ('' for the root) -> 'module:QualName' of each dataclass."""
    out: dict[str, str] = {}
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        out[prefix] = f"{type(cfg).__module__}:{type(cfg).__qualname__}"
        for f in dataclasses.fields(cfg):
            out.update(_config_classes(getattr(cfg, f.name), f"{prefix}.{f.name}" if prefix else f.name))
    return out


def _import_class(spec: str) -> type | None:
    mod_name, _, qual = spec.partition(":")
    try:
        obj: Any = importlib.import_module(mod_name)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except Exception:  # noqa: BLE001 - the class may live in a config loaded from a path
        return None
    return obj if isinstance(obj, type) and dataclasses.is_dataclass(obj) else None


def _coerce_like(value: Any, like: Any) -> Any:
    if isinstance(like, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def _merge_into(base: Any, d: Any, path: str) -> Any:
    if dataclasses.is_dataclass(base) and isinstance(d, dict):
        names = {f.name for f in dataclasses.fields(base)}
        for k, v in d.items():
            if k not in names:
                raise ConfigError(f"{path + '.' if path else ''}{k}: unknown config key")
            setattr(base, k, _merge_into(getattr(base, k), v, f"{path}.{k}" if path else k))
        return base
    if isinstance(base, dict) and isinstance(d, dict):
        return {**base, **{k: _merge_into(base.get(k), v, f"{path}.{k}") for k, v in d.items()}}
    return _coerce_like(d, base)


def _build(d: Any, classes: dict[str, str], path: str) -> Any:
    cls_spec = classes.get(path)
    if isinstance(d, dict) and cls_spec is not None:
        cls = _import_class(cls_spec)
        kids = {k: _build(v, classes, f"{path}.{k}" if path else k) for k, v in d.items()}
        if cls is None:
            return types.SimpleNamespace(**kids)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(kids) - set(fields)
        if unknown:
            raise ConfigError(f"{path or '<root>'}: unknown config keys {sorted(unknown)} for {cls_spec}")
        hints = {}
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # noqa: BLE001
            pass
        for k, v in kids.items():
            tp, _ = _strip_optional(hints.get(k))
            if isinstance(v, list) and (typing.get_origin(tp) or tp) is tuple:
                kids[k] = tuple(v)
        obj = cls(**{k: v for k, v in kids.items() if fields[k].init})
        for k, v in kids.items():
            if not fields[k].init:
                setattr(obj, k, v)
        return obj
    return d


def config_from_dict(d: dict, base: Any = None, classes: dict[str, str] | None = None) -> Any:
    """Rebuild a config from :func:`config_to_dict` output.

    With ``base`` (e.g. the experiment's ``get_config()``), values are written into a deep copy
    of it (the reliable way; tuples are restored from the base's field values). Otherwise
    the dataclasses named in ``classes`` (as written by :func:`save_config`) are imported;
    sections whose class cannot be imported become ``types.SimpleNamespace``; without
    ``classes`` the root is a :class:`Config` with the standard sections rebuilt.
    """
    if base is not None:
        return _merge_into(copy.deepcopy(base), d, "")
    if classes is None:
        classes = {
            "": f"{Config.__module__}:Config",
            "optim": f"{OptimConfig.__module__}:OptimConfig",
            "train": f"{TrainConfig.__module__}:TrainConfig",
        }
    return _build(d, classes, "")


def save_config(cfg: Any, workdir: str | os.PathLike, overrides: Iterable[str] | None = None) -> Path:
    """Write ``workdir/config.json`` ({"config", "classes", "overrides"}) and return its path."""
    if overrides is None:
        overrides = getattr(cfg, _OVERRIDES_ATTR, ())
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": config_to_dict(cfg),
        "classes": _config_classes(cfg),
        "overrides": list(overrides),
    }
    path = workdir / CONFIG_FILENAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def load_saved_config(workdir: str | os.PathLike, base: Any = None) -> tuple[Any, list[str]]:
    """Read ``workdir/config.json`` written by :func:`save_config` -> (config, overrides)."""
    path = Path(workdir) / CONFIG_FILENAME
    try:
        payload = json.loads(path.read_text())
        d = payload["config"]
    except FileNotFoundError:
        raise ConfigError(f"{path}: no saved config") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: malformed saved config: {e}") from e
    cfg = config_from_dict(d, base=base, classes=payload.get("classes"))
    return cfg, list(payload.get("overrides", []))

"""Device mesh, batch sharding and rule-based parameter sharding.

The mesh always has the two axes ``('data', 'fsdp')``. The batch axis of every input is split
over both axes (so all devices see a different slice of the global batch); parameters are
replicated by default, or FSDP-style when ``fsdp=True``: each array with at least
``min_size`` elements is split along its largest dimension divisible by the ``'fsdp'`` axis
size (arrays with no such dimension stay replicated). The same rule is applied to the whole
train state, so optimizer moments and EMA weights follow their parameters.

Public API:

- ``maybe_initialize_distributed() -> bool``: ``jax.distributed.initialize()`` when launched
  multi-process (``JAX_COORDINATOR_ADDRESS`` plus ``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID``, or
  ``MMAR_DISTRIBUTED=1`` for cluster auto-detection such as SLURM or a TPU pod slice);
  otherwise nothing. On CPU it selects the gloo cross-process collectives unless another
  implementation was chosen (``docs/design.md``, "Multi-host training").
- ``make_mesh(num_devices=None, mesh_shape=None, fsdp=False) -> Mesh``
- ``batch_sharding(mesh) -> NamedSharding``; ``replicated(mesh) -> NamedSharding``
- ``fsdp_partition_spec(shape, fsdp_size, min_size) -> PartitionSpec`` (the rule, pure)
- ``state_shardings(tree, mesh, fsdp=False, min_size=2**16)`` -> pytree of NamedSharding
  (``tree`` may hold arrays or ``jax.ShapeDtypeStruct``)
- ``shard_batch(batch, mesh)``: this process's slice of the batch -> global sharded arrays
  via ``jax.make_array_from_process_local_data`` (works multi-host).
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmar.errors import ConfigError

log = logging.getLogger("mmar.train")

__all__ = [
    "MESH_AXES",
    "maybe_initialize_distributed",
    "select_cpu_collectives",
    "make_mesh",
    "batch_sharding",
    "replicated",
    "fsdp_partition_spec",
    "state_shardings",
    "shard_batch",
]

MESH_AXES = ("data", "fsdp")
BATCH_AXES = ("data", "fsdp")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"${name}: expected an integer, got {value!r}") from None


def _platform_is_cpu() -> bool:
    """Whether JAX will run on CPU (decided without starting a backend): the first of
    ``jax_platforms`` / ``$JAX_PLATFORMS`` when set, else CPU unless an accelerator plugin
    (``jax_plugins``, e.g. CUDA, or ``libtpu``) is installed."""
    platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS") or ""
    if platforms.strip():
        return platforms.split(",")[0].strip().lower() == "cpu"
    for module in ("jax_plugins", "libtpu"):
        try:
            if importlib.util.find_spec(module) is not None:
                return False
        except (ImportError, ValueError):
            continue
    try:
        from importlib.metadata import entry_points

        if list(entry_points(group="jax_plugins")):
            return False
    except Exception:  # noqa: BLE001 - broken metadata: assume no plugin
        pass
    return True


def select_cpu_collectives() -> str | None:
    """On CPU, use gloo for cross-process collectives (without it a multi-process CPU run
    cannot all-reduce) unless the user chose an implementation (``$JAX_CPU_COLLECTIVES_IMPLEMENTATION``
    or ``jax.config``). Returns the implementation in effect (None: none, or not CPU)."""
    current = jax.config.jax_cpu_collectives_implementation
    if not _platform_is_cpu():
        return current
    if current is None and not os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        current = "gloo"
    return current


def maybe_initialize_distributed() -> bool:
    """Initialise ``jax.distributed`` when this is one process of a multi-process launch.

    Returns True when it initialised (or was already initialised). Call it before any other
    JAX call. Single-process runs (no relevant environment variables) are left untouched.

    Launches (``docs/design.md``, "Multi-host training"): ``JAX_COORDINATOR_ADDRESS``
    (``host:port`` of process 0) with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` on every
    host, or ``MMAR_DISTRIBUTED=1`` to let JAX detect the cluster (SLURM, TPU pod slices).
    """
    if jax.distributed.is_initialized():
        return True
    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = _env_int("JAX_NUM_PROCESSES")
    process_id = _env_int("JAX_PROCESS_ID")
    auto = os.environ.get("MMAR_DISTRIBUTED", "").strip().lower() in ("1", "true", "yes")
    if coordinator is None and not auto:
        return False
    if num_processes is not None and num_processes <= 1 and not auto:
        return False
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ConfigError(f"$JAX_PROCESS_ID: {process_id} is not in [0, {num_processes}) ($JAX_NUM_PROCESSES)")
    kwargs: dict[str, Any] = {}
    if coordinator is not None:
        kwargs["coordinator_address"] = coordinator
    if num_processes is not None:
        kwargs["num_processes"] = num_processes
    if process_id is not None:
        kwargs["process_id"] = process_id
    select_cpu_collectives()
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())
    return True


def _resolve_shape(n: int, mesh_shape: Sequence[int] | None, fsdp: bool) -> tuple[int, int]:
    if mesh_shape is None:
        return (1, n) if fsdp else (n, 1)
    shape = [int(x) for x in mesh_shape]
    if len(shape) != 2:
        raise ConfigError(f"train.mesh_shape: expected 2 entries (data, fsdp), got {tuple(mesh_shape)}")
    if shape.count(-1) > 1 or any(x == 0 or x < -1 for x in shape):
        raise ConfigError(f"train.mesh_shape: invalid {tuple(mesh_shape)} (one entry may be -1)")
    if -1 in shape:
        known = math.prod(x for x in shape if x != -1)
        if n % known:
            raise ConfigError(f"train.mesh_shape: {tuple(mesh_shape)} does not divide {n} devices")
        shape[shape.index(-1)] = n // known
    if math.prod(shape) != n:
        raise ConfigError(f"train.mesh_shape: {tuple(mesh_shape)} needs {math.prod(shape)} devices, have {n}")
    return shape[0], shape[1]


def make_mesh(
    num_devices: int | None = None, mesh_shape: Sequence[int] | None = None, fsdp: bool = False
) -> Mesh:
    """A ``Mesh`` with axes ('data', 'fsdp') over all devices (or the first ``num_devices``).

    ``mesh_shape`` is (data, fsdp), one entry may be -1; the default puts every device on
    'data', or on 'fsdp' when ``fsdp`` is True.
    """
    devices = jax.devices()
    if num_devices is not None:
        if not 1 <= num_devices <= len(devices):
            raise ConfigError(f"train.num_devices: {num_devices} requested, {len(devices)} available")
        if jax.process_count() > 1 and num_devices != len(devices):
            raise ConfigError("train.num_devices: must use all devices in a multi-process run")
        devices = devices[:num_devices]
    shape = _resolve_shape(len(devices), mesh_shape, fsdp)
    try:
        from jax.experimental import mesh_utils

        arr = mesh_utils.create_device_mesh(shape, devices=devices)
    except Exception:  # noqa: BLE001 - odd topologies / subsets: plain order is fine
        arr = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(arr, MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over both mesh axes, other axes replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def fsdp_partition_spec(shape: Sequence[int], fsdp_size: int, min_size: int = 2**16) -> P:
    """The FSDP rule: shard the largest dim divisible by ``fsdp_size`` of arrays >= min_size."""
    if fsdp_size <= 1 or len(shape) == 0 or math.prod(shape) < min_size:
        return P()
    # Largest dimension first; ties go to the last such axis (usually the output features).
    order = sorted(range(len(shape)), key=lambda i: (shape[i], i), reverse=True)
    for i in order:
        if shape[i] % fsdp_size == 0:
            spec: list[Any] = [None] * len(shape)
            spec[i] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(tree: Any, mesh: Mesh, fsdp: bool = False, min_size: int = 2**16) -> Any:
    """NamedSharding for every leaf of ``tree``: replicated, or by the FSDP rule."""
    fsdp_size = mesh.shape["fsdp"] if fsdp else 1

    def one(x: Any) -> NamedSharding:
        shape = getattr(x, "shape", ())
        return NamedSharding(mesh, fsdp_partition_spec(shape, fsdp_size, min_size))

    return jax.tree_util.tree_map(one, tree)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Turn this process's part of the global batch into globally sharded ``jax.Array``s.

    Each process passes its local slice (global batch / process count rows); the leading axis
    must divide evenly over the devices of the mesh.
    """
    sharding = batch_sharding(mesh)
    n_shards = mesh.shape["data"] * mesh.shape["fsdp"]

    def one(x: Any) -> jax.Array:
        x = np.asarray(x)
        if x.ndim == 0:
            raise ConfigError("batch leaves must have a leading batch axis (got a scalar)")
        global_rows = x.shape[0] * jax.process_count()
        if global_rows % n_shards:
            raise ConfigError(
                f"train.batch_size: global batch {global_rows} is not divisible by the {n_shards} devices of the mesh"
            )
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree_util.tree_map(one, batch)

"""Compute accounting of a training step: FLOPs, throughput and model FLOPs utilisation (MFU).

Two FLOP counts of one optimizer step are kept, both from the ahead-of-time traced and compiled
step that the trainer runs (:func:`mmar.train.loop.make_train_step`):

- ``xla_flops``: XLA's own cost analysis of the compiled program (``compiled.cost_analysis()``),
  per device times the number of devices. XLA counts the body of a loop **once** whatever its
  trip count, so a model whose loss runs a ``lax.scan`` (a GRU, gradient accumulation) is
  under-counted;
- ``flops``: the matrix-product and convolution FLOPs of the step's jaxpr
  (:func:`jaxpr_flops`), with every ``scan`` body counted ``length`` times. This is the figure
  MFU is computed from (MFU conventionally counts matmul FLOPs; elementwise work is small beside
  them). With ``model.remat`` on, the backward pass's recomputation is in the jaxpr, so the ratio
  is a hardware rather than a model FLOPs utilisation.

MFU = ``flops`` x steps/s / (peak FLOP/s per device x devices), against :data:`DEVICE_PEAKS`
(dense peaks from the vendors' data sheets for the compute dtype: bf16 tensor cores, and for
fp32 on NVIDIA the TF32 tensor-core peak, which XLA uses for fp32 matmuls at default precision;
TPUs run fp32 matmuls as bf16 passes at default precision). No peak is known for CPUs: MFU is
then omitted, never guessed.

Public API: :class:`StepCost`, :func:`step_cost` (from a traced/compiled step),
:func:`jaxpr_flops`, :func:`xla_flops`, :func:`device_peak_flops`, :data:`DEVICE_PEAKS`,
:func:`throughput` (the numbers logged with each training log line) and :func:`estimate_step_cost`
(a config's step cost without training: builds the task, one real batch, compiles).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["DEVICE_PEAKS", "StepCost", "COMPUTE_FILENAME", "device_peak_flops", "jaxpr_flops", "xla_flops",
           "step_cost", "throughput", "estimate_step_cost", "read_step_cost"]

COMPUTE_FILENAME = "compute.json"

#: Dense peak FLOP/s per device (one GPU, one TPU chip) by compute dtype. Keys are matched
#: against ``device.device_kind`` (lower case, first match wins, so the specific names come first).
DEVICE_PEAKS: tuple[tuple[str, dict[str, float]], ...] = (
    ("h100 pcie", {"bfloat16": 756e12, "float32": 378e12}),
    ("h100", {"bfloat16": 989e12, "float32": 494.7e12}),  # SXM
    ("h200", {"bfloat16": 989e12, "float32": 494.7e12}),
    ("a100", {"bfloat16": 312e12, "float32": 156e12}),
    ("tpu v4", {"bfloat16": 275e12, "float32": 275e12}),
    ("tpu v5 lite", {"bfloat16": 197e12, "float32": 197e12}),  # v5e
    ("tpu v5e", {"bfloat16": 197e12, "float32": 197e12}),
    ("tpu v5p", {"bfloat16": 459e12, "float32": 459e12}),
    ("tpu v5", {"bfloat16": 459e12, "float32": 459e12}),  # v5p reports "TPU v5"
    ("tpu v6 lite", {"bfloat16": 918e12, "float32": 918e12}),  # v6e
)


def device_peak_flops(device_kind: str, dtype: str = "bfloat16") -> float | None:
    """Dense peak FLOP/s of one device of this kind for ``dtype``; None when unknown (CPUs)."""
    kind = device_kind.lower()
    for key, peaks in DEVICE_PEAKS:
        if key in kind:
            return peaks.get(dtype, peaks["float32"])
    return None


# --------------------------------------------------------------------------- counting


def _dot_flops(eqn) -> float:
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    contract = math.prod(lhs.shape[d] for d in lc)
    batch = math.prod(lhs.shape[d] for d in lb)
    lfree = math.prod(s for d, s in enumerate(lhs.shape) if d not in lc and d not in lb)
    rfree = math.prod(s for d, s in enumerate(rhs.shape) if d not in rc and d not in rb)
    return 2.0 * batch * lfree * rfree * contract


def _conv_flops(eqn) -> float:
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    out = eqn.outvars[0].aval
    dn = eqn.params["dimension_numbers"]
    # kernel: (out features, in features / groups, *spatial) in rhs_spec order
    rhs_spec = dn.rhs_spec
    in_per_group = rhs.shape[rhs_spec[1]]
    window = math.prod(rhs.shape[d] for d in rhs_spec[2:])
    return 2.0 * math.prod(out.shape) * in_per_group * window


def _sub_jaxprs(eqn):
    for name, value in eqn.params.items():
        vals = value if isinstance(value, (tuple, list)) else (value,)
        for v in vals:
            if hasattr(v, "eqns"):
                yield name, v
            elif hasattr(v, "jaxpr") and hasattr(v.jaxpr, "eqns"):
                yield name, v.jaxpr


def jaxpr_flops(jaxpr) -> float:
    """Matmul and convolution FLOPs of a (closed) jaxpr: ``dot_general`` counts
    ``2 * batch * M * N * K``, a convolution ``2 * output size * input features per group *
    kernel window``; a ``scan`` body counts ``length`` times, ``cond`` its costliest branch,
    ``while`` its body and condition once (the trip count is not static), every other nested
    jaxpr (``pjit``, ``remat``, custom derivatives) once."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name == "scan":
            total += eqn.params["length"] * jaxpr_flops(eqn.params["jaxpr"])
        elif name == "cond":
            total += max((jaxpr_flops(b) for b in eqn.params["branches"]), default=0.0)
        else:
            total += sum(jaxpr_flops(j) for _, j in _sub_jaxprs(eqn))
    return total


def xla_flops(compiled) -> float | None:
    """FLOPs of one call of an ``jax.stages.Compiled`` program on ONE device, by XLA's cost
    analysis (None when the backend gives none). Loop bodies count once."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    return float(cost["flops"])


@dataclasses.dataclass
class StepCost:
    """What one optimizer step costs and processes (global: all devices together)."""

    flops: float  # matmul/conv FLOPs of the jaxpr, scans counted by trip count
    xla_flops: float | None  # XLA cost analysis x devices (loop bodies once)
    params: int  # trained parameters
    samples: int  # global batch size
    tokens: int | None  # samples x the task's tokens_per_sample (None when the task has none)
    devices: int
    device_kind: str
    compute_dtype: str
    peak_flops_per_device: float | None  # None: no known peak (CPU)

    @property
    def peak_flops(self) -> float | None:
        return None if self.peak_flops_per_device is None else self.peak_flops_per_device * self.devices

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, workdir: str | os.PathLike) -> Path:
        path = Path(workdir) / COMPUTE_FILENAME
        tmp = path.with_name(f".{COMPUTE_FILENAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)
        return path


def read_step_cost(workdir: str | os.PathLike) -> StepCost | None:
    """The :class:`StepCost` a training run wrote to ``workdir/compute.json`` (None if absent)."""
    try:
        d = json.loads((Path(workdir) / COMPUTE_FILENAME).read_text())
    except (OSError, ValueError):
        return None
    names = {f.name for f in dataclasses.fields(StepCost)}
    return StepCost(**{k: v for k, v in d.items() if k in names})


def tokens_per_sample(task: Any) -> int | None:
    """The task's ``tokens_per_sample`` (frames of a window, tokens of a scale pyramid...)."""
    value = getattr(task, "tokens_per_sample", None)
    if callable(value):
        value = value()
    return None if value is None else int(value)


def step_cost(traced, compiled, *, params: Any, samples: int, mesh, compute_dtype: str = "float32",
              tokens_per_sample: int | None = None) -> StepCost:
    """The :class:`StepCost` of a step from its ``jax.stages.Traced`` (for the jaxpr) and its
    ``Compiled`` form (for XLA's count)."""
    devices = int(mesh.devices.size)
    per_device = xla_flops(compiled)
    kind = mesh.devices.flat[0].device_kind
    return StepCost(
        flops=float(jaxpr_flops(traced.jaxpr)),
        xla_flops=None if per_device is None else per_device * devices,
        params=int(sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(params))),
        samples=int(samples),
        tokens=None if tokens_per_sample is None else int(samples) * int(tokens_per_sample),
        devices=devices,
        device_kind=str(kind),
        compute_dtype=compute_dtype,
        peak_flops_per_device=device_peak_flops(str(kind), compute_dtype),
    )


def throughput(cost: StepCost | None, steps_per_sec: float) -> dict[str, float]:
    """The figures logged beside the loss: step time, samples/s, tokens/s, achieved FLOP/s and
    MFU (the last two only where known)."""
    out = {"steps_per_sec": steps_per_sec, "step_time": 1.0 / steps_per_sec if steps_per_sec > 0 else float("inf")}
    if cost is None:
        return out
    out["samples_per_sec"] = cost.samples * steps_per_sec
    if cost.tokens is not None:
        out["tokens_per_sec"] = cost.tokens * steps_per_sec
    out["flops_per_sec"] = cost.flops * steps_per_sec
    if cost.peak_flops:
        out["mfu"] = cost.flops * steps_per_sec / cost.peak_flops
    return out


def estimate_step_cost(cfg, task: Any = None) -> StepCost:
    """The :class:`StepCost` of ``cfg``'s training step without training: builds the task (or
    uses ``task``), draws one real batch, initialises the state and compiles the step exactly as
    :func:`mmar.train.train` would (same mesh, precision, accumulation). Nothing is written."""
    from mmar.train import loop

    if task is None:
        from mmar.tasks import make_task

        task = make_task(cfg)
    return loop.compile_step(task, cfg).cost

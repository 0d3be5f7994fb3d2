"""Model efficiency: parameter count, compiled FLOPs and wall-clock latency."""
from __future__ import annotations

import time
from typing import Any, Callable

import jax
import numpy as np


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), for the machine line of a benchmark."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def count_params(params: Any) -> int:
    """Total number of scalars in a parameter pytree (e.g. Flax ``variables['params']``).

    Every array leaf counts by its size; non-array leaves (Python scalars) count 1.
    """
    return int(sum(int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(params)))


def _cost_dict(cost: Any) -> dict:
    # jax has returned a dict, a list with one dict per device/computation, or None.
    if cost is None:
        return {}
    if isinstance(cost, dict):
        return cost
    if isinstance(cost, (list, tuple)):
        merged: dict = {}
        for item in cost:
            if not item:
                continue
            for k, v in dict(item).items():
                if k == "flops":
                    merged[k] = merged.get(k, 0.0) + float(v)
                else:
                    merged.setdefault(k, v)
        return merged
    return dict(cost)


def flops(fn: Callable, *args: Any, **kwargs: Any) -> float:
    """Floating-point operations of one call ``fn(*args, **kwargs)`` as counted by XLA.

    Compiles ``jax.jit(fn)`` for the given arguments (arrays or
    ``jax.ShapeDtypeStruct``) and reads ``cost_analysis()['flops']``. A matrix product
    ``(m, k) @ (k, n)`` counts ``2 m k n``. The count is for the compiled program on the
    current backend (fusion may change it slightly between backends).

    Raises:
      RuntimeError: the backend reports no FLOP count.
    """
    compiled = jax.jit(fn).lower(*args, **kwargs).compile()
    try:
        cost = _cost_dict(compiled.cost_analysis())
    except Exception as e:  # some backends do not implement cost analysis
        raise RuntimeError(f"cost analysis unavailable on backend {jax.default_backend()!r}: {e}") from e
    if "flops" not in cost:
        raise RuntimeError(
            f"XLA cost analysis on backend {jax.default_backend()!r} reports no 'flops' "
            f"(keys: {sorted(cost)})"
        )
    return float(cost["flops"])


def latency(fn: Callable, *args: Any, warmup: int = 3, iters: int = 50, **kwargs: Any) -> dict[str, float]:
    """Wall-clock time of ``fn(*args, **kwargs)`` in milliseconds.

    ``fn`` is called as given (wrap it in ``jax.jit`` to time compiled code); ``warmup``
    untimed calls absorb compilation, then ``iters`` timed calls each wait for their
    outputs with ``jax.block_until_ready``.

    Returns:
      ``{"median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms"}``.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    for _ in range(max(int(warmup), 0)):
        jax.block_until_ready(fn(*args, **kwargs))
    times = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args, **kwargs))
        times[i] = time.perf_counter() - t0
    ms = times * 1e3
    return {
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
    }

"""One process of the multi-process training test (``tests/test_train_distributed.py``; not a
test module).

Run as ``python tests/_distributed_worker.py SPEC.json``. The launcher sets the environment a
real launch would (``JAX_PLATFORMS=cpu``, ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
and, for a multi-process run, ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
``JAX_PROCESS_ID``); :func:`mmar.train.train` itself initialises ``jax.distributed`` from them.

The spec names a benchmark npz (keys ``split|clip|array``), the tiny AGRoL-MLP config and a list
of jobs, each ``{"name", "workdir", "steps", "fsdp", "evaluate"}`` (train, or resume ``workdir``
when it has a checkpoint; ``"evaluate": false`` hides the task's ``evaluate``, which saves its
compilation) or ``{"name", "load": workdir, "step"}`` (``mmar.run.load``). Each process writes
``out/<name>.p<process>.json``: which windows it read (every ``WindowDataset.gather``, prefetch
included) and which it fed to each step, as ``[clip name, start frame]``, its data-iterator
state, the loss history; process 0 also writes ``out/<name>.npz``, the final parameters.
"""
from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np

_LOCK = threading.Lock()
_READ: dict[int, list] = {}  # dataset number -> every window read from it: [clip name, start]
_BY_ROW: dict[str, list] = {}  # sha1 of a window's sparse input -> [clip name, start]


def _row_key(row: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(row).tobytes()).hexdigest()


def _record_reads() -> None:
    """Wrap ``WindowDataset.gather`` (runs in grain's read threads) to note every window read."""
    from mmar.data import pipeline

    gather = pipeline.WindowDataset.gather

    def recording_gather(self, ids):
        out = gather(self, ids)
        c, start = self.locate(ids)
        keys = [[self.clips.names[int(ci)], int(si)] for ci, si in zip(c, start)]
        with _LOCK:
            if not hasattr(self, "_read_number"):  # datasets numbered in order of first read
                self._read_number = len(_READ)
            _READ.setdefault(self._read_number, []).extend(keys)
            for row, key in zip(out["sparse"], keys):
                _BY_ROW[_row_key(row)] = key
        return out

    pipeline.WindowDataset.gather = recording_gather


class _RecordingIterator:
    """The task's iterator, noting the windows of each batch handed to the trainer."""

    def __init__(self, it, fed: list):
        self.it, self.fed = it, fed

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.it)
        with _LOCK:
            self.fed.append([_BY_ROW[_row_key(row)] for row in batch["sparse"]])
        return batch

    def get_state(self):
        return self.it.get_state()

    def set_state(self, state):
        self.it.set_state(state)


def _load_benchmark(path: str):
    from mmar.data.benchmark import SparseBenchmark

    splits: dict = {"train": {}, "val": {}, "test": {}}
    with np.load(path) as z:
        fps = float(z["__fps__"])
        for key in z.files:
            if key.startswith("__"):
                continue
            split, clip, name = key.split("|")
            splits[split].setdefault(clip, {})[name] = np.asarray(z[key])
    return SparseBenchmark(fps, splits)


def _config(spec: dict, job: dict):
    from mmar.tasks.agrol_mlp import AGRoLMLPModelConfig
    from mmar.tasks.base import BenchmarkDataConfig
    from mmar.train.config import Config, OptimConfig, TrainConfig

    c = spec["config"]
    return Config(
        name="dist_agrol_mlp",
        task="agrol_mlp",
        model=AGRoLMLPModelConfig(window=c["window"], dim=c["dim"], depth=c["depth"]),
        data=BenchmarkDataConfig(fps=spec["fps"], max_eval_clips=2, eval_batch=2),
        optim=OptimConfig(lr=1e-3, warmup_steps=0, schedule="constant", weight_decay=1e-4, grad_clip=1.0),
        train=TrainConfig(steps=job["steps"], batch_size=c["batch_size"], seed=0, log_every=1,
                          eval_every=c["eval_every"],
                          ckpt_every=c["ckpt_every"], keep_checkpoints=5, progress=False,
                          async_checkpoint=True, fsdp=job.get("fsdp", False),
                          fsdp_min_size=c["fsdp_min_size"]),
    )


def _host_params(tree) -> dict[str, np.ndarray]:
    """``{path: numpy array}`` of a tree of global arrays (gathered when sharded over processes)."""
    import jax
    from jax.experimental import multihost_utils

    out = {}
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            x = multihost_utils.process_allgather(x, tiled=True)
        out[jax.tree_util.keystr(path)] = np.asarray(x)
    return out


def _train_job(spec: dict, job: dict, bench) -> dict:
    import jax

    from mmar.tasks import make_task
    from mmar.train import train

    cfg = _config(spec, job)
    task = make_task(cfg, benchmark=bench)
    fed: list = []
    iterators: list = []
    make_iterator = task.train_iterator

    def train_iterator(seed, start_state):
        it = _RecordingIterator(make_iterator(seed, start_state), fed)
        iterators.append(it)
        return it

    task.train_iterator = train_iterator
    if not job.get("evaluate", True):
        task.evaluate = None  # the trainer evaluates only a task whose evaluate is callable
    with _LOCK:
        first = len(_READ)  # the datasets of earlier jobs (their iterators may still prefetch)
    t0 = time.perf_counter()
    state, history = train(task, cfg, job["workdir"])
    seconds = time.perf_counter() - t0
    params = _host_params(state.params)
    with _LOCK:
        read = sorted(key for number, keys in _READ.items() if number >= first for key in keys)
    return {
        "params": params,
        "info": {
            "process": jax.process_index(),
            "process_count": jax.process_count(),
            "local_devices": jax.local_device_count(),
            "mesh_devices": len(jax.tree_util.tree_leaves(state.params)[0].sharding.device_set),
            "step": int(state.step),
            "read": read,
            "fed": fed,
            "data_state": iterators[-1].get_state() if iterators else None,
            "losses": [[h["step"], h["train/loss"]] for h in history if "train/loss" in h],
            "evals": [h for h in history if any(k.startswith("eval/") for k in h)],
            "seconds": seconds,
            "param_shardings": sorted({str(x.sharding.spec) for x in jax.tree_util.tree_leaves(state.params)}),
        },
    }


def _load_job(job: dict) -> dict:
    import jax

    from mmar.run import load

    run = load(job["load"], step=job.get("step"))
    params = {jax.tree_util.keystr(k): np.asarray(v)
              for k, v in jax.tree_util.tree_leaves_with_path(run.variables["params"])}
    return {"params": params, "info": {"process": 0, "step": run.step, "checkpoint": str(run.checkpoint)}}


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    _record_reads()
    bench = _load_benchmark(spec["data"])
    for job in spec["jobs"]:
        result = _load_job(job) if "load" in job else _train_job(spec, job, bench)
        me = result["info"]["process"]
        (out / f"{job['name']}.p{me}.json").write_text(json.dumps(result["info"]))
        if me == 0:
            np.savez(out / f"{job['name']}.npz", **result["params"])
        print(f"worker: {job['name']} done (process {me})", file=sys.stderr, flush=True)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        sys.exit(1)

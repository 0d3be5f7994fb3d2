"""Small synthetic Bandai-like benchmark for the sparse-body task tests (not a test module)."""
from __future__ import annotations

import numpy as np

from mmar import geometry as g
from mmar.data.benchmark import SparseBenchmark
from mmar.data.clip import Clip, clips_to_arrays, smpl22_skeleton
import dataclasses

from mmar.tasks import task_class
from mmar.tasks.base import BenchmarkDataConfig
from mmar.train.config import Config, OptimConfig, TrainConfig


def synthetic_benchmark(seed: int = 0, fps: float = 30.0) -> SparseBenchmark:
    rng = np.random.default_rng(seed)
    offsets = rng.normal(scale=0.15, size=(22, 3)).astype(np.float32)
    splits = {}
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        clips = []
        for i in range(n):
            T = int(rng.integers(30, 50))
            t = np.arange(T)[:, None, None] / fps
            phase = rng.uniform(0, 6, size=(1, 22, 3))
            aa = (0.4 * np.sin(2 * np.pi * 0.8 * t + phase)).astype(np.float32)
            root = np.stack([0.5 * t[:, 0, 0], 0.9 + 0 * t[:, 0, 0], 0 * t[:, 0, 0]], -1).astype(np.float32)
            name = f"dataset-{1 + i % 2}_walk_normal_{split}{i:02d}"
            clips.append(Clip(name, smpl22_skeleton(offsets), np.asarray(g.axis_angle_to_matrix(aa)), root, fps))
        splits[split] = dict(zip([c.name for c in clips], clips_to_arrays(clips)))
    return SparseBenchmark(fps, splits)


def tiny_config(kind: str, window: int = 8, steps: int = 4, **model) -> Config:
    """A tiny config of task ``kind`` (``agrol_mlp``, ``mlp_vqvae`` or ``mem_mlp``)."""
    cls = task_class(kind).ModelConfig
    small = dict(window=window, dim=32, depth=2, head_depth=1, vq_hidden=32, vq_depth=1, vq_code_dim=8,
                 vq_codebook_size=16)
    known = {f.name for f in dataclasses.fields(cls)}
    m = cls(**{**{k: v for k, v in small.items() if k in known}, **model})
    return Config(
        name=f"tiny_{kind}",
        task=kind,
        model=m,
        data=BenchmarkDataConfig(max_eval_clips=2, eval_batch=2),
        optim=OptimConfig(lr=1e-3, warmup_steps=0, schedule="constant"),
        train=TrainConfig(steps=steps, batch_size=8, log_every=2, eval_every=0, ckpt_every=2,
                          progress=False, async_checkpoint=False),
    )

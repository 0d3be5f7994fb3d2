"""model.frame="heading" for the first stages and MotionMAR: the MLP and TMT VQ-VAEs train on
windows in their heading frame (losses unchanged by a turn and a floor shift), a second stage
refuses a VQ-VAE run of another frame (older runs read as "world"), and a heading-mode MotionMAR
gives the same metrics on a turned and moved split (its training loss too); a world-mode one does
not. Synthetic clips (tests/_sparse_body_fixtures.py), randomly initialised tiny models."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _sparse_body_fixtures import synthetic_benchmark, tiny_config
from mmar.data.benchmark import SparseBenchmark
from mmar.errors import ConfigError
from mmar.eval.sparse import METRIC_KEYS, sparse_metrics, turn_clip, turn_clips
from mmar.models.motionmar import init_motionmar
from mmar.tasks import make_task, task_class
from mmar.tasks.base import BenchmarkDataConfig
from mmar.train.config import CONFIG_FILENAME, Config, OptimConfig, TrainConfig, save_config

TURNS = ((37.0, (3.5, -2.0)), (90.0, (3.5, -2.0)), (180.0, (-1.0, 4.0)))


def tiny(kind: str, **model) -> Config:
    """A tiny ``tmt_vqvae`` or ``motionmar`` config (as in tests/test_tasks_motionmar.py)."""
    cls = task_class(kind).ModelConfig
    small = dict(lengths=(5, 10, 20), vq_width=32, vq_depth=1, codebook_size=32, code_dim=8, width=32, depth=1, heads=2,
                 mrn_hidden=16, mrn_layers=1, drop_path=0.0, predict_chunk=32)
    known = {f.name for f in dataclasses.fields(cls)}
    m = cls(**{**{k: v for k, v in small.items() if k in known}, **model})
    return Config(name=f"tiny_{kind}", task=kind, model=m, data=BenchmarkDataConfig(max_eval_clips=2),
                  optim=OptimConfig(lr=2e-3, warmup_steps=0, schedule="constant"),
                  train=TrainConfig(steps=2, batch_size=8, log_every=2, eval_every=0, ckpt_every=2, progress=False,
                                    async_checkpoint=False))


@pytest.fixture(scope="module")
def bench():
    return synthetic_benchmark()


def _windows(bench, n: int, starts=(1, 5, 9)):
    """Training windows of ``n`` frames from the first two train clips."""
    clips = [bench["train"][k] for k in sorted(bench["train"])[:2]]
    return {k: np.stack([c[k][s:s + n] for c in clips for s in starts]) for k in ("sparse", "rot6d", "joints")}


def _motionmar(bench, frame):
    """A randomly initialised tiny MotionMAR task (a non-trivial MRN) and its variables as saved."""
    task = make_task(tiny("motionmar", vqvae_workdir="unused", frame=frame), benchmark=bench)
    key = jax.random.PRNGKey(0)
    v = dict(init_motionmar(task.model, key))
    out = v["params"]["mrn"]["out"]
    v["params"]["mrn"]["out"] = {**out, "kernel": 0.05 * jax.random.normal(key, out["kernel"].shape)}
    v["vqvae"] = task.vq_model.init({"params": key, "dropout": key, "vq": key}, jnp.zeros((1, 20, 132)), None,
                                    jnp.zeros((1, 20, 54)))
    return task, v


def _relative(a, b):
    return {k: abs(b[k] / a[k] - 1.0) for k in METRIC_KEYS if k in a}


def test_motionmar_turned_split_gives_the_same_metrics(bench):
    """5 frames per window (``hop=5``): every returned frame is turned back with its window's
    last-frame heading, so the whole body turns and moves with the split."""
    gt = bench["test"]
    worst = {}
    for frame in ("heading", "world"):
        task, variables = _motionmar(bench, frame)
        base_pred = task.predict_clips(variables, gt, hop=5)
        base = sparse_metrics(base_pred, gt)
        worst[frame] = 0.0
        for yaw, shift in (TURNS if frame == "heading" else TURNS[1:2]):  # one turn shows the world layout fails
            turned = turn_clips(gt, yaw, shift)
            pred = task.predict_clips(variables, turned, hop=5)
            rel = _relative(base, sparse_metrics(pred, turned))
            worst[frame] = max(worst[frame], max(rel.values()))
            if frame == "heading":
                for n in gt:
                    np.testing.assert_allclose(turn_clip(base_pred[n], yaw, shift)["joints"], pred[n]["joints"],
                                               atol=1e-4)
    print("motionmar", worst)
    assert worst["heading"] < 0.01, worst  # in fact float rounding
    assert worst["world"] > 0.01, worst


@pytest.mark.parametrize("kind", ["mlp_vqvae", "tmt_vqvae", "motionmar"])
def test_training_losses_are_invariant(kind, bench):
    """The loss of a turned and moved batch equals the original's in heading mode (the VQ-VAEs'
    reconstruction and codebook terms, and their evaluation on a moved split; MotionMAR's
    cross-entropy against heading-frame codes and its MRN term); world mode reads another batch."""
    for frame in ("heading", "world"):
        if kind == "motionmar":
            task, variables = _motionmar(bench, frame)
            params, extra = variables["params"], {"vqvae": variables["vqvae"]}
            n = task.frames_per_window
        else:
            cfg = tiny_config(kind, frame=frame) if kind == "mlp_vqvae" else tiny(kind, frame=frame)
            task = make_task(cfg, benchmark=bench)
            n = task.frames_per_window
            variables = task.init(jax.random.PRNGKey(0), _windows(bench, n))
            params, extra = variables["params"], {k: v for k, v in variables.items() if k != "params"}
        batch = _windows(bench, n)
        turned = turn_clip(batch, 123.0, (-3.0, 2.5))
        fn = jax.jit(lambda p, b: task.loss(p, extra, b, jax.random.PRNGKey(3), 0)[0])
        la, lb = float(fn(params, batch)), float(fn(params, turned))
        if frame == "heading":
            assert lb == pytest.approx(la, rel=1e-4), kind
            if kind != "motionmar":  # the evaluation too (MPJPE per scale, codebook use ...)
                moved = SparseBenchmark(bench.fps, {s: turn_clips(bench[s], 123.0, (-3.0, 2.5)) for s in ("val",)})
                ea = task.evaluate(params, extra)
                eb = make_task(task.cfg, benchmark=moved).evaluate(params, extra)
                assert set(ea) == set(eb) and all(eb[k] == pytest.approx(ea[k], rel=1e-4, abs=1e-6) for k in ea)
        else:
            assert abs(lb / la - 1) > 1e-3, kind


def test_motionmar_fk_position_loss(bench):
    """``model.pos_weight`` adds the MRN output's FK joint-position error (metres) to the loss:
    reported as ``mrn_pos``, the loss grows by exactly ``pos_weight`` times it, a turned and
    moved batch gives the same loss in heading mode, and the batch carries the skeleton offsets."""
    task, variables = _motionmar(bench, "heading")
    params, extra = variables["params"], {"vqvae": variables["vqvae"]}
    n = task.frames_per_window
    clips = [bench["train"][k] for k in sorted(bench["train"])[:2]]
    batch = _windows(bench, n)
    batch["offsets"] = np.stack([c["offsets"] for c in clips for _ in (1, 5, 9)])
    turned = {**turn_clip({k: batch[k] for k in ("sparse", "rot6d", "joints")}, 123.0, (-3.0, 2.5)),
              "offsets": batch["offsets"]}
    with_pos = make_task(dataclasses.replace(task.cfg, model=dataclasses.replace(task.m, pos_weight=2.0)),
                         benchmark=bench)
    assert "offsets" in with_pos.train_keys and "offsets" not in task.train_keys
    key = jax.random.PRNGKey(3)
    l0, (m0, _) = task.loss(params, extra, batch, key, 0)
    l1, (m1, _) = with_pos.loss(params, extra, batch, key, 0)
    lt, (mt, _) = with_pos.loss(params, extra, turned, key, 0)
    assert "mrn_pos" not in m0 and 0.0 < float(m1["mrn_pos"]) < 2.0
    assert float(l1) == pytest.approx(float(l0) + 2.0 * float(m1["mrn_pos"]), rel=1e-5)
    assert float(lt) == pytest.approx(float(l1), rel=1e-4)
    assert float(mt["mrn_pos"]) == pytest.approx(float(m1["mrn_pos"]), rel=1e-4)


def test_vqvae_frame_must_match_the_second_stage(bench, tmp_path):
    """Building a Mem-MLP or MotionMAR over a VQ-VAE run of another frame fails with a ConfigError
    naming both frames; a run saved before the option (no ``model.frame``) reads as "world"."""
    cases = (("mlp_vqvae", "mem_mlp", tiny_config("mlp_vqvae"), lambda **m: tiny_config("mem_mlp", **m)),
             ("tmt_vqvae", "motionmar", tiny("tmt_vqvae"), lambda **m: tiny("motionmar", **m)))
    for vq_kind, kind, vq_cfg, second in cases:
        for vq_frame in ("world", "heading", None):  # None: an older run without the field
            d = tmp_path / f"{vq_kind}_{vq_frame}"
            cfg = dataclasses.replace(vq_cfg, model=dataclasses.replace(vq_cfg.model, frame=vq_frame or "world"))
            save_config(cfg, d)
            if vq_frame is None:
                payload = json.loads((d / CONFIG_FILENAME).read_text())
                del payload["config"]["model"]["frame"]
                (d / CONFIG_FILENAME).write_text(json.dumps(payload))
            have = vq_frame or "world"
            for frame in ("world", "heading"):
                if frame == have:
                    make_task(second(vqvae_workdir=str(d), frame=frame), benchmark=bench)
                else:
                    with pytest.raises(ConfigError, match=f"model.frame='{frame}'.*model.frame='{have}'"):
                        make_task(second(vqvae_workdir=str(d), frame=frame), benchmark=bench)
    with pytest.raises(ConfigError, match="model.frame"):
        make_task(tiny("tmt_vqvae", frame="head"), benchmark=bench)
    with pytest.raises(ConfigError, match="MotionMARConfig.frame"):
        make_task(tiny("motionmar", vqvae_workdir="unused", frame="floor"), benchmark=bench)

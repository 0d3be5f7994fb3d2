"""Training-signal options of the sparse tasks: left-right mirroring and random yaw keep every
array of a batch consistent (forward kinematics, the 54 sparse numbers), dataset-1 repetition,
AGRoL-MLP's FK position loss and Mem-MLP's scheduled memory."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _sparse_body_fixtures import synthetic_benchmark, tiny_config
from mmar import geometry
from mmar.data.augment import MIRROR_JOINTS, augment_batch, mirror_batch, yaw_batch
from mmar.data.clip import Clip, clips_to_arrays, smpl22_skeleton
from mmar.data.pipeline import ClipArrays
from mmar.errors import ConfigError
from mmar.models import body
from mmar.models.mem_mlp import training_memory
from mmar.skeleton import SMPL22_NAMES, SPARSE_JOINTS
from mmar.tasks import make_task
from mmar.tasks.agrol_mlp import position_error
from mmar.tasks.base import repeat_dataset1


@pytest.fixture(scope="module")
def bench():
    return synthetic_benchmark()


def _batch(seed=0, T=12):
    """Two clips of random motion, every array from the library's own clip conversion."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(2):
        offsets = rng.normal(scale=0.15, size=(22, 3)).astype(np.float32)
        aa = rng.normal(scale=0.5, size=(T, 22, 3)).astype(np.float32)
        root = rng.normal(size=(T, 3)).astype(np.float32)
        clip = Clip(f"c{i}", smpl22_skeleton(offsets), np.asarray(geometry.axis_angle_to_matrix(aa)), root, 30.0)
        out.append(clips_to_arrays([clip])[0])
    return {k: np.stack([o[k] for o in out]) for k in ("sparse", "rot6d", "joints", "offsets")}


def _check_consistent(b):
    """FK of rot6d with offsets gives joints; the sparse numbers are the trackers' global
    rotations, rotation velocities, positions and position differences."""
    for i in range(b["sparse"].shape[0]):
        G, J = body.fk_rot6d(b["rot6d"][i], b["offsets"][i][None], root_pos=b["joints"][i][:, 0])
        np.testing.assert_allclose(J, b["joints"][i], atol=1e-5)
        sp = np.asarray(b["sparse"][i])
        Gs = np.asarray(G)[:, list(SPARSE_JOINTS)]
        np.testing.assert_allclose(geometry.rot6d_to_matrix(sp[:, :18].reshape(-1, 3, 6)), Gs, atol=1e-5)
        vel = np.einsum("tkji,tkjl->tkil", Gs[:-1], Gs[1:])
        np.testing.assert_allclose(geometry.rot6d_to_matrix(sp[1:, 18:36].reshape(-1, 3, 6)), vel, atol=1e-5)
        pos = np.asarray(b["joints"][i])[:, list(SPARSE_JOINTS)]
        np.testing.assert_allclose(sp[:, 36:45].reshape(-1, 3, 3), pos, atol=1e-5)
        np.testing.assert_allclose(sp[1:, 45:54].reshape(-1, 3, 3), pos[1:] - pos[:-1], atol=1e-5)


def test_the_test_batch_is_consistent():
    _check_consistent(_batch())


def test_mirror_is_a_consistent_reflection_and_an_involution():
    b = _batch()
    m = mirror_batch(b)
    _check_consistent(m)
    left, right = SMPL22_NAMES.index("left_wrist"), SMPL22_NAMES.index("right_wrist")
    np.testing.assert_allclose(m["joints"][..., left, :], b["joints"][..., right, :] * np.array([-1, 1, 1]), atol=1e-6)
    twice = mirror_batch(m)
    for k in b:
        np.testing.assert_allclose(twice[k], b[k], atol=1e-6)
    assert sorted(MIRROR_JOINTS) == list(range(22)) and MIRROR_JOINTS[left] == right


def test_mirror_flags_pick_samples():
    b = _batch()
    m = mirror_batch(b, jnp.array([True, False]))
    np.testing.assert_allclose(m["sparse"][1], b["sparse"][1])
    np.testing.assert_allclose(m["sparse"][0], mirror_batch(b)["sparse"][0])


def test_yaw_turns_everything_consistently():
    b = _batch(seed=1)
    y = yaw_batch(b, jnp.array([0.7, -2.0]))
    _check_consistent(y)
    assert not np.allclose(y["joints"], b["joints"], atol=1e-3)
    # heights and distances are kept
    np.testing.assert_allclose(y["joints"][..., 1], b["joints"][..., 1], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(y["joints"])[..., [0, 2]], axis=-1),
                               np.linalg.norm(b["joints"][..., [0, 2]], axis=-1), atol=1e-5)


def test_augment_identity_when_off_and_random_when_on():
    b = _batch()
    assert augment_batch(b, jax.random.PRNGKey(0)) is b
    a1 = augment_batch(b, jax.random.PRNGKey(0), mirror=0.5, yaw=True)
    a2 = augment_batch(b, jax.random.PRNGKey(1), mirror=0.5, yaw=True)
    _check_consistent(a1)
    assert not np.allclose(a1["sparse"], a2["sparse"])


def test_repeat_dataset1(bench):
    clips = ClipArrays.from_arrays(bench.subset("train"), ("sparse",))
    assert repeat_dataset1(clips, 1) is clips
    rep = repeat_dataset1(clips, 3)
    n1 = sum(n.startswith("dataset-1_") for n in clips.names)
    assert rep.num_clips == clips.num_clips + 2 * n1
    d1 = [i for i, n in enumerate(clips.names) if n.startswith("dataset-1_")]
    assert rep.num_frames == clips.num_frames + 2 * int(clips.lengths[d1].sum())
    with pytest.raises(ConfigError, match="dataset1_repeat"):
        repeat_dataset1(clips, 0)


def test_position_error_is_zero_for_the_truth_in_any_frame():
    from mmar.models import heading

    b = _batch()
    assert float(position_error(b["rot6d"], b["joints"], b["offsets"])) < 1e-5
    f = heading.window_frame(jnp.asarray(b["sparse"]))
    err = position_error(heading.pose_to_frame(b["rot6d"], f), b["joints"], b["offsets"], f)
    assert float(err) < 1e-5
    noisy = b["rot6d"] + 0.1
    assert float(position_error(noisy, b["joints"], b["offsets"])) > 1e-3


def test_agrol_loss_with_the_new_signal(bench):
    """FK position loss in the heading frame, mirroring and dataset-1 repetition together: the
    training batches carry the offsets and the gradient is finite (the head's zero error)."""
    cfg = tiny_config("agrol_mlp", steps=4, frame="heading", pos_weight=1.0)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, mirror=0.5, dataset1_repeat=3))
    task = make_task(cfg, benchmark=bench)
    assert "offsets" in task.train_keys
    batch = next(iter(task.train_iterator(0)))
    params = task.init(jax.random.PRNGKey(0), batch)["params"]
    _, (metrics, _) = task.loss(params, {}, batch, jax.random.PRNGKey(1), 0)
    assert {"rot", "pos"} <= set(metrics) and float(metrics["pos"]) > 0
    grads = jax.grad(lambda p: task.loss(p, {}, batch, jax.random.PRNGKey(1), 0)[0])(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_scheduled_memory_mix():
    """``mix=0``: the ground truth; ``mix=1``: the blend of ``memory_feed=blend``."""
    b = _batch()
    rot, sparse = jnp.asarray(b["rot6d"]), jnp.asarray(b["sparse"])
    pred = rot + 1.0
    gt = training_memory(sparse, rot)
    m0 = training_memory(sparse, rot, rot6d_prev_pred=pred, rng=jax.random.PRNGKey(0), mix=0.0)
    m1 = training_memory(sparse, rot, rot6d_prev_pred=pred, rng=jax.random.PRNGKey(0))
    mh = training_memory(sparse, rot, rot6d_prev_pred=pred, rng=jax.random.PRNGKey(0), mix=0.5)
    for k in gt:
        if gt[k] is not None:
            np.testing.assert_allclose(m0[k], gt[k], atol=1e-6)
    key = next(k for k in gt if gt[k] is not None and not np.allclose(m1[k], gt[k]))
    d1 = float(jnp.abs(m1[key] - gt[key]).mean())
    dh = float(jnp.abs(mh[key] - gt[key]).mean())
    assert 0 < dh < d1


def test_memory_noise_drift_and_jitter():
    """``noise``: zero leaves the memory as it is; otherwise the motion moves by a per-joint offset
    held over the window (drift) plus a smaller per-frame part, samples at different scales, the
    rotations stay orthonormal, and a missing key is a clear error."""
    from mmar import geometry

    b = _batch()
    rot, sparse = jnp.asarray(b["rot6d"]), jnp.asarray(b["sparse"])
    gt = training_memory(sparse, rot)
    same = training_memory(sparse, rot, noise=0.0)
    np.testing.assert_allclose(same["rot6d"], gt["rot6d"], atol=1e-6)
    with pytest.raises(ConfigError, match="noise_rng"):
        training_memory(sparse, rot, noise=0.1)
    key = jax.random.PRNGKey(3)
    m = training_memory(sparse, rot, noise=0.2, noise_rng=key)["rot6d"]
    mat = geometry.rot6d_to_matrix(m)
    np.testing.assert_allclose(jnp.einsum("...ji,...jk->...ik", mat, mat), np.broadcast_to(np.eye(3), mat.shape),
                               atol=1e-4)
    d = np.asarray(m - gt["rot6d"])
    assert np.abs(d).mean() > 1e-3
    # drift dominates: the window-mean of the change is most of it (per-frame jitter is half the scale)
    mean_t = np.abs(d.mean(axis=-3)).mean()
    resid = np.abs(d - d.mean(axis=-3, keepdims=True)).mean()
    assert mean_t > resid


def test_mem_mlp_memory_noise_trains(bench):
    """``model.memory_noise`` reaches the training memory: the same step with and without it gives
    different, finite losses and gradients."""
    def loss(noise):
        task = make_task(tiny_config("mem_mlp", use_code=False, memory_noise=noise), benchmark=bench)
        batch = next(iter(task.train_iterator(0)))
        params = task.init(jax.random.PRNGKey(0), batch)["params"]
        return task, batch, params, task.loss(params, {}, batch, jax.random.PRNGKey(1), 0)[0]

    _, _, _, clean = loss(0.0)
    task, batch, params, noisy = loss(0.5)
    assert np.isfinite(float(noisy)) and float(noisy) != float(clean)
    grads = jax.grad(lambda p: task.loss(p, {}, batch, jax.random.PRNGKey(1), 0)[0])(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    with pytest.raises(ConfigError, match="memory_noise"):
        make_task(tiny_config("mem_mlp", use_code=False, memory_noise=-1.0), benchmark=bench)


def test_mem_mlp_scheduled_memory_config_errors(bench):
    cfg = tiny_config("mem_mlp", use_code=False, memory_feed="scheduled", memory_ramp=0.0)
    with pytest.raises(ConfigError, match="memory_ramp"):
        make_task(cfg, benchmark=bench)
    cfg = tiny_config("mem_mlp", use_code=False, memory_feed="scheduled")
    assert make_task(cfg, benchmark=bench).frames_per_window == cfg.model.window + 2


def test_mem_mlp_fk_position_loss_in_the_heading_frame(bench):
    """``model.pos_weight`` on Mem-MLP: the FK loss of the rotation head compares bodies in the
    window's heading frame (zero for the truth expressed there), adds ``pos_weight * fk_pos`` to
    the paper's loss, and its batches carry the offsets."""
    from mmar.models import heading

    b = _batch()
    f = heading.window_frame(jnp.asarray(b["sparse"]))
    rot_f = heading.pose_to_frame(jnp.asarray(b["rot6d"]), f)
    joints_f = heading.points_to_frame(jnp.asarray(b["joints"]), f)
    assert float(position_error(rot_f, joints_f, b["offsets"])) < 1e-5

    def loss(weight):
        cfg = tiny_config("mem_mlp", use_code=False, frame="heading", pos_weight=weight)
        task = make_task(cfg, benchmark=bench)
        batch = next(iter(task.train_iterator(0)))
        variables = task.init(jax.random.PRNGKey(0), batch)
        params = variables.pop("params")
        return task, batch, params, task.loss(params, variables, batch, jax.random.PRNGKey(1), 0)

    task, batch, params, (with_fk, (metrics, _)) = loss(2.0)
    assert "offsets" in task.train_keys and float(metrics["fk_pos"]) > 0
    batch0 = {k: v for k, v in batch.items() if k != "offsets"}
    cfg0 = tiny_config("mem_mlp", use_code=False, frame="heading")
    base, _ = make_task(cfg0, benchmark=bench).loss(params, {}, batch0, jax.random.PRNGKey(1), 0)
    np.testing.assert_allclose(float(with_fk), float(base) + 2.0 * float(metrics["fk_pos"]), rtol=1e-5)
    grads = jax.grad(lambda p: task.loss(p, {}, batch, jax.random.PRNGKey(1), 0)[0])(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))

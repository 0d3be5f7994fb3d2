"""Mesh, batch/param sharding and data-parallel / FSDP training (mmar.train.sharding)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from mmar.errors import ConfigError
from mmar.train import sharding as shd

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def test_fsdp_rule():
    rule = shd.fsdp_partition_spec
    # large enough: the largest dimension divisible by the axis size is sharded
    assert rule((512, 1024), 8, min_size=1000) == P(None, "fsdp")
    assert rule((1024, 512), 8, min_size=1000) == P("fsdp", None)
    assert rule((1026, 512), 8, min_size=1000) == P(None, "fsdp")  # 1026 % 8 != 0
    assert rule((3, 3, 64, 128), 4, min_size=1000) == P(None, None, None, "fsdp")
    # small params, scalars, indivisible shapes, or no fsdp axis: replicated
    assert rule((16, 16), 8, min_size=1000) == P()
    assert rule((), 8, min_size=0) == P()
    assert rule((1001, 999), 8, min_size=10) == P()
    assert rule((512, 1024), 1, min_size=10) == P()


def test_single_device_mesh_and_batch():
    mesh = shd.make_mesh()
    assert mesh.axis_names == ("data", "fsdp")
    assert mesh.devices.size == jax.device_count()
    assert shd.make_mesh(fsdp=True).shape["fsdp"] == jax.device_count()
    batch = {"x": np.arange(24, dtype=np.float32).reshape(8, 3), "y": np.zeros(8, np.int32)}
    g = shd.shard_batch(batch, mesh)
    assert isinstance(g["x"], jax.Array) and g["x"].shape == (8, 3)
    np.testing.assert_array_equal(np.asarray(g["x"]), batch["x"])
    assert g["x"].sharding.spec == P(("data", "fsdp"))
    tree = {"w": jax.ShapeDtypeStruct((1024, 1024), np.float32), "b": np.zeros(3)}
    shardings = shd.state_shardings(tree, mesh)
    assert shardings["w"].spec == P() and shardings["b"].spec == P()


def test_mesh_errors():
    n = jax.device_count()
    with pytest.raises(ConfigError, match="train.mesh_shape"):
        shd.make_mesh(mesh_shape=(n + 1, 1))
    with pytest.raises(ConfigError, match="train.mesh_shape"):
        shd.make_mesh(mesh_shape=(-1, -1))
    with pytest.raises(ConfigError, match="train.mesh_shape"):
        shd.make_mesh(mesh_shape=(1, 1, 1))
    with pytest.raises(ConfigError, match="train.num_devices"):
        shd.make_mesh(num_devices=n + 1)
    with pytest.raises(ConfigError, match="batch"):
        shd.shard_batch({"x": np.float32(1.0)}, shd.make_mesh())
    assert shd.make_mesh(mesh_shape=(-1, 1)).shape == {"data": n, "fsdp": 1}


def test_no_distributed_init_without_env(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "MMAR_DISTRIBUTED"):
        monkeypatch.delenv(var, raising=False)
    assert shd.maybe_initialize_distributed() is False
    monkeypatch.setenv("JAX_NUM_PROCESSES", "1")
    assert shd.maybe_initialize_distributed() is False


_CHILD = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import jax, numpy as np
    from _toy_task import ToyTask, flat_params, make_batch, toy_config
    from mmar.train import train
    from mmar.train.sharding import make_mesh, shard_batch

    wd = Path(sys.argv[1])
    out = {"device_count": jax.device_count()}
    seen = []

    def cfg(**kw):
        return toy_config(steps=4, batch_size=16, log_every=2, ckpt_every=4, optim=dict(decay_steps=6), **kw)

    def max_diff(a, b):
        fa, fb = flat_params(a), flat_params(b)
        return max(float(np.max(np.abs(fa[k] - fb[k]))) for k in fa)

    c8 = cfg()
    s8, h8 = train(ToyTask(c8, on_batch_sharding=seen.append), c8, wd / "dp8")
    c1 = cfg(num_devices=1)
    s1, h1 = train(ToyTask(c1), c1, wd / "dp1")
    sh = seen[0]
    out["batch_devices"] = sh.num_devices
    out["batch_rows_per_device"] = sh.shard_shape((16, 8))[0]
    out["batch_replicated"] = bool(sh.is_fully_replicated)
    out["losses8"] = [h["train/loss"] for h in h8 if "train/loss" in h]
    out["losses1"] = [h["train/loss"] for h in h1 if "train/loss" in h]
    out["dp_diff"] = max_diff(s8.params, s1.params)
    out["dp_diff_bn"] = max_diff(s8.extra_vars, s1.extra_vars)
    k8 = s8.params["hidden"]["kernel"]
    out["dp_param_devices"] = len(k8.sharding.device_set)
    out["dp_param_replicated"] = bool(k8.sharding.is_fully_replicated)

    gb = shard_batch(make_batch(0, 0, 16, 8), make_mesh())
    out["shard_batch_shards"] = len(gb["x"].addressable_shards)
    out["shard_batch_shape"] = list(gb["x"].addressable_shards[0].data.shape)

    cf = cfg(mesh_shape=(2, 4), fsdp=True, fsdp_min_size=64)
    sf, hf = train(ToyTask(cf), cf, wd / "fsdp")
    kf = sf.params["hidden"]["kernel"]  # (8, 16): 128 elements >= 64
    out["fsdp_kernel_spec"] = [str(a) for a in kf.sharding.spec]
    out["fsdp_kernel_shard"] = list(kf.addressable_shards[0].data.shape)
    out["fsdp_bias_replicated"] = bool(sf.params["out"]["bias"].sharding.is_fully_replicated)
    mu = sf.opt_state[1][0].mu["hidden"]["kernel"]
    out["fsdp_mu_spec"] = [str(a) for a in mu.sharding.spec]
    out["fsdp_ema_spec"] = [str(a) for a in sf.ema_params["hidden"]["kernel"].sharding.spec]
    out["fsdp_diff"] = max_diff(sf.params, s1.params)
    # restore the FSDP checkpoint straight into the sharded layout (what resuming does)
    from mmar.train.checkpoint import CheckpointManager
    target = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), sf)
    with CheckpointManager(wd / "fsdp") as mngr:
        rs = mngr.restore(target).state
    out["fsdp_restored_spec"] = [str(a) for a in rs.params["hidden"]["kernel"].sharding.spec]
    out["fsdp_restored_diff"] = max_diff(rs, sf)

    # gradient accumulation over 8 devices: 2 micro-batches of 8 rows, one row per device each
    ca = cfg(grad_accum=2)
    sa, _ = train(ToyTask(ca, norm=False, noise=0.0), ca, wd / "accum8")
    c1n = cfg(num_devices=1)
    s1n, _ = train(ToyTask(c1n, norm=False, noise=0.0), c1n, wd / "plain1")
    out["accum_diff"] = max_diff(sa.params, s1n.params)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
    wd = tmp_path_factory.mktemp("eight")
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(wd)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT"):])


def test_data_parallel_on_8_devices(eight_devices):
    r = eight_devices
    assert r["device_count"] == 8
    # (a) it trains
    assert all(np.isfinite(r["losses8"])) and r["losses8"][-1] < r["losses8"][0]
    # (b) the batch inside the train step is split over all 8 devices, 2 rows each
    assert r["batch_devices"] == 8 and r["batch_rows_per_device"] == 2 and not r["batch_replicated"]
    assert r["shard_batch_shards"] == 8 and r["shard_batch_shape"] == [2, 8]
    # params are replicated on every device
    assert r["dp_param_devices"] == 8 and r["dp_param_replicated"]
    # (c) same result as one device for the same global batch
    assert r["dp_diff"] < 1e-5 and r["dp_diff_bn"] < 1e-5
    np.testing.assert_allclose(r["losses8"], r["losses1"], rtol=1e-5)


def test_fsdp_on_8_devices(eight_devices):
    r = eight_devices
    assert r["fsdp_kernel_spec"] == ["None", "fsdp"] and r["fsdp_kernel_shard"] == [8, 4]
    assert r["fsdp_bias_replicated"]
    assert r["fsdp_mu_spec"] == ["None", "fsdp"] and r["fsdp_ema_spec"] == ["None", "fsdp"]
    assert r["fsdp_diff"] < 1e-5
    assert r["fsdp_restored_spec"] == ["None", "fsdp"] and r["fsdp_restored_diff"] == 0.0


def test_gradient_accumulation_on_8_devices(eight_devices):
    """Micro-batches split over all 8 devices add up to one device's whole-batch update."""
    assert eight_devices["accum_diff"] < 1e-5

"""TFLite export: JAX/TF StableHLO guard, AGRoL-MLP window export, Mem-MLP streaming export
driven by the numpy-only runtime, atomic writes and option errors."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from mmar.errors import ConfigError  # noqa: E402
from mmar.export.runtime import StreamRuntime  # noqa: E402
from mmar.export.tflite import (  # noqa: E402
    agrol_window_fn,
    agrol_window_specs,
    export_tflite,
    mem_mlp_state_spec,
    mem_mlp_stream_fn,
    mem_mlp_stream_specs,
    run_tflite,
)
from mmar.models.agrol_mlp import AGRoLMLP, AGRoLMLPConfig  # noqa: E402
from mmar.models.mem_mlp import MemMLP, MemMLPConfig, make_streamer, predict_clip  # noqa: E402
from mmar.models.mlp_vqvae import MLPVQVAE, MLPVQVAEConfig  # noqa: E402


def test_top_k_guard(tmp_path):
    """Fails loudly when the installed JAX emits StableHLO that TensorFlow cannot read."""

    def fn(x):
        values, indices = jax.lax.top_k(x * 2.0 + 1.0, 3)
        return {"values": values, "indices": indices}

    x = np.random.RandomState(0).randn(4, 10).astype(np.float32)
    path = tmp_path / "topk.tflite"
    model = export_tflite(fn, {"x": ((4, 10), np.float32)}, path)
    assert path.read_bytes() == model
    out = run_tflite(path, {"x": x})
    ref = jax.jit(fn)(x)
    np.testing.assert_allclose(out["values"], np.asarray(ref["values"]), atol=1e-6)
    np.testing.assert_array_equal(out["indices"], np.asarray(ref["indices"]))


def test_agrol_window_export(tmp_path):
    cfg = AGRoLMLPConfig(window=8, dim=16, depth=2)
    model = AGRoLMLP(cfg)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 54)))
    fn = agrol_window_fn(model, variables)
    x = np.random.RandomState(1).randn(1, 8, 54).astype(np.float32)
    ref = np.asarray(jax.jit(fn)(x)["rot6d"])
    assert ref.shape == (1, 22, 6)

    path = tmp_path / "agrol.tflite"
    export_tflite(fn, agrol_window_specs(cfg), path)
    out = run_tflite(path, {"sparse": x})
    assert out["rot6d"].shape == (1, 22, 6)
    np.testing.assert_allclose(out["rot6d"], ref, atol=1e-4)

    # float16 weights: smaller file, close result
    b16 = export_tflite(fn, agrol_window_specs(cfg), tmp_path / "agrol16.tflite", quantize="fp16")
    assert len(b16) < path.stat().st_size
    np.testing.assert_allclose(run_tflite(b16, {"sparse": x})["rot6d"], ref, atol=5e-2)


def _tensor_types(model_bytes):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=model_bytes)
    return {np.dtype(d["dtype"]).name for d in it.get_tensor_details()}


def test_int8_dynamic_range(tmp_path):
    """int8 = dynamic-range quantization: int8 weights, float32 inputs and outputs."""
    cfg = AGRoLMLPConfig(window=8, dim=64, depth=2)  # weights of >= 1024 numbers get quantized
    model = AGRoLMLP(cfg)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 54)))
    fn = agrol_window_fn(model, variables)
    x = np.random.RandomState(1).randn(1, 8, 54).astype(np.float32)
    ref = np.asarray(jax.jit(fn)(x)["rot6d"])
    b32 = export_tflite(fn, agrol_window_specs(cfg), tmp_path / "f32.tflite")
    b8 = export_tflite(fn, agrol_window_specs(cfg), tmp_path / "i8.tflite", quantize="int8")
    assert len(b8) < 0.5 * len(b32)
    assert "int8" in _tensor_types(b8) and "int8" not in _tensor_types(b32)
    out = run_tflite(b8, {"sparse": x})["rot6d"]
    assert out.dtype == np.float32 and out.shape == ref.shape
    err = np.abs(out - ref).max()
    assert 0 < err < 0.1, err


def test_mem_mlp_stream_export(tmp_path):
    cfg = MemMLPConfig(window=6, dim=16, depth=2, head_depth=1, code_dim=8)
    model = MemMLP(cfg)
    vq = MLPVQVAE(MLPVQVAEConfig(hidden=16, enc_depth=1, dec_depth=1, code_dim=8, codebook_size=16))
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    variables = model.init(k1, jnp.zeros((1, 6, 54)))
    vq_vars = vq.init(k2, jnp.zeros((1, 22, 6)), jnp.zeros((1, 54)))

    path = tmp_path / "mem_mlp.tflite"
    export_tflite(mem_mlp_stream_fn(model, variables, vq, vq_vars), mem_mlp_stream_specs(cfg), path)

    clip = np.random.RandomState(3).randn(12, 54).astype(np.float32)
    rt = StreamRuntime(path, mem_mlp_state_spec(cfg))
    got = rt.run_clip(clip)
    assert got.shape == (12, 22, 6)

    ref = np.asarray(predict_clip(model, variables, jnp.asarray(clip)[None], vq, vq_vars)["rot6d"][0])
    np.testing.assert_allclose(got, ref, atol=1e-4)

    # the carried state equals JAX's stream_step state; the position output its last frame
    init, step = make_streamer(model, vq)
    state = init(1)
    params = {"mem_mlp": variables, "vqvae": vq_vars}
    rt.reset()
    for f in clip:
        state, pose = step(params, state, jnp.asarray(f)[None])
        out = rt.model({"sparse_frame": f[None], **rt.state})
        rt.state = {k: out[f"next_{k}"] for k in rt.state_spec}
        np.testing.assert_allclose(out["pos"], np.asarray(pose["pos"]), atol=1e-4)
    np.testing.assert_allclose(got[-1], np.asarray(pose["rot6d"][0]), atol=1e-4)
    np.testing.assert_allclose(rt.state["window"], np.asarray(state.window), atol=1e-6)
    np.testing.assert_allclose(rt.state["memory_rot6d"], np.asarray(state.memory["rot6d"]), atol=1e-4)
    np.testing.assert_allclose(rt.state["memory_code"], np.asarray(state.memory["code"]), atol=1e-4)
    assert float(rt.state["t"][0]) == 12.0

    # a second clip starts from a fresh state
    np.testing.assert_allclose(rt.run_clip(clip[:3]), got[:3], atol=1e-6)


def _far_sparse(shape, seed):
    """Random sparse frames standing away from the origin (the heading frame moves them back)."""
    x = np.random.RandomState(seed).randn(*shape, 54).astype(np.float32)
    x[..., 36:45] += np.tile(np.float32([2.0, 1.5, -3.0]), 3)
    return x


def test_heading_window_export(tmp_path):
    """frame="heading": the window graph holds the transform and matches JAX."""
    cfg = AGRoLMLPConfig(window=8, dim=16, depth=2, frame="heading")
    model = AGRoLMLP(cfg)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 54)))
    x = _far_sparse((1, 8), 1)
    ref = np.asarray(jax.jit(agrol_window_fn(model, variables))(x)["rot6d"])
    world_model = AGRoLMLP(AGRoLMLPConfig(window=8, dim=16, depth=2))
    world = np.asarray(jax.jit(agrol_window_fn(world_model, variables))(x)["rot6d"])
    assert np.abs(ref - world).max() > 1e-3
    path = tmp_path / "agrol_heading.tflite"
    export_tflite(agrol_window_fn(model, variables), agrol_window_specs(cfg), path)
    np.testing.assert_allclose(run_tflite(path, {"sparse": x})["rot6d"], ref, atol=1e-4)


def test_heading_stream_export(tmp_path):
    """frame="heading": the stream step expresses the carried world memory in each frame's
    heading frame before the VQ code; the TFLite stream matches JAX's (poses and positions)."""
    cfg = MemMLPConfig(window=6, dim=16, depth=2, head_depth=1, code_dim=8, frame="heading")
    model = MemMLP(cfg)
    vq = MLPVQVAE(MLPVQVAEConfig(hidden=16, enc_depth=1, dec_depth=1, code_dim=8, codebook_size=16))
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    variables = model.init(k1, jnp.zeros((1, 6, 54)))
    vq_vars = vq.init(k2, jnp.zeros((1, 22, 6)), jnp.zeros((1, 54)))
    path = tmp_path / "mem_mlp_heading.tflite"
    export_tflite(mem_mlp_stream_fn(model, variables, vq, vq_vars), mem_mlp_stream_specs(cfg), path)

    clip = _far_sparse((10,), 3)
    ref = predict_clip(model, variables, jnp.asarray(clip)[None], vq, vq_vars)
    rt = StreamRuntime(path, mem_mlp_state_spec(cfg))
    for t, f in enumerate(clip):
        out = rt.model({"sparse_frame": f[None], **rt.state})
        rt.state = {k: out[f"next_{k}"] for k in rt.state_spec}
        np.testing.assert_allclose(out["pose"][0], np.asarray(ref["rot6d"][0, t]), atol=1e-4)
        np.testing.assert_allclose(out["pos"][0], np.asarray(ref["pos"][0, t]), atol=1e-4)
    assert not rt.state["memory_code"].any()


@pytest.mark.parametrize("kw", [dict(head_depth=1), dict(head_depth=2), dict(head_depth=2, use_pos_head=False),
                                dict(head_depth=2, use_code=False), dict(head_depth=1, use_memory=False),
                                dict(head_depth=2, memory_into_heads=False)])
def test_stream_forward_equals_model(kw):
    """The export's forward pass (position head on the last frame only) equals MemMLP."""
    from mmar.export.tflite import mem_mlp_window_last_pos
    from mmar.models.mem_mlp import zero_memory

    cfg = MemMLPConfig(window=5, dim=16, depth=4, code_dim=8, **kw)
    model = MemMLP(cfg)
    rng = np.random.RandomState(4)
    x = jnp.asarray(rng.randn(2, 5, 54).astype(np.float32))
    memory = {k: jnp.asarray(rng.randn(*v.shape).astype(np.float32)) for k, v in zero_memory(cfg, 2).items()}
    variables = model.init(jax.random.PRNGKey(5), x, memory)
    ref = model.apply(variables, x, memory)
    got = jax.jit(lambda a, m: mem_mlp_window_last_pos(model, variables, a, m))(x, memory)
    assert set(got) == ({"rot6d", "pos"} if cfg.use_pos_head else {"rot6d"})
    np.testing.assert_allclose(got["rot6d"], ref["rot6d"], atol=1e-5)
    if cfg.use_pos_head:
        np.testing.assert_allclose(got["pos"], ref["pos"][:, -1], atol=1e-5)


def test_bad_quantize_and_atomic_write(tmp_path):
    fn = lambda x: {"y": x + 1.0}  # noqa: E731
    spec = {"x": ((2,), np.float32)}
    path = tmp_path / "m.tflite"
    with pytest.raises(ConfigError):
        export_tflite(fn, spec, path, quantize="int3")
    assert os.listdir(tmp_path) == []

    path.write_bytes(b"old model")

    def broken(x):
        return {"y": x @ jnp.ones((3, 3))}  # shape error while tracing

    with pytest.raises(Exception):
        export_tflite(broken, spec, path)
    with pytest.raises(ConfigError, match="quantize must be one of"):
        export_tflite(fn, spec, path, quantize="int4")
    assert path.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["m.tflite"]


def test_failed_write_keeps_existing_file(tmp_path, monkeypatch):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old model")

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        export_tflite(lambda x: {"y": x * 2.0}, {"x": ((2,), np.float32)}, path)
    assert path.read_bytes() == b"old model"
    assert os.listdir(tmp_path) == ["m.tflite"]


def test_runtime_imports_neither_jax_nor_tensorflow():
    """The runtime, its BVH entry point and the numpy data modules it uses load without JAX,
    TensorFlow or Flax (tests/test_export_runtime.py runs the entry point with them blocked)."""
    import subprocess
    import sys

    code = ("import sys, mmar.export.runtime as r, mmar.data.arrays, mmar.data.bvh; "
            "assert callable(r.main) and callable(r.predict_bvh) and callable(r.bvh_arrays); "
            "bad = [m for m in ('jax', 'tensorflow', 'flax') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)

"""MotionMAR exports as one builtin-op TFLite graph (all scales, the soft codebook mix, the
VQ-VAE decoder and the unrolled Bi-GRU refinement) that computes what JAX computes; in heading
mode the graph carries the frame transform (world in, world out)."""
import dataclasses

import jax
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from mmar.errors import ConfigError  # noqa: E402
from mmar.export.motionmar import export_model, motionmar_window_fn, motionmar_window_specs  # noqa: E402
from mmar.export.runtime import TFLiteModel  # noqa: E402
from mmar.export.tflite import export_tflite  # noqa: E402
from mmar.models.motionmar import MotionMAR, MotionMARConfig, init_motionmar  # noqa: E402
from mmar.models.quantizers.temporal import MOTIONMAR_TEMPORAL  # noqa: E402
from mmar.models.vqvae import MOTIONMAR_VQVAE, TemporalVQVAE  # noqa: E402


def test_motionmar_window_export_matches_jax(tmp_path):
    q = dataclasses.replace(MOTIONMAR_TEMPORAL, codebook_size=32, code_dim=8)
    vq = TemporalVQVAE(dataclasses.replace(MOTIONMAR_VQVAE, width=32, depth=1, quantizer=q))
    key = jax.random.PRNGKey(0)
    sparse = np.asarray(jax.random.normal(key, (1, 20, 54)), np.float32)
    vq_vars = vq.init({"params": key, "dropout": key, "vq": key}, np.zeros((1, 20, 132), np.float32), None, sparse)
    cfg = MotionMARConfig(code_dim=8, vocab_size=32, width=32, depth=2, heads=2, mrn_hidden=16)
    variables = init_motionmar(MotionMAR(cfg), jax.random.PRNGKey(1))
    p = variables["params"]
    p["mrn"]["out"]["kernel"] = 0.05 * jax.random.normal(key, p["mrn"]["out"]["kernel"].shape)  # a non-trivial MRN
    trained = motionmar_window_fn(MotionMAR(cfg), variables, vq, vq_vars)  # scan GRUs, as trained
    fn = motionmar_window_fn(export_model(cfg), variables, vq, vq_vars)  # unrolled GRUs, same weights
    want = np.asarray(jax.jit(trained)(sparse)["rot6d"])
    np.testing.assert_allclose(np.asarray(jax.jit(fn)(sparse)["rot6d"]), want, atol=1e-5)
    path = tmp_path / "motionmar.tflite"
    export_tflite(fn, motionmar_window_specs(cfg), path)
    got = TFLiteModel(str(path))({"sparse": sparse})["rot6d"]
    assert got.shape == (1, 22, 6)
    np.testing.assert_allclose(got, want, atol=1e-4)
    with pytest.raises(ConfigError, match="deterministic"):
        motionmar_window_fn(export_model(cfg), variables, vq, vq_vars, decode="sample")


def test_motionmar_heading_window_export_matches_jax(tmp_path):
    """``frame="heading"``: the exported graph computes what JAX computes, and its world-frame
    output turns and moves with a turned and moved input window."""
    from mmar.eval.sparse import turn_clip

    q = dataclasses.replace(MOTIONMAR_TEMPORAL, codebook_size=32, code_dim=8)
    vq = TemporalVQVAE(dataclasses.replace(MOTIONMAR_VQVAE, width=32, depth=1, quantizer=q))
    key = jax.random.PRNGKey(2)
    sparse = np.asarray(jax.random.normal(key, (1, 20, 54)), np.float32)
    vq_vars = vq.init({"params": key, "dropout": key, "vq": key}, np.zeros((1, 20, 132), np.float32), None, sparse)
    cfg = MotionMARConfig(code_dim=8, vocab_size=32, width=32, depth=1, heads=2, mrn_hidden=16, mrn_layers=1,
                          frame="heading")
    variables = init_motionmar(MotionMAR(cfg), jax.random.PRNGKey(1))
    p = variables["params"]
    p["mrn"]["out"]["kernel"] = 0.05 * jax.random.normal(key, p["mrn"]["out"]["kernel"].shape)
    fn = motionmar_window_fn(export_model(cfg), variables, vq, vq_vars)
    want = np.asarray(jax.jit(fn)(sparse)["rot6d"])
    path = tmp_path / "motionmar_heading.tflite"
    export_tflite(fn, motionmar_window_specs(cfg), path)
    model = TFLiteModel(str(path))
    np.testing.assert_allclose(model({"sparse": sparse})["rot6d"], want, atol=1e-4)
    turned = turn_clip({"sparse": sparse}, 90.0, (2.0, -1.5))["sparse"]
    np.testing.assert_allclose(model({"sparse": turned})["rot6d"], turn_clip({"rot6d": want}, 90.0)["rot6d"],
                               atol=1e-4)

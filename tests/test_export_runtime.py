"""The numpy-only reference runtime on a real Bandai BVH: BVH -> SMPL-22 -> sparse input ->
exported .tflite (AGRoL-MLP window, Mem-MLP stream) -> poses in the ``mmar convert`` layout,
equal to the JAX model's online prediction on the same clip; bad input gives clear errors.

Models are tiny and randomly initialised (parity does not need training); the clip is the
first dataset-1 file of the shared archive, written to a temporary folder (never the repo).
"""
import json
import subprocess
import sys
import tarfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")

from _sparse_body_fixtures import tiny_config  # noqa: E402
from mmar import cli, geometry  # noqa: E402
from mmar import geometry_np as gnp  # noqa: E402
from mmar.data.arrays import load_arrays  # noqa: E402
from mmar.data.bvh import read_bvh  # noqa: E402
from mmar.data.clip import clips_to_arrays, resample_clips, sparse_features  # noqa: E402
from mmar.errors import CheckpointError, ConfigError, DataFormatError  # noqa: E402
from mmar.export import runtime as R  # noqa: E402
from mmar.export.card import export_model  # noqa: E402
from mmar.tasks import make_task  # noqa: E402

FPS = 60.0

# Run in a fresh interpreter: importing JAX, TensorFlow or Flax raises.
_NO_JAX = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('jax', 'jaxlib', 'tensorflow', 'flax'):
            raise ImportError('blocked in this test: ' + name)
        return None
sys.meta_path.insert(0, _Block())
"""


@pytest.fixture(scope="module")
def bvh_path(bandai_dir, tmp_path_factory):
    """The first dataset-1 clip of the shared archive (30 fps, centimetres)."""
    archive = bandai_dir / "Bandai-Namco-Research-Motiondataset-1.tar.xz"
    with tarfile.open(archive, "r|xz") as tf:
        for m in tf:
            if m.name.endswith(".bvh"):
                data = tf.extractfile(m).read()
                name = m.name.rsplit("/", 1)[-1]
                break
    p = tmp_path_factory.mktemp("bvh") / name
    p.write_bytes(data)
    return p


def _tiny(kind):
    """A randomly initialised tiny task and its variables (as saved by training)."""
    cfg = tiny_config(kind, **({"vqvae_workdir": "unused"} if kind == "mem_mlp" else {}))
    task = make_task(cfg)
    W = cfg.model.window
    k1, k2 = jax.random.split(jax.random.PRNGKey(7))
    if kind == "agrol_mlp":
        return task, dict(task.model.init(k1, jnp.zeros((1, W, 54)))), cfg
    v = task.model.init({"params": k1, "memory": k1}, jnp.zeros((1, W, 54)), None, train=False)
    vq = task.vq_model.init(k2, jnp.zeros((1, 22, 6)), jnp.zeros((1, 54)))
    return task, {"params": v["params"], "vqvae": vq}, cfg


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """kind -> (task, variables, tflite path) for the two exported modes."""
    d = tmp_path_factory.mktemp("models")
    out = {}
    for kind in ("agrol_mlp", "mem_mlp"):
        task, variables, cfg = _tiny(kind)
        path = d / f"{kind}.tflite"
        card = export_model(task, variables, cfg, str(path), latency_iters=5)
        assert card["parity_max_abs_vs_jax"] < 1e-4
        out[kind] = (task, variables, path)
    return out


@pytest.fixture(scope="module")
def jax_clip(bvh_path):
    """The same clip through the training pipeline (JAX resampling, FK and features)."""
    clip = read_bvh(bvh_path, scale=0.01).retarget()
    (clip,) = resample_clips([clip], FPS)
    return {clip.name: clips_to_arrays([clip])[0]}


def test_numpy_arrays_equal_training_arrays(bvh_path, jax_clip):
    (name, ref), = jax_clip.items()
    got = R.bvh_arrays(bvh_path, fps=FPS)
    assert R.clip_name(bvh_path) == name
    assert float(got["fps"]) == FPS and got["sparse"].shape == ref["sparse"].shape
    for key in ("joints", "rot6d", "root", "sparse", "offsets"):
        np.testing.assert_allclose(got[key], ref[key], atol=2e-5, err_msg=key)
    # the numpy sparse features are the JAX ones, first-frame rule included
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, 5, 22, 4))
    rot = np.asarray(geometry.quaternion_to_matrix(jnp.asarray(q)), np.float64)
    pos = rng.normal(size=(2, 5, 22, 3))
    np.testing.assert_allclose(gnp.sparse_features(rot, pos), np.asarray(sparse_features(rot, pos)), atol=1e-5)
    one = gnp.smpl22_arrays(rot[0], np.zeros((22, 3)), pos[0, :, 0], 30.0)
    np.testing.assert_array_equal(one["sparse"][0, 18:24], [1, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(one["sparse"][0, 45:], 0)


@pytest.mark.parametrize("kind", ["agrol_mlp", "mem_mlp"])
def test_bvh_runtime_equals_jax_online_prediction(kind, models, bvh_path, jax_clip):
    task, variables, path = models[kind]
    res = R.predict_bvh(path, bvh_path)
    (name, ref_in), = jax_clip.items()
    ref = task.predict_clips(variables, jax_clip, batch=1)[name]
    got = res.pred[name]
    assert res.card["mode"] == ("window" if kind == "agrol_mlp" else "stream")
    assert got["rot6d"].shape == ref["rot6d"].shape == (len(ref_in["sparse"]), 22, 6)
    np.testing.assert_allclose(got["rot6d"], ref["rot6d"], atol=1e-4)
    np.testing.assert_allclose(got["joints"], ref["joints"], atol=1e-4)
    np.testing.assert_allclose(got["root"], got["joints"][:, 0])
    assert float(got["fps"]) == FPS and res.ms_per_frame > 0


def test_cli_without_jax_then_metrics(models, bvh_path, tmp_path):
    _, _, path = models["mem_mlp"]
    pred, gt = tmp_path / "pred.npz", tmp_path / "gt.npz"
    code = _NO_JAX + (
        "import runpy; sys.argv = ['runtime', %r, %r, '--out', %r, '--gt-out', %r, '--no-progress']\n"
        "try:\n    runpy.run_module('mmar.export.runtime', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "bad = [m for m in ('jax', 'tensorflow', 'flax') if m in sys.modules]\nassert not bad, bad\n"
    ) % (str(path), str(bvh_path), str(pred), str(gt))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout.strip().splitlines()[-1])
    assert info["mode"] == "stream" and info["fps"] == FPS and info["clip"] == R.clip_name(bvh_path)
    arrays = load_arrays(str(pred))[info["clip"]]
    assert set(arrays) == {"joints", "rot6d", "root", "sparse", "fps", "offsets"}
    assert arrays["joints"].shape == (info["frames"], 22, 3)
    assert cli.main(["metrics", "--pred", str(pred), "--gt", str(gt)]) == 0


def _bad_bvh(bvh_path, tmp_path):
    lines = bvh_path.read_text().splitlines()
    p = tmp_path / "truncated.bvh"
    p.write_text("\n".join(lines[:-3]) + "\n")  # Frames: N, but three frame lines missing
    q = tmp_path / "unknown_joints.bvh"
    q.write_text(bvh_path.read_text().replace("Hips", "Pelvis_X"))
    return p, q


def test_bad_input_gives_clear_errors(models, bvh_path, tmp_path, capsys):
    _, _, mem = models["mem_mlp"]
    _, _, agrol = models["agrol_mlp"]
    truncated, unknown = _bad_bvh(bvh_path, tmp_path)
    with pytest.raises(DataFormatError, match="nothing.bvh: no such file"):
        R.predict_bvh(mem, tmp_path / "nothing.bvh")
    with pytest.raises(DataFormatError, match=r"truncated.bvh:\d+: Frames: \d+ but the file has"):
        R.predict_bvh(mem, truncated)
    with pytest.raises(DataFormatError, match="unknown_joints.bvh: no registered joint map"):
        R.predict_bvh(mem, unknown)
    with pytest.raises(ConfigError, match="unknown joint map"):
        R.predict_bvh(mem, bvh_path, joint_map="nope")
    # wrong model: missing, no card, card of another model, not a TFLite file
    with pytest.raises(CheckpointError, match="no such model file"):
        R.predict_bvh(tmp_path / "none.tflite", bvh_path)
    lone = tmp_path / "lone.tflite"
    lone.write_bytes(mem.read_bytes())
    with pytest.raises(CheckpointError, match="no model card lone.json"):
        R.predict_bvh(lone, bvh_path)
    (tmp_path / "lone.json").write_text(agrol.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="not those of its card"):
        R.predict_bvh(lone, bvh_path)
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"not a model" * 10)
    (tmp_path / "fake.json").write_text(mem.with_suffix(".json").read_text())
    with pytest.raises(CheckpointError, match="not a loadable TFLite model"):
        R.predict_bvh(fake, bvh_path)
    (tmp_path / "fake.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not an mmar model card"):
        R.predict_bvh(fake, bvh_path)
    # the command line: one line on stderr, exit status 2, no output file
    out = tmp_path / "out.npz"
    capsys.readouterr()
    assert R.main([str(mem), str(truncated), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmar.export.runtime: error: ") and "truncated.bvh:" in err and "\n" not in err
    assert not out.exists()


def test_int8_export_card_and_runtime(models, bvh_path, tmp_path):
    """``export_model(..., quantize="int8")``: dynamic range, recorded in the card, runs in the
    runtime close to the float model; unsupported options fail before anything is written."""
    from mmar.export.card import export_checkpoint

    task, variables, f32 = models["agrol_mlp"]
    path = tmp_path / "agrol_int8.tflite"
    card = export_model(task, variables, task.cfg, str(path), quantize="int8", latency_iters=5)
    assert card["quantize"] == "int8" and "dynamic-range" in card["quantization"]
    assert json.loads(path.with_suffix(".json").read_text())["quantize"] == "int8"
    assert path.stat().st_size < f32.stat().st_size
    got = R.predict_bvh(path, bvh_path).pred
    ref = R.predict_bvh(f32, bvh_path).pred
    (name, g), = got.items()
    err = np.abs(g["rot6d"] - ref[name]["rot6d"])
    assert 0 < err.max() < 0.2, err.max()
    with pytest.raises(ConfigError, match="int4"):
        export_checkpoint(str(tmp_path / "no_run"), str(tmp_path / "x.tflite"), quantize="int4")
    with pytest.raises(ConfigError, match="--mode stream is not available"):
        export_model(task, variables, task.cfg, str(tmp_path / "x.tflite"), mode="stream")
    assert not (tmp_path / "x.tflite").exists()

"""ScaleMoGen's predictor as a task (mmar.tasks.scalemogen) on the tiny synthetic captioned
dataset and a tiny skeletal tokenizer run: the paper config is scalemogen_layer12, every field is
reachable with --set, bit-flip correction reaches the loss, training lowers it, a checkpoint
alone generates and edits, and bad requests get clear errors."""
from __future__ import annotations

import numpy as np
import pytest

import mmar.run
from mmar.edit import edit_grid, make_request
from mmar.errors import CheckpointError, ConfigError, MmarError, ShapeError
from mmar.models.scale_ar import scalemogen_config
from mmar.models.vqvae import SCALEMOGEN_VQVAE
from mmar.tasks import make_task
from mmar.tasks.moscale import MoScaleGenDataConfig
from mmar.tasks.scalemogen import ScaleMoGenModelConfig, ScaleMoGenTask
from mmar.train import train
from mmar.train.config import Config, OptimConfig, TrainConfig, apply_overrides

from test_tasks_moscale import dataset  # noqa: F401  (fixture)
from test_edit import bandai_bvh  # noqa: F401  (fixture)
from test_tasks_scalemogen_vqvae import tiny_config

TINY = dict(width=32, depth=1, heads=2, mlp_round=1, cond_dim=16, memory_dim=16, pool_heads=2, text_width=16,
            text_depth=1, text_heads=2, length_hidden=16, drop_path=0.0)
STEPS = 24


def config_for(vq_wd, steps=STEPS, **model) -> Config:
    return Config(name="tiny_scalemogen", task="scalemogen",
                  model=ScaleMoGenModelConfig(tokenizer_workdir=str(vq_wd), **{**TINY, **model}),
                  data=MoScaleGenDataConfig(eval_batch=8),
                  optim=OptimConfig(lr=3e-3, warmup_steps=0, schedule="constant"),
                  train=TrainConfig(steps=steps, batch_size=8, log_every=4, eval_every=steps, ckpt_every=steps,
                                    progress=False, async_checkpoint=False, best_metric="val_ce", best_mode="min"))


#: The tokenizer's schedule here: 6 of the official 11 scales (token counts 1, 4, 21, 120, 245,
#: 343: the first and last scales, every group chain and time factors 49 to 1). The task's code
#: paths are the same and every jit of this file (tokenizer, bit correction, the unrolled
#: sampler) compiles in about half the time; the official schedule is tested in
#: test_paper_config_is_scalemogen_layer12 and test_models_scalemogen.py.
MAPPING = ((0, 0), (1, 1), (3, 2), (5, 3), (6, 3), (6, 4))


@pytest.fixture(scope="module")
def vq_run(dataset, tmp_path_factory):  # noqa: F811
    wd = tmp_path_factory.mktemp("smg_vq")
    cfg = tiny_config(steps=4, mapping=MAPPING)
    train(make_task(cfg, benchmark=dataset), cfg, wd)
    return wd


@pytest.fixture(scope="module")
def run(dataset, vq_run, tmp_path_factory):  # noqa: F811
    wd = tmp_path_factory.mktemp("smg")
    cfg = config_for(vq_run)
    _, hist = train(make_task(cfg, benchmark=dataset), cfg, wd)
    return wd, hist, mmar.run.load(wd, benchmark=dataset)


def test_paper_config_is_scalemogen_layer12(dataset):  # noqa: F811
    cfg = Config(task="scalemogen", model=ScaleMoGenModelConfig(), data=MoScaleGenDataConfig())
    task = ScaleMoGenTask(cfg, dataset=dataset)
    net = task.net_config(SCALEMOGEN_VQVAE, vocab_size=100)
    assert net.transformer == scalemogen_config()
    assert (net.pool_heads, net.unit, net.length_classes, net.num_bits) == (16, 4, 49, 24)
    assert task.sampling() == type(task.sampling())(guidance=7.0, temperature=1.3)
    apply_overrides(cfg, ["model.depth=3", "model.rope_base=500", "model.flip_max=0", "model.guidance=2",
                          "model.area_weighting=false", "model.init_std=0.01"])
    task = ScaleMoGenTask(cfg, dataset=dataset)
    net = task.net_config(SCALEMOGEN_VQVAE, vocab_size=100)
    assert (net.transformer.depth, net.transformer.rope_base, net.transformer.init_std) == (3, 500, 0.01)
    assert task.sampling().guidance == 2.0
    with pytest.raises(ConfigError, match="flip_max"):
        ScaleMoGenModelConfig(flip_max=0.9)


def test_training_with_bit_correction_lowers_the_loss(run):
    wd, hist, r = run
    ce = [h["train/ce"] for h in hist if "train/ce" in h]
    assert ce[-1] < ce[0]
    assert max(h["train/flipped"] for h in hist if "train/flipped" in h) > 0  # flips reach the inputs
    assert {"val_ce", "val_bit_acc"} <= {k.split("/")[-1] for h in hist for k in h}
    assert {"params", "tokenizer", "assets"} <= set(r.variables) and isinstance(r.task, ScaleMoGenTask)


def test_generation_from_the_checkpoint_alone(run):
    _, _, r = run
    task = r.task
    texts, lengths = ["a person moves 1", "a person moves 3"], [60, 196]
    g = task.generate(r.variables, texts, lengths, seed=1)
    assert g.features.shape == (2, 196, 263) and list(g.lengths) == lengths
    assert np.all(g.features[0, 60:] == 0) and np.isfinite(g.features).all()
    np.testing.assert_array_equal(g.features, task.generate(r.variables, texts, lengths, seed=1).features)
    assert not np.array_equal(g.features, task.generate(r.variables, texts, lengths, seed=2).features)
    auto = task.generate(r.variables, ["a person moves 2"] * 2, None, seed=0)
    assert all(40 <= n <= 196 and n % 4 == 0 for n in auto.lengths)
    with pytest.raises(ConfigError, match="one pass"):
        task.generate(r.variables, texts, lengths, steps=(1, 2))
    with pytest.raises(MmarError, match="empty"):
        task.generate(r.variables, ["   "], [60])
    with pytest.raises(CheckpointError, match="not a scalemogen checkpoint"):
        task.generate({"params": r.variables["params"]}, ["a person moves"], [60])


def test_edits_keep_the_source_where_asked(run, dataset):  # noqa: F811
    _, _, r = run
    task = r.task
    mo = dataset["val"][0]
    n = min(len(mo.features), 196) // 4 * 4
    feats = mo.features[:n]
    req = make_request("a person moves 2", n, keep_joints="lower")
    res = task.edit(r.variables, feats, n, req.text, edit_grid(req, n), num=2, seed=0)
    assert res.edited.features.shape == (2, 196, 263) and res.recon.shape == (196, 263)
    assert len(res.source_bits) == len(res.edited_bits) == len(res.editable) == len(MAPPING)
    # every token that reads a kept cell carries the source's bits
    for k, (src, ed, m) in enumerate(zip(res.source_bits, res.edited_bits, res.editable)):
        np.testing.assert_array_equal(ed[:, ~m], np.broadcast_to(src[~m], ed[:, ~m].shape))
    assert any((ed[:, m] != src[m]).any() for src, ed, m in zip(res.source_bits, res.edited_bits, res.editable))
    assert not res.editable[0].any() and res.editable[-1].reshape(-1, 7)[: n // 4, 4:].all()
    # a temporal in-betweening edit and a semantic edit run; the semantic one keeps scales < gamma
    req_t = make_request("a person moves 3", n, keep_frames=f"0:40,{n - 40}:{n}")
    task.edit(r.variables, feats, n, req_t.text, edit_grid(req_t, n), num=2)  # num=2: the compiled region edit
    sem = task.edit(r.variables, feats, n, "a person moves 3", np.zeros((49, 7), bool), semantic=True, gamma=4)
    for k in range(4):
        np.testing.assert_array_equal(sem.edited_bits[k][0], sem.source_bits[k])
    with pytest.raises(ShapeError, match="features"):
        task.edit(r.variables, feats[:, :251], n, "a person moves", edit_grid(req, n))
    with pytest.raises(ConfigError, match="no whole token"):
        task.edit(r.variables, feats, n, "a person moves", np.zeros((49, 7), bool))


def test_stage1_must_be_a_skeletal_tokenizer_run(dataset, run):  # noqa: F811
    wd, _, _ = run
    with pytest.raises(CheckpointError, match="scalemogen_vqvae run"):
        make_task(config_for(wd), benchmark=dataset).stage1()


def test_mmar_edit_command(run, bandai_bvh, tmp_path, capsys):
    import json

    from mmar.cli import main
    from mmar.data.arrays import load_arrays

    wd, _, _ = run
    out, gif, rep = tmp_path / "edited.npz", tmp_path / "edited.gif", tmp_path / "edit.json"
    code = main(["edit", "--checkpoint", str(wd), "--source", str(bandai_bvh), "--text", "a person moves 2",
                 "--keep-joints", "lower", "--num", "2", "--out", str(out), "--gif", str(gif), "--json", str(rep)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "body_part" and report["frames"] == 196 and len(report["metrics"]) == 2
    m = report["metrics"][0]
    assert m["kept_error_cm"] >= 0 and m["recon_kept_error_cm"] >= 0 and m["edited_change_cm"] > 0
    assert report["editable_tokens"][0] == 0 and report["editable_tokens"][-1] > 0
    arrays = load_arrays(str(out))
    assert {"source", "source_recon", "edit_0", "edit_1"} <= set(arrays)
    assert arrays["edit_0"]["features"].shape == (196, 263) and gif.stat().st_size > 0
    assert json.loads(rep.read_text())["metrics"] == report["metrics"]
    # invalid requests: clear one-line errors, exit code 2, nothing written
    bad = [(["--keep-joints", "tail"], "unknown"), (["--keep-frames", "0:400"], "outside"),
           (["--keep-frames", "1:3"], "nothing to keep"), (["--keep-frames", "0:196", ], "nothing to edit")]
    for extra, msg in bad:
        out2 = tmp_path / "never.npz"
        code = main(["edit", "--checkpoint", str(wd), "--source", str(bandai_bvh), "--text", "a person moves",
                     "--out", str(out2), *extra])
        assert code == 2 and msg in capsys.readouterr().err.lower() and not out2.exists()


def test_mmar_edit_keeps_the_users_frames_with_keep_from_source(run, bandai_bvh, tmp_path, capsys):  # noqa: F811
    from mmar.cli import main
    from mmar.data.arrays import load_arrays

    wd, _, _ = run
    out = tmp_path / "prefix.npz"
    code = main(["edit", "--checkpoint", str(wd), "--source", str(bandai_bvh), "--text", "a person moves 2",
                 "--keep-frames", "0:80", "--keep-from", "source", "--ramp", "smooth", "--fade", "8",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    arrays = load_arrays(str(out))
    src, ed = arrays["source"]["features"], arrays["edit_0"]["features"]
    np.testing.assert_array_equal(ed[:80], src[:80])  # kept frames: the source's own, exactly
    assert not np.allclose(ed[88:], src[88:], atol=1e-3)  # past the fade: the edit
    code = main(["edit", "--checkpoint", str(wd), "--source", str(bandai_bvh), "--text", "a person moves",
                 "--keep-frames", "0:80", "--fade", "-2", "--out", str(tmp_path / "never.npz")])
    assert code == 2 and ">= 0" in capsys.readouterr().err and not (tmp_path / "never.npz").exists()


@pytest.fixture(scope="module")
def smooth_run(dataset, vq_run, tmp_path_factory):  # noqa: F811
    """The tiny tokenizer's decoder fine-tuned alone with the jerk term (configs/scalemogen_vqvae_smooth.py)."""
    from configs.scalemogen_vqvae_smooth import ENCODER_SIDE

    wd = tmp_path_factory.mktemp("smg_vq_smooth")
    cfg = tiny_config(steps=2, mapping=MAPPING, jerk_weight=1e-3)
    cfg.optim.frozen = ENCODER_SIDE
    cfg.train.init_from = str(vq_run)
    _, hist = train(make_task(cfg, benchmark=dataset), cfg, wd)
    return wd, hist


def test_decoder_fine_tune_keeps_the_encoder_and_swaps_into_the_predictor(run, vq_run, smooth_run, bandai_bvh,
                                                                         tmp_path, capsys):  # noqa: F811
    import jax

    from mmar.cli import main
    from mmar.data.arrays import load_arrays

    wd, _, r = run
    smooth_wd, hist = smooth_run
    assert all(np.isfinite(h["train/jerk_err"]) and h["train/jerk_err"] > 0 for h in hist if "train/jerk_err" in h)
    before = mmar.run.load_variables(vq_run)[0]["params"]
    after = mmar.run.load_variables(smooth_wd)[0]["params"]
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),  # noqa: E731
                                                                  jax.tree_util.tree_leaves(b)))
    for k in ("joint_in", "encoder", "project_in"):
        assert same(before[k], after[k]), k  # frozen: bit for bit
    for k in ScaleMoGenTask.decoder_params:
        assert not same(before[k], after[k]), k  # fine-tuned

    v = r.task.with_decoder(r.variables, smooth_wd)
    tok = v["tokenizer"]["params"]
    assert same(tok["encoder"], r.variables["tokenizer"]["params"]["encoder"]) and same(tok["decoder"], after["decoder"])
    assert same(v["params"], r.variables["params"])
    g0 = r.task.generate(r.variables, ["a person moves"], [40], seed=3)
    g1 = r.task.generate(v, ["a person moves"], [40], seed=3)
    assert np.all(np.isfinite(g1.features)) and not np.allclose(g0.features, g1.features)

    # the command line: mmar edit --decoder
    out = tmp_path / "edited.npz"
    code = main(["edit", "--checkpoint", str(wd), "--source", str(bandai_bvh), "--text", "a person moves",
                 "--keep-frames", "0:80", "--decoder", str(smooth_wd), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert load_arrays(str(out))["edit_0"]["features"].shape[-1] == 263

    # refused: a decoder whose encoder differs from the checkpoint's tokenizer, a run of another task
    other = jax.tree_util.tree_map(np.array, r.variables)
    other["tokenizer"]["params"]["encoder"] = jax.tree_util.tree_map(lambda a: a + 1.0,
                                                                     other["tokenizer"]["params"]["encoder"])
    with pytest.raises(ConfigError, match="encoder side differs"):
        r.task.with_decoder(other, smooth_wd)
    with pytest.raises(CheckpointError, match="must come from a scalemogen_vqvae run"):
        r.task.with_decoder(r.variables, wd)
    code = main(["edit", "--checkpoint", str(wd), "--source", str(bandai_bvh), "--text", "a person moves",
                 "--keep-frames", "0:80", "--decoder", str(tmp_path / "nowhere"), "--out", str(tmp_path / "n.npz")])
    assert code == 2 and "nowhere" in capsys.readouterr().err and not (tmp_path / "n.npz").exists()

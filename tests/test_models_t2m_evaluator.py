"""The text-motion evaluator network (mmar.models.t2m_evaluator): shapes and size, the masked
GRU against a plain PyTorch-formula loop, padding invariance of both encoders, the two
contrastive losses, the frozen evaluator's batching and its fingerprint."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar.errors import ConfigError
from mmar.models import t2m_evaluator as te
from mmar.models.text import Tokenizer

TINY = dict(word_dim=8, text_hidden=8, movement_hidden=8, movement_latent=8, motion_hidden=12, embed_dim=6,
            dropout=0.0)


def _inputs(B=3, T=32, D=263, L=7, vocab=20, seed=0):
    rng = np.random.default_rng(seed)
    motion = rng.normal(size=(B, T, D)).astype(np.float32)
    lengths = np.array([T, 20, 12][:B], np.int32)
    n = np.array([L, 4, 3][:B])
    ids = np.where(np.arange(L)[None] < n[:, None], rng.integers(4, vocab, (B, L)), 0).astype(np.int32)
    mask = np.arange(L)[None] < n[:, None]
    return motion, lengths, ids, mask


@pytest.fixture(scope="module")
def tiny():
    cfg = te.T2MEvaluatorConfig(vocab_size=20, **TINY)
    model = te.T2MEvaluator(cfg)
    motion, lengths, ids, mask = _inputs()
    v = model.init(jax.random.PRNGKey(0), motion, lengths, ids, mask)
    return cfg, model, v


def test_shapes_and_paper_size(tiny):
    cfg, model, v = tiny
    motion, lengths, ids, mask = _inputs()
    t, m = model.apply(v, motion, lengths, ids, mask)
    assert t.shape == (3, 6) and m.shape == (3, 6)
    paper = te.T2MEvaluatorConfig(vocab_size=400)
    shapes = jax.eval_shape(te.T2MEvaluator(paper).init, jax.random.PRNGKey(0), jnp.zeros((2, 196, 263)),
                            jnp.full((2,), 196), jnp.zeros((2, 22), jnp.int32), jnp.ones((2, 22), bool))
    sizes = {k: sum(x.size for x in jax.tree_util.tree_leaves(s)) for k, s in shapes["params"].items()}
    assert sizes["motion"] == 15_747_584  # Linear 512->1024, bi-GRU 1024, head 2048->1024->512
    assert sizes["movement"] == 1_842_688  # conv 259->512 (k4), conv 512->512 (k4), Linear 512
    assert sizes["text"] == 400 * 300 + 4_095_488
    with pytest.raises(ConfigError):
        te.T2MEvaluatorConfig(vocab_size=20, unit_length=2)


def _np_gru(x, h, wi, bi, wh, bh):
    """PyTorch GRU formula, one sequence."""
    H = h.shape[0]
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    for xt in x:
        gi, gh = xt @ wi + bi, h @ wh + bh
        r, z = sig(gi[:H] + gh[:H]), sig(gi[H:2 * H] + gh[H:2 * H])
        n = np.tanh(gi[2 * H:] + r * gh[2 * H:])
        h = (1 - z) * n + z * h
    return h


def test_bigru_matches_reference_and_ignores_padding():
    gru = te.BiGRU(5)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 9, 3)).astype(np.float32)
    lengths = np.array([9, 4])
    v = gru.init(jax.random.PRNGKey(0), x, lengths)
    out = np.asarray(gru.apply(v, x, lengths))
    p = jax.tree_util.tree_map(np.asarray, v["params"])
    for b, n in enumerate(lengths):
        want = []
        for d, seq in (("forward", x[b, :n]), ("backward", x[b, :n][::-1])):
            q = p[d]
            h0 = p["initial_state"][0 if d == "forward" else 1]
            want.append(_np_gru(seq, h0, q["input"]["kernel"], q["input"]["bias"], q["recurrent_kernel"],
                                q["recurrent_bias"]))
        np.testing.assert_allclose(out[b], np.concatenate(want), atol=1e-5)
    x2 = x.copy()
    x2[1, 4:] = 100.0  # padding content
    np.testing.assert_allclose(np.asarray(gru.apply(v, x2, lengths)), out, atol=1e-6)


def test_padding_does_not_change_embeddings(tiny):
    cfg, model, v = tiny
    motion, lengths, ids, mask = _inputs()
    t, m = model.apply(v, motion, lengths, ids, mask)
    # other padding values, and a longer padded array
    motion2 = motion.copy()
    for b, n in enumerate(lengths):
        motion2[b, n:] = 7.0
    longer = np.concatenate([motion2, np.full((3, 32, 263), -3.0, np.float32)], axis=1)
    ids2 = np.where(mask, ids, 5)
    ids3 = np.concatenate([ids2, np.full((3, 5), 9, np.int32)], 1)
    mask3 = np.concatenate([mask, np.zeros((3, 5), bool)], 1)
    t2, m2 = model.apply(v, longer, lengths, ids3, mask3)
    np.testing.assert_allclose(np.asarray(m2), np.asarray(m), atol=1e-5)
    np.testing.assert_allclose(np.asarray(t2), np.asarray(t), atol=1e-5)
    # a valid frame / word does matter; foot contacts (last 4 features) do not
    motion4 = motion.copy()
    motion4[1, 3, :-4] += 1.0
    assert not np.allclose(np.asarray(model.apply(v, motion4, lengths, ids, mask)[1][1]), np.asarray(m[1]))
    motion5 = motion.copy()
    motion5[:, :, -4:] = 0.0
    np.testing.assert_allclose(np.asarray(model.apply(v, motion5, lengths, ids, mask)[1]), np.asarray(m), atol=1e-6)


def test_margin_loss():
    e = jnp.eye(4) * 20.0  # pairs identical, different pairs 28 apart (> margin 10)
    loss, m = te.matching_loss(e, e, jax.random.PRNGKey(0), kind="margin")
    assert float(loss) == pytest.approx(0.0, abs=1e-6) and float(m["batch_top1"]) == 1.0
    # the shift is never 0: with every pair identical a zero shift would cost margin^2
    for k in range(20):
        assert float(te.matching_loss(e, e, jax.random.PRNGKey(k))[0]) < 1e-6
    # negatives closer than the margin are penalised, unless the pair shares a caption group
    close = jnp.eye(4) * 2.0
    loss, m = te.matching_loss(close, close, jax.random.PRNGKey(0))
    assert float(m["loss_neg"]) == pytest.approx((10 - np.sqrt(8)) ** 2, rel=1e-4)
    loss, m = te.matching_loss(close, close, jax.random.PRNGKey(0), group=jnp.zeros(4, jnp.int32))
    assert float(m["loss_neg"]) == 0.0
    t = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
    _, m = te.matching_loss(t, t + 1.0, jax.random.PRNGKey(0))
    assert float(m["loss_pos"]) == pytest.approx(3.0, rel=1e-5)
    with pytest.raises(ConfigError):
        te.matching_loss(t, t, jax.random.PRNGKey(0), kind="triplet")


def test_infonce_loss():
    e = jnp.eye(4) * 5.0
    good, _ = te.matching_loss(e, e, jax.random.PRNGKey(0), kind="infonce")
    bad, _ = te.matching_loss(e, e[::-1], jax.random.PRNGKey(0), kind="infonce")
    assert float(good) < 1e-6 < float(bad)
    # same-group pairs are not negatives: two identical motions both matching
    m = e.at[1].set(e[0])
    g = jnp.array([0, 0, 1, 2])
    masked, _ = te.matching_loss(e, m, jax.random.PRNGKey(0), kind="infonce", group=g)
    plain, _ = te.matching_loss(e, m, jax.random.PRNGKey(0), kind="infonce")
    assert float(masked) < float(plain)


@pytest.fixture(scope="module")
def frozen(tiny):
    cfg, model, v = tiny
    tok = Tokenizer.build(["a person walks", "a person jumps high", "someone waves"], max_len=8)
    cfg = te.T2MEvaluatorConfig(vocab_size=tok.vocab_size, **TINY)
    model = te.T2MEvaluator(cfg)
    motion, lengths, ids, mask = _inputs(vocab=tok.vocab_size)
    v = model.init(jax.random.PRNGKey(3), motion, lengths, ids, mask)
    mean, std = np.zeros(263, np.float32), np.full(263, 2.0, np.float32)
    return te.FrozenT2MEvaluator(cfg, v["params"], tok, mean, std, max_len=32, motion_batch=2, text_batch=2), model


def test_frozen_evaluator_batches_like_a_direct_call(frozen):
    ev, model = frozen
    motion, lengths, _, _ = _inputs()
    got = ev.embed_motion(motion, lengths)  # 3 motions in batches of 2 (last one padded)
    want = model.apply({"params": ev.params}, motion, lengths, method="encode_motion")
    np.testing.assert_allclose(got, np.asarray(want), atol=1e-5)
    np.testing.assert_allclose(ev.embed_motion(motion * 2.0, lengths, normalized=False), got, atol=1e-5)
    texts = ["a person walks", "someone jumps", "a person waves high"]
    ids, mask = ev.tokenizer.encode(texts)
    want = model.apply({"params": ev.params}, ids, mask, method="encode_text")
    np.testing.assert_allclose(ev.embed_text(texts), np.asarray(want), atol=1e-5)
    assert ev.embed_text(texts).shape == (3, 6)


def test_fingerprint_is_stable_and_changes_with_weights(frozen):
    ev, _ = frozen
    fp = ev.fingerprint
    assert len(fp) == 12 and int(fp, 16) >= 0
    again = te.FrozenT2MEvaluator(ev.config, jax.tree_util.tree_map(np.array, ev.params), ev.tokenizer, ev.mean,
                                  ev.std)
    assert again.fingerprint == fp
    p = jax.tree_util.tree_map(np.array, ev.params)
    p["text"]["out_fc2"]["bias"][0] += 1e-6
    assert te.FrozenT2MEvaluator(ev.config, p, ev.tokenizer, ev.mean, ev.std).fingerprint != fp
    std = ev.std.copy()
    std[0] = 3.0
    assert te.FrozenT2MEvaluator(ev.config, ev.params, ev.tokenizer, ev.mean, std).fingerprint != fp
    tok = Tokenizer(ev.tokenizer.vocab, ev.tokenizer.max_len + 1)
    assert te.FrozenT2MEvaluator(ev.config, ev.params, tok, ev.mean, ev.std).fingerprint != fp

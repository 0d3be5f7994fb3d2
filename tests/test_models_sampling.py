"""Samplers: Gumbel-max with supplied noise, top-k / top-p, bits, soft codebook mix and
MoScale's mask-and-repredict."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar.errors import ShapeError
from mmar.models.sampling import (
    KEPT_CONFIDENCE,
    bits_to_codes,
    bits_to_index,
    greedy,
    gumbel_max,
    gumbel_noise,
    lowest_confidence_mask,
    mask_and_repredict,
    mask_schedule,
    sample_bits,
    sample_categorical,
    soft_codebook_mix,
    token_confidence,
    top_k_filter,
    top_p_filter,
)

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
RNG = np.random.default_rng(0)


def _normal(*shape, scale=1.0):
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def _gumbel(*shape):
    """Host-side Gumbel noise (the export path receives noise as an input like this)."""
    return RNG.gumbel(size=shape).astype(np.float32)


def _primitives(closed) -> set:
    names = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for v in eqn.params.values():
                for sub in (v if isinstance(v, (list, tuple)) else [v]):
                    if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                        walk(sub.jaxpr)
                    elif hasattr(sub, "eqns"):
                        walk(sub)

    walk(closed.jaxpr)
    return names


def test_gumbel_max_equals_argmax_of_noisy_logits():
    logits, noise = _normal(6, 7, 13), _gumbel(6, 7, 13)

    @jit
    def f(l, n):
        return gumbel_max(l, n), sample_categorical(l, n), gumbel_max(l, n, 0.5), sample_categorical(l), greedy(l)

    a, b, c, d, e = map(np.asarray, f(logits, noise))
    np.testing.assert_array_equal(a, np.argmax(logits + noise, -1))
    np.testing.assert_array_equal(b, a)
    np.testing.assert_array_equal(c, np.argmax(2.0 * logits + noise, -1))
    np.testing.assert_array_equal(d, np.argmax(logits, -1))
    np.testing.assert_array_equal(e, d)
    with pytest.raises(ShapeError):
        gumbel_max(logits, noise[..., :3])
    g = np.asarray(gumbel_noise(jax.random.PRNGKey(0), (20000,)))
    assert abs(g.mean() - 0.5772) < 0.03 and np.isfinite(g).all()  # Euler-Mascheroni mean


def test_gumbel_sampling_matches_softmax():
    n = 40000
    logits = np.broadcast_to(np.log([0.1, 0.2, 0.3, 0.4]).astype(np.float32), (n, 4))
    noise = _gumbel(n, 4)
    ids, ids_t = jit(lambda l, z: (gumbel_max(l, z), gumbel_max(l, z, 2.0)))(logits, noise)
    np.testing.assert_allclose(np.bincount(np.asarray(ids), minlength=4) / n, [0.1, 0.2, 0.3, 0.4], atol=0.01)
    p_t = np.sqrt([0.1, 0.2, 0.3, 0.4])  # temperature 2 flattens the distribution
    np.testing.assert_allclose(np.bincount(np.asarray(ids_t), minlength=4) / n, p_t / p_t.sum(), atol=0.01)


def test_top_k_never_samples_outside_top_k():
    logits, noise = _normal(64, 50), _gumbel(200, 64, 50)

    @jit
    def f(l, nz):
        ids = jax.vmap(lambda z: sample_categorical(l, z, temperature=1.5, top_k=5))(nz)
        return ids, jax.lax.top_k(l, 5)[1], jnp.isfinite(top_k_filter(l, 5)).sum(-1)

    ids, top5, n_fin = map(np.asarray, f(logits, noise))
    for b in range(64):
        assert set(ids[:, b]) <= set(top5[b])
    assert len(set(ids[:, 0])) > 1  # still random inside the top k
    assert (n_fin == 5).all()
    assert top_k_filter(logits, 0) is logits and top_k_filter(logits, 50) is logits


def test_top_p_keeps_the_nucleus():
    logits = np.log(np.array([[0.05, 0.5, 0.15, 0.3]], np.float32))
    noise = _gumbel(500, 1, 4)

    @jit
    def f(l, nz):
        keeps = [jnp.isfinite(top_p_filter(l, p))[0] for p in (0.4, 0.7, 0.9, 1.0)]
        return keeps, jax.vmap(lambda z: sample_categorical(l, z, top_p=0.7))(nz)

    keeps, ids = f(logits, noise)
    np.testing.assert_array_equal(keeps[0], [0, 1, 0, 0])   # top id always kept
    np.testing.assert_array_equal(keeps[1], [0, 1, 0, 1])   # 0.5 < 0.7 -> add 0.3
    np.testing.assert_array_equal(keeps[2], [0, 1, 1, 1])   # 0.8 < 0.9 -> add 0.15
    np.testing.assert_array_equal(keeps[3], [1, 1, 1, 1])   # p >= 1: off
    assert set(np.asarray(ids).ravel()) == {1, 3}


def test_export_path_has_no_sort_and_no_rng():
    """temperature + top-k + Gumbel noise input, and mask-and-repredict with supplied noise:
    no sort and no random-number primitive in the graph."""
    logits = jnp.zeros((2, 5, 16))
    prims = _primitives(jax.make_jaxpr(lambda l, n: sample_categorical(l, n, temperature=0.8, top_k=4))(logits, logits))
    assert "top_k" in prims and "sort" not in prims and not any("random" in p or "threefry" in p for p in prims)

    def refine(l, nz):
        return mask_and_repredict(lambda t, m: l, jnp.zeros((2, 5), jnp.int32), 3, noise=nz, top_k=4)

    prims = _primitives(jax.make_jaxpr(refine)(logits, jnp.zeros((3, 2, 5, 16))))
    assert "while" in prims or "scan" in prims
    assert "sort" not in prims and not any("random" in p or "threefry" in p for p in prims)
    prims = _primitives(jax.make_jaxpr(lambda l: top_p_filter(l, 0.9))(logits))
    assert "top_k" in prims  # top-p orders the full vocabulary: documented as not for export


def test_sample_bits():
    bl, noise = _normal(3, 7, 24, 2, scale=3.0), _gumbel(3, 7, 24, 2)

    @jit
    def f(bl, nz):
        return sample_bits(bl), sample_bits(bl, nz, temperature=1.3)

    (bits, probs), (bits_n, probs_n) = f(bl, noise)
    np.testing.assert_array_equal(bits, (bl[..., 1] > bl[..., 0]).astype(np.int32))
    assert bits.shape == (3, 7, 24) and (np.asarray(probs) >= 0.5).all()
    np.testing.assert_array_equal(bits_n, np.argmax(bl / 1.3 + noise, -1))
    sm = np.exp(bl / 1.3) / np.exp(bl / 1.3).sum(-1, keepdims=True)
    np.testing.assert_allclose(probs_n, np.take_along_axis(sm, np.asarray(bits_n)[..., None], -1)[..., 0], rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(bits_to_codes(bits), axis=-1), 1.0, rtol=1e-6)
    assert int(bits_to_index(jnp.array([1, 0, 1, 1]))) == 13


def test_soft_codebook_mix():
    logits, cb = _normal(2, 5, 32, scale=4.0), _normal(32, 8)

    @jit
    def f(l, cb):
        return (soft_codebook_mix(l, cb), soft_codebook_mix(l, cb, top_k=32), soft_codebook_mix(l, cb, top_k=1),
                soft_codebook_mix(l, cb, temperature=1e-4))

    full, k32, k1, cold = map(np.asarray, f(logits, cb))
    sm = np.exp(logits / 2.75) / np.exp(logits / 2.75).sum(-1, keepdims=True)
    np.testing.assert_allclose(full, sm @ cb, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(k32, full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(k1, cb[np.argmax(logits, -1)], rtol=1e-6)
    np.testing.assert_allclose(cold, cb[np.argmax(logits, -1)], atol=1e-4)  # temperature -> 0: argmax


def test_mask_schedule():
    np.testing.assert_array_equal(mask_schedule(1, 6), [6, 0])
    s = mask_schedule(10, 49)
    assert s[0] == 49 and s[-2] == 1 and s[-1] == 0 and (np.diff(s) <= 0).all()
    np.testing.assert_array_equal(mask_schedule(2, 12), [12, 1, 0])


def test_lowest_confidence_mask_without_sort():
    conf = jnp.array([[0.3, 0.1, 0.9, 0.1, 0.5]])
    np.testing.assert_array_equal(lowest_confidence_mask(conf, 2), [[0, 1, 0, 1, 0]])
    np.testing.assert_array_equal(lowest_confidence_mask(conf, 3), [[1, 1, 0, 1, 0]])
    elig = jnp.array([[1, 0, 1, 1, 1]], bool)
    np.testing.assert_array_equal(lowest_confidence_mask(conf, 2, elig), [[0, 0, 0, 1, 0]])


@pytest.mark.parametrize("steps", [1, 2, 5, 10])
def test_mask_and_repredict_under_jit(steps):
    """Fixed trip count under jit; ends with no masked tokens; fixed and padded positions
    untouched; the masked counts follow the cosine schedule."""
    B, L, V = 3, 12, 9
    MASK = V  # caller's [MASK] id
    table = jnp.asarray(_normal(L, V, V))
    counts = []

    def predict_fn(tokens, mask):
        jax.debug.callback(lambda m: counts.append(np.asarray(m).sum(-1)), mask, ordered=True)
        t = jnp.where(mask, 0, tokens)
        prev = jnp.roll(t, 1, axis=1)  # the prediction depends on the current tokens
        return table[jnp.arange(L)[None], prev] + 5.0 * jax.nn.one_hot(prev, V)

    tokens = jnp.full((B, L), MASK, jnp.int32)
    fixed = jnp.zeros((B, L), bool).at[1, :3].set(True)
    tokens = tokens.at[1, :3].set(jnp.array([4, 5, 6]))
    valid = jnp.ones((B, L), bool).at[2, 9:].set(False)
    noise = _gumbel(steps, B, L, V)

    run = jit(lambda t, nz: mask_and_repredict(predict_fn, t, steps, noise=nz, fixed=fixed, valid=valid, top_k=4))
    out, conf, mask = run(tokens, noise)
    out, conf, mask = np.asarray(out), np.asarray(conf), np.asarray(mask)
    assert not mask.any()
    np.testing.assert_array_equal(out[1, :3], [4, 5, 6])       # fixed tokens kept
    assert (out[2, 9:] == MASK).all()                          # padding untouched
    eligible = np.asarray(valid & ~fixed)
    assert ((out >= 0) & (out < V))[eligible].all()            # no [MASK] left
    assert (conf[~eligible] == KEPT_CONFIDENCE).all()
    # masked counts per step: all eligible, then the cosine schedule (never more than eligible)
    got = np.stack(counts)                                      # (steps, B)
    sched = mask_schedule(steps, L)[:steps]
    n_elig = eligible.sum(-1)
    np.testing.assert_array_equal(got[0], n_elig)
    for j in range(1, steps):
        np.testing.assert_array_equal(got[j], np.minimum(sched[j], n_elig))
    # same noise -> same result; greedy without noise is deterministic as well
    out2 = np.asarray(run(tokens, noise)[0])
    np.testing.assert_array_equal(out, out2)


def test_mask_and_repredict_with_key_and_confidence():
    B, L, V = 2, 6, 5
    logits = _normal(B, L, V, scale=3.0)

    @jit
    def f(l, key):
        z = jnp.zeros((B, L), jnp.int32)
        out, conf, _ = mask_and_repredict(lambda t, m: l, z, 1, key=key)
        return out, conf, token_confidence(l, out), mask_and_repredict(lambda t, m: l, z, 1)[0]

    out, conf, conf_ref, greedy_out = f(logits, jax.random.PRNGKey(9))
    np.testing.assert_allclose(conf, conf_ref, rtol=1e-6)
    np.testing.assert_array_equal(greedy_out, np.argmax(logits, -1))

"""Text encoders: the caption tokenizer (round trip, [UNK] counting, empty and over-long text,
static shapes, JSON), the small transformer encoder (shapes, padding invariance, pooling, jit,
gradients), precomputed feature files (lookup, errors, writing), and the optional transformers
Flax T5 adapter on a tiny random T5 built here (skipped without transformers<5)."""
from __future__ import annotations

import functools
import importlib.util
import json
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmar.data.captions import CONTENT_PHRASES, STYLE_PHRASES, all_captions
from mmar.errors import ConfigError, DataFormatError, MmarError, ShapeError
from mmar.models.conditioning import TextCrossAttention
from mmar.models.text import (
    CLS,
    EOS,
    PAD,
    UNK,
    CaptionNotFoundError,
    FlaxT5TextEncoder,
    PrecomputedTextFeatures,
    TextEncoder,
    TextEncoderConfig,
    TextInputError,
    TextTruncatedWarning,
    Tokenizer,
    TransformerTextEncoder,
    hf_tokenize,
    precompute_text_features,
    save_text_features,
    split_words,
)

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


@functools.lru_cache(maxsize=1)
def _corpus() -> tuple[str, ...]:
    out = []
    for dataset, table in sorted(CONTENT_PHRASES.items()):
        for content in table:
            for style in STYLE_PHRASES:
                out.extend(all_captions(dataset, content, style))
    return tuple(dict.fromkeys(out))


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.build(_corpus())


SMALL = dict(width=32, depth=2, heads=4, dropout=0.0)


@pytest.fixture(scope="module")
def small():
    t = Tokenizer.build(_corpus(), max_len=16)
    enc = TransformerTextEncoder(TextEncoderConfig.for_tokenizer(t, **SMALL))
    ids, mask = t.encode(["a person walks forward."])
    variables = enc.init(jax.random.PRNGKey(0), ids, mask)
    return t, enc, variables


# ---------------------------------------------------------------- tokenizer

def test_split_words_lowercases_and_splits_punctuation():
    assert split_words("Bye-Bye, WORLD!  ok") == ["bye", "-", "bye", ",", "world", "!", "ok"]
    assert split_words("ﬁne  café") == ["fine", "café"]  # NFKC folds the ligature
    assert split_words("   ") == []


def test_build_from_captions(tok):
    assert tok.vocab[:4] == (PAD, UNK, CLS, EOS)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.eos_id) == (0, 1, 2, 3)
    # the generated captions: a few thousand sentences over a couple of hundred pieces
    assert 100 < tok.vocab_size < 400
    assert tok.vocab[4] in ("a", "person", ".")  # most frequent first
    longest = max(len(split_words(t)) for t in _corpus())
    assert tok.max_len == longest + 2  # max_len=None fits the corpus
    assert Tokenizer.build(_corpus()) == tok  # deterministic
    tok.reset_unknown_counts()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids, mask = tok.encode(list(_corpus()))
    assert not tok.unknown_counts
    assert ids.shape == mask.shape == (len(_corpus()), tok.max_len)


def test_round_trip_and_layout(tok):
    texts = list(_corpus()[::37])
    ids, mask = tok.encode(texts)
    assert ids.dtype == np.int32 and mask.dtype == np.bool_
    assert ids.shape == (len(texts), tok.max_len)
    assert tok.decode(ids) == [" ".join(split_words(t)) for t in texts]
    assert tok.decode(ids, mask) == tok.decode(ids)
    n = mask.sum(1)
    assert (ids[:, 0] == tok.cls_id).all()
    assert (ids[np.arange(len(texts)), n - 1] == tok.eos_id).all()
    assert (ids[~mask] == tok.pad_id).all()
    assert (mask == (np.arange(tok.max_len)[None] < n[:, None])).all()
    one_ids, one_mask = tok.encode(texts[0])  # a single string is a batch of one
    assert one_ids.shape == (1, tok.max_len)
    np.testing.assert_array_equal(one_ids[0], ids[0])


def test_min_count_and_max_vocab():
    texts = ["a b c", "a b", "a"]
    assert Tokenizer.build(texts).vocab[4:] == ("a", "b", "c")
    assert Tokenizer.build(texts, min_count=2).vocab[4:] == ("a", "b")
    assert Tokenizer.build(texts, max_vocab=1).vocab[4:] == ("a",)
    with pytest.raises(TextInputError):
        Tokenizer.build(["", "  "])
    with pytest.raises(ConfigError):
        Tokenizer(["a", "b"], 8)
    with pytest.raises(ConfigError):
        Tokenizer.build(texts, max_len=2)


def test_unknown_words_counted(tok):
    tok.reset_unknown_counts()
    texts = ["a person moonwalks backward.", "a zorblax zorblax waves."]
    unknown = tok.unknown_words(texts)
    assert set(unknown) == {w for t in texts for w in split_words(t) if w not in tok.vocab}
    assert unknown["zorblax"] == 2
    assert not tok.unknown_counts  # listing has no side effect
    ids, _ = tok.encode(texts)
    assert (ids == tok.unk_id).sum() == sum(unknown.values())
    assert tok.unknown_counts == unknown
    tok.encode(texts[1])
    assert tok.unknown_counts["zorblax"] == 4  # accumulates across calls
    assert "[UNK]" in tok.decode(ids)[0]
    tok.reset_unknown_counts()
    with pytest.raises(TextInputError, match="zorblax"):
        tok.encode(texts, unknown="error")
    assert not tok.unknown_counts
    with pytest.raises(ConfigError):
        tok.encode(texts, unknown="skip")


def test_empty_text_is_an_error(tok):
    for bad in ("", "   ", "\n\t"):
        with pytest.raises(TextInputError, match="text 1 is empty"):
            tok.encode(["a person walks.", bad])
    with pytest.raises(TextInputError, match="not a string"):
        tok.encode(["a person walks.", None])
    err = pytest.raises(MmarError, tok.encode, [""])
    assert isinstance(err.value, ValueError)


def test_over_long_text_truncated_with_warning():
    t = Tokenizer.build(["one two three four five six seven eight"], max_len=6)
    fits = "one two three four"  # max_len - 2 words: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids, mask = t.encode([fits])
    assert mask.all()
    with pytest.warns(TextTruncatedWarning, match="1 of 2 texts"):
        ids, mask = t.encode([fits, "one two three four five six"])
    assert t.decode(ids)[1] == "one two three four"
    assert ids[1, -1] == t.eos_id and mask[1].all()  # [EOS] kept after truncation
    with pytest.raises(TextInputError, match="more than max_len"):
        t.encode(["one two three four five"], overflow="error")


def test_json_save_load(tok, tmp_path):
    p = tmp_path / "tok.json"
    tok.save(p)
    back = Tokenizer.load(p)
    assert back == tok and back.vocab_size == tok.vocab_size and back.max_len == tok.max_len
    texts = ["Someone waves the LEFT hand, smiling!", "a person walks forward."]
    np.testing.assert_array_equal(back.encode(texts)[0], tok.encode(texts)[0])
    obj = json.loads(p.read_text())
    assert obj["format"] == "mmar.text.Tokenizer" and obj["vocab"][:4] == [PAD, UNK, CLS, EOS]
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "mmar.text.Tokenizer",\n "version": 1, "vocab": [}')
    with pytest.raises(DataFormatError, match="bad.json:2"):
        Tokenizer.load(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataFormatError, match="not a tokenizer"):
        Tokenizer.load(bad)
    bad.write_text(json.dumps({"format": "mmar.text.Tokenizer", "version": 1, "max_len": 8}))
    with pytest.raises(DataFormatError, match="vocab"):
        Tokenizer.load(bad)


# ---------------------------------------------------------------- transformer encoder

def test_encoder_shapes_and_protocol(small):
    t, enc, variables = small
    assert isinstance(enc, TextEncoder)
    assert (enc.dim, enc.max_len) == (32, t.max_len)
    ids, mask = t.encode(["a person walks forward.", "someone is waving both hands happily."])
    tokens, pooled = enc.encode(variables, ids, mask)
    assert tokens.shape == (2, t.max_len, 32) and pooled.shape == (2, 32)
    assert np.isfinite(np.asarray(tokens)).all()
    assert (np.asarray(tokens)[~mask] == 0).all()
    np.testing.assert_allclose(pooled, tokens[:, 0], atol=0)  # pool='cls': the [CLS] output


def test_padding_does_not_change_real_tokens(small):
    t, enc, variables = small
    ids, mask = t.encode(["a person walks forward.", "an angry person throws punches."])
    tokens, pooled = enc.encode(variables, ids, mask)
    garbage = np.where(mask, ids, np.random.default_rng(0).integers(0, t.vocab_size, ids.shape)).astype(np.int32)
    tokens_g, pooled_g = enc.encode(variables, garbage, mask)
    np.testing.assert_allclose(tokens_g, tokens, atol=1e-6)
    np.testing.assert_allclose(pooled_g, pooled, atol=1e-6)
    # a shorter padded length (L < max_len) gives the same real-token outputs
    L = int(mask.sum(1).max())
    tokens_s, pooled_s = enc.encode(variables, ids[:, :L], mask[:, :L])
    np.testing.assert_allclose(tokens_s, tokens[:, :L], atol=1e-5)
    np.testing.assert_allclose(pooled_s, pooled, atol=1e-5)
    # a row that is all padding (batch filler) stays finite
    tok0, pool0 = enc.encode(variables, np.zeros_like(ids[:1]), np.zeros_like(mask[:1]))
    assert np.isfinite(np.asarray(pool0)).all() and (np.asarray(tok0) == 0).all()


def test_mean_pooling_ignores_padding(small):
    t, _, _ = small
    enc = TransformerTextEncoder(TextEncoderConfig.for_tokenizer(t, pool="mean", **SMALL))
    ids, mask = t.encode(["a person walks forward.", "a sad person bows from the waist."])
    variables = enc.init(jax.random.PRNGKey(1), ids, mask)
    tokens, pooled = enc.encode(variables, ids, mask)
    ref = np.asarray(tokens).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(pooled, ref, rtol=1e-5, atol=1e-6)
    garbage = np.where(mask, ids, 5).astype(np.int32)
    np.testing.assert_allclose(enc.encode(variables, garbage, mask)[1], pooled, atol=1e-6)


def test_encoder_jit_and_errors(small):
    t, enc, variables = small
    ids, mask = t.encode(["a person walks forward.", "someone runs."])
    eager = enc.encode(variables, ids, mask)
    jitted = jit(enc.encode)(variables, ids, mask)
    for a, b in zip(eager, jitted):
        np.testing.assert_allclose(a, b, atol=1e-5)
    with pytest.raises(ShapeError, match="exceeds max_len"):
        enc.encode(variables, np.zeros((1, t.max_len + 1), np.int32), np.ones((1, t.max_len + 1), bool))
    with pytest.raises(ShapeError):
        enc.encode(variables, ids, mask[:, :-1])
    with pytest.raises(ConfigError):
        TextEncoderConfig(vocab_size=100, width=30, heads=4)
    with pytest.raises(ConfigError):
        TextEncoderConfig(vocab_size=100, pool="max")


def test_gradients_flow_through_encoder_and_text_conditioning(small):
    """Trained with the generator: a loss on TextCrossAttention's outputs reaches every encoder
    parameter, and nothing reaches what only padding reads ([PAD] embedding, unused positions)."""
    t, enc, variables = small
    ids, mask = t.encode(["a person walks forward.", "a tired person is raising both hands."])
    cond = TextCrossAttention(enc.dim, memory_dim=24, pool_dim=24, num_queries=2, pool_heads=2,
                              max_len=enc.max_len)
    tokens, _ = enc.encode(variables, ids, mask)
    cvars = cond.init(jax.random.PRNGKey(2), tokens, mask)

    def loss(params):
        tokens, pooled = enc.encode({"params": params}, ids, mask)
        c = cond.apply(cvars, tokens, mask)
        return (c.memory ** 2).mean() + (c.adaln ** 2).mean() + (pooled ** 2).mean()

    grads = jax.jit(jax.grad(loss))(variables["params"])
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    for path, g in flat:
        assert np.isfinite(np.asarray(g)).all(), path
        assert float(jnp.abs(g).max()) > 0, f"no gradient reaches {jax.tree_util.keystr(path)}"
    emb = np.asarray(grads["token_emb"]["embedding"])
    assert (emb[t.pad_id] == 0).all()
    used = np.unique(ids[mask])
    assert (np.abs(emb[used]).sum(1) > 0).all()
    pos = np.asarray(grads["pos_emb"])
    L = int(mask.sum(1).max())
    assert (pos[L:] == 0).all() and (np.abs(pos[:L]).sum(1) > 0).all()


def test_dropout_in_training(small):
    t, _, _ = small
    enc = TransformerTextEncoder(TextEncoderConfig.for_tokenizer(t, width=32, depth=1, heads=4, dropout=0.5))
    ids, mask = t.encode(["a person walks forward."])
    variables = enc.init(jax.random.PRNGKey(0), ids, mask)
    a = enc.encode(variables, ids, mask, train=True, rngs={"dropout": jax.random.PRNGKey(1)})[0]
    b = enc.encode(variables, ids, mask, train=True, rngs={"dropout": jax.random.PRNGKey(2)})[0]
    assert not np.allclose(a, b)
    e1, e2 = enc.encode(variables, ids, mask)[0], enc.encode(variables, ids, mask)[0]
    np.testing.assert_array_equal(e1, e2)


# ---------------------------------------------------------------- precomputed features

def _fake_features(texts, L=6, D=8, seed=0):
    rng = np.random.default_rng(seed)
    n = rng.integers(1, L + 1, len(texts))
    mask = np.arange(L)[None] < n[:, None]
    return rng.normal(size=(len(texts), L, D)).astype(np.float32) * mask[..., None], mask


def test_precomputed_lookup(tmp_path):
    texts = ["A person walks forward.", "someone is  waving both hands.", "a person bows."]
    feats, mask = _fake_features(texts)
    p = tmp_path / "feats.npz"
    save_text_features(p, texts, feats, mask, encoder="fake-t5", dtype=np.float32)
    pre = PrecomputedTextFeatures.load(p)
    assert isinstance(pre, TextEncoder)
    assert (len(pre), pre.dim, pre.max_len, pre.encoder) == (3, 8, 6, "fake-t5")
    out = pre.lookup(["a person bows.", "someone is waving both hands. ", "A person walks forward."])
    np.testing.assert_array_equal(out.tokens, feats[[2, 1, 0]])
    np.testing.assert_array_equal(out.mask, mask[[2, 1, 0]])
    ref = feats.sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(out.pooled, ref[[2, 1, 0]], rtol=1e-6)
    assert "a person bows." in pre and "A PERSON BOWS." not in pre  # case matters
    # protocol path: row ids, jit-able gather
    ids, m = pre.tokenize(texts[::-1])
    assert ids.shape == m.shape == (3, 6)
    tokens, pooled = jit(pre.encode)(pre.variables, ids, m)
    np.testing.assert_allclose(tokens, feats[::-1], atol=1e-6)
    np.testing.assert_allclose(pooled, ref[::-1], rtol=1e-6)


def test_precomputed_float16_and_pooled(tmp_path):
    texts = ["a", "b"]
    feats, mask = _fake_features(texts, L=4, D=3)
    pooled = np.ones((2, 3), np.float32)
    p = tmp_path / "f16.npz"
    save_text_features(p, texts, feats, mask, pooled=pooled)
    with np.load(p) as z:
        assert z["features"].dtype == np.float16 and z["texts"].dtype.kind == "U"
    out = PrecomputedTextFeatures.load(p).lookup(texts)
    assert out.tokens.dtype == np.float32
    np.testing.assert_allclose(out.tokens, feats, atol=1e-2)
    np.testing.assert_array_equal(out.pooled, pooled)


def test_precomputed_errors(tmp_path):
    texts = ["a person walks.", "a person runs."]
    feats, mask = _fake_features(texts)
    p = tmp_path / "feats.npz"
    save_text_features(p, texts, feats, mask)
    pre = PrecomputedTextFeatures.load(p)
    with pytest.raises(CaptionNotFoundError, match=r"1 of 2 captions .*feats\.npz.*'a person jumps\.'") as e:
        pre.lookup(["a person walks.", "a person jumps."])
    assert isinstance(e.value, KeyError) and isinstance(e.value, MmarError)
    with pytest.raises(CaptionNotFoundError):
        pre.tokenize("a person jumps.")
    with pytest.raises(TextInputError, match="duplicate"):
        save_text_features(tmp_path / "d.npz", ["a b", "a  b"], *_fake_features(["x", "y"]))
    with pytest.raises(ShapeError):
        save_text_features(tmp_path / "s.npz", texts, feats[:1], mask[:1])
    np.savez(tmp_path / "missing.npz", texts=np.asarray(texts), features=feats)
    with pytest.raises(DataFormatError, match=r"missing.npz.*\['mask'\]"):
        PrecomputedTextFeatures.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "shape.npz", texts=np.asarray(texts), features=feats, mask=mask[:, :3])
    with pytest.raises(DataFormatError, match="shape.npz"):
        PrecomputedTextFeatures.load(tmp_path / "shape.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match="junk.npz"):
        PrecomputedTextFeatures.load(tmp_path / "junk.npz")
    (tmp_path / "cut.npz").write_bytes(p.read_bytes()[:200])  # a truncated zip
    with pytest.raises(DataFormatError, match="cut.npz"):
        PrecomputedTextFeatures.load(tmp_path / "cut.npz")
    np.savez(tmp_path / "obj.npz", texts=np.asarray(texts, dtype=object), features=feats, mask=mask)
    with pytest.raises(DataFormatError, match="obj.npz"):  # never unpickled
        PrecomputedTextFeatures.load(tmp_path / "obj.npz")


def test_precompute_with_an_encoder(small, tmp_path):
    """precompute_text_features runs any encode function in fixed-size batches (one compile)."""
    t, enc, variables = small
    encode = jit(enc.encode)
    shapes = []

    def encode_fn(batch):
        ids, mask = t.encode(batch)
        shapes.append(ids.shape)
        tokens, pooled = encode(variables, ids, mask)
        return tokens, mask, pooled

    texts = list(_corpus()[:7]) + [_corpus()[0]]  # a duplicate is written once
    n = precompute_text_features(tmp_path / "own.npz", texts, encode_fn, batch_size=3, dtype=np.float32)
    assert n == 7 and shapes == [(3, t.max_len)] * 3
    pre = PrecomputedTextFeatures.load(tmp_path / "own.npz")
    ids, mask = t.encode(texts[:7])
    tokens, pooled = enc.encode(variables, ids, mask)
    out = pre.lookup(texts[:7])
    np.testing.assert_allclose(out.tokens, tokens, atol=1e-5)
    np.testing.assert_allclose(out.pooled, pooled, atol=1e-5)
    with pytest.raises(TextInputError):
        precompute_text_features(tmp_path / "none.npz", [], encode_fn)


def _load_tool():
    path = Path(__file__).resolve().parents[1] / "tools" / "precompute_text_features.py"
    spec = importlib.util.spec_from_file_location("precompute_text_features", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_precompute_tool_captions(tmp_path):
    """The tool's caption sources work without transformers (it is imported only in main)."""
    tool = _load_tool()
    assert tool.bandai_captions() == list(_corpus())
    caps = tmp_path / "caps.txt"
    caps.write_text("  a person walks.\n\n\tsomeone runs. \n")
    assert tool.read_captions(str(caps)) == ["a person walks.", "someone runs."]
    args = tool.parse_args(["--model", "m", "--bandai", "--out", "o.npz"])
    assert (args.max_len, args.dtype, args.strict) == (20, "float16", False)
    with pytest.raises(SystemExit):
        tool.parse_args(["--model", "m", "--bandai", "--captions", "c", "--out", "o.npz"])


# ---------------------------------------------------------------- optional: transformers Flax T5

def _transformers():
    tf = pytest.importorskip("transformers")
    if not hasattr(tf, "FlaxT5EncoderModel"):
        pytest.skip(f"transformers {tf.__version__} has no Flax T5 (removed in transformers 5)")
    return tf


def _tiny_t5(tf):
    cfg = tf.T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=16,
                      dropout_rate=0.0, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1)
    return tf.FlaxT5EncoderModel(cfg, seed=0, dtype=jnp.float32)


def _tiny_hf_tokenizer(tf, words):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    core = HFTokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return tf.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def test_t5_adapter_tiny_random_model():
    tf = _transformers()
    model = _tiny_t5(tf)
    enc, variables = FlaxT5TextEncoder.from_model(model, max_len=8)
    assert isinstance(enc, TextEncoder) and (enc.dim, enc.max_len) == (16, 8)
    hf = _tiny_hf_tokenizer(tf, "a person walks forward someone is waving both hands .".split())
    ids, mask = hf_tokenize(hf, ["a person walks forward .", "someone is waving"], 8)
    assert ids.shape == mask.shape == (2, 8) and ids.dtype == np.int32 and mask.dtype == np.bool_
    assert mask.sum(1).tolist() == [6, 4] and ids[0, 5] == 1 and ids[1, 3] == 1  # </s> appended
    tokens, pooled = jit(enc.encode)(variables, ids, mask)
    assert tokens.shape == (2, 8, 16) and pooled.shape == (2, 16)
    assert (np.asarray(tokens)[~mask] == 0).all()
    ref = model(ids, attention_mask=mask.astype(np.int32)).last_hidden_state
    np.testing.assert_allclose(np.asarray(tokens)[mask], np.asarray(ref)[mask], atol=1e-5)
    np.testing.assert_allclose(pooled, np.asarray(tokens).sum(1) / mask.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
    garbage = np.where(mask, ids, 7).astype(np.int32)
    t2, p2 = enc.encode(variables, garbage, mask)
    np.testing.assert_allclose(t2, tokens, atol=1e-5)
    np.testing.assert_allclose(p2, pooled, atol=1e-5)
    # plugs into the text conditioning of the scale-wise transformer
    cond = TextCrossAttention(enc.dim, memory_dim=8, pool_dim=8, max_len=enc.max_len)
    c = cond.apply(cond.init(jax.random.PRNGKey(0), tokens, mask), tokens, mask)
    assert c.memory.shape == (2, 8, 8) and c.adaln.shape == (2, 8)
    # fallbacks
    with pytest.raises(TextInputError, match="text 0 is empty"):
        hf_tokenize(hf, ["  "], 8)
    long = " ".join(["a person walks forward ."] * 3)
    with pytest.warns(TextTruncatedWarning):
        ids_l, mask_l = hf_tokenize(hf, [long], 8)
    assert mask_l.all() and ids_l[0, -1] == 1  # truncated, </s> kept
    with pytest.raises(TextInputError, match="more than max_len"):
        hf_tokenize(hf, [long], 8, overflow="error")


def test_precompute_tool_with_tiny_t5(tmp_path):
    tf = _transformers()
    model = _tiny_t5(tf)
    words = "a person walks forward someone is waving both hands .".split()
    hf = _tiny_hf_tokenizer(tf, words)
    mdir = tmp_path / "tiny_t5"
    model.save_pretrained(mdir)
    hf.save_pretrained(mdir)
    caps = tmp_path / "caps.txt"
    caps.write_text("a person walks forward .\n\nsomeone is waving both hands .\na person walks forward .\n")
    tool = _load_tool()
    out = tmp_path / "t5.npz"
    assert tool.main(["--model", str(mdir), "--captions", str(caps), "--out", str(out), "--max-len", "8",
                      "--batch", "4", "--dtype", "float32"]) == 0
    pre = PrecomputedTextFeatures.load(out)
    assert (len(pre), pre.dim, pre.max_len) == (2, 16, 8)
    enc, variables = FlaxT5TextEncoder.from_model(model, max_len=8)
    ids, mask = hf_tokenize(hf, ["someone is waving both hands ."], 8)
    tokens, pooled = enc.encode(variables, ids, mask)
    got = pre.lookup("someone is waving both hands .")
    np.testing.assert_allclose(got.tokens, tokens, atol=1e-5)
    np.testing.assert_allclose(got.pooled, pooled, atol=1e-5)
    np.testing.assert_array_equal(got.mask, mask)

"""Language models (#28): token ids alone explained at an embedding anywhere in the model, tied
embeddings, and the smoothed attributions of every generated token (``explain_generation``)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from crosscheck import require

import tfmollify as tfm

L = keras.layers
T, V, D = 6, 20, 4


def _ids(b=3, t=T, v=V, seed=0):
    return np.random.default_rng(seed).integers(1, v, size=(b, t)).astype(np.int32)


def _flat_and_nested(seed=0):
    """One classifier twice, sharing its layers: flat (the split at "emb") and with the
    embedding inside a sub-model ("encoder/emb", intercepted)."""
    keras.utils.set_random_seed(seed)
    emb, pool, out = L.Embedding(V, D, name="emb"), L.GlobalAveragePooling1D(), L.Dense(2)
    dense = L.Dense(D, activation="tanh")
    ids = keras.Input((T,), dtype="int32")
    flat = keras.Model(ids, out(pool(dense(emb(ids)))))
    inner = keras.Input((T,), dtype="int32")
    encoder = keras.Model(inner, dense(emb(inner)), name="encoder")
    outer = keras.Input((T,), dtype="int32")
    nested = keras.Model(outer, out(pool(encoder(outer))))
    return flat, nested


# -- 1. token ids alone, the noise and the attribution at an embedding anywhere ---------------
@pytest.mark.parametrize(
    ("mode", "aggregation"),
    # SmoothGrad is compared exactly under every aggregation; the weight-noise modes (checked
    # for shape and finiteness) each with one
    [("sg", "smoothgrad"), ("sg", "smoothgrad_sq"), ("sg", "vargrad"), ("ng", "vargrad"),
     ("fg", "smoothgrad_sq")],
)
def test_nested_embedding_equals_the_split_model(mode, aggregation):
    flat, nested = _flat_and_nested()
    kw = dict(mode=mode, aggregation=aggregation, num_samples=4, num_weight_samples=3, seed=1,
              reduce="norm")
    ids = _ids()
    want = tfm.Explainer(flat, explain_at="emb", **kw)(ids, [0, 1, 0])
    got = tfm.Explainer(nested, explain_at="encoder/emb", **kw)(ids, [0, 1, 0])
    if mode == "sg":  # no weight noise: exactly the same computation
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    else:  # NoiseGrad also perturbs the embedding in the nested model; same shape and finite
        assert got.shape == want.shape == (3, T) and np.isfinite(got).all()


@pytest.mark.parametrize("attribution", ["gradient", "input_x_gradient", "integrated_gradients",
                                         "mine"])
def test_token_ids_alone_with_every_base_method(attribution):
    flat, nested = _flat_and_nested(1)

    def mine(score_fn, h):
        return 2.0 * tfm.tape_gradient(score_fn, h)

    method = mine if attribution == "mine" else attribution
    kw = dict(attribution=method, num_samples=4, seed=0, ig_steps=4)
    ids = _ids()
    want = tfm.SmoothGrad(flat, explain_at="emb", **kw)(ids, 1)
    got = tfm.SmoothGrad(nested, explain_at="encoder/emb", **kw)(ids, 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if attribution == "mine":
        base = tfm.SmoothGrad(flat, explain_at="emb", num_samples=4, seed=0)(ids, 1)
        np.testing.assert_allclose(got, 2 * base, rtol=1e-5, atol=1e-6)


def test_sequential_noise_at_and_attribute_at_the_embedding():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((T,), dtype="int32"), L.Embedding(V, D, name="emb"),
                              L.GlobalAveragePooling1D(), L.Dense(2, name="out")])
    w = model.get_layer("out").get_weights()[0]
    got = tfm.SmoothGrad(model, noise_at="emb", attribute_at="emb", num_samples=4, seed=0)(
        _ids(), [0, 1, 1])
    want = np.repeat(w.T[[0, 1, 1]][:, None, :] / T, T, axis=1)  # linear after the embedding
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_grad_cam_at_an_embedding_is_refused_with_a_message():
    _, nested = _flat_and_nested()
    with pytest.raises(ValueError, match="embedding, whose features are not channels"):
        tfm.SmoothGrad(nested, explain_at="encoder/emb", attribution="grad_cam",
                       num_samples=2, seed=0)(_ids(), 0)


def test_ids_without_a_layer_name_the_embeddings():
    _, nested = _flat_and_nested()
    with pytest.raises(ValueError, match=r"explain_at.*\['encoder/emb'\]") as info:
        tfm.SmoothGrad(nested, num_samples=2)(_ids(), 0)
    assert "\x1b" not in str(info.value)
    with pytest.raises(ValueError, match="no gradient with respect to them"):
        tfm.NoiseGrad(nested, num_weight_samples=2)(_ids(), 0)


def test_attribution_at_layer_with_sg_noise_on_ids_is_refused():
    _, nested = _flat_and_nested()
    with pytest.raises(ValueError, match=r"ids take no noise.*'encoder/emb'"):
        tfm.SmoothGrad(nested, attribute_at="encoder/emb", num_samples=2)(_ids(), 0)


def test_ids_pass_through_untouched_and_the_model_is_unchanged():
    _, nested = _flat_and_nested()
    before = [w.copy() for w in nested.get_weights()]
    seen = []
    emb = nested.get_layer("encoder").get_layer("emb")
    ids = _ids()
    out = tfm.FusionGrad(nested, explain_at="encoder/emb", num_samples=2, num_weight_samples=2,
                         seed=0)(ids, 0)
    assert out.shape == (3, T, D)
    # the embedding's own lookup of the same ids is what the explainer perturbed around
    seen.append(emb(ids).numpy())
    assert all(np.array_equal(a, b) for a, b in zip(before, nested.get_weights(), strict=True))
    assert "call" not in emb.__dict__  # the interception is gone


# -- 2. tied embeddings ---------------------------------------------------------------------
def _tied_lm(seed=0):
    """ids -> Embedding (lookup) -> Dense -> the same matrix reversed -> logits (tied)."""
    keras.utils.set_random_seed(seed)

    class TiedEmbedding(keras.layers.Layer):
        def build(self, input_shape):
            self.embeddings = self.add_weight(shape=(V, D), initializer="normal")

        def call(self, inputs, reverse=False):
            if reverse:
                return keras.ops.matmul(inputs, keras.ops.transpose(self.embeddings))
            return keras.ops.take(self.embeddings, inputs, axis=0)

    ids = keras.Input((T,), dtype="int32")
    emb = TiedEmbedding(name="tok")
    h = L.Dense(D, activation="tanh", name="mix")(emb(ids))
    return keras.Model(ids, emb(h, reverse=True))


def test_a_tied_embedding_puts_noise_on_its_lookup_call():
    lm = _tied_lm()
    ids = _ids()
    kw = dict(num_samples=4, seed=0)
    lookup = tfm.SmoothGrad(lm, explain_at="tok", **kw)(ids, lambda s: s[:, -1, 3])
    first = tfm.SmoothGrad(lm, explain_at="tok:0", **kw)(ids, lambda s: s[:, -1, 3])
    np.testing.assert_array_equal(lookup, first)
    assert lookup.shape == (3, T, D)
    # the reverse call named explicitly: its output is the logits
    at_logits = tfm.SmoothGrad(lm, explain_at="tok:1", **kw)(ids, lambda s: s[:, -1, 3])
    assert at_logits.shape == (3, T, V)
    with pytest.raises(ValueError, match=r"called 2 time.*'tok:2' names no call"):
        tfm.SmoothGrad(lm, explain_at="tok:2", **kw)(ids, lambda s: s[:, -1, 3])


def test_a_shared_float_layer_is_still_refused_in_plain_text():
    keras.utils.set_random_seed(0)
    x = keras.Input((3,))
    shared = L.Dense(3, name="twice")
    model = keras.Model(x, L.Dense(2)(shared(shared(x))))
    with pytest.raises(ValueError, match=r"called more than once.*'twice:k'") as info:
        tfm.SmoothGrad(model, noise_at="twice", attribute_at="twice", num_samples=2)(
            np.ones((1, 3), np.float32), 0)
    assert "\x1b" not in str(info.value)


# -- 3. explain_generation ------------------------------------------------------------------
def _linear_lm(seed=0, v=V, d=D):
    """Causal and linear in the embeddings: logits_t = W (h_t + 0.5 h_{t-1} + 0.25 h_{t-2})."""
    keras.utils.set_random_seed(seed)
    ids = keras.Input((None,), dtype="int32")
    h = L.Embedding(v, d, name="emb")(ids)
    mixed = L.Conv1D(d, 3, padding="causal", use_bias=False, name="mix")(h)
    lm = keras.Model(ids, L.Dense(v, name="head")(mixed))
    kernel = np.zeros((3, d, d), np.float32)
    kernel[2], kernel[1], kernel[0] = np.eye(d), 0.5 * np.eye(d), 0.25 * np.eye(d)
    lm.get_layer("mix").set_weights([kernel])
    return lm


def _causal_transformer(seed=0, v=V, d=8, causal=True):
    keras.utils.set_random_seed(seed)
    ids = keras.Input((None,), dtype="int32")
    h = L.Embedding(v, d, name="emb")(ids)
    a = L.MultiHeadAttention(2, 4, name="att")(h, h, use_causal_mask=causal)
    h = L.LayerNormalization(name="ln")(h + a)
    return keras.Model(ids, L.Dense(v, name="head")(h))


def test_a_linear_lm_gets_the_exact_answer():
    lm = _linear_lm()
    w = lm.get_layer("head").get_weights()[0]  # [D, V]
    prompt, cont = [[3, 1, 4, 1]], [[5, 9, 2]]
    e = tfm.SmoothGrad(lm, explain_at="emb", num_samples=4, seed=0, reduce="sum",
                       kernel="hyperbolic")
    r = tfm.explain_generation(e, prompt, continuation_ids=cont, score="logit", whole=True)
    ids = np.array(prompt[0] + cont[0])
    want = np.zeros((7, 3))
    for j in range(3):
        t = 4 + j - 1  # the logits at t predict the token at t + 1
        col = w[:, ids[t + 1]].sum()
        for lag, c in ((0, 1.0), (1, 0.5), (2, 0.25)):
            want[t - lag, j] = c * col
    np.testing.assert_allclose(r.attributions[0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.stderr[0], 0.0, atol=1e-5)  # linear: no Monte Carlo error
    np.testing.assert_allclose(r.whole[0], want.sum(axis=1), rtol=1e-5, atol=1e-6)


def _plain_smoothgrad(lm, ids, position, token, eps, n, seed):
    """An independent SmoothGrad of log p(token | ids[:position]) at the embedding's output:
    plain TensorFlow on the model cut after its embedding, Gaussian noise from NumPy."""
    emb = lm.get_layer("emb")
    h_in = keras.Input((ids.shape[0], emb.output_dim))
    h, a = h_in, lm.get_layer("att")(h_in, h_in, use_causal_mask=True)
    tail = keras.Model(h_in, lm.get_layer("head")(lm.get_layer("ln")(h + a)))
    h0 = emb(ids[None]).numpy()
    noise = np.random.default_rng(seed).normal(size=(n, *h0.shape[1:])).astype(np.float32)
    x = tf.constant(h0 + eps * noise)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logp = tf.nn.log_softmax(tail(x)[:, position - 1, :], axis=-1)[:, token]
    g = tape.gradient(logp, x).numpy()  # [n, T, D]
    return g.mean(0), g.std(0, ddof=1) / np.sqrt(n)


def test_one_row_matches_an_independent_smoothgrad():
    lm = _causal_transformer()
    prompt, cont = np.array([[3, 1, 4, 1, 5]]), np.array([[9, 2, 6]])
    eps, n = 0.3, 256
    e = tfm.SmoothGrad(lm, explain_at="emb", num_samples=n, seed=0, epsilon=eps)
    r = tfm.explain_generation(e, prompt, continuation_ids=cont)
    ids = np.concatenate([prompt, cont], axis=1)[0]
    j = 1  # the second generated token, at position P + 1
    mean, se = _plain_smoothgrad(lm, ids, 5 + j, ids[5 + j], eps, 4 * n, seed=7)
    want, want_se = np.linalg.norm(mean, axis=-1), np.sqrt((se**2).sum(-1))
    got, got_se = r.attributions[0, :, j], r.stderr[0, :, j]
    live = slice(0, 5 + j)
    z = np.abs(got[live] - want[live]) / np.sqrt(got_se[live] ** 2 + want_se[live] ** 2)
    threshold = 4.42  # two-sided, family-wise 1e-4 over 6 positions (Bonferroni)
    assert z.max() < threshold, (z, got, want)
    assert np.all(got[5 + j:] == 0)


def _tiny_gpt2(max_len=16):
    """A one-layer KerasHub GPT-2 causal LM from a config (random weights, no download)."""
    keras_hub = require("keras_hub", "KerasHub GPT-2 from a config")
    keras.utils.set_random_seed(0)
    bb = keras_hub.models.GPT2Backbone(vocabulary_size=60, num_layers=1, num_heads=2,
                                       hidden_dim=8, intermediate_dim=16,
                                       max_sequence_length=max_len)
    return keras_hub.models.GPT2CausalLM(backbone=bb, preprocessor=None)


@pytest.mark.slow
def test_causality_and_padding_on_a_batch_of_different_lengths():
    lm = _tiny_gpt2(16)
    e = tfm.SmoothGrad(lm, explain_at="token_embedding", num_samples=4, seed=0)
    r = tfm.explain_generation(e, [[5, 6, 7], [8]], continuation_ids=[[1, 2], [3]])
    assert r.prompt_length == 3 and r.attributions.shape == (2, 5, 2)
    np.testing.assert_array_equal(r.context_mask, [[1, 1, 1, 1, 1], [0, 0, 1, 1, 0]])
    np.testing.assert_array_equal(r.generated_mask, [[1, 1], [1, 0]])
    for i in range(2):
        for j in range(2):
            assert np.all(r.attributions[i, 3 + j:, j] == 0)  # own position and later
            assert np.all(r.attributions[i, ~r.context_mask[i], j] == 0)  # padding
        assert np.all(r.attributions[i, :3 + 0, 0][r.context_mask[i, :3]] > 0)
    assert np.all(r.attributions[1, :, 1] == 0) and r.probabilities[1, 1] == 0


def test_a_model_that_is_not_causal_is_refused():
    lm = _causal_transformer(causal=False)
    e = tfm.SmoothGrad(lm, explain_at="emb", num_samples=4, seed=0)
    with pytest.raises(ValueError, match="not causal"):
        tfm.explain_generation(e, [[1, 2, 3]], continuation_ids=[[4, 5]])


def test_greedy_generation_and_the_end_token():
    lm = _causal_transformer(1)
    e = tfm.SmoothGrad(lm, explain_at="emb", num_samples=2, seed=0)
    r = tfm.explain_generation(e, [[1, 2, 3]], max_new_tokens=4)
    ids = [1, 2, 3]
    for _ in range(4):  # greedy by hand
        ids.append(int(np.argmax(lm(np.array([ids]))[0, -1])))
    np.testing.assert_array_equal(r.token_ids[0], ids)
    logits = lm(np.array([ids[:-1]])).numpy()[0, 2:]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(r.probabilities[0], p[np.arange(4), ids[3:]], rtol=1e-4)
    end = ids[4]  # stops after the first generated token equal to it
    r2 = tfm.explain_generation(e, [[1, 2, 3]], max_new_tokens=4, end_token_id=end)
    first = ids[3:].index(end)
    assert r2.generated_mask[0].tolist() == [True] * (first + 1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        tfm.explain_generation(e, [[1, 2, 3]])


def test_rows_share_their_noise_and_results_are_reproducible():
    lm = _causal_transformer(2)
    e = tfm.SmoothGrad(lm, explain_at="emb", num_samples=8, seed=3)
    args = ([[1, 2, 3, 4]],)
    kw = dict(continuation_ids=[[5, 6, 7]])
    a = tfm.explain_generation(e, *args, **kw)
    b = tfm.explain_generation(e.replace(batch_size=8), *args, **kw)
    np.testing.assert_allclose(a.attributions, b.attributions, rtol=1e-5, atol=1e-7)
    c = tfm.explain_generation(e, *args, **kw)
    np.testing.assert_array_equal(a.attributions, c.attributions)


@pytest.mark.slow
def test_noisegrad_with_weight_layers_leaves_the_model_unchanged():
    lm = _causal_transformer(3)
    before = [w.copy() for w in lm.get_weights()]
    for mode in ("ng", "fg"):
        e = tfm.Explainer(lm, mode=mode, explain_at="emb", num_samples=2, num_weight_samples=3,
                          weight_layers=["att"], seed=0, kernel="sigmoid")
        r = tfm.explain_generation(e, [[1, 2, 3]], continuation_ids=[[4, 5]])
        assert np.isfinite(r.attributions).all() and r.settings["mode"] == mode
    assert all(np.array_equal(x, y) for x, y in zip(before, lm.get_weights(), strict=True))


@pytest.mark.slow
def test_a_cancelled_sum_is_refused_in_explain_and_explain_generation():
    lm = _tiny_gpt2(16)
    e = tfm.SmoothGrad(lm, explain_at="token_embedding", num_samples=4, seed=0, reduce="sum")
    with pytest.raises(ValueError, match=r"float rounding.*LayerNorm.*reduce='norm'"):
        tfm.explain_generation(e, [[5, 6, 7]], continuation_ids=[[1]])
    ids = {"token_ids": np.array([[5, 6, 7]]), "padding_mask": np.ones((1, 3), np.int32)}
    with pytest.raises(ValueError, match="float rounding"):
        e(ids, lambda s: s[:, -1, 4])
    ok = e.replace(attribution="input_x_gradient")(ids, lambda s: s[:, -1, 4])
    assert np.abs(ok).max() > 0


def test_json_html_tokens_and_plot(tmp_path):
    lm = _causal_transformer(4)
    e = tfm.SmoothGrad(lm, explain_at="emb", num_samples=2, seed=0)
    vocab = [f"w{i}<" for i in range(V)]
    r = tfm.explain_generation(e, [[1, 2], [3, 4]], continuation_ids=[[5, 6], [7, 8]],
                               tokenizer=vocab, whole=True)
    assert r.tokens[0] == ["w1<", "w2<", "w5<", "w6<"]
    back = tfm.GenerationExplanation.from_json(r.to_json())
    for name in ("token_ids", "attributions", "stderr", "generated_mask", "whole"):
        np.testing.assert_array_equal(getattr(back, name), getattr(r, name))
        assert getattr(back, name).dtype == getattr(r, name).dtype
    assert back.tokens == r.tokens and back.settings == r.settings
    page = r.to_html(1)
    assert "w7&lt;" in page and "<script" not in page and "http" not in page
    with pytest.raises(ValueError, match="not a GenerationExplanation"):
        tfm.GenerationExplanation.from_json(json.dumps({"a": 1}))
    by_callable = tfm.explain_generation(e, [[1, 2]], continuation_ids=[[5]],
                                         tokenizer=lambda i: f"<{i}>")
    assert by_callable.tokens == [["<1>", "<2>", "<5>"]]
    from tfmollify.evaluation import plot

    fig = plot.generation(r, example=0)
    path = tmp_path / "g.png"
    fig.savefig(path)
    assert path.stat().st_size > 1000


@pytest.mark.parametrize("bad, match", [
    (dict(prompt=np.ones((1, 3), np.float32)), "integer token ids"),
    (dict(prompt=[[1, 2], [3]]), "different lengths.*no padding mask"),
    (dict(score="prob"), "score"),
    (dict(continuation_ids=[[1], [2]]), "one continuation per prompt"),
    (dict(tokenizer=3.5), "tokenizer"),
])
def test_bad_arguments(bad, match):
    lm = _causal_transformer()
    e = tfm.SmoothGrad(lm, explain_at="emb", num_samples=2, seed=0)
    kw = dict(prompt=[[1, 2, 3]], continuation_ids=[[4]])
    kw.update(bad)
    prompt = kw.pop("prompt")
    with pytest.raises((ValueError, TypeError), match=match):
        tfm.explain_generation(e, prompt, **kw)
    with pytest.raises(TypeError, match="Explainer"):
        tfm.explain_generation(lm, [[1]], max_new_tokens=1)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "gemma", "llama"])
def test_keras_hub_causal_lms(family):
    keras_hub = require("keras_hub", "KerasHub causal LMs from configs")
    keras.utils.set_random_seed(0)
    small = dict(vocabulary_size=50, num_layers=1, hidden_dim=8, intermediate_dim=16)
    if family == "gpt2":
        bb = keras_hub.models.GPT2Backbone(num_heads=2, max_sequence_length=16, **small)
        lm = keras_hub.models.GPT2CausalLM(backbone=bb, preprocessor=None)
    elif family == "gemma":
        bb = keras_hub.models.GemmaBackbone(num_query_heads=2, num_key_value_heads=1,
                                            head_dim=4, **small)
        lm = keras_hub.models.GemmaCausalLM(backbone=bb, preprocessor=None)
    else:
        bb = keras_hub.models.LlamaBackbone(num_query_heads=2, num_key_value_heads=1, **small)
        lm = keras_hub.models.LlamaCausalLM(backbone=bb, preprocessor=None)
    before = [w.copy() for w in lm.get_weights()]
    e = tfm.FusionGrad(lm, explain_at="token_embedding", num_samples=2, num_weight_samples=2,
                       seed=0, weight_layers=["transformer_layer_0"] if family == "gpt2"
                       else None)
    prompt = {"token_ids": np.array([[5, 6, 7, 0]]), "padding_mask": np.array([[1, 1, 1, 0]])}
    r = tfm.explain_generation(e, prompt, max_new_tokens=3, whole=True)
    assert r.attributions.shape == (1, 6, 3) and r.prompt_length == 3
    for j in range(3):
        assert np.all(r.attributions[0, 3 + j:, j] == 0) and np.all(r.attributions[0, :3, j] > 0)
    assert all(np.array_equal(x, y) for x, y in zip(before, lm.get_weights(), strict=True))


def test_token_ids_alone_export_and_match_explain(tmp_path):
    _, nested = _flat_and_nested(2)
    e = tfm.SmoothGrad(nested, explain_at="encoder/emb", seed=0, reduce="sum",
                       attribution="input_x_gradient", num_samples=4)
    ids = _ids()
    want = e(ids, [0, 1, 0])
    served = tf.saved_model.load(e.export(tmp_path / "m")).signatures["serving_default"]
    got = served(inputs=tf.constant(ids), targets=tf.constant([0, 1, 0]),
                 seeds=tf.constant(tfm.sampling.example_seeds(0, 3)))
    np.testing.assert_allclose(got["attributions"].numpy(), want, rtol=1e-5, atol=1e-6)


def test_several_scores_per_example_share_one_forward_pass():
    _, nested = _flat_and_nested(3)
    ids = _ids()
    for method in ("gradient", "input_x_gradient"):
        e = tfm.SmoothGrad(nested, explain_at="encoder/emb", num_samples=4, seed=0,
                           attribution=method)
        both = e(ids, lambda s: s[:, :2])  # [B, 2, T, D]: one map per score
        assert both.shape == (3, 2, T, D)
        for k in range(2):
            np.testing.assert_allclose(both[:, k], e(ids, k), rtol=1e-5, atol=1e-7)
    ig = tfm.SmoothGrad(nested, explain_at="encoder/emb", num_samples=2,
                        attribution="integrated_gradients")
    with pytest.raises(ValueError, match="several scores per example"):
        ig(ids, lambda s: s[:, :2])
    x = np.ones((2, 3), np.float32)
    dense = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    with pytest.raises(ValueError, match="several scores per example"):
        tfm.SmoothGrad(dense, num_samples=2)(x, lambda s: s)


@pytest.mark.slow
def test_keras_hub_generate_where_it_decodes_greedily():
    greedy = _tiny_gpt2(32)
    greedy.compile(sampler="greedy")  # KerasHub's generate then decodes greedily, with a cache
    keras_hub = require("keras_hub", "KerasHub GPT-2 from a config")
    default = keras_hub.models.GPT2CausalLM(backbone=greedy.backbone,  # top-k: the plain loop
                                            preprocessor=None)
    results = [
        tfm.explain_generation(tfm.SmoothGrad(lm, explain_at="token_embedding", num_samples=2,
                                              seed=0), [[5, 6, 7], [8, 9, 10]], max_new_tokens=4)
        for lm in (greedy, default)
    ]
    np.testing.assert_array_equal(results[0].token_ids, results[1].token_ids)
    np.testing.assert_allclose(results[0].attributions, results[1].attributions, rtol=1e-5,
                               atol=1e-7)


def test_explain_dataset_of_token_ids_and_of_dict_inputs_at_a_layer():
    _, nested = _flat_and_nested(4)
    e = tfm.SmoothGrad(nested, explain_at="encoder/emb", seed=0, reduce="norm", num_samples=4)
    ids, targets = _ids(5), np.array([0, 1, 0, 1, 0])
    ds = tf.data.Dataset.from_tensor_slices((ids, targets)).batch(2)
    np.testing.assert_allclose(tfm.explain_dataset(e, ds, progress=False), e(ids, targets),
                               rtol=1e-5, atol=1e-7)
    keras.utils.set_random_seed(0)
    tok, seg = keras.Input((T,), dtype="int32", name="tok"), keras.Input((T,), dtype="int32",
                                                                           name="seg")
    summed = L.Add(name="embedded")([L.Embedding(V, D)(tok), L.Embedding(2, D)(seg)])
    pair = keras.Model({"tok": tok, "seg": seg}, L.Dense(2)(L.GlobalAveragePooling1D()(summed)))
    e2 = tfm.SmoothGrad(pair, noise_at="embedded", attribute_at="embedded", seed=0,
                        reduce="sum", attribution="input_x_gradient", num_samples=4)
    both = {"tok": ids, "seg": np.zeros_like(ids)}
    ds2 = tf.data.Dataset.from_tensor_slices((both, targets)).batch(2)
    np.testing.assert_allclose(tfm.explain_dataset(e2, ds2, progress=False), e2(both, targets),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_explain_generation_refuses_another_call_of_the_embedding():
    lm = _tiny_gpt2(16)
    e = tfm.SmoothGrad(lm, explain_at="token_embedding:1", num_samples=2, seed=0)
    with pytest.raises(ValueError, match="names call 1 of layer 'token_embedding'"):
        tfm.explain_generation(e, [[5, 6, 7]], continuation_ids=[[1]])

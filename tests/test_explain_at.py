"""Noise at a chosen layer (``explain_at``), per-token scores (``reduce``): text models."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfmollify as tfm

T, V, D = 6, 20, 4


def bag_of_embeddings(seed: int = 0) -> keras.Model:
    """ids [B, T] -> Embedding -> mean over tokens -> Dense(2): linear after the embedding."""
    keras.utils.set_random_seed(seed)
    ids = keras.Input((T,), dtype="int32")
    h = keras.layers.Embedding(V, D, name="emb")(ids)
    pooled = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(ids, keras.layers.Dense(2, name="out")(pooled))


@pytest.fixture
def ids():
    return np.random.default_rng(0).integers(0, V, size=(3, T)).astype(np.int32)


@pytest.mark.parametrize("kernel", ["gaussian", "poisson", "rect"])
def test_linear_after_the_embedding_is_exact(ids, kernel):
    model = bag_of_embeddings()
    w = model.get_layer("out").get_weights()[0]  # [D, 2]
    targets = np.array([0, 1, 1])
    want = np.repeat(w.T[targets][:, None, :] / T, T, axis=1)  # d score / d h[t] = w[:, c] / T
    kw = dict(kernel=kernel, num_samples=8, seed=0, explain_at="emb")
    got = tfm.SmoothGrad(model, **kw)(ids, targets)
    assert got.shape == (3, T, D) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    summed = tfm.SmoothGrad(model, reduce="sum", **kw)(ids, targets)
    np.testing.assert_allclose(summed, want.sum(-1), rtol=1e-5, atol=1e-7)
    norms = tfm.SmoothGrad(model, reduce="norm", **kw)(ids, targets)
    np.testing.assert_allclose(norms, np.linalg.norm(want, axis=-1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["ng", "fg"])
def test_weight_noise_after_the_layer_equals_explaining_the_tail(ids, mode):
    model = bag_of_embeddings(1)
    before = [w.copy() for w in model.get_weights()]
    kw = dict(mode=mode, kernel="hyperbolic", num_samples=3, num_weight_samples=4, seed=2,
              aggregation="vargrad")
    got, err = tfm.Explainer(model, explain_at="emb", **kw).explain(
        ids, [0, 1, 0], return_stderr=True
    )
    h_in = keras.Input((T, D))
    tail = keras.Model(
        h_in, model.get_layer("out")(keras.layers.GlobalAveragePooling1D()(h_in))
    )
    h = model.get_layer("emb")(ids).numpy()
    want, want_err = tfm.Explainer(tail, **kw).explain(h, [0, 1, 0], return_stderr=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(err, want_err, rtol=1e-5, atol=1e-8)
    for w0, w1 in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(w0, w1)  # embeddings included: never perturbed


def trained_text_classifier() -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """Class 1 iff token 3 occurs; trained in seconds on generated sequences."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.integers(4, V, size=(3000, T)).astype(np.int32)
    y = rng.integers(0, 2, size=3000)
    pos = rng.integers(0, T, size=3000)
    x[y == 1, pos[y == 1]] = 3
    ids = keras.Input((T,), dtype="int32")
    h = keras.layers.Embedding(V, 8, name="emb")(ids)
    h = keras.layers.Dense(8, activation="tanh")(h)
    out = keras.layers.Dense(2)(keras.layers.GlobalMaxPooling1D()(h))
    model = keras.Model(ids, out)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=4, batch_size=64, verbose=0)
    return model, x[-200:], pos[-200:][y[-200:] == 1]


def test_per_token_scores_find_the_token_the_classifier_uses():
    model, x_test, _ = trained_text_classifier()
    ones = x_test[(x_test == 3).any(axis=1)][:40]
    assert (model.predict(ones, verbose=0).argmax(1) == 1).mean() > 0.9
    # integrated gradients at the embedding, summed over its axis: the per-token scores of
    # Sundararajan et al. The plain gradient's norm points at the token in only 5 % of these
    # examples (tanh saturates where token 3 fires), so it is not what to use for tokens.
    scores = tfm.SmoothGrad(model, explain_at="emb", reduce="sum", num_samples=16, seed=0,
                            attribution="integrated_gradients", ig_steps=8)(ones, 1)
    assert scores.shape == (len(ones), T)
    found = scores.argmax(axis=1) == (ones == 3).argmax(axis=1)
    assert found.mean() > 0.9, found.mean()


def test_explain_dataset_and_tensors_with_explain_at(ids):
    model = bag_of_embeddings(2)
    explainer = tfm.FusionGrad(model, explain_at="emb", reduce="sum", num_samples=3,
                               num_weight_samples=2, seed=5)
    whole = explainer(ids, [0, 1, 1])
    ds = tf.data.Dataset.from_tensor_slices((ids, np.array([0, 1, 1]))).batch(2)
    np.testing.assert_allclose(tfm.explain_dataset(explainer, ds, progress=False), whole,
                               rtol=1e-6, atol=1e-8)
    as_tensor = explainer(tf.constant(ids), [0, 1, 1])
    assert isinstance(as_tensor, tf.Tensor) and as_tensor.shape == (3, T)
    assert explainer(ids[:0], 0).shape == (0, T)


def test_explain_at_errors(ids):
    model = bag_of_embeddings()
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        tfm.SmoothGrad(model, explain_at="nope")
    with pytest.raises(TypeError, match="layer of the model"):
        tfm.SmoothGrad(model, explain_at=keras.layers.Dense(2))
    with pytest.raises(ValueError, match="`reduce`"):
        tfm.SmoothGrad(model, explain_at="emb", reduce="max")
    with pytest.raises(ValueError, match="return_stderr=True is not available"):
        tfm.SmoothGrad(model, explain_at="emb", reduce="sum").explain(ids, 0, return_stderr=True)
    with pytest.raises(TypeError, match="needs a Keras model"):
        tfm.SmoothGrad(lambda x: x, explain_at="emb")
    # a skip connection around the layer: no split, so the layer's call is intercepted; the
    # score mid + x has gradient e_t with respect to mid's output, whatever the noise
    x = keras.Input((3,))
    mid = keras.layers.Dense(3, name="mid")(x)
    skip = keras.Model(x, keras.layers.Add()([mid, x]))
    got = tfm.SmoothGrad(skip, explain_at="mid", num_samples=4, seed=0)(
        np.ones((2, 3), np.float32), [0, 2])
    np.testing.assert_allclose(got, [[1, 0, 0], [0, 0, 1]], atol=1e-6)
    with pytest.raises(ValueError, match="rejected `inputs` on the way to layer 'emb'"):
        tfm.SmoothGrad(model, explain_at="emb")(np.zeros((2, T + 3, 2)), 0)


@pytest.mark.slow
def test_export_with_explain_at_takes_token_ids(ids, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    model = bag_of_embeddings(3)
    for reduce in (None, "sum"):
        explainer = tfm.FusionGrad(model, explain_at="emb", reduce=reduce, num_samples=3,
                                   num_weight_samples=2, seed=1, kernel="sigmoid")
        path = explainer.export(str(tmp_path / str(reduce)))
        fn = tf.saved_model.load(path).signatures["serving_default"]
        assert fn.structured_input_signature[1]["inputs"].dtype == tf.int32
        seeds = np.array([4, 5, 6], np.int64)
        got = fn(inputs=tf.constant(ids), targets=tf.constant([0, 1, 0]), seeds=tf.constant(seeds))
        want = explainer.explain(ids, [0, 1, 0], seeds=seeds)
        np.testing.assert_allclose(got["attributions"].numpy(), want, rtol=1e-5, atol=1e-7)
        assert ("stderr" in got) == (reduce is None)
    # the Session loader of TF Serving, in a fresh process
    np.savez(tmp_path / "req.npz", inputs=ids, targets=np.array([0, 1, 0], np.int32),
             seeds=seeds)
    loader = Path(__file__).parent / "serving_loader.py"
    res = subprocess.run([sys.executable, str(loader), "session", str(tmp_path / "req.npz"),
                          str(tmp_path / "out.npz"), path], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["0/attributions"], want,
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("as_dict", [True, False])
def test_export_with_explain_at_and_several_inputs(tmp_path, as_dict):
    """Token ids and segment ids in (as in BERT), their summed embeddings explained: one
    signature input per model input (the dict keys, or the input layers' names)."""
    keras.utils.set_random_seed(0)
    ids_in = keras.Input((5,), dtype="int32", name="ids")
    seg_in = keras.Input((5,), dtype="int32", name="segments")
    emb = keras.layers.Add(name="emb")([
        keras.layers.Embedding(20, 4)(ids_in), keras.layers.Embedding(2, 4)(seg_in)
    ])
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(4, activation="tanh")(emb))
    inputs = {"ids": ids_in, "segments": seg_in} if as_dict else [ids_in, seg_in]
    model = keras.Model(inputs, keras.layers.Dense(2)(pooled))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 20, size=(3, 5)).astype(np.int32)
    seg = (np.arange(5) >= 3).astype(np.int32)[None].repeat(3, axis=0)
    given = {"ids": ids, "segments": seg} if as_dict else [ids, seg]
    explainer = tfm.FusionGrad(model, explain_at="emb", num_samples=4, num_weight_samples=2,
                               seed=1)
    seeds = np.array([4, 5, 6], np.int64)
    want, want_se = explainer.explain(given, [0, 1, 0], seeds=seeds, return_stderr=True)
    assert want.shape == (3, 5, 4)  # the embedding's output
    fn = tf.saved_model.load(explainer.export(str(tmp_path))).signatures["serving_default"]
    assert set(fn.structured_input_signature[1]) == {"ids", "segments", "targets", "seeds"}
    got = fn(ids=tf.constant(ids), segments=tf.constant(seg), targets=tf.constant([0, 1, 0]),
             seeds=tf.constant(seeds))
    np.testing.assert_allclose(got["attributions"].numpy(), want, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["stderr"].numpy(), want_se, rtol=1e-4, atol=1e-7)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`segments` needs the same batch"):
        fn(ids=tf.constant(ids), segments=tf.constant(seg[:2]), targets=tf.constant([0, 1, 0]),
           seeds=tf.constant(seeds))

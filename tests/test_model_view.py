"""tfmollify.adapter.model_view: how the model is called (Sequential models, splits, weight
choice)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfmollify as tfm

V, T, D = 12, 6, 4


def text_sequential():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((T,), dtype="int32"),
        keras.layers.Embedding(V, D, name="embedding"),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(2, name="head"),
    ])
    model(np.zeros((1, T), np.int32))
    return model


IDS = np.random.default_rng(0).integers(0, V, size=(3, T)).astype(np.int32)


@pytest.mark.parametrize("mode", ["sg", "ng", "fg"])
def test_explain_at_works_on_a_sequential_text_model(mode, tmp_path):
    """Sequential models used to fail the split (`model.input` raises for them in Keras 3.15):
    per-token scores at the embedding, checked against a hand computation of the embedding."""
    model = text_sequential()
    kw = dict(mode=mode, explain_at="embedding", num_samples=4, num_weight_samples=2, seed=0)
    e = tfm.Explainer(model, **kw)
    a = e(IDS, [0, 1, 0])
    assert a.shape == (3, T, D)
    if mode == "sg":  # the head after the embedding is linear: the gradient is exact
        w = model.get_layer("head").get_weights()[0]
        np.testing.assert_allclose(a, np.broadcast_to(w[:, [0, 1, 0]].T[:, None, :] / T, a.shape),
                                   rtol=1e-5, atol=1e-7)
    scores = tfm.Explainer(model, reduce="sum", **kw)(IDS, [0, 1, 0])
    np.testing.assert_allclose(scores, a.sum(-1), rtol=1e-5, atol=1e-6)
    fn = tf.saved_model.load(tfm.export(e, tmp_path)).signatures["serving_default"]
    got = fn(inputs=tf.constant(IDS), targets=tf.constant([0, 1, 0]),
             seeds=tf.constant(tfm.sampling.example_seeds(0, 3)))
    np.testing.assert_allclose(got["attributions"].numpy(), a, rtol=1e-5, atol=1e-7)


def test_weight_layers_and_explain_at_on_sequential_models():
    model = text_sequential()
    e = tfm.NoiseGrad(model, explain_at="embedding", weight_layers=["head"], seed=0,
                      num_weight_samples=2, perturb_bias=False)
    assert [v.path.split("/", 1)[1] for v in e.view.selected_variables()] == ["head/kernel"]
    assert e(IDS, [0, 1, 0]).shape == (3, T, D)
    image = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3, name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    x = np.random.default_rng(1).uniform(size=(2, 4, 4, 1)).astype(np.float32)
    h = tfm.SmoothGrad(image, explain_at="conv", num_samples=2, seed=0)(x, [0, 2])
    assert h.shape == (2, 2, 2, 2)

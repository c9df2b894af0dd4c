"""Real architectures, built from config with random weights (nothing is downloaded):

* a KerasHub ``BertBackbone`` with a classification head: its inputs are a dict of
  ``token_ids``, ``segment_ids`` and ``padding_mask`` (all integer), and its token embedding is
  nested inside the backbone, added to the position and segment embeddings. SG, NG and FG give
  per-token scores there, in Python and through the export;
* a KerasHub ``ViTBackbone`` with a head (noise and attribution at its nested patch embedding);
* Grad-CAM on ``keras.applications.ResNet50(weights=None)`` at its last convolutional block.

``keras-hub`` is installed by ``scripts/test`` with ``--no-deps`` (its ``tensorflow-text``
requirement would pull the full ``tensorflow`` over ``tensorflow-cpu``).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from crosscheck import require

import tfmollify as tfm
from tfmollify.adapter import model_view

T = 6  # tokens per example


@pytest.fixture(scope="module")
def bert():
    keras_hub = require("keras_hub", "KerasHub backbones built from config")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
        max_sequence_length=T, name="bert_backbone",  # a fixed name: its path below
    )
    inputs = {
        name: keras.Input((T,), dtype="int32", name=name)
        for name in ("token_ids", "segment_ids", "padding_mask")
    }
    pooled = backbone(inputs)["sequence_output"][:, 0, :]
    model = keras.Model(inputs, keras.layers.Dense(2, name="classifier")(pooled))
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(1, 40, (3, T)).astype("int32"),
        "segment_ids": np.array([[0] * 3 + [1] * 3] * 3, "int32"),
        "padding_mask": np.array([[1] * T, [1] * T, [1] * 4 + [0] * 2], "int32"),
    }
    return model, x


def layer_gradient_by_hand(model, x, target, layer):
    """The gradient of the score with respect to the token embedding's output ``[B, T, D]``,
    the nested layer's output watched by hand."""
    box = {}
    original = layer.call

    def watched(*args, **kwargs):
        h = original(*args, **kwargs)
        box["tape"].watch(h)
        box["h"] = h
        return h

    object.__setattr__(layer, "call", watched)
    try:
        with tf.GradientTape() as tape:
            box["tape"] = tape
            out = model({k: tf.constant(v) for k, v in x.items()}, training=False)
            score = tf.reduce_sum(out[:, target])
        g = tape.gradient(score, box["h"])
    finally:
        object.__delattr__(layer, "call")
    return g.numpy()


@pytest.mark.slow
def test_bert_per_token_scores_at_its_nested_token_embedding(bert, tmp_path):
    model, x = bert
    layer = model.get_layer("bert_backbone").get_layer("token_embedding")
    # with tiny noise, SG is the plain layer gradient (the layer norm after the summed
    # embeddings makes its sum over the embedding axis ~0: compare it whole)
    tiny = tfm.SmoothGrad(model, explain_at="token_embedding", epsilon=1e-6,
                          num_samples=2, seed=0)(x, 1)
    want = layer_gradient_by_hand(model, x, 1, layer)
    assert tiny.shape == (3, T, 8)
    np.testing.assert_allclose(tiny, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    seeds = np.array([3, 4, 5])
    for mode in ("sg", "ng", "fg"):
        places = (
            dict(attribute_at="bert_backbone/token_embedding") if mode == "ng"  # no input noise
            else dict(noise_at="bert_backbone/token_embedding", attribute_at="token_embedding")
        )
        e = tfm.Explainer(model, mode, reduce="norm", num_samples=4, num_weight_samples=2,
                          seed=0, **places)
        scores = e(x, [0, 1, 0], seeds=seeds)
        assert scores.shape == (3, T) and np.all(np.isfinite(scores)), mode
        if mode == "sg":  # the noise is there
            assert not np.allclose(scores, np.linalg.norm(tiny, axis=-1), rtol=1e-3)
        served = tf.saved_model.load(e.export(tmp_path / mode)).signatures["serving_default"]
        got = served(**{k: tf.constant(v) for k, v in x.items()},
                     targets=tf.constant([0, 1, 0]), seeds=tf.constant(seeds, tf.int64))
        np.testing.assert_allclose(got["attributions"].numpy(), scores, rtol=1e-4, atol=1e-6)
    # the model is unchanged: its layer's call is its own again
    assert "call" not in layer.__dict__


@pytest.mark.slow
def test_vit_noise_and_attribution_at_the_nested_patch_embedding():
    keras_hub = require("keras_hub", "KerasHub backbones built from config")
    keras.utils.set_random_seed(1)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=1, num_heads=2, hidden_dim=8,
        mlp_dim=16,
    )
    images = keras.Input((16, 16, 3))
    model = keras.Model(images, keras.layers.Dense(3)(backbone(images)[:, 0, :]))
    x = np.random.default_rng(1).uniform(0, 1, (2, 16, 16, 3)).astype("float32")
    paths = [p for p, _ in model_view.layer_paths(model)]
    patch = next(p for p in paths if p.endswith("patching_and_embedding"))
    e = tfm.FusionGrad(model, explain_at=patch, num_samples=3, num_weight_samples=2, seed=0)
    got = e(x, [0, 2])
    assert got.shape[0] == 2 and got.shape[-1] == 8 and np.all(np.isfinite(got))
    # SG on the pixels, bounded to their range (AdaptGrad), attribution at the input
    pixels = tfm.SmoothGrad(model, input_range=(0, 1), num_samples=4, seed=0)(x, [0, 2])
    assert pixels.shape == x.shape and np.all(np.isfinite(pixels))


@pytest.mark.slow
def test_grad_cam_on_resnet50_at_its_last_convolutional_block():
    keras.utils.set_random_seed(2)
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=5)
    x = np.random.default_rng(2).uniform(0, 1, (1, 64, 64, 3)).astype("float32")
    e = tfm.SmoothGrad(model, attribution="grad_cam", attribute_at="conv5_block3_out",
                       num_samples=4, seed=0)
    cam = e(x, 3)
    assert cam.shape == (1, 2, 2) and np.all(cam >= 0) and np.all(np.isfinite(cam))
    # with tiny noise it is plain Grad-CAM of the last block: the hand computation
    head = keras.Model(model.input, model.get_layer("conv5_block3_out").output)
    tail_in = keras.Input(head.output.shape[1:])
    h = tail_in
    for name in ("avg_pool", "predictions"):
        h = model.get_layer(name)(h)
    tail = keras.Model(tail_in, h)
    a = head(x)
    with tf.GradientTape() as tape:
        tape.watch(a)
        s = tail(a)[:, 3]
    g = tape.gradient(s, a).numpy()
    want = np.maximum((g.mean(axis=(1, 2), keepdims=True) * a.numpy()).sum(-1), 0)
    tiny = e.replace(epsilon=1e-6)(x, 3)
    np.testing.assert_allclose(tiny, want, rtol=1e-3, atol=1e-6 * max(1.0, want.max()))

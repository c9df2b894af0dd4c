"""Any base attribution at any place: Grad-CAM, layer gradients, methods of your own, noise and
attributions at nested layers, and AdaptGrad's bounded noise (``input_range``).

The oracles are exact: hand computations of Grad-CAM(++) from the layer's output and gradient,
the same model written flat (where ``explain_at`` splits it) against the nested one (where the
layer's call is intercepted), finite differences, the reference's AdaptGrad scale, and the
variance of the bounded noise itself (VarGrad of a method that returns the noisy point).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import reference
import tfmollify as tfm
from tfmollify.adapter import request

TINY = 1e-7  # an epsilon so small that every sample is the plain base method


def tiny_cnn(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    x = keras.Input((7, 7, 2))
    h = keras.layers.Conv2D(3, 3, activation="tanh", name="conv")(x)
    h = keras.layers.Conv2D(4, 2, activation="relu", name="conv2")(h)
    out = keras.layers.Dense(3)(keras.layers.Flatten()(h))
    return keras.Model(x, out)


def images(n: int = 2, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.1, 0.9, (n, 7, 7, 2)).astype(np.float32)


def layer_and_gradient(model, layer_name, x, targets):
    """The layer's output and the gradient of the target score there, by a split model."""
    layer = model.get_layer(layer_name)
    head = keras.Model(model.inputs[0], layer.output)
    tail_in = keras.Input(layer.output.shape[1:])
    h, found = tail_in, False
    for lyr in model.layers:
        if found:
            h = lyr(h)
        found = found or lyr is layer
    tail = keras.Model(tail_in, h)
    a = head(x)
    with tf.GradientTape() as tape:
        tape.watch(a)
        s = tf.gather(tail(a), targets, axis=1, batch_dims=1)
    layer_and_gradient.tail = tail  # the rest of the model, for completeness checks
    return a.numpy().astype(np.float64), tape.gradient(s, a).numpy().astype(np.float64)


def hand_grad_cam(a, g):
    w = g.mean(axis=(1, 2), keepdims=True)
    return np.maximum((w * a).sum(-1), 0)


def hand_grad_cam_pp(a, g):
    g2, g3 = g**2, g**3
    den = 2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g3
    alpha = np.where(g != 0, g2 / np.where(den == 0, 1, den), 0)
    w = (alpha * np.maximum(g, 0)).sum(axis=(1, 2), keepdims=True)
    return np.maximum((w * a).sum(-1), 0)


@pytest.mark.parametrize("method, hand", [("grad_cam", hand_grad_cam),
                                          ("grad_cam_plus_plus", hand_grad_cam_pp)])
@pytest.mark.parametrize("layer", ["conv", "conv2"])
def test_grad_cam_matches_a_hand_computation(method, hand, layer):
    model, x, t = tiny_cnn(), images(), np.array([0, 2])
    a, g = layer_and_gradient(model, layer, x, t)
    want = hand(a, g)
    got = tfm.SmoothGrad(model, attribution=method, attribute_at=layer, epsilon=TINY,
                         num_samples=4, seed=0)(x, t)
    assert got.shape == want.shape == (2, *a.shape[1:3])
    assert np.abs(want).max() > 0  # not a vacuous comparison
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6 * np.abs(want).max())


def test_layer_gradient_and_a_custom_method_at_a_layer_with_tiny_noise():
    model, x, t = tiny_cnn(), images(), np.array([1, 0])
    a, g = layer_and_gradient(model, "conv", x, t)
    lg = tfm.SmoothGrad(model, attribute_at="conv", epsilon=TINY, num_samples=4, seed=0)(x, t)
    np.testing.assert_allclose(lg, g, rtol=2e-4, atol=1e-7)
    # a method of the user's, as a function of the layer's output (two passes: value, scores)
    custom = tfm.SmoothGrad(
        model, attribute_at="conv", epsilon=TINY, num_samples=4, seed=0,
        attribution=lambda f, h: tfm.tape_gradient(f, h) * h,
    )(x, t)
    np.testing.assert_allclose(custom, a * g, rtol=2e-4, atol=1e-7)
    # layer integrated gradients: with the baseline 0 it sums to S(h) - S(0) (completeness)
    ig = tfm.SmoothGrad(model, attribute_at="conv", attribution="integrated_gradients",
                        ig_steps=32, epsilon=TINY, num_samples=2, seed=0)(x, t)
    tail = layer_and_gradient.tail
    score = lambda v: np.take_along_axis(tail(v).numpy(), t[:, None], 1)[:, 0]  # noqa: E731
    gap = score(a.astype(np.float32)) - score(np.zeros_like(a, np.float32))
    assert ig.shape == a.shape
    np.testing.assert_allclose(ig.reshape(2, -1).sum(1), gap, rtol=1e-3, atol=1e-5)


def test_custom_method_twice_input_x_gradient_equals_twice_the_builtin_with_the_same_seed():
    model, x, t = tiny_cnn(), images(), np.array([0, 1])
    for mode in ("sg", "ng", "fg"):
        kw = dict(num_samples=6, num_weight_samples=3, seed=3)
        mine = tfm.Explainer(model, mode, attribution=lambda f, v: 2 * tfm.tape_gradient(f, v) * v,
                             **kw)
        builtin = tfm.Explainer(model, mode, attribution="input_x_gradient", **kw)
        got, err = mine.explain(x, t, return_stderr=True)
        want, want_err = builtin.explain(x, t, return_stderr=True)
        np.testing.assert_allclose(got, 2 * want, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(err, 2 * want_err, rtol=1e-5, atol=1e-7)


def test_registered_method_by_name_and_its_errors():
    tfm.register_attribution("neg_gradient", lambda f, v: -tfm.tape_gradient(f, v), replace=True)
    try:
        model, x = tiny_cnn(), images()
        got = tfm.SmoothGrad(model, attribution="neg_gradient", num_samples=4, seed=0)(x, 0)
        want = tfm.SmoothGrad(model, num_samples=4, seed=0)(x, 0)
        np.testing.assert_allclose(got, -want, rtol=1e-6)
        with pytest.raises(ValueError, match="already registered"):
            tfm.register_attribution("neg_gradient", lambda f, v: v)
        with pytest.raises(ValueError, match="built-in"):
            tfm.register_attribution("gradient", lambda f, v: v)
        assert tfm.SmoothGrad(model, attribution="neg_gradient").get_config()[
            "attribution"] == "neg_gradient"
    finally:
        tfm.attribution.unregister("neg_gradient")
    with pytest.raises(ValueError, match="attribution"):
        tfm.SmoothGrad(tiny_cnn(), attribution="neg_gradient")
    with pytest.raises(TypeError, match="attribution"):
        tfm.SmoothGrad(tiny_cnn(), attribution=3)


def test_bad_places_and_methods_are_clear_errors():
    model, x = tiny_cnn(), images()
    with pytest.raises(ValueError, match="attribute_at"):
        tfm.SmoothGrad(model, attribution="grad_cam")
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        tfm.SmoothGrad(model, attribute_at="nope")
    with pytest.raises(TypeError, match="layer of the model"):
        tfm.SmoothGrad(model, noise_at=keras.layers.Dense(2))
    with pytest.raises(ValueError, match="shorthand"):
        tfm.SmoothGrad(model, explain_at="conv", noise_at="conv")
    with pytest.raises(ValueError, match="mode='ng' has none"):
        tfm.NoiseGrad(model, noise_at="conv")
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")])
    with pytest.raises(ValueError, match=r"positions\s+and channels"):
        tfm.SmoothGrad(dense, attribution="grad_cam", attribute_at="d")(np.ones((1, 3)), 0)
    with pytest.raises(ValueError, match=r"the method .* failed"):
        tfm.SmoothGrad(model, attribution=lambda f, v: v @ v)(x, 0)


def nested_and_flat(seed: int = 0):
    """The same weights as a model with a nested sub-model and as a flat one."""
    keras.utils.set_random_seed(seed)
    a = keras.layers.Dense(5, activation="tanh", name="a")
    b = keras.layers.Dense(4, activation="tanh", name="b")
    c = keras.layers.Dense(3, name="c")
    x = keras.Input((6,))
    inner_in = keras.Input((5,))
    inner = keras.Model(inner_in, c(b(inner_in)), name="inner")
    nested = keras.Model(x, inner(a(x)), name="nested")
    flat = keras.Model(x, c(b(a(x))), name="flat")
    return nested, flat


@pytest.mark.parametrize("mode", ["sg", "fg"])
def test_noise_at_a_nested_layer_equals_the_split_of_the_same_flat_model(mode):
    nested, flat = nested_and_flat()
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    kw = dict(num_samples=16, num_weight_samples=3, seed=5, kernel="hyperbolic")
    # the layer "b" sits inside the sub-model "inner": no split; its call is intercepted
    got, err = tfm.Explainer(nested, mode, explain_at="b", **kw).explain(
        x, [0, 1, 2], return_stderr=True)
    for name in ("b", "inner/b"):
        same = tfm.Explainer(nested, mode, noise_at=name, attribute_at=name, **kw)(x, [0, 1, 2])
        np.testing.assert_array_equal(same, got)
    if mode == "sg":  # the flat model splits at "b": the same noise stream, another code path
        want, want_err = tfm.Explainer(flat, mode, explain_at="b", **kw).explain(
            x, [0, 1, 2], return_stderr=True)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(err, want_err, rtol=1e-4, atol=1e-6)
    assert got.shape == (3, 4)


def test_noise_at_a_nested_layer_with_tiny_noise_is_the_finite_difference_gradient():
    nested, _ = nested_and_flat(1)
    x = np.random.default_rng(2).normal(size=(2, 6)).astype(np.float64)
    got = tfm.SmoothGrad(nested, explain_at="inner/b", epsilon=TINY, num_samples=2, seed=0)(
        x.astype(np.float32), [1, 1])
    b, c = nested.get_layer("inner").get_layer("b"), nested.get_layer("inner").get_layer("c")
    h = b(nested.get_layer("a")(x.astype(np.float32))).numpy().astype(np.float64)
    w, bias = (v.astype(np.float64) for v in c.get_weights())
    fd = np.zeros_like(h)
    for i in range(h.shape[1]):  # central differences of the score through the rest (c)
        d = np.zeros_like(h)
        d[:, i] = 1e-4
        fd[:, i] = (((h + d) @ w + bias)[:, 1] - ((h - d) @ w + bias)[:, 1]) / 2e-4
    np.testing.assert_allclose(got, fd, rtol=1e-4, atol=1e-6)


def test_noise_at_a_layer_and_attribution_at_the_inputs_matches_a_hand_injection():
    """SG with the noise on a hidden layer's output and the gradient with respect to the
    inputs equals adding that noise by hand. The noise of one draw is read back with a method
    that returns the noisy layer output itself (same seed, one sample)."""
    nested, _ = nested_and_flat(2)
    x = np.random.default_rng(3).normal(size=(1, 6)).astype(np.float32)
    kw = dict(num_samples=1, epsilon=0.3, kernel="rect", seed=0)
    grad = tfm.SmoothGrad(nested, noise_at="a", **kw)
    noisy_point = tfm.SmoothGrad(nested, noise_at="a", attribute_at="a",
                                 attribution=lambda f, h: h, **kw)
    a_layer, inner = nested.get_layer("a"), nested.get_layer("inner")
    xt = tf.constant(x)
    clean = a_layer(xt).numpy()
    for seed in (1, 2, 3):
        noise = noisy_point(x, 2, seeds=[seed]) - clean
        assert 1e-4 < np.abs(noise).max() <= 0.3 + 1e-6  # rect noise, in [-eps, eps]
        with tf.GradientTape() as tape:
            tape.watch(xt)
            s = inner(a_layer(xt) + noise)[:, 2]
        want = tape.gradient(s, xt).numpy()
        np.testing.assert_allclose(grad(x, 2, seeds=[seed]), want, rtol=1e-5, atol=1e-7)


def test_shared_layer_is_refused_with_a_clear_error():
    keras.utils.set_random_seed(0)
    shared = keras.layers.Dense(4, activation="tanh", name="shared")
    x = keras.Input((4,))
    model = keras.Model(x, keras.layers.Dense(2)(shared(shared(x))))
    with pytest.raises(ValueError, match="called more than once"):
        tfm.SmoothGrad(model, noise_at="shared", num_samples=2, seed=0)(np.ones((1, 4)), 0)


def test_ambiguous_names_list_the_paths():
    keras.utils.set_random_seed(0)
    x = keras.Input((3,))
    i1 = keras.Input((3,))
    i2 = keras.Input((3,))
    one = keras.Model(i1, keras.layers.Dense(3, name="proj")(i1), name="one")
    two = keras.Model(i2, keras.layers.Dense(3, name="proj")(i2), name="two")
    model = keras.Model(x, keras.layers.Dense(2)(two(one(x))))
    with pytest.raises(ValueError, match=r"several layers are named 'proj'.*one/proj.*two/proj"):
        tfm.SmoothGrad(model, noise_at="proj")
    a = tfm.SmoothGrad(model, explain_at="two/proj", num_samples=2, seed=0)(np.ones((1, 3)), 0)
    assert a.shape == (1, 3)


def test_weight_layers_reach_nested_layers():
    nested, _ = nested_and_flat(3)
    x = np.ones((1, 6), np.float32)
    only_c = tfm.NoiseGrad(nested, weight_layers=["c"], num_weight_samples=4, seed=0)
    assert [v.path for v in only_c.view.selected_variables()] == [
        v.path for v in nested.get_layer("inner").get_layer("c").trainable_weights
    ]
    assert only_c(x, 0).shape == (1, 6)


def test_subclassed_model_noise_at_its_layer():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(4, activation="tanh", name="hidden")
            self.out = keras.layers.Dense(2, name="out")

        def call(self, x):
            return self.out(self.hidden(x))

    keras.utils.set_random_seed(0)
    net = Net()
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    net(x)
    got = tfm.SmoothGrad(net, attribute_at="out", epsilon=TINY, num_samples=2, seed=0)
    # the score is the out layer's own output: its gradient there is one-hot
    np.testing.assert_allclose(got(x, [0, 1]), [[1, 0], [0, 1]], atol=1e-6)


# -- AdaptGrad -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["gaussian", "poisson", "hyperbolic", "sigmoid", "rect"])
def test_input_range_scale_equals_the_reference(kernel):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(3, 4, 5))
    x[0, 0, 0], x[1, 2, 3] = -1.0, 1.0  # on the bounds: no noise
    spec = tfm.Explainer(keras.Sequential([keras.Input((4, 5)), keras.layers.Flatten(),
                                           keras.layers.Dense(2)]),
                         kernel=kernel, input_range=(-1, 1), alpha=0.8).spec
    got = request.range_epsilons(spec, x)
    want = reference.adaptive_scale(kernel, x, -1.0, 1.0, 0.8).reshape(3, -1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert got[0, 0] == 0 and got[1, 13] == 0


@pytest.mark.parametrize("kernel", ["gaussian", "hyperbolic", "sigmoid", "rect"])
def test_vargrad_of_the_noisy_point_recovers_the_bounded_noise_variance(kernel):
    """A base method that returns its (noisy) point: VarGrad is then the noise's variance per
    element, eps_i^2 Var(Z), which the reference derives from AdaptGrad's scale."""
    x = np.array([[0.05, 0.3, 0.5, 0.75, 0.98, 1.0]], np.float32)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    n = 4000
    got = tfm.SmoothGrad(model, kernel=kernel, input_range=(0, 1), aggregation="vargrad",
                         attribution=lambda f, v: v, num_samples=n, seed=4)(x, 0)[0]
    eps = reference.adaptive_scale(kernel, x.astype(np.float64), 0.0, 1.0, 0.9)[0]
    want = reference.noise_variance(kernel, eps)
    # the sample variance's standard error: sigma^2 sqrt((kurtosis - 1) / n); kurtosis <= 6 here
    se = want * np.sqrt(5.0 / n)
    assert got[-1] == 0  # an element on the bound gets no noise
    np.testing.assert_array_less(np.abs(got - want), 5 * se + 1e-12)


def test_input_range_errors():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="outside input_range"):
        tfm.SmoothGrad(model, input_range=(0, 1))(np.array([[0.5, 1.5, 0.2]]), 0)
    with pytest.raises(ValueError, match="low < high"):
        tfm.SmoothGrad(model, input_range=(1, 0))
    with pytest.raises(TypeError, match="pair"):
        tfm.SmoothGrad(model, input_range=3)
    with pytest.raises(ValueError, match=r"epsilon=0\.1"):
        tfm.SmoothGrad(model, input_range=(0, 1), epsilon=0.1)


# -- the export and explain_dataset -----------------------------------------------------------
@pytest.mark.slow
def test_export_and_dataset_with_grad_cam_custom_methods_and_bounded_noise(tmp_path):
    model, x, t = tiny_cnn(), images(3), np.array([0, 1, 2])
    seeds = np.array([4, 5, 6])
    explainers = {
        "grad_cam": tfm.SmoothGrad(model, attribution="grad_cam_plus_plus", attribute_at="conv2",
                                   num_samples=4, seed=0),
        "custom": tfm.FusionGrad(model, attribution=lambda f, v: v * tfm.tape_gradient(f, v),
                                 num_samples=3, num_weight_samples=2, seed=0),
        "bounded": tfm.SmoothGrad(model, input_range=(0, 1), num_samples=4, seed=0,
                                  batch_size=4),
        "noise_at": tfm.SmoothGrad(model, noise_at="conv", num_samples=4, seed=0),
    }
    for name, e in explainers.items():
        want, want_err = e.explain(x, t, seeds=seeds, return_stderr=True)
        out = e.export(tmp_path / name)
        served = tf.saved_model.load(out).signatures["serving_default"]
        got = served(inputs=tf.constant(x), targets=tf.constant(t, tf.int32),
                     seeds=tf.constant(seeds, tf.int64))
        np.testing.assert_allclose(got["attributions"].numpy(), want, rtol=1e-5, atol=1e-6,
                                   err_msg=name)
        np.testing.assert_allclose(got["stderr"].numpy(), want_err, rtol=1e-4, atol=1e-6)
        ds = tf.data.Dataset.from_tensor_slices((x, t)).batch(2)
        whole = tfm.explain_dataset(e, ds)
        direct = e.explain(x, t)
        assert whole.shape == direct.shape, name


@pytest.mark.parametrize("sampler, aggregation", [
    ("iid", "smoothgrad"), ("antithetic", "smoothgrad"), ("sobol", "smoothgrad"),
    ("iid", "smoothgrad_sq"), ("antithetic", "vargrad"),
])
def test_grad_cam_under_every_sampler_and_aggregation_with_tiny_noise(sampler, aggregation):
    """Every sample is plain Grad-CAM when the noise is tiny: the mean is it, the mean of
    squares its square, the variance zero, whatever the sampler."""
    model, x, t = tiny_cnn(), images(), np.array([2, 0])
    plain = hand_grad_cam(*layer_and_gradient(model, "conv2", x, t))
    got, err = tfm.SmoothGrad(
        model, attribution="grad_cam", attribute_at="conv2", epsilon=TINY, num_samples=8,
        sampler=sampler, aggregation=aggregation, seed=0,
    ).explain(x, t, return_stderr=True)
    want = {"smoothgrad": plain, "smoothgrad_sq": plain**2, "vargrad": 0 * plain}[aggregation]
    scale = np.abs(plain).max() ** (2 if aggregation != "smoothgrad" else 1)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5 * scale)
    assert err.shape == got.shape and np.all(np.isfinite(err) | (sampler == "sobol"))


def test_sequential_models_take_attribute_at_and_export(tmp_path):
    keras.utils.set_random_seed(4)
    model = keras.Sequential([
        keras.Input((7, 7, 2)),
        keras.layers.Conv2D(3, 3, activation="relu", name="conv"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2),
    ])
    x, t = images(), np.array([1, 0])
    e = tfm.SmoothGrad(model, attribution="grad_cam", attribute_at="conv", num_samples=4,
                       seed=0)
    want = e.explain(x, t, seeds=[1, 2])
    assert want.shape == (2, 5, 5)
    served = tf.saved_model.load(e.export(tmp_path / "seq")).signatures["serving_default"]
    got = served(inputs=tf.constant(x), targets=tf.constant(t, tf.int32),
                 seeds=tf.constant([1, 2], tf.int64))
    np.testing.assert_allclose(got["attributions"].numpy(), want, rtol=1e-5, atol=1e-7)

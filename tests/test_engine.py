"""The estimator engine against exact answers, the reference, and its own invariants."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

import reference
import tfmollify as tfm
from tfmollify.core import engine, sampling
from tfmollify.core.aggregation import AGGREGATIONS
from tfmollify.core.attribution import ATTRIBUTIONS, LAYER_ONLY
from tfmollify.testing.assertions import assert_mc_close, assert_mollified
from tfmollify.testing.guarantees import assert_model_unchanged, model_fingerprint

# the registered kernels (a list of its own: the registry is what is tested)
BUILTIN_KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect")

ATTRIBUTIONS = tuple(a for a in ATTRIBUTIONS if a not in LAYER_ONLY)


# -- models ---------------------------------------------------------------------------------------
def linear_model(w: np.ndarray, dtype: str = "float32") -> keras.Model:
    """f(x) = x @ w (no bias), one score per column of w."""
    model = keras.Sequential(
        [keras.Input((w.shape[0],), dtype=dtype), keras.layers.Dense(w.shape[1], use_bias=False,
                                                                      dtype=dtype)]
    )
    model.layers[0].set_weights([w.astype(dtype)])
    return model


def mlp(d_in: int = 5, hidden: int = 7, classes: int = 3, dtype: str = "float32", seed: int = 0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((d_in,), dtype=dtype),
            keras.layers.Dense(hidden, activation="tanh", dtype=dtype),
            keras.layers.Dense(classes, dtype=dtype),
        ]
    )
    # non-trivial biases
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        w, b = layer.get_weights()
        layer.set_weights([w, rng.normal(scale=0.3, size=b.shape).astype(dtype)])
    return model


class Sine(keras.layers.Layer):
    """f(x; w) = sin(w x) with one trainable scalar weight w."""

    def __init__(self, w: float, **kw):
        super().__init__(**kw)
        self.w0 = w

    def build(self, input_shape):
        self.w = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.w0),
                                 dtype=self.dtype)

    def call(self, x):
        return tf.sin(self.w * x)


def sine_model(w: float, dtype: str = "float64") -> keras.Model:
    inp = keras.Input((1,), dtype=dtype)
    return keras.Model(inp, Sine(w, dtype=dtype)(inp))


def params_of(model: keras.Model) -> list[tuple[np.ndarray, np.ndarray]]:
    ws = [v.numpy() for v in model.trainable_variables]
    return [(ws[i], ws[i + 1]) for i in range(0, len(ws), 2)]


# the model's weights, layers and public attributes, and the check that they did not change
weights_snapshot = model_fingerprint
assert_unchanged = assert_model_unchanged


# -- exact answers --------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", BUILTIN_KERNELS)
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_linear_model_sg_is_exact(kernel, aggregation):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 3))
    model = linear_model(w)
    x = rng.normal(size=(4, 6)).astype(np.float32)
    t = np.array([0, 1, 2, 1])
    out = tfm.SmoothGrad(model, kernel=kernel, num_samples=7, aggregation=aggregation, seed=1)(
        x, t
    )
    col = w[:, t].T.astype(np.float32)
    want = {"smoothgrad": col, "smoothgrad_sq": col**2, "vargrad": np.zeros_like(col)}[aggregation]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", BUILTIN_KERNELS)
def test_sine_model_sg_converges_to_the_characteristic_function(kernel):
    """f(x) = sum sin(x): g_eps = cos(x) * chi(eps), chi the kernel's characteristic function."""
    x = np.linspace(-2.0, 2.5, 12).reshape(2, 6)
    eps = 0.7
    n = 4000
    f = lambda v: tf.reduce_sum(tf.sin(v), axis=1, keepdims=True)  # noqa: E731
    est, se = tfm.SmoothGrad(f, kernel=kernel, num_samples=n, epsilon=eps, seed=5).explain(
        x, return_stderr=True
    )
    exact = reference.sg_sine_grad(x, eps, kernel)
    chi, chi2 = reference.char_fn(kernel, eps), reference.char_fn(kernel, 2 * eps)
    true_sd = np.sqrt((1 + np.cos(2 * x) * chi2) / 2 - (np.cos(x) * chi) ** 2)
    # the reported standard error is the true one (relative sd of a sd estimate ~ 1/sqrt(2n))
    np.testing.assert_allclose(se, true_sd / np.sqrt(n), rtol=0.08)
    assert_mc_close(est, true_sd / np.sqrt(n), exact, seed=5)


@pytest.mark.parametrize("kernel", ["gaussian", "hyperbolic", "sigmoid", "rect"])
def test_one_weight_sine_model_ng_and_fg_match_quadrature(kernel):
    w, x0, delta, eps = 1.3, 0.8, 0.3, 0.4
    model = sine_model(w)
    x = np.array([[x0], [-1.1]])
    # the reference's closed form and quadrature are the exact mollified gradients
    ng = tfm.NoiseGrad(model, kernel=kernel, num_weight_samples=3000, weight_epsilon=delta,
                       seed=2)
    assert_mollified(ng, x, lambda v: reference.ng_sine_grad(v, w, delta, kernel), targets=0)
    fg = tfm.FusionGrad(model, kernel=kernel, num_weight_samples=600, num_samples=8,
                        weight_epsilon=delta, epsilon=eps, seed=3)
    assert_mollified(fg, x, lambda v: np.vectorize(
        lambda s: reference.fg_sine_grad(s, w, delta, eps, kernel))(v), targets=0)


def test_cauchy_weight_noise_warns_and_has_no_reference_value():
    model = sine_model(1.3)
    with pytest.warns(UserWarning, match="no mean or variance"):
        tfm.NoiseGrad(model, kernel="cauchy", num_weight_samples=4)
    with pytest.raises(ValueError):
        reference.ng_sine_grad(0.5, 1.3, 0.2, "poisson")


def test_stderr_matches_the_spread_over_seeds(shared_models):
    model = shared_models(mlp)
    x = np.random.default_rng(3).normal(size=(2, 5)).astype(np.float32)
    for mode in ("sg", "fg"):
        runs, ses = [], []
        e = tfm.Explainer(model, mode=mode, num_samples=20, num_weight_samples=6, epsilon=0.5)
        for _ in range(40):  # seed=None: fresh noise on every call, one compiled function
            a, s = e.explain(x, [0, 2], return_stderr=True)
            runs.append(a)
            ses.append(s)
        spread = np.std(runs, axis=0, ddof=1)
        ratio = spread.mean() / np.mean(ses, axis=0).mean()
        # 40 replicates: the ratio of a sd estimate is within ~ +-25% at 2 sigma
        assert 0.75 < ratio < 1.3, (mode, ratio)


def test_epsilon_to_zero_gives_the_plain_gradient(shared_models):
    model = shared_models(mlp)
    x = np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        s = tf.gather(model(xt), [1, 0, 2], axis=1, batch_dims=1)
    g = tape.gradient(s, xt).numpy()
    out = tfm.SmoothGrad(model, num_samples=3, epsilon=1e-6, seed=0)(x, [1, 0, 2])
    np.testing.assert_allclose(out, g, rtol=1e-4, atol=1e-6)


# -- the reference MLP, fed the same noise --------------------------------------------------------
def pairwise(a: tuple, b: tuple, c: tuple) -> list[tuple]:
    """Every pair of values of any two of ``a``, ``b``, ``c`` in some case (a covering array of
    strength 2): ``len(a) x len(b)`` cases, ``c`` shifted along both, where the full product has
    ``len(c)`` times as many. ``c`` must be no longer than ``a`` or ``b``.

    >>> pairwise((1, 2), ("x", "y"), ("u", "v"))
    [(1, 'x', 'u'), (1, 'y', 'v'), (2, 'x', 'v'), (2, 'y', 'u')]
    """
    assert len(c) <= min(len(a), len(b))
    return [(x, y, c[(i + j) % len(c)]) for i, x in enumerate(a) for j, y in enumerate(b)]


#: 15 cases, not the 45 of the full product: the kernel changes only the noise drawn, the
#: aggregation and the base attribution only what is done with it, and every pair of the three
#: meets in some case, with each mode
REFERENCE_CASES = pairwise(BUILTIN_KERNELS, AGGREGATIONS, ATTRIBUTIONS)


@pytest.mark.parametrize(("kernel", "aggregation", "attribution"), REFERENCE_CASES)
def test_matches_reference_mlp_with_the_same_noise(kernel, aggregation, attribution):
    """5 kernels x 3 aggregations x 3 base attributions (every pair of them), each in the 3
    modes, with the same noise as the NumPy reference, float64."""
    model = mlp(dtype="float64")
    params = params_of(model)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 5))
    t = np.array([2, 0, 1])
    n, m, seed, delta = 6, 4, 11, 0.1
    eps = np.array([0.3, 0.5, 0.2])
    seeds = sampling.example_seeds(seed, 3)
    z = sampling.input_noise(tfm.kernels.get(kernel), seeds, 0, m * n, 5, tf.float64)
    wkey = tf.constant(sampling.weight_key(seed))
    sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
    zw = []
    for j in range(m):
        parts = sampling.weight_noise(tfm.kernels.get(kernel), wkey, j, sizes, tf.float64)
        flat = [p.numpy().reshape(v.shape) for p, v in zip(parts, model.trainable_variables,
                                                           strict=True)]
        zw.append([(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)])
    base = np.linspace(-0.2, 0.3, 5)
    kw = dict(kernel=kernel, num_samples=n, num_weight_samples=m, epsilon=eps,
              weight_epsilon=delta, aggregation=aggregation, seed=seed, attribution=attribution,
              ig_steps=3, ig_baseline=base)
    rk = dict(aggregation=aggregation, attribution=attribution, steps=3, baseline=base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # cauchy weight-noise warning
        sg = tfm.SmoothGrad(model, **kw)(x, t)
        ng = tfm.NoiseGrad(model, **kw)(x, t)
        fg = tfm.FusionGrad(model, **kw)(x, t)
    ref_sg = reference.mlp.smoothgrad(params, x, t, z[:, :n], eps, **rk)
    ref_ng = reference.mlp.noisegrad(params, x, t, zw, delta, **rk)
    ref_fg = reference.mlp.fusiongrad(params, x, t, zw, z.reshape(3, m, n, 5), eps, delta, **rk)
    np.testing.assert_allclose(sg, ref_sg, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ng, ref_ng, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fg, ref_fg, rtol=1e-9, atol=1e-12)


# -- base attributions ----------------------------------------------------------------------------
def test_input_x_gradient_and_ig_on_a_linear_model():
    rng = np.random.default_rng(6)
    w = rng.normal(size=(4, 2))
    model = linear_model(w, "float64")
    x = rng.normal(size=(2, 4))
    seeds = sampling.example_seeds(3, 2)
    z = sampling.input_noise(tfm.kernels.get("gaussian"), seeds, 0, 5, 4, tf.float64)
    noisy = x[:, None, :] + 0.2 * z
    want = (noisy * w[:, 1]).mean(axis=1)  # a = x' * w for both methods (zero baseline)
    for method in ("input_x_gradient", "integrated_gradients"):
        out = tfm.SmoothGrad(model, num_samples=5, epsilon=0.2, seed=3, attribution=method,
                             ig_steps=4)(x, 1)
        np.testing.assert_allclose(out, want, rtol=1e-10)


def test_integrated_gradients_is_exact_for_a_quadratic():
    """f(x) = sum(c * x^2): IG from baseline b is c (x^2 - b^2) per element (completeness)."""
    c = np.array([1.0, -2.0, 0.5])
    f = lambda v: tf.reduce_sum(c * v * v, axis=1, keepdims=True)  # noqa: E731
    x = np.array([[0.3, -1.2, 2.0]])
    base = np.array([0.1, 0.2, -0.5])
    out = tfm.SmoothGrad(f, num_samples=1, epsilon=1e-300, attribution="integrated_gradients",
                         ig_steps=2, ig_baseline=base, seed=0)(x)
    np.testing.assert_allclose(out, c * (x**2 - base**2), rtol=1e-9)


# -- invariants -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", tfm.MODES)
@pytest.mark.parametrize("attribution", ATTRIBUTIONS)
def test_result_does_not_depend_on_batch_size(mode, attribution, shared_models):
    model = shared_models(mlp)
    x = np.random.default_rng(7).normal(size=(5, 5)).astype(np.float32)
    t = [0, 1, 2, 0, 1]
    kw = dict(mode=mode, num_samples=6, num_weight_samples=3, seed=9, attribution=attribution,
              ig_steps=4)
    ref_a, ref_s = tfm.Explainer(model, **kw).explain(x, t, return_stderr=True)
    for bs in (4, 5, 13, 1000):
        a, s = tfm.Explainer(model, batch_size=bs, **kw).explain(x, t, return_stderr=True)
        np.testing.assert_allclose(a, ref_a, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(s, ref_s, rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("mode", tfm.MODES)
def test_an_example_alone_equals_the_same_example_in_a_batch(mode, shared_models):
    model = shared_models(mlp)
    x = np.random.default_rng(8).normal(size=(4, 5)).astype(np.float32)
    seeds = np.array([5, -7, 2**40, 3])
    e = tfm.Explainer(model, mode=mode, num_samples=5, num_weight_samples=3, seed=4)
    full = e(x, [0, 1, 2, 0], seeds=seeds)
    alone = e(x[2:3], [2], seeds=seeds[2:3])
    np.testing.assert_allclose(alone[0], full[2], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", tfm.MODES)
def test_seeds(mode, shared_models):
    model = shared_models(mlp)
    x = np.random.default_rng(9).normal(size=(2, 5)).astype(np.float32)
    kw = dict(mode=mode, num_samples=4, num_weight_samples=3)
    a = tfm.Explainer(model, seed=1, **kw)(x, [0, 1])
    b = tfm.Explainer(model, seed=1, **kw)(x, [0, 1])
    c = tfm.Explainer(model, seed=2, **kw)(x, [0, 1])
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    fresh = tfm.Explainer(model, seed=None, **kw)
    assert not np.allclose(fresh(x, [0, 1]), fresh(x, [0, 1]))


def test_no_retracing_across_calls(shared_models):
    model = shared_models(mlp)
    rng = np.random.default_rng(10)
    for mode in tfm.MODES:
        e = tfm.Explainer(model, mode=mode, num_samples=3, num_weight_samples=2, seed=0,
                          batch_size=4)
        for b in (1, 3, 7, 2):
            e(rng.normal(size=(b, 5)).astype(np.float32), 1)
        # one trace per input signature and number of weight draws per pass (NG: two draws
        # fit batch_size=4 beside one or two examples, one beside 3 or more; FG's 3 input
        # draws leave no room for a second weight draw), and one example has its own (static
        # shapes)
        draws = {e.seam.plan(b).layout.draws for b in (1, 3, 7, 2)}
        assert draws == ({1, 2} if mode == "ng" else {1}), mode
        keys = {(e.seam.plan(b).layout.draws, b == 1) for b in (1, 3, 7, 2)}
        assert e.trace_count == len(keys) == len(draws) + 1, mode
        e(rng.normal(size=(2, 5)), 1)  # float64 arrays compute in the model's float32
        e(rng.normal(size=(1, 5)), 1)
        assert e.trace_count == len(keys)


@pytest.mark.slow
def test_many_noisegrad_explainers_raise_no_retracing_warning():
    """Each NG explainer with a seed draws its weight-noise table with a function of its own;
    TensorFlow counts them together, and the warning about it is tfmollify's, so it is dropped
    (it named the table's function before)."""
    import logging

    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger = tf.get_logger()  # the filter sits on TensorFlow's logger, before its handlers
    level = logger.level
    logger.setLevel("WARNING")  # the suite quietens it to errors
    logger.addHandler(handler)
    try:
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        x = np.zeros((2, 3), np.float32)
        for seed in range(12):
            tfm.Explainer(model, mode="ng", num_weight_samples=2, seed=seed)(x, 0)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert not [m for m in seen if "retracing" in m], seen


def test_one_example_runs_a_static_trace_with_the_same_values(shared_models):
    """One example gets a function traced for exactly one example (static shapes); its values
    are those of the same example in a larger batch, bit for bit, in every mode."""
    model = shared_models(mlp)
    x = np.random.default_rng(13).normal(size=(3, 5)).astype(np.float32)
    for mode in tfm.MODES:
        e = tfm.Explainer(model, mode=mode, num_samples=3, num_weight_samples=4, seed=2)
        np.testing.assert_array_equal(e(x[:1], 1), e(x, 1)[:1])
        one = e.runner.prepare(x[:1], 1, with_stderr=False).fn
        many = e.runner.prepare(x, 1, with_stderr=False).fn
        assert one.structured_input_signature[0][0].shape.as_list() == [1, 5], mode
        assert many.structured_input_signature[0][0].shape.as_list() == [None, 5], mode
        assert e.trace_count == 2, mode


def test_dtype_and_type_are_preserved(shared_models):
    model = shared_models(mlp)
    x = np.random.default_rng(11).normal(size=(2, 5))
    out = tfm.SmoothGrad(model, num_samples=3, seed=0)(x, 0)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    out = tfm.SmoothGrad(model, num_samples=3, seed=0)(tf.constant(x, tf.float32), 0)
    assert isinstance(out, tf.Tensor) and out.dtype == tf.float32 and out.shape == (2, 5)


def test_empty_batch(shared_models):
    model = shared_models(mlp)
    out, se = tfm.SmoothGrad(model, num_samples=3, seed=0).explain(
        np.zeros((0, 5), np.float32), [], return_stderr=True
    )
    assert out.shape == (0, 5) and se.shape == (0, 5)


_SCALE = tf.Variable(1.0, dtype=tf.float64)
_SCALED: dict = {}


def _scaled_explainers():
    """One compiled explainer per aggregation on a model scaled by a variable (no retracing)."""
    if not _SCALED:
        model = mlp(dtype="float64")
        scaled = lambda v: _SCALE * model(v)  # noqa: E731
        for agg in AGGREGATIONS:
            _SCALED[agg] = tfm.SmoothGrad(scaled, num_samples=4, seed=3, aggregation=agg,
                                          epsilon=0.3)
    return _SCALED


@given(scale=st.floats(-50.0, 50.0).filter(lambda s: abs(s) > 1e-3))
def test_linear_in_the_output_scale(scale):
    explainers = _scaled_explainers()
    x = np.random.default_rng(12).normal(size=(2, 5))
    _SCALE.assign(1.0)
    base = {agg: e(x, 1) for agg, e in explainers.items()}
    _SCALE.assign(scale)
    for agg, power in (("smoothgrad", 1), ("smoothgrad_sq", 2), ("vargrad", 2)):
        out = explainers[agg](x, 1)
        np.testing.assert_allclose(out, scale**power * base[agg], rtol=1e-9, atol=1e-12)
    assert all(e.trace_count == 1 for e in explainers.values())


def test_targets_callable_and_single_output(shared_models):
    model = shared_models(mlp)
    x = np.random.default_rng(13).normal(size=(3, 5)).astype(np.float32)
    by_index = tfm.SmoothGrad(model, num_samples=4, seed=0)(x, 2)
    by_fn = tfm.SmoothGrad(model, num_samples=4, seed=0)(x, lambda s: s[:, 2])
    np.testing.assert_allclose(by_fn, by_index, rtol=1e-6)
    reg = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
    assert tfm.SmoothGrad(reg, num_samples=2, seed=0)(x).shape == x.shape


# -- the user's model is never modified -----------------------------------------------------------
@pytest.mark.parametrize("mode", ["ng", "fg"])
def test_model_unchanged_after_weight_noise(mode):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8),
                              keras.layers.BatchNormalization(), keras.layers.Activation("relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(3)])
    model(np.ones((2, 6), np.float32), training=True)
    before = weights_snapshot(model)
    x = np.random.default_rng(14).normal(size=(3, 6)).astype(np.float32)
    a = tfm.Explainer(model, mode=mode, num_samples=3, num_weight_samples=4, seed=0)(x, 1)
    b = tfm.Explainer(model, mode=mode, num_samples=3, num_weight_samples=4, seed=0)(x, 1)
    np.testing.assert_array_equal(a, b)  # inference mode: Dropout off, BN statistics fixed
    assert_unchanged(model, before)


class _Boom(keras.layers.Layer):
    """Raises inside the graph on its ``fail_at``-th execution."""

    def __init__(self, fail_at: int, **kw):
        super().__init__(**kw)
        self.calls = 0
        self.fail_at = fail_at

    def _tick(self, x):
        self.calls += 1
        if self.calls >= self.fail_at:
            raise RuntimeError("boom")
        return x

    def call(self, x):
        y = tf.py_function(self._tick, [x], x.dtype)
        y.set_shape(x.shape)
        return x + 0.0 * y


@pytest.mark.parametrize("draws", [1, 2])  # one weight draw per pass, or two side by side
def test_model_unchanged_when_the_graph_fails_midway(draws):
    keras.utils.set_random_seed(1)
    boom = _Boom(fail_at=4)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5), boom,
                              keras.layers.Dense(2)])
    boom.fail_at = 10**9
    model(np.ones((1, 4), np.float32))
    boom.calls, boom.fail_at = 0, 3
    before = weights_snapshot(model)
    with pytest.raises(Exception, match="boom"):
        tfm.NoiseGrad(model, num_weight_samples=8, seed=0, weight_draws_per_pass=draws)(
            np.ones((2, 4), np.float32), 1)
    assert boom.calls >= 3
    boom.calls = 0  # the layer's own counter of the test
    assert_unchanged(model, before)


def test_model_unchanged_after_keyboard_interrupt():
    """Ctrl-C between two blocks of examples (where Python regains control) leaves no trace."""
    model = mlp()
    before = weights_snapshot(model)
    x = np.random.default_rng(15).normal(size=(6, 5)).astype(np.float32)
    e = tfm.FusionGrad(model, num_samples=4, num_weight_samples=4, seed=0, batch_size=8)
    e(x[:2], 0)  # compile
    run_block = tfm.runner.Runner.run_block
    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return run_block(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tfm.runner.Runner, "run_block", staticmethod(interrupted))
        with pytest.raises(KeyboardInterrupt):
            e(x, 0)
    assert len(calls) == 2
    assert_unchanged(model, before)
    np.testing.assert_array_equal(e(x, 0), tfm.FusionGrad.from_config(model, e.get_config())(x, 0))


# -- non-finite gradients -------------------------------------------------------------------------
def test_nonfinite_samples_are_excluded_and_reported():
    f = lambda v: tf.reduce_sum(tf.sqrt(v), axis=1, keepdims=True)  # noqa: E731
    x = np.array([[0.5, 2.0], [3.0, 4.0]])
    e = tfm.SmoothGrad(f, num_samples=200, epsilon=0.5, seed=0)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        out = e(x)
    seeds = sampling.example_seeds(0, 2)
    z = sampling.input_noise(tfm.kernels.get("gaussian"), seeds, 0, 200, 2, tf.float64)
    noisy = x[:, None, :] + 0.5 * z
    ok = np.all(noisy > 0, axis=2)
    want0 = (0.5 / np.sqrt(noisy[0][ok[0]])).mean(axis=0)
    np.testing.assert_allclose(out[0], want0, rtol=1e-9)
    np.testing.assert_array_equal(e.last_nonfinite_count, 200 - ok.sum(axis=1))
    assert e.last_nonfinite_count[0] > 0 and e.last_nonfinite_count[1] == 0


def test_all_samples_nonfinite_is_an_error():
    f = lambda v: tf.reduce_sum(tf.sqrt(v), axis=1, keepdims=True)  # noqa: E731
    with pytest.raises(tfm.NonFiniteError, match=r"examples \[1\]"):
        tfm.SmoothGrad(f, kernel="rect", num_samples=10, epsilon=0.5, seed=0)(
            np.array([[4.0], [-5.0]])
        )


# -- errors: named argument, value and fix, never a TensorFlow trace ------------------------------
@pytest.fixture(scope="module")
def small():
    return mlp()


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(mode="xx"), ValueError, r"`mode`.*Received: mode='xx'"),
        (dict(mode=3), TypeError, "`mode`"),
        (dict(kernel="laplace"), ValueError, "Valid names"),
        (dict(aggregation="mean"), ValueError, "`aggregation`.*smoothgrad_sq"),
        (dict(attribution="lrp"), ValueError, "`attribution`.*integrated_gradients"),
        (dict(num_samples=0), ValueError, "`num_samples`.*Received: num_samples=0"),
        (dict(num_samples=2.5), TypeError, "`num_samples`"),
        (dict(num_weight_samples=-1), ValueError, "`num_weight_samples`"),
        (dict(epsilon=0.0), ValueError, "`epsilon`"),
        (dict(epsilon=-1.0), ValueError, "`epsilon`"),
        (dict(epsilon="big"), TypeError, "`epsilon`"),
        (dict(alpha=1.0), ValueError, "`alpha`"),
        (dict(alpha=0.0), ValueError, "`alpha`"),
        (dict(weight_epsilon=0.0), ValueError, "`weight_epsilon`"),
        (dict(batch_size=0), ValueError, "`batch_size`"),
        (dict(attribution="integrated_gradients", ig_steps=8, batch_size=4), ValueError,
         "`batch_size`.*ig_steps"),
        (dict(seed=1.5), TypeError, "`seed`"),
    ],
)
def test_constructor_errors(small, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        tfm.Explainer(small, **kwargs)


def test_fixed_mode_classes_reject_mode(small):
    with pytest.raises(TypeError, match="fixes mode='ng'"):
        tfm.NoiseGrad(small, mode="sg")


def test_weight_noise_needs_a_keras_model_with_weights():
    with pytest.raises(TypeError, match="needs a Keras 3 model"):
        tfm.NoiseGrad(lambda x: x)
    frozen = mlp()
    frozen.trainable = False
    with pytest.raises(ValueError, match=r"has none"):
        tfm.FusionGrad(frozen)


@pytest.mark.parametrize(
    "inputs, targets, exc, match",
    [
        (np.ones((2, 5), np.int32), 0, TypeError, "integer inputs"),
        (np.ones(5, np.float32), 0, ValueError, "batch dimension"),
        (np.ones((2, 7), np.float32), 0, ValueError,
         r"`inputs` has shape \[2, 7\], but the model takes \[batch, 5\]"),
        (np.array([[1.0, np.nan, 0, 0, 0], [0] * 5], np.float32), 0, ValueError, "NaN or Inf"),
        (np.ones((2, 5), np.float32), 3, ValueError, r"`targets` must be in \[0, 3\)"),
        (np.ones((2, 5), np.float32), [0, -1], ValueError, "`targets` must be in"),
        (np.ones((2, 5), np.float32), [0, 1, 2], ValueError, "one class index per example"),
        (np.ones((2, 5), np.float32), [0.5, 1.0], TypeError, "`targets`"),
        (np.ones((2, 5), np.float32), None, ValueError, "`targets` is required"),
        (np.ones((2, 5), np.float32), 0, ValueError, "constant"),  # eq. 30 needs r > 0
    ],
)
def test_call_errors(small, inputs, targets, exc, match):
    with pytest.raises(exc, match=match):
        tfm.SmoothGrad(small, num_samples=2, seed=0)(inputs, targets)


def test_epsilon_per_example_length_is_checked(small):
    e = tfm.SmoothGrad(small, num_samples=2, epsilon=[0.1, 0.2, 0.3], seed=0)
    with pytest.raises(ValueError, match="`epsilon` has 3 values"):
        e(np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32), 0)


def test_seeds_argument_is_checked(small):
    x = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="`seeds`"):
        tfm.SmoothGrad(small, num_samples=2)(x, 0, seeds=[1])


def test_default_epsilon_follows_eq30(small):
    """epsilon=None uses kernel.epsilon(max(x) - mean(x), alpha) per example."""
    x = np.random.default_rng(16).normal(size=(2, 5)).astype(np.float32)
    r = x.max(axis=1) - x.mean(axis=1)
    eps = tfm.kernels.get("sigmoid").epsilon(r, 0.95)
    a = tfm.SmoothGrad(small, kernel="sigmoid", alpha=0.95, num_samples=5, seed=1)(x, 0)
    b = tfm.SmoothGrad(small, kernel="sigmoid", epsilon=eps, num_samples=5, seed=1)(x, 0)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_config_round_trip(small):
    e = tfm.FusionGrad(small, kernel="rect", num_samples=3, num_weight_samples=2, seed=4,
                       aggregation="vargrad", epsilon=0.2)
    cfg = e.get_config()
    e2 = tfm.FusionGrad.from_config(small, cfg)
    assert e2.get_config() == cfg
    x = np.random.default_rng(17).normal(size=(2, 5)).astype(np.float32)
    np.testing.assert_array_equal(e(x, 1), e2(x, 1))
    assert "FusionGrad(mode='fg'" in repr(e)


@pytest.mark.parametrize(("mode", "aggregation", "batch_size"),
                         pairwise(tfm.MODES, AGGREGATIONS, (None, 3)))
def test_asking_for_stderr_does_not_change_the_estimate(
    mode, aggregation, batch_size, shared_models
):
    model = shared_models(mlp)
    x = np.random.default_rng(18).normal(size=(3, 5)).astype(np.float32)
    e = tfm.Explainer(model, mode=mode, num_samples=5, num_weight_samples=3, seed=2,
                      aggregation=aggregation, batch_size=batch_size)
    plain = e(x, [0, 1, 2])
    with_se, se = e.explain(x, [0, 1, 2], return_stderr=True)
    np.testing.assert_allclose(plain, with_se, rtol=1e-6, atol=1e-7)
    assert np.all(np.isfinite(se)) and np.all(se >= 0)


@pytest.mark.parametrize("mode", tfm.MODES)
def test_xla_gives_the_same_noise_and_result(mode, shared_models):
    """The explicit-counter Philox stream is the same under XLA, so results agree to rounding."""
    model = shared_models(mlp)
    x = np.random.default_rng(19).normal(size=(3, 5)).astype(np.float32)
    kw = dict(mode=mode, num_samples=6, num_weight_samples=3, seed=5, kernel="sigmoid")
    plain = tfm.Explainer(model, **kw)(x, [0, 1, 2])
    xla = tfm.Explainer(model, jit_compile=True, **kw)
    np.testing.assert_allclose(xla(x, [0, 1, 2]), plain, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(xla(x, [0, 1, 2]), xla(x, [0, 1, 2]))


@pytest.mark.parametrize(
    "kernel, proposal, ratio",
    [("gaussian", "cauchy", 1.0), ("sigmoid", "cauchy", 1.5), ("rect", "gaussian", 1.0),
     ("hyperbolic", "sigmoid", 1.0), ("gaussian", "gaussian", 1.0)],
)
def test_importance_sampled_proposal_is_unbiased(kernel, proposal, ratio):
    """Theorem 3.11 with p != phi_eps: on sum(sin x) the estimate still targets cos(x) chi(eps)."""
    x = np.array([[0.3, -1.1], [2.0, 0.7]])
    eps = 0.6
    f = lambda v: tf.reduce_sum(tf.sin(v), axis=1, keepdims=True)  # noqa: E731
    for agg in ("smoothgrad", "smoothgrad_sq"):
        est, se = tfm.SmoothGrad(f, kernel=kernel, proposal=proposal, proposal_scale=ratio,
                                 num_samples=6000, epsilon=eps, aggregation=agg, seed=3).explain(
            x, return_stderr=True
        )
        if agg == "smoothgrad":
            exact = reference.sg_sine_grad(x, eps, kernel)
        else:  # E[cos^2(x + eps Z)] = (1 + cos(2x) chi(2 eps)) / 2
            exact = (1 + np.cos(2 * x) * reference.char_fn(kernel, 2 * eps)) / 2
        assert np.all(np.abs(est - exact) < 4.5 * se), (agg, est, exact, se)


def test_proposal_with_the_kernel_itself_is_plain_smoothgrad(shared_models):
    model = shared_models(mlp)
    x = np.random.default_rng(20).normal(size=(2, 5)).astype(np.float32)
    a = tfm.SmoothGrad(model, num_samples=5, epsilon=0.3, seed=1)(x, 1)
    b = tfm.SmoothGrad(model, num_samples=5, epsilon=0.3, seed=1, proposal="gaussian")(x, 1)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_proposal_errors(small):
    with pytest.raises(ValueError, match="mode='ng' has none"):
        tfm.NoiseGrad(small, proposal="cauchy")
    with pytest.raises(ValueError, match="vargrad"):
        tfm.SmoothGrad(small, proposal="cauchy", aggregation="vargrad")
    with pytest.raises(ValueError, match="`proposal_scale`"):
        tfm.SmoothGrad(small, proposal="cauchy", proposal_scale=0)


@pytest.mark.parametrize("mode", ["ng", "fg"])
def test_cached_weight_noise_gives_the_same_result(mode, shared_models):
    model = shared_models(mlp)
    x = np.random.default_rng(21).normal(size=(3, 5)).astype(np.float32)
    kw = dict(mode=mode, num_samples=4, num_weight_samples=5, seed=8, kernel="hyperbolic")
    cached = tfm.Explainer(model, **kw)
    fresh = tfm.Explainer(model, weight_noise_cache_mb=0, **kw)
    a = cached(x, [0, 1, 2])
    table = cached.runner.cached_table()
    assert table is not None  # the factors of 35 + 7 + 21 + 3 weights, 5 draws, padded blocks
    assert tuple(table.shape) == (engine.factor_offsets([35, 7, 21, 3], 5)[-1],)
    assert fresh.runner.cached_table() is None
    np.testing.assert_allclose(a, fresh(x, [0, 1, 2]), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(a, cached(x, [0, 1, 2]))
    tiny = tfm.Explainer(model, weight_noise_cache_mb=1e-6, **kw)  # does not fit: not cached
    np.testing.assert_allclose(tiny(x, [0, 1, 2]), a, rtol=1e-6, atol=1e-7)
    assert tiny.runner.cached_table() is None
    with pytest.raises(ValueError, match="weight_noise_cache_mb"):
        tfm.Explainer(model, weight_noise_cache_mb=-1, **kw)


def _slow(kw, name):
    return pytest.param(kw, id=name, marks=(pytest.mark.slow,))


@pytest.mark.parametrize(
    "kw",
    [
        pytest.param(dict(mode="sg", num_samples=6), id="sg"),
        _slow(dict(mode="sg", num_samples=6, sampler="antithetic", aggregation="vargrad"),
              "antithetic"),
        _slow(dict(mode="sg", num_samples=8, sampler="sobol", replicates=2), "sobol"),
        _slow(dict(mode="sg", num_samples=4, input_range=(-3.0, 3.0)), "input_range"),
        _slow(dict(mode="sg", num_samples=4, attribution="integrated_gradients", ig_steps=3),
              "ig"),
        _slow(dict(mode="sg", num_samples=4, noise_at="hidden"), "noise_at"),
        pytest.param(dict(mode="fg", num_samples=3, num_weight_samples=4), id="fg"),
        _slow(dict(mode="fg", num_samples=3, num_weight_samples=5, weight_draws_per_pass=2),
              "fg_padded"),
        _slow(dict(mode="fg", num_samples=3, num_weight_samples=4, weight_draws_per_pass=1),
              "fg_one_draw"),
    ],
)
def test_kept_input_noise_gives_the_same_values(kw, shared_models):
    """With a fixed seed the examples' input draws are kept between calls; every sampler and
    layout that takes them in gives exactly the values drawn in the graph, call after call."""
    model = shared_models(mlp)
    if kw.get("noise_at") == "hidden":
        kw = dict(kw, noise_at=model.layers[0].name)
    x = np.random.default_rng(4).normal(size=(2, 5)).astype(np.float32)
    kept = tfm.Explainer(model, seed=3, **kw)
    drawn = tfm.Explainer(model, seed=3, input_noise_cache_mb=0, **kw)
    # the same draws; TensorFlow's vectorised kernels may round an element differently (1 ulp)
    # where it sits at another place of a tensor (a vector lane or the scalar tail)
    same = lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)  # noqa: E731
    a = kept(x, [0, 2])
    assert kept.runner.cache_info()["input_noise_tables"] == 1
    assert drawn.runner.cache_info()["input_noise_tables"] == 0
    same(a, drawn(x, [0, 2]))
    np.testing.assert_array_equal(a, kept(x, [0, 2]))  # the kept draws
    x2 = x[::-1].copy()  # other inputs, the same example positions: the same draws again
    same(kept(x2, [1, 0]), drawn(x2, [1, 0]))
    one = x[:1]  # another example count: its own draws
    same(kept(one, 1), drawn(one, 1))


def test_input_noise_is_kept_only_when_the_next_call_reuses_it(shared_models):
    model = shared_models(mlp)
    x = np.random.default_rng(5).normal(size=(3, 5)).astype(np.float32)
    kw = dict(mode="sg", num_samples=4)

    def kept(e, *args, **call):
        e.explain(x, [0, 1, 2], *args, **call)
        return e.runner.cache_info()["input_noise_tables"]

    assert kept(tfm.Explainer(model, seed=1, **kw)) == 1
    assert kept(tfm.Explainer(model, **kw)) == 0  # a fresh seed per call
    assert kept(tfm.Explainer(model, seed=1, **kw), seeds=[1, 2, 3]) == 0  # the caller's seeds
    assert kept(tfm.Explainer(model, seed=1, proposal="cauchy", **kw)) == 0
    assert kept(tfm.Explainer(model, seed=1, tolerance=0.5, max_samples=8, **kw)) == 0
    # B x N x D = 3 x 4 x 5 float32: 240 bytes
    assert kept(tfm.Explainer(model, seed=1, input_noise_cache_mb=239 / 2**20, **kw)) == 0
    assert kept(tfm.Explainer(model, seed=1, input_noise_cache_mb=240 / 2**20, **kw)) == 1
    assert kept(tfm.Explainer(model, seed=1, batch_size=2, **kw)) == 0  # N split over passes
    for bad in (-1, float("nan"), "64", True):
        with pytest.raises(ValueError, match=r"`input_noise_cache_mb`.*Received"):
            tfm.Explainer(model, input_noise_cache_mb=bad, **kw)


# -- models and targets of every shape the API admits --------------------------------------------
class NoTrainingArg(keras.Model):
    """A subclassed model whose ``call`` has no ``training`` argument."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3, use_bias=False)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize("mode", ["sg", "ng", "fg"])
def test_subclassed_model_without_training_argument(mode):
    model = NoTrainingArg()
    model(np.zeros((1, 4), np.float32))
    w = model.dense.kernel.numpy()
    x = np.random.default_rng(30).normal(size=(2, 4)).astype(np.float32)
    out = tfm.Explainer(model, mode=mode, num_samples=3, num_weight_samples=4, seed=0)(x, 1)
    if mode == "sg":  # linear: exact
        np.testing.assert_allclose(out, np.broadcast_to(w[:, 1], x.shape), rtol=1e-6)
    else:  # E[w (1 + eps z)] = w, so the estimate is w plus Monte Carlo noise, finite
        assert np.all(np.isfinite(out)) and out.shape == x.shape


def test_score_that_does_not_depend_on_the_input_is_refused_not_a_zero_map():
    """Issue 27: a missing gradient path is an error, never a silent map of zeros."""
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.ops.zeros_like(inp)))
    x = np.random.default_rng(31).normal(size=(2, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="No gradient reaches `inputs`"):
        tfm.SmoothGrad(model, num_samples=3, seed=0)(x, 0)


def test_integer_model_input_is_rejected_up_front():
    inp = keras.Input((4,), dtype="int32")
    emb = keras.layers.Embedding(10, 3)(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(emb)))
    with pytest.raises(TypeError, match=r"int32.*token ids"):
        tfm.SmoothGrad(model, num_samples=2, seed=0)(np.ones((2, 4), np.float32), 0)


@pytest.mark.parametrize(
    "target, exc, match",
    [
        (lambda s: tf.reduce_sum(s), ValueError, r"returned shape \(\)"),
        (lambda s: s, ValueError, r"several scores per example \(shape \(2, 3\)"),
        (lambda s: tf.argmax(s, axis=1), ValueError, "dtype int64"),
        (lambda s: np.asarray(s)[:, 0], TypeError, "TensorFlow ops"),
        (lambda s: s[:, 7], TypeError, "failed on the model's scores"),
    ],
)
def test_callable_targets_are_checked(small, target, exc, match):
    x = np.random.default_rng(32).normal(size=(2, 5)).astype(np.float32)
    with pytest.raises(exc, match=match):
        tfm.SmoothGrad(small, num_samples=2, seed=0)(x, target)


def test_callable_target_column_vector_is_accepted(small):
    x = np.random.default_rng(33).normal(size=(2, 5)).astype(np.float32)
    e = tfm.SmoothGrad(small, num_samples=3, seed=0)
    np.testing.assert_allclose(e(x, lambda s: s[:, 1:2]), e(x, 1), rtol=1e-6)


def test_compiled_functions_of_callable_targets_are_bounded(small):
    x = np.random.default_rng(34).normal(size=(2, 5)).astype(np.float32)
    e = tfm.SmoothGrad(small, num_samples=2, seed=0)
    want = e(x, 2)
    same = lambda s: s[:, 2]  # noqa: E731
    for _ in range(3):
        np.testing.assert_allclose(e(x, same), want, rtol=1e-6)
    traces = e.trace_count
    for _ in range(2 * tfm.explainer.MAX_CALLABLES):
        np.testing.assert_allclose(e(x, lambda s: s[:, 2]), want, rtol=1e-6)
    assert e.trace_count == traces + 2 * tfm.explainer.MAX_CALLABLES  # new lambda, new trace
    info = e.runner.cache_info()
    assert info["callables"] == tfm.explainer.MAX_CALLABLES
    assert info["functions"] <= tfm.explainer.MAX_CALLABLES + 1


@pytest.mark.parametrize(
    "baseline, exc, match",
    [
        ("zero", TypeError, "`ig_baseline`"),
        (np.zeros(3), ValueError, r"`ig_baseline` has shape \(3,\)"),
        ([np.nan], ValueError, "`ig_baseline` must be finite"),
    ],
)
def test_ig_baseline_is_checked(small, baseline, exc, match):
    x = np.random.default_rng(35).normal(size=(2, 5)).astype(np.float32)
    with pytest.raises(exc, match=match):
        tfm.SmoothGrad(small, num_samples=2, attribution="integrated_gradients", ig_steps=2,
                       ig_baseline=baseline, seed=0)(x, 0)


def test_hyperbolic_and_sigmoid_kernels_coincide_under_eq30():
    """sech^2(x)/2 is the logistic density at scale 1/2, so eq. 30, which fixes the scale by a
    quantile, gives the same noise (inverse-CDF sampling: the same draws, to rounding) for both;
    with a fixed weight_epsilon they differ by the factor 2 in scale."""
    model = mlp(d_in=6, seed=4)
    x = np.random.default_rng(5).normal(size=(3, 6)).astype(np.float32)
    kw = dict(mode="fg", num_samples=6, num_weight_samples=3, seed=9)
    hyp = tfm.Explainer(model, kernel="hyperbolic", **kw)(x, [0, 1, 2])
    sig = tfm.Explainer(model, kernel="sigmoid", **kw)(x, [0, 1, 2])
    assert not np.allclose(hyp, sig, atol=1e-4)  # weight noise: scales 1/2 vs 1
    sg = dict(mode="sg", num_samples=16, seed=9)
    hyp = tfm.Explainer(model, kernel="hyperbolic", **sg)(x, [0, 1, 2])
    sig = tfm.Explainer(model, kernel="sigmoid", **sg)(x, [0, 1, 2])
    np.testing.assert_allclose(hyp, sig, rtol=1e-4, atol=1e-6)
    doubled = tfm.Explainer(model, kernel="hyperbolic", weight_epsilon=0.4, **kw)(x, [0, 1, 2])
    same = tfm.Explainer(model, kernel="sigmoid", weight_epsilon=0.2, **kw)(x, [0, 1, 2])
    np.testing.assert_allclose(doubled, same, rtol=1e-4, atol=1e-6)


# -- weight noise on chosen layers ----------------------------------------------------------------
def manual_noisegrad(model, view, x, targets, selection, kernel, seed, m, delta):
    """NoiseGrad by hand: the engine's standard weight noise, applied to the chosen variables of
    a re-implemented 2-layer MLP, gradients averaged over the M draws."""
    table = engine.weight_noise_table(
        view, tfm.kernels.get(kernel), tf.constant(sampling.weight_key(seed)), m
    ).numpy()
    trainable = model.trainable_variables
    chosen = range(len(trainable)) if selection is None else selection
    sizes = [int(np.prod(trainable[i].shape)) for i in chosen]
    grads = []
    for j in range(m):
        weights = [v.numpy().astype(np.float64) for v in trainable]
        for i, part in zip(chosen, np.split(table[j], np.cumsum(sizes)[:-1]), strict=True):
            weights[i] = weights[i] * (1 + delta * part.reshape(weights[i].shape))
        w1, b1, w2, b2 = (tf.constant(w) for w in weights)
        xt = tf.constant(x, tf.float64)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            out = tf.tanh(xt @ w1 + b1) @ w2 + b2
            score = tf.gather(out, targets, axis=1, batch_dims=1)
        grads.append(tape.gradient(score, xt).numpy())
    return np.mean(grads, axis=0)


@pytest.mark.parametrize(
    "weight_layers, perturb_bias, selection",
    [
        (None, True, None),
        (["top"], True, (2, 3)),
        ("hidden", False, (0,)),
        (None, False, (0, 2)),
    ],
)
def test_weight_layers_and_perturb_bias_match_a_hand_computation(
    weight_layers, perturb_bias, selection
):
    model = mlp(d_in=4, hidden=6, classes=3, seed=3)
    model.layers[0].name, model.layers[1].name = "hidden", "top"
    x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    targets = np.array([0, 2, 1])
    before = weights_snapshot(model)
    explainer = tfm.Explainer(model, mode="ng", kernel="rect", num_weight_samples=5,
                              weight_epsilon=0.3, seed=4, weight_layers=weight_layers,
                              perturb_bias=perturb_bias)
    assert explainer.view.weight_selection == selection
    got = explainer(x, targets)
    want = manual_noisegrad(model, explainer.view, x, targets, selection, "rect", 4, 5, 0.3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert_unchanged(model, before)


def test_listing_every_layer_is_the_default_stream():
    model = mlp(d_in=4, seed=5)
    x = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
    kw = dict(mode="fg", num_samples=3, num_weight_samples=3, seed=1)
    default = tfm.Explainer(model, **kw)(x, [0, 1])
    listed = tfm.Explainer(model, weight_layers=list(model.layers), **kw)(x, [0, 1])
    np.testing.assert_array_equal(default, listed)


def test_weight_layers_in_a_nested_model_and_untouched_layers():
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.layers.Dense(5, activation="tanh", name="inner_dense")],
                             name="block")
    model = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(2, name="head")])
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    explainer = tfm.Explainer(model, mode="ng", num_weight_samples=4, seed=0,
                              weight_layers=["inner_dense"])
    names = [model.trainable_variables[i].path for i in explainer.view.weight_selection]
    assert names and all("inner_dense" in n for n in names)
    head = tfm.Explainer(model, mode="ng", num_weight_samples=4, seed=0, weight_layers="head")
    assert not np.allclose(head(x, [0, 1]), explainer(x, [0, 1]))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(mode="ng", weight_layers=["nope"]), ValueError, "Layers with trainable weights"),
        (dict(mode="sg", weight_layers=["top"]), ValueError, "mode='sg' perturbs none"),
        (dict(mode="ng", weight_layers=[3]), TypeError, "layer names or layers"),
        (dict(mode="ng", perturb_bias="no"), TypeError, "`perturb_bias`"),
    ],
)
def test_weight_layers_errors(kwargs, exc, match):
    model = mlp(d_in=4, seed=1)
    model.layers[1].name = "top"
    with pytest.raises(exc, match=match):
        tfm.Explainer(model, **kwargs)


def test_only_biases_left_is_an_error():
    keras.utils.set_random_seed(0)
    inp = keras.Input((3,))
    bias_only = keras.layers.Dense(3, name="d")
    model = keras.Model(inp, bias_only(inp))
    bias_only.kernel.trainable = False  # Keras 3: a frozen variable
    with pytest.raises(ValueError, match="No weights are left"):
        tfm.Explainer(model, mode="ng", weight_layers=["d"], perturb_bias=False)


@pytest.mark.parametrize("policy, tol", [("mixed_float16", 0.02), ("mixed_bfloat16", 0.06)])
@pytest.mark.parametrize("mode", ["sg", "ng", "fg"])
def test_mixed_precision_is_finite_and_close_to_float32(policy, tol, mode):
    """Noise and aggregation stay in float32; the model computes in half precision. Measured
    relative error (norm) on this CNN: sg/fg < 0.6 %, ng 1 % (float16) and 3 % (bfloat16) --
    the ReLU pattern flips where pre-activations round across zero."""

    def build(dtype_policy):
        keras.config.set_dtype_policy(dtype_policy)
        try:
            keras.utils.set_random_seed(0)
            return keras.Sequential([
                keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                keras.layers.Flatten(), keras.layers.Dense(3),
                keras.layers.Activation("linear", dtype="float32"),
            ])
        finally:
            keras.config.set_dtype_policy("float32")

    full = build("float32")
    half = build(policy)
    half.set_weights(full.get_weights())
    x = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype(np.float32)
    kw = dict(mode=mode, num_samples=16, num_weight_samples=4, seed=0)
    got, err = tfm.Explainer(half, **kw).explain(x, [0, 1, 2], return_stderr=True)
    want = tfm.Explainer(full, **kw)(x, [0, 1, 2])
    assert got.dtype == np.float32 and np.all(np.isfinite(got)) and np.all(np.isfinite(err))
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < tol

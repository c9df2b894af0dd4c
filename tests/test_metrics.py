"""tfmollify.evaluation.metrics: hand-worked answers first, then SciPy and Quantus on the same
arrays.

Quantus (>= 0.6) is cross-checked where it works on arrays alone: ``Sparseness``,
``TopKIntersection`` / ``PointingGame`` and the Spearman similarity ``correlation_spearman`` that
its ``MPRT`` and our ``consistency``/``invariance`` apply to the explanation pairs. Quantus' own
model side cannot serve as a reference with Keras 3 (checked with Quantus 0.6.0, Keras 3.15):
``TensorFlowModel.add_mean_shift_to_first_layer`` fails (a cloned Sequential has no ``.input``;
a functional model's ``layers[0]`` is its InputLayer), and ``get_random_layer_generator`` permutes
the weights of a ``clone_model`` copy that was never given the trained weights, so even its first
"top layer only" step has every layer re-initialised. The model side is checked against exact
oracles here instead (original weights bitwise untouched, shifted outputs equal, ``b - W c``).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from crosscheck import require

from tfmollify.evaluation import metrics

QUANTUS = "scripts/test installs it: Quantus's import needs, then quantus --no-deps"


def _quantus():
    return require("quantus", QUANTUS)


def _gradient(model, x, targets):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = tf.gather(model(x, training=False), targets, axis=1, batch_dims=1)
    return tape.gradient(score, x).numpy()


def _input_x_gradient(model, x, targets):
    return x * _gradient(model, x, targets)


def _mlp(seed=0, first_activation="relu"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((12,)),
        keras.layers.Dense(16, activation=first_activation),
        keras.layers.Dense(8, activation="tanh"),
        keras.layers.Dense(3),
    ])


def _cnn(seed=0, padding="valid"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 2)),
        keras.layers.Conv2D(4, 3, padding=padding, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])


# ----------------------------------------------------------------------------- rank correlation


def test_rank_correlation_hand_worked_with_ties():
    # a = [1, 2, 2, 3] -> ranks [1, 2.5, 2.5, 4]; b = [10, 30, 20, 40] -> ranks [1, 3, 2, 4]
    # centred: [-1.5, 0, 0, 1.5] and [-1.5, 0.5, -0.5, 1.5]; dot = 4.5,
    # norms^2 = 4.5 and 5 -> rho = 4.5 / sqrt(22.5) = sqrt(0.9)
    got = metrics.rank_correlation([[1.0, 2.0, 2.0, 3.0]], [[10.0, 30.0, 20.0, 40.0]])
    assert got[0] == pytest.approx(np.sqrt(0.9), abs=1e-15)
    # absolute: |[-3, 1, 2]| = [3, 1, 2] ranks [3, 1, 2] vs [1, 2, 3]: d = [2, -1, -1],
    # rho = 1 - 6 * 6 / (3 * 8) = -0.5
    got = metrics.rank_correlation([[-3.0, 1.0, 2.0]], [[1.0, 2.0, 3.0]], absolute=True)
    assert got[0] == pytest.approx(-0.5)
    assert np.isnan(metrics.rank_correlation([[1.0, 1.0, 1.0]], [[1.0, 2.0, 3.0]])[0])


def test_rank_correlation_matches_scipy_and_quantus(rng):
    scipy_stats = pytest.importorskip("scipy.stats")
    a = rng.normal(size=(5, 4, 4, 2))
    b = a + rng.normal(scale=1.0, size=a.shape)
    b[0] = np.round(b[0])  # ties
    got = metrics.rank_correlation(a, b)
    want = [scipy_stats.spearmanr(u.ravel(), v.ravel())[0] for u, v in zip(a, b, strict=True)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    quantus = _quantus()
    spearman = quantus.similarity_func.correlation_spearman
    q = spearman(a.reshape(5, -1), b.reshape(5, -1), batched=True)
    np.testing.assert_allclose(got, q, rtol=1e-12)
    q_abs = spearman(np.abs(a).reshape(5, -1), np.abs(b).reshape(5, -1), batched=True)
    np.testing.assert_allclose(metrics.rank_correlation(a, b, absolute=True), q_abs, rtol=1e-12)


def test_rank_correlation_errors():
    with pytest.raises(ValueError, match="same shape"):
        metrics.rank_correlation(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="batch axis"):
        metrics.rank_correlation(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="`b` contains NaN"):
        metrics.rank_correlation(np.zeros((1, 3)), np.array([[0.0, np.inf, 1.0]]))
    with pytest.raises(TypeError, match="`a` must be a numeric array"):
        metrics.rank_correlation([["x", "y"]], np.zeros((1, 2)))


# ----------------------------------------------------------------------------- sparseness


def test_sparseness_matches_quantus(rng):
    quantus = _quantus()
    a = rng.normal(size=(6, 1, 10, 10))
    metric = quantus.Sparseness(abs=True, normalise=False, disable_warnings=True)
    q = metric(model=None, x_batch=a.astype(np.float32), y_batch=np.zeros(6, int), a_batch=a,
               channel_first=True)
    # Quantus adds 1e-7 to every |a| before the Gini index: a relative change of about 1e-7.
    np.testing.assert_allclose(metrics.sparseness(a), q, rtol=1e-5)


# ----------------------------------------------------------------------------- pointing game


def test_masks_from_boxes_hand_worked_and_errors():
    m = metrics.masks_from_boxes(np.array([[0, 1, 2, 3], [2, 0, 3, 1]]), (3, 4))
    want0 = np.array([[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], bool)
    want1 = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]], bool)
    np.testing.assert_array_equal(m, np.stack([want0, want1]))
    assert m.dtype == bool
    with pytest.raises(ValueError, match=r"box 0 = \[0, 0, 4, 1\]"):
        metrics.masks_from_boxes([[0, 0, 4, 1]], (3, 4))  # leaves the image
    with pytest.raises(ValueError, match="box 1"):
        metrics.masks_from_boxes([[0, 0, 1, 1], [1, 1, 1, 2]], (3, 4))  # empty
    with pytest.raises(ValueError, match=r"\[B, 4\] integers"):
        metrics.masks_from_boxes([[0.5, 0, 1, 1]], (3, 4))
    with pytest.raises(ValueError, match="shape"):
        metrics.masks_from_boxes([[0, 0, 1, 1]], (3,))


def test_pointing_game_hand_worked():
    a = np.array([[[0.9, -5.0, 0.1],
                   [0.8, 0.7, 0.0]]])
    inside = np.array([[[True, False, False],
                        [True, True, False]]])
    # |a| order: -5 (out), 0.9, 0.8, 0.7 (in), 0.1, 0.0 (out)
    assert metrics.pointing_game(a, inside, k=1)[0] == 0.0
    assert metrics.pointing_game(a, inside, k=2)[0] == 0.5
    assert metrics.pointing_game(a, inside, k=4)[0] == 0.75
    assert metrics.pointing_game(a, inside, k=5)[0] == pytest.approx(0.6)
    # signed: 0.9, 0.8, 0.7 in, then 0.1 out
    assert metrics.pointing_game(a, inside, k=3, absolute=False)[0] == 1.0
    assert metrics.pointing_game(a, inside, k=4, absolute=False)[0] == 0.75
    # ties go to the lower flat index: all equal, the first k positions are [0, 1]
    assert metrics.pointing_game(np.ones((1, 2, 3)), inside, k=2)[0] == 0.5


def test_pointing_game_channel_rule():
    # channels: sum |a_c| = [3, 1, 2, 0] (+ abs) and sum a_c = [-1, 1, 2, 0] (signed)
    a = np.array([[[[1.0, -2.0], [0.5, 0.5], [2.0, 0.0], [0.0, 0.0]]]])   # [1, 1, 4, 2]
    inside = np.array([[[True, False, False, False]]])
    assert metrics.pointing_game(a, inside, k=1)[0] == 1.0
    assert metrics.pointing_game(a, inside, k=1, absolute=False)[0] == 0.0


def test_pointing_game_matches_quantus(rng):
    quantus = _quantus()
    a = rng.normal(size=(8, 1, 12, 12))  # continuous: no ties, so the sort order is unique
    boxes = np.stack([rng.integers(0, 6, 8), rng.integers(0, 6, 8),
                      rng.integers(7, 13, 8), rng.integers(7, 13, 8)], axis=1)
    masks = metrics.masks_from_boxes(boxes, (12, 12))
    x = np.zeros((8, 1, 12, 12), np.float32)
    y = np.zeros(8, int)
    for k in (1, 5, 20):
        metric = quantus.TopKIntersection(k=k, abs=True, normalise=False, disable_warnings=True)
        q = metric(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=masks[:, None],
                   channel_first=True)
        np.testing.assert_allclose(metrics.pointing_game(a[:, 0], masks, k=k), q, rtol=1e-15)
    # k = 1 is the classic pointing game (is the maximum inside the region?)
    metric = quantus.PointingGame(abs=True, normalise=False, disable_warnings=True)
    q = metric(model=None, x_batch=x, y_batch=y, a_batch=a, s_batch=masks[:, None],
               channel_first=True)
    np.testing.assert_array_equal(metrics.pointing_game(a[:, 0], masks, k=1), np.asarray(q, float))


def test_pointing_game_errors():
    a = np.ones((2, 3, 3))
    m = np.ones((2, 3, 3), bool)
    with pytest.raises(ValueError, match=r"Argument `k` must be in \[1, 9\].*k=10"):
        metrics.pointing_game(a, m, k=10)
    with pytest.raises(TypeError, match="`k` must be an int"):
        metrics.pointing_game(a, m, k=2.0)
    with pytest.raises(ValueError, match="same shape"):
        metrics.pointing_game(a, np.ones((2, 4, 4), bool))
    m[1] = False
    with pytest.raises(ValueError, match="mask of example 1 is empty"):
        metrics.pointing_game(a, m)


# ----------------------------------------------------------------------------- consistency


def test_randomize_model_leaves_the_model_alone_and_is_seeded():
    model = _mlp()
    before = [w.copy() for w in model.get_weights()]
    r1 = metrics.randomize_model(model, seed=3)
    r2 = metrics.randomize_model(model, seed=3)
    r3 = metrics.randomize_model(model, seed=4)
    for w, b in zip(model.get_weights(), before, strict=True):
        assert w.tobytes() == b.tobytes()  # bitwise unchanged
    for u, v in zip(r1.get_weights(), r2.get_weights(), strict=True):
        np.testing.assert_array_equal(u, v)
    kernels = [(u, v, w) for u, v, w in zip(model.get_weights(), r1.get_weights(),
                                            r3.get_weights(), strict=True) if u.ndim == 2]
    for trained, rand, other in kernels:
        assert not np.allclose(trained, rand) and not np.allclose(rand, other)
    # fresh Glorot-uniform kernels: within the limit sqrt(6 / (fan_in + fan_out))
    first = r1.get_weights()[0]
    assert np.abs(first).max() <= np.sqrt(6 / (12 + 16))
    # cascading from the top: num_layers=1 changes only the last Dense
    top = metrics.randomize_model(model, seed=3, num_layers=1)
    same = [np.array_equal(u, v) for u, v in zip(model.get_weights(), top.get_weights(),
                                                 strict=True)]
    assert same == [True, True, True, True, False, True]  # last bias re-initialised to zeros
    assert not np.any(top.get_weights()[5])


def test_randomize_model_errors():
    model = _mlp()
    with pytest.raises(ValueError, match=r"`num_layers` must be an int in \[1, 3\]"):
        metrics.randomize_model(model, num_layers=4)
    with pytest.raises(TypeError, match=r"keras\.Model"):
        metrics.randomize_model(lambda x: x)


def test_consistency_is_the_rank_correlation_of_the_two_explanations(rng):
    model = _mlp()
    before = [w.copy() for w in model.get_weights()]
    x = rng.normal(size=(6, 12)).astype(np.float32)
    t = np.array([0, 1, 2, 0, 1, 2])
    got = metrics.consistency(_gradient, model, x, t, seed=5)
    a0 = _gradient(model, x, t)
    a1 = _gradient(metrics.randomize_model(model, seed=5), x, t)
    np.testing.assert_allclose(got, metrics.rank_correlation(a0, a1, absolute=True), rtol=1e-15)
    quantus = require("quantus", QUANTUS)
    q = quantus.similarity_func.correlation_spearman(np.abs(a0), np.abs(a1), batched=True)
    np.testing.assert_allclose(got, q, rtol=1e-12)
    signed = metrics.consistency(_gradient, model, x, t, seed=5, absolute=False)
    np.testing.assert_allclose(signed, metrics.rank_correlation(a0, a1), rtol=1e-15)
    for w, b in zip(model.get_weights(), before, strict=True):
        assert w.tobytes() == b.tobytes()
    # an "explanation" that ignores the model cannot pass the test: correlation exactly 1
    np.testing.assert_array_equal(
        metrics.consistency(lambda m, x, t: x, model, x, t), np.ones(6))


def test_consistency_errors(rng):
    model = _mlp()
    x = rng.normal(size=(2, 12)).astype(np.float32)
    with pytest.raises(TypeError, match="`explain_fn` must be a callable"):
        metrics.consistency("gradient", model, x, [0, 1])
    with pytest.raises(ValueError, match="`inputs` must be a float array"):
        metrics.consistency(_gradient, model, np.ones(12), [0, 1])
    with pytest.raises(ValueError, match="one attribution map per example"):
        metrics.consistency(lambda m, x, t: x[:1], model, x, [0, 1])


# ----------------------------------------------------------------------------- invariance


@pytest.mark.parametrize(
    "make, shift",
    [(_mlp, -1.0), (_mlp, 2.5), (_cnn, -1.0), (_cnn, np.array([0.5, -2.0]))],
    ids=["mlp-1", "mlp+2.5", "cnn-1", "cnn-per-channel"],
)
def test_shift_model_is_exact(make, shift, rng):
    model = make()
    before = [w.copy() for w in model.get_weights()]
    shifted = metrics.shift_model(model, shift)
    x = rng.uniform(size=(5, *model.inputs[0].shape[1:])).astype(np.float32)
    xs = (x + shift).astype(np.float32)
    np.testing.assert_allclose(shifted(xs), model(x), rtol=1e-5, atol=1e-5)
    assert not np.allclose(model(xs), model(x), atol=1e-3)  # the shift does matter
    # only the first bias differs, by exactly - W c
    w0, b0 = model.get_weights()[:2]
    c = np.broadcast_to(shift, model.inputs[0].shape[1:])
    wc = np.tensordot(c, w0, axes=c.ndim) if w0.ndim == 2 else np.einsum("ijc,ijco->o",
                                                                        c[:3, :3], w0)
    np.testing.assert_allclose(shifted.get_weights()[1], b0 - wc, rtol=1e-5, atol=1e-5)
    for u, v in zip(model.get_weights()[2:], shifted.get_weights()[2:], strict=True):
        np.testing.assert_array_equal(u, v)
    for w, b in zip(model.get_weights(), before, strict=True):
        assert w.tobytes() == b.tobytes()


def test_shift_model_refuses_what_a_bias_cannot_absorb():
    with pytest.raises(ValueError, match="padding='valid'"):
        metrics.shift_model(_cnn(padding="same"), -1.0)
    keras.utils.set_random_seed(0)
    no_bias = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, use_bias=False)])
    with pytest.raises(ValueError, match="use_bias=True"):
        metrics.shift_model(no_bias, 1.0)
    scaled = keras.Sequential([keras.Input((4,)), keras.layers.Rescaling(2.0),
                               keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="'rescaling'"):
        metrics.shift_model(scaled, 1.0)
    with pytest.raises(ValueError, match="`shift` must be a float or broadcast"):
        metrics.shift_model(_mlp(), np.ones(5))
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="relu")(inputs)
    skip = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Concatenate()([hidden, inputs])))
    with pytest.raises(ValueError, match="no branches or skip connections"):
        metrics.shift_model(skip, 0.5)


def test_shift_and_randomize_a_functional_model(rng):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(5, "relu")(inputs)))
    x = rng.uniform(size=(3, 6)).astype(np.float32)
    np.testing.assert_allclose(metrics.shift_model(model, 0.7)(x + 0.7), model(x), atol=1e-5)
    same = [np.array_equal(u, v) for u, v in zip(model.get_weights(),
                                                 metrics.randomize_model(model).get_weights(),
                                                 strict=True)]
    assert same == [False, True, False, True]  # new kernels; the zero biases stay zero


def test_invariance_of_the_gradient_is_one_and_of_input_x_gradient_is_not(rng):
    model = _mlp()
    x = rng.uniform(size=(6, 12)).astype(np.float32)
    t = np.array([0, 1, 2, 0, 1, 2])
    got = metrics.invariance(_gradient, model, x, t, shift=-1.0)
    np.testing.assert_allclose(got, 1.0, atol=1e-6)
    ixg = metrics.invariance(_input_x_gradient, model, x, t, shift=-1.0)
    assert np.all(ixg < 0.9)
    a0 = _input_x_gradient(model, x, t)
    a1 = _input_x_gradient(metrics.shift_model(model, -1.0), x - 1.0, t)
    np.testing.assert_allclose(ixg, metrics.rank_correlation(a0, a1), rtol=1e-15)
    quantus = require("quantus", QUANTUS)
    q = quantus.similarity_func.correlation_spearman(a0, a1, batched=True)
    np.testing.assert_allclose(ixg, q, rtol=1e-12)


def test_invariance_of_smoothgrad_and_noisegrad():
    # SmoothGrad with a fixed seed sees the same noise around x and around x + c, and the eq. 30
    # scale (r = max(x) - mean(x)) does not change with a shift: invariant. NoiseGrad multiplies
    # the first bias and W (x + c) by different noise, so the compensation no longer holds.
    import tfmollify as tfm

    model = _cnn()
    x = np.random.default_rng(7).uniform(size=(4, 8, 8, 2)).astype(np.float32)
    t = np.array([0, 1, 2, 0])

    def explain(mode):
        return lambda m, x, t: tfm.Explainer(m, mode=mode, kernel="rect", num_samples=8,
                                             num_weight_samples=8, seed=0)(x, t)

    np.testing.assert_allclose(metrics.invariance(explain("sg"), model, x, t), 1.0, atol=1e-6)
    assert np.all(metrics.invariance(explain("ng"), model, x, t) < 1 - 1e-4)  # SG: 1 +- 1e-6

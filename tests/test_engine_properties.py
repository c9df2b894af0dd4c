"""Property tests (Hypothesis) over the engine's settings, with tiny models built once.

Every property pins a guarantee of README.md ("Guarantees") for settings drawn at random: mode,
kernel, sampler (with valid draw counts and replicates), aggregation, base attribution, N, M,
batch size (None, "auto", or at least what the settings need), batch and seeds, drawn by
:func:`tfmollify.testing.strategies.explainer_settings` (tested by use here). Only the public API
is used. The conftest's "tfmollify" profile (derandomized, no deadline) applies; each test keeps
a small ``max_examples``.
"""

from __future__ import annotations

import tempfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from recording import PassLog, RecordRows

import tfmollify as tfm
from tfmollify.testing.strategies import explainer_settings

# 15 examples per property in CI (profile "tfmollify", 40 examples); 10x with "thorough",
# 3 with "quick" (./scripts/test --quick)
SCALE = settings().max_examples / 40


def examples(n: int) -> int:
    """``n`` examples under the CI profile, scaled with the loaded profile (at least 1)."""
    return max(1, round(n * SCALE))

# Poisson (Cauchy) weight noise warns that NG/FG do not converge; the properties still hold
pytestmark = pytest.mark.filterwarnings("ignore:kernel='poisson' has no mean:UserWarning")


# -- models, built once ---------------------------------------------------------------------------
def tanh_model() -> keras.Model:
    keras.utils.set_random_seed(3)
    inp = keras.Input((3,))
    h = keras.layers.Dense(3, activation="tanh", name="hidden")(inp)
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(h))
    rng = np.random.default_rng(3)
    for layer in model.layers[1:]:
        w, b = layer.get_weights()
        layer.set_weights([0.8 * w, rng.normal(scale=0.3, size=b.shape).astype("float32")])
    return model


W_LIN = np.array([[0.5, -1.25], [2.0, 0.75], [-0.3, 1.5]], np.float32)


def linear_model() -> keras.Model:
    """``x @ W_LIN + b``: its input gradient is ``W_LIN[:, t]`` whatever the input noise."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="lin")])
    model.layers[0].set_weights([W_LIN, np.array([0.1, -0.2], np.float32)])
    return model


ROWS = PassLog()


def recording_model() -> keras.Model:
    keras.utils.set_random_seed(5)
    inp = keras.Input((3,))
    h = keras.layers.Dense(3, activation="tanh", name="hidden")(inp)
    h = RecordRows(ROWS, name="record")(h)
    return keras.Model(inp, keras.layers.Dense(2, name="out")(h))


TANH = tanh_model()
LINEAR = linear_model()
RECORDING = recording_model()
X = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")


# -- strategies -----------------------------------------------------------------------------------
#: The built-in kernels (not every registered one: other tests of a worker register their own,
#: and the derandomized draws should not depend on which tests ran before)
KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect")


def configs(batched=None, **choices):
    """Valid explainer settings and a batch size ``(kwargs, B)``, the settings from
    :func:`tfmollify.testing.strategies.explainer_settings` (mode, kernel, sampler with valid
    counts and replicates, aggregation, attribution, epsilon, weight_epsilon, seed, batch size:
    ``batched`` True always sets one, False never, None either). ``choices`` narrow its modes,
    samplers, aggregations or attributions."""
    settings_ = explainer_settings(kernels=KERNELS, max_num_samples=8, max_num_weight_samples=6,
                                   batched=batched, **choices)
    return st.tuples(settings_, st.integers(1, 4))


def explainer(model, kw, **over):
    return tfm.Explainer(model, **{**kw, **over})


def close(got, want, rtol=2e-5):
    """Equal up to float32 rounding (sums grouped differently), relative to the answer's size."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    finite = np.abs(want[np.isfinite(want)])  # (a stderr of one unit is NaN, on both sides)
    scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def targets_for(b: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=b).astype(np.int32)


# -- properties -----------------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=examples(15))
@given(config=configs(batched=True))
def test_result_does_not_depend_on_batch_size(config):
    """Guarantee (Reproducible): "with a seed the noise is bit-identical for any `batch_size` and
    chunking and the result agrees to floating-point rounding" -- batch_size=None against a
    random valid batch_size, values and standard errors."""
    kw, b = config
    x, t = X[:b], targets_for(b, kw["seed"])
    whole, whole_se = explainer(TANH, kw, batch_size=None).explain(x, t, return_stderr=True)
    part, part_se = explainer(TANH, kw).explain(x, t, return_stderr=True)
    close(part, whole)
    close(part_se, whole_se)


@pytest.mark.slow
@settings(max_examples=examples(15))
@given(config=configs(), data=st.data())
def test_an_example_alone_equals_the_example_inside_a_batch(config, data):
    """Guarantee (Reproducible/Serving): "an example's noise depends only on its seed, so an
    example alone gets the same result as inside any batch" -- with explicit `seeds`, and the
    weight draws of NG/FG shared by every call of the explainer."""
    kw, b = config
    b = max(b, 2)
    i = data.draw(st.integers(0, b - 1), label="index")
    seeds = np.array(data.draw(st.lists(st.integers(0, 2**62), min_size=b, max_size=b,
                                        unique=True), label="seeds"), np.int64)
    x, t = X[:b], targets_for(b, kw["seed"])
    e = explainer(TANH, kw)
    batch, batch_se = e.explain(x, t, seeds=seeds, return_stderr=True)
    alone, alone_se = e.explain(x[i : i + 1], t[i : i + 1], seeds=seeds[i : i + 1],
                                return_stderr=True)
    close(alone, batch[i : i + 1])
    close(alone_se, batch_se[i : i + 1])


@settings(max_examples=examples(15))
@given(config=configs(modes=("sg",), attributions=("gradient",)))
def test_smoothgrad_of_a_linear_model_is_exact(config):
    """Guarantee (Correct): on ``x @ W + b`` every noisy gradient is ``W[:, t]``, so SmoothGrad
    is exact for any kernel, sampler, N, epsilon and batch size: mean ``W[:, t]``, mean of
    squares ``W[:, t]**2``, variance 0, and a standard error of 0 (all samples identical)."""
    kw, b = config
    x, t = X[:b], targets_for(b, kw["seed"])
    got, se = explainer(LINEAR, kw).explain(x, t, return_stderr=True)
    row = W_LIN[:, t].T
    want = {"smoothgrad": row, "smoothgrad_sq": row**2, "vargrad": 0 * row}[kw["aggregation"]]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    n = kw["num_samples"]
    units = {"iid": n, "antithetic": n // 2}.get(kw["sampler"], kw.get("replicates", 1))
    if units >= 2:  # (one unit, e.g. N = 1, has no standard error)
        assert np.all(np.abs(se) <= 1e-6), se


@pytest.mark.slow
@settings(max_examples=examples(15))
@given(config=configs(batched=True))
def test_batch_size_bounds_every_pass(config):
    """Guarantee (Bounded): "With `batch_size` set, at most `batch_size` evaluations are in
    flight" -- no pass of the compiled function has more rows than `batch_size` (an
    integrated-gradients sample costs `ig_steps` rows), and the passes cover all the work."""
    kw, b = config
    x, t = X[:b], targets_for(b, kw["seed"])
    e = explainer(RECORDING, kw)
    e.explain(x, t)  # compiles and probes the model eagerly
    ROWS.reset()
    e.explain(x, t)
    rows = list(ROWS.rows)
    per = kw.get("ig_steps", 1) if kw["attribution"] == "integrated_gradients" else 1
    n, m = kw["num_samples"], kw["num_weight_samples"]
    work = b * per * {"sg": n, "ng": m, "fg": n * m}[kw["mode"]]
    assert rows and max(rows) <= kw["batch_size"], (rows, kw["batch_size"])
    assert sum(rows) >= work, (rows, work)


@settings(max_examples=examples(15))
@given(config=configs(samplers=("iid",), aggregations=("smoothgrad", "smoothgrad_sq"),
                      attributions=("gradient", "integrated_gradients")))
def test_stderr_is_positive_when_the_samples_differ(config):
    """Guarantee (Correct: honest standard errors): on a smooth, non-saturated tanh model, with
    at least two independent draws of the noise, every element's standard error is positive
    (the samples differ); it is zero only when they are identical (the linear-model property)."""
    kw, b = config
    draws = {"sg": kw["num_samples"], "ng": kw["num_weight_samples"]}.get(
        kw["mode"], kw["num_samples"] * kw["num_weight_samples"])
    if kw["mode"] == "fg" and kw["num_weight_samples"] < 2:
        kw = {**kw, "num_weight_samples": 2}  # FG's errors run over weight draws
    elif draws < 2:
        kw = {**kw, "num_samples": 2, "num_weight_samples": 2}
    x, t = X[:b], targets_for(b, kw["seed"])
    _, se = explainer(TANH, kw).explain(x, t, return_stderr=True)
    assert np.all(np.isfinite(se)) and np.all(se > 0), se


@pytest.mark.slow
@settings(max_examples=examples(3))
@given(config=configs(attributions=("gradient", "integrated_gradients")), data=st.data())
def test_export_equals_the_explainer(config, data):
    """Guarantee (Serving): the `serving_default` answer "equals `explainer.explain(inputs,
    targets, seeds=seeds, return_stderr=True)` in Python", attributions, standard errors and
    finite-sample counts."""
    kw, b = config
    seeds = np.array(data.draw(st.lists(st.integers(0, 2**62), min_size=b, max_size=b),
                               label="seeds"), np.int64)
    x, t = X[:b], targets_for(b, kw["seed"])
    e = explainer(TANH, kw)
    want, want_se = e.explain(x, t, seeds=seeds, return_stderr=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = tfm.export(e, tmp, overwrite=True)
        served = tf.saved_model.load(path).signatures["serving_default"]
        got = served(inputs=tf.constant(x), targets=tf.constant(t),
                     seeds=tf.constant(seeds, tf.int64))
    close(got["attributions"].numpy(), want)
    close(got["stderr"].numpy(), want_se)
    total = {"sg": kw["num_samples"], "ng": kw["num_weight_samples"]}.get(
        kw["mode"], kw["num_samples"] * kw["num_weight_samples"])
    np.testing.assert_array_equal(got["finite_samples"].numpy(), np.full(b, total))
    np.testing.assert_array_equal(e.last_nonfinite_count, np.zeros(b))

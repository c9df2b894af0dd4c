"""Tests that fail when a guarantee of README.md ("Guarantees") breaks.

Every test says in its docstring which guarantee it pins, and each one carries a sanity check that
its oracle tells the guaranteed behaviour from the broken one (e.g. the answer in training mode
differs from the answer in inference mode), so that none of them can pass vacuously. Only the
public API is used: ``tfm.Explainer`` and friends, ``explain``/``__call__``, ``tfm.export``,
``tfm.explain_dataset``, ``tfm.kernels``, ``last_num_samples`` and ``last_nonfinite_count``.
"""

from __future__ import annotations

import contextlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from recording import PassLog, RecordRows

import tfmollify as tfm
from tests import user_kernels

KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect")
MODES = ("sg", "ng", "fg")
SAMPLERS = ("iid", "antithetic", "sobol")
ATTRIBUTIONS = ("gradient", "input_x_gradient", "integrated_gradients")


def input_gradient(model, x: np.ndarray, targets, training: bool = False) -> np.ndarray:
    """Rows of d model(x)[b, t_b] / d x_b by tf.GradientTape (the hand computation)."""
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = model(xt, training=training)
        score = tf.reduce_sum(tf.gather(out, targets, axis=1, batch_dims=1))
    return tape.gradient(score, xt).numpy()


def assert_close(got, want, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=atol)


# -- 1. inference mode ----------------------------------------------------------------------------
class FixedAffine(keras.layers.Layer):
    """``(h - mean) / sqrt(var + eps) * gamma + beta`` with constants: what a BatchNormalization
    layer computes in inference mode, without any variables."""

    def __init__(self, mean, var, gamma, beta, eps, **kwargs):
        super().__init__(**kwargs)
        scale = gamma / np.sqrt(var + eps)
        self.scale = scale.astype("float32")
        self.shift = (beta - mean * scale).astype("float32")

    def call(self, h):
        return h * self.scale + self.shift

    def compute_output_shape(self, shape):
        return shape


def inference_models():
    """``d1 -> bn -> Dropout(0.9) -> d2`` (no nonlinearity: affine in ``x`` in inference mode),
    the same without the Dropout, and the same with the BN replaced by its fixed affine map."""
    rng = np.random.default_rng(7)
    w1 = rng.normal(size=(3, 4)).astype("float32")
    b1 = rng.normal(size=4).astype("float32")
    w2 = rng.normal(size=(4, 2)).astype("float32")
    b2 = rng.normal(size=2).astype("float32")
    gamma = rng.uniform(0.5, 2.0, size=4).astype("float32")
    beta = rng.normal(size=4).astype("float32")
    mean = (5.0 + rng.normal(size=4)).astype("float32")  # far from the batch statistics
    var = rng.uniform(9.0, 20.0, size=4).astype("float32")

    def build(dropout: bool, bn: bool) -> keras.Model:
        inp = keras.Input((3,))
        d1 = keras.layers.Dense(4, name="d1")
        h = d1(inp)
        if bn:
            norm = keras.layers.BatchNormalization(name="bn")
            h = norm(h)
            norm.gamma.assign(gamma)
            norm.beta.assign(beta)
            norm.moving_mean.assign(mean)
            norm.moving_variance.assign(var)
            eps = norm.epsilon
        else:
            h = FixedAffine(mean, var, gamma, beta, 1e-3, name="fixed_bn")(h)
        if dropout:
            h = keras.layers.Dropout(0.9, name="drop")(h)
        d2 = keras.layers.Dense(2, name="d2")
        model = keras.Model(inp, d2(h))
        d1.set_weights([w1, b1])
        d2.set_weights([w2, b2])
        if bn:
            assert eps == 1e-3
        return model

    return build(True, True), build(False, True), build(False, False)


@pytest.mark.slow
def test_layers_run_in_inference_mode_for_sg_ng_and_fg():
    """Guarantee (Safe): "Layers run in inference mode" -- Dropout is the identity and
    BatchNormalization uses its moving statistics, for SmoothGrad, NoiseGrad and FusionGrad."""
    full, no_dropout, fixed = inference_models()
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    t = np.array([0, 1, 1, 0])
    exact = input_gradient(full, x, t, training=False)
    # the oracles are what they claim: the fixed affine model is `full` in inference mode ...
    assert_close(fixed(x), full(x, training=False), atol=1e-5)
    assert_close(input_gradient(fixed, x, t), exact)
    # ... and training mode (dropout masks, batch statistics) gives a clearly different answer
    train = input_gradient(keras.models.clone_model(full), x, t, training=True)
    assert np.abs(train - exact).max() > 0.3 * np.abs(exact).max()

    # SG: in inference mode the model is affine in x, so every noisy gradient is the exact one
    for kernel in ("gaussian", "rect"):
        sg = tfm.SmoothGrad(full, kernel=kernel, num_samples=8, epsilon=0.7, seed=1)
        assert_close(sg(x, t), exact)
    # NG/FG with noise on d2 only: the gradient is affine in that noise, antithetic pairs cancel
    # it exactly, so the answer is again the exact inference-mode Jacobian row
    for mode in ("ng", "fg"):
        e = tfm.Explainer(full, mode=mode, num_samples=4, num_weight_samples=4, epsilon=0.5,
                          weight_layers=["d2"], sampler="antithetic", seed=2)
        assert_close(e(x, t), exact)
    # NG/FG with noise on every weight (BN's gamma and beta too): same variables in the same
    # order as the model without Dropout, so the same weight noise and the same answer
    for mode in ("ng", "fg"):
        kw = dict(mode=mode, num_samples=3, num_weight_samples=3, epsilon=0.5, seed=3)
        got, se = tfm.Explainer(full, **kw).explain(x, t, return_stderr=True)
        want, want_se = tfm.Explainer(no_dropout, **kw).explain(x, t, return_stderr=True)
        assert_close(got, want)
        assert_close(se, want_se)
        assert np.abs(got - exact).max() > 1e-3  # the weight noise did something
        # BN with its moving statistics: as the fixed affine map (noise on d1, d2 only)
        kw["weight_layers"] = ["d1", "d2"]
        got = tfm.Explainer(full, **kw)(x, t)
        assert_close(got, tfm.Explainer(fixed, **kw)(x, t))
    # the comparison detects a forward pass in training mode (on a copy: it updates BN stats)
    trained = keras.models.clone_model(full)
    trained.set_weights(full.get_weights())
    wrong = tfm.SmoothGrad(lambda v: trained(v, training=True), num_samples=8, epsilon=0.7,
                           seed=1)(x, t)
    assert np.abs(wrong - exact).max() > 0.3 * np.abs(exact).max()


# -- 2. evaluations in flight ---------------------------------------------------------------------
PASSES = PassLog()


def recording_model() -> keras.Model:
    """``Dense(4, tanh) -> record -> Dense(2)``: the recorder sees the weight-perturbed hidden
    layer, so no two passes feed it the same tensor."""
    keras.utils.set_random_seed(11)
    inp = keras.Input((3,))
    h = keras.layers.Dense(4, activation="tanh", name="d1")(inp)
    h = RecordRows(PASSES, name="record")(h)
    return keras.Model(inp, keras.layers.Dense(2, name="d2")(h))


REC_MODEL = recording_model()

# (B, N, M, batch_size, sobol replicates as "small" (2 points per set) or "large")
GRAD_SIZES = [(3, 8, 4, 6, "small"), (2, 6, 6, 8, "large"), (4, 4, 8, 5, "small")]
IG_SIZES = [(2, 4, 4, 7, "large"), (3, 2, 6, 9, "small"), (2, 6, 2, 6, "small")]
IG_STEPS = 3


def flight_configs():
    out = []
    i = 0
    for mode in MODES:
        for sampler in SAMPLERS:
            for attribution in ATTRIBUTIONS:
                table = IG_SIZES if attribution == "integrated_gradients" else GRAD_SIZES
                b, n, m, bs, reps = table[i % len(table)]
                i += 1
                out.append((mode, sampler, attribution, b, n, m, bs, reps))
    return out


FLIGHT = flight_configs()


def flight_explainer(mode, sampler, attribution, n, m, bs, reps, **kw):
    count = n if mode == "sg" else m
    replicates = None
    if sampler == "sobol":
        replicates = count // 2 if reps == "small" else 2
    return tfm.Explainer(REC_MODEL, mode=mode, sampler=sampler, attribution=attribution,
                         num_samples=n, num_weight_samples=m, batch_size=bs, ig_steps=IG_STEPS,
                         replicates=replicates, epsilon=0.4, seed=5, **kw)


def run_recorded(explainer, b, sleep=0.0):
    x = np.random.default_rng(b).normal(size=(b, 3)).astype("float32")
    targets = np.arange(b) % 2
    explainer(x, targets)  # compiles, and probes the model eagerly (not a pass of the plan)
    PASSES.reset(sleep)
    explainer(x, targets)
    rows, peak = list(PASSES.rows), PASSES.peak
    PASSES.reset(0.0)
    return rows, peak


def evaluations(mode, attribution, b, n, m):
    per = IG_STEPS if attribution == "integrated_gradients" else 1
    return b * {"sg": n, "ng": m, "fg": n * m}[mode] * per


@pytest.mark.parametrize(("mode", "sampler", "attribution", "b", "n", "m", "bs", "reps"), FLIGHT,
                         ids=[f"{c[0]}-{c[1]}-{c[2]}-B{c[3]}N{c[4]}M{c[5]}bs{c[6]}"
                              for c in FLIGHT])
def test_batch_size_bounds_the_rows_of_every_pass(mode, sampler, attribution, b, n, m, bs, reps):
    """Guarantee (Bounded): "With `batch_size` set, at most `batch_size` evaluations are in
    flight" -- every model pass has at most `batch_size` rows (an integrated-gradients sample is
    `ig_steps` rows), for every mode, sampler and base attribution, and N * B > batch_size."""
    assert evaluations(mode, attribution, b, n, m) > bs  # chunking has to happen
    e = flight_explainer(mode, sampler, attribution, n, m, bs, reps)
    rows, _ = run_recorded(e, b)
    assert rows and max(rows) > 0
    assert max(rows) <= bs, (max(rows), bs, rows)
    # the recorder saw all the work (padding draws of a last chunk may add some)
    assert sum(rows) >= evaluations(mode, attribution, b, n, m), rows


def test_batch_size_plan_fills_the_passes():
    """Guarantee (Bounded): the bound is met by full passes, not by tiny ones: SG with
    batch_size=8, N=16, B=1 runs two passes of exactly 8 rows."""
    e = tfm.SmoothGrad(REC_MODEL, num_samples=16, batch_size=8, epsilon=0.3, seed=0)
    rows, _ = run_recorded(e, 1)
    assert rows == [8, 8], rows


def flight_params():
    out = []
    for c in FLIGHT:
        mode, sampler, attribution = c[0], c[1], c[2]
        out.append(pytest.param(*c, id=f"{mode}-{sampler}-{attribution}"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "sampler", "attribution", "b", "n", "m", "bs", "reps"),
                         flight_params())
def test_batch_size_bounds_the_evaluations_in_flight(mode, sampler, attribution, b, n, m, bs,
                                                     reps):
    """Guarantee (Bounded): "at most `batch_size` evaluations are in flight" -- also across
    passes: no two passes whose rows add up to more than `batch_size` run at the same time
    (each recorded pass sleeps 10 ms, so passes that can run concurrently overlap)."""
    e = flight_explainer(mode, sampler, attribution, n, m, bs, reps)
    rows, peak = run_recorded(e, bs, sleep=0.01)  # B = batch_size: passes more than half full
    assert max(rows) <= bs
    assert peak <= bs, (peak, bs, rows)


def test_in_flight_recorder_sees_concurrent_passes():
    """The control of the test above: the recorder does see passes that overlap. Without a
    memory bound (`batch_size=None`) NoiseGrad overlaps two weight draws by design (the
    Explainer's `batch_size` doc), so the peak is twice the rows of one pass."""
    e = tfm.NoiseGrad(REC_MODEL, num_weight_samples=6, seed=0, weight_draws_per_pass=1)
    rows, peak = run_recorded(e, 4, sleep=0.01)
    assert max(rows) == 4 and peak == 8, (rows, peak)
    # with several weight draws per pass (the default), the 6 draws share one pass of 24 rows
    rows, peak = run_recorded(tfm.NoiseGrad(REC_MODEL, num_weight_samples=6, seed=0), 4,
                              sleep=0.01)
    assert rows == [24] and peak == 24, (rows, peak)


def test_explain_dataset_keeps_the_batch_size_bound():
    """Guarantee (Bounded, via `explain_dataset`): "The explainer's `batch_size` still bounds the
    model evaluations in flight" -- every pass of a data-set run has at most `batch_size` rows."""
    x = np.random.default_rng(3).normal(size=(7, 3)).astype("float32")
    y = np.arange(7) % 2
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    for mode, sampler in (("sg", "sobol"), ("ng", "iid"), ("fg", "iid")):
        e = tfm.Explainer(REC_MODEL, mode=mode, sampler=sampler, num_samples=8,
                          num_weight_samples=4, batch_size=5, epsilon=0.3, seed=1)
        tfm.explain_dataset(e, ds, progress=False)
        PASSES.reset()
        got = tfm.explain_dataset(e, ds, progress=False)
        rows = list(PASSES.rows)
        assert rows and 0 < max(rows) <= 5, (mode, rows)
        assert sum(rows) >= 7 * {"sg": 8, "ng": 4, "fg": 32}[mode]
        assert_close(got, e.explain(x, y))


# -- 3. no variable is ever assigned --------------------------------------------------------------
class Tripwire:
    """For a :class:`RecordRows` layer: raises inside the compiled graph on its ``fire_at``-th
    pass (when armed): a run that fails midway, after some weight draws were evaluated."""

    def __init__(self) -> None:
        self.fire_at = None
        self.calls = 0

    def __call__(self, v: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fire_at is not None and self.calls >= self.fire_at:
            raise RuntimeError("tripwire: interrupted midway")
        return np.float32(0.0)


def _refuse(*args, **kwargs):
    raise AssertionError("a model variable was assigned")


@contextlib.contextmanager
def assignments_forbidden(model):
    """Makes assign/assign_add/assign_sub of every model variable (the Keras variable and the
    tf.Variable under it) raise, for as long as the block runs."""
    names = ("assign", "assign_add", "assign_sub")
    patched = []
    for var in model.variables:
        for obj in (var, getattr(var, "value", None)):
            if obj is None or not hasattr(obj, "assign"):
                continue
            for name in names:
                setattr(obj, name, _refuse)
                patched.append((obj, name))
    try:
        yield
    finally:
        for obj, name in patched:
            obj.__dict__.pop(name, None)


def snapshot(model) -> list[bytes]:
    return [np.asarray(v.numpy()).tobytes() for v in model.variables]


def test_model_variables_are_never_assigned_even_when_a_run_fails(tmp_path):
    """Guarantee (Safe): "the model's variables are only read, so nothing can leave them
    perturbed, even when a run fails or is interrupted" -- every variable (weights and BN moving
    statistics) is bit-identical after SG/NG/FG runs, selected layers, tolerance rounds, export,
    a rejected call and a run that raises midway; and assigning any variable raises meanwhile."""
    keras.utils.set_random_seed(4)
    inp = keras.Input((3,))
    h = keras.layers.Dense(4, activation="tanh", name="d1")(inp)
    h = keras.layers.BatchNormalization(name="bn")(h)
    trip = Tripwire()
    h = RecordRows(trip, name="trip")(h)
    h = keras.layers.Dropout(0.5, name="drop")(h)
    model = keras.Model(inp, keras.layers.Dense(2, name="d2")(h))
    model.get_layer("bn").moving_mean.assign([0.5, -0.5, 1.0, 2.0])
    x = np.random.default_rng(0).normal(size=(3, 3)).astype("float32")
    t = [0, 1, 1]
    before = snapshot(model)
    runs = [
        dict(mode="sg"),
        dict(mode="ng"),
        dict(mode="fg", batch_size=4),
        dict(mode="ng", weight_layers=["d2"], perturb_bias=False, sampler="antithetic"),
        dict(mode="fg", weight_layers=["d1", "bn"], sampler="sobol", replicates=2),
        dict(mode="fg", tolerance=1e-6, max_samples=72),  # two rounds
    ]
    with assignments_forbidden(model):
        with pytest.raises(AssertionError, match="was assigned"):  # the trap is armed ...
            model.get_layer("d1").kernel.assign(np.zeros((3, 4), "float32"))
        with pytest.raises(AssertionError, match="was assigned"):  # ... for BN updates too
            model(x, training=True)
        for kw in runs:
            e = tfm.Explainer(model, num_samples=6, num_weight_samples=6, epsilon=0.3, seed=0,
                              **kw)
            e.explain(x, t, return_stderr=True)
        e = tfm.FusionGrad(model, num_samples=4, num_weight_samples=4, batch_size=4, seed=0)
        e.explain(x, t)
        tfm.export(e, tmp_path / "export", overwrite=True)
        with pytest.raises(ValueError, match="targets"):
            e.explain(x, [0, 1, 5])
        for mode in ("ng", "fg"):
            e = tfm.Explainer(model, mode=mode, num_samples=4, num_weight_samples=8,
                              batch_size=4, seed=1)
            e.explain(x, t)  # compile, probe
            trip.calls, trip.fire_at = 0, 5
            try:
                with pytest.raises(Exception, match="tripwire"):
                    e.explain(x, t)
                assert trip.calls >= 5  # it failed midway, after several weight draws
            finally:
                trip.fire_at = None
    after = snapshot(model)
    assert after == before


# -- 4. standard errors match the spread over seeds -----------------------------------------------
def nonlinear_model(d_in: int = 3) -> keras.Model:
    keras.utils.set_random_seed(21)
    inp = keras.Input((d_in,))
    h = keras.layers.Dense(5, activation="tanh", name="d1")(inp)
    out = keras.layers.Dense(2, name="d2")(h)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(21)
    for layer in model.layers[1:]:
        w, b = layer.get_weights()
        layer.set_weights([w, rng.normal(scale=0.5, size=b.shape).astype("float32")])
    return model


SPREAD_X = np.array([[0.3, -0.8, 1.1], [-0.5, 0.4, 0.2]], np.float32)
SPREAD_T = [0, 1]


def stderr_ratio(runs, stderrs) -> tuple[float, np.ndarray]:
    """stderr / std over runs, over the elements with a non-negligible spread: the reported
    stderr as the root mean square over runs (a sample variance is unbiased, its square root is
    not, by a factor that depends on the samples' kurtosis)."""
    runs, stderrs = np.asarray(runs, np.float64), np.asarray(stderrs, np.float64)
    spread = runs.std(axis=0, ddof=1)
    mean_se = np.sqrt(np.square(stderrs).mean(axis=0))
    keep = spread > 0.05 * spread.max()
    assert keep.sum() >= 3, spread
    return float(mean_se[keep].mean() / spread[keep].mean()), mean_se[keep] / spread[keep]


def check_ratio(runs, stderrs, what):
    ratio, per_element = stderr_ratio(runs, stderrs)
    # K = 40: a sample std has a relative sd of about 1/sqrt(2K) = 0.11, so [0.7, 1.4] is about
    # 3 sigma; a stderr off by a factor 3 either way (ratio 3 or 1/3) is far outside
    assert 0.7 <= ratio <= 1.4, (what, ratio, per_element)
    assert np.all((per_element > 0.45) & (per_element < 2.2)), (what, per_element)


K_SEEDS = 40


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ng", "fg"])
def test_weight_noise_stderr_matches_the_spread_over_explainer_seeds(mode):
    """Guarantee (Correct): "the reported standard errors match the spread over seeds" -- for
    NoiseGrad and FusionGrad, over K = 40 explainer seeds (weight draws come from the explainer's
    seed), rms(stderr) / std(estimate) is within [0.7, 1.4]. The 40 calls share one compiled
    function through the runner's job seed; the last equals a new explainer of that seed."""
    model = nonlinear_model()
    kw = dict(mode=mode, num_samples=4, num_weight_samples=12, weight_epsilon=0.4, epsilon=0.4)
    # the input draws made in the graph (not kept for the explainer's own seed): one function
    e = tfm.Explainer(model, seed=1000, input_noise_cache_mb=0, **kw)
    runner = e.runner
    runs, ses = [], []
    for s in range(K_SEEDS):
        # the call of an explainer with seed 1000 + s, on one compiled function (a job's seed
        # sets the weight draws and the example seeds, as the explainer's own seed would)
        req = runner.prepare(SPREAD_X, SPREAD_T, with_stderr=True, seed=1000 + s)
        values, errors, _ = runner.run(req)
        runs.append(runner.assemble(req, values))
        ses.append(runner.assemble(req, errors))
    assert e.trace_count == 1
    other = tfm.Explainer(model, seed=1000 + K_SEEDS - 1, **kw)  # the same as a new explainer
    a, se = other.explain(SPREAD_X, SPREAD_T, return_stderr=True)
    np.testing.assert_allclose(a, runs[-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(se, ses[-1], rtol=1e-5, atol=1e-6)
    check_ratio(runs, ses, mode)


@pytest.mark.parametrize(
    "kw",
    [dict(), dict(proposal="sigmoid", proposal_scale=1.3), dict(sampler="antithetic")],
    ids=["iid", "proposal", "antithetic"],
)
def test_input_noise_stderr_matches_the_spread_over_seeds(kw):
    """Guarantee (Correct): "the reported standard errors match the spread over seeds" -- for
    SmoothGrad, also with importance sampling (`proposal=`): K = 40 copies of each example with
    their own seeds are K independent estimates; rms(stderr) / std is within [0.7, 1.4]."""
    model = nonlinear_model()
    e = tfm.SmoothGrad(model, kernel="gaussian", num_samples=16, epsilon=0.6, seed=0, **kw)
    for b in range(len(SPREAD_X)):
        x = np.repeat(SPREAD_X[b : b + 1], K_SEEDS, axis=0)
        a, se = e.explain(x, SPREAD_T[b], return_stderr=True,
                          seeds=np.arange(K_SEEDS) + 100 * b + 7)
        check_ratio(a, se, (kw, b))


# -- 5. tolerance stops early ---------------------------------------------------------------------
def gated_model() -> keras.Model:
    """``head([x, relu(gate(x))])``: for x far below 0 the gate is off under all (bounded) input
    and weight noise, so every sample's gradient is exactly ``head[:2, t]`` (zero variance); near
    0 the gate flips with the noise."""
    inp = keras.Input((2,))
    gate = keras.layers.Dense(1, activation="relu", name="gate")
    g = gate(inp)
    head = keras.layers.Dense(2, name="head")
    out = head(keras.layers.Concatenate()([inp, g]))
    model = keras.Model(inp, out)
    gate.set_weights([np.array([[1.0], [1.0]], "float32"), np.zeros(1, "float32")])
    head.set_weights([np.array([[1.0, -0.5], [0.5, 2.0], [3.0, 1.5]], "float32"),
                      np.zeros(2, "float32")])
    return model


@pytest.mark.parametrize("mode", MODES)
def test_tolerance_stops_early_for_easy_examples_only(mode):
    """Guarantee (README, `tolerance=`): rounds of samples "until each example's relative
    standard error is at most `tolerance` (or `max_samples` is reached)" -- per example:
    an example with zero variance stops after round 0, a noisy one runs to `max_samples`;
    `last_num_samples` counts input draws (sg), weight draws (ng), M x N evaluations (fg)."""
    model = gated_model()
    x = np.array([[-4.0, -4.0], [0.1, -0.1], [-4.0, -3.0]], np.float32)
    t = [0, 1, 1]
    n, m = 4, 2
    per_round = {"sg": n, "ng": m, "fg": n * m}[mode]
    kw = dict(mode=mode, kernel="rect", num_samples=n, num_weight_samples=m, epsilon=0.5,
              weight_epsilon=0.2, seed=3)
    if mode != "sg":
        kw["weight_layers"] = ["gate"]  # noise on the gate only: the easy examples stay exact
    one, one_se = tfm.Explainer(model, **kw).explain(x, t, return_stderr=True)
    rel = np.linalg.norm(one_se, axis=1) / np.linalg.norm(one, axis=1)
    assert rel[0] == 0 and rel[2] == 0 and rel[1] > 1e-2, rel  # easy, hard, easy

    e = tfm.Explainer(model, tolerance=1e-3, max_samples=5 * per_round, **kw)
    got, se = e.explain(x, t, return_stderr=True)
    np.testing.assert_array_equal(e.last_num_samples, [per_round, 5 * per_round, per_round])
    np.testing.assert_array_equal(e.last_nonfinite_count, [0, 0, 0])
    exact = np.array([[1.0, 0.5], [-0.5, 2.0], [-0.5, 2.0]], np.float32)
    assert_close(got[[0, 2]], exact[[0, 2]])
    assert np.all(se[[0, 2]] == 0)
    assert_close(got[[0, 2]], one[[0, 2]])  # round 0 alone
    assert np.all(se[1] > 0) and np.abs(got[1] - one[1]).max() > 1e-4  # later rounds count
    # max_samples not a multiple of a round: whole rounds only, never more than max_samples
    e = tfm.Explainer(model, tolerance=1e-3, max_samples=3 * per_round + 1, **kw)
    e.explain(x, t)
    np.testing.assert_array_equal(e.last_num_samples, [per_round, 3 * per_round, per_round])


# -- 6. exact answers -----------------------------------------------------------------------------
class Triangle(user_kernels.Triangle):
    """A user kernel (README "Your own kernel"): the triangle density on [-1, 1]."""

    name = "guarantees_triangle"


class SubclassedLinear(keras.Model):
    """A subclassed model with one Dense layer, no activation, and a `call` without `training`."""

    def __init__(self, w: np.ndarray, b: np.ndarray):
        super().__init__()
        self.dense = keras.layers.Dense(w.shape[1], name="dense")
        self(np.zeros((1, w.shape[0]), np.float32))
        self.dense.set_weights([w, b])

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize("kernel", ["rect", Triangle.name])
@pytest.mark.parametrize("mode", MODES)
def test_exact_answers_on_a_subclassed_linear_model(mode, kernel):
    """Guarantee (Correct): "the antithetic estimate is exact when the gradient is affine in the
    noise" -- on a linear model, SG/NG/FG with antithetic pairs give exactly `W[:, t]` (gradient)
    and `W[:, t] * x` (input x gradient), for a built-in and a registered user kernel, on a
    subclassed model."""
    tfm.kernels.register(Triangle(), overwrite=True)
    rng = np.random.default_rng(5)
    w = rng.normal(size=(4, 3)).astype("float32")
    b = rng.normal(size=3).astype("float32")
    model = SubclassedLinear(w, b)
    x = rng.normal(size=(3, 4)).astype("float32")
    t = np.array([2, 0, 1])
    kw = dict(mode=mode, kernel=kernel, num_samples=4, num_weight_samples=6, epsilon=0.8,
              weight_epsilon=0.3, seed=9)
    grad = tfm.Explainer(model, sampler="antithetic", **kw)(x, t)
    assert_close(grad, w[:, t].T)
    ixg = tfm.Explainer(model, sampler="antithetic", attribution="input_x_gradient", **kw)(x, t)
    assert_close(ixg, w[:, t].T * x)
    # the oracle is sharp: i.i.d. noise is not exact where the noise enters the answer
    iid = tfm.Explainer(model, attribution="input_x_gradient", **kw)(x, t)
    assert np.abs(iid - w[:, t].T * x).max() > 1e-3


def test_linear_doctest_answer():
    """Guarantee (Correct), as in the Explainer docstring: on ``x @ W`` SmoothGrad gives
    ``W[:, t]`` for any i.i.d. noise, and input x gradient with antithetic noise ``W[:, t] * x``."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=False)])
    w = model.get_weights()[0]
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 2.0]], np.float32)
    for kernel in KERNELS:
        sg = tfm.Explainer(model, kernel=kernel, num_samples=8, seed=0)
        assert_close(sg(x, targets=1), np.stack([w[:, 1]] * 2), atol=1e-6)
        ixg = tfm.SmoothGrad(model, kernel=kernel, num_samples=8, seed=0, sampler="antithetic",
                             attribution="input_x_gradient")
        assert_close(ixg(x, targets=[1, 0]), w[:, [1, 0]].T * x, atol=1e-5)


# -- 7. error messages ----------------------------------------------------------------------------
def _err_model():
    inp = keras.Input((3,))
    h = keras.layers.Dense(3, activation="tanh", name="d1")(inp)
    return keras.Model(inp, keras.layers.Dense(2, name="d2")(h))


ERR_MODEL = _err_model()
ERR_X = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")


# (constructor kwargs, exception, argument name, received value as the message shows it)
CTOR_ERRORS = [
    (dict(num_samples=0), ValueError, "num_samples", "0"),
    (dict(num_samples=2.5), TypeError, "num_samples", "2.5"),
    (dict(num_weight_samples=-3), ValueError, "num_weight_samples", "-3"),
    (dict(kernel="nope"), ValueError, "kernel", "'nope'"),
    (dict(kernel=3), TypeError, "kernel", "3"),
    (dict(mode="xx"), ValueError, "mode", "'xx'"),
    (dict(epsilon=-1), ValueError, "epsilon", "-1"),
    (dict(epsilon="a"), TypeError, "epsilon", "'a'"),
    (dict(alpha=1.5), ValueError, "alpha", "1.5"),
    (dict(weight_epsilon=0), ValueError, "weight_epsilon", "0"),
    (dict(aggregation="mean"), ValueError, "aggregation", "'mean'"),
    (dict(attribution="saliency"), ValueError, "attribution", "'saliency'"),
    (dict(batch_size=0), ValueError, "batch_size", "0"),
    (dict(batch_size=1.5), TypeError, "batch_size", "1.5"),
    (dict(attribution="integrated_gradients", ig_steps=8, batch_size=4), ValueError,
     "batch_size", "4"),
    (dict(seed="a"), TypeError, "seed", "'a'"),
    (dict(seed=1.5), TypeError, "seed", "1.5"),
    (dict(sampler="x"), ValueError, "sampler", "'x'"),
    (dict(replicates=4), ValueError, "replicates", "4"),
    (dict(sampler="sobol", num_samples=10, replicates=3), ValueError, "replicates", "3"),
    (dict(sampler="antithetic", num_samples=5), ValueError, "num_samples", "5"),
    (dict(sampler="antithetic", batch_size=1), ValueError, "batch_size", "1"),
    (dict(ig_steps=0), ValueError, "ig_steps", "0"),
    (dict(tolerance=-1), ValueError, "tolerance", "-1"),
    (dict(tolerance=0.1, num_samples=50, max_samples=10), ValueError, "max_samples", "10"),
    (dict(proposal_scale=0), ValueError, "proposal_scale", "0"),
    (dict(weight_noise_cache_mb=-1), ValueError, "weight_noise_cache_mb", "-1"),
    (dict(mode="ng", perturb_bias="yes"), TypeError, "perturb_bias", "'yes'"),
    (dict(mode="ng", weight_layers=["nope"]), ValueError, "weight_layers", "'nope'"),
    (dict(reduce="mean"), ValueError, "reduce", "'mean'"),
    (dict(output=7), ValueError, "output", "7"),
    (dict(explain_at="nope"), ValueError, "explain_at", "'nope'"),
    (dict(proposal="nope"), ValueError, "proposal", "'nope'"),
    (dict(jit_compile="no"), TypeError, "jit_compile", "'no'"),
]


def message_names(exc: BaseException, name: str, value: str) -> None:
    msg = str(exc)
    assert re.search(rf"`?\b{re.escape(name)}\b`?", msg), (name, msg)
    echoed = (
        f"{name}={value}" in msg  # `name=value`
        or re.search(r"Received:.*" + re.escape(value), msg, re.S) is not None
        or (value.startswith("'") and value in msg)  # a quoted string anywhere
    )
    assert echoed, (value, msg)


def _case_id(case):
    if hasattr(case, "marks"):  # a pytest.param with its own id
        return case.id
    return "-".join(f"{k}={v!r}" for k, v in case[0].items())


@pytest.mark.parametrize(("kwargs", "exc", "name", "value"), CTOR_ERRORS,
                         ids=[_case_id(c) for c in CTOR_ERRORS])
def test_bad_constructor_arguments_name_the_argument_and_the_value(kwargs, exc, name, value):
    """Guarantee (Safe): "Bad arguments raise `ValueError`/`TypeError` naming the argument, the
    value" -- for the constructor."""
    with pytest.raises(exc) as info:
        tfm.Explainer(ERR_MODEL, **kwargs)
    message_names(info.value, name, value)


CALL_ERRORS = [
    (dict(targets=[0, 5]), ValueError, "targets", "[0, 5]"),
    (dict(targets=[0, -1]), ValueError, "targets", "[0, -1]"),
    (dict(targets=[0.5, 1]), TypeError, "targets", "[0.5, 1]"),
    (dict(targets=[0, 1, 1]), ValueError, "targets", "shape (3,)"),  # its length, as a shape
    (dict(targets=[0, 1], seeds=[1, 2, 3]), ValueError, "seeds", "shape (3,)"),
    (dict(targets=[0, 1], seeds=[1.5, 2.5]), ValueError, "seeds", "float64"),
]


@pytest.mark.parametrize(("kwargs", "exc", "name", "value"), CALL_ERRORS,
                         ids=[_case_id(c) for c in CALL_ERRORS])
def test_bad_call_arguments_name_the_argument_and_the_value(kwargs, exc, name, value):
    """Guarantee (Safe): bad `explain` arguments (targets out of range or of the wrong length,
    seeds of the wrong length or dtype) raise naming the argument and what was received; the
    explainer still works afterwards."""
    e = tfm.Explainer(ERR_MODEL, num_samples=4, seed=0)
    kwargs = dict(kwargs)
    targets = kwargs.pop("targets")
    with pytest.raises(exc) as info:
        e.explain(ERR_X, targets, **kwargs)
    message_names(info.value, name, value)
    assert e.explain(ERR_X, [0, 1]).shape == ERR_X.shape

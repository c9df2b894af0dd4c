"""MPRT and Smooth-MPRT (tfmollify.evaluation.metrics.mprt / smooth_mprt / ssim) and their
assertions (tfmollify.testing.sanity).

The answers are worked out independently here: a ReLU network's gradient in NumPy (the explainer
is SmoothGrad with a rectangular kernel of width 1e-6, which equals the gradient exactly when no
pre-activation is within the noise of its kink, checked), the randomised weights from
``randomize_model`` (its own tests check it), Spearman from ranks, SSIM window by window. Then
Quantus' own ``MPRT`` and ``SmoothMPRT`` classes run on the same models: their model side does not
work with Keras 3 (see tests/test_metrics.py), so its layer generator is replaced by one that
yields our randomised copies, and SmoothMPRT's input noise (``np.random.randn``) replays ours;
everything else (the loop, the preprocessing, the similarity) is Quantus'.
"""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np
import pytest
from crosscheck import require

import tfmollify as tfm
from tfmollify.evaluation import metrics
from tfmollify.testing import config, sanity

QUANTUS = "scripts/test installs it: Quantus's import needs, then quantus --no-deps"
RNG = np.random.default_rng(0)
X = RNG.normal(size=(4, 12)).astype("float32")
T = np.array([0, 1, 2, 0])


# ------------------------------------------------------------------------------- the oracles


def _relu_mlp(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((12,)),
        keras.layers.Dense(16, activation="relu", name="hidden"),
        keras.layers.Dense(3, name="logits"),
    ])


def _exact(model, cls=tfm.SmoothGrad):
    """SmoothGrad with noise of at most 1e-6 per element: the gradient (see _margin)."""
    return cls(model, kernel="rect", epsilon=1e-6, num_samples=2, seed=0)


def _margin(weights, x):
    """The noise (|z| <= 1e-6 per element) moves a pre-activation by at most 1e-6 * sum |w|:
    far less than its distance to the kink, so the explainer's map is the exact gradient."""
    pre = np.asarray(x, np.float64) @ weights[0] + weights[1]
    assert np.abs(pre).min() > 1e-4, "pick another seed: a pre-activation sits on its kink"


def _gradient(weights, x, t):
    """d logit_t / dx of Dense(relu) -> Dense, in NumPy: W1 (active * W2[:, t])."""
    w1, b1, w2, _ = (np.asarray(w, np.float64) for w in weights)
    _margin(weights, x)
    active = (np.asarray(x, np.float64) @ w1 + b1) > 0
    return np.stack([w1 @ (active[b] * w2[:, t[b]]) for b in range(len(t))])


def _spearman(a, b):
    """Spearman per row from the ranks (the maps here have no ties; checked)."""
    out = []
    for u, v in zip(a, b, strict=True):
        assert len(np.unique(u)) == u.size and len(np.unique(v)) == v.size
        ru, rv = np.argsort(np.argsort(u)), np.argsort(np.argsort(v))
        out.append(np.corrcoef(ru, rv)[0, 1])
    return np.array(out)


def _ssim_loop(a, b, win=7):
    """skimage.metrics.structural_similarity's defaults on 1D maps, window by window."""
    out = []
    for u, v in zip(a, b, strict=True):
        r = max(u.max(), v.max()) - min(u.min(), v.min())
        c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
        s = []
        for i in range(u.size - win + 1):
            wu, wv = u[i:i + win], v[i:i + win]
            cov = np.cov(wu, wv)  # sample (co)variances, ddof = 1
            s.append((2 * wu.mean() * wv.mean() + c1) * (2 * cov[0, 1] + c2)
                     / ((wu.mean() ** 2 + wv.mean() ** 2 + c1) * (cov[0, 0] + cov[1, 1] + c2)))
        out.append(np.mean(s))
    return np.array(out)


def _by_max(a):
    return np.abs(a) / np.abs(a).max(axis=1, keepdims=True)


def _by_rms(a):
    return np.abs(a) / np.sqrt((a * a).mean(axis=1, keepdims=True))


def _explain_func(settings):
    """Quantus' ``explain_func``: the explainer's settings on the model it gets (one explainer
    per model, kept with it, so each is traced once)."""
    cache = {}

    def explain(model, inputs, targets, **kwargs):
        if id(model) not in cache:
            cache[id(model)] = (model, tfm.SmoothGrad.from_config(model, settings))
        return cache[id(model)][1](inputs.astype("float32"), targets)

    return explain


@pytest.fixture
def spy():
    """A SmoothGrad subclass that records every explain call: (model, inputs, seeds, settings,
    kernel)."""
    calls = []

    class Spy(tfm.SmoothGrad):
        def explain(self, inputs, targets=None, **kwargs):
            calls.append((self.model, np.array(inputs, copy=True), kwargs.get("seeds"),
                          self.get_config(), self.kernel))
            return super().explain(inputs, targets, **kwargs)

    Spy.calls = calls
    return Spy


# ----------------------------------------------------------------------------------- SSIM


def test_ssim_is_skimages_default_window_by_window():
    a, b = RNG.normal(size=(3, 20)), RNG.normal(size=(3, 20))
    b[1] = a[1] + 0.1 * b[1]
    np.testing.assert_allclose(metrics.ssim(a, b), _ssim_loop(a, b), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(metrics.ssim(np.abs(a), np.abs(b), win_size=5),
                               _ssim_loop(np.abs(a), np.abs(b), win=5), rtol=1e-12)
    np.testing.assert_array_equal(metrics.ssim(a, a), np.ones(3))
    with np.errstate(all="raise"):
        assert np.isnan(metrics.ssim(np.ones((1, 9)), np.ones((1, 9)))[0])
    for bad in (8, 1, 21, 7.0, True):
        with pytest.raises(ValueError, match=r"`win_size` must be an odd int in \[3, 20\]"):
            metrics.ssim(a, b, win_size=bad)
    with pytest.raises(ValueError, match="same shape"):
        metrics.ssim(a, b[:, :10])


def test_ssim_matches_skimage_where_installed():
    skimage_metrics = pytest.importorskip("skimage.metrics", reason="skimage is optional")
    a, b = np.abs(RNG.normal(size=(2, 30))), np.abs(RNG.normal(size=(2, 30)))
    want = [skimage_metrics.structural_similarity(u, v, data_range=np.ptp(np.r_[u, v]))
            for u, v in zip(a, b, strict=True)]
    np.testing.assert_allclose(metrics.ssim(a, b), want, rtol=1e-10)


# ------------------------------------------------------------------------- MPRT by hand


@pytest.mark.parametrize("similarity, oracle", [("spearman", _spearman), ("ssim", _ssim_loop)])
def test_mprt_by_hand_on_a_two_layer_relu_network(similarity, oracle):
    model = _relu_mlp()
    explainer = _exact(model)
    g0 = _gradient(model.get_weights(), X, T)
    np.testing.assert_allclose(explainer(X, T), g0, rtol=1e-5, atol=1e-6)  # the oracle holds
    got = metrics.mprt(explainer, X, T, similarity=similarity, seed=3)
    want = [
        oracle(_by_max(g0), _by_max(_gradient(
            metrics.randomize_model(model, seed=3, num_layers=k).get_weights(), X, T)))
        for k in (1, 2)
    ]
    assert got.layers == ("logits", "hidden") and got.layer_order == "top_down"
    assert got.measure == similarity and got.similarity.shape == (2, 4)
    atol = 1e-12 if similarity == "spearman" else 1e-5  # the explainer computes in float32
    np.testing.assert_allclose(got.similarity, want, rtol=0, atol=atol)


def test_mprt_is_quantus_mprt(monkeypatch):
    quantus = require("quantus", QUANTUS)
    from quantus.helpers.model.tf_model import TensorFlowModel

    model = _relu_mlp()
    explainer = _exact(model)
    got = metrics.mprt(explainer, X, T, seed=3)

    def generator(self, order="top_down", seed=42):
        assert order == "top_down"
        layers = [layer for layer in self.model.layers if layer.weights]
        for k in range(1, len(layers) + 1):
            yield layers[-k].name, metrics.randomize_model(self.model, seed=3, num_layers=k)

    monkeypatch.setattr(TensorFlowModel, "get_random_layer_generator", generator)
    explain = _explain_func(explainer.get_config())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        want = quantus.MPRT(disable_warnings=True)(
            model=model, x_batch=X, y_batch=T, explain_func=explain)
    assert list(want) == ["original", *got.layers]
    np.testing.assert_allclose(want["original"], 1.0)
    for layer, row in got.as_dict().items():
        np.testing.assert_allclose(row, want[layer], rtol=0, atol=1e-12)


# ------------------------------------------------------------------ Smooth-MPRT by hand


def _smooth_groups(spy, n, steps):
    calls = spy.calls
    assert len(calls) == n * (steps + 1)
    return [calls[i * n:(i + 1) * n] for i in range(steps + 1)]


def test_smooth_mprt_by_hand(spy):
    model, n, magnitude = _relu_mlp(), 5, 0.1
    got = metrics.smooth_mprt(_exact(model, spy), X, T, nr_samples=n,
                              noise_magnitude=magnitude, seed=2)
    groups = _smooth_groups(spy, n, 2)
    assert got.layers == ("hidden", "logits") and got.layer_order == "bottom_up"
    assert groups[0][0][0] is model and all(c[0] is not model for g in groups[1:] for c in g)
    for group in groups:  # the last copy is the input; the noise is the same for every model
        np.testing.assert_array_equal(group[-1][1], X)
        assert group[-1][2] is None  # and gets the explainer's own seeds
        for c, c0 in zip(group, groups[0], strict=True):
            np.testing.assert_array_equal(c[1], c0[1])
            assert (c[2] is None) == (c0[2] is None) and np.array_equal(c[2], c0[2])
    assert len({tuple(c[2]) for c in groups[0][:-1]}) == n - 1  # fresh seeds per noisy copy
    trained = model.get_weights()
    rand = metrics.randomize_model(model, seed=2).get_weights()
    steps = [rand[:2] + trained[2:], rand]  # bottom up: hidden, then both

    def smoothed(group, weights):
        return _by_rms(np.mean([_gradient(weights, c[1], T) for c in group], axis=0))

    a0 = smoothed(groups[0], trained)
    want = [_spearman(a0, smoothed(groups[k + 1], w)) for k, w in enumerate(steps)]
    np.testing.assert_allclose(got.similarity, want, rtol=0, atol=1e-12)


def test_smooth_mprt_noise_has_the_stated_scale(spy):
    """delta ~ N(0, (magnitude * (max x - min x))^2) per example: z-tests of the standardised
    noise's mean and variance, 4 standard errors (two-sided p = 6e-5 each)."""
    model, n, magnitude = _relu_mlp(), 41, 0.3
    x = X * np.array([[1.0], [3.0], [0.5], [10.0]], np.float32)  # other ranges per example
    metrics.smooth_mprt(_exact(model, spy), x, T, nr_samples=n, noise_magnitude=magnitude,
                        layer_order="independent")
    noisy = np.stack([c[1] for c in spy.calls[:n - 1]]).astype(np.float64)
    std = magnitude * (x.max(axis=1) - x.min(axis=1))[:, None]
    z = (noisy - x) / std  # [n - 1, B, F]
    for b in range(len(x)):
        m = z[:, b].size
        assert abs(z[:, b].mean()) < 4 / np.sqrt(m), (b, z[:, b].mean())
        assert abs(z[:, b].var() - 1) < 4 * np.sqrt(2 / m), (b, z[:, b].var())


def test_smooth_mprt_is_quantus_smooth_mprt(spy, monkeypatch):
    quantus = require("quantus", QUANTUS)
    from quantus.helpers.model.tf_model import TensorFlowModel

    model, n = _relu_mlp(), 4
    explainer = _exact(model, spy)
    got = metrics.smooth_mprt(explainer, X, T, nr_samples=n, seed=2)
    std = 0.1 * (X.max(axis=1, keepdims=True) - X.min(axis=1, keepdims=True))
    noise = [(c[1].astype(np.float64) - X) / std for c in spy.calls[:n - 1]]
    replayed = iter(noise * (3 * 2))  # Quantus explains the original twice, then each layer

    def generator(self, order="bottom_up", seed=42):
        assert order == "bottom_up"  # Quantus' default for SmoothMPRT
        rand = metrics.randomize_model(self.model, seed=2).get_weights()
        trained = self.model.get_weights()
        for k, weights in enumerate([rand[:2] + trained[2:], rand]):
            copy = keras.models.clone_model(self.model)
            copy.set_weights(weights)
            yield ("hidden", "logits")[k], copy

    explain = _explain_func(explainer.get_config())

    monkeypatch.setattr(TensorFlowModel, "get_random_layer_generator", generator)
    monkeypatch.setattr(quantus, "explain", explain)  # SmoothMPRT calls quantus.explain
    monkeypatch.setattr(np.random, "randn", lambda *shape: next(replayed).copy())
    want = quantus.SmoothMPRT(disable_warnings=True, nr_samples=n)(
        model=model, x_batch=X, y_batch=T, explain_func=explain)
    assert list(want) == ["original", *got.layers]
    for layer, row in got.as_dict().items():
        np.testing.assert_allclose(row, want[layer], rtol=0, atol=1e-12)


# ------------------------------------------------------------------- the cascade's layers


def _deep(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((12,)),
        keras.layers.Dense(8, activation="tanh", name="a"),
        keras.layers.Dropout(0.5, name="drop"),
        keras.layers.Dense(6, activation="tanh", name="b"),
        keras.layers.Dense(3, name="c"),
    ])


@pytest.mark.parametrize("order, layers, randomised", [
    ("top_down", ("c", "b", "a"), [{"c"}, {"c", "b"}, {"c", "b", "a"}]),
    ("bottom_up", ("a", "b", "c"), [{"a"}, {"a", "b"}, {"a", "b", "c"}]),
    ("independent", ("a", "b", "c"), [{"a"}, {"b"}, {"c"}]),
])
def test_the_cascade_randomises_the_layers_in_order(spy, order, layers, randomised):
    model = _deep()
    before = [w.copy() for w in model.get_weights()]
    result = metrics.mprt(spy(model, num_samples=2, seed=0), X, T, seed=7, layer_order=order)
    assert result.layers == layers and result.similarity.shape == (3, 4)
    models = [c[0] for c in spy.calls]
    assert len(models) == 4 and models[0] is model
    assert all(c[3] == spy.calls[0][3] for c in spy.calls)  # the same settings on every copy
    trained = {n: model.get_layer(n).get_weights() for n in "abc"}
    rand = metrics.randomize_model(model, seed=7)
    for k, (copy, names) in enumerate(zip(models[1:], randomised, strict=True), start=1):
        for name in "abc":
            want = rand.get_layer(name) if name in names else model.get_layer(name)
            for u, v in zip(copy.get_layer(name).get_weights(), want.get_weights(), strict=True):
                np.testing.assert_array_equal(u, v)
            changed = not np.array_equal(copy.get_layer(name).get_weights()[0], trained[name][0])
            assert changed == (name in names), (k, name)
        if order == "top_down":  # step k is randomize_model's num_layers=k
            for u, v in zip(copy.get_weights(), metrics.randomize_model(
                    model, seed=7, num_layers=k).get_weights(), strict=True):
                np.testing.assert_array_equal(u, v)
    for u, v in zip(model.get_weights(), before, strict=True):  # the user's model: untouched
        np.testing.assert_array_equal(u, v)
    assert [layer.name for layer in model.layers] == ["a", "drop", "b", "c"]


def test_mprt_agrees_with_consistency_and_with_its_other_forms():
    model = _relu_mlp()
    explainer = tfm.SmoothGrad(model, num_samples=4, seed=0)
    top = metrics.mprt(explainer, X, T, seed=5)
    bottom = metrics.mprt(explainer, X, T, seed=5, layer_order="bottom_up")
    np.testing.assert_array_equal(top.last, bottom.last)  # the same fully random model
    settings = explainer.get_config()
    once = metrics.consistency(lambda m, x, t: tfm.SmoothGrad.from_config(m, settings)(x, t),
                               model, X, T, seed=5)
    np.testing.assert_allclose(top.last, once, rtol=0, atol=1e-12)
    plain = metrics.smooth_mprt(explainer, X, T, nr_samples=1, seed=5, layer_order="top_down")
    np.testing.assert_allclose(plain.similarity, top.similarity, rtol=0, atol=1e-12)
    assert explainer.get_config() == settings


def test_a_users_unregistered_kernel_is_kept(spy):
    class Box(tfm.kernels.Rect):
        name = "t3_unregistered_box"

    kernel = Box()
    result = metrics.mprt(spy(_relu_mlp(), kernel=kernel, num_samples=2, seed=0), X, T)
    assert result.similarity.shape == (2, 4)
    assert len(spy.calls) == 3 and all(c[4] is kernel for c in spy.calls)


# ----------------------------------------------------------------------- arguments, result


def _explainer():
    return tfm.SmoothGrad(_relu_mlp(), num_samples=2, seed=0)


@pytest.mark.parametrize("call, error, match", [
    (lambda e: metrics.mprt("gradient", X, T), TypeError, "`explainer` must be a tfmollify"),
    (lambda e: metrics.mprt(tfm.SmoothGrad(lambda v: v[:, :3], seed=0), X, T), TypeError,
     "must explain a keras.Model"),
    (lambda e: metrics.mprt(tfm.SmoothGrad(keras.Sequential(
        [keras.Input((12,)), keras.layers.Activation("tanh")]), seed=0), X, 0), ValueError,
     "no layer with weights"),
    (lambda e: metrics.mprt(e, X, T, similarity="pearson"), ValueError,
     r"`similarity` must be one of \('spearman', 'ssim'\).*similarity='pearson'"),
    (lambda e: metrics.mprt(e, X, T, seed=1.5), TypeError, "`seed` must be an int.*seed=1.5"),
    (lambda e: metrics.mprt(e, X, T, seed=True), TypeError, "seed=True"),
    (lambda e: metrics.mprt(e, X, T, seed=-1), ValueError, "`seed` must be >= 0.*seed=-1"),
    (lambda e: metrics.mprt(e, X, T, layer_order="top-down"), ValueError,
     "`layer_order` must be one of.*layer_order='top-down'"),
    (lambda e: metrics.mprt(tfm.SmoothGrad(keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(2)]), seed=0), X[:, :4], 0, similarity="ssim"),
     ValueError, "at least 7 values per map"),
    (lambda e: metrics.mprt(e, X, T, similarity=lambda a, b: np.zeros(3)), ValueError,
     r"one value per example, shape \(4,\)"),
    (lambda e: metrics.mprt(e, 1.0, T), ValueError, "`inputs` must have a batch axis"),
    (lambda e: metrics.smooth_mprt(e, X, T, nr_samples=0), ValueError, "nr_samples=0"),
    (lambda e: metrics.smooth_mprt(e, X, T, nr_samples=2.0), ValueError, "nr_samples=2.0"),
    (lambda e: metrics.smooth_mprt(e, X, T, noise_magnitude=-0.1), ValueError,
     "`noise_magnitude` must be a finite float >= 0.*noise_magnitude=-0.1"),
    (lambda e: metrics.smooth_mprt(e, X, T, noise_magnitude=float("nan")), ValueError,
     "noise_magnitude=nan"),
    (lambda e: sanity.assert_mprt(e, X, T, max_similarity=1.0), ValueError,
     r"`max_similarity` must be a float in \[-1, 1\).*max_similarity=1.0"),
    (lambda e: sanity.assert_mprt(e, X, T, max_similarity="0.5"), ValueError,
     "max_similarity='0.5'"),
    (lambda e: sanity.assert_smooth_mprt(e, X, T, nr_samples=True), ValueError,
     "nr_samples=True"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(_explainer())


def test_the_result_is_checked_frozen_and_summarised():
    sim = np.array([[0.9, 0.7, np.nan], [np.nan, np.nan, np.nan]])
    r = metrics.RandomisationResult(["top", "bottom"], sim, "top_down", "spearman")
    assert r.layers == ("top", "bottom")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(r.mean(), [0.8, np.nan])
        np.testing.assert_allclose(r.layer_mean(), [0.9, 0.7, np.nan])
    np.testing.assert_array_equal(r.last, sim[1])
    with pytest.raises(ValueError):
        r.similarity[0, 0] = 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.layers = ()
    assert list(r.as_dict()) == ["top", "bottom"]
    lines = r.table().splitlines()
    assert len(lines) == 3 and "0.800  [0.700, 0.900]" in lines[1] and "all NaN" in lines[2]
    with pytest.raises(ValueError, match="one row per layer"):
        metrics.RandomisationResult(("top",), sim, "top_down", "spearman")
    with pytest.raises(ValueError, match="layer_order='sideways'"):
        metrics.RandomisationResult(("a", "b"), sim, "sideways", "spearman")


# ------------------------------------------------------------------------- the assertions


def _learned(seed=0):
    """A classifier whose weights are what training gives on "class c = sign of the sum of
    block c": each hidden unit reads one block of 8 features (set by hand, no training)."""
    rng = np.random.default_rng(seed)
    w1 = 0.05 * rng.normal(size=(48, 6))
    for j in range(6):
        w1[8 * (j // 2):8 * (j // 2) + 8, j] += rng.uniform(0.2, 0.5, size=8)
    w2 = np.kron(np.eye(3), np.ones((2, 1))) + 0.05 * rng.normal(size=(6, 3))
    model = keras.Sequential([keras.Input((48,)), keras.layers.Dense(6, activation="tanh"),
                              keras.layers.Dense(3)])
    model.set_weights([w1, np.zeros(6), w2, np.zeros(3)])
    return model


X48 = RNG.normal(size=(6, 48)).astype("float32")
T48 = np.array([0, 1, 2, 0, 1, 2])


def test_assert_mprt_passes_on_learned_weights_and_applies_its_bound():
    explainer = tfm.SmoothGrad(_learned(), num_samples=8, seed=0)
    result = sanity.assert_mprt(explainer, X48, T48)
    last = result.mean()[-1]
    assert last <= sanity.MAX_SIMILARITY
    with pytest.raises(AssertionError, match=f"= {last:.4f} > max_similarity = {last - 0.01}"):
        sanity.assert_mprt(explainer, X48, T48, max_similarity=last - 0.01)


def test_assert_mprt_fails_on_maps_that_ignore_the_weights():
    broken = tfm.SmoothGrad(_learned(), attribution=lambda f, x: x * 1.0, num_samples=4, seed=0)
    with pytest.raises(AssertionError) as info:
        sanity.assert_mprt(broken, X48, T48, seed=3)
    message = str(info.value)
    print(message)  # shown with -s: what a user sees
    assert "MPRT: the explanations stay similar" in message
    assert "after randomising all 2 weighted layers = 1.0000 > max_similarity = 0.5" in message
    lines = message.splitlines()
    steps = [line for line in lines if line.strip().startswith(("1 ", "2 "))]
    top_down = [layer.name for layer in broken.model.layers if layer.weights][::-1]
    assert [s.split()[1] for s in steps] == top_down
    assert all("1.000  [1.000, 1.000]" in s for s in steps)
    assert "Reproduce with seed=3 (the explainer's seed=0)" in message


def test_assert_mprt_fails_on_constant_maps():
    flat = tfm.SmoothGrad(_learned(), attribution=lambda f, x: 0.0 * x, num_samples=2, seed=0)
    with pytest.raises(AssertionError, match=r"undefined \(NaN\) for every example"):
        sanity.assert_mprt(flat, X48, T48)


def test_assert_smooth_mprt_passes_fails_and_scales_its_samples(spy, monkeypatch):
    good = tfm.SmoothGrad(_learned(), num_samples=4, seed=0)
    result = sanity.assert_smooth_mprt(good, X48, T48, nr_samples=3)
    assert result.layer_order == "bottom_up" and result.mean()[-1] <= 0.5
    monkeypatch.setenv(config.ENV_SAMPLES, "0.5")
    broken = spy(_learned(), attribution=lambda f, x: x * 1.0, num_samples=2, seed=0)
    with pytest.raises(AssertionError, match=r"Smooth-MPRT \(2 noisy copies\).* = 1.0000 >"):
        sanity.assert_smooth_mprt(broken, X48, T48, nr_samples=4)
    assert len(spy.calls) == 2 * 3  # 4 copies x 0.5, for the trained model and two steps

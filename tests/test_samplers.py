"""Antithetic sampling: unbiased, exact where the gradient is affine in the noise, honest errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_engine import linear_model, mlp, sine_model

import reference
import tfmollify as tfm
from tfmollify import sampling

KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect")


def quadratic(v: tf.Tensor) -> tf.Tensor:
    """f(x) = sum_i c_i x_i^2: its gradient 2 c x is affine in x, so in the noise."""
    c = tf.constant([0.5, -1.0, 2.0, 0.25], v.dtype)
    return tf.reduce_sum(c * v * v, axis=1, keepdims=True)


@pytest.mark.parametrize("kernel", KERNELS)
def test_antithetic_is_exact_when_the_gradient_is_affine_in_the_noise(kernel):
    x = np.array([[0.3, -1.2, 2.0, 0.7], [1.0, 0.0, -0.5, 3.0]])
    exact = 2 * np.array([0.5, -1.0, 2.0, 0.25]) * x
    got = tfm.SmoothGrad(quadratic, kernel=kernel, num_samples=6, epsilon=0.8, seed=1,
                         sampler="antithetic")(x)
    np.testing.assert_allclose(got, exact, rtol=1e-12, atol=1e-12)
    iid = tfm.SmoothGrad(quadratic, kernel=kernel, num_samples=6, epsilon=0.8, seed=1)(x)
    assert np.abs(iid - exact).max() > 1e-3  # i.i.d. noise does not cancel
    # NoiseGrad on a linear model: the input gradient W (1 + delta z) is affine in z
    w = np.random.default_rng(0).normal(size=(4, 3))
    model = linear_model(w, "float64")
    ng = tfm.NoiseGrad(model, kernel=kernel if kernel != "poisson" else "rect",
                       num_weight_samples=4, seed=3, sampler="antithetic")(x, [0, 2])
    np.testing.assert_allclose(ng, w.T[[0, 2]], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", ["gaussian", "rect", "sigmoid"])
def test_antithetic_sg_is_unbiased_on_the_sine_model_with_honest_errors(kernel):
    """f = sum sin(x): the exact mollified gradient is cos(x) chi(eps); an antithetic pair's
    mean is cos(x) cos(eps z), whose variance is cos^2 x ((1 + chi(2 eps))/2 - chi(eps)^2)."""
    x = np.linspace(-2.0, 2.5, 12).reshape(2, 6)
    eps, n = 0.7, 4000
    f = lambda v: tf.reduce_sum(tf.sin(v), axis=1, keepdims=True)  # noqa: E731
    est, se = tfm.SmoothGrad(f, kernel=kernel, num_samples=n, epsilon=eps, seed=5,
                             sampler="antithetic").explain(x, return_stderr=True)
    exact = reference.sg_sine_grad(x, eps, kernel)
    chi, chi2 = reference.char_fn(kernel, eps), reference.char_fn(kernel, 2 * eps)
    pair_sd = np.abs(np.cos(x)) * np.sqrt((1 + chi2) / 2 - chi**2)
    true_se = pair_sd / np.sqrt(n / 2)
    np.testing.assert_allclose(se, true_se, rtol=0.1)
    assert np.max(np.abs(est - exact) / true_se) < 4.5
    # against i.i.d. at the same n: the odd part sin(x) sin(eps z) cancels within pairs, the even
    # part cos(x) cos(eps z) is counted twice; antithetic wins where sin^2 x dominates
    iid_var = (1 + np.cos(2 * x) * chi2) / 2 - (np.cos(x) * chi) ** 2
    gain = iid_var / (2 * pair_sd**2)
    odd = np.sin(x) ** 2 > 0.9
    assert np.all(gain[odd] > 1.5) and np.all(gain[np.cos(x) ** 2 > 0.9] < 1.0), gain


def test_antithetic_ng_and_fg_match_quadrature():
    w, x0, delta, eps = 1.3, 0.8, 0.3, 0.4
    model = sine_model(w)
    x = np.array([[x0], [-1.1]])
    ng, ng_se = tfm.NoiseGrad(model, kernel="gaussian", num_weight_samples=3000,
                              weight_epsilon=delta, seed=2, sampler="antithetic").explain(
        x, targets=0, return_stderr=True
    )
    want = np.array([reference.ng_sine_grad(v, w, delta, "gaussian") for v in x[:, 0]])
    assert np.all(np.abs(ng[:, 0] - want) < 4.5 * ng_se[:, 0]), (ng[:, 0], want, ng_se[:, 0])
    fg, fg_se = tfm.FusionGrad(model, kernel="rect", num_weight_samples=600, num_samples=8,
                               weight_epsilon=delta, epsilon=eps, seed=3,
                               sampler="antithetic").explain(x, targets=0, return_stderr=True)
    want = np.array([reference.fg_sine_grad(v, w, delta, eps, "rect") for v in x[:, 0]])
    assert np.all(np.abs(fg[:, 0] - want) < 4.5 * fg_se[:, 0]), (fg[:, 0], want, fg_se[:, 0])


def test_antithetic_stderr_matches_the_spread_over_seeds():
    model = mlp()
    x = np.random.default_rng(3).normal(size=(2, 5)).astype(np.float32)
    for mode in ("sg", "ng", "fg"):
        e = tfm.Explainer(model, mode=mode, num_samples=20, num_weight_samples=6, epsilon=0.5,
                          sampler="antithetic")
        runs, ses = zip(*[e.explain(x, [0, 2], return_stderr=True) for _ in range(40)], strict=True)
        ratio = np.std(runs, axis=0, ddof=1).mean() / np.mean(ses, axis=0).mean()
        assert 0.7 < ratio < 1.35, (mode, ratio)


@pytest.mark.parametrize("mode", ["sg", "ng", "fg"])
def test_antithetic_noise_is_the_documented_pairs_and_chunking_changes_nothing(mode):
    model = mlp(seed=2)
    x = np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32)
    kw = dict(mode=mode, kernel="sigmoid", num_samples=6, num_weight_samples=4, seed=7,
              sampler="antithetic", aggregation="vargrad")
    whole, se = tfm.Explainer(model, **kw).explain(x, [0, 1, 2], return_stderr=True)
    for batch_size in (2, 4, 10):
        part, se_part = tfm.Explainer(model, batch_size=batch_size, **kw).explain(
            x, [0, 1, 2], return_stderr=True
        )
        np.testing.assert_allclose(part, whole, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(se_part, se, rtol=1e-4, atol=1e-7)
    z = sampling.input_noise(tfm.kernels.get("sigmoid"), [11, 12], 0, 6, 5, antithetic=True)
    np.testing.assert_allclose(z[:, 1::2], -z[:, 0::2], atol=1e-6)
    iid = sampling.input_noise(tfm.kernels.get("sigmoid"), [11, 12], 0, 3, 5)
    np.testing.assert_array_equal(z[:, 0::2], iid)  # pair p uses stream index p


def test_antithetic_export_and_argument_checks(tmp_path):
    model = mlp(seed=1)
    x = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    explainer = tfm.FusionGrad(model, num_samples=4, num_weight_samples=2, seed=0,
                               sampler="antithetic")
    fn = tf.saved_model.load(explainer.export(str(tmp_path))).signatures["serving_default"]
    seeds = np.array([3, 4], np.int64)
    got = fn(inputs=tf.constant(x), targets=tf.constant([0, 1]), seeds=tf.constant(seeds))
    np.testing.assert_allclose(got["attributions"].numpy(),
                               explainer.explain(x, [0, 1], seeds=seeds), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="`num_samples` must be even"):
        tfm.SmoothGrad(model, num_samples=5, sampler="antithetic")
    with pytest.raises(ValueError, match="`num_weight_samples` must be even"):
        tfm.NoiseGrad(model, num_weight_samples=3, sampler="antithetic")
    with pytest.raises(ValueError, match="`batch_size` must be at least 2"):
        tfm.SmoothGrad(model, num_samples=4, batch_size=1, sampler="antithetic")
    with pytest.raises(ValueError, match="`sampler`"):
        tfm.SmoothGrad(model, sampler="sobol")


# -- adaptive stopping ------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["iid", "antithetic"])
def test_tolerance_stops_when_the_relative_error_is_met(sampler):
    """f = sum sin(x): the first round alone misses the tolerance; more rounds meet it, and the
    estimate stays within its (honest) error of the exact answer."""
    x = np.linspace(-2.0, 2.5, 12).reshape(2, 6)
    f = lambda v: tf.reduce_sum(tf.sin(v), axis=1, keepdims=True)  # noqa: E731
    kw = dict(kernel="gaussian", num_samples=50, epsilon=0.7, seed=5, sampler=sampler)
    one, one_se = tfm.SmoothGrad(f, **kw).explain(x, return_stderr=True)
    rel_one = np.linalg.norm(one_se, axis=1) / np.linalg.norm(one, axis=1)
    tol = 0.3 * rel_one.min()
    e = tfm.SmoothGrad(f, tolerance=tol, max_samples=50 * 400, **kw)
    est, se = e.explain(x, return_stderr=True)
    rel = np.linalg.norm(se, axis=1) / np.linalg.norm(est, axis=1)
    assert np.all(rel <= tol), (rel, tol)
    used = e.last_num_samples
    assert np.all(used > 50) and np.all(used % 50 == 0) and np.all(used < 50 * 400)
    # a relative error of 1/sqrt(n): (rel_one / tol)^2 rounds, roughly
    assert np.all(used <= 50 * 3 * (rel_one / tol) ** 2), used
    exact = reference.sg_sine_grad(x, 0.7, "gaussian")
    assert np.max(np.abs(est - exact) / se) < 4.5
    # round 0 is the plain call; an example's rounds do not depend on its batch-mates
    alone = e.explain(x[1:], return_stderr=False, seeds=sampling.example_seeds(5, 2)[1:])
    np.testing.assert_allclose(alone, est[1:], rtol=1e-6, atol=1e-9)


def test_tolerance_for_weight_noise_and_its_limits(tmp_path):
    model = mlp(seed=3)
    x = np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32)
    e = tfm.FusionGrad(model, num_samples=4, num_weight_samples=4, seed=1, tolerance=0.05,
                       max_samples=16 * 30)
    a, se = e.explain(x, [0, 1, 2], return_stderr=True)
    rel = np.linalg.norm(se, axis=1) / np.linalg.norm(a, axis=1)
    met = rel <= 0.05
    assert np.all(met | (e.last_num_samples == 16 * 30))  # met, or stopped at max_samples
    assert np.all(e.last_num_samples % 16 == 0)
    with pytest.raises(ValueError, match="`tolerance` supports"):
        tfm.SmoothGrad(model, tolerance=0.1, aggregation="vargrad")
    with pytest.raises(ValueError, match="`max_samples` must be at least one round"):
        tfm.SmoothGrad(model, tolerance=0.1, num_samples=50, max_samples=10)
    with pytest.raises(ValueError, match="`tolerance`"):
        tfm.SmoothGrad(model, tolerance=-1)
    with pytest.raises(ValueError, match="cannot be exported"):
        e.export(str(tmp_path))
    with pytest.raises(ValueError, match=r"tolerance=0\.05"):
        tfm.explain_dataset(e, [(x, [0, 1, 2])], progress=False)

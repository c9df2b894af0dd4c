"""Tests of ``reference.adaptgrad``: AdaptGrad's per-element noise scale (no TensorFlow here).

The scale is checked against the Gaussian closed form (SciPy and 40-digit mpmath), against eq. 30
per element for every kernel, and against quadrature; the probability of staying inside the range
against SciPy's distributions and Monte Carlo (fixed seeds, tolerance ``Z_MAX`` binomial standard
errors); the identity behind ``P(inside) >= alpha`` with SymPy.
"""

from __future__ import annotations

import ast
import doctest
import math
import pathlib

import mpmath
import numpy as np
import pytest
import scipy.stats
import sympy as sp
from scipy import integrate, special

import reference
from reference import adaptgrad, kernels, proofs
from reference import scale as eq30

KERNELS = kernels.KERNEL_NAMES
FINITE_VARIANCE = ("gaussian", "hyperbolic", "sigmoid", "rect")
SCIPY = {
    "gaussian": scipy.stats.norm(),
    "poisson": scipy.stats.cauchy(),
    "hyperbolic": scipy.stats.logistic(scale=0.5),
    "sigmoid": scipy.stats.logistic(),
    "rect": scipy.stats.uniform(loc=-1.0, scale=2.0),
}
ALPHAS = (0.05, 0.3, 0.5, 0.9, 0.95, 0.999)
Z_MAX = 4.5  # Monte Carlo z-score bound (fixed seeds)


def _grid(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points with per-element bounds: random interior points, both bounds, the centre."""
    low = rng.uniform(-3.0, 1.0, size=40)
    high = low + rng.uniform(0.01, 5.0, size=40)
    x = low + rng.uniform(0.0, 1.0, size=40) * (high - low)
    x[:3] = low[:3]  # on the lower bound
    x[3:6] = high[3:6]  # on the upper bound
    x[6:9] = 0.5 * (low[6:9] + high[6:9])  # the centre
    return x, low, high


def test_sources_import_no_tensorflow():
    paths = [pathlib.Path(adaptgrad.__file__), pathlib.Path(__file__)]
    for path in paths:
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
        assert not names & {"tensorflow", "keras", "tfmollify"}, path


def test_docstring_examples():
    # reference/ is not in pytest's doctest paths, so the examples are run here
    result = doctest.testmod(adaptgrad, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0


def test_exports():
    assert reference.adaptgrad is adaptgrad
    assert reference.adaptive_scale is adaptgrad.scale
    assert reference.inside_probability is adaptgrad.inside_probability
    assert reference.noise_variance is adaptgrad.noise_variance
    # the package attribute `reference.scale` is still the eq. 30 module, not shadowed
    assert reference.scale is eq30 and callable(reference.scale.epsilon)


# --------------------------------------------------------------------------------------------
# The scale
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", ALPHAS)
def test_gaussian_closed_form_every_element(alpha):
    x, low, high = _grid(np.random.default_rng(0))
    eps = adaptgrad.scale("gaussian", x, low, high, alpha)
    assert eps.dtype == np.float64 and eps.shape == x.shape
    t = np.minimum(x - low, high - x)
    np.testing.assert_allclose(
        eps, t / (math.sqrt(2.0) * special.erfinv(alpha)), rtol=2e-15, atol=0
    )
    # 40-digit mpmath from the raw inputs, independent of SciPy and of the reference's t
    with mpmath.workdps(40):
        for xi, lo, hi, ei in zip(x, low, high, eps, strict=True):
            ti = min(mpmath.mpf(xi) - mpmath.mpf(lo), mpmath.mpf(hi) - mpmath.mpf(xi))
            ref = ti / (mpmath.sqrt(2) * mpmath.erfinv(mpmath.mpf(alpha)))
            assert ei == pytest.approx(float(ref), rel=1e-14, abs=1e-300)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_eq30_per_element(name, alpha):
    x, low, high = _grid(np.random.default_rng(1))
    eps = adaptgrad.scale(name, x, low, high, alpha)
    t = np.minimum(x - low, high - x)
    expected = np.array([eq30.epsilon(name, ti, alpha) if ti > 0 else 0.0 for ti in t])
    np.testing.assert_allclose(eps, expected, rtol=1e-15, atol=0)
    # eps is proportional to t, with the kernel's quantile: t / eps = F^-1((1 + alpha)/2)
    pos = t > 0
    q = SCIPY[name].ppf(0.5 * (1.0 + alpha))
    np.testing.assert_allclose(t[pos] / eps[pos], q, rtol=1e-12)
    assert adaptgrad.quantile(name, alpha) == pytest.approx(q, rel=1e-12)
    # the defining property on every element: P(|eps Z| <= t) = 2 F(t/eps) - 1 = alpha
    np.testing.assert_allclose(2.0 * SCIPY[name].cdf(t[pos] / eps[pos]) - 1.0, alpha, rtol=1e-12)


@pytest.mark.parametrize("name", KERNELS)
def test_coverage_by_quadrature(name):
    # P(|eps Z| <= t) = 2 int_0^t phi_eps, by QUADPACK on the density: alpha on each element
    x = np.array([0.1, 0.37, 0.5, 0.9])
    eps = adaptgrad.scale(name, x, 0.0, 1.0, 0.8)
    t = np.minimum(x, 1.0 - x)
    for ti, ei in zip(t, eps, strict=True):
        assert eq30.coverage(name, ti, ei) == pytest.approx(0.8, abs=1e-10)


def test_element_on_a_bound_gets_no_noise():
    x = np.array([[0.0, 1.0], [0.0, 0.5]])
    for name in KERNELS:
        eps = adaptgrad.scale(name, x, 0.0, 1.0, 0.95)
        assert eps[0, 0] == 0.0 and eps[0, 1] == 0.0 and eps[1, 0] == 0.0 and eps[1, 1] > 0.0
        p = adaptgrad.inside_probability(name, x, 0.0, 1.0, eps)
        assert p[0, 0] == 1.0 and p[0, 1] == 1.0 and p[1, 0] == 1.0
        # the limit t -> 0 of the rule: eps -> 0 continuously
        tiny = adaptgrad.scale(name, [1e-300, 1e-12], 0.0, 1.0, 0.95)
        assert np.all(tiny > 0) and tiny[0] < 1e-299


def test_aliases_shapes_and_broadcast_bounds():
    rng = np.random.default_rng(2)
    x = rng.uniform(0.0, 1.0, size=(2, 3, 4))
    low = np.array([-0.5, 0.0, -1.0]).reshape(3, 1)  # per "channel"
    high = np.array([1.0, 2.0, 1.5]).reshape(3, 1)
    for alias, name in kernels.KERNEL_ALIASES.items():
        np.testing.assert_array_equal(
            adaptgrad.scale(alias, x, low, high, 0.9), adaptgrad.scale(name, x, low, high, 0.9)
        )
    eps = adaptgrad.scale("Gaussian", x, low, high, 0.9)
    assert eps.shape == x.shape
    lo_full = np.broadcast_to(low, x.shape)
    hi_full = np.broadcast_to(high, x.shape)
    np.testing.assert_array_equal(eps, adaptgrad.scale("gaussian", x, lo_full, hi_full, 0.9))
    scalar = adaptgrad.scale("gaussian", 0.25, 0, 1, np.float32(0.5))
    assert scalar.shape == () and scalar.dtype == np.float64
    ints = adaptgrad.scale("rect", [1, 3], 0, 4, 0.5)  # integer inputs are fine
    assert ints.tolist() == [2.0, 2.0]


def test_one_sided_range():
    # high = inf: t is the distance to `low`; P(inside) = (1 + alpha)/2 exactly, every kernel
    x = np.array([0.0, 0.3, 2.0, 50.0])
    for name in KERNELS:
        eps = adaptgrad.scale(name, x, 0.0, np.inf, 0.9)
        np.testing.assert_allclose(eps, x / adaptgrad.quantile(name, 0.9), rtol=1e-15)
        p = adaptgrad.inside_probability(name, x, 0.0, np.inf, eps)
        assert p[0] == 1.0
        np.testing.assert_allclose(p[1:], 0.95, rtol=1e-14)
        neg = adaptgrad.scale(name, -x, -np.inf, 0.0, 0.9)  # low = -inf
        np.testing.assert_array_equal(neg, eps)


def test_port_of_adaptgrad_code_agrees_inside_the_range():
    """A NumPy port of AdaptedBound + AdaptedGaussianSigma (saliency.py, float32 like theirs)."""

    def adaptgrad_sigma(x, lower, upper, alpha):
        x = np.asarray(x, np.float32)
        min_abs = np.minimum(np.abs(x - np.float32(lower)), np.abs(x - np.float32(upper)))
        lo, up = -min_abs, min_abs
        t = (up - lo) / 2
        return t / (np.sqrt(2) * special.erfinv(np.float32(alpha)))

    x = np.linspace(-2.117904, 2.64, 101)  # their ImageNet range
    ours = adaptgrad.scale("gaussian", x, -2.117904, 2.64, 0.95)
    np.testing.assert_allclose(ours, adaptgrad_sigma(x, -2.117904, 2.64, 0.95), rtol=2e-6)
    # outside the range their code still returns a scale (distance to the nearer bound) ...
    assert adaptgrad_sigma([1.5], 0.0, 1.0, 0.95)[0] > 0
    # ... where the reference refuses
    with pytest.raises(ValueError, match="outside"):
        adaptgrad.scale("gaussian", [1.5], 0.0, 1.0, 0.95)


# --------------------------------------------------------------------------------------------
# Staying inside
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_inside_probability_between_alpha_and_its_upper_value(name, alpha):
    x, low, high = _grid(np.random.default_rng(3))
    eps = adaptgrad.scale(name, x, low, high, alpha)
    p = adaptgrad.inside_probability(name, x, low, high, eps)
    t, t_far = adaptgrad.bound_distances(x, low, high)
    pos = eps > 0
    assert np.all(p[~pos] == 1.0)
    assert np.all(p[pos] >= alpha - 1e-14)
    assert np.all(p[pos] <= 0.5 * (1.0 + alpha) + 1e-14)
    # P(inside) = alpha/2 + P(0 <= eps Z <= t_far), and the gap above alpha is F(q T/t) - F(q)
    dist = SCIPY[name]
    half_far = dist.cdf(t_far[pos] / eps[pos]) - 0.5
    np.testing.assert_allclose(p[pos], 0.5 * alpha + half_far, rtol=1e-12, atol=1e-15)
    q = adaptgrad.quantile(name, alpha)
    gap = dist.cdf(q * t_far[pos] / t[pos]) - dist.cdf(q)
    np.testing.assert_allclose(p[pos] - alpha, gap, rtol=1e-9, atol=1e-14)
    # equality exactly at the centre (dyadic, so that t = t_far in floating point) ...
    centre = adaptgrad.inside_probability(
        name, 0.5, 0.0, 1.0, adaptgrad.scale(name, 0.5, 0.0, 1.0, alpha)
    )
    assert float(centre) == pytest.approx(alpha, rel=1e-14)
    # ... and strictly above alpha off the centre
    off = np.array([0.1, 0.25, 0.4, 0.6, 0.999])
    p_off = adaptgrad.inside_probability(
        name, off, 0.0, 1.0, adaptgrad.scale(name, off, 0.0, 1.0, alpha)
    )
    assert np.all(p_off > alpha)


@pytest.mark.parametrize("name", KERNELS)
def test_inside_probability_against_scipy_and_quadrature(name):
    rng = np.random.default_rng(4)
    x, low, high = _grid(rng)
    eps = rng.uniform(0.01, 3.0, size=x.shape)  # any scale, not only AdaptGrad's
    p = adaptgrad.inside_probability(name, x, low, high, eps)
    dist = SCIPY[name]
    ref = dist.cdf((high - x) / eps) - dist.cdf((low - x) / eps)
    np.testing.assert_allclose(p, ref, rtol=1e-12, atol=1e-15)
    for i in range(0, x.size, 7):
        lo_z, hi_z = (low[i] - x[i]) / eps[i], (high[i] - x[i]) / eps[i]
        if name == "rect":  # the density is 0 outside [-1, 1]: integrate over the support only
            lo_z, hi_z = max(lo_z, -1.0), min(hi_z, 1.0)
        val, _ = integrate.quad(lambda z: float(kernels.pdf(name, z)), lo_z, hi_z, epsabs=1e-13)
        assert p[i] == pytest.approx(val, abs=1e-10)


def test_inside_probability_rect_reaches_the_upper_value():
    # rect: eps = t/alpha; P(inside) = (1 + alpha)/2 iff t_far >= eps, else alpha/2 + t_far/(2 eps)
    alpha = 0.5
    x = np.array([0.2, 0.25, 0.4])  # t = x, t_far = 1 - x, eps = 2x
    eps = adaptgrad.scale("rect", x, 0.0, 1.0, alpha)
    np.testing.assert_allclose(eps, 2.0 * x, rtol=1e-15)
    p = adaptgrad.inside_probability("rect", x, 0.0, 1.0, eps)
    assert p[0] == pytest.approx(0.75, rel=1e-15)  # t_far = 0.8 >= eps = 0.4
    assert p[1] == pytest.approx(0.75, rel=1e-15)  # t_far = 0.75 >= eps = 0.5
    assert p[2] == pytest.approx(0.25 + 0.6 / 1.6, rel=1e-15)  # t_far = 0.6 < eps = 0.8
    assert alpha < p[2] < 0.75


@pytest.mark.parametrize("name", KERNELS)
def test_monte_carlo_coverage(name):
    rng = np.random.default_rng(12345)
    alpha = 0.8
    low = np.array([0.0, 0.0, 0.0, 0.0, -1.0, -2.0, 0.0])
    high = np.array([1.0, 1.0, 1.0, 1.0, 3.0, 0.0, np.inf])
    x = np.array([0.0, 0.05, 0.5, 0.9, 0.0, -0.3, 0.7])
    eps = adaptgrad.scale(name, x, low, high, alpha)
    t, _ = adaptgrad.bound_distances(x, low, high)
    p = adaptgrad.inside_probability(name, x, low, high, eps)
    n = 20_000
    noisy = x + eps * SCIPY[name].rvs(size=(n, x.size), random_state=rng)
    near = np.mean(np.abs(noisy - x) <= t, axis=0)
    inside = np.mean((noisy >= low) & (noisy <= high), axis=0)
    zero = eps == 0
    assert zero.tolist() == [True, False, False, False, False, False, False]
    assert near[zero].tolist() == [1.0] and inside[zero].tolist() == [1.0]
    se_near = math.sqrt(alpha * (1 - alpha) / n)
    np.testing.assert_array_less(np.abs(near[~zero] - alpha), Z_MAX * se_near)
    se_inside = np.sqrt(p * (1 - p) / n)
    np.testing.assert_array_less(np.abs(inside[~zero] - p[~zero]), Z_MAX * se_inside[~zero])


# --------------------------------------------------------------------------------------------
# Noise variance
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FINITE_VARIANCE)
def test_noise_variance(name):
    x = np.array([0.0, 0.1, 0.5, 0.75])
    eps = adaptgrad.scale(name, x, 0.0, 1.0, 0.9)
    var = adaptgrad.noise_variance(name, eps)
    np.testing.assert_allclose(var, eps**2 * SCIPY[name].var(), rtol=1e-14)
    assert var[0] == 0.0
    if name == "gaussian":
        t = np.minimum(x, 1 - x)
        np.testing.assert_allclose(var, t**2 / (2 * special.erfinv(0.9) ** 2), rtol=1e-14)
    # Monte Carlo: the sample variance of x + eps Z, within Z_MAX standard errors
    rng = np.random.default_rng(7)
    n = 100_000
    noisy = x + eps * SCIPY[name].rvs(size=(n, x.size), random_state=rng)
    sample_var = noisy.var(axis=0, ddof=1)
    kurt = float(SCIPY[name].stats(moments="k")) + 3.0
    se = var * math.sqrt((kurt - 1.0) / n)
    assert sample_var[0] == 0.0
    np.testing.assert_array_less(np.abs(sample_var[1:] - var[1:]), Z_MAX * se[1:])


def test_noise_variance_rejects_poisson_and_bad_eps():
    for name in ("poisson", "cauchy"):
        with pytest.raises(ValueError, match="finite variance"):
            adaptgrad.noise_variance(name, [0.1])
    for bad in (-0.1, np.inf, np.nan):
        with pytest.raises(ValueError, match="eps"):
            adaptgrad.noise_variance("gaussian", [0.1, bad])


# --------------------------------------------------------------------------------------------
# Proofs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KERNELS)
def test_sympy_inside_identity(name):
    assert adaptgrad.prove_inside_identity(name)


def test_sympy_inside_identity_can_fail():
    x = sp.Symbol("x", real=True)
    assert not adaptgrad.inside_identity_holds((1 + sp.erf(x - 1)) / 2, x)  # N(1, 1/2): shifted
    shifted = sp.Piecewise((0, x < -1), ((x + 1) / 3, x <= 2), (1, True))  # rect on [-1, 2]
    assert not adaptgrad.inside_identity_holds(shifted, x)


@pytest.mark.parametrize("name", KERNELS)
def test_sympy_scale_solves_eq30(name):
    # The rule's eps = t / q_alpha is eq. 30's closed form with r = t, which SymPy proves in
    # tests/test_reference.py (proofs.verify_all: "epsilon_closed_form"); here the module's
    # quantile is checked against that closed form's r / eps at 30 digits.
    for a in (0.05, 0.5, 0.95, 0.999):
        exact = sp.Rational(a)  # the binary value of the float (tan near pi/2 amplifies errors)
        sym = proofs.R / proofs.epsilon_closed_form(name).subs(proofs.ALPHA, exact)
        # poisson: tan(pi alpha/2) turns the rounding of pi alpha/2 into a relative error of up
        # to pi alpha / sin(pi alpha) ulps (1000 at alpha = 0.999), in reference.scale.epsilon
        cond = math.pi * a / math.sin(math.pi * a) if name == "poisson" else 1.0
        rel = 4e-16 * max(1.0, cond)
        assert adaptgrad.quantile(name, a) == pytest.approx(float(sp.N(sym, 30)), rel=rel)


# --------------------------------------------------------------------------------------------
# Argument errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"low": 1.0, "high": 1.0}, ValueError, "low < high"),
        ({"low": 2.0, "high": 1.0}, ValueError, "low < high"),
        ({"low": [0.0, 1.0], "high": [1.0, 0.5]}, ValueError, "low < high"),
        ({"x": [0.5, 1.5]}, ValueError, r"x\[1\]=1\.5 is outside"),
        ({"x": [-0.1, 0.5]}, ValueError, "outside"),
        ({"x": [np.inf, 0.5]}, ValueError, "`x` must be finite"),
        ({"x": [np.nan, 0.5]}, ValueError, "`x` must not contain NaN"),
        ({"low": np.nan}, ValueError, "`low` must not contain NaN"),
        ({"high": [np.nan, 1.0]}, ValueError, "`high` must not contain NaN"),
        ({"low": -np.inf, "high": np.inf}, ValueError, "both be infinite"),
        ({"low": np.inf}, ValueError, "low < inf"),
        ({"high": -np.inf}, ValueError, "high > -inf"),
        ({"low": [0.0, 0.0, 0.0]}, ValueError, "does not broadcast"),
        ({"alpha": 0.0}, ValueError, r"open interval \(0, 1\). Received: alpha=0.0"),
        ({"alpha": 1.0}, ValueError, "open interval"),
        ({"alpha": -0.5}, ValueError, "open interval"),
        ({"alpha": np.nan}, ValueError, "open interval"),
        ({"alpha": True}, TypeError, "alpha"),
        ({"alpha": "0.5"}, TypeError, "alpha"),
        ({"alpha": [0.5]}, TypeError, "real scalar"),
        ({"x": ["a", "b"]}, TypeError, "`x` must be a real number"),
        ({"x": [0.5 + 1j, 0.5]}, TypeError, "`x` must be real"),
        ({"kernel_name": "laplace"}, ValueError, "laplace"),
    ],
)
def test_scale_argument_errors(kwargs, err, match):
    args = {"kernel_name": "gaussian", "x": [0.5, 0.25], "low": 0.0, "high": 1.0, "alpha": 0.9}
    args.update(kwargs)
    with pytest.raises(err, match=match):
        adaptgrad.scale(**args)


def test_inside_probability_argument_errors():
    for bad in (-1e-3, np.inf, np.nan):
        with pytest.raises(ValueError, match="eps"):
            adaptgrad.inside_probability("gaussian", [0.5, 0.2], 0.0, 1.0, [0.1, bad])
    with pytest.raises(ValueError, match="does not broadcast"):
        adaptgrad.inside_probability("gaussian", [0.5, 0.2], 0.0, 1.0, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="outside"):
        adaptgrad.inside_probability("gaussian", [1.5], 0.0, 1.0, 0.1)

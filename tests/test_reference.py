"""Tests of the independent NumPy/SciPy/SymPy reference (``reference/``).

Nothing here imports TensorFlow, Keras or tfmollify. Tests named ``test_finding_*`` back the
items of ``reference/FINDINGS.md``. Random tests use fixed seeds and tolerances of a few Monte
Carlo standard errors.
"""

from __future__ import annotations

import ast
import math
import pathlib
import subprocess
import sys
import warnings

import mpmath
import numpy as np
import pytest
import scipy.stats
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special

import reference
from reference import example, oracles, paper, proofs

ROOT = pathlib.Path(__file__).resolve().parents[1]
KERNELS = reference.KERNEL_NAMES
FINITE_MEAN_KERNELS = ("gaussian", "hyperbolic", "sigmoid", "rect")
SCIPY = {
    "gaussian": scipy.stats.norm(),
    "poisson": scipy.stats.cauchy(),
    "hyperbolic": scipy.stats.logistic(scale=0.5),
    "sigmoid": scipy.stats.logistic(),
    "rect": scipy.stats.uniform(loc=-1.0, scale=2.0),
}
HYPOTHESIS = settings(derandomize=True, deadline=None, database=None, max_examples=60)
Z_MAX = 4.5  # Monte Carlo z-score bound (fixed seeds; about 1 in 150000 per check if unlucky)



@pytest.fixture(scope="module")
def proof_results():
    return proofs.verify_all()


# --------------------------------------------------------------------------------------------
# Independence from TensorFlow
# --------------------------------------------------------------------------------------------


def test_reference_does_not_import_tensorflow():
    code = (
        "import sys, reference; "
        "bad = [m for m in ('tensorflow', 'keras', 'tfmollify') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize(
    "path",
    [*sorted((ROOT / "reference").glob("*.py")), pathlib.Path(__file__)],
    ids=lambda p: p.name,
)
def test_sources_import_no_tensorflow(path):
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert not names & {"tensorflow", "keras", "tfmollify"}


# --------------------------------------------------------------------------------------------
# Kernels: names, SciPy, SymPy, tails, properties
# --------------------------------------------------------------------------------------------


def test_canonical_name():
    assert reference.KERNEL_NAMES == ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect")
    assert reference.canonical_name("Cauchy") == "poisson"
    assert reference.canonical_name("LOGISTIC") == "sigmoid"
    assert reference.canonical_name("uniform") == "rect"
    for name in KERNELS:
        assert reference.canonical_name(name.upper()) == name
    with pytest.raises(ValueError, match="Received: name='laplace'"):
        reference.canonical_name("laplace")
    with pytest.raises(ValueError):
        reference.canonical_name(3)


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_against_scipy(name):
    dist = SCIPY[name]
    x = np.concatenate([np.linspace(-30, 30, 601), [-1e3, -0.999999, 0.999999, 1e3]])
    np.testing.assert_allclose(reference.pdf(name, x), dist.pdf(x), rtol=1e-13, atol=0)
    np.testing.assert_allclose(reference.cdf(name, x), dist.cdf(x), rtol=1e-12, atol=1e-300)
    finite = np.isfinite(dist.logpdf(x))
    np.testing.assert_allclose(
        reference.logpdf(name, x)[finite], dist.logpdf(x)[finite], rtol=1e-13, atol=1e-14
    )
    u = np.concatenate([np.linspace(1e-6, 1 - 1e-6, 501), [1e-12, 0.5, 1 - 1e-12]])
    np.testing.assert_allclose(reference.icdf(name, u), dist.ppf(u), rtol=1e-11, atol=1e-14)
    if name == "poisson":  # no moments: scipy says nan (undefined), the reference inf
        assert reference.variance(name) == math.inf and math.isnan(dist.var())
    else:
        assert reference.variance(name) == pytest.approx(dist.var(), rel=1e-14)
    # scale: phi_eps(x) = phi(x/eps)/eps
    np.testing.assert_allclose(
        reference.pdf(name, x, scale=0.3), dist.pdf(x / 0.3) / 0.3, rtol=1e-13, atol=0
    )
    np.testing.assert_allclose(
        reference.icdf(name, u, scale=2.5), 2.5 * dist.ppf(u), rtol=1e-11, atol=1e-14
    )


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_against_sympy_expressions(name):
    k = reference.symbolic(name)
    assert k.name == reference.canonical_name(name)
    pdf = sp.lambdify(k.x, k.pdf, "mpmath")
    cdf = sp.lambdify(k.x, k.cdf, "mpmath")
    icdf = sp.lambdify(k.u, k.icdf, "mpmath")
    chi = sp.lambdify(k.t, k.char_fn, "mpmath")
    with mpmath.workdps(40):
        for x in (-7.5, -2.0, -0.3, 0.0, 0.7, 1.0, 3.0, 11.0):
            assert float(reference.pdf(name, x)) == pytest.approx(float(pdf(x)), rel=1e-14, abs=0)
            assert float(reference.cdf(name, x)) == pytest.approx(float(cdf(x)), rel=1e-14, abs=0)
        for u in (1e-9, 0.01, 0.3, 0.5, 0.77, 0.999):
            ref = float(icdf(mpmath.mpf(u)))
            assert float(reference.icdf(name, u)) == pytest.approx(ref, rel=1e-12, abs=1e-15)
        for t in (1e-4, 0.2, 1.0, 3.3, 20.0):
            ref = float(chi(mpmath.mpf(t)))
            assert float(reference.char_fn(name, t)) == pytest.approx(ref, rel=1e-12, abs=1e-300)


def _mp_cdf(name, x):
    x = mpmath.mpf(x)
    if name == "gaussian":
        return mpmath.ncdf(x)
    if name == "poisson":
        return mpmath.mpf(1) / 2 + mpmath.atan(x) / mpmath.pi
    if name == "hyperbolic":
        return 1 / (1 + mpmath.exp(-2 * x))
    if name == "sigmoid":
        return 1 / (1 + mpmath.exp(-x))
    return min(max((x + 1) / 2, 0), 1)


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_tails_are_stable(name):
    big = np.array(
        [-np.inf, -1e308, -1e300, -1e10, -700.0, 0.0, 1e-300, 700.0, 1e10, 1e300, 1e308, np.inf]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fn in (reference.pdf, reference.cdf, reference.logpdf):
            vals = fn(name, big)
            assert not np.any(np.isnan(vals)), (fn.__name__, vals)
        c = reference.cdf(name, big)
        assert np.all((c >= 0) & (c <= 1))
        assert c[0] == 0.0 and c[-1] == 1.0
        assert np.all(np.isfinite(reference.pdf(name, big)))
        u = np.array([0.0, 1e-300, 1e-20, 0.5, np.nextafter(1.0, 0.0), 1.0])
        q = reference.icdf(name, u)
        assert not np.any(np.isnan(q))
        assert np.all(np.diff(q) > 0) or name == "rect"
        t = np.array([0.0, 1e-8, 1.0, 1e3, 1e300, np.inf])
        assert not np.any(np.isnan(reference.char_fn(name, t)))
        assert not np.any(np.isnan(reference.char_fn_deriv(name, t)))
    assert np.all(np.isnan(reference.icdf(name, [-0.1, 1.1, np.nan])))
    # left-tail relative accuracy against 50-digit mpmath
    with mpmath.workdps(50):
        for x in (-5.0, -30.0, -1e3, -1e10):
            ref = float(_mp_cdf(name, x))
            assert float(reference.cdf(name, x)) == pytest.approx(ref, rel=1e-12, abs=1e-300)
            assert float(reference.cdf(name, -x)) == pytest.approx(1 - ref, rel=1e-15)


def test_icdf_deep_tails():
    assert reference.icdf("poisson", 1e-20) == pytest.approx(-1 / (math.pi * 1e-20), rel=1e-12)
    assert reference.icdf("sigmoid", 1e-300) == pytest.approx(math.log(1e-300), rel=1e-12)
    assert reference.icdf("hyperbolic", 1e-300) == pytest.approx(math.log(1e-300) / 2, rel=1e-12)
    assert reference.icdf("gaussian", 1e-300) == pytest.approx(
        scipy.stats.norm.ppf(1e-300), rel=1e-12
    )


_RANGES = {"gaussian": 8.0, "poisson": 1e6, "hyperbolic": 15.0, "sigmoid": 30.0, "rect": 1.0}


@pytest.mark.parametrize("name", KERNELS)
@HYPOTHESIS
@given(data=st.data())
def test_property_icdf_cdf_roundtrip_and_symmetry(name, data):
    lim = _RANGES[name]
    # left half: cdf(x) is small and exact there; the right half follows by symmetry below
    # (for x >> 0, 1 - cdf(x) is below the float64 resolution of u near 1)
    x = data.draw(st.floats(-lim, 0.0, allow_nan=False))
    back = float(reference.icdf(name, reference.cdf(name, x)))
    assert back == pytest.approx(x, rel=1e-9, abs=1e-9)
    u = data.draw(st.floats(1e-12, 1 - 1e-12))
    assert float(reference.cdf(name, reference.icdf(name, u))) == pytest.approx(u, rel=1e-12)
    x = data.draw(st.floats(-lim, lim, allow_nan=False))
    assert reference.pdf(name, x) == reference.pdf(name, -x)
    assert reference.logpdf(name, x) == reference.logpdf(name, -x)
    assert float(reference.cdf(name, x) + reference.cdf(name, -x)) == pytest.approx(1, rel=1e-15)
    eps = data.draw(st.floats(1e-3, 1e3))
    assert float(reference.pdf(name, x, scale=eps)) == pytest.approx(
        float(reference.pdf(name, x / eps)) / eps, rel=1e-14, abs=1e-300
    )


@pytest.mark.parametrize("name", KERNELS)
@HYPOTHESIS
@given(t=st.floats(-50, 50))
def test_property_char_fn_even_and_bounded(name, t):
    c = float(reference.char_fn(name, t))
    assert c == float(reference.char_fn(name, -t))
    assert abs(c) <= 1.0
    assert float(reference.char_fn_deriv(name, t)) == -float(reference.char_fn_deriv(name, -t))


@pytest.mark.parametrize("name", KERNELS)
def test_char_fn_against_quadrature(name):
    upper = 1.0 if name == "rect" else np.inf
    assert reference.char_fn(name, 0.0) == 1.0
    for t in (0.05, 0.5, 1.7, 4.0, 9.0):
        val, _ = integrate.quad(
            lambda z: float(reference.pdf(name, z)), 0, upper, weight="cos", wvar=t
        )
        assert float(reference.char_fn(name, t)) == pytest.approx(2 * val, rel=1e-8, abs=1e-10)
        # chi'(t) = -E[Z sin(tZ)] = -2 int_0^inf z phi(z) sin(tz) dz
        val, _ = integrate.quad(
            lambda z: z * float(reference.pdf(name, z)), 0, upper, weight="sin", wvar=t
        )
        assert float(reference.char_fn_deriv(name, t)) == pytest.approx(
            -2 * val, rel=1e-7, abs=1e-10
        )
        h = 1e-5
        fd = (reference.char_fn(name, t + h) - reference.char_fn(name, t - h)) / (2 * h)
        assert float(reference.char_fn_deriv(name, t)) == pytest.approx(
            float(fd), rel=1e-6, abs=1e-9
        )


@pytest.mark.parametrize("name", FINITE_MEAN_KERNELS)
def test_char_fn_deriv_series_branch(name):
    # the small-argument series and the closed form agree where they switch
    with mpmath.workdps(40):
        k = reference.symbolic(name)
        d = sp.lambdify(k.t, sp.diff(k.char_fn, k.t), "mpmath")
        for t in (1e-6, 1e-3, 0.0159, 0.0160, 0.05, 0.1):
            ref = float(d(mpmath.mpf(t)))
            assert float(reference.char_fn_deriv(name, t)) == pytest.approx(ref, rel=1e-11)


@pytest.mark.parametrize("name", KERNELS)
def test_sample_matches_cdf(name):
    rng = np.random.default_rng(20240702)
    draws = reference.sample(name, rng, 4000, scale=2.0)
    res = scipy.stats.kstest(draws, lambda x: reference.cdf(name, x, scale=2.0))
    assert res.pvalue > 1e-3


def test_kernel_argument_errors():
    with pytest.raises(ValueError, match="scale"):
        reference.pdf("gaussian", 0.0, scale=0.0)
    with pytest.raises(ValueError, match="scale"):
        reference.cdf("rect", 0.0, scale=-1.0)


# --------------------------------------------------------------------------------------------
# SymPy proofs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KERNELS)
def test_proofs_verify_all(name, proof_results):
    res = proof_results["kernels"][name]
    for key in (
        "integrates_to_one",
        "symmetric",
        "cdf_derivative_is_pdf",
        "icdf_inverts_cdf",
        "epsilon_closed_form",
        "char_fn_ok",
    ):
        assert res[key] is True, (name, key)
    expected_method = {
        "gaussian": "symbolic",
        "poisson": "symbolic",
        "rect": "symbolic",
        "sigmoid": "beta",
        "hyperbolic": "scaling",
    }[name]
    assert res["char_fn_method"] == expected_method


def test_proofs_reject_wrong_formulas():
    # the machinery must be able to say "no"
    assert not proofs.satisfies_eq30("rect", 2 * proofs.R / proofs.ALPHA)
    assert not proofs.satisfies_eq30("gaussian", proofs.R / proofs.ALPHA)
    x = reference.symbolic("gaussian").x
    assert not proofs._is_zero(sp.exp(-(x**2)) - sp.exp(-((x - 1) ** 2)))


@pytest.mark.parametrize("name", KERNELS)
def test_symbolic_epsilon_matches_numeric(name):
    expr = proofs.derive_epsilon(name)
    f = sp.lambdify((proofs.R, proofs.ALPHA), expr, modules=["scipy", "numpy"])
    for r, alpha in ((0.5, 0.3), (2.0, 0.9), (0.01, 0.95)):
        assert complex(f(r, alpha)).real == pytest.approx(
            reference.epsilon(name, r, alpha), rel=1e-12
        )


# --------------------------------------------------------------------------------------------
# Epsilon (eq. 30)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KERNELS)
def test_epsilon_closed_forms(name):
    r, alpha = 1.7, 0.9
    expected = {
        "gaussian": r / (math.sqrt(2) * special.erfinv(alpha)),
        "poisson": r / math.tan(math.pi * alpha / 2),
        "hyperbolic": r / math.atanh(alpha),
        "sigmoid": r / math.log((1 + alpha) / (1 - alpha)),
        "rect": r / alpha,
    }[name]
    assert reference.epsilon(name, r, alpha) == pytest.approx(expected, rel=1e-14)
    # general form eps = r / Phi^-1((1 + alpha)/2)
    q = float(reference.icdf(name, (1 + alpha) / 2))
    assert reference.epsilon(name, r, alpha) == pytest.approx(r / q, rel=1e-12)
    assert reference.coverage(name, r, reference.epsilon(name, r, alpha)) == pytest.approx(alpha)


@pytest.mark.parametrize("name", KERNELS)
@HYPOTHESIS
@given(r=st.floats(1e-3, 1e3), alpha=st.floats(0.01, 0.99))
def test_property_epsilon_satisfies_eq30(name, r, alpha):
    assert reference.epsilon_quad_residual(name, r, alpha) < 1e-10


@pytest.mark.parametrize(
    ("r", "alpha"),
    [
        (0.0, 0.5),
        (-1.0, 0.5),
        (math.inf, 0.5),
        (1.0, 0.0),
        (1.0, 1.0),
        (1.0, -0.2),
        (1.0, math.nan),
        (math.nan, 0.5),
    ],
)
def test_epsilon_invalid_arguments(r, alpha):
    with pytest.raises(ValueError, match="Received"):
        reference.epsilon("gaussian", r, alpha)


# --------------------------------------------------------------------------------------------
# Appendix C example
# --------------------------------------------------------------------------------------------


def test_example_f_values_and_jump():
    f = reference.example_f
    assert f([-1.0, 0.0, 0.5, 1.0, 1.25, 1.5, 2.0, 3.0, 3.5, 4.0, 9.0]).tolist() == [
        0.0,
        0.0,
        1.0,
        2.0,
        1.5,
        2.0,
        3.0,
        5.0,
        4.5,
        4.0,
        4.0,
    ]
    h = 1e-12
    for c in (0.0, 1.0, 3.0, 4.0):  # continuous
        assert abs(f(c + h) - f(c - h)) < 1e-10
    assert f(1.5 + h) - f(1.5 - h) == pytest.approx(1.0)  # f(3/2-) = 1, f(3/2+) = 2
    assert example.EXAMPLE_JUMPS == {1.5: 1.0}


X_GRID = np.array([-1.3, -0.2, 0.0, 0.4, 1.0, 1.2, 1.5, 1.7, 2.9, 3.0, 3.6, 4.0, 5.2, 12.0])


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("eps", [0.07, 0.4, 1.5])
def test_mollified_example_closed_vs_quad(name, eps):
    closed = reference.mollified_example(X_GRID, eps, name)
    quad = reference.mollified_example(X_GRID, eps, name, method="quad")
    np.testing.assert_allclose(closed, quad, rtol=1e-10, atol=1e-10)
    g_closed = reference.mollified_example_grad(X_GRID, eps, name)
    g_quad = reference.mollified_example_grad(X_GRID, eps, name, method="quad")
    np.testing.assert_allclose(g_closed, g_quad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("eps", [0.07, 0.4, 1.5])
def test_mollified_example_grad_vs_finite_differences(name, eps):
    x = X_GRID
    if name == "rect":  # the rect derivative jumps at 3/2 +- eps: stay away from there
        x = x[np.abs(np.abs(x - 1.5) - eps) > 1e-3]
    h = 1e-6
    fd = (
        reference.mollified_example(x + h, eps, name)
        - reference.mollified_example(x - h, eps, name)
    ) / (2 * h)
    np.testing.assert_allclose(
        reference.mollified_example_grad(x, eps, name), fd, rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("eps", [0.01, 0.07, 0.4, 1.5])
def test_mollified_example_gaussian_sympy(eps):
    x = np.concatenate([X_GRID, [60.0, -60.0]])
    np.testing.assert_allclose(
        reference.mollified_example(x, eps, method="sympy"),
        reference.mollified_example(x, eps),
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        reference.mollified_example_grad(x, eps, method="sympy"),
        reference.mollified_example_grad(x, eps),
        rtol=1e-12,
        atol=1e-12,
    )


def test_mollified_example_limits():
    # eps -> 0 recovers f away from the breakpoints; far away the value is 0 or 4
    x = np.array([-0.5, 0.5, 1.25, 2.0, 3.5, 5.0])
    for name in KERNELS:
        eps = 1e-4 if name != "poisson" else 1e-7
        np.testing.assert_allclose(
            reference.mollified_example(x, eps, name), reference.example_f(x), atol=1e-5
        )
    assert reference.mollified_example(-50.0, 0.3) == pytest.approx(0.0, abs=1e-15)
    assert reference.mollified_example(50.0, 0.3) == pytest.approx(4.0, abs=1e-15)
    with pytest.raises(ValueError, match="sympy"):
        reference.mollified_example(0.0, 0.3, "rect", method="sympy")
    with pytest.raises(ValueError, match="eps"):
        reference.mollified_example(0.0, 0.0)


# --------------------------------------------------------------------------------------------
# Monte Carlo (Theorem 3.11, eq. 17)
# --------------------------------------------------------------------------------------------

X0 = np.array([0.3, -1.2, 2.0])
EPS0 = 0.7


def _cos(points):
    return np.cos(points)


def _sine_variance(x0, eps, name):
    """Exact Var[cos(x0 - eps Z)] = (1 + cos(2 x0) chi(2 eps))/2 - (cos(x0) chi(eps))^2."""
    chi1 = float(reference.char_fn(name, eps))
    chi2 = float(reference.char_fn(name, 2 * eps))
    return (1 + np.cos(2 * x0) * chi2) / 2 - (np.cos(x0) * chi1) ** 2


@pytest.mark.parametrize("name", KERNELS)
def test_mc_unbiased_default_proposal(name):
    rng = np.random.default_rng(11)
    n = 20000
    est, se = reference.mc_mollified_gradient(_cos, X0, EPS0, name, n, rng)
    exact = reference.sg_sine_grad(X0, EPS0, name)
    assert np.all(np.abs(est - exact) < Z_MAX * se), (est, exact, se)
    # the reported standard error matches the exact sd(G)/sqrt(N)
    np.testing.assert_allclose(se, np.sqrt(_sine_variance(X0, EPS0, name) / n), rtol=0.05)


# (target kernel, proposal kernel, proposal scale / eps): proposals with heavier tails, so that
# the weights phi_eps/p are bounded and Var(G) < inf.
PROPOSALS = [
    ("gaussian", "poisson", 1.0),
    ("poisson", "poisson", 2.0),
    ("hyperbolic", "sigmoid", 1.0),
    ("sigmoid", "poisson", 1.0),
    ("rect", "gaussian", 2.0),
]


@pytest.mark.parametrize(("name", "proposal", "factor"), PROPOSALS)
def test_mc_unbiased_other_proposal(name, proposal, factor):
    rng = np.random.default_rng(12)
    est, se = reference.mc_mollified_gradient(
        _cos, X0, EPS0, name, 40000, rng, proposal=proposal, proposal_scale=factor * EPS0
    )
    exact = reference.sg_sine_grad(X0, EPS0, name)
    assert np.all(np.abs(est - exact) < Z_MAX * se), (est, exact, se)


@pytest.mark.parametrize(
    ("name", "proposal", "factor"), [("gaussian", None, 1.0), ("rect", "gaussian", 2.0)]
)
def test_mc_stderr_calibrated_over_seeds(name, proposal, factor):
    reps, n = 300, 400
    ests, ses = [], []
    for seed in range(reps):
        est, se = reference.mc_mollified_gradient(
            _cos,
            X0,
            EPS0,
            name,
            n,
            np.random.default_rng(1000 + seed),
            proposal=proposal,
            proposal_scale=None if proposal is None else factor * EPS0,
        )
        ests.append(est)
        ses.append(se)
    spread = np.std(ests, axis=0, ddof=1)
    ratio = spread / np.mean(ses, axis=0)
    assert np.all((ratio > 0.85) & (ratio < 1.15)), ratio
    # and the mean over seeds is unbiased
    exact = reference.sg_sine_grad(X0, EPS0, name)
    assert np.all(np.abs(np.mean(ests, axis=0) - exact) < Z_MAX * spread / np.sqrt(reps))


def test_mc_stderr_scales_as_inverse_sqrt_n():
    _, se1 = reference.mc_mollified_gradient(
        _cos, X0, EPS0, "sigmoid", 2000, np.random.default_rng(1)
    )
    _, se16 = reference.mc_mollified_gradient(
        _cos, X0, EPS0, "sigmoid", 32000, np.random.default_rng(2)
    )
    np.testing.assert_allclose(se1 / se16, 4.0, rtol=0.1)


def test_mc_importance_weights_log_space():
    rng = np.random.default_rng(3)
    t = reference.sample("gaussian", rng, (50, 4), scale=2.0)
    w = reference.importance_weights(t, 0.5, "rect", "gaussian", 2.0)
    direct = np.prod(
        reference.pdf("rect", t, scale=0.5) / reference.pdf("gaussian", t, scale=2.0), axis=1
    )
    np.testing.assert_allclose(w, direct, rtol=1e-12)
    assert np.all(w[np.any(np.abs(t) > 0.5, axis=1)] == 0.0)
    # many dimensions: no overflow/NaN in log space
    t = reference.sample("poisson", rng, (10, 400))
    assert np.all(np.isfinite(reference.importance_weights(t, 1.0, "sigmoid", "poisson", 1.0)))


def test_mc_argument_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="`n`"):
        reference.mc_mollified_gradient(_cos, X0, EPS0, "gaussian", 1, rng)
    with pytest.raises(ValueError, match="`eps`"):
        reference.mc_mollified_gradient(_cos, X0, -1.0, "gaussian", 10, rng)
    with pytest.raises(ValueError, match="grad_fn"):
        reference.mc_mollified_gradient(lambda p: p[:, :1], X0, EPS0, "gaussian", 10, rng)
    with pytest.raises(ValueError, match="name"):
        reference.mc_mollified_gradient(_cos, X0, EPS0, "gaussian", 10, rng, proposal="nope")


# --------------------------------------------------------------------------------------------
# Oracles: SG / NG / FG on sine and linear models
# --------------------------------------------------------------------------------------------

NG_CASES = [(0.7, 1.3, 0.3), (2.0, -0.8, 0.5), (0.0, 1.0, 0.2), (1e-3, 2.0, 0.1), (5.0, 0.6, 1.2)]


def test_sg_sine_oracle_limits():
    x = np.linspace(-3, 3, 7)
    for name in KERNELS:
        np.testing.assert_allclose(reference.sg_sine_grad(x, 0.0, name), np.cos(x))
        np.testing.assert_allclose(reference.sg_sine_grad(x, 1e-9, name), np.cos(x), atol=1e-8)


@pytest.mark.parametrize("name", FINITE_MEAN_KERNELS)
@pytest.mark.parametrize(("x", "w", "delta"), NG_CASES)
def test_ng_sine_closed_form_vs_quadrature(name, x, w, delta):
    closed = float(reference.ng_sine_grad(x, w, delta, name))
    assert closed == pytest.approx(reference.ng_sine_grad_quad(x, w, delta, name), abs=1e-10)


@pytest.mark.parametrize("name", FINITE_MEAN_KERNELS)
def test_ng_sine_monte_carlo(name):
    rng = np.random.default_rng(5)
    x, w, delta = 0.7, 1.3, 0.4
    wp = w * (1 + delta * reference.sample(name, rng, 200000))
    g = wp * np.cos(wp * x)
    exact = float(reference.ng_sine_grad(x, w, delta, name))
    assert abs(g.mean() - exact) < Z_MAX * g.std(ddof=1) / math.sqrt(g.size)
    assert float(reference.ng_sine_grad(x, w, 0.0, name)) == pytest.approx(w * math.cos(w * x))


def test_ng_and_fg_raise_for_poisson():
    with pytest.raises(ValueError, match="poisson"):
        reference.ng_sine_grad(0.7, 1.3, 0.3, "poisson")
    with pytest.raises(ValueError, match="poisson"):
        reference.ng_sine_grad_quad(0.7, 1.3, 0.3, "cauchy")
    with pytest.raises(ValueError, match="poisson"):
        reference.fg_sine_grad(0.7, 1.3, 0.3, 0.2, "poisson")
    with pytest.raises(ValueError, match="poisson"):
        reference.ng_linear_oracles([1.0], 0.2, "poisson")


def test_finding_ng_cauchy_expectation_diverges():
    """E|w' cos(w' x)| = inf for Cauchy weight noise: the truncated integral grows like
    (4/pi^2) |w delta| ln L, by the same amount per decade of L."""
    x, w, delta = 1.0, 1.0, 0.5
    vals = [oracles.ng_sine_abs_integral(x, w, delta, L) for L in (1e1, 1e2, 1e3, 1e4)]
    steps = np.diff(vals)
    expected = 4 / math.pi**2 * abs(w * delta) * math.log(10)
    np.testing.assert_allclose(steps, expected, rtol=0.01)
    # for a finite-mean kernel the same integral converges
    g = [oracles.ng_sine_abs_integral(x, w, delta, L, kernel="sigmoid") for L in (1e2, 1e3)]
    assert abs(g[1] - g[0]) < 1e-9


@pytest.mark.parametrize("name", FINITE_MEAN_KERNELS)
def test_fg_sine_chi_reduction_vs_nested_quadrature(name):
    x, w, delta, eps = 0.7, 1.3, 0.3, 0.4
    assert reference.fg_sine_grad(x, w, delta, eps, name) == pytest.approx(
        reference.fg_sine_grad_nested_quad(x, w, delta, eps, name), abs=1e-8
    )


@pytest.mark.parametrize(("x", "w", "delta"), NG_CASES)
def test_fg_sine_gaussian_closed_form(x, w, delta):
    for eps in (0.0, 0.25, 1.0):
        assert reference.fg_sine_grad(x, w, delta, eps, "gaussian") == pytest.approx(
            float(reference.fg_sine_grad_gaussian_closed(x, w, delta, eps)), abs=1e-10
        )


@pytest.mark.parametrize("name", FINITE_MEAN_KERNELS)
def test_fg_sine_limits(name):
    x, w = 0.7, 1.3
    # eps -> 0: NG; delta -> 0: SG of sin(w x), i.e. w cos(wx) chi(w eps)
    assert reference.fg_sine_grad(x, w, 0.3, 0.0, name) == pytest.approx(
        float(reference.ng_sine_grad(x, w, 0.3, name)), abs=1e-10
    )
    assert reference.fg_sine_grad(x, w, 0.0, 0.4, name) == pytest.approx(
        w * math.cos(w * x) * float(reference.char_fn(name, w * 0.4)), abs=1e-10
    )


@pytest.mark.parametrize("name", FINITE_MEAN_KERNELS)
def test_fg_sine_monte_carlo(name):
    rng = np.random.default_rng(6)
    x, w, delta, eps, m, n = 0.7, 1.3, 0.3, 0.4, 20000, 8
    wp = w * (1 + delta * reference.sample(name, rng, (m, 1)))
    u = reference.sample(name, rng, (m, n))
    group_means = (wp * np.cos(wp * (x + eps * u))).mean(axis=1)  # i.i.d. over weight draws
    se = group_means.std(ddof=1) / math.sqrt(m)
    assert abs(group_means.mean() - reference.fg_sine_grad(x, w, delta, eps, name)) < Z_MAX * se


# --------------------------------------------------------------------------------------------
# NumPy MLP
# --------------------------------------------------------------------------------------------


@pytest.fixture
def net():
    rng = np.random.default_rng(7)
    params = reference.init_params([5, 7, 6, 3], rng)
    x = rng.standard_normal((4, 5))
    targets = np.array([0, 2, 1, 2])
    return params, x, targets


def _fd_grad(params, x, targets, h=1e-6):
    out = np.zeros_like(x)
    rows = np.arange(x.shape[0])
    for d in range(x.shape[1]):
        e = np.zeros_like(x)
        e[:, d] = h
        up = reference.mlp_forward(params, x + e)[rows, targets]
        dn = reference.mlp_forward(params, x - e)[rows, targets]
        out[:, d] = (up - dn) / (2 * h)
    return out


def test_mlp_input_grad_vs_finite_differences(net):
    params, x, targets = net
    g = reference.mlp_input_grad(params, x, targets)
    assert g.shape == x.shape
    np.testing.assert_allclose(g, _fd_grad(params, x, targets), rtol=1e-7, atol=1e-9)
    # no hidden layer: the gradient is the weight column
    w, b = params[0][0][:, :3], params[0][1][:3]
    np.testing.assert_allclose(reference.mlp_input_grad([(w, b)], x, targets), w[:, targets].T)
    with pytest.raises(ValueError, match="targets"):
        reference.mlp_input_grad(params, x, np.array([0.0, 1.0, 2.0, 0.0]))


def _plain_aggregate(g, agg):
    """Aggregation over axis 0 with plain NumPy reductions."""
    return {"smoothgrad": g.mean(0), "smoothgrad_sq": (g**2).mean(0), "vargrad": g.var(0)}[agg]


def _loop_grads(params, points, target):
    return np.stack([reference.mlp_input_grad(params, p[None, :], [target])[0] for p in points])


def test_smoothgrad_matches_explicit_loop(net):
    params, x, targets = net
    rng = np.random.default_rng(8)
    z = rng.standard_normal((4, 6, 5))
    eps = np.array([0.1, 0.5, 1.0, 2.0])
    for agg in reference.AGGREGATIONS:
        got = reference.smoothgrad(params, x, targets, z, eps, aggregation=agg)
        for b in range(4):
            g = _loop_grads(params, x[b] + eps[b] * z[b], targets[b])
            want = _plain_aggregate(g, agg)
            np.testing.assert_allclose(got[b], want, rtol=1e-12, atol=1e-15)
    # eps = 0: the plain gradient, variance 0
    plain = reference.mlp_input_grad(params, x, targets)
    np.testing.assert_allclose(reference.smoothgrad(params, x, targets, z, 0.0), plain)
    np.testing.assert_allclose(
        reference.smoothgrad(params, x, targets, z, 0.0, "vargrad"), 0, atol=1e-30
    )


def _weight_noise(params, rng, m, name="gaussian"):
    return [
        [
            (reference.sample(name, rng, w.shape), reference.sample(name, rng, b.shape))
            for w, b in params
        ]
        for _ in range(m)
    ]


def test_noisegrad_matches_explicit_loop(net):
    params, x, targets = net
    rng = np.random.default_rng(9)
    zw = _weight_noise(params, rng, 5)
    for agg in reference.AGGREGATIONS:
        got = reference.noisegrad(params, x, targets, zw, 0.2, aggregation=agg)
        grads = []
        for draw in zw:
            p = [
                (w * (1 + 0.2 * a), b * (1 + 0.2 * c))
                for (w, b), (a, c) in zip(params, draw, strict=True)
            ]
            grads.append(reference.mlp_input_grad(p, x, targets))
        g = np.stack(grads)
        np.testing.assert_allclose(got, _plain_aggregate(g, agg), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        reference.noisegrad(params, x, targets, zw, 0.0),
        reference.mlp_input_grad(params, x, targets),
    )
    with pytest.raises(ValueError, match="shapes"):
        reference.noisegrad(params, x, targets, [[(np.zeros((1, 1)), np.zeros(1))] * 3], 0.1)


def test_fusiongrad_matches_explicit_loop(net):
    params, x, targets = net
    rng = np.random.default_rng(10)
    m, n = 3, 4
    zw = _weight_noise(params, rng, m)
    z = rng.standard_normal((4, m, n, 5))
    eps = np.array([0.3, 0.3, 1.0, 0.05])
    for agg in reference.AGGREGATIONS:
        got = reference.fusiongrad(params, x, targets, zw, z, eps, 0.2, aggregation=agg)
        for b in range(4):
            g = []
            for j in range(m):
                p = reference.perturb_params(params, zw[j], 0.2)
                g.append(_loop_grads(p, x[b] + eps[b] * z[b, j], targets[b]))
            g = np.concatenate(g)
            want = _plain_aggregate(g, agg)
            np.testing.assert_allclose(got[b], want, rtol=1e-12, atol=1e-15)
    # FG with no weight noise is SG over all M*N input draws
    sg = reference.smoothgrad(params, x, targets, z.reshape(4, m * n, 5), eps)
    np.testing.assert_allclose(reference.fusiongrad(params, x, targets, zw, z, eps, 0.0), sg)
    with pytest.raises(ValueError, match="`z`"):
        reference.fusiongrad(params, x, targets, zw, z[:, :2], eps, 0.2)


def test_linear_model_sg_exact():
    rng = np.random.default_rng(13)
    w = rng.standard_normal((6, 2))
    params = [(w, np.zeros(2))]
    x = rng.standard_normal((3, 6))
    targets = np.array([1, 1, 1])
    oracle = reference.linear_oracles(w[:, 1])
    for name in KERNELS:
        z = reference.sample(name, rng, (3, 50, 6))
        for agg in reference.AGGREGATIONS:
            got = reference.smoothgrad(params, x, targets, z, 0.8, aggregation=agg)
            np.testing.assert_allclose(got, np.broadcast_to(oracle[agg], got.shape), atol=1e-14)


@pytest.mark.parametrize("name", FINITE_MEAN_KERNELS)
def test_linear_model_ng_oracle(name):
    rng = np.random.default_rng(14)
    w = rng.standard_normal((4, 2))
    params = [(w, np.zeros(2))]
    x = rng.standard_normal((1, 4))
    m, delta = 4000, 0.3
    zw = _weight_noise(params, rng, m, name)
    grads = np.stack(
        [reference.mlp_input_grad(reference.perturb_params(params, d, delta), x, [0]) for d in zw]
    )[:, 0, :]  # [M, D]
    oracle = reference.ng_linear_oracles(w[:, 0], delta, name)
    for agg, samples in (
        ("smoothgrad", grads),
        ("smoothgrad_sq", grads**2),
        ("vargrad", (grads - grads.mean(0)) ** 2),
    ):
        got = reference.noisegrad(params, x, [0], zw, delta, aggregation=agg)[0]
        se = samples.std(0, ddof=1) / math.sqrt(m)
        assert np.all(np.abs(got - oracle[agg]) < Z_MAX * se + 1e-12), (agg, got, oracle[agg])


def test_vargrad_is_two_pass():
    rng = np.random.default_rng(15)
    g = 1e8 + rng.standard_normal((1000, 3))
    two_pass = reference.aggregate(g, 0, "vargrad")
    np.testing.assert_allclose(two_pass, g.var(0), rtol=1e-9)
    one_pass = (g**2).mean(0) - g.mean(0) ** 2  # E[a^2] - E[a]^2 loses everything here
    assert np.max(np.abs(one_pass - g.var(0))) > 0.01
    with pytest.raises(ValueError, match="aggregation"):
        reference.aggregate(g, 0, "mean")


# --------------------------------------------------------------------------------------------
# Findings (reference/FINDINGS.md)
# --------------------------------------------------------------------------------------------


def test_finding_def38_compact_support_and_eq24(proof_results):
    """Def. 3.8 requires compact support; eq. 24 requires phi > 0 everywhere: no kernel can
    satisfy both. Gaussian, poisson, hyperbolic, sigmoid: positive everywhere (not compactly
    supported); rect: compact support but phi = 0 outside [-1, 1] and discontinuous."""
    for name in ("gaussian", "poisson", "hyperbolic", "sigmoid"):
        assert reference.pdf(name, 30.0) > 0
        assert reference.cdf(name, -30.0) > 0
        assert proof_results["kernels"][name]["integrates_to_one"]  # a Dirac sequence (3.10)
    assert reference.pdf("rect", 1.0 + 1e-12) == 0.0  # violates eq. 24
    assert reference.pdf("rect", 1.0) - reference.pdf("rect", 1.0 + 1e-12) == 0.5  # jump


def test_finding_rect_mollification_only_once_more_differentiable():
    """rect_eps is discontinuous (Lemma 3.4 does not apply); f * rect_eps is still continuous,
    but its derivative (f(x + eps) - f(x - eps)) / (2 eps) jumps by +-J/(2 eps) where x +- eps
    meets the jump J = 1 of f at 3/2. The Gaussian mollification has a continuous derivative."""
    eps, h = 0.4, 1e-9
    for c, sign in ((1.5 - eps, +1), (1.5 + eps, -1)):
        v = reference.mollified_example([c - h, c + h], eps, "rect")
        assert abs(v[1] - v[0]) < 1e-8
        g = reference.mollified_example_grad([c - h, c + h], eps, "rect")
        assert g[1] - g[0] == pytest.approx(sign / (2 * eps), rel=1e-6)
        gg = reference.mollified_example_grad([c - h, c + h], eps, "gaussian")
        assert abs(gg[1] - gg[0]) < 1e-7


def test_finding_eq18_gaussian_normalisation(proof_results):
    """Eq. 18 prints sqrt((2 pi)^n eps^n) and exp(-x x^T / (2 eps^(2n))); the N(0, eps^2 I)
    density has (2 pi eps^2)^(n/2) and exp(-t t^T / (2 eps^2)). The printed one integrates to
    eps^(n^2 - n/2)."""
    for n in (1, 2, 3):
        assert (
            sp.simplify(proof_results["eq18"][n] - proofs.EPS ** sp.Rational(2 * n * n - n, 2)) == 0
        )
    eps = 0.6
    val, _ = integrate.dblquad(
        lambda a, b: paper.eq18_printed_density([a, b], eps), -np.inf, np.inf, -np.inf, np.inf
    )
    assert val == pytest.approx(eps**3, rel=1e-7)
    val, _ = integrate.dblquad(
        lambda a, b: paper.sg_density([a, b], eps), -np.inf, np.inf, -np.inf, np.inf
    )
    assert val == pytest.approx(1.0, rel=1e-7)
    # the corrected density is the product kernel used by SG
    t = np.array([0.3, -0.8])
    assert paper.sg_density(t, eps) == pytest.approx(np.prod(reference.pdf("gaussian", t, eps)))


def test_finding_eq20_noisegrad_mollifier():
    """Eq. 20-21: X must be N(1, eps^2) (eta of eq. 4), not N(0, eps^2); then T = theta -
    theta X ~ N(0, eps^2 diag(theta^2)) (mean 0, not theta), with density
    prod_k N(t_k; 0, eps^2 theta_k^2). The printed density neither integrates to 1 nor has
    mean 0. With the corrected density, Theorem 3.11 reproduces NG exactly."""
    theta, eps = 1.3, 0.3
    mass, _ = integrate.quad(lambda t: paper.eq20_printed_density([t], [theta], eps), -50, 50)
    assert mass == pytest.approx(math.sqrt(eps / theta), rel=1e-9)  # not 1
    mean, _ = integrate.quad(lambda t: t * paper.eq20_printed_density([t], [theta], eps), -50, 50)
    assert mean / mass == pytest.approx(theta)  # printed T is centred at theta
    mass, _ = integrate.quad(lambda t: paper.ng_density([t], [theta], eps), -50, 50)
    assert mass == pytest.approx(1.0, rel=1e-10)
    # X ~ N(0, eps^2): theta - T = theta X has mean 0 -> weights near 0, not theta * eta
    rng = np.random.default_rng(16)
    x_printed = eps * rng.standard_normal(100000)
    assert abs(np.mean(theta * x_printed)) < 0.01
    x_fixed = 1 + eps * rng.standard_normal(100000)
    assert np.mean(theta * x_fixed) == pytest.approx(theta, abs=0.01)
    # Theorem 3.11 in weight space with the corrected density: E[g(x; theta - T)] = NG
    x = 0.7

    def g_times(density):
        return integrate.quad(
            lambda t: (theta - t) * math.cos((theta - t) * x) * density([t], [theta], eps),
            -20,
            20,
            limit=200,
        )[0]

    ng = float(reference.ng_sine_grad(x, theta, eps, "gaussian"))
    assert g_times(paper.ng_density) == pytest.approx(ng, abs=1e-10)
    assert abs(g_times(paper.eq20_printed_density) - ng) > 0.1


def test_finding_remark313_refers_to_eq4_not_eq3(net):
    """Remark 3.13 concludes "mg = ng in eq. (3)"; NG is eq. (4). NG (weights theta * eta,
    eta = 1 + eps z) equals eq. 21 with t_j = theta eps z_j, and differs from SG (eq. 3)."""
    params, x, targets = net
    rng = np.random.default_rng(17)
    zw = _weight_noise(params, rng, 6)
    ng = reference.noisegrad(params, x, targets, zw, 0.2)
    eq21 = np.mean(
        [
            reference.mlp_input_grad(
                [
                    (w + w * 0.2 * a, b + b * 0.2 * c)
                    for (w, b), (a, c) in zip(params, d, strict=True)
                ],
                x,
                targets,
            )
            for d in zw
        ],
        axis=0,
    )
    np.testing.assert_allclose(ng, eq21, rtol=1e-12)
    sg = reference.smoothgrad(params, x, targets, rng.standard_normal((4, 6, 5)), 0.2)
    assert np.max(np.abs(sg - ng)) > 1e-3


def test_finding_eq22_fusiongrad_input_mollifier():
    """Eq. 22 gives the input mollifier phi^(x) the theta-dependent NG density of eq. 20; the
    input noise of FG (eq. 5, eq. 23) is the SG kernel N(0, eps^2) of (corrected) eq. 18. FG =
    E_T[E_u[g(x + u; theta - T)]] with centred u matches the exact answer; an input density
    centred at theta (as printed) does not."""
    rng = np.random.default_rng(18)
    x, w, delta, eps, m = 0.7, 1.3, 0.3, 0.4, 200000
    wp = w * (1 + delta * rng.standard_normal(m))
    u = eps * rng.standard_normal(m)
    exact = float(reference.fg_sine_grad_gaussian_closed(x, w, delta, eps))
    g = wp * np.cos(wp * (x + u))
    assert abs(g.mean() - exact) < Z_MAX * g.std(ddof=1) / math.sqrt(m)
    g_printed = wp * np.cos(wp * (x + w + u))  # input noise centred at theta = w
    assert abs(g_printed.mean() - exact) > 50 * g_printed.std(ddof=1) / math.sqrt(m)


def test_finding_eq42_limit_is_n_to_infinity():
    """Eq. 42: sigma[mg] = sigma[G]/sqrt(N) -> 0 as N -> infinity (printed: N -> 0)."""
    ses = [
        reference.mc_mollified_gradient(_cos, X0, EPS0, "gaussian", n, np.random.default_rng(n))[1]
        for n in (4, 64, 1024)
    ]
    assert np.all(ses[0] > ses[1]) and np.all(ses[1] > ses[2])
    np.testing.assert_allclose(ses[1] / ses[2], 4.0, rtol=0.25)


def test_finding_thm311_support_condition():
    """Theorem 3.11 / eq. 38 need p > 0 wherever g(x0 - t) phi_eps(t) != 0. A rect proposal for
    the Gaussian kernel misses |t| > eps: the estimator converges to the truncated integral."""
    rng = np.random.default_rng(19)
    x0 = np.array([0.3])
    est, se = reference.mc_mollified_gradient(
        _cos, x0, EPS0, "gaussian", 40000, rng, proposal="rect", proposal_scale=EPS0
    )
    truncated = integrate.quad(
        lambda t: math.cos(0.3 - t) * float(reference.pdf("gaussian", t, EPS0)), -EPS0, EPS0
    )[0]
    exact = float(reference.sg_sine_grad(x0, EPS0, "gaussian")[0])
    assert abs(est[0] - truncated) < Z_MAX * se[0]
    assert abs(est[0] - exact) > 50 * se[0]


def test_finding_thm311_finite_variance_condition():
    """Consistency (eqs. 40-42) needs Var(G) < inf. A Gaussian proposal for the sigmoid kernel
    (suggested as an importance-sampling example) has E[w^2] = int phi^2/p = inf: the integral
    over [-L, L] grows without bound (phi^2 ~ e^(-2|t|), 1/p ~ e^(t^2/8))."""

    def second_moment(L):
        return integrate.quad(
            lambda t: float(
                np.exp(2 * reference.logpdf("sigmoid", t) - reference.logpdf("gaussian", t, 2.0))
            ),
            -L,
            L,
            limit=200,
        )[0]

    vals = [second_moment(L) for L in (10.0, 20.0, 30.0)]
    assert vals[0] < vals[1] < vals[2] and vals[2] > 1e20
    # heavier-tailed proposal (used in test_mc_unbiased_other_proposal): bounded weights
    t = np.linspace(-1e3, 1e3, 20001)
    w = np.exp(reference.logpdf("sigmoid", t) - reference.logpdf("poisson", t))
    assert w.max() < 2.0


def test_finding_lemma33_jump_term_missing_from_mc():
    """Eq. 16 / Lemma 3.3: (f * phi)' = f' * phi needs f (absolutely) continuous. f of eq. 43
    jumps by 1 at 3/2, so (f * phi_eps)' = f' * phi_eps + phi_eps(x - 3/2). The MC gradient
    (eq. 17) averages the pointwise f' and misses the jump term."""
    rng = np.random.default_rng(20)
    x0, eps = np.array([1.5]), 0.3
    est, se = reference.mc_mollified_gradient(
        lambda p: reference.example_f_grad(p), x0, eps, "gaussian", 40000, rng
    )
    conv = float(reference.example_fprime_conv(1.5, eps))
    true = float(reference.mollified_example_grad(1.5, eps))
    assert abs(est[0] - conv) < Z_MAX * se[0]
    assert true - conv == pytest.approx(float(reference.pdf("gaussian", 0.0, eps)), rel=1e-12)
    assert abs(est[0] - true) > 20 * se[0]


def test_finding_eq45_is_correct():
    """Eq. 45 agrees with the SymPy derivation (difference simplifies to 0) for eps > 0; its
    last term 2 sqrt(1/eps^2) eps = 2 sign(eps) is a CAS artefact equal to 2."""
    assert example.eq45_difference() == 0
    x = np.concatenate([X_GRID, np.linspace(-2, 6, 41)])
    for eps in (0.01, 0.1, 0.5, 2.0):
        np.testing.assert_allclose(
            reference.paper_eq45(x, eps),
            reference.mollified_example(x, eps, method="quad"),
            rtol=1e-10,
            atol=1e-10,
        )


def test_finding_eqs47_51_epsilon(proof_results):
    """Eqs. 47, 48, 50 are right; eq. 49 (hyperbolic: arctan) must be artanh and eq. 51
    (rect: 2r/alpha) must be r/alpha."""
    r, alpha = 1.0, 0.9
    for name in KERNELS:
        wrong = name in ("hyperbolic", "rect")
        assert proof_results["kernels"][name]["paper_epsilon_satisfies_eq30"] is (not wrong)
        cov = reference.coverage(name, r, reference.paper_epsilon(name, r, alpha))
        if wrong:
            assert abs(cov - alpha) > 0.2
        else:
            assert cov == pytest.approx(alpha, abs=1e-12)
    # what the printed formulas actually deliver
    assert reference.coverage("hyperbolic", r, r / math.atan(alpha)) == pytest.approx(
        math.tanh(math.atan(alpha)), rel=1e-12
    )  # 0.6249 instead of 0.9
    assert reference.coverage("rect", r, 2 * r / alpha) == pytest.approx(alpha / 2, rel=1e-12)
    assert reference.epsilon("hyperbolic", r, alpha) == pytest.approx(1 / math.atanh(0.9))


@pytest.mark.parametrize("name", KERNELS)
def test_finding_eqs25_29_kernel_formulas_are_right(name, proof_results):
    """Eqs. 25-29 (Phi, Phi^-1, phi of the five kernels) are correct as printed."""
    x = np.linspace(-6, 6, 121)
    u = np.linspace(0.01, 0.99, 99)
    np.testing.assert_allclose(paper.paper_pdf(name, x), reference.pdf(name, x), rtol=1e-13)
    np.testing.assert_allclose(
        paper.paper_cdf(name, x), reference.cdf(name, x), rtol=1e-12, atol=1e-15
    )
    np.testing.assert_allclose(
        paper.paper_icdf(name, u), reference.icdf(name, u), rtol=1e-10, atol=1e-14
    )
    res = proof_results["kernels"][name]
    assert res["cdf_derivative_is_pdf"] and res["icdf_inverts_cdf"]


def test_finding_sec43_r_for_weight_noise():
    """Sec. 4.3 recommends r = 0.01 for NG/FG "based on" sigma = 0.2 and the 3-sigma rule; eq.
    30 with r = 0.01 gives eps = 0.0061 (alpha = 0.9) or 0.0051 (alpha = 0.95), 33-39 times
    smaller than 0.2. sigma = 0.2 needs r = 0.329 (0.9), 0.392 (0.95); the 3-sigma rule r = 0.6
    (alpha = 0.9973)."""
    assert reference.epsilon("gaussian", 0.01, 0.9) == pytest.approx(0.006079, rel=1e-3)
    assert reference.epsilon("gaussian", 0.01, 0.95) == pytest.approx(0.005102, rel=1e-3)
    for alpha, r in ((0.9, 0.3290), (0.95, 0.3920)):
        assert 0.2 * float(reference.icdf("gaussian", (1 + alpha) / 2)) == pytest.approx(
            r, rel=1e-3
        )
    assert reference.epsilon("gaussian", 0.6, math.erf(3 / math.sqrt(2))) == pytest.approx(0.2)


def test_finding_eq46_standard_mollifier():
    """Eq. 46 prints exp((|x|^2 - eps)^-1) on |x| < eps; the standard bump is
    exp(1/(|x|^2 - eps^2)) (normalised eps^-n phi(x/eps)). The printed one does not vanish at
    |x| = eps (a jump, so not even continuous) for eps < 1, and is singular at |x| = sqrt(eps)
    inside the support for eps > 1."""
    eps = 0.5
    edge = np.nextafter(eps, 0.0)
    assert paper.eq46_printed_unnormalised(edge, eps) == pytest.approx(math.exp(-4.0), rel=1e-9)
    assert paper.standard_bump(edge, eps) == 0.0  # exp(-huge) underflows: continuous at |x|=eps
    eps = 4.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        near = paper.eq46_printed_unnormalised([1.999999, 2.000001], eps)  # |x| = sqrt(eps) = 2
    assert near[1] > 1e100 and near[0] < 1e-100
    vals = paper.standard_bump(np.linspace(-3.9, 3.9, 79), eps)
    assert np.all(np.isfinite(vals)) and np.all(vals <= math.exp(-1 / 16) + 1e-15)


def test_finding_eq15_cauchy_mollification_of_linear_growth():
    """Eq. 15 with the Poisson (Cauchy) kernel: f_eps = f * phi_eps does not exist for f of
    linear growth (a linear model, any ReLU network's logits): int |t| phi(t) dt = inf, the
    truncated integral grows like (2/pi) ln L. Only g_eps (eq. 16) exists for bounded g."""

    def truncated(L):
        return (
            2 * integrate.quad(lambda t: t * float(reference.pdf("poisson", t)), 0, L, limit=200)[0]
        )

    vals = np.array([truncated(L) for L in (1e2, 1e3, 1e4)])
    np.testing.assert_allclose(np.diff(vals), 2 / math.pi * math.log(10), rtol=1e-4)


def test_finding_eq52_sign():
    """Eq. 52 prints eps = beta (x_min - x_max) < 0; SmoothGrad uses beta (x_max - x_min)."""
    assert paper.eq52_printed_scale(0.2, 0.0, 1.0) == pytest.approx(-0.2)


def test_finding_smoothgrad_sq_is_mean_of_squares():
    """Noise-tunnel article eq. 2 (seed material) writes a square root; SmoothGrad-Square is the
    mean of squares (Captum), which the linear oracle w^2 confirms."""
    w = np.array([[-2.0], [3.0]])
    x = np.zeros((1, 2))
    z = np.random.default_rng(21).standard_normal((1, 10, 2))
    got = reference.smoothgrad([(w, np.zeros(1))], x, 0, z, 1.0, "smoothgrad_sq")
    np.testing.assert_allclose(got[0], [4.0, 9.0])

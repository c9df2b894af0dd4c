"""The TensorFlow kernels against the independent reference and SciPy, for both dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

import reference
import tfmollify as tfm
from tests import user_kernels
from tfmollify.core import kernels, sampling
from tfmollify.testing.kernels import check_kernel

# the registered kernels (a list of its own: the registry is what is tested)
BUILTIN_KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect")

SCIPY = {
    "gaussian": scipy.stats.norm(),
    "poisson": scipy.stats.cauchy(),
    "hyperbolic": scipy.stats.logistic(scale=0.5),
    "sigmoid": scipy.stats.logistic(),
    "rect": scipy.stats.uniform(loc=-1.0, scale=2.0),
}
# Tolerances per dtype: float64 must match to 1e-6 relative (the bar), float32 to its
# resolution.
TOL = {tf.float64: dict(rtol=1e-6, atol=1e-300), tf.float32: dict(rtol=2e-5, atol=1e-30)}

X = np.concatenate([np.linspace(-12, 12, 241), [-1e3, -50.0, 50.0, 1e3]])
U = np.concatenate([np.linspace(1e-6, 1 - 1e-6, 201), [1e-12, 1e-9, 0.5, 1 - 1e-9]])


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("name", BUILTIN_KERNELS)
class TestAgainstReference:
    def test_pdf(self, name, dtype):
        k = kernels.get(name)
        got = k.pdf(tf.constant(X, dtype)).numpy()
        assert got.dtype == dtype.as_numpy_dtype
        want = reference.pdf(name, X)
        np.testing.assert_allclose(got, want, **TOL[dtype])
        np.testing.assert_allclose(got, SCIPY[name].pdf(X), **TOL[dtype])

    def test_log_pdf(self, name, dtype):
        k = kernels.get(name)
        x = np.concatenate([X, [-1e30, 1e30]]) if dtype == tf.float64 else X
        got = k.log_pdf(tf.constant(x, dtype)).numpy()
        want = reference.logpdf(name, x)
        inside = np.isfinite(want)
        np.testing.assert_array_equal(np.isfinite(got), inside)  # -inf only off the support
        np.testing.assert_allclose(got[inside], want[inside], rtol=TOL[dtype]["rtol"], atol=1e-5)

    def test_cdf(self, name, dtype):
        k = kernels.get(name)
        got = k.cdf(tf.constant(X, dtype)).numpy()
        np.testing.assert_allclose(got, reference.cdf(name, X), **TOL[dtype])
        np.testing.assert_allclose(got, SCIPY[name].cdf(X), **TOL[dtype])

    def test_icdf(self, name, dtype):
        k = kernels.get(name)
        u = U if dtype == tf.float64 else U[(U > 1e-7) & (U < 1 - 1e-6)]
        got = k.icdf(tf.constant(u, dtype)).numpy()
        want = reference.icdf(name, u)
        # icdf(1/2) = 0 exactly, so compare with an absolute floor at the dtype's resolution
        # times the local slope.
        atol = 1e-12 if dtype == tf.float64 else 1e-6
        np.testing.assert_allclose(got, want, rtol=TOL[dtype]["rtol"] * 10, atol=atol)
        np.testing.assert_allclose(got, SCIPY[name].ppf(u), rtol=TOL[dtype]["rtol"] * 10,
                                   atol=atol)

    def test_stable_in_the_tails(self, name, dtype):
        k = kernels.get(name)
        big = 1e300 if dtype == tf.float64 else 1e30
        x = tf.constant([-big, -1e4, -700.0, 700.0, 1e4, big], dtype)
        for fn in (k.pdf, k.cdf):
            out = fn(x).numpy()
            assert np.all(np.isfinite(out)), (fn.__name__, out)
        cdf = k.cdf(x).numpy()
        assert np.all((cdf >= 0) & (cdf <= 1))
        tiny = 1e-300 if dtype == tf.float64 else 1e-30
        u = tf.constant([tiny, 1e-7, 1 - 1e-7], dtype)
        out = k.icdf(u).numpy()
        assert not np.any(np.isnan(out))


@pytest.mark.parametrize("name", BUILTIN_KERNELS)
def test_variance_matches_reference(name):
    k = kernels.get(name)
    assert k.variance == pytest.approx(reference.variance(name), rel=1e-12)
    if name == "poisson":
        assert np.isnan(SCIPY[name].var()) and k.variance == np.inf  # SciPy: undefined
    else:
        assert k.variance == pytest.approx(SCIPY[name].var(), rel=1e-12)


@pytest.mark.parametrize("name", BUILTIN_KERNELS)
@pytest.mark.parametrize("r, alpha", [(1.0, 0.9), (0.25, 0.95), (3.0, 0.5), (1e-3, 0.01)])
def test_epsilon_matches_reference(name, r, alpha):
    eps = kernels.get(name).epsilon(r, alpha)
    assert eps == pytest.approx(reference.epsilon(name, r, alpha), rel=1e-10)
    # eq. 30 itself, by quadrature in the reference
    assert reference.epsilon_quad_residual(name, r, alpha) < 1e-9
    # and by the kernel's own cdf: alpha/2 = Phi(r/eps) - 1/2
    phi = float(kernels.get(name).cdf(tf.constant(r / eps, tf.float64)))
    assert phi - 0.5 == pytest.approx(alpha / 2, rel=1e-9)


def test_epsilon_closed_forms_fix_the_paper():
    """Eqs. 49 and 51 of the paper are misprinted: artanh (not arctan) and r/alpha (not 2r/a)."""
    r, a = 1.0, 0.9
    assert kernels.get("hyperbolic").epsilon(r, a) == pytest.approx(r / math.atanh(a))
    assert kernels.get("hyperbolic").epsilon(r, a) != pytest.approx(r / math.atan(a))
    assert kernels.get("rect").epsilon(r, a) == pytest.approx(r / a)


@pytest.mark.parametrize("name", BUILTIN_KERNELS)
def test_epsilon_vectorised(name):
    r = np.array([0.5, 1.0, 2.0])
    eps = kernels.get(name).epsilon(r, 0.9)
    np.testing.assert_allclose(eps, [kernels.get(name).epsilon(v, 0.9) for v in r])


@pytest.mark.parametrize(
    "r, alpha, match",
    [(0.0, 0.9, "`r`"), (-1.0, 0.9, "`r`"), (math.inf, 0.9, "`r`"), (1.0, 0.0, "`alpha`"),
     (1.0, 1.0, "`alpha`"), (1.0, 1.5, "`alpha`"), (1.0, math.nan, "`alpha`")],
)
def test_epsilon_errors(r, alpha, match):
    with pytest.raises(ValueError, match=match):
        kernels.get("gaussian").epsilon(r, alpha)


def test_epsilon_rejects_a_kernel_without_a_solution():
    class Broken(kernels.Kernel):
        name = "broken-test"

        def _pdf(self, x):
            return tf.zeros_like(x)

        def _cdf(self, x):
            return tf.fill(tf.shape(x), tf.constant(0.5, x.dtype))

        def _icdf(self, u):
            return tf.fill(tf.shape(u), tf.constant(math.inf, u.dtype))

    with pytest.raises(ValueError, match="no scale eps"):
        Broken().epsilon(1.0, 0.9)


# -- properties (hypothesis) ------------------------------------------------------------------
kernel_names = st.sampled_from(BUILTIN_KERNELS)


@pytest.mark.parametrize("name", BUILTIN_KERNELS)
def test_builtin_kernel_passes_check_kernel(name):
    """tfmollify.testing's kernel checks on every built-in kernel: normalised and symmetric,
    cdf and icdf inverse to each other and cdf' = pdf, the declared variance (inf for poisson)
    and support, eq. 30's mass, and a KS test of draws through icdf (float64, seed 0)."""
    report = check_kernel(name)
    assert report.passed and len(report.checks) == 8, str(report)
    if name == "poisson":
        assert report["variance"].value == math.inf


@given(name=kernel_names, xs=st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=30))
def test_cdf_monotone(name, xs):
    xs = np.sort(np.asarray(xs))
    c = kernels.get(name).cdf(tf.constant(xs, tf.float64)).numpy()
    assert np.all(np.diff(c) >= 0)


# -- sampling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [tf.float32])  # float64: check_kernel's KS test
@pytest.mark.parametrize("name", BUILTIN_KERNELS)
def test_sample_goodness_of_fit(name, dtype):
    z = kernels.get(name).sample([20000], seed=7, dtype=dtype).numpy()
    assert z.dtype == dtype.as_numpy_dtype
    assert np.all(np.isfinite(z))
    # A fixed seed makes this deterministic; the threshold is the usual 1% level.
    assert scipy.stats.kstest(z, SCIPY[name].cdf).pvalue > 0.01
    # Symmetry of the draws: the sample median is near 0 (sd of the median ~ 1/(2 f(0) sqrt n)).
    f0 = float(reference.pdf(name, np.array([0.0]))[0])
    assert abs(np.median(z)) < 5.0 / (2 * f0 * math.sqrt(z.size))


@pytest.mark.parametrize("name", BUILTIN_KERNELS)
def test_sample_is_reproducible(name):
    k = kernels.get(name)
    a = k.sample([3, 5], seed=11).numpy()
    b = k.sample([3, 5], seed=11).numpy()
    c = k.sample([3, 5], seed=12).numpy()
    d = k.sample([3, 5], seed=tf.constant([0, 11])).numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, d)
    assert not np.array_equal(a, c)


def test_sample_rejects_integer_dtype():
    with pytest.raises(TypeError, match="dtype"):
        kernels.get("gaussian").sample([2], seed=0, dtype=tf.int32)


# -- registry -----------------------------------------------------------------------------------
def test_names_and_aliases():
    assert kernels.names()[:5] == list(BUILTIN_KERNELS)
    for alias, name in [("cauchy", "poisson"), ("Logistic", "sigmoid"), ("UNIFORM", "rect"),
                        ("Gaussian", "gaussian")]:
        assert kernels.get(alias).name == name
    k = kernels.get("rect")
    assert kernels.get(k) is k


def test_unknown_kernel_lists_valid_names():
    with pytest.raises(ValueError, match=r"Valid names: .*gaussian.*poisson.*rect"):
        kernels.get("laplace-typo")
    with pytest.raises(TypeError, match="kernel"):
        kernels.get(3)


class Triangle(user_kernels.Triangle):
    """A user kernel: the triangle density on [-1, 1]."""

    name = "triangle-test"
    support = (-1.0, 1.0)


def test_user_kernel_runs_everywhere():
    import keras

    k = kernels.register(Triangle(), aliases=("tri-test",), overwrite=True)
    assert kernels.get("TRI-TEST") is k
    assert "triangle-test" in kernels.names()
    with pytest.raises(ValueError, match="already registered"):
        kernels.register(Triangle())
    # epsilon by the generic quantile: icdf(0.875) = 0.5
    assert k.epsilon(1.0, 0.75) == pytest.approx(2.0)
    assert check_kernel("tri-test").passed  # by name, as registered
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"),
                              keras.layers.Dense(2)])
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    for mode in tfm.MODES:
        out = tfm.Explainer(model, mode=mode, kernel="triangle-test", num_samples=4,
                            num_weight_samples=2, seed=0)(x, 1)
        assert out.shape == x.shape and np.all(np.isfinite(out))


def test_register_rejects_non_kernels():
    with pytest.raises(TypeError, match="Kernel"):
        kernels.register("gaussian")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", BUILTIN_KERNELS)
@pytest.mark.parametrize("bits_dtype", [tf.uint32, tf.uint64])
def test_extreme_random_bits_give_finite_noise(name, bits_dtype):
    """The largest and smallest integers Philox can return map strictly inside (0, 1), so the
    inverse CDF never sees 1.0 (with 24 bits, float32 rounded 2**24 - 1 up to 1.0: inf noise)."""
    top = np.iinfo(bits_dtype.as_numpy_dtype).max
    bits = tf.constant(np.array([0, 1, top - 1, top], dtype=bits_dtype.as_numpy_dtype))
    u = sampling.bits_to_open_unit(bits)
    assert u.dtype == (tf.float64 if bits_dtype == tf.uint64 else tf.float32)
    un = u.numpy()
    assert np.all((un > 0) & (un < 1)), un
    np.testing.assert_array_equal(un[::-1], 1 - un)  # exactly symmetric
    z = kernels.get(name).icdf(u).numpy()
    assert np.all(np.isfinite(z)), z

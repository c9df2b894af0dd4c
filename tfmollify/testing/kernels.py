"""Checks of a mollifier kernel, built-in or a user's own: :func:`check_kernel`.

A kernel (:class:`tfmollify.core.kernels.Kernel`) declares a density ``pdf``, its ``cdf`` and
``icdf``, a ``variance`` and a ``support``; the explainers draw noise through ``icdf`` and
solve eq. 30 through it. :func:`check_kernel` holds every declaration to an independent
measurement, in float64:

==================  =========================================================================
check               how
==================  =========================================================================
normalised          ``integral pdf = 1`` by SciPy quadrature
symmetric           ``pdf(x) = pdf(-x)`` on a grid
inverse             ``cdf(icdf(u)) = u`` and ``icdf(cdf(x)) = x`` (the latter in ``u`` units)
cdf matches pdf     ``cdf' = pdf`` by central differences, ``cdf`` 0 and 1 at the ends
variance            ``integral x^2 pdf`` by quadrature; infinite must be declared ``inf``
support             ``pdf > 0`` inside the declared support, ``= 0`` outside a bounded one
eq30                ``kernel.epsilon(r, alpha)`` puts mass ``alpha`` in ``[-r, r]`` (quadrature)
ks                  draws through ``icdf`` pass a Kolmogorov-Smirnov test against ``cdf``
==================  =========================================================================

SciPy is needed (the ``tfmollify[testing]`` extra); it is imported when a check runs.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify.core import kernels as kernels_lib
from tfmollify.testing import config

__all__ = ["EQ30_ALPHAS", "KernelReport", "check_kernel"]

#: The masses ``alpha`` at which eq. 30 is checked (with ``r = 1`` and ``r = 2.5``).
EQ30_ALPHAS = (0.1, 0.5, 0.9, 0.99)
# tolerances of the deterministic checks (float64; quadrature errors are ~1e-10)
_TOL_NORMALISED = 1e-6
_TOL_SYMMETRIC = 1e-8
_TOL_INVERSE = 1e-7
_TOL_DERIVATIVE = 1e-5
_TOL_VARIANCE = 1e-6
_TOL_EQ30 = 1e-6


class KernelReport(config.Report):
    """What :func:`check_kernel` found: one :class:`~tfmollify.testing.config.Check` per
    property (``report["variance"]``), ``passed``, ``failed`` and a readable ``str``."""


def _fn(kernel: kernels_lib.Kernel, name: str) -> Callable[[Any], np.ndarray]:
    """``kernel.<name>`` on float64 NumPy values, as a float64 array."""
    method = getattr(kernel, name)
    return lambda x: np.asarray(method(np.asarray(x, np.float64)), np.float64)


def _scale(kernel: kernels_lib.Kernel) -> float:
    """A width of the standard kernel (its upper quartile, or 1 where that is unusable): where
    the grids and the quadrature's split points go."""
    try:
        q = float(np.asarray(kernel.icdf(np.float64(0.75))))
    except Exception:  # a broken icdf is the inverse check's business
        q = math.nan
    return q if math.isfinite(q) and 1e-6 < q < 1e6 else 1.0


def _integral(f: Callable[[np.ndarray], np.ndarray], lo: float, hi: float,
              a: float) -> tuple[float, float]:
    """``(integral of f over [lo, hi], error estimate)`` by SciPy's adaptive quadrature
    (``cubature``, vectorised, from SciPy 1.15; ``quad`` before), split at 0 and at ``+-a 4^k``
    up to ``1024 a`` (so that no mass hides between its nodes, and an infinite tail starts
    where the substitution still resolves it), each piece to 1e-12. ``f`` maps a float64
    array of points to their values."""
    from scipy import integrate

    inner = [0.0] + [s * a * 4.0**k for k in range(6) for s in (-1.0, 1.0)]
    points = sorted({lo, hi, *[p for p in inner if lo < p < hi]})
    cubature = getattr(integrate, "cubature", None)
    total, error = 0.0, 0.0
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # a divergent integral shows in the value
        for left, right in itertools.pairwise(points):
            if cubature is not None:
                res = cubature(lambda x: f(x[:, 0]), [left], [right], rtol=1e-12, atol=1e-14,
                               max_subdivisions=2000)
                value, err = float(res.estimate), float(res.error)
            else:
                value, err = integrate.quad(lambda t: float(f(np.float64(t))), left, right,
                                            limit=200, epsabs=1e-13, epsrel=1e-12)
            total, error = total + value, error + err
    return total, error


def _normalised(k: kernels_lib.Kernel, a: float) -> config.Check:
    lo, hi = k.support
    mass, err = _integral(_fn(k, "pdf"), lo, hi, a)
    dev = abs(mass - 1.0)
    return config.Check("normalised", dev <= _TOL_NORMALISED + err, dev, _TOL_NORMALISED,
                        f"|integral of pdf - 1| by quadrature over {k.support}: mass {mass:.12g}")


def _grid(k: kernels_lib.Kernel, a: float) -> np.ndarray:
    """Points across the kernel's scale and support, off round numbers (a density with a jump
    at a round point must not land on a node of the central differences)."""
    x = a * (np.linspace(-12.0, 12.0, 1201) + 0.00123456789)
    return np.concatenate([x, a * np.geomspace(1e-6, 1e3, 60) * 1.0001])


def _symmetric(k: kernels_lib.Kernel, a: float) -> config.Check:
    x = np.abs(_grid(k, a))
    pdf = _fn(k, "pdf")
    p, q = pdf(x), pdf(-x)
    top = max(float(np.max(np.abs(p))), 1e-300)
    dev = float(np.max(np.abs(p - q))) / top if np.all(np.isfinite(p - q)) else math.inf
    return config.Check("symmetric", dev <= _TOL_SYMMETRIC, dev, _TOL_SYMMETRIC,
                        "max |pdf(x) - pdf(-x)| / max pdf")


def _inverse(k: kernels_lib.Kernel, a: float) -> config.Check:
    cdf, icdf, pdf = _fn(k, "cdf"), _fn(k, "icdf"), _fn(k, "pdf")
    u = np.concatenate([np.linspace(1e-6, 1 - 1e-6, 999), [1e-4, 0.5, 1 - 1e-4]])
    with np.errstate(invalid="ignore"):
        there = np.abs(cdf(icdf(u)) - u)
        x = _inside(k, _grid(k, a))
        c = cdf(x)
        x = x[(c > 1e-9) & (c < 1 - 1e-9)]  # icdf of a rounded 0 or 1 is the support's end
        back = np.abs(icdf(cdf(x)) - x) * pdf(x)  # the error in u units
    dev = float(np.max(np.concatenate([there, back])))
    dev = dev if math.isfinite(dev) else math.inf
    return config.Check("inverse", dev <= _TOL_INVERSE, dev, _TOL_INVERSE,
                        "max |cdf(icdf(u)) - u|, |icdf(cdf(x)) - x| pdf(x)")


def _inside(k: kernels_lib.Kernel, x: np.ndarray, margin: float = 1e-3) -> np.ndarray:
    """The points of ``x`` inside the declared support, ``margin`` (relative) off its ends."""
    lo, hi = k.support
    width = (hi - lo) if math.isfinite(hi - lo) else 1.0
    return x[(x > lo + margin * width) & (x < hi - margin * width)]


def _cdf_matches_pdf(k: kernels_lib.Kernel, a: float) -> config.Check:
    cdf, pdf = _fn(k, "cdf"), _fn(k, "pdf")
    x = _inside(k, _grid(k, a)[:1201])
    h = 1e-5 * a
    slope = (cdf(x + h) - cdf(x - h)) / (2 * h)
    top = max(float(np.max(pdf(x))), 1e-300)
    derivative = float(np.max(np.abs(slope - pdf(x)))) / top
    lo, hi = (v if math.isfinite(v) else math.copysign(1e12 * a, v) for v in k.support)
    ends = max(abs(float(cdf(lo))), abs(1.0 - float(cdf(hi))))
    dev = max(derivative, ends)
    dev = dev if math.isfinite(dev) else math.inf
    return config.Check("cdf matches pdf", dev <= _TOL_DERIVATIVE, dev, _TOL_DERIVATIVE,
                        f"max |cdf' - pdf| / max pdf = {derivative:.3g}; cdf at the ends "
                        f"off 0 and 1 by {ends:.3g}")


def _second_moment(k: kernels_lib.Kernel, a: float, reach: float) -> float:
    lo, hi = k.support
    pdf = _fn(k, "pdf")
    moment, _ = _integral(lambda t: t * t * pdf(t), max(lo, -reach), min(hi, reach), a)
    return moment


def _variance(k: kernels_lib.Kernel, a: float) -> config.Check:
    declared = float(k.variance)
    near, far = _second_moment(k, a, 1e3 * a), _second_moment(k, a, 1e5 * a)
    diverges = not math.isfinite(far) or far - near > 1e-2 * max(near, 1e-300)
    if math.isnan(declared):
        return config.Check("variance", False, "not declared", "a float or inf",
                            "set the class attribute `variance` (math.inf when it has none)")
    if diverges or math.isinf(declared):
        measured = math.inf if diverges else near
        return config.Check("variance", math.isinf(declared) == diverges, measured,
                            f"declared {declared:g}",
                            f"declared {declared}; integral of x^2 pdf over +-1e3 scale "
                            f"{near:.6g}, over +-1e5 scale {far:.6g}")
    lo, hi = k.support
    pdf = _fn(k, "pdf")
    measured, err = _integral(lambda t: t * t * pdf(t), lo, hi, a)
    dev = abs(measured - declared) / max(1.0, declared)
    return config.Check("variance", dev <= _TOL_VARIANCE + err, measured,
                        f"declared {declared:.6g}, rel {_TOL_VARIANCE:g}",
                        "integral of x^2 pdf by quadrature")


def _support(k: kernels_lib.Kernel, a: float) -> config.Check:
    lo, hi = k.support
    pdf = _fn(k, "pdf")
    grid = _grid(k, a)[:1201] * (8.0 / 12.0)
    inside = _inside(k, grid, 1e-6)
    zero_inside = int(np.sum(~(pdf(inside) > 0)))
    steps = a * np.array([1e-6, 1e-3, 0.1, 1.0, 10.0, 1e3])
    outside = np.concatenate([hi + steps if math.isfinite(hi) else [],
                              lo - steps if math.isfinite(lo) else []])
    nonzero_outside = int(np.sum(pdf(outside) != 0)) if outside.size else 0
    bad = zero_inside + nonzero_outside
    return config.Check("support", bad == 0, bad, 0,
                        f"declared {k.support}: pdf not > 0 at {zero_inside} points inside, "
                        f"not 0 at {nonzero_outside} points outside")


def _eq30(k: kernels_lib.Kernel, a: float) -> config.Check:
    pdf = _fn(k, "pdf")
    worst = 0.0
    for alpha in EQ30_ALPHAS:
        for r in (1.0, 2.5):
            try:
                eps = float(k.epsilon(r, alpha))
            except ValueError as exc:
                return config.Check("eq30", False, "raises", _TOL_EQ30,
                                    f"epsilon(r={r}, alpha={alpha}): {exc}")
            lo, hi = k.support
            mass, _ = _integral(pdf, max(lo, -r / eps), min(hi, r / eps), a)
            worst = max(worst, abs(mass - alpha)) if math.isfinite(mass) else math.inf
    return config.Check("eq30", worst <= _TOL_EQ30, worst, _TOL_EQ30,
                        f"max |mass of pdf_eps in [-r, r] - alpha|, alpha in {EQ30_ALPHAS}, "
                        "r in (1, 2.5)")


def _ks(k: kernels_lib.Kernel, samples: int, alpha: float, seed: int) -> config.Check:
    from scipy import stats

    n = config.scaled(samples)
    config.record_seed(f"check_kernel({k.name!r}) KS test, {n} draws", seed)
    z = np.asarray(k.sample([n], seed=seed, dtype=tf.float64), np.float64)
    z32 = np.asarray(k.sample([n], seed=seed, dtype=tf.float32))
    if not (np.all(np.isfinite(z)) and np.all(np.isfinite(z32))):
        return config.Check("ks", False, "non-finite draws", alpha,
                            f"{int(np.sum(~np.isfinite(z)))} (float64), "
                            f"{int(np.sum(~np.isfinite(z32)))} (float32) of {n} draws")
    p = float(stats.kstest(z, _fn(k, "cdf")).pvalue)
    return config.Check("ks", p >= alpha, p, alpha,
                        f"p-value of the KS test of {n} draws through icdf (seed {seed}) "
                        "against cdf")


def check_kernel(
    kernel: str | kernels_lib.Kernel,
    *,
    samples: int = 20000,
    alpha: float = 1e-4,
    seed: int = 0,
) -> KernelReport:
    """Checks a kernel's declarations against measurements; raises if one is wrong.

    See the module's table for the checks. All but the last are deterministic, in float64,
    with tolerances far above the rounding of a correct kernel (e.g. ``1e-6`` on the
    normalisation); the KS test of ``samples`` draws (times the pytest plugin's
    ``--tfm-samples``) uses a fixed ``seed`` and fails at significance ``alpha``.

    Args:
        kernel: A registered kernel's name, or a :class:`tfmollify.core.kernels.Kernel`
            (registered or not).
        samples: Draws for the KS test.
        alpha: Significance level of the KS test, in (0, 1).
        seed: Seed of the draws.

    Returns:
        The :class:`KernelReport` (every check passed).

    Raises:
        AssertionError: Naming every failed check, with the whole report (also as the
            exception's ``report`` attribute).
        ValueError: For an unknown kernel name, ``samples < 1`` or ``alpha`` outside (0, 1).
        TypeError: If ``kernel`` is neither a name nor a Kernel.

    Example:

    >>> import tensorflow as tf
    >>> import tfmollify as tfm
    >>> print(check_kernel("rect", samples=2000))  # doctest: +ELLIPSIS
    kernel 'rect' (Rect): 8 / 8 checks passed
      ok   normalised ...
    >>> class Wide(tfm.kernels.Kernel):  # the uniform density on [-2, 2], declared wrongly
    ...     name, variance, support = "wide", 1.0 / 3.0, (-2.0, 2.0)
    ...     def _pdf(self, x):
    ...         return tf.where(tf.abs(x) <= 2, tf.constant(0.25, x.dtype), 0 * x)
    ...     def _cdf(self, x):
    ...         return tf.clip_by_value((x + 2) / 4, 0, 1)
    ...     def _icdf(self, u):
    ...         return 4 * u - 2
    >>> try:
    ...     check_kernel(Wide(), samples=2000)
    ... except AssertionError as e:
    ...     print(str(e).splitlines()[0])
    check_kernel: 1 check(s) failed: variance
    """
    k = kernels_lib.get(kernel)
    samples = int(samples)
    if samples < 1:
        raise ValueError(f"Argument `samples` must be an int >= 1. Received: samples={samples}")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"Argument `alpha` must be in (0, 1). Received: alpha={alpha!r}")
    a = _scale(k)
    checks = [f(k, a) for f in (_normalised, _symmetric, _inverse, _cdf_matches_pdf, _variance,
                                _support, _eq30)]
    checks.append(_ks(k, samples, float(alpha), int(seed)))
    report = KernelReport(f"kernel {k.name!r} ({type(k).__name__})", tuple(checks))
    report.raise_if_failed("check_kernel")
    return report

"""Exact (analytic or quadrature) answers for SG / NG / FG on small models.

Models and results (Z ~ standard kernel, chi its characteristic function, chi' its derivative):

* ``f(x) = sum_d sin(x_d)``, input noise ``x + eps Z`` (SG):
  ``E[cos(x + eps Z)] = cos(x) chi(eps)`` (chi is real because the kernel is symmetric).
* One weight ``f(x; w) = sin(w x)``, NG with relative weight noise ``w' = w (1 + delta Z)``:
  ``E[w' cos(w' x)] = w cos(wx) chi(w delta x) + w delta sin(wx) chi'(w delta x)``
  (from ``cos(wx + a Z) = cos(wx) cos(aZ) - sin(wx) sin(aZ)``, ``E[cos aZ] = chi(a)``,
  ``E[Z sin aZ] = -chi'(a)``, and the odd moments vanish). Requires ``E|Z| < inf``: undefined
  for the poisson (Cauchy) kernel.
* FG on the same model, ``u ~ kernel`` input noise of scale eps:
  ``E_u[cos(w'(x + eps u))] = cos(w' x) chi(w' eps)``, so
  ``fg = E_Z[w' cos(w' x) chi(w' eps)]``, a 1-D integral over Z.
* Linear ``f(x) = w . x``: every gradient is w. SG: mean w, mean of squares w^2, variance 0.
  NG with ``w' = w (1 + delta Z)``: mean w, mean of squares ``w^2 (1 + delta^2 Var Z)``,
  variance ``w^2 delta^2 Var Z``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy import integrate

from reference import kernels

__all__ = [
    "fg_sine_grad",
    "fg_sine_grad_gaussian_closed",
    "fg_sine_grad_nested_quad",
    "linear_oracles",
    "ng_linear_oracles",
    "ng_sine_abs_integral",
    "ng_sine_grad",
    "ng_sine_grad_quad",
    "sg_sine_grad",
]

# Half-width beyond which the standard density times any polynomial factor used here is < 1e-25.
_TRUNCATION = {"gaussian": 12.0, "hyperbolic": 32.0, "sigmoid": 64.0, "rect": 1.0}


def _no_cauchy_weights(key: str, what: str) -> None:
    if key == "poisson":
        raise ValueError(
            f"{what} does not exist for kernel='poisson' (Cauchy weight noise): "
            "E|w'| = |w| E|1 + delta Z| = inf for Z ~ Cauchy, so E[w' cos(w' x)] is not "
            "absolutely convergent and the Monte Carlo average has no expectation. "
            "Use a kernel with a finite first moment (gaussian, hyperbolic, sigmoid, rect)."
        )


def sg_sine_grad(x: ArrayLike, eps: float, kernel: str) -> np.ndarray:
    """Exact mollified gradient of ``f(x) = sum(sin(x))``: ``cos(x) chi(eps)``.

    Args:
        x: points, any shape.
        eps: kernel scale (eps >= 0; eps = 0 gives the plain gradient).
        kernel: kernel name.

    Returns:
        float64 array of the shape of ``x``.
    """
    return np.cos(np.asarray(x, dtype=np.float64)) * kernels.char_fn(kernel, eps)


def linear_oracles(w: ArrayLike) -> dict[str, np.ndarray]:
    """SG aggregations of the linear model ``f(x) = w . x`` (any kernel, any eps).

    Args:
        w: the weights, shape [D].

    Returns:
        ``{"smoothgrad": w, "smoothgrad_sq": w**2, "vargrad": zeros}``.
    """
    w = np.asarray(w, dtype=np.float64)
    return {"smoothgrad": w.copy(), "smoothgrad_sq": w**2, "vargrad": np.zeros_like(w)}


def ng_linear_oracles(w: ArrayLike, delta: float, kernel: str) -> dict[str, np.ndarray]:
    """NG (and FG) aggregations of ``f(x) = w . x`` with weights ``w (1 + delta Z)``.

    Args:
        w: the weights, shape [D] (each perturbed by its own Z).
        delta: relative weight-noise scale.
        kernel: kernel name of Z.

    Returns:
        ``{"smoothgrad": w, "smoothgrad_sq": w^2 (1 + delta^2 Var Z),
        "vargrad": w^2 delta^2 Var Z}``.

    Raises:
        ValueError: for the poisson kernel (no finite mean or variance).
    """
    key = kernels.canonical_name(kernel)
    _no_cauchy_weights(key, "NoiseGrad of the linear model")
    w = np.asarray(w, dtype=np.float64)
    var = kernels.variance(key) * float(delta) ** 2
    return {"smoothgrad": w.copy(), "smoothgrad_sq": w**2 * (1.0 + var), "vargrad": w**2 * var}


def ng_sine_grad(x: ArrayLike, w: float, delta: float, kernel: str) -> np.ndarray:
    """Closed form of NG on ``sin(w x)``: ``E[w' cos(w' x)]``, ``w' = w (1 + delta Z)``.

    Args:
        x: scalar inputs, any shape.
        w: the weight.
        delta: relative weight-noise scale (``delta >= 0``).
        kernel: kernel name of Z.

    Returns:
        ``w cos(wx) chi(w delta x) + w delta sin(wx) chi'(w delta x)``.

    Raises:
        ValueError: for the poisson kernel (the expectation does not exist).
    """
    key = kernels.canonical_name(kernel)
    _no_cauchy_weights(key, "NoiseGrad of sin(w x)")
    x = np.asarray(x, dtype=np.float64)
    a = w * delta * x
    return w * np.cos(w * x) * kernels.char_fn(key, a) + w * delta * np.sin(w * x) * (
        kernels.char_fn_deriv(key, a)
    )


def _quad_over_z(
    key: str,
    integrand: Callable[[float], float],
    points: list[float] | None = None,
    epsabs: float = 1e-13,
    epsrel: float = 1e-11,
) -> float:
    half = _TRUNCATION[key]
    val, _ = integrate.quad(
        lambda z: integrand(z) * float(kernels.pdf(key, z)),
        -half,
        half,
        points=points,
        epsabs=epsabs,
        epsrel=epsrel,
        limit=1000,
    )
    return val


def ng_sine_grad_quad(x: float, w: float, delta: float, kernel: str) -> float:
    """``E[w' cos(w' x)]`` by ``scipy.integrate.quad`` over Z (independent of the closed form).

    Args:
        x: scalar input.
        w: the weight.
        delta: relative weight-noise scale.
        kernel: kernel name of Z.

    Returns:
        The expectation as a float.

    Raises:
        ValueError: for the poisson kernel.
    """
    key = kernels.canonical_name(kernel)
    _no_cauchy_weights(key, "NoiseGrad of sin(w x)")

    def g(z: float) -> float:
        wp = w * (1.0 + delta * z)
        return wp * math.cos(wp * x)

    return _quad_over_z(key, g, points=[0.0])


def ng_sine_abs_integral(
    x: float,
    w: float,
    delta: float,
    half_width: float,
    kernel: str = "poisson",
    cells_per_period: int = 64,
) -> float:
    """``int_{-L}^{L} |w' cos(w' x)| phi(z) dz`` on a fine grid (to show divergence for Cauchy).

    For the Cauchy kernel the integrand behaves like ``|w delta| |cos(...)| / (pi |z|)``, so the
    integral grows like ``(4 / pi^2) |w delta| ln L``: ``E|w' cos(w' x)|`` is infinite.

    Args:
        x: scalar input (``x != 0`` for oscillation).
        w: the weight.
        delta: relative weight-noise scale.
        half_width: L > 0.
        kernel: kernel name of Z (default poisson).
        cells_per_period: grid resolution per oscillation period of ``cos(w' x)`` in z.

    Returns:
        The truncated absolute moment (composite trapezoid rule).
    """
    freq = abs(w * delta * x)
    period = 2.0 * math.pi / freq if freq > 0 else 1.0
    h = min(period / cells_per_period, 0.05)
    n = math.ceil(2.0 * half_width / h) + 1
    z = np.linspace(-half_width, half_width, n)
    wp = w * (1.0 + delta * z)
    vals = np.abs(wp * np.cos(wp * x)) * kernels.pdf(kernel, z)
    return float(np.trapezoid(vals, z))


def fg_sine_grad(x: float, w: float, delta: float, eps: float, kernel: str) -> float:
    """FG on ``sin(w x)``: ``E_{Z,u}[w' cos(w'(x + eps u))] = E_Z[w' cos(w' x) chi(w' eps)]``.

    Input noise u and weight noise Z both follow ``kernel``; the u-expectation is done
    analytically via the characteristic function, the Z-expectation by quadrature.

    Args:
        x: scalar input.
        w: the weight.
        delta: relative weight-noise scale.
        eps: input-noise scale.
        kernel: kernel name (for both noises).

    Returns:
        The expectation as a float.

    Raises:
        ValueError: for the poisson kernel (E|w' cos(w'(x + eps u))| = inf, see
            ``_no_cauchy_weights``).
    """
    key = kernels.canonical_name(kernel)
    _no_cauchy_weights(key, "FusionGrad of sin(w x)")

    def g(z: float) -> float:
        wp = w * (1.0 + delta * z)
        return wp * math.cos(wp * x) * float(kernels.char_fn(key, wp * eps))

    return _quad_over_z(key, g, points=[0.0])


def fg_sine_grad_nested_quad(x: float, w: float, delta: float, eps: float, kernel: str) -> float:
    """FG on ``sin(w x)`` by nested quadrature over (Z, u), without the chi shortcut.

    Args:
        x: scalar input.
        w: the weight.
        delta: relative weight-noise scale.
        eps: input-noise scale.
        kernel: kernel name (for both noises).

    Returns:
        The expectation as a float (slower; for tests).

    Raises:
        ValueError: for the poisson kernel.
    """
    key = kernels.canonical_name(kernel)
    _no_cauchy_weights(key, "FusionGrad of sin(w x)")

    def inner(z: float) -> float:
        wp = w * (1.0 + delta * z)
        return _quad_over_z(
            key,
            lambda u: wp * math.cos(wp * (x + eps * u)),
            points=[0.0],
            epsabs=1e-11,
            epsrel=1e-9,
        )

    return _quad_over_z(key, inner, points=[0.0], epsabs=1e-10, epsrel=1e-9)


def fg_sine_grad_gaussian_closed(x: ArrayLike, w: float, delta: float, eps: float) -> np.ndarray:
    """Closed form of FG on ``sin(w x)`` for the Gaussian kernel (both noises).

    With ``v = w' ~ N(m, s^2)``, ``m = w``, ``s = |w| delta > 0``: ``E[v exp(i v x - v^2 eps^2/2)]
    = mu / (s sqrt(A)) exp(B^2/(2A) - m^2/(2 s^2))`` with ``A = eps^2 + 1/s^2``,
    ``B = m/s^2 + i x``, ``mu = B/A``; the answer is its real part.

    Args:
        x: scalar inputs, any shape.
        w: the weight (non-zero).
        delta: relative weight-noise scale (> 0).
        eps: input-noise scale (>= 0).

    Returns:
        float64 array of the shape of ``x``.

    Raises:
        ValueError: if ``w * delta == 0``.
    """
    s = abs(w) * delta
    if s <= 0.0:
        raise ValueError(
            f"Arguments `w` and `delta` must give |w| delta > 0. Received: w={w!r}, delta={delta!r}"
        )
    x = np.asarray(x, dtype=np.float64)
    a = eps**2 + 1.0 / s**2
    b = w / s**2 + 1j * x
    mu = b / a
    val = mu / (s * math.sqrt(a)) * np.exp(b * b / (2.0 * a) - w**2 / (2.0 * s**2))
    return np.real(val)

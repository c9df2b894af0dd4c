"""Appendix C of the paper: the piecewise example (eq. 43), its mollification and gradient.

f (eq. 43) is piecewise linear, ``f(y) = a_k + b_k y`` on ``[c_k, c_{k+1})``, with breakpoints
0, 1, 3/2, 3, 4. It is continuous except at y = 3/2, where it jumps from f(3/2-) = 1 to
f(3/2+) = 2 (jump J = +1).

Closed form for every kernel. With ``Phi`` the kernel cdf and ``G`` any antiderivative of
``u phi(u)`` (partial first moment; gaussian ``-phi``, poisson ``ln(1 + u^2)/(2 pi)``,
sigmoid ``u expit(u) - softplus(u)``, hyperbolic ``G_sigmoid(2u)/2``, rect ``min(u^2, 1)/4``),
substituting ``s = x - y`` in ``int (a + b y) phi_eps(x - y) dy`` gives

    (f * phi_eps)(x) = sum_k (a_k + b_k x) [Phi((x - c_k)/eps) - Phi((x - c_{k+1})/eps)]
                       - b_k eps [G((x - c_k)/eps) - G((x - c_{k+1})/eps)].

Differentiating, the ``phi`` terms telescope into the jumps of f:

    (f * phi_eps)'(x) = (f' * phi_eps)(x) + sum_c J_c phi_eps(x - c)
                      = sum_k b_k [Phi((x - c_k)/eps) - Phi((x - c_{k+1})/eps)]
                        + 1 * phi_eps(x - 3/2).

The Monte Carlo gradient of Theorem 3.11 averages the pointwise derivative f', so it estimates
``f' * phi_eps`` only and misses the jump term (see ``example_fprime_conv``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import sympy as sp
from numpy.typing import ArrayLike
from scipy import integrate, special

from reference import kernels

__all__ = [
    "EXAMPLE_BREAKPOINTS",
    "EXAMPLE_JUMPS",
    "EXAMPLE_PIECES",
    "eq45_difference",
    "example_f",
    "example_f_grad",
    "example_fprime_conv",
    "gaussian_sympy_expression",
    "mollified_example",
    "mollified_example_grad",
    "paper_eq45",
    "paper_eq45_sympy",
]

# (lower, upper, a, b): f(y) = a + b y on [lower, upper).
EXAMPLE_PIECES: tuple[tuple[float, float, float, float], ...] = (
    (-math.inf, 0.0, 0.0, 0.0),
    (0.0, 1.0, 0.0, 2.0),
    (1.0, 1.5, 4.0, -2.0),
    (1.5, 3.0, -1.0, 2.0),
    (3.0, 4.0, 8.0, -1.0),
    (4.0, math.inf, 4.0, 0.0),
)
EXAMPLE_BREAKPOINTS: tuple[float, ...] = (0.0, 1.0, 1.5, 3.0, 4.0)


def _jumps() -> dict[float, float]:
    out = {}
    for left, right in itertools.pairwise(EXAMPLE_PIECES):
        c = right[0]
        jump = (right[2] + right[3] * c) - (left[2] + left[3] * c)
        if jump != 0.0:
            out[c] = jump
    return out


EXAMPLE_JUMPS: dict[float, float] = _jumps()  # {1.5: 1.0}

_METHODS = ("closed", "quad", "sympy")


def example_f(x: ArrayLike) -> np.ndarray:
    """Eq. 43: 0 (x <= 0), 2x (0 < x <= 1), 4 - 2x (1 <= x < 3/2), 2x - 1 (3/2 <= x < 3),
    8 - x (3 <= x < 4), 4 (x >= 4).

    Args:
        x: points, any shape.

    Returns:
        float64 array; at x = 3/2 the value of the right piece (2); f(3/2-) = 1.
    """
    x = np.asarray(x, dtype=np.float64)
    return np.select(
        [x <= 0.0, x <= 1.0, x < 1.5, x < 3.0, x < 4.0],
        [np.zeros_like(x), 2.0 * x, 4.0 - 2.0 * x, 2.0 * x - 1.0, 8.0 - x],
        default=4.0,
    )


def example_f_grad(x: ArrayLike) -> np.ndarray:
    """Pointwise derivative f' of eq. 43 (right derivative at the breakpoints).

    This is the classical derivative almost everywhere; it ignores the jump at 3/2
    (the distributional derivative has an extra ``1 * delta(x - 3/2)``).

    Args:
        x: points, any shape.

    Returns:
        float64 array with values in {0, 2, -2, 2, -1, 0}.
    """
    x = np.asarray(x, dtype=np.float64)
    return np.select(
        [x < 0.0, x < 1.0, x < 1.5, x < 3.0, x < 4.0],
        [
            np.zeros_like(x),
            np.full_like(x, 2.0),
            np.full_like(x, -2.0),
            np.full_like(x, 2.0),
            np.full_like(x, -1.0),
        ],
        default=0.0,
    )


def _moment_antideriv(key: str, u: np.ndarray) -> np.ndarray:
    """An antiderivative G of u phi(u) for the standard kernel (even in u)."""
    a = np.abs(u)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        if key == "gaussian":
            return -kernels.pdf(key, a)
        if key == "poisson":
            return np.log1p(a * a) / (2.0 * math.pi)
        if key == "sigmoid":
            # u expit(u) - log(1 + e^u), written for |u| (G is even) without overflow.
            return -a * special.expit(-a) - np.log1p(np.exp(-a))
        if key == "hyperbolic":
            b = 2.0 * a
            return 0.5 * (-b * special.expit(-b) - np.log1p(np.exp(-b)))
        return 0.25 * np.minimum(a * a, 1.0)  # rect


def _shift(x: np.ndarray, c: float, eps: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return (x - c) / eps


def _check_eps(eps: float) -> float:
    eps = float(eps)
    if not (eps > 0.0 and math.isfinite(eps)):
        raise ValueError(f"Argument `eps` must be a positive finite number. Received: eps={eps!r}")
    return eps


def _check_method(method: str, key: str) -> None:
    if method not in _METHODS:
        raise ValueError(
            f"Argument `method` must be one of {_METHODS}. Received: method={method!r}"
        )
    if method == "sympy" and key != "gaussian":
        raise ValueError(
            "Argument `method`='sympy' is only available for kernel='gaussian'. "
            f"Received: kernel={key!r}"
        )


def _closed(x: np.ndarray, eps: float, key: str) -> np.ndarray:
    out = np.zeros_like(x)
    for lo, hi, a, b in EXAMPLE_PIECES:
        ulo, uhi = _shift(x, lo, eps), _shift(x, hi, eps)  # s = x - y in [x - hi, x - lo]
        mass = kernels.cdf(key, ulo) - kernels.cdf(key, uhi)
        out += (a + b * x) * mass
        if b != 0.0:
            out -= b * eps * (_moment_antideriv(key, ulo) - _moment_antideriv(key, uhi))
    return out


def _closed_grad(x: np.ndarray, eps: float, key: str) -> np.ndarray:
    out = np.zeros_like(x)
    for lo, hi, _a, b in EXAMPLE_PIECES:
        if b != 0.0:
            out += b * (kernels.cdf(key, _shift(x, lo, eps)) - kernels.cdf(key, _shift(x, hi, eps)))
    for c, jump in EXAMPLE_JUMPS.items():
        out += jump * kernels.pdf(key, x - c, scale=eps)
    return out


def _split_points(x0: float, eps: float) -> list[float]:
    pts = set(EXAMPLE_BREAKPOINTS)
    pts.update({x0, x0 - eps, x0 + eps})
    return sorted(pts)


def _quad_conv(
    x0: float, eps: float, key: str, g: Callable[[float], float], tails: tuple[float, float]
) -> float:
    """int g(y) phi_eps(x0 - y) dy, g constant (= tails) outside [0, 4], split at all kinks."""
    pts = _split_points(x0, eps)

    def integrand(y: float) -> float:
        return g(y) * float(kernels.pdf(key, x0 - y, scale=eps))

    total = 0.0
    for lo, hi in itertools.pairwise(pts):
        val, _ = integrate.quad(integrand, lo, hi, epsabs=1e-13, epsrel=1e-12, limit=200)
        total += val
    for lo, hi, value in ((-math.inf, pts[0], tails[0]), (pts[-1], math.inf, tails[1])):
        if value != 0.0:
            val, _ = integrate.quad(
                lambda y, value=value: value * float(kernels.pdf(key, x0 - y, scale=eps)),
                lo,
                hi,
                epsabs=1e-13,
                epsrel=1e-12,
                limit=200,
            )
            total += val
    return total


def _expand_exp_args(expr: sp.Expr) -> sp.Expr:
    return expr.replace(sp.exp, lambda arg: sp.exp(sp.expand(arg)))


def _factor_exp_args(expr: sp.Expr) -> sp.Expr:
    """exp(-x^2/(2e^2) + c x/e^2 - ...) -> exp(-(x - c)^2/(2 e^2)): no overflow in float."""
    return expr.replace(sp.exp, lambda arg: sp.exp(sp.factor(sp.expand(arg))))


@lru_cache(maxsize=1)
def gaussian_sympy_expression() -> tuple[sp.Symbol, sp.Symbol, sp.Expr]:
    """Derives ``(f * phi_eps)(x)`` for the Gaussian kernel with SymPy.

    Each piece ``a_k + b_k y`` on ``[c_k, c_{k+1})`` is integrated against ``phi_eps(x - y)``
    after the substitution ``y = x - eps s``:
    ``int_{(x - c_{k+1})/eps}^{(x - c_k)/eps} (a_k + b_k (x - eps s)) phi(s) ds`` with
    ``phi(s) = exp(-s^2/2)/sqrt(2 pi)``.

    Returns:
        ``(x, eps, expression)`` with ``x`` real and ``eps`` positive.
    """
    x = sp.Symbol("x", real=True)
    eps = sp.Symbol("epsilon", positive=True)
    s = sp.Symbol("s", real=True)
    phi = sp.exp(-(s**2) / 2) / sp.sqrt(2 * sp.pi)
    total = sp.Integer(0)
    for lo, hi, a, b in EXAMPLE_PIECES:
        if a == 0.0 and b == 0.0:
            continue
        s_lo = -sp.oo if math.isinf(hi) else (x - sp.nsimplify(hi)) / eps
        s_hi = sp.oo if math.isinf(lo) else (x - sp.nsimplify(lo)) / eps
        piece = (sp.nsimplify(a) + sp.nsimplify(b) * (x - eps * s)) * phi
        total += sp.integrate(piece, (s, s_lo, s_hi))
    total = sp.expand(_expand_exp_args(total).rewrite(sp.erf), power_exp=False)
    total = _factor_exp_args(total)
    return x, eps, sp.collect(total, [sp.erf(sp.Wild("w")), x], evaluate=True)


def paper_eq45_sympy() -> tuple[sp.Symbol, sp.Symbol, sp.Expr]:
    """Eq. 45 as printed, as a SymPy expression (same symbols as ``gaussian_sympy_expression``).

    Returns:
        ``(x, eps, expression)``.
    """
    x, eps, _ = gaussian_sympy_expression()
    r2 = sp.sqrt(2)
    erf, exp = sp.erf, sp.exp
    expr = (
        sp.Rational(1, 2) * (x - 4) * erf((x - 4) / (r2 * eps))
        - sp.Rational(3, 2) * (x - 3) * erf((x - 3) / (r2 * eps))
        + 2 * erf((x - 1) / (r2 * eps))
        + x
        * (
            -2 * erf((x - 1) / (r2 * eps))
            + erf(x / (r2 * eps))
            + 2 * erf((2 * x - 3) / (2 * r2 * eps))
        )
        + sp.Rational(5, 2) * erf((3 - 2 * x) / (2 * r2 * eps))
        + eps
        * (
            2 * exp(-(x**2) / (2 * eps**2))
            + 4 * exp(-((3 - 2 * x) ** 2) / (8 * eps**2))
            + exp(-((x - 4) ** 2) / (2 * eps**2))
            - 3 * exp(-((x - 3) ** 2) / (2 * eps**2))
            - 4 * exp(-((x - 1) ** 2) / (2 * eps**2))
        )
        / sp.sqrt(2 * sp.pi)
        + 2 * sp.sqrt(1 / eps**2) * eps
    )
    return x, eps, expr


def eq45_difference() -> sp.Expr:
    """``simplify(derived - printed eq. 45)`` for the Gaussian kernel, eps > 0.

    Returns:
        The simplified SymPy difference (0 when eq. 45 is right).
    """
    _x, _eps, derived = gaussian_sympy_expression()
    _, _, printed = paper_eq45_sympy()
    diff = sp.expand(derived - printed)
    diff = diff.replace(sp.erf, lambda arg: sp.erf(sp.expand(arg)))
    return sp.simplify(_expand_exp_args(diff))


@lru_cache(maxsize=2)
def _gaussian_lambdified(derivative: bool) -> Callable[[np.ndarray, float], np.ndarray]:
    x, eps, expr = gaussian_sympy_expression()
    if derivative:
        expr = sp.diff(expr, x)
    return sp.lambdify((x, eps), expr, modules=["scipy", "numpy"])


def mollified_example(
    x: ArrayLike, eps: float, kernel: str = "gaussian", method: str = "closed"
) -> np.ndarray:
    """``(f * phi_eps)(x)`` for f of eq. 43.

    Args:
        x: points, any shape.
        eps: kernel scale, ``eps > 0``.
        kernel: kernel name or alias.
        method: ``"closed"`` (cdf / partial-first-moment closed form, all kernels), ``"quad"``
            (``scipy.integrate.quad`` split at 0, 1, 1.5, 3, 4 and x, x +- eps) or ``"sympy"``
            (the lambdified SymPy derivation, gaussian only).

    Returns:
        float64 array of the shape of ``x``.

    Raises:
        ValueError: unknown kernel or method, ``eps <= 0``, ``"sympy"`` with a non-Gaussian
            kernel.
    """
    key = kernels.canonical_name(kernel)
    eps = _check_eps(eps)
    _check_method(method, key)
    xa = np.asarray(x, dtype=np.float64)
    if method == "closed":
        return _closed(xa, eps, key)
    if method == "sympy":
        return np.asarray(_gaussian_lambdified(False)(xa, eps), dtype=np.float64) + 0.0 * xa

    def f_scalar(y: float) -> float:
        return float(example_f(y))

    vals = [_quad_conv(float(v), eps, key, f_scalar, (0.0, 4.0)) for v in xa.ravel()]
    return np.asarray(vals, dtype=np.float64).reshape(xa.shape)


def example_fprime_conv(x: ArrayLike, eps: float, kernel: str = "gaussian") -> np.ndarray:
    """``(f' * phi_eps)(x)`` with f' the pointwise derivative: what Theorem 3.11 estimates.

    Differs from the true derivative ``mollified_example_grad`` by the missing jump term
    ``1 * phi_eps(x - 3/2)``.

    Args:
        x: points, any shape.
        eps: kernel scale, ``eps > 0``.
        kernel: kernel name or alias.

    Returns:
        float64 array of the shape of ``x``.

    Raises:
        ValueError: unknown kernel, ``eps <= 0``.
    """
    key = kernels.canonical_name(kernel)
    eps = _check_eps(eps)
    xa = np.asarray(x, dtype=np.float64)
    jumps = sum(j * kernels.pdf(key, xa - c, scale=eps) for c, j in EXAMPLE_JUMPS.items())
    return _closed_grad(xa, eps, key) - jumps


def mollified_example_grad(
    x: ArrayLike, eps: float, kernel: str = "gaussian", method: str = "closed"
) -> np.ndarray:
    """``d/dx (f * phi_eps)(x) = (f' * phi_eps)(x) + 1 * phi_eps(x - 3/2)`` for f of eq. 43.

    Args:
        x: points, any shape.
        eps: kernel scale, ``eps > 0``.
        kernel: kernel name or alias.
        method: ``"closed"``, ``"quad"`` (quadrature of f' against phi_eps plus the jump term)
            or ``"sympy"`` (derivative of the SymPy expression, gaussian only).

    Returns:
        float64 array of the shape of ``x``. For ``rect`` the derivative is discontinuous at
        ``x = 3/2 +- eps``; there the one-sided value with the closed interval ``|s| <= eps``
        of the rect density is returned.

    Raises:
        ValueError: unknown kernel or method, ``eps <= 0``, ``"sympy"`` with a non-Gaussian
            kernel.
    """
    key = kernels.canonical_name(kernel)
    eps = _check_eps(eps)
    _check_method(method, key)
    xa = np.asarray(x, dtype=np.float64)
    if method == "closed":
        return _closed_grad(xa, eps, key)
    if method == "sympy":
        return np.asarray(_gaussian_lambdified(True)(xa, eps), dtype=np.float64) + 0.0 * xa

    def fprime_scalar(y: float) -> float:
        return float(example_f_grad(y))

    vals = []
    for v in xa.ravel():
        conv = _quad_conv(float(v), eps, key, fprime_scalar, (0.0, 0.0))
        jumps = sum(j * float(kernels.pdf(key, v - c, scale=eps)) for c, j in EXAMPLE_JUMPS.items())
        vals.append(conv + jumps)
    return np.asarray(vals, dtype=np.float64).reshape(xa.shape)


def paper_eq45(x: ArrayLike, eps: float) -> np.ndarray:
    """Eq. 45 of the paper, transcribed verbatim (Gaussian mollification of eq. 43).

    Args:
        x: points, any shape.
        eps: the Gaussian scale (eq. 44); the last term ``2 sqrt(1/eps^2) eps`` equals
            ``2 sign(eps)``.

    Returns:
        float64 array of the shape of ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    eps = float(eps)
    s2 = math.sqrt(2.0)
    erf = special.erf
    return (
        0.5 * (x - 4.0) * erf((x - 4.0) / (s2 * eps))
        - 1.5 * (x - 3.0) * erf((x - 3.0) / (s2 * eps))
        + 2.0 * erf((x - 1.0) / (s2 * eps))
        + x
        * (
            -2.0 * erf((x - 1.0) / (s2 * eps))
            + erf(x / (s2 * eps))
            + 2.0 * erf((2.0 * x - 3.0) / (2.0 * s2 * eps))
        )
        + 2.5 * erf((3.0 - 2.0 * x) / (2.0 * s2 * eps))
        + eps
        * (
            2.0 * np.exp(-(x**2) / (2.0 * eps**2))
            + 4.0 * np.exp(-((3.0 - 2.0 * x) ** 2) / (8.0 * eps**2))
            + np.exp(-((x - 4.0) ** 2) / (2.0 * eps**2))
            - 3.0 * np.exp(-((x - 3.0) ** 2) / (2.0 * eps**2))
            - 4.0 * np.exp(-((x - 1.0) ** 2) / (2.0 * eps**2))
        )
        / math.sqrt(2.0 * math.pi)
        + 2.0 * math.sqrt(1.0 / eps**2) * eps
    )

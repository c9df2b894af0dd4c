"""Symbolic (SymPy) proofs of the kernel properties and of the epsilon formulas (eq. 30).

Every ``prove_*`` function returns ``True`` only when SymPy reduces the relevant difference to
exactly 0 (no floating point involved), except where a docstring says "numeric fallback".
``verify_all()`` runs everything once (cached) and returns a dict the tests assert on.

Derivation of eq. 30. ``alpha/2 = int_0^r phi_eps(x) dx = Phi(r/eps) - 1/2`` (phi symmetric), so
``r/eps = Phi^-1((1 + alpha)/2)``, i.e. ``eps = r / Phi^-1((1 + alpha)/2)``:

* gaussian:   eps = r / (sqrt(2) erfinv(alpha))                     (paper eq. 47: right)
* poisson:    eps = r / tan(pi alpha / 2)                           (paper eq. 48: right)
* hyperbolic: eps = r / artanh(alpha)                               (paper eq. 49: arctan, wrong)
* sigmoid:    eps = r / ln((1 + alpha)/(1 - alpha)) = r/(2 artanh alpha)  (eq. 50: right)
* rect:       eps = r / alpha  (r <= eps always, since alpha < 1)   (paper eq. 51: 2r/alpha, wrong)
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import sympy as sp
from scipy import integrate

from reference import kernels
from reference.symbolic import symbolic

__all__ = [
    "ALPHA",
    "EPS",
    "R",
    "derive_epsilon",
    "epsilon_closed_form",
    "eq18_printed_integral",
    "eq30_integral",
    "paper_epsilon",
    "prove_cdf_derivative",
    "prove_char_fn",
    "prove_epsilon_closed_form",
    "prove_icdf_inverts_cdf",
    "prove_integrates_to_one",
    "prove_symmetric",
    "satisfies_eq30",
    "verify_all",
]

R = sp.Symbol("r", positive=True)
EPS = sp.Symbol("epsilon", positive=True)
ALPHA = sp.Symbol("alpha", positive=True)  # 0 < alpha < 1 in eq. 30


def _is_zero(expr: sp.Expr) -> bool:
    """True when SymPy reduces ``expr`` to exactly 0 (every branch, for a Piecewise)."""
    expr = sp.simplify(sp.piecewise_fold(expr))
    if isinstance(expr, sp.Piecewise):
        covered = sp.simplify(sp.Or(*(cond for _val, cond in expr.args)))
        return covered == sp.true and all(_is_zero(val) for val, _cond in expr.args)
    if expr == 0:
        return True
    return sp.simplify(expr.rewrite(sp.exp)) == 0


def prove_integrates_to_one(name: str) -> bool:
    """Proves ``int_R phi(x) dx == 1`` with ``sympy.integrate``.

    Args:
        name: kernel name.

    Returns:
        True when SymPy's definite integral is exactly 1.
    """
    k = symbolic(name)
    return _is_zero(sp.integrate(k.pdf, (k.x, -sp.oo, sp.oo)) - 1)


def prove_symmetric(name: str) -> bool:
    """Proves ``phi(x) - phi(-x) == 0`` (eq. 24, second line).

    Args:
        name: kernel name.

    Returns:
        True when the difference simplifies to 0.
    """
    k = symbolic(name)
    return _is_zero(k.pdf - k.pdf.subs(k.x, -k.x))


def prove_cdf_derivative(name: str) -> bool:
    """Proves ``d/dx Phi(x) == phi(x)``.

    For ``rect`` both sides are piecewise; the difference is folded into one ``Piecewise``
    whose every branch must simplify to 0 (this includes the points x = +-1, where SymPy's
    derivative takes the value of the closed middle branch, 1/2 = phi(+-1)).

    Args:
        name: kernel name.

    Returns:
        True when the difference simplifies to 0 on every branch.
    """
    k = symbolic(name)
    return _is_zero(sp.diff(k.cdf, k.x) - k.pdf)


def prove_icdf_inverts_cdf(name: str) -> bool:
    """Proves ``Phi^-1(Phi(x)) == x`` for every x of the support (x real; |x| <= 1 for rect).

    Since Phi is continuous and strictly increasing on the support with limits 0 and 1, a left
    inverse is the inverse. ``artanh(tanh x)`` is first rewritten with logarithms, because
    SymPy does not cancel it directly.

    Args:
        name: kernel name.

    Returns:
        True when the composition minus x simplifies to 0.
    """
    k = symbolic(name)
    cdf = k.cdf
    if k.name == "rect":
        cdf = (k.x + 1) / 2  # the branch of the support -1 <= x <= 1
    comp = k.icdf.subs(k.u, cdf)
    if _is_zero(comp - k.x):
        return True
    rewritten = sp.expand_log(comp.rewrite(sp.log).rewrite(sp.exp), force=True)
    return _is_zero(rewritten - k.x)


def eq30_integral(name: str) -> sp.Expr:
    """``int_0^r phi_eps(x) dx`` in closed form (for rect: the case r <= eps, see module doc).

    Args:
        name: kernel name.

    Returns:
        A SymPy expression in ``R`` and ``EPS``.
    """
    k = symbolic(name)
    if k.name == "rect":
        # phi_eps = 1/(2 eps) on [0, r] when r <= eps; for r > eps the integral is 1/2 > alpha/2.
        return sp.integrate(sp.Rational(1, 2) / EPS, (k.x, 0, R))
    pdf_eps = k.pdf.subs(k.x, k.x / EPS) / EPS
    return sp.integrate(pdf_eps, (k.x, 0, R))


def epsilon_closed_form(name: str) -> sp.Expr:
    """The corrected closed form of eq. 30 solved for eps (see module docstring).

    Args:
        name: kernel name.

    Returns:
        A SymPy expression in ``R`` and ``ALPHA``.
    """
    key = kernels.canonical_name(name)
    return {
        "gaussian": R / (sp.sqrt(2) * sp.erfinv(ALPHA)),
        "poisson": R / sp.tan(sp.pi * ALPHA / 2),
        "hyperbolic": R / sp.atanh(ALPHA),
        "sigmoid": R / sp.log((1 + ALPHA) / (1 - ALPHA)),
        "rect": R / ALPHA,
    }[key]


def paper_epsilon(name: str) -> sp.Expr:
    """Eqs. 47-51 exactly as printed in appendix D of the paper.

    Args:
        name: kernel name.

    Returns:
        A SymPy expression in ``R`` and ``ALPHA``.
    """
    key = kernels.canonical_name(name)
    return {
        "gaussian": R / (sp.sqrt(2) * sp.erfinv(ALPHA)),  # eq. 47
        "poisson": R / sp.tan(sp.pi * ALPHA / 2),  # eq. 48
        "hyperbolic": R / sp.atan(ALPHA),  # eq. 49 (printed arctan)
        "sigmoid": R / sp.log((1 + ALPHA) / (1 - ALPHA)),  # eq. 50
        "rect": 2 * R / ALPHA,  # eq. 51
    }[key]


def satisfies_eq30(name: str, eps_expr: sp.Expr) -> bool:
    """Whether ``eps_expr`` solves eq. 30 identically in r > 0 and 0 < alpha < 1.

    First by direct substitution (``int_0^r phi_eps - alpha/2`` simplifies to 0). SymPy cannot
    use ``alpha < 1`` (e.g. to cancel ``atan(tan(pi alpha/2))``), so the fallback proves the
    equivalent pair: (i) ``int_0^r phi_eps == Phi(r/eps) - 1/2`` identically in eps, and
    (ii) ``r / eps_expr == Phi^-1((1 + alpha)/2)``; since Phi is a bijection onto (0, 1) with
    inverse Phi^-1 (``prove_icdf_inverts_cdf``), (i) and (ii) give eq. 30.

    Args:
        name: kernel name.
        eps_expr: a SymPy expression in ``R`` and ``ALPHA``.

    Returns:
        True when either route reduces to exactly 0.
    """
    integral = eq30_integral(name)
    if _is_zero(integral.subs(EPS, eps_expr) - ALPHA / 2):
        return True
    k = symbolic(name)
    cdf = (k.x + 1) / 2 if k.name == "rect" else k.cdf  # rect: r <= eps, the middle branch
    step_i = _is_zero(integral - (cdf.subs(k.x, R / EPS) - sp.Rational(1, 2)))
    step_ii = _is_zero(R / eps_expr - k.icdf.subs(k.u, (1 + ALPHA) / 2))
    return step_i and step_ii


def derive_epsilon(name: str) -> sp.Expr:
    """Solves eq. 30 for eps with ``sympy.solve`` and keeps the real positive root.

    Args:
        name: kernel name.

    Returns:
        The solution as a SymPy expression in ``R`` and ``ALPHA``.

    Raises:
        RuntimeError: if SymPy returns no real positive root.
    """
    sols = sp.solve(sp.Eq(ALPHA / 2, eq30_integral(name)), EPS)
    probe = {R: sp.Rational(3, 2), ALPHA: sp.Rational(7, 10)}
    good = []
    for s in sols:
        val = complex(sp.N(s.subs(probe), 30))
        if abs(val.imag) < 1e-25 and val.real > 0:
            good.append(s)
    if len(good) != 1:
        raise RuntimeError(f"eq. 30 for kernel {name!r}: no unique real positive root in {sols}")
    return good[0]


def prove_epsilon_closed_form(name: str) -> bool:
    """Proves the closed form of eq. 30 and that it is SymPy's root.

    Two facts are checked: (1) ``epsilon_closed_form`` satisfies eq. 30 identically
    (symbolic substitution); (2) ``derive_epsilon`` (SymPy's own root) equals it, symbolically
    when SymPy can simplify the difference, else at 30 digits on a grid of (r, alpha). Eq. 30
    has one root because Phi is strictly increasing, so (1) alone already proves the formula.

    Args:
        name: kernel name.

    Returns:
        True when both checks pass.
    """
    closed = epsilon_closed_form(name)
    if not satisfies_eq30(name, closed):
        return False
    derived = derive_epsilon(name)
    if _is_zero(derived - closed):
        return True
    for r in ("0.01", "1", "7.5"):
        for a in ("0.05", "0.5", "0.9", "0.999"):
            sub = {R: sp.Rational(r), ALPHA: sp.Rational(a)}
            d, c = sp.N(derived.subs(sub), 30), sp.N(closed.subs(sub), 30)
            if abs(complex(d) - complex(c)) > 1e-20 * abs(complex(c)):
                return False
    return True


def _numeric_char_fn_ok(name: str) -> bool:
    """2 int_0^b phi(z) cos(t z) dz by QUADPACK's Fourier routines (QAWF for b = inf)."""
    k = symbolic(name)
    chi = sp.lambdify(k.t, k.char_fn, "numpy")
    upper = 1.0 if k.name == "rect" else np.inf
    for t in (0.3, 1.0, 2.5):
        val, _ = integrate.quad(
            lambda z: float(kernels.pdf(name, z)), 0.0, upper, weight="cos", wvar=t
        )
        if abs(2.0 * val - float(chi(t))) > 1e-9:
            return False
    return True


def prove_char_fn(name: str) -> tuple[str, bool]:
    """Proves the characteristic function ``chi(t) = int cos(t x) phi(x) dx`` (t > 0).

    * gaussian, poisson, rect: SymPy evaluates the Fourier integral; the difference to the
      closed form simplifies to 0 (method ``"symbolic"``).
    * sigmoid: SymPy cannot integrate directly. The substitution ``y = Phi(x)``
      (``x = ln(y/(1-y))``, ``phi dx = dy``) turns the integral into Euler's Beta integral
      ``int_0^1 y^(it) (1-y)^(-it) dy = B(1+it, 1-it) = Gamma(1+it) Gamma(1-it)``; SymPy proves
      the substitution and that this Gamma product equals ``pi t / sinh(pi t)``
      (method ``"beta"``).
    * hyperbolic: SymPy proves ``phi_h(x) = 2 phi_s(2x)`` (scale 1/2 of the sigmoid kernel),
      hence ``chi_h(t) = chi_s(t/2)`` (method ``"scaling"``).

    Every method is additionally confirmed by numerical quadrature at t = 0.3, 1, 2.5.

    Args:
        name: kernel name.

    Returns:
        ``(method, ok)``.
    """
    k = symbolic(name)
    numeric = _numeric_char_fn_ok(name)
    if k.name in ("gaussian", "poisson", "rect"):
        val = sp.integrate(sp.cos(k.t * k.x) * k.pdf, (k.x, -sp.oo, sp.oo))
        return "symbolic", numeric and _is_zero(val - k.char_fn)
    if k.name == "sigmoid":
        y = sp.Symbol("y", positive=True)
        subst_ok = _is_zero(k.cdf.subs(k.x, sp.log(y / (1 - y))) - y)
        beta = sp.gamma(1 + sp.I * k.t) * sp.gamma(1 - sp.I * k.t) / sp.gamma(2)
        gamma_ok = _is_zero(sp.gammasimp(beta) - k.char_fn)
        return "beta", numeric and subst_ok and gamma_ok
    sig = symbolic("sigmoid")
    scaling_ok = _is_zero(k.pdf - 2 * sig.pdf.subs(sig.x, 2 * k.x))
    chi_ok = _is_zero(k.char_fn - sig.char_fn.subs(sig.t, k.t / 2))
    return "scaling", numeric and scaling_ok and chi_ok


def eq18_printed_integral(n: int) -> sp.Expr:
    """Integral over R^n of the density printed in eq. 18.

    Printed: ``(2 pi)^(-n/2) eps^(-n/2) exp(-t t^T / (2 eps^(2n)))``. Each coordinate
    contributes ``sqrt(2 pi) eps^n``, so the integral is ``eps^(n^2 - n/2)`` instead of 1.

    Args:
        n: dimension (small, e.g. 1..3).

    Returns:
        The SymPy value of the integral, as a function of ``EPS``.
    """
    ts = sp.symbols(f"t1:{n + 1}", real=True)
    density = sp.exp(-sum(t_i**2 for t_i in ts) / (2 * EPS ** (2 * n))) / sp.sqrt(
        (2 * sp.pi) ** n * EPS**n
    )
    val = density
    for t_i in ts:
        val = sp.integrate(val, (t_i, -sp.oo, sp.oo))
    return sp.simplify(val)


@lru_cache(maxsize=1)
def verify_all() -> dict[str, Any]:
    """Runs every proof once (cached).

    Returns:
        ``{"kernels": {name: {...}}, "eq18": {n: integral}}``. Per kernel: booleans
        ``integrates_to_one``, ``symmetric``, ``cdf_derivative_is_pdf``, ``icdf_inverts_cdf``,
        ``epsilon_closed_form``, ``paper_epsilon_satisfies_eq30``, ``char_fn_ok``; strings
        ``char_fn_method``, ``epsilon`` (SymPy's root) and ``paper_epsilon``.
    """
    out: dict[str, Any] = {"kernels": {}, "eq18": {}}
    for name in kernels.KERNEL_NAMES:
        method, chi_ok = prove_char_fn(name)
        out["kernels"][name] = {
            "integrates_to_one": prove_integrates_to_one(name),
            "symmetric": prove_symmetric(name),
            "cdf_derivative_is_pdf": prove_cdf_derivative(name),
            "icdf_inverts_cdf": prove_icdf_inverts_cdf(name),
            "epsilon_closed_form": prove_epsilon_closed_form(name),
            "epsilon": str(derive_epsilon(name)),
            "paper_epsilon": str(paper_epsilon(name)),
            "paper_epsilon_satisfies_eq30": satisfies_eq30(name, paper_epsilon(name)),
            "char_fn_method": method,
            "char_fn_ok": chi_ok,
        }
    for n in (1, 2, 3):
        out["eq18"][n] = eq18_printed_integral(n)
    return out

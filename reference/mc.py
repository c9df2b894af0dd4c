"""Monte Carlo estimator of the mollified gradient (Theorem 3.11, eq. 17).

    mg_eps(x0) = (1/N) sum_i g(x0 - t_i) phi_eps(t_i) / p(t_i),    t_i ~ p  i.i.d.

with the D-dimensional product kernel ``phi_eps(t) = prod_d phi(t_d / eps_d) / eps_d`` and a
product proposal ``p``. The importance weights are computed in log space. The estimator is
unbiased when ``p > 0`` wherever ``g(x0 - t) phi_eps(t) != 0`` and has standard error
``sd(G) / sqrt(N)`` when ``Var(G) < inf`` (see FINDINGS.md for both conditions).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike

from reference import kernels

__all__ = ["importance_weights", "mc_mollified_gradient"]


def _positive(name: str, value: ArrayLike, dim: int) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (dim,))
    if not np.all((arr > 0.0) & np.isfinite(arr)):
        raise ValueError(
            f"Argument `{name}` must be positive and finite (scalar or shape [D]). "
            f"Received: {name}={value!r}"
        )
    return arr


def importance_weights(
    t: np.ndarray, eps: ArrayLike, kernel: str, proposal: str, proposal_scale: ArrayLike
) -> np.ndarray:
    """``prod_d phi_eps(t_d) / p(t_d)``, computed as ``exp(sum_d log phi - log p)``.

    Args:
        t: samples, shape [n, D], drawn from the proposal (so ``p(t) > 0``).
        eps: kernel scale, scalar or [D].
        kernel: target kernel name.
        proposal: proposal kernel name.
        proposal_scale: proposal scale, scalar or [D].

    Returns:
        Weights, shape [n]; 0 where the target density is 0 (rect outside its support).
    """
    t = np.asarray(t, dtype=np.float64)
    dim = t.shape[1]
    eps = _positive("eps", eps, dim)
    scale = _positive("proposal_scale", proposal_scale, dim)
    log_w = np.zeros(t.shape[0])
    for d in range(dim):
        log_w += kernels.logpdf(kernel, t[:, d], scale=eps[d])
        log_w -= kernels.logpdf(proposal, t[:, d], scale=scale[d])
    return np.exp(log_w)


def mc_mollified_gradient(
    grad_fn: Callable[[np.ndarray], np.ndarray],
    x0: ArrayLike,
    eps: ArrayLike,
    kernel: str,
    n: int,
    rng: np.random.Generator,
    proposal: str | None = None,
    proposal_scale: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 17: importance-sampled estimate of ``g_eps(x0) = (g * phi_eps)(x0)``.

    Args:
        grad_fn: the gradient g, mapping points [n, D] to gradients [n, D].
        x0: the point, shape [D].
        eps: kernel scale ``eps > 0``, scalar or [D].
        kernel: kernel name of ``phi``.
        n: number of samples N >= 2.
        rng: ``numpy.random.Generator`` (the only source of randomness).
        proposal: kernel name of the sampling density ``p``; default ``kernel`` (then every
            weight is exactly 1 and eq. 17 reduces to plain SmoothGrad, eq. 19).
        proposal_scale: scale of ``p``, scalar or [D]; default ``eps``.

    Returns:
        ``(estimate, stderr)``, both shape [D]: the sample mean of
        ``G_i = g(x0 - t_i) w(t_i)`` and its standard error ``std(G, ddof=1) / sqrt(n)``.

    Raises:
        ValueError: unknown kernel names, non-positive scales, ``n < 2`` or a ``grad_fn``
            output of the wrong shape.
    """
    x0 = np.atleast_1d(np.asarray(x0, dtype=np.float64))
    if x0.ndim != 1:
        raise ValueError(f"Argument `x0` must have shape [D]. Received: x0.shape={x0.shape}")
    if int(n) != n or n < 2:
        raise ValueError(f"Argument `n` must be an integer >= 2. Received: n={n!r}")
    dim = x0.shape[0]
    kernel = kernels.canonical_name(kernel)
    proposal = kernel if proposal is None else kernels.canonical_name(proposal)
    eps_arr = _positive("eps", eps, dim)
    scale = eps_arr if proposal_scale is None else _positive("proposal_scale", proposal_scale, dim)
    t = kernels.sample(proposal, rng, (int(n), dim)) * scale  # scale-1 draws, per-dim scale
    if proposal == kernel and np.array_equal(scale, eps_arr):
        w = np.ones(int(n))
    else:
        w = importance_weights(t, eps_arr, kernel, proposal, scale)
    g = np.asarray(grad_fn(x0[None, :] - t), dtype=np.float64)
    if g.shape != t.shape:
        raise ValueError(
            f"`grad_fn` must map [n, D] to [n, D]. Received output shape {g.shape} for input "
            f"shape {t.shape}"
        )
    contrib = g * w[:, None]
    return contrib.mean(axis=0), contrib.std(axis=0, ddof=1) / np.sqrt(n)

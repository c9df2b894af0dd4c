"""A NumPy MLP with hand-written backprop, and SG / NG / FG fed explicit noise arrays.

The TF engine can be checked against these functions by feeding both THE SAME noise draws:

* SG: gradient at ``x_b + eps_b z_bi``; aggregate over i.
* NG: weight draw j uses ``W (1 + weight_eps zW_j)``, ``b (1 + weight_eps zb_j)``; gradient at
  the clean ``x_b``; aggregate over j.
* FG: weight draw j and inputs ``x_b + eps_b z_bji``; aggregate over all (j, i).

Aggregations: ``"smoothgrad"`` (mean), ``"smoothgrad_sq"`` (mean of squares), ``"vargrad"``
(population variance, two-pass: mean first, then the mean squared deviation).

Base attributions at each noisy point ``p`` (:func:`attribute`): ``"gradient"`` ``g(p)``,
``"input_x_gradient"`` ``p * g(p)``, ``"integrated_gradients"``
``(p - p0) * sum_k w_k g(p0 + s_k (p - p0))`` with Gauss-Legendre nodes ``s_k`` and weights
``w_k`` on [0, 1].
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "AGGREGATIONS",
    "ATTRIBUTIONS",
    "aggregate",
    "attribute",
    "fusiongrad",
    "init_params",
    "mlp_forward",
    "mlp_input_grad",
    "noisegrad",
    "perturb_params",
    "smoothgrad",
]

Params = Sequence[tuple[np.ndarray, np.ndarray]]
AGGREGATIONS: tuple[str, ...] = ("smoothgrad", "smoothgrad_sq", "vargrad")
ATTRIBUTIONS: tuple[str, ...] = ("gradient", "input_x_gradient", "integrated_gradients")


def init_params(
    sizes: Sequence[int], rng: np.random.Generator
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random parameters for an MLP with layer widths ``sizes`` = [D, H1, ..., C].

    Args:
        sizes: layer widths, at least two.
        rng: ``numpy.random.Generator``.

    Returns:
        List of ``(W [in, out], b [out])`` with Glorot-like scale and non-zero biases.
    """
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        w = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / (fan_in + fan_out))
        b = 0.1 * rng.standard_normal(fan_out)
        params.append((w, b))
    return params


def mlp_forward(params: Params, x: ArrayLike) -> np.ndarray:
    """Logits of the MLP: tanh on hidden layers, linear output.

    Args:
        params: list of ``(W [in, out], b [out])``.
        x: inputs [n, D].

    Returns:
        Logits [n, C].
    """
    h = np.asarray(x, dtype=np.float64)
    for layer, (w, b) in enumerate(params):
        a = h @ w + b
        h = a if layer == len(params) - 1 else np.tanh(a)
    return h


def _targets(targets: ArrayLike, n: int) -> np.ndarray:
    t = np.asarray(targets)
    if t.ndim == 0:
        t = np.full(n, int(t))
    if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(
            f"Argument `targets` must be an integer scalar or an integer array of shape [{n}]. "
            f"Received: shape={t.shape}, dtype={t.dtype}"
        )
    return t


def mlp_input_grad(params: Params, x: ArrayLike, targets: ArrayLike) -> np.ndarray:
    """``d logit[target] / dx`` by hand-written backpropagation.

    Args:
        params: list of ``(W [in, out], b [out])``.
        x: inputs [n, D].
        targets: class index per row, int [n] (or a scalar for all rows).

    Returns:
        Gradients [n, D].

    Raises:
        ValueError: if ``targets`` has the wrong shape or dtype.
    """
    x = np.asarray(x, dtype=np.float64)
    t = _targets(targets, x.shape[0])
    hidden = []  # tanh activations of the hidden layers
    h = x
    for w, b in params[:-1]:
        h = np.tanh(h @ w + b)
        hidden.append(h)
    w_out = params[-1][0]
    grad_h = w_out[:, t].T  # d logit[t] / d h_last, [n, H_last]
    for (w, _b), h in zip(reversed(params[:-1]), reversed(hidden), strict=True):
        grad_a = grad_h * (1.0 - h * h)  # tanh' = 1 - tanh^2
        grad_h = grad_a @ w.T
    return grad_h


def attribute(
    params: Params,
    x: ArrayLike,
    targets: ArrayLike,
    method: str = "gradient",
    steps: int = 16,
    baseline: ArrayLike = 0.0,
) -> np.ndarray:
    """A base attribution of the MLP at the rows of ``x``.

    Args:
        params: list of ``(W, b)``.
        x: points [n, D].
        targets: class index per row.
        method: one of :data:`ATTRIBUTIONS`.
        steps: Gauss-Legendre points for integrated gradients.
        baseline: integrated-gradients baseline, broadcastable to one row.

    Returns:
        Attributions [n, D].

    Raises:
        ValueError: unknown method.
    """
    x = np.asarray(x, dtype=np.float64)
    if method == "gradient":
        return mlp_input_grad(params, x, targets)
    if method == "input_x_gradient":
        return x * mlp_input_grad(params, x, targets)
    if method != "integrated_gradients":
        raise ValueError(
            f"Argument `method` must be one of {ATTRIBUTIONS}. Received: method={method!r}"
        )
    nodes, weights = np.polynomial.legendre.leggauss(int(steps))
    x0 = np.broadcast_to(np.asarray(baseline, dtype=np.float64), x.shape)
    total = np.zeros_like(x)
    for node, weight in zip(nodes, weights, strict=True):
        s = 0.5 * (node + 1.0)
        total += 0.5 * weight * mlp_input_grad(params, x0 + s * (x - x0), targets)
    return (x - x0) * total


def aggregate(grads: np.ndarray, axis: int, aggregation: str) -> np.ndarray:
    """Reduces samples of gradients along ``axis``.

    Args:
        grads: sampled gradients.
        axis: the sample axis.
        aggregation: ``"smoothgrad"`` (mean), ``"smoothgrad_sq"`` (mean of squares) or
            ``"vargrad"`` (population variance, two-pass).

    Returns:
        The reduced array.

    Raises:
        ValueError: unknown aggregation.
    """
    if aggregation == "smoothgrad":
        return grads.mean(axis=axis)
    if aggregation == "smoothgrad_sq":
        return (grads * grads).mean(axis=axis)
    if aggregation == "vargrad":
        mean = grads.mean(axis=axis, keepdims=True)
        dev = grads - mean
        return (dev * dev).mean(axis=axis)
    raise ValueError(
        f"Argument `aggregation` must be one of {AGGREGATIONS}. "
        f"Received: aggregation={aggregation!r}"
    )


def _eps_per_row(eps: ArrayLike, batch: int) -> np.ndarray:
    e = np.asarray(eps, dtype=np.float64)
    if e.ndim == 0:
        e = np.full(batch, float(e))
    if e.shape != (batch,):
        raise ValueError(
            f"Argument `eps` must be a scalar or have shape [{batch}]. Received: shape={e.shape}"
        )
    return e


def perturb_params(
    params: Params, noise: Sequence[tuple[np.ndarray, np.ndarray]], weight_eps: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Multiplicative weight noise: ``W (1 + weight_eps zW)``, ``b (1 + weight_eps zb)``.

    Args:
        params: list of ``(W, b)``.
        noise: list of ``(zW, zb)`` shaped like ``params``.
        weight_eps: relative noise scale.

    Returns:
        The perturbed parameter list.

    Raises:
        ValueError: if the noise does not match the parameter shapes.
    """
    if len(noise) != len(params):
        raise ValueError(
            f"Weight noise must have one (zW, zb) per layer ({len(params)}). "
            f"Received: {len(noise)} layers"
        )
    out = []
    for (w, b), (zw, zb) in zip(params, noise, strict=True):
        zw = np.asarray(zw, dtype=np.float64)
        zb = np.asarray(zb, dtype=np.float64)
        if zw.shape != w.shape or zb.shape != b.shape:
            raise ValueError(
                f"Weight noise shapes {zw.shape}, {zb.shape} do not match parameter shapes "
                f"{w.shape}, {b.shape}"
            )
        out.append((w * (1.0 + weight_eps * zw), b * (1.0 + weight_eps * zb)))
    return out


def smoothgrad(
    params: Params,
    x: ArrayLike,
    targets: ArrayLike,
    z: ArrayLike,
    eps: ArrayLike,
    aggregation: str = "smoothgrad",
    attribution: str = "gradient",
    **attribution_kw: object,
) -> np.ndarray:
    """SG with given input noise: gradients at ``x_b + eps_b z_bi``, aggregated over i.

    Args:
        params: list of ``(W, b)``.
        x: inputs [B, D].
        targets: int [B] (or scalar).
        z: standard noise [B, N, D].
        eps: scalar or [B].
        aggregation: see ``aggregate``.
        attribution: base method at each sample, see :func:`attribute` (``steps``,
            ``baseline`` in ``attribution_kw``).

    Returns:
        [B, D].

    Raises:
        ValueError: bad shapes or aggregation.
    """
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    batch, dim = x.shape
    if z.ndim != 3 or z.shape[0] != batch or z.shape[2] != dim:
        raise ValueError(f"Argument `z` must have shape [{batch}, N, {dim}]. Received: {z.shape}")
    n = z.shape[1]
    e = _eps_per_row(eps, batch)
    t = np.repeat(_targets(targets, batch), n)
    pts = (x[:, None, :] + e[:, None, None] * z).reshape(batch * n, dim)
    grads = attribute(params, pts, t, attribution, **attribution_kw).reshape(batch, n, dim)
    return aggregate(grads, 1, aggregation)


def noisegrad(
    params: Params,
    x: ArrayLike,
    targets: ArrayLike,
    zw: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]],
    weight_eps: float,
    aggregation: str = "smoothgrad",
    attribution: str = "gradient",
    **attribution_kw: object,
) -> np.ndarray:
    """NG with given weight noise: draw j uses ``perturb_params(params, zw[j], weight_eps)``.

    Args:
        params: list of ``(W, b)``.
        x: inputs [B, D] (not perturbed).
        targets: int [B] (or scalar).
        zw: list over draws j = 0..M-1 of lists of ``(zW, zb)`` shaped like ``params``.
        weight_eps: relative weight-noise scale.
        aggregation: see ``aggregate``.
        attribution: base method at each sample, see :func:`attribute` (``steps``,
            ``baseline`` in ``attribution_kw``).

    Returns:
        [B, D].

    Raises:
        ValueError: bad shapes or aggregation.
    """
    x = np.asarray(x, dtype=np.float64)
    grads = np.stack(
        [
            attribute(perturb_params(params, draw, weight_eps), x, targets, attribution,
                      **attribution_kw)
            for draw in zw
        ]
    )  # [M, B, D]
    return aggregate(grads, 0, aggregation)


def fusiongrad(
    params: Params,
    x: ArrayLike,
    targets: ArrayLike,
    zw: Sequence[Sequence[tuple[np.ndarray, np.ndarray]]],
    z: ArrayLike,
    eps: ArrayLike,
    weight_eps: float,
    aggregation: str = "smoothgrad",
    attribution: str = "gradient",
    **attribution_kw: object,
) -> np.ndarray:
    """FG: draw j uses weights ``zw[j]`` and inputs ``x_b + eps_b z[b, j, i]``; aggregate over
    all M * N samples.

    Args:
        params: list of ``(W, b)``.
        x: inputs [B, D].
        targets: int [B] (or scalar).
        zw: list of M weight-noise draws (see ``noisegrad``).
        z: input noise [B, M, N, D].
        eps: scalar or [B].
        weight_eps: relative weight-noise scale.
        aggregation: see ``aggregate``.
        attribution: base method at each sample, see :func:`attribute` (``steps``,
            ``baseline`` in ``attribution_kw``).

    Returns:
        [B, D].

    Raises:
        ValueError: bad shapes or aggregation.
    """
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    batch, dim = x.shape
    m = len(zw)
    if z.ndim != 4 or z.shape[0] != batch or z.shape[1] != m or z.shape[3] != dim:
        raise ValueError(
            f"Argument `z` must have shape [{batch}, {m}, N, {dim}]. Received: {z.shape}"
        )
    n = z.shape[2]
    e = _eps_per_row(eps, batch)
    t = np.repeat(_targets(targets, batch), n)
    grads = np.empty((batch, m, n, dim))
    for j, draw in enumerate(zw):
        p = perturb_params(params, draw, weight_eps)
        pts = (x[:, None, :] + e[:, None, None] * z[:, j]).reshape(batch * n, dim)
        grads[:, j] = attribute(p, pts, t, attribution, **attribution_kw).reshape(batch, n, dim)
    return aggregate(grads.reshape(batch, m * n, dim), 1, aggregation)

"""Streaming aggregation of attribution samples: SmoothGrad, SmoothGrad-Square, VarGrad.

The Noise Tunnel aggregations (Kokhlikyan et al. 2020; Smilkov et al. 2017; Adebayo et al. 2018)
of samples ``a_1 .. a_n`` of an attribution map are, per element:

* ``smoothgrad``:    ``mean(a)``
* ``smoothgrad_sq``: ``mean(a^2)`` (the Noise Tunnel article's eq. 2 prints a square root; the
  method, as in Captum and in SmoothGrad's paper, is the mean of squares)
* ``vargrad``:       ``mean(a^2) - mean(a)^2``, the population variance, computed as ``M2 / n``
  with Chan et al.'s pairwise update of ``(n, mean, M2)`` so it never suffers the catastrophic
  cancellation of the textbook formula.

Samples arrive in chunks. Each chunk is reduced with a two-pass formula and merged into the
running state, so memory is O(chunk) however many samples there are. Samples whose attribution is
not finite are masked out (``mask = 0``) and counted instead of poisoning the mean.

Standard errors. The estimate averages over *independent units*: single noise draws for
SmoothGrad (antithetic pairs of draws with ``sampler="antithetic"``, randomized point sets with
``sampler="sobol"``), weight draws (each with its own ``N`` input draws; pairs of weight draws
when antithetic, sets of weight draws with Sobol) for NoiseGrad and FusionGrad. For
every unit ``u`` the state keeps the shifted unit means ``x_u = mean_u(a) - c`` and
``y_u = mean_u((a - c)^2)`` and their co-moments (shift ``c`` = first chunk's mean, for accuracy).
The aggregate is a smooth function of the means of ``x`` and ``y``; its standard error is the
delta method over units:

* smoothgrad:    ``Var(x)``
* smoothgrad_sq: ``Var(y) + 4 c^2 Var(x) + 4 c Cov(x, y)``           (``a^2 = y + 2 c x + c^2``)
* vargrad:       ``Var(y) + 4 d^2 Var(x) - 4 d Cov(x, y)``, ``d = mean(a) - c``
  (the influence function of the variance, ``(a - mean)^2``),

each divided by the number of units ``G``; with fewer than two units it is NaN.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

__all__ = [
    "AGGREGATIONS",
    "CANCELLED_SUM",
    "State",
    "check_sum_not_cancelled",
    "clean",
    "finalize",
    "init_state",
    "merge_chunk",
    "merge_unit",
    "one_shot",
    "reduce_last",
]

AGGREGATIONS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def reduce_last(values: Any, how: str | None) -> Any:
    """The explainer's ``reduce`` over the last axis: ``"sum"``, ``"norm"`` (Euclidean), or
    None (unchanged). NumPy arrays for a call's results, tensors inside the export's graph.

    Example:

    >>> import numpy as np
    >>> reduce_last(np.array([[3.0, 4.0]]), "norm"), reduce_last(np.array([[3.0, 4.0]]), "sum")
    (array([5.]), array([7.]))
    """
    if how is None:
        return values
    if tf.is_tensor(values):
        return tf.reduce_sum(values, axis=-1) if how == "sum" else tf.norm(values, axis=-1)
    norms = np.sqrt(np.square(values).sum(axis=-1))
    if how == "norm":
        return norms
    sums = values.sum(axis=-1)
    check_sum_not_cancelled(sums, norms)
    return sums


#: ``reduce="sum"``: a result whose every token's sum is at most this fraction of the norm of
#: its unreduced attribution is float rounding, not a map (:func:`check_sum_not_cancelled`).
CANCELLED_SUM = 1e-4


def check_sum_not_cancelled(sums: np.ndarray, norms: np.ndarray) -> None:
    """Rule: ``reduce="sum"`` must not return float rounding as a map.

    Where every path from a token's embedding to the scores passes a LayerNorm (BERT, GPT-2),
    adding one constant to every feature of the embedding changes nothing, so the gradient
    summed over the embedding axis is zero at every token, whatever the model learnt.

    Args:
        sums: The attributions summed over the last axis.
        norms: The Euclidean norms over the same axis.

    Raises:
        ValueError: When some attribution is nonzero and every sum is at most
            :data:`CANCELLED_SUM` times its norm, with the reason and the alternatives.
    """
    norms = np.asarray(norms, np.float64)
    if not norms.size or not norms.max() > 0:
        return
    if np.all(np.abs(np.asarray(sums, np.float64)) <= CANCELLED_SUM * norms):
        worst = float(np.max(np.abs(sums)))
        raise ValueError(
            "Argument `reduce`='sum' gives float rounding here, not a map: every position's "
            f"attribution sums to at most {CANCELLED_SUM:g} of its norm (largest |sum| "
            f"{worst:.3g}, largest norm {float(norms.max()):.3g}). This happens when every path "
            "from the layer to the scores passes a LayerNorm (BERT, GPT-2): a constant added to "
            "every feature changes nothing, so the gradient sums to zero. Use reduce='norm', or "
            "attribution='input_x_gradient' or 'integrated_gradients' with reduce='sum'."
        )


class State(NamedTuple):
    """Running statistics for a block of examples. ``[Bc]`` counts, ``[Bc, D]`` moments.

    ``mean`` is the mean of ``a - shift``; ``ux``/``uy`` are the means over units of
    ``x_u = mean_u(a) - shift`` and ``y_u = mean_u((a - shift)^2)``.
    """

    n: tf.Tensor  # finite samples
    mean: tf.Tensor
    m2: tf.Tensor
    g: tf.Tensor  # finite units
    ux: tf.Tensor
    uy: tf.Tensor
    cxx: tf.Tensor
    cyy: tf.Tensor
    cxy: tf.Tensor
    shift: tf.Tensor  # per example: the mean of its first chunk with a finite sample


def init_state(batch: tf.Tensor, size: int, dtype: tf.DType) -> State:
    """A zero state for ``batch`` examples of ``size`` elements."""
    zeros = tf.zeros(tf.stack([batch, size]), dtype)
    count = tf.zeros(tf.reshape(batch, [1]), dtype)
    return State(count, zeros, zeros, count, zeros, zeros, zeros, zeros, zeros, zeros)


def _expand(v: tf.Tensor) -> tf.Tensor:
    return v[:, None]


def _merge_moments(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Chan et al. pairwise merge of ``(n, mean, M2)``; counts ``[Bc]``, moments ``[Bc, D]``."""
    n = n_a + n_b
    frac = _expand(tf.math.divide_no_nan(n_b, n))
    delta = mean_b - mean_a
    mean = mean_a + delta * frac
    m2 = m2_a + m2_b + tf.square(delta) * _expand(tf.math.divide_no_nan(n_a * n_b, n))
    return n, mean, m2


def _merge_comoments(g_a, xa, ya, cxx_a, cyy_a, cxy_a, g_b, xb, yb, cxx_b, cyy_b, cxy_b):
    """Pairwise merge of bivariate ``(g, mean_x, mean_y, Cxx, Cyy, Cxy)``."""
    g = g_a + g_b
    frac = _expand(tf.math.divide_no_nan(g_b, g))
    w = _expand(tf.math.divide_no_nan(g_a * g_b, g))
    dx = xb - xa
    dy = yb - ya
    return (
        g,
        xa + dx * frac,
        ya + dy * frac,
        cxx_a + cxx_b + dx * dx * w,
        cyy_a + cyy_b + dy * dy * w,
        cxy_a + cxy_b + dx * dy * w,
    )


def _masked_moments(values: tf.Tensor, mask: tf.Tensor):
    """Two-pass count, mean and M2 over axis 1 of ``values [Bc, n, D]`` with ``mask [Bc, n]``."""
    m = mask[:, :, None]
    n = tf.reduce_sum(mask, axis=1)
    mean = tf.math.divide_no_nan(tf.reduce_sum(values * m, axis=1), _expand(n))
    centred = (values - mean[:, None, :]) * m
    m2 = tf.reduce_sum(tf.square(centred), axis=1)
    return n, mean, m2, centred


def _set_shift(state: State, first_mean: tf.Tensor) -> State:
    """Sets the shift of each example that has no finite sample yet (its moments are all 0)."""
    shift = tf.where(state.n[:, None] > 0, state.shift, first_mean)
    return state._replace(shift=shift)


def clean(samples: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Masks non-finite samples.

    Args:
        samples: ``[Bc, n, D]`` attribution samples.

    Returns:
        ``(values, mask)``: values with non-finite samples replaced by 0, and a ``[Bc, n]`` float
        mask that is 1 for samples whose every element is finite.
    """
    mask = tf.cast(tf.reduce_all(tf.math.is_finite(samples), axis=2), samples.dtype)
    # multiply_no_nan gives 0 where the mask is 0, even for NaN/Inf samples
    return tf.math.multiply_no_nan(samples, mask[:, :, None]), mask


def _merge_units(state: State, g_c, x_c, y_c, cxx_c, cyy_c, cxy_c) -> State:
    merged = _merge_comoments(
        state.g, state.ux, state.uy, state.cxx, state.cyy, state.cxy,
        g_c, x_c, y_c, cxx_c, cyy_c, cxy_c,
    )
    return state._replace(**dict(zip(("g", "ux", "uy", "cxx", "cyy", "cxy"), merged, strict=True)))


def merge_chunk(
    state: State,
    values: tf.Tensor,
    mask: tf.Tensor,
    units_are_samples: bool,
    with_stderr: bool = True,
    with_m2: bool = True,
    unit_size: int = 1,
) -> State:
    """Merges a chunk of samples ``values [Bc, n, D]`` (masked by ``mask [Bc, n]``).

    All moments are kept about a per-example shift ``c`` (the mean of the example's first
    chunk with a finite sample), so a large common offset in the attributions costs no
    precision.

    Args:
        state: Running state.
        values: Finite-cleaned samples (see :func:`clean`).
        mask: 1 for samples to include.
        units_are_samples: True when every sample is an independent unit (SmoothGrad); False
            when samples are grouped into units that :func:`merge_unit` closes (NoiseGrad,
            FusionGrad: one unit per weight draw).
        with_stderr: Keep the unit statistics that the standard error needs.
        with_m2: Keep the sum of squared deviations (every aggregation but a plain
            ``smoothgrad`` mean without standard error needs it); False leaves ``m2`` at 0.
        unit_size: With ``units_are_samples``, the units are groups of this many consecutive
            samples (2: antithetic pairs; ``m``: Sobol replicates of ``m`` points; ``n`` must
            be a multiple).

    Returns:
        The updated state.
    """
    m = mask[:, :, None]
    n_c = tf.reduce_sum(mask, axis=1)
    mean_first = tf.math.divide_no_nan(tf.reduce_sum(values * m, axis=1), _expand(n_c))
    state = _set_shift(state, mean_first)
    x = (values - state.shift[:, None, :]) * m
    if not (with_m2 or with_stderr):
        mean_c = tf.math.divide_no_nan(tf.reduce_sum(x, axis=1), _expand(n_c))
        n = state.n + n_c
        mean = state.mean + (mean_c - state.mean) * _expand(tf.math.divide_no_nan(n_c, n))
        return state._replace(n=n, mean=mean)
    n_c, mean_c, m2_c, centred = _masked_moments(x, mask)
    n, mean, m2 = _merge_moments(state.n, state.mean, state.m2, n_c, mean_c, m2_c)
    state = state._replace(n=n, mean=mean, m2=m2)
    if not (units_are_samples and with_stderr):
        return state
    y = tf.square(x)
    if unit_size > 1:  # unit means over groups of samples, then their co-moments
        bc, size = tf.shape(x)[0], tf.shape(x)[2]
        groups = tf.reshape(mask, [bc, -1, unit_size])
        count = tf.reduce_sum(groups, axis=2)
        has = tf.cast(count > 0, x.dtype)

        def unit_means(v: tf.Tensor) -> tf.Tensor:
            total = tf.reduce_sum(tf.reshape(v, [bc, -1, unit_size, size]), axis=2)
            return tf.math.divide_no_nan(total, count[:, :, None])

        n_c, mean_c, m2_c, centred = _masked_moments(unit_means(x), has)
        _, y_c, cyy_c, centred_y = _masked_moments(unit_means(y), has)
        cxy_c = tf.reduce_sum(centred * centred_y, axis=1)
        return _merge_units(state, n_c, mean_c, y_c, m2_c, cyy_c, cxy_c)
    _, y_c, cyy_c, centred_y = _masked_moments(y, mask)
    cxy_c = tf.reduce_sum(centred * centred_y, axis=1)
    return _merge_units(state, n_c, mean_c, y_c, m2_c, cyy_c, cxy_c)


def merge_unit(state: State, unit: State, with_stderr: bool = True) -> State:
    """Closes one unit (a weight draw): merges its samples and its unit means into ``state``.

    Args:
        state: Running state over previous units.
        unit: The state accumulated over the unit's samples only (``units_are_samples=False``).
        with_stderr: Keep the unit statistics that the standard error needs.

    Returns:
        The updated state; a unit with no finite sample contributes nothing.
    """
    state = _set_shift(state, unit.shift + unit.mean)
    mean_u = (unit.shift - state.shift) + unit.mean  # the unit's mean about state's shift
    n, mean, m2 = _merge_moments(state.n, state.mean, state.m2, unit.n, mean_u, unit.m2)
    if not with_stderr:
        return state._replace(n=n, mean=mean, m2=m2)
    has = tf.cast(unit.n > 0, unit.mean.dtype)
    x = mean_u * _expand(has)
    y = (tf.math.divide_no_nan(unit.m2, _expand(unit.n)) + tf.square(mean_u)) * _expand(has)
    state = state._replace(n=n, mean=mean, m2=m2)
    zeros = tf.zeros_like(x)
    return _merge_units(state, has, x, y, zeros, zeros, zeros)


def finalize(
    state: State, aggregation: str, with_stderr: bool = True
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """The aggregate and its Monte Carlo standard error, both ``[Bc, D]``.

    Args:
        state: Final running state.
        aggregation: One of :data:`AGGREGATIONS`.
        with_stderr: Compute the standard error (else it is None).

    Returns:
        ``(value, stderr)``. Examples with no finite sample give NaN; ``stderr`` is NaN with
        fewer than two finite units.
    """
    n = _expand(state.n)
    g = _expand(state.g)
    var_pop = tf.math.divide_no_nan(state.m2, n)
    mean = state.shift + state.mean
    if aggregation == "smoothgrad":
        value = mean
    elif aggregation == "smoothgrad_sq":
        value = var_pop + tf.square(mean)
    elif aggregation == "vargrad":
        value = var_pop
    else:  # pragma: no cover - validated at the public boundary
        raise ValueError(f"Unknown aggregation {aggregation!r}")
    nan = tf.fill(tf.shape(value), tf.constant(float("nan"), value.dtype))
    value = tf.where(n > 0, value, nan)
    if not with_stderr:
        return value, None

    dof = g - 1.0
    vx = tf.math.divide_no_nan(state.cxx, dof)
    vy = tf.math.divide_no_nan(state.cyy, dof)
    cov = tf.math.divide_no_nan(state.cxy, dof)
    c = state.shift
    if aggregation == "smoothgrad":
        var = vx
    elif aggregation == "smoothgrad_sq":
        var = vy + 4.0 * c * c * vx + 4.0 * c * cov
    else:
        d = state.mean  # mean(a) - c
        var = vy + 4.0 * d * d * vx - 4.0 * d * cov
    stderr = tf.sqrt(tf.math.divide_no_nan(tf.maximum(var, 0.0), g))
    stderr = tf.where(g > 1, stderr, nan)
    return value, stderr


def one_shot(
    values: tf.Tensor, mask: tf.Tensor, aggregation: str, with_stderr: bool
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Aggregate and standard error of independent samples seen all at once (two-pass).

    The fast path for SmoothGrad when every sample of a block fits in one pass; it computes
    the same quantities as the streaming state with fewer operations.

    Args:
        values: Finite-cleaned samples ``[Bc, n, D]``.
        mask: ``[Bc, n]``, 1 for samples to include.
        aggregation: One of :data:`AGGREGATIONS`.
        with_stderr: Also compute the standard error.

    Returns:
        ``(value, stderr)``, each ``[Bc, D]``; ``stderr`` is None unless requested.
    """
    n = _expand(tf.reduce_sum(mask, axis=1))
    mean = tf.math.divide_no_nan(tf.reduce_sum(values, axis=1), n)
    nan = tf.fill(tf.shape(mean), tf.constant(float("nan"), mean.dtype))
    if aggregation == "smoothgrad" and not with_stderr:
        return tf.where(n > 0, mean, nan), None
    m = mask[:, :, None]
    centred = (values - mean[:, None, :]) * m
    sq = tf.square(centred)
    var_pop = tf.math.divide_no_nan(tf.reduce_sum(sq, axis=1), n)
    if aggregation == "smoothgrad":
        value = mean
    elif aggregation == "smoothgrad_sq":
        value = var_pop + tf.square(mean)
    else:
        value = var_pop
    value = tf.where(n > 0, value, nan)
    if not with_stderr:
        return value, None
    if aggregation == "smoothgrad":
        y_var = var_pop
    else:
        # smoothgrad_sq: the samples are a^2; vargrad: its influence function (a - mean)^2
        y = tf.square(values) if aggregation == "smoothgrad_sq" else sq
        y_mean = tf.math.divide_no_nan(tf.reduce_sum(y * m, axis=1), n)
        y_var = tf.math.divide_no_nan(tf.reduce_sum(tf.square((y - y_mean[:, None, :]) * m),
                                                    axis=1), n)
    # sample variance / n = population variance / (n - 1)
    stderr = tf.sqrt(tf.math.divide_no_nan(y_var, n - 1.0))
    return value, tf.where(n > 1, stderr, nan)

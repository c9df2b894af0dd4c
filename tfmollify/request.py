"""One call's arguments, checked: the inputs as rows, targets, input-noise scales and seeds.

The rules for what a call may pass live here, once: :func:`rows` (the inputs), :func:`targets`,
:func:`epsilons` (with eq. 30, :func:`eq30`, which the export runs inside its graph too) and
:func:`seeds`. Every error is a ``ValueError``/``TypeError`` that names the argument, echoes the
value and says what is expected.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify import inputs as inputs_lib
from tfmollify import sampling
from tfmollify.spec import Spec

__all__ = [
    "CONSTANT_EXAMPLE", "epsilons", "eq30", "layer_epsilons", "range_epsilons", "rows", "seeds",
    "targets",
]

CONSTANT_EXAMPLE = (
    "constant example: r = max(x) - mean(x) = 0, so eq. 30 has no epsilon; pass an "
    "explicit `epsilon`"
)


def eq30(values: tf.Tensor, quantile: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Eq. 30's scale per example: ``eps = r / q`` with ``r = max(x) - mean(x)``.

    Runs eagerly for :meth:`tfmollify.Explainer.explain` and inside the export's graph.

    Args:
        values: Examples ``[B, ...]`` (computed in float64).
        quantile: ``kernel.eq30_quantile(alpha)``.

    Returns:
        ``(eps [B], r [B])`` in float64; ``r <= 0`` marks a constant example (no scale).
    """
    flat = tf.cast(tf.reshape(values, [tf.shape(values)[0], -1]), tf.float64)
    r = tf.reduce_max(flat, axis=1) - tf.reduce_mean(flat, axis=1)
    return r / tf.constant(quantile, tf.float64), r


def _eq30_checked(spec: Spec, values: np.ndarray, what: str = "", fix: str = "") -> np.ndarray:
    eps, r = (t.numpy() for t in eq30(values, spec.kernel.eq30_quantile(spec.alpha)))
    if np.any(r <= 0):
        bad = np.flatnonzero(r <= 0)[:10].tolist()
        raise ValueError(
            f"Cannot choose `epsilon` by eq. 30 for {what}examples {bad}: they are "
            f"constant, so r = max(x) - mean(x) = 0. Pass `epsilon` explicitly{fix}."
        )
    return eps


def rows(inputs: Any, compute: np.dtype) -> tuple[np.ndarray, np.dtype, bool]:
    """One input as rows ``[B, ...]`` in the compute dtype, the inputs' own (floating) dtype,
    which the results come back in, and whether they came as a tensor.

    Raises:
        TypeError: For integer or non-numeric inputs.
        ValueError: For inputs without a batch dimension or with NaN/Inf values.
    """
    is_tensor = isinstance(inputs, tf.Tensor | tf.Variable)
    try:
        arr = inputs.numpy() if is_tensor else np.asarray(inputs)
    except Exception:
        raise TypeError(
            "Argument `inputs` must be an array or tensor of shape [batch, ...]. "
            f"Received: inputs of type {type(inputs).__name__}"
        ) from None
    if arr.dtype.kind in "iub":
        raise TypeError(
            f"Argument `inputs` must be floating point; noise on integer inputs (e.g. token "
            f"ids) is meaningless. Received: inputs with dtype={arr.dtype}. Cast real-valued "
            "integer data (e.g. uint8 pixels) to float32 first."
        )
    if arr.dtype.kind != "f":
        raise TypeError(
            f"Argument `inputs` must be a floating-point array. Received: dtype={arr.dtype}"
        )
    if arr.ndim < 2:
        raise ValueError(
            "Argument `inputs` must have a batch dimension: shape [batch, ...]. "
            f"Received: inputs.shape={arr.shape}. For one example use inputs[None]."
        )
    finite = np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1) if arr.size else []
    if not np.all(finite):
        bad = np.flatnonzero(~np.asarray(finite))[:10].tolist()
        raise ValueError(
            f"Argument `inputs` contains NaN or Inf values (examples {bad}). "
            "Attributions of non-finite inputs are undefined."
        )
    return arr.astype(compute, copy=False), arr.dtype, is_tensor


def targets(value: Any, batch: int, score_shape: tuple[int, ...]) -> np.ndarray:
    """Class indices, one int32 per example, checked against the model's scores."""
    n_scores = int(np.prod(score_shape)) if score_shape else 1
    if value is None:
        if n_scores == 1:
            return np.zeros(batch, np.int32)
        raise ValueError(
            f"Argument `targets` is required: the model has {n_scores} outputs per example. "
            "Pass class indices (one int, or one per example) or a callable scores -> [n]."
        )
    try:
        arr = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    except Exception:
        arr = np.asarray([], dtype=object)
    if arr.dtype.kind not in "iu":
        raise TypeError(
            "Argument `targets` must be integer class indices (one int or one per example) "
            f"or a callable scores -> [n]. Received: targets={value!r}"
        )
    if arr.ndim == 0:
        arr = np.full(batch, int(arr))
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise ValueError(
            f"Argument `targets` must hold one class index per example ({batch}). "
            f"Received: targets with shape {arr.shape}"
        )
    if arr.size and (arr.min() < 0 or arr.max() >= n_scores):
        raise ValueError(
            f"Argument `targets` must be in [0, {n_scores}) (the model has {n_scores} "
            f"outputs). Received: targets={arr.tolist()[:20]}"
        )
    return arr.astype(np.int32)


def epsilons(spec: Spec, x: np.ndarray, packing: Any = None) -> np.ndarray:
    """Input-noise scales: one per example ``[B]``, or per example and input ``[B, K]``, or
    with ``input_range`` one per element ``[B, D]`` (:func:`range_epsilons`)."""
    if spec.input_range is not None:
        return range_epsilons(spec, x)
    if packing is not None:
        return _packed_epsilons(spec, x, packing)
    given = _given_epsilons(spec, x.shape[0])
    if given is not None:
        return given
    return _eq30_checked(spec, x)


def _given_epsilons(spec: Spec, batch: int, units: str = "") -> np.ndarray | None:
    """The scales ``[B]`` that need no look at the values: zeros for NoiseGrad, or the given
    ``epsilon`` (one float, or one per example); None when eq. 30 must choose them."""
    if spec.mode == "ng":
        return np.zeros(batch)
    if spec.epsilon is None:
        return None
    if spec.epsilon.ndim == 0:
        return np.full(batch, float(spec.epsilon))
    if spec.epsilon.shape[0] != batch:
        raise ValueError(
            f"Argument `epsilon` has {spec.epsilon.shape[0]} values but `inputs` has "
            f"{batch} examples. Pass one float, or one per example{units}."
        )
    return np.array(spec.epsilon)


def range_epsilons(spec: Spec, x: np.ndarray) -> np.ndarray:
    """AdaptGrad's scale per element ``[B, D]``: eq. 30 with ``r = t``, the distance to the
    nearer bound of ``input_range``, so that a fraction ``alpha`` of each element's noise stays
    inside ``[x - t, x + t]`` (within the range). An element on a bound gets no noise.

    Raises:
        ValueError: For inputs outside ``input_range``.
    """
    low, high = spec.input_range
    flat = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    outside = ((flat < low) | (flat > high)).any(axis=1)
    if outside.any():
        bad = np.flatnonzero(outside)[:10].tolist()
        raise ValueError(
            f"Argument `inputs`: examples {bad} have values outside input_range=({low:g}, "
            f"{high:g}) (min {flat.min():g}, max {flat.max():g}). Pass the range the inputs "
            "live in (e.g. the model's preprocessing range), or scale the inputs into it."
        )
    t = np.minimum(flat - low, high - flat)
    return t / spec.kernel.eq30_quantile(spec.alpha)


def layer_epsilons(
    spec: Spec, activations: Any, batch: int, layer: str, block: int = 256
) -> np.ndarray:
    """One scale per example ``[B]`` for noise at a layer's output (``noise_at``).

    Args:
        spec: The settings: an explicit ``epsilon`` (in the layer output's units), or eq. 30
            on each example's layer output.
        activations: ``activations(lo, hi)``: the layer's output for examples ``lo:hi``.
        batch: The number of examples.
        layer: The layer's name (for messages).
        block: Examples per call of ``activations``.
    """
    given = _given_epsilons(spec, batch, f" (in the units of layer {layer!r}'s output)")
    if given is not None:
        return given
    parts = [
        _eq30_checked(spec, activations(lo, min(batch, lo + block)),
                      f"the output of layer {layer!r} of ")
        for lo in range(0, batch, block)
    ]
    return np.concatenate(parts)


def _packed_epsilons(spec: Spec, x: np.ndarray, packing: Any) -> np.ndarray:
    """One scale per example and float input ``[B, K]`` (integer inputs get no noise).

    A 1-D ``epsilon`` with several inputs holds one value per input, in the inputs' order
    (integer inputs included: their value is not used)."""
    batch, k = x.shape[0], len(packing.keys)
    floats = [i for i, integer in enumerate(packing.integer) if not integer]
    eps = np.zeros((batch, len(floats)))
    if spec.mode == "ng":
        return eps
    given = spec.epsilon
    if given is not None and given.ndim == 1 and given.shape[0] != k:
        raise ValueError(
            f"Argument `epsilon` has {given.shape[0]} values but the model has {k} inputs. "
            "With several inputs pass one float, or one per input (in the inputs' order)."
        )
    for col, (i, part) in enumerate(zip(floats, packing.split(x), strict=True)):
        if given is not None:
            eps[:, col] = float(given) if given.ndim == 0 else float(given[i])
            continue
        eps[:, col] = _eq30_checked(
            spec, part, f"input {packing.keys[i]!r} of ", " (or one per input)"
        )
    return eps


def seeds(value: Any, seed: int, batch: int, offset: int = 0) -> np.ndarray:
    """Per-example int64 seeds: ``value`` checked, or derived from ``seed`` and positions.

    A seed is any 64-bit integer: ints in ``[-2**63, 2**64)`` are taken modulo ``2**64`` (so
    ``-1`` and ``2**64 - 1`` are the same seed), which is how the derived seeds of
    :func:`tfmollify.sampling.example_seeds` (int64, often negative) round-trip.
    """
    if value is None:
        return sampling.example_seeds(seed, batch, offset)
    try:
        arr = np.asarray(value)
    except Exception:
        arr = np.asarray([], dtype=object)
    if arr.dtype.kind not in "iu" or arr.ndim != 1 or arr.shape[0] != batch:
        raise ValueError(
            f"Argument `seeds` must be {batch} integer seeds, one per example. "
            f"Received: seeds with dtype {arr.dtype} and shape {arr.shape}"
        )
    if arr.dtype == np.uint64:
        return arr.view(np.int64)
    return arr.astype(np.int64)


def check_packing(spec: Spec, packing: inputs_lib.Packing, at_layer: bool = False) -> None:
    """What several inputs do not support (yet): say so before anything is traced
    (``at_layer``: the attribution is at a layer's output, one array)."""
    if at_layer:
        return
    if spec.attribution == "integrated_gradients" and spec.ig_baseline.ndim:
        raise ValueError(
            "Integrated gradients with several inputs needs a float `ig_baseline` (the same "
            f"for every float input). Received: ig_baseline of shape {spec.ig_baseline.shape}."
        )
    if spec.reduce is not None:
        raise ValueError(
            f"Argument `reduce` ({spec.reduce!r}) with several inputs is not supported: it "
            "would reduce across the inputs' last axes. Use reduce=None."
        )
    if spec.proposal is not None and any(packing.integer):
        raise ValueError(
            "Argument `proposal` with integer inputs is not supported: their importance "
            "weights would count noise that is never applied. Drop `proposal`."
        )


def check_baseline(spec: Spec, example_shape: tuple[int, ...]) -> None:
    """An array ``ig_baseline`` must broadcast to one example."""
    if spec.attribution != "integrated_gradients" or not spec.ig_baseline.ndim:
        return
    try:
        fits = np.broadcast_shapes(spec.ig_baseline.shape, example_shape) == example_shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"Argument `ig_baseline` has shape {spec.ig_baseline.shape}, which does not "
            f"broadcast to one example of `inputs` {tuple(example_shape)}. Pass a float "
            "or an array of one example's shape."
        )

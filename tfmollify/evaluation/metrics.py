"""Evaluation metrics for attributions: the four properties of the paper's Table 1.

All functions take and return NumPy arrays with a leading batch axis ``[B, ...]`` and give one
score per example (a float64 ``[B]``); average them yourself (``np.nanmean``).

**Sparseness** (higher is sparser; Chalasani et al. 2020, "Concise explanations of neural networks
using adversarial training"; as Quantus' ``Sparseness``): the Gini index of ``|attribution|``. For
the sorted absolute values ``v_1 <= ... <= v_n`` of one example,

    G = sum_i (2 i - n - 1) v_i / (n * sum_i v_i)

which is 0 when all values are equal and ``(n - 1)/n`` when a single value holds all the mass.

**Localization** (higher is better; the pointing game of Zhang et al. 2018 with the top-k rule of
the paper's appendix F.1, which is Quantus' ``TopKIntersection``): with ``m`` the map reduced to
the mask's shape (see :func:`pointing_game`) and ``T_k`` its ``k`` largest positions,

    L = |T_k  intersect  mask| / k.

:func:`masks_from_boxes` builds the masks from bounding boxes.

**Consistency** (lower is better; the model-parameter randomisation test of Adebayo et al. 2018,
"Sanity checks for saliency maps"; Quantus' ``MPRT``): the Spearman rank correlation

    C = rho_S(e(f, x), e(f_rand, x))

between the explanation of the trained model ``f`` and of a copy ``f_rand`` whose weights are
re-initialised (:func:`randomize_model`). An explanation that does not depend on what the model
learned scores near 1.

**Invariance** (higher is better; the input-shift test of Kindermans et al. 2019, "The
(un)reliability of saliency methods"; Quantus' ``InputInvariance``, which returns only a yes/no):
with a constant shift ``c`` of the input and ``f_c`` a copy of ``f`` whose first layer's bias is
``b' = b - W c`` (:func:`shift_model`), ``f_c(x + c) = f(x)`` for every ``x``; the score is

    I = rho_S(e(f, x), e(f_c, x + c)).

The raw gradient scores exactly 1 (up to floating-point rounding).

``rho_S`` is the Pearson correlation of the two flattened maps' ranks (ties get their average
rank, as ``scipy.stats.spearmanr``); it is NaN when one map is constant.

**MPRT and Smooth-MPRT** (lower is better; :func:`mprt`, :func:`smooth_mprt`): the cascading
form of the randomisation test. With ``l_1, ..., l_L`` the weighted layers in the cascade's order
(from the output down for ``"top_down"``, Adebayo et al. 2018 and Quantus' ``MPRT``), step ``k``
re-initialises ``l_1 .. l_k`` (:func:`randomize_model`'s weights) and scores

    s_k = sim(P(e(f, x)), P(e(f_k, x)))

with the same explainer settings on both models. ``P`` is Quantus' default preprocessing: divide
by the map's largest ``|value|`` (MPRT) or by its root mean square (Smooth-MPRT), then take
``|.|``. Smooth-MPRT (Hedström et al. 2023, "Sanity Checks Revisited: An Exploration to Repair the
Model Parameter Randomisation Test"; Quantus' ``SmoothMPRT``) replaces ``e(f, x)`` by
``(1/N) sum_n e(f, x + delta_n)``, ``delta_n ~ N(0, (sigma (max x - min x))^2)`` per element
and ``delta_N = 0``, and cascades from the input up (``"bottom_up"``, Quantus' default there).
``sim`` is ``rho_S`` of the flattened maps (default) or :func:`ssim`, both 1 for identical maps.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "LAYER_ORDERS",
    "SIMILARITIES",
    "RandomisationResult",
    "consistency",
    "invariance",
    "masks_from_boxes",
    "mprt",
    "pointing_game",
    "randomize_model",
    "rank_correlation",
    "shift_model",
    "smooth_mprt",
    "sparseness",
    "ssim",
]


def _batched(name: str, value: Any, min_ndim: int = 2) -> np.ndarray:
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"Argument `{name}` must be a numeric array [B, ...]. Received: {name} of type "
            f"{type(value).__name__}"
        ) from None
    if a.ndim < min_ndim:
        raise ValueError(
            f"Argument `{name}` must have a batch axis: [B, ...]. Received shape {a.shape}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(
            f"Argument `{name}` contains NaN or Inf (at {int(np.sum(~np.isfinite(a)))} "
            "positions); drop or repair those examples first."
        )
    return a


def sparseness(attributions: Any) -> np.ndarray:
    """Gini index of ``|attribution|`` for each example.

    Args:
        attributions: ``[B, ...]`` array; each example is flattened.

    Returns:
        A float64 array ``[B]``; an all-zero example gives 0.

    Raises:
        ValueError: If ``attributions`` has no batch axis or contains NaN/Inf.

    Example:

    >>> import numpy as np
    >>> from tfmollify.evaluation.metrics import sparseness
    >>> sparseness(np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0]]))
    array([0.  , 0.75])
    """
    a = _batched("attributions", attributions)
    v = np.sort(np.abs(a.reshape(a.shape[0], -1)), axis=1)
    n = v.shape[1]
    i = np.arange(1, n + 1)
    total = v.sum(axis=1)
    num = ((2 * i - n - 1) * v).sum(axis=1)
    return np.divide(num, n * total, out=np.zeros_like(total), where=total > 0)


def _ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis of ``[B, n]``, ties getting their average rank."""
    out = np.empty_like(v, dtype=np.float64)
    for b in range(v.shape[0]):
        order = np.argsort(v[b], kind="stable")
        s = v[b, order]
        new = np.r_[True, s[1:] != s[:-1]]
        group = np.cumsum(new) - 1
        starts = np.flatnonzero(new)
        ends = np.r_[starts[1:], len(s)]
        out[b, order] = ((starts + ends - 1) / 2.0 + 1.0)[group]
    return out


def rank_correlation(a: Any, b: Any, *, absolute: bool = False) -> np.ndarray:
    """Spearman rank correlation between two batches of maps, example by example.

    Args:
        a: ``[B, ...]`` array; each example is flattened.
        b: An array of the same shape.
        absolute: Rank ``|a|`` and ``|b|`` instead of the signed values.

    Returns:
        A float64 array ``[B]`` in [-1, 1]; NaN where one of the two maps is constant.

    Raises:
        ValueError: If the shapes differ, there is no batch axis, or a value is NaN/Inf.

    Example:

    >>> import numpy as np
    >>> from tfmollify.evaluation.metrics import rank_correlation
    >>> rank_correlation(np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]),
    ...                  np.array([[10.0, 20.0, 90.0], [3.0, 2.0, 1.0]]))
    array([ 1., -1.])
    """
    x = _batched("a", a)
    y = _batched("b", b)
    if x.shape != y.shape:
        raise ValueError(
            f"Arguments `a` and `b` must have the same shape. Received shapes {x.shape} and "
            f"{y.shape}"
        )
    x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    if absolute:
        x, y = np.abs(x), np.abs(y)
    rx, ry = _ranks(x), _ranks(y)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx * rx).sum(axis=1) * (ry * ry).sum(axis=1))
    num = (rx * ry).sum(axis=1)
    out = np.full(x.shape[0], np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return np.clip(out, -1.0, 1.0)


def masks_from_boxes(boxes: Any, shape: Sequence[int]) -> np.ndarray:
    """Boolean masks ``[B, H, W]`` from one bounding box per example.

    Args:
        boxes: ``[B, 4]`` integers ``(y0, x0, y1, x1)``: rows ``y0 <= y < y1`` and columns
            ``x0 <= x < x1`` (half-open, in pixels, origin at the top left).
        shape: ``(H, W)`` of the masks.

    Returns:
        A bool array ``[B, H, W]``, True inside the box.

    Raises:
        ValueError: If ``shape`` is not two positive ints, ``boxes`` is not ``[B, 4]`` integers,
            or a box is empty or leaves the image.

    Example:

    >>> from tfmollify.evaluation.metrics import masks_from_boxes
    >>> masks_from_boxes([[1, 0, 3, 2]], (3, 4)).astype(int)
    array([[[0, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 1, 0, 0]]])
    """
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"Argument `shape` must be (H, W). Received: shape={shape!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"Argument `shape` must be two positive ints. Received: shape={shape!r}")
    bx = np.asarray(boxes)
    if bx.ndim != 2 or bx.shape[1] != 4 or not (
        np.issubdtype(bx.dtype, np.integer) or np.all(np.mod(bx, 1) == 0)
    ):
        raise ValueError(
            "Argument `boxes` must be [B, 4] integers (y0, x0, y1, x1). Received shape "
            f"{bx.shape}, dtype {bx.dtype}"
        )
    bx = bx.astype(np.int64)
    y0, x0, y1, x1 = bx.T
    bad = ~((y0 >= 0) & (x0 >= 0) & (y1 <= h) & (x1 <= w) & (y0 < y1) & (x0 < x1))
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"Argument `boxes`: box {i} = {bx[i].tolist()} must satisfy 0 <= y0 < y1 <= {h} and "
            f"0 <= x0 < x1 <= {w} (half-open (y0, x0, y1, x1))."
        )
    rows = np.arange(h)[None, :, None]
    cols = np.arange(w)[None, None, :]
    return (
        (rows >= y0[:, None, None]) & (rows < y1[:, None, None])
        & (cols >= x0[:, None, None]) & (cols < x1[:, None, None])
    )


def pointing_game(
    attributions: Any, masks: Any, k: int = 5, *, absolute: bool = True
) -> np.ndarray:
    """Fraction of the ``k`` highest-attribution positions that lie inside the mask.

    The map is reduced to the mask's shape first: with ``absolute=True`` (default) it is ``|a|``,
    and when ``attributions`` has one more (trailing, channel) axis than ``masks`` the channels are
    combined as ``sum_c |a_c|``; with ``absolute=False`` the signed ``a`` (channels: ``sum_c a_c``)
    is ranked. Ties are broken towards the lower flattened (row-major) index.

    Args:
        attributions: ``[B, H, W]`` or ``[B, H, W, C]`` (any spatial rank works).
        masks: Boolean ``[B, H, W]`` ground-truth regions (nonzero = inside), e.g. from
            :func:`masks_from_boxes`.
        k: Number of top positions (the paper uses 5); ``1 <= k <= H * W``.
        absolute: Rank ``|a|`` (default) or the signed values.

    Returns:
        A float64 array ``[B]`` of fractions in [0, 1] (multiples of ``1/k``).

    Raises:
        ValueError: On mismatched shapes, a ``k`` out of range, an empty mask, or NaN/Inf.
        TypeError: If ``k`` is not an int.

    Example:

    >>> import numpy as np
    >>> from tfmollify.evaluation.metrics import pointing_game
    >>> a = np.array([[[9.0, 1.0, 0.0], [8.0, 7.0, 0.0]]])   # [1, 2, 3]
    >>> m = np.array([[[True, False, False], [True, False, False]]])
    >>> pointing_game(a, m, k=2), pointing_game(a, m, k=3)
    (array([1.]), array([0.66666667]))
    """
    a = _batched("attributions", attributions)
    mk = np.asarray(masks)
    if mk.ndim < 2:
        raise ValueError(f"Argument `masks` must have a batch axis: [B, H, W]. Received shape "
                         f"{mk.shape}")
    if a.ndim == mk.ndim + 1:
        a = np.abs(a).sum(axis=-1) if absolute else a.sum(axis=-1)
    elif absolute:
        a = np.abs(a)
    if a.shape != mk.shape:
        raise ValueError(
            "Arguments `attributions` and `masks` must have the same shape, or `attributions` one "
            f"more trailing channel axis. Received shapes {np.shape(attributions)} and {mk.shape}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"Argument `k` must be an int. Received: k={k!r}")
    n = int(np.prod(a.shape[1:]))
    if not 1 <= k <= n:
        raise ValueError(f"Argument `k` must be in [1, {n}] (positions per map). Received: k={k}")
    mk = mk.reshape(mk.shape[0], -1).astype(bool)
    empty = ~mk.any(axis=1)
    if np.any(empty):
        raise ValueError(
            f"Argument `masks`: the mask of example {int(np.flatnonzero(empty)[0])} is empty; "
            "every example needs a non-empty ground-truth region."
        )
    flat = a.reshape(a.shape[0], -1)
    top = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(mk, top, axis=1).mean(axis=1)


# --------------------------------------------------------------------------- model-based metrics


def _check_model(model: Any) -> Any:
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model (Sequential or functional). Received: "
            f"model of type {type(model).__name__}"
        )
    return model


def _clone(model: Any) -> Any:
    import keras

    try:
        return keras.models.clone_model(model)
    except Exception as exc:
        raise TypeError(
            f"Argument `model` ({type(model).__name__}) cannot be cloned with "
            f"keras.models.clone_model ({exc}); use a Sequential or functional model."
        ) from None


def _weighted_layers(model: Any) -> list:
    return [layer for layer in model.layers if layer.weights]


def randomize_model(model: Any, *, seed: int = 0, num_layers: int | None = None) -> Any:
    """A copy of ``model`` whose top ``num_layers`` weighted layers are re-initialised.

    The copy is made with ``keras.models.clone_model``; ``model`` itself is not touched. Each
    randomised layer gets fresh values from its own initialisers (``kernel_initializer``,
    ``bias_initializer``, ...; Glorot-uniform kernels and zero biases for Keras' defaults),
    seeded from ``seed`` and the layer's position, as in Adebayo et al. 2018. Layers count from
    the output ("cascading", Quantus' ``layer_order="top_down"``); the default randomises all of
    them, the last step of the cascade (Quantus' ``return_last_correlation=True``). Layers below
    keep the trained weights.

    Args:
        model: A Sequential or functional ``keras.Model``.
        seed: Seed of the new weights.
        num_layers: How many weighted layers to randomise, from the top; ``None``: all.

    Returns:
        A new ``keras.Model``.

    Raises:
        TypeError: If ``model`` is not a Keras model that ``clone_model`` can copy.
        ValueError: If ``num_layers`` is not in [1, number of weighted layers].

    Example:

    >>> import keras, numpy as np
    >>> from tfmollify.evaluation.metrics import randomize_model
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    >>> rand = randomize_model(model, seed=1, num_layers=1)
    >>> [bool(np.array_equal(u, v)) for u, v in zip(model.get_weights(), rand.get_weights())]
    [True, True, False, True]
    """
    import keras

    _check_model(model)
    weighted = _weighted_layers(model)
    if num_layers is None:
        num_layers = len(weighted)
    if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) or not (
        1 <= num_layers <= len(weighted)
    ):
        raise ValueError(
            f"Argument `num_layers` must be an int in [1, {len(weighted)}] (the model's weighted "
            f"layers) or None. Received: num_layers={num_layers!r}"
        )
    chosen = {id(layer) for layer in weighted[len(weighted) - num_layers:]}
    position = {id(layer): i for i, layer in enumerate(weighted)}

    def seeded(layer: Any) -> Any:
        config = layer.get_config()
        if id(layer) in chosen:
            for j, (key, value) in enumerate(sorted(config.items())):
                inner = value.get("config") if isinstance(value, dict) else None
                if key.endswith("_initializer") and isinstance(inner, dict) and "seed" in inner:
                    state = np.random.SeedSequence([seed, position[id(layer)], j]).generate_state(1)
                    config[key] = {**value, "config": {**inner, "seed": int(state[0] >> 1)}}
        return layer.__class__.from_config(config)

    try:
        clone = keras.models.clone_model(model, clone_function=seeded)
    except Exception as exc:
        raise TypeError(
            f"Argument `model` ({type(model).__name__}) cannot be cloned with "
            f"keras.models.clone_model ({exc}); use a Sequential or functional model."
        ) from None
    for old, new in zip(weighted, _weighted_layers(clone), strict=True):
        if id(old) not in chosen:
            new.set_weights(old.get_weights())
    return clone


_PASSTHROUGH = ("InputLayer", "Flatten", "Reshape", "Permute", "Dropout")


def shift_model(model: Any, shift: Any) -> Any:
    """A copy of ``model`` that gives on ``x + shift`` exactly what ``model`` gives on ``x``.

    The first weighted layer must be affine before its activation (``Dense`` or a convolution,
    with a bias) and only shape layers (``Flatten``, ``Reshape``, ``Permute``, ``Dropout``) may
    come before it. Its bias becomes ``b' = b - W shift`` (Kindermans et al. 2019), where
    ``W shift`` is the layer's linear response to the constant input; every other weight is
    copied. ``model`` itself is not touched.

    Args:
        model: A Sequential or functional ``keras.Model`` with one input.
        shift: A float, or an array broadcastable to one example's shape (e.g. one value per
            channel).

    Returns:
        A new ``keras.Model``.

    Raises:
        TypeError: If ``model`` is not a clonable Keras model.
        ValueError: If ``shift`` does not broadcast, the first weighted layer has no bias or
            comes after a layer that is not a shape layer, or its response to a constant input
            differs between positions (a convolution with ``padding="same"`` pads with zeros,
            which are not shifted: use ``padding="valid"`` there), or the copy fails the final
            check that it reproduces ``model`` on two shifted probe inputs (the input also feeds
            other layers, e.g. a skip connection).

    Example:

    >>> import keras, numpy as np
    >>> from tfmollify.evaluation.metrics import shift_model
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="relu"),
    ...                           keras.layers.Dense(1)])
    >>> shifted = shift_model(model, -1.0)
    >>> x = np.random.default_rng(0).uniform(size=(4, 3)).astype("float32")
    >>> bool(np.allclose(shifted(x - 1.0), model(x), atol=1e-5))
    True
    """
    _check_model(model)
    if len(model.inputs) != 1:
        raise ValueError(f"Argument `model` must have one input. Received {len(model.inputs)}")
    example_shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in example_shape):
        raise ValueError(
            f"Argument `model` must have a fully known input shape. Received {example_shape}"
        )
    try:
        c = np.broadcast_to(np.asarray(shift, dtype=np.float64), example_shape)
    except ValueError:
        raise ValueError(
            f"Argument `shift` must be a float or broadcast to one example's shape "
            f"{example_shape}. Received shape {np.shape(shift)}"
        ) from None
    first, before = _first_affine(model)
    offset = _shift_offset(first, before, c)
    clone = _clone(model)
    clone.set_weights(model.get_weights())
    new_first = _weighted_layers(clone)[0]
    bias = np.asarray(first.bias, dtype=np.float64)
    new_first.bias.assign((bias - offset.mean(axis=0)).astype(np.asarray(first.bias).dtype))
    # Self-check on two probe inputs: the input must reach only this layer (no branches).
    probe_x = np.random.default_rng(0).uniform(size=(2, *example_shape)).astype(np.float32)
    want = np.asarray(model(probe_x, training=False), dtype=np.float64)
    got = np.asarray(clone((probe_x + c).astype(np.float32), training=False), dtype=np.float64)
    if not np.allclose(got, want, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(want).max()))):
        raise ValueError(
            f"Argument `model`: compensating the bias of {first.name!r} does not reproduce the "
            f"outputs (max difference {float(np.abs(got - want).max()):.3g}); the input must "
            "feed this one affine layer only (no branches or skip connections around it)."
        )
    return clone


def _first_affine(model: Any) -> tuple[Any, list]:
    """The first weighted layer (affine, with a bias) and the shape layers before it."""
    first, before = None, []
    for layer in model.layers:
        if layer.weights:
            first = layer
            break
        if type(layer).__name__ not in _PASSTHROUGH:
            raise ValueError(
                f"Argument `model`: layer {layer.name!r} ({type(layer).__name__}) comes before "
                f"the first weighted layer; only {list(_PASSTHROUGH)} may, since the bias "
                "compensation needs the shift to reach the first affine layer unchanged."
            )
        if type(layer).__name__ != "InputLayer":
            before.append(layer)
    if first is None or getattr(first, "bias", None) is None or not hasattr(first, "kernel"):
        name = "none" if first is None else f"{first.name!r} ({type(first).__name__})"
        raise ValueError(
            f"Argument `model`: the first weighted layer ({name}) must be a Dense or convolution "
            "layer with use_bias=True, so that its bias can absorb the shift."
        )
    return first, before


def _shift_offset(first: Any, before: list, c: np.ndarray) -> np.ndarray:
    """The linear response of ``first`` to ``c`` (through ``before``): one row per position."""
    config = first.get_config()
    config.update(activation="linear", use_bias=False, name=f"{first.name}_linear_probe")
    probe = type(first).from_config(config)
    h = np.stack([c, np.zeros_like(c)]).astype(np.float32)
    for layer in before:
        h = np.asarray(layer(h, training=False))
    probe.build(h.shape)
    probe.kernel.assign(np.asarray(first.kernel))
    response = np.asarray(probe(h), dtype=np.float64)
    offset = (response[0] - response[1]).reshape(-1, response.shape[-1])
    spread = np.ptp(offset, axis=0).max()
    if spread > 1e-4 * max(1.0, float(np.abs(offset).max())):
        raise ValueError(
            f"Argument `model`: the first layer {first.name!r} responds to a constant shift "
            f"differently at different positions (spread {spread:.3g}), so no bias can "
            "compensate it; a convolution with padding='same' does this (the zero padding is not "
            "shifted): use padding='valid' in the first layer, or a non-constant `shift` is "
            "being used with a convolution."
        )
    return offset


def _explain(explain_fn: Any, model: Any, inputs: np.ndarray, targets: Any, which: str) -> Any:
    try:
        out = explain_fn(model, inputs, targets)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"Argument `explain_fn` failed on the {which} model: {exc}") from exc
    return np.asarray(out)


def _same_shape(a0: np.ndarray, a1: np.ndarray, x: np.ndarray) -> None:
    if a0.shape != a1.shape or a0.ndim < 1 or a0.shape[0] != x.shape[0]:
        raise ValueError(
            "Argument `explain_fn` must return one attribution map per example, of the same shape "
            f"for both models. Received shapes {a0.shape} and {a1.shape} for inputs {x.shape}"
        )


def _check_explain_inputs(explain_fn: Any, inputs: Any) -> np.ndarray:
    if not callable(explain_fn):
        raise TypeError(
            "Argument `explain_fn` must be a callable (model, inputs, targets) -> attributions "
            f"[B, ...]. Received: explain_fn of type {type(explain_fn).__name__}"
        )
    x = np.asarray(inputs)
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"Argument `inputs` must be a float array with a batch axis [B, ...]. Received shape "
            f"{x.shape}, dtype {x.dtype}"
        )
    return x


def consistency(
    explain_fn: Callable[[Any, np.ndarray, Any], Any],
    model: Any,
    inputs: Any,
    targets: Any = None,
    *,
    seed: int = 0,
    num_layers: int | None = None,
    absolute: bool = True,
) -> np.ndarray:
    """Model-parameter randomisation test: rank correlation of trained vs randomised explanations.

    Computes ``rho_S(e(model, x), e(randomize_model(model), x))`` per example (lower is better: the
    explanation depends on what the model learned). ``model`` is not modified.

    Args:
        explain_fn: ``(model, inputs, targets) -> attributions [B, ...]``, called once with
            ``model`` and once with the randomised copy; e.g.
            ``lambda m, x, t: tfm.Explainer(m, mode="sg", seed=0)(x, t)``.
        model: A Sequential or functional ``keras.Model``.
        inputs: ``[B, ...]`` float inputs.
        targets: Passed to ``explain_fn`` unchanged (class indices for the Explainer).
        seed: Seed of the re-initialised weights (:func:`randomize_model`).
        num_layers: Weighted layers randomised from the top; ``None`` (default): all.
        absolute: Rank ``|e|`` (default, as Quantus' MPRT) or the signed maps.

    Returns:
        A float64 array ``[B]`` (NaN where a map is constant).

    Raises:
        TypeError: If ``explain_fn`` is not callable or ``model`` is not a clonable Keras model.
        ValueError: On bad ``inputs``/``num_layers`` or explanations of mismatched shape.

    Example:

    >>> import keras, numpy as np, tensorflow as tf
    >>> from tfmollify.evaluation.metrics import consistency
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="tanh"),
    ...                           keras.layers.Dense(3)])
    >>> def grad(m, x, t):
    ...     x = tf.constant(x)
    ...     with tf.GradientTape() as tape:
    ...         tape.watch(x)
    ...         s = tf.gather(m(x), t, axis=1, batch_dims=1)
    ...     return tape.gradient(s, x).numpy()
    >>> x = np.random.default_rng(0).normal(size=(2, 8)).astype("float32")
    >>> scores = consistency(grad, model, x, np.array([0, 1]))
    >>> scores.shape, bool(np.all(np.abs(scores) <= 1))
    ((2,), True)
    """
    _check_model(model)
    x = _check_explain_inputs(explain_fn, inputs)
    randomized = randomize_model(model, seed=seed, num_layers=num_layers)
    a0 = _explain(explain_fn, model, x, targets, "trained")
    a1 = _explain(explain_fn, randomized, x, targets, "randomised")
    _same_shape(a0, a1, x)
    return rank_correlation(a0, a1, absolute=absolute)


def invariance(
    explain_fn: Callable[[Any, np.ndarray, Any], Any],
    model: Any,
    inputs: Any,
    targets: Any = None,
    *,
    shift: Any = -1.0,
    absolute: bool = False,
) -> np.ndarray:
    """Input-shift invariance: rank correlation of ``e(f, x)`` and ``e(f_c, x + c)``.

    ``f_c = shift_model(model, c)`` computes exactly what ``model`` computes, on inputs shifted by
    ``c`` (Kindermans et al. 2019); an explanation that reflects only the function scores 1
    (higher is better). ``model`` is not modified.

    Args:
        explain_fn: ``(model, inputs, targets) -> attributions [B, ...]``, called with
            ``(model, x, targets)`` and ``(f_c, x + shift, targets)``.
        model: A Sequential or functional ``keras.Model`` (see :func:`shift_model` for the
            first layer it needs).
        inputs: ``[B, ...]`` float inputs.
        targets: Passed to ``explain_fn`` unchanged.
        shift: The constant ``c``: a float or an array broadcastable to one example's shape
            (default -1, Kindermans et al.'s MNIST shift from [0, 1] to [-1, 0]).
        absolute: Rank ``|e|`` instead of the signed maps (default).

    Returns:
        A float64 array ``[B]`` (NaN where a map is constant).

    Raises:
        TypeError: If ``explain_fn`` is not callable or ``model`` is not a clonable Keras model.
        ValueError: On bad ``inputs``/``shift``, a first layer that cannot absorb the shift, or
            explanations of mismatched shape.

    Example:

    >>> import keras, numpy as np, tensorflow as tf
    >>> from tfmollify.evaluation.metrics import invariance
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="tanh"),
    ...                           keras.layers.Dense(3)])
    >>> def input_x_grad(m, x, t):
    ...     x = tf.constant(x)
    ...     with tf.GradientTape() as tape:
    ...         tape.watch(x)
    ...         s = tf.gather(m(x), t, axis=1, batch_dims=1)
    ...     return (x * tape.gradient(s, x)).numpy()
    >>> x = np.random.default_rng(0).uniform(size=(2, 8)).astype("float32")
    >>> invariance(input_x_grad, model, x, np.array([0, 1]), shift=-1.0) < 1   # not invariant
    array([ True,  True])
    """
    _check_model(model)
    x = _check_explain_inputs(explain_fn, inputs)
    shifted = shift_model(model, shift)
    a0 = _explain(explain_fn, model, x, targets, "original")
    xs = (x + np.asarray(shift, dtype=np.float64)).astype(x.dtype)
    a1 = _explain(explain_fn, shifted, xs, targets, "shifted")
    _same_shape(a0, a1, x)
    return rank_correlation(a0, a1, absolute=absolute)


# ------------------------------------------------------------- cascading randomisation (MPRT)

#: The cascade orders of :func:`mprt` and :func:`smooth_mprt` (Quantus' ``layer_order``):
#: ``"top_down"`` randomises the weighted layers from the output down, ``"bottom_up"`` from the
#: input up, both cumulatively; ``"independent"`` randomises one layer at a time (the others
#: trained), listed from the input up.
LAYER_ORDERS = ("top_down", "bottom_up", "independent")

#: The named similarity measures of :func:`mprt` and :func:`smooth_mprt`.
SIMILARITIES = ("spearman", "ssim")


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """``np.nanmean`` without the warning: NaN where a slice is all NaN."""
    ok = ~np.isnan(a)
    count = ok.sum(axis=axis)
    total = np.where(ok, a, 0.0).sum(axis=axis)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)


@dataclasses.dataclass(frozen=True, eq=False)
class RandomisationResult:
    """The similarities of a randomisation test, per cascade step and per example.

    Row ``k`` of ``similarity`` compares the explanations of the trained model with those of
    the model whose layers ``layers[: k + 1]`` are randomised (``"independent"``: only
    ``layers[k]``). For a cascade the last row is the fully randomised model. Lower is better:
    the explanation depends on the weights the model learned.

    Attributes:
        layers: The weighted layers' names, in the order they were randomised (from the output
            down for ``"top_down"``).
        similarity: A read-only float64 array ``[L, B]``: one row per step, one column per
            example (NaN where a map is constant, for Spearman).
        layer_order: One of :data:`LAYER_ORDERS`.
        measure: ``"spearman"``, ``"ssim"`` or the name of the callable used.

    Example:

    >>> import numpy as np
    >>> from tfmollify.evaluation.metrics import RandomisationResult
    >>> r = RandomisationResult(("dense_1", "dense"), np.array([[0.9, 0.7], [0.2, np.nan]]),
    ...                         "top_down", "spearman")
    >>> r.mean(), r.last, r.layer_mean()
    (array([0.8, 0.2]), array([0.2, nan]), array([0.55, 0.7 ]))
    """

    layers: tuple[str, ...]
    similarity: np.ndarray
    layer_order: str
    measure: str

    def __post_init__(self) -> None:
        s = np.array(self.similarity, dtype=np.float64)
        layers = tuple(str(name) for name in self.layers)
        if s.ndim != 2 or s.shape[0] != len(layers) or not layers:
            raise ValueError(
                "Argument `similarity` must be [L, B] with one row per layer of `layers` "
                f"({len(layers)}). Received shape {s.shape}"
            )
        if self.layer_order not in LAYER_ORDERS:
            raise ValueError(
                f"Argument `layer_order` must be one of {LAYER_ORDERS}. Received: "
                f"layer_order={self.layer_order!r}"
            )
        s.setflags(write=False)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "similarity", s)

    @property
    def last(self) -> np.ndarray:
        """``[B]``: the last step, the fully randomised model for a cascade (Quantus'
        ``return_last_correlation=True``)."""
        return self.similarity[-1].copy()

    def mean(self) -> np.ndarray:
        """``[L]``: each step's mean over the examples (NaN left out; NaN if all are)."""
        return _nanmean(self.similarity, axis=1)

    def layer_mean(self) -> np.ndarray:
        """``[B]``: each example's mean over the steps (Quantus'
        ``return_average_correlation=True``; NaN left out)."""
        return _nanmean(self.similarity, axis=0)

    def as_dict(self) -> dict[str, np.ndarray]:
        """``{layer: [B] similarities}`` in cascade order, as Quantus' ``evaluation_scores``
        (without its ``"original"`` entry)."""
        return {name: row.copy() for name, row in zip(self.layers, self.similarity, strict=True)}

    def table(self) -> str:
        """One line per step: the layer, and the mean, min and max over the examples."""
        width = max(len("layer randomised"), *(len(name) for name in self.layers))
        lines = [f"  step  {'layer randomised':<{width}}  mean    [min, max]   ({self.measure}, "
                 f"{self.layer_order}, {self.similarity.shape[1]} examples)"]
        for k, (name, row, mean) in enumerate(
            zip(self.layers, self.similarity, self.mean(), strict=True), start=1
        ):
            finite = row[~np.isnan(row)]
            span = (f"[{finite.min():.3f}, {finite.max():.3f}]" if finite.size
                    else "[all NaN: constant maps]")
            lines.append(f"  {k:>4}  {name:<{width}}  {mean:6.3f}  {span}")
        return "\n".join(lines)


def ssim(a: Any, b: Any, *, win_size: int = 7) -> np.ndarray:
    """Structural similarity (SSIM) of two batches of maps, each example flattened to 1D.

    This is Quantus' ``ssim`` similarity as its ``MPRT`` applies it (it flattens the maps
    first), i.e. ``skimage.metrics.structural_similarity`` with its defaults (Wang et al. 2004):
    windows of ``win_size`` consecutive values with uniform weights, sample covariances
    (``n / (n - 1)``), ``K1 = 0.01``, ``K2 = 0.03``, and the data range
    ``R = max(a, b) - min(a, b)`` of the pair. For windows ``w`` (only those fully inside the
    map, as skimage's crop), with means ``mu``, variances ``v`` and covariance ``c``,

        SSIM = mean_w [(2 mu_a mu_b + C1)(2 c + C2)] / [(mu_a^2 + mu_b^2 + C1)(v_a + v_b + C2)]

    with ``C1 = (K1 R)^2`` and ``C2 = (K2 R)^2``. It is 1 for identical maps, and NaN for two
    equal constant maps (``R = 0``).

    Args:
        a: ``[B, ...]`` array; each example is flattened.
        b: An array of the same shape.
        win_size: The window length, odd and at most the number of values per example.

    Returns:
        A float64 array ``[B]``.

    Raises:
        ValueError: If the shapes differ, there is no batch axis, a value is NaN/Inf, or
            ``win_size`` is not an odd int in [3, values per example].

    Example:

    >>> import numpy as np
    >>> from tfmollify.evaluation.metrics import ssim
    >>> a = np.linspace(0.0, 1.0, 20)[None]
    >>> ssim(a, a), bool(ssim(a, a[:, ::-1])[0] < 0)
    (array([1.]), True)
    """
    x = _batched("a", a)
    y = _batched("b", b)
    if x.shape != y.shape:
        raise ValueError(
            f"Arguments `a` and `b` must have the same shape. Received shapes {x.shape} and "
            f"{y.shape}"
        )
    x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    n = x.shape[1]
    if (isinstance(win_size, bool) or not isinstance(win_size, (int, np.integer))
            or win_size < 3 or win_size % 2 == 0 or win_size > n):
        raise ValueError(
            f"Argument `win_size` must be an odd int in [3, {n}] (values per example). "
            f"Received: win_size={win_size!r}"
        )
    data_range = np.maximum(x.max(axis=1), y.max(axis=1)) - np.minimum(x.min(axis=1),
                                                                          y.min(axis=1))
    c1 = ((0.01 * data_range) ** 2)[:, None]
    c2 = ((0.03 * data_range) ** 2)[:, None]
    wx = np.lib.stride_tricks.sliding_window_view(x, win_size, axis=1)
    wy = np.lib.stride_tricks.sliding_window_view(y, win_size, axis=1)
    mx, my = wx.mean(axis=-1), wy.mean(axis=-1)
    cov_norm = win_size / (win_size - 1.0)
    vx = cov_norm * ((wx * wx).mean(axis=-1) - mx * mx)
    vy = cov_norm * ((wy * wy).mean(axis=-1) - my * my)
    vxy = cov_norm * ((wx * wy).mean(axis=-1) - mx * my)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(axis=1)


def _check_explainer(explainer: Any) -> tuple[Any, list]:
    """The explainer's Keras model and its weighted layers (bottom up)."""
    from tfmollify.explainers.explainer import Explainer

    if not isinstance(explainer, Explainer):
        raise TypeError(
            "Argument `explainer` must be a tfmollify Explainer (e.g. tfm.SmoothGrad(model, "
            f"seed=0)). Received: explainer of type {type(explainer).__name__}"
        )
    import keras

    model = explainer.model
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `explainer` must explain a keras.Model (Sequential or functional), whose "
            f"weights can be randomised. Received an explainer of a {type(model).__name__}"
        )
    weighted = _weighted_layers(model)
    if not weighted:
        raise ValueError(
            f"Argument `explainer`: its model {model.name!r} has no layer with weights to "
            "randomise."
        )
    return model, weighted


def _check_randomisation(
    similarity: Any, seed: Any, layer_order: Any
) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], str]:
    """The similarity function and its name; checks ``seed`` and ``layer_order``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"Argument `seed` must be an int. Received: seed={seed!r}")
    if seed < 0:
        raise ValueError(f"Argument `seed` must be >= 0. Received: seed={seed!r}")
    if layer_order not in LAYER_ORDERS:
        raise ValueError(
            f"Argument `layer_order` must be one of {LAYER_ORDERS}. Received: "
            f"layer_order={layer_order!r}"
        )
    if isinstance(similarity, str) and similarity in SIMILARITIES:
        return (rank_correlation if similarity == "spearman" else ssim), similarity
    if callable(similarity):
        return similarity, getattr(similarity, "__name__", type(similarity).__name__)
    raise ValueError(
        f"Argument `similarity` must be one of {SIMILARITIES} or a callable (a [B, F], b [B, F])"
        f" -> [B]. Received: similarity={similarity!r}"
    )


def _step_model(model: Any, weighted: list, seed: int, chosen: set[int]) -> Any:
    """A copy of ``model`` whose weighted layers at the positions ``chosen`` (bottom up) are
    re-initialised as :func:`randomize_model` does; the others keep the trained weights."""
    clone = randomize_model(model, seed=seed)
    for i, (old, new) in enumerate(zip(weighted, _weighted_layers(clone), strict=True)):
        if i not in chosen:
            new.set_weights(old.get_weights())
    return clone


def _steps(n: int, layer_order: str) -> list[tuple[int, set[int]]]:
    """``(layer position, positions randomised)`` per step of the order, positions bottom up."""
    if layer_order == "top_down":
        return [(i, set(range(i, n))) for i in reversed(range(n))]
    if layer_order == "bottom_up":
        return [(i, set(range(i + 1))) for i in range(n)]
    return [(i, {i}) for i in range(n)]


def _rebuild(explainer: Any, model: Any) -> Any:
    """The same explainer settings on ``model`` (kernel objects kept: a user's kernel need not
    be registered by name)."""
    config = explainer.get_config()
    config["kernel"] = explainer.kernel
    if explainer.proposal is not None:
        config["proposal"] = explainer.proposal
    return type(explainer).from_config(model, config)


def _batch_of(inputs: Any) -> int:
    import keras

    leaves = keras.tree.flatten(inputs)
    shape = np.shape(leaves[0]) if leaves else ()
    if not shape:
        raise ValueError(
            "Argument `inputs` must have a batch axis [B, ...] (or be a list/dict of such "
            f"arrays). Received shape {shape}"
        )
    return int(shape[0])


def _maps(out: Any, batch: int, which: str) -> np.ndarray:
    """The explanation as float64 ``[B, F]`` (several inputs: concatenated per example)."""
    import keras

    parts = [np.asarray(v, dtype=np.float64) for v in keras.tree.flatten(out)]
    if not parts or any(p.ndim < 1 or p.shape[0] != batch for p in parts):
        raise ValueError(
            f"Argument `explainer` must return one map per example; on the {which} model it "
            f"returned shapes {[p.shape for p in parts]} for a batch of {batch}"
        )
    a = np.concatenate([p.reshape(batch, -1) for p in parts], axis=1)
    if not np.all(np.isfinite(a)):
        raise ValueError(
            f"Argument `explainer`: its maps on the {which} model contain NaN or Inf (at "
            f"{int(np.sum(~np.isfinite(a)))} positions)."
        )
    return a


def _prepare(a: np.ndarray, normalise: str | None, absolute: bool) -> np.ndarray:
    """Quantus' default preprocessing, per example: divide by ``max |a|`` (``"max"``) or by
    ``sqrt(mean a^2)`` (``"second_moment"``), then ``|a|``. An all-zero map stays as it is."""
    if normalise == "max":
        scale = np.abs(a).max(axis=1, keepdims=True)
    elif normalise == "second_moment":
        scale = np.sqrt((a * a).mean(axis=1, keepdims=True))
    else:
        scale = np.ones((a.shape[0], 1))
    a = np.divide(a, scale, out=a.copy(), where=scale > 0)
    return np.abs(a) if absolute else a


def _cascade(
    explainer: Any,
    maps: Callable[[Any, str], np.ndarray],
    similarity: Any,
    seed: Any,
    layer_order: Any,
) -> RandomisationResult:
    """Runs the steps of ``layer_order``: ``maps(explainer, which)`` gives ``[B, F]``."""
    compare, measure = _check_randomisation(similarity, seed, layer_order)
    model, weighted = _check_explainer(explainer)
    a0 = maps(explainer, "trained")
    if measure == "ssim" and a0.shape[1] < 7:
        raise ValueError(
            "Argument `similarity`: 'ssim' needs at least 7 values per map (its window, as "
            f"skimage's default). Received maps of {a0.shape[1]} values; use 'spearman'."
        )
    names, rows = [], []
    for position, chosen in _steps(len(weighted), layer_order):
        name = weighted[position].name
        randomised = _rebuild(explainer, _step_model(model, weighted, int(seed), chosen))
        a1 = maps(randomised, f"randomised ({name})")
        if a1.shape != a0.shape:
            raise ValueError(
                f"Argument `explainer` returned maps of shape {a1.shape} on the randomised "
                f"model ({name}) and {a0.shape} on the trained one."
            )
        row = np.asarray(compare(a0, a1), dtype=np.float64)
        if row.shape != (a0.shape[0],):
            raise ValueError(
                f"Argument `similarity` must return one value per example, shape "
                f"({a0.shape[0]},). Received shape {row.shape}"
            )
        names.append(name)
        rows.append(row)
    return RandomisationResult(tuple(names), np.stack(rows), layer_order, measure)


def mprt(
    explainer: Any,
    inputs: Any,
    targets: Any = None,
    *,
    similarity: str | Callable[[np.ndarray, np.ndarray], Any] = "spearman",
    seed: int = 0,
    layer_order: str = "top_down",
    normalise: bool = True,
    absolute: bool = True,
) -> RandomisationResult:
    """Cascading model-parameter randomisation test (MPRT; Adebayo et al. 2018).

    For each step of the cascade one more weighted layer is re-initialised, from the output
    down (``layer_order="top_down"``, Quantus' ``MPRT`` default), in a copy of the model
    (:func:`randomize_model`'s weights: each layer's own initialisers, seeded by ``seed`` and
    the layer's position, the same at every step); the explainer's settings are rebuilt on the
    copy (``type(explainer).from_config(copy, explainer.get_config())``) and its maps compared
    with those of the trained model, example by example. The user's model is never modified.

    As Quantus' ``MPRT`` (0.6) by default: each map is divided by its largest ``|value|``
    (``normalise_by_max``) and then taken in absolute value (``abs=True``), flattened, and
    compared by Spearman's rank correlation (:func:`rank_correlation`) or :func:`ssim`. Where
    this differs from Quantus: the normalisation is per example (Quantus divides a chunk of up to
    ``batch_size=64`` examples by one value, which leaves Spearman unchanged but makes SSIM
    depend on the other examples), re-initialisation replaces the permutation of the weights
    that Quantus' TensorFlow wrapper does (its PyTorch one re-initialises, as Adebayo et al.),
    and the ``"original"`` entry (the trained model against itself) is left out. Give the
    explainer a ``seed``: the trained and the randomised models then get the same noise.

    Args:
        explainer: A :class:`tfmollify.Explainer` of a Sequential or functional Keras model.
        inputs: The inputs, as for ``explainer.explain`` (several inputs: their maps are
            concatenated per example).
        targets: As for ``explainer.explain``.
        similarity: ``"spearman"`` (default), ``"ssim"`` (at least 7 values per map), or a
            callable ``(a [B, F], b [B, F]) -> [B]`` on the preprocessed maps.
        seed: Seed of the re-initialised weights.
        layer_order: One of :data:`LAYER_ORDERS`.
        normalise: Divide each map by its largest ``|value|`` first (Quantus' default).
        absolute: Compare ``|map|`` (Quantus' default) or the signed maps.

    Returns:
        A :class:`RandomisationResult`: ``similarity[k]`` after ``k + 1`` layers (``layers``,
        from the top down by default) are randomised; ``result.last`` is the fully randomised
        model, as :func:`consistency` with the same ``seed``.

    Raises:
        TypeError: If ``explainer`` is not an Explainer of a clonable Keras model, or ``seed``
            is not an int.
        ValueError: On a negative ``seed``, an unknown ``similarity`` or ``layer_order``, a
            model without weights,
            maps with NaN/Inf, or fewer than 7 values per map with ``"ssim"``; and what
            ``explainer.explain`` raises for bad inputs or targets.

    Example:

    >>> import keras, numpy as np
    >>> import tfmollify as tfm
    >>> from tfmollify.evaluation.metrics import mprt
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((16,)),
    ...                           keras.layers.Dense(8, activation="tanh", name="hidden"),
    ...                           keras.layers.Dense(3, name="logits")])
    >>> x = np.random.default_rng(0).normal(size=(4, 16)).astype("float32")
    >>> result = mprt(tfm.SmoothGrad(model, num_samples=4, seed=0), x, [0, 1, 2, 0])
    >>> result.layers, result.similarity.shape, bool(np.all(np.abs(result.mean()) <= 1))
    (('logits', 'hidden'), (2, 4), True)
    """
    batch = _batch_of(inputs)
    how = "max" if normalise else None

    def maps(e: Any, which: str) -> np.ndarray:
        return _prepare(_maps(e.explain(inputs, targets), batch, which), how, bool(absolute))

    return _cascade(explainer, maps, similarity, seed, layer_order)


def _noisy(inputs: Any, magnitude: float, rng: np.random.Generator) -> Any:
    """``inputs`` plus Gaussian noise of std ``magnitude * (max - min)`` per example (float
    arrays only; integer inputs such as token ids are kept)."""
    import keras

    def one(v: Any) -> Any:
        a = np.asarray(v)
        if not np.issubdtype(a.dtype, np.floating) or a.ndim < 1:
            return v
        axes = tuple(range(1, a.ndim))
        std = magnitude * (a.max(axis=axes, keepdims=True) - a.min(axis=axes, keepdims=True))
        return (a + rng.standard_normal(a.shape) * std).astype(a.dtype)

    return keras.tree.map_structure(one, inputs)


def _copy_seeds(seed: int, n: int, batch: int) -> np.ndarray:
    """Per-example explainer seeds ``[B]`` for noisy copy ``n``, derived from ``seed``."""
    state = np.random.SeedSequence([int(seed) % 2**64, n]).generate_state(batch, np.uint32)
    return state.astype(np.int64)


def _check_smoothing(nr_samples: Any, noise_magnitude: Any) -> None:
    if (isinstance(nr_samples, bool) or not isinstance(nr_samples, (int, np.integer))
            or nr_samples < 1):
        raise ValueError(
            f"Argument `nr_samples` must be an int >= 1. Received: nr_samples={nr_samples!r}"
        )
    if (isinstance(noise_magnitude, bool) or not isinstance(noise_magnitude, numbers.Real)
            or not np.isfinite(noise_magnitude) or noise_magnitude < 0):
        raise ValueError(
            "Argument `noise_magnitude` must be a finite float >= 0 (the noise's std as a "
            f"fraction of each input's range). Received: noise_magnitude={noise_magnitude!r}"
        )


def smooth_mprt(
    explainer: Any,
    inputs: Any,
    targets: Any = None,
    *,
    similarity: str | Callable[[np.ndarray, np.ndarray], Any] = "spearman",
    nr_samples: int = 50,
    noise_magnitude: float = 0.1,
    seed: int = 0,
    layer_order: str = "bottom_up",
    normalise: bool = True,
    absolute: bool = True,
) -> RandomisationResult:
    """Smooth-MPRT (Hedström et al. 2023): the randomisation test on denoised explanations.

    As :func:`mprt`, but every explanation (of the trained model and of each randomised copy)
    is the average over ``nr_samples`` noisy copies of the inputs,
    ``(1/N) sum_n e(x + delta_n)``: ``delta_n`` is Gaussian with standard deviation
    ``noise_magnitude * (max(x) - min(x))`` per example (over all its elements), and the last
    copy is noise-free (``delta_N = 0``, so ``nr_samples=1`` is the plain MPRT), as Quantus'
    ``SmoothMPRT`` (0.6) defines it; its defaults are the ones here (``nr_samples=50``,
    ``noise_magnitude=0.1``, ``layer_order="bottom_up"``, set for ImageNet in the paper). The
    maps are then divided by their root mean square (Quantus' default here,
    ``normalise_by_average_second_moment_estimate``) and taken in absolute value.

    Where this differs from Quantus (besides the per-example normalisation and the
    re-initialisation that :func:`mprt` describes): the noise ``delta_n`` is drawn from ``seed``
    and is the same for every model (common random numbers: the explanations differ by the
    weights alone), and with a seeded explainer each noisy copy gets its own explainer seeds
    (derived from the explainer's ``seed`` and ``n``), so that its own noise differs between
    copies. The inputs are explained in ``nr_samples`` calls of the batch's size.

    Args:
        explainer: A :class:`tfmollify.Explainer` of a Sequential or functional Keras model.
        inputs: The inputs, as for ``explainer.explain`` (integer inputs get no noise).
        targets: As for ``explainer.explain``.
        similarity: ``"spearman"`` (default), ``"ssim"`` or a callable, as for :func:`mprt`.
        nr_samples: Noisy copies per explanation (the last one noise-free), >= 1.
        noise_magnitude: The noise's standard deviation as a fraction of each example's range.
        seed: Seed of the re-initialised weights and of the input noise.
        layer_order: One of :data:`LAYER_ORDERS`; Quantus' default here is ``"bottom_up"``.
        normalise: Divide each map by its root mean square first (Quantus' default).
        absolute: Compare ``|map|`` (Quantus' default) or the signed maps.

    Returns:
        A :class:`RandomisationResult` (``layers`` from the input up by default).

    Raises:
        TypeError: As :func:`mprt`.
        ValueError: As :func:`mprt`, and for ``nr_samples`` < 1 or a negative or non-finite
            ``noise_magnitude``.

    Example:

    >>> import keras, numpy as np
    >>> import tfmollify as tfm
    >>> from tfmollify.evaluation.metrics import smooth_mprt
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((16,)),
    ...                           keras.layers.Dense(8, activation="tanh", name="hidden"),
    ...                           keras.layers.Dense(3, name="logits")])
    >>> x = np.random.default_rng(0).normal(size=(4, 16)).astype("float32")
    >>> result = smooth_mprt(tfm.SmoothGrad(model, num_samples=4, seed=0), x, [0, 1, 2, 0],
    ...                      nr_samples=5)
    >>> result.layers, result.similarity.shape
    (('hidden', 'logits'), (2, 4))
    """
    _check_smoothing(nr_samples, noise_magnitude)
    batch = _batch_of(inputs)
    how = "second_moment" if normalise else None

    def maps(e: Any, which: str) -> np.ndarray:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 1]))
        total = np.zeros((batch, 1))
        for n in range(nr_samples):
            last = n == nr_samples - 1
            x = inputs if last else _noisy(inputs, float(noise_magnitude), rng)
            seeds = None if last or e.seed is None else _copy_seeds(e.seed, n, batch)
            total = total + _maps(e.explain(x, targets, seeds=seeds), batch, which)
        return _prepare(total / nr_samples, how, bool(absolute))

    return _cascade(explainer, maps, similarity, seed, layer_order)

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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "consistency",
    "invariance",
    "masks_from_boxes",
    "pointing_game",
    "randomize_model",
    "rank_correlation",
    "shift_model",
    "sparseness",
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

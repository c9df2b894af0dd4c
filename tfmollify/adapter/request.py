"""One call's arguments, checked: the inputs as rows, targets, input-noise scales and seeds.

The rules for what a call may pass live here, once: :func:`rows` (the inputs), :func:`targets`,
:func:`epsilons` (with eq. 30, :func:`eq30`, which the export runs inside its graph too) and
:func:`seeds`. Every error is a ``ValueError``/``TypeError`` that names the argument, echoes the
value and says what is expected.

The rules that must also hold inside the exported graph are written once, with two faces, in
:mod:`tfmollify.core.checks`. :class:`Rules` holds what these rules need as data, so that a
loaded export (:class:`tfmollify.integrations.serve.Export`, ``tfmollify serve``) checks a request
with the same functions, and the same messages, as :meth:`tfmollify.Explainer.explain`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify.adapter.spec import Spec
from tfmollify.core import inputs as inputs_lib
from tfmollify.core import plan, sampling
from tfmollify.core.checks import (
    check_constant,
    check_count,
    check_example_shape,
    check_finite,
    check_input_range,
    check_targets_range,
)

__all__ = [
    "CONSTANT_EXAMPLE", "RULES_FILE", "Rules", "check_keys", "constant_epsilon", "epsilons", "eq30",
    "layer_epsilons", "part_epsilons", "range_epsilons", "range_scale", "rows", "seeds", "targets",
]


@dataclasses.dataclass(frozen=True)
class Rules:
    """What a request is checked against, as data: the same checks on every path.

    :meth:`tfmollify.Explainer.explain` checks its arguments with the functions of this module
    directly; an export writes its :class:`Rules` beside the SavedModel (:data:`RULES_FILE`)
    so that :class:`tfmollify.integrations.serve.Export` checks a decoded request with the same
    functions, in the same order, before the graph runs (whose assertions are the graph face).

    Attributes:
        n_scores: The model's outputs per example (targets lie in ``[0, n_scores)``).
        finite: ``(signature input, name in messages)`` of the float inputs that must be
            finite (``("inputs", "inputs")``; with several: ``("num", "inputs['num']")``).
        input_range: AdaptGrad's ``(low, high)`` for the one input ``inputs``, or None.
        eq30_quantile: ``q`` when eq. 30 chooses ``epsilon`` from the one input ``inputs``
            itself (so a constant example is refused), else None.
        example_shape: The shape of one example the model declares for the one input
            ``inputs`` (None for a free dimension), or None when the call does not check it.
        eq30_parts: With several inputs, ``(signature input, key)`` of the float inputs whose
            scale eq. 30 chooses (a constant example of one is refused, naming the input).
    """

    n_scores: int
    finite: tuple[tuple[str, str], ...] = (("inputs", "inputs"),)
    input_range: tuple[float, float] | None = None
    eq30_quantile: float | None = None
    example_shape: tuple[int | None, ...] | None = None
    eq30_parts: tuple[tuple[str, str], ...] = ()

    def check(self, arrays: dict[str, np.ndarray], batch: int) -> None:
        """Checks a decoded request ``{input name: array, "targets": ..., "seeds": ...}`` of
        ``batch`` examples, with the functions and in the order of
        :meth:`tfmollify.Explainer.explain`: the inputs (type, batch axis, finite values), their
        shape, the targets, ``input_range`` or eq. 30, the seeds.

        Raises:
            ValueError, TypeError: As :meth:`tfmollify.Explainer.explain` for the same request.
        """
        for name, shown in self.finite:  # the inputs: type, batch axis, finite values
            if shown == "inputs":
                rows(arrays[name], np.dtype(np.float32))
            else:
                check_finite(shown, arrays[name])
        if self.example_shape is not None:
            check_example_shape("inputs", arrays["inputs"].shape, self.example_shape)
        targets(arrays["targets"], batch, (self.n_scores,))
        if batch and self.input_range is not None:
            check_input_range(arrays["inputs"], self.input_range)
        elif batch and self.eq30_quantile is not None and not self.eq30_parts:
            check_constant(eq30(np.asarray(arrays["inputs"]), self.eq30_quantile)[1])
        for name, key in self.eq30_parts if batch else ():
            r = eq30(np.asarray(arrays[name], np.float64), self.eq30_quantile)[1]
            check_constant(r, f"input {key} of ", " (or one per input)")
        seeds(arrays["seeds"], 0, batch)

    def to_json(self) -> str:
        """The rules as JSON (what :meth:`from_json` reads)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Rules:
        """The rules written by :meth:`to_json`."""
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in json.loads(text).items() if k in names}  # newer keys: ignored
        data["finite"] = tuple(tuple(pair) for pair in data["finite"])
        for key in ("input_range", "example_shape"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        data["eq30_parts"] = tuple(tuple(pair) for pair in data.get("eq30_parts", ()))
        return cls(**data)


#: The graph face's text of the eq. 30 rule (kept from the flat layout's public names).
CONSTANT_EXAMPLE = (
    "Cannot choose `epsilon` by eq. 30 for examples of `inputs`: they are constant, so "
    "r = max(x) - mean(x) = 0. Pass `epsilon` explicitly"
)

#: The file beside an export's SavedModel (in ``assets.extra/``) that holds its :class:`Rules`.
RULES_FILE = "tfmollify_request_rules.json"


def eq30(values: Any, quantile: float) -> tuple[Any, Any]:
    """Eq. 30's scale per example: ``eps = r / q`` with ``r = max(x) - mean(x)``.

    The one rule, in two forms: NumPy for a NumPy array (the eager path of
    :meth:`tfmollify.Explainer.explain`, where six eager TensorFlow ops cost a millisecond a
    call) and TensorFlow for a tensor (inside the export's graph). Both compute in float64.

    Args:
        values: Examples ``[B, ...]``: a NumPy array, or a tensor.
        quantile: ``kernel.eq30_quantile(alpha)``.

    Returns:
        ``(eps [B], r [B])`` in float64, NumPy arrays for a NumPy array and tensors otherwise;
        ``r <= 0`` marks a constant example (no scale).

    Example:

    >>> import numpy as np
    >>> eps, r = eq30(np.array([[0.0, 1.0, 2.0, 5.0]]), 2.0)
    >>> r.tolist(), eps.tolist()
    ([3.0], [1.5])
    """
    if isinstance(values, np.ndarray) and values.ndim and values[:1].size:
        flat = values.reshape(values.shape[0], -1).astype(np.float64, copy=False)
        r = flat.max(axis=1) - flat.mean(axis=1)
        return r / float(quantile), r
    flat = tf.cast(tf.reshape(values, [tf.shape(values)[0], -1]), tf.float64)
    r = tf.reduce_max(flat, axis=1) - tf.reduce_mean(flat, axis=1)
    return r / tf.constant(quantile, tf.float64), r


def _eq30_checked(spec: Spec, values: np.ndarray, what: str = "", fix: str = "") -> np.ndarray:
    q = spec.kernel.eq30_quantile(spec.alpha)
    eps, r = eq30(np.asarray(values), q)
    check_constant(r, what, fix)
    return np.asarray(eps)  # (a tensor only for examples without elements)


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
    check_finite("inputs", arr)
    return arr.astype(compute, copy=False), arr.dtype, is_tensor


def is_integer(inputs: Any) -> bool:
    """Whether ``inputs`` (one array or tensor, not a structure) holds integers (token ids)."""
    if isinstance(inputs, dict | list | tuple) and not isinstance(inputs, np.ndarray):
        try:
            inputs = np.asarray(inputs)
        except Exception:
            return False
    dtype = getattr(inputs, "dtype", None)
    try:
        return dtype is not None and tf.as_dtype(dtype).is_integer
    except TypeError:
        return np.dtype(dtype).kind in "iu"


def check_token_inputs(spec: Spec, noise_at_layer: bool, attribute_at_layer: bool,
                       embeddings: list[str]) -> None:
    """Rule: token ids alone (a model whose only input is integer) are explained at a layer:
    the noise goes on a layer's output (or, for NoiseGrad, on the weights only) and the
    attribution is taken there, since ids take neither noise nor a gradient.

    Raises:
        ValueError: Naming the model's embedding layers, where to put ``explain_at``.
    """
    where = (f" Its embedding layers: {embeddings}; e.g. explain_at={embeddings[0]!r}."
             if embeddings else " Name the first layer with a floating-point output.")
    if spec.smoothing.input_noise and not noise_at_layer:
        raise ValueError(
            f"Argument `inputs` holds integers (token ids) and mode={spec.mode!r} adds noise "
            "to the inputs: ids take no noise. Put the noise on a layer's output with "
            "`explain_at=` (or `noise_at=`)." + where
        )
    if not attribute_at_layer:
        raise ValueError(
            "Argument `inputs` holds integers (token ids): there is no gradient with respect "
            "to them, so the attribution must be taken at a layer's output: pass "
            "`explain_at=` (or `attribute_at=`)." + where
        )


def _shown(value: Any) -> Any:
    """A received value as messages echo it: Python values as given, arrays and tensors as
    their lists (so a tensor, an array and a JSON list of the same numbers read the same)."""
    if isinstance(value, np.ndarray) or tf.is_tensor(value):
        try:
            return np.asarray(value).tolist()
        except Exception:  # a symbolic tensor, or an array of objects
            return value
    return value


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
            f"or a callable scores -> [n]. Received: targets={_shown(value)!r}"
        )
    if arr.ndim == 0:
        arr = np.full(batch, int(arr))
    check_count("targets", arr, batch)
    check_targets_range(arr, n_scores)
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


def constant_epsilon(spec: Spec) -> float | None:
    """The one scale every example gets, when the settings fix it: 0 without input noise
    (NoiseGrad), or the one float ``epsilon``; None when it depends on the example (eq. 30, or
    one ``epsilon`` per example or per input). The export's graph uses the same rule."""
    if not spec.smoothing.input_noise:
        return 0.0
    if spec.epsilon is not None and spec.epsilon.ndim == 0:
        return float(spec.epsilon)
    return None


def _given_epsilons(spec: Spec, batch: int, units: str = "") -> np.ndarray | None:
    """The scales ``[B]`` that need no look at the values: zeros for NoiseGrad, or the given
    ``epsilon`` (one float, or one per example); None when eq. 30 must choose them."""
    constant = constant_epsilon(spec)
    if constant is not None:
        return np.full(batch, constant)
    if spec.epsilon is None:
        return None
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
    check_input_range(x, spec.input_range)
    flat = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    return range_scale(flat, spec.input_range, spec.kernel.eq30_quantile(spec.alpha))


def range_scale(flat: Any, input_range: tuple[float, float], quantile: float) -> Any:
    """AdaptGrad's rule: ``t / q`` with ``t`` the distance of each value of ``flat`` (float64
    rows) to the nearer bound. NumPy arrays for a call, tensors inside the export's graph."""
    low, high = input_range
    minimum = tf.minimum if tf.is_tensor(flat) else np.minimum
    return minimum(flat - low, high - flat) / quantile


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
        _eq30_checked(spec, activations(lo, hi), f"the output of layer {layer!r} of ")
        for lo, hi in plan.spans(batch, block)
    ]
    return np.concatenate(parts)


def part_epsilons(spec: Spec, packing: Any) -> list[float | None]:
    """With several inputs, per float input (in order): the scale the settings fix (0 without
    input noise, the one float ``epsilon``, or the input's entry of a 1-D ``epsilon``, which
    holds one value per input, integer inputs included), or None when eq. 30 chooses it. The
    export's graph uses the same rule.

    Raises:
        ValueError: A 1-D ``epsilon`` of another length than the inputs.
    """
    k, given = len(packing.keys), spec.epsilon
    n_floats = packing.integer.count(False)
    if not spec.smoothing.input_noise:
        return [0.0] * n_floats
    if given is not None and given.ndim == 1 and given.shape[0] != k:
        raise ValueError(
            f"Argument `epsilon` has {given.shape[0]} values but the model has {k} inputs. "
            "With several inputs pass one float, or one per input (in the inputs' order)."
        )
    constant = constant_epsilon(spec)
    return [
        constant if constant is not None or given is None else float(given[i])
        for i, integer in enumerate(packing.integer) if not integer
    ]


def _packed_epsilons(spec: Spec, x: np.ndarray, packing: Any) -> np.ndarray:
    """One scale per example and float input ``[B, K]`` (integer inputs get no noise)."""
    floats = [i for i, integer in enumerate(packing.integer) if not integer]
    eps = np.zeros((x.shape[0], len(floats)))
    if not spec.smoothing.input_noise:  # NoiseGrad: no scale, whatever the inputs
        return eps
    fixed = part_epsilons(spec, packing)
    for col, (i, part) in enumerate(zip(floats, packing.split(x), strict=True)):
        eps[:, col] = fixed[col] if fixed[col] is not None else _eq30_checked(
            spec, part, f"input {packing.keys[i]!r} of ", " (or one per input)"
        )
    return eps


def seeds(value: Any, seed: int, batch: int, offset: int = 0) -> np.ndarray:
    """Per-example int64 seeds: ``value`` checked, or derived from ``seed`` and positions.

    A seed is any 64-bit integer: ints in ``[-2**63, 2**64)`` are taken modulo ``2**64`` (so
    ``-1`` and ``2**64 - 1`` are the same seed), which is how the derived seeds of
    :func:`tfmollify.core.sampling.example_seeds` (int64, often negative) round-trip.
    """
    if value is None:
        return sampling.example_seeds(seed, batch, offset)
    try:
        arr = np.asarray(value)
    except Exception:
        arr = np.asarray([], dtype=object)
    if arr.dtype.kind not in "iu":
        raise ValueError(
            f"Argument `seeds` must be {batch} integer seeds, one per example. "
            f"Received: seeds with dtype {arr.dtype} and shape {arr.shape}"
        )
    check_count("seeds", arr, batch)
    if arr.dtype == np.uint64:
        return arr.view(np.int64)
    return arr.astype(np.int64)


def check_keys(inputs: Any, model: Any) -> None:
    """Rule: a dict of inputs names the model's inputs, no more and no fewer (an extra key
    would be ignored silently).

    Raises:
        ValueError: For unknown or missing keys, naming the model's inputs.
    """
    structure = getattr(model, "input", None) if hasattr(model, "inputs") else None
    if not isinstance(inputs, dict) or not isinstance(structure, dict):
        return
    unknown = sorted(set(inputs) - set(structure), key=str)
    missing = sorted(set(structure) - set(inputs), key=str)
    if unknown or missing:
        said = [f"unknown key(s) {unknown}"] * bool(unknown) + [f"no {missing}"] * bool(missing)
        raise ValueError(
            f"Argument `inputs` has {' and '.join(said)}: the model's inputs are "
            f"{sorted(structure, key=str)}. Pass one array per input, named as the model's."
        )


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

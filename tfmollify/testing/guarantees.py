"""What tfmollify promises, checked on a user's own model: :func:`check_guarantees`.

``docs/guarantees.md`` lists the library's promises; the project's suite holds them on its own
small models. :func:`check_guarantees` holds the ones that depend on the model to it, for one
explainer and one batch of the user's inputs:

=========================  ==================================================================
check                      what
=========================  ==================================================================
reproducible               the same seed gives the same result (the same explainer called
                           again, and a new one with the same settings)
batch_size invariant       any ``batch_size`` (``explainer.replace(batch_size=...)``) gives the
                           same result up to float rounding
chunk invariant            the same when ``batch_size`` splits one example's samples into
                           several passes
example invariant          an example alone (with its seed) gets its result inside the batch
model untouched            the model's weights, layers (``built``, ``trainable``, dtype) and
                           public attributes are unchanged by every call, a refused one too
finite                     the attributions are finite, the standard errors finite and
                           non-negative (or NaN throughout: no standard error)
batch_size respected       no pass of the explainer's plan evaluates more than ``batch_size``
                           rows
=========================  ==================================================================

The model is only read: nothing here changes it (a broken explainer may, and is reported).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmollify.adapter import keras_compat
from tfmollify.testing import assertions, config

__all__ = ["GuaranteeReport", "assert_model_unchanged", "check_guarantees", "model_fingerprint"]

#: Relative agreement of results that differ only in float rounding (sums grouped differently).
RTOL = 2e-5


class GuaranteeReport(config.Report):
    """What :func:`check_guarantees` found: one :class:`~tfmollify.testing.config.Check` per
    guarantee (``report["reproducible"]``), ``passed``, ``failed`` and a readable ``str``."""


# -- the model's state -----------------------------------------------------------------------
def _simple(value: Any) -> bool:
    """A plain value (``None`` is not: Keras itself fills some in lazily, e.g. a SavedModel
    export sets every layer's ``predict_function = None``)."""
    return isinstance(value, str | int | float | bool) or (
        isinstance(value, tuple) and all(_simple(v) for v in value))


def _layer_state(layer: Any) -> tuple:
    public = tuple(sorted((k, repr(v)) for k, v in vars(layer).items()
                          if not k.startswith("_") and _simple(v)))
    policy = getattr(getattr(layer, "dtype_policy", None), "name", None)
    return (type(layer).__name__, getattr(layer, "name", None), getattr(layer, "built", None),
            getattr(layer, "trainable", None), policy, public)


def model_fingerprint(model: Any) -> dict[str, Any]:
    """What must not change when a model is explained: every weight (its bytes, shape, dtype
    and trainability), and per layer its type, name, ``built``, ``trainable``, dtype policy and
    public attributes of plain types (str, int, float, bool, tuples of them).

    Args:
        model: A Keras model (or any callable: then only its public attributes).

    Returns:
        A dict of plain values; two fingerprints compare with ``==``.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> before = model_fingerprint(model)
    >>> model.layers[0].trainable = False
    >>> model_fingerprint(model) == before
    False
    """
    weights = []
    for w in getattr(model, "weights", []):
        value = np.asarray(keras.ops.convert_to_numpy(w))
        weights.append((getattr(w, "path", getattr(w, "name", "")), value.dtype.str,
                        value.shape, bool(getattr(w, "trainable", False)), value.tobytes()))
    layers = [model]
    if isinstance(model, keras.layers.Layer):
        layers += keras_compat.sublayers(model, recursive=True)
    return {"weights": weights, "layers": [_layer_state(layer) for layer in layers]}


_LAYER_FIELDS = ("type", "name", "built", "trainable", "dtype policy")


def _changes(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The first differences between two fingerprints, in words."""
    out = []
    if len(before["weights"]) != len(after["weights"]):
        out.append(f"{len(before['weights'])} weights became {len(after['weights'])}")
    for b, a in zip(before["weights"], after["weights"], strict=False):
        if b[:3] != a[:3] or b[4] != a[4]:
            out.append(f"the values of weight {b[0]!r} changed")
        elif b[3] != a[3]:
            out.append(f"weight {b[0]!r}: trainable {b[3]} -> {a[3]}")
    if len(before["layers"]) != len(after["layers"]):
        out.append(f"{len(before['layers'])} layers became {len(after['layers'])}")
    for b, a in zip(before["layers"], after["layers"], strict=False):
        fields = [f"{f} {x!r} -> {y!r}" for f, x, y in zip(_LAYER_FIELDS, b, a, strict=False)
                  if x != y]
        if b[-1] != a[-1]:
            fields.append("public attributes " + ", ".join(
                sorted({k for k, _ in set(b[-1]) ^ set(a[-1])})))
        if fields:
            out.append(f"layer {b[1]!r}: {'; '.join(fields)}")
    return "; ".join(out[:3]) + (f" (and {len(out) - 3} more)" if len(out) > 3 else "")


def assert_model_unchanged(model: Any, before: dict[str, Any], err_msg: str = "") -> None:
    """Raises an ``AssertionError`` naming what changed in ``model`` since ``before``.

    Args:
        model: The model.
        before: ``model_fingerprint(model)`` taken earlier.
        err_msg: A line added to the failure message.

    Raises:
        AssertionError: If the weights, layers or public attributes differ from ``before``.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="d")], name="m")
    >>> before = model_fingerprint(model)
    >>> assert_model_unchanged(model, before)
    >>> _ = model.layers[0].bias.assign([1.0, 0.0])
    >>> try:
    ...     assert_model_unchanged(model, before)
    ... except AssertionError as e:
    ...     print(str(e).splitlines()[-1])
    the values of weight 'm/d/bias' changed
    """
    after = model_fingerprint(model)
    if after != before:
        lines = ["Model changed", *([err_msg] if err_msg else []), "", _changes(before, after)]
        raise AssertionError("\n".join(lines))


class _Watch:
    """Compares the model's fingerprint after each step with the one before the first."""

    def __init__(self, model: Any) -> None:
        self.model, self.before = model, model_fingerprint(model)
        self.changed: list[str] = []
        self.steps: list[str] = []

    def step(self, name: str) -> None:
        self.steps.append(name)
        now = model_fingerprint(self.model)
        if now != self.before and not self.changed:
            self.changed.append(f"after {name}: {_changes(self.before, now)}")


# -- comparing results -----------------------------------------------------------------------
def _leaves(result: Any) -> list[np.ndarray]:
    """The arrays of a result (attributions, or the pair with standard errors)."""
    return [np.asarray(v.numpy() if hasattr(v, "numpy") else v, np.float64)
            for v in tf.nest.flatten(result)]


def _deviation(got: Any, want: Any) -> float:
    """``max |got - want|`` relative to ``max(1, max |want|)``; inf for other shapes, or NaN in
    other places."""
    g, w = _leaves(got), _leaves(want)
    if len(g) != len(w) or any(a.shape != b.shape for a, b in zip(g, w, strict=True)):
        return float("inf")
    worst = 0.0
    for a, b in zip(g, w, strict=True):
        if not np.array_equal(np.isnan(a), np.isnan(b)):
            return float("inf")
        finite = np.abs(b[np.isfinite(b)])
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
        with np.errstate(invalid="ignore"):
            diff = np.abs(np.where(np.isnan(a), 0.0, a - b))
        worst = max(worst, float(np.max(diff, initial=0.0)) / scale)
    return worst


def _agree(name: str, runs: dict[str, Any], want: Any, rtol: float, what: str) -> config.Check:
    devs = {label: _deviation(got, want) for label, got in runs.items()}
    worst = max(devs.values(), default=0.0)
    bad = [label for label, d in devs.items() if not d <= rtol]
    detail = f"{what}: " + ", ".join(f"{k} {v:.3g}" for k, v in devs.items())
    if bad:
        detail += f"; differ: {', '.join(bad)}"
    return config.Check(name, not bad, worst, rtol, detail)


# -- one call and its variants ---------------------------------------------------------------
def _batch(x: Any) -> int:
    return int(tf.nest.flatten(x)[0].shape[0])


def _take(value: Any, i: int, batch: int) -> Any:
    """Example ``i`` of inputs or per-example targets (kept as they are when not per
    example: an int, a callable, None)."""
    if isinstance(value, dict | list | tuple) and not _per_example(value, batch):
        return tf.nest.map_structure(lambda v: v[i : i + 1], value)
    if value is None or callable(value) or np.ndim(value) == 0:
        return value
    return value[i : i + 1]


def _per_example(value: Any, batch: int) -> bool:
    """Whether a list/tuple is one value per example (targets) rather than several inputs."""
    return isinstance(value, list | tuple) and len(value) == batch and all(
        np.ndim(v) == 0 for v in value)


def _default_batch_sizes(e: Any, batch: int) -> tuple[Any, ...]:
    """Two passes per example (a padded last chunk), two examples per pass, and one pass."""
    spec = e.spec
    per = spec.evaluations_per_sample
    least = per * (2 if spec.sampler == "antithetic" and spec.smoothing.input_noise else 1)
    n_in = spec.smoothing.input_draws(spec.num_samples)
    chunked = max(least, per * (n_in // 2 + 1))
    blocked = max(least, per * n_in * 2 + per)
    return tuple(dict.fromkeys([chunked, blocked, None]))


def _respected(explainers: dict[Any, Any], batch: int) -> config.Check:
    rows = {bs: e.seam.plan(batch).rows_per_pass for bs, e in explainers.items()
            if isinstance(bs, int)}
    bad = {bs: r for bs, r in rows.items() if r > bs}
    value = ", ".join(f"{r} <= {bs}" if bs not in bad else f"{r} > {bs}"
                      for bs, r in rows.items())
    return config.Check("batch_size respected", not bad, value or "none set", "rows <= batch_size",
                        "rows per pass of the plan the explainer runs (explainer.seam.plan), "
                        "per batch_size")


def _finite(result: Any, with_stderr: bool, explainer: Any) -> config.Check:
    leaves = tf.nest.flatten(result)
    values = _leaves(leaves[: len(leaves) // 2] if with_stderr else leaves)
    bad_values = sum(int(np.sum(~np.isfinite(v))) for v in values)
    bad_errors = 0
    if with_stderr:
        for s in _leaves(leaves[len(leaves) // 2 :]):
            if not np.all(np.isnan(s)):  # NaN throughout: no standard error (one unit)
                bad_errors += int(np.sum(~(np.isfinite(s) & (s >= 0))))
    dropped = np.asarray(explainer.last_nonfinite_count if explainer.last_nonfinite_count
                         is not None else 0)
    return config.Check("finite", bad_values + bad_errors == 0, bad_values + bad_errors, 0,
                        f"{bad_values} non-finite attributions, {bad_errors} bad standard "
                        f"errors; {int(dropped.sum())} non-finite samples left out")


def _refused_call(e: Any, x: Any, targets: Any, batch: int) -> str:
    """A call that must be refused (one seed too many): what happened."""
    try:
        e.explain(x, targets, seeds=np.arange(batch + 1))
    except (ValueError, TypeError) as exc:
        return f"refused ({type(exc).__name__})"
    return "NOT refused"


def check_guarantees(
    explainer: Any,
    x: Any,
    targets: Any = None,
    *,
    batch_sizes: Sequence[int | None] | None = None,
    rtol: float = RTOL,
) -> GuaranteeReport:
    """Checks tfmollify's guarantees on an explainer of the user's model; raises if one breaks.

    See the module's table for the checks. The explainer's own settings are used; one without
    a ``seed`` gets one drawn here (the guarantees of reproducibility are about a fixed seed;
    the report, the failure message and the pytest plugin show it). The results are compared
    up to ``rtol`` relative to the largest magnitude (float rounding: sums grouped
    differently), NaN standard errors in the same places.

    It runs about eight calls of ``explainer.explain`` (each new setting compiles once), so
    keep ``x`` small (a few examples) and the sample counts modest.

    Args:
        explainer: A :class:`tfmollify.Explainer` (or a subclass) of the user's model.
        x: A few inputs, as ``explainer.explain`` takes them.
        targets: As for ``explainer.explain``.
        batch_sizes: The ``batch_size`` values to compare (ints, ``None`` for one pass).
            Default: one that splits each example's samples into two passes, one that puts
            two examples in a pass, and None.
        rtol: Relative agreement of results that differ only in float rounding.

    Returns:
        The :class:`GuaranteeReport` (every check passed).

    Raises:
        AssertionError: Naming every broken guarantee, with the whole report (also as the
            exception's ``report`` attribute).
        TypeError: If ``batch_sizes`` is not a sequence.
        ValueError: For an empty batch or a bad ``batch_sizes``/``rtol``; what
            ``explainer.explain`` raises for ``x`` and ``targets`` (an ``AssertionError``
            instead when that call changed the model).

    Example:

    >>> import keras, numpy as np
    >>> import tfmollify as tfm
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"),
    ...                           keras.layers.Dense(2)])
    >>> x = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    >>> e = tfm.SmoothGrad(model, num_samples=4, seed=0)
    >>> report = check_guarantees(e, x, [0, 1], batch_sizes=[3])
    >>> report.passed, report["model untouched"].passed
    (True, True)
    """
    if not (isinstance(rtol, int | float) and rtol >= 0):
        raise ValueError(f"Argument `rtol` must be a float >= 0. Received: rtol={rtol!r}")
    batch = _batch(x)
    if batch < 1:
        raise ValueError(
            f"Argument `x` must hold at least one example. Received: x with {batch} examples")
    if isinstance(batch_sizes, int | str):
        raise TypeError("Argument `batch_sizes` must be a list of batch sizes (ints or None). "
                        f"Received: batch_sizes={batch_sizes!r}; e.g. batch_sizes=[4, None]")
    seeded = explainer if explainer.seed is not None else explainer.replace(
        seed=secrets.randbits(31))
    name = assertions.describe(seeded)
    config.record_seed(f"check_guarantees {name}", seeded.seed)
    sizes = _default_batch_sizes(seeded, batch) if batch_sizes is None else tuple(batch_sizes)
    explainers = {bs: seeded.replace(batch_size=bs) for bs in sizes}  # checks them first
    watch = _Watch(seeded.model)
    try:
        checks = _run(seeded, x, targets, explainers, rtol, watch)
    except Exception as exc:
        watch.step(f"a call that raised {type(exc).__name__}")
        if watch.changed:
            raise AssertionError(
                f"check_guarantees: model untouched is broken: {watch.changed[0]} ({name}); "
                f"the call raised {type(exc).__name__}: {exc}"
            ) from exc
        raise
    report = GuaranteeReport(f"guarantees of {name} on {batch} example(s)", tuple(checks))
    report.raise_if_failed("check_guarantees")
    return report


def _run(e: Any, x: Any, targets: Any, explainers: dict[Any, Any], rtol: float,
         watch: _Watch) -> list[config.Check]:
    """Every call of :func:`check_guarantees` and the checks of their results."""
    batch = _batch(x)
    with_se = e.spec.reduce is None
    call: Callable[..., Any] = lambda ex, **kw: ex.explain(  # noqa: E731
        x, targets, return_stderr=with_se, **kw)
    base = call(e)
    watch.step("the first call")
    finite = _finite(base, with_se, e)
    again, fresh = call(e), call(e.replace())
    watch.step("the same call again")
    checks = [finite, _agree("reproducible", {"again": again, "new explainer": fresh}, base,
                             rtol, "deviation from the first call")]
    n_rows = e.spec.smoothing.input_draws(e.num_samples) * e.spec.evaluations_per_sample
    runs = {bs: call(ex) for bs, ex in explainers.items()}
    watch.step("the calls with other batch sizes")
    chunked = {f"batch_size={bs}": r for bs, r in runs.items()
               if isinstance(bs, int) and bs < n_rows}
    blocked = {f"batch_size={bs}": r for bs, r in runs.items() if f"batch_size={bs}" not in chunked}
    if blocked:
        checks.append(_agree("batch_size invariant", blocked, base, rtol,
                             "deviation from the explainer's own batch_size"))
    if chunked:
        checks.append(_agree("chunk invariant", chunked, base, rtol,
                             f"deviation with an example's {n_rows} rows split into passes"))
    seeds = np.random.default_rng(e.seed).integers(0, 2**62, size=batch)
    whole = call(e, seeds=seeds)
    i = batch - 1
    alone = e.explain(_take(x, i, batch), _take(targets, i, batch), return_stderr=with_se,
                      seeds=seeds[i:])
    watch.step("the calls with explicit seeds")
    part = tf.nest.map_structure(lambda v: np.asarray(v)[i : i + 1], whole)
    checks.append(_agree("example invariant", {f"example {i} alone": alone}, part, rtol,
                         "deviation from the same example (same seed) inside the batch"
                         + (" (one example: pass two or more to test this)" if batch == 1
                            else "")))
    refused = _refused_call(e, x, targets, batch)
    watch.step("a call with one seed too many")
    checks.append(config.Check(
        "model untouched", not watch.changed, "changed" if watch.changed else "unchanged",
        "unchanged", "; ".join(watch.changed) or
        f"weights, layers and public attributes compared after {len(watch.steps)} steps "
        f"(a bad call was {refused})"))
    checks.append(_respected({**explainers, e.batch_size: e}, batch))
    return checks

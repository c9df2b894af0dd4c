"""Honest Monte Carlo assertions: estimates held to their own standard errors.

A Monte Carlo estimate is never exactly its expectation; an assertion with a fixed tolerance is
either too loose (it cannot fail) or flaky. :func:`assert_mc_close` instead computes each
element's z-score ``(estimate - expected) / stderr`` and fails when one exceeds the two-sided
Bonferroni threshold ``z* = Phi^-1(1 - alpha / (2 n))`` over the ``n`` elements compared: with a
correct estimator and honest standard errors it fails with probability at most ``alpha``
(family-wise), whatever ``n``. :func:`assert_mollified` runs an explainer and compares its
estimate with the exact mollified gradient.

The failure messages follow ``numpy.testing``: a title, the mismatched count, the worst
elements (index, estimate, expected, standard error, z-score), the threshold, and the seed to
rerun with.
"""

from __future__ import annotations

import secrets
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from tfmollify.core import kernels as kernels_lib
from tfmollify.testing import config

__all__ = ["assert_mc_close", "assert_mollified", "bonferroni_threshold", "describe"]

#: How many of the worst elements a failure message lists.
WORST_SHOWN = 5


def bonferroni_threshold(n: int, alpha: float = 1e-4) -> float:
    """The two-sided z threshold ``Phi^-1(1 - alpha / (2 n))`` of ``n`` tests at family-wise
    rate ``alpha``.

    Args:
        n: The number of elements compared (at least 1).
        alpha: The family-wise false-failure rate, in (0, 1).

    Returns:
        The threshold ``z*``, a positive float.

    Raises:
        ValueError: If ``alpha`` is outside (0, 1) or ``n < 1``.

    Example:

    >>> round(bonferroni_threshold(1, alpha=0.05), 3)
    1.96
    >>> round(bonferroni_threshold(1000, alpha=1e-4), 2)
    5.33
    """
    alpha = _check_alpha(alpha)
    if int(n) < 1:
        raise ValueError(f"Argument `n` must be an int >= 1. Received: n={n!r}")
    # the lower tail, by symmetry: 1 - p loses the digits of a small p
    return -statistics.NormalDist().inv_cdf(alpha / (2.0 * int(n)))


def _check_alpha(alpha: Any) -> float:
    return kernels_lib.check_alpha(
        alpha, meaning="It is the family-wise rate of false failures (e.g. 1e-4)."
    )


def _check_atol(atol: Any) -> float:
    if isinstance(atol, bool) or not isinstance(atol, int | float | np.floating) or not atol >= 0:
        raise ValueError(
            f"Argument `atol` must be a float >= 0. Received: atol={atol!r}. It is an "
            "absolute allowance on top of the Monte Carlo error (0 for none)."
        )
    return float(atol)


def _as_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a float64 array (tensors, lists and scalars included)."""
    if hasattr(value, "numpy") and callable(value.numpy):
        value = value.numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"Argument `{name}` must be an array of numbers (or a dict/list of arrays). "
            f"Received: {name} of type {type(value).__name__} ({exc})"
        ) from None
    return arr


def _is_structure(value: Any) -> bool:
    """A dict, or a list/tuple of arrays or tensors (the results of a model with several
    inputs); a list of plain numbers is one array."""
    if isinstance(value, dict):
        return True
    return isinstance(value, list | tuple) and len(value) > 0 and all(
        hasattr(v, "shape") and getattr(v, "ndim", 1) > 0 for v in value
    )


def _parts(name: str, value: Any, keys: list[Any] | None) -> list[tuple[Any, Any]]:
    """``[(key, leaf)]`` of a structure (a dict's keys, a list's positions), or ``[(None, value)]``
    for one array; ``keys`` (the estimate's) are the keys it must have."""
    if not _is_structure(value):
        if keys is None or keys == [None]:
            return [(None, value)]
        return [(k, value) for k in keys]  # a scalar or array broadcast over every part
    items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
    if keys is not None and [k for k, _ in items] != keys:
        raise AssertionError(
            f"Not equal within Monte Carlo error: `{name}` has the parts "
            f"{[k for k, _ in items]}, the estimate {keys}"
        )
    return items


def _flatten(
    estimate: Any, stderr: Any, expected: Any, err_msg: str = ""
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The three arguments broadcast together and flattened: ``(index labels, est, err, exp)``."""
    parts = _parts("estimate", estimate, None)
    keys = [k for k, _ in parts]
    columns: list[list[np.ndarray]] = [[], [], []]
    labels: list[str] = []
    for (key, e), (_, s), (_, x) in zip(parts, _parts("stderr", stderr, keys),
                                        _parts("expected", expected, keys), strict=True):
        arrays = [_as_array(n, v) for n, v in (("estimate", e), ("stderr", s), ("expected", x))]
        try:
            arrays = np.broadcast_arrays(*arrays)
        except ValueError:
            shapes = ", ".join(str(a.shape) for a in arrays)
            where = "" if key is None else f" (part {key!r})"
            title = "Not equal within Monte Carlo error" + (f"\n{err_msg}" if err_msg else "")
            raise AssertionError(
                f"{title}\n\n(shapes {shapes} mismatch){where}: estimate, stderr, expected"
            ) from None
        prefix = "" if key is None else f"[{key!r}]"
        labels += [prefix + _index(i) for i in np.ndindex(arrays[0].shape)]
        for column, a in zip(columns, arrays, strict=True):
            column.append(a.ravel())
    flat = [np.concatenate(c) if c else np.zeros(0) for c in columns]
    return labels, flat[0], flat[1], flat[2]


def _index(i: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(v) for v in i) + ("," if len(i) == 1 else "") + ")"


def _z_scores(est: np.ndarray, err: np.ndarray, exp: np.ndarray,
              atol: float) -> np.ndarray:
    """``|est - exp|`` less ``atol`` over ``stderr``: 0 where they agree (NaN with NaN and the
    same infinity included), inf where they differ with no error to explain it (a zero
    standard error, or NaN against a number), NaN where they differ and the standard error is
    NaN (nothing to hold the estimate to)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        excess = np.maximum(np.abs(est - exp) - atol, 0.0)
        z = excess / err
    z = np.where(excess == 0, 0.0, z)
    z = np.where(np.isnan(est) ^ np.isnan(exp), np.inf, z)
    agree = (np.isnan(est) & np.isnan(exp)) | (np.isinf(est) & (est == exp))
    return np.where(agree, 0.0, z)


def _check_stderr(err: np.ndarray) -> None:
    bad = err < 0
    if np.any(bad):
        raise ValueError(
            "Argument `stderr` must be non-negative (a standard error). Received: "
            f"stderr with {int(bad.sum())} negative element(s), e.g. {err[bad][:3].tolist()}"
        )


def _message(labels: list[str], est: np.ndarray, err: np.ndarray, exp: np.ndarray,
             z: np.ndarray, threshold: float, alpha: float, err_msg: str, seed: Any,
             atol: float) -> str:
    n = z.size
    bad = ~(np.abs(z) <= threshold)  # NaN counts as a mismatch
    k = int(bad.sum())
    order = np.argsort(np.where(np.isnan(z[bad]), np.inf, -np.abs(z[bad])), kind="stable")
    worst = np.flatnonzero(bad)[order][:WORST_SHOWN]
    lines = ["Not equal within Monte Carlo error"]
    if err_msg:
        lines.append(err_msg)
    lines += ["", f"Mismatched elements: {k} / {n} ({100.0 * k / n:.3g}%)"]
    known = np.abs(z[bad & ~np.isnan(z)])
    if known.size:
        lines.append(f"Max |z| among violations: {known.max():.4g}")
    lines.append(f"Worst elements (|z| > z* = {threshold:.4g}):")
    lines.append(f"  {'index':>12} {'estimate':>14} {'expected':>14} {'stderr':>12} {'z':>10}")
    for i in worst:
        zi = (est[i] - exp[i]) / err[i] if err[i] > 0 else z[i]
        note = "  (stderr is NaN)" if np.isnan(err[i]) else (
            "  (zero stderr: must be equal)" if err[i] == 0 else "")
        lines.append(f"  {labels[i]:>12} {est[i]:>14.7g} {exp[i]:>14.7g} {err[i]:>12.4g} "
                     f"{zi:>10.4g}{note}")
    rule = (f"Threshold: |estimate - expected| / stderr <= z* = {threshold:.4g} (two-sided, "
            f"Bonferroni over n = {n} elements, family-wise alpha = {alpha:g})")
    lines += ["", rule + (f", after an absolute allowance atol = {atol:g}" if atol else "")]
    if seed is not None:
        lines.append(f"Seed: {seed} (rerun with it to reproduce)")
    return "\n".join(lines)


def assert_mc_close(
    estimate: Any,
    stderr: Any,
    expected: Any,
    *,
    alpha: float = 1e-4,
    err_msg: str = "",
    seed: Any = None,
    atol: float = 0.0,
) -> None:
    """Raises an ``AssertionError`` if a Monte Carlo estimate is off by more than its error.

    Each element's z-score ``z = (estimate - expected) / stderr`` is held to the two-sided
    Bonferroni threshold ``z* = Phi^-1(1 - alpha / (2 n))`` over the ``n`` elements compared,
    so that a correct estimate with honest standard errors fails with probability at most
    ``alpha`` in all (e.g. ``z* = 4.42`` for 12 elements at ``alpha = 1e-4``). The three
    arguments broadcast like ``numpy.testing.assert_allclose``'s.

    Where the standard error is 0 the estimate must equal the expected value exactly (up to
    ``atol``); NaN equals NaN at the same place; a NaN standard error fails (the estimate has
    no error to hold it to: e.g. an explainer with one unit of samples).

    Args:
        estimate: The estimate: an array, a tensor, or a dict/list of them (several inputs).
        stderr: Its standard errors, broadcastable to ``estimate`` (same structure).
        expected: The exact value, broadcastable to ``estimate`` (same structure, or one
            array for every part).
        alpha: The family-wise rate of false failures, in (0, 1).
        err_msg: A line added to the failure message.
        seed: The seed that produced the estimate: shown in the failure message and
            recorded for the pytest plugin (``tfmollify_pytest``) to print.
        atol: An absolute allowance added to every element's Monte Carlo error (float
            rounding where the estimator is exact and its standard error 0).

    Raises:
        AssertionError: If an element's ``|z|`` exceeds the threshold, or the shapes do not
            broadcast.
        ValueError: If ``alpha`` is outside (0, 1), ``atol`` is negative or a standard error
            is negative.
        TypeError: If an argument is not numeric.

    Example:

    >>> import numpy as np
    >>> assert_mc_close([1.02, 1.98], [0.01, 0.01], [1.0, 2.0])
    >>> try:
    ...     assert_mc_close([1.02, 2.5], [0.01, 0.01], [1.0, 2.0], seed=7)
    ... except AssertionError as e:
    ...     print(str(e).splitlines()[2])
    Mismatched elements: 1 / 2 (50%)
    """
    alpha = _check_alpha(alpha)
    atol = _check_atol(atol)
    config.record_seed("assert_mc_close", seed)
    _compare(estimate, stderr, expected, alpha, err_msg, seed, atol)


def _compare(estimate: Any, stderr: Any, expected: Any, alpha: float, err_msg: str, seed: Any,
             atol: float) -> None:
    """The test of :func:`assert_mc_close`, its arguments checked."""
    labels, est, err, exp = _flatten(estimate, stderr, expected, err_msg)
    _check_stderr(err)
    if est.size == 0:
        return
    z = _z_scores(est, err, exp, atol)
    threshold = bonferroni_threshold(est.size, alpha)
    if np.all(np.abs(z) <= threshold):
        return
    raise AssertionError(_message(labels, est, err, exp, z, threshold, alpha, err_msg, seed, atol))


def describe(explainer: Any) -> str:
    """One line naming an explainer's settings that decide its Monte Carlo error.

    Example:

    >>> import keras
    >>> import tfmollify as tfm
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> describe(tfm.SmoothGrad(model, num_samples=8, epsilon=0.5, seed=3))
    "SmoothGrad(mode='sg', kernel='gaussian', epsilon=0.5, num_samples=8, sampler='iid', seed=3)"
    """
    mode = explainer.spec.smoothing
    kernel = kernels_lib.get(explainer.kernel).name
    eps = explainer.epsilon
    eps_text = (f"alpha={explainer.alpha:g} (eq. 30)" if eps is None
                else f"epsilon={np.asarray(eps).tolist()!r}")
    parts = [f"mode={mode.name!r}", f"kernel={kernel!r}"]
    if mode.input_noise:
        parts += [eps_text, f"num_samples={explainer.num_samples}"]
    if mode.weight_noise:
        parts += [f"weight_epsilon={explainer.weight_epsilon:g}",
                  f"num_weight_samples={explainer.num_weight_samples}"]
    parts += [f"sampler={explainer.sampler!r}", f"seed={explainer.seed}"]
    return f"{type(explainer).__name__}({', '.join(parts)})"


def _scaled_explainer(explainer: Any) -> Any:
    """The explainer with its outer sample count times ``--tfm-samples`` (whole antithetic
    pairs, whole Sobol sets), and a fixed seed (drawn here when it has none)."""
    changes: dict[str, Any] = {}
    if explainer.seed is None:
        changes["seed"] = secrets.randbits(31)
    if config.samples_factor() != 1.0:
        name = explainer.spec.smoothing.outer_count
        n = config.scaled(getattr(explainer, name))
        step = 2 if explainer.sampler == "antithetic" else (
            explainer.replicates if explainer.sampler == "sobol" else 1)
        changes[name] = -(-n // step) * step
    return explainer.replace(**changes) if changes else explainer


def assert_mollified(
    explainer: Any,
    inputs: Any,
    exact: Any | Callable[[Any], Any],
    *,
    targets: Any = None,
    alpha: float = 1e-4,
    err_msg: str = "",
    atol: float = 0.0,
) -> None:
    """Raises an ``AssertionError`` if an explainer's estimate misses the exact mollified
    gradient by more than its Monte Carlo error.

    Runs ``explainer.explain(inputs, targets, return_stderr=True)`` and holds the result to
    ``exact`` with :func:`assert_mc_close`. The explainer's outer sample count (``num_samples``
    for SmoothGrad, ``num_weight_samples`` for NoiseGrad/FusionGrad) is scaled by the pytest
    plugin's ``--tfm-samples`` factor; an explainer without a seed gets one drawn here, so that
    every run can be repeated (the failure message and the plugin show it).

    The reference package of the repository (``reference/``, NumPy/SciPy only) has ready-made
    exact answers: ``reference.sg_sine_grad(x, eps, kernel)`` (SmoothGrad of
    ``sum(sin(x))``), ``reference.ng_sine_grad`` and ``reference.fg_sine_grad`` (one-weight
    ``sin(w x)``), ``reference.example_fprime_conv`` (the paper's eq. 43) and
    ``reference.linear_oracles`` (linear models).

    Args:
        explainer: A :class:`tfmollify.Explainer` (``reduce=None``: standard errors needed).
        inputs: What ``explainer.explain`` takes.
        exact: The mollified gradient at ``inputs``: an array (or the inputs' structure of
            them), or a callable ``exact(inputs)`` returning one.
        targets: As for ``explainer.explain``.
        alpha: The family-wise rate of false failures, in (0, 1).
        err_msg: A line added to the failure message.
        atol: An absolute allowance on top of the Monte Carlo error (as for
            :func:`assert_mc_close`).

    Raises:
        AssertionError: If the estimate is off by more than its error (the message names the
            explainer's mode, kernel, epsilon and seed).
        ValueError: For a bad ``alpha``, or what ``explainer.explain`` raises.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> import tfmollify as tfm
    >>> import reference  # the repository's NumPy reference (not part of the package)
    >>> f = lambda v: tf.reduce_sum(tf.sin(v), axis=1, keepdims=True)
    >>> x = np.linspace(-2.0, 2.0, 6).reshape(2, 3)
    >>> e = tfm.SmoothGrad(f, kernel="gaussian", epsilon=0.5, num_samples=256, seed=0)
    >>> assert_mollified(e, x, lambda v: reference.sg_sine_grad(v, 0.5, "gaussian"))
    """
    alpha = _check_alpha(alpha)
    atol = _check_atol(atol)
    run = _scaled_explainer(explainer)
    name = describe(run)
    config.record_seed(name, run.seed)
    estimate, stderr = run.explain(inputs, targets, return_stderr=True)
    want = exact(inputs) if callable(exact) else exact
    note = f"{name}, {run.spec.samples_per_example} samples per example"
    _compare(estimate, stderr, want, alpha, f"{note}\n{err_msg}" if err_msg else note, run.seed,
             atol)

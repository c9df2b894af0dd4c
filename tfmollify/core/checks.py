"""Request rules with two faces: one function per rule, for known values and inside a graph.

As in TensorFlow Probability's ``_parameter_control_dependencies``, each rule is written once:
given a value that is known now (a NumPy array, Python numbers, an eager or constant tensor) it
raises a ``ValueError`` naming the argument and the offending values; given a symbolic tensor
(inside the export's graph) it returns the ``tf.debugging`` assertions to run, whose message is
the same text without the values. :mod:`tfmollify.adapter.request` applies them to a call's
arguments, the export's graph to a served request.

Example:

>>> import numpy as np
>>> from tfmollify.core import checks
>>> checks.check_targets_range(np.array([0, 2]), 3)
[]
>>> checks.check_targets_range(np.array([0, 3]), 3)
Traceback (most recent call last):
...
ValueError: Argument `targets` must be in [0, 3) (the model has 3 outputs). Received: targets=[0, 3]
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = [
    "check_constant", "check_count", "check_example_shape", "check_finite", "check_input_range",
    "check_output_dir", "check_targets_range",
]


def _known(value: Any) -> np.ndarray | None:
    """``value`` as an array when it is known now (NumPy, Python, an eager or constant tensor);
    None for a symbolic tensor (inside a graph being traced)."""
    if isinstance(value, np.ndarray | np.generic | int | float):  # no tensor: asked first
        return np.asarray(value)
    if tf.is_tensor(value):
        known = tf.get_static_value(value)
        return None if known is None else np.asarray(known)
    return np.asarray(value)


def _graph(message: str) -> str:
    """A rule's text for a graph assertion (TensorFlow adds its own punctuation after it)."""
    return message.rstrip(".")


def _first(mask: np.ndarray) -> list[int]:
    return np.flatnonzero(mask)[:10].tolist()


def check_finite(name: str, values: Any) -> list:
    """Rule: every value of input ``name`` (``[B, ...]``) is finite.

    Raises:
        ValueError: Known values with NaN or Inf (naming the examples).
    """
    rule = f"Argument `{name}` contains NaN or Inf values"
    why = "Attributions of non-finite inputs are undefined."
    known = _known(values)
    if known is None:
        return [tf.debugging.assert_all_finite(values, message=_graph(f"{rule}. {why}"))]
    finite = np.isfinite(known).reshape(known.shape[0], -1).all(axis=1) if known.size else []
    if not np.all(finite):
        raise ValueError(f"{rule} (examples {_first(~np.asarray(finite))}). {why}")
    return []


def check_count(name: str, values: Any, batch: Any) -> list:
    """Rule: ``targets`` or ``seeds`` hold one entry per example (``batch``).

    Raises:
        ValueError: Known values of another length.
    """
    known, n = _known(values), _known(batch)
    if name == "targets":
        rule = "Argument `targets` must hold one class index per example"
        got = "" if known is None else f"Received: targets with shape {known.shape}"
    else:
        rule = "Argument `seeds` must be {} integer seeds, one per example"
        got = "" if known is None else (
            f"Received: seeds with dtype {known.dtype} and shape {known.shape}")
    if known is None or n is None:
        message = rule.format("B") if name == "seeds" else f"{rule} (B)"
        return [tf.debugging.assert_equal(tf.shape(values)[0], batch, message=message)]
    if known.ndim != 1 or known.shape[0] != int(n):
        head = rule.format(int(n)) if name == "seeds" else f"{rule} ({int(n)})"
        raise ValueError(f"{head}. {got}")
    return []


def check_targets_range(targets: Any, n_scores: int) -> list:
    """Rule: class indices lie in ``[0, n_scores)``.

    Raises:
        ValueError: Known targets out of range (echoing them).
    """
    rule = (f"Argument `targets` must be in [0, {n_scores}) (the model has {n_scores} "
            "outputs).")
    known = _known(targets)
    if known is None:
        return [tf.debugging.assert_non_negative(targets, message=_graph(rule)),
                tf.debugging.assert_less(targets, tf.cast(n_scores, targets.dtype),
                                         message=_graph(rule))]
    if known.size and (known.min() < 0 or known.max() >= n_scores):
        raise ValueError(f"{rule} Received: targets={known.tolist()[:20]}")
    return []


def check_input_range(values: Any, input_range: tuple[float, float]) -> list:
    """Rule: with ``input_range=(low, high)`` (AdaptGrad) every input value lies inside it.

    Raises:
        ValueError: Known values outside (naming the examples, the minimum and the maximum).
    """
    low, high = input_range
    rule = f"Argument `inputs`: examples {{}}have values outside input_range=({low:g}, {high:g})"
    fix = ("Pass the range the inputs live in (e.g. the model's preprocessing range), or scale "
           "the inputs into it.")
    known = _known(values)
    if known is None:
        flat = tf.cast(values, tf.float64)
        message = _graph(f"{rule.format('')}. {fix}")
        return [tf.debugging.assert_greater_equal(flat, tf.constant(low, tf.float64),
                                                  message=message),
                tf.debugging.assert_less_equal(flat, tf.constant(high, tf.float64),
                                               message=message)]
    if not known.size:
        return []
    flat = np.asarray(known, np.float64).reshape(known.shape[0], -1)
    outside = (~((flat >= low) & (flat <= high))).any(axis=1)  # NaN is outside, as in the graph
    if outside.any():
        raise ValueError(
            f"{rule.format(f'{_first(outside)} ')} (min {flat.min():g}, max {flat.max():g}). "
            f"{fix}"
        )
    return []


def check_constant(r: Any, what: str = "", fix: str = "") -> list:
    """Rule: eq. 30 needs ``r = max(x) - mean(x) > 0`` per example (``r`` from :func:`eq30`).

    Raises:
        ValueError: Known ``r`` with constant examples (naming them).
    """
    def message(bad: str) -> str:
        return (f"Cannot choose `epsilon` by eq. 30 for {what}examples {bad}of `inputs`: "
                "they are constant, so r = max(x) - mean(x) = 0. Pass `epsilon` "
                f"explicitly{fix}.")

    known = _known(r)
    if known is None:
        return [tf.debugging.assert_positive(r, message=_graph(message("")))]
    constant = ~(known > 0)  # NaN fails too, as assert_positive does in the graph
    if np.any(constant):
        raise ValueError(message(f"{_first(constant)} "))
    return []


def check_example_shape(name: str, shape: tuple, expected: tuple) -> list:
    """Rule: the examples of input ``name`` (``shape`` is ``[B, ...]``) have the shape that the
    model declares for one example (``expected``; None for a free dimension). Known shapes only:
    inside a graph the signature holds it.

    Raises:
        ValueError: Another shape (naming both).
    """
    got = tuple(int(d) for d in shape[1:])
    if len(got) == len(expected) and all(
        e is None or e == g for e, g in zip(expected, got, strict=True)
    ):
        return []
    dims = ", ".join("?" if e is None else str(e) for e in expected)
    raise ValueError(
        f"Argument `{name}` has shape {[int(d) for d in shape]}, but the model takes "
        f"[batch, {dims}] (one example of shape ({dims}{',' if len(expected) == 1 else ''}) per "
        "row). Pass inputs of that shape."
    )


def check_output_dir(name: str, path: Any) -> str:
    """Rule: an output directory (``export``'s ``path``, ``ExplanationLogger``'s ``log_dir``)
    is checked when it is given, not when the work is done: a local path must be a directory
    that can be written, or one that can be created in its nearest existing parent. Remote URLs
    (``gs://...``) are left to TensorFlow.

    Returns:
        The path as a ``str``.

    Raises:
        TypeError: ``path`` is not a path.
        ValueError: A file stands where a directory must be, or the place is not writable.
    """
    try:
        text = os.fsdecode(os.fspath(path))
    except TypeError:
        text = None
    if not text:
        raise TypeError(
            f"Argument `{name}` must be a directory path (str or os.PathLike). "
            f"Received: {name}={path!r}"
        )
    if "://" in text:
        return text
    here = os.path.abspath(text)
    while not os.path.exists(here) and os.path.dirname(here) != here:
        here = os.path.dirname(here)
    if not os.path.isdir(here):
        raise ValueError(
            f"Argument `{name}` must be a directory. Received: {text!r}, but {here!r} is a "
            "file. Choose another path."
        )
    if not os.access(here, os.W_OK | os.X_OK):
        raise ValueError(
            f"Argument `{name}`: {here!r} is not writable, so {text!r} cannot be written. "
            "Choose a directory you can write to."
        )
    return text

"""The TensorFlow-free parts of tfmollify.testing that its checks and the pytest plugin share.

* the sample-count factor of tfmollify.testing's own checks (``--tfm-samples`` of the pytest
  plugin, or the ``TFMOLLIFY_TEST_SAMPLES`` environment variable): :func:`samples_factor`,
  :func:`scaled`;
* the record of the seeds that the Monte Carlo assertions used in the running test
  (:func:`record_seed`, :func:`recorded_seeds`, :func:`clear_seeds`): the plugin
  (``tfmollify_pytest``) prints them under a failing test, so that the failure can be rerun;
* the reports of the checks (:class:`Check`, one line each, and :class:`Report`).

This module imports neither TensorFlow nor Hypothesis (only the standard library).
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from typing import Any

__all__ = [
    "ENV_SAMPLES",
    "Check",
    "Report",
    "clear_seeds",
    "record_seed",
    "recorded_seeds",
    "samples_factor",
    "scaled",
]

#: The environment variable that carries the factor (the plugin's ``--tfm-samples`` sets it).
ENV_SAMPLES = "TFMOLLIFY_TEST_SAMPLES"


def samples_factor() -> float:
    """The factor on the sample counts of tfmollify.testing's checks (1.0 by default).

    Returns:
        A positive float.

    Raises:
        ValueError: If the environment variable holds no positive number.

    Example:

    >>> samples_factor() > 0
    True
    """
    raw = os.environ.get(ENV_SAMPLES, "1")
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"{ENV_SAMPLES} (or --tfm-samples) must be a positive number. Received: {raw!r}"
        )
    return value


def scaled(n: int, minimum: int = 1) -> int:
    """``n`` samples times :func:`samples_factor`, rounded up, at least ``minimum``.

    Example:

    >>> scaled(100) >= 1
    True
    """
    return max(minimum, math.ceil(n * samples_factor()))


# -- the seeds of the running test -------------------------------------------------------------
_SEEDS: list[tuple[str, int]] = []
_SEEDS_LOCK = threading.Lock()


def record_seed(label: str, seed: Any) -> None:
    """Notes that a Monte Carlo check of the running test used ``seed``.

    The pytest plugin clears the record before each test and prints it under a failing one.

    Args:
        label: What used the seed (e.g. the explainer's settings).
        seed: The seed, an int (None is not recorded: nothing to rerun).

    Example:

    >>> clear_seeds()
    >>> record_seed("my check", 7)
    >>> recorded_seeds()
    [('my check', 7)]
    >>> clear_seeds()
    """
    if seed is None:
        return
    with _SEEDS_LOCK:
        _SEEDS.append((str(label), int(seed)))


def recorded_seeds() -> list[tuple[str, int]]:
    """The ``(label, seed)`` pairs recorded since :func:`clear_seeds`, oldest first."""
    with _SEEDS_LOCK:
        return list(_SEEDS)


def clear_seeds() -> None:
    """Forgets the recorded seeds (the plugin calls it before each test)."""
    with _SEEDS_LOCK:
        _SEEDS.clear()


# -- reports ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Check:
    """One check of a report.

    Attributes:
        name: What is checked (e.g. ``"normalised"``).
        passed: Whether it held.
        value: What was measured (a float, or a short text).
        tolerance: The bound the value was held to (a float, or a short text).
        detail: One line on how it was measured, or why it failed.
    """

    name: str
    passed: bool
    value: Any
    tolerance: Any
    detail: str = ""

    def __str__(self) -> str:
        mark = "ok  " if self.passed else "FAIL"
        text = f"{mark} {self.name:<22} {_fmt(self.value):>12}  (tolerance {_fmt(self.tolerance)})"
        return f"{text}  {self.detail}" if self.detail else text


@dataclasses.dataclass(frozen=True)
class Report:
    """The checks run on one subject, in order.

    Attributes:
        subject: What was checked (a kernel's or an explainer's description).
        checks: The :class:`Check` entries.

    Example:

    >>> r = Report("thing", (Check("positive", True, 2.0, "> 0"),))
    >>> r.passed, [c.name for c in r.failed]
    (True, [])
    >>> print(r)
    thing: 1 / 1 checks passed
      ok   positive                        2  (tolerance > 0)
    """

    subject: str
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """Whether every check held."""
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        """The checks that did not hold."""
        return tuple(c for c in self.checks if not c.passed)

    def __getitem__(self, name: str) -> Check:
        """The check called ``name``."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"No check named {name!r}; the checks: {[c.name for c in self.checks]}")

    def __str__(self) -> str:
        ok = sum(c.passed for c in self.checks)
        lines = [f"{self.subject}: {ok} / {len(self.checks)} checks passed"]
        lines += [f"  {c}" for c in self.checks]
        return "\n".join(lines)

    def raise_if_failed(self, what: str) -> None:
        """Raises an ``AssertionError`` that names every failed check and shows the whole
        report (kept as the exception's ``report`` attribute)."""
        if self.passed:
            return
        names = ", ".join(c.name for c in self.failed)
        err = AssertionError(f"{what}: {len(self.failed)} check(s) failed: {names}\n\n{self}")
        err.report = self  # type: ignore[attr-defined]
        raise err


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if value == 0 or math.isinf(value) or math.isnan(value):
        return str(float(value)) if isinstance(value, float) else str(value)
    return f"{value:.4g}"

"""One progress bar for long work: Keras' ``Progbar``, shown only once the work takes a while.

:func:`bar` returns a :class:`Bar`, a context manager around ``keras.utils.Progbar`` (no new
dependency) that stays silent until ``delay_s`` seconds (3 by default) have passed since it was
opened: fast work prints nothing, slow work gets the familiar Keras bar with a count, a time
estimate and the time per unit. :func:`~tfmollify.integrations.dataset.explain_dataset`,
``tfmollify.evaluation.experiments.table1.run``, :func:`tfmollify.interface.demo.run` and the
``tfmollify`` command
use it.

Where it writes: like ``model.fit``, to stdout (or to absl logging after
``keras.config.disable_interactive_logging()``). On a terminal or in a notebook the bar is
redrawn in place (at most 20 times a second); elsewhere (a log file) a line is written at most
every 30 seconds, and once at the end.

Whether it shows (``enabled``): True shows it, False never prints anything, None decides
(:func:`auto_enabled`):

1. off while another bar is open, shown or not, in any thread: nested work shows only the
   outermost bar, and work inside a call made with ``progress=False`` stays silent;
2. the environment variable ``TFMOLLIFY_PROGRESS``, if set: ``0``/``false``/``off``/``no``
   turns automatic bars off, anything else turns them on;
3. otherwise off under continuous integration (the ``CI`` variable set to a true value), and
   on when stdout is a terminal or the code runs in a Jupyter/IPython kernel.
"""

from __future__ import annotations

import math
import os
import sys
import time
import weakref
from collections.abc import Callable
from types import TracebackType

from tfmollify.adapter import keras_compat

__all__ = ["DEFAULT_DELAY_S", "Bar", "auto_enabled", "bar"]

DEFAULT_DELAY_S = 3.0
"""Seconds a bar waits before it first appears: work that ends sooner prints nothing."""

_ENV = "TFMOLLIFY_PROGRESS"
_FALSE = ("0", "false", "off", "no")
_TTY_INTERVAL_S = 0.05  # keras' own redraw interval on a terminal
_LOG_INTERVAL_S = 30.0  # at most one line per 30 s in a log file

_open_bars: weakref.WeakSet[Bar] = weakref.WeakSet()  # an automatic bar stays off inside one


def _interactive() -> bool:
    """True when stdout is a terminal or the code runs in a Jupyter/IPython kernel."""
    isatty = getattr(sys.stdout, "isatty", None)
    try:
        if isatty is not None and isatty():
            return True
    except ValueError:  # a closed stream
        return False
    ipython = sys.modules.get("IPython")
    if ipython is None or "ipykernel" not in sys.modules:
        return False
    shell = getattr(ipython, "get_ipython", lambda: None)()
    return shell is not None and hasattr(shell, "kernel")


def auto_enabled() -> bool:
    """Whether a bar with ``enabled=None`` shows (the rules are in the module docstring).

    Returns:
        False while another bar is open; else True when ``TFMOLLIFY_PROGRESS`` asks for bars,
        or (the variable unset) when ``CI`` is not set to a true value and stdout is a terminal
        or a notebook.

    Example:

    >>> from tfmollify.explainers import progress
    >>> with progress.bar(10, enabled=False):  # inside another bar: off
    ...     progress.auto_enabled()
    False
    """
    if len(_open_bars) > 0:
        return False
    env = os.environ.get(_ENV, "").strip().lower()
    if env:
        return env not in _FALSE
    ci = os.environ.get("CI", "").strip().lower()
    if ci not in ("", *_FALSE):
        return False
    return _interactive()


class Bar:
    """A progress bar that appears only when the work lasts longer than ``delay_s`` seconds.

    Make one with :func:`bar` (the arguments are documented there). Call :meth:`update` as work
    completes; leaving the ``with`` block (or :meth:`close`) ends the bar: a shown bar gets its
    final line, an unshown one prints nothing. A bar is meant for one thread.

    Attributes:
        count: Units done so far (the sum of the :meth:`update` calls).
        total: Units expected, or None when unknown. It may be changed while the bar is open (a
            refined estimate); the final line shows the count reached.
        enabled: Whether this bar may print (``enabled`` resolved by :func:`auto_enabled`).
        shown: Whether the bar has appeared.
    """

    def __init__(
        self,
        total: int | None,
        *,
        enabled: bool | None = None,
        delay_s: float | None = None,
        unit: str = "step",
        clock: Callable[[], float] | None = None,
    ) -> None:
        if delay_s is None:
            delay_s = DEFAULT_DELAY_S
        if total is not None and (
            isinstance(total, bool) or not isinstance(total, int) or total < 0
        ):
            raise ValueError(
                "Argument `total` must be a non-negative int (the units of work expected) or "
                f"None when unknown. Received: total={total!r}"
            )
        if enabled is not None and not isinstance(enabled, bool):
            raise TypeError(
                "Argument `enabled` must be True, False or None (automatic). Received: "
                f"enabled={enabled!r} of type {type(enabled).__name__}"
            )
        if (
            isinstance(delay_s, bool)
            or not isinstance(delay_s, int | float)
            or not math.isfinite(delay_s)
            or delay_s < 0
        ):
            raise ValueError(
                "Argument `delay_s` must be a finite number of seconds >= 0 (0 shows the bar "
                f"at the first update). Received: delay_s={delay_s!r}"
            )
        if not isinstance(unit, str) or not unit:
            raise TypeError(f"Argument `unit` must be a non-empty str. Received: unit={unit!r}")
        self.count = 0
        self.total = total
        self.enabled = auto_enabled() if enabled is None else enabled
        self.shown = False
        self._delay_s = float(delay_s)
        self._unit = unit
        self._clock = clock if clock is not None else time.monotonic
        self._start = self._clock()
        self._closed = False
        self._drawn = -1  # the count last drawn
        self._progbar = None
        _open_bars.add(self)
        if self.enabled:
            # made now, so that its rate and time estimates count from the start of the work
            self._progbar = _make_progbar(total, unit)

    def update(self, n: int = 1) -> None:
        """Counts ``n`` more units done; draws the bar once ``delay_s`` has passed.

        Args:
            n: Units just completed (>= 0).

        Raises:
            ValueError: If ``n`` is not a non-negative int, or the bar is closed.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"Argument `n` must be a non-negative int. Received: n={n!r}")
        if self._closed:
            raise ValueError("This progress bar is closed; open a new one with progress.bar().")
        self.count += n
        if self._progbar is None:
            return
        if not self.shown and self._clock() - self._start < self._delay_s:
            return
        self.shown = True
        pb = self._progbar
        pb.target = self.total
        before = keras_compat.progbar_drawn_at(pb)
        pb.update(self.count, finalize=False)
        # drawn, not skipped as too soon after the last draw
        if keras_compat.progbar_drawn_at(pb) != before:
            self._drawn = self.count

    def clear(self) -> None:
        """Erases a shown bar from its line, so that other output can be printed cleanly.

        The bar is drawn again at the next :meth:`update`. Does nothing when the bar is not
        shown.
        """
        if not self.shown or self._closed:
            return
        pb = self._progbar
        _write("\r\x1b[K" if keras_compat.progbar_is_dynamic(pb) else "\n")
        keras_compat.progbar_forget_line(pb)  # nothing left to back over; redraw next time

    def close(self, *, failed: bool = False) -> None:
        """Ends the bar: a shown bar draws its final line (the count reached); idempotent.

        Args:
            failed: The work stopped early (an exception): end the line without a final count.
        """
        if self._closed:
            return
        self._closed = True
        _open_bars.discard(self)
        if self._progbar is None or not self.shown:
            return
        if failed or (self._drawn == self.count
                      and not keras_compat.progbar_is_dynamic(self._progbar)):
            _write("\n")  # end the bar's line (in a log file: without repeating it)
            return
        self._progbar.target = None if self.total is None else max(self.total, self.count)
        self._progbar.update(self.count, finalize=True)

    def __enter__(self) -> Bar:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(failed=exc_type is not None)

    def __repr__(self) -> str:
        return (
            f"Bar(count={self.count}, total={self.total}, enabled={self.enabled}, "
            f"shown={self.shown})"
        )


def _write(text: str) -> None:
    """Writes to stdout where the Progbar does (not when Keras logs through absl instead)."""
    import keras

    if keras.config.is_interactive_logging_enabled():
        sys.stdout.write(text)
        sys.stdout.flush()


def _make_progbar(total: int | None, unit: str):
    import keras

    interactive = _interactive()
    pb = keras.utils.Progbar(
        total, unit_name=unit, interval=_TTY_INTERVAL_S if interactive else _LOG_INTERVAL_S
    )
    # Keras redraws in place on every POSIX system; in a log file a line per update reads better
    keras_compat.progbar_set_dynamic(pb, interactive)
    return pb


def bar(
    total: int | None,
    *,
    enabled: bool | None = None,
    delay_s: float | None = None,
    unit: str = "step",
    clock: Callable[[], float] | None = None,
) -> Bar:
    """A progress bar over ``total`` units of work that appears only if the work is slow.

    Args:
        total: Units of work expected (e.g. examples or batches), or None when unknown.
        enabled: True to allow the bar, False to print nothing, None to decide automatically
            (:func:`auto_enabled`: on at a terminal or in a notebook, off in CI, in log files
            and inside another bar; ``TFMOLLIFY_PROGRESS=0``/``1`` overrides).
        delay_s: Seconds from opening the bar until it may first appear; None (the default)
            reads :data:`DEFAULT_DELAY_S` (3 s); 0 shows it at the first update.
        unit: Name of one unit, shown in the time per unit (``"example"`` -> ``12ms/example``).
        clock: A function returning seconds (default ``time.monotonic``), for tests.

    Returns:
        A :class:`Bar`; use it as a context manager and call ``update(n)`` as work completes.

    Raises:
        ValueError: If ``total`` is not a non-negative int or None, or ``delay_s`` is negative
            or not finite.
        TypeError: If ``enabled`` is not a bool or None, or ``unit`` not a non-empty str.

    Example:

    >>> from tfmollify.explainers import progress
    >>> with progress.bar(3, enabled=True, unit="batch") as b:  # fast: nothing is printed
    ...     for _ in range(3):
    ...         b.update(1)
    >>> b.count, b.shown
    (3, False)
    """
    return Bar(total, enabled=enabled, delay_s=delay_s, unit=unit, clock=clock)

"""The static plan of one call: how many samples go into each pass of the model.

Pure Python, no TensorFlow: from the spec (mode, sampler, draw counts, base method,
``batch_size``) and the number of examples, :func:`make` gives

* ``block``: examples per call of the compiled core (the call's examples run block by block);
* the core's loop layout (:class:`Layout`): input draws per pass (``chunk``), passes per unit
  of the standard error, and how input and weight draws are grouped into units (antithetic
  pairs, Sobol replicates).

One *evaluation* is one row through the model: one noisy sample costs one evaluation, or
``ig_steps`` for integrated gradients (one per quadrature point). With ``batch_size`` set, a pass
evaluates ``block x chunk x evaluations_per_sample <= batch_size`` rows, and every
``(weight draw, input draw)`` pair of an example is evaluated exactly once (the padding draws of
a last, shorter chunk are masked out); ``tests/test_plan.py`` checks both by brute force.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

from tfmollify.core import modes

__all__ = ["Layout", "Plan", "make"]


@dataclasses.dataclass(frozen=True)
class Layout:
    """The loops of the compiled core over the draws of one block of examples.

    Attributes:
        n_in: Input draws per weight draw (1 for ``ng``: no input noise).
        n_w: Weight draws (1 for ``sg``: no weight noise).
        in_unit: Input draws per unit of the standard error (SG: 2 for antithetic pairs,
            ``N / R`` for Sobol, else 1; NG/FG: 1, their units are weight draws).
        w_unit: Weight draws per unit (2 antithetic, ``M / R`` Sobol, else 1).
        split_units: A SmoothGrad unit is longer than a pass: each unit is its own run of the
            chunk loop, closed before the next (an outer loop over units).
        n_loop: Input draws of one run of the chunk loop (``in_unit`` or ``n_in``).
        chunk: Input draws per pass (equal passes; the last may hold masked padding).
        n_chunks: Passes per run of the chunk loop.
        draws: Weight draws per pass (NoiseGrad/FusionGrad): ``K`` draws share one pass, the
            rows of each draw seeing its own weights (1: one draw per pass). The last pass
            may hold padding draws (masked out), as the last chunk may.
    """

    n_in: int
    n_w: int
    in_unit: int
    w_unit: int
    split_units: bool
    n_loop: int
    chunk: int
    n_chunks: int
    draws: int = 1

    @property
    def padded(self) -> bool:
        """Whether the last pass holds padding draws (masked out)."""
        return self.n_chunks * self.chunk > self.n_loop

    @property
    def whole_draws(self) -> bool:
        """Whether every pass holds all ``n_in`` input draws of its weight draw (one chunk)."""
        return self.n_chunks == 1 and self.chunk == self.n_in

    @property
    def draw_groups(self) -> int:
        """Passes over the weight draws: ``ceil(n_w / draws)``."""
        return -(-self.n_w // self.draws)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The static plan of a call: examples per core call and the core's loop layout.

    Attributes:
        block: Examples per call of the compiled core (all of them without ``batch_size``).
        layout: The core's loops (:class:`Layout`).
        evaluations_per_sample: Model rows per sample (``ig_steps`` for IG, else 1).
    """

    block: int
    layout: Layout
    evaluations_per_sample: int

    @property
    def rows_per_pass(self) -> int:
        """Model evaluations in flight in one pass (all its weight draws)."""
        return (self.block * self.layout.chunk * self.evaluations_per_sample
                * self.layout.draws)


def _requested_chunk(
    mode: modes.Mode,
    sampler: str,
    num_samples: int,
    replicates: int,
    batch_size: int | None,
    per_sample: int,
) -> tuple[int, int | None]:
    """(input draws per pass asked for, examples per pass or None for all of them)."""
    n_in = mode.input_draws(num_samples)
    if batch_size is None:
        return n_in, None
    chunk = max(1, min(n_in, batch_size // per_sample))
    if sampler == "antithetic" and n_in > 1:
        chunk -= chunk % 2  # whole pairs per pass (batch_size >= 2 * per is checked)
    unit = n_in // replicates if mode.only_input_noise else 1
    if sampler == "sobol" and chunk >= unit:
        chunk -= chunk % unit  # whole Sobol replicates per pass
    return chunk, max(1, batch_size // (chunk * per_sample))


def layout(
    mode: str | modes.Mode,
    sampler: str,
    num_samples: int,
    num_weight_samples: int,
    replicates: int,
    chunk: int,
) -> Layout:
    """The core's loop layout for at most ``chunk`` input draws per pass."""
    mode = modes.parse(mode)
    n_in, n_w = mode.input_draws(num_samples), mode.weight_draws(num_weight_samples)
    antithetic, sobol = sampler == "antithetic", sampler == "sobol"
    in_unit = 1
    if mode.only_input_noise and antithetic:
        in_unit = 2
    elif mode.only_input_noise and sobol:
        in_unit = n_in // replicates
    w_unit = 2 if antithetic else (n_w // replicates if sobol else 1)
    # SmoothGrad units longer than a pass are closed one by one (an outer loop, like weight
    # draws); otherwise passes hold whole units.
    split_units = in_unit > max(1, min(chunk, n_in))
    n_loop = in_unit if split_units else n_in
    unit = 1 if split_units else in_unit  # units never straddle two chunks
    c = max(1, min(chunk, n_loop))
    c -= c % unit
    n_chunks = -(-n_loop // c)
    c = -(-n_loop // n_chunks)  # equal passes, as few padding draws as possible
    c += -c % unit  # still at most `chunk`: a multiple of unit was at most it
    return Layout(n_in, n_w, in_unit, w_unit, split_units, n_loop, c, n_chunks)


def make(
    *,
    mode: str | modes.Mode,
    sampler: str,
    num_samples: int,
    num_weight_samples: int,
    replicates: int,
    batch_size: int | None,
    evaluations_per_sample: int,
    batch: int | None = None,
    max_draws: int = 1,
    draw_rows: int | None = None,
) -> Plan:
    """The plan of a call with ``batch`` examples (None: the plan of the compiled core, whose
    ``block`` is then the examples per pass, or 0 for "all of them").

    Args:
        mode, sampler, num_samples, num_weight_samples, replicates, batch_size: As for
            :class:`tfmollify.Explainer` (checked there).
        evaluations_per_sample: Model rows per sample (``ig_steps`` for IG, else 1).
        batch: Examples of the call.
        max_draws: At most this many weight draws per pass (1: one; the caller says how many
            the model allows: 1 where a perturbed layer has no per-row-weight form). With a
            known ``batch``, NoiseGrad and FusionGrad put ``K > 1`` draws in a pass whenever
            they fit: ``K = min(max_draws, M, batch_size // (block x chunk x evaluations))``,
            evened out over the passes (:func:`draws_per_pass`).
        draw_rows: A pass of several weight draws holds at most this many rows (None: no
            bound beyond ``batch_size``); the caller's rule for passes worth sharing.

    Returns:
        The :class:`Plan`.

    Example:

    >>> p = make(mode="sg", sampler="iid", num_samples=50, num_weight_samples=10,
    ...          replicates=1, batch_size=32, evaluations_per_sample=1, batch=4)
    >>> p.block, p.layout.chunk, p.layout.n_chunks, p.rows_per_pass
    (1, 25, 2, 25)
    """
    mode = modes.parse(mode)
    chunk, block = _requested_chunk(
        mode, sampler, num_samples, replicates, batch_size, evaluations_per_sample
    )
    lay = layout(mode, sampler, num_samples, num_weight_samples, replicates, chunk)
    if batch is None:
        examples = 0 if block is None else block
    else:
        examples = max(1, batch if block is None else min(batch, block))
        k = draws_per_pass(lay, batch_size, examples * lay.chunk * evaluations_per_sample,
                           max_draws, draw_rows)
        lay = dataclasses.replace(lay, draws=k)
    return Plan(block=examples, layout=lay, evaluations_per_sample=evaluations_per_sample)


def draws_per_pass(lay: Layout, batch_size: int | None, rows_per_draw: int,
                   max_draws: int, draw_rows: int | None = None) -> int:
    """Weight draws per pass: as many as fit under ``batch_size`` (all of them, up to
    ``max_draws``, without a bound) and, with several, within ``draw_rows`` rows; whole units
    only (1 where a unit spans several draws: antithetic pairs, Sobol replicates), the same
    number in every pass.

    Example:

    >>> lay = layout("ng", "iid", 1, 10, 1, 1)
    >>> draws_per_pass(lay, 32, 1, 10), draws_per_pass(lay, 4, 1, 10), draws_per_pass(lay, 8, 8, 10)
    (10, 4, 1)
    >>> draws_per_pass(lay, None, 1, 10, draw_rows=5), draws_per_pass(lay, None, 8, 10, 4)
    (5, 1)
    """
    if lay.n_w <= 1 or lay.w_unit != 1 or max_draws <= 1:
        return 1
    fit = lay.n_w if batch_size is None else batch_size // max(1, rows_per_draw)
    if draw_rows is not None:
        fit = min(fit, draw_rows // max(1, rows_per_draw))
    k = max(1, min(lay.n_w, max_draws, fit))
    groups = -(-lay.n_w // k)
    return -(-lay.n_w // groups)  # equal passes, as few padding draws as possible


# -- the block loop ---------------------------------------------------------------------------
def block_count(total: Any, block: Any) -> Any:
    """The passes of at most ``block`` examples that ``total`` examples take.

    One rule for every block loop: Python ints for the runner and the data-set code, tensors
    inside the export's ``tf.while_loop`` (the same expression, both faces).
    """
    return (total + block - 1) // block


def span(i: Any, total: Any, block: Any, minimum: Callable[[Any, Any], Any] = min) -> tuple:
    """The examples ``[start, stop)`` of pass ``i`` (clamped to ``total``; pass ``tf.minimum``
    as ``minimum`` for tensors)."""
    return minimum(total, i * block), minimum(total, (i + 1) * block)


def spans(total: int, block: int) -> Iterator[tuple[int, int]]:
    """Every pass's ``(start, stop)`` over ``total`` examples, ``block`` at a time (0: one pass).

    Example:

    >>> list(spans(5, 2)), list(spans(3, 0)), list(spans(0, 4))
    ([(0, 2), (2, 4), (4, 5)], [(0, 3)], [])
    """
    block = block if block > 0 else max(total, 1)
    return (span(i, total, block) for i in range(block_count(total, block)))

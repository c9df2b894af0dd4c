"""The one narrow interface through which integrations use an explainer.

Datasets (:func:`tfmollify.explain_dataset`), the SavedModel export, the Keras callback, Ray and
the HTTP server need more of an explainer than :meth:`~tfmollify.Explainer.explain`: to check a
batch once and run it block by block under ``batch_size``, to compile the core into their own
graph, to read the model's scores. They ask the explainer's :class:`Seam`
(``explainer.seam``) for it, and nothing else: no integration reads the explainer's runner or
model view, and only the explainer sets its ``last_*`` attributes (an integration hands its
counts to :meth:`Seam.record`).

Example:

>>> import keras, numpy as np
>>> import tfmollify as tfm
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
>>> seam = tfm.SmoothGrad(model, num_samples=4, seed=0, batch_size=8).seam
>>> x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
>>> job = seam.prepare(x, [0, 1, 0, 1, 0], with_stderr=False)
>>> seam.plan(job.batch).block, [span for span in seam.blocks(job)]
(2, [(0, 2), (2, 4), (4, 5)])
>>> values, stderr, finite = seam.run(job)
>>> seam.shape_rows(job, values).shape, finite.astype(int).tolist()
((5, 3), [4, 4, 4, 4, 4])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tfmollify.adapter import request as request_lib
from tfmollify.adapter.blocks import Progress
from tfmollify.adapter.calls import report_nonfinite
from tfmollify.core import checks, engine, plan

if TYPE_CHECKING:
    from tfmollify.adapter.model_view import ModelView
    from tfmollify.adapter.runner import Request, Runner
    from tfmollify.adapter.spec import Spec

__all__ = ["Seam"]


class Seam:
    """What integrations may use of one explainer (``explainer.seam``).

    Args:
        runner: The explainer's runner (compiled cores, block loop, tolerance rounds).
        view: The explainer's view of its model.
        record: The explainer's own function that sets its ``last_*`` counts.
    """

    def __init__(self, runner: Runner, view: ModelView,
                 record: Callable[[Any, np.ndarray], None]) -> None:
        self._runner, self._view, self._record = runner, view, record

    # -- settings and model ------------------------------------------------------------------
    @property
    def spec(self) -> Spec:
        """The explainer's checked, frozen settings."""
        return self._runner.spec

    @property
    def network(self) -> engine.Network:
        """The model as the engine runs it (what :func:`tfmollify.core.engine.build` takes);
        read only the members of :class:`tfmollify.core.engine.Network` of it."""
        return self._view

    @property
    def batch_size(self) -> int | None:
        """Model evaluations per pass (``batch_size`` resolved; None for unbounded)."""
        return self._runner.batch_size

    @property
    def head(self) -> Any:
        """With ``explain_at`` at a cut of the model: the part before the layer (a Keras
        model of the inputs), else None."""
        return self._view.head

    def layer_shape(self) -> tuple[int, ...]:
        """The shape of one example of the ``explain_at`` layer's output."""
        return self._view.layer_shape()

    def example_shape(self) -> tuple[int | None, ...] | None:
        """The shape of one example that the model's one input declares (None if unknown)."""
        return self._view.example_shape()

    def probe(self, rows: np.ndarray, packing: Any = None) -> tuple[int, ...]:
        """The model checked on one example of ``rows``: the shape of its scores."""
        return self._view.probe(rows, packing)

    def scores(self, x: Any) -> Any:
        """The model's scores on ``x`` in inference mode, with its own weights."""
        return self._view.forward(x)

    def check_inputs(self, inputs: np.ndarray) -> None:
        """``inputs`` (one array ``[B, ...]``) checked by the request rules: finite values, and
        the shape the model declares for one example."""
        checks.check_finite("inputs", inputs)
        expected = self._view.example_shape()
        if expected is not None:
            checks.check_example_shape("inputs", inputs.shape, expected)

    def seeds(self, seeds: Any, batch: int) -> np.ndarray:
        """``seeds`` checked by the request rule (one integer per example): int64 ``[B]``."""
        return request_lib.seeds(seeds, 0, batch)

    def targets(self, targets: Any, inputs: np.ndarray) -> np.ndarray:
        """``targets`` for ``inputs`` checked by the request rule every path uses (class
        indices, one per example, inside the model's outputs): int32 ``[B]``. An unbuilt
        model is not called (that would build it): its outputs are checked at the first
        explanation."""
        if getattr(self._view.model, "built", True) is False:  # e.g. before fit builds it:
            score_shape = (np.iinfo(np.int32).max,)  # calling it would build it; range later
        else:
            score_shape = tuple(self.scores(tf.constant(inputs[:1])).shape[1:])
        return request_lib.targets(targets, len(inputs), score_shape)

    # -- one batch, checked and run block by block --------------------------------------------
    def plan(self, batch: int | None = None) -> plan.Plan:
        """The plan of a call with ``batch`` examples (its ``block``: examples per pass)."""
        return self._runner.plan(batch)

    def prepare(self, inputs: Any, targets: Any, *, with_stderr: bool, seeds: Any = None,
                offset: int = 0, seed: int | None = None) -> Request:
        """One batch checked by the request rules and compiled for: a frozen request.

        Args:
            inputs, targets, seeds: As for :meth:`tfmollify.Explainer.explain`.
            with_stderr: Whether the standard errors are computed.
            offset: The position of the batch's first example in a longer run (its derived
                seeds continue the run's).
            seed: The run's seed (default: the explainer's).
        """
        return self._runner.prepare(inputs, targets, with_stderr=with_stderr, seeds=seeds,
                                    offset=offset, seed=seed)

    def blocks(self, job: Request) -> Iterator[tuple[int, int]]:
        """The ``(start, stop)`` example ranges of ``job``'s passes (the block loop's rule)."""
        return plan.spans(job.batch, job.block)

    def run_block(self, job: Request, start: int, stop: int) -> tuple[Any, ...]:
        """The compiled core on examples ``start:stop`` of ``job`` (tensors, not waited for)."""
        return self._runner.run_block(job, start, stop)

    def run(self, job: Request,
            progress: Progress | None = None) -> tuple[np.ndarray, ...]:
        """All blocks of ``job``: ``(values [B, D], stderr [B, D] or [0], finite [B])``."""
        return self._runner.run(job, progress)

    def shape_rows(self, job: Request, flat: np.ndarray) -> np.ndarray:
        """Flat results shaped like ``job``'s examples (and reduced, with ``reduce``)."""
        return self._runner.shape_rows(job, flat)

    # -- counts ------------------------------------------------------------------------------
    def record(self, finite: np.ndarray) -> None:
        """Hands a finished run's finite-sample counts per example to the explainer, which sets
        its ``last_*`` attributes and raises :class:`tfmollify.NonFiniteError` if an example
        had no finite sample."""
        total = self.spec.samples_per_example
        self._record(total, np.asarray(finite))
        report_nonfinite(self.spec, finite, total)

    # -- the compiled core, for an export's own graph -----------------------------------------
    def shapes(self, *args: Any, **kwargs: Any) -> Any:
        """The noise and output shapes of the core for probe rows (see the runner)."""
        return self._runner.shapes(*args, **kwargs)

    def core_spec(self, *args: Any, **kwargs: Any) -> engine.CoreSpec:
        """The engine's static configuration for an input signature (see the runner)."""
        return self._runner.core_spec(*args, **kwargs)

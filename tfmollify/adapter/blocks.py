"""The block loop: a prepared request run block by block under ``batch_size``.

:func:`run_block` runs the compiled core on a range of a request's examples (the data-set code
runs the blocks on the replicas of a ``tf.distribute.Strategy``); :func:`run` runs them all, one
after the other, and reports each to a progress bar.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify.adapter.calls import Request
from tfmollify.core import plan

__all__ = ["Progress", "run", "run_block"]

#: A progress reporter: called with a total, it returns a context manager whose value has
#: ``update(n)``. The runner knows no terminal; the explainer passes its bar.
Progress = Callable[[int], contextlib.AbstractContextManager[Any]]

#: Runs the core on examples ``start:stop`` of a request (:func:`run_block` or a stand-in).
BlockRunner = Callable[[Request, int, int], tuple[tf.Tensor, tf.Tensor, tf.Tensor]]


class _Silent:
    """A progress bar that shows nothing."""

    def update(self, n: int = 1) -> None:
        """Ignores ``n`` examples done."""
        del n


def _silent(total: int) -> contextlib.AbstractContextManager[_Silent]:
    """The :data:`Progress` reporter that shows nothing."""
    del total
    return contextlib.nullcontext(_Silent())


def run_block(req: Request, start: int, stop: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The core on examples ``start:stop`` of ``req``, on the current device.

    Returns:
        ``(value [n, D], stderr [n, D] or [0], finite [n])`` in the compute dtype.
    """
    ints = () if req.packing is None else (tf.constant(req.ints[start:stop]),)
    return req.fn(
        tf.constant(req.x[start:stop], req.compute),
        *ints,
        tf.constant(req.targets[start:stop]),
        tf.constant(req.eps[start:stop], req.compute),
        tf.constant(req.seeds[start:stop]),
        req.wkey,
        req.wnoise,
        req.xnoise if req.xnoise.shape[0] in (0, stop - start) else req.xnoise[start:stop],
    )


def run(
    req: Request, block_runner: BlockRunner, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All blocks of ``req``, each by ``block_runner``: ``(values [B, D], stderr [B, D] or [0],
    finite [B])``.

    ``progress``: called with the number of examples, it returns the context manager of a bar
    with ``update(n)``; None shows nothing.
    """
    parts = []
    with (progress or _silent)(req.batch) as bar:
        for start, stop in plan.spans(req.batch, req.block):  # the one block-loop rule
            part = block_runner(req, start, stop)
            parts.append(tuple(p.numpy() for p in part))  # waits: the bar tells the truth
            bar.update(stop - start)
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))

"""The ``tolerance`` rounds: rounds of independent samples until every example's relative
standard error is within ``tolerance`` (or ``max_samples`` are drawn).

Round 0 is the call's own request; round ``r`` redraws the still active examples with seeds
derived from each example's seed and ``r``, and weight draws from the call's weight key and
``r``. The rounds are pooled by their finite samples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tfmollify.adapter.blocks import Progress
from tfmollify.adapter.calls import Explanation, Request, report_nonfinite
from tfmollify.core import sampling

if TYPE_CHECKING:
    from tfmollify.adapter.runner import Runner

__all__ = ["explain"]


def explain(
    runner: Runner, inputs: Any, targets: Any, with_stderr: bool, seeds: Any,
    progress: Progress | None = None,
) -> Explanation:
    """Rounds of independent samples until every example meets ``tolerance``.

    Args:
        runner: Prepares, runs and assembles each round (its spec gives ``tolerance``).
        inputs, targets, seeds: As for :meth:`tfmollify.Explainer.explain`.
        with_stderr: Whether the standard errors are returned.
        progress: As for :meth:`tfmollify.adapter.runner.Runner.run`.
    """
    spec = runner.spec
    req = runner.prepare(inputs, targets, with_stderr=True, seeds=seeds)
    if req.batch == 0:
        empty = runner.assemble(req, req.empty())
        zero = np.zeros(0, np.int64)
        return Explanation(empty, empty if with_stderr else None, zero, zero)
    per_round = spec.samples_per_example
    batch, base_seeds = req.batch, req.seeds
    total = np.zeros((batch, req.empty().shape[1]), np.float64)  # sum of n_r * value_r
    var = np.zeros_like(total)  # sum of (n_r * stderr_r)^2
    count = np.zeros(batch, np.int64)  # finite samples
    drawn = np.zeros(batch, np.int64)
    active = np.arange(batch)
    weight_seed = int(req.wkey.numpy()[0])  # round r's weight draws derive from it and r
    round_req = req
    for r in range(max(1, spec.max_samples // per_round)):
        if r:
            round_req = _round(runner, req, active, base_seeds, weight_seed, r)
        v, e, n = runner.run(round_req, progress)
        v, e, n = v.astype(np.float64), e.astype(np.float64), n.astype(np.int64)
        ok = n > 0
        total[active] += np.where(ok[:, None], n[:, None] * v, 0.0)
        var[active] += np.where(ok[:, None], np.square(n[:, None] * e), 0.0)
        count[active] += n
        drawn[active] += per_round
        c = np.maximum(count[active], 1)[:, None]
        value, stderr = total[active] / c, np.sqrt(var[active]) / c
        scale = np.maximum(np.linalg.norm(value, axis=1), 1e-300)
        rel = np.linalg.norm(stderr, axis=1) / scale
        active = active[~(rel <= spec.tolerance) & (drawn[active] + per_round
                                                     <= spec.max_samples)]
        if not active.size:
            break
    report_nonfinite(spec, count, drawn)
    c = np.maximum(count, 1)[:, None]
    return Explanation(
        runner.assemble(req, total / c),
        runner.assemble(req, np.sqrt(var) / c) if with_stderr else None,
        count,
        drawn,
        req.draws,
    )


def _round(
    runner: Runner, req: Request, active: np.ndarray, base_seeds: np.ndarray, weight_seed: int,
    r: int,
) -> Request:
    """Round ``r`` of the still active examples: seeds from each example's own seed and
    ``r``; weight draws from the call's weight key and ``r``."""
    seeds = np.array([sampling.example_seeds(int(s), 1, r)[0] for s in base_seeds[active]])
    round_seed = int(sampling.example_seeds(weight_seed, 1, r)[0])
    wkey = tf.constant(sampling.weight_key(round_seed))
    return req.subset(active, seeds, wkey, runner.weight_noise(round_seed, wkey, req.compute))

"""What one call is: its prepared :class:`Request` in, its immutable :class:`Explanation` out.

The :class:`~tfmollify.adapter.runner.Runner` makes the requests and the explanations (and
re-exports every name here); :func:`report_nonfinite` is the one rule for samples whose
attribution is not finite.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify.adapter.spec import Spec
from tfmollify.core import inputs as inputs_lib

__all__ = ["Explanation", "NonFiniteError", "Request", "report_nonfinite"]


class NonFiniteError(FloatingPointError):
    """Every noise sample of some example gave a non-finite (NaN or Inf) attribution."""


@dataclasses.dataclass(frozen=True)
class Explanation:
    """The result of one call (:meth:`tfmollify.Explainer.explain_full`).

    Attributes:
        attributions: The smoothed attributions, in the inputs' structure (an array or tensor
            like the inputs, or a list/dict of them for several inputs).
        stderr: Their Monte Carlo standard errors, same structure (None with ``reduce``).
        finite_samples: Per example, the samples whose attribution was finite (int64 ``[B]``).
        num_samples: Per example, the samples drawn (int64 ``[B]``): ``N`` (sg), ``M`` (ng)
            or ``M x N`` (fg), more with ``tolerance``.
        weight_draws_per_pass: NG/FG: the weight draws evaluated in one pass of the model
            (``K > 1``: several draws side by side; 1: one draw per pass, also for SG).
    """

    attributions: Any
    stderr: Any
    finite_samples: np.ndarray
    num_samples: np.ndarray
    weight_draws_per_pass: int = 1

    @property
    def nonfinite_count(self) -> np.ndarray:
        """Per example, the samples left out of the average for being non-finite."""
        return self.num_samples - self.finite_samples


@dataclasses.dataclass(frozen=True)
class Request:
    """One call's checked inputs and its compiled core, ready to run block by block.

    Attributes:
        x: The rows the core takes ``[B, *shape]`` in the compute dtype (several inputs:
            packed rows ``[B, D]``; ``explain_at``: the layer's outputs).
        out_dtype: The dtype of the results (the inputs' floating dtype).
        is_tensor: Whether the inputs came as tensors (results come back as tensors).
        ints: The integer inputs' int64 rows ``[B, I]`` (``I = 0`` without any).
        packing: How several inputs are packed (None for one input).
        targets, eps, seeds: Per example: class indices, input-noise scales, noise seeds.
        fn: The compiled core.
        compute: The compute dtype.
        wkey, wnoise: The weight-noise key and cached weight-factor table (``[0]`` when drawn
            in the graph).
        xnoise: The examples' cached standard input noise ``[B, span, Dn]`` (``[0, 0, 0]``
            when drawn in the graph; see :meth:`tfmollify.adapter.cores.Cores.input_noise`).
        block: Examples per call of ``fn`` (the ``batch_size`` memory bound).
        draws: Weight draws per pass of ``fn`` (NoiseGrad/FusionGrad; 1 otherwise).
        out_shape: One example's attribution shape (the rows' shape unless the attribution
            is at a layer or a method of the user's returns another shape).
        structured: Whether the results come back in the inputs' structure (several inputs,
            attribution with respect to them).
    """

    x: np.ndarray
    out_dtype: np.dtype
    is_tensor: bool
    ints: np.ndarray | None = None
    packing: inputs_lib.Packing | None = None
    targets: np.ndarray | None = None
    eps: np.ndarray | None = None
    seeds: np.ndarray | None = None
    fn: Callable | None = None
    compute: tf.DType | None = None
    wkey: tf.Tensor | None = None
    wnoise: tf.Tensor | None = None
    block: int = 1
    out_shape: tuple[int, ...] | None = None
    structured: bool = True
    draws: int = 1
    xnoise: tf.Tensor | None = None

    @property
    def batch(self) -> int:
        """The number of examples ``B``."""
        return int(self.x.shape[0])

    @property
    def attribution_shape(self) -> tuple[int, ...]:
        """One example's attribution shape."""
        return tuple(self.x.shape[1:]) if self.out_shape is None else self.out_shape

    def empty(self) -> np.ndarray:
        """Flat results ``[B, D]`` of zeros."""
        return np.zeros((self.batch, int(np.prod(self.attribution_shape))), self.x.dtype)

    def subset(self, keep: np.ndarray, seeds: np.ndarray, wkey: tf.Tensor, wnoise) -> Request:
        """The examples ``keep`` of this request with other seeds (a round of ``tolerance``)."""
        return dataclasses.replace(
            self, x=self.x[keep], ints=self.ints[keep], targets=self.targets[keep],
            eps=self.eps[keep], seeds=seeds, wkey=wkey, wnoise=wnoise,
        )


def report_nonfinite(spec: Spec, finite: np.ndarray, total: Any) -> None:
    """Raises :class:`NonFiniteError` for an example with no finite sample; warns for others.

    Args:
        spec: The explainer's settings (named in the message).
        finite: Per example, the samples with a finite attribution.
        total: Samples drawn, one int for all examples or one per example.
    """
    total = np.broadcast_to(np.asarray(total), finite.shape)
    dead = np.flatnonzero(finite == 0)
    if dead.size:
        raise NonFiniteError(
            f"Every one of the {int(total[dead[0]])} samples gave a non-finite attribution for "
            f"examples {dead[:10].tolist()} (mode={spec.mode!r}, kernel={spec.kernel.name!r}). "
            "Reduce `weight_epsilon`/`epsilon`, use a lighter-tailed kernel, or check the "
            "model for overflow."
        )
    bad = total - finite
    if bad.any():
        warnings.warn(
            f"{int(bad.sum())} of {int(total.sum())} samples gave non-finite attributions "
            f"and were left out of the average (per example: {bad.tolist()[:20]}); see "
            "`Explanation.finite_samples` (or `explainer.last_nonfinite_count`).",
            RuntimeWarning,
            stacklevel=4,
        )

"""Sanity checks of explanations as assertions: do the maps change when the weights are random?

:func:`assert_mprt` and :func:`assert_smooth_mprt` run
:func:`tfmollify.evaluation.metrics.mprt` and :func:`~tfmollify.evaluation.metrics.smooth_mprt`
on the user's explainer and fail when the explanations of the **fully randomised** model (the
last step of the cascade: every weighted layer re-initialised) stay similar to those of the
trained model: when the mean similarity over the examples exceeds ``max_similarity``.

Why the last step and not every step: in a top-down cascade the lower layers stay trained for
most steps, and maps of sound methods lose their structure gradually (Adebayo et al. 2018),
so a bound on every step would fail them; the fully randomised model is the case
the test is about, and the one Quantus reports with ``return_last_correlation=True`` (and
:func:`tfmollify.evaluation.metrics.consistency`). The whole cascade is computed anyway and
shown in the failure message. Why the mean over examples: a map has few values in a small test,
so one example's correlation is noisy (about ``1 / sqrt(F - 1)`` for unrelated maps of ``F``
values); the mean is steadier.

The default threshold, :data:`MAX_SIMILARITY` = 0.5: both measures are 1 for identical maps and
about 0 for unrelated ones; an explainer that ignores the weights (it shows the input, or depends
on the architecture alone) scores 1 with a seed, and 0.6 to 0.9 without one (its own noise then
differs between the models). Above 0.5, more than a quarter of the variance of the maps' ranks
(``rho^2``) survives the loss of everything the model learned. Measured on the digits CNN of
:mod:`tfmollify.evaluation.digits` (trained on 1200 images, 93% test accuracy; 16 test images,
SmoothGrad with 16 samples), the last step's mean is 0.03 to 0.26 for the gradient, input x
gradient, integrated gradients and SmoothGrad-squared, with both measures and both tests, and
1.0 for maps that show the input. Methods that multiply by the input keep its structure in the
maps of a random model and score highest among the sound ones (Adebayo et al. 2018; Hedström
et al. 2023), and so can a small untrained network with global pooling, from its architecture
alone (fewer windows cover the border pixels). The threshold is a convention, not a calibrated
test: lower it for a stricter check, raise it knowingly.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from tfmollify.evaluation import metrics
from tfmollify.testing import config

__all__ = ["MAX_SIMILARITY", "SMOOTH_MPRT_SAMPLES", "assert_mprt", "assert_smooth_mprt"]

#: The default bound on the mean similarity of the fully randomised model's maps (see above).
MAX_SIMILARITY = 0.5

#: The default number of noisy copies of :func:`assert_smooth_mprt`, before the
#: ``--tfm-samples`` factor (Quantus' default, 50, was set for ImageNet).
SMOOTH_MPRT_SAMPLES = 20


def _check_bound(max_similarity: Any) -> float:
    if (isinstance(max_similarity, bool) or not isinstance(max_similarity, numbers.Real)
            or not -1.0 <= float(max_similarity) < 1.0):
        raise ValueError(
            "Argument `max_similarity` must be a float in [-1, 1) (the similarity is 1 for "
            f"identical maps). Received: max_similarity={max_similarity!r}"
        )
    return float(max_similarity)


def _verdict(result: metrics.RandomisationResult, bound: float, test: str, seeds: str) -> None:
    """Raise an ``AssertionError`` when the last step's mean similarity is above ``bound``."""
    last = result.last
    mean = result.mean()[-1]
    if not np.isnan(mean) and mean <= bound:
        return
    which = (f"after randomising all {len(result.layers)} weighted layers"
             if result.layer_order != "independent"
             else f"with only {result.layers[-1]!r} randomised")
    head = (f"{test}: the explanations stay similar when the model's weights are randomised: "
            f"mean {result.measure} similarity {which} = {mean:.4f} > max_similarity = {bound}")
    if np.isnan(mean):
        head = (f"{test}: the similarity is undefined (NaN) for every example {which}: the maps "
                "are constant (e.g. all zero), so the test cannot tell whether they depend on "
                "the weights")
    per_example = np.array2string(last, precision=3, separator=", ")
    raise AssertionError(
        f"{head}.\nThe cascade, one line per step (step k randomises the layers of lines "
        f"1..k{'' if result.layer_order != 'independent' else ', here only line k'}):\n"
        f"{result.table()}\nPer example at the last step: {per_example}\n"
        "An explanation that does not depend on what the model learned scores near 1 "
        f"(Adebayo et al. 2018). Reproduce with {seeds}."
    )


def _seeds(explainer: Any, seed: int) -> str:
    own = getattr(explainer, "seed", None)
    return f"seed={seed} (the explainer's seed={own})"


def assert_mprt(
    explainer: Any,
    inputs: Any,
    targets: Any = None,
    *,
    max_similarity: float = MAX_SIMILARITY,
    similarity: str | Callable[[np.ndarray, np.ndarray], Any] = "spearman",
    seed: int = 0,
    layer_order: str = "top_down",
) -> metrics.RandomisationResult:
    """Assert that the explanations change when the model's weights are randomised (MPRT).

    Runs :func:`tfmollify.evaluation.metrics.mprt` (Quantus' ``MPRT`` preprocessing: maps
    divided by their largest ``|value|``, then absolute) and fails when the mean over the
    examples of the last step's similarity (every weighted layer re-initialised) is above
    ``max_similarity``, or undefined (constant maps). The module docstring explains the choice
    of the step and of the default threshold, 0.5. The user's model is not modified.

    Args:
        explainer: A :class:`tfmollify.Explainer` of a Sequential or functional Keras model;
            give it a ``seed``, so that the trained and randomised models share its noise.
        inputs: The inputs, as for ``explainer.explain``.
        targets: As for ``explainer.explain``.
        max_similarity: The bound on the mean similarity, in [-1, 1).
        similarity: ``"spearman"`` (default) or ``"ssim"``, or a callable (see ``mprt``).
        seed: Seed of the re-initialised weights.
        layer_order: The cascade's order (the last step is the same model for both cascades).

    Returns:
        The :class:`~tfmollify.evaluation.metrics.RandomisationResult`, when the check passes.

    Raises:
        AssertionError: With the layers, the similarity of each step (mean, min and max over
            the examples), each example's last similarity and the seeds.
        ValueError: For ``max_similarity`` outside [-1, 1), and as ``mprt``.
        TypeError: As ``mprt``.

    Example:

    >>> import keras, numpy as np
    >>> import tfmollify as tfm
    >>> from tfmollify.testing.sanity import assert_mprt
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(16, activation="tanh"),
    ...                           keras.layers.Dense(3)])
    >>> x = np.random.default_rng(0).normal(size=(4, 32)).astype("float32")
    >>> result = assert_mprt(tfm.SmoothGrad(model, num_samples=4, seed=0), x, [0, 1, 2, 0])
    >>> bool(result.mean()[-1] <= 0.5)
    True
    """
    bound = _check_bound(max_similarity)
    result = metrics.mprt(explainer, inputs, targets, similarity=similarity, seed=seed,
                          layer_order=layer_order)
    _verdict(result, bound, "MPRT", _seeds(explainer, seed))
    return result


def assert_smooth_mprt(
    explainer: Any,
    inputs: Any,
    targets: Any = None,
    *,
    max_similarity: float = MAX_SIMILARITY,
    similarity: str | Callable[[np.ndarray, np.ndarray], Any] = "spearman",
    nr_samples: int = SMOOTH_MPRT_SAMPLES,
    noise_magnitude: float = 0.1,
    seed: int = 0,
    layer_order: str = "bottom_up",
) -> metrics.RandomisationResult:
    """Assert that the denoised explanations change when the weights are randomised.

    As :func:`assert_mprt`, with :func:`tfmollify.evaluation.metrics.smooth_mprt` (Hedström et
    al. 2023: each map is the average over noisy copies of the inputs, divided by its root mean
    square, then absolute). The number of copies is ``nr_samples`` times the ``--tfm-samples``
    factor (:func:`tfmollify.testing.config.scaled`), at least 1.

    Args:
        explainer: A :class:`tfmollify.Explainer` of a Sequential or functional Keras model.
        inputs: The inputs, as for ``explainer.explain``.
        targets: As for ``explainer.explain``.
        max_similarity: The bound on the mean similarity, in [-1, 1).
        similarity: ``"spearman"`` (default) or ``"ssim"``, or a callable.
        nr_samples: Noisy copies per explanation before the factor (the last one is
            noise-free), >= 1.
        noise_magnitude: The noise's standard deviation as a fraction of each example's range.
        seed: Seed of the re-initialised weights and of the input noise.
        layer_order: The cascade's order (Quantus' default here, ``"bottom_up"``).

    Returns:
        The :class:`~tfmollify.evaluation.metrics.RandomisationResult`, when the check passes.

    Raises:
        AssertionError: As :func:`assert_mprt`.
        ValueError: For ``max_similarity`` outside [-1, 1), and as ``smooth_mprt``.
        TypeError: As ``smooth_mprt``.

    Example:

    >>> import keras, numpy as np
    >>> import tfmollify as tfm
    >>> from tfmollify.testing.sanity import assert_smooth_mprt
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((32,)), keras.layers.Dense(16, activation="tanh"),
    ...                           keras.layers.Dense(3)])
    >>> x = np.random.default_rng(0).normal(size=(4, 32)).astype("float32")
    >>> e = tfm.SmoothGrad(model, num_samples=4, seed=0)
    >>> assert_smooth_mprt(e, x, [0, 1, 2, 0], nr_samples=4).similarity.shape
    (2, 4)
    """
    bound = _check_bound(max_similarity)
    if (isinstance(nr_samples, bool) or not isinstance(nr_samples, (int, np.integer))
            or nr_samples < 1):
        raise ValueError(
            f"Argument `nr_samples` must be an int >= 1. Received: nr_samples={nr_samples!r}"
        )
    count = config.scaled(int(nr_samples))
    result = metrics.smooth_mprt(
        explainer, inputs, targets, similarity=similarity, nr_samples=count,
        noise_magnitude=noise_magnitude, seed=seed, layer_order=layer_order,
    )
    _verdict(result, bound, f"Smooth-MPRT ({count} noisy copies)", _seeds(explainer, seed))
    return result

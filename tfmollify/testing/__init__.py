"""tfmollify.testing: property-based checks that users run on their own models and kernels.

A team that ships explanations can prove in its CI that they still mean what they claim when the
model, the kernel or the settings change:

- **Honest Monte Carlo assertions**: :func:`assert_mc_close` (a z-test per element, Bonferroni
  over the elements: the family-wise false-failure rate is ``alpha``) and
  :func:`assert_mollified` (an explainer against a closed-form mollified gradient);
- **a user's kernel checked**: :func:`check_kernel` (normalised, symmetric, ``cdf``/``icdf``
  inverse and consistent with the density, the declared variance and support, eq. 30's
  epsilon, sampling through ``icdf`` by a KS test);
- **the library's promises on the user's model**: :func:`check_guarantees` (seed
  reproducibility, batch-size and chunk invariance, the model untouched, finite results,
  ``batch_size`` respected);
- **sanity checks**: :func:`assert_mprt` and :func:`assert_smooth_mprt` (the cascading model
  parameter randomisation test and its smoothed form, :func:`tfmollify.metrics.mprt`);
- **Hypothesis strategies**: :mod:`tfmollify.testing.strategies` (kernels, epsilons, settings,
  small Keras models, matching inputs and targets), imported on first use: Hypothesis is
  optional (``pip install "tfmollify[testing]"``), as is SciPy (for :func:`check_kernel`).

The pytest plugin (installed with tfmollify, module ``tfmollify_pytest``) adds
``--tfm-samples FACTOR``, a factor on the sample counts of these checks, and prints the seeds
of a failing Monte Carlo check. The guide: ``docs/guides/testing.md``.

Example:

>>> import numpy as np
>>> from tfmollify.testing import assert_mc_close
>>> assert_mc_close(np.array([1.01, 1.98]), np.array([0.01, 0.02]), np.array([1.0, 2.0]))
"""

from __future__ import annotations

import importlib
from typing import Any

from tfmollify.testing import assertions, config, guarantees, kernels, sanity
from tfmollify.testing.assertions import assert_mc_close, assert_mollified, bonferroni_threshold
from tfmollify.testing.config import Check, Report
from tfmollify.testing.guarantees import (
    GuaranteeReport,
    assert_model_unchanged,
    check_guarantees,
    model_fingerprint,
)
from tfmollify.testing.kernels import KernelReport, check_kernel
from tfmollify.testing.sanity import MAX_SIMILARITY, assert_mprt, assert_smooth_mprt

__all__ = [
    "MAX_SIMILARITY",
    "Check",
    "GuaranteeReport",
    "KernelReport",
    "Report",
    "assert_mc_close",
    "assert_model_unchanged",
    "assert_mollified",
    "assert_mprt",
    "assert_smooth_mprt",
    "assertions",
    "bonferroni_threshold",
    "check_guarantees",
    "check_kernel",
    "config",
    "guarantees",
    "kernels",
    "model_fingerprint",
    "sanity",
    "strategies",
]


def __getattr__(name: str) -> Any:
    """``tfmollify.testing.strategies``, imported on first use (it needs Hypothesis)."""
    if name == "strategies":
        try:
            return importlib.import_module("tfmollify.testing.strategies")
        except ImportError as exc:
            raise ImportError(
                f"tfmollify.testing.strategies needs Hypothesis ({exc}). Install it with "
                'pip install "tfmollify[testing]".'
            ) from None
    raise AttributeError(f"module 'tfmollify.testing' has no attribute {name!r}")

"""Shared test set-up: quiet TensorFlow, one Hypothesis profile, small model factories."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "tfmollify",
    derandomize=True,
    deadline=None,
    database=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough", parent=settings.get_profile("tfmollify"), max_examples=400
)  # ./scripts/test --hypothesis-profile=thorough: 10x the examples (local runs)
if not any(arg.startswith("--hypothesis-profile") for arg in sys.argv):
    settings.load_profile("tfmollify")

BUILTIN_KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect")


@pytest.fixture(autouse=True)
def _quiet_tf_logger():
    """Quietens TensorFlow's Python logger in tests that use it (never imports it itself, so the
    reference tests run without TensorFlow)."""
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        tf.get_logger().setLevel("ERROR")
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

"""Shared test fixtures (the Hypothesis profiles and the per-worker threads are set in the
repository's root conftest.py)."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import pytest

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

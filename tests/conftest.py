"""Shared test fixtures (the Hypothesis profiles and the per-worker threads are set in the
repository's root conftest.py)."""

from __future__ import annotations

import sys

import numpy as np
import pytest


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


@pytest.fixture(scope="session")
def shared_models():
    """``shared_models(builder, *args, **kwargs)``: the model ``builder(*args, **kwargs)``,
    built once per test run (per xdist worker) and then shared.

    Only for tests that call the model and read its weights: a test that trains it, assigns or
    freezes its weights, or checks that a failure leaves it untouched builds its own.
    """
    cache: dict = {}

    def get(builder, *args, **kwargs):
        key = (builder.__module__, builder.__qualname__, args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = builder(*args, **kwargs)
        return cache[key]

    return get

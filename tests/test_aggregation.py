"""Streaming aggregation against plain NumPy reductions in float64."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

from tfmollify.core import aggregation as agg


def stream(samples: np.ndarray, chunk: int, units_are_samples: bool = True, dtype=tf.float32):
    """Runs the streaming aggregation over ``samples [B, n, D]`` in chunks of ``chunk``."""
    b, n, d = samples.shape
    state = agg.init_state(tf.constant(b), d, dtype)
    for start in range(0, n, chunk):
        vals, mask = agg.clean(tf.constant(samples[:, start:start + chunk], dtype))
        state = agg.merge_chunk(state, vals, mask, units_are_samples)
    return state


def stream_units(samples: np.ndarray, chunk: int, dtype=tf.float32):
    """Units = groups along axis 1: ``samples [B, G, n, D]``."""
    b, g, n, d = samples.shape
    state = agg.init_state(tf.constant(b), d, dtype)
    for j in range(g):
        unit = agg.init_state(tf.constant(b), d, dtype)
        for start in range(0, n, chunk):
            vals, mask = agg.clean(tf.constant(samples[:, j, start:start + chunk], dtype))
            unit = agg.merge_chunk(unit, vals, mask, False)
        state = agg.merge_unit(state, unit)
    return state


def expected(a: np.ndarray, how: str) -> np.ndarray:
    a = a.astype(np.float64)
    if how == "smoothgrad":
        return a.mean(axis=1)
    if how == "smoothgrad_sq":
        return (a**2).mean(axis=1)
    return a.var(axis=1)


@pytest.mark.parametrize("how", agg.AGGREGATIONS)
@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
def test_streaming_equals_one_pass(how, chunk):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 50, 4)).astype(np.float32) * [1, 2, 3, 4]
    value, _ = agg.finalize(stream(a, chunk), how)
    np.testing.assert_allclose(value.numpy(), expected(a, how), rtol=2e-5, atol=1e-6)


def test_variance_with_a_large_offset_is_not_cancelled():
    """E[a^2] - E[a]^2 in float32 fails on data with a big constant offset; Chan's merge doesn't."""
    rng = np.random.default_rng(1)
    a = (1e4 + 1e-2 * rng.normal(size=(2, 400, 3))).astype(np.float32)
    want = a.astype(np.float64).var(axis=1)
    naive = (a**2).mean(axis=1) - a.mean(axis=1) ** 2  # float32 textbook formula
    assert np.max(np.abs(naive - want) / want) > 0.5  # the trap is real
    for chunk in (1, 16, 400):
        value, _ = agg.finalize(stream(a, chunk), "vargrad")
        np.testing.assert_allclose(value.numpy(), want, rtol=1e-2)


@pytest.mark.parametrize("chunk", [1, 4, 60])
def test_stderr_over_independent_samples(chunk):
    rng = np.random.default_rng(2)
    a = (5.0 + rng.standard_t(df=8, size=(2, 60, 3))).astype(np.float64)
    state = stream(a, chunk, dtype=tf.float64)
    n = a.shape[1]
    _, se = agg.finalize(state, "smoothgrad")
    np.testing.assert_allclose(se.numpy(), a.std(axis=1, ddof=1) / np.sqrt(n), rtol=1e-9)
    _, se = agg.finalize(state, "smoothgrad_sq")
    np.testing.assert_allclose(se.numpy(), (a**2).std(axis=1, ddof=1) / np.sqrt(n), rtol=1e-9)
    _, se = agg.finalize(state, "vargrad")
    infl = (a - a.mean(axis=1, keepdims=True)) ** 2  # influence function of the variance
    np.testing.assert_allclose(se.numpy(), infl.std(axis=1, ddof=1) / np.sqrt(n), rtol=1e-9)


@pytest.mark.parametrize("chunk", [1, 5, 10])
def test_stderr_over_units(chunk):
    """With grouped samples (weight draws), the standard error comes from the group means."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(2, 7, 10, 3)) + rng.normal(size=(2, 7, 1, 3))  # shared per group
    state = stream_units(a, chunk, dtype=tf.float64)
    flat = a.reshape(2, 70, 3)
    for how in agg.AGGREGATIONS:
        value, se = agg.finalize(state, how)
        np.testing.assert_allclose(value.numpy(), expected(flat, how), rtol=1e-9)
    _, se = agg.finalize(state, "smoothgrad")
    means = a.mean(axis=2)
    np.testing.assert_allclose(se.numpy(), means.std(axis=1, ddof=1) / np.sqrt(7), rtol=1e-9)
    _, se = agg.finalize(state, "smoothgrad_sq")
    sq = (a**2).mean(axis=2)
    np.testing.assert_allclose(se.numpy(), sq.std(axis=1, ddof=1) / np.sqrt(7), rtol=1e-9)
    _, se = agg.finalize(state, "vargrad")
    mu = flat.mean(axis=1)[:, None, None, :]
    infl = ((a - mu) ** 2).mean(axis=2)
    np.testing.assert_allclose(se.numpy(), infl.std(axis=1, ddof=1) / np.sqrt(7), rtol=1e-9)


def test_nonfinite_samples_are_left_out():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(2, 12, 3))
    bad = a.copy()
    bad[0, 3, 1] = np.nan
    bad[0, 7, 0] = np.inf
    bad[1, 0, 2] = -np.inf
    state = stream(bad, 5, dtype=tf.float64)
    np.testing.assert_array_equal(state.n.numpy(), [10, 11])
    keep0 = np.delete(a[0], [3, 7], axis=0)
    keep1 = a[1, 1:]
    value, _ = agg.finalize(state, "smoothgrad")
    np.testing.assert_allclose(value.numpy()[0], keep0.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(value.numpy()[1], keep1.mean(axis=0), rtol=1e-12)


def test_all_nonfinite_gives_nan_and_zero_count():
    a = np.full((1, 4, 2), np.nan)
    state = stream(a, 2, dtype=tf.float64)
    value, se = agg.finalize(state, "smoothgrad")
    assert state.n.numpy()[0] == 0
    assert np.all(np.isnan(value.numpy())) and np.all(np.isnan(se.numpy()))


@given(
    n=st.integers(2, 40),
    chunk=st.integers(1, 40),
    offset=st.floats(-1e3, 1e3),
    scale=st.floats(1e-2, 1e2),
)
def test_chunking_never_changes_the_result(n, chunk, offset, scale):
    rng = np.random.default_rng(n)
    a = offset + scale * rng.normal(size=(2, n, 3))
    one = stream(a, n, dtype=tf.float64)
    many = stream(a, chunk, dtype=tf.float64)
    for how in agg.AGGREGATIONS:
        v1, s1 = agg.finalize(one, how)
        v2, s2 = agg.finalize(many, how)
        np.testing.assert_allclose(v2.numpy(), v1.numpy(), rtol=1e-9, atol=1e-9 * scale**2)
        np.testing.assert_allclose(s2.numpy(), s1.numpy(), rtol=1e-7, atol=1e-9 * scale**2)


@pytest.mark.parametrize("units", [False, True])
def test_shift_is_per_example_when_a_first_chunk_is_all_nonfinite(units):
    """Example 0's first chunk is all NaN: its shift must come from its first finite chunk, not
    from the zeros of the masked chunk, or float32 cancels its variance (offset 1e4, sd 1e-2)."""
    rng = np.random.default_rng(5)
    a = (1e4 + 1e-2 * rng.normal(size=(2, 400, 3))).astype(np.float32)
    a[1] -= 2e4  # a different offset per example
    bad = a.copy()
    bad[0, :16] = np.nan
    want = np.stack([a[0, 16:].astype(np.float64).var(axis=0),
                     a[1].astype(np.float64).var(axis=0)])
    if units:
        state = stream_units(bad.reshape(2, 25, 16, 3), 16)
    else:
        state = stream(bad, 16)
    np.testing.assert_array_equal(state.n.numpy(), [384, 400])
    value, se = agg.finalize(state, "vargrad")
    np.testing.assert_allclose(value.numpy(), want, rtol=2e-2)
    if not units:  # the vargrad stderr subtracts terms of size (mean - shift)^2: the trap
        infl = [(k - k.astype(np.float64).mean(axis=0)) ** 2 for k in (a[0, 16:], a[1])]
        want_se = np.stack([i.std(axis=0, ddof=1) / np.sqrt(len(i)) for i in infl])
        np.testing.assert_allclose(se.numpy(), want_se, rtol=5e-2)


@pytest.mark.parametrize("chunk", [1, 3, 50])
def test_mean_only_path_equals_the_full_merge(chunk):
    """``with_m2=False, with_stderr=False`` (plain SmoothGrad) keeps the same mean and count."""
    rng = np.random.default_rng(6)
    a = 3.0 + rng.normal(size=(2, 50, 4))
    a[1, 7] = np.nan
    b, n, d = a.shape
    full = stream(a, chunk, dtype=tf.float64)
    lean = agg.init_state(tf.constant(b), d, tf.float64)
    for start in range(0, n, chunk):
        vals, mask = agg.clean(tf.constant(a[:, start:start + chunk], tf.float64))
        lean = agg.merge_chunk(lean, vals, mask, True, with_stderr=False, with_m2=False)
    np.testing.assert_array_equal(lean.n.numpy(), full.n.numpy())
    v_full, _ = agg.finalize(full, "smoothgrad", with_stderr=False)
    v_lean, _ = agg.finalize(lean, "smoothgrad", with_stderr=False)
    np.testing.assert_allclose(v_lean.numpy(), v_full.numpy(), rtol=1e-13)
    np.testing.assert_allclose(v_lean.numpy()[0], a[0].mean(axis=0), rtol=1e-13)

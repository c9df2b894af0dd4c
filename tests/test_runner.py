"""tfmollify.adapter.runner: one immutable Explanation per call, thread safety, compute dtype,
caches."""

from __future__ import annotations

import concurrent.futures

import keras
import numpy as np
import pytest

import tfmollify as tfm


def mlp(seed: int = 0, dtype: str = "float32"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((5,), dtype=dtype), keras.layers.Dense(8, activation="tanh", dtype=dtype),
         keras.layers.Dense(3, dtype=dtype)]
    )


X = np.random.default_rng(3).normal(size=(4, 5)).astype(np.float32)


@pytest.mark.parametrize("mode", ["sg", "ng", "fg"])
def test_explain_full_returns_everything_of_the_call(mode):
    e = tfm.Explainer(mlp(), mode=mode, num_samples=6, num_weight_samples=4, seed=1)
    r = e.explain_full(X, [0, 1, 2, 0])
    assert isinstance(r, tfm.Explanation)
    a, s = e.explain(X, [0, 1, 2, 0], return_stderr=True)
    np.testing.assert_array_equal(r.attributions, a)
    np.testing.assert_array_equal(r.stderr, s)
    per = {"sg": 6, "ng": 4, "fg": 24}[mode]
    assert r.num_samples.tolist() == [per] * 4 and r.finite_samples.tolist() == [per] * 4
    assert r.nonfinite_count.tolist() == [0] * 4
    with pytest.raises(AttributeError):
        r.attributions = None  # frozen


def test_one_explainer_shared_by_threads_gives_every_call_its_own_result():
    """Defect 3: per-call results used to live on the explainer (last_*); with tolerance, the
    number of samples differs per call, and each thread must get its own."""
    model = mlp()
    e = tfm.SmoothGrad(model, num_samples=8, seed=0, tolerance=0.05, max_samples=64)
    rng = np.random.default_rng(0)
    calls = [(rng.normal(size=(3, 5)).astype(np.float32) * (1 + k), [k % 3] * 3, [k, k + 1, k + 2])
             for k in range(8)]
    serial = [e.explain_full(x, t, seeds=s) for x, t, s in calls]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(lambda c: e.explain_full(c[0], c[1], seeds=c[2]), calls))
    assert len({tuple(r.num_samples) for r in serial}) > 1  # the calls really differ
    for want, got in zip(serial, threaded, strict=True):
        np.testing.assert_array_equal(got.attributions, want.attributions)
        np.testing.assert_array_equal(got.stderr, want.stderr)
        np.testing.assert_array_equal(got.num_samples, want.num_samples)


@pytest.mark.parametrize("mode", ["sg", "fg"])
def test_float64_arrays_and_lists_give_the_float32_result_bit_for_bit(mode):
    """Defect 8: the compute dtype follows the model, not the array (NumPy's float64 default
    used to get other noise than the same float32 values)."""
    e = tfm.Explainer(mlp(), mode=mode, num_samples=4, num_weight_samples=2, seed=5)
    want = e(X, [0, 1, 2, 0])
    x64 = X.astype(np.float64)
    got = e(x64, [0, 1, 2, 0])
    assert got.dtype == np.float64  # results in the inputs' dtype ...
    np.testing.assert_array_equal(got, want.astype(np.float64))  # ... with the float32 values
    np.testing.assert_array_equal(e(X.tolist(), [0, 1, 2, 0]), want.astype(np.float64))


def test_a_float64_model_computes_in_float64():
    e = tfm.SmoothGrad(mlp(dtype="float64"), num_samples=4, seed=5)
    x64 = np.random.default_rng(1).normal(size=(2, 5))
    a = e(x64, [0, 1])
    b = e(x64.astype(np.float32).astype(np.float64), [0, 1])
    assert not np.array_equal(a, b)  # the float64 digits matter: computed in float64


@pytest.mark.parametrize("mode", ["ng", "fg"])
def test_weight_noise_tables_are_keyed_by_their_seed(mode):
    """Defect 4: the cached table of weight noise belongs to the seed that drew it; rounds of
    `tolerance` (other weight seeds) get their own draws, whatever the cache setting."""
    model = mlp()
    kw = dict(mode=mode, num_samples=2, num_weight_samples=4, seed=3, tolerance=1e-6,
              max_samples=3 * (4 if mode == "ng" else 8))
    cached = tfm.Explainer(model, **kw)
    fresh = tfm.Explainer(model, weight_noise_cache_mb=0, **kw)
    a, b = cached.explain_full(X, 1), fresh.explain_full(X, 1)
    assert a.num_samples.tolist() == [kw["max_samples"]] * 4  # three rounds ran
    np.testing.assert_allclose(a.attributions, b.attributions, rtol=1e-6, atol=1e-7)
    runner = cached.runner
    assert runner.cache_info()["tables"] == 1  # only the explainer's own seed is kept
    other = tfm.Explainer(model, mode=mode, num_samples=2, num_weight_samples=4, seed=4)
    t3 = runner.cached_table().numpy()
    other(X, 1)
    assert not np.array_equal(t3, other.runner.cached_table().numpy())


def test_tolerance_rounds_draw_new_weight_noise_as_documented():
    """Round r of `tolerance` draws its weights from the explainer's seed and r: the result of
    three rounds is the mean of three plain NoiseGrad calls with those round seeds, so no two
    rounds repeat their weight draws."""
    model = mlp()
    seed, m = 11, 4
    e = tfm.NoiseGrad(model, num_weight_samples=m, seed=seed, tolerance=1e-9,
                      max_samples=3 * m)
    got = e.explain_full(X, 1)
    assert got.num_samples.tolist() == [3 * m] * 4
    base = int(tfm.sampling.weight_key(seed)[0])
    seeds = [seed] + [int(tfm.sampling.example_seeds(base, 1, r)[0]) for r in (1, 2)]
    rounds = [tfm.NoiseGrad(model, num_weight_samples=m, seed=s)(X, 1) for s in seeds]
    np.testing.assert_allclose(got.attributions, np.mean(rounds, axis=0), rtol=1e-5, atol=1e-7)
    assert not np.allclose(rounds[1], rounds[2])


def test_padding_draws_of_a_last_short_pass_are_not_counted():
    """N = 7 with batch_size 4: passes of 4 draws, the last padded by one draw that must be
    masked out of the value and the counts."""
    e = tfm.SmoothGrad(mlp(), num_samples=7, seed=2)
    whole = e.explain_full(X, 1)
    part = e.replace(batch_size=4).explain_full(X, 1)
    np.testing.assert_allclose(part.attributions, whole.attributions, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(part.stderr, whole.stderr, rtol=1e-4, atol=1e-7)
    assert part.finite_samples.tolist() == part.num_samples.tolist() == [7] * 4

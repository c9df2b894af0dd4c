"""Antithetic and Sobol sampling: unbiased, better than i.i.d. where they should be, honest errors;
adaptive stopping."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from test_engine import linear_model, mlp, sine_model

import reference
import tfmollify as tfm
from tfmollify.core import sampling
from tfmollify.testing.assertions import assert_mc_close

KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect")


def quadratic(v: tf.Tensor) -> tf.Tensor:
    """f(x) = sum_i c_i x_i^2: its gradient 2 c x is affine in x, so in the noise."""
    c = tf.constant([0.5, -1.0, 2.0, 0.25], v.dtype)
    return tf.reduce_sum(c * v * v, axis=1, keepdims=True)


@pytest.mark.parametrize("kernel", KERNELS)
def test_antithetic_is_exact_when_the_gradient_is_affine_in_the_noise(kernel):
    x = np.array([[0.3, -1.2, 2.0, 0.7], [1.0, 0.0, -0.5, 3.0]])
    exact = 2 * np.array([0.5, -1.0, 2.0, 0.25]) * x
    got = tfm.SmoothGrad(quadratic, kernel=kernel, num_samples=6, epsilon=0.8, seed=1,
                         sampler="antithetic")(x)
    np.testing.assert_allclose(got, exact, rtol=1e-12, atol=1e-12)
    iid = tfm.SmoothGrad(quadratic, kernel=kernel, num_samples=6, epsilon=0.8, seed=1)(x)
    assert np.abs(iid - exact).max() > 1e-3  # i.i.d. noise does not cancel
    # NoiseGrad on a linear model: the input gradient W (1 + delta z) is affine in z
    w = np.random.default_rng(0).normal(size=(4, 3))
    model = linear_model(w, "float64")
    ng = tfm.NoiseGrad(model, kernel=kernel if kernel != "poisson" else "rect",
                       num_weight_samples=4, seed=3, sampler="antithetic")(x, [0, 2])
    np.testing.assert_allclose(ng, w.T[[0, 2]], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", ["gaussian", "rect", "sigmoid"])
def test_antithetic_sg_is_unbiased_on_the_sine_model_with_honest_errors(kernel):
    """f = sum sin(x): the exact mollified gradient is cos(x) chi(eps); an antithetic pair's
    mean is cos(x) cos(eps z), whose variance is cos^2 x ((1 + chi(2 eps))/2 - chi(eps)^2)."""
    x = np.linspace(-2.0, 2.5, 12).reshape(2, 6)
    eps, n = 0.7, 4000
    f = lambda v: tf.reduce_sum(tf.sin(v), axis=1, keepdims=True)  # noqa: E731
    est, se = tfm.SmoothGrad(f, kernel=kernel, num_samples=n, epsilon=eps, seed=5,
                             sampler="antithetic").explain(x, return_stderr=True)
    exact = reference.sg_sine_grad(x, eps, kernel)
    chi, chi2 = reference.char_fn(kernel, eps), reference.char_fn(kernel, 2 * eps)
    pair_sd = np.abs(np.cos(x)) * np.sqrt((1 + chi2) / 2 - chi**2)
    true_se = pair_sd / np.sqrt(n / 2)
    np.testing.assert_allclose(se, true_se, rtol=0.1)
    assert np.max(np.abs(est - exact) / true_se) < 4.5
    # against i.i.d. at the same n: the odd part sin(x) sin(eps z) cancels within pairs, the even
    # part cos(x) cos(eps z) is counted twice; antithetic wins where sin^2 x dominates
    iid_var = (1 + np.cos(2 * x) * chi2) / 2 - (np.cos(x) * chi) ** 2
    gain = iid_var / (2 * pair_sd**2)
    odd = np.sin(x) ** 2 > 0.9
    assert np.all(gain[odd] > 1.5) and np.all(gain[np.cos(x) ** 2 > 0.9] < 1.0), gain


def test_antithetic_ng_and_fg_match_quadrature():
    w, x0, delta, eps = 1.3, 0.8, 0.3, 0.4
    model = sine_model(w)
    x = np.array([[x0], [-1.1]])
    ng, ng_se = tfm.NoiseGrad(model, kernel="gaussian", num_weight_samples=3000,
                              weight_epsilon=delta, seed=2, sampler="antithetic").explain(
        x, targets=0, return_stderr=True
    )
    want = np.array([reference.ng_sine_grad(v, w, delta, "gaussian") for v in x[:, 0]])
    assert np.all(np.abs(ng[:, 0] - want) < 4.5 * ng_se[:, 0]), (ng[:, 0], want, ng_se[:, 0])
    fg, fg_se = tfm.FusionGrad(model, kernel="rect", num_weight_samples=600, num_samples=8,
                               weight_epsilon=delta, epsilon=eps, seed=3,
                               sampler="antithetic").explain(x, targets=0, return_stderr=True)
    want = np.array([reference.fg_sine_grad(v, w, delta, eps, "rect") for v in x[:, 0]])
    assert np.all(np.abs(fg[:, 0] - want) < 4.5 * fg_se[:, 0]), (fg[:, 0], want, fg_se[:, 0])


def test_antithetic_stderr_matches_the_spread_over_seeds():
    model = mlp()
    x = np.random.default_rng(3).normal(size=(2, 5)).astype(np.float32)
    for mode in ("sg", "ng", "fg"):
        e = tfm.Explainer(model, mode=mode, num_samples=20, num_weight_samples=6, epsilon=0.5,
                          sampler="antithetic")
        runs, ses = zip(*[e.explain(x, [0, 2], return_stderr=True) for _ in range(40)], strict=True)
        ratio = np.std(runs, axis=0, ddof=1).mean() / np.mean(ses, axis=0).mean()
        assert 0.7 < ratio < 1.35, (mode, ratio)


@pytest.mark.parametrize("mode", ["sg", "ng", "fg"])
def test_antithetic_noise_is_the_documented_pairs_and_chunking_changes_nothing(mode):
    model = mlp(seed=2)
    x = np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32)
    kw = dict(mode=mode, kernel="sigmoid", num_samples=6, num_weight_samples=4, seed=7,
              sampler="antithetic", aggregation="vargrad")
    whole, se = tfm.Explainer(model, **kw).explain(x, [0, 1, 2], return_stderr=True)
    for batch_size in (2, 4, 10):
        part, se_part = tfm.Explainer(model, batch_size=batch_size, **kw).explain(
            x, [0, 1, 2], return_stderr=True
        )
        np.testing.assert_allclose(part, whole, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(se_part, se, rtol=1e-4, atol=1e-7)
    xla = tfm.Explainer(model, jit_compile=True, **kw).explain(x, [0, 1, 2])  # static shapes
    np.testing.assert_allclose(xla, whole, rtol=1e-4, atol=1e-6)
    z = sampling.input_noise(tfm.kernels.get("sigmoid"), [11, 12], 0, 6, 5, antithetic=True)
    np.testing.assert_allclose(z[:, 1::2], -z[:, 0::2], atol=1e-6)
    iid = sampling.input_noise(tfm.kernels.get("sigmoid"), [11, 12], 0, 3, 5)
    np.testing.assert_array_equal(z[:, 0::2], iid)  # pair p uses stream index p


@pytest.mark.slow
def test_antithetic_export_and_argument_checks(tmp_path):
    model = mlp(seed=1)
    x = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    explainer = tfm.FusionGrad(model, num_samples=4, num_weight_samples=2, seed=0,
                               sampler="antithetic")
    fn = tf.saved_model.load(explainer.export(str(tmp_path))).signatures["serving_default"]
    seeds = np.array([3, 4], np.int64)
    got = fn(inputs=tf.constant(x), targets=tf.constant([0, 1]), seeds=tf.constant(seeds))
    np.testing.assert_allclose(got["attributions"].numpy(),
                               explainer.explain(x, [0, 1], seeds=seeds), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="`num_samples` must be even"):
        tfm.SmoothGrad(model, num_samples=5, sampler="antithetic")
    with pytest.raises(ValueError, match="`num_weight_samples` must be even"):
        tfm.NoiseGrad(model, num_weight_samples=3, sampler="antithetic")
    with pytest.raises(ValueError, match="`batch_size` must be at least 2"):
        tfm.SmoothGrad(model, num_samples=4, batch_size=1, sampler="antithetic")
    with pytest.raises(ValueError, match="`sampler`"):
        tfm.SmoothGrad(model, sampler="halton")


@pytest.mark.slow
# -- randomized quasi-Monte Carlo (Sobol) ------------------------------------------------------
def test_sobol_points_are_tensorflows_sequence_digitally_shifted():
    """The XOR construction reproduces tf.math.sobol_sample bit for bit (which lists points 1..);
    a replicate of 2**k shifted points puts one point in each 1/2**k interval of every coordinate,
    including coordinates past SOBOL_MAX_DIM; each point is uniform (mean 1/2, variance 1/12)."""
    v = sampling.sobol_directions(40, 7)
    pts = sampling.sobol_bits(tf.range(128), v).numpy()
    ref = tf.math.sobol_sample(40, 127, dtype=tf.float64).numpy() * 2.0**32
    np.testing.assert_array_equal(pts[1:], ref)
    assert not pts[0].any()  # point 0 is the origin
    size = sampling.SOBOL_MAX_DIM + 300
    layout = sampling.Sobol(16, size)
    keys = sampling.example_keys(tf.constant([5, 6], tf.int64))
    u = sampling.sobol_uniforms(keys, 0, 48, size, tf.float32, layout).numpy()  # 3 replicates
    cells = np.floor(u.reshape(2, 3, 16, size) * 16)
    assert np.all(np.sort(cells, axis=2) == np.arange(16)[None, None, :, None])
    # the same draws whatever the grouping into calls, and the documented digital shift
    part = sampling.sobol_uniforms(keys, 13, 20, size, tf.float32, layout).numpy()
    np.testing.assert_array_equal(part, u[:, 13:33])
    shift = sampling.stream_bits(keys[0], 1, 1, size, sampling.SOBOL_STREAM, tf.float32)[0]
    own = np.tile(sampling.sobol_bits(tf.range(16), layout.directions).numpy(), [1, 2])[:, :size]
    want = sampling.bits_to_open_unit(tf.constant(own ^ shift.numpy()[None])).numpy()
    np.testing.assert_array_equal(u[0, 16:32], want)
    z = sampling.input_noise(tfm.kernels.get("gaussian"), [1, 2], 0, 16, 7, sobol=16)
    assert z.shape == (2, 16, 7)
    # marginal uniformity over many independent shifts (one point each)
    many = sampling.sobol_uniforms(
        sampling.example_keys(tf.range(4000, dtype=tf.int64)), 3, 1, 5, tf.float64,
        sampling.Sobol(8, 5),
    ).numpy().ravel()
    assert abs(many.mean() - 0.5) < 4 * np.sqrt(1 / 12 / many.size)
    assert abs(many.var() - 1 / 12) < 4 * np.sqrt(1 / 180 / many.size)
    assert 0 < many.min() and many.max() < 1


@pytest.mark.parametrize("kernel", ["gaussian", "rect", "poisson"])
def test_sobol_sg_is_unbiased_on_the_sine_model_with_honest_errors(kernel):
    x = np.linspace(-2.0, 2.5, 12).reshape(2, 6)
    eps = 0.7
    f = lambda v: tf.reduce_sum(tf.sin(v), axis=1, keepdims=True)  # noqa: E731
    exact = reference.sg_sine_grad(x, eps, kernel)
    kw = dict(kernel=kernel, num_samples=256, epsilon=eps, sampler="sobol", replicates=16)
    # 40 runs, as 40 explainers with seeds 0..39 would give them: SmoothGrad's noise depends only
    # on each example's seed (derived from the explainer's seed and its position), so one call
    # over 40 copies of x with those seeds is the same 40 runs, bit for bit, in one compile
    seeds = np.concatenate([sampling.example_seeds(s, len(x)) for s in range(40)])
    runs, ses = tfm.SmoothGrad(f, seed=0, **kw).explain(
        np.tile(x, (40, 1)), return_stderr=True, seeds=seeds)
    runs, ses = runs.reshape(40, *x.shape), ses.reshape(40, *x.shape)
    one = tfm.SmoothGrad(f, seed=3, **kw).explain(x, return_stderr=True)
    np.testing.assert_array_equal(one[0], runs[3])  # the same as explainer seed 3's run
    np.testing.assert_array_equal(one[1], ses[3])
    spread = runs.std(axis=0, ddof=1)
    ratio = spread.mean() / ses.mean()
    assert 0.7 < ratio < 1.4, ratio  # the replicates' standard error is the true spread
    bias = runs.mean(axis=0) - exact
    assert np.max(np.abs(bias) / (spread / np.sqrt(40))) < 4.5  # unbiased
    # the same budget of i.i.d. draws: per-sample variance (1 + cos 2x chi(2 eps))/2 - (cos x chi)^2
    chi, chi2 = reference.char_fn(kernel, eps), reference.char_fn(kernel, 2 * eps)
    iid_se = np.sqrt(((1 + np.cos(2 * x) * chi2) / 2 - (np.cos(x) * chi) ** 2) / 256)
    # (measured: 2.8x the standard deviation for Poisson's heavy tails, more for the others)
    assert np.median(iid_se / spread) > 2, np.median(iid_se / spread)


def test_sobol_ng_and_fg_match_quadrature_and_beat_iid():
    w, delta, eps = 1.3, 0.3, 0.4
    model = sine_model(w)
    x = np.array([[0.8], [-1.1]])
    kw = dict(kernel="gaussian", num_weight_samples=512, weight_epsilon=delta, sampler="sobol",
              replicates=16)
    ng, ng_se = tfm.NoiseGrad(model, seed=2, **kw).explain(x, targets=0, return_stderr=True)
    want = np.array([reference.ng_sine_grad(v, w, delta, "gaussian") for v in x[:, 0]])
    assert np.all(np.abs(ng[:, 0] - want) < 4.5 * ng_se[:, 0]), (ng[:, 0], want, ng_se[:, 0])
    iid_se = tfm.NoiseGrad(model, seed=2, kernel="gaussian", num_weight_samples=512,
                           weight_epsilon=delta).explain(x, targets=0, return_stderr=True)[1]
    # one Gaussian weight: 3x smaller (measured), limited by the unbounded tail strata
    assert np.all(iid_se > 2 * ng_se), (iid_se, ng_se)
    fg, fg_se = tfm.FusionGrad(model, kernel="rect", num_weight_samples=128, num_samples=8,
                               weight_epsilon=delta, epsilon=eps, seed=3, sampler="sobol",
                               replicates=8).explain(x, targets=0, return_stderr=True)
    want = np.array([reference.fg_sine_grad(v, w, delta, eps, "rect") for v in x[:, 0]])
    assert np.all(np.abs(fg[:, 0] - want) < 4.5 * fg_se[:, 0]), (fg[:, 0], want, fg_se[:, 0])
    iid_se = tfm.FusionGrad(model, kernel="rect", num_weight_samples=128, num_samples=8,
                            weight_epsilon=delta, epsilon=eps, seed=3).explain(
        x, targets=0, return_stderr=True)[1]
    assert np.all(iid_se > 1.5 * fg_se), (iid_se, fg_se)  # measured over seeds: 2.4-2.6x


def test_sobol_stderr_matches_the_spread_over_seeds_on_an_mlp():
    model = mlp()
    x = np.random.default_rng(3).normal(size=(2, 5)).astype(np.float32)
    for mode in ("sg", "ng", "fg"):
        e = tfm.Explainer(model, mode=mode, num_samples=32, num_weight_samples=16, epsilon=0.5,
                          sampler="sobol", replicates=8)
        runs, ses = zip(*[e.explain(x, [0, 2], return_stderr=True) for _ in range(40)], strict=True)
        ratio = np.std(runs, axis=0, ddof=1).mean() / np.mean(ses, axis=0).mean()
        assert 0.7 < ratio < 1.4, (mode, ratio)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["sg", "ng", "fg"])
def test_sobol_is_batch_and_chunk_independent_exportable_and_compiles(mode, tmp_path):
    model = mlp(seed=2)
    x = np.random.default_rng(4).normal(size=(3, 5)).astype(np.float32)
    kw = dict(mode=mode, kernel="sigmoid", num_samples=8, num_weight_samples=4, seed=7,
              sampler="sobol", replicates=2, aggregation="vargrad")
    whole, se = tfm.Explainer(model, **kw).explain(x, [0, 1, 2], return_stderr=True)
    assert np.all(np.isfinite(se))
    # passes smaller than a replicate (SmoothGrad's 4 points per replicate), of whole
    # replicates, and of everything
    # (batch_size 1-3: SmoothGrad sets of 4 split over passes; 4, 5: one set per pass; 8, 40:
    # all in one pass)
    for batch_size in (1, 2, 3, 4, 5, 8, 40):
        part, se_part = tfm.Explainer(model, batch_size=batch_size, **kw).explain(
            x, [0, 1, 2], return_stderr=True
        )
        np.testing.assert_allclose(part, whole, rtol=1e-5, atol=1e-7)
        # float32 rounding in the variance of a variance (VarGrad) between merge orders:
        # measured: 6 % on an element whose standard error is 0.2 % of the largest, and for
        # NG (2-point sets: differences of nearly equal float32 squares) 5.4e-6 where one merge
        # order gives exactly 0, i.e. 1.3e-4 of the largest attribution (at HEAD before the
        # redesign too); the bound is 1e-3 of it
        atol = max(1e-4 * se.max(), 1e-3 * np.abs(whole).max())
        np.testing.assert_allclose(se_part, se, rtol=1e-4, atol=atol)
    seeds = sampling.example_seeds(7, 3)
    alone = tfm.Explainer(model, **kw).explain(x[2:], [2], seeds=seeds[2:])
    np.testing.assert_allclose(alone, whole[2:], rtol=1e-5, atol=1e-7)
    for batch_size in (None, 3):
        xla = tfm.Explainer(model, jit_compile=True, batch_size=batch_size, **kw)
        np.testing.assert_allclose(xla.explain(x, [0, 1, 2]), whole, rtol=1e-4, atol=1e-6)
    explainer = tfm.Explainer(model, **kw)
    fn = tf.saved_model.load(explainer.export(str(tmp_path))).signatures["serving_default"]
    got = fn(inputs=tf.constant(x), targets=tf.constant([0, 1, 2]), seeds=tf.constant(seeds))
    np.testing.assert_allclose(got["attributions"].numpy(), whole, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["sg", "ng", "fg"])
def test_sobol_layout_is_the_documented_one(mode):
    """f(x) = sum_k w_k x_k^2 has the input gradient 2 w' x', which shows every draw: the
    estimate must be the mean over exactly the documented Sobol points (sg: N / R points per
    set; fg: the N input draws under weight draw j are set j; weights: M / R points per set)."""
    import keras

    w = np.array([0.7, -1.3, 2.1])
    model = keras.Sequential([
        keras.Input((3,), dtype="float64"),
        keras.layers.Lambda(lambda v: v * v, dtype="float64"),
        keras.layers.Dense(1, use_bias=False, dtype="float64"),
    ])
    model.layers[-1].set_weights([w[:, None]])
    x = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
    n, m, r, eps, delta, seed = 8, 4, 2, 0.3, 0.2, 11
    e = tfm.Explainer(model, mode=mode, kernel="gaussian", num_samples=n, num_weight_samples=m,
                      epsilon=eps, weight_epsilon=delta, seed=seed, sampler="sobol",
                      replicates=r, batch_size=4)
    got = e.explain(x, [0, 0])
    kernel = tfm.kernels.get("gaussian")
    seeds = sampling.example_seeds(seed, 2)
    wkey = tf.constant(sampling.weight_key(seed))
    zeta = np.stack([sampling.weight_noise(kernel, wkey, j, [3], tf.float64, sobol=m // r)[0]
                     for j in range(m)])  # [M, 3]
    if mode == "sg":
        z = sampling.input_noise(kernel, seeds, 0, n, 3, tf.float64, sobol=n // r)
        want = (2 * w * (x[:, None, :] + eps * z)).mean(axis=1)
    elif mode == "ng":
        want = (2 * w * (1 + delta * zeta)[None] * x[:, None, :]).mean(axis=1)
    else:
        z = sampling.input_noise(kernel, seeds, 0, m * n, 3, tf.float64, sobol=n)
        z = z.reshape(2, m, n, 3)
        wj = (w * (1 + delta * zeta))[None, :, None, :]
        want = (2 * wj * (x[:, None, None, :] + eps * z)).mean(axis=(1, 2))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # and a wrong layout would show: the sg points of 4 sets of 2 are other draws
    if mode == "sg":
        other = sampling.input_noise(kernel, seeds, 0, n, 3, tf.float64, sobol=2)
        assert np.abs((2 * w * (x[:, None, :] + eps * other)).mean(axis=1) - got).max() > 1e-6


def test_sobol_through_explain_dataset_equals_one_call():
    model = mlp(seed=4)
    x = np.random.default_rng(5).normal(size=(5, 5)).astype(np.float32)
    t = np.array([0, 1, 2, 0, 1])
    e = tfm.FusionGrad(model, num_samples=4, num_weight_samples=4, seed=3, sampler="sobol",
                       replicates=2)
    batches = [(x[:2], t[:2]), (x[2:], t[2:])]
    got = tfm.explain_dataset(e, batches, progress=False)
    np.testing.assert_allclose(got, e.explain(x, t), rtol=1e-5, atol=1e-7)


def test_sobol_argument_checks():
    model = mlp(seed=1)
    assert tfm.SmoothGrad(model, sampler="sobol").replicates == 5  # 50 draws: 5 sets of 10
    assert tfm.SmoothGrad(model, sampler="sobol", num_samples=64).replicates == 4
    assert tfm.SmoothGrad(model, sampler="sobol", num_samples=6).replicates == 3  # 3 sets of 2
    with pytest.warns(UserWarning, match="every set is one point"):
        assert tfm.NoiseGrad(model, sampler="sobol", num_weight_samples=7).replicates == 7
    with pytest.raises(ValueError, match="`tolerance` needs a standard error"):
        tfm.SmoothGrad(model, sampler="sobol", num_samples=8, replicates=1, tolerance=0.1)
    with pytest.raises(ValueError, match=r"`replicates` must divide num_samples=50"):
        tfm.SmoothGrad(model, sampler="sobol", replicates=4)
    with pytest.raises(ValueError, match=r"must divide num_weight_samples=10"):
        tfm.FusionGrad(model, sampler="sobol", num_weight_samples=10, replicates=3)
    with pytest.raises(ValueError, match="`replicates` applies to sampler='sobol'"):
        tfm.SmoothGrad(model, replicates=4)
    e = tfm.SmoothGrad(model, sampler="sobol", num_samples=16, replicates=2)
    assert tfm.SmoothGrad.from_config(model, e.get_config()).replicates == 2


# -- adaptive stopping ------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["iid", "antithetic", "sobol"])
def test_tolerance_stops_when_the_relative_error_is_met(sampler):
    """f = sum sin(x): the first round alone misses the tolerance; more rounds meet it, and the
    estimate stays within its (honest) error of the exact answer."""
    x = np.linspace(-2.0, 2.5, 12).reshape(2, 6)
    f = lambda v: tf.reduce_sum(tf.sin(v), axis=1, keepdims=True)  # noqa: E731
    kw = dict(kernel="gaussian", num_samples=50, epsilon=0.7, seed=5, sampler=sampler)
    one, one_se = tfm.SmoothGrad(f, **kw).explain(x, return_stderr=True)
    rel_one = np.linalg.norm(one_se, axis=1) / np.linalg.norm(one, axis=1)
    tol = 0.3 * rel_one.min()
    e = tfm.SmoothGrad(f, tolerance=tol, max_samples=50 * 400, **kw)
    est, se = e.explain(x, return_stderr=True)
    rel = np.linalg.norm(se, axis=1) / np.linalg.norm(est, axis=1)
    assert np.all(rel <= tol), (rel, tol)
    used = e.last_num_samples
    assert np.all(used > 50) and np.all(used % 50 == 0) and np.all(used < 50 * 400)
    # a relative error of 1/sqrt(n): (rel_one / tol)^2 rounds, roughly
    assert np.all(used <= 50 * 3 * (rel_one / tol) ** 2), used
    exact = reference.sg_sine_grad(x, 0.7, "gaussian")
    assert_mc_close(est, se, exact, seed=5)
    # round 0 is the plain call; an example's rounds do not depend on its batch-mates
    alone = e.explain(x[1:], return_stderr=False, seeds=sampling.example_seeds(5, 2)[1:])
    np.testing.assert_allclose(alone, est[1:], rtol=1e-6, atol=1e-9)


def test_tolerance_for_weight_noise_and_its_limits(tmp_path):
    model = mlp(seed=3)
    x = np.random.default_rng(2).normal(size=(3, 5)).astype(np.float32)
    e = tfm.FusionGrad(model, num_samples=4, num_weight_samples=4, seed=1, tolerance=0.05,
                       max_samples=16 * 30)
    a, se = e.explain(x, [0, 1, 2], return_stderr=True)
    rel = np.linalg.norm(se, axis=1) / np.linalg.norm(a, axis=1)
    met = rel <= 0.05
    assert np.all(met | (e.last_num_samples == 16 * 30))  # met, or stopped at max_samples
    assert np.all(e.last_num_samples % 16 == 0)
    with pytest.raises(ValueError, match="`tolerance` supports"):
        tfm.SmoothGrad(model, tolerance=0.1, aggregation="vargrad")
    with pytest.raises(ValueError, match="`max_samples` must be at least one round"):
        tfm.SmoothGrad(model, tolerance=0.1, num_samples=50, max_samples=10)
    with pytest.raises(ValueError, match="`tolerance`"):
        tfm.SmoothGrad(model, tolerance=-1)
    with pytest.raises(ValueError, match="cannot be exported"):
        e.export(str(tmp_path))
    with pytest.raises(ValueError, match=r"tolerance=0\.05"):
        tfm.explain_dataset(e, [(x, [0, 1, 2])], progress=False)

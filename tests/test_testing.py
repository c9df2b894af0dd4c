"""tfmollify.testing (issue 30): the Monte Carlo assertions, the kernel and guarantee checks, and
the pytest plugin (``tfmollify_pytest``), each against a case that must pass and one that must be
caught."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

import reference
import tfmollify as tfm
from tests import user_kernels
from tfmollify.testing import config
from tfmollify.testing.assertions import assert_mc_close, assert_mollified, bonferroni_threshold
from tfmollify.testing.guarantees import check_guarantees, model_fingerprint
from tfmollify.testing.kernels import KernelReport, check_kernel

pytest_plugins = ["pytester"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sine(v):
    """``f(x) = sum(sin(x))``: SmoothGrad's exact answer is ``reference.sg_sine_grad``."""
    return tf.reduce_sum(tf.sin(v), axis=1, keepdims=True)


def failure(fn, *args, **kwargs) -> str:
    with pytest.raises(AssertionError) as info:
        fn(*args, **kwargs)
    return str(info.value)


# -- assert_mc_close ------------------------------------------------------------------------------
def test_the_threshold_is_bonferronis():
    for n, alpha in [(1, 0.05), (12, 1e-4), (10**6, 1e-3)]:
        want = scipy.stats.norm.isf(alpha / (2 * n))
        assert bonferroni_threshold(n, alpha) == pytest.approx(want, rel=1e-9)


def test_assert_mc_close_holds_each_element_to_the_threshold():
    z_star = bonferroni_threshold(3, 1e-4)  # 4.149
    expected = np.array([1.0, -2.0, 0.5])
    se = np.array([0.1, 0.2, 0.05])
    assert_mc_close(expected + 0.99 * z_star * se * [1, -1, 1], se, expected)
    off = expected + np.array([0, 1.01 * z_star * 0.2, 0])
    message = failure(assert_mc_close, off, se, expected, err_msg="my check", seed=1234)
    lines = message.splitlines()
    assert lines[:2] == ["Not equal within Monte Carlo error", "my check"]
    assert "Mismatched elements: 1 / 3 (33.3%)" in message
    assert f"z* = {z_star:.4g}" in message and "n = 3 elements" in message
    assert "alpha = 0.0001" in message and "Seed: 1234" in message
    worst = [line for line in lines if line.strip().startswith("(1,)")]
    assert len(worst) == 1 and f"{1.01 * z_star:.4g}" in worst[0], message  # index ... z


def test_the_worst_elements_come_first_and_are_capped():
    est = np.zeros((3, 4))
    est[2, 1], est[0, 3] = 9.0, 20.0
    est[1] = 6.0
    message = failure(assert_mc_close, est, 1.0, 0.0)
    rows = message.split("Worst elements")[1].splitlines()[2:7]
    assert rows[0].strip().startswith("(0, 3)") and rows[1].strip().startswith("(2, 1)")
    assert "Mismatched elements: 6 / 12" in message and "Max |z| among violations: 20" in message


def test_zero_stderr_needs_an_exact_match_and_nan_matches_nan():
    assert_mc_close([1.0, np.nan], [0.0, 0.0], [1.0, np.nan])
    message = failure(assert_mc_close, [1.0 + 1e-12], [0.0], [1.0])
    assert "zero stderr: must be equal" in message
    assert_mc_close([1.0 + 1e-12], [0.0], [1.0], atol=1e-9)
    assert "Mismatched elements: 1 / 2" in failure(assert_mc_close, [np.nan, 1.0], 0.1, 1.0)
    assert "(stderr is NaN)" in failure(assert_mc_close, [1.5], [np.nan], [1.0])


def test_assert_mc_close_broadcasts_like_numpy_testing():
    assert_mc_close(np.ones((2, 3)), 0.1, [1.0, 1.0, 1.0])
    message = failure(assert_mc_close, np.ones(2), np.ones(3), np.ones(2))
    assert "(shapes (2,), (3,), (2,) mismatch)" in message
    assert_mc_close(np.zeros((0, 3)), np.zeros((0, 3)), 0.0)  # nothing to compare


def test_assert_mc_close_takes_tensors_and_structures():
    est = {"a": tf.constant([1.0, 2.0]), "b": np.array([[0.0, 3.0]])}
    se = {"a": np.full(2, 0.1), "b": np.full((1, 2), 0.1)}
    assert_mc_close(est, se, {"a": [1.0, 2.0], "b": [[0.0, 3.0]]})
    message = failure(assert_mc_close, est, se, {"a": [1.0, 2.0], "b": [[0.0, 0.0]]})
    assert "['b'](0, 1)" in message and "Mismatched elements: 1 / 4" in message
    assert "parts" in failure(assert_mc_close, est, se, {"a": [1.0, 2.0]})


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(alpha=2), ValueError, ["`alpha`", "alpha=2", "(0, 1)"]),
    (dict(alpha=0.0), ValueError, ["`alpha`", "alpha=0.0"]),
    (dict(alpha="x"), TypeError, ["`alpha`", "alpha='x'"]),
    (dict(atol=-1.0), ValueError, ["`atol`", "atol=-1.0"]),
])
def test_assert_mc_close_rejects_bad_arguments(kwargs, error, words):
    with pytest.raises(error) as info:
        assert_mc_close([1.0], [0.1], [1.0], **kwargs)
    assert all(w in str(info.value) for w in words), str(info.value)
    with pytest.raises(ValueError, match="`stderr` must be non-negative"):
        assert_mc_close([1.0], [-0.1], [1.0])
    with pytest.raises(TypeError, match="`expected`"):
        assert_mc_close([1.0], [0.1], ["a"])


def test_the_false_failure_rate_is_alpha():
    """Under the null (z-scores standard normal) a check of 10 elements fails in a fraction
    1 - (1 - alpha/10)^10 ~ alpha of the trials (binomial sd 0.005 over 2000 trials)."""
    rng = np.random.default_rng(0)
    failed = 0
    for _ in range(2000):
        try:
            assert_mc_close(rng.normal(size=10), np.ones(10), np.zeros(10), alpha=0.05)
        except AssertionError:
            failed += 1
    assert 0.033 < failed / 2000 < 0.065, failed


def test_assert_mc_close_records_its_seed():
    config.clear_seeds()
    assert_mc_close([1.0], [0.1], [1.0], seed=99)
    assert_mc_close([1.0], [0.1], [1.0])  # no seed: nothing to rerun
    assert config.recorded_seeds() == [("assert_mc_close", 99)]
    config.clear_seeds()


# -- assert_mollified -----------------------------------------------------------------------------
X_SINE = np.linspace(-2.0, 2.5, 6).reshape(2, 3)


@pytest.mark.parametrize("kernel", ["gaussian", "rect"])
def test_assert_mollified_against_the_references_closed_form(kernel):
    """``reference.sg_sine_grad`` is a ready-made ``exact``: it passes, and the closed form at
    another epsilon (the answer of a wrong scale) is caught."""
    e = tfm.SmoothGrad(sine, kernel=kernel, epsilon=0.7, num_samples=1000, seed=5)
    assert_mollified(e, X_SINE, lambda v: reference.sg_sine_grad(v, 0.7, kernel))
    message = failure(assert_mollified, e, X_SINE, reference.sg_sine_grad(X_SINE, 0.5, kernel))
    assert f"SmoothGrad(mode='sg', kernel='{kernel}', epsilon=0.7, num_samples=1000" in message
    assert "seed=5" in message and "Seed: 5" in message and "1000 samples per example" in message


def test_assert_mollified_draws_a_seed_and_scales_the_samples(monkeypatch):
    e = tfm.SmoothGrad(sine, epsilon=0.7, num_samples=6, sampler="antithetic")
    monkeypatch.setenv(config.ENV_SAMPLES, "1.5")
    config.clear_seeds()
    message = failure(assert_mollified, e, X_SINE, np.full(X_SINE.shape, 5.0))
    # 6 x 1.5 = 9 draws, rounded up to whole antithetic pairs
    assert "num_samples=10" in message and "10 samples per example" in message
    (label, seed), = config.recorded_seeds()
    assert f"seed={seed}" in label and f"Seed: {seed}" in message
    config.clear_seeds()


# -- check_kernel ---------------------------------------------------------------------------------
class Triangle(user_kernels.Triangle):
    """The triangle density on [-1, 1] (correct)."""

    name = "triangle-testing"
    support = (-1.0, 1.0)


class TwiceTheMass(Triangle):
    def _pdf(self, x):
        return 2.0 * super()._pdf(x)


class WrongVariance(Triangle):
    variance = 1.0 / 3.0


class WrongInverse(Triangle):
    def _icdf(self, u):
        return 2.0 * u - 1.0  # the uniform's, not the triangle's


class UndeclaredSupport(Triangle):
    support = (-math.inf, math.inf)


class Skewed(tfm.kernels.Gaussian):
    def _pdf(self, x):
        return super()._pdf(x) * (1.0 + 0.1 * tf.tanh(x))


class CauchyWithVariance(tfm.kernels.Poisson):
    variance = 1.0


def test_check_kernel_passes_a_correct_user_kernel():
    report = check_kernel(Triangle(), samples=5000)
    assert isinstance(report, KernelReport) and report.passed
    assert [c.name for c in report.checks] == [
        "normalised", "symmetric", "inverse", "cdf matches pdf", "variance", "support", "eq30",
        "ks"]
    assert report["variance"].value == pytest.approx(1.0 / 6.0, rel=1e-9)
    text = str(report)
    assert text.startswith("kernel 'triangle-testing' (Triangle): 8 / 8 checks passed")
    assert text.count("\n  ok   ") == 8


@pytest.mark.parametrize("kernel, broken", [
    (TwiceTheMass(), {"normalised", "cdf matches pdf", "variance", "eq30"}),
    (WrongVariance(), {"variance"}),
    (WrongInverse(), {"inverse", "eq30", "ks"}),
    (UndeclaredSupport(), {"support"}),
    (Skewed(), {"symmetric", "cdf matches pdf"}),  # an odd change: mass and variance stay
    (CauchyWithVariance(), {"variance"}),
], ids=lambda v: type(v).__name__ if isinstance(v, tfm.kernels.Kernel) else "")
def test_check_kernel_catches_a_broken_kernel(kernel, broken):
    with pytest.raises(AssertionError) as info:
        check_kernel(kernel, samples=5000)
    report = info.value.report
    assert {c.name for c in report.failed} == broken, str(report)
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"check_kernel: {len(broken)} check(s) failed: ")
    assert all(name in first for name in broken)
    assert str(report) in str(info.value)


def test_check_kernel_without_cubature_uses_quad(monkeypatch):
    """SciPy before 1.15 has no ``cubature``: the same checks by ``quad``."""
    import scipy.integrate

    monkeypatch.delattr(scipy.integrate, "cubature", raising=False)
    assert check_kernel("rect", samples=2000).passed
    with pytest.raises(AssertionError, match="normalised"):
        check_kernel(TwiceTheMass(), samples=2000)


def test_check_kernel_arguments():
    assert check_kernel("uniform", samples=1000).subject == "kernel 'rect' (Rect)"
    with pytest.raises(ValueError, match="Unknown kernel"):
        check_kernel("laplace-typo")
    with pytest.raises(TypeError, match="`kernel`"):
        check_kernel(3)
    with pytest.raises(ValueError, match=r"`samples`.*samples=0"):
        check_kernel("rect", samples=0)
    with pytest.raises(ValueError, match=r"`alpha`.*alpha=2"):
        check_kernel("rect", alpha=2)


def test_the_ks_draws_scale_with_the_factor(monkeypatch):
    monkeypatch.setenv(config.ENV_SAMPLES, "0.5")
    assert "KS test of 1000 draws" in check_kernel("rect", samples=2000)["ks"].detail
    monkeypatch.setenv(config.ENV_SAMPLES, "-2")
    with pytest.raises(ValueError, match="TFMOLLIFY_TEST_SAMPLES"):
        config.samples_factor()


# -- check_guarantees -----------------------------------------------------------------------------
def dense_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"),
                             keras.layers.Dense(2)])


X = np.random.default_rng(0).normal(size=(3, 3)).astype("float32")
T = [0, 1, 0]


def test_check_guarantees_holds_on_a_sound_explainer():
    report = check_guarantees(tfm.SmoothGrad(dense_model(), num_samples=6, seed=0), X, T)
    assert report.passed
    assert [c.name for c in report.checks] == [
        "finite", "reproducible", "batch_size invariant", "chunk invariant", "example invariant",
        "model untouched", "batch_size respected"]
    assert "3 <= 4, 12 <= 13" in str(report)  # the default sizes: 2 passes, 2 examples a pass


def test_check_guarantees_on_noisegrad_with_several_inputs():
    keras.utils.set_random_seed(1)
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(3, activation="tanh")(a), b])
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(2)(h))
    x = {"a": X, "b": X[:, :2]}
    e = tfm.NoiseGrad(model, num_weight_samples=3)  # no seed: one is drawn
    config.clear_seeds()
    report = check_guarantees(e, x, np.array(T), batch_sizes=[1, None])
    assert report.passed and "seed=" in report.subject and "seed=None" not in report.subject
    assert config.recorded_seeds()[0][0].startswith("check_guarantees NoiseGrad(")
    config.clear_seeds()


class Mutating(tfm.SmoothGrad):
    """A broken explainer: every call moves the first layer's kernel."""

    def explain(self, *args, **kwargs):
        w = self.model.layers[0].kernel
        w.assign(w + 1e-3)
        return super().explain(*args, **kwargs)


class Unseeded(tfm.SmoothGrad):
    """A broken explainer: its results are not a function of its seed."""

    def explain(self, *args, **kwargs):
        values, stderr = super().explain(*args, **kwargs)
        return values + np.random.default_rng().normal(size=values.shape) * 1e-2, stderr


class Untrained(tfm.SmoothGrad):
    """A broken explainer: it flips ``trainable`` off and fails."""

    def explain(self, *args, **kwargs):
        self.model.layers[1].trainable = False
        raise RuntimeError("boom")


class Failing(tfm.SmoothGrad):
    """An explainer that fails and leaves the model alone."""

    def explain(self, *args, **kwargs):
        raise RuntimeError("boom")


class Greedy(tfm.SmoothGrad):
    """A broken explainer: its plan puts ten times the rows allowed in a pass."""

    @property
    def seam(self):
        seam = super().seam

        class Plans:
            def plan(self, batch=None):
                p = seam.plan(batch)
                return dataclasses.replace(p, block=10 * p.block)

        return Plans()


@pytest.mark.parametrize("cls, broken", [
    (Mutating, {"model untouched", "reproducible", "batch_size invariant", "chunk invariant",
                "example invariant"}),
    (Unseeded, {"reproducible", "batch_size invariant", "chunk invariant", "example invariant"}),
    (Greedy, {"batch_size respected"}),
])
def test_check_guarantees_catches_a_broken_explainer(cls, broken):
    model = dense_model()
    with pytest.raises(AssertionError) as info:
        check_guarantees(cls(model, num_samples=6, seed=0), X, T)
    report = info.value.report
    assert {c.name for c in report.failed} == broken, str(report)
    assert f"{len(broken)} check(s) failed" in str(info.value)
    if cls is Mutating:
        detail = report["model untouched"].detail
        assert "after the first call: the values of weight 'sequential" in detail


def test_check_guarantees_sees_a_change_by_a_call_that_raises():
    with pytest.raises(AssertionError, match=r"model untouched is broken.*trainable True -> False"
                       r".*boom") as info:
        check_guarantees(Untrained(dense_model(), num_samples=4, seed=0), X, T)
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(RuntimeError, match="boom"):  # the model unchanged: the error itself
        check_guarantees(Failing(dense_model(), num_samples=4, seed=0), X, T)


def test_check_guarantees_arguments():
    e = tfm.SmoothGrad(dense_model(), num_samples=2, seed=0)
    with pytest.raises(ValueError, match=r"`batch_size`.*batch_size=0"):
        check_guarantees(e, X, T, batch_sizes=[0])
    with pytest.raises(TypeError, match=r"`batch_sizes`.*batch_sizes=4"):
        check_guarantees(e, X, T, batch_sizes=4)
    with pytest.raises(ValueError, match=r"`rtol`.*rtol=-1"):
        check_guarantees(e, X, T, rtol=-1)
    with pytest.raises(ValueError, match="`x` must hold at least one example"):
        check_guarantees(e, X[:0], [])


def test_model_fingerprint_sees_weights_flags_and_attributes():
    model = dense_model()
    before = model_fingerprint(model)
    assert model_fingerprint(model) == before
    model.layers[0].bias.assign([0.0, 0.0, 0.0, 1e-7])
    assert model_fingerprint(model) != before
    model = dense_model()
    before = model_fingerprint(model)
    model.layers[1].custom_flag = True
    assert model_fingerprint(model) != before


# -- the pytest plugin ----------------------------------------------------------------------------
def test_the_plugin_is_registered_and_loads_without_tensorflow():
    points = importlib.metadata.entry_points(group="pytest11")
    assert any(p.name == "tfmollify" and p.value == "tfmollify_pytest" for p in points)
    code = ("import sys, tfmollify_pytest; "
            "bad = [m for m in ('tensorflow', 'hypothesis', 'keras', 'tfmollify') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


FAILING = textwrap.dedent("""
    import os
    from tfmollify.testing import config
    from tfmollify.testing.assertions import assert_mc_close

    def test_factor():
        assert os.environ[config.ENV_SAMPLES] == "3.0" and config.scaled(10) == 30

    def test_fails():
        assert_mc_close([5.0], [0.1], [0.0], seed=1234)

    def test_passes():
        assert_mc_close([0.0], [0.1], [0.0], seed=4321)

    def test_fails_without_mc():
        assert False
""")


def test_the_plugin_sets_the_factor_and_prints_the_seeds_of_failures(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    before = os.environ.get(config.ENV_SAMPLES)
    pytester.makepyfile(test_user=FAILING)
    result = pytester.runpytest("--tfm-samples", "3", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=2)
    out = result.stdout.str()
    assert "tfmollify: sample counts of tfmollify.testing's checks x 3.0" in out
    assert out.count("tfmollify seeds") == 1  # only under the failing MC test
    assert "assert_mc_close: seed=1234" in out and "4321" not in out
    assert os.environ.get(config.ENV_SAMPLES) == before  # restored at the end


def test_the_plugin_rejects_a_bad_factor(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile(test_user="def test_nothing():\n    pass\n")
    result = pytester.runpytest("--tfm-samples", "-1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--tfm-samples must be a positive number" in result.stderr.str()

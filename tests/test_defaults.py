"""The defaults a newcomer gets: a memory-bounded pass (``batch_size="auto"``) and a progress bar
on long calls that ``progress=False`` turns off."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from recording import PassLog, RecordRows

import tfmollify as tfm
from tfmollify.adapter import runner as runner_lib
from tfmollify.explainers import progress


def recorded_model(log: PassLog, width: int = 6) -> keras.Model:
    keras.utils.set_random_seed(0)
    x = keras.Input((width,))
    h = keras.layers.Dense(8, activation="tanh")(RecordRows(log)(x))
    return keras.Model(x, keras.layers.Dense(3)(h))


def test_auto_is_the_default_and_a_small_model_gets_one_pass():
    log = PassLog()
    model = recorded_model(log)
    e = tfm.SmoothGrad(model, num_samples=20, seed=0)
    assert e.get_config()["batch_size"] == "auto"
    assert e.runner.batch_size is None  # a few KiB per evaluation: the bound binds nothing
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    log.reset()
    e(x, 0)
    assert max(log.rows) == 5 * 20


@pytest.mark.parametrize("mode, attribution", [("sg", "gradient"),
                                               ("fg", "integrated_gradients")])
def test_auto_bounds_each_pass_by_the_estimated_activation_memory(monkeypatch, mode,
                                                                  attribution):
    log = PassLog()
    model = recorded_model(log)
    per_row = tfm.SmoothGrad(model).view.activation_bytes()
    # every layer's output per evaluation: 6 + 6 + 8 + 3 floats (input, recorder, two Dense)
    assert per_row == (6 + 6 + 8 + 3) * 4
    # a pass holds the outputs and their gradients, and the noisy input row and its gradient
    held = tfm.SmoothGrad(model).view.row_bytes()
    assert held == 2 * per_row + 2 * 6 * 4
    monkeypatch.setattr(runner_lib, "AUTO_BUDGET_BYTES", 40 * held)
    kw = dict(num_samples=10, num_weight_samples=2, attribution=attribution, ig_steps=4, seed=1)
    auto = tfm.Explainer(model, mode, **kw)
    # NG/FG overlap two weight draws (as with None): half the budget per pass each
    assert auto.runner.pipeline == (1 if mode == "sg" else 2)
    assert auto.runner.batch_size == 40 // auto.runner.pipeline
    x = np.random.default_rng(1).normal(size=(7, 6)).astype(np.float32)
    log.reset(sleep=0.02)  # passes that overlap in time are seen together
    got = auto(x, [0, 1, 2, 0, 1, 2, 0])
    assert log.rows and max(log.rows) <= auto.runner.batch_size
    assert log.peak <= 40  # the evaluations in flight stay within the budget
    log.reset(sleep=0.0)
    log.reset()
    one_pass = tfm.Explainer(model, mode, batch_size=None, **kw)(x, [0, 1, 2, 0, 1, 2, 0])
    assert max(log.rows) > 40  # explicit None: the unbounded pass, as asked
    np.testing.assert_allclose(got, one_pass, rtol=1e-5, atol=1e-6)


def test_auto_without_shapes_falls_back_to_a_fixed_budget_and_bad_values_are_errors():
    e = tfm.SmoothGrad(lambda v: v * 2.0)  # a plain callable: no layer shapes
    assert e.runner.batch_size == runner_lib.AUTO_FALLBACK_EVALUATIONS
    ig = tfm.SmoothGrad(lambda v: v, attribution="integrated_gradients", ig_steps=300)
    assert ig.runner.batch_size == 300  # never below one sample's evaluations
    with pytest.raises(ValueError, match="'auto', None"):
        tfm.SmoothGrad(lambda v: v, batch_size="fast")


def test_readme_vg_configuration_is_bounded():
    """The README's `vg` example (MobileNetV2 at 224 x 224, IG with 16 steps, N = 50, B = 4)
    used to evaluate 3,200 rows in one pass (~80 GB); the default bounds it."""
    model = keras.applications.MobileNetV2(weights=None)
    e = tfm.SmoothGrad(model, attribution="integrated_gradients", num_samples=50, seed=0)
    per_row = e.view.activation_bytes()
    assert 60 * 2**20 < per_row < 120 * 2**20  # 83 MiB of layer outputs per evaluation
    rows = e.runner.batch_size
    assert 16 <= rows <= 64
    assert e.runner.plan(4).layout.chunk * 16 <= rows  # samples per pass x IG steps


def test_progress_bar_on_a_slow_call_and_none_with_progress_false(monkeypatch, capsys):
    monkeypatch.setattr(progress, "DEFAULT_DELAY_S", 0.0)
    log = PassLog()
    model = recorded_model(log)
    e = tfm.SmoothGrad(model, num_samples=4, batch_size=8, seed=0)  # 2 examples per pass
    x = np.random.default_rng(2).normal(size=(6, 6)).astype(np.float32)
    quiet = e(x, 0, progress=False)
    assert capsys.readouterr().out == ""
    loud = e(x, 0, progress=True)
    out = capsys.readouterr().out
    assert "6/6" in out  # the bar counted every example
    np.testing.assert_array_equal(quiet, loud)
    full = e.explain_full(x, 0, progress=False)
    assert capsys.readouterr().out == "" and full.attributions.shape == (6, 6)

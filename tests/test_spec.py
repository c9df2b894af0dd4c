"""tfmollify.adapter.spec: settings checked once and frozen; replace, get_config and from_config."""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import pytest

import tfmollify as tfm
from tfmollify.adapter.spec import ARGUMENTS, Spec


def small_model(seed: int = 0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(6, activation="tanh", name="hidden"),
         keras.layers.Dense(3, name="top")]
    )


X = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)


@pytest.mark.parametrize(
    "name, value",
    [("num_samples", 1000), ("kernel", "rect"), ("seed", 3), ("epsilon", 0.5), ("mode", "ng"),
     ("batch_size", 4), ("model", None), ("spec", None)],
)
def test_settings_cannot_be_set(name, value):
    """Defect 1 of the redesign: `e.num_samples = 1000` used to be silently ignored by the
    compiled cache. Every setting is now read-only, with a message that names `replace`."""
    e = tfm.Explainer(small_model(), num_samples=10, seed=0)
    with pytest.raises(AttributeError, match=rf"`{name}`.*replace"):
        setattr(e, name, value)


def test_replace_gives_the_result_of_a_new_explainer():
    model = small_model()
    e = tfm.SmoothGrad(model, num_samples=10, seed=0)
    first = e(X, [0, 1, 2])
    bigger = e.replace(num_samples=200, kernel="rect")
    assert (bigger.num_samples, bigger.kernel.name) == (200, "rect")
    assert (e.num_samples, e.kernel.name) == (10, "gaussian")  # the original is unchanged
    fresh = tfm.SmoothGrad(model, num_samples=200, kernel="rect", seed=0)
    np.testing.assert_array_equal(bigger(X, [0, 1, 2]), fresh(X, [0, 1, 2]))
    np.testing.assert_array_equal(e(X, [0, 1, 2]), first)
    with pytest.raises(TypeError, match=r"fixes mode='sg'.*Received: mode='ng'"):
        e.replace(mode="ng")
    with pytest.raises(ValueError, match=re.escape("Received: num_samples=0")):
        e.replace(num_samples=0)


def test_get_config_holds_the_arguments_as_given_and_round_trips():
    model = small_model()
    e = tfm.Explainer(model, mode="fg", num_samples=6, num_weight_samples=4, seed=2,
                      sampler="sobol", weight_layers=model.layers[1], epsilon=[0.1, 0.2, 0.3])
    cfg = e.get_config()
    assert set(cfg) == set(ARGUMENTS)
    assert cfg["replicates"] is None and cfg["max_samples"] is None  # not the derived values
    assert e.replicates == 2 and e.max_samples == 20 * 24  # ... which the attributes give
    assert cfg["weight_layers"] == ["top"] and cfg["epsilon"] == [0.1, 0.2, 0.3]
    json.dumps(cfg)
    again = tfm.Explainer.from_config(model, cfg)
    assert again.get_config() == cfg
    np.testing.assert_array_equal(again(X, [0, 1, 2]), e(X, [0, 1, 2]))


def test_spec_is_frozen_and_checks_every_rule_in_one_place():
    spec = Spec.create(mode="fusiongrad", num_samples=4)
    assert spec.mode == "fg" and spec.arguments["mode"] == "fusiongrad"
    with pytest.raises(AttributeError):
        spec.num_samples = 5
    with pytest.raises(ValueError, match="read-only"):
        Spec.create(epsilon=[0.1]).epsilon[0] = 3.0
    with pytest.raises(TypeError, match="Unknown explainer argument"):
        Spec.create(num_sample=3)
    with pytest.raises(ValueError, match=r"`max_samples`.*input draws.*Received: max_samples=5"):
        Spec.create(num_samples=50, tolerance=0.1, max_samples=5)


def test_seed_is_any_int_modulo_two_to_the_64():
    """Negative seeds are documented, not refused: ints are taken modulo 2**64 (the derived
    per-example seeds are int64 and often negative)."""
    model = small_model()
    a = tfm.SmoothGrad(model, num_samples=4, seed=-1)(X, 0)
    b = tfm.SmoothGrad(model, num_samples=4, seed=2**64 - 1)(X, 0)
    np.testing.assert_array_equal(a, b)
    e = tfm.SmoothGrad(model, num_samples=4, seed=0)
    np.testing.assert_array_equal(
        e(X, 0, seeds=[-1, -2, 5]), e(X, 0, seeds=np.array([2**64 - 1, 2**64 - 2, 5], np.uint64))
    )

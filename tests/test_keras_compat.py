"""tfmollify.adapter.keras_compat: the one module that reads Keras' private names. One test per
private
name, failing with the Keras version and the function to update when a Keras release changes it,
and the public-API parts against Keras' own answers."""

from __future__ import annotations

import ast
from pathlib import Path

import keras
import pytest

from tfmollify.adapter import keras_compat

PACKAGE = Path(keras_compat.__file__).parent.parent  # all of tfmollify/
PRIVATE = ("_flatten_layers", "_keras_history", "_call_has_training_arg", "_last_update",
           "_dynamic_display", "_prev_total_width")


def test_layer_flatten_layers_is_still_there():
    dense = keras.layers.Dense(1)
    assert callable(getattr(dense, "_flatten_layers", None)), (
        f"Keras {keras_compat.KERAS_VERSION} has no Layer._flatten_layers: update "
        "tfmollify.adapter.keras_compat.sublayers")
    assert not any("_flatten_layers" in p for p in keras_compat.private_names_missing())


def test_keras_tensor_history_is_still_there():
    tensor = keras.Input((1,), name="ids")
    history = getattr(tensor, "_keras_history", None)
    layer = getattr(history, "operation", None)
    assert layer is not None and layer.name == "ids", (
        f"Keras {keras_compat.KERAS_VERSION} changed KerasTensor._keras_history: update "
        "tfmollify.adapter.keras_compat.input_layer_name")
    assert keras_compat.private_names_missing() == []


def test_sublayers_direct_and_recursive():
    inner = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="d1")], name="inner")

    class Holder(keras.layers.Layer):  # a plain layer holding a layer: not in any .layers
        def __init__(self, **kw):
            super().__init__(**kw)
            self.proj = keras.layers.Dense(3, name="proj")

        def call(self, x):
            return self.proj(x)

    inp = keras.Input((2,))
    out = keras.layers.Dense(1, name="head")(Holder(name="holder")(inner(inp)))
    model = keras.Model(inp, out)
    assert [la.name for la in keras_compat.sublayers(inner) if not isinstance(
        la, keras.layers.InputLayer)] == ["d1"]
    direct = [la.name for la in keras_compat.sublayers(model) if not isinstance(
        la, keras.layers.InputLayer)]
    assert direct == ["inner", "holder", "head"]
    deep = [la.name for la in keras_compat.sublayers(model, recursive=True)]
    assert {"d1", "proj", "head"} <= set(deep)
    assert keras_compat.sublayers(object()) == []


def test_input_layer_name_public_route_and_fallback():
    a, b = keras.Input((2,), name="alpha"), keras.Input((3,), name="beta")
    model = keras.Model([a, b], keras.layers.Concatenate()([a, b]))
    assert [keras_compat.input_layer_name(model, t) for t in model.inputs] == ["alpha", "beta"]
    seq = keras.Sequential([keras.Input((2,), name="gamma"), keras.layers.Dense(1)])
    assert keras_compat.input_layer_name(seq, seq.inputs[0]) == "gamma"  # via the history


def test_call_takes_training_matches_keras():
    class WithTraining(keras.Model):
        def call(self, x, training=None):
            return x

    class Without(keras.Model):
        def call(self, x):
            return x

    for cls in (WithTraining, Without):
        m = cls()
        assert keras_compat.call_takes_training(m) == m._call_has_training_arg, cls
    assert keras_compat.call_takes_training(keras.Sequential([keras.layers.Dense(1)]))


def test_progbar_drawing_state_is_still_there():
    import keras

    bar = keras.utils.Progbar(4, interval=0.0)
    before = keras_compat.progbar_drawn_at(bar)
    keras_compat.progbar_set_dynamic(bar, False)
    assert keras_compat.progbar_is_dynamic(bar) is False
    bar.update(1)
    assert keras_compat.progbar_drawn_at(bar) != before  # it drew
    keras_compat.progbar_forget_line(bar)
    assert keras_compat.progbar_drawn_at(bar) == 0
    assert not any("Progbar" in p for p in keras_compat.private_names_missing())


@pytest.mark.parametrize("name", PRIVATE)
def test_no_other_module_reads_a_private_keras_name(name):
    """The private names are read in keras_compat only (attribute access or getattr strings)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "keras_compat.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            hit = (isinstance(node, ast.Attribute) and node.attr == name) or (
                isinstance(node, ast.Constant) and node.value == name)
            assert not hit, f"{path.relative_to(PACKAGE.parent)}:{node.lineno} reads {name}"

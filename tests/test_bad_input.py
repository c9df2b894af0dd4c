"""Every mistake gets one clear error before any work, and the model is never touched (#27).

Each case of the issue is tried as a user would make it: the error is a ``ValueError`` or
``TypeError`` that names the argument, says what was given and what is accepted, names the fix
where there is one, and carries no colour codes or Keras call-context dump; and the model's
weights, ``built``, layers, ``trainable`` flags and public attributes are what they were.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfmollify as tfm
from tfmollify.testing.guarantees import assert_model_unchanged, model_fingerprint

X = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")


def dense(name: str = "m") -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="tanh"),
                             keras.layers.Dense(3)], name=name)


# what must not change (weights, built, layers, trainable flags, public attributes), and the
# check that it did not: tfmollify.testing's public helpers
fingerprint = model_fingerprint
assert_unchanged = assert_model_unchanged


def refused(exc_type, fn, *words: str) -> str:
    """Calls ``fn``, which must raise ``exc_type`` with every word in its message; returns it."""
    with pytest.raises(exc_type) as info:
        fn()
    message = str(info.value)
    assert "\x1b[" not in message and "Traceback" not in message, message
    assert "Exception encountered" not in message and "Arguments received" not in message
    for word in words:
        assert word in message, (word, message)
    return message


# -- the cases of the issue --------------------------------------------------------------------
def test_an_ambiguous_weight_layers_name_lists_the_matches():
    inner1 = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, name="d")], name="a")
    inner2 = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")], name="b")
    model = keras.Sequential([keras.Input((4,)), inner1, inner2])
    before = fingerprint(model)
    refused(ValueError, lambda: tfm.NoiseGrad(model, weight_layers=["d"], num_weight_samples=2,
                                              seed=0).explain(X, [0, 1]),
            "`weight_layers`", "'a/d'", "'b/d'", "full path")
    assert_unchanged(model, before)
    # the path names one of them
    e = tfm.NoiseGrad(model, weight_layers=["b/d"], num_weight_samples=2, seed=0)
    assert e.explain(X, [0, 1]).shape == X.shape


def test_a_dict_with_an_extra_key_is_refused():
    p, q = keras.Input((4,), name="p"), keras.Input((2,), name="q")
    model = keras.Model({"p": p, "q": q},
                        keras.layers.Dense(3)(keras.layers.Concatenate()([p, q])))
    inputs = {"p": X, "q": X[:, :2]}
    e = tfm.SmoothGrad(model, num_samples=2, seed=0)
    refused(ValueError, lambda: e.explain({**inputs, "r": X}, [0, 1]),
            "`inputs`", "unknown key(s) ['r']", "['p', 'q']")
    refused(ValueError, lambda: e.explain({"p": X}, [0, 1]), "`inputs`", "no ['q']")
    assert set(e.explain(inputs, [0, 1])) == {"p", "q"}


def test_token_ids_through_a_float_input_name_the_embedding():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Embedding(10, 4, name="emb"),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(3)])
    ids = np.array([[1, 2, 3, 4, 5], [2, 3, 4, 5, 6]], np.float32)
    before = fingerprint(model)
    for e in (tfm.SmoothGrad(model, num_samples=2, seed=0, epsilon=0.1),
              tfm.NoiseGrad(model, num_weight_samples=2, seed=0)):
        refused(ValueError, lambda e=e: e.explain(ids, [0, 1]),
                "No gradient reaches `inputs`", "explain_at", "['emb']")
    assert_unchanged(model, before)
    got = tfm.SmoothGrad(model, num_samples=2, seed=0, explain_at="emb").explain(ids, [0, 1])
    assert got.shape == (2, 5, 4) and np.abs(got).sum() > 0


@pytest.mark.parametrize("method", [lambda f, v: tf.reduce_sum(v, 0), lambda f, v: v[:1],
                                    lambda f, v: tf.reduce_sum(v)], ids=["sum-rows", "one-row",
                                                                          "scalar"])
def test_a_user_method_of_the_wrong_shape_says_the_shape(method):
    e = tfm.SmoothGrad(dense(), attribution=method, num_samples=2, seed=0, batch_size=4)
    refused(ValueError, lambda: e.explain(np.concatenate([X, X[:1]]), [0, 1, 2]),
            "`attribution`", "one attribution per row", "[n, ...]")


def test_a_numpy_function_as_the_model():
    refused(TypeError, lambda: tfm.SmoothGrad(np.tanh, num_samples=2, seed=0).explain(X, [0, 1]),
            "`model`", "NumPy", "TensorFlow ops")


def test_export_paths_are_checked_before_any_work(tmp_path):
    model = dense()
    e = tfm.SmoothGrad(model, num_samples=2, seed=0)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    refused(TypeError, lambda: e.export(None), "`path`", "path=None")
    refused(ValueError, lambda: e.export(a_file), "`path`", "is a file")
    refused(ValueError, lambda: e.export(a_file / "under"), "`path`", "is a file")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        refused(ValueError, lambda: e.export(locked / "x"), "`path`", "not writable")
    assert sorted(os.listdir(tmp_path)) in (["a_file"], ["a_file", "locked"])


def test_a_layer_called_twice_is_refused_in_plain_words():
    inp = keras.Input((4,))
    shared = keras.layers.Dense(4, name="shared")
    model = keras.Model(inp, keras.layers.Dense(3)(shared(shared(inp))))
    before = fingerprint(model)
    refused(ValueError, lambda: tfm.SmoothGrad(model, noise_at="shared", num_samples=2, seed=0,
                                               epsilon=0.1).explain(X, [0, 1]),
            "'shared' is called more than once")
    assert_unchanged(model, before)


def test_an_unbuilt_model_is_refused_at_its_first_call_and_left_unbuilt():
    model = keras.Sequential([keras.layers.Dense(3)])
    e = tfm.SmoothGrad(model, num_samples=2, seed=0)
    refused(ValueError, lambda: e.explain(X, [0, 1]), "`model`", "not built", "model.build")
    assert not model.built and not model.weights
    model.build((None, 4))
    assert e.explain(X, [0, 1]).shape == X.shape


def test_an_explanation_logger_checks_log_dir_at_once_and_leaves_an_unbuilt_model(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    model = dense()
    e = tfm.SmoothGrad(model, num_samples=2, seed=0)
    refused(ValueError, lambda: tfm.ExplanationLogger(e, X, [0, 1], log_dir=a_file),
            "`log_dir`", "is a file")
    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    logger = tfm.ExplanationLogger(tfm.SmoothGrad(unbuilt, num_samples=2, seed=0), X, [0, 1],
                                   log_dir=tmp_path / "logs")
    assert not unbuilt.built  # the logger does not build it; fit does
    unbuilt.compile("sgd", "mse")
    unbuilt.fit(X, np.zeros((2, 3)), epochs=1, verbose=0, callbacks=[logger])
    assert "sparseness" in logger.last_scalars


# -- the model is never changed, on every entry point --------------------------------------------
@pytest.mark.slow
def test_no_entry_point_changes_the_model(tmp_path):
    model = dense()
    before = fingerprint(model)
    sg = tfm.SmoothGrad(model, num_samples=3, seed=0)
    fg = tfm.FusionGrad(model, num_samples=2, num_weight_samples=2, seed=0)
    sg.explain(X, [0, 1])
    fg.explain_full(X, [0, 1])
    tfm.NoiseGrad(model, num_weight_samples=2, seed=0, tolerance=0.5, max_samples=4).explain(
        X, [0, 1])
    ds = tf.data.Dataset.from_tensor_slices((X, np.array([0, 1]))).batch(1)
    tfm.explain_dataset(fg, ds, progress=False)
    fg.export(tmp_path / "export")
    tfm.ExplanationLogger(fg, X, [0, 1], log_dir=tmp_path / "logs")
    for bad in (lambda: sg.explain(X, [0, 9]), lambda: fg.explain(X[:, :3], [0, 1]),
                lambda: fg.explain(np.full_like(X, np.nan), [0, 1])):
        with pytest.raises((ValueError, TypeError)):
            bad()
    assert_unchanged(model, before)


def test_an_error_in_the_middle_of_the_work_leaves_the_model_unchanged():
    """NoiseGrad assigns nothing: even when every sample is non-finite (NonFiniteError after the
    whole pass), the weights are the model's."""
    inp = keras.Input((4,))
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t / 0.0)(
        keras.layers.Dense(3)(inp)))
    before = fingerprint(model)
    with pytest.raises(tfm.NonFiniteError):
        tfm.NoiseGrad(model, num_weight_samples=2, seed=0).explain(X, [0, 1])
    assert_unchanged(model, before)


# -- the whole public surface, drawn by Hypothesis ---------------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tfmollify.adapter.spec import ARGUMENTS  # noqa: E402

#: Values of the wrong type, rank, sign, size or finiteness.
BAD = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
    st.lists(st.integers(-3, 3), max_size=3), st.lists(st.floats(-2, 2), min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.tuples(st.integers(0, 3), st.integers(0, 3)).map(lambda s: np.full(s, np.nan, "float32")),
    st.tuples(st.integers(1, 3), st.integers(1, 5)).map(lambda s: np.ones(s, "float32")),
)
SURFACE_MODEL = dense("surface")
SURFACE_BEFORE = fingerprint(SURFACE_MODEL)
CALLER = tfm.SmoothGrad(SURFACE_MODEL, num_samples=2, seed=0)


def named(exc: BaseException, name: str) -> bool:
    return f"`{name}`" in str(exc) or f"`{name}[" in str(exc)


@settings(deadline=None)
@given(name=st.sampled_from(sorted(set(ARGUMENTS))), value=BAD)
def test_every_constructor_argument_works_or_names_itself(name, value):
    import time

    start = time.perf_counter()
    try:
        tfm.Explainer(SURFACE_MODEL, **{name: value})
    except (ValueError, TypeError) as exc:
        assert named(exc, name), (name, value, str(exc))
        assert "\x1b[" not in str(exc)
    assert time.perf_counter() - start < 10
    assert_unchanged(SURFACE_MODEL, SURFACE_BEFORE)


@settings(deadline=None)
@given(which=st.sampled_from(["inputs", "targets", "seeds"]), value=BAD)
def test_every_call_argument_works_or_names_itself(which, value):
    import time

    call = {"inputs": X, "targets": np.array([0, 1]), "seeds": np.array([3, 4])}
    call[which] = value
    start = time.perf_counter()
    try:
        CALLER.explain(call["inputs"], call["targets"], seeds=call["seeds"])
    except (ValueError, TypeError) as exc:
        # a call also names its other arguments when the bad one changes their meaning (e.g.
        # one target for each of the bad inputs' examples)
        assert named(exc, which) or (which == "inputs" and named(exc, "targets")) or (
            which == "inputs" and named(exc, "seeds")), (which, value, str(exc))
        assert "\x1b[" not in str(exc)
    assert time.perf_counter() - start < 10
    assert_unchanged(SURFACE_MODEL, SURFACE_BEFORE)


def test_the_guarantees_table_names_every_rule_function():
    import importlib
    import inspect
    import re
    from pathlib import Path

    from tfmollify.core import checks

    page = (Path(__file__).resolve().parents[1] / "docs" / "guarantees.md").read_text()
    table = page[page.index("## What is checked, and where"):]
    named = re.findall(r"\| `(tfmollify\.[\w.]+)` \|", table)
    assert len(named) >= 12
    for path in named:  # each resolves to a function of the code
        module, _, attr = path.rpartition(".")
        try:
            target = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError:  # Class.method
            module, _, cls = module.rpartition(".")
            target = getattr(getattr(importlib.import_module(module), cls), attr)
        assert callable(target), path
    rules = [f"tfmollify.core.checks.{n}" for n, f in inspect.getmembers(checks, callable)
             if n.startswith("check_") and f.__module__ == checks.__name__]
    assert set(rules) <= set(named), set(rules) - set(named)


def test_the_command_line_leaves_the_model_file_unchanged(tmp_path, capsys):
    """The CLI's entry points (explain, export; a run that fails too) read the model file only."""
    import hashlib

    from tfmollify.interface import cli

    model = dense("cli")
    path = tmp_path / "m.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", X)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    runs = (
        ["explain", "--model", str(path), "--input", str(tmp_path / "x.npy"), "--samples", "2",
         "--out", str(tmp_path / "out" / "a.png")],
        ["explain", "--model", str(path), "--input", str(tmp_path / "x.npy"), "--target", "9",
         "--out", str(tmp_path / "out" / "b.png")],
        ["export", "--model", str(path), "--samples", "2", "--out", str(tmp_path / "export")],
    )
    codes = []
    for args in runs:
        try:
            codes.append(cli.main(args))
        except SystemExit as exit_:  # argparse
            codes.append(exit_.code)
    capsys.readouterr()
    assert codes[0] == 0 and codes[1] != 0, codes
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest

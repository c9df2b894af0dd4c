"""One rule, one place: the same bad request gets the same message on every path (issue 26).

The table (tests/bad_requests.py) goes to ``Explainer.explain``, to a loaded export in process
(``Export.answer`` on a JSON body, in both TF Serving formats), and to ``explain_dataset``;
tests/test_serve.py sends it to ``tfmollify serve`` over HTTP.
"""

from __future__ import annotations

import numpy as np
import pytest

import tfmollify as tfm
from tests import bad_requests
from tfmollify.integrations.serve import Export, RequestError


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """``{settings key: (explainer, Export)}``."""
    out = {}
    for key, settings in bad_requests.SETTINGS.items():
        explainer = tfm.Explainer(bad_requests.model(), **settings)
        out[key] = (explainer, Export(explainer.export(str(tmp_path_factory.mktemp(key)))))
    return out


CASES = [(key, bad) for bad in bad_requests.table() for key in bad.settings]


@pytest.mark.parametrize(("key", "bad"), CASES, ids=[f"{k}-{b.what}" for k, b in CASES])
def test_every_path_refuses_with_the_same_message(paths, key, bad):
    explainer, export = paths[key]
    want = bad_requests.explain_message(explainer, bad)
    assert want.startswith(("Argument `", "Cannot choose `epsilon`")), want
    got = {}
    for fmt in ("columns", "rows"):
        body = bad_requests.body(bad, rows=fmt == "rows")
        if not body:
            continue
        with pytest.raises(RequestError) as info:
            export.answer(body)
        got[f"Export.answer ({fmt})"] = str(info.value)
    if bad.dataset:
        got["explain_dataset"] = bad_requests.dataset_message(explainer, bad)
    for path, message in got.items():
        assert message == want, f"{path} says\n  {message}\nexplain says\n  {want}"


def test_the_good_request_passes_every_path(paths):
    """The control: without the mistake every path answers, and the same."""
    x, t, s = bad_requests._good()
    for explainer, export in paths.values():
        want = explainer.explain(x, t, seeds=s)
        good = bad_requests.Bad("good", (), x, t, s)
        answer = export.answer(bad_requests.body(good))
        got = np.array([p["attributions"] for p in answer["predictions"]])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_the_graph_face_says_the_same_rule(paths):
    """Called without the Python checks (as TF Serving calls it), the exported graph refuses
    with the rule's text (its graph face), naming the argument."""
    import tensorflow as tf

    export = paths["fg"][1]
    x, _, s = bad_requests._good()
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        export._fn(inputs=tf.constant(x), targets=tf.constant([0, 3], tf.int32),
                   seeds=tf.constant(s))
    assert "Argument `targets` must be in [0, 3) (the model has 3 outputs)" in str(info.value)


@pytest.mark.slow
def test_several_inputs_get_the_same_messages(tmp_path):
    """A model with a dict of inputs (token ids and numbers): the float input's rule names
    ``inputs['num']`` on every path."""
    import json

    import keras

    keras.utils.set_random_seed(5)
    ids = keras.Input((5,), dtype="int32", name="ids")
    num = keras.Input((3,), name="num")
    emb = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(ids))
    h = keras.layers.Concatenate()([emb, keras.layers.Dense(4, activation="tanh")(num)])
    model = keras.Model({"ids": ids, "num": num}, keras.layers.Dense(2)(h))
    explainer = tfm.SmoothGrad(model, num_samples=3, seed=2)
    export = Export(explainer.export(str(tmp_path)))
    rng = np.random.default_rng(0)
    good = {"ids": rng.integers(0, 20, (2, 5)).astype(np.int32),
            "num": rng.normal(size=(2, 3)).astype(np.float32)}
    nan = {**good, "num": np.where(np.eye(2, 3, dtype=bool), np.nan, good["num"])}
    for inputs, targets, seeds in ((nan, [0, 1], [1, 2]), (good, [0, 2], [1, 2]),
                                   (good, [0, 1], [1])):
        with pytest.raises((ValueError, TypeError)) as info:
            explainer.explain(inputs, np.array(targets), seeds=np.array(seeds))
        want = str(info.value)
        body = {"inputs": {**{k: v.astype(np.float64).tolist() for k, v in inputs.items()},
                           "targets": targets, "seeds": seeds}}
        with pytest.raises(RequestError) as info:
            export.answer(json.dumps(body, allow_nan=True).encode())
        assert str(info.value) == want


@pytest.mark.slow
def test_an_empty_request_and_a_constant_input_of_several(tmp_path):
    """An empty batch is answered empty on a bounded export (AdaptGrad), as explain answers it;
    a constant float input among several gets explain's message, naming the input."""
    import json

    import keras

    explainer, export = None, None
    explainer = tfm.Explainer(bad_requests.model(), **bad_requests.SETTINGS["bounded"])
    export = Export(explainer.export(str(tmp_path / "bounded")))
    assert export.answer(b'{"instances": []}') == {"predictions": []}
    assert explainer.explain(np.zeros((0, 6), np.float32), np.zeros(0, np.int32)).shape == (0, 6)

    keras.utils.set_random_seed(5)
    a, b = keras.Input((3,), name="a"), keras.Input((2,), name="b")
    model = keras.Model({"a": a, "b": b},
                        keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    several = tfm.SmoothGrad(model, num_samples=2, seed=0)
    export = Export(several.export(str(tmp_path / "several")))
    inputs = {"a": np.ones((2, 3), np.float32),
              "b": np.random.default_rng(0).normal(size=(2, 2)).astype(np.float32)}
    with pytest.raises(ValueError) as info:
        several.explain(inputs, np.array([0, 1]), seeds=np.array([1, 2]))
    assert "input 'a'" in str(info.value)
    body = {"inputs": {"a": inputs["a"].tolist(), "b": inputs["b"].tolist(),
                       "targets": [0, 1], "seeds": [1, 2]}}
    with pytest.raises(RequestError) as got:
        export.answer(json.dumps(body).encode())
    assert str(got.value) == str(info.value)

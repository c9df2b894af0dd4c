"""Models with several inputs: lists and dicts, one epsilon per input, integer inputs untouched."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfmollify as tfm
from tfmollify.core import sampling


def two_input_linear(w1: np.ndarray, w2: np.ndarray, names=("a", "b")) -> keras.Model:
    """f(x1, x2) = x1 @ w1 + x2 @ w2 (x1 [B, d1], x2 [B, h, w]), no bias."""
    x1 = keras.Input((w1.shape[0],), name=names[0] if names else None)
    x2 = keras.Input((2, w2.shape[0] // 2), name=names[1] if names else None)
    d1 = keras.layers.Dense(w1.shape[1], use_bias=False)
    d2 = keras.layers.Dense(w2.shape[1], use_bias=False)
    out = keras.layers.Add()([d1(x1), d2(keras.layers.Flatten()(x2))])
    model = keras.Model({names[0]: x1, names[1]: x2} if names else [x1, x2], out)
    d1.set_weights([w1.astype(np.float32)])
    d2.set_weights([w2.astype(np.float32)])
    return model


def square_model() -> keras.Model:
    """f(x1, x2) = sum(x1^2) + 3 sum(x2^2): gradient 2 x1 and 6 x2."""
    x1, x2 = keras.Input((3,)), keras.Input((2, 2))
    s1 = keras.layers.Lambda(lambda t: tf.reduce_sum(t * t, axis=1, keepdims=True))(x1)
    s2 = keras.layers.Lambda(lambda t: 3.0 * tf.reduce_sum(t * t, axis=[1, 2])[:, None])(x2)
    return keras.Model([x1, x2], keras.layers.Add()([s1, s2]))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 2, 3)).astype(
        np.float32
    )


@pytest.mark.parametrize("kernel", ["gaussian", "rect", "poisson"])
def test_sg_on_a_two_input_linear_model_is_exact_for_lists_and_dicts(data, kernel):
    rng = np.random.default_rng(1)
    w1, w2 = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
    x1, x2 = data
    targets = [0, 2, 1]
    for as_dict in (False, True):
        model = two_input_linear(w1, w2, names=("a", "b") if as_dict else None)
        inputs = {"a": x1, "b": x2} if as_dict else [x1, x2]
        got = tfm.SmoothGrad(model, kernel=kernel, num_samples=5, seed=0)(inputs, targets)
        g1, g2 = (got["a"], got["b"]) if as_dict else got
        assert isinstance(got, dict if as_dict else list)
        assert g1.shape == x1.shape and g2.shape == x2.shape and g1.dtype == np.float32
        np.testing.assert_allclose(g1, w1.T[targets], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g2, w2.T[targets].reshape(3, 2, 3), rtol=1e-5, atol=1e-6)


def test_one_epsilon_per_input_matches_a_hand_computation(data):
    """The packed row of an example is [x1, x2] flattened; its noise is the engine's documented
    stream, scaled by each input's epsilon; the gradient of the square model is 2 x1', 6 x2'."""
    model = square_model()
    x1 = data[0][:, :3]
    x2 = data[1][:, :, :2]
    n = 6
    explainer = tfm.SmoothGrad(model, kernel="hyperbolic", num_samples=n, epsilon=[0.1, 0.7],
                               seed=3, aggregation="smoothgrad_sq")
    got = explainer([x1, x2], None)
    seeds = sampling.example_seeds(3, 3)
    z = sampling.input_noise(tfm.kernels.get("hyperbolic"), seeds, 0, n, 7)  # [B, N, 3 + 4]
    noisy1 = x1[:, None, :] + 0.1 * z[:, :, :3]
    noisy2 = x2.reshape(3, 1, 4) + 0.7 * z[:, :, 3:]
    np.testing.assert_allclose(got[0], np.mean((2 * noisy1) ** 2, axis=1), rtol=1e-5)
    np.testing.assert_allclose(
        got[1], np.mean((6 * noisy2) ** 2, axis=1).reshape(3, 2, 2), rtol=1e-5
    )
    # eq. 30 per input and example: r of each input separately
    eq30 = tfm.SmoothGrad(model, num_samples=2, seed=0)
    from tfmollify.adapter import request

    eps = request.epsilons(eq30.spec, *_packed([x1, x2]))
    r1 = x1.max(axis=1) - x1.mean(axis=1, dtype=np.float64)
    flat2 = x2.reshape(3, -1).astype(np.float64)
    r2 = flat2.max(axis=1) - flat2.mean(axis=1)
    gauss = tfm.kernels.get("gaussian")
    np.testing.assert_allclose(eps, np.stack([gauss.epsilon(r1, 0.9), gauss.epsilon(r2, 0.9)], 1))


def _packed(inputs):
    from tfmollify.core import inputs as inputs_lib

    rows, _, packing, _ = inputs_lib.pack(inputs)
    return rows, packing


def text_and_number_model() -> keras.Model:
    ids = keras.Input((5,), dtype="int32", name="ids")
    num = keras.Input((3,), name="num")
    emb = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 4)(ids))
    h = keras.layers.Concatenate()([emb, keras.layers.Dense(4, activation="tanh")(num)])
    return keras.Model({"ids": ids, "num": num}, keras.layers.Dense(2)(h))


def text_and_number_inputs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples for :func:`text_and_number_model`: token ids and numbers."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 20, size=(n, 5)).astype(np.int32)
    return ids, rng.normal(size=(n, 3)).astype(np.float32)


@pytest.mark.parametrize("mode", ["sg", "fg"])
def test_integer_inputs_are_never_perturbed_and_get_zero_attribution(mode):
    keras.utils.set_random_seed(0)
    model = text_and_number_model()
    ids, num = text_and_number_inputs(4, 0)
    kw = dict(mode=mode, num_samples=4, num_weight_samples=2, seed=1)
    got = tfm.Explainer(model, **kw)({"ids": ids, "num": num}, [0, 1, 1, 0])
    assert set(got) == {"ids", "num"}
    np.testing.assert_array_equal(got["ids"], np.zeros((4, 5), np.float32))
    assert np.all(np.isfinite(got["num"])) and np.abs(got["num"]).max() > 0
    if mode == "sg":
        # by hand: the float row is `num` (3) alone; the ids travel beside it, unperturbed
        z = sampling.input_noise(tfm.kernels.get("gaussian"), sampling.example_seeds(1, 4), 0,
                                 4, 3)
        r = num.max(axis=1) - num.mean(axis=1, dtype=np.float64)
        eps = tfm.kernels.get("gaussian").epsilon(r, 0.9)
        noisy = tf.constant((num[:, None, :] + eps[:, None, None] * z).reshape(16, 3), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(noisy)
            out = model({"ids": tf.repeat(ids, 4, axis=0), "num": noisy})
            score = tf.gather(out, np.repeat([0, 1, 1, 0], 4), axis=1, batch_dims=1)
        want = tape.gradient(score, noisy).numpy().reshape(4, 4, 3).mean(axis=1)
        np.testing.assert_allclose(got["num"], want, rtol=1e-4, atol=1e-6)


def test_result_does_not_depend_on_batch_size_with_several_inputs(data):
    keras.utils.set_random_seed(2)
    x1, x2 = data
    a, b = keras.Input((4,)), keras.Input((2, 3))
    h = keras.layers.Concatenate()([a, keras.layers.Flatten()(b)])
    model = keras.Model([a, b], keras.layers.Dense(3)(keras.layers.Dense(5, "relu")(h)))
    kw = dict(mode="fg", num_samples=5, num_weight_samples=3, seed=4, kernel="sigmoid")
    one = tfm.Explainer(model, **kw)([x1, x2], [0, 1, 2])
    small = tfm.Explainer(model, batch_size=2, **kw)([x1, x2], [0, 1, 2])
    for u, v in zip(one, small, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)
    tensors = tfm.Explainer(model, **kw)([tf.constant(x1), tf.constant(x2)], [0, 1, 2])
    assert all(isinstance(t, tf.Tensor) for t in tensors)


def test_several_input_errors(data):
    x1, x2 = data
    model = two_input_linear(np.ones((4, 3)), np.ones((6, 3)), names=None)
    with pytest.raises(ValueError, match="same batch size"):
        tfm.SmoothGrad(model)([x1, x2[:2]], 0)
    with pytest.raises(ValueError, match="one per input"):
        tfm.SmoothGrad(model, epsilon=[0.1, 0.2, 0.3])([x1, x2], 0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        tfm.SmoothGrad(model)([x1, np.full_like(x2, np.nan)], 0)
    with pytest.raises(ValueError, match="input 1 of examples"):
        tfm.SmoothGrad(model)([x1, np.zeros_like(x2)], 0)
    with pytest.raises(ValueError, match="rejected"):
        tfm.SmoothGrad(model)([x1, x2.reshape(3, 6)], 0)
    keras.utils.set_random_seed(0)
    text = text_and_number_model()
    ids = np.zeros((2, 5), np.int32)
    num = np.ones((2, 3), np.float32) * [[1, 2, 3]]
    with pytest.raises(ValueError, match=r"Integrated gradients.*ig_baseline of shape"):
        tfm.Explainer(text, attribution="integrated_gradients", ig_baseline=np.zeros(3))(
            {"ids": ids, "num": num}, 0
        )
    with pytest.raises(TypeError, match="no floating-point input"):
        tfm.SmoothGrad(text)({"ids": ids, "num": ids[:, :3]}, 0)
    with pytest.raises(ValueError, match="`reduce`"):
        tfm.SmoothGrad(model, reduce="sum")([x1, x2], 0)


def test_a_regressor_through_explain_export_and_dataset(tmp_path):
    """One output, targets=None: the gradient of the prediction itself."""
    keras.utils.set_random_seed(0)
    w = np.array([[0.5], [-1.0], [2.0]], np.float32)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].set_weights([w])
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    explainer = tfm.SmoothGrad(model, kernel="rect", num_samples=4, seed=0)
    got = explainer(x, None)
    np.testing.assert_allclose(got, np.repeat(w.T, 4, axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match="`targets` must be in"):
        explainer(x, 1)
    batches = [(x[:3], None), (x[3:], None)]
    np.testing.assert_allclose(tfm.explain_dataset(explainer, batches, progress=False), got)
    fn = tf.saved_model.load(explainer.export(str(tmp_path))).signatures["serving_default"]
    served = fn(inputs=tf.constant(x), targets=tf.zeros([4], tf.int32),
                seeds=tf.constant(sampling.example_seeds(0, 4)))
    np.testing.assert_allclose(served["attributions"].numpy(), got, rtol=1e-6)


@pytest.mark.slow
def test_one_output_of_a_multi_output_model(tmp_path):
    keras.utils.set_random_seed(1)
    x_in = keras.Input((3,))
    h = keras.layers.Dense(4, activation="tanh")(x_in)
    model = keras.Model(x_in, {"cls": keras.layers.Dense(2, name="cls")(h),
                               "reg": keras.layers.Dense(1, name="reg")(h)})
    x = np.random.default_rng(1).normal(size=(3, 3)).astype(np.float32)
    with pytest.raises(TypeError, match=r"output='name', or a callable target"):
        tfm.SmoothGrad(model, num_samples=2)(x, 0)
    # a callable target sees every output: the same as a one-output model computing its score
    both = lambda out: out["cls"][:, 1] - 2.0 * out["reg"][:, 0]  # noqa: E731
    combined = keras.Model(x_in, keras.layers.Lambda(lambda o: o[0][:, 1:2] - 2.0 * o[1])(
        [model.output["cls"], model.output["reg"]]))
    assert [v.path for v in combined.trainable_variables] == [
        v.path for v in model.trainable_variables]  # same weight-noise layout
    for mode in ("sg", "ng", "fg"):
        kw = dict(mode=mode, num_samples=3, num_weight_samples=2, seed=4, sampler="sobol",
                  replicates=1 if mode == "sg" else 2)
        got = tfm.Explainer(model, **kw)(x, both)
        np.testing.assert_allclose(got, tfm.Explainer(combined, **kw)(x, 0), rtol=1e-5,
                                   atol=1e-7)
    with pytest.raises(TypeError, match=r"failed on the model's scores of shape \{"):
        tfm.SmoothGrad(model, num_samples=2)(x, lambda out: out["nope"][:, 0])
    with pytest.raises(ValueError, match=r"\['cls', 'reg'\]"):
        tfm.SmoothGrad(model, output="nope")
    for output, targets in (("reg", None), ("cls", [0, 1, 1]), (1, None)):
        explainer = tfm.NoiseGrad(model, output=output, num_weight_samples=3, seed=2)
        got = explainer(x, targets)
        name = output if isinstance(output, str) else "reg"
        single = keras.Model(x_in, model.output[name])
        want = tfm.NoiseGrad(single, num_weight_samples=3, seed=2)(x, targets)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    explainer = tfm.SmoothGrad(model, output="cls", num_samples=3, seed=0)
    fn = tf.saved_model.load(explainer.export(str(tmp_path))).signatures["serving_default"]
    served = fn(inputs=tf.constant(x), targets=tf.constant([0, 1, 1]),
                seeds=tf.constant(sampling.example_seeds(0, 3)))
    np.testing.assert_allclose(served["attributions"].numpy(), explainer(x, [0, 1, 1]),
                               rtol=1e-5, atol=1e-7)


def test_explain_dataset_with_several_inputs(data, tmp_path):
    keras.utils.set_random_seed(0)
    model = text_and_number_model()
    ids, num = text_and_number_inputs(7, 2)
    y = np.arange(7) % 2
    explainer = tfm.FusionGrad(model, num_samples=2, num_weight_samples=2, seed=3)
    whole = explainer({"ids": ids, "num": num}, y)
    ds = tf.data.Dataset.from_tensor_slices(({"ids": ids, "num": num}, y)).batch(3)
    got = tfm.explain_dataset(explainer, ds, progress=False)
    assert set(got) == {"ids", "num"}
    np.testing.assert_allclose(got["num"], whole["num"], rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(got["ids"], 0.0)
    with pytest.raises(ValueError, match=r"several\s+inputs"):
        tfm.explain_dataset(explainer, ds, output=str(tmp_path / "never.npy"), progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("as_dict", [False, True])
def test_export_with_several_inputs_takes_one_tensor_per_input(tmp_path, as_dict):
    import subprocess
    import sys
    from pathlib import Path

    keras.utils.set_random_seed(0)
    if as_dict:
        model = text_and_number_model()  # {"ids": int32 [5], "num": float [3]}
        ids, num = text_and_number_inputs(3, 0)
        req = {"ids": ids, "num": num}
        call = dict(req)
        explainer = tfm.FusionGrad(model, num_samples=4, num_weight_samples=2, seed=1,
                                   batch_size=4)
    else:
        w1, w2 = np.ones((4, 3)), np.arange(18.0).reshape(6, 3) / 10
        model = two_input_linear(w1, w2, names=None)
        a = keras.Input((4,), name="left")  # named inputs name the signature's inputs
        b = keras.Input((2, 3), name="right")
        model = keras.Model([a, b], model([a, b]))
        rng = np.random.default_rng(1)
        req = {"left": rng.normal(size=(3, 4)).astype(np.float32),
               "right": rng.normal(size=(3, 2, 3)).astype(np.float32)}
        call = [req["left"], req["right"]]
        explainer = tfm.SmoothGrad(model, kernel="sigmoid", num_samples=4, seed=1,
                                   epsilon=[0.1, 0.3], aggregation="vargrad")
    path = explainer.export(str(tmp_path / "srv"))
    fn = tf.saved_model.load(path).signatures["serving_default"]
    args = fn.structured_input_signature[1]
    assert set(args) == {*req, "targets", "seeds"}
    seeds = np.array([7, 8, 9], np.int64)
    targets = np.array([0, 1, 1], np.int32)
    got = fn(**{k: tf.constant(v) for k, v in req.items()}, targets=tf.constant(targets),
             seeds=tf.constant(seeds))
    want, err = explainer.explain(call, targets, seeds=seeds, return_stderr=True)
    keys = list(req)
    if not as_dict:
        want, err = dict(zip(keys, want, strict=True)), dict(zip(keys, err, strict=True))
    for k in keys:
        np.testing.assert_allclose(got[f"attributions_{k}"].numpy(), want[k], rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(got[f"stderr_{k}"].numpy(), err[k], rtol=1e-4, atol=1e-6)
    # TF Serving's Session loader, in a fresh process
    np.savez(tmp_path / "req.npz", **req, targets=targets, seeds=seeds)
    loader = Path(__file__).parent / "serving_loader.py"
    res = subprocess.run([sys.executable, str(loader), "session", str(tmp_path / "req.npz"),
                          str(tmp_path / "out.npz"), path], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    for k in keys:
        np.testing.assert_allclose(out[f"0/attributions_{k}"], want[k], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_mixed_precision_through_export_and_dataset(tmp_path):
    keras.config.set_dtype_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, activation="relu"),
            keras.layers.Flatten(), keras.layers.Dense(3),
            keras.layers.Activation("linear", dtype="float32"),
        ])
    finally:
        keras.config.set_dtype_policy("float32")
    x = np.random.default_rng(0).uniform(size=(5, 6, 6, 1)).astype(np.float32)
    y = np.arange(5) % 3
    explainer = tfm.FusionGrad(model, num_samples=4, num_weight_samples=2, seed=0)
    want = explainer(x, y)
    assert np.all(np.isfinite(want))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    np.testing.assert_allclose(tfm.explain_dataset(explainer, ds, progress=False), want,
                               rtol=1e-5, atol=1e-6)
    fn = tf.saved_model.load(explainer.export(str(tmp_path))).signatures["serving_default"]
    got = fn(inputs=tf.constant(x), targets=tf.constant(y, tf.int32),
             seeds=tf.constant(sampling.example_seeds(0, 5)))
    np.testing.assert_allclose(got["attributions"].numpy(), want, rtol=1e-3, atol=1e-4)


class _IdMod7(keras.layers.Layer):
    """``num * (id mod 7)``: the id itself matters, to the last unit."""

    def call(self, ids, num):
        return num * tf.cast(tf.math.floormod(ids, 7), num.dtype)


def test_integer_inputs_of_any_size_stay_exact_in_explain_and_export(tmp_path):
    """Defect 2 of the redesign: ids >= 2**24 were refused by `explain` and rounded by the
    export (they travelled as float32). They now travel as int64 rows, exactly."""
    keras.utils.set_random_seed(0)
    ids = keras.Input((1,), dtype="int64", name="ids")
    num = keras.Input((3,), name="num")
    model = keras.Model([ids, num], keras.layers.Dense(2)(_IdMod7()(ids, num)))
    big = np.array([[2**24 + 1], [2**40 + 3], [2**62 + 6]], np.int64)
    small = big % 7  # the same model outputs for these ids
    assert len({int(v) for v in small.ravel()}) == 3
    x = np.random.default_rng(0).normal(size=(3, 3)).astype(np.float32)
    e = tfm.Explainer(model, mode="fg", num_samples=4, num_weight_samples=2, seed=0)
    got = e([big, x], [0, 1, 0], seeds=[1, 2, 3])
    want = e([small, x], [0, 1, 0], seeds=[1, 2, 3])
    np.testing.assert_array_equal(got[1], want[1])
    assert not np.allclose(want[1][0], e([small + 1, x], [0, 1, 0], seeds=[1, 2, 3])[1][0])
    path = tfm.export(e, tmp_path)
    fn = tf.saved_model.load(path).signatures["serving_default"]
    names = [k for k in fn.structured_input_signature[1] if k not in ("targets", "seeds")]
    ids_name = next(n for n in names if fn.structured_input_signature[1][n].dtype == tf.int64)
    num_name = next(n for n in names if n != ids_name)
    served = fn(**{ids_name: tf.constant(big), num_name: tf.constant(x)},
                targets=tf.constant([0, 1, 0], tf.int32),
                seeds=tf.constant([1, 2, 3], tf.int64))
    np.testing.assert_allclose(served[f"attributions_{num_name}"].numpy(), got[1], rtol=1e-6,
                               atol=1e-7)

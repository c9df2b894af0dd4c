"""Several weight draws in one pass (#31): the same estimator as one draw per pass.

Every supported layer type, in NG and FG, with ``weight_layers`` subsets, padding draws, base
methods that copy rows (integrated gradients), noise at a layer, ``tolerance`` rounds and a
``batch_size`` bound: the batched path (``weight_draws_per_pass="auto"``) agrees with
``weight_draws_per_pass=1`` within ``rtol=1e-5, atol=1e-5 max|reference|`` (float32 round-off of
a different summation order), and reports which path ran.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfmollify as tfm
from tfmollify.adapter import draws
from tfmollify.adapter import runner as runner_lib
from tfmollify.core import plan

L = keras.layers


def _model(body, shape, dtype="float32", classes=3):
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape, dtype=dtype)
    h = body(inp)
    if len(h.shape) > 2:
        h = L.Flatten()(h)
    return keras.Model(inp, L.Dense(classes)(h))


def _bn(x):
    layer = L.BatchNormalization()
    y = layer(x)
    rng = np.random.default_rng(1)
    layer.moving_mean.assign(rng.normal(size=layer.moving_mean.shape))
    layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=layer.moving_variance.shape))
    return y


def _mha(x):
    return L.MultiHeadAttention(num_heads=2, key_dim=3)(x, x)


MODELS = {
    "dense": (lambda x: L.Dense(5, activation="tanh")(x), (4,)),
    "einsum": (lambda x: L.EinsumDense("ab,bc->ac", output_shape=5, bias_axes="c",
                                       activation="tanh")(x), (4,)),
    "einsum_seq": (lambda x: L.EinsumDense("abc,cde->abde", output_shape=(3, 2, 3),
                                           bias_axes="de")(x), (3, 4)),
    "conv1d_causal": (lambda x: L.Conv1D(4, 3, padding="causal", dilation_rate=2,
                                         activation="relu")(x), (8, 3)),
    "conv2d": (lambda x: L.Conv2D(4, 3, strides=2, padding="same", activation="relu")(
        L.Conv2D(3, 3, dilation_rate=2)(x)), (9, 9, 2)),
    "conv3d": (lambda x: L.Conv3D(3, 2, activation="relu")(x), (4, 4, 4, 2)),
    "depthwise": (lambda x: L.DepthwiseConv2D(3, depth_multiplier=2, activation="relu")(x),
                  (6, 6, 3)),
    "separable": (lambda x: L.SeparableConv2D(4, 3, depth_multiplier=2, padding="same")(x),
                  (6, 6, 3)),
    "layer_norm": (lambda x: L.LayerNormalization()(L.Dense(5)(x)), (4,)),
    "batch_norm": (lambda x: _bn(L.Conv2D(3, 3)(x)), (6, 6, 2)),
    "attention": (_mha, (4, 6)),
}


def _pair(model, **kw):
    base = dict(num_weight_samples=6, seed=3)
    base.update(kw)
    one = tfm.Explainer(model, **{**base, "weight_draws_per_pass": 1})
    many = tfm.Explainer(model, **base)
    return one, many


def assert_same(model, x, targets, expect_draws=None, **kw):
    one, many = _pair(model, **kw)
    r1, rk = one.explain_full(x, targets), many.explain_full(x, targets)
    assert r1.weight_draws_per_pass == 1
    if expect_draws is not None:
        assert rk.weight_draws_per_pass == expect_draws
    else:
        assert rk.weight_draws_per_pass > 1
    a1, ak = np.asarray(r1.attributions), np.asarray(rk.attributions)
    atol = 1e-5 * float(np.abs(a1).max())
    np.testing.assert_allclose(ak, a1, rtol=1e-5, atol=atol)
    if r1.stderr is not None:
        np.testing.assert_allclose(np.asarray(rk.stderr), np.asarray(r1.stderr), rtol=1e-4,
                                   atol=atol)
    np.testing.assert_array_equal(rk.finite_samples, r1.finite_samples)
    return r1, rk


#: FusionGrad on these (its input draws add nothing per layer type; NG runs on all of them)
FG_MODELS = ("attention", "batch_norm", "conv2d", "separable")


#: in the quick tier (the other cases run in the whole suite)
QUICK = {("conv2d", "ng"), ("dense", "ng"), ("attention", "ng"), ("conv2d", "fg")}


def _case(name: str, mode: str):
    marks = () if (name, mode) in QUICK else (pytest.mark.slow,)
    return pytest.param(name, mode, marks=marks, id=f"{name}-{mode}")


@pytest.mark.parametrize(("name", "mode"), [_case(n, "ng") for n in sorted(MODELS)]
                         + [_case(n, "fg") for n in FG_MODELS])
def test_every_supported_layer_gives_the_same_estimate(name, mode):
    body, shape = MODELS[name]
    model = _model(body, shape)
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")
    kw = {"num_samples": 4} if mode == "fg" else {}
    assert_same(model, x, [0, 2], mode=mode, **kw)


def _conv_chain(sequential=False):
    """Convolutions with pooling, activations and dropout between them (rows side by side)."""
    keras.utils.set_random_seed(0)
    chain = [L.Conv2D(3, 3, activation="relu", name="c1"), L.ReLU(name="r"),
             L.MaxPooling2D(name="p1"), L.Dropout(0.5, name="drop"), L.Conv2D(4, 3, name="c2"),
             L.LeakyReLU(name="lr"), L.AveragePooling2D(2, name="p2"), L.Conv2D(2, 1, name="c3"),
             L.Flatten(), L.Dense(3, name="d")]
    if sequential:
        return keras.Sequential([keras.Input((12, 12, 2)), *chain])
    inp = h = keras.Input((12, 12, 2))
    for layer in chain:
        h = layer(h)
    return keras.Model(inp, h)


def _names(model, ids):
    return sorted(layer.name for layer in model.layers if id(layer) in ids)


def test_rows_stay_side_by_side_from_one_convolution_to_the_next():
    """The plan: a layer gives its rows side by side when every layer called on its output
    takes them so; Flatten does not, a model output does not, a hooked layer does not."""
    model = _conv_chain()
    convs = [model.get_layer(n) for n in ("c1", "c2", "c3")]
    plan = draws.side_by_side_plan(model, convs, set())
    assert _names(model, plan.side_out) == ["c1", "c2", "drop", "lr", "p1", "p2", "r"]
    assert _names(model, plan.side_in) == ["c2", "c3", "drop", "lr", "p1", "p2", "r"]
    assert sorted(layer.name for layer in plan.channelwise) == ["drop", "lr", "p1", "p2", "r"]
    hooked = draws.side_by_side_plan(model, convs, {id(model.get_layer("p1"))})
    # r's taker is hooked: r gives rows (and drop takes rows, giving them side by side)
    assert _names(model, hooked.side_out) == ["c1", "c2", "drop", "lr", "p2"]
    # c2 without noise (no per-row form): the rows come apart before it (at drop), and lr
    # lays them side by side again for p2 and c3
    assert _names(model, draws.side_by_side_plan(model, convs[::2], set()).side_out) == [
        "c1", "lr", "p1", "p2", "r"]
    # a convolution whose output is also a model output, or also flattened, keeps rows apart
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 2))
    c = L.Conv2D(3, 3, name="c")
    h = c(inp)
    two = keras.Model(inp, [L.Flatten()(L.MaxPooling2D()(h)), h])
    assert not draws.side_by_side_plan(two, [c], set()).side_out
    branch = keras.Model(inp, L.Concatenate()([L.Flatten()(h), L.Flatten()(L.ReLU()(h))]))
    assert id(c) not in draws.side_by_side_plan(branch, [c], set()).side_out


@pytest.mark.slow  # the quick tier has the path: conv2d-ng's first convolution takes it
def test_a_convolution_fed_by_the_inputs_convolves_one_groups_copies():
    """NoiseGrad's groups see the same rows up to the first layer with noise: a convolution
    the inputs feed (through weightless layers) convolves one group's rows, with each row's own
    gradient. Not with input noise (``copies`` off), not through a hook or a layer with
    weights, not after another convolution."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((9, 9, 2))
    scale, pad = L.Rescaling(0.5, name="scale"), L.ZeroPadding2D(1, name="pad")
    c1 = L.Conv2D(3, 3, strides=2, padding="same", activation="relu", name="c1")
    c2 = L.Conv2D(2, 3, dilation_rate=2, padding="same", name="c2")
    c3 = L.Conv2D(2, 3, name="c3")
    norm = L.BatchNormalization(name="bn")
    h = c1(pad(scale(inp)))
    model = keras.Model(inp, L.Dense(3)(L.Concatenate()(
        [L.Flatten()(c2(L.MaxPooling2D()(h))), L.Flatten()(c3(norm(inp)))])))
    convs = [c1, c2, c3]
    assert _names(model, draws.side_by_side_plan(model, convs, set(), True).shared) == ["c1"]
    assert not draws.side_by_side_plan(model, convs, set()).shared
    assert not draws.side_by_side_plan(model, convs, {id(pad)}, True).shared
    c4 = L.Conv2D(2, 3)
    noisy = keras.Model(inp, L.Flatten()(c4(L.Lambda(lambda t: t * 2.0)(inp))))
    assert not draws.side_by_side_plan(noisy, [c4], set(), True).shared  # a user's function
    x = np.random.default_rng(5).normal(size=(2, 9, 9, 2)).astype("float32")
    assert_same(model, x, [0, 2], mode="ng")
    assert_same(model, x, [1, 0], mode="ng", attribution="integrated_gradients", ig_steps=3)
    assert_same(model, x, [1, 0], mode="ng", explain_at="scale")
    one_d = keras.Sequential([keras.Input((8, 3)), L.Conv1D(4, 3, padding="causal",
                                                            dilation_rate=2), L.Flatten(),
                              L.Dense(3)])
    assert draws.side_by_side_plan(one_d, one_d.layers[:1], set(), True).shared
    assert_same(one_d, x[:, :8, 0, :2].repeat(2, axis=-1)[..., :3], [0, 1], mode="ng")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ng", "fg"])
def test_side_by_side_rows_give_the_same_estimate(mode):
    model = _conv_chain()
    x = np.random.default_rng(4).normal(size=(2, 12, 12, 2)).astype("float32")
    kw = {"num_samples": 3} if mode == "fg" else {}
    assert_same(model, x, [0, 2], mode=mode, **kw)
    assert_same(_conv_chain(sequential=True), x, [0, 2], mode=mode, **kw)
    assert_same(model, x, [1, 0], mode=mode, weight_layers=["c1", "d"], **kw)
    assert_same(model, x, [1, 0], mode=mode, attribute_at="p1", **kw)  # a hooked pool
    keras.utils.set_random_seed(0)
    one_d = keras.Sequential([keras.Input((10, 2)), L.Conv1D(3, 3, activation="relu"),
                              L.MaxPooling1D(), L.Conv1D(2, 2), L.Flatten(), L.Dense(3)])
    assert_same(one_d, x[:, :10, 0, :], [0, 1], mode=mode, **kw)


def test_embedding_weights_at_the_embedding_layer():
    keras.utils.set_random_seed(0)
    inp = keras.Input((5,), dtype="int32")
    h = L.Embedding(11, 4, name="emb")(inp)
    h = L.GlobalAveragePooling1D()(L.Dense(6, activation="tanh")(h))
    model = keras.Model(inp, L.Dense(3)(h))
    ids = np.random.default_rng(0).integers(0, 11, size=(3, 5))
    assert_same(model, ids, [0, 1, 2], mode="ng", attribute_at="emb", reduce="norm")
    assert_same(model, ids, [0, 1, 2], mode="fg", num_samples=3, explain_at="emb")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ng", "fg"])
def test_weight_layer_subsets_and_bias(mode):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(3, 3, name="c"),
                              L.LayerNormalization(name="ln"), L.Flatten(),
                              L.Dense(4, name="d1", activation="relu"), L.Dense(3, name="d2")])
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 2)).astype("float32")
    kw = {"num_samples": 3} if mode == "fg" else {}
    assert_same(model, x, [0, 1], mode=mode, weight_layers=["c", "d2"], **kw)
    assert_same(model, x, [0, 1], mode=mode, weight_layers=["ln"], perturb_bias=False, **kw)


@pytest.mark.slow
def test_padding_draws_a_cap_and_methods_that_copy_rows():
    body, shape = MODELS["conv2d"]
    model = _model(body, shape)
    x = np.random.default_rng(2).normal(size=(2, *shape)).astype("float32")
    # M = 7 under a cap of 3 draws: passes of 3, 3 and 1 (+ 2 padding draws masked out)
    assert_same(model, x, [1, 0], expect_draws=3, mode="ng", num_weight_samples=7,
                weight_draws_per_pass=3)
    assert_same(model, x, [1, 0], mode="ng", attribution="integrated_gradients", ig_steps=4)
    assert_same(model, x, [1, 0], mode="fg", num_samples=3, aggregation="vargrad",
                attribution="input_x_gradient")


@pytest.mark.slow
def test_noise_at_a_layer_tolerance_rounds_and_a_batch_size_bound():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), L.Dense(6, activation="tanh", name="h"),
                              L.Dense(6, activation="tanh"), L.Dense(3)])
    x = np.random.default_rng(3).normal(size=(5, 5)).astype("float32")
    assert_same(model, x, [0, 1, 2, 0, 1], mode="fg", num_samples=4, noise_at="h",
                attribute_at="h")
    assert_same(model, x, [0, 1, 2, 0, 1], mode="ng", tolerance=0.01, max_samples=12,
                num_weight_samples=4)
    # batch_size 12, FG with N = 3: 5 examples fill passes of 4 examples (12 rows), no room
    # for a second draw; 2 examples leave room for 2 draws (2 x 2 x 3 = 12 rows)
    assert_same(model, x, [0, 1, 2, 0, 1], expect_draws=1, mode="fg", num_samples=3,
                batch_size=12)
    assert_same(model, x[:2], [0, 1], expect_draws=2, mode="fg", num_samples=3, batch_size=12)
    # one input draw per weight draw: draw j's is input draw j in both paths (the shared pass
    # once gave every draw input draw 0)
    assert_same(model, x, [0, 1, 2, 0, 1], mode="fg", num_samples=1)
    assert_same(model, x, [0, 1, 2, 0, 1], mode="fg", num_samples=1, input_noise_cache_mb=0)


@pytest.mark.slow
def test_a_layer_without_a_form_falls_back_to_one_draw_per_pass():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4, 3)), L.GRU(4, name="gru"), L.Dense(2)])
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    assert draws.unsupported(model, model.trainable_variables) == ["gru"]
    assert_same(model, x, [0, 1], expect_draws=1, mode="ng")
    # leaving the GRU's weights out of the noise gives the batched path back
    assert_same(model, x, [0, 1], mode="ng", weight_layers=[model.layers[-1]])


def test_antithetic_pairs_and_a_zero_cache_keep_one_draw_per_pass():
    model = _model(*MODELS["dense"])
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    assert_same(model, x, [0, 1], expect_draws=1, mode="ng", sampler="antithetic")
    assert_same(model, x, [0, 1], expect_draws=1, mode="ng", weight_noise_cache_mb=0)
    sg = tfm.Explainer(model, mode="sg", num_samples=4, seed=0).explain_full(x, [0, 1])
    assert sg.weight_draws_per_pass == 1


def test_the_model_is_untouched_and_bad_settings_are_refused():
    model = _model(*MODELS["conv2d"])
    before = [w.copy() for w in model.get_weights()]
    calls = {id(layer): layer.__dict__.get("call") for layer in model.layers}
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 2)).astype("float32")
    tfm.Explainer(model, mode="fg", num_samples=2, num_weight_samples=4, seed=0).explain(x, [0, 1])
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert {id(layer): layer.__dict__.get("call") for layer in model.layers} == calls
    for bad in (0, -2, 1.5, "many", True):
        with pytest.raises(ValueError, match="weight_draws_per_pass"):
            tfm.Explainer(model, mode="ng", weight_draws_per_pass=bad)


def test_the_plan_counts_the_draws_against_batch_size():
    lay = plan.layout("fg", "iid", 10, 10, 1, 10)
    assert plan.draws_per_pass(lay, None, 10, 10) == 10
    assert plan.draws_per_pass(lay, 64, 10, 10) == 5  # 6 fit: 2 passes of 5
    assert plan.draws_per_pass(lay, 19, 10, 10) == 1
    p = plan.make(mode="ng", sampler="iid", num_samples=1, num_weight_samples=10,
                  replicates=1, batch_size=32, evaluations_per_sample=16, batch=1,
                  max_draws=10)
    assert p.layout.draws == 2 and p.rows_per_pass == 32
    anti = plan.layout("ng", "antithetic", 1, 10, 1, 1)
    assert plan.draws_per_pass(anti, None, 1, 10) == 1
    # a bound on the rows of a shared pass: 25 rows hold 2 draws of 10 (one pass of 3 would not)
    assert plan.draws_per_pass(lay, None, 10, 10, draw_rows=25) == 2
    assert plan.draws_per_pass(lay, None, 10, 10, draw_rows=9) == 1


def test_large_passes_keep_one_draw_per_pass_unless_told():
    """Under ``"auto"`` draws share a pass only while it holds at most ``DRAWS_PASS_BYTES``
    (sharing saves a pass's fixed cost, which large passes do not feel); an int setting shares
    them anyway, with the same estimate."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((256, 256, 3)), L.Conv2D(32, 3),
                              L.GlobalAveragePooling2D(), L.Dense(2)])
    x = np.random.default_rng(0).random((1, 256, 256, 3), dtype=np.float32)
    auto = tfm.Explainer(model, mode="ng", num_weight_samples=2, seed=3)
    assert auto.runner.view.row_bytes() > runner_lib.DRAWS_PASS_BYTES
    assert auto.runner.draw_rows == 1
    told = tfm.Explainer(model, mode="ng", num_weight_samples=2, seed=3, weight_draws_per_pass=2)
    assert told.runner.draw_rows is None
    ra, rt = auto.explain_full(x, [0]), told.explain_full(x, [0])
    assert (ra.weight_draws_per_pass, rt.weight_draws_per_pass) == (1, 2)
    a = np.asarray(ra.attributions)
    np.testing.assert_allclose(np.asarray(rt.attributions), a, rtol=1e-5,
                               atol=1e-5 * float(np.abs(a).max()))
    small = tfm.Explainer(_model(*MODELS["conv2d"]), mode="ng", num_weight_samples=2)
    assert small.runner.draw_rows > 100


@pytest.mark.slow
def test_float64_and_mixed_precision_convolutions_take_one_convolution_per_draw():
    """TensorFlow's CPU kernels have no gradient of a grouped convolution in float16 or
    float64: those run one convolution per draw, and still agree."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6, 6, 2), dtype="float64"),
                              L.Conv2D(3, 3, dtype="float64"),
                              L.SeparableConv2D(2, 2, dtype="float64"),
                              L.Flatten(dtype="float64"), L.Dense(2, dtype="float64")])
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2))
    assert_same(model, x, [0, 1], mode="ng")


@pytest.mark.slow
def test_bfloat16_convolutions_take_the_grouped_and_copy_paths():
    """Mixed bfloat16 has a grouped convolution's gradient on CPU: the copy path (the first
    convolution) and the side-by-side path (the second) agree with one draw per pass."""
    keras.utils.set_random_seed(0)
    policy = "mixed_bfloat16"
    model = keras.Sequential([
        keras.Input((9, 9, 2)),
        L.Conv2D(3, 3, strides=2, padding="same", activation="relu", dtype=policy),
        L.MaxPooling2D(dtype=policy), L.Conv2D(2, 2, padding="same", dtype=policy),
        L.Flatten(dtype=policy), L.Dense(2, dtype="float32"),
    ])
    plan = draws.side_by_side_plan(model, [model.layers[0], model.layers[2]], set(), True)
    assert plan.shared == {id(model.layers[0])} and id(model.layers[2]) in plan.side_in
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 2)).astype("float32")
    assert_same(model, x, [0, 1], mode="ng")


def _plain_noisegrad(model, x, targets, table, weight_epsilon):
    """NoiseGrad written with Keras and TensorFlow only: for each row ``z_j`` of the standard
    weight noise, the gradient of the target score at ``x`` under ``w (1 + eps z_j)``, averaged
    over the draws."""
    import tensorflow as tf

    variables = model.trainable_variables
    sizes = [int(np.prod(v.shape)) for v in variables]
    nt = [v.value for v in model.non_trainable_variables]
    xt = tf.constant(x)
    grads = []
    for z in np.asarray(table):
        parts = np.split(z, np.cumsum(sizes)[:-1])
        weights = [v.value * (1.0 + weight_epsilon * tf.constant(p.reshape(v.shape), v.dtype))
                   for v, p in zip(variables, parts, strict=True)]
        with tf.GradientTape() as tape:
            tape.watch(xt)
            out, _ = model.stateless_call(weights, nt, xt, training=False)
            score = tf.reduce_sum(tf.gather(out, targets, axis=1, batch_dims=1))
        grads.append(tape.gradient(score, xt).numpy())
    return np.mean(grads, axis=0)


def test_the_batched_path_matches_a_noisegrad_written_without_tfmollify():
    """The estimate of several draws per pass against NoiseGrad computed directly from the
    same standard weight noise (the explainer's table of its seed), on convolutions and dense
    layers."""
    model = _model(*MODELS["conv2d"])
    x = np.random.default_rng(0).normal(size=(2, 9, 9, 2)).astype(np.float32)
    explainer = tfm.Explainer(model, mode="ng", num_weight_samples=5, seed=3)
    result = explainer.explain_full(x, [0, 2])
    assert result.weight_draws_per_pass == 5
    import tensorflow as tf

    from tfmollify.core import engine, sampling

    table = engine.weight_noise_table(  # the standard weight noise of seed 3, [M, P]
        explainer.view, tfm.kernels.get("gaussian"), tf.constant(sampling.weight_key(3)), 5
    ).numpy()
    assert table.shape == (5, sum(int(np.prod(v.shape)) for v in model.trainable_variables))
    expected = _plain_noisegrad(model, x, np.array([0, 2]), table, 0.2)
    got = np.asarray(result.attributions)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * float(np.abs(expected).max()))


def test_the_factor_table_holds_each_variables_factors_in_aligned_blocks():
    """What the core multiplies the weights by: for each variable, ``1 + eps z`` of every draw
    (z: the standard weight noise), in a block of its own that starts on 64 bytes."""
    import tensorflow as tf

    from tfmollify.core import engine, sampling

    model = _model(*MODELS["conv2d"])
    explainer = tfm.Explainer(model, mode="ng", num_weight_samples=3, seed=5,
                              weight_epsilon=0.3, kernel="rect")
    explainer(np.zeros((1, 9, 9, 2), np.float32), 0)
    factors = explainer.runner.cached_table().numpy()
    z = engine.weight_noise_table(explainer.view, tfm.kernels.get("rect"),
                                  tf.constant(sampling.weight_key(5)), 3).numpy()
    sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
    at = engine.factor_offsets(sizes, 3)
    assert factors.shape == (at[-1],) and all(a % engine.FACTOR_ALIGN == 0 for a in at)
    for n, (part, size) in enumerate(zip(np.split(z, np.cumsum(sizes)[:-1], axis=1), sizes,
                                         strict=True)):
        block = factors[at[n]:at[n + 1]]
        want = (np.float32(1) + np.float32(0.3) * part).reshape(-1)
        np.testing.assert_array_equal(block[:3 * size], want)
        assert not block[3 * size:].any()  # the padding

"""ExplanationLogger: TensorBoard summaries read back from the event files, maps that follow the
live weights, and training that is bit for bit the same with and without the callback."""

from __future__ import annotations

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from crosscheck import require

import tfmollify as tfm
from tfmollify.evaluation import metrics
from tfmollify.integrations import callbacks

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tiny_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((6, 6, 1)),
        keras.layers.Conv2D(2, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.3),  # draws from its seed generator in every training step
        keras.layers.Dense(3),
    ])
    model.compile(keras.optimizers.Adam(0.05), LOSS)
    return model


def data(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(n, 6, 6, 1)).astype(np.float32)
    return x, (np.arange(n) % 3).astype(np.int32)


def events(log_dir) -> dict[str, list[tuple[int, tf.Tensor]]]:
    """{tag: [(step, tensor), ...]} from every event file under ``log_dir``."""
    out: dict[str, list] = {}
    for path in sorted(glob.glob(os.path.join(str(log_dir), "**", "events.*"), recursive=True)):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                out.setdefault(value.tag, []).append(
                    (event.step, tf.make_ndarray(value.tensor), value.metadata)
                )
    return out


def plain_gradient(model: keras.Model, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        picked = tf.reduce_sum(model(xt, training=False) * tf.one_hot(t, 3))
    return tape.gradient(picked, xt).numpy()


def cell(grid_png: np.ndarray, row: int, col: int, size: int = 6) -> np.ndarray:
    """The ``(row, col)`` cell of a grid of ``size x size`` cells with 1-pixel gaps."""
    r, c = row * (size + 1), col * (size + 1)
    return grid_png[r:r + size, c:c + size, 0]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A model fit for 4 epochs with a logger every 2nd epoch (steps 1 and 3)."""
    log_dir = tmp_path_factory.mktemp("logs") / "explanations"
    model = tiny_model()
    x, y = data()
    explainer = tfm.SmoothGrad(model, num_samples=8, seed=3)
    logger = tfm.callbacks.ExplanationLogger(explainer, x[:3], y[:3], log_dir, every_n_epochs=2)
    model.fit(x, y, epochs=4, batch_size=8, shuffle=False, verbose=0, callbacks=[logger])
    return model, explainer, logger, x[:3], y[:3], log_dir


@pytest.mark.slow  # over 10 s (fits/exports and traces)
def test_fit_writes_image_grid_and_scalars_that_equal_the_metrics(fitted):
    model, explainer, logger, x, t, log_dir = fitted
    got = events(log_dir)
    assert set(got) == {"explanations/grid", "explanations/sparseness",
                        "explanations/sparseness_raw_gradient", "explanations/relative_stderr"}
    for tag, entries in got.items():
        assert [step for step, _, _ in entries] == [1, 3], tag  # epochs 2 and 4 (0-based 1, 3)
    # the last step is the fitted model: the scalars equal the metrics computed here
    value, stderr = explainer.explain(x, t, return_stderr=True)
    raw = plain_gradient(model, x, t)
    scalars = {tag.split("/")[1]: float(entries[-1][1]) for tag, entries in got.items()
               if tag != "explanations/grid"}
    np.testing.assert_allclose(scalars["sparseness"], metrics.sparseness(value).mean(),
                               rtol=1e-6)
    np.testing.assert_allclose(scalars["sparseness_raw_gradient"],
                               metrics.sparseness(raw).mean(), rtol=1e-5)
    rel = (np.linalg.norm(stderr.reshape(3, -1), axis=1)
           / np.linalg.norm(value.reshape(3, -1), axis=1)).mean()
    np.testing.assert_allclose(scalars["relative_stderr"], rel, rtol=1e-5)
    assert 0 < scalars["relative_stderr"] < 1
    # the image: [width, height, png] as TensorBoard's image plugin stores it
    _, grid, meta = got["explanations/grid"][-1]
    assert meta.plugin_data.plugin_name == "images"
    width, height, png = grid
    image = tf.io.decode_png(png).numpy()
    assert image.shape == (3 * 6 + 2, 3 * 6 + 2, 1) == (int(height), int(width), 1)
    for row in range(3):  # input | raw gradient | smoothed map, each scaled to [0, 255]
        for col, want in enumerate([x[row, ..., 0] - x[row].min(), np.abs(raw[row, ..., 0]),
                                    np.abs(value[row, ..., 0])]):
            want = np.round(255 * want / want.max())
            np.testing.assert_allclose(cell(image, row, col), want, atol=1)
    assert np.all(image[6] == 255) and np.all(image[:, 13] == 255)  # white gaps
    assert logger._writer is None  # closed at the end of fit


def test_tensorboard_reads_them_as_its_own_image_and_scalar_summaries(fitted, tmp_path):
    """TensorBoard's reader sees an image and scalars; ``tf.summary.image``/``scalar`` (from
    the tensorboard package) write the same metadata and tensors for the same data."""
    require("tensorboard", "pip install tensorboard (in the test extra)")
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea

    _, _, logger, _, _, log_dir = fitted
    acc = pea.EventAccumulator(str(log_dir))
    acc.Reload()
    assert set(acc.PluginTagToContent("images")) == {"explanations/grid"}
    assert set(acc.PluginTagToContent("scalars")) == {
        "explanations/sparseness", "explanations/sparseness_raw_gradient",
        "explanations/relative_stderr",
    }
    assert [e.step for e in acc.Tensors("explanations/sparseness")] == [1, 3]
    ours = events(log_dir)
    with tf.summary.create_file_writer(str(tmp_path)).as_default():
        tf.summary.image("explanations/grid", logger.last_grid[None], step=3)
        tf.summary.scalar("explanations/sparseness", logger.last_scalars["sparseness"], step=3)
    theirs = events(tmp_path)
    for tag in ("explanations/grid", "explanations/sparseness"):
        (_, want, want_meta), (_, got, got_meta) = theirs[tag][0], ours[tag][-1]
        assert got_meta == want_meta, tag
        np.testing.assert_array_equal(got, want)


def test_the_maps_follow_the_live_weights(tmp_path):
    """No copy: after the weights change, the next log explains the new weights with the same
    compiled function (no retrace)."""
    model = tiny_model()
    x, t = data(2)
    explainer = tfm.SmoothGrad(model, num_samples=6, seed=1)
    logger = callbacks.ExplanationLogger(explainer, x, t, tmp_path)
    logger.log(0)
    before, grid_before = dict(logger.last_scalars), logger.last_grid.copy()
    traces = explainer.trace_count
    dense = model.layers[-1]
    dense.kernel.assign(np.random.default_rng(9).normal(size=dense.kernel.shape))
    logger.log(1)
    assert explainer.trace_count == traces
    assert not np.allclose(logger.last_grid, grid_before)
    assert logger.last_scalars["sparseness"] != before["sparseness"]
    value = explainer.explain(x, t)
    np.testing.assert_allclose(logger.last_scalars["sparseness"],
                               metrics.sparseness(value).mean(), rtol=1e-6)
    np.testing.assert_allclose(logger.raw_gradient(), plain_gradient(model, x, t), rtol=1e-5,
                               atol=1e-7)
    logger.on_train_end()
    assert [s for s, _, _ in events(tmp_path)["explanations/sparseness"]] == [0, 1]


class _DrawsDropoutNoise(keras.callbacks.Callback):
    """A callback that does change training: a training-mode call advances the dropout
    layer's seed generator (shows that the comparison below can fail)."""

    def on_epoch_end(self, epoch, logs=None):
        self.model(np.zeros((1, 6, 6, 1), np.float32), training=True)


def _train(extra: list) -> tuple[list[np.ndarray], list[float]]:
    model = tiny_model(seed=11)
    x, y = data()
    cbs = [c(model) for c in extra]
    history = model.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0, callbacks=cbs)
    return [w.copy() for w in model.get_weights()], history.history["loss"]


@pytest.mark.slow  # over 10 s (fits/exports and traces)
def test_training_is_bit_identical_with_and_without_the_logger(tmp_path):
    x, y = data()
    logger = lambda model: callbacks.ExplanationLogger(  # noqa: E731
        tfm.FusionGrad(model, num_samples=4, num_weight_samples=2, seed=0), x[:2], y[:2],
        tmp_path, every_n_epochs=1,
    )
    plain, plain_loss = _train([])
    logged, logged_loss = _train([logger])
    for a, b in zip(plain, logged, strict=True):
        np.testing.assert_array_equal(a, b)
    assert plain_loss == logged_loss
    assert len(events(tmp_path)["explanations/grid"]) == 3
    disturbed, _ = _train([lambda model: _DrawsDropoutNoise()])
    assert any(not np.array_equal(a, b) for a, b in zip(plain, disturbed, strict=True))


def test_an_explainer_of_another_model_is_refused_when_fit_starts(tmp_path):
    x, y = data(8)
    inp = keras.Input((6, 6, 1))
    logits = keras.layers.Dense(3)(keras.layers.Flatten()(inp))
    probs = keras.layers.Softmax()(logits)
    model = keras.Model(inp, probs)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy())
    # a model made of the fitted model's layers (its logits) shares the variables: accepted
    head = keras.Model(inp, logits)
    ok = callbacks.ExplanationLogger(tfm.SmoothGrad(head, num_samples=2, seed=0), x[:1], 0,
                                     tmp_path / "ok")
    model.fit(x, y, epochs=1, verbose=0, callbacks=[ok])
    assert "sparseness" in ok.last_scalars
    copy = keras.models.clone_model(head)
    bad = callbacks.ExplanationLogger(tfm.SmoothGrad(copy, num_samples=2, seed=0), x[:1], 0,
                                      tmp_path / "bad")
    with pytest.raises(ValueError, match="does not share the variables"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[bad])


def test_argument_errors(tmp_path):
    model = tiny_model()
    x, t = data(2)
    e = tfm.SmoothGrad(model, num_samples=2, seed=0)
    make = callbacks.ExplanationLogger
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match=r"`every_n_epochs`.*Received: every_n_epochs="):
            make(e, x, t, tmp_path, every_n_epochs=bad)
    with pytest.raises(TypeError, match=r"`explainer` must be a tfmollify.Explainer"):
        make(model, x, t, tmp_path)
    with pytest.raises(TypeError, match="Keras model"):
        make(tfm.SmoothGrad(lambda v: model(v), num_samples=2), x, t, tmp_path)
    with pytest.raises(TypeError, match="`log_dir`"):
        make(e, x, t, None)
    with pytest.raises(ValueError, match=r"the model takes \[batch, 6, 6, 1\]"):
        make(e, x[..., 0], t, tmp_path)
    with pytest.raises(ValueError, match="NaN"):
        make(e, np.full_like(x, np.nan), t, tmp_path)
    with pytest.raises(ValueError, match="1 to 64 examples"):
        make(e, np.zeros((65, 6, 6, 1), np.float32), 0, tmp_path)
    with pytest.raises(TypeError, match="`inputs` must be one array"):
        make(e, {"x": x}, t, tmp_path)
    with pytest.raises(ValueError, match=r"must be in \[0, 3\).*Received: targets=\[0, 3\]"):
        make(e, x, [0, 3], tmp_path)
    with pytest.raises(ValueError, match="one class index per example"):
        make(e, x, [0, 1, 2], tmp_path)
    with pytest.raises(TypeError, match="`targets`"):
        make(e, x, [0.5, 1.0], tmp_path)
    with pytest.raises(TypeError, match="`targets`"):
        make(e, x, lambda s: s[:, 0], tmp_path)
    with pytest.raises(ValueError, match="`seeds`"):
        make(e, x, t, tmp_path, seeds=[1])
    inp = keras.Input((4,), name="a")
    h = keras.layers.Dense(3, name="hidden")(inp)
    functional = keras.Model(inp, keras.layers.Dense(2)(h))
    with pytest.raises(ValueError, match="`explain_at`"):
        make(tfm.SmoothGrad(functional, explain_at="hidden", num_samples=2), x[:, 0, :4, 0], 0,
             tmp_path)
    a, b = keras.Input((3,)), keras.Input((3,))
    two = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()([a, b])))
    with pytest.raises(ValueError, match="several"):
        make(tfm.SmoothGrad(two, num_samples=2), x, t, tmp_path)
    assert not os.listdir(tmp_path)  # nothing written by a refused logger


@pytest.mark.parametrize(("shape", "grid"), [((5,), (1 * 2 + 1, 5 * 3 + 2, 1)),
                                             ((4, 5), (4 * 2 + 1, 5 * 3 + 2, 1)),
                                             ((4, 5, 3), (4 * 2 + 1, 5 * 3 + 2, 3)),
                                             ((4, 5, 2), (4 * 2 + 1, 5 * 3 + 2, 1))])
def test_image_grid_layouts(shape, grid):
    x = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    out = callbacks.image_grid(x, [x, 2 * x])
    assert out.shape == grid and out.min() >= 0 and out.max() <= 1
    if len(shape) == 3:  # a map reduced over the channels (reduce=...) fits too
        assert callbacks.image_grid(x, [x[..., 0]]).shape[:2] == (grid[0], 5 * 2 + 1)
    with pytest.raises(ValueError, match="cannot be laid out"):
        callbacks.image_grid(x, [x[:, :2]])


def test_a_diverged_model_warns_and_training_goes_on(tmp_path):
    model = tiny_model()
    x, t = data(2)
    logger = callbacks.ExplanationLogger(tfm.SmoothGrad(model, num_samples=2, seed=0), x, t,
                                         tmp_path)
    dense = model.layers[-1]
    dense.kernel.assign(np.full(dense.kernel.shape, np.nan, np.float32))
    with pytest.warns(UserWarning, match="step 0 not logged"):
        logger.on_epoch_end(0)
    assert not glob.glob(os.path.join(str(tmp_path), "events.*"))


def test_maps_that_cannot_go_beside_their_inputs_fail_when_the_logger_is_made(tmp_path):
    vector_model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    v = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    summed = tfm.SmoothGrad(vector_model, num_samples=2, epsilon=0.1, seed=0, reduce="sum")
    with pytest.raises(ValueError, match=r"cannot show this explainer's maps.*reduce='sum'"):
        callbacks.ExplanationLogger(summed, v, 0, tmp_path)
    # an image's map reduced over its channels has the image's height and width: shown
    model = tiny_model()
    x, t = data(2)
    normed = tfm.SmoothGrad(model, num_samples=2, seed=0, reduce="norm")
    logger = callbacks.ExplanationLogger(normed, x, t, tmp_path)
    logger.log(0)
    assert logger.last_grid.shape == (13, 20, 1)
    assert "relative_stderr" not in logger.last_scalars  # no standard error with reduce

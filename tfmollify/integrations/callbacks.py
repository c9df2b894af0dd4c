"""Keras callbacks: watch smoothed explanations change while a model trains.

:class:`ExplanationLogger` explains a few fixed examples at the end of every ``n``-th epoch of
``model.fit`` and writes TensorBoard summaries: an image grid (one row per example: the input,
its raw gradient, its smoothed map) and scalars (sparseness, relative standard error).

The explainer reads the model's variables each time it runs (the engine calls Keras 3
``stateless_call`` with the variables' current values; nothing is copied when the explainer is
built), so each epoch's maps are those of the weights at that epoch. Explaining only reads:
nothing is assigned, no random state of Keras or TensorFlow is drawn from (tfmollify's noise is
stateless, from the explainer's ``seed`` and the per-example seeds), so ``fit`` trains the same
weights, bit for bit, with and without the callback.

The summaries are written with ``tf.summary.write`` in the formats of TensorBoard's image and
scalar plugins (so TensorBoard need not be installed where the model trains); view them with
``tensorboard --logdir LOG_DIR``.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmollify.core import checks
from tfmollify.evaluation import metrics
from tfmollify.explainers.seam import Seam

__all__ = ["ExplanationLogger", "image_grid"]

MAX_EXAMPLES = 64  # rows of the image grid

_SEVERAL = "an explainer of a model with one input"


def _metadata(plugin: str) -> Any:
    """The ``SummaryMetadata`` that TensorBoard's ``tf.summary.image``/``scalar`` write
    (plugin ``images``/``scalars``, empty plugin content: version 0)."""
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = plugin
    return meta


def _plane(a: np.ndarray) -> np.ndarray:
    """One example as ``[H, W, C]`` (C 1 or 3): a vector becomes one row, a matrix one
    channel; 3-D arrays keep 1 or 3 channels, others are averaged over the last axis."""
    if a.ndim == 1:
        return a[None, :, None]
    if a.ndim == 2:
        return a[:, :, None]
    if a.shape[-1] in (1, 3):
        return a
    return a.mean(axis=-1, keepdims=True)


def _magnitude(a: np.ndarray, ndim: int) -> np.ndarray:
    """``|a|`` of one example's map as ``[H, W, 1]``, summed over the channels of an image
    (``ndim``: the input's dimensions per example)."""
    m = np.abs(a)
    if m.ndim == 0:  # one number per example (``reduce`` of a vector)
        m = m.reshape(1, 1)
    elif m.ndim == 3:
        m = m.sum(axis=-1)
    elif m.ndim == 1 and ndim == 1:
        m = m[None]
    return m[:, :, None]


def _unit(a: np.ndarray, *, signed: bool) -> np.ndarray:
    """Scaled into [0, 1]: min to max (inputs), or 0 to max (magnitudes); constant: 0."""
    lo = float(a.min()) if signed else 0.0
    span = float(a.max()) - lo
    return (a - lo) / span if span > 0 else np.zeros_like(a)


def image_grid(inputs: Any, columns: list[Any], *, gap: int = 1) -> np.ndarray:
    """One image of rows ``input | column 0 | column 1 | ...``, one row per example.

    Each input is scaled from its minimum to its maximum, each map's magnitude ``|a|``
    (summed over channels) from 0 to its maximum, so every cell uses the full range; cells are
    separated by ``gap`` white pixels. Vectors are shown as one row of pixels, matrices as
    gray images, ``[H, W, C]`` images as RGB (C = 3) or gray.

    Args:
        inputs: ``[B, *shape]`` with ``shape`` of 1 to 3 dimensions.
        columns: Maps ``[B, *shape]`` (or ``[B, *shape[:-1]]`` for a map reduced over the
            channel axis of an image).
        gap: White pixels between cells.

    Returns:
        A float32 array ``[H_total, W_total, C]`` in ``[0, 1]``.

    Raises:
        ValueError: If a map cannot be laid out beside its input.

    Example:

    >>> import numpy as np
    >>> x = np.arange(24, dtype="float32").reshape(2, 3, 4)
    >>> image_grid(x, [x, -x]).shape  # 2 rows of 3x4 cells, 3 columns, 1-pixel gaps
    (7, 14, 1)
    """
    x = np.asarray(inputs, np.float32)
    maps = [np.asarray(c, np.float32) for c in columns]
    ndim = x.ndim - 1
    rows = []
    for b in range(x.shape[0]):
        cells = [_unit(_plane(x[b]), signed=True)]
        for m in maps:
            cell = _unit(_magnitude(m[b], ndim), signed=False)
            if cell.shape[:2] != cells[0].shape[:2]:
                raise ValueError(
                    f"A map of shape {m.shape[1:]} cannot be laid out beside its input of "
                    f"shape {x.shape[1:]}: they need the same height and width."
                )
            cells.append(cell)
        channels = max(c.shape[-1] for c in cells)
        cells = [np.repeat(c, channels // c.shape[-1], axis=-1) for c in cells]
        h = cells[0].shape[0]
        white = np.ones((h, gap, channels), np.float32)
        row = [cells[0]]
        for c in cells[1:]:
            row += [white, c]
        rows.append(np.concatenate(row, axis=1))
    width, channels = rows[0].shape[1], rows[0].shape[2]
    out = [rows[0]]
    for r in rows[1:]:
        out += [np.ones((gap, width, channels), np.float32), r]
    return np.concatenate(out, axis=0)


def _png_summary(grid: np.ndarray) -> tf.Tensor:
    """The image plugin's tensor: ``[width, height, png]`` as strings."""
    # as tf.summary.image converts: [0, 1] floats to uint8, saturating
    pixels = tf.image.convert_image_dtype(tf.constant(grid, tf.float32), tf.uint8, saturate=True)
    h, w = grid.shape[:2]
    return tf.stack([tf.constant(str(w)), tf.constant(str(h)), tf.image.encode_png(pixels)])


class ExplanationLogger(keras.callbacks.Callback):
    """Writes smoothed explanations of fixed examples to TensorBoard while a model trains.

    At the end of every ``every_n_epochs``-th epoch (epochs 0-based as Keras counts them:
    epoch ``e`` is logged when ``(e + 1) % every_n_epochs == 0``, at step ``e``, the step
    Keras' own ``TensorBoard`` callback uses for epoch summaries), it explains ``inputs``
    with ``explainer.explain_full`` and writes under ``log_dir``:

    * ``<name>/grid``: an image, one row per example: the input, its raw gradient (of the
      target score, with the same weights) and its smoothed map (see :func:`image_grid`);
    * ``<name>/sparseness``: the mean over the examples of
      :func:`tfmollify.evaluation.metrics.sparseness` (Gini index) of the smoothed maps, and
      ``<name>/sparseness_raw_gradient`` of the raw gradients;
    * ``<name>/relative_stderr``: the mean over the examples of
      ``||stderr||_2 / ||attribution||_2`` (norms over all elements of the example), the
      Monte Carlo error of the maps (not with ``reduce``: it has no standard error).

    The maps follow training: the explainer runs on the model's current variables, with the
    same noise every epoch (fixed ``seeds``, or those derived from the explainer's ``seed``),
    so what changes between steps is the model. Training is unchanged by the callback.

    Args:
        explainer: A :class:`tfmollify.Explainer` of the Keras model being fit (or of a model
            built from its layers, e.g. its logits, sharing its variables). The model needs
            one input of 1 to 3 dimensions per example (a vector, a matrix or an image);
            ``explain_at`` is not supported (the map would not have the input's shape).
        inputs: ``[B, *input_shape]`` float examples to explain, at most 64 (the grid's rows).
        targets: The class index per example: an int for all, or ``[B]`` ints.
        log_dir: Directory of the TensorBoard event file (e.g. ``"logs/explanations"``).
        every_n_epochs: Log every this many epochs (a positive int).
        seeds: Optional ``[B]`` per-example noise seeds (as for ``explain``).
        name: The summaries' tag prefix.

    Raises:
        TypeError: If ``explainer`` is not a tfmollify explainer of a Keras model, or
            ``inputs``, ``targets``, ``log_dir`` or ``name`` have the wrong type.
        ValueError: For a model with several inputs, ``explain_at``, maps that cannot be
            shown beside their inputs (checked with one explanation when the logger is made),
            inputs of the wrong shape or with NaN/Inf, targets out of range, more than 64
            examples, or ``every_n_epochs`` not a positive int; when ``fit`` starts, if the
            explainer's model does not share the fitted model's variables (it would explain
            a copy that does not train).

    Example:

    >>> import tempfile, keras, numpy as np
    >>> import tfmollify as tfm
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    >>> y = np.arange(8) % 3
    >>> log_dir = tempfile.mkdtemp()
    >>> logger = tfm.callbacks.ExplanationLogger(
    ...     tfm.SmoothGrad(model, num_samples=8, seed=0), x[:2], y[:2], log_dir)
    >>> _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[logger])
    >>> sorted(logger.last_scalars)
    ['relative_stderr', 'sparseness', 'sparseness_raw_gradient']
    """

    def __init__(
        self,
        explainer: Any,
        inputs: Any,
        targets: Any,
        log_dir: str | os.PathLike,
        every_n_epochs: int = 1,
        *,
        seeds: Any = None,
        name: str = "explanations",
    ) -> None:
        super().__init__()
        self.explainer = _check_explainer(explainer)
        if isinstance(every_n_epochs, bool) or not isinstance(
            every_n_epochs, int | np.integer
        ) or every_n_epochs < 1:
            raise ValueError(
                "Argument `every_n_epochs` must be a positive int (log every n-th epoch). "
                f"Received: every_n_epochs={every_n_epochs!r}"
            )
        log_dir = checks.check_output_dir("log_dir", log_dir)  # not after the first epoch
        if not isinstance(name, str) or not name:
            raise TypeError(f"Argument `name` must be a non-empty str. Received: name={name!r}")
        self.every_n_epochs = int(every_n_epochs)
        self.log_dir = os.fspath(log_dir)
        self.name = name
        self.inputs = _check_inputs(explainer, inputs)
        self.targets = _check_targets(explainer, self.inputs, targets)
        if seeds is not None:  # the request rule every path uses
            seeds = explainer.seam.seeds(seeds, len(self.inputs))
        self.seeds = seeds
        self.last_scalars: dict[str, float] = {}
        self.last_grid: np.ndarray | None = None
        self._writer: Any = None
        self._layout_checked = False
        if getattr(explainer.model, "built", True) is not False:  # else fit builds it first
            self._check_layout()

    def _check_layout(self) -> None:
        """One explanation now (the compiled function is reused by every log), so that a map
        that cannot go beside its input fails here, not at the end of the first epoch (for a
        model that ``fit`` builds: at the start of training, once it is built)."""
        self._layout_checked = True
        self.targets = _check_targets(self.explainer, self.inputs, self.targets)
        value = np.asarray(
            self.explainer.explain_full(self.inputs, self.targets, seeds=self.seeds).attributions
        )
        try:
            image_grid(self.inputs, [value])
        except ValueError as exc:
            raise ValueError(
                f"ExplanationLogger cannot show this explainer's maps: {exc} (attribution="
                f"{self.explainer.attribution!r}, reduce={self.explainer.reduce!r})"
            ) from None

    # -- keras.callbacks.Callback ------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        """Checks that the explainer explains the model being fit (and, for a model that fit
        has just built, that its maps can be shown)."""
        if not self._layout_checked and getattr(self.explainer.model, "built", True):
            self._check_layout()
        fitted = self.model
        if fitted is None:
            return
        live = {id(v) for v in fitted.variables}
        own = list(self.explainer.model.trainable_variables)
        if self.explainer.model is not fitted and not all(id(v) in live for v in own):
            raise ValueError(
                "The explainer of ExplanationLogger explains model "
                f"{self.explainer.model.name!r}, which does not share the variables of the "
                f"model being fit ({fitted.name!r}): its maps would not change with training. "
                "Build the explainer on the fitted model (or on a model made of its layers)."
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs == 0:
            self.log(epoch)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- logging -----------------------------------------------------------------------------
    def raw_gradient(self) -> np.ndarray:
        """The plain gradient of each example's target score at the current weights."""
        x = tf.constant(self.inputs)
        with tf.GradientTape() as tape:
            tape.watch(x)
            scores = self.explainer.seam.scores(x)
            flat = tf.reshape(scores, [tf.shape(x)[0], -1])
            picked = tf.gather(flat, tf.constant(self.targets), axis=1, batch_dims=1)
        return tape.gradient(picked, x).numpy()

    def log(self, step: int) -> None:
        """Explains the inputs with the current weights and writes the summaries at ``step``
        (what the callback does at the end of a logged epoch; callable outside ``fit``)."""
        try:
            result = self.explainer.explain_full(self.inputs, self.targets, seeds=self.seeds)
        except Exception as exc:  # a diverged model must not stop training
            from tfmollify.explainers.explainer import NonFiniteError

            if not isinstance(exc, NonFiniteError):
                raise
            warnings.warn(f"ExplanationLogger: step {step} not logged: {exc}", stacklevel=2)
            return
        value = np.asarray(result.attributions)
        raw = self.raw_gradient()
        scalars = {}
        if np.all(np.isfinite(value)):
            scalars["sparseness"] = float(np.mean(metrics.sparseness(value)))
        if np.all(np.isfinite(raw)):
            scalars["sparseness_raw_gradient"] = float(np.mean(metrics.sparseness(raw)))
        if result.stderr is not None:
            scalars["relative_stderr"] = relative_stderr(value, np.asarray(result.stderr))
        grid = image_grid(self.inputs, [np.nan_to_num(raw), np.nan_to_num(value)])
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(), tf.summary.record_if(True):
            tf.summary.write(f"{self.name}/grid", _png_summary(grid), step=step,
                             metadata=_metadata("images"))
            for tag, v in scalars.items():
                tf.summary.write(f"{self.name}/{tag}", tf.constant(v, tf.float32), step=step,
                                 metadata=_metadata("scalars"))
        self._writer.flush()
        self.last_scalars = scalars
        self.last_grid = grid


def relative_stderr(attributions: np.ndarray, stderr: np.ndarray) -> float:
    """Mean over the examples of ``||stderr||_2 / ||attribution||_2`` (NaN where a map is
    zero or the error unknown, left out of the mean; NaN if none is left).

    Example:

    >>> import numpy as np
    >>> relative_stderr(np.array([[3.0, 4.0], [1.0, 0.0]]), np.array([[0.5, 0.0], [0.1, 0.0]]))
    0.1
    """
    b = attributions.shape[0]
    num = np.linalg.norm(stderr.reshape(b, -1).astype(np.float64), axis=1)
    den = np.linalg.norm(attributions.reshape(b, -1).astype(np.float64), axis=1)
    rel = np.divide(num, den, out=np.full(b, np.nan), where=den > 0)
    rel = rel[np.isfinite(rel)]
    return float(rel.mean()) if rel.size else math.nan


# -- argument checks -------------------------------------------------------------------------
def _check_explainer(explainer: Any) -> Any:
    if not isinstance(getattr(explainer, "seam", None), Seam):
        raise TypeError(
            "Argument `explainer` must be a tfmollify.Explainer (e.g. tfm.SmoothGrad(model)). "
            f"Received: explainer of type {type(explainer).__name__}"
        )
    if not isinstance(explainer.model, keras.Model):
        raise TypeError(
            "ExplanationLogger needs an explainer of a Keras model (the one being fit, so its "
            f"maps follow training). Received: model of type {type(explainer.model).__name__}"
        )
    for arg in ("explain_at", "noise_at", "attribute_at"):
        if getattr(explainer, arg, None) is not None:
            raise ValueError(
                f"ExplanationLogger does not support `{arg}`: the grid puts each map beside "
                "its input, so the map must have the input's shape. Use an explainer without "
                f"it. Received: {arg}={getattr(explainer, arg)!r}"
            )
    if len(getattr(explainer.model, "inputs", None) or [None]) != 1:
        raise ValueError(f"ExplanationLogger needs {_SEVERAL}; this model has several.")
    return explainer


def _check_inputs(explainer: Any, inputs: Any) -> np.ndarray:
    try:
        x = np.asarray(inputs)
    except ValueError:
        x = np.asarray(None)
    if isinstance(inputs, dict) or x.dtype == object:
        raise TypeError(
            f"Argument `inputs` must be one array [B, *input_shape] ({_SEVERAL}). "
            f"Received: inputs of type {type(inputs).__name__}"
        )
    if x.dtype.kind not in "fiu" or x.ndim not in (2, 3, 4):
        raise TypeError(
            "Argument `inputs` must be a float array [B, *input_shape] whose examples have 1 to "
            f"3 dimensions. Received: inputs with shape {x.shape} and dtype {x.dtype}"
        )
    x = x.astype(np.float32)
    if not 1 <= x.shape[0] <= MAX_EXAMPLES:
        raise ValueError(
            f"Argument `inputs` must hold 1 to {MAX_EXAMPLES} examples (one grid row each). "
            f"Received: {x.shape[0]} examples"
        )
    explainer.seam.check_inputs(x)  # the request rules every path uses
    return x


def _check_targets(explainer: Any, x: np.ndarray, targets: Any) -> np.ndarray:
    if callable(targets):
        raise TypeError(
            "Argument `targets` must be class indices (an int or one per example) for "
            "ExplanationLogger (the raw gradient picks the class). Received: a callable"
        )
    t = explainer.seam.targets(targets, x)  # the request rule every path uses
    return np.ascontiguousarray(t)

"""Explainers as SavedModels that TensorFlow Serving loads as they are.

:func:`export` writes ``path/<version>/`` with the tag ``serve`` and one signature,
``serving_default`` (method ``tensorflow/serving/predict``)::

    inputs:  inputs   float32 [None, *input_shape]
             targets  int32   [None]        class index per example
             seeds    int64   [None]        noise seed per example
    outputs: attributions    float32 [None, *input_shape]
             stderr          float32 [None, *input_shape]   Monte Carlo standard error
             finite_samples  int32   [None]   samples with a finite attribution (of all drawn)

With ``explain_at`` the ``inputs`` have the model's input dtype (e.g. int32 token ids), the
layer's output is computed in the graph, and ``attributions``/``stderr`` have that output's shape;
with ``reduce`` the ``attributions`` lose the last axis and there is no ``stderr`` output.
A model with several inputs takes one signature input per model input instead of ``inputs`` and
returns ``attributions_<name>``/``stderr_<name>`` per input, or, with ``explain_at``, the
layer's ``attributions``/``stderr``.

The served result equals ``explainer.explain(inputs, targets, seeds=seeds, return_stderr=True)``
for the same seeds (to float rounding): the input noise of example ``b`` depends only on
``seeds[b]``, so one example alone gets the same answer as inside any batch, and server-side
request batching changes nothing. Weight noise (NoiseGrad, FusionGrad) is drawn from the
explainer's ``seed``, fixed at export, and applied with ``stateless_call`` to copies of the
weights: nothing is assigned, so concurrent requests cannot see each other's perturbed weights
and the stored weights never change.

Beside the SavedModel, ``path/<version>/assets.extra/`` holds warmup requests
(``tf_serving_warmup_requests``), ``batching_parameters.txt``, a ``models.config`` (see
:func:`export` and :func:`server_command`) and the request rules
(``tfmollify_request_rules.json``, :class:`tfmollify.adapter.request.Rules`) with which a loaded
export answers a bad request as :meth:`tfmollify.Explainer.explain` does.

The model is tracked with :class:`keras.export.ExportArchive`, which records its variables so the
Session-based loader of TensorFlow Serving and ``saved_model_cli run`` finds them (a Keras 3 model
stored on a plain ``tf.Module`` does not load there: tensorflow#72963, keras#20095).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import re
import shlex
import shutil
import sys
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfmollify.adapter import keras_compat
from tfmollify.adapter import request as request_lib
from tfmollify.core import aggregation, engine, sampling
from tfmollify.core import checks as checks_lib
from tfmollify.core import inputs as inputs_lib
from tfmollify.core import plan as plan_lib
from tfmollify.explainers.seam import Seam

__all__ = [
    "SIGNATURE_KEY", "export", "prediction_log", "server_command", "warmup_batch_sizes",
    "warmup_request",
]

SIGNATURE_KEY = "serving_default"


def _input_shape(explainer: Any, input_shape: Any) -> tuple[int, ...]:
    inputs = getattr(explainer.model, "inputs", None)
    if input_shape is None:
        if not inputs or len(inputs) != 1:
            raise ValueError(
                "Cannot tell the model's input shape (a subclassed model, or not one input). "
                "Pass `input_shape`, the shape of one example, e.g. input_shape=(28, 28, 1)."
            )
        input_shape = tuple(inputs[0].shape[1:])
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(
            "Argument `input_shape` must be the fully known shape of one example (ints, no batch "
            f"dimension). Received: input_shape={input_shape!r}"
        ) from None
    if any(d <= 0 for d in shape):
        raise ValueError(
            "Argument `input_shape` must be the fully known shape of one example (positive ints, "
            f"no batch dimension). Received: input_shape={input_shape!r}"
        )
    return shape


def _check(explainer: Any, version: Any) -> int:
    if not isinstance(getattr(explainer, "seam", None), Seam):
        raise TypeError(
            "Argument `explainer` must be a tfmollify.Explainer. "
            f"Received: explainer of type {type(explainer).__name__}"
        )
    if isinstance(version, bool) or not isinstance(version, int | np.integer) or version < 0:
        raise ValueError(
            "Argument `version` must be an int >= 0 (TensorFlow Serving loads the highest "
            f"numbered sub-directory). Received: version={version!r}"
        )
    if not isinstance(explainer.model, keras.Model):
        raise TypeError(
            "Only explainers of Keras models can be exported (their weights go into the "
            f"SavedModel). Received: model of type {type(explainer.model).__name__}."
        )
    if explainer.tolerance is not None:
        raise ValueError(
            "An explainer with `tolerance` cannot be exported: a served call has a fixed cost. "
            "Export one with tolerance=None and the num_samples your accuracy needs."
        )
    if explainer.spec.smoothing.weight_noise and explainer.seed is None:
        raise ValueError(
            f"mode={explainer.mode!r} draws weight noise from the explainer's `seed`, which is "
            "stored in the export; it has seed=None. Create the explainer with an int seed, "
            "e.g. tfm.Explainer(model, mode='fg', seed=0)."
        )
    several = len(getattr(explainer.model, "inputs", None) or []) > 1
    per_input = several and explainer.epsilon is not None and explainer.epsilon.ndim == 1 and (
        explainer.epsilon.shape[0] == len(explainer.model.inputs)
    )
    if explainer.epsilon is not None and explainer.epsilon.ndim != 0 and not per_input:
        raise ValueError(
            "An explainer with one `epsilon` per example cannot be exported (requests have any "
            f"number of examples). Received: epsilon with shape {explainer.epsilon.shape}. Use "
            "one float, or epsilon=None for eq. 30 per example."
        )
    return int(version)


class _ServingGraph:
    """The ``serving_default`` function: checks, eq. 30 scales, a loop over blocks of examples.

    ``shape`` is what the engine sees per example: the model's input, or the output of the
    ``explain_at`` layer (computed in the graph from the inputs), or with several inputs their
    packed float row (``packing``; the signature then takes one tensor per input, named
    ``names``). With ``explain_at`` and several inputs, ``head_inputs`` is the model's input
    structure: the signature takes one tensor per input (``names``) and the layer's output is
    explained.
    """

    dtype = tf.float32

    def __init__(
        self,
        explainer: Any,
        shape: tuple[int, ...],
        score_shape: tuple[int, ...],
        packing: inputs_lib.Packing | None = None,
        names: list[str] | None = None,
        head_inputs: inputs_lib.Packing | None = None,
    ) -> None:
        seam = explainer.seam
        view, spec = seam.network, seam.spec
        self.spec, self.head, self.shape = spec, seam.head, shape
        self.packing, self.names, self.head_inputs = packing, names, head_inputs
        self.block = seam.plan().block or None  # 0: all examples in one pass
        self.network = view
        self.example_shape = seam.example_shape()
        probe_ints = np.zeros((1, 0 if packing is None else packing.int_size), np.int64)
        noise_shape, out_shape = seam.shapes(
            np.zeros((1, *shape), np.float32), probe_ints, packing
        )
        # results in the inputs' structure unless the attribution is at a layer (one array)
        self.structured = out_shape is None and view.attribute_layer is None
        self.out_shape = tuple(shape) if out_shape is None else out_shape
        core_spec = seam.core_spec(
            shape, self.dtype, with_stderr=True,
            cached_weight_noise=False,  # drawn in the graph: the export holds no noise table
            pipeline=1, jit_compile=False,
            parts=None if packing is None else packing.parts(),
            noise_shape=noise_shape, output_shape=out_shape,
        )
        self.core = engine.build(view, core_spec)
        seed = spec.seed if spec.seed is not None else 0
        self.wkey = tf.constant(sampling.weight_key(seed))
        self.no_noise_dtype = view.weight_dtype() if spec.smoothing.weight_noise else self.dtype
        self.n_classes = int(np.prod(score_shape, dtype=np.int64))
        self.size = int(np.prod(shape, dtype=np.int64))
        self.fixed_eps = request_lib.constant_epsilon(spec)  # the eager path's rule
        self.q = None
        if spec.smoothing.input_noise and spec.epsilon is None:
            self.q = spec.kernel.eq30_quantile(spec.alpha)  # raises as the eager path does
        if packing is not None and view.noise_layer is None and spec.input_range is None:
            self.fixed_parts = request_lib.part_epsilons(spec, packing)  # the eager rule

    def rules(self, float_input: bool) -> request_lib.Rules:
        """The request rules a loaded export checks in Python before this graph runs (the same
        functions as the eager path; the graph's assertions are their graph face)."""
        several = self.packing or self.head_inputs
        if several is not None:
            finite = tuple(
                (name, f"inputs[{key!r}]")
                for name, key, integer in zip(self.names, several.keys, several.integer,
                                              strict=True)
                if not integer
            )
            parts = getattr(self, "fixed_parts", None) if self.packing is not None else None
            floats = [(n, repr(k)) for n, k, i in zip(self.names, several.keys,
                                                       several.integer, strict=True) if not i]
            eq30_parts = () if parts is None or self.q is None else tuple(
                pair for pair, fixed in zip(floats, parts, strict=True) if fixed is None)
            return request_lib.Rules(self.n_classes, finite,
                                     eq30_quantile=self.q if eq30_parts else None,
                                     eq30_parts=eq30_parts)
        plain = self.head is None and self.network.noise_layer is None
        bounded = plain and self.spec.input_range is not None
        return request_lib.Rules(
            self.n_classes,
            (("inputs", "inputs"),) if float_input else (),
            tuple(float(v) for v in self.spec.input_range) if bounded else None,
            self.q if plain and not bounded else None,
            self.example_shape,
        )

    def function(self) -> tf.types.experimental.Function:
        return tf.function(self.explain)

    # -- checks ------------------------------------------------------------------------------
    def request_checks(self, targets: tf.Tensor, seeds: tf.Tensor, batch: tf.Tensor) -> list:
        """Lengths and ranges of ``targets`` and ``seeds`` (INVALID_ARGUMENT when wrong)."""
        return (checks_lib.check_count("targets", targets, batch)
                + checks_lib.check_count("seeds", seeds, batch)
                + checks_lib.check_targets_range(targets, self.n_classes))

    def input_checks(self, inputs: dict[str, tf.Tensor], batch: tf.Tensor) -> list:
        """Several inputs: one batch size, finite floating-point values."""
        checks = [
            tf.debugging.assert_equal(
                tf.shape(inputs[name])[0], batch, message=f"`{name}` needs the same batch size"
            )
            for name in self.names[1:]
        ]
        keys = dict(zip(self.names, (self.packing or self.head_inputs).keys, strict=True))
        return checks + [
            check for name in self.names if inputs[name].dtype.is_floating
            for check in checks_lib.check_finite(f"inputs[{keys[name]!r}]", inputs[name])
        ]

    def eq30(self, values: tf.Tensor, what: str = "", fix: str = "") -> tf.Tensor:
        """Eq. 30's scale per example, the same function and rule as the eager path."""
        eps, r = request_lib.eq30(values, self.q)
        with tf.control_dependencies(checks_lib.check_constant(r, what, fix)):
            return tf.cast(eps, self.dtype)

    def model_inputs(self, rows: tf.Tensor, ints: tf.Tensor, batch: tf.Tensor) -> Any:
        """What the model is called with for packed rows (or one input's rows)."""
        if self.packing is not None:
            return inputs_lib.unpack_rows(rows, ints, self.packing.parts())
        dtype = self.network.input_dtype(self.dtype)
        return tf.cast(tf.reshape(rows, [batch, *self.shape]), dtype)

    def special_eps(self, rows: tf.Tensor, ints: tf.Tensor, batch: tf.Tensor) -> Any:
        """The scales when the noise is at a layer (``[batch]``) or bounded by ``input_range``
        (``[batch, D]``, AdaptGrad); None otherwise. The same rules as the eager path."""
        spec = self.spec
        if self.network.noise_layer is not None:
            if self.fixed_eps is not None:
                return tf.fill([batch], tf.constant(self.fixed_eps, self.dtype))
            net = self.network
            h = net.activation(self.model_inputs(rows, ints, batch), net.noise_layer)
            return self.eq30(h)
        if spec.input_range is None:
            return None
        flat = tf.cast(rows, tf.float64)
        with tf.control_dependencies(checks_lib.check_input_range(flat, spec.input_range)):
            scale = request_lib.range_scale(flat, spec.input_range, self.q)
        return tf.cast(scale, self.dtype)

    # -- one input (or several into the explain_at layer) -----------------------------------
    def explain(self, inputs: Any, targets: tf.Tensor, seeds: tf.Tensor) -> dict:
        if self.packing is not None:
            return self.explain_packed(inputs, targets, seeds)
        names, head_inputs = self.names, self.head_inputs
        if head_inputs is not None:  # several inputs into the explain_at layer
            batch = tf.shape(inputs[names[0]])[0]
            checks = self.input_checks(inputs, batch) + self.request_checks(targets, seeds, batch)
            ordered = [inputs[name] for name in names]
            inputs = (
                dict(zip(head_inputs.keys, ordered, strict=True))
                if head_inputs.is_dict else ordered
            )
        else:
            batch = tf.shape(inputs)[0]
            checks = self.request_checks(targets, seeds, batch)
            if inputs.dtype.is_floating:
                checks += checks_lib.check_finite("inputs", inputs)
        with tf.control_dependencies(checks):
            at = inputs if self.head is None else self.head(inputs, training=False)
            flat = tf.reshape(tf.cast(at, tf.float64), [batch, self.size])
        rows = tf.cast(flat, self.dtype)
        eps = self.special_eps(rows, tf.zeros([batch, 0], tf.int64), batch)
        if eps is not None:
            pass
        elif self.fixed_eps is not None:
            eps = tf.fill([batch], tf.constant(self.fixed_eps, self.dtype))
        else:
            eps = self.eq30(rows)
        x = tf.reshape(rows, [batch, *self.shape])
        value, err, finite = self.run_rows(x, tf.zeros([batch, 0], tf.int64), targets, eps,
                                           seeds, batch)
        return self.outputs(value, err, finite, batch)

    def outputs(self, value, err, finite, batch) -> dict[str, tf.Tensor]:
        shape, reduce = self.out_shape, self.spec.reduce
        value = aggregation.reduce_last(tf.reshape(value, [batch, *shape]), reduce)
        out = {
            "attributions": value,
            "stderr": tf.reshape(err, [batch, *shape]),
            "finite_samples": tf.reshape(finite, [batch]),
        }
        if reduce is not None:  # no standard error of a sum or norm (see explain)
            del out["stderr"]
        return out

    # -- running -----------------------------------------------------------------------------
    def run(self, x, ints, t, eps, s):
        both = (x, ints) if self.packing is not None else (x,)
        return self.core(*both, t, eps, s, self.wkey, tf.zeros([0], self.no_noise_dtype),
                         tf.zeros([0, 0, 0], eps.dtype))

    def run_rows(self, x, ints, targets, eps, seeds, batch):
        """The core over ``batch`` rows, in blocks of ``block`` examples when bounded."""
        dtype, block = self.dtype, self.block

        def empty():
            zeros = tf.zeros([0, int(np.prod(self.out_shape, dtype=np.int64))], dtype)
            return zeros, zeros, tf.zeros([0], tf.int32)

        def whole():
            v, e, n = self.run(x, ints, targets, eps, seeds)
            return v, e, tf.cast(n, tf.int32)

        def blocks():
            n_blocks = plan_lib.block_count(batch, block)
            arrays = [
                tf.TensorArray(dtype, size=n_blocks, infer_shape=False),
                tf.TensorArray(dtype, size=n_blocks, infer_shape=False),
                tf.TensorArray(tf.int32, size=n_blocks, infer_shape=False),
            ]

            def body(i, vs, es, ns):
                lo, hi = plan_lib.span(i, batch, block, tf.minimum)
                v, e, n = self.run(
                    x[lo:hi], ints[lo:hi], targets[lo:hi], eps[lo:hi], seeds[lo:hi]
                )
                return i + 1, vs.write(i, v), es.write(i, e), ns.write(i, tf.cast(n, tf.int32))

            _, vs, es, ns = tf.while_loop(
                lambda i, *_: i < n_blocks, body, (tf.constant(0), *arrays),
                parallel_iterations=1,
            )
            return vs.concat(), es.concat(), ns.concat()

        return tf.cond(batch > 0, whole if block is None else blocks, empty)

    # -- several inputs ----------------------------------------------------------------------
    def pack_rows(self, inputs: dict[str, tf.Tensor], batch: tf.Tensor):
        """The float inputs as rows ``[batch, D]`` (float64) and the integer inputs as int64
        rows ``[batch, I]`` (exact, whatever their size), in the packing's order."""
        packing = self.packing
        size_of = dict(zip(self.names, packing.sizes, strict=True))
        columns = [
            tf.reshape(tf.cast(inputs[name], tf.int64 if integer else tf.float64),
                       [batch, size_of[name]])
            for name, integer in zip(self.names, packing.integer, strict=True)
        ]
        return inputs_lib.join_rows(columns, list(packing.integer), batch, tf.float64)

    def packed_eps(self, flat: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
        """One scale per example and float input ``[batch, K]`` (eq. 30 per input)."""
        if not self.packing.float_sizes:  # integer inputs only (NoiseGrad at a layer)
            return tf.zeros([batch, 0], self.dtype)
        columns = []
        pieces = tf.split(flat, self.packing.float_sizes, axis=1)
        keys = [k for k, i in zip(self.packing.keys, self.packing.integer, strict=True) if not i]
        for piece, fixed, key in zip(pieces, self.fixed_parts, keys, strict=True):
            if fixed is not None:
                columns.append(tf.fill([batch], tf.constant(fixed, self.dtype)))
            else:  # the eager path's words (request._packed_epsilons)
                columns.append(self.eq30(tf.cast(piece, self.dtype), f"input {key!r} of ",
                                         " (or one per input)"))
        return tf.stack(columns, axis=1)

    def explain_packed(self, inputs: dict[str, tf.Tensor], targets, seeds) -> dict:
        packing, dtype = self.packing, self.dtype
        batch = tf.shape(inputs[self.names[0]])[0]
        checks = self.input_checks(inputs, batch) + self.request_checks(targets, seeds, batch)
        with tf.control_dependencies(checks):
            flat, ints = self.pack_rows(inputs, batch)
        rows = tf.cast(flat, dtype)
        eps = self.special_eps(rows, ints, batch)
        if eps is None:
            eps = self.packed_eps(rows, batch)
        value, err, finite = self.run_rows(rows, ints, targets, eps, seeds, batch)
        if not self.structured:  # one array: the layer's attributions (or the method's)
            return self.outputs(value, err, finite, batch)
        out = {"finite_samples": tf.reshape(finite, [batch])}
        values = packing.pieces(value, batch, dtype)  # the eager path's unpacking rule
        errors = packing.pieces(tf.reshape(err, [batch, self.size]), batch, dtype)
        for name, v, e in zip(self.names, values, errors, strict=True):
            out[f"attributions_{name}"], out[f"stderr_{name}"] = v, e
        return out




def _input_names(model: Any, packing: inputs_lib.Packing) -> list[str]:
    """Signature names of several inputs: the dict keys, or the input layers' names."""
    if packing.is_dict:
        names = list(packing.keys)
    else:
        names = []
        for i, t in enumerate(model.inputs):
            names.append(keras_compat.input_layer_name(model, t) or f"input_{i}")
    clash = {"targets", "seeds"}.intersection(names)
    if clash or len(set(names)) != len(names):
        raise ValueError(
            f"The model's inputs are named {names}; the export needs unique names other than "
            "'targets' and 'seeds'. Rename the keras.Input layers."
        )
    return names


def export(
    explainer: Any,
    path: str | os.PathLike,
    *,
    version: int = 1,
    input_shape: Any = None,
    overwrite: bool = False,
    model_name: str = "explainer",
    max_batch_size: int | None = None,
    warmup: bool = True,
) -> str:
    """Writes ``explainer`` as a SavedModel for TensorFlow Serving, in ``path/<version>/``.

    The signature (see :mod:`tfmollify.explainers.export`) takes float32
    ``inputs [B, *input_shape]``, int32 ``targets [B]`` and int64 ``seeds [B]`` and returns
    ``attributions``, ``stderr`` and ``finite_samples``, equal to
    ``explainer.explain(inputs, targets, seeds=seeds, return_stderr=True)``. Every mode, kernel,
    aggregation, base attribution, proposal and ``batch_size`` (the memory bound holds in the
    server too) is supported; eq. 30's ``epsilon`` is computed per example inside the graph.
    Errors on bad requests (wrong lengths, targets out of range, NaN inputs, constant examples
    with ``epsilon=None``) come back as ``INVALID_ARGUMENT`` with the rule's message
    (:mod:`tfmollify.core.checks`), naming the input.
    An example whose samples are all non-finite gets NaN attributions and
    ``finite_samples == 0`` (the eager path raises :class:`tfmollify.NonFiniteError`).

    ``path/<version>/assets.extra/`` also gets the files TensorFlow Serving users expect
    (see :func:`server_command` for the command line that uses them):

    * ``tf_serving_warmup_requests``: a TFRecord of ``PredictionLog`` records, one
      ``PredictRequest`` per batch size of :func:`warmup_batch_sizes` up to
      ``max_batch_size``, which the server runs at load time, so that the first live request
      does not pay for the graph's first run (written without ``tensorflow-serving-api``:
      see :func:`prediction_log`);
    * ``batching_parameters.txt``: ``BatchingParameters`` for ``--enable_batching``, with
      ``max_batch_size`` as below;
    * ``models.config``: a ``ModelServerConfig`` naming ``model_name``, the absolute ``path``
      and a version policy that serves this ``version``;
    * ``tfmollify_request_rules.json``: the request rules
      (:class:`tfmollify.adapter.request.Rules`), so that a loaded export
      (:class:`tfmollify.integrations.serve.Export`, ``tfmollify serve``) refuses a bad
      request with the message :meth:`tfmollify.Explainer.explain` gives for it.

    They live inside the version directory, so they are swapped in with it and each version
    carries its own; the server ignores ``assets.extra`` except for the warmup file.

    Args:
        explainer: A :class:`tfmollify.Explainer` of a Keras model with class-index targets (a
            callable target is not exported); NoiseGrad and FusionGrad need an int ``seed``,
            since the weight draws are fixed in the export.
        path: The model's base directory; the SavedModel goes to ``path/<version>``.
        version: The version sub-directory, an int >= 0.
        input_shape: Shape of one example; needed only when the model does not say (a
            subclassed model).
        overwrite: Replace an existing ``path/<version>``. The new version is written beside
            it and swapped in atomically (Linux ``renameat2``; elsewhere two renames), so a
            server polling ``path`` never sees the version missing or half-written.
        model_name: The model's name in ``models.config`` and in the warmup requests (TF
            Serving's ``/v1/models/<model_name>``).
        max_batch_size: Examples per server-side batch in ``batching_parameters.txt``, and the
            largest warmup request. Default: the examples of one pass of the explainer (what
            ``batch_size`` allows), or 32 without ``batch_size``.
        warmup: Write ``assets.extra/tf_serving_warmup_requests``. TF Serving runs every
            record when it loads the version and refuses the version if one fails; the
            records hold uniform ``[0, 1)`` floats (within ``input_range`` if set) and zero
            integer inputs, so switch them off for a model that rejects such inputs.

    Returns:
        The directory written, ``path/<version>``.

    Raises:
        TypeError: If ``explainer`` is not an Explainer or its model is not a Keras model, or
            ``warmup`` is not a bool.
        ValueError: For NG/FG without seed, one epsilon per example, a bad ``version``,
            ``input_shape``, ``model_name`` or ``max_batch_size``.
        FileExistsError: If ``path/<version>`` exists and ``overwrite`` is False.
        ValueError: If ``path`` or ``path/<version>`` is a file.

    Example:

    >>> import os, tempfile, keras, numpy as np, tensorflow as tf
    >>> import tfmollify as tfm
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> explainer = tfm.Explainer(model, mode="fg", num_samples=4, num_weight_samples=2, seed=0)
    >>> out = tfm.export(explainer, tempfile.mkdtemp(), version=2)
    >>> served = tf.saved_model.load(out).signatures["serving_default"]
    >>> x = np.array([[1, 2, 3, 4], [4, 0, 1, 2]], np.float32)
    >>> got = served(inputs=tf.constant(x), targets=tf.constant([0, 2]),
    ...              seeds=tf.constant([7, 8], tf.int64))
    >>> want = explainer.explain(x, [0, 2], seeds=[7, 8])
    >>> bool(np.allclose(got["attributions"].numpy(), want, atol=1e-6))
    True
    >>> sorted(os.listdir(os.path.join(out, "assets.extra")))
    ['batching_parameters.txt', 'models.config', 'tf_serving_warmup_requests',
     'tfmollify_request_rules.json']
    """
    version = _check(explainer, version)
    path = checks_lib.check_output_dir("path", path)  # before any work
    several_inputs = len(getattr(explainer.model, "inputs", None) or []) > 1
    head = explainer.seam.head
    several = several_inputs and head is None  # packed rows
    shape = None if several_inputs else _input_shape(explainer, input_shape)
    target = os.path.join(os.fspath(path), str(version))
    _check_path(path, target, overwrite)
    extras = _Extras(explainer, os.fspath(path), version, model_name, max_batch_size, warmup)
    if several or _token_ids_at_layer(explainer, several_inputs, head):
        return _export_packed(explainer, target, extras)
    if head is not None and several_inputs:
        return _export_at_layer(explainer, target, extras)
    in_dtype = tf.float32
    at_shape = shape
    if head is not None:  # the engine sees the explain_at layer's output
        in_dtype = tf.as_dtype(explainer.model.inputs[0].dtype)
        at_shape = explainer.seam.layer_shape()
    # probe the model eagerly so a wrong input_shape is one clear error, not a tracing failure
    score_shape = explainer.seam.probe(np.zeros((1, *at_shape), np.float32))
    graph = _ServingGraph(explainer, at_shape, score_shape)
    fn = graph.function()
    archive = keras.export.ExportArchive()
    archive.track(explainer.model)
    inputs_spec = tf.TensorSpec([None, *shape], in_dtype, name="inputs")
    archive.add_endpoint(
        SIGNATURE_KEY,
        fn,
        input_signature=[
            inputs_spec,
            tf.TensorSpec([None], tf.int32, name="targets"),
            tf.TensorSpec([None], tf.int64, name="seeds"),
        ],
    )
    rules = graph.rules(in_dtype.is_floating)
    return _write(archive, target, extras.writer({"inputs": inputs_spec}, rules))


def _write(archive: Any, target: str, extras: Any = None) -> str:
    """Writes ``archive`` to ``target`` atomically: into a temporary directory beside it, then
    swapped in, so that ``target`` is never half-written and, when it existed, never missing.
    ``extras(directory)`` adds more files to the temporary directory before the swap."""
    tmp = f"{target}.tmp-export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        archive.write_out(tmp, verbose=False)
        if extras is not None:
            extras(tmp)
        if os.path.isdir(target) and _exchange(tmp, target):
            shutil.rmtree(tmp)  # the old version, now at tmp
        else:
            if os.path.isdir(target):  # no atomic exchange here: rename, keep the old one
                old = f"{target}.old-export-{os.getpid()}"
                os.replace(target, old)
                try:
                    os.replace(tmp, target)
                except BaseException:
                    os.replace(old, target)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: str, b: str) -> bool:
    """Atomically swaps two directories (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system cannot."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0


def _check_path(path: Any, target: str, overwrite: bool) -> None:
    base = os.fspath(path)
    for p, what in ((base, "`path`"), (target, "`path/<version>`")):
        if os.path.exists(p) and not os.path.isdir(p):
            raise ValueError(
                f"Argument {what} must be a directory (the model's base directory holds one "
                f"sub-directory per version). Received: {p!r} is a file. Choose another path."
            )
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(
            f"{target} exists. Choose another `version`, or pass overwrite=True to replace it."
        )


def _token_ids_at_layer(explainer: Any, several_inputs: bool, head: Any) -> bool:
    """Whether the model's one input is integer (token ids) with the noise and the attribution
    at a layer it reaches: exported as a one-part packing (the ids travel untouched)."""
    network = explainer.seam.network
    at_layer = network.noise_layer is not None or network.attribute_layer is not None
    inputs = getattr(explainer.model, "inputs", None) or []
    return (not several_inputs and head is None and at_layer and len(inputs) == 1
            and tf.as_dtype(inputs[0].dtype).is_integer)


def _export_packed(explainer: Any, target: str, extras: _Extras) -> str:
    """The export of a model with several inputs: one signature input per model input (or of
    token ids alone: the one signature input ``inputs``)."""
    packing = inputs_lib.for_model(explainer.model)
    if len(packing.keys) == 1:  # token ids alone: the model takes the tensor itself
        packing = dataclasses.replace(packing, keys=(None,))
        request_lib.check_token_inputs(
            explainer.spec, explainer.seam.network.noise_layer is not None,
            explainer.seam.network.attribute_layer is not None, [])
        names = ["inputs"]
    else:
        names = _input_names(explainer.model, packing)
    network = explainer.seam.network
    request_lib.check_packing(explainer.spec, packing, network.attribute_layer is not None)
    row = np.zeros((1, sum(packing.float_sizes)), np.float32)
    score_shape = explainer.seam.probe(row, packing)
    graph = _ServingGraph(explainer, (row.shape[1],), score_shape, packing, names)
    return _write_several(explainer, target, graph, packing, names, extras)


def _export_at_layer(explainer: Any, target: str, extras: _Extras) -> str:
    """``explain_at`` on a model with several inputs: one signature input per model input,
    attributions of the layer's output."""
    packing = inputs_lib.for_model(explainer.model)
    names = _input_names(explainer.model, packing)
    at_shape = explainer.seam.layer_shape()
    score_shape = explainer.seam.probe(np.zeros((1, *at_shape), np.float32))
    graph = _ServingGraph(explainer, at_shape, score_shape, names=names, head_inputs=packing)
    return _write_several(explainer, target, graph, packing, names, extras)


def _write_several(
    explainer: Any, target: str, graph: _ServingGraph, packing: inputs_lib.Packing,
    names: list[str], extras: _Extras,
) -> str:
    """Writes ``graph`` with one signature input per model input (named ``names``)."""
    archive = keras.export.ExportArchive()
    archive.track(explainer.model)
    specs = {
        name: tf.TensorSpec([None, *shape], dtype, name=name)
        for name, shape, dtype in zip(names, packing.shapes, packing.model_dtypes, strict=True)
    }
    archive.add_endpoint(
        SIGNATURE_KEY,
        graph.function(),
        input_signature=[
            specs,
            tf.TensorSpec([None], tf.int32, name="targets"),
            tf.TensorSpec([None], tf.int64, name="seeds"),
        ],
    )
    return _write(archive, target, extras.writer(specs, graph.rules(True)))


# -- TensorFlow Serving files beside the SavedModel -------------------------------------------
EXTRAS_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
BATCHING_FILE = "batching_parameters.txt"
MODELS_CONFIG_FILE = "models.config"
DEFAULT_MAX_BATCH_SIZE = 32  # examples per server batch when the explainer has no batch_size
BATCH_TIMEOUT_MICROS = 1000
MAX_ENQUEUED_BATCHES = 16
NUM_BATCH_THREADS = 4
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


def warmup_request(specs: dict[str, Any], batch: int, input_range: Any = None
                   ) -> dict[str, np.ndarray]:
    """A synthetic request of ``batch`` examples for the model inputs ``specs``: uniform
    ``[0, 1)`` floats (not constant, so eq. 30 has a scale; uniform in ``input_range`` when
    given), zeros for integer inputs (valid token ids), targets 0, seeds ``0..batch-1``. The
    export's warmup records and the server's warmup (:func:`tfmollify.integrations.serve.
    warm_up`) both use it."""
    low, high = (0.0, 1.0) if input_range is None else map(float, input_range)
    rng = np.random.default_rng(batch)
    req = {}
    for name, spec in specs.items():
        shape = (batch, *[1 if d is None else d for d in spec.shape[1:]])
        dtype = spec.dtype.as_numpy_dtype
        req[name] = (rng.uniform(low, high, size=shape).astype(dtype) if spec.dtype.is_floating
                     else np.zeros(shape, dtype))
    req["targets"] = np.zeros(batch, np.int32)
    req["seeds"] = np.arange(batch, dtype=np.int64)
    return req


def warmup_batch_sizes(max_batch_size: int) -> list[int]:
    """The batch sizes of the warmup requests: powers of two below ``max_batch_size``, then
    ``max_batch_size`` itself.

    Example:

    >>> warmup_batch_sizes(6), warmup_batch_sizes(1), warmup_batch_sizes(8)
    ([1, 2, 4, 6], [1], [1, 2, 4, 8])
    """
    sizes, b = [], 1
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    return [*sizes, max_batch_size]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2: strings, bytes, messages)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def prediction_log(model_name: str, inputs: dict[str, np.ndarray]) -> bytes:
    """A serialized ``tensorflow.serving.PredictionLog`` holding one ``PredictRequest`` to
    ``serving_default`` with ``inputs``: what TensorFlow Serving reads from
    ``assets.extra/tf_serving_warmup_requests``.

    Written from the protobuf wire format with TensorFlow's own ``TensorProto``, so that
    ``tensorflow-serving-api`` is not needed. Field numbers (``prediction_log.proto``,
    ``predict.proto``, ``model.proto``): ``PredictionLog.predict_log = 6``,
    ``PredictLog.request = 1``, ``PredictRequest.model_spec = 1``, ``PredictRequest.inputs = 2``
    (a map: entries ``key = 1``, ``value = 2``), ``ModelSpec.name = 1``,
    ``ModelSpec.signature_name = 3``. The bytes equal the protos' deterministic serialization
    (map keys sorted); ``tests/test_serving_extras.py`` checks it against the real classes.

    Args:
        model_name: ``model_spec.name``.
        inputs: The signature inputs by name, as arrays of their signature dtypes.

    Returns:
        The serialized message.

    Example:

    >>> import numpy as np
    >>> record = prediction_log("explainer", {"seeds": np.array([7], np.int64)})
    >>> record[0] == 6 << 3 | 2, b"serving_default" in record, b"seeds" in record
    (True, True, True)
    """
    spec = _field(1, model_name.encode()) + _field(3, SIGNATURE_KEY.encode())
    entries = b"".join(
        _field(2, _field(1, key.encode())
               + _field(2, tf.make_tensor_proto(inputs[key]).SerializeToString()))
        for key in sorted(inputs)
    )
    return _field(6, _field(1, _field(1, spec) + entries))


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class _Extras:
    """The TF Serving files of one export: warmup requests, batching parameters, a
    ``models.config``; all go to ``<version>/assets.extra/`` (written before the swap, so they
    come and go with their version)."""

    def __init__(
        self, explainer: Any, base: str, version: int, model_name: Any, max_batch_size: Any,
        warmup: Any,
    ) -> None:
        if not isinstance(model_name, str) or not _MODEL_NAME.match(model_name):
            raise ValueError(
                "Argument `model_name` must be a non-empty name of letters, digits, '.', '_' "
                "and '-' (it is the model's name in TF Serving URLs). "
                f"Received: model_name={model_name!r}"
            )
        if max_batch_size is not None and (
            isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int | np.integer)
            or max_batch_size < 1
        ):
            raise ValueError(
                "Argument `max_batch_size` must be a positive int (examples per server-side "
                f"batch) or None. Received: max_batch_size={max_batch_size!r}"
            )
        if not isinstance(warmup, bool):
            raise TypeError(f"Argument `warmup` must be True or False. Received: warmup={warmup!r}")
        self.base, self.version, self.name, self.warmup = base, version, model_name, warmup
        block = explainer.seam.plan().block  # examples per pass; 0: all in one pass
        self.derived = max_batch_size is None
        if max_batch_size is not None:
            self.max_batch_size = int(max_batch_size)
        else:
            self.max_batch_size = block if block > 0 else DEFAULT_MAX_BATCH_SIZE
        self.batch_size = explainer.seam.batch_size
        # AdaptGrad's bounds (input_range=(low, high)): warmup inputs must lie inside them
        self.input_range = getattr(explainer.spec, "input_range", None)
        spec = explainer.spec
        self.per_example = spec.samples_per_example * spec.evaluations_per_sample

    def batching_parameters(self) -> str:
        if not self.derived:
            why = "as given to export(max_batch_size=...)"
        elif self.batch_size is not None:
            why = (f"the examples of one pass of the explainer (batch_size={self.batch_size} "
                   f"model evaluations, {self.per_example} per example)")
        else:
            why = ("a default: the explainer has batch_size=None, so a batch of B examples "
                   f"evaluates B x {self.per_example} rows at once")
        return (
            "# TensorFlow Serving BatchingParameters (text proto), written by tfmollify.export.\n"
            "#   tensorflow_model_server --enable_batching --batching_parameters_file=<this file>\n"
            f"# max_batch_size: {why}.\n"
            f"max_batch_size {{ value: {self.max_batch_size} }}\n"
            "# batch_timeout_micros: how long a partial batch waits for more requests.\n"
            f"batch_timeout_micros {{ value: {BATCH_TIMEOUT_MICROS} }}\n"
            "# max_enqueued_batches: beyond this many waiting batches requests fail fast.\n"
            f"max_enqueued_batches {{ value: {MAX_ENQUEUED_BATCHES} }}\n"
            "# num_batch_threads: batches explained in parallel (each with its own memory);\n"
            "# about the serving machine's CPU cores.\n"
            f"num_batch_threads {{ value: {NUM_BATCH_THREADS} }}\n"
        )

    def models_config(self) -> str:
        return (
            "# TensorFlow Serving ModelServerConfig (text proto), written by tfmollify.export.\n"
            "#   tensorflow_model_server --model_config_file=<this file>\n"
            "# base_path is where the export was written: edit it if the model moves (e.g. in a\n"
            "# container). The policy serves this version only; `latest { num_versions: 1 }`\n"
            "# would follow newer exports instead.\n"
            "model_config_list {\n"
            "  config {\n"
            f"    name: {_quote(self.name)}\n"
            f"    base_path: {_quote(os.path.abspath(self.base))}\n"
            '    model_platform: "tensorflow"\n'
            "    model_version_policy {\n"
            f"      specific {{ versions: {self.version} }}\n"
            "    }\n"
            "  }\n"
            "}\n"
        )

    def requests(self, specs: dict[str, tf.TensorSpec]) -> list[dict[str, np.ndarray]]:
        """One request per warmup batch size: uniform [0, 1) floats (not constant, so eq. 30
        has a scale; uniform in ``input_range`` when the explainer has one), zeros for integer
        inputs (valid token ids), targets 0, seeds 0..B-1."""
        return [warmup_request(specs, b, self.input_range)
                for b in warmup_batch_sizes(self.max_batch_size)]

    def writer(self, specs: dict[str, tf.TensorSpec], rules: request_lib.Rules) -> Any:
        """A function that writes the files into a version directory (``rules``: the request
        rules, for :class:`tfmollify.integrations.serve.Export`)."""

        def write(version_dir: str) -> None:
            extra = os.path.join(version_dir, EXTRAS_DIR)
            os.makedirs(extra, exist_ok=True)
            with open(os.path.join(extra, request_lib.RULES_FILE), "w", encoding="utf-8") as f:
                f.write(rules.to_json())
            with open(os.path.join(extra, BATCHING_FILE), "w", encoding="utf-8") as f:
                f.write(self.batching_parameters())
            with open(os.path.join(extra, MODELS_CONFIG_FILE), "w", encoding="utf-8") as f:
                f.write(self.models_config())
            if self.warmup:
                with tf.io.TFRecordWriter(os.path.join(extra, WARMUP_FILE)) as records:
                    for req in self.requests(specs):
                        records.write(prediction_log(self.name, req))

        return write


def server_command(version_dir: str | os.PathLike, *, port: int = 8500,
                   rest_api_port: int = 8501) -> str:
    """The ``tensorflow_model_server`` command that serves an export with its
    ``assets.extra`` files (the model config, batching on with its parameters; the warmup
    requests are read from the version directory by the server itself).

    Args:
        version_dir: The directory :func:`export` returned, ``path/<version>``.
        port: gRPC port.
        rest_api_port: REST port.

    Returns:
        One shell command line (paths quoted where needed).

    Example:

    >>> print(server_command("/srv/explainer/1"))  # doctest: +NORMALIZE_WHITESPACE
    tensorflow_model_server --port=8500 --rest_api_port=8501
    --model_config_file=/srv/explainer/1/assets.extra/models.config --enable_batching=true
    --batching_parameters_file=/srv/explainer/1/assets.extra/batching_parameters.txt
    """
    extra = os.path.join(os.path.abspath(os.fspath(version_dir)), EXTRAS_DIR)
    return (
        f"tensorflow_model_server --port={int(port)} --rest_api_port={int(rest_api_port)} "
        f"--model_config_file={shlex.quote(os.path.join(extra, MODELS_CONFIG_FILE))} "
        "--enable_batching=true "
        f"--batching_parameters_file={shlex.quote(os.path.join(extra, BATCHING_FILE))}"
    )

"""How tfmollify calls the user's model: one object for the explainer, the engine, the export
and the data-set code.

A :class:`ModelView` knows which output is explained (``output=``), where the model is split
(``explain_at=``: the *head* computes the layer's output with the stored weights, the *net* is
the rest, which the engine explains), which trainable variables get weight noise
(``weight_layers=``, ``perturb_bias=``), the dtypes the model computes in, and how to run it in
inference mode with given weights (Keras 3 ``stateless_call``: the model's variables are only
read). It also probes the model on one example, so that a model that rejects the inputs fails
with one clear error before anything is traced.

The view keeps the forward pass and the interception of layers' calls; it leaves finding layers
and cutting the model to :mod:`~tfmollify.adapter.layers`, choosing the weights that get noise to
:mod:`~tfmollify.adapter.weights` and the probes to :mod:`~tfmollify.adapter.probes`.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify.adapter import draws, keras_compat, layers, probes, request, weights
from tfmollify.adapter.layers import layer_paths, summarize
from tfmollify.adapter.spec import Spec
from tfmollify.core import inputs as inputs_lib

__all__ = ["ModelView", "layer_paths", "summarize"]


_INTERCEPT_LOCK = threading.RLock()  # one interception at a time, whichever explainer


class _Captured(Exception):
    """Stops a forward pass once the layer whose output is wanted has given it."""


class _SharedLayerError(ValueError):
    """A layer with noise or attribution on its output was called more than once."""


class _Calls:
    """A layer's ``call`` replaced while an interception lasts: the hook goes on one of its
    calls in a pass, the others run as they are.

    Which call: the ``k``-th (from 0) when the setting said ``"name:k"``; otherwise the first.
    A later call is allowed only when the hooked one was the lookup of a tied embedding (its
    input integer, the later ones' floating-point: the same matrix used again, reversed, for
    the logits); any other second call is ambiguous and raises.
    """

    def __init__(self, layer: Any, original: Callable, fn: Callable, which: int | None) -> None:
        self.layer, self.original, self.fn, self.which = layer, original, fn, which
        self.count, self.lookup = 0, False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        index, self.count = self.count, self.count + 1
        first = args[0] if args else next(iter(kwargs.values()), None)
        integer = request.is_integer(first)
        if self.which is not None:
            hooked = index == self.which
        elif index == 0:
            hooked, self.lookup = True, integer
        elif self.lookup and not integer:
            hooked = False  # a tied embedding's reverse use: not the place named
        else:
            raise _SharedLayerError(
                f"Layer {self.layer.name!r} is called more than once in one pass of the model "
                "(a shared layer): noise or attribution at its output would be ambiguous. "
                f"Name one call as '{self.layer.name}:k' (k = 0 for its first call in a pass), "
                "or choose a layer that is called once (e.g. the layer after it, or a "
                "sub-model's own layer)."
            )
        out = self.original(*args, **kwargs)
        if not hooked:
            return out
        if not isinstance(out, tf.Tensor | tf.Variable) and not hasattr(out, "dtype"):
            raise ValueError(
                f"Layer {self.layer.name!r} returns {type(out).__name__}, not one tensor: "
                "noise and attributions need a layer with one output."
            )
        return self.fn(out)

    def check_done(self) -> None:
        """After a pass: a call named ``"name:k"`` happened."""
        if self.which is not None and self.count and self.count <= self.which:
            raise ValueError(
                f"Layer {self.layer.name!r} is called {self.count} time(s) in one pass of the "
                f"model, so '{self.layer.name}:{self.which}' names no call. Calls count from 0."
            )


@contextlib.contextmanager
def _per_row(net: Any, per_draw: dict[int, tf.Tensor], k: int, inner: tf.Tensor,
             copies: bool = False) -> Iterator[None]:
    """While open, the layers owning the weights of ``per_draw`` (``{id(variable): [k, ...]}``)
    compute in their per-row-weight forms. A layer whose call an interception already holds
    (a hook on its output) keeps the hook, over the form. Between grouped convolutions the rows
    stay side by side through the channel-wise layers, and with ``copies`` (the groups' input
    rows are copies) a convolution fed by the inputs convolves one group's rows
    (:func:`draws.side_by_side_plan`)."""
    owners = draws.owners(net, [v for v in net.trainable_variables if id(v) in per_draw])
    layers_ = list({id(layer): layer for layer in owners.values()}.values())
    saved = []
    _INTERCEPT_LOCK.acquire()
    try:
        hooked = {id(layer) for layer in keras_compat.sublayers(net, recursive=True)
                  if isinstance(layer.__dict__.get("call"), _Calls)}
        plan = draws.side_by_side_plan(net, layers_, hooked, copies)
        for layer in plan.channelwise:  # never hooked (the plan leaves those out)

            def passed(inputs, *args, layer=layer, original=layer.call, **kwargs):
                return draws.channelwise(layer, original, inputs, k, inner, plan, *args,
                                         **kwargs)

            saved.append((layer, layer.__dict__.get("call"), None))
            object.__setattr__(layer, "call", passed)
        for layer in layers_:
            form = draws.form_of(layer)
            named = {v.name: v for v in layer.weights}

            def params(name, named=named):
                v = named[name]
                return per_draw[id(v)] if id(v) in per_draw else v.value[None]

            def call(inputs, *args, layer=layer, form=form, params=params, **kwargs):
                del args, kwargs  # training=False, no mask in inference
                return draws.run_form(layer, form, inputs, params, k, inner, plan)

            own = layer.__dict__.get("call")
            if isinstance(own, _Calls):  # hooked: the hook stays on top of the form
                saved.append((layer, own, own.original))
                own.original = call
            else:
                saved.append((layer, own, None))
                object.__setattr__(layer, "call", call)
        yield
    finally:
        for layer, own, original in reversed(saved):
            if original is not None:
                own.original = original
            elif own is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", own)
        _INTERCEPT_LOCK.release()


class ModelView:
    """The user's model as the explainer sees it.

    Args:
        model: A Keras 3 model, or for ``mode="sg"`` any callable ``inputs -> scores``.
        spec: The explainer's :class:`~tfmollify.adapter.spec.Spec`.

    Attributes:
        model: The user's model (never modified).
        head: The model up to the ``explain_at`` layer's output, or None.
        net: What the engine explains: the model (one output), or its part after ``explain_at``.
        is_keras: Whether ``net`` is a Keras model (``stateless_call``, ``training=False``).
        weight_selection: Indices into ``net.trainable_variables`` of the variables that get
            weight noise (None: all of them).

    Raises:
        TypeError, ValueError: For a model that does not fit the spec (see
            :class:`tfmollify.Explainer`).
    """

    def __init__(self, model: Any, spec: Spec) -> None:
        self.model = model
        self.mode = spec.mode
        self.smoothing = spec.smoothing
        self.method = spec.method  # a base method of the user's (None: a built-in by name)
        self.attribution = spec.attribution
        self._check_model(model)
        base = model if spec.output is None else layers.select_output(model, spec.output)
        self.explain_at = spec.explain_at
        self.noise_layer = self.attribute_layer = None
        self.calls: dict[int, int] = {}  # id(layer) -> which call of it (``"name:k"``)
        if spec.explain_at is None:
            self.head, self.net = None, base
            if spec.noise_at is not None:
                self.noise_layer = self._place(base, spec.noise_at, "noise_at")
            if spec.attribute_at is not None:
                self.attribute_layer = self._place(base, spec.attribute_at, "attribute_at")
        else:
            at, call = layers.parse_call(spec.explain_at)
            self.head, self.net = (None, base) if call is not None else layers.split(base, at)
            if self.head is None:  # nested, or not a cut: intercept the layer's call instead
                layer = self._place(base, spec.explain_at, "explain_at")
                self.noise_layer = self.attribute_layer = layer
        if self.intercepts and not hasattr(self.net, "stateless_call"):
            raise TypeError(
                "Arguments `noise_at`/`attribute_at` need a Keras 3 model (its layers' calls are "
                f"intercepted). Received: model of type {type(self.net).__name__}."
            )
        if self.net is not model:
            self._check_model(self.net)
        self.is_keras = hasattr(self.net, "stateless_call")
        # read once, before any layer's call is intercepted (as Keras reads it at construction)
        self._net_takes_training = self.is_keras and keras_compat.call_takes_training(self.net)
        self._keras_compute: tf.DType | None = None
        self.weight_selection = (
            None
            if not spec.smoothing.weight_noise
            else weights.select_weights(self.net, spec.weight_layers, spec.perturb_bias)
        )
        if spec.smoothing.weight_noise and not math.isfinite(spec.kernel.variance):
            warnings.warn(
                f"kernel={spec.kernel.name!r} has no mean or variance: with weight noise "
                f"(mode={spec.mode!r}) the mollified gradient of a model whose gradient grows "
                "with its weights does not exist, and the estimate does not converge as "
                "num_weight_samples grows. Prefer a kernel with finite variance for NG/FG.",
                UserWarning,
                stacklevel=4,
            )

    # -- construction ------------------------------------------------------------------------
    def _check_model(self, model: Any) -> None:
        if not self.smoothing.weight_noise:
            if not callable(model):
                raise TypeError(
                    "Argument `model` must be a Keras model or a callable inputs -> scores. "
                    f"Received: model={model!r}"
                )
            return
        if not hasattr(model, "stateless_call") or not hasattr(model, "trainable_variables"):
            raise TypeError(
                f"mode={self.mode!r} perturbs weights and needs a Keras 3 model (with "
                f"`stateless_call`). Received: model of type {type(model).__name__}. Use "
                "mode='sg' for plain callables."
            )
        if not model.trainable_variables:
            raise ValueError(
                f"mode={self.mode!r} perturbs trainable weights, but the model has none "
                f"(model={getattr(model, 'name', model)!r}: not built yet, or all layers "
                "frozen). Call the model once on data to build it, or use mode='sg'."
            )

    find_layer = staticmethod(layers.find_layer)

    def _place(self, model: Any, at: Any, name: str) -> Any:
        """The layer a place setting names (``"name:k"``: its ``k``-th call, kept)."""
        try:
            layer = layers.find_layer(model, at, name)
            call = None
        except ValueError:
            bare, call = layers.parse_call(at)
            if call is None:
                raise
            layer = layers.find_layer(model, bare, name)
        if call is not None:
            self.calls[id(layer)] = call
        return layer

    # -- what the engine needs ---------------------------------------------------------------
    @property
    def trainable(self) -> list[Any]:
        return list(self.net.trainable_variables)

    def selected_variables(self) -> list[Any]:
        """The trainable variables that get weight noise."""
        trainable = self.trainable
        sel = self.weight_selection
        return trainable if sel is None else [trainable[i] for i in sel]

    def weight_sizes(self) -> list[int]:
        return [int(np.prod(v.shape, dtype=np.int64)) for v in self.selected_variables()]

    def weight_dtype(self) -> tf.DType:
        """Weight noise is drawn in float64 for float64 weights, else in float32."""
        return tf.float64 if self.net.trainable_variables[0].dtype == "float64" else tf.float32

    def compute_dtype(self, float64_inputs: bool = False) -> tf.DType:
        """The dtype the noise and the attributions are computed in.

        A Keras model decides, whatever dtype the inputs come in: float64 when its dtype
        policy, its (first) input or its weights are float64, else float32 (mixed precision
        included). A plain callable follows its inputs (float64 inputs in float64).
        """
        if not self.is_keras:
            return tf.float64 if float64_inputs else tf.float32
        if self._keras_compute is None:  # decided once: the model does not change
            net = self.net
            policy = getattr(getattr(net, "dtype_policy", None), "compute_dtype", None)
            weights = list(getattr(net, "weights", []))
            wide = (
                policy == "float64"
                or self.input_dtype(tf.float32) == tf.float64
                or (bool(weights) and weights[0].dtype == "float64")
            )
            self._keras_compute = tf.float64 if wide else tf.float32
        return self._keras_compute

    def activation_bytes(self) -> int | None:
        """An estimate of the memory one evaluation (one row) holds for its gradient: the
        outputs of every layer of the net, nested ones included, in 4-byte floats (None when a
        shape is unknown: a subclassed model, a dynamic sequence length, a plain callable).

        It over-counts: TensorFlow frees or fuses part of them (MobileNetV2 at 224 x 224:
        83 MiB estimated, 29 MiB measured per evaluation), so a budget in these units is
        conservative.
        """
        if not self.is_keras:
            return None
        return layers.activation_bytes(self.net)

    def row_bytes(self) -> int | None:
        """What one evaluation holds in a pass, in bytes: every layer's output and its gradient
        (twice :meth:`activation_bytes`), and the noisy input row and its gradient (None when
        the layer shapes are unknown)."""
        act = self.activation_bytes()
        if act is None:
            return None
        shape = self.example_shape()
        row = 0 if shape is None or None in shape else int(np.prod(shape, dtype=np.int64)) * 4
        return 2 * act + 2 * row

    def example_shape(self) -> tuple[int | None, ...] | None:
        """The shape of one example that the net's one input declares (None for a free
        dimension), or None when unknown: a callable, a subclassed model, several inputs, or
        ``explain_at`` cut off a head (the call's rows are then the layer's output)."""
        if self.head is not None:
            return None
        try:
            inputs = self.net.inputs
        except Exception:  # a plain callable, or a model never called
            return None
        if not inputs or len(inputs) != 1:
            return None
        return tuple(None if d is None else int(d) for d in inputs[0].shape[1:])

    def input_dtype(self, default: tf.DType) -> tf.DType:
        """The dtype the net's (first) input expects (``default`` when unknown)."""
        try:
            return tf.as_dtype(self.net.inputs[0].dtype)
        except Exception:  # subclassed models have no symbolic inputs
            return default

    def forward(
        self, x: Any, weights: list[tf.Tensor] | None = None, groups: tuple | None = None
    ) -> Any:
        """The net's output for ``x`` in inference mode, with ``weights`` in place of its
        trainable variables (None: the stored ones).

        ``groups=(k, inner, copies)``: ``k`` weight draws share the pass. The perturbed
        weights (those of :attr:`weight_selection`) then carry a leading axis of ``k``, the
        rows are laid out ``[S, k, inner]`` (see :mod:`tfmollify.adapter.draws`) and the
        layers owning them run in their per-row-weight forms. ``copies``: the ``k`` groups'
        rows are the same (a convolution the inputs feed then convolves one group's).

        ``stateless_call`` passes keyword arguments straight to ``call``, so ``training`` is
        only given to models whose ``call`` accepts it (a subclassed model may not).
        """
        model = self.net
        if weights is None:
            return model(x, training=False) if self.is_keras else model(x)
        kwargs = {"training": False} if self._net_takes_training else {}
        nt = [v.value for v in model.non_trainable_variables]
        if groups is None:
            out, _ = model.stateless_call(weights, nt, x, **kwargs)
            return out
        trainable = model.trainable_variables
        chosen = range(len(trainable)) if self.weight_selection is None else self.weight_selection
        per_draw = {id(trainable[i]): weights[i] for i in chosen}
        base = [v.value if id(v) in per_draw else w for v, w in zip(trainable, weights,
                                                                     strict=True)]
        with _per_row(model, per_draw, *groups):
            out, _ = model.stateless_call(base, nt, x, **kwargs)
        return out

    def layers_without_draw_forms(self) -> list[str]:
        """The layers among those whose weights get noise that have no per-row-weight form
        (:func:`tfmollify.adapter.draws.unsupported`): empty when several weight draws can
        share a pass."""
        if not (self.smoothing.weight_noise and self.is_keras):
            return []
        return draws.unsupported(self.net, self.selected_variables())

    @property
    def intercepts(self) -> bool:
        """Whether noise or attribution sit at a layer inside the net (its call intercepted)."""
        return self.noise_layer is not None or self.attribute_layer is not None

    @contextlib.contextmanager
    def intercept(self, hooks: dict[int, tuple[Any, Callable]]) -> Iterator[None]:
        """Within the block, ``layer``'s output ``h`` becomes ``fn(h)`` on every call.

        Args:
            hooks: ``{id(layer): (layer, fn)}``.

        The layers' ``call`` is replaced on the instances and restored on the way out, errors
        included. A layer called more than once in one pass (a shared layer) raises: noise on
        its output would be one draw per call, which is no longer a mollification of the
        score in one variable. Interceptions (a trace, or an eager probe) take turns, so two
        explainers of one model tracing in two threads do not see each other's hooks; the
        hooks exist only while a trace or probe runs, never while the compiled graph does.
        """
        saved, counters = [], []
        _INTERCEPT_LOCK.acquire()
        try:
            for layer, fn in hooks.values():
                own = layer.__dict__.get("call")
                calls = _Calls(layer, layer.call, fn, self.calls.get(id(layer)))
                counters.append(calls)
                saved.append((layer, own))
                object.__setattr__(layer, "call", calls)
            yield
            for calls in counters:
                calls.check_done()
        finally:
            for layer, own in reversed(saved):
                if own is None:
                    object.__delattr__(layer, "call")
                else:
                    object.__setattr__(layer, "call", own)
            _INTERCEPT_LOCK.release()

    def activation(self, x: Any, layer: Any, hooks: dict | None = None) -> tf.Tensor:
        """``layer``'s output when the net runs on ``x`` (stored weights, eagerly or traced).

        The pass stops at the layer: the rest of the model is not run."""
        box: list[tf.Tensor] = []

        def capture(h: tf.Tensor) -> tf.Tensor:
            box.append(h)
            raise _Captured

        hooks = dict(hooks or {})
        inner = hooks.get(id(layer))
        fn = capture if inner is None else (lambda h: capture(inner[1](h)))
        hooks[id(layer)] = (layer, fn)
        try:
            with self.intercept(hooks):
                self.forward(x)
        except _Captured:
            pass
        except _SharedLayerError:
            raise
        except Exception as exc:
            if box:  # the model's own code caught the stop and failed later
                return box[0]
            raise ValueError(
                f"The model rejected `inputs` on the way to layer {layer.name!r}: "
                f"{summarize(exc)}. Pass the model's inputs with a leading batch dimension."
            ) from None
        return box[0]

    def to_layer(self, inputs: Any) -> Any:
        """The ``explain_at`` layer's output for ``inputs`` (stored weights), as given: a
        tensor for tensors, else a NumPy array."""
        try:
            h = self.head(inputs, training=False)
        except Exception as exc:
            raise ValueError(
                f"The model rejected `inputs` on the way to layer {self.layer_name()!r}: "
                f"{summarize(exc)}. Pass the model's inputs with a leading batch dimension."
            ) from None
        return h if isinstance(inputs, tf.Tensor | tf.Variable) else h.numpy()

    def layer_name(self) -> str:
        at = self.explain_at
        return at if isinstance(at, str) else getattr(at, "name", repr(at))

    def layer_shape(self) -> tuple[int, ...]:
        """Shape of one example of the ``explain_at`` layer's output."""
        return tuple(int(d) for d in self.head.output.shape[1:])

    def output_names(self) -> list[str]:
        return list(getattr(self.net, "output_names", None) or [])

    # -- probes ------------------------------------------------------------------------------
    def model_inputs(self, x: np.ndarray, packing: Any, ints: Any = None) -> Any:
        """What the net is called with for rows ``x`` (and int64 rows ``ints`` of integer
        inputs): ``x`` itself, or the unpacked inputs."""
        if packing is None:
            return tf.convert_to_tensor(x)
        if ints is None:
            ints = np.zeros((x.shape[0], packing.int_size), np.int64)
        return inputs_lib.unpack_rows(
            tf.convert_to_tensor(x), tf.convert_to_tensor(ints, tf.int64), packing.parts()
        )

    def probe(
        self, x: np.ndarray, packing: Any = None, ints: Any = None
    ) -> tuple[int, ...] | None:
        """The net run on one example: :func:`tfmollify.adapter.probes.probe`."""
        return probes.probe(self, x, packing, ints)

    def probe_target(
        self, x: np.ndarray, target_fn: Callable, packing: Any = None, ints: Any = None
    ) -> int:
        """A callable target must map scores ``[n, ...]`` to ``[n]`` floats, in a graph (or
        ``[n, K]`` where :meth:`several_scores_ok`); returns ``K`` (1 for ``[n]``)."""
        return probes.probe_target(self, x, target_fn, packing, ints)

    def several_scores_ok(self) -> bool:
        """Whether a callable target may give several scores per example: the attribution is
        a built-in function of the point and the gradient at a layer (one forward pass, one
        gradient per score), and not Grad-CAM (which pools over its map)."""
        return (self.attribute_layer is not None and self.method is None
                and self.attribution in ("gradient", "input_x_gradient"))

"""Several weight draws in one pass: per-row-weight forms of the Keras layers that carry weights.

NoiseGrad and FusionGrad evaluate the model under ``M`` weight draws. With ``K`` draws in one
pass, the pass holds ``K`` groups of rows, and the rows of group ``k`` see draw ``k``'s weights.
Each layer whose weights get noise is then called in a *per-row-weight form*: its weights carry
a leading axis of ``K`` and its rows are split into the ``K`` groups:

* ``Dense``, ``EinsumDense`` (and so ``MultiHeadAttention``'s projections, which are
  ``EinsumDense`` layers): a batched matmul / einsum over the groups;
* ``Conv1D/2D/3D``, ``DepthwiseConv2D``, ``SeparableConv2D``: one grouped convolution, the
  groups side by side on the channel axis;
* ``Embedding``: a batched gather;
* ``LayerNormalization``, ``BatchNormalization`` (inference): the normalisation as the layer
  computes it, then each group's scale and offset.

Rows are laid out ``[S, K, inner]``: ``S`` copies made by a base method (the steps of integrated
gradients; 1 otherwise), then the ``K`` groups of ``inner`` rows (:func:`to_groups`). A layer of
another type, or one of these in a configuration without a form (``channels_first``, LoRA,
quantised, normalisation over another axis than the last), makes the model fall back to one
draw per pass (:func:`unsupported`).

A grouped convolution takes its rows *side by side*, ``[S * inner, *positions, K * C]``, and
gives them so. Between two convolutions, the layers that act on each channel alone (pooling,
activations, inference dropout) run on that layout as it is, so the rows stay side by side
from one convolution to the next instead of being transposed back and forth
(:func:`side_by_side_plan`): passed between layers, such a tensor is merely reshaped to the
rows' shape ``[S * K * inner, *positions, C]`` (its last axis still the channels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf

from tfmollify.adapter import keras_compat

__all__ = [
    "SidePlan", "channelwise", "form_of", "from_groups", "run_form", "side_by_side_plan",
    "to_groups", "unsupported",
]

#: A per-row-weight form: ``form(layer, x, params, k, inner) -> y``. ``params(name)`` gives the
#: layer's weight ``name`` with a leading axis of ``k`` (the draws) or of 1 (a weight shared by
#: every draw: not perturbed).
Form = Callable[[Any, tf.Tensor, Callable[[str], tf.Tensor], int, tf.Tensor], tf.Tensor]


_BITS = {2: tf.int16, 4: tf.int32, 8: tf.int64}


def _moved(w: tf.Tensor, perm: list[int]) -> tf.Tensor:
    """``tf.transpose`` of a tensor no gradient flows through (the weights), on its bits: the
    integer transpose moves these kernels' small blocks several times faster than the float
    one on CPU (oneDNN's; 2 against 32 us for LeNet's second kernel)."""
    bits = _BITS.get(w.dtype.size)
    if bits is None:
        return tf.transpose(w, perm)
    return tf.bitcast(tf.transpose(tf.bitcast(w, bits), perm), w.dtype)


def _shuffled(x: tf.Tensor, perm: list[int]) -> tf.Tensor:
    """``tf.transpose`` of rows a gradient flows through, on their bits both ways (see
    :func:`_moved`): its gradient is the inverse transpose, also on the bits. (Under
    ``batch_jacobian``, ``pfor`` has no vectorised ``Bitcast`` and loops over it instead:
    the same values.)"""
    if _BITS.get(x.dtype.size) is None or not x.dtype.is_floating:
        return tf.transpose(x, perm)
    inverse = [perm.index(i) for i in range(len(perm))]

    @tf.custom_gradient
    def move(t):
        return _moved(t, perm), lambda dy: _moved(dy, inverse)

    return move(x)


def _by_group(x: tf.Tensor, k: int, inner: tf.Tensor) -> tf.Tensor:
    """Rows ``[S * k * inner, ...]`` viewed as ``[S, k, inner, ...]`` (a reshape)."""
    s = tf.shape(x)[0] // (k * inner)
    return tf.reshape(x, tf.concat([tf.stack([s, k, inner]), tf.shape(x)[1:]], 0))


def to_groups(x: tf.Tensor, k: int, inner: tf.Tensor) -> tf.Tensor:
    """Rows ``[S * k * inner, ...]`` laid out ``[S, k, inner]`` as ``[k, S * inner, ...]``.

    Example:

    >>> import tensorflow as tf
    >>> x = tf.reshape(tf.range(8), [8, 1])  # S = 2 copies of k = 2 groups of 2 rows
    >>> to_groups(x, 2, tf.constant(2))[:, :, 0].numpy().tolist()
    [[0, 1, 4, 5], [2, 3, 6, 7]]
    """
    y = _shuffled(_by_group(x, k, inner), [1, 0, 2, *range(3, x.shape.rank + 2)])
    return tf.reshape(y, tf.concat([[k, -1], tf.shape(x)[1:]], 0))


def from_groups(y: tf.Tensor, k: int, inner: tf.Tensor) -> tf.Tensor:
    """The inverse of :func:`to_groups`: ``[k, S * inner, ...]`` back to ``[S * k * inner, ...]``.

    Example:

    >>> import tensorflow as tf
    >>> x = tf.reshape(tf.range(8), [8, 1])
    >>> bool(tf.reduce_all(from_groups(to_groups(x, 2, tf.constant(2)), 2, tf.constant(2)) == x))
    True
    """
    rest = tf.shape(y)[2:]
    s = tf.shape(y)[1] // inner
    z = tf.reshape(y, tf.concat([tf.stack([k, s, inner]), rest], 0))
    z = _shuffled(z, [1, 0, 2, *range(3, y.shape.rank + 1)])
    return tf.reshape(z, tf.concat([tf.stack([s * k * inner]), rest], 0))


def _activate(layer: Any, y: tf.Tensor) -> tf.Tensor:
    act = getattr(layer, "activation", None)
    return y if act is None else act(y)


def _trailing(v: tf.Tensor, rank: int) -> tf.Tensor:
    """A per-group parameter ``[k, *p]`` shaped to broadcast over grouped rows of ``rank`` axes
    (the group axis included) whose trailing axes are ``p``'s."""
    shape = tf.concat([tf.shape(v)[:1], tf.ones([rank - v.shape.rank], tf.int32),
                       tf.shape(v)[1:]], 0)
    return tf.reshape(v, shape)


def _dense(layer, x, params, k, inner):
    g = to_groups(x, k, inner)
    kernel = tf.cast(params("kernel"), g.dtype)  # [k or 1, d, u]
    flat = tf.reshape(g, [k, -1, tf.shape(g)[-1]])
    y = tf.matmul(flat, tf.broadcast_to(kernel, tf.concat([[k], tf.shape(kernel)[1:]], 0)))
    y = tf.reshape(y, tf.concat([tf.shape(g)[:-1], tf.shape(kernel)[-1:]], 0))
    if layer.use_bias:
        y = y + _trailing(tf.cast(params("bias"), y.dtype), y.shape.rank)
    return _activate(layer, from_groups(y, k, inner))


def _einsum(layer, x, params, k, inner):
    eq = layer.equation
    free = next(c for c in "ZYXWVUTSRQPONM" if c not in eq)
    (lhs, rhs), out = eq.split("->")[0].split(","), eq.split("->")[1]
    g = to_groups(x, k, inner)
    kernel = tf.cast(params("kernel"), g.dtype)
    kernel = tf.broadcast_to(kernel, tf.concat([[k], tf.shape(kernel)[1:]], 0))
    y = tf.einsum(f"{free}{lhs},{free}{rhs}->{free}{out}", g, kernel)
    if getattr(layer, "bias", None) is not None:
        y = y + _trailing(tf.cast(params("bias"), y.dtype), y.shape.rank)
    return _activate(layer, from_groups(y, k, inner))


def _side_by_side(g: tf.Tensor) -> tf.Tensor:
    """Grouped rows ``[k, R, *sp, C]`` as ``[R, *sp, k * C]`` (the groups on the channels)."""
    rank = g.shape.rank
    y = _shuffled(g, [1, *range(2, rank - 1), 0, rank - 1])
    return tf.reshape(y, tf.concat([tf.shape(y)[:-2], [-1]], 0))


def _apart(y: tf.Tensor, k: int) -> tf.Tensor:
    """Rows ``[R, *sp, k * F]`` back as grouped rows ``[k, R, *sp, F]``."""
    rank = y.shape.rank
    z = tf.reshape(y, tf.concat([tf.shape(y)[:-1], [k, -1]], 0))
    return _shuffled(z, [rank - 1, 0, *range(1, rank - 1), rank])


def _kernels_side_by_side(w: tf.Tensor, k: int) -> tf.Tensor:
    """Per-group conv kernels ``[k or 1, *ks, Cin, F]`` as one kernel ``[*ks, Cin, k*F]``."""
    w = tf.broadcast_to(w, tf.concat([[k], tf.shape(w)[1:]], 0))
    rank = w.shape.rank
    w = _moved(w, [*range(1, rank - 1), 0, rank - 1])
    return tf.reshape(w, tf.concat([tf.shape(w)[:-2], [-1]], 0))


def _pad_causal(layer: Any, x: tf.Tensor) -> tf.Tensor:
    left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
    return tf.pad(x, [[0, 0], [left, 0], [0, 0]])


def _convolve(x: tf.Tensor, w: tf.Tensor, strides: Any, padding: str, dilation: Any) -> tf.Tensor:
    """``tf.nn.convolution``, grouped when ``x`` has a multiple of ``w``'s input channels (Keras'
    ``ops.conv`` compiles a grouped convolution with XLA on CPU: 50-100x slower here)."""
    return tf.nn.convolution(x, w, strides=list(strides), padding=padding.upper(),
                             dilations=list(dilation))


#: Dtypes whose grouped convolution has a gradient on every device (TensorFlow 2.21's CPU
#: kernels have none for float16 and float64, nor a grouped Conv3D at all)
_GROUPED_DTYPES = (tf.float32, tf.bfloat16)


def _grouped_conv(g: tf.Tensor, w: tf.Tensor, k: int, strides: Any, padding: str,
                  dilation: Any, rank: int) -> tf.Tensor:
    """Grouped rows ``[k, R, *sp, C]`` convolved with per-group kernels ``[k or 1, ...]``:
    one grouped convolution, or one convolution per group where that has no gradient."""
    if rank == 3 or g.dtype not in _GROUPED_DTYPES:
        w = tf.broadcast_to(w, tf.concat([[k], tf.shape(w)[1:]], 0))
        return tf.stack([_convolve(g[i], w[i], strides, padding, dilation) for i in range(k)])
    return _apart(_convolve(_side_by_side(g), _kernels_side_by_side(w, k), strides, padding,
                            dilation), k)


def _rows_side_by_side(x: tf.Tensor, k: int, inner: tf.Tensor) -> tf.Tensor:
    """Rows ``[S * k * inner, *sp, C]`` (laid out ``[S, k, inner]``) as ``[S * inner, *sp,
    k * C]``: :func:`to_groups` and :func:`_side_by_side` in one transpose."""
    rank = x.shape.rank
    y = _shuffled(_by_group(x, k, inner), [0, 2, *range(3, rank + 1), 1, rank + 1])
    y = tf.reshape(y, tf.concat([[-1], tf.shape(x)[1:-1], [k * tf.shape(x)[-1]]], 0))
    channels = x.shape[-1]
    y.set_shape([None, *x.shape[1:-1], None if channels is None else channels * k])
    return y


def _rows_apart(y: tf.Tensor, k: int, inner: tf.Tensor) -> tf.Tensor:
    """The inverse of :func:`_rows_side_by_side`: ``[S * inner, *sp, k * F]`` back to rows
    ``[S * k * inner, *sp, F]``."""
    rank = y.shape.rank
    sp = tf.shape(y)[1:-1]
    z = tf.reshape(y, tf.concat([tf.stack([tf.shape(y)[0] // inner, inner]), sp, [k, -1]], 0))
    z = _shuffled(z, [0, rank, 1, *range(2, rank), rank + 1])  # [S, k, inner, *sp, F]
    z = tf.reshape(z, tf.concat([[-1], sp, tf.shape(z)[-1:]], 0))
    channels = y.shape[-1]
    z.set_shape([None, *y.shape[1:-1], None if channels is None else channels // k])
    return z


def _channels_scaled(t: tf.Tensor, up: int, down: int) -> tf.Tensor:
    """``t`` reshaped (no copy) to ``up / down`` times its channels, the leading axis taking
    the rest; the static shape kept."""
    shape = tf.shape(t)
    y = tf.reshape(t, tf.concat([[-1], shape[1:-1], [shape[-1] * up // down]], 0))
    channels = t.shape[-1]
    y.set_shape([None, *t.shape[1:-1], None if channels is None else channels * up // down])
    return y


def _as_side(x: tf.Tensor, k: int, inner: tf.Tensor, side: bool) -> tf.Tensor:
    """Rows ``x`` as side-by-side rows ``[S * inner, *sp, k * C]``: a reshape when they come
    side by side already (``side``), else :func:`_rows_side_by_side`."""
    return _channels_scaled(x, k, 1) if side else _rows_side_by_side(x, k, inner)


def _from_side(y: tf.Tensor, k: int, inner: tf.Tensor, side: bool) -> tf.Tensor:
    """Side-by-side rows ``[S * inner, *sp, k * F]`` passed on: merely reshaped to the rows'
    shape ``[S * k * inner, *sp, F]`` when the next layers take them side by side (``side``),
    else laid out as rows (:func:`_rows_apart`)."""
    return _channels_scaled(y, 1, k) if side else _rows_apart(y, k, inner)


def _shared_conv(x: tf.Tensor, w: tf.Tensor, k: int, inner: tf.Tensor, strides: Any,
                 padding: str, dilation: Any) -> tf.Tensor:
    """:func:`_convolve` of rows ``[S * k * inner, *sp, C]`` whose ``k`` groups are copies of
    one another (see :func:`side_by_side_plan`) with the side-by-side kernel ``w [*ks, C,
    k * F]``: one plain convolution of one group's rows gives ``[S * inner, *sp', k * F]``,
    what the grouped convolution of the side-by-side rows gives, without laying ``k`` copies
    side by side. Its gradient is the grouped one, each row's own."""

    @tf.custom_gradient
    def conv(x, w):
        one = tf.reshape(_by_group(x, k, inner)[:, 0], tf.concat([[-1], tf.shape(x)[1:]], 0))

        def grad(dy):  # the grouped convolution's gradient at the side-by-side rows
            side = tf.concat([tf.shape(one)[:-1], [k * tf.shape(one)[-1]]], 0)
            dx = tf.nn.conv_transpose(dy, w, side, list(strides), padding.upper(),
                                      dilations=list(dilation))
            return _rows_apart(dx, k, inner), None  # no gradient flows to the weights

        return _convolve(one, w, strides, padding, dilation), grad

    return conv(x, w)


def _conv(layer, x, params, k, inner, side_in=False, side_out=False, shared=False):
    padding = layer.padding
    if padding == "causal":
        x, padding = _pad_causal(layer, x), "valid"
    kernel = params("kernel")
    if layer.rank == 3 or x.dtype not in _GROUPED_DTYPES:  # one convolution per group
        g = to_groups(x, k, inner)
        y = _grouped_conv(g, tf.cast(kernel, g.dtype), k, layer.strides, padding,
                          layer.dilation_rate, layer.rank)
        if layer.use_bias:
            y = y + _trailing(tf.cast(params("bias"), y.dtype), y.shape.rank)
        return _activate(layer, from_groups(y, k, inner))
    # one grouped convolution; the bias and the activation on its output as it comes (each
    # group's channels side by side), where the backend fuses them into the convolution
    w = _kernels_side_by_side(tf.cast(kernel, x.dtype), k)
    if shared:  # the k groups' rows are copies: one plain convolution
        y = _shared_conv(x, w, k, inner, layer.strides, padding, layer.dilation_rate)
    else:
        y = _convolve(_as_side(x, k, inner, side_in), w, layer.strides, padding,
                      layer.dilation_rate)
    if layer.use_bias:
        bias = tf.cast(params("bias"), y.dtype)
        y = tf.nn.bias_add(y, tf.reshape(
            tf.broadcast_to(bias, tf.concat([[k], tf.shape(bias)[1:]], 0)), [-1]))
    return _from_side(_activate(layer, y), k, inner, side_out)


def _depthwise_side_by_side(w: tf.Tensor, k: int) -> tf.Tensor:
    """Per-group depthwise kernels ``[k or 1, kh, kw, C, m]`` as ``[kh, kw, k*C, m]``."""
    w = tf.broadcast_to(w, tf.concat([[k], tf.shape(w)[1:]], 0))
    w = _moved(w, [1, 2, 0, 3, 4])
    return tf.reshape(w, tf.concat([tf.shape(w)[:2], [-1], tf.shape(w)[-1:]], 0))


def _depthwise_rows(layer, g, params, name, k):
    kernel = _depthwise_side_by_side(tf.cast(params(name), g.dtype), k)
    return keras.ops.depthwise_conv(
        _side_by_side(g), kernel, strides=layer.strides, padding=layer.padding,
        dilation_rate=layer.dilation_rate, data_format="channels_last",
    )  # [R, *sp, k * C * m], each group's C * m channels side by side


def _depthwise(layer, x, params, k, inner):
    g = to_groups(x, k, inner)
    y = _apart(_depthwise_rows(layer, g, params, "kernel", k), k)
    if layer.use_bias:
        y = y + _trailing(tf.cast(params("bias"), y.dtype), y.shape.rank)
    return _activate(layer, from_groups(y, k, inner))


def _separable(layer, x, params, k, inner):
    g = to_groups(x, k, inner)
    h = _apart(_depthwise_rows(layer, g, params, "depthwise_kernel", k), k)
    y = _grouped_conv(h, tf.cast(params("pointwise_kernel"), h.dtype), k, [1, 1], "valid",
                      [1, 1], 2)
    if layer.use_bias:
        y = y + _trailing(tf.cast(params("bias"), y.dtype), y.shape.rank)
    return _activate(layer, from_groups(y, k, inner))


def _embedding(layer, x, params, k, inner):
    g = tf.cast(to_groups(x, k, inner), tf.int32)
    table = params("embeddings")
    table = tf.broadcast_to(table, tf.concat([[k], tf.shape(table)[1:]], 0))
    flat = tf.reshape(g, [k, -1])
    y = tf.gather(table, flat, batch_dims=1)  # [k, n, d]
    y = tf.reshape(y, tf.concat([tf.shape(g), tf.shape(table)[-1:]], 0))
    return tf.cast(from_groups(y, k, inner), layer.compute_dtype)


def _scale_offset(layer, y, params, k, inner):
    """Each group's ``gamma``/``beta`` on grouped normalised rows, then the rows back."""
    g = to_groups(y, k, inner)
    if getattr(layer, "gamma", None) is not None:
        g = g * _trailing(tf.cast(params("gamma"), g.dtype), g.shape.rank)
    if getattr(layer, "beta", None) is not None:
        g = g + _trailing(tf.cast(params("beta"), g.dtype), g.shape.rank)
    return from_groups(g, k, inner)


def _layer_norm(layer, x, params, k, inner):
    y = keras.ops.layer_normalization(x, None, None, layer.axis, layer.epsilon,
                                      rms_scaling=layer.rms_scaling)
    return tf.cast(_scale_offset(layer, y, params, k, inner), layer.compute_dtype)


def _batch_norm(layer, x, params, k, inner):
    """Inference batch normalisation as ``tf.nn.batch_normalization`` (Keras' backend op)
    computes it, op for op, with each group's ``gamma`` and ``beta``: the same rounding as the
    layer's own call (a deep net amplifies any other order's)."""
    dtype = tf.float64 if x.dtype == tf.float64 else tf.float32
    mean = tf.cast(params("moving_mean")[0], dtype)
    inv = tf.math.rsqrt(tf.cast(params("moving_variance")[0], dtype) + layer.epsilon)[None]
    if getattr(layer, "gamma", None) is not None:
        inv = inv * tf.cast(params("gamma"), dtype)  # [k or 1, C]
    offset = -mean * inv
    if getattr(layer, "beta", None) is not None:
        offset = tf.cast(params("beta"), dtype) - mean * inv
    g = to_groups(tf.cast(x, dtype), k, inner)
    y = g * _trailing(inv, g.shape.rank) + _trailing(offset, g.shape.rank)
    return tf.cast(from_groups(y, k, inner), layer.compute_dtype)


_FORMS: dict[str, Form] = {
    "Dense": _dense, "EinsumDense": _einsum, "Conv1D": _conv, "Conv2D": _conv,
    "Conv3D": _conv, "DepthwiseConv2D": _depthwise, "SeparableConv2D": _separable,
    "Embedding": _embedding, "LayerNormalization": _layer_norm,
    "BatchNormalization": _batch_norm,
}


def _last_axis_only(layer: Any) -> bool:
    axis = layer.axis
    axes = list(axis) if isinstance(axis, list | tuple) else [axis]
    rank = len(layer.input.shape) if _has_input(layer) else None
    return axes == [-1] or (rank is not None and axes == [rank - 1])


def _has_input(layer: Any) -> bool:
    try:
        return layer.input is not None
    except Exception:  # a layer never called in a functional graph
        return False


def _built_in(layer: Any) -> bool:
    """Whether ``layer`` is one of Keras' own layers (not a user's subclass elsewhere)."""
    return type(layer).__module__.split(".")[0] == "keras"


def form_of(layer: Any) -> Form | None:
    """The per-row-weight form of ``layer``, or None when it has none (its type, or its
    configuration: ``channels_first``, LoRA, quantised, normalisation over other axes).

    Example:

    >>> import keras
    >>> form_of(keras.layers.Dense(3)) is not None, form_of(keras.layers.GRU(3)) is None
    (True, True)
    """
    form = _FORMS.get(type(layer).__name__)
    if form is None or not _built_in(layer):
        return None
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return None
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return None
    if getattr(layer, "groups", 1) != 1:
        return None
    if form in (_layer_norm, _batch_norm) and not _last_axis_only(layer):
        return None
    if form is _batch_norm and (getattr(layer, "renorm", False)
                                or getattr(layer, "synchronized", False)):
        return None
    return form


#: Layers that act on each channel of each position alone (in inference): they run on
#: side-by-side rows as they are
_CHANNELWISE = frozenset({
    "Activation", "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
})
#: Layers that pool positions channel by channel: they run on side-by-side rows reshaped
_POOLS = frozenset({"MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D"})


@dataclasses.dataclass(frozen=True)
class SidePlan:
    """Where rows travel side by side between layers in one pass (:func:`side_by_side_plan`).

    Attributes:
        side_in: Ids of the layers whose input comes side by side.
        side_out: Ids of the layers whose output goes on side by side.
        channelwise: The channel-wise layers that take or give side-by-side rows (their calls
            go through :func:`channelwise`).
        shared: Ids of the grouped convolutions whose input rows are copies in every group
            (the net's inputs are, and only weightless layers lie between): they convolve one
            group's rows (:func:`_shared_conv`).
    """

    side_in: frozenset[int] = frozenset()
    side_out: frozenset[int] = frozenset()
    channelwise: tuple[Any, ...] = ()
    shared: frozenset[int] = frozenset()


def _called_once(layer: Any) -> bool:
    found = keras_compat.inbound_layers(layer)
    return found is not None and len(found) == 1


def _takes_side(layer: Any, forms: set[int]) -> bool:
    """Whether ``layer`` can take and give side-by-side rows: a grouped convolution in its
    per-row form (``forms``), or a channel-wise Keras layer (channels last)."""
    name = type(layer).__name__
    if not _built_in(layer) or not _called_once(layer):
        return False
    if id(layer) in forms:
        return (form_of(layer) is _conv and layer.rank != 3
                and tf.as_dtype(layer.compute_dtype) in _GROUPED_DTYPES)
    if name in _POOLS:
        return getattr(layer, "data_format", "channels_last") == "channels_last"
    return name in _CHANNELWISE and not layer.trainable_weights


def _model_outputs(net: Any) -> list[Any]:
    """The symbolic outputs of ``net`` and of every model nested in it."""
    out = []
    for model in (net, *keras_compat.sublayers(net, recursive=True)):
        try:
            out += keras.tree.flatten(getattr(model, "outputs", None) or [])
        except (AttributeError, ValueError):
            continue
    return out


def _fed_copies(layer: Any, inputs: list[Any], hooked: set[int]) -> bool:
    """Whether ``layer``'s input is one of the net's ``inputs`` (input layers), reached
    through weightless Keras layers only (so no per-row form), each called once on one input
    and held by no hook (``hooked``); not a ``Lambda`` (a user's function, which could draw
    noise of its own)."""
    up = keras_compat.inbound_layers(layer)
    while up is not None and len(up) == 1:
        layer = up[0]
        if any(layer is i for i in inputs):
            return True
        if (not _built_in(layer) or layer.weights or type(layer).__name__ == "Lambda"
                or id(layer) in hooked or keras_compat.sublayers(layer)):
            return False
        up = keras_compat.inbound_layers(layer)
    return False


def _input_layers(net: Any) -> list[Any]:
    """The input layers of ``net``'s own inputs."""
    try:
        tensors = keras.tree.flatten(net.inputs)
    except (AttributeError, ValueError):  # a subclassed model: no symbolic inputs
        return []
    return [layer for layer in keras_compat.sublayers(net)
            if isinstance(layer, keras.layers.InputLayer)
            and any(layer.output is t for t in tensors)]


def side_by_side_plan(net: Any, form_layers: list[Any], hooked: set[int],
                      copies: bool = False) -> SidePlan:
    """Where rows can travel side by side in a pass of ``net`` whose ``form_layers`` compute
    in their per-row forms.

    A layer gives its output side by side when it can (a grouped convolution, or a
    channel-wise layer, called once, whose call no hook holds: ``hooked``) and every layer
    called on its output can take it so; its output is no model's output. A layer takes its
    input side by side when the layer it is called on gives it so.

    With ``copies`` (the groups' input rows are copies of one another: no input noise, a
    built-in method), a grouped convolution fed by the net's inputs through weightless layers
    alone sees copies too, and convolves one group's rows (:attr:`SidePlan.shared`).

    Example:

    >>> import keras
    >>> L = keras.layers
    >>> inp = keras.Input((8, 8, 2))
    >>> c1, pool, c2 = L.Conv2D(3, 3), L.MaxPooling2D(), L.Conv2D(4, 3)
    >>> net = keras.Model(inp, L.Flatten()(c2(pool(c1(inp)))))
    >>> plan = side_by_side_plan(net, [c1, c2], set())
    >>> plan.side_out == {id(c1), id(pool)}, plan.side_in == {id(pool), id(c2)}
    (True, True)
    """
    forms = {id(layer) for layer in form_layers}
    able = {
        id(layer): layer for layer in keras_compat.sublayers(net, recursive=True)
        if id(layer) not in hooked and _takes_side(layer, forms)
    }
    outputs = _model_outputs(net)
    side_out = set()
    for i, layer in able.items():
        takers = keras_compat.outbound_layers(layer)
        if (takers and all(id(t) in able for t in takers)
                and not any(t is layer.output for t in outputs)):
            side_out.add(i)
    side_in = {i for i, layer in able.items()
               if id(keras_compat.inbound_layers(layer)[0]) in side_out}
    inputs = _input_layers(net) if copies else []
    shared = {i for i, layer in able.items()
              if i in forms and i not in side_in and _fed_copies(layer, inputs, hooked)}
    return SidePlan(
        frozenset(side_in), frozenset(side_out),
        tuple(layer for i, layer in able.items()
              if i not in forms and (i in side_in or i in side_out)),
        frozenset(shared),
    )


def run_form(layer: Any, form: Form, x: tf.Tensor, params: Callable[[str], tf.Tensor], k: int,
             inner: tf.Tensor, plan: SidePlan) -> tf.Tensor:
    """``layer``'s per-row-weight ``form`` on rows ``x``, taking and giving them side by side,
    or convolving one group's copies, where ``plan`` says so (a grouped convolution only)."""
    side_in, side_out = id(layer) in plan.side_in, id(layer) in plan.side_out
    shared = id(layer) in plan.shared
    if side_in or side_out or shared:
        return _conv(layer, x, params, k, inner, side_in, side_out, shared)
    return form(layer, x, params, k, inner)


def channelwise(layer: Any, call: Callable, x: tf.Tensor, k: int, inner: tf.Tensor,
                plan: SidePlan, *args: Any, **kwargs: Any) -> tf.Tensor:
    """A channel-wise layer's own ``call`` on rows ``x`` that come or go side by side (see
    :func:`side_by_side_plan`): a pooling layer pools the side-by-side rows, an activation
    acts on them as they come."""
    side_in, side_out = id(layer) in plan.side_in, id(layer) in plan.side_out
    if side_in and type(layer).__name__ in _POOLS:
        y = _from_side(call(_as_side(x, k, inner, True), *args, **kwargs), k, inner, True)
    else:
        y = call(x, *args, **kwargs)
    if side_in == side_out:
        return y
    if side_out:  # rows in, side by side out
        return _from_side(_rows_side_by_side(y, k, inner), k, inner, True)
    return _rows_apart(_as_side(y, k, inner, True), k, inner)


def owners(net: Any, variables: list[Any]) -> dict[int, Any]:
    """The innermost layer owning each of ``variables``: ``{id(variable): layer}`` (the layer
    with the fewest weights among those that hold it; a variable of the model's own has none).
    """
    wanted = {id(v) for v in variables}
    found: dict[int, Any] = {}
    for layer in keras_compat.sublayers(net, recursive=True):
        held = layer.trainable_weights
        for v in held:
            if id(v) in wanted and (
                id(v) not in found or len(found[id(v)].trainable_weights) > len(held)
            ):
                found[id(v)] = layer
    return found


def unsupported(net: Any, variables: list[Any]) -> list[str]:
    """Names of the layers owning some of ``variables`` that have no per-row-weight form (an
    empty list: several draws can share a pass; the net's name for weights of its own).

    Example:

    >>> import keras
    >>> net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> unsupported(net, net.trainable_variables)
    []
    """
    found = owners(net, variables)
    names: list[str] = []
    for v in variables:
        layer = found.get(id(v))
        name = getattr(net, "name", "model") if layer is None else layer.name
        if (layer is None or form_of(layer) is None) and name not in names:
            names.append(name)
    return names

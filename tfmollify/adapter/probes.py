"""Probes: the model run once on one example before anything is traced, so that a model that
rejects the inputs, or a callable target that does not fit its scores, fails with one clear
error (:meth:`~tfmollify.adapter.model_view.ModelView.probe` and
:meth:`~tfmollify.adapter.model_view.ModelView.probe_target`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tfmollify.adapter.layers import embedding_paths, summarize

if TYPE_CHECKING:
    from tfmollify.adapter.model_view import ModelView

__all__ = ["check_built", "check_gradient_path", "probe", "probe_target"]


def probe(
    view: ModelView, x: np.ndarray, packing: Any = None, ints: Any = None
) -> tuple[int, ...] | None:
    """Runs ``view``'s net on one example (and a weight-noise forward pass for NG/FG).

    Returns:
        The shape of the scores of one example, or None for a model with several outputs.

    Raises:
        TypeError: For a net whose input is integer (no noise, no gradient there).
        ValueError: If the model rejects the inputs (its own error, summarised).
    """
    check_built(view.model)
    model_dtype = (
        view.input_dtype(tf.float32) if view.is_keras and packing is None else None
    )
    if model_dtype is not None and not model_dtype.is_floating:
        raise TypeError(
            f"The model's input has dtype {model_dtype.name} (e.g. token ids): noise on "
            "integer inputs is meaningless and there is no gradient with respect to them. "
            "Explain a model that takes the embedded (floating-point) inputs instead."
        )
    sample = view.model_inputs(x[:1], packing, None if ints is None else ints[:1])
    watched = [t for t in tf.nest.flatten(sample) if tf.as_dtype(t.dtype).is_floating]
    try:
        with tf.GradientTape() as tape:
            tape.watch(watched)
            out = view.forward(sample)
            total = _score_sum(out)
        if view.smoothing.weight_noise:
            view.forward(sample, [v.value for v in view.trainable])
    except Exception as exc:  # the model's own error, summarised
        got = (
            f"per-example shape {tuple(x.shape[1:])} and dtype {x.dtype}"
            if packing is None
            else "inputs " + ", ".join(
                f"{k!r}: {s}" for k, s in zip(packing.keys, packing.shapes, strict=True)
            )
        )
        raise ValueError(
            f"The model rejected `inputs` with {got}: {summarize(exc)}. Pass inputs "
            "shaped like the model's input(s) with a leading batch dimension."
        ) from None
    if isinstance(out, np.ndarray) and not view.is_keras:
        raise TypeError(
            "Argument `model` returned a NumPy array: it must be written with TensorFlow ops "
            "(tf.*, keras.ops), because the explainer differentiates it inside a tf.function. "
            f"Received: a callable that returns {type(out).__name__} of shape {out.shape}."
        )
    if view.attribute_layer is None and total is not None:
        check_gradient_path(view, tape.gradient(total, watched), packing)
    if not isinstance(out, tf.Tensor | np.ndarray) and not hasattr(out, "shape"):
        return None  # several outputs: for a callable target only
    return tuple(int(d) for d in out.shape[1:])


def _score_sum(out: Any) -> Any:
    """The sum of every score (a tensor the gradient check differentiates), or None when the
    model returned something that is not a tensor."""
    parts = [t for t in tf.nest.flatten(out) if tf.is_tensor(t)]
    return tf.add_n([tf.reduce_sum(tf.cast(t, tf.float32)) for t in parts]) if parts else None


def check_built(model: Any) -> None:
    """Rule: a Keras model is built before it is explained (else the first call would build
    it, with fresh random weights, and explain that).

    Raises:
        ValueError: For an unbuilt Keras model, saying how to build it.
    """
    if getattr(model, "built", True) is False:
        raise ValueError(
            f"Argument `model`: model {getattr(model, 'name', model)!r} is not built: it has "
            "no weights yet, so explaining it would build it with fresh random weights. Build "
            "it first: start it with `keras.Input(shape)`, call `model.build((None, ...))`, "
            "or train or call it on a batch."
        )


def check_gradient_path(view: ModelView, grads: list, packing: Any) -> None:
    """Rule: the scores depend differentiably on every float input (else every attribution
    would be zero).

    Raises:
        ValueError: For an input no gradient reaches, naming the model's embedding layers.
    """
    dead = [i for i, g in enumerate(grads) if g is None]
    if not dead:
        return
    if packing is None:
        what = "`inputs`"
    else:
        floats = [k for k, i in zip(packing.keys, packing.integer, strict=True) if not i]
        what = ", ".join(f"`inputs[{floats[i]!r}]`" for i in dead)
    embeddings = embedding_paths(view.net)
    fix = (f" Explain at the embedding instead: pass explain_at= one of {embeddings} (its "
           "output is differentiable)." if embeddings else "")
    raise ValueError(
        f"No gradient reaches {what}: the model's scores do not depend differentiably on "
        "them (e.g. token ids fed through a float Input and cast to integers for an "
        "embedding lookup), so every attribution would be zero." + fix
    )


def probe_target(
    view: ModelView, x: np.ndarray, target_fn: Callable, packing: Any = None, ints: Any = None
) -> int:
    """A callable target must map scores ``[n, ...]`` to ``[n]`` floats, in a graph (or to
    ``[n, K]``, ``K`` scores per example, where the attribution allows it).

    Returns:
        ``K``: the scores per example (1 for ``[n]``)."""
    two = None if ints is None else np.repeat(ints[:1], 2, axis=0)
    out = view.forward(view.model_inputs(np.repeat(x[:1], 2, axis=0), packing, two))
    shapes = tf.nest.map_structure(lambda t: tuple(t.shape), out)
    try:
        got = tf.function(target_fn, autograph=False)(out)
    except Exception as exc:
        raise TypeError(
            "Argument `targets` is a callable that failed on the model's scores of shape "
            f"{shapes} inside a tf.function: {summarize(exc)}. It must be built "
            "from TensorFlow ops (it is traced into the explainer's graph) and map scores "
            "[n, ...] to [n] target scores."
        ) from None
    shape = tuple(got.shape) if hasattr(got, "shape") else None
    dtype = getattr(got, "dtype", None)
    several = shape is not None and len(shape) == 2 and shape[0] == 2 and (shape[1] or 0) > 1
    if several and dtype is not None and tf.as_dtype(dtype).is_floating:
        if not view.several_scores_ok():
            raise ValueError(
                "Argument `targets` is a callable that returns several scores per example "
                f"(shape {shape} for 2 rows). That needs attribution='gradient' or "
                "'input_x_gradient' at a layer (`explain_at`/`attribute_at`): each score gets "
                "its own gradient from one forward pass. Return one score per example, e.g. "
                "`lambda s: s[:, 3]`."
            )
        return int(shape[1])
    if shape not in ((2,), (2, 1)) or dtype is None or not tf.as_dtype(dtype).is_floating:
        raise ValueError(
            "Argument `targets` is a callable that must map scores [n, ...] to n float "
            f"target scores (one per row). On scores of shape {shapes} it returned "
            f"shape {shape} and dtype {getattr(dtype, 'name', dtype)}; e.g. use "
            "`lambda s: s[:, 3]` or `lambda s: tf.reduce_sum(s * w, axis=1)`."
        )
    return 1

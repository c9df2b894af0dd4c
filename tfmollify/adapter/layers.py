"""Finding layers in the user's model, and cutting it in two.

:func:`layer_paths` lists every layer (nested ones too) with its path, :func:`find_layer` finds
the layer a setting names (``noise_at``, ``attribute_at``, ``explain_at``), :func:`select_output`
keeps one output of a functional model (``output=``), :func:`split` cuts it at the
``explain_at`` layer, and :func:`activation_bytes` estimates one evaluation's activation memory.
:func:`summarize` gives one line of a (Keras) error for the messages of the adapter.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify.adapter import keras_compat

__all__ = [
    "activation_bytes",
    "embedding_paths",
    "find_layer",
    "layer_paths",
    "parse_call",
    "select_output",
    "split",
    "summarize",
]


def summarize(exc: BaseException) -> str:
    """One informative line of a (Keras) exception message, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception encountered", "Arguments"))]
    line = (useful or lines or [type(exc).__name__])[0]
    return line[:300].rstrip(".")


def clean_message(exc: BaseException) -> str:
    """An exception's whole message as tfmollify shows it: no terminal colour codes, and
    without the call context Keras adds ("Exception encountered when calling ...", the
    "Arguments received" list)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    kept, skipping = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("Exception encountered", "Arguments received",
                                "Call arguments received")):
            skipping = stripped.startswith(("Arguments", "Call arguments"))
            continue
        if skipping and (stripped.startswith(("•", "-", "*")) or not stripped):
            continue
        skipping = False
        if stripped:
            kept.append(stripped)
    return " ".join(kept) or type(exc).__name__


def _symbolic_inputs(model: Any) -> Any:
    """The model's symbolic inputs as its functional structure (one tensor, a list or a dict).

    ``model.input`` raises for a ``keras.Sequential`` (Keras 3.15); ``model.inputs`` works.
    """
    try:
        return model.input
    except (AttributeError, ValueError):
        inputs = list(model.inputs)
        return inputs[0] if len(inputs) == 1 else inputs


def _symbolic_outputs(model: Any) -> Any:
    """The model's symbolic outputs (one tensor, or a list), as :func:`_symbolic_inputs`."""
    try:
        return model.output
    except (AttributeError, ValueError):
        outputs = list(model.outputs)
        return outputs[0] if len(outputs) == 1 else outputs


def layer_paths(model: Any) -> list[tuple[str, Any]]:
    """Every layer inside ``model``, nested ones too, with its path (``"backbone/embed"``).

    A layer reachable along several paths is listed once, at its first path.
    """
    seen: set[int] = set()
    out: list[tuple[str, Any]] = []

    def walk(layer: Any, prefix: str) -> None:
        for child in keras_compat.sublayers(layer):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = f"{prefix}/{child.name}" if prefix else child.name
            out.append((path, child))
            walk(child, path)

    walk(model, "")
    return out


def embedding_paths(model: Any) -> list[str]:
    """The paths of the embedding layers inside ``model`` (where token ids become floats)."""
    return [p for p, layer in layer_paths(model) if "Embedding" in type(layer).__name__]


def parse_call(at: Any) -> tuple[Any, int | None]:
    """``(layer, call)`` of a place setting: ``"name:k"`` names the ``k``-th call (from 0) of a
    layer called several times in one pass (a tied embedding's reverse use: ``":1"``); any
    other value names the layer itself (``call`` None: its one call, or the lookup call of a
    tied embedding)."""
    if isinstance(at, str):
        match = re.fullmatch(r"(.+):(\d+)", at)
        if match:
            return match.group(1), int(match.group(2))
    return at, None


def find_layer(model: Any, at: Any, name: str) -> Any:
    """The layer ``at`` (an object or a name or path) anywhere inside ``model``.

    Raises:
        ValueError: For a name no layer has, or one that several layers have (the
            message lists their paths).
        TypeError: For a layer object that is not part of the model.
    """
    paths = layer_paths(model)
    if isinstance(at, str):
        found = [(p, layer) for p, layer in paths if at in (p, layer.name)]
        if not found:
            names = [p for p, _ in paths][:40]
            raise ValueError(
                f"Argument `{name}`: no layer named {at!r} in model "
                f"{getattr(model, 'name', model)!r} (nested models searched too). Its "
                f"layers: {names}"
            )
        if len({id(layer) for _, layer in found}) > 1:
            raise ValueError(
                f"Argument `{name}`: several layers are named {at!r}: "
                f"{[p for p, _ in found]}. Pass the full path or the layer object."
            )
        return found[0][1]
    if any(layer is at for _, layer in paths):
        return at
    raise TypeError(
        f"Argument `{name}` must be a layer of the model or its name. Received: {at!r}"
    )


def select_output(model: Any, output: Any) -> Any:
    """The model with one of its outputs: a functional model sharing its layers."""
    import keras

    names = list(getattr(model, "output_names", None) or [])
    if not isinstance(model, keras.Model) or not getattr(model, "outputs", None):
        raise TypeError(
            "Argument `output` needs a functional Keras model with named outputs. "
            f"Received: model of type {type(model).__name__}."
        )
    if isinstance(output, str) and output in names:
        index = names.index(output)
    elif isinstance(output, int) and not isinstance(output, bool) and (
        0 <= output < len(model.outputs)
    ):
        index = output
    else:
        raise ValueError(
            f"Argument `output` must name one of the model's outputs {names} or be a "
            f"position in [0, {len(model.outputs)}). Received: output={output!r}"
        )
    return keras.Model(
        _symbolic_inputs(model), model.outputs[index], name=f"{model.name}_{index}"
    )


def split(model: Any, explain_at: Any) -> tuple[Any, Any]:
    """``(head, tail)``: ``model`` up to ``explain_at``'s output, and from there on.

    ``(None, model)`` when the layer is nested or not a cut, or the model is subclassed (its
    call is intercepted instead).
    """
    import keras

    if not isinstance(model, keras.Layer):
        raise TypeError(
            "Argument `explain_at` needs a Keras model (its layers are found and their calls "
            f"intercepted). Received: model of type {type(model).__name__}."
        )
    try:
        functional = isinstance(model, keras.Model) and bool(model.outputs)
    except (AttributeError, ValueError):
        functional = False
    if not functional:  # a subclassed model: no graph to cut, its layer's call is intercepted
        find_layer(model, explain_at, "explain_at")
        return None, model
    layer = find_layer(model, explain_at, "explain_at")
    if not any(layer is top for top in model.layers):
        return None, model  # a nested layer: its call is intercepted
    try:
        h = layer.output
    except (AttributeError, ValueError) as exc:
        raise ValueError(
            f"Argument `explain_at`: layer {layer.name!r} has no single output tensor "
            f"({summarize(exc)}); it must be called once, with one output."
        ) from None
    if not hasattr(h, "shape") or not h.dtype.startswith("float"):
        raise ValueError(
            f"Argument `explain_at`: the output of layer {layer.name!r} must be one "
            f"floating-point tensor. Received: {h!r}"
        )
    try:
        head = keras.Model(_symbolic_inputs(model), h, name=f"{model.name}_to_{layer.name}")
        tail = keras.Model(h, _symbolic_outputs(model), name=f"{model.name}_from_{layer.name}")
    except Exception:
        return None, model  # other paths bypass the layer: its call is intercepted
    return head, tail


def activation_bytes(net: Any) -> int | None:
    """The outputs of every layer of the Keras model ``net``, nested ones included, in 4-byte
    floats per row (None when a shape is unknown); see
    :meth:`tfmollify.adapter.model_view.ModelView.activation_bytes`."""
    total = 0
    for _, layer in layer_paths(net):
        try:
            outputs = layer.output
        except (AttributeError, ValueError):
            continue  # a layer without one symbolic output (e.g. called in several places)
        for out in tf.nest.flatten(outputs):
            shape = getattr(out, "shape", None)
            if shape is None or any(d is None for d in shape[1:]):
                return None
            total += int(np.prod(shape[1:], dtype=np.int64)) * 4
    return total or None

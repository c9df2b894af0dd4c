"""The private Keras names tfmollify relies on, in one place.

Keras 3 has no public API for three things tfmollify needs; each is read here, and only here,
with the public API used first wherever one exists:

- a layer's direct sub-layers, whatever kind of layer holds them (``Layer._flatten_layers``; the
  public ``Model.layers`` covers models only, and misses layers held by a plain layer);
- the input layer that made a symbolic input tensor (``KerasTensor._keras_history``; the public
  route, an ``InputLayer`` whose ``output`` is the tensor, is tried first);
- which layers a layer was called on and which layers were called on its output
  (``Operation._inbound_nodes`` / ``_outbound_nodes`` and ``Node.parent_nodes``; Keras has no
  public graph walk: :func:`inbound_layers`, :func:`outbound_layers`);
- whether a model's ``call`` takes ``training`` is public: :func:`call_takes_training` reads the
  signature with :mod:`inspect`, as Keras itself does;
- the drawing state of ``keras.utils.Progbar`` (``_last_update``, ``_dynamic_display``,
  ``_prev_total_width``), which the progress bars read and reset to redraw in place or to clear
  a line (:func:`progbar_drawn_at`, :func:`progbar_set_dynamic`, :func:`progbar_forget_line`).

:func:`private_names_missing` checks that the private names still exist on the installed Keras;
the test suite runs it, so a Keras release that renames one fails with a message naming the
Keras version and the function here that needs the update, not silently.

Example:
    >>> import keras
    >>> from tfmollify.adapter import keras_compat
    >>> inp = keras.Input((2,), name="x")
    >>> inner = keras.Model(inp, keras.layers.Dense(3, name="d")(inp), name="inner")
    >>> [layer.name for layer in keras_compat.sublayers(inner)]
    ['x', 'd']
    >>> keras_compat.private_names_missing()
    []
"""

from __future__ import annotations

import inspect
from typing import Any

import keras

__all__ = [
    "KERAS_VERSION",
    "call_takes_training",
    "inbound_layers",
    "input_layer_name",
    "outbound_layers",
    "private_names_missing",
    "progbar_drawn_at",
    "progbar_forget_line",
    "progbar_is_dynamic",
    "progbar_set_dynamic",
    "sublayers",
]

KERAS_VERSION = keras.version()


def sublayers(layer: Any, *, recursive: bool = False) -> list[Any]:
    """The layers held by ``layer``: its direct children, or with ``recursive`` all of them
    (depth first, each once), in Keras' tracking order.

    Args:
        layer: A Keras layer or model (anything else has no sub-layers).
        recursive: Also the children's children.

    Returns:
        The layers, ``layer`` itself excluded.
    """
    flatten = getattr(layer, "_flatten_layers", None)  # private: see the module docstring
    if flatten is not None:
        return list(flatten(include_self=False, recursive=recursive))
    children = list(getattr(layer, "layers", []) or [])
    if not recursive:
        return children
    out: list[Any] = []
    for child in children:
        for found in (child, *sublayers(child, recursive=True)):
            if all(found is not seen for seen in out):
                out.append(found)
    return out


def input_layer_name(model: Any, tensor: Any) -> str | None:
    """The name of the input layer of ``model`` that made the symbolic input ``tensor``.

    Args:
        model: A Keras model.
        tensor: One of ``model.inputs``.

    Returns:
        The input layer's name (what ``keras.Input(name=...)`` set), or None if not found.
    """
    for layer in getattr(model, "layers", []) or []:  # public: a functional model lists them
        if isinstance(layer, keras.layers.InputLayer) and layer.output is tensor:
            return layer.name
    history = getattr(tensor, "_keras_history", None)  # private: see the module docstring
    layer = getattr(history, "operation", None) or (history[0] if history else None)
    return getattr(layer, "name", None)


def inbound_layers(layer: Any) -> list[Any] | None:
    """The layers whose outputs ``layer`` was called on, when it was called exactly once in the
    graphs it belongs to (None: called several times, never, or unknown on this Keras).

    Example:

    >>> import keras
    >>> inp = keras.Input((2,))
    >>> d = keras.layers.Dense(3, name="d")
    >>> out = keras.layers.ReLU(name="r")(d(inp))
    >>> [layer.name for layer in inbound_layers(out._keras_history.operation)]
    ['d']
    """
    nodes = getattr(layer, "_inbound_nodes", None)  # private: see the module docstring
    if nodes is None or len(nodes) != 1:
        return None
    return [node.operation for node in getattr(nodes[0], "parent_nodes", None) or []]


def outbound_layers(layer: Any) -> list[Any] | None:
    """The layers called on ``layer``'s outputs, in every graph it belongs to (None: unknown on
    this Keras). A model output that no layer takes is not among them."""
    nodes = getattr(layer, "_outbound_nodes", None)  # private: see the module docstring
    if nodes is None:
        return None
    return [node.operation for node in nodes]


def call_takes_training(model: Any) -> bool:
    """Whether ``model.call`` takes a ``training`` argument (Keras passes keyword arguments of
    ``stateless_call`` straight to ``call``)."""
    call = getattr(model, "call", None)
    if call is None:
        return True
    try:
        return "training" in inspect.signature(call).parameters
    except (TypeError, ValueError):  # no signature to read: Keras' own default
        return True


def progbar_drawn_at(progbar: Any) -> float:
    """When ``progbar`` last drew (a later value after ``update`` means it drew)."""
    return progbar._last_update  # private: see the module docstring


def progbar_is_dynamic(progbar: Any) -> bool:
    """Whether ``progbar`` redraws its line in place (a terminal) or writes lines (a log)."""
    return bool(progbar._dynamic_display)


def progbar_set_dynamic(progbar: Any, dynamic: bool) -> None:
    """Makes ``progbar`` redraw in place (True) or write one line per draw (False)."""
    progbar._dynamic_display = dynamic


def progbar_forget_line(progbar: Any) -> None:
    """After the bar's line was erased: nothing to back over, and redraw at the next update."""
    progbar._prev_total_width = 0
    progbar._last_update = 0


def private_names_missing() -> list[str]:
    """What this module needs from Keras' private API and the installed Keras lacks.

    Returns:
        One message per missing name (empty when all are there), each naming the Keras version
        and the function of this module to update.
    """
    problems = []
    dense = keras.layers.Dense(1)
    if not callable(getattr(dense, "_flatten_layers", None)):
        problems.append(
            f"Keras {KERAS_VERSION} has no Layer._flatten_layers: update "
            "tfmollify.adapter.keras_compat.sublayers (nested layers are found through it)"
        )
    tensor = keras.Input((1,))
    history = getattr(tensor, "_keras_history", None)
    if getattr(history, "operation", None) is None and not (history and history[0]):
        problems.append(
            f"Keras {KERAS_VERSION} has no KerasTensor._keras_history with the operation: "
            "update tfmollify.adapter.keras_compat.input_layer_name (export signature names)"
        )
    inp = keras.Input((1,))
    dense = keras.layers.Dense(1)
    keras.layers.ReLU()(dense(inp))
    if (inbound_layers(dense) is None or len(inbound_layers(dense)) != 1
            or outbound_layers(dense) is None or len(outbound_layers(dense)) != 1):
        problems.append(
            f"Keras {KERAS_VERSION} has no Operation._inbound_nodes/_outbound_nodes with "
            "Node.parent_nodes: update tfmollify.adapter.keras_compat.inbound_layers and "
            "outbound_layers (convolutions then keep their draws side by side less often)"
        )
    bar = keras.utils.Progbar(1)
    lacking = [n for n in ("_last_update", "_dynamic_display", "_prev_total_width")
               if not hasattr(bar, n)]
    if lacking:
        problems.append(
            f"Keras {KERAS_VERSION} has no Progbar.{', '.join(lacking)}: update the progbar_* "
            "functions of tfmollify.adapter.keras_compat (the progress bars use them)"
        )
    return problems

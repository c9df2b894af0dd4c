"""Which weights get noise: the ``weight_layers`` and ``perturb_bias`` settings of NoiseGrad and
FusionGrad, turned into indices into the net's trainable variables."""

from __future__ import annotations

from typing import Any

from tfmollify.adapter import keras_compat, layers

__all__ = ["select_weights"]


def select_weights(model: Any, weight_layers: Any, perturb_bias: bool) -> tuple[int, ...] | None:
    """Indices into ``model.trainable_variables`` of the variables that get weight noise.

    Args:
        model: The net whose weights are perturbed.
        weight_layers: Layer names or layers whose weights get noise (None: every layer).
        perturb_bias: Whether the ``bias`` variables get noise too.

    Returns:
        The sorted indices, or None for all of them (the default noise stream).

    Raises:
        TypeError: For an entry of ``weight_layers`` that is neither a name nor a layer.
        ValueError: For an entry that is no layer with trainable weights, or a selection left
            with no weights.
    """
    if weight_layers is None and perturb_bias:
        return None  # all: the default noise stream
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    owners = [layer for layer in keras_compat.sublayers(model, recursive=True)
              if layer.trainable_weights]
    chosen = owners if weight_layers is None else [
        layer for entry in weight_layers for layer in _owners_of(model, entry, owners, index)
    ]
    picked = {
        index[id(v)]
        for layer in chosen
        for v in layer.trainable_weights
        if id(v) in index and (perturb_bias or v.name != "bias")
    }
    if not picked:
        raise ValueError(
            "No weights are left to perturb: the selected layers have only bias variables "
            f"and perturb_bias=False (weight_layers={weight_layers!r}). Select other layers "
            "or pass perturb_bias=True."
        )
    return tuple(sorted(picked))


def _owners_of(model: Any, entry: Any, owners: list[Any], index: dict[int, int]) -> list[Any]:
    """The layers among ``owners`` that one entry of ``weight_layers`` names."""
    if isinstance(entry, str):  # a name or a path ('encoder/dense'), as for explain_at
        own = {id(layer) for layer in owners}
        named = [(p, layer) for p, layer in layers.layer_paths(model)
                 if entry in (p, layer.name) and id(layer) in own]
        if len({id(layer) for _, layer in named}) > 1:
            raise ValueError(
                f"Argument `weight_layers`: several layers are named {entry!r}: "
                f"{[p for p, _ in named]}. Pass the full path of the one you mean (e.g. "
                f"{named[0][0]!r}) or the layer object."
            )
        found = [layer for _, layer in named[:1]]
    elif hasattr(entry, "trainable_weights"):
        found = [entry] if any(id(v) in index for v in entry.trainable_weights) else []
    else:
        raise TypeError(
            f"Argument `weight_layers` must hold layer names or layers. Received: {entry!r}"
        )
    if not found:
        names = [layer.name for layer in owners]
        raise ValueError(
            f"Argument `weight_layers`: {entry!r} is not a layer with trainable "
            f"weights in model {model.name!r}. Layers with trainable weights: {names}"
        )
    return found

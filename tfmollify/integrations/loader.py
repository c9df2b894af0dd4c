"""The one loader of an export: a directory written by :func:`tfmollify.export`, loaded once.

The HTTP server and its in-process :class:`~tfmollify.integrations.serve.Export`, and the Ray
workers (:class:`~tfmollify.integrations.parallel.SavedModelExplainer`) load exports through
:func:`load`: the same version rule as TensorFlow Serving (the highest numbered version
sub-directory, or the version directory itself), the same signature check, the same request
rules (:class:`tfmollify.adapter.request.Rules`), and the same errors.

Example:

>>> import tempfile, keras
>>> import tfmollify as tfm
>>> from tfmollify.integrations import loader
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
>>> base = tempfile.mkdtemp()
>>> _ = tfm.SmoothGrad(model, num_samples=2, seed=0).export(base, version=3)
>>> loaded = loader.load(base)
>>> loaded.path.endswith("3"), sorted(loaded.inputs), loaded.outputs
(True, ['inputs', 'seeds', 'targets'], ['attributions', 'finite_samples', 'stderr'])
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from tfmollify.adapter import request as request_lib
from tfmollify.explainers.export import EXTRAS_DIR, SIGNATURE_KEY

__all__ = ["Loaded", "NotAnExport", "load", "version_dir"]


class NotAnExport(FileNotFoundError, ValueError):
    """The path holds no export of :func:`tfmollify.export` (no SavedModel there)."""


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A loaded export.

    Attributes:
        path: The version directory loaded.
        fn: Its ``serving_default`` signature (a concrete function of named tensors).
        inputs: ``{name: tf.TensorSpec}`` of the signature's inputs.
        outputs: The signature's output names (sorted).
        rules: The request rules written beside it (None for exports older than them).
        saved: The loaded SavedModel object (keeps its variables alive).
    """

    path: str
    fn: Any
    inputs: dict[str, Any]
    outputs: list[str]
    rules: request_lib.Rules | None
    saved: Any


def version_dir(path: Any, argument: str = "export_dir") -> str:
    """``path`` itself if it holds a SavedModel, else its highest numbered version
    sub-directory that does (what TF Serving loads from a model base path).

    Raises:
        TypeError: ``path`` is not a path.
        NotAnExport: No SavedModel there (a ``FileNotFoundError`` and a ``ValueError``).
    """
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(
            f"Argument `{argument}` must be a path (str or os.PathLike). "
            f"Received: {argument} of type {type(path).__name__}"
        ) from None
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    if not os.path.isdir(path):
        raise NotAnExport(
            f"Argument `{argument}` must be an exported explainer: a directory written by "
            f"explainer.export(...). Received: {argument}={path!r}, which does not exist."
        )
    versions = [
        int(d) for d in os.listdir(path)
        if d.isdigit() and os.path.isfile(os.path.join(path, d, "saved_model.pb"))
    ]
    if not versions:
        raise NotAnExport(
            f"Argument `{argument}` must be an exported explainer: a SavedModel, or numbered "
            "version sub-directories with one (as explainer.export(path) writes path/1/). "
            f"Received: {argument}={path!r}, which holds neither."
        )
    return os.path.join(path, str(max(versions)))


def load(path: Any, argument: str = "export_dir") -> Loaded:
    """Loads the export at ``path`` (a base directory or one version directory).

    Args:
        path: What ``explainer.export`` was given, or one version directory.
        argument: The caller's name for ``path`` (in error messages).

    Raises:
        TypeError, NotAnExport: As :func:`version_dir`.
        ValueError: The SavedModel has no ``serving_default`` signature.
    """
    import tensorflow as tf

    directory = version_dir(path, argument)
    saved = tf.saved_model.load(directory)
    signatures = saved.signatures
    if SIGNATURE_KEY not in signatures:
        raise ValueError(
            f"Argument `{argument}` must be an export of tfmollify.export (a "
            f"{SIGNATURE_KEY!r} signature). Received: {directory!r} with signatures "
            f"{sorted(signatures)}."
        )
    fn = signatures[SIGNATURE_KEY]
    return Loaded(
        path=directory,
        fn=fn,
        inputs=dict(fn.structured_input_signature[1]),
        outputs=sorted(fn.structured_outputs),
        rules=_rules(directory),
        saved=saved,
    )


def _rules(directory: str) -> request_lib.Rules | None:
    """The request rules an export wrote beside its SavedModel (None for older exports: their
    graph's own checks then answer)."""
    path = os.path.join(directory, EXTRAS_DIR, request_lib.RULES_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return request_lib.Rules.from_json(f.read())

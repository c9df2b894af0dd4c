"""tfmollify: gradient smoothing for TensorFlow/Keras as Monte Carlo mollification.

SmoothGrad, NoiseGrad and FusionGrad are Monte Carlo estimates of a mollified gradient
``g_eps = g * phi_eps`` (Zhou et al., "Axiomatization of gradient smoothing in neural networks"),
with input noise, weight noise or both, for any mollifier kernel ``phi``.

Example:

>>> import keras, numpy as np
>>> import tfmollify as tfm
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="tanh"),
...                           keras.layers.Dense(3)])
>>> x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
>>> explainer = tfm.Explainer(model, mode="fg", kernel="hyperbolic", num_samples=8,
...                           num_weight_samples=4, seed=0)
>>> attributions, stderr = explainer.explain(x, targets=[0, 2], return_stderr=True)
>>> attributions.shape, stderr.shape
((2, 4), (2, 4))

The package is layered; each layer is a public subpackage and imports only the layers below it
(``tests/test_architecture.py`` checks this from the import graph):

- :mod:`tfmollify.core`: kernels, sampling, aggregation, modes, plans and the compiled engine
  (TensorFlow only, no Keras model);
- :mod:`tfmollify.adapter`: a Keras model seen by the engine (settings, request rules, model
  view, runner);
- :mod:`tfmollify.explainers`: what a user calls in-process (``Explainer``, its results, its
  export, the progress it shows);
- :mod:`tfmollify.evaluation`: metrics, pictures and the paper's experiments;
- :mod:`tfmollify.testing`: checks users run on their own models and kernels (honest Monte
  Carlo assertions, kernel and guarantee checks, MPRT, Hypothesis strategies);
- :mod:`tfmollify.integrations`: datasets, Ray, the Keras callback, the HTTP server;
- :mod:`tfmollify.interface`: the command line and the demo.

The module paths of the flat layout before (``tfmollify.serve``, ``tfmollify.serving``,
``tfmollify.kernels`` ...) keep working: they name the same module objects (:data:`MOVED`).
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys

from tfmollify.core import attribution, kernels, sampling
from tfmollify.core.attribution import register as register_attribution
from tfmollify.core.attribution import tape_gradient
from tfmollify.explainers.explainer import (
    MODES,
    Explainer,
    Explanation,
    FusionGrad,
    NoiseGrad,
    NonFiniteError,
    SmoothGrad,
)
from tfmollify.explainers.export import export
from tfmollify.explainers.generation import GenerationExplanation, explain_generation
from tfmollify.integrations import callbacks
from tfmollify.integrations.callbacks import ExplanationLogger
from tfmollify.integrations.dataset import explain_dataset

__all__ = [
    "MODES",
    "Explainer",
    "Explanation",
    "ExplanationLogger",
    "FusionGrad",
    "GenerationExplanation",
    "NoiseGrad",
    "NonFiniteError",
    "SmoothGrad",
    "attribution",
    "callbacks",
    "explain_dataset",
    "explain_generation",
    "export",
    "kernels",
    "register_attribution",
    "sampling",
    "tape_gradient",
]

__version__ = "0.1.0"


#: Module paths of the flat layout, each with the module it names now. ``import tfmollify.serve``
#: and ``python -m tfmollify.experiments.table1`` still work, and give the same module object.
MOVED = {
    "tfmollify.aggregation": "tfmollify.core.aggregation",
    "tfmollify.attribution": "tfmollify.core.attribution",
    "tfmollify.engine": "tfmollify.core.engine",
    "tfmollify.inputs": "tfmollify.core.inputs",
    "tfmollify.kernels": "tfmollify.core.kernels",
    "tfmollify.plan": "tfmollify.core.plan",
    "tfmollify.sampling": "tfmollify.core.sampling",
    "tfmollify.keras_compat": "tfmollify.adapter.keras_compat",
    "tfmollify.model_view": "tfmollify.adapter.model_view",
    "tfmollify.request": "tfmollify.adapter.request",
    "tfmollify.runner": "tfmollify.adapter.runner",
    "tfmollify.spec": "tfmollify.adapter.spec",
    "tfmollify.explainer": "tfmollify.explainers.explainer",
    "tfmollify.progress": "tfmollify.explainers.progress",
    "tfmollify.serving": "tfmollify.explainers.export",
    "tfmollify.metrics": "tfmollify.evaluation.metrics",
    "tfmollify.plot": "tfmollify.evaluation.plot",
    "tfmollify.experiments": "tfmollify.evaluation.experiments",
    "tfmollify.callbacks": "tfmollify.integrations.callbacks",
    "tfmollify.dataset": "tfmollify.integrations.dataset",
    "tfmollify.parallel": "tfmollify.integrations.parallel",
    "tfmollify.serve": "tfmollify.integrations.serve",
    "tfmollify.cli": "tfmollify.interface.cli",
    "tfmollify.demo": "tfmollify.interface.demo",
}


def __getattr__(name: str):
    """``tfmollify.<module of the flat layout>`` (``tfm.serve``, ``tfm.model_view`` ...), imported
    on first use, as the flat package offered them."""
    new = MOVED.get(f"tfmollify.{name}")
    if new is None:
        raise AttributeError(f"module 'tfmollify' has no attribute {name!r}")
    return importlib.import_module(new)


def _moved_to(name: str) -> str | None:
    """The module path that ``name`` (a path of the flat layout, or below one) names now."""
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return None


class _MovedLoader(importlib.abc.Loader):
    """Loads an old path as the module of its new path (the same object, imported once)."""

    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec):
        module = importlib.import_module(self.new)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module) -> None:
        module.__spec__ = self.own_spec  # importlib set the old path's spec on the module

    def get_code(self, name: str):
        """For ``python -m <old path>``: the new module's code, run as ``__main__``."""
        spec = importlib.util.find_spec(self.new)
        return spec.loader.get_code(self.new)


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        new = _moved_to(name)
        if new is None:
            return None
        found = importlib.util.find_spec(new)
        if found is None:
            return None
        return importlib.util.spec_from_loader(
            name, _MovedLoader(new), is_package=found.submodule_search_locations is not None)


if not any(type(f).__qualname__ == "_MovedFinder" for f in sys.meta_path):  # reload-safe
    sys.meta_path.insert(0, _MovedFinder())

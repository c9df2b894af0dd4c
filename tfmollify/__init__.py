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
"""

from tfmollify import attribution, callbacks, kernels, sampling
from tfmollify.attribution import register as register_attribution
from tfmollify.attribution import tape_gradient
from tfmollify.callbacks import ExplanationLogger
from tfmollify.dataset import explain_dataset
from tfmollify.explainer import (
    MODES,
    Explainer,
    Explanation,
    FusionGrad,
    NoiseGrad,
    NonFiniteError,
    SmoothGrad,
)
from tfmollify.serving import export

__all__ = [
    "MODES",
    "Explainer",
    "Explanation",
    "ExplanationLogger",
    "FusionGrad",
    "NoiseGrad",
    "NonFiniteError",
    "SmoothGrad",
    "attribution",
    "callbacks",
    "explain_dataset",
    "export",
    "kernels",
    "register_attribution",
    "sampling",
    "tape_gradient",
]

__version__ = "0.1.0"

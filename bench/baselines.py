"""The original NoiseGrad / FusionGrad (NoiseGrad++) procedure, written faithfully in TensorFlow.

Bykov et al., "NoiseGrad: enhancing explanations by introducing stochasticity to model weights"
(AAAI 2022), reference PyTorch implementation: for each of ``M`` weight draws, reload the saved
weights, multiply every parameter in place by ``1 + weight_epsilon * z`` with ``z ~ N(0, 1)``
(i.e. noise ``N(1, weight_epsilon)``), compute the explanation with the perturbed model, and
finally restore the weights; FusionGrad additionally adds Gaussian input noise ``N(0, sigma)``
to ``N`` copies of the inputs per weight draw. The result is the mean over all draws.

Here, as in the reference, this is an eager Python loop that mutates the model's variables
(``model.trainable_variables``, the analogue of ``model.parameters()``). The weights are copied
once and assigned back before every draw and at the end (also on error). The one deviation is
that each draw is ONE model evaluation, batched over the ``B`` examples (NoiseGrad) or over all
``B*N`` noisy inputs (FusionGrad), instead of the reference's inner loop over ``N``; this only
makes the baseline faster; ``per_draw=True`` restores the reference's inner loop (one model
evaluation of ``B`` rows per input draw, ``M x N`` evaluations in all).

Two gradient back-ends are offered: ``compiled=False`` (eager ``GradientTape``, the faithful
port) and ``compiled=True`` (the same loop, but the gradient step is one ``tf.function`` traced
once: the variables are captured by reference, so reassigning them is seen without retracing).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf


class NoiseGradBaseline:
    """Eager-loop NoiseGrad (``num_samples=None``) or FusionGrad (``num_samples=N``).

    Args:
        model: Keras 3 model returning logits.
        num_weight_samples: ``M``, weight draws.
        weight_epsilon: Relative weight-noise scale (perturbed weights ``w * (1 + eps * z)``).
        num_samples: ``N`` noisy input copies per weight draw (FusionGrad), or ``None``.
        epsilon: Absolute standard deviation of the Gaussian input noise (FusionGrad only).
        compiled: Run each draw's gradient as a ``tf.function`` (else eagerly).
        seed: Seed of the weight / input noise generator.
        per_draw: FusionGrad only: loop over the ``N`` input draws (one evaluation of ``B`` rows
            each, as the reference does) instead of one evaluation of ``B*N`` rows.
    """

    def __init__(
        self,
        model: keras.Model,
        num_weight_samples: int = 10,
        weight_epsilon: float = 0.2,
        num_samples: int | None = None,
        epsilon: float | None = None,
        compiled: bool = False,
        seed: int = 0,
        per_draw: bool = False,
    ) -> None:
        if num_samples is not None and epsilon is None:
            raise ValueError("FusionGrad needs the input-noise epsilon")
        self.model = model
        self.num_weight_samples = int(num_weight_samples)
        self.weight_epsilon = float(weight_epsilon)
        self.num_samples = num_samples
        self.epsilon = epsilon
        self.per_draw = bool(per_draw)
        self.rng = tf.random.Generator.from_seed(seed)
        self._grad = (
            tf.function(self._gradient, reduce_retracing=True) if compiled else self._gradient
        )

    def _gradient(self, x: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
        """Input gradient of the target logits of a batch (one model evaluation)."""
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = self.model(x, training=False)
            score = tf.gather(logits, targets, axis=1, batch_dims=1)
        return tape.gradient(score, x)

    def _perturb(self, variables: Sequence, saved: Sequence[tf.Tensor]) -> None:
        for var, w in zip(variables, saved, strict=True):
            z = self.rng.normal(w.shape, dtype=w.dtype)
            var.assign(w * (1.0 + self.weight_epsilon * z))

    @staticmethod
    def _restore(variables: Sequence, saved: Sequence[tf.Tensor]) -> None:
        for var, w in zip(variables, saved, strict=True):
            var.assign(w)

    def __call__(
        self, inputs: np.ndarray | tf.Tensor, targets: np.ndarray | tf.Tensor
    ) -> tf.Tensor:
        """Attributions shaped like ``inputs``: mean input gradient over the weight draws."""
        x = tf.convert_to_tensor(inputs, tf.float32)
        t = tf.convert_to_tensor(targets, tf.int32)
        variables = self.model.trainable_variables
        saved = [tf.identity(tf.convert_to_tensor(v)) for v in variables]  # copy the weights
        n = self.num_samples
        if n is not None:
            t = tf.repeat(t, n)
        total = tf.zeros_like(x)
        try:
            for _ in range(self.num_weight_samples):
                # Reference: load_state_dict(saved) then mul_(N(1, eps)); one assign here.
                self._perturb(variables, saved)
                if n is None:
                    total += self._grad(x, t)
                elif self.per_draw:
                    t1 = tf.convert_to_tensor(targets, tf.int32)
                    for _ in range(n):
                        xn = x + self.rng.normal(tf.shape(x), stddev=self.epsilon)
                        total += self._grad(xn, t1) / n
                else:
                    xr = tf.repeat(x, n, axis=0)
                    xn = xr + self.rng.normal(tf.shape(xr), stddev=self.epsilon)
                    g = self._grad(xn, t)
                    total += tf.reduce_mean(tf.reshape(g, (-1, n, *x.shape[1:])), axis=1)
        finally:
            self._restore(variables, saved)
        return total / self.num_weight_samples

"""A user's own kernel for the tests: the triangle density ``max(1 - |x|, 0)`` on [-1, 1], as
README's "Your own kernel" writes it. Test modules subclass it with a name of their own, so that
registering one never clashes with another module's."""

from __future__ import annotations

import tensorflow as tf

import tfmollify as tfm


class Triangle(tfm.kernels.Kernel):
    """The triangle density on [-1, 1] (a correct kernel)."""

    name = "triangle-user"
    variance = 1.0 / 6.0
    support = (-1.0, 1.0)

    def _pdf(self, x):
        return tf.nn.relu(1.0 - tf.abs(x))

    def _cdf(self, x):
        x = tf.clip_by_value(x, -1.0, 1.0)
        return tf.where(x < 0, 0.5 * (1 + x) ** 2, 1 - 0.5 * (1 - x) ** 2)

    def _icdf(self, u):
        return tf.where(u < 0.5, tf.sqrt(2 * u) - 1, 1 - tf.sqrt(2 * (1 - u)))

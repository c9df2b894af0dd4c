"""A Keras layer that records the rows of every pass through a model, from inside the compiled
graph (tests of the ``batch_size`` bound)."""

from __future__ import annotations

import threading
import time

import keras
import numpy as np
import tensorflow as tf


class PassLog:
    """What a recording layer saw: the rows of every pass, and the most rows in flight at once
    (every call sleeps ``sleep`` seconds, so that concurrent passes overlap in time)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sleep = 0.0
        self.reset()

    def reset(self, sleep: float | None = None) -> None:
        with self.lock:
            self.rows: list[int] = []
            self.in_flight = 0
            self.peak = 0
        if sleep is not None:
            self.sleep = sleep

    def __call__(self, v: np.ndarray) -> np.ndarray:
        n = int(v.shape[0])
        with self.lock:
            self.rows.append(n)
            self.in_flight += n
            self.peak = max(self.peak, self.in_flight)
        if self.sleep:
            time.sleep(self.sleep)
        with self.lock:
            self.in_flight -= n
        return np.float32(0.0)


class RecordRows(keras.layers.Layer):
    """The identity, reporting the leading (batch) dimension of every pass to a :class:`PassLog`.

    A stateless ``tf.numpy_function`` whose (zero) output the result depends on: it runs inside
    the compiled graph at every pass and does not order the passes (a stateful op would)."""

    def __init__(self, log: PassLog, **kwargs):
        super().__init__(**kwargs)
        self.log = log

    def call(self, x):
        seen = tf.numpy_function(self.log, [x], tf.float32, stateful=False)
        seen.set_shape([])
        # a factor (exactly 1), not a term: the gradient needs its value, so the recorder runs
        # in every pass even where static shapes let TensorFlow prune the forward ops the
        # gradient does not need (a trace for one example)
        return x * (1.0 + tf.stop_gradient(seen))

    def compute_output_shape(self, shape):
        return shape

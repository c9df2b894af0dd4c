"""Offline data and a model for evaluations and the demo: scikit-learn's digits, and a small CNN.

The 8x8 handwritten digits that ship with scikit-learn, upsampled (no download), and a
``Conv(8)-Pool-Conv(16)-Pool-Dense(10)`` network that trains on them in seconds. The paper's
experiments (:mod:`tfmollify.evaluation.experiments`) and ``tfmollify demo`` use them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["digits", "train_cnn"]


def digits(size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits as ``[n, size, size, 1]`` float32 in [0, 1], and labels.

    Raises:
        ImportError: Without scikit-learn (``pip install 'tfmollify[demo]'``).
    """
    import tensorflow as tf

    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover
        raise ImportError("the demo needs scikit-learn: pip install 'tfmollify[demo]'") from exc
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    x = tf.image.resize(x, (size, size), method="bilinear").numpy().clip(0.0, 1.0)
    return x, data.target.astype(np.int32)


def train_cnn(x: np.ndarray, y: np.ndarray, epochs: int = 6, seed: int = 0) -> Any:
    """Trains ``Conv(8)-Pool-Conv(16)-Pool-Dense(10)`` (logits) with Adam; returns the model."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(x.shape[1:]),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ],
        name="digits_cnn",
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model

"""A table of bad requests, and how to send one down each path (issue 26: one rule, one place).

Every path that checks a request must refuse each of these with the same message:
``Explainer.explain``, a loaded export in process (``tfmollify.integrations.serve.Export``),
``explain_dataset``, and ``tfmollify serve`` over HTTP (tests/test_serve.py sends the table to
a live server). The paths differ only in the exception class (``ValueError``/``TypeError``,
``RequestError``, an HTTP 400 whose JSON ``error`` is the message).
"""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np

import tfmollify as tfm

#: The explainers the table is sent to: FusionGrad with eq. 30 (a constant example has no
#: scale) and blocks of 4 evaluations, and SmoothGrad bounded by ``input_range`` (AdaptGrad).
SETTINGS = {
    "fg": dict(mode="fg", num_samples=4, num_weight_samples=3, seed=1, batch_size=4),
    "bounded": dict(mode="sg", num_samples=4, seed=1, input_range=(-1.0, 1.0)),
}


def model() -> keras.Model:
    """The model of tests/test_serve.py's flat export: 6 features, 3 classes."""
    keras.utils.set_random_seed(4)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="tanh"),
                             keras.layers.Dense(3)])


@dataclasses.dataclass(frozen=True)
class Bad:
    """One bad request: what is wrong, which explainers it is sent to, and the request."""

    what: str
    settings: tuple[str, ...]
    inputs: np.ndarray
    targets: np.ndarray
    seeds: np.ndarray
    #: explain_dataset derives the seeds itself: a case about seeds does not apply to it
    dataset: bool = True


def _good() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).uniform(-0.9, 0.9, size=(2, 6)).astype(np.float32)
    return x, np.array([0, 1], np.int32), np.array([7, 8], np.int64)


def table() -> list[Bad]:
    x, t, s = _good()
    nan = x.copy()
    nan[1, 2] = np.nan
    inf = x.copy()
    inf[0, 0] = np.inf
    both = ("fg", "bounded")
    return [
        Bad("targets out of range", both, x, np.array([0, 3]), s),
        Bad("a negative target", both, x, np.array([-1, 0]), s),
        Bad("fractional targets", both, x, np.array([0.5, 1.0]), s),
        Bad("one target for two examples", both, x, np.array([0]), s),
        Bad("NaN inputs", both, nan, t, s),
        Bad("infinite inputs", both, inf, t, s),
        Bad("a constant example under eq. 30", ("fg",), np.ones((2, 6), np.float32), t, s),
        Bad("inputs outside input_range", ("bounded",), x * 3, t, s),
        Bad("one seed for two examples", both, x, t, np.array([1]), dataset=False),
        Bad("examples of the wrong width", both, np.zeros((2, 5), np.float32), t, s),
        Bad("examples of the wrong width holding NaN", both,
            np.full((2, 5), np.nan, np.float32), t, s),
        Bad("inputs without a batch axis", both, x[0], t, s, dataset=False),
        Bad("integral float targets", both, x, np.array([0.0, 1.0]), s),
        Bad("fractional seeds", both, x, t, np.array([1.5, 2.0]), dataset=False),
        Bad("targets of rank 2", both, x, np.array([[0], [1]]), s),
    ]


def explain_message(explainer: tfm.Explainer, bad: Bad) -> str:
    """The message ``explainer.explain`` raises for ``bad``."""
    try:
        explainer.explain(bad.inputs, bad.targets, seeds=bad.seeds)
    except (ValueError, TypeError) as exc:
        return str(exc)
    raise AssertionError(f"explain accepted {bad.what}")


def dataset_message(explainer: tfm.Explainer, bad: Bad) -> str:
    """The message ``explain_dataset`` raises for ``bad`` (one batch of inputs and targets)."""
    import tensorflow as tf

    ds = tf.data.Dataset.zip((
        tf.data.Dataset.from_tensor_slices(bad.inputs).batch(len(bad.inputs)),
        tf.data.Dataset.from_tensor_slices(bad.targets).batch(len(bad.targets)),
    ))
    try:
        tfm.explain_dataset(explainer, ds, progress=False)
    except (ValueError, TypeError) as exc:
        return str(exc)
    raise AssertionError(f"explain_dataset accepted {bad.what}")


def body(bad: Bad, rows: bool = False) -> bytes:
    """``bad`` as a TF Serving JSON body (columnar, or one object per example with ``rows``;
    NaN and Infinity as TF Serving reads them)."""
    columns = {"inputs": bad.inputs.astype(np.float64).tolist(),
               "targets": bad.targets.tolist(), "seeds": bad.seeds.tolist()}
    if rows:
        n = len(bad.inputs)
        if any(len(v) != n for v in columns.values()):
            return b""  # not expressible as rows
        payload = {"instances": [{k: v[i] for k, v in columns.items()} for i in range(n)]}
    else:
        payload = {"inputs": columns}
    return json.dumps(payload, allow_nan=True).encode()

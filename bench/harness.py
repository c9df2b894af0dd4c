"""Shared pieces of the tfmollify benchmark harness.

Everything that ``bench.py`` and ``memory.py`` both need lives here: quiet TensorFlow start-up,
the deterministic benchmark models, the deterministic inputs and targets, the SmoothGrad *floor*
(the least work any SmoothGrad implementation can do), an optional import of ``tfmollify``, and
small statistics/formatting helpers.

Import this module before TensorFlow is imported anywhere else, so that the logging environment
variables below take effect.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import dataclasses
import importlib.metadata
import platform
import statistics
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

MODELS = ("mlp", "lenet", "mobilenetv2", "vgg16")

# tf-keras-vis passes a list to single-input functional models; Keras 3 warns on every call.
warnings.filterwarnings("ignore", message=r"The structure of `inputs` doesn't match")
# Checks build many floors and tf-explain retraces per class: silence the retracing warnings.
tf.get_logger().setLevel("ERROR")


# --------------------------------------------------------------------------------------------
# Models and data
# --------------------------------------------------------------------------------------------


def input_shape_of(name: str) -> tuple[int, ...]:
    """Shape of one example (no batch dimension) for a benchmark model name."""
    return {
        "mlp": (784,),
        "lenet": (32, 32, 3),
        "mobilenetv2": (224, 224, 3),
        "vgg16": (224, 224, 3),
        "linear": (784,),
    }[name]


def build_model(name: str, seed: int = 0) -> keras.Model:
    """Builds a deterministic, randomly initialised Keras 3 functional model that outputs logits.

    Args:
        name: One of ``mlp``, ``lenet``, ``mobilenetv2``, ``vgg16`` or ``linear`` (a single
            ``Dense(10)`` on 784 inputs, used by the correctness checks).
        seed: Seed passed to :func:`keras.utils.set_random_seed` before building.

    Returns:
        A functional model whose output is the pre-softmax logits.
    """
    keras.utils.set_random_seed(seed)
    layers = keras.layers
    if name == "mlp":
        inp = keras.Input((784,))
        h = layers.Dense(200, activation="relu")(inp)
        out = layers.Dense(10)(h)
        return keras.Model(inp, out, name="mlp")
    if name == "linear":
        inp = keras.Input((784,))
        return keras.Model(inp, layers.Dense(10)(inp), name="linear")
    if name == "lenet":
        inp = keras.Input((32, 32, 3))
        h = layers.Conv2D(6, 5, activation="relu")(inp)
        h = layers.MaxPooling2D()(h)
        h = layers.Conv2D(16, 5, activation="relu")(h)
        h = layers.MaxPooling2D()(h)
        h = layers.Flatten()(h)
        h = layers.Dense(120, activation="relu")(h)
        h = layers.Dense(84, activation="relu")(h)
        out = layers.Dense(10)(h)
        return keras.Model(inp, out, name="lenet")
    if name == "mobilenetv2":
        return keras.applications.MobileNetV2(
            weights=None, input_shape=(224, 224, 3), classifier_activation=None
        )
    if name == "vgg16":
        return keras.applications.VGG16(weights=None, classifier_activation=None)
    raise ValueError(f"unknown model {name!r}; expected one of {(*MODELS, 'linear')}")


def softmax_model(model: keras.Model) -> keras.Model:
    """The same network with a softmax appended (for peers that expect probabilities)."""
    out = keras.layers.Softmax()(model.outputs[0])
    return keras.Model(model.inputs, out, name=f"{model.name}_softmax")


def make_inputs(
    input_shape: Sequence[int],
    batch: int,
    num_classes: int,
    seed: int = 0,
    same_target: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic inputs in ``[0, 1)`` and integer targets.

    Targets are ``arange(batch) % num_classes`` (every example explains a different logit), or
    all ``1`` with ``same_target``.
    """
    rng = np.random.default_rng(seed)
    x = rng.random((batch, *input_shape), dtype=np.float32)
    t = np.ones(batch, np.int32) if same_target else np.arange(batch, dtype=np.int32) % num_classes
    return x, t


def num_classes_of(model: keras.Model) -> int:
    """Number of logits of a single-output classifier."""
    return int(model.outputs[0].shape[-1])


# --------------------------------------------------------------------------------------------
# The floor
# --------------------------------------------------------------------------------------------

STATISTICS = ("mean", "meansq", "var")
OBJECTIVES = ("logit", "nll")


def _score(model: keras.Model, xn: tf.Tensor, tn: tf.Tensor, objective: str) -> tf.Tensor:
    """Per-row scalar whose input gradient is explained: the target logit, or ``-log p_t``."""
    out = model(xn, training=False)
    if objective == "nll":
        out = -tf.nn.log_softmax(out, axis=-1)
    return tf.gather(out, tn, axis=1, batch_dims=1)


def _finish(s1: tf.Tensor, s2: tf.Tensor | None, n: int, statistic: str) -> tf.Tensor:
    mean = s1 / n
    if statistic == "mean":
        return mean
    assert s2 is not None
    meansq = s2 / n
    if statistic == "meansq":
        return meansq
    return (meansq - mean * mean) * (n / (n - 1))


def make_floor(
    model: keras.Model,
    input_shape: Sequence[int],
    num_samples: int,
    sigma: float,
    *,
    statistic: str = "mean",
    objective: str = "logit",
    chunk: int | None = None,
    jit_compile: bool = False,
) -> Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]:
    """Builds the SmoothGrad floor: ``floor(x [B, ...], targets [B], seed [2]) -> [B, ...]``.

    With ``chunk=None`` it is ONE ``tf.function`` that draws the Gaussian noise for all
    ``B x N`` noisy copies at once with ``tf.random.stateless_normal``, takes the input gradient
    of the target scores of all ``B*N`` rows in ONE batched ``GradientTape`` pass, and reduces
    over ``N``. Nothing computing SmoothGrad can do less work; it also holds all ``B*N`` copies
    (and their activations) at once, so its memory grows with ``N``.

    With ``chunk=k`` the ``B*N`` rows are processed ``k`` at a time in a ``tf.while_loop`` inside
    the same single ``tf.function``, with per-example running sums (bounded memory).

    Args:
        model: Model returning logits.
        input_shape: Shape of one example.
        num_samples: ``N``, noisy copies per example.
        sigma: Absolute standard deviation of the Gaussian input noise.
        statistic: ``mean`` (SmoothGrad), ``meansq`` (SquareGrad) or ``var`` (VarGrad, unbiased).
        objective: ``logit`` (target logit) or ``nll`` (``-log softmax`` of the target).
        chunk: Rows per gradient pass, or ``None`` for one pass.
        jit_compile: Compile with XLA.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}")
    shape = tuple(int(d) for d in input_shape)
    n = int(num_samples)
    need_sq = statistic != "mean"
    signature = [
        tf.TensorSpec((None, *shape), tf.float32),
        tf.TensorSpec((None,), tf.int32),
        tf.TensorSpec((2,), tf.int32),
    ]

    def grad(xn: tf.Tensor, tn: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(xn)
            score = _score(model, xn, tn, objective)
        return tape.gradient(score, xn)

    if chunk is None:

        @tf.function(input_signature=signature, jit_compile=jit_compile)
        def floor(x: tf.Tensor, targets: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
            b = tf.shape(x)[0]
            z = tf.random.stateless_normal(
                tf.concat([[b, n], shape], axis=0), seed, stddev=sigma, dtype=x.dtype
            )
            xn = tf.reshape(x[:, None] + z, (-1, *shape))
            g = tf.reshape(grad(xn, tf.repeat(targets, n)), (-1, n, *shape))
            s1 = tf.reduce_sum(g, axis=1)
            s2 = tf.reduce_sum(g * g, axis=1) if need_sq else None
            return _finish(s1, s2, n, statistic)

        return floor

    k = int(chunk)

    @tf.function(input_signature=signature, jit_compile=jit_compile)
    def floor_chunked(x: tf.Tensor, targets: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        b = tf.shape(x)[0]
        rows = b * n
        num_chunks = (rows + k - 1) // k
        s1 = tf.zeros_like(x)
        s2 = tf.zeros_like(x)
        for i in tf.range(num_chunks):
            # One chunk at a time: overlapping iterations would only contend for the cores.
            tf.autograph.experimental.set_loop_options(parallel_iterations=1)
            start = i * k
            size = tf.minimum(k, rows - start)
            ex = (start + tf.range(size)) // n  # example index of each row of this chunk
            z = tf.random.stateless_normal(
                tf.concat([[size], shape], axis=0), seed + tf.stack([0, i]), stddev=sigma
            )
            xn = tf.gather(x, ex) + z
            g = grad(xn, tf.gather(targets, ex))
            s1 += tf.math.unsorted_segment_sum(g, ex, b)
            if need_sq:
                s2 += tf.math.unsorted_segment_sum(g * g, ex, b)
        return _finish(s1, s2 if need_sq else None, n, statistic)

    return floor_chunked


class SeededCall:
    """Wraps a ``fn(x, t, seed)`` so that every call draws fresh noise (seed ``[base, k]``)."""

    def __init__(self, fn: Callable[..., tf.Tensor], base_seed: int = 0) -> None:
        self.fn = fn
        self.base_seed = base_seed
        self.calls = 0

    def __call__(self, x: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
        seed = tf.constant([self.base_seed, self.calls], tf.int32)
        self.calls += 1
        return self.fn(x, t, seed)


# --------------------------------------------------------------------------------------------
# tfmollify (optional: it is being written concurrently)
# --------------------------------------------------------------------------------------------


def import_tfmollify() -> tuple[Any | None, str]:
    """Imports ``tfmollify`` (installed, else from the repository root).

    Returns:
        ``(module, "")`` on success, ``(None, reason)`` when it cannot be used yet.
    """
    try:
        import tfmollify as tfm
    except ImportError:
        if str(REPO_ROOT) not in sys.path:
            sys.path.insert(0, str(REPO_ROOT))
        try:
            import tfmollify as tfm
        except Exception as err:  # any error while the package is half-written
            return None, f"tfmollify not importable: {type(err).__name__}: {err}"
    except Exception as err:
        return None, f"tfmollify not importable: {type(err).__name__}: {err}"
    missing = [
        n for n in ("Explainer", "SmoothGrad", "NoiseGrad", "FusionGrad") if not hasattr(tfm, n)
    ]
    if missing:
        return None, f"tfmollify importable but lacks {', '.join(missing)}"
    return tfm, ""


# --------------------------------------------------------------------------------------------
# Statistics, environment and formatting
# --------------------------------------------------------------------------------------------


def summarize(times: Sequence[float]) -> dict[str, float]:
    """Median, min, max and quartiles of a list of timings (seconds)."""
    ts = sorted(times)
    if not ts:
        return {}
    if len(ts) >= 2:
        q1, _, q3 = statistics.quantiles(ts, n=4, method="inclusive")
    else:
        q1 = q3 = ts[0]
    return {
        "median_s": statistics.median(ts),
        "min_s": ts[0],
        "max_s": ts[-1],
        "q1_s": q1,
        "q3_s": q3,
    }


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over examples of the Pearson correlation of two batches of maps."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    num = (a * b).sum(axis=1)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return float(np.mean(num / np.maximum(den, 1e-300)))


def norm_ratio(a: np.ndarray, b: np.ndarray) -> float:
    """``||a|| / ||b||`` over the whole batch (catches scale errors correlation misses)."""
    return float(
        np.linalg.norm(np.asarray(a, np.float64)) / np.linalg.norm(np.asarray(b, np.float64))
    )


def versions() -> dict[str, str]:
    """Versions of the packages that matter for the numbers."""
    out = {"python": platform.python_version(), "machine": platform.machine()}
    for dist in (
        "tensorflow-cpu",
        "tensorflow",
        "keras",
        "numpy",
        "xplique",
        "saliency",
        "tf-keras-vis",
        "tf-explain",
        "tfmollify",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    out["tf.__version__"] = tf.__version__
    out["cpu_count"] = str(os.cpu_count())
    out["intra_op_threads"] = str(tf.config.threading.get_intra_op_parallelism_threads())
    try:  # the commit measured, "+dirty" with uncommitted changes
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tfmollify"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        out["git"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    return out


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_s(seconds: float | None) -> str:
    """Seconds with three significant digits (or '-')."""
    if seconds is None:
        return "-"
    if seconds >= 100:
        return f"{seconds:.0f}"
    return f"{seconds:.3g}"


@dataclasses.dataclass
class Problem:
    """One benchmark configuration: model, inputs, targets and SmoothGrad parameters."""

    name: str
    model: keras.Model
    x: np.ndarray
    targets: np.ndarray
    sigma: float
    num_samples: int
    num_weight_samples: int
    weight_epsilon: float
    batch_size: int | None
    _softmax: keras.Model | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of logits."""
        return num_classes_of(self.model)

    @property
    def softmax(self) -> keras.Model:
        """The model with a softmax on top (built once)."""
        if self._softmax is None:
            self._softmax = softmax_model(self.model)
        return self._softmax

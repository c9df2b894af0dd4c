"""The paper's Table 1 on data that ships with scikit-learn: 4 metrics x (gradient + 15 methods).

Run ``python -m tfmollify.evaluation.experiments.table1 [--quick] [--out DIR] [--data PATH]`` (or
``tfmollify table1 ...``). It

1. trains an MLP (``Flatten - Dense(200, relu) - Dense(10)``, the paper's appendix F.2 MLP) on
   scikit-learn's handwritten digits (24x24, :func:`tfmollify.evaluation.digits.digits`) for
   **Consistency** and
   **Invariance**, as the paper does on MNIST;
2. generates a localization set with exact ground truth: each digit pasted at a random position on
   a larger canvas cluttered with noise and fragments of other digits, its box the bounding box of
   the digit's nonzero pixels (:func:`cluttered_digits`), and trains a small CNN with global max
   pooling on it, for **Localization** (pointing game, k = 5) and **Sparseness** (Gini index), as
   the paper does on ImageNet boxes;
3. explains ``num_examples`` held-out examples (targets: the true labels) with the raw gradient
   ("Original") and with every mode (SG, NG, FG) x kernel, and scores them with
   :mod:`tfmollify.evaluation.metrics`:

   * Consistency: the mean of the absolute and the signed Spearman correlation between the
     explanations of the trained MLP and of a fully re-initialised copy (appendix F.1 averages two
     normalisations; :func:`tfmollify.evaluation.metrics.consistency`);
   * Invariance: Spearman correlation between the explanations of ``x`` and, by the MLP with the
     first bias compensated (``b - W c``), of ``x + c`` with ``c = -1``
     (:func:`tfmollify.evaluation.metrics.invariance`);
   * Localization: :func:`tfmollify.evaluation.metrics.pointing_game` with ``k = 5`` on ``sum_c
   |a_c|``;
   * Sparseness: :func:`tfmollify.evaluation.metrics.sparseness`.

It writes ``table1.md`` (the table, standard errors, settings, timings), ``table1.csv`` (the
table's numbers: rows = five kernels + Original, columns = metric x mode; Original fills only the
SG column of each metric, as in the paper), ``scores.npz`` (every per-example score) and
``fig8.png`` (one digit of class 0: rows = modes, columns = raw gradient + five kernels, like the
paper's Fig. 8). Seeds are fixed: the same command gives the same numbers on the same machine.

``--data PATH`` takes a ``.npz`` with ``x`` ``[n, H, W, C]`` floats (e.g. MNIST in [0, 1]) and
``y`` ``[n]`` int labels, used instead of the digits for Consistency/Invariance; if it also holds
``boxes`` ``[n, 4]`` (``(y0, x0, y1, x1)``, half-open pixels) it replaces the generated
localization set as well.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from tfmollify.core import modes

__all__ = [
    "FULL",
    "METRICS",
    "MODES",
    "QUICK",
    "Settings",
    "add_kernels_argument",
    "cluttered_digits",
    "main",
    "run",
]

MODES = modes.NAMES
KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect")
METRICS = ("consistency", "invariance", "localization", "sparseness")
LOWER_IS_BETTER = {"consistency": True, "invariance": False, "localization": False,
                   "sparseness": False}
ROWS = (*KERNELS, "original")
SHIFT = -1.0
TOP_K = 5

# The paper's Table 1 (section 5.2), for EXPERIMENTS.md and the printed comparison.
PAPER_TABLE1 = {
    "gaussian": [0.03234, 0.02817, 0.03070, 0.5921, 0.5031, 0.5380, 0.7040, 0.6857, 0.7085,
                 0.5200, 0.5659, 0.3276],
    "poisson": [0.03031, 0.02759, 0.02881, 0.5947, 0.5056, 0.2805, 0.6747, 0.6923, 0.6325,
                0.5075, 0.5324, 0.2596],
    "hyperbolic": [0.03214, 0.02821, 0.03082, 0.5966, 0.5030, 0.5386, 0.6917, 0.6867, 0.7050,
                   0.5195, 0.5639, 0.3268],
    "sigmoid": [0.03238, 0.02826, 0.03065, 0.5921, 0.5031, 0.5382, 0.6917, 0.6940, 0.6970,
                0.5202, 0.5645, 0.3243],
    "rect": [0.03211, 0.02814, 0.03069, 0.5972, 0.5034, 0.5392, 0.6930, 0.6950, 0.6965,
             0.5177, 0.5624, 0.3310],
    "original": [0.02811, None, None, 0.5016, None, None, 0.6405, None, None, 0.5587, None, None],
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes of one run.

    Attributes:
        num_examples: Explained examples per metric (test split; the paper uses 1000).
        num_samples: ``N`` for SG.
        num_weight_samples: ``M`` for NG and FG.
        fg_samples: ``N`` per weight draw for FG (``M x N`` evaluations).
        mlp_epochs: Training epochs of the MLP.
        cnn_epochs: Training epochs of the localization CNN.
        canvas: Side of the localization canvas in pixels (digits are 24x24).
        copies: Canvases generated per training digit.
        seed: Seed of data generation, training, randomisation and noise.
        input_range: ``(low, high)``: SG and FG draw AdaptGrad's bounded input noise
            (``Explainer(input_range=...)``, a scale per element from its distance to the
            nearer bound) instead of eq. 30 per example. Invariance explains ``x + c`` with the
            range moved by ``c`` as well. None (default): eq. 30 per example.
        kernels: The kernels scored, a subset of :data:`KERNELS` (default: all five); the
            rows and figure columns of the others stay empty.
    """

    num_examples: int = 500
    num_samples: int = 50
    num_weight_samples: int = 10
    fg_samples: int = 10
    mlp_epochs: int = 20
    cnn_epochs: int = 12
    canvas: int = 48
    copies: int = 4
    seed: int = 0
    input_range: tuple[float, float] | None = None
    kernels: tuple[str, ...] = KERNELS


FULL = Settings()
QUICK = Settings(num_examples=100, num_samples=20, num_weight_samples=8, fg_samples=4,
                 mlp_epochs=10, cnn_epochs=8, canvas=40, copies=2)


# --------------------------------------------------------------------------------------- data


def cluttered_digits(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    canvas: int = 48,
    copies: int = 1,
    fragments: int = 3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Digits pasted at random positions on cluttered canvases, with exact bounding boxes.

    Each canvas is uniform noise in [0, 0.2] with ``fragments`` 8x8 crops of other digits (at
    0.5-1 of their intensity) placed where they do not touch the box; the digit is pasted with
    ``max`` at a uniformly random position. The box is the bounding box of the pasted digit's
    nonzero pixels, so it is exact by construction.

    Args:
        images: ``[n, h, w, 1]`` digits in [0, 1] (:func:`tfmollify.evaluation.digits.digits`).
        labels: ``[n]`` labels.
        canvas: Side of the square canvas (``>= h, w``).
        copies: Canvases per digit (each at a new position and clutter).
        fragments: Distractor fragments per canvas.
        seed: Seed.

    Returns:
        ``(x [n * copies, canvas, canvas, 1] float32, y [n * copies] int32,
        boxes [n * copies, 4] int64 (y0, x0, y1, x1) half-open)``.

    Raises:
        ValueError: If the canvas is smaller than a digit or a digit is blank.
    """
    images = np.asarray(images, dtype=np.float32)
    n, h, w = images.shape[:3]
    if canvas < max(h, w):
        raise ValueError(f"Argument `canvas` must be >= the digit size {max(h, w)}. "
                         f"Received: canvas={canvas}")
    rng = np.random.default_rng(seed)
    total = n * copies
    x = rng.uniform(0.0, 0.2, size=(total, canvas, canvas, 1)).astype(np.float32)
    y = np.repeat(np.asarray(labels, dtype=np.int32), copies)
    boxes = np.zeros((total, 4), np.int64)
    for i in range(total):
        digit = images[i // copies]
        rows = np.flatnonzero(digit.max(axis=(1, 2)) > 0)
        cols = np.flatnonzero(digit.max(axis=(0, 2)) > 0)
        if rows.size == 0:
            raise ValueError(f"Argument `images`: digit {i // copies} is blank.")
        top, left = rng.integers(0, canvas - h + 1), rng.integers(0, canvas - w + 1)
        box = (top + rows[0], left + cols[0], top + rows[-1] + 1, left + cols[-1] + 1)
        for _ in range(fragments):
            for _attempt in range(50):
                fy, fx = rng.integers(0, canvas - 8 + 1, size=2)
                if fy + 8 <= box[0] or fy >= box[2] or fx + 8 <= box[1] or fx >= box[3]:
                    break
            else:
                continue
            src = images[rng.integers(n)]
            sy, sx = rng.integers(0, h - 8 + 1), rng.integers(0, w - 8 + 1)
            patch = src[sy:sy + 8, sx:sx + 8] * rng.uniform(0.5, 1.0)
            x[i, fy:fy + 8, fx:fx + 8] = np.maximum(x[i, fy:fy + 8, fx:fx + 8], patch)
        x[i, top:top + h, left:left + w] = np.maximum(x[i, top:top + h, left:left + w], digit)
        boxes[i] = box
    return x, y, boxes


def _load_data(path: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise ValueError(f"Argument `data`: {path!r} is not a file (a .npz with x, y[, boxes]).")
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    if "x" not in data or "y" not in data:
        raise ValueError(f"Argument `data`: {path!r} must hold arrays `x` [n, H, W, C] and `y` "
                         f"[n] (and optionally `boxes` [n, 4]). Found {sorted(data)}")
    x, y = data["x"], data["y"]
    if x.ndim != 4 or y.shape != (x.shape[0],):
        raise ValueError(f"Argument `data`: `x` must be [n, H, W, C] and `y` [n]. Received "
                         f"shapes {x.shape} and {y.shape}")
    data["x"] = x.astype(np.float32)
    data["y"] = y.astype(np.int32)
    if "boxes" in data and data["boxes"].shape != (x.shape[0], 4):
        raise ValueError(f"Argument `data`: `boxes` must be [n, 4]. Received "
                         f"{data['boxes'].shape}")
    return data


# ------------------------------------------------------------------------------------- models


def _compile_fit(model: Any, x: np.ndarray, y: np.ndarray, epochs: int, lr: float) -> Any:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def train_mlp(x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int) -> Any:
    """``Flatten - Dense(200, relu) - Dense(classes)`` (logits), Adam."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(x.shape[1:]),
        keras.layers.Flatten(),
        keras.layers.Dense(200, activation="relu"),
        keras.layers.Dense(int(y.max()) + 1),
    ], name="mlp")
    return _compile_fit(model, x, y, epochs, 1e-3)


def train_locator(x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int) -> Any:
    """``Conv(16)-Pool-Conv(32)-Pool-Conv(32)-GlobalMaxPool-Dense(classes)``: finds the digit
    wherever it is on the canvas."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(x.shape[1:]),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.GlobalMaxPooling2D(),
        keras.layers.Dense(int(y.max()) + 1),
    ], name="locator")
    return _compile_fit(model, x, y, epochs, 3e-3)


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float((model.predict(x, verbose=0, batch_size=256).argmax(axis=1) == y).mean())


# -------------------------------------------------------------------------------- explanations


def gradient(model: Any, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The raw gradient of the target logit ("Original")."""
    import tensorflow as tf

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        score = tf.gather(model(xt, training=False), targets, axis=1, batch_dims=1)
    return tape.gradient(score, xt).numpy()


def _explain_fn(method: str, settings: Settings) -> Callable[..., np.ndarray]:
    """``explain(model, x, targets, offset=0.0)``: ``offset`` is how far ``x`` was shifted
    (Invariance), which moves ``settings.input_range`` along with it."""
    if method == "original":
        return lambda model, x, targets, offset=0.0: gradient(model, x, targets)
    from tfmollify.explainers.explainer import Explainer

    mode, kernel = method.split("/")
    smoothing = modes.parse(mode)
    num_samples = settings.fg_samples if smoothing is modes.FG else settings.num_samples
    bounded = settings.input_range is not None and smoothing.input_noise

    def explain(model: Any, x: np.ndarray, targets: Any, offset: float = 0.0) -> np.ndarray:
        extra = {}
        if bounded:
            low, high = settings.input_range
            extra["input_range"] = (low + offset, high + offset)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the Cauchy weight-noise caveat
            explainer = Explainer(
                model, mode=mode, kernel=kernel, num_samples=num_samples,
                num_weight_samples=settings.num_weight_samples, seed=settings.seed, **extra,
            )
            return explainer(x, targets)

    return explain


def _methods(kernels: tuple[str, ...]) -> list[str]:
    return ["original"] + [f"{m}/{k}" for m in MODES for k in KERNELS if k in kernels]


# ------------------------------------------------------------------------------------- tables


def _column(metric: str, mode: str) -> str:
    return f"{metric}_{mode}"


COLUMNS = [_column(m, mode) for m in METRICS for mode in MODES]


def _cells(scores: dict[str, dict[str, np.ndarray]], reduce: Callable) -> dict[str, dict]:
    """``{row: {column: value or None}}`` in the Table 1 layout."""
    table: dict[str, dict[str, float | None]] = {}
    for row in ROWS:
        table[row] = {}
        for metric in METRICS:
            for mode in MODES:
                method = "original" if row == "original" else f"{mode}/{row}"
                keep = method in scores and (row != "original"
                                             or modes.parse(mode).only_input_noise)
                table[row][_column(metric, mode)] = (
                    reduce(scores[method][metric]) if keep else None)
    return table


def _mean(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _stderr(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else float("nan")


def best_kernels(table: dict[str, dict[str, float | None]], *, digits: int = 4
                 ) -> dict[str, list[str]]:
    """The best of the five kernels in each column (lowest Consistency, highest otherwise).

    Values are compared rounded to ``digits`` decimals, so kernels that tie at the printed
    precision are all listed.
    """
    best = {}
    for col in COLUMNS:
        metric = col.rsplit("_", 1)[0]
        values = {k: round(float(table[k][col]), digits) for k in KERNELS
                  if table[k][col] is not None and np.isfinite(table[k][col])}
        if values:
            top = (min if LOWER_IS_BETTER[metric] else max)(values.values())
            best[col] = [k for k, v in values.items() if v == top]
    return best


def _header() -> list[str]:
    arrows = {m: "↓" if LOWER_IS_BETTER[m] else "↑" for m in METRICS}
    return ["Kernel"] + [f"{m.capitalize()}{arrows[m]} {mode.upper()}"
                         for m in METRICS for mode in MODES]


def markdown_table(table: dict[str, dict[str, float | None]], *, digits: int = 4,
                   bold_best: bool = True) -> str:
    """The Table 1 layout as a Markdown table (best kernel per column in bold)."""
    best = best_kernels(table, digits=digits) if bold_best else {}
    lines = ["| " + " | ".join(_header()) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for row in ROWS:
        cells = [row.capitalize()]
        for col in COLUMNS:
            v = table[row][col]
            text = "" if v is None else f"{v:.{digits}f}"
            if row in best.get(col, ()):
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: str, table: dict[str, dict[str, float | None]]) -> None:
    """Rows: the five kernels and Original; columns: ``kernel`` then ``metric_mode``."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["kernel", *COLUMNS])
        for row in ROWS:
            w.writerow([row] + ["" if table[row][c] is None else f"{table[row][c]:.6g}"
                                for c in COLUMNS])


# ----------------------------------------------------------------------------------------- run


def _split(n: int, num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return order[num_test:], order[:num_test]


class _LocalizationSet(NamedTuple):
    """Canvases with exact digit boxes (Localization, Sparseness) and their train/test split."""

    x: np.ndarray
    y: np.ndarray
    boxes: np.ndarray
    train: np.ndarray
    test: np.ndarray
    source: str


class _Splits(NamedTuple):
    """Images and labels for Consistency and Invariance, their split, and the localization set."""

    x: np.ndarray
    y: np.ndarray
    train: np.ndarray
    test: np.ndarray
    source: str
    loc: _LocalizationSet


class _Models(NamedTuple):
    """The trained MLP, its re-initialised and bias-compensated copies, and the CNN."""

    mlp: Any
    randomized: Any
    shifted: Any
    cnn: Any
    mlp_accuracy: float
    cnn_accuracy: float


class _Examples(NamedTuple):
    """The explained test examples: digits for the MLP, canvases and box masks for the CNN."""

    x: np.ndarray
    y: np.ndarray
    loc_x: np.ndarray
    loc_y: np.ndarray
    masks: np.ndarray


class _Results(NamedTuple):
    """Per method: per-example scores, time, and the map of the figure's digit."""

    scores: dict[str, dict[str, np.ndarray]]
    timings: dict[str, float]
    figure_maps: dict[str, np.ndarray]
    figure_index: int


def _generated_localization(images: np.ndarray, labels: np.ndarray, s: Settings
                            ) -> _LocalizationSet:
    """Cluttered canvases (:func:`cluttered_digits`) from a train/test split of ``images``."""
    dtrain, dtest = _split(len(images), min(300, len(images) // 3), s.seed)
    tx, ty, tb = cluttered_digits(images[dtrain], labels[dtrain], canvas=s.canvas,
                                  copies=s.copies, seed=s.seed)
    test_copies = -(-s.num_examples // len(dtest))  # enough test canvases
    vx, vy, vb = cluttered_digits(images[dtest], labels[dtest], canvas=s.canvas,
                                  copies=test_copies, seed=s.seed + 1)
    order = np.random.default_rng(s.seed + 2).permutation(len(vx))  # mix the copies
    vx, vy, vb = vx[order], vy[order], vb[order]
    return _LocalizationSet(
        x=np.concatenate([tx, vx]),
        y=np.concatenate([ty, vy]),
        boxes=np.concatenate([tb, vb]),
        train=np.arange(len(tx)),
        test=len(tx) + np.arange(len(vx)),
        source=(f"generated: digits on {s.canvas}x{s.canvas} cluttered canvases "
                f"({len(tx)} training, {len(vx)} test)"),
    )


def _data_splits(data: str | None, s: Settings) -> _Splits:
    """Loads ``data`` (default: the digits), splits it, and takes or generates the boxes."""
    from tfmollify.evaluation import digits as digits_lib

    user = _load_data(data) if data else None
    if user is None:
        x, y = digits_lib.digits()
        source = "scikit-learn digits (1797 images, 24x24)"
    else:
        x, y = user["x"], user["y"]
        source = f"{data} ({len(x)} images, {x.shape[1]}x{x.shape[2]}x{x.shape[3]})"
    num_test = min(max(300, s.num_examples), len(x) // 3)
    if num_test < s.num_examples:
        raise ValueError(f"Settings `num_examples`={s.num_examples} needs more data: the test "
                         f"split has {num_test} examples.")
    train, test = _split(len(x), num_test, s.seed)
    if user is not None and "boxes" in user:
        loc = _LocalizationSet(x, y, user["boxes"].astype(np.int64), train, test,
                               f"{data} with its boxes")
    else:
        images, labels = (x, y) if user is None else digits_lib.digits()
        loc = _generated_localization(images, labels, s)
    return _Splits(x, y, train, test, source, loc)


def _train_models(d: _Splits, s: Settings, log: Callable[[str], None], t_start: float
                  ) -> _Models:
    """Trains the MLP and the localization CNN, logging their test accuracy."""
    from tfmollify.evaluation import metrics

    log(f"[table1] training the MLP on {len(d.train)} images ({s.mlp_epochs} epochs) ...")
    mlp = train_mlp(d.x[d.train], d.y[d.train], epochs=s.mlp_epochs, seed=s.seed)
    mlp_acc = _accuracy(mlp, d.x[d.test], d.y[d.test])
    log(f"[table1]   test accuracy {mlp_acc:.3f} ({time.perf_counter() - t_start:.0f}s)")
    loc = d.loc
    log(f"[table1] training the localization CNN on {len(loc.train)} canvases "
        f"({s.cnn_epochs} epochs) ...")
    cnn = train_locator(loc.x[loc.train], loc.y[loc.train], epochs=s.cnn_epochs, seed=s.seed)
    cnn_acc = _accuracy(cnn, loc.x[loc.test], loc.y[loc.test])
    log(f"[table1]   test accuracy {cnn_acc:.3f} ({time.perf_counter() - t_start:.0f}s)")
    randomized = metrics.randomize_model(mlp, seed=s.seed)
    shifted = metrics.shift_model(mlp, SHIFT)
    return _Models(mlp, randomized, shifted, cnn, mlp_acc, cnn_acc)


def _explained_examples(d: _Splits, s: Settings) -> _Examples:
    """The first ``num_examples`` test examples of both sets, with the box masks."""
    from tfmollify.evaluation import metrics

    xe, ye = d.x[d.test[:s.num_examples]], d.y[d.test[:s.num_examples]]
    loc = d.loc
    if len(loc.test) < s.num_examples:
        raise ValueError(f"Settings `num_examples`={s.num_examples} needs more localization data:"
                         f" the test split has {len(loc.test)} examples.")
    le = loc.test[:s.num_examples]
    masks = metrics.masks_from_boxes(loc.boxes[le], loc.x.shape[1:3])
    return _Examples(xe, ye, loc.x[le], loc.y[le], masks)


def _score_method(explain: Callable[..., np.ndarray], models: _Models,
                  ex: _Examples) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One method's per-example scores of the four metrics, and its maps of the trained MLP."""
    from tfmollify.evaluation import metrics

    # The same three explanations serve both model metrics: consistency compares a_trained
    # with a_random, invariance a_trained with a_shifted (metrics.consistency/invariance
    # compute exactly these, one call per pair).
    a_trained = explain(models.mlp, ex.x, ex.y)
    a_random = explain(models.randomized, ex.x, ex.y)
    a_shifted = explain(models.shifted, (ex.x + SHIFT).astype(np.float32), ex.y, offset=SHIFT)
    a_loc = explain(models.cnn, ex.loc_x, ex.loc_y)
    scores = {
        "consistency": 0.5 * (metrics.rank_correlation(a_trained, a_random, absolute=True)
                              + metrics.rank_correlation(a_trained, a_random)),
        "invariance": metrics.rank_correlation(a_trained, a_shifted),
        "localization": metrics.pointing_game(a_loc, ex.masks, k=TOP_K),
        "sparseness": metrics.sparseness(a_loc),
    }
    return scores, a_trained


def _score_methods(models: _Models, ex: _Examples, s: Settings, log: Callable[[str], None],
                   progress: bool | None = None) -> _Results:
    """Explains and scores the examples with every method, logging one line per method; with
    a progress bar over the methods (:func:`tfmollify.explainers.progress.bar`) when the work is
    slow."""
    from tfmollify.explainers import progress as progress_lib

    scores: dict[str, dict[str, np.ndarray]] = {}
    timings: dict[str, float] = {}
    figure_index = int(np.flatnonzero(ex.y == 0)[0]) if np.any(ex.y == 0) else 0
    figure_maps: dict[str, np.ndarray] = {}
    methods = _methods(s.kernels)
    with progress_lib.bar(len(methods), enabled=progress, unit="method") as bar:
        for i, method in enumerate(methods, 1):
            t0 = time.perf_counter()
            scores[method], a_trained = _score_method(_explain_fn(method, s), models, ex)
            figure_maps[method] = a_trained[figure_index]
            timings[method] = time.perf_counter() - t0
            summary = "  ".join(f"{m[:4]} {_mean(scores[method][m]):.3f}" for m in METRICS)
            bar.clear()  # the log line goes above the bar
            log(f"[table1] [{i:2d}/{len(methods)}] {method:<14} {summary}  "
                f"({timings[method]:.1f}s)")
            bar.update(1)
    return _Results(scores, timings, figure_maps, figure_index)


def _output_paths(out_dir: str) -> dict[str, str]:
    """Where the run's four files go: ``markdown``, ``csv``, ``scores``, ``figure``."""
    return {
        "markdown": os.path.join(out_dir, "table1.md"),
        "csv": os.path.join(out_dir, "table1.csv"),
        "scores": os.path.join(out_dir, "scores.npz"),
        "figure": os.path.join(out_dir, "fig8.png"),
    }


def _write_scores(path: str, scores: dict[str, dict[str, np.ndarray]]) -> None:
    """Every per-example score, one array per ``method_metric`` (``/`` written as ``_``)."""
    np.savez_compressed(path, **{
        f"{method.replace('/', '_')}_{metric}": v
        for method, d in scores.items() for metric, v in d.items()
    })


def _write_figure(path: str, results: _Results, ex: _Examples) -> None:
    """Fig. 8: the figure's digit, rows = modes, columns = raw gradient + five kernels."""
    from tfmollify.evaluation import plot

    maps, index = results.figure_maps, results.figure_index
    rows = [[maps["original"] if modes.parse(mode).only_input_noise else None]
            + [maps.get(f"{mode}/{k}") for k in KERNELS] for mode in MODES]
    fig = plot.grid(
        [[None if a is None else a.reshape(ex.x.shape[1:]) for a in r] for r in rows],
        row_labels=[m.upper() for m in MODES], col_labels=["gradient", *KERNELS],
        images=[ex.x[index]] * len(MODES), path=path,
        title=f"Test digit labelled {int(ex.y[index])}: raw gradient and "
              f"{len(maps) - 1} mollified gradients of the MLP",
    )
    import matplotlib.pyplot as plt

    plt.close(fig)


def _markdown_report(
    table: dict[str, dict[str, float | None]],
    errors: dict[str, dict[str, float | None]],
    *,
    s: Settings,
    d: _Splits,
    models: _Models,
    ex: _Examples,
    results: _Results,
    total: float,
) -> str:
    """``table1.md``: the table, its standard errors, the setting, timings and the figure."""
    nans = {m: {k: int(np.sum(~np.isfinite(v))) for k, v in sc.items()}
            for m, sc in results.scores.items()}
    bad = {m: c for m, c in nans.items() if any(c.values())}
    lines = [
        "# Table 1 (tfmollify reproduction)",
        "",
        "Mean over examples; best of the five kernels per column in **bold** (all of them when "
        "they tie at the printed precision; ↓ lower is better, ↑ higher is better).",
        "",
        markdown_table(table),
        "",
        "Standard error of each mean (over examples):",
        "",
        markdown_table(errors, bold_best=False),
        "",
        "## Setting",
        "",
        f"- Consistency and Invariance: MLP (Flatten-Dense(200, relu)-Dense) on {d.source}, "
        f"{len(d.train)} training images, test accuracy {models.mlp_accuracy:.3f}; "
        f"{s.num_examples} test examples, targets = true labels.",
        "  - Consistency: mean of |.| and signed Spearman correlation between the explanations "
        "of the trained MLP and of a copy with every layer re-initialised "
        f"(tfmollify.evaluation.metrics.randomize_model, seed {s.seed}).",
        f"  - Invariance: Spearman correlation between the explanations of x and of x + ({SHIFT})"
        " by the MLP whose first bias is b - W c (tfmollify.evaluation.metrics.shift_model).",
        f"- Localization and Sparseness: CNN with global max pooling on {d.loc.source}, test "
        f"accuracy {models.cnn_accuracy:.3f}; {s.num_examples} test canvases; pointing game with "
        f"k = {TOP_K} on sum_c |a_c| inside the digit's box (chance level, the mean box "
        f"area / image area: {float(ex.masks.mean()):.3f}); Gini index of |a|.",
        f"- SG: N = {s.num_samples}; NG: M = {s.num_weight_samples}, weight_epsilon = 0.2; FG: "
        f"M = {s.num_weight_samples} x N = {s.fg_samples}; "
        + ("input epsilon by eq. 30 (alpha = 0.9, r = max(x) - mean(x), per example)"
           if s.input_range is None else
           f"bounded input noise (AdaptGrad, input_range = {tuple(s.input_range)}: eq. 30 per "
           "element, alpha = 0.9, r = distance to the nearer bound; moved by c for Invariance)")
        + f"; noise seed {s.seed}.",
        f"- Settings: `{s}`.",
        f"- Total time {total:.0f}s; per method (4 explanation batches): "
        + ", ".join(f"{m} {t:.1f}s" for m, t in results.timings.items()) + ".",
    ]
    if bad:
        lines.append(f"- Non-finite scores (left out of the means): {bad}.")
    lines += ["", "![Fig. 8](fig8.png)", ""]
    return "\n".join(lines)


def run(
    out_dir: str = "table1",
    *,
    quick: bool = False,
    data: str | None = None,
    settings: Settings | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool | None = None,
) -> dict[str, str]:
    """Runs the Table 1 experiment and writes its files into ``out_dir``.

    Args:
        out_dir: Output folder (created).
        quick: Use :data:`QUICK` (about two minutes on 2 CPU cores) instead of :data:`FULL`.
        data: Optional ``.npz`` path (``x``, ``y``, optionally ``boxes``); see the module doc.
        settings: Explicit :class:`Settings` (overrides ``quick``).
        log: Where progress lines go (default: stderr).
        progress: A progress bar over the 16 methods (:func:`tfmollify.explainers.progress.bar`, on
            stdout once the scoring has lasted 3 seconds): True shows it, False prints no bar
            (and keeps the explainers' own bars off), None (default) shows it at a terminal or
            in a notebook only.

    Returns:
        Paths of the files written: ``markdown``, ``csv``, ``scores``, ``figure``.

    Raises:
        ValueError: On an unusable ``data`` file or settings.
        ImportError: Without scikit-learn or matplotlib (``pip install 'tfmollify[demo]'``).
    """
    if log is None:
        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)
    s = settings if settings is not None else (QUICK if quick else FULL)
    if s.num_examples < 2:
        raise ValueError(f"Settings `num_examples` must be >= 2. Received {s.num_examples}")
    if isinstance(s.kernels, str) or not s.kernels or any(k not in KERNELS for k in s.kernels):
        raise ValueError(f"Settings `kernels` must be a non-empty tuple of names from {KERNELS}"
                         f", e.g. ('gaussian', 'rect'). Received {s.kernels!r}")
    os.makedirs(out_dir, exist_ok=True)
    t_start = time.perf_counter()

    d = _data_splits(data, s)
    models = _train_models(d, s, log, t_start)
    ex = _explained_examples(d, s)
    results = _score_methods(models, ex, s, log, progress)
    table = _cells(results.scores, _mean)
    errors = _cells(results.scores, _stderr)
    total = time.perf_counter() - t_start

    paths = _output_paths(out_dir)
    write_csv(paths["csv"], table)
    _write_scores(paths["scores"], results.scores)
    _write_figure(paths["figure"], results, ex)
    report = _markdown_report(table, errors, s=s, d=d, models=models, ex=ex, results=results,
                              total=total)
    with open(paths["markdown"], "w") as f:
        f.write(report)
    print(markdown_table(table))
    for name, path in paths.items():
        log(f"[table1] wrote {name}: {path}")
    log(f"[table1] done in {total:.0f}s")
    return paths


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Adds the runner's options to ``parser`` (a new one when None)."""
    p = parser or argparse.ArgumentParser(
        prog="python -m tfmollify.evaluation.experiments.table1",
        description="Reproduce the layout of the paper's Table 1 on offline data.",
    )
    p.add_argument("--quick", action="store_true",
                   help="small setting for CI (about 2 minutes on 2 cores)")
    p.add_argument("--out", default="table1", help="output folder (default: %(default)s)")
    p.add_argument("--data", default=None,
                   help=".npz with x [n,H,W,C], y [n] and optionally boxes [n,4] "
                        "(default: scikit-learn digits and a generated localization set)")
    p.add_argument("--examples", type=int, default=None,
                   help="explained examples per metric (default: 500, quick: 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="SG/FG: AdaptGrad's bounded input noise within [LOW, HIGH] instead of "
                        "eq. 30 per example (default: eq. 30)")
    add_kernels_argument(p)
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: one at a terminal, for runs over 3 s)")
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The :class:`Settings` that parsed arguments ask for."""
    s = QUICK if args.quick else FULL
    changes: dict[str, Any] = {"seed": args.seed}
    if args.examples is not None:
        changes["num_examples"] = args.examples
    if getattr(args, "input_range", None) is not None:  # tfmollify table1 has no such flag
        changes["input_range"] = tuple(float(v) for v in args.input_range)
    if getattr(args, "kernels", None):
        changes["kernels"] = tuple(k.strip() for k in args.kernels.split(",") if k.strip())
    return dataclasses.replace(s, **changes)


def add_kernels_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--kernels`` option (shared by ``tfmollify table1`` and this module's runner)."""
    parser.add_argument("--kernels", default=None, metavar="K1,K2",
                        help="score only these kernels, comma-separated (default: all five: "
                             + ",".join(KERNELS) + ")")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tfmollify.evaluation.experiments.table1``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    try:
        run(args.out, data=args.data, settings=settings_from_args(args),
            progress=False if args.no_progress else None)
    except (ValueError, ImportError) as exc:
        print(f"table1: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

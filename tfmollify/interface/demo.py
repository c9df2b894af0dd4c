"""The one-command demo: a small CNN on scikit-learn's digits, explained 16 ways.

``tfmollify demo`` trains a small convolutional network in seconds on the 8x8 handwritten digits
that ship with scikit-learn (upsampled to 24x24), then explains a few test images with the raw
gradient and with every mode (SG, NG, FG) x kernel combination, and writes

* ``demo_grid.png``: per example, one row per mode and one column per kernel (like Fig. 8 of the
  paper), next to the input and the raw gradient;
* ``summary.md``: the model's accuracy, each method's time and sparseness, and the picture;
* ``attributions.npz``: every map, for further use.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from tfmollify.core import modes
from tfmollify.evaluation.digits import digits, train_cnn

__all__ = ["digits", "run", "train_cnn"]  # digits and train_cnn: from evaluation.digits

MODE_TITLES = {m.name: m.title for m in modes.MODES}
KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect")


class _Explanations(NamedTuple):
    """The explained images and targets, and every method's maps and time."""

    inputs: np.ndarray
    targets: np.ndarray
    maps: dict[str, np.ndarray]
    timings: dict[str, float]


def _train_on_split(x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int,
                    log: Callable[[str], None], t0: float) -> tuple[Any, np.ndarray, float]:
    """Holds out 300 test digits, trains the CNN on the rest; returns model, test ids, accuracy."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    test, train = order[:300], order[300:]
    log(f"training a small CNN on {len(train)} digits ({epochs} epochs) ...")
    model = train_cnn(x[train], y[train], epochs=epochs, seed=seed)
    logits = model.predict(x[test], verbose=0)
    accuracy = float((logits.argmax(axis=1) == y[test]).mean())
    log(f"  test accuracy {accuracy:.3f} ({time.perf_counter() - t0:.1f}s)")
    return model, test, accuracy


def _pick_examples(test: np.ndarray, y: np.ndarray, num_examples: int) -> np.ndarray:
    """The first ``num_examples`` test images of distinct classes (a more telling picture)."""
    pick, seen = [], set()
    for i in test:
        if int(y[i]) not in seen:
            pick.append(i)
            seen.add(int(y[i]))
        if len(pick) == num_examples:
            break
    return np.asarray(pick)


def _explain_all(model: Any, xs: np.ndarray, ts: np.ndarray, *, num_samples: int,
                 num_weight_samples: int, seed: int, log: Callable[[str], None],
                 progress: bool | None = None) -> _Explanations:
    """The raw gradient and every mode x kernel explanation of ``xs``, each timed; with a
    progress bar over the 15 methods (:func:`tfmollify.explainers.progress.bar`) when the work is
    slow."""
    import tensorflow as tf

    from tfmollify.explainers import progress as progress_lib
    from tfmollify.explainers.explainer import Explainer

    results: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    xt = tf.constant(xs)
    start = time.perf_counter()
    with tf.GradientTape() as tape:
        tape.watch(xt)
        score = tf.gather(model(xt, training=False), ts, axis=1, batch_dims=1)
    results["gradient"] = tape.gradient(score, xt).numpy()
    timings["gradient"] = time.perf_counter() - start

    combos = [(m, k) for m in modes.MODES for k in KERNELS]
    with progress_lib.bar(len(combos), enabled=progress, unit="method") as bar:
        for i, (smoothing, kernel) in enumerate(combos, 1):
            mode = smoothing.name
            n = num_samples if not smoothing.weight_noise else max(1, num_samples // 5)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # the Cauchy weight-noise caveat
                explainer = Explainer(
                    model, mode=mode, kernel=kernel, num_samples=n,
                    num_weight_samples=num_weight_samples, seed=seed,
                )
                results[f"{mode}/{kernel}"] = explainer(xs, ts)
            timings[f"{mode}/{kernel}"] = time.perf_counter() - start
            bar.clear()  # the log line goes above the bar
            log(f"  [{i:2d}/{len(combos)}] {smoothing.title:<10} {kernel:<10} "
                f"{timings[f'{mode}/{kernel}']:.2f}s")
            bar.update(1)
    return _Explanations(xs, ts, results, timings)


def _write_grid(path: str, ex: _Explanations) -> None:
    """``demo_grid.png``: per example one row per mode, columns = raw gradient + kernels."""
    from tfmollify.evaluation import plot

    rows, labels, images = [], [], []
    for b in range(len(ex.inputs)):
        for row, mode in enumerate(modes.NAMES):  # the raw gradient in each example's first row
            first = ex.maps["gradient"][b] if row == 0 else None
            rows.append([first] + [ex.maps[f"{mode}/{k}"][b] for k in KERNELS])
            labels.append(f"#{b} ({ex.targets[b]}) {mode.upper()}")
            images.append(ex.inputs[b])
    fig = plot.grid(
        rows, row_labels=labels, col_labels=["gradient", *KERNELS], images=images,
        path=path,
        title="Raw gradient and 15 mollified gradients (rows: mode, columns: kernel)",
    )
    import matplotlib.pyplot as plt

    plt.close(fig)


def _write_summary(path: str, ex: _Explanations, *, accuracy: float, num_samples: int,
                   num_weight_samples: int, t0: float) -> None:
    """``summary.md``: accuracy, settings, the picture, each method's time and sparseness."""
    from tfmollify.evaluation import metrics

    lines = [
        "# tfmollify demo",
        "",
        f"Model: small CNN on scikit-learn digits (24x24), test accuracy {accuracy:.3f}.",
        f"Explained {len(ex.inputs)} test images (targets = true labels {ex.targets.tolist()}); "
        f"SG N={num_samples}, NG M={num_weight_samples}, "
        f"FG M={num_weight_samples} x N={max(1, num_samples // 5)}; epsilon by eq. 30 "
        "(alpha=0.9, r = max(x) - mean(x)); weight_epsilon=0.2.",
        "",
        "![grid](demo_grid.png)",
        "",
        "| method | time (s) | sparseness (Gini, higher = sparser) |",
        "|---|---:|---:|",
    ]
    for name, value in ex.maps.items():
        gini = float(np.mean(metrics.sparseness(value)))
        lines.append(f"| {name} | {ex.timings[name]:.2f} | {gini:.3f} |")
    lines.append("")
    lines.append(f"Total time {time.perf_counter() - t0:.1f}s.")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def run(
    out_dir: str = "tfmollify-demo",
    *,
    num_examples: int = 3,
    num_samples: int = 50,
    num_weight_samples: int = 10,
    epochs: int = 6,
    seed: int = 0,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
) -> dict[str, str]:
    """Runs the demo and writes its files into ``out_dir``.

    Args:
        out_dir: Output folder (created).
        num_examples: Test images to explain.
        num_samples: Input-noise draws ``N`` for SG (FG uses ``max(1, N // 5)`` per weight draw).
        num_weight_samples: Weight draws ``M`` for NG and FG.
        epochs: Training epochs.
        seed: Seed for training and noise.
        log: Where progress lines go.
        progress: A progress bar over the 15 methods (:func:`tfmollify.explainers.progress.bar`, on
            stdout once the explaining has lasted 3 seconds): True shows it, False prints no
            bar (and keeps the explainers' own bars off), None (default) shows it at a
            terminal or in a notebook only.

    Returns:
        Paths of the files written (``grid``, ``summary``, ``arrays``).
    """
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    x, y = digits()
    model, test, accuracy = _train_on_split(x, y, epochs=epochs, seed=seed, log=log, t0=t0)
    pick = _pick_examples(test, y, num_examples)
    ex = _explain_all(model, x[pick], y[pick], num_samples=num_samples,
                      num_weight_samples=num_weight_samples, seed=seed, log=log,
                      progress=progress)

    grid_path = os.path.join(out_dir, "demo_grid.png")
    _write_grid(grid_path, ex)
    arrays_path = os.path.join(out_dir, "attributions.npz")
    np.savez_compressed(arrays_path, inputs=ex.inputs, targets=ex.targets,
                        **{k.replace("/", "_"): v for k, v in ex.maps.items()})
    summary_path = os.path.join(out_dir, "summary.md")
    _write_summary(summary_path, ex, accuracy=accuracy, num_samples=num_samples,
                   num_weight_samples=num_weight_samples, t0=t0)
    log(f"wrote {grid_path}")
    log(f"wrote {summary_path}")
    log(f"wrote {arrays_path}")
    return {"grid": grid_path, "summary": summary_path, "arrays": arrays_path}

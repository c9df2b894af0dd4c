"""What does a draw of tfmollify.testing.strategies cost, with its explainer's first call?

Issue 30 asks that a draw cost at most 2 s (median, tracing included) on a CPU. For each
strategy this times, per Hypothesis example, the draw and what a test then does with it once:

* ``explanation_cases[kind]``: draw a case of that model kind (build the model, set its
  weights, draw settings, inputs and targets, make the explainer), then its first
  ``explain(..., return_stderr=True)``, which traces the explainer's graph;
* ``explainer_settings``: draw settings, make an explainer of a fixed small dense model, first
  call;
* ``kernels + epsilons``: draw a kernel and an eq. 30 scale, make a SmoothGrad explainer of the
  fixed model with them, first call;
* ``models + inputs_and_targets``: draw a model of any kind and its inputs, one forward pass.

Examples come from Hypothesis' generate phase only (no shrinking), ``--examples`` per row,
derandomized (the same draws on every run), after one untimed warm-up explanation (TensorFlow's
own first-use costs). Reported: median, 90th percentile and maximum seconds per example.

    python bench/testing_strategies.py [--examples 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import tfmollify as tfm
from tfmollify.testing import strategies as tst

FIXED = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="tanh"),
                          keras.layers.Dense(3)])
X = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
TARGETS = np.array([0, 2], np.int32)


def case_step(kind: str) -> Callable[[Any], None]:
    def step(data: Any) -> None:
        explainer, inputs, targets = data.draw(tst.explanation_cases(kinds=(kind,)))
        explainer.explain(inputs, targets, return_stderr=True)

    return step


def settings_step(data: Any) -> None:
    kw = data.draw(tst.explainer_settings())
    tfm.Explainer(FIXED, **kw).explain(X, TARGETS, return_stderr=True)


def kernel_step(data: Any) -> None:
    kernel = data.draw(tst.kernels())
    epsilon = data.draw(tst.epsilons(kernel))
    explainer = tfm.Explainer(FIXED, kernel=kernel, epsilon=epsilon, num_samples=8, seed=0)
    explainer.explain(X, TARGETS, return_stderr=True)


def model_step(data: Any) -> None:
    model = data.draw(tst.models())
    inputs, _ = data.draw(tst.inputs_and_targets(model))
    model(inputs)


def measure(step: Callable[[Any], None], examples: int) -> list[float]:
    """Seconds per example of ``step`` (draws included), over ``examples`` generated examples."""
    times: list[float] = []

    @settings(max_examples=examples, phases=(Phase.generate,), derandomize=True,
              database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data: Any) -> None:
        start = time.perf_counter()
        step(data)
        times.append(time.perf_counter() - start)

    run()
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=30, help="Hypothesis examples per row")
    p.add_argument("--json", default=None, help="also write the raw times here")
    args = p.parse_args()
    warnings.simplefilter("ignore")  # Poisson weight noise warns; retracing notices
    tfm.Explainer(FIXED, num_samples=4, seed=0).explain(X, TARGETS)  # warm-up, untimed
    rows = {f"explanation_cases[{k}]": case_step(k) for k in tst.MODEL_KINDS}
    rows.update({"explainer_settings": settings_step, "kernels + epsilons": kernel_step,
                 "models + inputs_and_targets": model_step})
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{platform.processor() or platform.machine()}, {cores} cores, TensorFlow threads: "
          f"{os.environ.get('TF_NUM_INTRAOP_THREADS', 'default')}; {args.examples} examples "
          "per row, seconds per example (draw + first call, tracing included)\n")
    print("| strategy | median s | p90 s | max s |\n|---|---|---|---|")
    results = {}
    for name, step in rows.items():
        times = measure(step, args.examples)
        results[name] = times
        p90 = float(np.quantile(times, 0.9))
        print(f"| {name} | {statistics.median(times):.2f} | {p90:.2f} | {max(times):.2f} |",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"examples": args.examples, "cores": cores, "times": results}, f,
                      indent=1)


if __name__ == "__main__":
    main()

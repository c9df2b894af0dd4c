"""What does a sampler cost per call? SmoothGrad wall time of each sampler relative to i.i.d.

The samplers evaluate the same number of gradients; they differ in how the noise is drawn
(antithetic: half the uniforms, a reflection; Sobol: XOR-built points plus per-replicate shift
bits, and a unit-wise merge). Times the three explainers interleaved (the machines are shared
and noisy) after a warm-up call, and reports medians and ratios to ``iid``. Multiply a sampler's
evaluation gain (``bench/rmse_vs_n.py``) by ``1 / ratio`` for its wall-time gain.

    python bench/sampler_cost.py [-B 8] [-N 64] [--repeats 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import tfmollify as tfm

SAMPLERS = ("iid", "antithetic", "sobol")


def models() -> list[tuple[str, keras.Model, tuple[int, ...]]]:
    keras.utils.set_random_seed(0)
    mlp = keras.Sequential([
        keras.Input((784,)), keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(10),
    ])
    lenet = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(6, 5, activation="relu"),
        keras.layers.MaxPooling2D(), keras.layers.Conv2D(16, 5, activation="relu"),
        keras.layers.MaxPooling2D(), keras.layers.Flatten(),
        keras.layers.Dense(120, activation="relu"), keras.layers.Dense(84, activation="relu"),
        keras.layers.Dense(10),
    ])
    cnn224 = keras.Sequential([
        keras.Input((224, 224, 3)), keras.layers.Conv2D(16, 7, strides=4, activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10),
    ])
    return [("MLP 784-256-10", mlp, (784,)), ("LeNet 28x28", lenet, (28, 28, 1)),
            ("ReLU CNN 224x224x3", cnn224, (224, 224, 3))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-B", type=int, default=8)
    p.add_argument("-N", type=int, default=64)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = []
    print(f"SmoothGrad, B = {args.B}, N = {args.N}, median of {args.repeats} interleaved calls\n")
    print("| model | iid ms | antithetic / iid | sobol / iid |\n|---|---|---|---|")
    for name, model, shape in models():
        b = args.B if shape[0] != 224 else 2
        x = np.random.default_rng(0).uniform(size=(b, *shape)).astype("float32")
        t = np.arange(b) % 10
        batch_size = None if shape[0] != 224 else 64
        ex = {s: tfm.SmoothGrad(model, num_samples=args.N, sampler=s, seed=0,
                                batch_size=batch_size) for s in SAMPLERS}
        times: dict[str, list[float]] = {s: [] for s in SAMPLERS}
        for e in ex.values():
            e(x, t)  # trace
        for _ in range(args.repeats):
            for s, e in ex.items():
                t0 = time.perf_counter()
                e(x, t)
                times[s].append(time.perf_counter() - t0)
        med = {s: float(np.median(v)) for s, v in times.items()}
        row = {"model": name, "B": b, "N": args.N, "median_s": med,
               "ratio": {s: med[s] / med["iid"] for s in SAMPLERS}}
        rows.append(row)
        print(f"| {name} (B={b}) | {1e3 * med['iid']:.1f} | {row['ratio']['antithetic']:.2f} | "
              f"{row['ratio']['sobol']:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

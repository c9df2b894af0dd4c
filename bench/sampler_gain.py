"""How much does antithetic sampling buy? Variance of i.i.d. over antithetic at the same N.

For each model, mode and eq. 30 ``alpha``, explains the same 8 inputs with ``sampler="iid"`` and
``sampler="antithetic"`` and reports the ratio of their mean squared standard errors (the
engine's Monte Carlo standard errors, over the elements of all examples): the factor by which
antithetic sampling cuts the number of gradient evaluations for the same accuracy (> 1: better).

    python bench/sampler_gain.py [-N 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import tfmollify as tfm


def models() -> list[tuple[str, keras.Model, np.ndarray]]:
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    smooth = keras.Sequential([
        keras.Input((64,)), keras.layers.Dense(64, activation="tanh"),
        keras.layers.Dense(64, activation="tanh"), keras.layers.Dense(10),
    ])
    relu = keras.Sequential([
        keras.Input((16, 16, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    return [
        ("tanh MLP 64-64-64-10", smooth, rng.uniform(size=(8, 64)).astype("float32")),
        ("ReLU CNN 16x16", relu, rng.uniform(size=(8, 16, 16, 1)).astype("float32")),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-N", type=int, default=200, help="draws per example (N for sg, M for ng)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    rows = []
    print(f"Variance ratio i.i.d. / antithetic at N = M = {args.N} (> 1: antithetic better)\n")
    print("| model | mode | eq. 30 alpha (smaller: wider noise) | ratio |")
    print("|---|---|---|---|")
    for name, model, x in models():
        for mode in ("sg", "ng"):
            # eq. 30: a smaller alpha puts less mass inside [-r, r], i.e. wider noise
            for alpha in (0.3, 0.9, 0.99) if mode == "sg" else (0.9,):
                var = {}
                for sampler in ("iid", "antithetic"):
                    e = tfm.Explainer(model, mode=mode, num_samples=args.N,
                                      num_weight_samples=args.N, alpha=alpha, sampler=sampler,
                                      seed=0)
                    _, se = e.explain(x, np.arange(len(x)) % 10, return_stderr=True)
                    var[sampler] = float(np.mean(np.square(se)))
                ratio = var["iid"] / var["antithetic"]
                rows.append({"model": name, "mode": mode, "alpha": alpha, "ratio": ratio, **var})
                alpha_txt = alpha if mode == "sg" else "- (weight_epsilon 0.2)"
                print(f"| {name} | {mode} | {alpha_txt} | {ratio:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"N": args.N, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

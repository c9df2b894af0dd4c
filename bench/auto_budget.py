"""The speed cost of the default ``batch_size="auto"`` (#31's budget: 1 GiB of what a pass holds)
against one unbounded pass (``batch_size=None``), on the cases where the bound binds.

Cases: ``conv128`` (#31's memory case: one ``Conv2D(16)`` on 128 x 128 x 3, 4 images,
integrated gradients with 16 steps, N = 50) and ``mobilenetv2`` (224 x 224, SmoothGrad, B = 1,
N = 50). Both explainers are built in ONE process with the same seed and called alternately
(ABBA) after one first call each; reported: the bound, rows per pass, median seconds, and the
ratio of the medians.

    python bench/auto_budget.py --cases conv128,mobilenetv2 --repeats 4
"""

from __future__ import annotations

import argparse
import sys
import time

import harness  # must come first: sets the TF logging environment
import keras
import numpy as np

import tfmollify as tfm


def case(name: str):
    keras.utils.set_random_seed(0)
    if name == "conv128":
        model = keras.Sequential([
            keras.Input((128, 128, 3)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10),
        ])
        x = np.random.default_rng(0).random((4, 128, 128, 3), dtype=np.float32)
        kw = dict(attribution="integrated_gradients", ig_steps=16, num_samples=50)
        return model, x, [0, 1, 2, 3], kw
    model = harness.build_model("mobilenetv2")
    x = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    return model, x, [1], dict(num_samples=50)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="conv128,mobilenetv2")
    ap.add_argument("--repeats", type=int, default=4)
    args = ap.parse_args()
    print("| case | bound (rows per pass) | auto median s | None median s | auto / None |")
    print("|---|---|---|---|---|")
    for name in args.cases.split(","):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        model, x, t, kw = case(name)
        auto = tfm.Explainer(model, seed=0, **kw)
        none = tfm.Explainer(model, seed=0, batch_size=None, **kw)
        auto.explain(x, t)
        none.explain(x, t)
        times = {"auto": [], "none": []}
        for r in range(args.repeats):
            order = ("auto", "none") if r % 2 == 0 else ("none", "auto")
            for k in order:
                e = auto if k == "auto" else none
                start = time.perf_counter()
                e.explain(x, t)
                times[k].append(time.perf_counter() - start)
        a, n = float(np.median(times["auto"])), float(np.median(times["none"]))
        rows = auto.seam.plan(len(x)).rows_per_pass
        print(f"| {name} | {auto.seam.plan(len(x)).block} examples, {rows} rows | {a:.2f} | "
              f"{n:.2f} | {a / n:.2f} |")


if __name__ == "__main__":
    main()

"""NoiseGrad / FusionGrad with several weight draws per pass against one draw per pass (#31).

For each case, three things run in ONE process, interleaved round-robin (the starting one
rotates), so machine noise hits them alike:

* ``passes``: ``M`` single compiled gradient passes of the same model, one after the other,
  each over one example (NG) or ``N`` rows (FG): the reference every ratio divides by;
* ``one_draw``: ``tfm.Explainer(..., weight_draws_per_pass=1)``: one weight draw per pass;
* ``batched``: ``tfm.Explainer(...)`` with the default ``weight_draws_per_pass="auto"``.

Every ratio is an explanation's median time over the median time of ``passes``; ``speedup`` is
``one_draw / batched``. Before timing, the two explainers are checked to agree
(``rtol=1e-5, atol=1e-5 max|one_draw|``).

Example::

    python bench/weight_draws.py --cases lenet_ng_B1,lenet_fg_B1 --repeats 9
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import harness  # must come first: sets the TF logging environment
import numpy as np
import tensorflow as tf

import tfmollify as tfm

CASES = {
    # name: (model, mode, B, M, N)
    "lenet_ng_B1": ("lenet", "ng", 1, 10, 1),
    "lenet_fg_B1": ("lenet", "fg", 1, 10, 10),
    "lenet_ng_B8": ("lenet", "ng", 8, 10, 1),
    "lenet_fg_B8": ("lenet", "fg", 8, 10, 10),
    "resnet50_64_ng_B1": ("resnet50_64", "ng", 1, 10, 1),
}


def build(name: str):
    if name == "resnet50_64":
        import keras

        keras.utils.set_random_seed(0)
        return keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3),
                                           classifier_activation=None)
    return harness.build_model(name)


def gradient_passes(model, x, target, m: int, rows: int):
    """``m`` compiled gradient passes over ``rows`` copies of one example."""
    xs = tf.constant(np.repeat(x[:1], rows, axis=0))
    t = tf.constant(np.full(rows, target, np.int32))

    @tf.function
    def grad(xn, tn):
        with tf.GradientTape() as tape:
            tape.watch(xn)
            s = tf.gather(model(xn, training=False), tn, axis=1, batch_dims=1)
        return tape.gradient(s, xn)

    def run():
        out = None
        for _ in range(m):
            out = grad(xs, t)
        return out.numpy()

    return run


def case(name: str, repeats: int) -> dict:
    model_name, mode, b, m, n = CASES[name]
    model = build(model_name)
    shape = tuple(model.inputs[0].shape[1:])
    x, t = harness.make_inputs(shape, b, harness.num_classes_of(model))
    kw = dict(mode=mode, num_weight_samples=m, seed=0)
    if mode == "fg":
        kw["num_samples"] = n
    one = tfm.Explainer(model, weight_draws_per_pass=1, **kw)
    batched = tfm.Explainer(model, **kw)
    r1, rk = one.explain_full(x, t), batched.explain_full(x, t)
    a1, ak = np.asarray(r1.attributions), np.asarray(rk.attributions)
    agree = bool(np.allclose(ak, a1, rtol=1e-5, atol=1e-5 * np.abs(a1).max()))
    methods = {
        "passes": gradient_passes(model, x, int(t[0]), m * b, n),
        "one_draw": lambda: one.explain(x, t),
        "batched": lambda: batched.explain(x, t),
    }
    for f in methods.values():
        f()  # warm-up: tracing
    times = {k: [] for k in methods}
    names = list(methods)
    for r in range(repeats):
        for i in range(len(names)):
            k = names[(i + r) % len(names)]
            start = time.perf_counter()
            methods[k]()
            times[k].append(time.perf_counter() - start)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "case": name, "model": model_name, "mode": mode, "B": b, "M": m, "N": n,
        "draws_per_pass": rk.weight_draws_per_pass, "agree": agree,
        "median_ms": {k: 1e3 * v for k, v in med.items()},
        "one_draw_ratio": med["one_draw"] / med["passes"],
        "batched_ratio": med["batched"] / med["passes"],
        "speedup": med["one_draw"] / med["batched"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="lenet_ng_B1,lenet_fg_B1,lenet_ng_B8,lenet_fg_B8")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for name in args.cases.split(","):
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows.append(case(name, args.repeats))
    print("| case | K | agree | passes ms | one draw ms (ratio) | batched ms (ratio) | speedup |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ms = r["median_ms"]
        print(f"| {r['case']} | {r['draws_per_pass']} | {r['agree']} | {ms['passes']:.1f} | "
              f"{ms['one_draw']:.1f} ({r['one_draw_ratio']:.2f}x) | {ms['batched']:.1f} "
              f"({r['batched_ratio']:.2f}x) | {r['speedup']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"versions": harness.versions(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

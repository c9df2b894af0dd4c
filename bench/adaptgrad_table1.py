"""Does AdaptGrad's bounded noise (``input_range``) change the Table 1 metrics on the digits?

Trains the Table 1 models once (:mod:`tfmollify.evaluation.experiments.table1`: the MLP on
scikit-learn's
digits for Consistency/Invariance, the CNN on cluttered canvases for Localization/Sparseness),
then scores each chosen SG/FG method twice on the same examples with the same noise seed:

* ``eq30``: the default, one scale per example from eq. 30 (alpha 0.9, r = max(x) - mean(x));
* ``range``: ``input_range=(low, high)``, one scale per element (eq. 30 with r = the element's
  distance to the nearer bound); for Invariance the range moves with the shift (``x - 1`` lives
  in ``(low - 1, high - 1)``).

Both data sets lie in [0, 1] (the digits are clipped there, the canvases are noise in [0, 0.2]
under digits in [0, 1]), so ``(0, 1)`` is their real range; the script prints the observed
min/max. Per metric it reports both means and the *paired* difference (range - eq30) with its
standard error over examples, which contains the Monte Carlo noise of both explanations (each
example has its own noise draws). NG has no input noise and is unchanged by construction;
``original`` (the raw gradient) may be listed in ``--methods`` for comparison.

    python bench/adaptgrad_table1.py [--examples 300] [--methods sg/gaussian,...] \\
        [--json bench/results/adaptgrad_table1.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DEFAULT_METHODS = ("sg/gaussian", "sg/poisson", "sg/hyperbolic", "sg/sigmoid", "sg/rect",
                   "fg/gaussian", "fg/rect")


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, int]:
    """Mean of ``b - a`` over examples where both are finite, its standard error, the count."""
    ok = np.isfinite(a) & np.isfinite(b)
    d = b[ok] - a[ok]
    se = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(d.mean()), se, int(d.size)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=300)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--low", type=float, default=0.0)
    p.add_argument("--high", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from tfmollify.evaluation.experiments import table1

    t0 = time.perf_counter()
    base = dataclasses.replace(table1.FULL, num_examples=args.examples, seed=args.seed)
    bounded = dataclasses.replace(base, input_range=(args.low, args.high))
    d = table1._data_splits(None, base)
    models = table1._train_models(d, base, print, t0)
    ex = table1._explained_examples(d, base)
    for name, arr in (("digits", ex.x), ("canvases", ex.loc_x)):
        print(f"{name}: min {arr.min():.4f} max {arr.max():.4f}")
    rows = []
    for method in args.methods.split(","):
        out = {}
        for label, s in (("eq30", base), ("range", bounded)):
            t = time.perf_counter()
            out[label], _ = table1._score_method(table1._explain_fn(method, s), models, ex)
            print(f"{method} {label}: " + "  ".join(
                f"{m[:4]} {np.nanmean(out[label][m]):.4f}" for m in table1.METRICS)
                + f"  ({time.perf_counter() - t:.0f}s)", flush=True)
        for metric in table1.METRICS:
            a, b = out["eq30"][metric], out["range"][metric]
            diff, se, n = _paired(a, b)
            rows.append({"method": method, "metric": metric, "eq30": float(np.nanmean(a)),
                         "range": float(np.nanmean(b)), "diff": diff, "se": se, "n": n})
    print()
    print("| method | metric | eq. 30 | input_range | range - eq. 30 (± s.e.) | z |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        z = r["diff"] / r["se"] if r["se"] > 0 else float("nan")
        print(f"| {r['method']} | {r['metric']} | {r['eq30']:.4f} | {r['range']:.4f} | "
              f"{r['diff']:+.4f} ± {r['se']:.4f} | {z:+.1f} |")
    total = time.perf_counter() - t0
    print(f"\nmodels: MLP test accuracy {models.mlp_accuracy:.3f}, CNN {models.cnn_accuracy:.3f}; "
          f"{args.examples} examples; settings {bounded}; {total:.0f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": dataclasses.asdict(bounded), "rows": rows,
                       "mlp_accuracy": models.mlp_accuracy, "cnn_accuracy": models.cnn_accuracy,
                       "seconds": total}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

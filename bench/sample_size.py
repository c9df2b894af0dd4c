"""How many samples? The Monte Carlo error of SmoothGrad vs N, per kernel, on the demo CNN.

For each kernel and N, explains the same test digits with ``return_stderr=True`` and reports the
relative error ``||stderr|| / ||attribution||`` (norms over all elements of an example, averaged
over examples): the size of the Monte Carlo noise left in the map. It falls as ``1/sqrt(N)``.

    python bench/sample_size.py [--examples 8] [--ns 10,50,200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

import tfmollify as tfm
from tfmollify.interface import demo


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", type=int, default=8)
    p.add_argument("--ns", default="10,50,200")
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    ns = [int(v) for v in args.ns.split(",")]

    x, y = demo.digits()
    order = np.random.default_rng(0).permutation(len(x))
    test, train = order[:300], order[300:]
    model = demo.train_cnn(x[train], y[train])
    xs, ts = x[test[: args.examples]], y[test[: args.examples]]

    rows = []
    for mode in ("sg", "fg"):
        for kernel in demo.KERNELS:
            row = {"mode": mode, "kernel": kernel}
            for n in ns:
                kw = dict(num_samples=n) if mode == "sg" else dict(
                    num_samples=max(1, n // 10), num_weight_samples=10)
                e = tfm.Explainer(model, mode=mode, kernel=kernel, alpha=args.alpha, seed=0,
                                  **kw)
                start = time.perf_counter()
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    a, se = e.explain(xs, ts, return_stderr=True)
                flat_a = a.reshape(len(xs), -1)
                flat_se = se.reshape(len(xs), -1)
                rel = np.linalg.norm(flat_se, axis=1) / np.linalg.norm(flat_a, axis=1)
                row[f"N={n}"] = float(rel.mean())
                row[f"t{n}"] = time.perf_counter() - start
            rows.append(row)
            print(row, flush=True)

    header = "| mode | kernel | " + " | ".join(f"N={n}" for n in ns) + " |"
    print("\nrelative Monte Carlo error ||stderr|| / ||attribution|| (FG: N = M x N/M, M = 10)")
    print(header)
    print("|---|---|" + "---:|" * len(ns))
    for r in rows:
        vals = " | ".join(f"{r[f'N={n}']:.3f}" for n in ns)
        print(f"| {r['mode']} | {r['kernel']} | {vals} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ns": ns, "alpha": args.alpha, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()

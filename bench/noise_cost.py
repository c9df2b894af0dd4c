"""What does tfmollify's input noise cost, next to the floor's ``tf.random.stateless_normal``?

Times, inside one ``tf.function`` each and interleaved, the noise of one SmoothGrad call
(``B x N`` draws of ``D`` values) drawn the way the floor draws it and the way tfmollify does:

* ``floor_normal``: ``tf.random.stateless_normal`` over ``[B*N, D]`` (Box-Muller, one stream);
* ``one_stream_uniform``: Philox uniforms on (0, 1) for ``[B*N, D]`` from one key;
* ``per_example_uniform``: the same from one key per example (``sampling.example_uniforms``,
  what makes an example's noise independent of its batch);
* ``per_example_<kernel>``: plus the kernel's inverse CDF (what the engine draws);
* ``antithetic_gaussian``, ``sobol_gaussian``: the Gaussian noise of ``sampler="antithetic"``
  and of ``sampler="sobol"`` (default replicates).

Keys come from a tensor argument, so nothing is constant-folded. Reports medians and ratios to
``floor_normal``.

    python bench/noise_cost.py [-B 8] [-N 50] [-D 784] [--repeats 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

from tfmollify.core import kernels, sampling


def build(b: int, n: int, d: int) -> dict:
    def reduce(z: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(z[..., :1])  # touch the result without timing a full reduction

    fns = {
        "floor_normal": lambda s: reduce(
            tf.random.stateless_normal([b * n, d], tf.cast(s[:2], tf.int32))
        ),
        "one_stream_uniform": lambda s: reduce(
            sampling.stream_uniforms(sampling.example_keys(s)[0], 0, b * n, d, 1, tf.float32)
        ),
        "per_example_uniform": lambda s: reduce(
            sampling.example_uniforms(sampling.example_keys(s), 0, n, d, tf.float32)
        ),
    }
    for name in kernels.names():
        k = kernels.get(name)
        fns[f"per_example_{name}"] = lambda s, k=k: reduce(
            k.icdf(sampling.example_uniforms(sampling.example_keys(s), 0, n, d, tf.float32))
        )
    gauss = kernels.get("gaussian")
    fns["antithetic_gaussian"] = lambda s: reduce(
        gauss.icdf(sampling.antithetic_uniforms(sampling.example_keys(s), 0, n, d, tf.float32))
    )
    layout = sampling.Sobol(n // _replicates(n), d)  # the default Sobol replicates
    fns["sobol_gaussian"] = lambda s: reduce(
        gauss.icdf(sampling.sobol_uniforms(sampling.example_keys(s), 0, n, d, tf.float32, layout))
    )
    return {name: tf.function(fn) for name, fn in fns.items()}


def _replicates(n: int) -> int:
    """The explainer's default number of Sobol replicates for ``n`` draws."""
    return next(r for r in range(min(4, n), n + 1) if n % r == 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-B", type=int, default=8)
    p.add_argument("-N", type=int, default=50)
    p.add_argument("-D", type=int, default=784)
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    fns = build(args.B, args.N, args.D)
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for name in names:  # trace and warm up
        for i in range(3):
            fns[name](tf.constant(np.arange(args.B, dtype=np.int64) + i)).numpy()
    for r in range(args.repeats):
        seeds = tf.constant(np.arange(args.B, dtype=np.int64) + 1000 * r)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            fns[name](seeds).numpy()
            times[name].append(time.perf_counter() - start)
    ref = float(np.median(times["floor_normal"]))
    rows = []
    print(f"Noise of one SG call: B={args.B}, N={args.N}, D={args.D} "
          f"({args.B * args.N * args.D} values), {args.repeats} interleaved repeats\n")
    print("| noise | median (ms) | IQR (ms) | x floor_normal |")
    print("|---|---|---|---|")
    for name in names:
        t = np.asarray(times[name]) * 1e3
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        rows.append({"name": name, "median_ms": med, "q1_ms": q1, "q3_ms": q3})
        print(f"| {name} | {med:.3f} | {q1:.3f}-{q3:.3f} | {med / (ref * 1e3):.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": vars(args), "tensorflow": tf.__version__, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()

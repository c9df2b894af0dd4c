"""First-call latency of a new explainer against the floor's first call, and where it goes.

Every measurement runs in a FRESH process (``--worker``): the import of TensorFlow and the
building of the model happen before the clock starts, in both; what is timed is what a
notebook cell or a CLI run pays after that.

* ``floor``: :func:`harness.make_floor` (one ``tf.function``, one batched gradient over all
  ``B*N`` noisy copies): its trace (``get_concrete_function``) and its first run, then a second
  call (the steady cost).
* ``explainer``: ``tfm.SmoothGrad(model, ...)`` then ``explainer(x, targets)``. The library's
  steps are timed from outside, by wrapping (in the worker process only) the methods that do
  them with ``time.perf_counter``: ``Spec.create`` and ``ModelView.__init__`` (construction),
  ``Runner.prepare`` with inside it ``ModelView.probe`` (the eager probe on one example),
  ``Runner.shapes``, ``request.epsilons``, ``Runner._function`` (the trace of the core:
  ``engine.build(...).get_concrete_function()``, with ``engine.build`` alone beside it),
  ``Runner.weight_noise``; then ``Runner.run`` (the first run of the traced core). A second
  call gives the steady cost; the node count of the traced graph (its function library
  included) is compared with the floor's.
* ``explainer_noag``: the same with ``autograph=False`` for the ``tf.function`` of the core
  (``tf.function`` patched during ``Runner._function`` only): what autograph's conversion of
  the core costs at trace time, with the results compared to ``explainer``'s.

``--repeats`` fresh processes per method, alternating the methods; reported are medians and
the spread (min-max) of every step.

Example::

    python bench/first_call.py --models lenet,resnet50@64 -B 8 -N 50 --repeats 3 \\
        --json bench/results/first_call.json
    python bench/first_call.py --summarize run1.json,run2.json    # pooled tables
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

METHODS = ("floor", "explainer", "explainer_noag")
STEPS = ("spec", "view", "prepare", "probe", "shapes", "epsilons", "trace", "build",
         "weight_noise", "run")


def graph_nodes(concrete: Any) -> int:
    """Nodes of a concrete function's graph, its function library included."""
    gdef = concrete.graph.as_graph_def()
    return len(gdef.node) + sum(len(f.node_def) for f in gdef.library.function)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Measures one first call in this (fresh) process."""
    import auto_batch
    import harness
    import numpy as np
    import tensorflow as tf

    t_import = time.perf_counter()
    model, shape = auto_batch.build(args.model, args.seed)
    x, t = harness.make_inputs(shape, args.B, harness.num_classes_of(model), seed=args.seed)
    xt, tt = tf.constant(x), tf.constant(t)
    out: dict[str, Any] = {"model_build_s": time.perf_counter() - t_import}

    if args.method == "floor":
        t0 = time.perf_counter()
        fn = harness.make_floor(model, shape, args.N, args.sigma)
        concrete = fn.get_concrete_function()  # the signature is fixed: this is the trace
        t1 = time.perf_counter()
        seeded = harness.SeededCall(fn)
        seeded(xt, tt).numpy()
        t2 = time.perf_counter()
        seeded(xt, tt).numpy()
        t3 = time.perf_counter()
        out.update(first_s=t2 - t0, trace=t1 - t0, run=t2 - t1, second_s=t3 - t2,
                   nodes=graph_nodes(concrete))
        return out

    tfm, reason = harness.import_tfmollify()
    if tfm is None:
        return {"error": reason}
    from tfmollify.adapter import model_view, request, runner, spec
    from tfmollify.core import engine

    spent: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)

    def timed(label: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t0
                counts[label] += 1

        return wrapper

    spec.Spec.create = classmethod(timed("spec", spec.Spec.create.__func__))
    model_view.ModelView.__init__ = timed("view", model_view.ModelView.__init__)
    model_view.ModelView.probe = timed("probe", model_view.ModelView.probe)
    runner.Runner.prepare = timed("prepare", runner.Runner.prepare)
    runner.Runner.shapes = timed("shapes", runner.Runner.shapes)
    runner.Runner.weight_noise = timed("weight_noise", runner.Runner.weight_noise)
    runner.Runner.run = timed("run", runner.Runner.run)
    request.epsilons = timed("epsilons", request.epsilons)
    engine.build = timed("build", engine.build)
    function = runner.Runner._function
    if args.method == "explainer_noag":
        original = tf.function

        def no_autograph(*a: Any, **k: Any) -> Any:
            k.setdefault("autograph", False)
            return original(*a, **k)

        def function_noag(self: Any, *a: Any, **k: Any) -> Any:
            tf.function = no_autograph
            try:
                return function(self, *a, **k)
            finally:
                tf.function = original

        runner.Runner._function = timed("trace", function_noag)
    else:
        runner.Runner._function = timed("trace", function)

    t0 = time.perf_counter()
    explainer = tfm.SmoothGrad(
        model, kernel="gaussian", num_samples=args.N, epsilon=args.sigma, seed=0,
        batch_size=args.batch_size,
    )
    t1 = time.perf_counter()
    first = np.asarray(explainer(xt, tt, progress=False))
    t2 = time.perf_counter()
    out.update(spent)  # the first call's steps only
    out["counts"] = dict(counts)
    second = np.asarray(explainer(xt, tt, progress=False))
    t3 = time.perf_counter()
    out.update(
        first_s=t2 - t0, construct_s=t1 - t0, call_s=t2 - t1, second_s=t3 - t2,
        trace_count=explainer.runner.trace_count,
        bound=explainer.runner.batch_size,
        steady_equal=bool(np.array_equal(first, second)),
        checksum=float(np.sum(np.abs(first), dtype=np.float64)),
    )
    fns = list(explainer.runner._functions.values())
    if fns:
        out["nodes"] = graph_nodes(fns[0])
    return out


AUTOGRAPH_CASES: tuple[dict[str, Any], ...] = (
    {"mode": "sg"},
    {"mode": "sg", "sampler": "antithetic"},
    {"mode": "sg", "sampler": "sobol", "num_samples": 8, "replicates": 4},
    {"mode": "sg", "kernel": "sigmoid", "aggregation": "vargrad"},
    {"mode": "sg", "attribution": "integrated_gradients", "ig_steps": 4},
    {"mode": "sg", "noise_at": "CONV2"},
    {"mode": "sg", "attribution": "grad_cam", "attribute_at": "CONV2"},
    {"mode": "ng", "num_weight_samples": 4},
    {"mode": "fg", "num_weight_samples": 4},
    {"mode": "sg", "tolerance": 0.5, "max_samples": 64},
)


def autograph_check(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The core traced with and without autograph on LeNet: equal results? trace times.

    For each case of :data:`AUTOGRAPH_CASES` (``num_samples=8`` unless given, B = 2, seed 0;
    ``CONV2``: LeNet's second convolution),
    one explainer traced as the library does and one with ``autograph=False`` patched into
    ``tf.function`` during ``Runner._function`` only; both are called once.
    """
    import harness
    import numpy as np
    import tensorflow as tf

    tfm, reason = harness.import_tfmollify()
    if tfm is None:
        raise SystemExit(f"tfmollify not importable: {reason}")
    from tfmollify.adapter import runner

    model = harness.build_model("lenet", seed=args.seed)
    x, t = harness.make_inputs((32, 32, 3), 2, 10, seed=args.seed)
    function = runner.Runner._function
    original = tf.function

    def no_autograph(*a: Any, **k: Any) -> Any:
        k.setdefault("autograph", False)
        return original(*a, **k)

    rows = []
    conv2 = [layer.name for layer in model.layers if "conv" in layer.name][1]
    for case in AUTOGRAPH_CASES:
        kw = {"num_samples": 8, "seed": 0, **case}
        kw = {k: conv2 if v == "CONV2" else v for k, v in kw.items()}  # the 2nd conv layer
        row: dict[str, Any] = {"case": kw}
        outs = {}
        for label in ("autograph", "no_autograph"):
            try:
                ex = tfm.Explainer(model, **kw)
            except Exception as err:
                row[f"error_{label}"] = f"{type(err).__name__}: {err}"[:300]
                continue

            def patched(self: Any, *a: Any, **k: Any) -> Any:
                tf.function = no_autograph
                try:
                    return function(self, *a, **k)
                finally:
                    tf.function = original

            runner.Runner._function = patched if label == "no_autograph" else function
            try:
                t0 = time.perf_counter()
                ex.runner.prepare(x, t, with_stderr=False)
                row[f"prepare_{label}_s"] = time.perf_counter() - t0
                outs[label] = np.asarray(ex(x, t, progress=False))
            except Exception as err:  # record: the point is to find the cases that break
                row[f"error_{label}"] = f"{type(err).__name__}: {err}"[:300]
            finally:
                runner.Runner._function = function
        if len(outs) == 2:
            a, b = outs["autograph"], outs["no_autograph"]
            row["max_abs_diff"] = float(np.max(np.abs(a - b))) if a.size else 0.0
        print(f"  {row}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def med(values: list[float]) -> str:
    """``median (min-max)`` of seconds."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def report(rows: list[dict[str, Any]], models: list[str]) -> str:
    """Markdown tables: first call vs the floor's, and the explainer's breakdown."""
    import harness

    lines = []
    head = ["model", "method", "first call (s)", "x floor first", "trace (s)", "first run (s)",
            "second call (s)", "graph nodes", "runs"]
    table = []
    for model in models:
        by = {m: [r for r in rows if r["model"] == model and r["method"] == m and "first_s" in r]
              for m in METHODS}
        floor = statistics.median([r["first_s"] for r in by["floor"]]) if by["floor"] else None
        for m, rs in by.items():
            if not rs:
                continue
            first = [r["first_s"] for r in rs]
            ratio = f"{statistics.median(first) / floor:.2f}x" if floor else "-"
            table.append([
                model, m, med(first), ratio, med([r.get("trace", 0.0) for r in rs]),
                med([r.get("run", 0.0) for r in rs]), med([r["second_s"] for r in rs]),
                str(rs[0].get("nodes", "-")), str(len(rs)),
            ])
    lines.append(harness.markdown_table(head, table))
    lines.append("")
    head = ["model", "method", "construct (spec + view)", "probe", "shapes", "epsilons",
            "trace (build)", "weight_noise", "prepare, rest", "first run", "call, rest",
            "trace_count"]
    table = []
    for model in models:
        for m in METHODS[1:]:
            rs = [r for r in rows if r["model"] == model and r["method"] == m and "first_s" in r]
            if not rs:
                continue

            def col(key: str, rs: list[dict[str, Any]] = rs) -> list[float]:
                return [r.get(key, 0.0) for r in rs]

            rest_prep = [r["prepare"] - r.get("probe", 0) - r.get("shapes", 0)
                         - r.get("epsilons", 0) - r.get("trace", 0) - r.get("weight_noise", 0)
                         for r in rs]
            rest_call = [r["call_s"] - r["prepare"] - r["run"] for r in rs]
            construct = [f"{statistics.median(col('construct_s')):.3f} "
                         f"({statistics.median(col('spec')):.3f} + "
                         f"{statistics.median(col('view')):.3f})"]
            table.append([
                model, m, construct[0], med(col("probe")), med(col("shapes")),
                med(col("epsilons")),
                f"{med(col('trace'))} ({statistics.median(col('build')):.3f})",
                med(col("weight_noise")), med(rest_prep), med(col("run")), med(rest_call),
                str(rs[0].get("trace_count")),
            ])
    lines.append(harness.markdown_table(head, table))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", default="lenet,resnet50@64", help="comma list (auto_batch names)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list")
    p.add_argument("-B", type=int, default=8)
    p.add_argument("-N", type=int, default=50)
    p.add_argument("--sigma", type=float, default=0.15)
    p.add_argument("--batch-size", default="auto", help="the explainer's batch_size")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per method")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--summarize", default=None,
                   help="comma list of --json files: the tables over all their rows")
    p.add_argument("--autograph-check", action="store_true",
                   help="compare the core traced with and without autograph (in-process)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="lenet", help=argparse.SUPPRESS)
    p.add_argument("--method", default="floor", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.batch_size not in ("auto", "None"):
        args.batch_size = int(args.batch_size)
    elif args.batch_size == "None":
        args.batch_size = None
    return args


def main(argv: list[str] | None = None) -> int:
    """Runs every (model, method, repeat) in a fresh process; prints the tables."""
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if args.summarize:
        files = args.summarize.split(",")
        rows = [r for f in files for r in json.loads(Path(f).read_text())["rows"]]
        models = list(dict.fromkeys(r["model"] for r in rows))
        print(f"pooled: {args.summarize}\n")
        print(report(rows, models))
        return 0
    if args.autograph_check:
        import harness

        checks = autograph_check(args)
        table = [[", ".join(f"{k}={v}" for k, v in c["case"].items() if k != "seed"),
                  c.get("error_no_autograph") or c.get("error_autograph")
                  or f"{c['max_abs_diff']:.1e}",
                  f"{c.get('prepare_autograph_s', float('nan')):.2f}",
                  f"{c.get('prepare_no_autograph_s', float('nan')):.2f}"] for c in checks]
        print(harness.markdown_table(
            ["case (LeNet, B = 2)", "max abs diff (or error)", "prepare with autograph (s)",
             "prepare without (s)"], table))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"argv": sys.argv, "rows": checks}, indent=1,
                                            default=str))
        return 0 if all("max_abs_diff" in c and c["max_abs_diff"] == 0 for c in checks) else 1
    models = args.models.split(",")
    methods = args.methods.split(",")
    rows = []
    for model in models:
        for r in range(args.repeats):
            order = methods if r % 2 == 0 else methods[::-1]
            for method in order:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--worker",
                       f"--model={model}", f"--method={method}", f"-B={args.B}", f"-N={args.N}",
                       f"--sigma={args.sigma}", f"--batch-size={args.batch_size}",
                       f"--seed={args.seed}"]
                row: dict[str, Any] = {"model": model, "method": method, "repeat": r}
                try:
                    proc = subprocess.run(cmd, capture_output=True, text=True,
                                          timeout=args.timeout, check=False)
                    lines = proc.stdout.strip().splitlines()
                    if proc.returncode == 0 and lines:
                        row.update(json.loads(lines[-1]))
                    else:
                        row["error"] = f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"
                except subprocess.TimeoutExpired:
                    row["error"] = f"timeout after {args.timeout} s"
                print(f"== {model} {method} #{r}: {row}", file=sys.stderr, flush=True)
                rows.append(row)
    print(f"B = {args.B}, N = {args.N}, batch_size = {args.batch_size}; seconds, median "
          f"(min-max) of {args.repeats} fresh processes\n")
    print(report(rows, models))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"argv": sys.argv, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}
        args.json.write_text(json.dumps(payload, indent=1, default=float))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

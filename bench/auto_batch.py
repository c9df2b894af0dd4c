"""Cost of the default ``batch_size="auto"`` against one unbounded pass (``batch_size=None``).

For every model, two explainers with the same arguments and seed are built, one with the
default bound (``batch_size`` not given) and one with ``batch_size=None``. Both are called on
the same inputs in ONE process, ALTERNATING (the order swaps every repeat: ABBA), after one
first call each (reported apart: tracing + one run) and ``--warmup`` untimed calls. Reported per
model: the resolved bound (``explainer.runner.batch_size``) and the plan it gives (examples per
core call, draws per pass, passes), the median and IQR of each, the ratio of the medians and
the median / IQR of the per-repeat paired ratios ``auto_i / none_i``, and the largest
difference of the two results (the same seed gives the same draws whatever the bound).

Where the bound resolves to None (a model small enough that ``4 GiB // activation_bytes``
exceeds ``AUTO_UNBOUNDED``) both explainers compile the same core: the ratio is 1 by
construction and the row says so (``--time-equal`` times it anyway).

Model names: those of :mod:`harness` (``mlp``, ``lenet``, ``mobilenetv2``, ``vgg16``), or
``NAME@SIZE`` for ``keras.applications`` models at ``SIZE x SIZE x 3`` (``resnet50@64``,
``mobilenetv2@96``; ``weights=None``, ``classifier_activation=None``).

``--vg``: peak memory and time of the README's ``vg`` example (MobileNetV2(weights=None) at
224 x 224 x 3, ``kernel="sigmoid"``, ``aggregation="vargrad"``,
``attribution="integrated_gradients"``, ``ig_steps=16``, ``epsilon=0.1``, B = 4 images in
[-1, 1], targets 1-4), one FRESH subprocess per configuration ``BATCH_SIZE:N:CALLS``
(``--vg-configs``). The worker reads the RSS high-water mark around each call
(:func:`memory.reset_hwm` / :func:`memory.status_kb`), and reports the bound, the rows per
pass, the RSS after setup, each call's peak and time, and the time per evaluation.

Examples::

    python bench/auto_batch.py --models mlp,lenet,resnet50@64 --mode sg -B 8 -N 50 \\
        --repeats 10 --json bench/results/auto_batch_sg.json
    python bench/auto_batch.py --vg --vg-configs auto:5:2,16:5:1 --json bench/results/vg.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import harness  # must come first: sets the TF logging environment
import keras
import numpy as np
import tensorflow as tf

APPS = {
    "resnet50": keras.applications.ResNet50,
    "mobilenetv2": keras.applications.MobileNetV2,
    "vgg16": keras.applications.VGG16,
}


def log(msg: str) -> None:
    """Progress to stderr (stdout carries the Markdown report)."""
    print(msg, file=sys.stderr, flush=True)


def build(name: str, seed: int = 0) -> tuple[keras.Model, tuple[int, ...]]:
    """A benchmark model and the shape of one example (``NAME@SIZE`` for applications).

    Raises:
        ValueError: For an unknown name.
    """
    if "@" in name:
        base, size = name.split("@")
        if base not in APPS:
            raise ValueError(f"unknown application {base!r} in {name!r}; one of {list(APPS)}")
        shape = (int(size), int(size), 3)
        keras.utils.set_random_seed(seed)
        model = APPS[base](weights=None, input_shape=shape, classifier_activation=None)
        return model, shape
    return harness.build_model(name, seed=seed), harness.input_shape_of(name)


def explainer_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments both explainers share."""
    kw: dict[str, Any] = {
        "mode": args.mode,
        "kernel": "gaussian",
        "num_samples": args.N,
        "epsilon": args.sigma,
        "seed": 0,
    }
    if args.mode != "sg":
        kw.update(num_weight_samples=args.M, weight_epsilon=args.weight_epsilon)
    if args.attribution != "gradient":
        kw["attribution"] = args.attribution
        if args.attribution == "integrated_gradients":
            kw["ig_steps"] = args.ig_steps
    return kw


def plan_of(explainer: Any, batch: int) -> dict[str, Any]:
    """The resolved bound and the plan of a call with ``batch`` examples."""
    runner = explainer.runner
    plan = runner.plan(batch)
    lay = plan.layout
    return {
        "bound": runner.batch_size,
        "block": plan.block,
        "chunk": lay.chunk,
        "n_chunks": lay.n_chunks,
        "core_calls": -(-batch // plan.block),
        "activation_bytes": explainer.view.activation_bytes(),
    }


def graph_nodes(concrete: Any) -> int:
    """Nodes of a concrete function's graph, its function library included."""
    gdef = concrete.graph.as_graph_def()
    return len(gdef.node) + sum(len(f.node_def) for f in gdef.library.function)


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Median and quartiles of the per-repeat ratios ``a_i / b_i``."""
    r = [x / y for x, y in zip(a, b, strict=True)]
    if len(r) < 2:
        return {"median": r[0], "q1": r[0], "q3": r[0]} if r else {}
    q1, _, q3 = statistics.quantiles(r, n=4, method="inclusive")
    return {"median": statistics.median(r), "q1": q1, "q3": q3}


def run_model(name: str, args: argparse.Namespace, tfm: Any) -> dict[str, Any]:
    """Times ``auto`` against ``None`` on one model."""
    model, shape = build(name, args.seed)
    x, t = harness.make_inputs(shape, args.B, harness.num_classes_of(model), seed=args.seed)
    xt, tt = tf.constant(x), tf.constant(t)
    kw = explainer_kwargs(args)
    explainers = {"auto": tfm.Explainer(model, **kw), "none": tfm.Explainer(model, batch_size=None,
                                                                           **kw)}
    row: dict[str, Any] = {"model": name, "mode": args.mode, "B": args.B, "N": args.N,
                           "attribution": args.attribution}
    if args.mode != "sg":
        row["M"] = args.M
    if args.attribution == "integrated_gradients":
        row["ig_steps"] = args.ig_steps
    row["plan_auto"] = plan_of(explainers["auto"], args.B)
    row["plan_none"] = plan_of(explainers["none"], args.B)
    evals_per_sample = explainers["auto"].spec.evaluations_per_sample
    row["evaluations"] = args.B * args.N * (args.M if args.mode != "sg" else 1) * evals_per_sample
    same = row["plan_auto"]["bound"] is None
    row["same_by_construction"] = same
    if same and not args.time_equal:
        log(f"  {name}: the bound resolves to None: auto == None, ratio 1 by construction")
        return row

    def call(key: str) -> tuple[float, np.ndarray]:
        t0 = time.perf_counter()
        out = np.asarray(explainers[key](xt, tt, progress=False))
        return time.perf_counter() - t0, out

    results = {}
    for key in ("auto", "none"):
        row[f"first_{key}_s"], results[key] = call(key)
        log(f"  {name} {key}: first call {row[f'first_{key}_s']:.3f} s")
    # the traced cores (diagnostic only: private cache of the runner): same size, same graph?
    for key, ex in explainers.items():
        fns = list(ex.runner._functions.values())
        row[f"graph_nodes_{key}"] = graph_nodes(fns[0]) if fns else None
    scale = float(np.max(np.abs(results["none"]))) or 1.0
    row["max_rel_diff"] = float(np.max(np.abs(results["auto"] - results["none"]))) / scale
    for _ in range(args.warmup):
        call("auto")
        call("none")
    times: dict[str, list[float]] = {"auto": [], "none": []}
    for r in range(args.repeats):
        order = ("auto", "none") if r % 2 == 0 else ("none", "auto")
        for key in order:
            times[key].append(call(key)[0])
        log(f"  {name} repeat {r + 1}/{args.repeats}: auto {times['auto'][-1]:.3f} s, "
            f"none {times['none'][-1]:.3f} s")
    for key in times:
        row[f"times_{key}"] = times[key]
        row[key] = harness.summarize(times[key])
    row["ratio_of_medians"] = row["auto"]["median_s"] / row["none"]["median_s"]
    row["paired_ratio"] = paired(times["auto"], times["none"])
    return row


VG_CONFIGS = "auto:5:2,auto:10:1,16:5:1,None:2:1"


def vg_worker(batch_size: int | str | None, n: int, calls: int, seed: int) -> dict[str, Any]:
    """The README's ``vg`` explainer at ``num_samples=n``: peak RSS and time of each call."""
    import memory

    import tfmollify as tfm

    t0 = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(weights=None, classifier_activation=None)
    x = np.random.default_rng(0).uniform(-1, 1, size=(4, 224, 224, 3)).astype("float32")
    targets = [1, 2, 3, 4]
    kw: dict[str, Any] = {} if batch_size == "auto" else {"batch_size": batch_size}
    vg = tfm.Explainer(model, mode="sg", kernel="sigmoid", aggregation="vargrad",
                       attribution="integrated_gradients", ig_steps=16, epsilon=0.1,
                       num_samples=n, seed=0, **kw)
    plan = vg.runner.plan(len(x))
    out: dict[str, Any] = {
        "bound": vg.runner.batch_size, "block": plan.block, "chunk": plan.layout.chunk,
        "n_chunks": plan.layout.n_chunks,
        "rows_per_pass": plan.block * plan.layout.chunk * vg.spec.evaluations_per_sample,
        "evaluations": len(x) * n * vg.spec.evaluations_per_sample,
        # passes of the model (padding draws of a last, shorter pass included)
        "passes": -(-len(x) // plan.block) * plan.layout.n_chunks,
        "setup_s": time.perf_counter() - t0,
        "setup_rss_mb": (memory.status_kb("VmRSS") or 0) / 1024,
        "calls": [],
    }
    for _ in range(calls):
        box: dict[str, Any] = {}

        def call(box: dict[str, Any] = box) -> None:
            t = time.perf_counter()
            box["a"] = np.asarray(vg(x, targets, progress=False))
            box["s"] = time.perf_counter() - t

        m = memory.measure(call)
        out["calls"].append({"peak_mb": m["peak_mb"], "rss_before_mb": m["rss_before_mb"],
                             "time_s": box["s"], "how": m["how"],
                             "finite": bool(np.isfinite(box["a"]).all())})
    out["peak_mb"] = max(c["peak_mb"] for c in out["calls"])
    out["delta_mb"] = out["peak_mb"] - out["setup_rss_mb"]
    return out


def vg_main(args: argparse.Namespace) -> int:
    """Every ``--vg-configs`` entry in a fresh subprocess; a Markdown table."""
    import subprocess

    rows = []
    for cfg in args.vg_configs.split(","):
        bs, n, calls = cfg.split(":")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--vg-worker", cfg]
        log(f"== vg batch_size={bs} N={n} calls={calls}")
        row: dict[str, Any] = {"batch_size": bs, "N": int(n)}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                  check=False)
            lines = proc.stdout.strip().splitlines()
            if proc.returncode == 0 and lines:
                row.update(json.loads(lines[-1]))
            else:
                row["error"] = f"exit {proc.returncode}: {proc.stderr.strip()[-400:]}"
        except subprocess.TimeoutExpired:
            row["error"] = f"timeout after {args.timeout} s"
        log(f"   {row}")
        rows.append(row)
    head = ["batch_size", "N", "bound (rows)", "rows per pass", "evaluations", "setup RSS",
            "peak RSS (first call)", "peak RSS (second)", "peak - setup", "first call (s)",
            "second call (s)", "passes", "s / pass (last call)"]
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["batch_size"], r["N"], r["error"][:80]] + ["-"] * 9)
            continue
        c = r["calls"]
        last = c[-1]["time_s"]
        table.append([
            r["batch_size"], r["N"], str(r["bound"]), r["rows_per_pass"], r["evaluations"],
            f"{r['setup_rss_mb']:.0f}", f"{c[0]['peak_mb']:.0f}",
            f"{c[1]['peak_mb']:.0f}" if len(c) > 1 else "-", f"{r['delta_mb']:.0f}",
            f"{c[0]['time_s']:.1f}", f"{c[1]['time_s']:.1f}" if len(c) > 1 else "-",
            r["passes"], f"{last / r['passes']:.2f}",
        ])
    print("MiB (RSS high-water mark, VmHWM, one fresh process per row)\n")
    print(harness.markdown_table(head, table))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"argv": sys.argv, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "versions": harness.versions(), "rows": rows}
        args.json.write_text(json.dumps(payload, indent=1, default=float))
        log(f"wrote {args.json}")
    return 0 if all("error" not in r for r in rows) else 1


def report(rows: list[dict[str, Any]]) -> str:
    """A Markdown table."""
    head = ["model", "mode", "B x N (evals)", "bound (rows)", "auto plan: core calls x passes "
            "(draws)", "auto median (IQR) s", "None median (IQR) s", "auto/None (medians)",
            "paired ratio median (IQR)", "max rel diff", "graph nodes auto / None"]
    lines = []
    for r in rows:
        p = r["plan_auto"]
        bound = "None (unbounded)" if p["bound"] is None else str(p["bound"])
        plan = f"{p['core_calls']} x {p['n_chunks']} ({p['chunk']})"
        mode = r["mode"] + ("/ig" if r["attribution"] == "integrated_gradients" else "")
        size = f"{r['B']} x {r['N']}" + (f" x M {r['M']}" if "M" in r else "")
        size += f" ({r['evaluations']})"
        if "auto" not in r:
            lines.append([r["model"], mode, size, bound, plan, "-", "-",
                          "1 (same core, by construction)", "-", "-", "-"])
            continue

        def med(s: dict[str, float]) -> str:
            return f"{s['median_s']:.3f} ({s['q1_s']:.3f}-{s['q3_s']:.3f})"

        pr = r["paired_ratio"]
        lines.append([
            r["model"], mode, size, bound, plan, med(r["auto"]), med(r["none"]),
            f"{r['ratio_of_medians']:.3f}",
            f"{pr['median']:.3f} ({pr['q1']:.3f}-{pr['q3']:.3f})", f"{r['max_rel_diff']:.1e}",
            f"{r.get('graph_nodes_auto')} / {r.get('graph_nodes_none')}",
        ])
    return harness.markdown_table(head, lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", default="mlp,lenet,resnet50@64", help="comma list")
    p.add_argument("--mode", default="sg", choices=("sg", "ng", "fg"))
    p.add_argument("--attribution", default="gradient",
                   choices=("gradient", "integrated_gradients"))
    p.add_argument("--ig-steps", type=int, default=16)
    p.add_argument("-B", type=int, default=8, help="examples per call")
    p.add_argument("-N", type=int, default=50, help="noisy copies per example")
    p.add_argument("-M", type=int, default=10, help="weight draws (ng / fg)")
    p.add_argument("--sigma", type=float, default=0.15)
    p.add_argument("--weight-epsilon", type=float, default=0.2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--time-equal", action="store_true",
                   help="time models whose bound resolves to None too")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--vg", action="store_true", help="the README's vg example: memory, time")
    p.add_argument("--vg-configs", default=VG_CONFIGS,
                   help="comma list of BATCH_SIZE:N:CALLS (BATCH_SIZE auto, None or an int)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per --vg configuration")
    p.add_argument("--vg-worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs every model and prints the table."""
    args = parse_args(argv)
    if args.vg_worker:
        bs, n, calls = args.vg_worker.split(":")
        size: int | str | None = bs if bs == "auto" else None if bs == "None" else int(bs)
        print(json.dumps(vg_worker(size, int(n), int(calls), args.seed)))
        return 0
    if args.vg:
        return vg_main(args)
    tfm, reason = harness.import_tfmollify()
    if tfm is None:
        log(f"tfmollify not importable: {reason}")
        return 2
    rows = []
    for name in args.models.split(","):
        log(f"== {name} {args.mode} {args.attribution}")
        rows.append(run_model(name, args, tfm))
    print(report(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"argv": sys.argv, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                   "versions": harness.versions(), "rows": rows}
        args.json.write_text(json.dumps(payload, indent=1, default=float))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: tfmollify SmoothGrad / NoiseGrad / FusionGrad against the floor, peers, baselines.

All methods of one model run in ONE process and are timed INTERLEAVED: within each repeat every
method is called once, round-robin (the starting method rotates from repeat to repeat), so
machine noise hits all methods alike. The first call of each method (tracing / compilation plus
one execution) is reported separately; then ``--warmup`` untimed calls; then ``--repeats`` timed
calls, summarised by their median and quartiles. Every timed call includes converting the result
to a NumPy array, so asynchronous work is finished inside the timing.

Modes:

* ``sg``: SmoothGrad. Reference: ``floor`` (one ``tf.function``, one batched gradient pass over
  all ``B*N`` noisy copies; see :func:`harness.make_floor`). Methods: ``floor``,
  ``floor_chunked`` (with ``--batch-size``), ``tfmollify_sg``, the peers of :mod:`peers`.
* ``ng``: NoiseGrad. Reference: ``baseline_ng`` (the original eager loop, :mod:`baselines`).
* ``fg``: FusionGrad. Reference: ``baseline_fg``; also tfmollify SmoothGrad and the floor with
  the same number of gradient evaluations (``N_sg = M*N``).

``--check`` first verifies that every method computes what it should (exactly on a linear
model, and by correlation with the floor / the baseline on the benchmark model at large N).

Example::

    python bench/bench.py --model lenet --mode sg -B 8 -N 50 --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness  # must come first: sets the TF logging environment
import numpy as np
import tensorflow as tf
from baselines import NoiseGradBaseline
from harness import Problem
from peers import SG_PEERS, Runner

MODES = ("sg", "ng", "fg")
REFERENCE = {"sg": ("floor", "floor_chunked"), "ng": ("baseline_ng",), "fg": ("baseline_fg",)}
CORR_MIN = 0.99
NORM_TOL = 0.1
EXACT_RTOL = 1e-4


def log(msg: str) -> None:
    """Progress to stderr (stdout carries the Markdown report)."""
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Method construction
# --------------------------------------------------------------------------------------------


def floor_runner(
    problem: Problem,
    num_samples: int | None = None,
    chunk: int | None = None,
    statistic: str = "mean",
    objective: str = "logit",
    base_seed: int = 0,
) -> Runner:
    """The floor (see :func:`harness.make_floor`) as a timed runner."""
    n = num_samples or problem.num_samples
    fn = harness.SeededCall(
        harness.make_floor(
            problem.model,
            problem.input_shape,
            n,
            problem.sigma,
            statistic=statistic,
            objective=objective,
            chunk=chunk,
        ),
        base_seed,
    )
    x = tf.constant(problem.x)
    t = tf.constant(problem.targets)
    how = "one pass over B*N" if chunk is None else f"while_loop, chunks of {chunk}"
    return Runner(
        lambda: fn(x, t).numpy(),
        f"{how}, N={n}",
        statistic=statistic,
        objective=objective,
    )


def tfmollify_runner(
    tfm: Any, problem: Problem, mode: str, num_samples: int | None = None
) -> Runner:
    """``tfm.SmoothGrad`` / ``NoiseGrad`` / ``FusionGrad`` built once, called on the problem."""
    common = {"kernel": "gaussian", "seed": 0, "batch_size": problem.batch_size}
    n = num_samples or problem.num_samples
    if mode == "sg":
        explainer = tfm.SmoothGrad(problem.model, num_samples=n, epsilon=problem.sigma, **common)
        note = f"N={n}"
    elif mode == "ng":
        explainer = tfm.NoiseGrad(
            problem.model,
            num_weight_samples=problem.num_weight_samples,
            weight_epsilon=problem.weight_epsilon,
            **common,
        )
        note = f"M={problem.num_weight_samples}"
    else:
        explainer = tfm.FusionGrad(
            problem.model,
            num_samples=n,
            num_weight_samples=problem.num_weight_samples,
            epsilon=problem.sigma,
            weight_epsilon=problem.weight_epsilon,
            **common,
        )
        note = f"M={problem.num_weight_samples}, N={n}"
    x = tf.constant(problem.x)
    t = tf.constant(problem.targets)
    return Runner(lambda: np.asarray(explainer(x, t)), f"batch_size={problem.batch_size}; {note}")


def baseline_runner(
    problem: Problem, mode: str, compiled: bool, seed: int = 0, per_draw: bool = False
) -> Runner:
    """The original NoiseGrad / FusionGrad loop of :mod:`baselines`."""
    fg = mode == "fg"
    explainer = NoiseGradBaseline(
        problem.model,
        per_draw=per_draw,
        num_weight_samples=problem.num_weight_samples,
        weight_epsilon=problem.weight_epsilon,
        num_samples=problem.num_samples if fg else None,
        epsilon=problem.sigma if fg else None,
        compiled=compiled,
        seed=seed,
    )
    x = tf.constant(problem.x)
    t = tf.constant(problem.targets)
    grad = "tf.function grad" if compiled else "eager grad"
    batch = "B*N rows" if fg and not per_draw else "B rows"
    if per_draw:
        batch += ", loop over N"
    return Runner(lambda: explainer(x, t).numpy(), f"loop over M; assign; {grad} of {batch}")


def method_factories(
    problem: Problem, mode: str, tfm: Any
) -> dict[str, Callable[[], Runner] | str]:
    """All methods of a mode: name -> factory, or name -> reason it is unavailable."""
    m: dict[str, Callable[[], Runner] | str] = {}
    bs = problem.batch_size
    tfm_reason = "tfmollify not importable" if tfm is None else ""
    if mode == "sg":
        m["floor"] = lambda: floor_runner(problem)
        m["floor_chunked"] = (
            (lambda: floor_runner(problem, chunk=bs)) if bs else "needs --batch-size"
        )
        m["tfmollify_sg"] = tfm_reason or (lambda: tfmollify_runner(tfm, problem, "sg"))
        for name, factory in SG_PEERS.items():
            m[name] = lambda f=factory: f(problem)
    elif mode == "ng":
        m["baseline_ng"] = lambda: baseline_runner(problem, "ng", compiled=False)
        m["baseline_ng_compiled"] = lambda: baseline_runner(problem, "ng", compiled=True)
        m["tfmollify_ng"] = tfm_reason or (lambda: tfmollify_runner(tfm, problem, "ng"))
    else:
        mn = problem.num_samples * problem.num_weight_samples
        m["baseline_fg"] = lambda: baseline_runner(problem, "fg", compiled=False)
        m["baseline_fg_compiled"] = lambda: baseline_runner(problem, "fg", compiled=True)
        m["baseline_fg_loop"] = lambda: baseline_runner(problem, "fg", compiled=False,
                                                        per_draw=True)
        m["tfmollify_fg"] = tfm_reason or (lambda: tfmollify_runner(tfm, problem, "fg"))
        m["tfmollify_sg_MN"] = tfm_reason or (
            lambda: tfmollify_runner(tfm, problem, "sg", num_samples=mn)
        )
        m["floor_MN"] = lambda: floor_runner(problem, num_samples=mn, chunk=bs)
    return m


def grad_evals(problem: Problem, mode: str, method: str) -> int:
    """Gradient evaluations (model forward+backward rows) one call of a method performs."""
    b, n, mw = len(problem.x), problem.num_samples, problem.num_weight_samples
    if mode == "sg":
        return b * n
    if mode == "ng":
        return b * mw
    return b * n * mw


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def time_interleaved(
    runners: dict[str, Runner], repeats: int, warmup: int
) -> dict[str, dict[str, Any]]:
    """First-call time, then ``warmup`` untimed calls, then ``repeats`` round-robin timed calls.

    A method that raises is recorded with its error and dropped from the following rounds.
    """
    names = list(runners)
    out: dict[str, dict[str, Any]] = {
        n: {"first_s": None, "times": [], "error": None} for n in names
    }
    alive = list(names)

    def call(name: str) -> float | None:
        t0 = time.perf_counter()
        try:
            runners[name].fn()
        except Exception as err:  # record and drop: one broken method must not stop the rest
            out[name]["error"] = f"{type(err).__name__}: {err}"[:500]
            alive.remove(name)
            log(f"    {name}: ERROR {out[name]['error']}")
            return None
        return time.perf_counter() - t0

    for name in list(alive):
        out[name]["first_s"] = call(name)
        log(f"    {name}: first call {harness.fmt_s(out[name]['first_s'])} s")
    for _ in range(warmup):
        for name in list(alive):
            call(name)
    for r in range(repeats):
        k = r % max(len(alive), 1)
        for name in alive[k:] + alive[:k]:
            dt = call(name)
            if dt is not None:
                out[name]["times"].append(dt)
        log(f"    repeat {r + 1}/{repeats} done")
    for name in names:
        out[name].update(harness.summarize(out[name]["times"]))
    return out


# --------------------------------------------------------------------------------------------
# Correctness checks
# --------------------------------------------------------------------------------------------


def _exact_linear(problem: Problem, statistic: str) -> np.ndarray:
    """SmoothGrad/SquareGrad/VarGrad of a linear model's target logit: exact, noise-free."""
    kernel = np.asarray(problem.model.layers[-1].kernel)  # [784, C]
    w = kernel[:, problem.targets].T  # [B, 784]
    return {"mean": w, "meansq": w * w, "var": np.zeros_like(w)}[statistic]


def _compare(
    name: str,
    got: np.ndarray,
    ref: np.ndarray,
    ref_name: str,
    exact: bool,
    yardstick: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Exact comparison (max error relative to max |ref|), or correlation + norm ratio.

    A Monte Carlo ``yardstick`` (the reference against an independent draw of itself) relaxes
    the correlation threshold to ``yardstick - 0.01`` and the norm tolerance to twice the
    yardstick's, when those are looser than :data:`CORR_MIN` / :data:`NORM_TOL`.
    """
    got = np.asarray(got, np.float64).reshape(ref.shape)
    scale = float(np.max(np.abs(ref))) or 1.0
    rec: dict[str, Any] = {"method": name, "reference": ref_name}
    if exact:
        err = float(np.max(np.abs(got - ref)) / scale)
        rec.update(max_rel_err=err, passed=err < EXACT_RTOL)
        return rec
    corr = harness.correlation(got, ref)
    ratio = harness.norm_ratio(got, ref)
    corr_min, norm_tol = CORR_MIN, NORM_TOL
    if yardstick is not None:
        corr_min = min(corr_min, yardstick["corr"] - 0.01)
        norm_tol = max(norm_tol, 2 * abs(yardstick["norm_ratio"] - 1))
    rec.update(corr=corr, norm_ratio=ratio, corr_min=corr_min, norm_tol=norm_tol)
    rec["passed"] = corr > corr_min and abs(ratio - 1) < norm_tol
    return rec


def _floor_reference(
    prob: Problem, label: str, key: tuple[str, str], cache: dict, results: list[dict[str, Any]]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Floor with statistic/objective ``key`` (seed 1), and its yardstick row (seed 2), cached."""
    if key not in cache:
        ref = floor_runner(prob, statistic=key[0], objective=key[1], base_seed=1).fn()
        other = floor_runner(prob, statistic=key[0], objective=key[1], base_seed=2).fn()
        yard = _compare("floor(other seed)", other, ref, f"floor[{key[0]},{key[1]}]", False)
        yard.update(case=label, passed=True, yardstick=True)
        results.append(yard)
        cache[key] = (ref, yard)
    return cache[key]


def check_sg(problem: Problem, linear: Problem, names: list[str], tfm: Any) -> list[dict[str, Any]]:
    """SG methods: exact on a linear model, correlated with the floor on the benchmark model.

    Each non-exact comparison is against the floor with the same statistic and objective and an
    independent seed; a second independent floor draw gives the Monte Carlo yardstick (how well
    two correct estimates at this N agree), reported as ``floor(other seed)``.
    """
    results: list[dict[str, Any]] = []
    for label, prob in (("linear", linear), (problem.name, problem)):
        facs = method_factories(prob, "sg", tfm)
        refs: dict[tuple[str, str], tuple[np.ndarray, dict[str, Any]]] = {}

        for name in names:
            fac = facs.get(name)
            if not callable(fac):
                continue
            try:
                runner = fac()
                got = runner.fn()
            except Exception as err:
                msg = f"{type(err).__name__}: {err}"[:300]
                results.append({"case": label, "method": name, "passed": False, "error": msg})
                continue
            key = (runner.statistic, runner.objective)
            if label == "linear" and runner.objective == "logit":
                rec = _compare(name, got, _exact_linear(prob, runner.statistic), "exact", True)
            else:
                ref, yard = _floor_reference(prob, label, key, refs, results)
                rec = _compare(name, got, ref, yard["reference"], False, yard)
            rec["case"] = label
            results.append(rec)
    return results


def check_ngfg(problem: Problem, linear: Problem, mode: str, names: list[str], tfm: Any) -> list:
    """NG/FG: every method against the eager baseline (and the exact mean on a linear model).

    The reference is the baseline with another seed than the timed methods; a third seed gives
    the Monte Carlo yardstick ``baseline_<mode>(other seed)``.
    """
    results = []
    for label, prob in (("linear", linear), (problem.name, problem)):
        facs = method_factories(prob, mode, tfm)
        ref = baseline_runner(prob, mode, compiled=False, seed=1).fn()
        other = baseline_runner(prob, mode, compiled=False, seed=2).fn()
        yard = _compare(f"baseline_{mode}(other seed)", other, ref, f"baseline_{mode}", False)
        yard.update(case=label, passed=True, yardstick=True)
        results.append(yard)
        if label == "linear":  # E[w (1 + eps z)] = w: the mean is the exact gradient
            rec = _compare(f"baseline_{mode}", ref, _exact_linear(prob, "mean"), "exact", False)
            rec["case"] = label
            results.append(rec)
        for name in names:
            fac = facs.get(name)
            if not callable(fac) or name.endswith("_MN"):  # SmoothGrad: checked in mode sg
                continue
            try:
                got = fac().fn()
            except Exception as err:
                msg = f"{type(err).__name__}: {err}"[:300]
                results.append({"case": label, "method": name, "passed": False, "error": msg})
                continue
            rec = _compare(name, got, ref, f"baseline_{mode}", False, yard)
            rec["case"] = label
            results.append(rec)
    return results


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def make_problem(name: str, args: argparse.Namespace, batch: int, n: int, m: int) -> Problem:
    """Builds the model and deterministic inputs for one configuration."""
    model = harness.build_model(name, seed=args.seed)
    x, t = harness.make_inputs(
        harness.input_shape_of(name),
        batch,
        harness.num_classes_of(model),
        seed=args.seed,
        same_target=args.same_target,
    )
    return Problem(
        name=name,
        model=model,
        x=x,
        targets=t,
        sigma=args.sigma,
        num_samples=n,
        num_weight_samples=m,
        weight_epsilon=args.weight_epsilon,
        batch_size=args.batch_size,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default="mlp", choices=(*harness.MODELS, "all"))
    p.add_argument("--mode", default="sg", choices=(*MODES, "all"))
    p.add_argument("-N", type=int, default=50, help="noisy input copies per example")
    p.add_argument("-M", type=int, default=10, help="weight draws (NoiseGrad / FusionGrad)")
    p.add_argument("-B", type=int, default=8, help="examples explained per call")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="passed to tfmollify and Xplique; chunk size of floor_chunked / floor_MN",
    )
    p.add_argument("--sigma", type=float, default=0.15, help="absolute input-noise std")
    p.add_argument("--weight-epsilon", type=float, default=0.2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls after the first")
    p.add_argument("--methods", default=None, help="comma list (default: all of the mode)")
    p.add_argument("--same-target", action="store_true", help="all examples explain logit 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write raw results here")
    p.add_argument("--check", action="store_true", help="verify correctness before timing")
    p.add_argument("--check-only", action="store_true", help="verify correctness, no timing")
    p.add_argument("--check-n", type=int, default=2000, help="N for the SG checks")
    p.add_argument("--check-m", type=int, default=500, help="M for the NG checks (FG: M/5)")
    p.add_argument("--check-b", type=int, default=4, help="examples in the checks")
    return p.parse_args(argv)


def run_checks(
    model_name: str, mode: str, names: list[str], args: argparse.Namespace, tfm: Any
) -> list[dict[str, Any]]:
    """Correctness checks of one (model, mode)."""
    b = args.check_b
    if mode == "sg":
        n, m = args.check_n, 1
    elif mode == "ng":
        n, m = 1, args.check_m
    else:
        n, m = 10, max(args.check_m // 5, 2)
    problem = make_problem(model_name, args, b, n, m)
    linear = make_problem("linear", args, b, n, m)
    if mode == "sg":
        return check_sg(problem, linear, names, tfm)
    return check_ngfg(problem, linear, mode, names, tfm)


def report(rows: list[dict[str, Any]], checks: list[dict[str, Any]]) -> str:
    """Markdown tables of timings and checks."""
    lines = []
    if rows:
        table = []
        for r in rows:
            status = r.get("error") or r.get("skipped")
            ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-"
            per = r.get("median_s")
            us = f"{1e6 * per / r['grad_evals']:.1f}" if per else "-"
            iqr = f"{harness.fmt_s(r['q1_s'])}-{harness.fmt_s(r['q3_s'])}" if r.get("q1_s") else "-"
            table.append(
                [
                    r["model"],
                    r["mode"],
                    r["method"],
                    harness.fmt_s(r.get("first_s")),
                    harness.fmt_s(per),
                    iqr,
                    us,
                    ratio,
                    status or r.get("note", ""),
                ]
            )
        lines.append(
            harness.markdown_table(
                [
                    "model",
                    "mode",
                    "method",
                    "first call (s)",
                    "median (s)",
                    "IQR (s)",
                    "us/grad-eval",
                    "x ref",
                    "note",
                ],
                table,
            )
        )
    if checks:
        table = []
        for c in checks:
            if "max_rel_err" in c:
                metric = f"max rel err {c['max_rel_err']:.1e}"
            elif "corr" in c:
                metric = f"corr {c['corr']:.4f}, norm ratio {c['norm_ratio']:.3f}"
                if not c.get("yardstick"):
                    metric += f" (need > {c['corr_min']:.3f}, +-{c['norm_tol']:.2f})"
            else:
                metric = c.get("error", "")
            verdict = "yardstick" if c.get("yardstick") else ("PASS" if c["passed"] else "FAIL")
            table.append(
                [
                    c.get("model", ""),
                    c.get("mode", ""),
                    c["case"],
                    c["method"],
                    c.get("reference", ""),
                    metric,
                    verdict,
                ]
            )
        lines.append("")
        lines.append(
            harness.markdown_table(
                ["model", "mode", "case", "method", "reference", "metric", "result"], table
            )
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark; returns the process exit code."""
    args = parse_args(argv)
    np.random.seed(args.seed)  # noqa: NPY002 -- the peers draw their noise from NumPy's global generator
    tfm, tfm_reason = harness.import_tfmollify()
    if tfm is None:
        log(f"NOTE: skipping tfmollify methods ({tfm_reason})")
    models = harness.MODELS if args.model == "all" else (args.model,)
    modes = MODES if args.mode == "all" else (args.mode,)
    wanted = [s.strip() for s in args.methods.split(",")] if args.methods else None

    rows: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    failed = False
    for model_name in models:
        for mode in modes:
            log(f"== {model_name} / {mode}")
            problem = make_problem(model_name, args, args.B, args.N, args.M)
            factories = method_factories(problem, mode, tfm)
            names = [n for n in factories if wanted is None or n in wanted]
            if wanted:
                unknown = [w for w in wanted if w not in factories]
                if unknown and len(modes) == 1:
                    log(f"  unknown methods for mode {mode}: {unknown}; known: {list(factories)}")
                    return 2
            if args.check or args.check_only:
                log("  checking correctness")
                res = run_checks(model_name, mode, names, args, tfm)
                for c in res:
                    c.update(model=model_name, mode=mode)
                    verdict = "PASS" if c["passed"] else "FAIL"
                    log(f"    check {c['case']:>10} {c['method']:<22} {verdict}")
                checks += res
                failed |= not all(c["passed"] for c in res)
            if args.check_only:
                continue
            runners: dict[str, Runner] = {}
            base = {"model": model_name, "mode": mode, "B": args.B, "N": args.N, "M": args.M}
            for name in names:
                fac = factories[name]
                if isinstance(fac, str):
                    rows.append({**base, "method": name, "skipped": fac, "grad_evals": 1})
                    continue
                try:
                    runners[name] = fac()
                except Exception as err:
                    msg = f"setup failed: {type(err).__name__}: {err}"[:500]
                    log(f"    {name}: {msg}")
                    rows.append({**base, "method": name, "error": msg, "grad_evals": 1})
            log(f"  timing {list(runners)}: warmup {args.warmup}, repeats {args.repeats}")
            timing = time_interleaved(runners, args.repeats, args.warmup)
            ref = next((r for r in REFERENCE[mode] if timing.get(r, {}).get("median_s")), None)
            for name, res in timing.items():
                row = {
                    **base,
                    "method": name,
                    "note": runners[name].note,
                    "grad_evals": grad_evals(problem, mode, name),
                    "reference": ref,
                    **res,
                }
                if ref and res.get("median_s"):
                    row["ratio"] = res["median_s"] / timing[ref]["median_s"]
                rows.append(row)
            if mode == "fg":
                fg, sg = timing.get("tfmollify_fg", {}), timing.get("tfmollify_sg_MN", {})
                if fg.get("median_s") and sg.get("median_s"):
                    log(f"  tfmollify_fg / tfmollify_sg_MN = {fg['median_s'] / sg['median_s']:.2f}")

    print(report(rows, checks))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "argv": sys.argv,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "tfmollify": tfm_reason or "imported",
            "versions": harness.versions(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "results": rows,
            "checks": checks,
        }
        args.json.write_text(json.dumps(payload, indent=1, default=float))
        log(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

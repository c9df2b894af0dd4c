"""One script that measures everything on a GPU: environment, FusionGrad on VGG16, the bench
rows, a fast test subset with GPU-vs-CPU checks, and peak memory against N.

Steps, in order of importance, each in its own worker process with its own time budget
(seconds; ``--budget STEP=S``); a step checks the clock between sub-measurements and stops early,
and a step still running at its budget is stopped (its process group killed) with what it had
measured already on disk. The run moves on to the next step; the whole run is capped by
``--total`` (default 570 s: under 10 minutes).

1. ``env``: device, driver, TensorFlow, CUDA/cuDNN build, visible GPUs; without a GPU the run
   stops with exit status 2 (not with ``--smoke``).
2. ``fg_vgg16``: FusionGrad M = N = 50 (2,500 gradient evaluations) on one 224x224x3 VGG16
   input, batch sizes 250/500/None, float32 and ``mixed_float16``, first call and median of warm
   calls, against the floor (2,500 plain forward+backward evaluations). Target: < 3 s/example.
3. ``bench``: ``bench/bench.py --json`` rows (SG/NG/FG against floor, baselines and peers) and
   a ``jit_compile`` on/off table.
4. ``tests``: noise bit for bit and explain() to rounding on GPU vs CPU, then a fast pytest
   subset (engine vs reference, batch-size invariance, export equality) on the GPU.
5. ``memory``: peak GPU memory of SmoothGrad with ``batch_size`` set, N = 50/200/1000.
6. ``generation``: ``bench/generation.py`` (``explain_generation`` on a 2-layer GPT-2 against
   one forward and backward pass and one single-target explanation, side by side).
7. ``weight_draws``: ``bench/weight_draws.py`` (NoiseGrad/FusionGrad with several weight draws
   per pass against one draw per pass and ``M`` single gradient passes, side by side).

Outputs under ``--out`` (default ``bench/results/gpu/``, with ``--smoke``
``bench/results/gpu-smoke/``): ``<step>.json`` and ``<step>.log`` per step, ``bench/`` (the
bench.py JSON and Markdown), ``summary.json`` and ``summary.md``; the summary tables are printed
on stdout at the end. Nothing is ever written into BENCHMARKS.md.

``--smoke`` runs every step on CPU at tiny sizes (the bench LeNet instead of VGG16 with
M = N = 4, N = 5/10/20 for memory by RSS, a tiny test subset), in under 5 minutes on 2 cores.

Example::

    bash bench/gpu.sh                       # picks the interpreter, then runs this file
    python bench/gpu.py --smoke --skip bench --budget tests=90
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import gpu_steps
from gpu_steps import BENCH_DIR, REPO_ROOT, jsonable, kill_group

STEP_ORDER = ("env", "fg_vgg16", "bench", "tests", "memory", "generation", "weight_draws")
BUDGETS = {  # seconds per step
    "full": {"env": 30, "fg_vgg16": 170, "bench": 100, "tests": 100, "memory": 50,
             "generation": 60, "weight_draws": 40},
    "smoke": {"env": 25, "fg_vgg16": 60, "bench": 80, "tests": 80, "memory": 45,
              "generation": 45, "weight_draws": 35},
}
TOTAL = {"full": 570.0, "smoke": 365.0}  # the whole run
MARGIN = 4.0  # a worker's own deadline is this much before its hard stop
# steps whose worker shares the GPU with subprocesses (bench.py, pytest and its fresh loaders)
ALLOW_GROWTH = ("bench", "tests")


def log(msg: str) -> None:
    """Progress to stderr; stdout carries the summary."""
    print(msg, file=sys.stderr, flush=True)


def _steps(text: str | None) -> list[str]:
    """A comma list of step names, checked."""
    if not text:
        return []
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in STEP_ORDER]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown steps {unknown}; steps: {list(STEP_ORDER)}")
    return names


def _budgets(items: list[str]) -> dict[str, float]:
    """``STEP=S`` items (each may be a comma list), checked."""
    out: dict[str, float] = {}
    for item in items:
        for part in item.split(","):
            name, _, value = part.partition("=")
            if name.strip() not in STEP_ORDER or not value:
                raise argparse.ArgumentTypeError(f"--budget wants STEP=SECONDS, got {part!r}")
            out[name.strip()] = float(value)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, no GPU needed")
    p.add_argument("--skip", default="", help=f"comma list of steps to leave out {STEP_ORDER}")
    p.add_argument("--only", default="", help="comma list: run only these steps")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default bench/results/gpu[-smoke]/)")
    p.add_argument("--budget", action="append", default=[],
                   help="STEP=SECONDS (repeatable or comma list)")
    p.add_argument("--total", type=float, default=None,
                   help="cap on the whole run in seconds (default 470; smoke 285)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.skip, args.only = _steps(args.skip), _steps(args.only)
        args.budget = _budgets(args.budget)
    except argparse.ArgumentTypeError as err:
        p.error(str(err))
    kind = "smoke" if args.smoke else "full"
    if args.out is None:
        args.out = BENCH_DIR / "results" / ("gpu-smoke" if args.smoke else "gpu")
    args.out = args.out.resolve()
    if args.total is None:
        args.total = TOTAL[kind]
    args.budgets = {**BUDGETS[kind], **args.budget}
    return args


# --------------------------------------------------------------------------------------------
# Running the steps
# --------------------------------------------------------------------------------------------


def _worker_env(step: str) -> dict[str, str]:
    """The environment of a step's worker: this checkout first on the path, quiet TF."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), str(BENCH_DIR)] + [p for p in env.get("PYTHONPATH", "").split(
        os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if step in ALLOW_GROWTH:
        env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    return env


def run_step(step: str, args: argparse.Namespace, budget: float) -> dict[str, Any]:
    """Runs one step's worker with a hard stop at ``budget`` seconds; returns its summary."""
    json_path = args.out / f"{step}.json"
    json_path.unlink(missing_ok=True)  # never read a previous run's file as this one's
    start = time.time()
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", step,
           "--out", str(args.out), "--deadline", str(start + budget - MARGIN)]
    if args.smoke:
        cmd.append("--smoke")
    log(f"== {step} (budget {budget:.0f} s)")
    with (args.out / f"{step}.log").open("w") as logfile:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=REPO_ROOT, env=_worker_env(step),
                                start_new_session=True)

        def copy() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                logfile.write(line)
                logfile.flush()
                sys.stderr.write(f"  [{step}] {line}")

        reader = threading.Thread(target=copy, daemon=True)
        reader.start()
        killed = False
        try:
            rc: int | None = proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            rc, killed = proc.returncode, True
        reader.join(timeout=5)
    wall = time.time() - start
    data: dict[str, Any] = {}
    if json_path.exists():
        data = json.loads(json_path.read_text())
    status = data.get("status", "failed")
    if killed:
        status = "partial"
        data.setdefault("notes", []).append(f"stopped at its budget ({budget:.0f} s)")
        data["status"], data["killed"] = status, True
        json_path.write_text(json.dumps(data, indent=1, default=jsonable))
    elif not data:
        data = {"error": f"worker exited {rc} without writing {json_path.name}"}
    elif rc not in (0, 1, 2):
        status = "failed"
    log(f"   {step}: {status} in {wall:.1f} s (exit {rc})")
    return {"step": step, "status": status, "rc": rc, "wall_s": wall, "budget_s": budget,
            "killed": killed, "json": json_path.name, "data": data}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def fmt(v: Any, digits: int = 3) -> str:
    """Numbers with ``digits`` significant digits; '-' for None."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 10**digits:
            return f"{v:.0f}"
        return f"{v:.{digits}g}"
    return str(v)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _why(row: dict[str, Any]) -> str:
    """Error, skip or stop reason of a row."""
    return str(row.get("error") or row.get("skipped") or row.get("stopped") or "")


def headline(step: str, data: dict[str, Any], smoke: bool) -> str:
    """One line of results per step."""
    rows = data.get("rows", [])
    if data.get("error") and not rows and step != "env":
        return str(data["error"])[:200]
    if step == "env":
        info = data.get("info", {})
        build = info.get("build_info", {})
        smi = info.get("nvidia_smi", {}).get("gpus") or []
        gpu = (f"{smi[0].get('name')} (driver {smi[0].get('driver_version')})" if smi
               else ", ".join(info.get("physical_gpus", [])) or "no GPU")
        cuda = (f"CUDA {build.get('cuda_version', '?')}, cuDNN {build.get('cudnn_version', '?')}"
                if build.get("is_cuda_build") == "True" else "not a CUDA build")
        return f"{gpu}; TF {info.get('tensorflow', '?')}, {cuda}" + (
            f"; {data['error']}" if data.get("error") else "")
    if step == "fg_vgg16":
        parts = []
        b = data.get("config", {}).get("B", 1)
        timed = [{**r, "per_example_s": r["median_s"] / b} for r in rows
                 if r.get("method") == "tfmollify_fg" and r.get("median_s")]
        for policy in ("float32", "mixed_float16"):
            done = [r for r in timed if r.get("policy") == policy]
            if done:
                best = min(done, key=lambda r: r["per_example_s"])
                parts.append(f"{policy} best {fmt(best['per_example_s'])} s/example "
                             f"(bs={best['batch_size']}{', jit' if best['jit_compile'] else ''}"
                             f", {fmt(best.get('x_floor'))}x floor)")
        if not parts:
            return "no tfmollify timing finished"
        best = min(r["per_example_s"] for r in timed)
        target = ("n/a (smoke sizes on CPU)" if smoke
                  else "met" if best < 3.0 else "NOT met")
        return "; ".join(parts) + f"; target < 3 s/example: {target}"
    if step == "bench":
        runs = [r for r in rows if r.get("table") == "bench.py"]
        ok = sum(1 for r in runs if r.get("rc") == 0)
        jit = [r for r in rows if r.get("table") == "jit" and r.get("median_s")]
        return f"bench.py {ok}/{len(runs)} runs done; jit table {len(jit)} timings"
    if step == "tests":
        noise = [r for r in rows if r.get("check") == "noise" and "passed" in r]
        expl = [r for r in rows if r.get("check") == "explain" and "passed" in r]
        py = next((r for r in rows if r.get("check") == "pytest"), {})
        counts = py.get("counts") or {}
        pytest_text = (", ".join(f"{v} {k}" for k, v in counts.items() if k != "deselected")
                       or _why(py) or "not run")
        devices = " vs ".join(data.get("devices", []))
        return (f"{devices}: noise equal {sum(r['passed'] for r in noise)}/{len(noise)}, "
                f"explain within tolerance {sum(r['passed'] for r in expl)}/{len(expl)}; "
                f"pytest: {pytest_text}")
    if step == "generation":
        row = rows[0] if rows else {}
        targets = row.get("targets") or {}
        said = ", ".join(f"{k} {fmt(v.get('ratio'))}x (limit {fmt(v.get('limit'))}): "
                         f"{'pass' if v.get('passed') else 'FAIL'}" for k, v in targets.items())
        return (f"explain_generation {fmt(row.get('seconds_per_generated_token'))} s per "
                f"token; {said or _why(row) or 'not run'}")
    if step == "weight_draws":
        said = "; ".join(f"{r.get('case')}: K={r.get('draws_per_pass')} "
                         f"{fmt(r.get('one_draw_ratio'))}x -> {fmt(r.get('batched_ratio'))}x"
                         for r in rows if r.get("case"))
        return said or _why(rows[0] if rows else {}) or "not run"
    if step == "memory":
        cfg = data.get("config", {})
        sg = [r for r in rows if r.get("method") == "tfmollify_sg" and r.get("first_peak_mb")]
        if not sg:
            return "nothing measured"
        peaks = " / ".join(fmt(r["first_peak_mb"]) for r in sg)
        ns = "/".join(str(r["N"]) for r in sg)
        return (f"{cfg.get('model')}, SG batch_size={cfg.get('batch_size')}: peak "
                f"N={ns}: {peaks} MiB ({cfg.get('how')}); last/first "
                f"{fmt(data.get('ratio_peak'))}x")
    return ""


def details(step: str, data: dict[str, Any]) -> str:
    """The step's Markdown table(s)."""
    rows = data.get("rows", [])
    if not rows:
        return ""
    if step == "fg_vgg16":
        cfg = data.get("config", {})
        head = (f"FusionGrad M = {cfg.get('m')}, N = {cfg.get('n')} on one "
                f"{'x'.join(map(str, cfg.get('shape', [])))} {cfg.get('model', 'vgg16')} input "
                f"(evaluations per call: {fmt(cfg.get('m', 0) * cfg.get('n', 0))}; TF32 "
                f"{'on' if cfg.get('tf32_enabled') else 'off'}). floor: the SG floor over as "
                "many rows, `batch_size` = its chunk; `x floor`: tfmollify / floor of the same "
                "policy in chunks of the first batch size; `x floor_N`: / float32 floor in "
                f"chunks of N = {cfg.get('n')} rows (tfmollify's passes: the input draws of "
                "one weight draw)\n\n")
        return head + table(
            ["method", "policy", "batch_size", "jit", "first call (s)", "median (s)",
             "warm calls", "s/example", "us/eval", "x floor", "x floor_N", "GPU peak (MiB)",
             "note"],
            [[r.get("method"), r.get("policy"), r.get("batch_size"), r.get("jit_compile"),
              r.get("first_s"), r.get("median_s"), len(r.get("times", [])),
              r.get("per_example_s"), r.get("us_per_eval"), r.get("x_floor"),
              r.get("x_floor_N"), r.get("gpu_peak_mb"), _fg_note(r)] for r in rows])
    if step == "bench":
        out = []
        body = []
        for run in (r for r in rows if r.get("table") == "bench.py"):
            if not run.get("results"):
                body.append([run["name"], "-", "-", "-", "-", "-", "-", _why(run) or "no JSON"])
            for r in run.get("results", []):
                body.append([run["name"], r.get("method"), r.get("first_s"), r.get("median_s"),
                             r.get("ratio"), r.get("reference"), r.get("grad_evals"),
                             (r.get("error") or r.get("skipped") or "")[:80]])
        if body:
            out.append("bench.py (`x ref`: median / median of the reference)\n\n" + table(
                ["run", "method", "first call (s)", "median (s)", "x ref", "reference",
                 "grad evals", "note"], body))
        jit = [r for r in rows if r.get("table") == "jit"]
        if jit:
            out.append("tfmollify with `jit_compile` (same seed; error against jit off)\n\n"
                       + table(["model", "mode", "jit_compile", "first call (s)", "median (s)",
                                "x jit off", "max rel err", "note"],
                               [[r.get("model"), r.get("mode"), r.get("jit_compile"),
                                 r.get("first_s"), r.get("median_s"), r.get("x_no_jit"),
                                 r.get("max_rel_err_vs_no_jit"), _why(r)] for r in jit]))
        return "\n\n".join(out)
    if step == "tests":
        out = []
        noise = [r for r in rows if r.get("check") == "noise"]
        if noise:
            bad = [r for r in noise if not r.get("passed")]
            placed = next((r.get("placed_on") for r in noise if r.get("placed_on")), {})
            text = (f"Noise, same seed on {' and '.join(data.get('devices', []))}: "
                    f"{len(noise) - len(bad)}/{len(noise)} arrays bit-identical "
                    f"(5 kernels x iid/antithetic/sobol x float32/float64, and the Philox "
                    f"bits; bits drawn on {placed})")
            if bad:
                text += "\n\n" + table(
                    ["array", "unequal fraction", "max abs diff", "max ulp", "note"],
                    [[r.get("name"), r.get("unequal_fraction"), r.get("max_abs_diff"),
                      r.get("max_ulp"), _why(r)] for r in bad])
            out.append(text)
        expl = [r for r in rows if r.get("check") == "explain"]
        if expl:
            out.append("explain(), same seed, device vs device: max |a - b| / max |b|\n\n"
                       + table(["case", "mode", "max rel err", "tolerance", "result"],
                               [[r.get("case"), r.get("mode"), r.get("max_rel_err"),
                                 r.get("tolerance"),
                                 "PASS" if r.get("passed") else (_why(r) or "FAIL")]
                                for r in expl]))
        py = [r for r in rows if r.get("check") == "pytest"]
        for r in py:
            counts = r.get("counts") or {}
            out.append(table(["pytest subset", "counts", "wall (s)", "exit", "note"],
                             [[", ".join(r.get("files", [])),
                               ", ".join(f"{v} {k}" for k, v in counts.items()),
                               r.get("wall_s"), r.get("rc"),
                               _why(r) + (" failures: " + " ".join(r["failures"])
                                          if r.get("failures") else "")]]))
        return "\n\n".join(out)
    if step == "weight_draws":
        said = "; ".join(f"{r.get('case')}: K={r.get('draws_per_pass')} "
                         f"{fmt(r.get('one_draw_ratio'))}x -> {fmt(r.get('batched_ratio'))}x"
                         for r in rows if r.get("case"))
        return said or _why(rows[0] if rows else {}) or "not run"
    if step == "memory":
        cfg = data.get("config", {})
        head = (f"{cfg.get('model')}, B = {cfg.get('B')}, memory by {cfg.get('how')} (MiB; "
                "delta = larger peak - memory before the first call)\n\n")
        return head + table(
            ["method", "N", "batch_size", "before", "first-call peak", "steady peak", "delta",
             "first call (s)", "note"],
            [[r.get("method"), r.get("N"), r.get("batch_size"), r.get("before_mb"),
              r.get("first_peak_mb"), r.get("steady_peak_mb"), r.get("delta_mb"),
              r.get("first_s"), _why(r)] for r in rows])
    return ""


def _fg_note(row: dict[str, Any]) -> str:
    """The fg_vgg16 row's error/skip, and its differences against other rows."""
    notes = [_why(row)] if _why(row) else []
    for key, label in (("rel_diff_vs_float32", "vs float32"), ("rel_diff_vs_bs0", "vs bs0"),
                       ("rel_diff_vs_no_jit", "vs no jit")):
        if row.get(key) is not None:
            notes.append(f"rel diff {label} {fmt(row[key], 2)}")
    if row.get("finite") is False:
        notes.append("NON-FINITE result")
    return "; ".join(notes)


def write_summary(args: argparse.Namespace, results: list[dict[str, Any]], started: float
                  ) -> str:
    """Writes ``summary.json`` and ``summary.md``; returns the Markdown."""
    kind = "smoke (CPU, tiny sizes: not GPU numbers)" if args.smoke else "full"
    wall = time.time() - started
    lines = [f"# GPU run ({kind})", "",
             f"{time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(started))}, "
             f"{wall:.0f} s in all (cap {args.total:.0f} s), interpreter `{sys.executable}`, "
             f"output `{args.out}`", "",
             table(["step", "status", "wall (s)", "budget (s)", "result"],
                   [[r["step"], r["status"], r.get("wall_s"), r.get("budget_s"),
                     r.get("headline", "")] for r in results])]
    for r in results:
        text = details(r["step"], r.get("data", {}))
        notes = r.get("data", {}).get("notes", [])
        if text or notes:
            lines += ["", f"## {r['step']}", ""]
            if notes:
                lines += [f"* {n}" for n in notes] + [""]
            if text:
                lines.append(text)
    md = "\n".join(lines) + "\n"
    (args.out / "summary.md").write_text(md)
    summary = {
        "smoke": args.smoke, "out": str(args.out), "argv": sys.argv,
        "python": sys.executable, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z",
                                                           time.localtime(started)),
        "wall_s": wall, "total_cap_s": args.total, "budgets_s": args.budgets,
        "steps": [{k: v for k, v in r.items() if k != "data"} for r in results],
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=jsonable))
    return md


def main(argv: list[str] | None = None) -> int:
    """Runs the steps (or, with ``--worker``, one step in this process)."""
    args = parse_args(argv)
    if args.worker:
        return gpu_steps.run_worker(args.worker, args.smoke, args.out, args.deadline)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    end = started + args.total
    results: list[dict[str, Any]] = []
    code = 0
    stop = False
    for step in STEP_ORDER:
        if (args.only and step not in args.only) or step in args.skip:
            results.append({"step": step, "status": "skipped", "headline": "--skip/--only"})
            continue
        budget = min(args.budgets[step], end - time.time())
        if stop or budget < 10:
            why = "stopped: no GPU" if stop else "out of total time"
            results.append({"step": step, "status": "skipped", "headline": why})
            continue
        res = run_step(step, args, budget)
        res["headline"] = headline(step, res["data"], args.smoke)
        results.append(res)
        if step == "env" and res["rc"] == 2:
            code, stop = 2, True
        elif res["status"] == "failed":
            code = code or 1
        write_summary(args, results, started)  # a summary after every step
    print(write_summary(args, results, started))
    log(f"wrote {args.out / 'summary.md'} and summary.json ({time.time() - started:.0f} s)")
    return code


if __name__ == "__main__":
    sys.exit(main())

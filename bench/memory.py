"""Peak memory of tfmollify SmoothGrad and of the floor as N grows.

Every configuration (model, method, N) runs in a FRESH subprocess (``--worker``), so one
configuration's allocations cannot hide another's. The worker builds the model and the
explainer, then measures the process's resident-set high-water mark around two calls:

* ``first``: the first call (tracing + one execution), and
* ``steady``: a second call,

each time resetting the high-water mark first (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0)
and reading ``VmHWM`` from ``/proc/self/status`` afterwards; where the reset is not available
the worker falls back to polling RSS with psutil every millisecond. ``delta`` is the larger peak
minus the RSS after setup, before the first call: TensorFlow's allocator keeps the memory that
the first call freed, so the second call's own increase over its starting RSS is ~0.
``ru_maxrss`` (``getrusage(RUSAGE_SELF)``) at exit is reported too (on Linux the reset
clears it as well, so it is the high-water mark since the last reset).

The floor evaluates all ``B*N`` noisy copies in one pass, so its memory grows with ``N``;
tfmollify with a fixed ``batch_size`` should not.

Example::

    python bench/memory.py --models lenet,mlp --N 50,200,1000 --batch-size 64 \\
        --json bench/results/memory.json
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MB = 2**20
METHODS = ("tfmollify_sg", "floor")


def status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), or None."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def reset_hwm() -> bool:
    """Resets the RSS high-water mark; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def measure(fn: Callable[[], Any]) -> dict[str, float]:
    """Runs ``fn`` once; returns RSS before and the peak RSS during the call, in MiB."""
    before = _rss_bytes()
    if reset_hwm() and status_kb("VmHWM") is not None:
        fn()
        peak = (status_kb("VmHWM") or 0) * 1024
        how = "VmHWM"
    else:  # fall back to polling
        peak = before
        done = threading.Event()

        def poll() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _rss_bytes())
                time.sleep(0.001)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        fn()
        done.set()
        thread.join()
        peak = max(peak, _rss_bytes())
        how = "psutil polling"
    return {"rss_before_mb": before / MB, "peak_mb": peak / MB, "how": how}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Measures one configuration in this process."""
    import harness
    import tensorflow as tf

    model = harness.build_model(args.model, seed=args.seed)
    x, t = harness.make_inputs(
        harness.input_shape_of(args.model), args.B, harness.num_classes_of(model), seed=args.seed
    )
    xt, tt = tf.constant(x), tf.constant(t)
    if args.method == "floor":
        fn = harness.SeededCall(
            harness.make_floor(model, x.shape[1:], args.N, args.sigma, chunk=args.floor_chunk)
        )

        def call() -> Any:
            return fn(xt, tt).numpy()

    else:
        tfm, reason = harness.import_tfmollify()
        if tfm is None:
            return {"error": reason}
        explainer = tfm.SmoothGrad(
            model,
            kernel="gaussian",
            num_samples=args.N,
            epsilon=args.sigma,
            seed=0,
            batch_size=args.batch_size,
        )

        def call() -> Any:
            return tf.convert_to_tensor(explainer(xt, tt)).numpy()

    first = measure(call)
    steady = measure(call)
    return {
        "setup_rss_mb": first["rss_before_mb"],
        "first_peak_mb": first["peak_mb"],
        "steady_peak_mb": steady["peak_mb"],
        # TF's allocator keeps what the first call freed, so measure from the pre-call RSS.
        "delta_mb": max(first["peak_mb"], steady["peak_mb"]) - first["rss_before_mb"],
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "how": steady["how"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line interface."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", default="lenet,mlp", help="comma list")
    p.add_argument("--N", default="50,200,1000", help="comma list of num_samples")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list")
    p.add_argument("-B", type=int, default=8, help="examples per call")
    p.add_argument("--batch-size", type=int, default=64, help="tfmollify batch_size")
    p.add_argument("--floor-chunk", type=int, default=None, help="chunk the floor (default: no)")
    p.add_argument("--sigma", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--timeout", type=float, default=900, help="seconds per configuration")
    # worker mode (one configuration, internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default="lenet", help=argparse.SUPPRESS)
    p.add_argument("--method", default="floor", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs every configuration in a fresh subprocess and prints a Markdown table."""
    args = parse_args(argv)
    if args.worker:
        args.N = int(args.N)
        print(json.dumps(worker(args)))
        return 0
    rows = []
    for model in args.models.split(","):
        for n in (int(v) for v in args.N.split(",")):
            for method in args.methods.split(","):
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--worker",
                    f"--model={model}",
                    f"--method={method}",
                    f"--N={n}",
                    f"-B={args.B}",
                    f"--batch-size={args.batch_size}",
                    f"--sigma={args.sigma}",
                    f"--seed={args.seed}",
                ]
                if args.floor_chunk:
                    cmd.append(f"--floor-chunk={args.floor_chunk}")
                print(f"== {model} {method} N={n}", file=sys.stderr, flush=True)
                row: dict[str, Any] = {"model": model, "method": method, "N": n, "B": args.B}
                chunk = args.batch_size if method == "tfmollify_sg" else args.floor_chunk
                row["batch_size"] = chunk
                try:
                    proc = subprocess.run(
                        cmd, capture_output=True, text=True, timeout=args.timeout, check=False
                    )
                    lines = proc.stdout.strip().splitlines()
                    if proc.returncode == 0 and lines:
                        row.update(json.loads(lines[-1]))
                    else:
                        row["error"] = f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
                except subprocess.TimeoutExpired:
                    row["error"] = f"timeout after {args.timeout} s"
                print(f"   {row}", file=sys.stderr, flush=True)
                rows.append(row)

    def f(v: Any) -> str:
        return f"{v:.0f}" if isinstance(v, float) else "-"

    header = "| model | method | B | N | batch/chunk | setup RSS | first-call peak | steady peak | "
    header += "delta | ru_maxrss | note |"
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['method']} | {r['B']} | {r['N']} | {r['batch_size'] or '-'} | "
            f"{f(r.get('setup_rss_mb'))} | {f(r.get('first_peak_mb'))} | "
            f"{f(r.get('steady_peak_mb'))} | {f(r.get('delta_mb'))} | "
            f"{f(r.get('ru_maxrss_mb'))} | {r.get('error', '')} |"
        )
    print("Memory in MiB (RSS high-water; delta = max peak - setup RSS before the first call)\n")
    print("\n".join(lines))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"argv": sys.argv, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"wrote {args.json}", file=sys.stderr)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

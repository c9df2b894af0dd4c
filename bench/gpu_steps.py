"""The measurement steps of ``bench/gpu.py``; each runs in its own worker process.

A step gets a :class:`Context` (its name, smoke or full sizes, the output folder and the time by
which it must be done) and a :class:`Record`, the step's JSON file, which it rewrites after every
sub-measurement: when the parent stops a step at its budget, what was measured is already on
disk. Every step checks the clock before each sub-measurement and skips the rest (recorded as
``skipped: out of step budget``) when too little time is left.

Only the public tfmollify API is used (``import tfmollify as tfm``); the models, the inputs and
the floor come from :mod:`harness`. TensorFlow is imported inside the steps, never at module
level, so that the parent process (``gpu.py``) never touches the GPU.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memory import reset_hwm, status_kb

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
MB = 2**20
BUDGET_SKIP = "out of step budget"  # a sub-measurement left out for time: the step is partial

# explain() on the GPU vs the CPU: the same ops, other kernels and summation orders
TOL_FLOAT64 = 1e-9  # float64 tanh MLP: max |gpu - cpu| / max |cpu|
TOL_FLOAT32 = 1e-4  # float32 tanh CNN, TF32 off: float32 rounding only
TOL_TF32 = 2e-2  # the same CNN with TF32 on (TensorFlow's default on Ampere and newer): 10-bit


def log(msg: str) -> None:
    """Progress to stderr (the parent copies it into ``<step>.log``)."""
    print(msg, file=sys.stderr, flush=True)


def jsonable(value: Any) -> Any:
    """``json.dumps`` fallback for NumPy values, paths and anything else (as text)."""
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover - numpy comes with TensorFlow
        pass
    if isinstance(value, Path):
        return str(value)
    return str(value)


@dataclasses.dataclass
class Context:
    """What a step needs to know about its run.

    Attributes:
        step: The step's name.
        smoke: Tiny sizes on CPU instead of the GPU sizes.
        out: The output folder.
        deadline: ``time.time()`` by which the step must have written its JSON and exited.
    """

    step: str
    smoke: bool
    out: Path
    deadline: float

    def remaining(self) -> float:
        """Seconds left before the deadline."""
        return self.deadline - time.time()

    def has(self, seconds: float) -> bool:
        """Whether at least ``seconds`` are left."""
        return self.remaining() >= seconds


class Record:
    """The JSON file of one step (``<out>/<step>.json``), rewritten after every change."""

    def __init__(self, ctx: Context) -> None:
        self.path = ctx.out / f"{ctx.step}.json"
        self.data: dict[str, Any] = {
            "step": ctx.step,
            "smoke": ctx.smoke,
            "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "rows": [],
            "notes": [],
        }
        self.save()

    def save(self) -> None:
        """Writes the file atomically (a killed step never leaves half a JSON file)."""
        self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=jsonable))
        tmp.replace(self.path)

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        """Appends a row (a dict that may be updated later, then :meth:`save`)."""
        self.data["rows"].append(row)
        self.save()
        return row

    def note(self, text: str) -> None:
        """Adds a note and logs it."""
        self.data["notes"].append(text)
        log(f"  note: {text}")
        self.save()

    def skip(self, row: dict[str, Any], reason: str = BUDGET_SKIP) -> None:
        """Records a sub-measurement that was not run."""
        self.add({**row, "skipped": reason})
        log(f"  skipped {row.get('name', row)}: {reason}")


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _imports() -> tuple[Any, Any, Any, Any]:
    """``(tf, keras, tfm, harness)``: harness first (it sets TensorFlow's logging)."""
    for path in (str(BENCH_DIR), str(REPO_ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)
    import harness
    import keras
    import tensorflow as tf

    import tfmollify as tfm

    return tf, keras, tfm, harness


def has_gpu(tf: Any) -> bool:
    """Whether TensorFlow sees a GPU."""
    return bool(tf.config.list_physical_devices("GPU"))


def gpu_memory(tf: Any) -> dict[str, int] | None:
    """``get_memory_info('GPU:0')`` (``current``, ``peak`` in bytes), or None without a GPU."""
    try:
        return dict(tf.config.experimental.get_memory_info("GPU:0"))
    except (ValueError, RuntimeError):
        return None


def reset_gpu_peak(tf: Any) -> bool:
    """``reset_memory_stats('GPU:0')``; False where it is not available."""
    try:
        tf.config.experimental.reset_memory_stats("GPU:0")
    except (ValueError, RuntimeError):
        return False
    return True


def reset_rss_peak() -> bool:
    """Resets the RSS high-water mark (``VmHWM``); False where the kernel does not allow it."""
    return reset_hwm() and status_kb("VmHWM") is not None


def summarize(times: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max of timings (seconds); empty without timings."""
    ts = sorted(times)
    if not ts:
        return {}
    q1, q3 = (statistics.quantiles(ts, n=4, method="inclusive")[::2] if len(ts) >= 2
              else (ts[0], ts[0]))
    return {"median_s": statistics.median(ts), "q1_s": q1, "q3_s": q3, "min_s": ts[0],
            "max_s": ts[-1]}


def time_calls(fn: Callable[[], Any], repeats: int, ctx: Context, row: dict[str, Any],
               rec: Record, reserve: float = 2.0) -> Any:
    """Times ``fn``: the first call (trace + one run), then up to ``repeats`` warm calls.

    The row is saved after the first call and after every warm call; warm calls stop when the
    next one (estimated by the last one) would not end ``reserve`` seconds before the deadline.

    Returns:
        The result of the last call.
    """
    t0 = time.perf_counter()
    out = fn()
    row["first_s"] = time.perf_counter() - t0
    row["times"] = []
    rec.save()
    log(f"    {row.get('name')}: first call {row['first_s']:.3g} s")
    while len(row["times"]) < repeats:
        estimate = row["times"][-1] if row["times"] else row["first_s"] / 2
        if not ctx.has(1.2 * estimate + reserve):
            row["stopped"] = f"out of step budget after {len(row['times'])} warm calls"
            break
        t0 = time.perf_counter()
        out = fn()
        row["times"].append(time.perf_counter() - t0)
        row.update(summarize(row["times"]))
        rec.save()
    if row["times"]:
        log(f"    {row.get('name')}: median {row['median_s']:.3g} s of {len(row['times'])}")
    return out


def error_text(err: BaseException) -> str:
    """A short ``Type: message`` (OOM marked as such)."""
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    if "ResourceExhausted" in text or "OOM" in text or "out of memory" in text.lower():
        text = "OOM: " + text
    return text[:400]


def rel_diff(a: Any, b: Any) -> float:
    """``||a - b|| / ||b||`` in float64."""
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def max_rel_err(a: Any, b: Any) -> float:
    """``max |a - b| / max |b|`` in float64."""
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def run_subprocess(cmd: list[str], timeout: float, stdout: Path, stderr: Path,
                   env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs a command in its own process group; kills the whole group at ``timeout``.

    Returns:
        ``{"rc", "wall_s", "timed_out"}``; ``rc`` is None when it was killed.
    """
    t0 = time.time()
    with stdout.open("w") as out, stderr.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO_ROOT, env=env,
                                start_new_session=True)
        _CHILDREN.add(proc)
        try:
            rc: int | None = proc.wait(timeout=max(timeout, 1.0))
            timed_out = False
        except subprocess.TimeoutExpired:
            kill_group(proc)
            rc, timed_out = None, True
        finally:
            _CHILDREN.discard(proc)
    return {"rc": rc, "wall_s": time.time() - t0, "timed_out": timed_out}


_CHILDREN: set[subprocess.Popen] = set()


def _on_sigterm(signum: int, frame: Any) -> None:
    """The parent stops this worker at its budget: stop its own subprocesses (each in its own
    process group) too, then exit. The step's JSON is already on disk."""
    for proc in list(_CHILDREN):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os._exit(128 + signum)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group of ``proc`` (started with ``start_new_session``), then
    SIGKILL after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# --------------------------------------------------------------------------------------------
# 1. env
# --------------------------------------------------------------------------------------------


def _nvidia_smi() -> dict[str, Any]:
    """``nvidia-smi`` name, driver, memory and compute capability, or why not."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"error": "nvidia-smi not on PATH"}
    fields = "name,driver_version,memory.total,compute_cap"
    try:
        proc = subprocess.run([exe, f"--query-gpu={fields}", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"error": error_text(err)}
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip()[:300]}
    gpus = [dict(zip(fields.split(","), (v.strip() for v in line.split(",")), strict=False))
            for line in proc.stdout.strip().splitlines()]
    return {"gpus": gpus}


def _git_commit() -> str | None:
    """The checked-out commit, ``+dirty`` with changes under ``tfmollify/`` (read-only git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tfmollify"],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=10,
                               check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def step_env(ctx: Context, rec: Record) -> int:
    """Device, driver, TensorFlow and CUDA/cuDNN build; exit 2 without a GPU (unless smoke)."""
    tf, keras, tfm, _ = _imports()
    import numpy as np

    gpus = tf.config.list_physical_devices("GPU")
    details = []
    for dev in gpus:
        try:
            details.append(dict(tf.config.experimental.get_device_details(dev)))
        except (ValueError, RuntimeError) as err:
            details.append({"error": error_text(err)})
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "tfmollify": getattr(tfm, "__version__", "?"),
        "tfmollify_file": tfm.__file__,
        "git": _git_commit(),
        "build_info": {k: str(v) for k, v in dict(tf.sysconfig.get_build_info()).items()},
        "physical_gpus": [str(d) for d in gpus],
        "gpu_details": details,
        "tf32_enabled": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
        "nvidia_smi": _nvidia_smi(),
        "env": {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "TF_FORCE_GPU_ALLOW_GROWTH",
                                           "XLA_FLAGS", "TF_XLA_FLAGS") if k in os.environ},
    }
    if gpus:
        with tf.device("/GPU:0"):
            probe = tf.reduce_sum(tf.ones([1024, 1024]))
        info["probe_device"] = probe.device
    rec.data["info"] = info
    for key in ("tensorflow", "physical_gpus", "build_info", "tf32_enabled", "nvidia_smi"):
        log(f"  {key}: {info[key]}")
    if not gpus:
        msg = "no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty)"
        if ctx.smoke:
            rec.note(msg + "; smoke mode continues on CPU")
            return 0
        rec.data["error"] = msg
        log(f"  ERROR: {msg}")
        return 2
    return 0


# --------------------------------------------------------------------------------------------
# 2. fg_vgg16
# --------------------------------------------------------------------------------------------


def step_fg_vgg16(ctx: Context, rec: Record) -> int:
    """FusionGrad M = N = 50 on one 224x224x3 VGG16 input: tfmollify against the floor.

    Sub-measurements in order of importance: the float32 floor (chunked at the first batch
    size) and tfmollify at that batch size, the same two under ``mixed_float16``, the other
    batch sizes (``None`` last: all 2,500 evaluations in one pass may not fit), XLA.
    """
    tf, keras, tfm, harness = _imports()
    import numpy as np

    if ctx.smoke:
        # the bench LeNet (32x32x3) stands in for VGG16: on 2 shared cores a VGG16 even at
        # 32x32 takes most of the smoke budget (its 34M weights get noise on every draw)
        cfg = {"model": "lenet", "shape": (32, 32, 3), "m": 4, "n": 4,
               "batch_sizes": [8, 16, None], "repeats": 2, "min_start_s": 3.0}
    else:
        cfg = {"model": "vgg16", "shape": (224, 224, 3), "m": 50, "n": 50,
               "batch_sizes": [250, 500, None], "repeats": 3, "min_start_s": 15.0}
    cfg.update(sigma=0.15, weight_epsilon=0.2, kernel="gaussian", seed=0, B=1,
               tf32_enabled=bool(tf.config.experimental.tensor_float_32_execution_enabled()))
    rec.data["config"] = cfg
    gpu = has_gpu(tf)
    evals = cfg["m"] * cfg["n"]
    x, t = harness.make_inputs(cfg["shape"], 1, 1000, seed=0)
    xt, tt = tf.constant(x), tf.constant(t)
    models: dict[str, Any] = {}

    def model(policy: str) -> Any:
        if policy not in models:
            old = keras.config.dtype_policy().name
            keras.config.set_dtype_policy(policy)
            try:  # both models follow the global policy set here
                if cfg["model"] == "vgg16":
                    keras.utils.set_random_seed(0)
                    models[policy] = keras.applications.VGG16(
                        weights=None, input_shape=cfg["shape"], classifier_activation=None)
                else:
                    models[policy] = harness.build_model(cfg["model"], seed=0)
            finally:
                keras.config.set_dtype_policy(old)
            if policy != "float32" and "float32" in models:  # the same weights
                models[policy].set_weights(models["float32"].get_weights())
        return models[policy]

    bs0, *others = cfg["batch_sizes"]
    # A FusionGrad pass holds input draws of ONE weight draw (at most N rows per example), so
    # for B = 1 every batch_size >= N gives the same passes; the floor chunked at N rows
    # (`x floor_N`) has tfmollify's pass shape, the floor at bs0 fewer, larger passes.
    plan: list[tuple[str, str, int | None, bool]] = [
        ("floor", "float32", bs0, False), ("tfmollify_fg", "float32", bs0, False),
        ("floor", "mixed_float16", bs0, False), ("tfmollify_fg", "mixed_float16", bs0, False),
        ("floor", "float32", cfg["n"], False),
    ]
    plan += [("tfmollify_fg", p, bs, False) for bs in others
             for p in ("float32", "mixed_float16")]
    plan.append(("tfmollify_fg", "float32", bs0, True))
    floors: dict[tuple[str, int | None], float] = {}

    def ratios() -> None:
        """``x floor`` (same policy, chunks of bs0) and ``x floor_N`` (float32, chunks of N)."""
        for r in rec.data["rows"]:
            if r.get("method") != "tfmollify_fg" or not r.get("median_s"):
                continue
            if (r["policy"], bs0) in floors:
                r["x_floor"] = r["median_s"] / floors[(r["policy"], bs0)]
            if ("float32", cfg["n"]) in floors:
                r["x_floor_N"] = r["median_s"] / floors[("float32", cfg["n"])]

    results: dict[tuple[str, int | None], Any] = {}
    failed = False
    for method, policy, bs, jit in plan:
        name = f"{method} {policy} bs={bs}" + (" jit" if jit else "")
        row: dict[str, Any] = {"name": name, "method": method, "policy": policy,
                               "batch_size": bs, "jit_compile": jit, "evals": evals}
        if not ctx.has(cfg["min_start_s"]):
            rec.skip(row)
            continue
        rec.add(row)
        log(f"  {name}")
        try:
            net = model(policy)
            if method == "floor":
                floor = harness.SeededCall(harness.make_floor(
                    net, cfg["shape"], evals, cfg["sigma"], chunk=bs))
                row["note"] = f"SG floor: {evals} noisy rows, while_loop chunks of {bs}"

                def call(f: Any = floor) -> Any:
                    return f(xt, tt).numpy()
            else:
                explainer = tfm.FusionGrad(
                    net, kernel=cfg["kernel"], num_samples=cfg["n"],
                    num_weight_samples=cfg["m"], epsilon=cfg["sigma"],
                    weight_epsilon=cfg["weight_epsilon"], seed=cfg["seed"], batch_size=bs,
                    jit_compile=jit)

                def call(e: Any = explainer) -> Any:
                    return np.asarray(e(xt, tt))
            reset_gpu_peak(tf)
            out = time_calls(call, cfg["repeats"], ctx, row, rec)
            mem = gpu_memory(tf)
            if mem:
                row["gpu_peak_mb"] = mem["peak"] / MB
            row["finite"] = bool(np.all(np.isfinite(out)))
            failed |= not row["finite"]
            if row.get("median_s"):
                row["per_example_s"] = row["median_s"] / cfg["B"]
                row["us_per_eval"] = 1e6 * row["median_s"] / (evals * cfg["B"])
            if method == "floor" and row.get("median_s"):
                floors[(policy, bs)] = row["median_s"]
            ratios()
            if method == "tfmollify_fg":
                if policy != "float32" and ("float32", bs) in results:
                    row["rel_diff_vs_float32"] = rel_diff(out, results[("float32", bs)])
                if policy == "float32" and not jit and ("float32", bs0) in results:
                    row["rel_diff_vs_bs0"] = rel_diff(out, results[("float32", bs0)])
                if jit and ("float32", bs0) in results:
                    row["rel_diff_vs_no_jit"] = rel_diff(out, results[("float32", bs0)])
                if not jit:
                    results[(policy, bs)] = out
        except Exception as err:  # one failed configuration (e.g. OOM) must not stop the rest
            row["error"] = error_text(err)
            log(f"    ERROR {row['error']}")
        finally:  # drop the explainer and its buffers before the next row
            call = explainer = floor = None
            gc.collect()
        rec.save()
    if not gpu:
        rec.note("no GPU: CPU timings at smoke sizes, not comparable with the GPU target")
    return 1 if failed else 0


# --------------------------------------------------------------------------------------------
# 3. bench
# --------------------------------------------------------------------------------------------


def _bench_rows(smoke: bool) -> list[tuple[str, list[str]]]:
    """``bench/bench.py`` runs of the bench step, in order of importance."""
    if smoke:
        common = ["--model", "mlp", "-B", "2", "--repeats", "2", "--warmup", "0"]
        return [
            ("mlp_sg", [*common, "--mode", "sg", "-N", "5", "--methods", "floor,tfmollify_sg"]),
            ("mlp_fg", [*common, "--mode", "fg", "-M", "2", "-N", "3", "--methods",
                        "baseline_fg,tfmollify_fg,tfmollify_sg_MN,floor_MN"]),
            ("jit", []),  # NG is in the jit table
        ]
    mob = ["--model", "mobilenetv2", "-B", "8", "--batch-size", "200", "--repeats", "3",
           "--warmup", "1"]
    lenet = ["--model", "lenet", "-B", "8", "--repeats", "5", "--warmup", "1"]
    return [
        ("mobilenetv2_sg", [*mob, "--mode", "sg", "-N", "50", "--methods",
                            "floor,floor_chunked,tfmollify_sg,xplique_sg,tf_explain,"
                            "tf_keras_vis"]),
        ("mobilenetv2_fg", [*mob, "--mode", "fg", "-M", "10", "-N", "10", "--methods",
                            "baseline_fg,tfmollify_fg,tfmollify_sg_MN,floor_MN"]),
        ("mobilenetv2_ng", [*mob, "--mode", "ng", "-M", "10", "--methods",
                            "baseline_ng,tfmollify_ng"]),
        ("jit", []),  # the jit_compile table, timed here (bench.py has no jit switch)
        ("lenet_sg", [*lenet, "--mode", "sg", "-N", "50", "--methods",
                      "floor,tfmollify_sg,xplique_sg,tf_explain"]),
        ("lenet_fg", [*lenet, "--mode", "fg", "-M", "10", "-N", "10", "--methods",
                      "baseline_fg,baseline_fg_loop,tfmollify_fg,tfmollify_sg_MN,floor_MN"]),
        ("lenet_ng", [*lenet, "--mode", "ng", "-M", "10", "--methods",
                      "baseline_ng,tfmollify_ng"]),
    ]


def _jit_table(ctx: Context, rec: Record) -> None:
    """tfmollify SG/NG/FG with ``jit_compile=False`` and ``True`` on the bench models."""
    tf, _, tfm, harness = _imports()
    import numpy as np

    if ctx.smoke:
        cases = [("mlp", None, 2)]
        sizes = {"sg": {"num_samples": 5}, "ng": {"num_weight_samples": 3},
                 "fg": {"num_samples": 3, "num_weight_samples": 2}}
        repeats, min_start = 2, 5.0
    else:
        cases = [("lenet", None, 8), ("mobilenetv2", 200, 8)]
        sizes = {"sg": {"num_samples": 50}, "ng": {"num_weight_samples": 10},
                 "fg": {"num_samples": 10, "num_weight_samples": 10}}
        repeats, min_start = 3, 20.0
    cls = {"sg": tfm.SmoothGrad, "ng": tfm.NoiseGrad, "fg": tfm.FusionGrad}
    for model_name, bs, b in cases:
        model = harness.build_model(model_name, seed=0)
        x, t = harness.make_inputs(harness.input_shape_of(model_name), b,
                                   harness.num_classes_of(model), seed=0)
        xt, tt = tf.constant(x), tf.constant(t)
        for mode in ("sg", "fg", "ng"):
            outs = {}
            for jit in (False, True):
                name = f"{model_name} {mode} jit_compile={jit}"
                row = {"name": name, "table": "jit", "model": model_name, "mode": mode,
                       "B": b, "batch_size": bs, "jit_compile": jit, **sizes[mode]}
                if not ctx.has(min_start):
                    rec.skip(row)
                    continue
                rec.add(row)
                try:
                    explainer = cls[mode](model, kernel="gaussian", epsilon=0.15, seed=0,
                                          batch_size=bs, jit_compile=jit, **sizes[mode])
                    outs[jit] = time_calls(
                        lambda e=explainer, x=xt, t=tt: np.asarray(e(x, t)), repeats, ctx, row,
                        rec)
                except Exception as err:
                    row["error"] = error_text(err)
                    log(f"    ERROR {row['error']}")
                rec.save()
            rows = [r for r in rec.data["rows"] if r.get("table") == "jit"
                    and r.get("model") == model_name and r.get("mode") == mode]
            med = {r["jit_compile"]: r.get("median_s") for r in rows}
            if med.get(True) and med.get(False):
                rows[-1]["x_no_jit"] = med[True] / med[False]
            if True in outs and False in outs:
                rows[-1]["max_rel_err_vs_no_jit"] = max_rel_err(outs[True], outs[False])
            rec.save()


def step_bench(ctx: Context, rec: Record) -> int:
    """SG/NG/FG against the floor, the baselines and the peers (``bench/bench.py --json``),
    and tfmollify with ``jit_compile`` on and off (bench.py has no such switch)."""
    folder = ctx.out / "bench"
    if folder.is_dir():  # this run's files only
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    min_start = 10.0 if ctx.smoke else 30.0
    failed = False
    for name, args in _bench_rows(ctx.smoke):
        if name == "jit":
            if not ctx.has(min_start):
                rec.skip({"name": "jit table"})
                continue
            try:
                _jit_table(ctx, rec)
            except Exception as err:
                rec.add({"name": "jit table", "error": error_text(err)})
                failed = True
            continue
        row: dict[str, Any] = {"name": name, "table": "bench.py", "args": args}
        if not ctx.has(min_start):
            rec.skip(row)
            continue
        rec.add(row)
        out_json = folder / f"{name}.json"
        cmd = [sys.executable, str(BENCH_DIR / "bench.py"), *args, "--json", str(out_json)]
        log(f"  {' '.join(cmd[1:])}")
        res = run_subprocess(cmd, ctx.remaining() - 3.0, folder / f"{name}.md",
                             folder / f"{name}.log")
        row.update(res)
        if res["timed_out"]:
            row["error"] = f"stopped at the step budget after {res['wall_s']:.0f} s"
        elif res["rc"] != 0:
            tail = (folder / f"{name}.log").read_text()[-400:]
            row["error"] = f"exit {res['rc']}: {tail}"
            failed = True
        if out_json.exists():
            payload = json.loads(out_json.read_text())
            row["json"] = str(out_json.relative_to(ctx.out))
            row["results"] = [
                {k: r.get(k) for k in ("model", "mode", "method", "first_s", "median_s",
                                       "q1_s", "q3_s", "ratio", "reference", "grad_evals",
                                       "note", "error", "skipped")}
                for r in payload.get("results", [])
            ]
        log(f"    {name}: rc {res['rc']} in {res['wall_s']:.1f} s")
        rec.save()
    return 1 if failed else 0


# --------------------------------------------------------------------------------------------
# 4. tests
# --------------------------------------------------------------------------------------------

# (file, -k expression): engine equality with the reference, batch-size and chunk invariance,
# seeds, XLA, mixed precision, export equality; in file order, the most important first
TESTS_FULL = [
    ("tests/test_engine.py",
     "(test_matches_reference_mlp_with_the_same_noise and (-smoothgrad- or vargrad-gaussian))"
     " or test_result_does_not_depend_on_batch_size"
     " or test_an_example_alone_equals_the_same_example_in_a_batch"
     " or (test_seeds and not argument) or test_no_retracing_across_calls"
     " or test_xla_gives_the_same_noise_and_result"
     " or test_mixed_precision_is_finite_and_close_to_float32"),
    ("tests/test_engine_properties.py",
     "test_result_does_not_depend_on_batch_size"
     " or test_an_example_alone_equals_the_example_inside_a_batch"
     " or test_export_equals_the_explainer"),
    ("tests/test_serving.py",
     "test_served_equals_explain or test_one_example_alone_equals_it_inside_a_batch"),
]
TESTS_SMOKE = [
    ("tests/test_engine.py",
     "(test_matches_reference_mlp_with_the_same_noise and gradient-smoothgrad-gaussian"
     " and not input_x and not integrated)"
     " or (test_result_does_not_depend_on_batch_size and gradient-sg and not input_x"
     " and not integrated)"
     " or test_an_example_alone_equals_the_same_example_in_a_batch"),
]


def _pytest_counts(text: str) -> dict[str, int]:
    """Counts from pytest's final line (``3 passed, 1 failed, 5 deselected in 2.0s``), else
    from the ``-q`` progress characters (a run stopped before its final line)."""
    counts: dict[str, int] = {}
    final = [ln for ln in text.splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    if final:
        for num, what in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed"
                                    r"|xpassed)", final[-1]):
            counts["error" if what.startswith("error") else what] = int(num)
        return counts
    progress = "".join(m.group(1) for m in re.finditer(r"^([.FEsxX]+)\s*(\[\s*\d+%\])?\s*$",
                                                       text, re.MULTILINE))
    for ch, what in ((".", "passed"), ("F", "failed"), ("E", "error"), ("s", "skipped")):
        if progress.count(ch):
            counts[what] = progress.count(ch)
    counts["incomplete"] = 1
    return counts


def _noise_checks(ctx: Context, rec: Record, devices: tuple[str, str]) -> bool:
    """The same seed gives the same noise on both devices, bit for bit
    (``tfm.sampling.input_noise``, every kernel, sampler and float type)."""
    tf, _, tfm, _ = _imports()
    import numpy as np

    size = 3 * 32 * 32 if ctx.smoke else 224 * 224 * 3
    count = 8
    seeds = tfm.sampling.example_seeds(0, 3)
    ok = True
    for dtype in (tf.float32, tf.float64):
        # where the Philox bits were drawn: evidence that the GPU scope really ran on the GPU
        where = {}
        bits = {}
        for dev in devices:
            with tf.device(dev):
                keys = tfm.sampling.example_keys(tf.constant(seeds, tf.int64))
                b = tfm.sampling.example_bits(keys, 0, count, size, tfm.sampling.INPUT_STREAM,
                                              dtype)
            where[dev], bits[dev] = b.device, b.numpy()
        equal = bool(np.array_equal(bits[devices[0]], bits[devices[1]]))
        ok &= equal
        rec.add({"name": f"philox bits {dtype.name}", "check": "noise", "dtype": dtype.name,
                 "kernel": "-", "sampler": "iid", "bits_equal": equal, "placed_on": where,
                 "passed": equal})
        for kernel in tfm.kernels.names():
            for sampler, kw in (("iid", {}), ("antithetic", {"antithetic": True}),
                                ("sobol", {"sobol": 4})):
                noise = {}
                for dev in devices:
                    with tf.device(dev):
                        noise[dev] = tfm.sampling.input_noise(
                            tfm.kernels.get(kernel), seeds, 0, count, size, dtype, **kw)
                a, b = noise[devices[0]], noise[devices[1]]
                equal = bool(np.array_equal(a, b))
                row = {"name": f"noise {kernel} {sampler} {dtype.name}", "check": "noise",
                       "kernel": kernel, "sampler": sampler, "dtype": dtype.name,
                       "noise_equal": equal, "passed": equal}
                if not equal:
                    finite = np.isfinite(a) & np.isfinite(b)
                    ulp = np.abs(a - b)[finite] / np.spacing(np.abs(b[finite]).astype(a.dtype))
                    row.update(max_abs_diff=float(np.max(np.abs(a - b)[finite])),
                               max_ulp=float(np.max(ulp)) if ulp.size else None,
                               unequal_fraction=float(np.mean(a != b)))
                ok &= equal
                rec.add(row)
    return ok


def _explain_checks(ctx: Context, rec: Record, devices: tuple[str, str]) -> bool:
    """explain() on both devices agrees up to float rounding (tolerances at module top)."""
    tf, keras, tfm, _ = _imports()
    import numpy as np

    def tanh_mlp() -> Any:
        keras.utils.set_random_seed(1)
        return keras.Sequential([keras.Input((20,), dtype="float64"),
                                 keras.layers.Dense(16, activation="tanh", dtype="float64"),
                                 keras.layers.Dense(4, dtype="float64")])

    def tanh_cnn() -> Any:
        keras.utils.set_random_seed(2)
        return keras.Sequential([keras.Input((16, 16, 3)),
                                 keras.layers.Conv2D(8, 3, activation="tanh"),
                                 keras.layers.Conv2D(8, 3, activation="tanh"),
                                 keras.layers.Flatten(), keras.layers.Dense(4)])

    rng = np.random.default_rng(0)
    cnn, images = tanh_cnn(), rng.uniform(size=(3, 16, 16, 3)).astype(np.float32)
    cases = [("float64 tanh MLP", tanh_mlp(), rng.normal(size=(3, 20)), TOL_FLOAT64, False),
             ("float32 tanh CNN, TF32 off", cnn, images, TOL_FLOAT32, False),
             ("float32 tanh CNN, TF32 on", cnn, images, TOL_TF32, True)]
    ok = True
    gpu = has_gpu(tf)
    modes = ("sg", "ng", "fg") if gpu or not ctx.smoke else ("sg", "fg")
    tf32_default = tf.config.experimental.tensor_float_32_execution_enabled()
    for label, model, x, tol, tf32 in cases:
        if tf32 and not gpu:
            rec.skip({"name": f"explain {label}", "check": "explain", "case": label},
                     "no GPU: TF32 does not apply")
            continue
        tf.config.experimental.enable_tensor_float_32_execution(tf32)
        try:
            for mode in modes:
                if not ctx.has(3.0):
                    rec.skip({"name": f"explain {label} {mode}", "check": "explain"})
                    continue
                out = {}
                for dev in devices:
                    with tf.device(dev):  # a fresh explainer: traced inside the scope
                        e = tfm.Explainer(model, mode=mode, num_samples=8,
                                          num_weight_samples=4, seed=3, batch_size=7)
                        out[dev] = e(x, [0, 1, 2])
                err = max_rel_err(out[devices[0]], out[devices[1]])
                passed = bool(np.all(np.isfinite(out[devices[0]])) and err <= tol)
                ok &= passed
                rec.add({"name": f"explain {label} {mode}", "check": "explain", "mode": mode,
                         "case": label, "max_rel_err": err, "tolerance": tol,
                         "passed": passed})
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(tf32_default)
    return ok


def step_tests(ctx: Context, rec: Record) -> int:
    """Direct GPU-vs-CPU checks (noise bit for bit, explain() to rounding), then a fast subset
    of the test suite on the GPU (pytest ``-x -q`` in a subprocess, stopped at the budget)."""
    tf, _, _, _ = _imports()
    gpu = has_gpu(tf)
    devices = ("/GPU:0", "/CPU:0") if gpu else ("/CPU:0", "/CPU:0")
    rec.data["devices"] = list(devices)
    if not gpu:
        rec.note("no GPU: the device checks compare /CPU:0 with /CPU:0 (plumbing only)")
    rec.data["tolerances"] = {"float64": TOL_FLOAT64, "float32_no_tf32": TOL_FLOAT32,
                              "float32_tf32": TOL_TF32,
                              "metric": "max |a - b| / max |b| over the batch"}
    ok = True
    for name, fn in (("noise", _noise_checks), ("explain", _explain_checks)):
        try:
            ok &= fn(ctx, rec, devices)
        except Exception as err:
            rec.add({"name": f"{name} checks", "check": name, "error": error_text(err),
                     "passed": False})
            ok = False
    # the pytest subset
    selection = TESTS_SMOKE if ctx.smoke else TESTS_FULL
    present = [(f, k) for f, k in selection if (REPO_ROOT / f).exists()]
    for f, _ in selection:
        if (f, _) not in present:
            rec.note(f"{f} not found; left out")
    missing = [m for m in ("pytest", "hypothesis", "scipy", "sympy") if not _importable(m)]
    row: dict[str, Any] = {"name": "pytest subset", "check": "pytest",
                           "files": [f for f, _ in present]}
    if missing:
        rec.skip(row, f"not importable here: {', '.join(missing)}")
        return 0 if ok else 1
    if not ctx.has(15.0):
        rec.skip(row)
        return 0 if ok else 1
    expr = " or ".join(f"({k})" for _, k in present)
    junit = ctx.out / "tests-junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
           f"--junitxml={junit}", *(f for f, _ in present), "-k", expr]
    row["command"] = " ".join(cmd[1:])
    rec.add(row)
    log(f"  pytest on {', '.join(f for f, _ in present)}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    res = run_subprocess(cmd, ctx.remaining() - 2.0, ctx.out / "tests-pytest.log",
                         ctx.out / "tests-pytest.stderr.log", env=env)
    text = (ctx.out / "tests-pytest.log").read_text()
    row.update(res, counts=_pytest_counts(text))
    failures = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.MULTILINE)
    if failures:
        row["failures"] = failures[:20]
    if res["timed_out"]:
        row["stopped"] = f"stopped at the step budget after {res['wall_s']:.0f} s"
    row["passed"] = res["rc"] == 0
    ok &= res["rc"] in (0, None)  # a run stopped at the budget is partial, not failed
    rec.save()
    log(f"  pytest: {row['counts']} rc {res['rc']}")
    return 0 if ok else 1


def _importable(module: str) -> bool:
    """Whether ``module`` can be found by this interpreter (without importing it)."""
    import importlib.util

    return importlib.util.find_spec(module) is not None


# --------------------------------------------------------------------------------------------
# 5. memory
# --------------------------------------------------------------------------------------------


def step_memory(ctx: Context, rec: Record) -> int:
    """Peak memory of SmoothGrad with ``batch_size`` set as N grows, and of the one-pass floor.

    GPU: ``get_memory_info('GPU:0')['peak']`` after ``reset_memory_stats``. CPU (smoke): the
    same where TensorFlow offers it, else the process's RSS high-water mark (``VmHWM``, reset
    through ``/proc/self/clear_refs``).
    """
    tf, keras, tfm, harness = _imports()
    import numpy as np

    gpu = has_gpu(tf)
    if ctx.smoke:
        cfg = {"model": "lenet", "shape": (32, 32, 3), "B": 2, "N": [5, 10, 20],
               "batch_size": 8, "min_start_s": 3.0}
        model = harness.build_model("lenet", seed=0)
    else:
        cfg = {"model": "resnet50@64x64", "shape": (64, 64, 3), "B": 4, "N": [50, 200, 1000],
               "batch_size": 128, "min_start_s": 8.0}
        keras.utils.set_random_seed(0)
        model = keras.applications.ResNet50(weights=None, input_shape=cfg["shape"],
                                            classifier_activation=None)
    how = "gpu get_memory_info peak" if gpu else ("rss VmHWM" if reset_rss_peak() else None)
    cfg["how"] = how
    rec.data["config"] = cfg
    if how is None:
        rec.note("no GPU and no way to read a peak (no /proc/self/clear_refs): nothing measured")
        return 0
    x, t = harness.make_inputs(cfg["shape"], cfg["B"], harness.num_classes_of(model), seed=0)
    xt, tt = tf.constant(x), tf.constant(t)

    def current() -> float:
        if gpu:
            return (gpu_memory(tf) or {}).get("current", 0) / MB
        return (status_kb("VmRSS") or 0) / 1024

    def peak_of(fn: Callable[[], Any]) -> tuple[float, float, float]:
        """(memory before, peak during) one call, in MiB, and its wall time in seconds."""
        before = current()
        if gpu:
            reset_gpu_peak(tf)
        else:
            reset_rss_peak()
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        peak = ((gpu_memory(tf) or {}).get("peak", 0) / MB if gpu
                else (status_kb("VmHWM") or 0) / 1024)
        return before, peak, dt

    plan = [("tfmollify_sg", n) for n in cfg["N"]] + [("floor", n) for n in cfg["N"]]
    for method, n in plan:
        bs = cfg["batch_size"] if method == "tfmollify_sg" else None
        row = {"name": f"{method} N={n}", "method": method, "N": n, "B": cfg["B"],
               "batch_size": bs, "how": how}
        if not ctx.has(cfg["min_start_s"]):
            rec.skip(row)
            continue
        rec.add(row)
        try:
            if method == "floor":
                fn = harness.SeededCall(harness.make_floor(model, cfg["shape"], n, 0.15))

                def call(f: Any = fn) -> Any:
                    return f(xt, tt).numpy()
            else:
                explainer = tfm.SmoothGrad(model, kernel="gaussian", num_samples=n,
                                           epsilon=0.15, seed=0, batch_size=bs)

                def call(e: Any = explainer) -> Any:
                    return np.asarray(e(xt, tt))
            before, first_peak, first_s = peak_of(call)
            row.update(before_mb=before, first_peak_mb=first_peak, first_s=first_s)
            rec.save()
            if ctx.has(first_s + 2):
                _, steady_peak, steady_s = peak_of(call)
                row.update(steady_peak_mb=steady_peak, steady_s=steady_s)
            row["delta_mb"] = max(row["first_peak_mb"], row.get("steady_peak_mb", 0)) - before
        except Exception as err:
            row["error"] = error_text(err)
            log(f"    ERROR {row['error']}")
        finally:  # drop the explainer and its buffers before the next configuration
            call = explainer = fn = None
            gc.collect()
        rec.save()
        log(f"  {row['name']}: {row.get('first_peak_mb', '-')} MiB peak")
    rows = {(r.get("method"), r.get("N")): r for r in rec.data["rows"]}
    lo, hi = cfg["N"][0], cfg["N"][-1]
    a, b = rows.get(("tfmollify_sg", lo), {}), rows.get(("tfmollify_sg", hi), {})
    if a.get("first_peak_mb") and b.get("first_peak_mb"):
        rec.data["ratio_peak"] = b["first_peak_mb"] / a["first_peak_mb"]
        if a.get("delta_mb", 0) > 0:
            rec.data["ratio_delta"] = b["delta_mb"] / a["delta_mb"]
    return 0


def step_generation(ctx: Context, rec: Record) -> int:
    """``explain_generation`` on a 2-layer GPT-2 against one forward and backward pass and one
    single-target explanation, side by side (``bench/generation.py --json``)."""
    folder = ctx.out / "generation"
    if folder.is_dir():  # this run's files only
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    row: dict[str, Any] = {"name": "generation"}
    rec.add(row)
    out_json = folder / "generation.json"
    cmd = [sys.executable, str(BENCH_DIR / "generation.py"), "--repeats",
           "3" if ctx.smoke else "7", "--no-profile", "--json", str(out_json)]
    log(f"  {' '.join(cmd[1:])}")
    res = run_subprocess(cmd, ctx.remaining() - 3.0, folder / "generation.md",
                         folder / "generation.log")
    row.update(res)
    if res["timed_out"]:
        row["error"] = f"stopped at the step budget after {res['wall_s']:.0f} s"
    elif res["rc"] != 0:
        row["error"] = f"exit {res['rc']}: {(folder / 'generation.log').read_text()[-400:]}"
    if out_json.exists():
        payload = json.loads(out_json.read_text())
        row["targets"] = payload.get("targets")
        row["seconds_per_generated_token"] = payload.get("seconds_per_generated_token")
    rec.save()
    return 0 if res["rc"] == 0 else 1


def step_weight_draws(ctx: Context, rec: Record) -> int:
    """NoiseGrad/FusionGrad with several weight draws per pass against one draw per pass and
    ``M`` single compiled gradient passes, side by side (``bench/weight_draws.py --json``)."""
    folder = ctx.out / "weight_draws"
    if folder.is_dir():  # this run's files only
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    out_json = folder / "weight_draws.json"
    cases = "lenet_ng_B1,lenet_fg_B1" if ctx.smoke else (
        "lenet_ng_B1,lenet_fg_B1,lenet_ng_B8,lenet_fg_B8,resnet50_64_ng_B1")
    cmd = [sys.executable, str(BENCH_DIR / "weight_draws.py"), "--cases", cases, "--repeats",
           "5" if ctx.smoke else "9", "--json", str(out_json)]
    log(f"  {' '.join(cmd[1:])}")
    res = run_subprocess(cmd, ctx.remaining() - 3.0, folder / "weight_draws.md",
                         folder / "weight_draws.log")
    rows = json.loads(out_json.read_text()).get("rows", []) if out_json.exists() else []
    for row in rows or [{"name": "weight_draws"}]:
        row.update(res)
        if res["timed_out"]:
            row["error"] = f"stopped at the step budget after {res['wall_s']:.0f} s"
        elif res["rc"] != 0:
            row["error"] = f"exit {res['rc']}: {(folder / 'weight_draws.log').read_text()[-400:]}"
        rec.add(row)
    rec.save()
    return 0 if res["rc"] == 0 else 1


STEPS: dict[str, Callable[[Context, Record], int]] = {
    "env": step_env,
    "fg_vgg16": step_fg_vgg16,
    "bench": step_bench,
    "tests": step_tests,
    "memory": step_memory,
    "generation": step_generation,
    "weight_draws": step_weight_draws,
}


def run_worker(step: str, smoke: bool, out: Path, deadline: float) -> int:
    """Runs one step in this process and writes its JSON; returns the exit code."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    ctx = Context(step=step, smoke=smoke, out=out, deadline=deadline)
    rec = Record(ctx)
    t0 = time.time()
    try:
        rc = STEPS[step](ctx, rec)
    except Exception as err:  # recorded; the parent moves on to the next step
        import traceback

        rec.data["error"] = error_text(err)
        rec.data["traceback"] = traceback.format_exc()[-3000:]
        log(rec.data["traceback"])
        rc = 1
    rows = rec.data["rows"]
    partial = any(str(r.get("skipped", "")).startswith(BUDGET_SKIP) or r.get("stopped")
                  or r.get("timed_out") for r in rows)
    rec.data["status"] = ("no-gpu" if rc == 2 else "failed" if rc else
                          "partial" if partial else "ok")
    rec.data["rc"] = rc
    rec.data["wall_s"] = time.time() - t0
    rec.save()
    return rc

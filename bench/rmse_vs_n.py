"""RMSE against a large-N ground truth as a function of N, per sampler and kernel (paper Fig. 4).

For each model, kernel and sampler (``iid``, ``antithetic``, ``sobol``), explains the same inputs
at N = 8 .. 256 draws with ``reps`` different seeds and measures the relative RMSE

    rmse(N) = sqrt(mean over seeds and elements of (estimate - truth)^2) / rms(truth)

against a ground truth from ``sampler="sobol"`` with many more draws (its own relative standard
error is printed; it is subtracted in quadrature so the curves measure the estimator alone).
From each curve it reports the N the sampler needs to reach the error of i.i.d. sampling at
N = 50 (log-log interpolation) and the gain 50 / N. Models: a tanh MLP (smooth), a ReLU CNN
trained on scikit-learn's digits, and a ReLU CNN on 224x224x3 inputs (random weights; no
pretrained weights can be downloaded here).

    python bench/rmse_vs_n.py [--quick] [--json out.json] [--plot out.png]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import tfmollify as tfm

KERNELS = ("gaussian", "poisson", "hyperbolic", "sigmoid", "rect")
SAMPLERS = ("iid", "antithetic", "sobol")
GRID = (8, 16, 32, 64, 128, 256)


def smooth_mlp() -> tuple[keras.Model, np.ndarray, np.ndarray]:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,)), keras.layers.Dense(64, activation="tanh"),
        keras.layers.Dense(64, activation="tanh"), keras.layers.Dense(10),
    ])
    x = np.random.default_rng(0).uniform(size=(4, 64)).astype("float32")
    return model, x, np.arange(4)


def digits_cnn() -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """A small ReLU CNN trained for a few epochs on sklearn's 8x8 digits, upsampled to 16x16."""
    from sklearn.datasets import load_digits

    keras.utils.set_random_seed(0)
    d = load_digits()
    x = np.kron(d.images / 16.0, np.ones((2, 2)))[..., None].astype("float32")
    model = keras.Sequential([
        keras.Input((16, 16, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(), keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(10),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:1500], d.target[:1500], epochs=5, batch_size=64, verbose=0)
    return model, x[1500:1504], d.target[1500:1504]


def cnn_224() -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """A ReLU CNN on 224x224x3 (strided convolutions; random weights) and smooth random images."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((224, 224, 3)),
        keras.layers.Conv2D(16, 7, strides=4, activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10),
    ])
    rng = np.random.default_rng(0)
    coarse = rng.uniform(size=(2, 14, 14, 3))
    x = np.kron(coarse, np.ones((1, 16, 16, 1))).astype("float32")  # blocky "images"
    x += 0.05 * rng.normal(size=x.shape).astype("float32")
    return model, x, np.array([1, 7])


def explainer(model, mode, kernel, sampler, n, seed, batch_size, replicates=None):
    kw = {"replicates": replicates} if sampler == "sobol" and replicates else {}
    return tfm.Explainer(
        model, mode=mode, kernel=kernel, num_samples=n, num_weight_samples=n, seed=seed,
        sampler=sampler, batch_size=batch_size, **kw,
    )


def squared_errors(model, x, targets, mode, kernel, sampler, n, reps, batch_size, truth):
    """Mean squared error of ``reps`` independent estimates (one per seed).

    SmoothGrad: one call on ``reps`` copies of the inputs with distinct example seeds (an
    example's noise depends only on its seed). NoiseGrad shares weight draws across a batch, so
    it makes ``reps`` calls of one explainer without a fixed seed (fresh weight draws each).
    """
    if mode == "sg":
        e = explainer(model, mode, kernel, sampler, n, 0, batch_size)
        xs = np.concatenate([x] * reps)
        seeds = tfm.sampling.example_seeds(1000 + n, len(xs))
        est = e.explain(xs, np.tile(targets, reps), seeds=seeds)
        return float(np.mean(np.square(est - np.concatenate([truth] * reps))))
    e = explainer(model, mode, kernel, sampler, n, None, batch_size)
    return float(np.mean([np.mean(np.square(e.explain(x, targets) - truth))
                          for _ in range(reps)]))


def needed_n(grid: np.ndarray, rmse: np.ndarray, target: float) -> float:
    """The N at which a log-log interpolated RMSE curve reaches ``target`` (extrapolated with the
    end segments' slopes outside the grid)."""
    lx, ly = np.log(grid), np.log(rmse)
    for i in range(len(grid) - 1):
        lo, hi = sorted((ly[i], ly[i + 1]))
        if lo <= np.log(target) <= hi and ly[i] != ly[i + 1]:
            t = (np.log(target) - ly[i]) / (ly[i + 1] - ly[i])
            return float(np.exp(lx[i] + t * (lx[i + 1] - lx[i])))
    i = 0 if np.log(target) > ly[0] else len(grid) - 2
    slope = (ly[i + 1] - ly[i]) / (lx[i + 1] - lx[i])
    return float(np.exp(lx[i] + (np.log(target) - ly[i]) / slope))


def run_case(name, model, x, targets, mode, kernels, reps, grid, truth_n, truth_r, batch_size):
    rows = []
    for kernel in kernels:
        t0 = time.perf_counter()
        truth, truth_se = explainer(model, mode, kernel, "sobol", truth_n, 12345, batch_size,
                                    replicates=truth_r).explain(x, targets, return_stderr=True)
        scale = float(np.sqrt(np.mean(np.square(truth))))
        truth_rel = float(np.sqrt(np.mean(np.square(truth_se)))) / scale
        curves = {}
        for sampler in SAMPLERS:
            rmse = []
            for n in grid:
                sq = squared_errors(model, x, targets, mode, kernel, sampler, n, reps,
                                    batch_size, truth)
                mse = max(sq - (truth_rel * scale) ** 2, 1e-300)
                rmse.append(np.sqrt(mse) / scale)
            curves[sampler] = rmse
        g = np.array(grid, float)
        target = float(np.exp(np.interp(np.log(50), np.log(g), np.log(curves["iid"]))))
        need = {s: needed_n(g, np.array(curves[s]), target) for s in SAMPLERS}
        row = {"model": name, "mode": mode, "kernel": kernel, "grid": list(grid),
               "curves": curves, "truth_n": truth_n, "truth_rel_se": truth_rel,
               "iid_rmse_at_50": target, "n_to_match_iid50": need,
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


HEADER = (
    "| model | mode | kernel | i.i.d. RMSE at N=50 | N to match it: antithetic | sobol "
    "| variance ratio at N={n}: antithetic | sobol | truth rel. SE |\n"
    "|---|---|---|---|---|---|---|---|---|"
)


def format_row(row: dict) -> str:
    """One markdown row: N each sampler needs for i.i.d.'s error at N = 50 (and the gain
    50 / N), and the i.i.d. / sampler variance ratio at the largest N."""
    need, c = row["n_to_match_iid50"], row["curves"]
    ratio = {s: (c["iid"][-1] / c[s][-1]) ** 2 for s in ("antithetic", "sobol")}
    return (
        f"| {row['model']} | {row['mode'].upper()} | {row['kernel']} | "
        f"{row['iid_rmse_at_50']:.3g} | "
        + " | ".join(f"{need[s]:.1f} ({50 / need[s]:.1f}x)" for s in ("antithetic", "sobol"))
        + f" | {ratio['antithetic']:.1f} | {ratio['sobol']:.1f} | {row['truth_rel_se']:.1e} |"
    )


def replicate_sweep(model, x, targets, reps: int) -> list[dict]:
    """The smooth model at N = 64: RMSE of sobol as a function of the number of replicates."""
    truth = explainer(model, "sg", "gaussian", "sobol", 16384, 12345, None, 64)(x, targets)
    scale = float(np.sqrt(np.mean(np.square(truth))))
    xs = np.concatenate([x] * reps)
    seeds = tfm.sampling.example_seeds(7, len(xs))
    out = []
    for r in (1, 2, 4, 8, 16, 32, 64):
        est = explainer(model, "sg", "gaussian", "sobol", 64, 0, None, r).explain(
            xs, np.tile(targets, reps), seeds=seeds
        )
        rmse = np.sqrt(np.mean(np.square(est - np.concatenate([truth] * reps)))) / scale
        out.append({"replicates": r, "rmse": float(rmse)})
    return out


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cases = list(dict.fromkeys((r["model"], r["mode"]) for r in rows))
    kernels = list(dict.fromkeys(r["kernel"] for r in rows))
    fig, axes = plt.subplots(len(cases), len(kernels), figsize=(3.1 * len(kernels),
                             2.6 * len(cases)), squeeze=False, sharex=True)
    colors = {"iid": "tab:gray", "antithetic": "tab:orange", "sobol": "tab:blue"}
    for i, case in enumerate(cases):
        for j, kernel in enumerate(kernels):
            ax = axes[i][j]
            match = [r for r in rows if (r["model"], r["mode"]) == case and r["kernel"] == kernel]
            if not match:
                ax.axis("off")
                continue
            r = match[0]
            for s, c in r["curves"].items():
                ax.loglog(r["grid"], c, "o-", ms=3, color=colors[s], label=s)
            g = np.array(r["grid"], float)
            ax.loglog(g, r["curves"]["iid"][0] * np.sqrt(g[0] / g), ":", color="k", lw=0.8,
                      label=r"$N^{-1/2}$")
            ax.axvline(50, color="k", lw=0.5, alpha=0.4)
            ax.axhline(r["iid_rmse_at_50"], color="k", lw=0.5, alpha=0.4)
            ax.set_title(f"{case[0]} {case[1].upper()}\n{kernel}", fontsize=8)
            ax.set_xticks(r["grid"], [str(n) for n in r["grid"]])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            if i == len(cases) - 1:
                ax.set_xlabel("N")
            if j == 0:
                ax.set_ylabel("relative RMSE")
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer seeds, kernels and N (a smoke run)")
    p.add_argument("--reps", type=int, default=None, help="seeds per point")
    p.add_argument("--skip-224", action="store_true", help="leave out the 224x224x3 model")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None)
    p.add_argument("--from-json", default=None, help="only redraw --plot from a saved --json")
    args = p.parse_args()
    if args.from_json:  # the table (and --plot) again from a saved run
        with open(args.from_json) as f:
            saved = json.load(f)
        print(HEADER.format(n=saved["rows"][0]["grid"][-1]))
        for row in saved["rows"]:
            print(format_row(row))
        if args.plot:
            plot(saved["rows"], args.plot)
        return
    reps = args.reps or (4 if args.quick else 16)
    grid = GRID[:4] if args.quick else GRID
    kernels = ("gaussian", "rect") if args.quick else KERNELS
    big = 2048 if args.quick else 16384
    print(f"relative RMSE vs a sobol ground truth; {reps} seeds per point; N grid {grid}\n")
    print(HEADER.format(n=grid[-1]))
    rows = []
    mlp_case = smooth_mlp()
    rows += run_case("tanh MLP", *mlp_case, "sg", kernels, reps, grid, big, 64, None)
    rows += run_case("tanh MLP", *mlp_case, "ng", ("gaussian",), reps, grid, big // 4, 32, None)
    cnn = digits_cnn()
    rows += run_case("ReLU CNN (digits)", *cnn, "sg", kernels, reps, grid, big, 64, None)
    rows += run_case("ReLU CNN (digits)", *cnn, "ng", ("gaussian",), reps, grid, big // 4, 32,
                     None)
    if not args.skip_224:
        rows += run_case("ReLU CNN 224x224x3", *cnn_224(), "sg", kernels, max(4, reps // 4),
                         grid, big // 4, 32, 32)
    sweep = replicate_sweep(*mlp_case, reps)
    print("\nsobol replicates at N = 64 (tanh MLP, SG, Gaussian): relative RMSE")
    print("| replicates | points per replicate | relative RMSE |\n|---|---|---|")
    for s in sweep:
        print(f"| {s['replicates']} | {64 // s['replicates']} | {s['rmse']:.3g} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"reps": reps, "rows": rows, "replicate_sweep": sweep}, f, indent=1)
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()

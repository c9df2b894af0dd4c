"""The ``tfmollify`` command: demo, table1, explain, export, epsilon and kernels.

Every error a user can cause (bad arguments, unreadable files, a model that rejects the input)
ends with one line on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

__all__ = ["main"]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _kernels_table() -> str:
    import math

    from tfmollify import kernels

    rows = [("name", "pdf(x)", "variance", "eps(r=1, alpha=0.9)")]
    for name in kernels.names():
        k = kernels.get(name)
        var = "inf" if not math.isfinite(k.variance) else f"{k.variance:.6g}"
        rows.append((name, k.formula or "-", var, f"{k.epsilon(1.0, 0.9):.6g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cmd_kernels(args: argparse.Namespace) -> int:
    print(_kernels_table())
    print("\naliases: cauchy = poisson, logistic = sigmoid, uniform = rect")
    return 0


def _cmd_epsilon(args: argparse.Namespace) -> int:
    from tfmollify import kernels

    try:
        k = kernels.get(args.kernel)
        eps = k.epsilon(args.r, args.alpha)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    print(f"{eps:.10g}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from tfmollify import demo

    if args.samples < 1 or args.weight_samples < 1 or args.examples < 1:
        raise CLIError("--samples, --weight-samples and --examples must be >= 1")
    try:
        demo.run(
            args.out,
            num_examples=args.examples,
            num_samples=args.samples,
            num_weight_samples=args.weight_samples,
            epochs=args.epochs,
            seed=args.seed,
        )
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    return 0


def _cmd_table1(args: argparse.Namespace) -> int:
    from tfmollify.experiments import table1

    if args.examples is not None and args.examples < 2:
        raise CLIError("--examples must be >= 2")
    try:
        table1.run(args.out, data=args.data, settings=table1.settings_from_args(args))
    except (ValueError, ImportError) as exc:
        raise CLIError(str(exc)) from None
    return 0


def _load_model(path: str):
    import keras

    if not os.path.exists(path):
        raise CLIError(f"--model {path!r}: no such file or directory")
    try:
        if os.path.isdir(path):
            return keras.layers.TFSMLayer(path, call_endpoint="serving_default"), True
        return keras.models.load_model(path, compile=False), False
    except Exception as exc:
        raise CLIError(f"--model {path!r}: cannot load it as a Keras model ({exc})") from None


def _load_input(path: str, shape: tuple | None):
    import numpy as np
    import tensorflow as tf

    if not os.path.isfile(path):
        raise CLIError(f"--input {path!r}: no such file")
    try:
        if path.endswith(".npy"):
            x = np.load(path).astype(np.float32)
        else:
            raw = tf.io.read_file(path)
            x = tf.io.decode_image(raw, expand_animations=False).numpy().astype(np.float32)
            x /= 255.0
    except Exception as exc:
        raise CLIError(f"--input {path!r}: cannot read it as an image or .npy array ({exc})") \
            from None
    if x.ndim == 3 and x.shape[-1] == 4 and not path.endswith(".npy"):
        x = x[..., :3]  # drop the alpha channel of RGBA images
    if shape is not None and len(shape) == x.ndim + 1 and x.ndim == 3 and x.shape != shape[1:]:
        h, w, c = shape[1:]
        if None not in (h, w):
            x = tf.image.resize(x, (h, w)).numpy()
        if c == 1 and x.shape[-1] == 3:
            x = x.mean(axis=-1, keepdims=True)
        elif c == 3 and x.shape[-1] == 1:
            x = np.repeat(x, 3, axis=-1)
    if shape is not None and len(shape) == x.ndim:  # already batched
        return x
    return x[None]


def _cmd_explain(args: argparse.Namespace) -> int:
    import numpy as np

    import tfmollify as tfm

    model, is_savedmodel = _load_model(args.model)
    shape = None
    if not is_savedmodel:
        try:
            shape = tuple(model.inputs[0].shape)
        except Exception:
            shape = None
    x = _load_input(args.input, shape)
    if is_savedmodel and args.mode != "sg":
        raise CLIError("a SavedModel directory can only be explained with --mode sg")

    def scores(v):
        out = model(v)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return out

    target_model = scores if is_savedmodel else model
    try:
        if args.target is None:
            logits = np.asarray(scores(x))
            target = int(logits.reshape(logits.shape[0], -1)[0].argmax())
        else:
            target = args.target
        explainer = tfm.Explainer(
            target_model, mode=args.mode, kernel=args.kernel, num_samples=args.samples,
            num_weight_samples=args.weight_samples, epsilon=args.epsilon, alpha=args.alpha,
            aggregation=args.aggregation, seed=args.seed, batch_size=args.batch_size,
            sampler=args.sampler, replicates=args.replicates,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            attribution = explainer(x, target)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    out = args.out
    stem = out[:-4] if out.endswith(".png") else out
    np.save(stem + ".npy", attribution[0])
    import matplotlib.pyplot as plt

    from tfmollify import plot

    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    img = x[0]
    if img.ndim == 3:
        plot.overlay(img, attribution[0], axes[0], title=f"|attribution|, target {target}")
        plot.heatmap(attribution[0], axes[1], title=f"{args.mode} / {explainer.kernel.name}")
    else:
        plot.heatmap(img, axes[0], title="input")
        plot.heatmap(attribution[0], axes[1], title=f"target {target}")
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=120)
    plt.close(fig)
    print(f"target {target}; wrote {stem}.npy and {stem}.png")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import tfmollify as tfm

    model, is_savedmodel = _load_model(args.model)
    if is_savedmodel:
        raise CLIError(
            f"--model {args.model!r}: export needs a .keras file (the weights go into the "
            "export), not a SavedModel directory"
        )
    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(d) for d in args.input_shape.split(","))
        except ValueError:
            raise CLIError(
                f"--input-shape {args.input_shape!r}: give one example's shape as ints, e.g. "
                "28,28,1"
            ) from None
    try:
        explainer = tfm.Explainer(
            model, mode=args.mode, kernel=args.kernel, num_samples=args.samples,
            num_weight_samples=args.weight_samples, epsilon=args.epsilon, alpha=args.alpha,
            weight_epsilon=args.weight_epsilon, aggregation=args.aggregation,
            attribution=args.attribution, seed=args.seed, batch_size=args.batch_size,
            sampler=args.sampler, replicates=args.replicates,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = explainer.export(
                args.out, version=args.version, input_shape=shape, overwrite=args.overwrite,
                model_name=args.model_name, max_batch_size=args.max_batch_size,
                warmup=not args.no_warmup,
            )
    except (ValueError, TypeError, FileExistsError) as exc:
        raise CLIError(str(exc)) from None
    from tfmollify import serving

    print(f"wrote {out} (signature serving_default: inputs, targets, seeds -> attributions, "
          f"stderr, finite_samples), with warmup requests, batching parameters and a "
          f"models.config in {os.path.join(out, serving.EXTRAS_DIR)}; serve it with:")
    print(f"  {serving.server_command(out)}")
    return 0


def _add_method_args(p: argparse.ArgumentParser) -> None:
    """The explainer's arguments, shared by ``explain`` and ``export``."""
    p.add_argument("--mode", default="sg", choices=["sg", "ng", "fg"])
    p.add_argument("--kernel", default="gaussian")
    p.add_argument("--aggregation", default="smoothgrad",
                   choices=["smoothgrad", "smoothgrad_sq", "vargrad"])
    p.add_argument("--samples", type=int, default=50, help="N input-noise draws")
    p.add_argument("--weight-samples", type=int, default=10, help="M weight-noise draws")
    p.add_argument("--epsilon", type=float, default=None, help="noise scale (default: eq. 30)")
    p.add_argument("--alpha", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=None,
                   help="most model evaluations in one pass (bounds memory)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    p.add_argument("--sampler", default="iid", choices=["iid", "antithetic", "sobol"],
                   help="how the noise is drawn (default: iid); see README 'Choosing'")
    p.add_argument("--replicates", type=int, default=None,
                   help="independent Sobol point sets with --sampler sobol")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    p = argparse.ArgumentParser(
        prog="tfmollify",
        description="Gradient smoothing (SmoothGrad, NoiseGrad, FusionGrad) with any mollifier "
        "kernel, for Keras models.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("demo", help="train a small CNN on digits and explain it 16 ways")
    d.add_argument("--out", default="tfmollify-demo", help="output folder (default: %(default)s)")
    d.add_argument("--examples", type=int, default=3, help="images to explain (default: 3)")
    d.add_argument("--samples", type=int, default=50, help="N for SmoothGrad (default: 50)")
    d.add_argument("--weight-samples", type=int, default=10, help="M for NG/FG (default: 10)")
    d.add_argument("--epochs", type=int, default=6, help="training epochs (default: 6)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)

    t = sub.add_parser(
        "table1", help="the paper's Table 1 (4 metrics x 16 methods) on offline data",
        description="Trains small models on scikit-learn's digits and a generated localization "
        "set, scores the raw gradient and the 15 mode x kernel methods on Consistency, "
        "Invariance, Localization and Sparseness, and writes table1.md, table1.csv, scores.npz "
        "and fig8.png (see tfmollify.experiments.table1).",
    )
    t.add_argument("--quick", action="store_true",
                   help="small setting for CI (about 2 minutes on 2 cores)")
    t.add_argument("--out", default="table1", help="output folder (default: %(default)s)")
    t.add_argument("--data", default=None,
                   help=".npz with x [n,H,W,C], y [n] and optionally boxes [n,4]")
    t.add_argument("--examples", type=int, default=None,
                   help="explained examples per metric (default: 500, quick: 100)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_cmd_table1)

    e = sub.add_parser("explain", help="explain your own Keras model on an image or .npy file")
    e.add_argument("--model", required=True, help="a .keras file or a SavedModel directory")
    e.add_argument("--input", required=True, help="a PNG/JPEG image or a .npy array")
    e.add_argument("--target", type=int, default=None, help="class index (default: predicted)")
    _add_method_args(e)
    e.add_argument("--out", default="heatmap.png", help="PNG overlay path; .npy written beside")
    e.set_defaults(func=_cmd_explain)

    x = sub.add_parser(
        "export", help="write an explainer as a SavedModel for TensorFlow Serving",
        description="Writes OUT/VERSION/ with a serving_default signature: inputs (float32), "
        "targets (int32), seeds (int64) -> attributions, stderr, finite_samples.",
    )
    x.add_argument("--model", required=True, help="a .keras file")
    x.add_argument("--out", required=True, help="model base directory (OUT/VERSION is written)")
    x.add_argument("--version", type=int, default=1, help="version sub-directory (default: 1)")
    x.add_argument("--overwrite", action="store_true", help="replace an existing OUT/VERSION")
    x.add_argument("--input-shape", default=None,
                   help="one example's shape, e.g. 28,28,1 (only if the model does not say)")
    _add_method_args(x)
    x.add_argument("--attribution", default="gradient",
                   choices=["gradient", "input_x_gradient", "integrated_gradients"])
    x.add_argument("--weight-epsilon", type=float, default=0.2)
    x.add_argument("--model-name", default="explainer",
                   help="the model's name in TF Serving's models.config (default: explainer)")
    x.add_argument("--max-batch-size", type=int, default=None,
                   help="examples per server-side batch (default: one pass of --batch-size)")
    x.add_argument("--no-warmup", action="store_true",
                   help="write no TF Serving warmup requests")
    x.set_defaults(func=_cmd_export)

    s = sub.add_parser("epsilon", help="the eq. 30 noise scale for a kernel, r and alpha")
    s.add_argument("--kernel", default="gaussian")
    s.add_argument("--r", type=float, required=True, help="half-width of the interval")
    s.add_argument("--alpha", type=float, default=0.9, help="mass inside [-r, r]")
    s.set_defaults(func=_cmd_epsilon)

    k = sub.add_parser("kernels", help="table of the registered kernels")
    k.set_defaults(func=_cmd_kernels)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tfmollify`` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"tfmollify {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tfmollify: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

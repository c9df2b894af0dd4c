"""The ``tfmollify`` command: demo, table1, explain, export, serve, epsilon and kernels.

Every error a user can cause (bad arguments, unreadable files, a model that rejects the input)
ends with one line on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence

from tfmollify.core import modes

__all__ = ["main"]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _kernels_table() -> str:
    import math

    from tfmollify.core import kernels

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
    from tfmollify.core import kernels

    try:
        k = kernels.get(args.kernel)
        eps = k.epsilon(args.r, args.alpha)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    print(f"{eps:.10g}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from tfmollify.interface import demo

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
            progress=False if args.no_progress else None,
        )
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    return 0


def _cmd_table1(args: argparse.Namespace) -> int:
    from tfmollify.evaluation.experiments import table1

    if args.examples is not None and args.examples < 2:
        raise CLIError("--examples must be >= 2")
    try:
        table1.run(args.out, data=args.data, settings=table1.settings_from_args(args),
                   progress=False if args.no_progress else None)
    except (ValueError, ImportError) as exc:
        raise CLIError(str(exc)) from None
    return 0


def _check_out_dir(option: str, value: str, directory: str) -> None:
    """Refuses ``directory`` (where ``option value`` writes) unless it is a writable directory
    or can be created in one: the nearest existing parent must be a directory that this user
    may write in. Remote URLs (``gs://...``) are left to the writer."""
    if "://" in value:
        return
    existing = os.path.abspath(directory or os.curdir)
    while not os.path.lexists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise CLIError(
            f"{option} {value!r}: {existing!r} exists and is not a directory, so nothing can "
            f"be written under it; give {option} a path in a directory (or remove that file)"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CLIError(
            f"{option} {value!r}: the directory {existing!r} is not writable by this user; give "
            f"{option} a path in a directory you can write to (or change its permissions)"
        )


def _check_explain_out(out: str) -> None:
    """Refuses an ``explain --out`` that names no file or whose directory cannot be written."""
    if "://" not in out and (out.endswith(("/", os.sep))
                             or os.path.basename(out) in ("", os.curdir, os.pardir)):
        raise CLIError(
            f"--out {out!r}: names a directory, not a file; give the PNG path, e.g. "
            f"--out {os.path.join(out, 'heatmap.png')!r} (the .npy map goes beside it)"
        )
    _check_out_dir("--out", out, os.path.dirname(out))


def _load_model(path: str, *, trust: bool = False):
    """Loads ``path``: a ``.keras`` file (``safe_mode=not trust``) or a SavedModel directory.

    Returns ``(model, is_savedmodel)``; a missing file, a file Keras' safe mode refuses (a
    ``Lambda`` layer holds Python code) and any other failure raise a one-line ``CLIError``.
    """
    import keras

    if not os.path.exists(path):
        raise CLIError(f"--model {path!r}: no such file or directory")
    try:
        if os.path.isdir(path):
            return keras.layers.TFSMLayer(path, call_endpoint="serving_default"), True
        return keras.models.load_model(path, compile=False, safe_mode=not trust), False
    except ValueError as exc:
        if not trust and "safe_mode" in str(exc):
            raise CLIError(
                f"--model {path!r}: the file holds a Lambda layer (Python code), which Keras "
                "refused to deserialize in its safe mode; if you trust this file, add "
                "--trust-model to load it with safe_mode=False"
            ) from None
        raise CLIError(f"--model {path!r}: cannot load it as a Keras model ({exc})") from None
    except Exception as exc:
        raise CLIError(f"--model {path!r}: cannot load it as a Keras model ({exc})") from None


# --preprocess NAME: keras.applications.NAME.preprocess_input, applied to pixels in [0, 255]
PREPROCESS = {
    "convnext": "unchanged: the model rescales [0, 255] itself",
    "densenet": "torch: /255, minus ImageNet channel means, / their std",
    "efficientnet": "unchanged: the model rescales [0, 255] itself",
    "efficientnet_v2": "unchanged: the model rescales [0, 255] itself",
    "inception_resnet_v2": "tf: to [-1, 1]",
    "inception_v3": "tf: to [-1, 1]",
    "mobilenet": "tf: to [-1, 1]",
    "mobilenet_v2": "tf: to [-1, 1]",
    "mobilenet_v3": "unchanged: the model rescales [0, 255] itself",
    "nasnet": "tf: to [-1, 1]",
    "resnet": "caffe: RGB to BGR, minus ImageNet channel means",
    "resnet50": "caffe: RGB to BGR, minus ImageNet channel means",
    "resnet_v2": "tf: to [-1, 1]",
    "vgg16": "caffe: RGB to BGR, minus ImageNet channel means",
    "vgg19": "caffe: RGB to BGR, minus ImageNet channel means",
    "xception": "tf: to [-1, 1]",
}


def _check_scaling(args: argparse.Namespace) -> None:
    """Rejects a bad ``--input-range`` or ``--preprocess`` before anything is loaded."""
    import math

    if args.input_range is not None:
        low, high = args.input_range
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise CLIError(
                f"--input-range {low:g} {high:g}: LOW must be below HIGH and both finite, "
                "e.g. --input-range -1 1 for a model that expects [-1, 1]"
            )
    if args.preprocess is not None and args.preprocess not in PREPROCESS:
        raise CLIError(
            f"--preprocess {args.preprocess!r}: not a known keras application; choose one of "
            + ", ".join(PREPROCESS)
        )


def _describe(x) -> str:
    return f"[{float(x.min()):.4g}, {float(x.max()):.4g}]"


def _read_input(path: str) -> tuple:
    """Reads ``path`` (an image or ``.npy``) as float32, without alpha: ``(x, notes, is_npy)``."""
    import numpy as np
    import tensorflow as tf

    if not os.path.isfile(path):
        raise CLIError(f"--input {path!r}: no such file")
    is_npy = path.endswith(".npy")
    try:
        if is_npy:
            raw = np.load(path)
            x = raw.astype(np.float32)
        else:
            raw = tf.io.decode_image(tf.io.read_file(path), expand_animations=False).numpy()
            x = raw.astype(np.float32)
    except Exception as exc:
        raise CLIError(f"--input {path!r}: cannot read it as an image or .npy array ({exc})") \
            from None
    if is_npy:
        notes = [f"{path}: .npy array {list(raw.shape)} {raw.dtype}, values in {_describe(x)}"]
    else:
        colours = {1: "grey", 2: "grey + alpha", 3: "RGB", 4: "RGBA"}.get(x.shape[-1], "?")
        notes = [f"{path}: image {x.shape[0]}x{x.shape[1]} {colours}, pixels in the file "
                 f"range [0, 255] (this one spans {_describe(x)})"]
        if x.shape[-1] in (2, 4):
            x = x[..., :-1]
            notes.append("alpha channel dropped")
    return x, notes, is_npy


def _scale_input(
    x,
    notes: list[str],
    is_npy: bool,
    *,
    input_range: Sequence[float] | None,
    preprocess: str | None,
):
    """Scales pixels ``x`` in [0, 255] as ``_load_input`` says, noting what was done."""
    import numpy as np

    scaled = input_range is not None or preprocess is not None
    if is_npy and scaled and float(x.max()) <= 1.0:
        notes.append("warning: the array's values are at most 1 (already scaled?), but "
                     "--input-range/--preprocess take them as pixels in [0, 255]")
    if preprocess is not None:
        import keras

        try:
            module = getattr(keras.applications, preprocess)
            x = np.asarray(module.preprocess_input(x.copy()), dtype=np.float32)
        except Exception as exc:
            raise CLIError(f"--preprocess {preprocess}: keras.applications.{preprocess}."
                           f"preprocess_input fails on an input of shape {list(x.shape)} "
                           f"({exc})") from None
        notes.append(f"scaled by keras.applications.{preprocess}.preprocess_input from "
                     f"[0, 255] ({PREPROCESS[preprocess]})")
    elif input_range is not None:
        low, high = (float(v) for v in input_range)
        x = (low + x * ((high - low) / 255.0)).astype(np.float32)
        notes.append(f"scaled [0, 255] -> [{low:g}, {high:g}] (--input-range)")
    elif is_npy:
        notes.append("values used as they are (no scaling: --input-range or --preprocess take "
                     "them as pixels in [0, 255])")
    else:
        x /= 255.0
        notes.append("scaled [0, 255] -> [0, 1] (the default, x / 255; --input-range LOW HIGH "
                     "or --preprocess NAME for other models)")
    return x


def _load_input(
    path: str,
    shape: tuple | None,
    *,
    input_range: Sequence[float] | None = None,
    preprocess: str | None = None,
):
    """Reads ``path`` as a batch for a model whose input shape is ``shape`` (None: unknown).

    Images (PNG, JPEG, BMP, GIF) are decoded to pixels in [0, 255]; an alpha channel is dropped;
    they are resized to the model's height and width and made grey (or RGB) to match its
    channels; then scaled: by ``preprocess`` (``keras.applications.<name>.preprocess_input``),
    linearly from [0, 255] to ``input_range``, or by default divided by 255. A ``.npy`` array is
    never resized nor converted: it must be one example ``shape[1:]`` or a batch
    ``[B, *shape[1:]]`` (else a ``CLIError``), and its values are used as they are unless
    ``input_range`` or ``preprocess`` is given (they are then taken as pixels in [0, 255]).
    Returns the batch ``[n, ...]`` (float32) and the lines that say what was done.
    """
    x, notes, is_npy = _read_input(path)
    batched = shape is not None and len(shape) == x.ndim
    if is_npy:
        _check_npy_shape(path, x.shape, shape)
        if shape is not None:
            notes.append("not resized: a .npy is used as it is (it fits the model's input "
                         f"{_shape_text(shape)})")
    if not batched:
        x = x[None]
    if x.ndim == 4 and not is_npy:
        x = _fit_image_to(x, shape, notes)
    x = _scale_input(x, notes, is_npy, input_range=input_range, preprocess=preprocess)
    notes.append(f"model input: {list(x.shape)}, values in {_describe(x)}")
    return x, notes


def _shape_text(shape: Sequence[object]) -> str:
    """``shape`` as ``[None, 12, 12, 1]``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_npy_shape(path: str, got: tuple, shape: tuple | None) -> None:
    """Refuses a ``.npy`` of shape ``got`` that is neither one example nor a batch of the
    model's input ``shape`` (batch axis first, None: any size); ``shape`` None: not checked."""
    if shape is None:
        return
    example = tuple(shape[1:])

    def fits(dims: tuple) -> bool:
        return len(dims) == len(example) and all(
            e is None or d == e for d, e in zip(dims, example, strict=True))

    if fits(tuple(got)) or (len(got) == len(shape) and fits(tuple(got[1:]))):
        return
    raise CLIError(
        f"--input {path!r}: a .npy array of shape {_shape_text(got)} does not fit the model's "
        f"input {_shape_text(shape)}; a .npy is used as it is (never resized or converted), so "
        f"save one example of shape {_shape_text(example)} or a batch of shape "
        f"{_shape_text(('B', *example))} (or pass a PNG/JPEG image, which is resized)"
    )


def _fit_image_to(x, shape: tuple | None, notes: list[str]):
    """Resizes an image batch ``[n, h, w, c]`` and converts its channels to the model's."""
    import numpy as np
    import tensorflow as tf

    if shape is None:
        notes.append("not resized and channels kept (the model does not state its input "
                     "shape)")
        return x
    if len(shape) != 4:
        return x
    h, w, c = shape[1:]
    if None not in (h, w) and x.shape[1:3] != (h, w):
        notes.append(f"resized {x.shape[1]}x{x.shape[2]} -> {h}x{w} (the model's input size, "
                     "bilinear)")
        x = tf.image.resize(x, (h, w)).numpy()
    else:
        notes.append(f"not resized ({x.shape[1]}x{x.shape[2]}: "
                     + ("the model's input size)" if None not in (h, w) else "the model takes "
                        "any size)"))
    if c == 1 and x.shape[-1] == 3:
        x = x.mean(axis=-1, keepdims=True)
        notes.append("made greyscale: the mean of the 3 channels (the model takes 1 channel)")
    elif c == 3 and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
        notes.append("grey repeated to 3 channels (the model takes RGB)")
    else:
        notes.append(f"not greyscaled: {x.shape[-1]} channel(s) kept, as the model takes")
    return x


def _cmd_explain(args: argparse.Namespace) -> int:
    import numpy as np

    from tfmollify.explainers.explainer import Explainer

    _check_scaling(args)
    _check_explain_out(args.out)
    model, is_savedmodel = _load_model(args.model, trust=args.trust_model)
    shape = None
    if not is_savedmodel:
        try:
            shape = tuple(model.inputs[0].shape)
        except Exception:
            shape = None
    x, notes = _load_input(args.input, shape, input_range=args.input_range,
                           preprocess=args.preprocess)
    if is_savedmodel and modes.parse(args.mode).weight_noise:
        raise CLIError("a SavedModel directory can only be explained with --mode sg")
    print("input: " + "\n  ".join(notes))

    def scores(v):
        out = model(v)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return out

    target_model = scores if is_savedmodel else model
    n = len(x)
    try:
        if args.target is None:
            logits = np.asarray(scores(x))
            targets = logits.reshape(n, -1).argmax(axis=1)
            how = "predicted"
        else:
            targets = np.full(n, args.target)
            how = "--target"
        explainer = Explainer(
            target_model, mode=args.mode, kernel=args.kernel, num_samples=args.samples,
            num_weight_samples=args.weight_samples, epsilon=args.epsilon, alpha=args.alpha,
            aggregation=args.aggregation, seed=args.seed, batch_size=args.batch_size,
            sampler=args.sampler, replicates=args.replicates,
        )
        print(f"explaining {n} example{'s' if n > 1 else ''}: {args.mode} / "
              f"{explainer.kernel.name}, {args.samples} samples, seed {args.seed}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            attribution = explainer(x, targets)
    except (ValueError, TypeError) as exc:
        raise CLIError(str(exc)) from None
    _write_maps(args, x, attribution, targets, how, explainer.kernel.name)
    return 0


def _write_maps(args: argparse.Namespace, x, attribution, targets, how: str,
                kernel_name: str) -> None:
    """Writes each example's map as ``.npy`` and a ``.png`` figure, and says so."""
    import matplotlib.pyplot as plt
    import numpy as np

    from tfmollify.evaluation import plot
    from tfmollify.explainers import progress

    n = len(x)
    out = args.out
    stem = out[:-4] if out.endswith(".png") else out
    if "://" not in out and os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)  # checked by _check_explain_out
    digits = len(str(n - 1))
    with progress.bar(n, enabled=False if args.no_progress else None, unit="map") as bar:
        for i in range(n):
            path = stem if n == 1 else f"{stem}_{i:0{digits}d}"
            target = int(targets[i])
            np.save(path + ".npy", attribution[i])
            fig, axes = plt.subplots(1, 2, figsize=(6, 3))
            img = x[i]
            if img.ndim == 3:
                plot.overlay(img, attribution[i], axes[0], title=f"|attribution|, target {target}")
                plot.heatmap(attribution[i], axes[1], title=f"{args.mode} / {kernel_name}")
            else:
                plot.heatmap(img, axes[0], title="input")
                plot.heatmap(attribution[i], axes[1], title=f"target {target}")
            fig.tight_layout()
            fig.savefig(path + ".png", dpi=120)
            plt.close(fig)
            bar.clear()
            print(f"example {i}: target {target} ({how}); wrote {path}.npy and {path}.png")
            bar.update(1)


def _cmd_export(args: argparse.Namespace) -> int:
    from tfmollify.explainers.explainer import Explainer

    _check_out_dir("--out", args.out, args.out)
    model, is_savedmodel = _load_model(args.model, trust=args.trust_model)
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
        explainer = Explainer(
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
    from tfmollify.explainers import export as serving

    print(f"wrote {out} (signature serving_default: inputs, targets, seeds -> attributions, "
          f"stderr, finite_samples), with warmup requests, batching parameters and a "
          f"models.config in {os.path.join(out, serving.EXTRAS_DIR)}; serve it with:")
    print(f"  {serving.server_command(out)}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    """Serves an export with KServe (tfmollify.integrations.serve) until SIGTERM/SIGINT."""
    from tfmollify.integrations import serve as serve_lib

    try:
        serve_lib.load_kserve()
        serve_lib.serve(
            args.export, name=args.name, host=args.host, port=args.port,
            max_body_mb=args.max_body_mb, max_batch=args.max_batch,
            read_timeout_s=args.read_timeout_s, grace_s=args.grace_s,
            timeout_s=args.timeout_s,
            admin_token_file=args.admin_token_file, token_file=args.token_file,
        )
        _exit_if_work_remains()
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    except (ValueError, TypeError, OSError) as exc:  # a bad export, name or port
        raise CLIError(str(exc)) from None
    return 0


def _exit_if_work_remains() -> None:
    """After the server stopped (SIGTERM, ``--grace-s`` spent): a request still computing
    would keep the process alive until it ends (Python joins the pool's threads at exit), past
    Kubernetes' grace period; the process ends now instead, its output flushed."""
    import threading
    import time

    deadline = time.monotonic() + 1.0  # idle workers leave at once (the pool is shut down)
    for t in threading.enumerate():
        if t.name.startswith("tfmollify-"):
            t.join(timeout=max(0.0, deadline - time.monotonic()))
    busy = [t for t in threading.enumerate() if t.name.startswith("tfmollify-") and t.is_alive()]
    if busy:
        print(f"tfmollify: {len(busy)} request(s) still computing after the grace period: "
              "stopped", flush=True)
        sys.stderr.flush()
        os._exit(0)


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
    p.add_argument("--seed", type=int, default=0,
                   help="noise seed (default: 0, so that a run can be repeated exactly; "
                   "Python's Explainer defaults to seed=None, fresh noise per call)")
    p.add_argument("--sampler", default="iid", choices=["iid", "antithetic", "sobol"],
                   help="how the noise is drawn (default: iid); see README 'Choosing'")
    p.add_argument("--replicates", type=int, default=None,
                   help="independent Sobol point sets with --sampler sobol")


_TRUST_MODEL = (
    "load the .keras file with Keras' safe_mode=False, as a Lambda layer (Python code) needs; "
    "only for a file you trust: loading it can run its code"
)
_NO_PROGRESS = "no progress bar (default: one on a terminal when the work lasts over 3 s)"


def _add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``demo`` command: train a small CNN on digits and explain it."""
    p = subparsers.add_parser("demo", help="train a small CNN on digits and explain it 16 ways")
    p.add_argument("--out", default="tfmollify-demo", help="output folder (default: %(default)s)")
    p.add_argument("--examples", type=int, default=3, help="images to explain (default: 3)")
    p.add_argument("--samples", type=int, default=50, help="N for SmoothGrad (default: 50)")
    p.add_argument("--weight-samples", type=int, default=10, help="M for NG/FG (default: 10)")
    p.add_argument("--epochs", type=int, default=6, help="training epochs (default: 6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS)
    p.set_defaults(func=_cmd_demo)


def _add_table1_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``table1`` command: the paper's Table 1 on offline data."""
    p = subparsers.add_parser(
        "table1", help="the paper's Table 1 (4 metrics x 16 methods) on offline data",
        description="Trains small models on scikit-learn's digits and a generated localization "
        "set, scores the raw gradient and the 15 mode x kernel methods on Consistency, "
        "Invariance, Localization and Sparseness, and writes table1.md, table1.csv, scores.npz "
        "and fig8.png (see tfmollify.evaluation.experiments.table1).",
    )
    p.add_argument("--quick", action="store_true",
                   help="small setting for CI (about 2 minutes on 2 cores)")
    p.add_argument("--out", default="table1", help="output folder (default: %(default)s)")
    p.add_argument("--data", default=None,
                   help=".npz with x [n,H,W,C], y [n] and optionally boxes [n,4]")
    p.add_argument("--examples", type=int, default=None,
                   help="explained examples per metric (default: 500, quick: 100)")
    p.add_argument("--seed", type=int, default=0)
    from tfmollify.evaluation.experiments import table1  # numpy only: no TensorFlow yet

    table1.add_kernels_argument(p)
    p.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS)
    p.set_defaults(func=_cmd_table1)


def _add_explain_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``explain`` command: explain a Keras model on an image or .npy file."""
    p = subparsers.add_parser(
        "explain", help="explain your own Keras model on an image or .npy file",
        description="Explains every example of --input (an image, or a .npy array with one "
        "example or a batch) and writes one map per example: OUT.npy and OUT.png for one "
        "example, OUT_<i>.npy and OUT_<i>.png for each example i of a batch. It prints what "
        "it did to the input. Images are read as pixels in [0, 255], resized to the model's "
        "input size, made grey or RGB to match its channels, and scaled: by default to "
        "[0, 1] (x / 255), or to [LOW, HIGH] with --input-range, or by a keras application's "
        "preprocess_input with --preprocess. A .npy array is used as it is: never resized or "
        "converted (its shape must fit the model's input), and not scaled unless one of these "
        "two flags is given. The noise seed defaults to 0, so a run repeats exactly.",
        epilog="--preprocess names: " + ", ".join(
            f"{name} ({what})" for name, what in PREPROCESS.items()),
    )
    p.add_argument("--model", required=True, help="a .keras file or a SavedModel directory")
    p.add_argument("--trust-model", action="store_true", help=_TRUST_MODEL)
    p.add_argument("--input", required=True,
                   help="a PNG/JPEG image (resized to the model's input size, made grey or RGB "
                   "to match it, and scaled, see below), or a .npy array used as it is (not "
                   "resized or scaled; its shape must fit the model's input): one example or a "
                   "batch")
    p.add_argument("--target", type=int, default=None,
                   help="class index for every example (default: each example's predicted "
                   "class)")
    scaling = p.add_mutually_exclusive_group()
    scaling.add_argument("--input-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                         default=None,
                         help="scale pixels from [0, 255] to [LOW, HIGH], e.g. -1 1 (default "
                         "for images: 0 1, i.e. x / 255; .npy: no scaling)")
    scaling.add_argument("--preprocess", metavar="NAME", default=None,
                         help="scale pixels with keras.applications.NAME.preprocess_input, "
                         "e.g. mobilenet_v2, resnet50, vgg16, efficientnet (the names are "
                         "listed below)")
    _add_method_args(p)
    p.add_argument("--out", default="heatmap.png",
                   help="PNG overlay path; the .npy map is written beside it (a batch: one "
                   "pair per example, OUT_<i>.png and OUT_<i>.npy)")
    p.add_argument("--no-progress", action="store_true", help=_NO_PROGRESS)
    p.set_defaults(func=_cmd_explain)


def _add_export_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``export`` command: write an explainer as a SavedModel."""
    p = subparsers.add_parser(
        "export", help="write an explainer as a SavedModel for TensorFlow Serving",
        description="Writes OUT/VERSION/ with a serving_default signature: inputs (float32), "
        "targets (int32), seeds (int64) -> attributions, stderr, finite_samples.",
    )
    p.add_argument("--model", required=True, help="a .keras file")
    p.add_argument("--trust-model", action="store_true", help=_TRUST_MODEL)
    p.add_argument("--out", required=True, help="model base directory (OUT/VERSION is written)")
    p.add_argument("--version", type=int, default=1, help="version sub-directory (default: 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/VERSION")
    p.add_argument("--input-shape", default=None,
                   help="one example's shape, e.g. 28,28,1 (only if the model does not say)")
    _add_method_args(p)
    p.add_argument("--attribution", default="gradient",
                   choices=["gradient", "input_x_gradient", "integrated_gradients"])
    p.add_argument("--weight-epsilon", type=float, default=0.2)
    p.add_argument("--model-name", default="explainer",
                   help="the model's name in TF Serving's models.config (default: explainer)")
    p.add_argument("--max-batch-size", type=int, default=None,
                   help="examples per server-side batch (default: one pass of --batch-size)")
    p.add_argument("--no-warmup", action="store_true",
                   help="write no TF Serving warmup requests")
    p.set_defaults(func=_cmd_export)


def _add_epsilon_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``epsilon`` command: the eq. 30 noise scale."""
    p = subparsers.add_parser("epsilon", help="the eq. 30 noise scale for a kernel, r and alpha")
    p.add_argument("--kernel", default="gaussian")
    p.add_argument("--r", type=float, required=True, help="half-width of the interval")
    p.add_argument("--alpha", type=float, default=0.9, help="mass inside [-r, r]")
    p.set_defaults(func=_cmd_epsilon)


def _add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``serve`` command: serve an export with KServe."""
    p = subparsers.add_parser(
        "serve", help="serve an export over HTTP with KServe (:explain and :predict)",
        description="Serves an export of `tfmollify export` at http://HOST:PORT/v1/models/NAME "
        "(KServe V1 protocol = TF Serving REST: :explain and :predict take row or columnar "
        'bodies). Needs the kserve extra: pip install "tfmollify[kserve]". SIGTERM stops it.',
    )
    p.add_argument("--export", required=True, help="the directory given to export (or OUT/VERSION)")
    p.add_argument("--name", "--model_name", default="explainer",
                   help="name in the URL (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default: %(default)s)")
    p.add_argument("--port", "--http_port", type=int, default=8080,
                   help="TCP port (default: %(default)s)")
    p.add_argument("--max-body-mb", type=float, default=32.0,
                   help="largest request body in MB; over it: 413 (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=None,
                   help="most examples per request; over it: 413 (default: 256)")
    p.add_argument("--read-timeout-s", type=float, default=30.0,
                   help="seconds to receive a request body; after them: 408 "
                   "(default: %(default)s)")
    p.add_argument("--timeout-s", type=float, default=120.0,
                   help="each request's deadline; past it: 504 (a request may lower it with "
                   "the X-Timeout-S header; default: %(default)s)")
    p.add_argument("--grace-s", type=float, default=20.0,
                   help="seconds for requests in flight after SIGTERM (default: %(default)s)")
    p.add_argument("--admin-token-file", default=None,
                   help="file with the admin token that turns on the model-repository "
                   "endpoints (else $TFMOLLIFY_ADMIN_TOKEN; neither: they answer 404)")
    p.add_argument("--token-file", default=None,
                   help="file with a bearer token every inference request needs (else "
                   "$TFMOLLIFY_TOKEN; neither: none)")
    # KServe appends these to a custom explainer container's args: accepted; the export holds
    # the model (no calls to the predictor) and one process serves
    p.add_argument("--predictor_host", help=argparse.SUPPRESS)
    p.add_argument("--workers", help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_serve)


def _add_kernels_parser(subparsers: argparse._SubParsersAction) -> None:
    """The ``kernels`` command: the table of registered kernels."""
    p = subparsers.add_parser("kernels", help="table of the registered kernels")
    p.set_defaults(func=_cmd_kernels)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    p = argparse.ArgumentParser(
        prog="tfmollify",
        description="Gradient smoothing (SmoothGrad, NoiseGrad, FusionGrad) with any mollifier "
        "kernel, for Keras models.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_demo_parser(sub)
    _add_table1_parser(sub)
    _add_explain_parser(sub)
    _add_export_parser(sub)
    _add_epsilon_parser(sub)
    _add_serve_parser(sub)
    _add_kernels_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tfmollify`` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "no_progress", False):
            from tfmollify.explainers import progress

            with progress.bar(None, enabled=False):  # keeps every bar inside off
                return args.func(args)
        return args.func(args)
    except CLIError as exc:
        print(f"tfmollify {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tfmollify: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

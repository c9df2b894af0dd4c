"""Makes ``docs/gradcam_overlay.png``: plain and smoothed Grad-CAM / Grad-CAM++ of a digits CNN.

A small CNN with a global-average-pooling head (``Conv(16)-Pool-Conv(32)-Conv(32)-GAP-
Dense(10)``, Grad-CAM's home architecture: there Grad-CAM is CAM) is trained on scikit-learn's
digits (24x24, :func:`tfmollify.interface.demo.digits`, the demo's split: 300 held out). The demo's
own
CNN (``...-Pool-Flatten-Dense``) is a poor Grad-CAM subject: the position-averaged gradient
weights of its last conv layer are almost all negative, and Grad-CAM is 0 everywhere on the
digits shown (``--demo-cnn`` draws it). For a few held-out digits of different classes
(targets: their true labels) the picture shows, over the input,

* Grad-CAM at the last convolutional layer (its 12x12 output): ``relu(sum_c w_c A_c)``;
* SmoothGrad-smoothed Grad-CAM: the same map averaged over ``N`` noisy copies of the *input*
  (eq. 30 epsilon, ``noise_at`` left at the inputs, ``attribute_at`` the last conv layer);
* Grad-CAM++ and SmoothGrad-smoothed Grad-CAM++.

The 12x12 maps are upsampled bilinearly to 24x24 by :func:`tfmollify.evaluation.plot.overlay`. Plain
Grad-CAM is computed by hand (a tape on the layer's output, no tfmollify), and a check asserts
that tfmollify with ``epsilon=1e-6`` gives the same map, so the picture also shows that the
smoothed column is the plain one plus noise averaging, nothing else.

Run from the repository root (about 30 s on 2 CPU cores)::

    python bench/gradcam_picture.py [--out docs/gradcam_overlay.png] [--samples 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run from a clone without installing
    sys.path.insert(0, ROOT)


def last_conv(model):
    """The model's last ``Conv2D`` layer (the usual Grad-CAM layer)."""
    import keras

    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise ValueError(f"model {model.name!r} has no Conv2D layer")
    return convs[-1]


def train_gap_cnn(x, y, *, epochs: int, seed: int):
    """``Conv(16)-Pool-Conv(32)-Conv(32)-GlobalAveragePooling-Dense(10)`` (logits), Adam."""
    import keras

    keras.utils.set_random_seed(seed)
    L = keras.layers
    model = keras.Sequential([
        keras.Input(x.shape[1:]),
        L.Conv2D(16, 3, padding="same", activation="relu"),
        L.MaxPooling2D(),
        L.Conv2D(32, 3, padding="same", activation="relu"),
        L.Conv2D(32, 3, padding="same", activation="relu", name="last_conv"),
        L.GlobalAveragePooling2D(),
        L.Dense(10),
    ], name="digits_gap_cnn")
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def grad_cam_by_hand(model, layer, x, targets, plus_plus=False):
    """Grad-CAM (or ++) of a Sequential model at ``layer``: split the model there, tape the
    layer's output ``A``, ``g = dS/dA``; Grad-CAM ``relu(sum_c mean(g_c) A_c)``, Grad-CAM++
    with the closed-form weights of Chattopadhyay et al. (2018) for an exponential score."""
    import tensorflow as tf

    i = model.layers.index(layer)
    a = tf.constant(x)
    for lay in model.layers[: i + 1]:
        a = lay(a)
    with tf.GradientTape() as tape:
        tape.watch(a)
        h = a
        for lay in model.layers[i + 1:]:
            h = lay(h)
        score = tf.gather(h, targets, axis=1, batch_dims=1)
    g = tape.gradient(score, a).numpy().astype(np.float64)
    a = a.numpy().astype(np.float64)
    if not plus_plus:
        w = g.mean(axis=(1, 2), keepdims=True)
    else:
        total = a.sum(axis=(1, 2), keepdims=True)
        den = 2 * g**2 + total * g**3
        alpha = np.where(g == 0, 0.0, g**2 / np.where(den == 0, 1.0, den))
        w = (alpha * np.maximum(g, 0)).sum(axis=(1, 2), keepdims=True)
    return np.maximum((w * a).sum(axis=-1), 0.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "gradcam_overlay.png"))
    p.add_argument("--examples", type=int, default=4, help="digits shown (rows)")
    p.add_argument("--samples", type=int, default=50, help="SmoothGrad N")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--demo-cnn", action="store_true",
                   help="the demo's Flatten-Dense CNN instead (its Grad-CAM is all zero)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import tfmollify as tfm
    from tfmollify.evaluation import plot
    from tfmollify.interface import demo

    t0 = time.perf_counter()
    x, y = demo.digits()
    if args.demo_cnn:
        model, test, accuracy = demo._train_on_split(x, y, epochs=args.epochs, seed=args.seed,
                                                     log=print, t0=t0)
    else:
        order = np.random.default_rng(args.seed).permutation(len(x))  # the demo's split
        test, train = order[:300], order[300:]
        print(f"training a small GAP CNN on {len(train)} digits ({args.epochs} epochs) ...")
        model = train_gap_cnn(x[train], y[train], epochs=args.epochs, seed=args.seed)
        accuracy = float((model.predict(x[test], verbose=0).argmax(1) == y[test]).mean())
        print(f"  test accuracy {accuracy:.3f} ({time.perf_counter() - t0:.1f}s)")
    pick = demo._pick_examples(test, y, args.examples)
    xs, ts = x[pick], y[pick]
    conv = last_conv(model)

    columns = {
        "Grad-CAM": grad_cam_by_hand(model, conv, xs, ts),
        "SmoothGrad\nGrad-CAM": tfm.SmoothGrad(
            model, attribution="grad_cam", attribute_at=conv, num_samples=args.samples,
            seed=args.seed)(xs, ts),
        "Grad-CAM++": grad_cam_by_hand(model, conv, xs, ts, plus_plus=True),
        "SmoothGrad\nGrad-CAM++": tfm.SmoothGrad(
            model, attribution="grad_cam_plus_plus", attribute_at=conv,
            num_samples=args.samples, seed=args.seed)(xs, ts),
    }
    # tfmollify with (almost) no noise is the hand computation: the smoothing is all there is
    for name, method in (("Grad-CAM", "grad_cam"), ("Grad-CAM++", "grad_cam_plus_plus")):
        tiny = tfm.SmoothGrad(model, attribution=method, attribute_at=conv, epsilon=1e-6,
                              num_samples=2, seed=0)(xs, ts)
        scale = max(float(np.abs(columns[name]).max()), 1e-12)
        np.testing.assert_allclose(tiny, columns[name], rtol=1e-3, atol=1e-4 * scale,
                                   err_msg=name)
    layer_shape = columns["Grad-CAM"].shape[1:]

    fig, axes = plt.subplots(len(pick), 1 + len(columns),
                             figsize=(1.5 * (1 + len(columns)), 1.5 * len(pick) + 0.5),
                             squeeze=False)
    for r in range(len(pick)):
        axes[r, 0].imshow(xs[r, ..., 0], cmap="gray", interpolation="nearest")
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        axes[r, 0].set_ylabel(f"label {int(ts[r])}", fontsize=8)
        for c, maps in enumerate(columns.values(), 1):
            plot.overlay(xs[r], maps[r], axes[r, c], alpha=0.55)
        if r == 0:
            axes[0, 0].set_title("input", fontsize=8)
            for c, name in enumerate(columns, 1):
                axes[0, c].set_title(name, fontsize=8)
    fig.suptitle(f"Digits CNN, GAP head (test acc. {accuracy:.2f}): maps at the last conv layer "
                 f"({layer_shape[0]}x{layer_shape[1]}), upsampled; SmoothGrad N={args.samples}",
                 fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    plt.close(fig)
    size = os.path.getsize(args.out)
    print(f"wrote {args.out} ({size / 1024:.0f} KiB) in {time.perf_counter() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

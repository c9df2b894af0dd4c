"""Adapters that run the peer libraries' SmoothGrad on a :class:`harness.Problem`.

Every adapter returns a :class:`Runner`: a zero-argument callable computing the attributions
for ``problem.x`` / ``problem.targets`` as a NumPy array shaped like ``problem.x`` (a call is what
gets timed; constructing the explainer is not), plus a note on how the peer differs from plain
SmoothGrad of the target logit with absolute Gaussian noise and how it was configured to compute
exactly that. See ``bench/PEERS.md``.

Peers are imported lazily, so a missing peer only removes its own methods.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from harness import Problem


@dataclasses.dataclass
class Runner:
    """A timed callable plus what it computes."""

    fn: Callable[[], np.ndarray]
    note: str = ""
    statistic: str = "mean"  # mean | meansq | var: what a correctness check compares against
    objective: str = "logit"  # logit | nll


def _per_example_spread(x: np.ndarray) -> np.ndarray:
    """``max - min`` of each example (peers that scale their noise by the input range)."""
    flat = x.reshape(len(x), -1)
    return flat.max(axis=1) - flat.min(axis=1)


# --------------------------------------------------------------------------------------------
# Xplique
# --------------------------------------------------------------------------------------------


def xplique_runner(problem: Problem, statistic: str = "mean") -> Runner:
    """Xplique ``SmoothGrad`` / ``SquareGrad`` / ``VarGrad`` (targets one-hot, ``reducer=None``)."""
    from xplique.attributions import SmoothGrad, SquareGrad, VarGrad

    cls = {"mean": SmoothGrad, "meansq": SquareGrad, "var": VarGrad}[statistic]
    explainer = cls(
        problem.model,
        batch_size=problem.batch_size,  # None: all B*N noisy inputs in one gradient batch
        nb_samples=problem.num_samples,
        noise=problem.sigma,
        reducer=None,  # keep the channel axis (default "mean" averages channels of images)
    )
    x = tf.constant(problem.x)
    onehot = tf.one_hot(problem.targets, problem.num_classes)

    def run() -> np.ndarray:
        return np.asarray(explainer.explain(x, onehot))

    return Runner(run, "reducer=None; one-hot targets", statistic=statistic)


# --------------------------------------------------------------------------------------------
# PAIR saliency
# --------------------------------------------------------------------------------------------


def pair_saliency_runner(problem: Problem) -> Runner:
    """PAIR ``saliency.core.GradientSaliency().GetSmoothedMask``, one example at a time.

    The callback is the TF2 one from the library's ``Examples_core`` notebook (eager
    ``GradientTape`` on a batch of one). ``GetSmoothedMask`` scales its noise by the example's
    range, ``stdev = stdev_spread * (max - min)``, so ``stdev_spread = sigma / (max - min)`` gives
    the absolute ``sigma``; ``magnitude=False`` averages gradients (default squares them).
    """
    import saliency.core as saliency

    model = problem.model
    class_idx_str = "class_idx_str"

    def call_model_function(images, call_model_args=None, expected_keys=None):
        target_class_idx = call_model_args[class_idx_str]
        images = tf.convert_to_tensor(images)
        with tf.GradientTape() as tape:
            tape.watch(images)
            output_layer = model(images)
            output_layer = output_layer[:, target_class_idx]
        gradients = np.array(tape.gradient(output_layer, images))
        return {saliency.INPUT_OUTPUT_GRADIENTS: gradients}

    explainer = saliency.GradientSaliency()
    spreads = _per_example_spread(problem.x)

    def run() -> np.ndarray:
        maps = [
            explainer.GetSmoothedMask(
                xb,
                call_model_function,
                {class_idx_str: int(tb)},
                stdev_spread=float(problem.sigma / spread),
                nsamples=problem.num_samples,
                magnitude=False,
            )
            for xb, tb, spread in zip(problem.x, problem.targets, spreads, strict=True)
        ]
        return np.stack(maps)

    return Runner(
        run,
        "B*N eager batch-1 calls; magnitude=False; spread=sigma/range",
    )


# --------------------------------------------------------------------------------------------
# tf-keras-vis
# --------------------------------------------------------------------------------------------


def tf_keras_vis_runner(problem: Problem) -> Runner:
    """tf-keras-vis ``Saliency`` with ``smooth_samples=N``.

    Its noise is ``smooth_noise * (max - min)`` per example, so ``smooth_noise`` is passed as a
    per-example array ``sigma / (max - min)``; the defaults ``gradient_modifier=abs``,
    ``keepdims=False`` (max over channels) and ``normalize_map=True`` are switched off.
    """
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.utils.scores import CategoricalScore

    saliency = Saliency(problem.model, clone=False)
    score = CategoricalScore([int(t) for t in problem.targets])
    x = tf.constant(problem.x)
    spread = _per_example_spread(problem.x).reshape((-1,) + (1,) * (problem.x.ndim - 1))
    smooth_noise = (problem.sigma / spread).astype(np.float32)

    # Its running sum is a chain of N nested generators, evaluated recursively at the end:
    # N >~ 900 overflows Python's default recursion limit (RecursionError). Workaround: raise it.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 4 * problem.num_samples + 1000))

    def run() -> np.ndarray:
        return np.asarray(
            saliency(
                score,
                x,
                smooth_samples=problem.num_samples,
                smooth_noise=smooth_noise,
                gradient_modifier=None,
                keepdims=True,
                normalize_map=False,
            )
        )

    return Runner(
        run,
        "N eager calls of batch B; no abs/max/normalize; noise=sigma/range",
    )


# --------------------------------------------------------------------------------------------
# tf-explain
# --------------------------------------------------------------------------------------------


def tf_explain_runner(problem: Problem) -> Runner:
    """tf-explain ``SmoothGrad``'s computation (``generate_noisy_images`` +
    ``get_averaged_gradients``), once per distinct target class.

    ``SmoothGrad.explain`` takes ONE ``class_index`` for the whole batch, differentiates the
    categorical cross-entropy of the model output (so it needs the softmax model and explains
    ``-log p_t``, not the logit), and returns ``abs`` + channel-sum + per-image standardised uint8
    maps in a grid; its public static helpers are called instead, which stop before that
    post-processing. Noise is absolute.
    """
    from tf_explain.core.smoothgrad import SmoothGrad

    model = problem.softmax
    n = problem.num_samples
    groups = [(int(c), np.flatnonzero(problem.targets == c)) for c in np.unique(problem.targets)]

    def run() -> np.ndarray:
        out = np.empty_like(problem.x)
        for c, idx in groups:
            noisy = SmoothGrad.generate_noisy_images(problem.x[idx], n, problem.sigma)
            out[idx] = np.asarray(SmoothGrad.get_averaged_gradients(noisy, model, c, n))
        return out

    return Runner(
        run,
        "one call per class; explains -log softmax (cross-entropy)",
        objective="nll",
    )


SG_PEERS: dict[str, Callable[[Problem], Runner]] = {
    "xplique_sg": lambda p: xplique_runner(p, "mean"),
    "xplique_squaregrad": lambda p: xplique_runner(p, "meansq"),
    "xplique_vargrad": lambda p: xplique_runner(p, "var"),
    "pair_saliency": pair_saliency_runner,
    "tf_keras_vis": tf_keras_vis_runner,
    "tf_explain": tf_explain_runner,
}

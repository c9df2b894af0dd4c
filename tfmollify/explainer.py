"""The user-facing explainer: argument checking, defaults, seeds, batching and results.

All validation lives here, at the public boundary, so :mod:`tfmollify.engine` stays plain tensor
code. Every error names the argument, echoes the value received and says what is expected.
"""

from __future__ import annotations

import math
import re
import secrets
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify import aggregation as aggregation_lib
from tfmollify import attribution as attribution_lib
from tfmollify import engine, sampling
from tfmollify import inputs as inputs_lib
from tfmollify import kernels as kernels_lib

__all__ = ["MODES", "Explainer", "FusionGrad", "NoiseGrad", "NonFiniteError", "SmoothGrad"]

MODES = ("sg", "ng", "fg")
MAX_CALLABLES = 8  # callable targets whose compiled functions are kept
REDUCES = ("sum", "norm")
SAMPLERS = ("iid", "antithetic", "sobol")
_MODE_NAMES = {"smoothgrad": "sg", "noisegrad": "ng", "fusiongrad": "fg"}


def _default_replicates(count: int, name: str) -> int:
    """Sobol point sets for ``count`` draws: the smallest divisor ``>= 4`` that leaves at least
    two points per set, else the largest (2 or 3); ``count`` sets of one point (plain Monte
    Carlo, with a warning) when ``count`` has no such divisor."""
    fits = [d for d in range(2, count // 2 + 1) if count % d == 0]
    if fits:
        return next((d for d in fits if d >= 4), fits[-1])
    if count > 1:
        warnings.warn(
            f"sampler='sobol' with {name}={count}: {count} has no divisor that gives "
            f"independent sets of two or more points, so every set is one point (plain Monte "
            f"Carlo). Use a {name} with small factors, e.g. {2 ** max(2, count.bit_length())}.",
            UserWarning,
            stacklevel=4,
        )
    return count


def _summarize(exc: BaseException) -> str:
    """One informative line of a (Keras) exception message, without terminal colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception encountered", "Arguments"))]
    line = (useful or lines or [type(exc).__name__])[0]
    return line[:300].rstrip(".")


def _compute_dtype(x: np.ndarray) -> tf.DType:
    """float64 inputs are computed in float64, every other float dtype in float32."""
    return tf.float64 if x.dtype == np.float64 else tf.float32


class NonFiniteError(FloatingPointError):
    """Every noise sample of some example gave a non-finite (NaN or Inf) attribution."""


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"Argument `{name}` must be one of {list(choices)}. Received: {name}={value!r}"
        )
    v = value.lower().strip()
    if v not in choices:
        raise ValueError(
            f"Argument `{name}` must be one of {list(choices)}. Received: {name}={value!r}"
        )
    return v


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"Argument `{name}` must be an integer >= {minimum}. Received: {name}={value!r}"
        )
    if value < minimum:
        raise ValueError(
            f"Argument `{name}` must be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return int(value)


def _check_positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"Argument `{name}` must be a positive number. Received: {name}={value!r}"
        ) from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(
            f"Argument `{name}` must be positive and finite. Received: {name}={value!r}"
        )
    return v


class Explainer:
    """Smoothed attributions by Monte Carlo mollification of a model's gradient.

    The estimate of example ``x`` is an average over noisy copies of a base attribution
    (Theorem 3.11 of Zhou et al.): noise on the input (``mode="sg"``, SmoothGrad), on the weights
    (``"ng"``, NoiseGrad) or on both (``"fg"``, FusionGrad), drawn from any mollifier ``kernel``:

    * SG: ``a(x + epsilon * z)`` with ``z`` i.i.d. per input element, ``num_samples`` draws;
    * NG: ``a(x; w * (1 + weight_epsilon * zeta))`` for every trainable weight ``w``,
      ``num_weight_samples`` draws shared by all examples (an ensemble of perturbed models);
    * FG: both, ``num_weight_samples x num_samples`` evaluations.

    The samples are aggregated by ``aggregation`` (mean, mean of squares, or variance) in a
    streamed, numerically stable way. The whole computation is one ``tf.function`` per input
    shape; the model is only read (weights are perturbed functionally through Keras 3
    ``stateless_call``), and layers run in inference mode.

    Args:
        model: A Keras 3 model (functional, sequential or subclassed, already built). For
            ``mode="sg"`` any callable ``inputs -> scores`` also works.
        mode: ``"sg"`` (input noise), ``"ng"`` (weight noise) or ``"fg"`` (both).
        kernel: A kernel name (see :func:`tfmollify.kernels.names`) or a
            :class:`~tfmollify.kernels.Kernel`.
        num_samples: Input-noise draws ``N`` per example (``sg``; per weight draw for ``fg``).
        num_weight_samples: Weight-noise draws ``M`` (``ng``, ``fg``).
        epsilon: Input-noise scale in the input's units: a float, or one per example. ``None``
            solves eq. 30 per example, ``kernel.epsilon(r, alpha)`` with ``r = max(x) - mean(x)``.
        alpha: Fraction of the input noise inside ``[-r, r]`` when ``epsilon`` is None.
        weight_epsilon: Relative weight-noise scale: ``w' = w * (1 + weight_epsilon * zeta)``.
        aggregation: ``"smoothgrad"`` (mean), ``"smoothgrad_sq"`` (mean of squares) or
            ``"vargrad"`` (population variance).
        attribution: Base method at each noisy sample: ``"gradient"``, ``"input_x_gradient"``
            or ``"integrated_gradients"``.
        batch_size: At most this many model evaluations in flight (bounds memory). ``None``
            evaluates all input draws of all examples of a call in one pass (per weight draw,
            two weight draws overlapping): fastest, but memory grows with ``B x N``.
        seed: An int makes results reproducible: the noise is the same for any ``batch_size``
            and the result equal up to floating-point rounding. ``None`` draws fresh randomness
            on every call (weight noise included, even when ``explain`` gets ``seeds``).
        ig_steps: Gauss-Legendre points for integrated gradients.
        ig_baseline: Integrated-gradients baseline, a float or an array of one example's shape.
        jit_compile: Compile with XLA (often slower on CPU; the noise stream is the same).
        proposal: Draw the input noise from this kernel instead of ``kernel`` and weight each
            sample by ``phi_eps(t) / p(t)`` (the general Theorem 3.11; weights in log space).
            The weight is a product over all input elements, so in high dimension it
            degenerates (a few samples carry all the weight, or overflow to non-finite): use it
            for low-dimensional inputs and to study the estimator.
        proposal_scale: The proposal's scale relative to ``epsilon``. Choose a proposal with
            tails at least as heavy as the kernel's, or the estimate has infinite variance.
        weight_noise_cache_mb: With a fixed ``seed`` the ``M`` weight draws are the same on every
            call, so NG/FG keep their standard noise (``M x`` the number of weights) in memory
            when it fits in this many MiB, and only draw it on the first call. 0 disables it.
        weight_layers: The layers whose weights get noise in ``ng``/``fg``: names or layer
            objects (nested layers included). ``None``: every layer with trainable weights.
            Variables of other layers are never perturbed (the paper saw weight noise in the
            top layers give invalid gradients; leave them out here).
        perturb_bias: Also perturb the ``bias`` variables of the selected layers.
        explain_at: A layer (or its name) of a functional Keras model: noise goes on that
            layer's output ``h`` and the attribution is with respect to ``h`` (for text, the
            embedding output ``[B, T, D]``; the inputs may then be integer token ids). The
            model is split at the layer: ``h`` is computed with the stored weights, and
            NG/FG perturb the layers after it. Every path from the inputs to the outputs must
            pass through the layer.
        reduce: ``"sum"`` or ``"norm"`` (L2) over the last axis of the smoothed attribution
            (per-token scores for text), or None to keep it.
        output: For a functional model with several outputs: the one to explain, by name (see
            ``model.output_names``) or position.
        sampler: ``"iid"`` (independent draws) or ``"antithetic"``: draws in pairs ``z``,
            ``-z`` (input noise, and weight noise for ``ng``/``fg``), still unbiased. The part
            of the attribution that is odd in the noise cancels within each pair (all of the
            error, when the gradient is affine in the noise); the even part is counted twice,
            so its variance doubles: it pays off where the odd part dominates (small noise on
            a smooth model). Needs even ``num_samples`` (``sg``/``fg``) and
            ``num_weight_samples`` (``ng``/``fg``); standard errors run over pairs.
            ``"sobol"``: randomized quasi-Monte Carlo, ``replicates`` independent
            digitally shifted Sobol point sets (each point exactly kernel-distributed, so
            unbiased; the points of a set evenly spread, so errors cancel across them); pays
            off most with ``2**k`` points per set. Standard errors run over the sets.
        replicates: With ``sampler="sobol"``: the number of independent point sets ``R``
            (their spread gives the standard error). It must divide ``num_samples`` for
            ``sg`` and ``num_weight_samples`` for ``ng``/``fg`` (FusionGrad's ``N`` input
            draws under each weight draw are one set of their own). Default: the smallest
            divisor that is at least 4 and leaves two or more points per set (50 draws: 5
            sets of 10; 64: 4 of 16; 6: 3 of 2). One set is the most accurate, but has no
            standard error (NaN).
        tolerance: Draw more samples until each example's relative standard error
            ``||stderr||_2 / ||attribution||_2`` (norms over all its elements) is at most this,
            or ``max_samples`` is reached. Samples come in rounds of one normal call each
            (``num_samples`` input draws, ``num_weight_samples`` weight draws); round 0 is
            exactly the call without ``tolerance``, round ``r`` uses seeds derived from each
            example's seed and ``r`` (and weight draws from the explainer's seed and ``r``), so
            an example's result does not depend on its batch. After a call,
            ``last_num_samples`` holds the samples each example used. For ``smoothgrad`` and
            ``smoothgrad_sq``; not in :func:`tfmollify.export` or ``explain_dataset``.
        max_samples: The most samples per example with ``tolerance`` (in the units of
            ``last_num_samples``: input draws for ``sg``, weight draws for ``ng``, ``M x N``
            evaluations for ``fg``); default 20 rounds.

    Raises:
        ValueError: For an unknown mode, kernel, aggregation or attribution, a non-positive
            count or scale, or ``ng``/``fg`` on a model without trainable weights.
        TypeError: For arguments of the wrong type (e.g. a non-Keras callable with ``ng``).

    Example:

    >>> import keras, numpy as np
    >>> import tfmollify as tfm
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, use_bias=False)])
    >>> x = np.array([[1.0, 2.0, 3.0]], np.float32)
    >>> sg = tfm.Explainer(model, mode="sg", kernel="rect", num_samples=8, seed=0)
    >>> bool(np.allclose(sg(x, targets=1), model.get_weights()[0][:, 1], atol=1e-6))
    True
    """

    _fixed_mode: str | None = None

    def __init__(
        self,
        model: Any,
        mode: str = "sg",
        *,
        kernel: str | kernels_lib.Kernel = "gaussian",
        num_samples: int = 50,
        num_weight_samples: int = 10,
        epsilon: float | Sequence[float] | np.ndarray | None = None,
        alpha: float = 0.9,
        weight_epsilon: float = 0.2,
        aggregation: str = "smoothgrad",
        attribution: str = "gradient",
        batch_size: int | None = None,
        seed: int | None = None,
        ig_steps: int = 16,
        ig_baseline: float | np.ndarray = 0.0,
        jit_compile: bool = False,
        proposal: str | kernels_lib.Kernel | None = None,
        proposal_scale: float = 1.0,
        weight_noise_cache_mb: float = 256.0,
        weight_layers: Sequence[Any] | None = None,
        perturb_bias: bool = True,
        explain_at: Any = None,
        reduce: str | None = None,
        output: str | int | None = None,
        sampler: str = "iid",
        replicates: int | None = None,
        tolerance: float | None = None,
        max_samples: int | None = None,
    ) -> None:
        mode = _MODE_NAMES.get(str(mode).lower(), mode) if isinstance(mode, str) else mode
        self.mode = _check_choice("mode", mode, MODES)
        self.kernel = kernels_lib.get(kernel)
        self.num_samples = _check_int("num_samples", num_samples)
        self.num_weight_samples = _check_int("num_weight_samples", num_weight_samples)
        self.alpha = kernels_lib._check_alpha(alpha)
        self.epsilon = self._check_epsilon(epsilon)
        self.weight_epsilon = _check_positive("weight_epsilon", weight_epsilon)
        self.aggregation = _check_choice("aggregation", aggregation, aggregation_lib.AGGREGATIONS)
        self.attribution = _check_choice(
            "attribution", attribution, attribution_lib.ATTRIBUTIONS
        )
        self.ig_steps = _check_int("ig_steps", ig_steps)
        try:
            self.ig_baseline = np.asarray(ig_baseline, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                "Argument `ig_baseline` must be a float or an array of one example's shape. "
                f"Received: ig_baseline={ig_baseline!r}"
            ) from None
        if not np.all(np.isfinite(self.ig_baseline)):
            raise ValueError(f"Argument `ig_baseline` must be finite. Received: {ig_baseline!r}")
        per_sample = attribution_lib.evaluations_per_sample(self.attribution, self.ig_steps)
        if batch_size is not None:
            batch_size = _check_int("batch_size", batch_size)
            if batch_size < per_sample:
                raise ValueError(
                    f"Argument `batch_size` must be at least ig_steps={self.ig_steps} for "
                    "integrated gradients (one sample needs that many evaluations). "
                    f"Received: batch_size={batch_size}"
                )
        self.sampler = _check_choice("sampler", sampler, SAMPLERS)
        if self.sampler == "antithetic":
            for name, count, used in (
                ("num_samples", self.num_samples, self.mode != "ng"),
                ("num_weight_samples", self.num_weight_samples, self.mode != "sg"),
            ):
                if used and count % 2:
                    raise ValueError(
                        f"sampler='antithetic' draws in pairs: Argument `{name}` must be even. "
                        f"Received: {name}={count}"
                    )
            if batch_size is not None and self.mode != "ng" and batch_size < 2 * per_sample:
                raise ValueError(
                    "sampler='antithetic' evaluates a pair of samples at least: Argument "
                    f"`batch_size` must be at least {2 * per_sample}. Received: {batch_size}"
                )
        self.replicates = self._check_replicates(replicates)
        self.batch_size = batch_size
        self.tolerance = None if tolerance is None else _check_positive("tolerance", tolerance)
        if self.tolerance is not None and self.replicates == 1 and self.sampler == "sobol":
            raise ValueError(
                "Argument `tolerance` needs a standard error, and one Sobol point set has none. "
                "Received: replicates=1; pass replicates=2 or more."
            )
        if self.tolerance is not None and self.aggregation == "vargrad":
            raise ValueError(
                "Argument `tolerance` supports aggregation='smoothgrad' or 'smoothgrad_sq' (means "
                "that independent rounds combine exactly). Received: aggregation='vargrad'."
            )
        per_round = {"sg": self.num_samples, "ng": self.num_weight_samples}.get(
            self.mode, self.num_samples * self.num_weight_samples
        )
        self.max_samples = (
            20 * per_round if max_samples is None else _check_int("max_samples", max_samples)
        )
        if self.max_samples < per_round:
            raise ValueError(
                f"Argument `max_samples` must be at least one round ({per_round} samples). "
                f"Received: max_samples={self.max_samples}"
            )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
            raise TypeError(f"Argument `seed` must be an int or None. Received: seed={seed!r}")
        self.seed = None if seed is None else int(seed)
        self.jit_compile = bool(jit_compile)
        self.proposal = None if proposal is None else kernels_lib.get(proposal)
        self.proposal_scale = _check_positive("proposal_scale", proposal_scale)
        if self.proposal is not None:
            if self.mode == "ng":
                raise ValueError(
                    f"Argument `proposal` applies to input noise; mode='ng' has none. Received: "
                    f"proposal={self.proposal.name!r}. Use mode='sg' or 'fg'."
                )
            if self.aggregation == "vargrad":
                raise ValueError(
                    "Argument `proposal` supports aggregation='smoothgrad' or 'smoothgrad_sq' "
                    "(importance-weighted means). Received: aggregation='vargrad'."
                )
        if isinstance(weight_noise_cache_mb, bool) or not isinstance(
            weight_noise_cache_mb, int | float
        ) or weight_noise_cache_mb < 0:
            raise ValueError(
                "Argument `weight_noise_cache_mb` must be a number >= 0. "
                f"Received: weight_noise_cache_mb={weight_noise_cache_mb!r}"
            )
        self.weight_noise_cache_mb = float(weight_noise_cache_mb)
        self._weight_noise: tf.Tensor | None = None
        self._cache_decision: bool | None = None
        self._no_noise: dict[tf.DType, tf.Tensor] = {}
        self._wkeys: dict[int, tf.Tensor] = {}
        self.model = model
        self._check_model(model)
        self.reduce = None if reduce is None else _check_choice("reduce", reduce, REDUCES)
        self.explain_at = explain_at
        self.output = output
        base = model if output is None else self._select_output(output)
        # the network the engine explains: the model (one output), or its part after `explain_at`
        self._head, self._net = (
            (None, base) if explain_at is None else self._split(base, explain_at)
        )
        if self._net is not model:
            self._check_model(self._net)
        if not isinstance(perturb_bias, bool):
            raise TypeError(
                f"Argument `perturb_bias` must be True or False. Received: {perturb_bias!r}"
            )
        self.perturb_bias = perturb_bias
        if isinstance(weight_layers, str) or hasattr(weight_layers, "trainable_weights"):
            weight_layers = [weight_layers]  # one name or one layer
        self.weight_layers = None if weight_layers is None else list(weight_layers)
        self._weight_selection = self._select_weights(self.weight_layers, perturb_bias)
        if self.mode != "sg" and not math.isfinite(self.kernel.variance):
            warnings.warn(
                f"kernel={self.kernel.name!r} has no mean or variance: with weight noise "
                f"(mode={self.mode!r}) the mollified gradient of a model whose gradient grows with "
                "its weights does not exist, and the estimate does not converge as "
                "num_weight_samples grows. Prefer a kernel with finite variance for NG/FG.",
                UserWarning,
                stacklevel=2,
            )
        self._functions: dict[Any, Callable] = {}
        self._probed: dict[Any, tuple[int, ...]] = {}
        self._callables: dict[int, Callable] = {}  # held, so that their ids stay unique
        self.trace_count = 0
        self.last_nonfinite_count: np.ndarray | None = None
        self.last_num_samples = self._samples_per_example()

    # -- argument checking -------------------------------------------------------------------
    @staticmethod
    def _check_epsilon(epsilon: Any) -> np.ndarray | None:
        if epsilon is None:
            return None
        try:
            arr = np.asarray(epsilon, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                "Argument `epsilon` must be None, a positive float or one per example. "
                f"Received: epsilon={epsilon!r}"
            ) from None
        if arr.ndim > 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(
                "Argument `epsilon` must be None, a positive finite float, or a 1-D array of "
                f"them (one per example). Received: epsilon={epsilon!r}"
            )
        return arr

    def _check_model(self, model: Any) -> None:
        if self.mode == "sg":
            if not callable(model):
                raise TypeError(
                    "Argument `model` must be a Keras model or a callable inputs -> scores. "
                    f"Received: model={model!r}"
                )
            return
        if not hasattr(model, "stateless_call") or not hasattr(model, "trainable_variables"):
            raise TypeError(
                f"mode={self.mode!r} perturbs weights and needs a Keras 3 model (with "
                f"`stateless_call`). Received: model of type {type(model).__name__}. Use "
                "mode='sg' for plain callables."
            )
        if not model.trainable_variables:
            raise ValueError(
                f"mode={self.mode!r} perturbs trainable weights, but the model has none "
                f"(model={getattr(model, 'name', model)!r}: not built yet, or all layers frozen). "
                "Call the model once on data to build it, or use mode='sg'."
            )

    def _select_output(self, output: Any) -> Any:
        """The model with one of its outputs: a functional model sharing its layers."""
        import keras

        model = self.model
        names = list(getattr(model, "output_names", None) or [])
        if not isinstance(model, keras.Model) or not getattr(model, "outputs", None):
            raise TypeError(
                "Argument `output` needs a functional Keras model with named outputs. "
                f"Received: model of type {type(model).__name__}."
            )
        if isinstance(output, str) and output in names:
            index = names.index(output)
        elif isinstance(output, int) and not isinstance(output, bool) and (
            0 <= output < len(model.outputs)
        ):
            index = output
        else:
            raise ValueError(
                f"Argument `output` must name one of the model's outputs {names} or be a "
                f"position in [0, {len(model.outputs)}). Received: output={output!r}"
            )
        return keras.Model(model.input, model.outputs[index], name=f"{model.name}_{index}")

    def _split(self, model: Any, explain_at: Any) -> tuple[Any, Any]:
        """``(head, tail)``: ``model`` up to ``explain_at``'s output, and from there on."""
        import keras

        if not isinstance(model, keras.Model) or not getattr(model, "outputs", None):
            raise TypeError(
                "Argument `explain_at` needs a functional Keras model (keras.Model(inputs, "
                f"outputs) or Sequential). Received: model of type {type(model).__name__}."
            )
        if isinstance(explain_at, str):
            try:
                layer = model.get_layer(explain_at)
            except ValueError:
                names = [layer.name for layer in model.layers]
                raise ValueError(
                    f"Argument `explain_at`: no layer named {explain_at!r} in model "
                    f"{model.name!r}. Its layers: {names}"
                ) from None
        elif isinstance(explain_at, keras.layers.Layer) and explain_at in model.layers:
            layer = explain_at
        else:
            raise TypeError(
                "Argument `explain_at` must be a layer of the model or its name. "
                f"Received: {explain_at!r}"
            )
        try:
            h = layer.output
        except (AttributeError, ValueError) as exc:
            raise ValueError(
                f"Argument `explain_at`: layer {layer.name!r} has no single output tensor "
                f"({_summarize(exc)}); it must be called once, with one output."
            ) from None
        if not hasattr(h, "shape") or not h.dtype.startswith("float"):
            raise ValueError(
                f"Argument `explain_at`: the output of layer {layer.name!r} must be one "
                f"floating-point tensor. Received: {h!r}"
            )
        try:
            head = keras.Model(model.input, h, name=f"{model.name}_to_{layer.name}")
            tail = keras.Model(h, model.output, name=f"{model.name}_from_{layer.name}")
        except Exception as exc:
            raise ValueError(
                f"Cannot split model {model.name!r} at layer {layer.name!r}: every path from "
                f"the inputs to the outputs must pass through it ({_summarize(exc)})."
            ) from None
        return head, tail

    def _at_layer(self, inputs: Any) -> Any:
        """The output of the ``explain_at`` layer for ``inputs`` (computed once, stored weights)."""
        try:
            h = self._head(inputs, training=False)
        except Exception as exc:
            raise ValueError(
                f"The model rejected `inputs` on the way to layer {self._split_name()!r}: "
                f"{_summarize(exc)}. Pass the model's inputs with a leading batch dimension."
            ) from None
        return h if isinstance(inputs, tf.Tensor | tf.Variable) else h.numpy()

    def _split_name(self) -> str:
        at = self.explain_at
        return at if isinstance(at, str) else getattr(at, "name", repr(at))

    def _select_weights(
        self, weight_layers: list[Any] | None, perturb_bias: bool
    ) -> tuple[int, ...] | None:
        """Indices into ``model.trainable_variables`` of the variables that get weight noise."""
        if weight_layers is None and perturb_bias:
            return None  # all: the default noise stream
        if self.mode == "sg":
            raise ValueError(
                "Arguments `weight_layers`/`perturb_bias` choose the weights that get noise; "
                "mode='sg' perturbs none. Use mode='ng' or 'fg', or leave them at their "
                f"defaults. Received: weight_layers={weight_layers!r}, "
                f"perturb_bias={perturb_bias!r}"
            )
        model = self._net
        index = {id(v): i for i, v in enumerate(model.trainable_variables)}
        flatten = getattr(model, "_flatten_layers", None)
        layers = list(flatten(include_self=False, recursive=True)) if flatten else model.layers
        owners = [layer for layer in layers if layer.trainable_weights]
        if weight_layers is None:
            chosen = owners
        else:
            chosen = []
            for entry in weight_layers:
                if isinstance(entry, str):
                    found = [layer for layer in owners if layer.name == entry]
                elif hasattr(entry, "trainable_weights"):
                    found = [entry] if any(id(v) in index for v in entry.trainable_weights) else []
                else:
                    raise TypeError(
                        "Argument `weight_layers` must hold layer names or layers. "
                        f"Received: {entry!r}"
                    )
                if not found:
                    names = [layer.name for layer in owners]
                    raise ValueError(
                        f"Argument `weight_layers`: {entry!r} is not a layer with trainable "
                        f"weights in model {model.name!r}. Layers with trainable weights: "
                        f"{names}"
                    )
                chosen.extend(found)
        picked = {
            index[id(v)]
            for layer in chosen
            for v in layer.trainable_weights
            if id(v) in index and (perturb_bias or v.name != "bias")
        }
        if not picked:
            raise ValueError(
                "No weights are left to perturb: the selected layers have only bias variables "
                f"and perturb_bias=False (weight_layers={weight_layers!r}). Select other layers "
                "or pass perturb_bias=True."
            )
        return tuple(sorted(picked))

    def _check_replicates(self, replicates: Any) -> int:
        """``replicates`` checked against the sampler and the draw counts (1 unless Sobol)."""
        name = "num_samples" if self.mode == "sg" else "num_weight_samples"
        count = getattr(self, name)
        if self.sampler != "sobol":
            if replicates is not None:
                raise ValueError(
                    "Argument `replicates` applies to sampler='sobol'. Received: "
                    f"replicates={replicates!r} with sampler={self.sampler!r}"
                )
            return 1
        if replicates is None:
            return _default_replicates(count, name)
        replicates = _check_int("replicates", replicates)
        if count % replicates:
            ok = [d for d in range(2, count + 1) if count % d == 0][:6]
            raise ValueError(
                f"Argument `replicates` must divide {name}={count} (each Sobol replicate has "
                f"{name} / replicates points). Received: replicates={replicates}. Divisors of "
                f"{count}: {ok}; or make {name} a multiple of {replicates}."
            )
        return replicates

    def _samples_per_example(self) -> int:
        return {
            "sg": self.num_samples,
            "ng": self.num_weight_samples,
            "fg": self.num_samples * self.num_weight_samples,
        }[self.mode]

    def _pass_sizes(self) -> tuple[int, int | None]:
        """(input draws per pass, examples per pass or None for all of them)."""
        per = attribution_lib.evaluations_per_sample(self.attribution, self.ig_steps)
        n_in = self.num_samples if self.mode != "ng" else 1
        if self.batch_size is None:
            return n_in, None
        chunk = max(1, min(n_in, self.batch_size // per))
        if self.sampler == "antithetic" and n_in > 1:
            chunk -= chunk % 2  # whole pairs per pass (batch_size >= 2 * per is checked)
        unit = n_in // self.replicates if self.mode == "sg" else 1
        if self.sampler == "sobol" and chunk >= unit:
            chunk -= chunk % unit  # whole Sobol replicates per pass
        return chunk, max(1, self.batch_size // (chunk * per))

    def _chunking(self, batch: int) -> tuple[int, int]:
        """(input draws per pass, examples per pass) for a call with ``batch`` examples."""
        chunk, block = self._pass_sizes()
        return chunk, max(1, batch if block is None else min(batch, block))

    def _plan(
        self,
        input_shape: tuple[int, ...],
        compute: tf.DType,
        *,
        with_stderr: bool,
        cached_weight_noise: bool,
        pipeline: int,
        jit_compile: bool,
        parts: Any = None,
    ) -> engine.Plan:
        """The engine's static configuration for one input shape and dtype."""
        return engine.Plan(
            mode=self.mode,
            kernel=self.kernel,
            num_samples=self.num_samples,
            num_weight_samples=self.num_weight_samples,
            aggregation=self.aggregation,
            attribution=self.attribution,
            ig_steps=self.ig_steps,
            ig_baseline=self.ig_baseline,
            chunk=self._pass_sizes()[0],
            input_shape=tuple(int(d) for d in input_shape),
            compute_dtype=compute,
            weight_epsilon=self.weight_epsilon,
            jit_compile=jit_compile,
            with_stderr=with_stderr,
            proposal=self.proposal,
            proposal_scale=self.proposal_scale,
            cached_weight_noise=cached_weight_noise,
            pipeline=pipeline,
            weight_selection=self._weight_selection,
            parts=parts,
            sampler=self.sampler,
            replicates=self.replicates,
        )

    def _inputs(self, inputs: Any) -> tuple[np.ndarray, bool]:
        is_tensor = isinstance(inputs, tf.Tensor | tf.Variable)
        try:
            arr = inputs.numpy() if is_tensor else np.asarray(inputs)
        except Exception:
            raise TypeError(
                "Argument `inputs` must be an array or tensor of shape [batch, ...]. "
                f"Received: inputs of type {type(inputs).__name__}"
            ) from None
        if arr.dtype.kind in "iub":
            raise TypeError(
                f"Argument `inputs` must be floating point; noise on integer inputs (e.g. token "
                f"ids) is meaningless. Received: inputs with dtype={arr.dtype}. Cast real-valued "
                "integer data (e.g. uint8 pixels) to float32 first."
            )
        if arr.dtype.kind != "f":
            raise TypeError(
                f"Argument `inputs` must be a floating-point array. Received: dtype={arr.dtype}"
            )
        if arr.ndim < 2:
            raise ValueError(
                "Argument `inputs` must have a batch dimension: shape [batch, ...]. "
                f"Received: inputs.shape={arr.shape}. For one example use inputs[None]."
            )
        finite = np.isfinite(arr).reshape(arr.shape[0], int(np.prod(arr.shape[1:]))).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)[:10].tolist()
            raise ValueError(
                f"Argument `inputs` contains NaN or Inf values (examples {bad}). "
                "Attributions of non-finite inputs are undefined."
            )
        return arr, is_tensor

    def _probe(
        self, x: np.ndarray, target_fn: Callable | None, packing: Any = None
    ) -> tuple[int, ...]:
        """Checks the model (and a callable target) on one example before anything is traced.

        Runs once per input signature (and callable), so errors surface here as one clear
        ``ValueError``/``TypeError`` instead of a stack trace from inside the compiled graph.

        Returns:
            The shape of the model's scores for one example (None for a model with several
            outputs, which only a callable target can explain).
        """
        key = (x.shape[1:], x.dtype.str, packing)
        if key not in self._probed:
            self._probed[key] = self._probe_model(x, packing)
        shape = self._probed[key]
        if shape is None and target_fn is None:
            names = list(getattr(self._net, "output_names", None) or [])
            raise TypeError(
                "The model returns several outputs; class-index targets need one tensor of "
                "scores [batch, ...]."
                + (f" Choose one of {names} with output='name', or" if names else " Pass")
                + " a callable target that maps the outputs to one score per example, e.g. "
                "`targets=lambda out: out['a'][:, 0] + out['b'][:, 0]`."
            )
        if target_fn is not None and (key, id(target_fn)) not in self._probed:
            self._probe_target(x, target_fn, packing)
            self._probed[(key, id(target_fn))] = shape
        return shape

    @staticmethod
    def _model_inputs(x: np.ndarray, packing: Any) -> Any:
        """What the model is called with for rows ``x``: ``x`` itself, or the unpacked inputs."""
        if packing is None:
            return tf.convert_to_tensor(x)
        return inputs_lib.unpack_rows(tf.convert_to_tensor(x), packing.parts())

    def _probe_model(self, x: np.ndarray, packing: Any = None) -> tuple[int, ...] | None:
        is_keras = hasattr(self._net, "stateless_call")
        model_dtype = (
            engine._model_input_dtype(self._net, tf.float32)
            if is_keras and packing is None
            else None
        )
        if model_dtype is not None and not model_dtype.is_floating:
            raise TypeError(
                f"The model's input has dtype {model_dtype.name} (e.g. token ids): noise on "
                "integer inputs is meaningless and there is no gradient with respect to them. "
                "Explain a model that takes the embedded (floating-point) inputs instead."
            )
        sample = self._model_inputs(x[:1], packing)
        if self.attribution == "integrated_gradients" and self.ig_baseline.ndim:
            try:
                fits = np.broadcast_shapes(self.ig_baseline.shape, x.shape[1:]) == x.shape[1:]
            except ValueError:
                fits = False
            if not fits:
                raise ValueError(
                    f"Argument `ig_baseline` has shape {self.ig_baseline.shape}, which does not "
                    f"broadcast to one example of `inputs` {tuple(x.shape[1:])}. Pass a float "
                    "or an array of one example's shape."
                )
        try:
            out = self._net(sample, training=False) if is_keras else self._net(sample)
            if self.mode != "sg":
                weights = [v.value for v in self._net.trainable_variables]
                engine.stateless_forward(self._net, weights, sample)
        except Exception as exc:  # the model's own error, summarised
            got = (
                f"per-example shape {tuple(x.shape[1:])} and dtype {x.dtype}"
                if packing is None
                else "inputs " + ", ".join(
                    f"{k!r}: {s}" for k, s in zip(packing.keys, packing.shapes, strict=True)
                )
            )
            raise ValueError(
                f"The model rejected `inputs` with {got}: {_summarize(exc)}. Pass inputs "
                "shaped like the model's input(s) with a leading batch dimension."
            ) from None
        if not isinstance(out, tf.Tensor | np.ndarray) and not hasattr(out, "shape"):
            return None  # several outputs: for a callable target only (checked by _probe)
        return tuple(int(d) for d in out.shape[1:])

    def _probe_target(self, x: np.ndarray, target_fn: Callable, packing: Any = None) -> None:
        """A callable target must map scores ``[n, ...]`` to ``[n]`` floats, in a graph."""
        sample = self._model_inputs(np.repeat(x[:1], 2, axis=0), packing)
        out = self._net(sample, training=False) if hasattr(self._net, "stateless_call") else (
            self._net(sample)
        )
        shapes = tf.nest.map_structure(lambda t: tuple(t.shape), out)
        try:
            got = tf.function(target_fn, autograph=False)(out)
        except Exception as exc:
            raise TypeError(
                "Argument `targets` is a callable that failed on the model's scores of shape "
                f"{shapes} inside a tf.function: {_summarize(exc)}. It must be built "
                "from TensorFlow ops (it is traced into the explainer's graph) and map scores "
                "[n, ...] to [n] target scores."
            ) from None
        shape = tuple(got.shape) if hasattr(got, "shape") else None
        dtype = getattr(got, "dtype", None)
        if shape not in ((2,), (2, 1)) or dtype is None or not tf.as_dtype(dtype).is_floating:
            raise ValueError(
                "Argument `targets` is a callable that must map scores [n, ...] to n float "
                f"target scores (one per row). On scores of shape {shapes} it returned "
                f"shape {shape} and dtype {getattr(dtype, 'name', dtype)}; e.g. use "
                "`lambda s: s[:, 3]` or `lambda s: tf.reduce_sum(s * w, axis=1)`."
            )

    def _targets(self, targets: Any, batch: int, score_shape: tuple[int, ...]) -> np.ndarray:
        n_scores = int(np.prod(score_shape)) if score_shape else 1
        if targets is None:
            if n_scores == 1:
                return np.zeros(batch, np.int32)
            raise ValueError(
                f"Argument `targets` is required: the model has {n_scores} outputs per example. "
                "Pass class indices (one int, or one per example) or a callable scores -> [n]."
            )
        try:
            arr = np.asarray(targets.numpy() if hasattr(targets, "numpy") else targets)
        except Exception:
            arr = np.asarray([], dtype=object)
        if arr.dtype.kind not in "iu":
            raise TypeError(
                "Argument `targets` must be integer class indices (one int or one per example) "
                f"or a callable scores -> [n]. Received: targets={targets!r}"
            )
        if arr.ndim == 0:
            arr = np.full(batch, int(arr))
        if arr.ndim != 1 or arr.shape[0] != batch:
            raise ValueError(
                f"Argument `targets` must hold one class index per example ({batch}). "
                f"Received: targets with shape {arr.shape}"
            )
        if arr.size and (arr.min() < 0 or arr.max() >= n_scores):
            raise ValueError(
                f"Argument `targets` must be in [0, {n_scores}) (the model has {n_scores} "
                f"outputs). Received: targets={arr.tolist()[:20]}"
            )
        return arr.astype(np.int32)

    def _packed_epsilons(self, x: np.ndarray, packing: Any) -> np.ndarray:
        """One scale per example and input ``[B, K]``; 0 for integer inputs."""
        batch, k = x.shape[0], len(packing.keys)
        eps = np.zeros((batch, k))
        if self.mode == "ng":
            return eps
        given = self.epsilon
        if given is not None and given.ndim == 1 and given.shape[0] != k:
            raise ValueError(
                f"Argument `epsilon` has {given.shape[0]} values but the model has {k} inputs. "
                "With several inputs pass one float, or one per input (in the inputs' order)."
            )
        for i, (part, integer) in enumerate(zip(packing.split(x), packing.integer, strict=True)):
            if integer:
                continue
            if given is not None:
                eps[:, i] = float(given) if given.ndim == 0 else float(given[i])
                continue
            eps[:, i] = self._eq30(part, f"input {packing.keys[i]!r} of ", " (or one per input)")
        return eps

    def _eq30(self, values: np.ndarray, what: str = "", fix: str = "") -> np.ndarray:
        """Eq. 30's scale per example of ``values [B, ...]``, ``r = max(x) - mean(x)``."""
        flat = values.reshape(values.shape[0], -1).astype(np.float64)
        r = flat.max(axis=1) - flat.mean(axis=1)
        if np.any(r <= 0):
            bad = np.flatnonzero(r <= 0)[:10].tolist()
            raise ValueError(
                f"Cannot choose `epsilon` by eq. 30 for {what}examples {bad}: they are "
                f"constant, so r = max(x) - mean(x) = 0. Pass `epsilon` explicitly{fix}."
            )
        return np.asarray(self.kernel.epsilon(r, self.alpha), dtype=np.float64)

    def _check_packing(self, packing: Any) -> None:
        """What several inputs do not support (yet): say so before anything is traced."""
        if self.attribution == "integrated_gradients" and (
            any(packing.integer) or self.ig_baseline.ndim
        ):
            raise ValueError(
                "Integrated gradients with several inputs needs float inputs only and a float "
                f"`ig_baseline` (received integer inputs {list(packing.integer)}, ig_baseline "
                f"of shape {self.ig_baseline.shape}): the path would cross non-integer ids."
            )
        if self.reduce is not None:
            raise ValueError(
                f"Argument `reduce` ({self.reduce!r}) with several inputs is not supported: it "
                "would reduce across the inputs' last axes. Use reduce=None."
            )
        if self.proposal is not None and any(packing.integer):
            raise ValueError(
                "Argument `proposal` with integer inputs is not supported: their importance "
                "weights would count noise that is never applied. Drop `proposal`."
            )

    def _epsilons(self, x: np.ndarray, packing: Any = None) -> np.ndarray:
        if packing is not None:
            return self._packed_epsilons(x, packing)
        batch = x.shape[0]
        if self.mode == "ng":
            return np.zeros(batch)
        if self.epsilon is not None:
            if self.epsilon.ndim == 0:
                return np.full(batch, float(self.epsilon))
            if self.epsilon.shape[0] != batch:
                raise ValueError(
                    f"Argument `epsilon` has {self.epsilon.shape[0]} values but `inputs` has "
                    f"{batch} examples. Pass one float, or one per example."
                )
            return self.epsilon
        return self._eq30(x)

    def _seeds(self, seeds: Any, batch: int, offset: int) -> tuple[np.ndarray, int]:
        seed = self.seed if self.seed is not None else secrets.randbits(63)
        if seeds is None:
            return sampling.example_seeds(seed, batch, offset), seed
        arr = np.asarray(seeds)
        if arr.dtype.kind not in "iu" or arr.ndim != 1 or arr.shape[0] != batch:
            raise ValueError(
                f"Argument `seeds` must be {batch} integer seeds, one per example. "
                f"Received: seeds with dtype {arr.dtype} and shape {arr.shape}"
            )
        return arr.astype(np.uint64).view(np.int64), seed

    def _caches_weight_noise(self) -> bool:
        if self._cache_decision is None:
            self._cache_decision = self._decide_cache()
        return self._cache_decision

    def _decide_cache(self) -> bool:
        if self.mode == "sg" or self.seed is None or self.tolerance is not None:
            return False  # (rounds of `tolerance` use other weight draws than the seed's)
        n_weights = sum(
            int(np.prod(v.shape))
            for v in engine.selected_variables(self._net, self._weight_selection)
        )
        itemsize = 8 if self._net.trainable_variables[0].dtype == "float64" else 4
        return self.num_weight_samples * n_weights * itemsize <= self.weight_noise_cache_mb * 2**20

    def _weight_noise_input(self, wkey: tf.Tensor, compute: tf.DType) -> tf.Tensor:
        if not self._caches_weight_noise():
            dtype = engine._weight_dtype(self._net) if self.mode != "sg" else compute
            if dtype not in self._no_noise:
                self._no_noise[dtype] = tf.zeros([0, 0], dtype)
            return self._no_noise[dtype]
        if self._weight_noise is None:
            self._weight_noise = engine.weight_noise_table(
                self._net,
                self.kernel,
                wkey,
                self.num_weight_samples,
                self._weight_selection,
                antithetic=self.sampler == "antithetic",
                sobol=(
                    self.num_weight_samples // self.replicates
                    if self.sampler == "sobol"
                    else None
                ),
            )
        return self._weight_noise

    def _function(
        self,
        x: np.ndarray,
        target_fn: Callable | None,
        with_stderr: bool,
        packing: Any = None,
    ) -> Callable:
        compute = _compute_dtype(x)
        key = (
            x.shape[1:],
            compute,
            None if target_fn is None else id(target_fn),
            with_stderr,
            packing,
        )
        fn = self._functions.get(key)
        if fn is None:
            plan = self._plan(
                x.shape[1:],
                compute,
                with_stderr=with_stderr,
                cached_weight_noise=self._caches_weight_noise(),
                # no memory bound asked for: overlap two weight draws (same result)
                pipeline=2 if self.batch_size is None else 1,
                jit_compile=self.jit_compile,
                parts=None if packing is None else packing.parts(),
            )
            # the concrete function: traced now, once, and called without signature dispatch
            fn = engine.build(
                self._net, plan, target_fn, on_trace=self._count_trace
            ).get_concrete_function()
            self._functions[key] = fn
        return fn

    def _remember(self, target_fn: Callable) -> None:
        """Keeps the compiled functions of the last :data:`MAX_CALLABLES` callable targets.

        A compiled function is tied to its callable, so pass the same callable object on every
        call to reuse it (a new ``lambda`` per call traces anew).
        """
        ident = id(target_fn)
        self._callables.pop(ident, None)
        self._callables[ident] = target_fn
        while len(self._callables) > MAX_CALLABLES:
            old = next(iter(self._callables))
            del self._callables[old]
            for cache in (self._functions, self._probed):
                for k in [k for k in cache if isinstance(k, tuple) and old in k]:
                    del cache[k]

    def _count_trace(self) -> None:
        self.trace_count += 1

    # -- public ------------------------------------------------------------------------------
    def explain(
        self,
        inputs: Any,
        targets: Any = None,
        *,
        return_stderr: bool = False,
        seeds: Any = None,
    ) -> Any:
        """Smoothed attributions of ``inputs`` for ``targets``.

        Args:
            inputs: Float array or tensor ``[B, ...]`` shaped like the model's input; for a
                model with several inputs, a list or dict of them (see
                :mod:`tfmollify.inputs`: integer inputs pass through without noise).
            targets: Class indices ``[B]`` or one int for all; a callable mapping the model's
                scores ``[n, ...]`` of a batch of noisy inputs to ``[n]`` target scores (row-wise;
                for a model with several outputs, it gets them all, as the model returns them);
                or ``None`` for a model with a single output.
            return_stderr: Also return the Monte Carlo standard error of each element.
            seeds: Optional int64 seeds ``[B]``, one per example: example ``b``'s input noise then
                depends only on ``seeds[b]`` and the sample index. By default they are derived
                from the explainer's ``seed`` and the example's position (see
                :mod:`tfmollify.sampling`).

        Returns:
            Attributions with the shape and dtype of ``inputs`` (a NumPy array, or a tensor if
            ``inputs`` was one; a list or dict of them for several inputs, zeros for integer
            ones); with ``return_stderr``, the pair ``(attributions, stderr)``.

        Raises:
            ValueError: For inputs the model rejects, NaN/Inf inputs, targets out of range or of
                the wrong length, or constant examples when ``epsilon`` is None.
            TypeError: For integer inputs or non-integer targets.
            NonFiniteError: If every sample of an example has a non-finite attribution.
        """
        if self.tolerance is not None:
            return self._explain_to_tolerance(inputs, targets, bool(return_stderr), seeds)
        job = self._prepare(inputs, targets, return_stderr=bool(return_stderr), seeds=seeds)
        if job.batch == 0:
            out = self._output(job, self._assemble(job, [np.zeros_like(job.x)]))
            return (out, out) if return_stderr else out
        parts = [
            self._run_block(job, start, min(job.batch, start + job.block))
            for start in range(0, job.batch, job.block)
        ]
        finite_n = np.concatenate([n.numpy() for _, _, n in parts]).astype(np.int64)
        total = self._samples_per_example()
        self.last_num_samples = total
        self.last_nonfinite_count = total - finite_n
        self._report_nonfinite(finite_n, total)
        value = self._output(job, self._assemble(job, [v.numpy() for v, _, _ in parts]))
        if not return_stderr:
            return value
        return value, self._output(job, self._assemble(job, [s.numpy() for _, s, _ in parts]))

    def _explain_to_tolerance(
        self, inputs: Any, targets: Any, return_stderr: bool, seeds: Any
    ) -> Any:
        """Rounds of independent samples until every example meets ``tolerance``."""
        job = self._prepare(inputs, targets, return_stderr=True, seeds=seeds)
        if job.batch == 0:
            out = self._output(job, self._assemble(job, [np.zeros_like(job.x)]))
            return (out, out) if return_stderr else out
        per_round = self._samples_per_example()
        rounds = max(1, self.max_samples // per_round)
        batch = job.batch
        total = np.zeros((batch, job.x[:1].size), np.float64)  # sum of n_r * value_r
        var = np.zeros_like(total)  # sum of (n_r * stderr_r)^2
        count = np.zeros(batch, np.int64)  # finite samples
        drawn = np.zeros(batch, np.int64)
        active = np.arange(batch)
        base_seeds = job.seeds
        weight_seed = int(job.wkey.numpy()[0])  # round r's weight draws derive from it and r
        keep = np.ones(batch, bool)
        for r in range(rounds):
            if r:
                # round r: seeds from each example's own seed and r; weight draws from r
                job.seeds = np.array(
                    [sampling.example_seeds(int(s), 1, r)[0] for s in base_seeds[active]]
                )
                job.wkey = tf.constant(
                    sampling.weight_key(int(sampling.example_seeds(weight_seed, 1, r)[0]))
                )
                for name in ("x", "targets", "eps"):
                    setattr(job, name, getattr(job, name)[keep])
                job.batch = len(active)
            parts = [
                self._run_block(job, start, min(job.batch, start + job.block))
                for start in range(0, job.batch, job.block)
            ]
            v = np.concatenate([p[0].numpy() for p in parts]).astype(np.float64)
            e = np.concatenate([p[1].numpy() for p in parts]).astype(np.float64)
            n = np.concatenate([p[2].numpy() for p in parts]).astype(np.int64)
            ok = n > 0
            total[active] += np.where(ok[:, None], n[:, None] * v, 0.0)
            var[active] += np.where(ok[:, None], np.square(n[:, None] * e), 0.0)
            count[active] += n
            drawn[active] += per_round
            c = np.maximum(count[active], 1)[:, None]
            value, stderr = total[active] / c, np.sqrt(var[active]) / c
            scale = np.maximum(np.linalg.norm(value, axis=1), 1e-300)
            rel = np.linalg.norm(stderr, axis=1) / scale
            keep = ~(rel <= self.tolerance) & (drawn[active] + per_round <= self.max_samples)
            active = active[keep]
            if not active.size:
                break
        self.last_num_samples = drawn
        self.last_nonfinite_count = drawn - count
        self._report_nonfinite(count, drawn)
        c = np.maximum(count, 1)[:, None]
        full = self._Job(
            np.empty((batch, *job.x.shape[1:]), job.x.dtype), job.is_tensor, packing=job.packing
        )
        value = self._output(full, self._assemble(full, [total / c]))
        if not return_stderr:
            return value
        return value, self._output(full, self._assemble(full, [np.sqrt(var) / c]))

    @staticmethod
    def _output(job: Explainer._Job, flat: np.ndarray) -> Any:
        """A result shaped like the call's inputs: an array or tensor, or their structure."""
        if job.packing is not None:
            return job.packing.unpack(flat, as_tensor=job.is_tensor)
        return tf.convert_to_tensor(flat) if job.is_tensor else flat

    class _Job:
        """One call's checked inputs and its compiled core, ready to run block by block.

        Shared by :meth:`explain` and :func:`tfmollify.dataset.explain_dataset` (which runs the
        blocks of one batch on the replicas of a ``tf.distribute.Strategy``).
        """

        def __init__(
            self,
            x: np.ndarray,
            is_tensor: bool,
            targets: np.ndarray | None = None,
            eps: np.ndarray | None = None,
            seeds: np.ndarray | None = None,
            fn: Callable | None = None,
            compute: tf.DType | None = None,
            wkey: tf.Tensor | None = None,
            wnoise: tf.Tensor | None = None,
            block: int = 1,
            packing: inputs_lib.Packing | None = None,
        ) -> None:
            self.x, self.is_tensor, self.batch = x, is_tensor, int(x.shape[0])
            self.targets, self.eps, self.seeds = targets, eps, seeds  # [B] each
            self.fn, self.compute, self.wkey, self.wnoise = fn, compute, wkey, wnoise
            self.block = block  # examples per call of `fn` (the `batch_size` memory bound)
            self.packing = packing  # several inputs packed into rows (None: one input)

    def _prepare(
        self,
        inputs: Any,
        targets: Any,
        *,
        return_stderr: bool,
        seeds: Any = None,
        offset: int = 0,
        seed: int | None = None,
    ) -> Explainer._Job:
        """Checks one call's arguments and compiles (or reuses) its core.

        Args:
            inputs, targets, return_stderr, seeds: As for :meth:`explain`.
            offset: Position of ``inputs[0]`` in the whole job: default example seeds are
                ``sampling.example_seeds(seed, B, offset)``.
            seed: The job's seed, in place of the explainer's (and of a fresh random one when
                that is None): it derives the default example seeds and the weight-noise key.
        """
        if return_stderr and self.reduce is not None:
            raise ValueError(
                f"return_stderr=True is not available with reduce={self.reduce!r}: the standard "
                "error of a sum or norm over the last axis needs the covariances of its "
                "elements. Use reduce=None and reduce the attributions yourself."
            )
        if self._head is not None:
            inputs = self._at_layer(inputs)
        packing = None
        if inputs_lib.is_structured(inputs, self._net):
            x, packing, is_tensor = inputs_lib.pack(inputs)
        else:
            x, is_tensor = self._inputs(inputs)
        batch = x.shape[0]
        if batch == 0:
            return self._Job(x, is_tensor, packing=packing)
        if packing is not None:
            self._check_packing(packing)
        target_fn = targets if callable(targets) else None
        if target_fn is not None:
            self._remember(target_fn)
        score_shape = self._probe(x, target_fn, packing)
        idx = (
            np.zeros(batch, np.int32)
            if target_fn is not None
            else self._targets(targets, batch, score_shape)
        )
        eps = self._epsilons(x, packing)
        if seed is None:
            ex_seeds, seed = self._seeds(seeds, batch, offset)
        elif seeds is None:
            ex_seeds = sampling.example_seeds(seed, batch, offset)
        else:
            ex_seeds = self._seeds(seeds, batch, offset)[0]
        fn = self._function(x, target_fn, return_stderr, packing)
        compute = _compute_dtype(x)
        _, block = self._chunking(batch)
        wkey = self._wkeys.get(seed)
        if wkey is None:
            wkey = tf.constant(sampling.weight_key(seed))
            if self.seed is not None and seed == self.seed:
                self._wkeys = {seed: wkey}
        wnoise = self._weight_noise_input(wkey, compute)
        return self._Job(
            x, is_tensor, idx, eps, ex_seeds, fn, compute, wkey, wnoise, block, packing
        )

    def _run_block(
        self, job: Explainer._Job, start: int, stop: int
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The core on examples ``start:stop`` of ``job``, on the current device.

        Returns:
            ``(value [n, D], stderr [n, D] or [0], finite [n])`` in the compute dtype.
        """
        return job.fn(
            tf.constant(job.x[start:stop], job.compute),
            tf.constant(job.targets[start:stop]),
            tf.constant(job.eps[start:stop], job.compute),
            tf.constant(job.seeds[start:stop]),
            job.wkey,
            job.wnoise,
        )

    def _assemble(self, job: Explainer._Job, parts: list[np.ndarray]) -> np.ndarray:
        """Blocks of flat results ``[n, D]`` (in order) shaped like ``job.x`` (reduced over the
        last axis with ``reduce``)."""
        out = np.concatenate(parts).reshape(job.x.shape).astype(job.x.dtype, copy=False)
        if self.reduce == "sum":
            return out.sum(axis=-1)
        if self.reduce == "norm":
            return np.sqrt(np.square(out).sum(axis=-1))
        return out

    def _report_nonfinite(self, finite: np.ndarray, total: Any) -> None:
        """``total``: samples drawn, one int for all examples or one per example."""
        total = np.broadcast_to(np.asarray(total), finite.shape)
        dead = np.flatnonzero(finite == 0)
        if dead.size:
            raise NonFiniteError(
                f"Every one of the {int(total[dead[0]])} samples gave a non-finite attribution for "
                "examples "
                f"{dead[:10].tolist()} (mode={self.mode!r}, kernel={self.kernel.name!r}). "
                "Reduce `weight_epsilon`/`epsilon`, use a lighter-tailed kernel, or check the "
                "model for overflow."
            )
        bad = total - finite
        if bad.any():
            warnings.warn(
                f"{int(bad.sum())} of {int(total.sum())} samples gave non-finite attributions "
                f"and were left out of the average (per example: {bad.tolist()[:20]}); see "
                "`explainer.last_nonfinite_count`.",
                RuntimeWarning,
                stacklevel=3,
            )

    def __call__(self, inputs: Any, targets: Any = None, **kwargs: Any) -> Any:
        """Same as :meth:`explain`."""
        return self.explain(inputs, targets, **kwargs)

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments except ``model`` (JSON-friendly when the kernel is named)."""
        eps = self.epsilon
        return {
            "mode": self.mode,
            "kernel": self.kernel.name,
            "num_samples": self.num_samples,
            "num_weight_samples": self.num_weight_samples,
            "epsilon": None if eps is None else (float(eps) if eps.ndim == 0 else eps.tolist()),
            "alpha": self.alpha,
            "weight_epsilon": self.weight_epsilon,
            "aggregation": self.aggregation,
            "attribution": self.attribution,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "ig_steps": self.ig_steps,
            "ig_baseline": self.ig_baseline.tolist(),
            "jit_compile": self.jit_compile,
            "proposal": None if self.proposal is None else self.proposal.name,
            "proposal_scale": self.proposal_scale,
            "weight_noise_cache_mb": self.weight_noise_cache_mb,
            "weight_layers": None
            if self.weight_layers is None
            else [w if isinstance(w, str) else w.name for w in self.weight_layers],
            "perturb_bias": self.perturb_bias,
            "explain_at": None if self.explain_at is None else self._split_name(),
            "reduce": self.reduce,
            "output": self.output,
            "sampler": self.sampler,
            "replicates": self.replicates if self.sampler == "sobol" else None,
            "tolerance": self.tolerance,
            "max_samples": self.max_samples,
        }

    @classmethod
    def from_config(cls, model: Any, config: dict[str, Any]) -> Explainer:
        """Rebuilds an explainer for ``model`` from :meth:`get_config`'s output."""
        config = dict(config)
        if cls._fixed_mode is not None:
            config.pop("mode", None)
        return cls(model, **config)

    def export(self, path: Any, **kwargs: Any) -> Any:
        """Writes this explainer as a SavedModel that TensorFlow Serving loads as it is.

        Same as :func:`tfmollify.export` (``tfmollify.serving.export``) with this explainer; see
        there for the arguments, the signature and the errors.
        """
        from tfmollify import serving

        return serving.export(self, path, **kwargs)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(mode={self.mode!r}, kernel={self.kernel.name!r}, "
            f"num_samples={self.num_samples}, num_weight_samples={self.num_weight_samples}, "
            f"aggregation={self.aggregation!r}, attribution={self.attribution!r})"
        )


class _FixedMode(Explainer):
    def __init__(self, model: Any, **kwargs: Any) -> None:
        if "mode" in kwargs:
            raise TypeError(
                f"{type(self).__name__} fixes mode={self._fixed_mode!r}; use tfmollify.Explainer "
                f"to choose the mode. Received: mode={kwargs['mode']!r}"
            )
        super().__init__(model, mode=self._fixed_mode, **kwargs)


class SmoothGrad(_FixedMode):
    """:class:`Explainer` with ``mode="sg"``: noise on the inputs only.

    Example:

    >>> import keras, numpy as np
    >>> import tfmollify as tfm
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> x = np.arange(8, dtype="float32").reshape(2, 4)
    >>> a = tfm.SmoothGrad(model, num_samples=16, seed=1)(x, targets=[0, 2])
    >>> a.shape
    (2, 4)
    """

    _fixed_mode = "sg"


class NoiseGrad(_FixedMode):
    """:class:`Explainer` with ``mode="ng"``: multiplicative noise on the trainable weights."""

    _fixed_mode = "ng"


class FusionGrad(_FixedMode):
    """:class:`Explainer` with ``mode="fg"``: noise on the weights and on the inputs."""

    _fixed_mode = "fg"

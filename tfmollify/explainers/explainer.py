"""The user-facing explainer: one object that ties the pipeline's parts together.

``Explainer(model, **arguments)`` checks the arguments once into a frozen
:class:`~tfmollify.adapter.spec.Spec`, looks at the model through a
:class:`~tfmollify.adapter.model_view.ModelView`
and runs calls with a :class:`~tfmollify.adapter.runner.Runner`, which returns an immutable
:class:`~tfmollify.adapter.runner.Explanation` per call. The settings cannot change after
construction:
``explainer.replace(num_samples=1000)`` makes a new explainer of the same model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tfmollify.adapter.model_view import ModelView
from tfmollify.adapter.runner import MAX_CALLABLES, Explanation, NonFiniteError, Runner
from tfmollify.adapter.spec import ARGUMENTS, MODES, Spec
from tfmollify.core import kernels as kernels_lib
from tfmollify.explainers import progress as progress_lib
from tfmollify.explainers.seam import Seam

__all__ = [
    "MAX_CALLABLES",
    "MODES",
    "Explainer",
    "Explanation",
    "FusionGrad",
    "NoiseGrad",
    "NonFiniteError",
    "SmoothGrad",
]

_CONFIG = frozenset(ARGUMENTS) | {"model"}
_OWN = frozenset(
    {"_spec", "_view", "_runner", "_seam", "last_num_samples", "last_nonfinite_count"}
)


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
        kernel: A kernel name (see :func:`tfmollify.core.kernels.names`) or a
            :class:`~tfmollify.core.kernels.Kernel`.
        num_samples: Input-noise draws ``N`` per example (``sg``; per weight draw for ``fg``).
        num_weight_samples: Weight-noise draws ``M`` (``ng``, ``fg``).
        epsilon: Input-noise scale in the input's units: a float, or one per example. ``None``
            solves eq. 30 per example, ``kernel.epsilon(r, alpha)`` with ``r = max(x) - mean(x)``.
        alpha: Fraction of the input noise inside ``[-r, r]`` when ``epsilon`` is None.
        weight_epsilon: Relative weight-noise scale: ``w' = w * (1 + weight_epsilon * zeta)``.
        aggregation: ``"smoothgrad"`` (mean), ``"smoothgrad_sq"`` (mean of squares) or
            ``"vargrad"`` (population variance).
        attribution: Base method at each noisy sample: ``"gradient"``, ``"input_x_gradient"``,
            ``"integrated_gradients"``, ``"grad_cam"`` or ``"grad_cam_plus_plus"`` (these two
            at a convolutional layer: ``attribute_at``), a name registered with
            :func:`tfmollify.register_attribution`, or your own callable
            ``method(score_fn, x) -> attribution``: ``score_fn(v)`` gives the ``[n]`` target
            scores at points ``v`` (see :mod:`tfmollify.core.attribution`), e.g.
            ``lambda f, x: tfm.tape_gradient(f, x) * x``. It is traced into the graph, and
            counts as one evaluation for ``batch_size``. With several inputs ``x`` is the
            packed float rows ``[n, D]``.
        batch_size: At most this many model evaluations in flight (bounds memory).
            ``"auto"`` (the default) bounds them by the memory a pass holds: per evaluation,
            the outputs of all the model's layers and their gradients, and the noisy input row
            and its gradient, at most 1 GiB (and at most a quarter of the host memory
            available) in one pass, or 32 evaluations when the model's shapes are unknown; a
            small model gets one pass. ``None`` evaluates all
            input draws of all examples of a call in one pass (per weight draw, two weight
            draws overlapping): fastest, but memory grows with ``B x N``.
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
            call, so NG/FG keep them in memory (as the factors ``1 + weight_epsilon z`` that
            multiply the weights, ``M x`` the number of weights) when they fit in this many MiB,
            and only draw them on the first call. 0 disables it.
            The ``K`` weight draws of one pass (``weight_draws_per_pass``) count against it too.
        input_noise_cache_mb: With a fixed ``seed`` (and no ``seeds`` passed) the examples of a
            call get the same input draws on every call with as many examples, so SG/FG keep
            the last call's standard input noise (``B x`` the draws' size) when it fits in this
            many MiB, and only draw it anew for other examples counts, shapes or seeds: a
            repeated one-example call then only adds the noise, it does not draw it. It takes
            effect where every pass holds all the input draws of its weight draw (the whole
            ``N`` within ``batch_size``), without ``proposal`` or ``tolerance``. 0 disables it;
            the results are the same either way.
        weight_draws_per_pass: NG/FG: ``"auto"`` evaluates ``K`` weight draws in one pass
            (their rows side by side, each draw's rows under its own weights) whenever ``K > 1``
            fit: ``K x`` the rows of one draw within ``batch_size`` and within 16 MiB of
            activations (sharing saves a pass's fixed cost, which only small passes feel), and
            ``K x`` the perturbed weights within ``weight_noise_cache_mb``. It takes effect when
            every layer whose weights get noise has a per-row-weight form (Dense, EinsumDense,
            Conv1D/2D/3D, DepthwiseConv2D, SeparableConv2D, Embedding, LayerNormalization,
            BatchNormalization, MultiHeadAttention's projections) and the sampler is ``"iid"``;
            otherwise one draw per pass. An int caps ``K`` without the 16 MiB rule (larger
            passes may gain on a GPU); 1 forces one draw per pass. The same seed gives the same
            draws either way; ``explain_full(...).weight_draws_per_pass`` says which path ran.
        weight_layers: The layers whose weights get noise in ``ng``/``fg``: names or layer
            objects (nested layers included). ``None``: every layer with trainable weights.
            Variables of other layers are never perturbed (the paper saw weight noise in the
            top layers give invalid gradients; leave them out here).
        perturb_bias: Also perturb the ``bias`` variables of the selected layers.
        explain_at: A layer (or its name or path) of a Keras model: noise goes on that
            layer's output ``h`` and the attribution is with respect to ``h`` (for text, the
            embedding output ``[B, T, D]``; the inputs may then be integer token ids alone,
            as for :func:`tfmollify.explain_generation`). The
            model is split at the layer: ``h`` is computed with the stored weights, and
            NG/FG perturb the layers after it. A layer that is nested, or that other paths
            bypass, cannot be split: it is then the same as ``noise_at=layer,
            attribute_at=layer`` (NG/FG then perturb every selected weight).
        noise_at: A layer (object, name or path such as ``"backbone/token_embedding"``) whose
            output gets the input noise instead of the inputs: its call is intercepted inside
            the traced forward pass, so the layer may sit inside a nested model (a KerasHub
            backbone) or a subclassed model, and its output may merge with other paths.
            ``epsilon`` is then in the units of that output (eq. 30 on it when None). A layer
            called more than once per forward pass is refused, except a tied embedding (an
            embedding used for the lookup and again, reversed, for the logits, as in
            KerasHub's causal LMs): the noise and the attribution go on its lookup call, the
            one whose input is integer. ``"name:k"`` names the ``k``-th call (from 0) instead.
        attribute_at: A layer (as for ``noise_at``): the attribution is with respect to its
            output (``"gradient"`` there is Captum's LayerGradient; ``"grad_cam"`` needs it),
            and has that output's shape (Grad-CAM: its positions). With ``noise_at=None`` the
            noise stays on the inputs (e.g. SmoothGrad-smoothed Grad-CAM). NG/FG perturb the
            model's weights (``weight_layers`` chooses).
        input_range: ``(low, high)``, the inputs' valid range: bounded noise (AdaptGrad, Zhou
            et al. 2025). Each element gets its own scale, eq. 30 with ``r = t``, its distance
            to the nearer bound, so that a fraction ``alpha`` of its noise stays in
            ``[x - t, x + t]`` (inside the range): ``t / (sqrt(2) erfinv(alpha))`` for the
            Gaussian. Needs ``epsilon=None``; elements on a bound get no noise.
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
        attribution: str | Callable = "gradient",
        batch_size: int | str | None = "auto",
        seed: int | None = None,
        ig_steps: int = 16,
        ig_baseline: float | np.ndarray = 0.0,
        jit_compile: bool = False,
        proposal: str | kernels_lib.Kernel | None = None,
        proposal_scale: float = 1.0,
        weight_noise_cache_mb: float = 256.0,
        input_noise_cache_mb: float = 64.0,
        weight_draws_per_pass: int | str = "auto",
        weight_layers: Sequence[Any] | None = None,
        perturb_bias: bool = True,
        explain_at: Any = None,
        noise_at: Any = None,
        attribute_at: Any = None,
        input_range: tuple[float, float] | None = None,
        reduce: str | None = None,
        output: str | int | None = None,
        sampler: str = "iid",
        replicates: int | None = None,
        tolerance: float | None = None,
        max_samples: int | None = None,
    ) -> None:
        arguments = {k: v for k, v in locals().items() if k in ARGUMENTS}
        self._build(model, Spec.create(**arguments))

    def _build(self, model: Any, spec: Spec) -> None:
        view = ModelView(model, spec)
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_view", view)
        runner = Runner(spec, view)
        object.__setattr__(self, "_runner", runner)
        object.__setattr__(self, "_seam", Seam(runner, view, self._record))
        self.last_nonfinite_count: np.ndarray | None = None
        self.last_num_samples: Any = spec.samples_per_example

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CONFIG or name in ("spec", "view", "runner", "seam"):
            raise AttributeError(
                f"An explainer's settings are frozen: cannot set `{name}`. Make a new explainer "
                f"with the change, e.g. `explainer = explainer.replace({name}=...)`."
            )
        if name not in _OWN:
            raise AttributeError(
                f"{type(self).__name__} has no attribute `{name}` to set; its settings are "
                "frozen (see `replace`)."
            )
        object.__setattr__(self, name, value)

    # -- the pipeline's parts (read-only) ----------------------------------------------------
    @property
    def spec(self) -> Spec:
        """The checked, frozen settings (:class:`tfmollify.adapter.spec.Spec`)."""
        return self._spec

    @property
    def view(self) -> ModelView:
        """How the model is called (:class:`tfmollify.adapter.model_view.ModelView`)."""
        return self._view

    @property
    def runner(self) -> Runner:
        """Prepares and runs calls (:class:`tfmollify.adapter.runner.Runner`)."""
        return self._runner

    @property
    def seam(self) -> Seam:
        """The narrow interface integrations use (:class:`tfmollify.explainers.seam.Seam`):
        datasets, exports, the training callback, Ray and the HTTP server go through it."""
        return self._seam

    @property
    def model(self) -> Any:
        """The user's model (only ever read)."""
        return self._view.model

    @property
    def trace_count(self) -> int:
        """How often the compiled core was traced (once per input signature and target)."""
        return self._runner.trace_count

    # -- public ------------------------------------------------------------------------------
    def explain(
        self,
        inputs: Any,
        targets: Any = None,
        *,
        return_stderr: bool = False,
        seeds: Any = None,
        progress: bool | None = None,
    ) -> Any:
        """Smoothed attributions of ``inputs`` for ``targets``.

        Args:
            inputs: ``[B, ...]`` array or tensor (float), or for a model with several inputs a
                list or dict of them (integer inputs, e.g. token ids, get no noise and zero
                attributions).
            targets: Class index per example (an int for all, or ``[B]``), or a callable
                mapping the model's scores ``[n, ...]`` to ``[n]`` target scores (a TensorFlow
                function, traced into the graph). May be omitted for a model with one output.
                With ``attribution="gradient"`` or ``"input_x_gradient"`` at a layer, the
                callable may return ``[n, K]``: ``K`` scores per example, each attributed on
                its own from one shared forward pass (the result gets an axis ``K`` after the
                batch; the same noise for all ``K``).
            return_stderr: Also return the Monte Carlo standard error of every element.
            seeds: Optional per-example seeds ``[B]`` (any 64-bit ints; ``-1`` and
                ``2**64 - 1`` are the same seed): the input noise of example ``b`` depends only
                on ``seeds[b]``. Default: derived from ``seed`` and the example's position.
            progress: A progress bar over the examples when the call runs in several passes
                (``batch_size``) and takes more than a few seconds; None shows it on a
                terminal or in a notebook (not under CI), False never.

        Returns:
            Attributions shaped like ``inputs`` (an array, or a tensor for tensor inputs, in
            the inputs' floating dtype; the inputs' structure for several inputs; the layer's
            output shape with ``explain_at``, minus the last axis with ``reduce``), and with
            ``return_stderr`` the pair ``(attributions, stderr)``. :meth:`explain_full` also
            returns the per-example sample counts.

        Raises:
            ValueError: For inputs with NaN/Inf, wrong target shapes or out-of-range targets,
                the wrong number of seeds, or a constant example when ``epsilon`` is None.
            TypeError: For integer inputs or non-integer targets.
            NonFiniteError: If every sample of an example has a non-finite attribution.
        """
        result = self._explain(inputs, targets, seeds, bool(return_stderr), progress)
        if return_stderr:
            return result.attributions, result.stderr
        return result.attributions

    def explain_full(
        self, inputs: Any, targets: Any = None, *, seeds: Any = None,
        progress: bool | None = None,
    ) -> Explanation:
        """Like :meth:`explain`, returning everything about the call in one immutable object.

        Safe to call from several threads at once: each call gets its own result.

        Args:
            inputs, targets, seeds, progress: As for :meth:`explain`.

        Returns:
            A :class:`tfmollify.Explanation` with ``attributions``, ``stderr`` (None with
            ``reduce``), ``finite_samples`` and ``num_samples`` (per example).

        Raises:
            As :meth:`explain`.

        Example:

        >>> import keras, numpy as np
        >>> import tfmollify as tfm
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> e = tfm.SmoothGrad(model, num_samples=8, seed=0)
        >>> r = e.explain_full(np.arange(6, dtype="float32").reshape(2, 3), targets=[0, 1])
        >>> r.attributions.shape, r.stderr.shape, r.num_samples.tolist()
        ((2, 3), (2, 3), [8, 8])
        """
        return self._explain(inputs, targets, seeds, self._spec.reduce is None, progress)

    def _explain(
        self, inputs: Any, targets: Any, seeds: Any, with_stderr: bool,
        progress: bool | None = None,
    ) -> Explanation:
        bar = functools.partial(progress_lib.bar, enabled=progress, unit="example")
        result = self._runner.explain(
            inputs, targets, with_stderr=with_stderr, seeds=seeds, progress=bar
        )
        self._record(
            result.num_samples if self._spec.tolerance is not None
            else self._spec.samples_per_example,
            result.finite_samples,
        )
        return result

    def _record(self, num_samples: Any, finite_samples: np.ndarray) -> None:
        """The latest call's counts: only the explainer sets its ``last_*`` attributes (the
        integrations hand theirs over through :meth:`Seam.record`)."""
        self.last_num_samples = num_samples
        self.last_nonfinite_count = num_samples - np.asarray(finite_samples)

    def __call__(self, inputs: Any, targets: Any = None, **kwargs: Any) -> Any:
        """Same as :meth:`explain`."""
        return self.explain(inputs, targets, **kwargs)

    def replace(self, **changes: Any) -> Explainer:
        """A new explainer of the same model with some arguments changed.

        Like ``dataclasses.replace``: the other arguments stay as given, and everything is
        checked again. The compiled functions of this explainer are not shared.

        Example:

        >>> import keras
        >>> import tfmollify as tfm
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> e = tfm.SmoothGrad(model, num_samples=10, seed=0)
        >>> e.replace(num_samples=1000, kernel="rect").num_samples
        1000
        """
        if self._fixed_mode is not None and "mode" in changes:
            raise TypeError(
                f"{type(self).__name__} fixes mode={self._fixed_mode!r}; use "
                f"tfmollify.Explainer to choose the mode. Received: mode={changes['mode']!r}"
            )
        new = object.__new__(type(self))
        new._build(self.model, self._spec.replace(**changes))
        return new

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments as given, except ``model`` (JSON-friendly when the kernel
        is named: kernels and layers by name, arrays as lists)."""
        config = self._spec.config()
        if self._fixed_mode is not None:
            config.pop("mode")
        return config

    @classmethod
    def from_config(cls, model: Any, config: dict[str, Any]) -> Explainer:
        """Rebuilds an explainer for ``model`` from :meth:`get_config`'s output."""
        config = dict(config)
        if cls._fixed_mode is not None:
            config.pop("mode", None)
        return cls(model, **config)

    def export(self, path: Any, **kwargs: Any) -> Any:
        """Writes this explainer as a SavedModel that TensorFlow Serving loads as it is.

        Same as :func:`tfmollify.export` (``tfmollify.explainers.export.export``) with this
        explainer; see
        there for the arguments, the signature and the errors.
        """
        from tfmollify.explainers import export as serving

        return serving.export(self, path, **kwargs)

    def __repr__(self) -> str:
        s = self._spec
        return (
            f"{type(self).__name__}(mode={s.mode!r}, kernel={s.kernel.name!r}, "
            f"num_samples={s.num_samples}, num_weight_samples={s.num_weight_samples}, "
            f"aggregation={s.aggregation!r}, attribution={s.attribution!r})"
        )


def _setting(name: str) -> property:
    return property(
        lambda self: getattr(self._spec, name),
        doc=f"The checked `{name}` argument (read-only; see `replace`).",
    )


for _name in ARGUMENTS:
    setattr(Explainer, _name, _setting(_name))
del _name


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

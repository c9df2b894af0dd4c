"""Hypothesis strategies for tfmollify: kernels, noise scales, settings, models, inputs.

Property-based tests of explanations draw what they vary from these strategies, in the manner
of :mod:`hypothesis.extra.numpy`:

=========================================  =================================================
strategy                                   draws
=========================================  =================================================
:func:`kernels`                            the registered kernels, and the user's own
:func:`epsilons`                           input-noise scales in a kernel's sensible range
:func:`explainer_settings`                 keyword arguments that ``Explainer`` accepts
:func:`models`                             small random Keras 3 models of five kinds
:func:`inputs_and_targets`                 inputs and class indices that fit a model
:func:`explanation_cases`                  ``(explainer, inputs, targets)``, ready to call
=========================================  =================================================

This module imports Hypothesis (the ``tfmollify[testing]`` extra); ``import tfmollify.testing``
does not. The draws keep tests fast: models of a few dozen weights, a handful of noise draws,
two or three integrated-gradients steps. A draw and its explainer's first call (which traces
the explainer's graph) take well under a second on a CPU (``bench/testing_strategies.py``), so
run the tests with ``@settings(deadline=None)``: the first call of each new explainer traces,
and Hypothesis' default 200 ms deadline would call that a flaky slow test. A draw builds a
Keras model, so on a slow machine also pass
``suppress_health_check=[HealthCheck.too_slow]``.

Example:

>>> import numpy as np
>>> from hypothesis import given, settings
>>> from tfmollify.testing import strategies as tst
>>> @settings(max_examples=2, deadline=None)
... @given(tst.explanation_cases(kinds=("dense",)))
... def test_attributions_are_finite(case):
...     explainer, inputs, targets = case
...     attributions = explainer.explain(inputs, targets)
...     assert attributions.shape == inputs.shape
...     assert np.all(np.isfinite(attributions))
>>> test_attributions_are_finite()
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np
from hypothesis import strategies as st

from tfmollify.adapter import layers as layers_lib
from tfmollify.adapter import spec as spec_lib
from tfmollify.core import aggregation as aggregation_lib
from tfmollify.core import attribution as attribution_lib
from tfmollify.core import kernels as kernels_lib
from tfmollify.core import modes as modes_lib
from tfmollify.explainers.explainer import Explainer

__all__ = [
    "ATTRIBUTIONS",
    "MODEL_KINDS",
    "ExplanationCase",
    "epsilons",
    "explainer_settings",
    "explanation_cases",
    "inputs_and_targets",
    "kernels",
    "models",
]

#: The kinds of :func:`models`; a drawn model's ``name`` is its kind.
MODEL_KINDS: tuple[str, ...] = ("dense", "conv", "embedding", "multi_input", "multi_output")
#: The base attributions that :func:`explainer_settings` draws by default (those that work at
#: the inputs of any model; ``"grad_cam"`` needs ``model=`` with a convolutional layer).
ATTRIBUTIONS: tuple[str, ...] = ("gradient", "input_x_gradient", "integrated_gradients")
#: The length given to an input dimension that the model leaves open (``None``).
OPEN_DIM = 4
_ACTIVATIONS = ("tanh", "softplus", "relu")
_SEEDS = st.integers(0, 2**31 - 1)


# -- argument checks --------------------------------------------------------------------------
def _choices(name: str, values: Any, valid: Sequence[str] | None = None) -> tuple[Any, ...]:
    """``values`` as a non-empty tuple (one string counts as one choice), checked against
    ``valid`` (lower-cased) when given."""
    if isinstance(values, str):
        values = (values,)
    try:
        out = tuple(values)
    except TypeError:
        raise TypeError(
            f"Argument `{name}` must be a sequence of choices. Received: {name}={values!r}"
        ) from None
    if not out:
        raise ValueError(f"Argument `{name}` must not be empty. Received: {name}={values!r}")
    if valid is not None:
        bad = [v for v in out if not isinstance(v, str) or v.lower().strip() not in valid]
        if bad:
            raise ValueError(
                f"Argument `{name}` must hold names from {list(valid)}. Received: "
                f"{name}={values!r} ({bad} unknown)"
            )
        out = tuple(v.lower().strip() for v in out)
    return out


def _count(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(
            f"Argument `{name}` must be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return int(value)


def _batch_range(batch: Any) -> tuple[int, int]:
    """``batch`` (an int, or ``(min, max)``) as ``(min, max)`` with ``1 <= min <= max``."""
    pair = (batch, batch) if isinstance(batch, int | np.integer) else batch
    try:
        low, high = pair
    except (TypeError, ValueError):
        raise TypeError(
            f"Argument `batch` must be an int or a pair (min, max). Received: batch={batch!r}"
        ) from None
    ok = all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in (low, high))
    if not ok or not 1 <= low <= high:
        raise ValueError(
            "Argument `batch` must be an int >= 1 or a pair (min, max) of ints with "
            f"1 <= min <= max. Received: batch={batch!r}"
        )
    return int(low), int(high)


# -- kernels and noise scales -----------------------------------------------------------------
def kernels(*, custom: Sequence[kernels_lib.Kernel] = ()) -> st.SearchStrategy:
    """The registered kernels, then the user's own: a strategy of :class:`Kernel` objects.

    The registered kernels are those of :func:`tfmollify.core.kernels.names` when the strategy
    is made (the built-in ones first, so examples shrink towards ``gaussian``); ``custom``
    kernels need not be registered. Pass ``kernel.name`` where a name is needed (an
    unregistered kernel has no name that ``tfmollify`` knows).

    Args:
        custom: Your own :class:`~tfmollify.core.kernels.Kernel` instances, drawn as well.

    Returns:
        A strategy of :class:`~tfmollify.core.kernels.Kernel` instances.

    Raises:
        TypeError: If an entry of ``custom`` is not a ``Kernel`` instance.

    Example:

    >>> from hypothesis import given, settings
    >>> from tfmollify.testing.strategies import kernels
    >>> @settings(max_examples=5)
    ... @given(kernels())
    ... def test_kernel_declares_its_support(kernel):
    ...     low, high = kernel.support
    ...     assert low < 0 < high
    >>> test_kernel_declares_its_support()
    """
    extra = (custom,) if isinstance(custom, kernels_lib.Kernel) else tuple(custom)
    for k in extra:
        if not isinstance(k, kernels_lib.Kernel):
            raise TypeError(
                "Argument `custom` must hold tfmollify.core.kernels.Kernel instances. "
                f"Received: custom={custom!r} ({k!r} of type {type(k).__name__})"
            )
    found = [kernels_lib.get(n) for n in kernels_lib.names()]
    found += [k for k in extra if all(k is not f for f in found)]
    return st.sampled_from(found)


def epsilons(
    kernel: str | kernels_lib.Kernel,
    *,
    r: float = 1.0,
    min_alpha: float = 0.5,
    max_alpha: float = 0.99,
) -> st.SearchStrategy[float]:
    """Input-noise scales ``epsilon`` in ``kernel``'s sensible range, for inputs of half-width
    ``r``.

    The scale comes from eq. 30 of the paper, ``epsilon = kernel.epsilon(r, alpha)``: a
    fraction ``alpha`` of the noise falls inside ``[-r, r]``, with ``alpha`` drawn from
    ``[min_alpha, max_alpha]``. ``r`` is the inputs' half-width, ``max(x) - mean(x)`` (the
    explainer's default ``r``); the paper recommends ``alpha`` 0.9 or 0.95. So the range
    follows the kernel's tails: at ``r = 1`` the defaults give 0.39 to 1.48 for the Gaussian,
    0.016 to 1 for the heavy-tailed Poisson (Cauchy), 1.01 to 2 for rect.

    Args:
        kernel: A kernel name or :class:`~tfmollify.core.kernels.Kernel` (one value; to vary
            the kernel, draw it first: ``kernels().flatmap(lambda k: epsilons(k))``).
        r: The inputs' half-width, a positive float.
        min_alpha: The smallest fraction of noise inside ``[-r, r]`` (the largest scale).
        max_alpha: The largest fraction (the smallest scale), with
            ``0 < min_alpha <= max_alpha < 1``.

    Returns:
        A strategy of positive floats.

    Raises:
        TypeError: For a ``kernel`` that is neither a name nor a ``Kernel``.
        ValueError: For an unknown kernel name, ``r <= 0``, alphas outside (0, 1) or in the
            wrong order, or a kernel with no eq. 30 scale (its ``icdf`` does not invert its
            ``cdf``).

    Example:

    >>> from hypothesis import given, settings
    >>> from tfmollify.testing.strategies import epsilons
    >>> @settings(max_examples=5)
    ... @given(epsilons("gaussian"))
    ... def test_in_range(epsilon):
    ...     assert 0.38 < epsilon < 1.49
    >>> test_in_range()
    """
    k = kernels_lib.get(kernel)
    low = kernels_lib.check_alpha(min_alpha)
    high = kernels_lib.check_alpha(max_alpha)
    if low > high:
        raise ValueError(
            "Argument `min_alpha` must be <= `max_alpha`. Received: "
            f"min_alpha={min_alpha!r}, max_alpha={max_alpha!r}"
        )
    r = float(r) if isinstance(r, int | float | np.number) else r
    if not (isinstance(r, float) and math.isfinite(r) and r > 0):
        raise ValueError(f"Argument `r` must be a positive finite float. Received: r={r!r}")
    k.epsilon(r, low), k.epsilon(r, high)  # a kernel without an eq. 30 scale fails here
    return st.floats(low, high).map(lambda alpha: k.epsilon(r, alpha))


# -- explainer settings -----------------------------------------------------------------------
def explainer_settings(
    *,
    modes: Sequence[str] = modes_lib.NAMES,
    kernels: Sequence[str | kernels_lib.Kernel] | st.SearchStrategy | None = None,
    samplers: Sequence[str] = spec_lib.SAMPLERS,
    aggregations: Sequence[str] = aggregation_lib.AGGREGATIONS,
    attributions: Sequence[str] = ATTRIBUTIONS,
    max_num_samples: int = 8,
    max_num_weight_samples: int = 4,
    batched: bool | None = None,
    model: keras.Model | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """Keyword arguments of :class:`tfmollify.Explainer` that are valid together.

    Each draw is a dict with ``mode``, ``kernel`` (by name when registered),
    ``num_samples``, ``num_weight_samples``, ``sampler``, ``aggregation``, ``attribution``,
    ``epsilon`` (None, or from :func:`epsilons` at ``r = 1``), ``weight_epsilon`` (0.1 to
    0.3), ``batch_size`` and ``seed`` (always set, so results are reproducible), and when they
    apply ``replicates`` (Sobol: a divisor >= 2 of the outer count) and ``ig_steps`` (2 or
    3). The counts follow the spec's rules: even for ``sampler="antithetic"``; for Sobol
    even, and divided by ``replicates``; ``batch_size`` None, ``"auto"`` or an int at least
    what one sample needs (``ig_steps`` rows, twice that for antithetic input noise).

    With ``model``, the settings fit that model: ``explain_at`` its first embedding layer when
    its inputs are token ids (integers), ``output`` one of its outputs (drawn) when it has
    several, ``attribute_at`` its last convolutional layer for ``"grad_cam"`` /
    ``"grad_cam_plus_plus"`` (they need one), and no weight-noise mode for a model without
    trainable weights. Kernel ``"poisson"`` with weight noise warns (``UserWarning``) that
    NoiseGrad/FusionGrad do not converge; leave it out through ``kernels`` where that matters.

    Args:
        modes: The modes to draw from (``"sg"``, ``"ng"``, ``"fg"``).
        kernels: Kernel names or objects to draw from, or a strategy of them (e.g.
            :func:`kernels` with ``custom=``); None: every registered kernel.
        samplers: From ``"iid"``, ``"antithetic"``, ``"sobol"``.
        aggregations: From ``"smoothgrad"``, ``"smoothgrad_sq"``, ``"vargrad"``.
        attributions: Base methods by name (built-in or registered).
        max_num_samples: The most input-noise draws ``N`` (at least 2 with antithetic or
            Sobol sampling).
        max_num_weight_samples: The most weight-noise draws ``M`` (idem).
        batched: True: always an int ``batch_size``; False: always None (one pass); None:
            either, or ``"auto"``.
        model: The Keras model the settings are for (see above), or None.

    Returns:
        A strategy of dicts, ``tfm.Explainer(model, **settings)``.

    Raises:
        ValueError: For unknown names, counts below their minimum, ``"grad_cam"`` without a
            model that has a convolutional layer, or a model that leaves no mode.
        TypeError: For a ``batched`` that is not None, True or False.

    Example:

    >>> import keras
    >>> from hypothesis import given, settings
    >>> import tfmollify as tfm
    >>> from tfmollify.testing.strategies import explainer_settings
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> @settings(max_examples=10)
    ... @given(explainer_settings(samplers=("antithetic",)))
    ... def test_settings_are_accepted(kw):
    ...     assert kw["num_samples"] % 2 == 0
    ...     tfm.Explainer(model, **kw)
    >>> test_settings_are_accepted()
    """
    options = _SettingsOptions.create(
        modes=modes, kernels=kernels, samplers=samplers, aggregations=aggregations,
        attributions=attributions, max_num_samples=max_num_samples,
        max_num_weight_samples=max_num_weight_samples, batched=batched, model=model,
    )
    return _settings(options)


@dataclasses.dataclass(frozen=True)
class _SettingsOptions:
    """The checked arguments of :func:`explainer_settings`."""

    modes: tuple[modes_lib.Mode, ...]
    kernels: st.SearchStrategy
    samplers: tuple[str, ...]
    aggregations: tuple[str, ...]
    attributions: tuple[str, ...]
    max_n: int
    max_m: int
    batched: bool | None
    places: Mapping[str, Any]
    outputs: tuple[str, ...]

    @classmethod
    def create(cls, *, modes, kernels, samplers, aggregations, attributions, max_num_samples,
               max_num_weight_samples, batched, model) -> _SettingsOptions:
        parsed = _modes(modes)
        samplers = _choices("samplers", samplers, spec_lib.SAMPLERS)
        paired = any(s != "iid" for s in samplers)
        if batched is not None and not isinstance(batched, bool):
            raise TypeError(
                f"Argument `batched` must be None, True or False. Received: batched={batched!r}"
            )
        attributions = tuple(attribution_lib.get(a)[0]
                             for a in _choices("attributions", attributions))
        places, outputs, parsed = _model_places(model, attributions, parsed)
        return cls(
            modes=parsed,
            kernels=_kernel_choices(kernels),
            samplers=samplers,
            aggregations=_choices("aggregations", aggregations, aggregation_lib.AGGREGATIONS),
            attributions=attributions,
            max_n=_count("max_num_samples", max_num_samples, 2 if paired else 1),
            max_m=_count("max_num_weight_samples", max_num_weight_samples, 2 if paired else 1),
            batched=batched,
            places=places,
            outputs=outputs,
        )


def _modes(value: Any) -> tuple[modes_lib.Mode, ...]:
    names = _choices("modes", value, (*modes_lib.NAMES, *modes_lib.ALIASES))
    return tuple(dict.fromkeys(modes_lib.parse(m) for m in names))


def _kernel_choices(value: Any) -> st.SearchStrategy:
    if value is None:
        return kernels()
    if isinstance(value, st.SearchStrategy):
        return value
    choices = _choices("kernels", value)
    for k in choices:
        try:
            kernels_lib.get(k)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"Argument `kernels`: {exc} Received: kernels={value!r}") from None
    return st.sampled_from(choices)


def _model_places(
    model: Any, attributions: tuple[str, ...], modes: tuple[modes_lib.Mode, ...]
) -> tuple[dict[str, Any], tuple[str, ...], tuple[modes_lib.Mode, ...]]:
    """``(places, outputs, modes)``: the settings ``model`` needs (``explain_at`` for token
    ids; ``attribute_at`` for layer-only attributions), its output names when it has several,
    and the modes it allows."""
    layer_only = [a for a in attributions if a in attribution_lib.LAYER_ONLY]
    if model is None:
        if layer_only:
            raise ValueError(
                f"Argument `attributions`: {layer_only} need a convolutional layer: pass "
                f"`model=`. Received: attributions={attributions!r}"
            )
        return {}, (), modes
    places: dict[str, Any] = {}
    paths = layers_lib.layer_paths(model)
    if any(_is_integer(t) for t in getattr(model, "inputs", None) or ()):
        embeddings = layers_lib.embedding_paths(model)
        if not embeddings:
            raise ValueError(
                f"Argument `model`: {model.name!r} takes integer inputs but has no embedding "
                "layer to explain at. Build the settings yourself with `explain_at=`."
            )
        places["explain_at"] = embeddings[0]
    if layer_only:
        convs = [p for p, layer in paths if "Conv" in type(layer).__name__]
        if not convs:
            raise ValueError(
                f"Argument `attributions`: {layer_only} need a convolutional layer, and model "
                f"{model.name!r} has none. Received: attributions={attributions!r}"
            )
        places["attribute_at"] = convs[-1]
    if not model.trainable_weights:
        modes = tuple(m for m in modes if not m.weight_noise)
        if not modes:
            raise ValueError(
                f"Argument `modes`: model {model.name!r} has no trainable weights, so only "
                "mode='sg' (no weight noise) applies; include it."
            )
    several = len(getattr(model, "outputs", None) or ()) > 1
    outputs = tuple(model.output_names) if several else ()
    return places, outputs, modes


def _is_integer(tensor: Any) -> bool:
    return np.dtype(keras.backend.standardize_dtype(tensor.dtype)).kind in "iu"


def _settings(o: _SettingsOptions) -> st.SearchStrategy[dict[str, Any]]:
    @st.composite
    def draw_settings(draw: Any) -> dict[str, Any]:
        mode = draw(st.sampled_from(o.modes))
        sampler = draw(st.sampled_from(o.samplers))
        attribution = draw(st.sampled_from(o.attributions))
        kernel = kernels_lib.get(draw(o.kernels))
        kw: dict[str, Any] = dict(
            mode=mode.name,
            kernel=_as_argument(kernel),
            sampler=sampler,
            aggregation=draw(st.sampled_from(o.aggregations)),
            attribution=attribution,
            epsilon=draw(st.none() | epsilons(kernel)),
            weight_epsilon=draw(st.floats(0.1, 0.3)),
            seed=draw(_SEEDS),
        )
        kw.update(_draw_counts(draw, o, mode, sampler))
        per = 1
        if attribution_lib.evaluations_per_sample(attribution, 2) > 1:
            kw["ig_steps"] = per = draw(st.integers(2, 3))
        least = per * (2 if sampler == "antithetic" and mode.input_noise else 1)
        sized = st.integers(least, least + 12)
        if o.batched is None:
            kw["batch_size"] = draw(st.sampled_from((None, "auto")) | sized)
        else:
            kw["batch_size"] = draw(sized) if o.batched else None
        kw.update(o.places)
        if o.outputs:
            kw["output"] = draw(st.sampled_from(o.outputs))
        return kw

    return draw_settings()


def _as_argument(kernel: kernels_lib.Kernel) -> str | kernels_lib.Kernel:
    """A registered kernel by its name (readable, JSON-friendly), any other as the object."""
    try:
        registered = kernels_lib.get(kernel.name) is kernel
    except (TypeError, ValueError):
        registered = False
    return kernel.name if registered else kernel


def _draw_counts(draw: Any, o: _SettingsOptions, mode: modes_lib.Mode,
                 sampler: str) -> dict[str, int]:
    """``num_samples``, ``num_weight_samples`` (and ``replicates``) for ``sampler``."""
    if sampler == "iid":
        return dict(num_samples=draw(st.integers(1, o.max_n)),
                    num_weight_samples=draw(st.integers(1, o.max_m)))
    n = 2 * draw(st.integers(1, o.max_n // 2))
    m = 2 * draw(st.integers(1, o.max_m // 2))
    out = dict(num_samples=n, num_weight_samples=m)
    if sampler == "sobol":
        count = m if mode.weight_noise else n
        out["replicates"] = draw(st.sampled_from([d for d in range(2, count + 1)
                                                  if count % d == 0]))
    return out


# -- models, inputs and targets ---------------------------------------------------------------
def models(*, kinds: Sequence[str] = MODEL_KINDS) -> st.SearchStrategy[keras.Model]:
    """Small functional Keras 3 models with random weights, built, their ``name`` their kind.

    The sizes (features, units, classes, lengths) are drawn, the weights are normal with a
    ``1/sqrt(fan in)`` scale from a seed drawn too (biases 0.1, embeddings 1), and the hidden
    activation is ``tanh``, ``softplus`` or ``relu``. The kinds:

    - ``"dense"``: ``[B, d] -> Dense -> Dense`` (class scores);
    - ``"conv"``: ``[B, s, s, c] -> Conv2D "conv" -> global pooling -> Dense``;
    - ``"embedding"``: token ids ``[B, T]`` (int32) ``-> Embedding "embedding" -> Dense ->
      pooling -> Dense``: explained at the embedding layer (``explain_at="embedding"``, which
      ``explainer_settings(model=model)`` sets), so attributions are ``[B, T, D]``;
    - ``"multi_input"``: two or three float inputs ``"x0"``, ``"x1"`` ... given as a list or a
      dict (drawn), each through a Dense, concatenated, then Dense;
    - ``"multi_output"``: one input, two or three class-score outputs ``"y0"``, ``"y1"`` ...
      (explain one: ``output=``, which ``explainer_settings(model=model)`` draws).

    Args:
        kinds: The kinds to draw from (:data:`MODEL_KINDS`).

    Returns:
        A strategy of built ``keras.Model`` objects.

    Raises:
        ValueError: For an unknown kind.

    Example:

    >>> from hypothesis import given, settings
    >>> from tfmollify.testing.strategies import models
    >>> @settings(max_examples=3, deadline=None)
    ... @given(models(kinds=("dense", "multi_output")))
    ... def test_models_score_classes(model):
    ...     assert model.name in ("dense", "multi_output") and model.built
    >>> test_models_score_classes()
    """
    chosen = _choices("kinds", kinds, MODEL_KINDS)
    return st.sampled_from(chosen).flatmap(lambda kind: _BUILDERS[kind]())


def _seeded(model: keras.Model, seed: int) -> keras.Model:
    """Sets every weight of ``model`` from a NumPy generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        is_embedding = isinstance(layer, keras.layers.Embedding)
        for w in layer.weights:
            shape = tuple(w.shape)
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 0
            scale = 1.0 if is_embedding else (1.0 / math.sqrt(fan_in) if fan_in else 0.1)
            w.assign(rng.normal(scale=scale, size=shape).astype(w.dtype))
    return model


_L = keras.layers
_ACT = st.sampled_from(_ACTIVATIONS)
_CLASSES = st.integers(2, 4)
_UNITS = st.integers(2, 6)
#: Keras' default initializers draw from Python's global `random` (which Hypothesis forbids in
#: strategies); the weights are set by `_seeded` anyway.
_ZEROS = {"kernel_initializer": "zeros", "bias_initializer": "zeros"}


@st.composite
def _dense(draw: Any) -> keras.Model:
    x = keras.Input((draw(st.integers(2, 5)),), name="x")
    h = _L.Dense(draw(_UNITS), activation=draw(_ACT), name="hidden", **_ZEROS)(x)
    model = keras.Model(x, _L.Dense(draw(_CLASSES), name="scores", **_ZEROS)(h), name="dense")
    return _seeded(model, draw(_SEEDS))


@st.composite
def _conv(draw: Any) -> keras.Model:
    side = draw(st.integers(5, 8))
    x = keras.Input((side, side, draw(st.integers(1, 3))), name="x")
    h = _L.Conv2D(draw(st.integers(2, 4)), 3, activation=draw(_ACT), name="conv", **_ZEROS)(x)
    h = _L.GlobalAveragePooling2D(name="pool")(h)
    model = keras.Model(x, _L.Dense(draw(_CLASSES), name="scores", **_ZEROS)(h), name="conv")
    return _seeded(model, draw(_SEEDS))


@st.composite
def _embedding(draw: Any) -> keras.Model:
    tokens = keras.Input((draw(st.integers(3, 8)),), dtype="int32", name="tokens")
    h = _L.Embedding(draw(st.integers(5, 30)), draw(st.integers(2, 6)), name="embedding",
                     embeddings_initializer="zeros")(tokens)
    h = _L.Dense(draw(_UNITS), activation=draw(_ACT), name="hidden", **_ZEROS)(h)
    h = _L.GlobalAveragePooling1D(name="pool")(h)
    scores = _L.Dense(draw(_CLASSES), name="scores", **_ZEROS)(h)
    return _seeded(keras.Model(tokens, scores, name="embedding"), draw(_SEEDS))


@st.composite
def _multi_input(draw: Any) -> keras.Model:
    count, act = draw(st.integers(2, 3)), draw(_ACT)
    xs = [keras.Input((draw(st.integers(2, 4)),), name=f"x{i}") for i in range(count)]
    hs = [_L.Dense(draw(_UNITS), activation=act, name=f"in{i}", **_ZEROS)(x)
          for i, x in enumerate(xs)]
    scores = _L.Dense(draw(_CLASSES), name="scores", **_ZEROS)(_L.Concatenate(name="concat")(hs))
    inputs: Any = {x.name: x for x in xs} if draw(st.booleans()) else xs
    return _seeded(keras.Model(inputs, scores, name="multi_input"), draw(_SEEDS))


@st.composite
def _multi_output(draw: Any) -> keras.Model:
    x = keras.Input((draw(st.integers(2, 5)),), name="x")
    h = _L.Dense(draw(_UNITS), activation=draw(_ACT), name="hidden", **_ZEROS)(x)
    heads = [_L.Dense(draw(_CLASSES), name=f"y{i}", **_ZEROS)(h)
             for i in range(draw(st.integers(2, 3)))]
    return _seeded(keras.Model(x, heads, name="multi_output"), draw(_SEEDS))


_BUILDERS = {"dense": _dense, "conv": _conv, "embedding": _embedding,
             "multi_input": _multi_input, "multi_output": _multi_output}


def _symbolic_inputs(model: keras.Model) -> Any:
    """The model's inputs in the structure it takes them (one tensor, a list or a dict)."""
    try:
        return model.input
    except (AttributeError, ValueError):  # a Sequential model (Keras 3.15)
        inputs = list(model.inputs)
        return inputs[0] if len(inputs) == 1 else inputs


def _classes(model: keras.Model, output: Any) -> int:
    """The class scores per example of ``output`` (name or position), or the fewest of all
    outputs when None (targets valid for any)."""
    sizes = [int(np.prod([d or 1 for d in t.shape[1:]])) for t in model.outputs]
    if output is None:
        return min(sizes)
    names = list(getattr(model, "output_names", None) or [])
    if isinstance(output, str) and output in names:
        return sizes[names.index(output)]
    if isinstance(output, int) and not isinstance(output, bool) and 0 <= output < len(sizes):
        return sizes[output]
    raise ValueError(
        f"Argument `output` must name one of the model's outputs {names} or be a position in "
        f"[0, {len(sizes)}). Received: output={output!r}"
    )


def _vocabulary(model: keras.Model) -> int:
    dims = [getattr(layer, "input_dim", None) for _, layer in layers_lib.layer_paths(model)
            if isinstance(layer, keras.layers.Embedding)]
    return min([d for d in dims if d] or [10])


def inputs_and_targets(
    model: keras.Model, *, batch: int | tuple[int, int] = (1, 3), output: str | int | None = None
) -> st.SearchStrategy[tuple[Any, np.ndarray]]:
    """``(inputs, targets)`` for ``model``: a batch of inputs and one class index per example.

    The inputs have the model's structure (one array, a list, or a dict keyed by input name),
    shapes and dtypes; an open dimension (``None``) gets length :data:`OPEN_DIM`. Float inputs
    are standard normal, integer inputs token ids below the vocabulary of the model's smallest
    embedding layer (10 without one). They come from a NumPy generator seeded from the draw, so
    Hypothesis shrinks the batch size and the seed, not single elements. The targets are int32
    class indices ``[B]`` of ``output``'s scores; with several outputs and ``output=None``,
    indices valid for every output.

    Args:
        model: A built Keras model with known input shapes (e.g. from :func:`models`).
        batch: The batch size, or ``(min, max)`` to draw it from.
        output: The output the targets index (name or position), for models with several.

    Returns:
        A strategy of ``(inputs, targets)`` pairs.

    Raises:
        ValueError: For a bad ``batch`` or an ``output`` the model does not have.
        TypeError: For a ``batch`` that is neither an int nor a pair.

    Example:

    >>> import keras
    >>> from hypothesis import given, settings
    >>> from tfmollify.testing.strategies import inputs_and_targets
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    >>> @settings(max_examples=5)
    ... @given(inputs_and_targets(model, batch=(1, 4)))
    ... def test_shapes(case):
    ...     inputs, targets = case
    ...     assert inputs.shape == (len(targets), 3) and 0 <= targets.min() <= targets.max() < 4
    >>> test_shapes()
    """
    low, high = _batch_range(batch)
    classes = _classes(model, output)
    structure = _symbolic_inputs(model)
    vocabulary = _vocabulary(model)

    def make(args: tuple[int, int]) -> tuple[Any, np.ndarray]:
        b, seed = args
        rng = np.random.default_rng(seed)

        def one(t: Any) -> np.ndarray:
            shape = (b, *(d or OPEN_DIM for d in t.shape[1:]))
            dtype = np.dtype(keras.backend.standardize_dtype(t.dtype))
            if dtype.kind in "iu":
                return rng.integers(0, vocabulary, size=shape).astype(dtype)
            return rng.standard_normal(shape).astype(dtype)

        inputs = keras.tree.map_structure(one, structure)
        return inputs, rng.integers(0, classes, size=b).astype(np.int32)

    return st.tuples(st.integers(low, high), _SEEDS).map(make)


# -- ready-made cases -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class ExplanationCase:
    """One drawn case: an explainer, inputs and targets that fit it (and where they came from).

    It unpacks as ``explainer, inputs, targets = case``; ``model`` and ``settings`` (the
    keyword arguments the explainer was made with) say what was drawn, and its ``repr`` shows
    them, so that a failing example reads as a reproducible recipe.

    Attributes:
        explainer: A :class:`tfmollify.Explainer` of ``model`` with ``settings``.
        inputs: A batch of inputs in the model's structure.
        targets: int32 class indices, one per example.
        model: The drawn Keras model (its ``name`` is its kind).
        settings: The explainer's keyword arguments.
    """

    explainer: Explainer
    inputs: Any
    targets: np.ndarray
    model: keras.Model
    settings: Mapping[str, Any]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.explainer, self.inputs, self.targets))

    def __repr__(self) -> str:
        shapes = keras.tree.map_structure(lambda a: (tuple(a.shape), str(a.dtype)), self.inputs)
        kinds = [f"{layer.name}:{type(layer).__name__}" for layer in self.model.layers]
        return (f"ExplanationCase(model={self.model.name!r} {kinds}, "
                f"settings={dict(self.settings)!r}, inputs={shapes}, "
                f"targets={self.targets.tolist()})")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis prints falsifying examples with this (instead of the fields)."""
        printer.text(repr(self))


def explanation_cases(
    *, kinds: Sequence[str] = MODEL_KINDS, batch: int | tuple[int, int] = (1, 3),
    **settings: Any,
) -> st.SearchStrategy[ExplanationCase]:
    """Cases ready to explain: a model from :func:`models`, an explainer of it with settings
    from :func:`explainer_settings` (``model=`` that model), and inputs and targets from
    :func:`inputs_and_targets` (for the explainer's ``output``).

    Args:
        kinds: The model kinds to draw from (:data:`MODEL_KINDS`).
        batch: The batch size, or ``(min, max)``.
        **settings: Passed to :func:`explainer_settings` (``modes``, ``kernels``,
            ``samplers``, ``aggregations``, ``attributions``, ``max_num_samples``,
            ``max_num_weight_samples``, ``batched``).

    Returns:
        A strategy of :class:`ExplanationCase`, which unpacks as
        ``explainer, inputs, targets``.

    Raises:
        ValueError: For an unknown kind, a bad ``batch``, or settings
            :func:`explainer_settings` refuses.
        TypeError: For ``model=`` (the model is drawn) or an unknown setting.

    Example:

    >>> import numpy as np
    >>> from hypothesis import given, settings
    >>> from tfmollify.testing.strategies import explanation_cases
    >>> @settings(max_examples=2, deadline=None)
    ... @given(explanation_cases(kinds=("embedding",), modes=("sg",)))
    ... def test_per_token(case):
    ...     explainer, token_ids, targets = case
    ...     assert explainer.explain(token_ids, targets).shape[:2] == token_ids.shape
    >>> test_per_token()
    """
    if "model" in settings:
        raise TypeError(
            "Argument `model` is drawn by explanation_cases; for a model of your own use "
            "explainer_settings(model=...) and inputs_and_targets(model). "
            f"Received: model={settings['model']!r}"
        )
    kinds = _choices("kinds", kinds, MODEL_KINDS)
    _batch_range(batch)
    _check_case_settings(kinds, settings)

    @st.composite
    def draw_case(draw: Any) -> ExplanationCase:
        model = draw(models(kinds=kinds))
        kw = draw(explainer_settings(model=model, **settings))
        inputs, targets = draw(inputs_and_targets(model, batch=batch, output=kw.get("output")))
        return ExplanationCase(Explainer(model, **kw), inputs, targets, model, kw)

    return draw_case()


def _check_case_settings(kinds: tuple[str, ...], settings: Mapping[str, Any]) -> None:
    """Checks the settings of :func:`explanation_cases` now rather than at the first draw
    (layer-only attributions need convolutional models: ``kinds=("conv",)``)."""
    given = _choices("attributions", settings.get("attributions", ATTRIBUTIONS))
    layer_only = [a for a in given if isinstance(a, str) and a in attribution_lib.LAYER_ONLY]
    if layer_only and set(kinds) != {"conv"}:
        raise ValueError(
            f"Argument `attributions`: {layer_only} need a convolutional layer: pass "
            f"kinds=('conv',). Received: kinds={kinds!r}"
        )
    rest = tuple(a for a in given if a not in layer_only) or ATTRIBUTIONS
    explainer_settings(**{**settings, "attributions": rest})

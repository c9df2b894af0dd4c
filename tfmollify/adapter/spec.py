"""The explainer's settings: the user's arguments, checked once, frozen.

A :class:`Spec` holds what the user passed (``arguments``, exactly as given: ``None`` stays
``None``) and the values checked and derived from them (a kernel object for a kernel name, the
default number of Sobol replicates, ...). Every rule that involves several arguments is checked in
:meth:`Spec.create`, and nowhere else; rules that need the model live in
:mod:`tfmollify.adapter.model_view`. A spec never changes: :meth:`Spec.replace` makes a new one.
"""

from __future__ import annotations

import dataclasses
import math
import types
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfmollify.core import aggregation as aggregation_lib
from tfmollify.core import attribution as attribution_lib
from tfmollify.core import kernels as kernels_lib
from tfmollify.core import modes

__all__ = ["ARGUMENTS", "MODES", "REDUCES", "SAMPLERS", "Spec"]

MODES = modes.NAMES
#: The papers' names of the modes, accepted too (:data:`tfmollify.core.modes.ALIASES`).
MODE_NAMES = modes.ALIASES
REDUCES = ("sum", "norm")
SAMPLERS = ("iid", "antithetic", "sobol")

#: The explainer's keyword arguments and their defaults (``mode`` first).
ARGUMENTS: Mapping[str, Any] = types.MappingProxyType(
    {
        "mode": "sg",
        "kernel": "gaussian",
        "num_samples": 50,
        "num_weight_samples": 10,
        "epsilon": None,
        "alpha": 0.9,
        "weight_epsilon": 0.2,
        "aggregation": "smoothgrad",
        "attribution": "gradient",
        "batch_size": "auto",
        "seed": None,
        "ig_steps": 16,
        "ig_baseline": 0.0,
        "jit_compile": False,
        "proposal": None,
        "proposal_scale": 1.0,
        "weight_noise_cache_mb": 256.0,
        "input_noise_cache_mb": 64.0,
        "weight_draws_per_pass": "auto",
        "weight_layers": None,
        "perturb_bias": True,
        "explain_at": None,
        "noise_at": None,
        "attribute_at": None,
        "input_range": None,
        "reduce": None,
        "output": None,
        "sampler": "iid",
        "replicates": None,
        "tolerance": None,
        "max_samples": None,
    }
)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` lower-cased, if it is one of ``choices``."""
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


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"Argument `{name}` must be an integer >= {minimum}. Received: {name}={value!r}"
        )
    if value < minimum:
        raise ValueError(
            f"Argument `{name}` must be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return int(value)


def check_positive(name: str, value: Any) -> float:
    """``value`` as a positive finite float."""
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


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _check_epsilon(epsilon: Any) -> np.ndarray | None:
    if epsilon is None:
        return None
    try:
        arr = np.array(epsilon, dtype=np.float64)
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
    return _frozen(arr)


def _check_baseline(ig_baseline: Any) -> np.ndarray:
    try:
        arr = np.array(ig_baseline, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            "Argument `ig_baseline` must be a float or an array of one example's shape. "
            f"Received: ig_baseline={ig_baseline!r}"
        ) from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"Argument `ig_baseline` must be finite. Received: {ig_baseline!r}")
    return _frozen(arr)


def check_seed(seed: Any) -> int | None:
    """An explainer seed: None or any int (it is used modulo 2**64, so ``-1`` and ``2**64 - 1``
    are the same seed)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"Argument `seed` must be an int or None. Received: seed={seed!r}")
    return int(seed)


def default_replicates(count: int, name: str) -> int:
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
            stacklevel=5,
        )
    return count


@dataclasses.dataclass(frozen=True, eq=False)
class Spec:
    """The checked, frozen settings of one explainer.

    Attributes:
        arguments: The keyword arguments as the user gave them (every name of
            :data:`ARGUMENTS`; defaults filled in, ``None`` kept).
        smoothing: The :class:`~tfmollify.core.modes.Mode` that ``mode`` names (what it means).
        mode, kernel, num_samples, ...: The checked values (``kernel`` and ``proposal`` as
            :class:`~tfmollify.core.kernels.Kernel` objects, ``epsilon``/``ig_baseline`` as
            read-only float64 arrays, ``replicates`` and ``max_samples`` resolved).
    """

    arguments: Mapping[str, Any]
    mode: str
    smoothing: modes.Mode
    kernel: kernels_lib.Kernel
    num_samples: int
    num_weight_samples: int
    epsilon: np.ndarray | None
    alpha: float
    weight_epsilon: float
    aggregation: str
    attribution: str
    method: Any
    batch_size: int | str | None
    seed: int | None
    ig_steps: int
    ig_baseline: np.ndarray
    jit_compile: bool
    proposal: kernels_lib.Kernel | None
    proposal_scale: float
    weight_noise_cache_mb: float
    input_noise_cache_mb: float
    weight_draws_per_pass: int | str
    weight_layers: tuple[Any, ...] | None
    perturb_bias: bool
    explain_at: Any
    noise_at: Any
    attribute_at: Any
    input_range: tuple[float, float] | None
    reduce: str | None
    output: str | int | None
    sampler: str
    replicates: int
    tolerance: float | None
    max_samples: int

    @classmethod
    def create(cls, **arguments: Any) -> Spec:
        """Checks the arguments (every rule between them too) and freezes them.

        Args:
            **arguments: Any names of :data:`ARGUMENTS`; the others take their defaults.

        Returns:
            The :class:`Spec`.

        Raises:
            TypeError: For an unknown argument name or a value of the wrong type.
            ValueError: For a value out of range, or arguments that contradict each other.
        """
        _check_names(arguments)
        given = types.MappingProxyType({**ARGUMENTS, **arguments})
        a = dict(given)
        smoothing = modes.parse(a["mode"])
        num_samples = check_int("num_samples", a["num_samples"])
        num_weight_samples = check_int("num_weight_samples", a["num_weight_samples"])
        attribution, method = attribution_lib.get(a["attribution"])
        _check_places(a["explain_at"], a["noise_at"], a["attribute_at"], attribution, smoothing)
        input_range = _check_input_range(a["input_range"], a, smoothing)
        ig_steps = check_int("ig_steps", a["ig_steps"])
        per_sample = attribution_lib.evaluations_per_sample(attribution, ig_steps)
        sampler, batch_size = _check_sampling(a, smoothing, num_samples, num_weight_samples,
                                              per_sample, ig_steps)
        replicates = _check_replicates(a["replicates"], sampler, smoothing, num_samples,
                                       num_weight_samples)
        aggregation = check_choice("aggregation", a["aggregation"],
                                   aggregation_lib.AGGREGATIONS)
        tolerance, max_samples = _check_stopping(a, smoothing, num_samples, num_weight_samples,
                                                 sampler, replicates, aggregation)
        proposal = None if a["proposal"] is None else _proposal(a["proposal"])
        _check_proposal(proposal, smoothing, aggregation)
        return cls(
            arguments=given,
            mode=smoothing.name,
            smoothing=smoothing,
            kernel=kernels_lib.get(a["kernel"]),
            num_samples=num_samples,
            num_weight_samples=num_weight_samples,
            epsilon=_check_epsilon(a["epsilon"]),
            alpha=kernels_lib.check_alpha(a["alpha"]),
            weight_epsilon=check_positive("weight_epsilon", a["weight_epsilon"]),
            aggregation=aggregation,
            attribution=attribution,
            method=method,
            batch_size=batch_size,
            seed=check_seed(a["seed"]),
            ig_steps=ig_steps,
            ig_baseline=_check_baseline(a["ig_baseline"]),
            jit_compile=_check_bool("jit_compile", a["jit_compile"]),
            proposal=proposal,
            proposal_scale=check_positive("proposal_scale", a["proposal_scale"]),
            weight_noise_cache_mb=_check_cache_mb(a, "weight_noise_cache_mb"),
            input_noise_cache_mb=_check_cache_mb(a, "input_noise_cache_mb"),
            weight_draws_per_pass=_check_draws(a["weight_draws_per_pass"]),
            weight_layers=_check_weight_layers(a["weight_layers"], a["perturb_bias"],
                                               smoothing),
            perturb_bias=a["perturb_bias"],
            explain_at=a["explain_at"],
            noise_at=a["noise_at"],
            attribute_at=a["attribute_at"],
            input_range=input_range,
            reduce=None if a["reduce"] is None else check_choice("reduce", a["reduce"], REDUCES),
            output=a["output"],
            sampler=sampler,
            replicates=replicates,
            tolerance=tolerance,
            max_samples=max_samples,
        )

    def replace(self, **changes: Any) -> Spec:
        """A new spec with some arguments changed (checked again, like :meth:`create`)."""
        return Spec.create(**{**self.arguments, **changes})

    @property
    def samples_per_example(self) -> int:
        """Samples of one plain call per example: ``N`` (sg), ``M`` (ng) or ``M x N`` (fg)."""
        return (self.smoothing.input_draws(self.num_samples)
                * self.smoothing.weight_draws(self.num_weight_samples))

    @property
    def evaluations_per_sample(self) -> int:
        """Model evaluations of one sample (``ig_steps`` for integrated gradients, else 1)."""
        return attribution_lib.evaluations_per_sample(self.attribution, self.ig_steps)

    def config(self) -> dict[str, Any]:
        """The arguments as given, JSON-friendly: kernels and layers by name, arrays as lists."""
        out = dict(self.arguments)
        for name in ("kernel", "proposal"):
            if isinstance(out[name], kernels_lib.Kernel):
                out[name] = out[name].name
        for name in ("epsilon", "ig_baseline"):
            if isinstance(out[name], np.ndarray | tuple | list):
                out[name] = np.asarray(out[name], np.float64).tolist()
        layers = out["weight_layers"]
        if layers is not None:
            layers = [layers] if _is_one_layer(layers) else list(layers)
            out["weight_layers"] = [_layer_name(w) for w in layers]
        for name in ("explain_at", "noise_at", "attribute_at"):
            if out[name] is not None:
                out[name] = _layer_name(out[name])
        if out["input_range"] is not None:
            out["input_range"] = [float(v) for v in out["input_range"]]
        return out


def _check_names(arguments: Mapping[str, Any]) -> None:
    """Raise a ``TypeError`` for argument names that :data:`ARGUMENTS` does not have."""
    unknown = sorted(set(arguments) - set(ARGUMENTS))
    if unknown:
        raise TypeError(
            f"Unknown explainer argument(s) {unknown}. Valid arguments: {list(ARGUMENTS)}"
        )


def _check_sampling(
    a: Mapping[str, Any], smoothing: modes.Mode, n: int, m: int, per_sample: int, ig_steps: int
) -> tuple[str, int | str | None]:
    """``sampler`` and ``batch_size``, checked (with the antithetic rules): ``(sampler, batch)``."""
    sampler = check_choice("sampler", a["sampler"], SAMPLERS)
    batch_size = _check_batch_size(a["batch_size"], per_sample, ig_steps)
    _check_antithetic(sampler, smoothing, n, m, batch_size, per_sample)
    return sampler, batch_size


def _check_stopping(
    a: Mapping[str, Any], smoothing: modes.Mode, n: int, m: int, sampler: str, replicates: int,
    aggregation: str,
) -> tuple[float | None, int]:
    """When adaptive rounds stop, checked: ``(tolerance, max_samples)``."""
    tolerance = None if a["tolerance"] is None else check_positive("tolerance", a["tolerance"])
    _check_tolerance(tolerance, sampler, replicates, aggregation)
    per_round = smoothing.input_draws(n) * smoothing.weight_draws(m)
    max_samples = (
        20 * per_round if a["max_samples"] is None
        else check_int("max_samples", a["max_samples"])
    )
    if max_samples < per_round:
        raise ValueError(
            f"Argument `max_samples` must be at least one round ({per_round} samples: "
            f"{smoothing.stderr_unit}). Received: max_samples={max_samples}"
        )
    return tolerance, max_samples


def _layer_name(layer: Any) -> str:
    return layer if isinstance(layer, str) else getattr(layer, "name", repr(layer))


def _is_one_layer(value: Any) -> bool:
    return isinstance(value, str) or hasattr(value, "trainable_weights")


def _check_places(explain_at: Any, noise_at: Any, attribute_at: Any, attribution: str,
                  smoothing: modes.Mode) -> None:
    """The places of the noise and of the attribution (the model checks them further)."""
    for name, value in (("explain_at", explain_at), ("noise_at", noise_at),
                        ("attribute_at", attribute_at)):
        if value is not None and not (isinstance(value, str) or hasattr(value, "call")):
            raise TypeError(
                f"Argument `{name}` must be a layer of the model or its name. "
                f"Received: {name}={value!r}"
            )
    if explain_at is not None and (noise_at is not None or attribute_at is not None):
        raise ValueError(
            "Argument `explain_at` is the shorthand for noise_at=layer and attribute_at=layer; "
            f"pass either it or `noise_at`/`attribute_at`. Received: explain_at={explain_at!r}, "
            f"noise_at={noise_at!r}, attribute_at={attribute_at!r}"
        )
    if noise_at is not None and not smoothing.input_noise:
        raise ValueError(
            "Argument `noise_at` places the input noise; mode='ng' has none. Use mode='sg' or "
            f"'fg'. Received: noise_at={noise_at!r}"
        )
    if attribution in attribution_lib.LAYER_ONLY and explain_at is None and attribute_at is None:
        raise ValueError(
            f"attribution={attribution!r} is computed at a layer with channels: pass "
            "attribute_at=<a convolutional layer or its name>, e.g. the last convolutional "
            "block."
        )


def _check_input_range(
    value: Any, a: Mapping[str, Any], smoothing: modes.Mode
) -> tuple[float, float] | None:
    """``input_range=(low, high)``: AdaptGrad's bounded noise (see the explainer's docs)."""
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(
            "Argument `input_range` must be a pair (low, high) of numbers. "
            f"Received: input_range={value!r}"
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(
            "Argument `input_range` must be finite with low < high. "
            f"Received: input_range={value!r}"
        )
    clash = [
        f"{name}={a[name]!r}" for name in ("epsilon", "proposal", "explain_at", "noise_at")
        if a[name] is not None
    ]
    if not smoothing.input_noise:
        clash.append("mode='ng' (no input noise)")
    if clash:
        raise ValueError(
            "Argument `input_range` sets the input noise's scale per element (AdaptGrad), so it "
            f"cannot be combined with {', '.join(clash)}. Drop one of them."
        )
    return low, high


def _check_batch_size(batch_size: Any, per_sample: int, ig_steps: int) -> int | str | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, str):
        if batch_size.strip().lower() != "auto":
            raise ValueError(
                "Argument `batch_size` must be 'auto', None (one unbounded pass) or an int >= 1. "
                f"Received: batch_size={batch_size!r}"
            )
        return "auto"
    batch_size = check_int("batch_size", batch_size)
    if batch_size < per_sample:
        raise ValueError(
            f"Argument `batch_size` must be at least ig_steps={ig_steps} for "
            "integrated gradients (one sample needs that many evaluations). "
            f"Received: batch_size={batch_size}"
        )
    return batch_size


def _check_antithetic(
    sampler: str, smoothing: modes.Mode, n: int, m: int, batch_size: int | None, per_sample: int
) -> None:
    if sampler != "antithetic":
        return
    for name, count, used in (
        ("num_samples", n, smoothing.input_noise),
        ("num_weight_samples", m, smoothing.weight_noise),
    ):
        if used and count % 2:
            raise ValueError(
                f"sampler='antithetic' draws in pairs: Argument `{name}` must be even. "
                f"Received: {name}={count}"
            )
    if isinstance(batch_size, int) and smoothing.input_noise and batch_size < 2 * per_sample:
        raise ValueError(
            "sampler='antithetic' evaluates a pair of samples at least: Argument "
            f"`batch_size` must be at least {2 * per_sample}. Received: batch_size={batch_size}"
        )


def _check_replicates(replicates: Any, sampler: str, smoothing: modes.Mode, n: int,
                      m: int) -> int:
    """``replicates`` checked against the sampler and the draw counts (1 unless Sobol)."""
    name = smoothing.outer_count
    count = m if smoothing.weight_noise else n
    if sampler != "sobol":
        if replicates is not None:
            raise ValueError(
                "Argument `replicates` applies to sampler='sobol'. Received: "
                f"replicates={replicates!r} with sampler={sampler!r}"
            )
        return 1
    if replicates is None:
        return default_replicates(count, name)
    replicates = check_int("replicates", replicates)
    if count % replicates:
        ok = [d for d in range(2, count + 1) if count % d == 0][:6]
        raise ValueError(
            f"Argument `replicates` must divide {name}={count} (each Sobol replicate has "
            f"{name} / replicates points). Received: replicates={replicates}. Divisors of "
            f"{count}: {ok}; or make {name} a multiple of {replicates}."
        )
    return replicates


def _check_tolerance(
    tolerance: float | None, sampler: str, replicates: int, aggregation: str
) -> None:
    if tolerance is None:
        return
    if replicates == 1 and sampler == "sobol":
        raise ValueError(
            "Argument `tolerance` needs a standard error, and one Sobol point set has none. "
            "Received: replicates=1; pass replicates=2 or more."
        )
    if aggregation == "vargrad":
        raise ValueError(
            "Argument `tolerance` supports aggregation='smoothgrad' or 'smoothgrad_sq' (means "
            "that independent rounds combine exactly). Received: aggregation='vargrad'."
        )


def _check_proposal(proposal: kernels_lib.Kernel | None, smoothing: modes.Mode,
                    aggregation: str) -> None:
    if proposal is None:
        return
    if not smoothing.input_noise:
        raise ValueError(
            f"Argument `proposal` applies to input noise; mode='ng' has none. Received: "
            f"proposal={proposal.name!r}. Use mode='sg' or 'fg'."
        )
    if aggregation == "vargrad":
        raise ValueError(
            "Argument `proposal` supports aggregation='smoothgrad' or 'smoothgrad_sq' "
            "(importance-weighted means). Received: aggregation='vargrad'."
        )


def _proposal(value: Any) -> kernels_lib.Kernel:
    try:
        return kernels_lib.get(value)
    except (TypeError, ValueError) as exc:
        raise type(exc)(
            f"Argument `proposal` must be None or a kernel ({exc}). Received: proposal={value!r}"
        ) from None


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"Argument `{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


def _check_cache_mb(arguments: dict[str, Any], name: str) -> float:
    value = arguments[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(
            f"Argument `{name}` must be a number >= 0 (MiB; 0 keeps nothing). "
            f"Received: {name}={value!r}"
        )
    return float(value)


def _check_draws(value: Any) -> int | str:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(
            "Argument `weight_draws_per_pass` must be 'auto' (as many weight draws per pass as "
            "fit under batch_size) or an int >= 1 (at most that many; 1: one draw per pass). "
            f"Received: weight_draws_per_pass={value!r}"
        )
    return int(value)


def _check_weight_layers(
    weight_layers: Any, perturb_bias: Any, smoothing: modes.Mode
) -> tuple | None:
    if not isinstance(perturb_bias, bool):
        raise TypeError(
            f"Argument `perturb_bias` must be True or False. Received: {perturb_bias!r}"
        )
    if weight_layers is not None and _is_one_layer(weight_layers):
        weight_layers = [weight_layers]  # one name or one layer
    if weight_layers is not None and (
        not isinstance(weight_layers, list | tuple)
        or not all(_is_one_layer(entry) for entry in weight_layers)
    ):
        raise TypeError(
            "Argument `weight_layers` must hold layer names or layers (a layer, a name or "
            f"path, or a list of them; None: every layer). Received: "
            f"weight_layers={weight_layers!r}"
        )
    layers = None if weight_layers is None else tuple(weight_layers)
    if not smoothing.weight_noise and (layers is not None or not perturb_bias):
        raise ValueError(
            "Arguments `weight_layers`/`perturb_bias` choose the weights that get noise; "
            "mode='sg' perturbs none. Use mode='ng' or 'fg', or leave them at their "
            f"defaults. Received: weight_layers={weight_layers!r}, "
            f"perturb_bias={perturb_bias!r}"
        )
    return layers

"""The three smoothing modes as values that know what they mean.

A mode says where the noise goes (the inputs, the weights, or both), which sample count is the
outer loop, and what one independent unit of a standard error is. Every module asks these
questions of a :class:`Mode`; only :func:`parse` reads the user's string.

Example:

>>> from tfmollify.core import modes
>>> fg = modes.parse("FusionGrad")
>>> fg.input_noise, fg.weight_noise, fg.outer_count
(True, True, 'num_weight_samples')
>>> fg.input_draws(8), fg.weight_draws(4), modes.parse("ng").input_draws(8)
(8, 4, 1)
"""

from __future__ import annotations

import dataclasses

__all__ = ["ALIASES", "FG", "MODES", "NAMES", "NG", "SG", "Mode", "parse"]


@dataclasses.dataclass(frozen=True)
class Mode:
    """One smoothing mode.

    Attributes:
        name: The user's name of the mode (``"sg"``, ``"ng"``, ``"fg"``).
        title: Its paper name (``"SmoothGrad"`` ...).
        input_noise: Whether the inputs (or the ``noise_at`` layer) get noise.
        weight_noise: Whether the trainable weights get noise.
        stderr_unit: The independent unit of a standard error (what a tolerance round counts).
    """

    name: str
    title: str
    input_noise: bool
    weight_noise: bool
    stderr_unit: str

    @property
    def outer_count(self) -> str:
        """The argument that counts the outer loop: weight draws where there are any."""
        return "num_weight_samples" if self.weight_noise else "num_samples"

    @property
    def only_input_noise(self) -> bool:
        """Inputs get noise and weights do not (SmoothGrad): the weights are the model's own."""
        return self.input_noise and not self.weight_noise

    def input_draws(self, num_samples: int) -> int:
        """Input draws per weight draw: ``num_samples`` with input noise, else 1."""
        return num_samples if self.input_noise else 1

    def weight_draws(self, num_weight_samples: int) -> int:
        """Weight draws: ``num_weight_samples`` with weight noise, else 1 (the model's weights)."""
        return num_weight_samples if self.weight_noise else 1

    def __str__(self) -> str:
        return self.name


SG = Mode("sg", "SmoothGrad", input_noise=True, weight_noise=False, stderr_unit="input draws")
NG = Mode("ng", "NoiseGrad", input_noise=False, weight_noise=True, stderr_unit="weight draws")
FG = Mode("fg", "FusionGrad", input_noise=True, weight_noise=True,
          stderr_unit="num_weight_samples x num_samples evaluations")

#: Every mode, in the paper's order.
MODES: tuple[Mode, ...] = (SG, NG, FG)
#: Their names, as users spell them.
NAMES: tuple[str, ...] = tuple(m.name for m in MODES)
#: The papers' names, accepted as well (any case).
ALIASES = {"smoothgrad": "sg", "noisegrad": "ng", "fusiongrad": "fg"}
_BY_NAME = {m.name: m for m in MODES}


def parse(value: object) -> Mode:
    """The user's ``mode`` argument (``"sg"``, ``"NG"``, ``"FusionGrad"`` ...) as a :class:`Mode`.

    This is the one place that reads a mode's spelling.

    Raises:
        TypeError: ``value`` is not a string.
        ValueError: ``value`` names no mode.
    """
    if isinstance(value, Mode):
        return value
    if isinstance(value, str):
        value = ALIASES.get(value.lower(), value)
    message = f"Argument `mode` must be one of {list(NAMES)}. Received: mode={value!r}"
    if not isinstance(value, str):
        raise TypeError(message)
    name = value.lower().strip()
    if name not in _BY_NAME:
        raise ValueError(message)
    return _BY_NAME[name]


def get(mode: str | Mode) -> Mode:
    """The :class:`Mode` named ``mode`` (or ``mode`` itself).

    Raises:
        ValueError: ``mode`` is not one of ``"sg"``, ``"ng"``, ``"fg"``.
    """
    if isinstance(mode, Mode):
        return mode
    if isinstance(mode, str) and mode in _BY_NAME:
        return _BY_NAME[mode]
    raise ValueError(f"Argument `mode` must be one of {list(NAMES)}. Received: mode={mode!r}")

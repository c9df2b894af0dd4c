"""Mollifier kernels: the standard densities ``phi`` whose scaled copies smooth a gradient.

A kernel is a symmetric probability density ``phi`` on the real line. Its scaled copy
``phi_eps(x) = phi(x / eps) / eps`` is the mollifier of Zhou et al. ("Axiomatization of gradient
smoothing in neural networks", section 4.2), and the smoothed gradient is
``g_eps = g * phi_eps``. In ``n`` dimensions the kernel is the product of ``n`` one-dimensional
copies, so noise is drawn i.i.d. per input element.

Five kernels are built in (``x`` real, ``u`` in the open interval (0, 1)):

============  ==============================  =====================  ==========================
name          pdf(x)                          cdf(x)                 icdf(u)
============  ==============================  =====================  ==========================
gaussian      exp(-x^2/2) / sqrt(2 pi)        (1 + erf(x/sqrt 2))/2  sqrt(2) erfinv(2u - 1)
poisson       1 / (pi (1 + x^2))              1/2 + arctan(x)/pi     tan(pi (u - 1/2))
hyperbolic    1 / (2 cosh^2 x)                (1 + tanh x) / 2       artanh(2u - 1)
sigmoid       e^x / (e^x + 1)^2               e^x / (e^x + 1)        log(u / (1 - u))
rect          1/2 on [-1, 1], else 0          (x + 1)/2 on [-1, 1]   2u - 1
============  ==============================  =====================  ==========================

Aliases: ``cauchy`` = poisson, ``logistic`` = sigmoid, ``uniform`` = rect.

The scale ``eps`` of eq. 30 of the paper, ``alpha / 2 = integral_0^r phi_eps(x) dx``, is
``eps = r / icdf((1 + alpha) / 2)`` (see :meth:`Kernel.epsilon`). The closed forms are
gaussian ``r / (sqrt(2) erfinv(alpha))``, poisson ``r / tan(pi alpha / 2)``,
hyperbolic ``r / artanh(alpha)`` (the paper prints ``arctan``), sigmoid
``r / log((1 + alpha) / (1 - alpha))`` and rect ``r / alpha`` (the paper prints ``2 r / alpha``).

A new kernel is a subclass of :class:`Kernel` that implements ``pdf``, ``cdf`` and ``icdf`` for
the standard (scale 1) density, registered with :func:`register`; everything in tfmollify that
takes a kernel name then accepts it.

Example:

>>> import tfmollify as tfm
>>> tfm.kernels.names()[:5]
['gaussian', 'poisson', 'hyperbolic', 'sigmoid', 'rect']
>>> k = tfm.kernels.get("Cauchy")
>>> k.name
'poisson'
>>> round(k.epsilon(r=1.0, alpha=0.5), 6)
1.0
>>> round(float(tfm.kernels.get("rect").cdf(0.5)), 4)
0.75
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify.core import sampling

__all__ = [
    "Gaussian",
    "Hyperbolic",
    "Kernel",
    "Poisson",
    "Rect",
    "Sigmoid",
    "check_alpha",
    "get",
    "names",
    "register",
]

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _as_float_tensor(x: Any) -> tf.Tensor:
    """Converts ``x`` to a floating tensor, keeping float dtypes and using float32 otherwise."""
    if isinstance(x, tf.Tensor | tf.Variable):
        t = tf.convert_to_tensor(x)
    else:
        arr = np.asarray(x)
        if arr.dtype in (np.float16, np.float32, np.float64):
            t = tf.convert_to_tensor(arr)
        else:
            t = tf.convert_to_tensor(arr, dtype=tf.float32)
    if not t.dtype.is_floating:
        t = tf.cast(t, tf.float32)
    return t


class Kernel:
    """A symmetric mollifier kernel: a probability density on the real line.

    Subclasses implement the standard (scale 1) density through ``_pdf``, ``_cdf`` and ``_icdf``
    as TensorFlow ops; the public ``pdf``, ``cdf`` and ``icdf`` convert their argument and keep
    its floating dtype (float32 when it has none). ``phi`` must be symmetric, ``phi(x) = phi(-x)``,
    so that the smoothed estimate does not depend on the sign convention of the noise.

    Attributes:
        name: Canonical name, lower case.
        variance: Variance of the standard kernel (``inf`` when it has none).
        support: ``(low, high)`` of the standard kernel.
        formula: A one-line description of ``pdf(x)``, used in tables.

    Example:

    >>> import tensorflow as tf
    >>> import tfmollify as tfm
    >>> class Triangle(tfm.kernels.Kernel):
    ...     name = "triangle"
    ...     variance = 1.0 / 6.0
    ...     support = (-1.0, 1.0)
    ...     formula = "max(1 - |x|, 0)"
    ...     def _pdf(self, x):
    ...         return tf.nn.relu(1.0 - tf.abs(x))
    ...     def _cdf(self, x):
    ...         x = tf.clip_by_value(x, -1.0, 1.0)
    ...         return tf.where(x < 0, 0.5 * (1 + x) ** 2, 1 - 0.5 * (1 - x) ** 2)
    ...     def _icdf(self, u):
    ...         return tf.where(u < 0.5, tf.sqrt(2 * u) - 1, 1 - tf.sqrt(2 * (1 - u)))
    >>> _ = tfm.kernels.register(Triangle())
    >>> round(tfm.kernels.get("triangle").epsilon(r=1.0, alpha=0.75), 6)
    2.0
    """

    name: str = ""
    variance: float = math.nan
    support: tuple[float, float] = (-math.inf, math.inf)
    formula: str = ""

    # -- to implement ------------------------------------------------------------------------
    def _pdf(self, x: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def _cdf(self, x: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def _icdf(self, u: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError

    def _log_pdf(self, x: tf.Tensor) -> tf.Tensor:
        """``log phi(x)``; subclasses override it with a form that stays finite in the tails."""
        return tf.math.log(self._pdf(x))

    def _central_quantile(self, alpha: float) -> float:
        """``icdf((1 + alpha) / 2)`` in float64; subclasses override it with a closed form."""
        u = tf.constant(0.5 + 0.5 * alpha, tf.float64)
        return float(self._icdf(u).numpy())

    def _eq30_quantile(self, alpha: float) -> tuple[float, bool]:
        """``(q, ok)``: the quantile ``icdf((1 + alpha)/2)`` and whether it solves eq. 30.

        Checked once per ``alpha`` through the cdf (a user kernel's icdf may be wrong) and
        cached, since explainers ask on every call.
        """
        cache = self.__dict__.setdefault("_eq30_cache", {})
        if alpha not in cache:
            q = self._central_quantile(alpha)
            target = 0.5 + 0.5 * alpha
            ok = math.isfinite(q) and q > 0
            if ok:
                got = float(self._cdf(tf.constant(q, tf.float64)).numpy())
                ok = abs(got - target) <= 1e-9 * max(1.0, target)
            cache[alpha] = (q, ok)
        return cache[alpha]

    # -- public ------------------------------------------------------------------------------
    def pdf(self, x: Any) -> tf.Tensor:
        """Density ``phi(x)`` of the standard kernel.

        Args:
            x: Points, any shape; a float tensor keeps its dtype, anything else becomes float32.

        Returns:
            A tensor of ``x``'s shape and dtype.
        """
        return self._pdf(_as_float_tensor(x))

    def log_pdf(self, x: Any) -> tf.Tensor:
        """Log density ``log phi(x)`` of the standard kernel (``-inf`` outside the support).

        Args:
            x: Points, any shape.

        Returns:
            A tensor of ``x``'s shape and dtype.
        """
        return self._log_pdf(_as_float_tensor(x))

    def cdf(self, x: Any) -> tf.Tensor:
        """Distribution function ``Phi(x) = integral_{-inf}^x phi``, stable in both tails.

        Args:
            x: Points, any shape.

        Returns:
            A tensor of ``x``'s shape and dtype, in [0, 1].
        """
        return self._cdf(_as_float_tensor(x))

    def icdf(self, u: Any) -> tf.Tensor:
        """Inverse distribution function ``Phi^-1(u)``.

        Args:
            u: Probabilities in the open interval (0, 1), any shape. The endpoints map to the
                ends of the support (``+-inf`` for unbounded kernels).

        Returns:
            A tensor of ``u``'s shape and dtype.
        """
        return self._icdf(_as_float_tensor(u))

    def sample(self, shape: Sequence[int], seed: Any, dtype: tf.DType = tf.float32) -> tf.Tensor:
        """Draws i.i.d. samples of the standard kernel, statelessly.

        The draws are the inverse CDF of uniforms on the open interval (0, 1) produced by the
        counter-based Philox generator, so the same ``seed`` gives identical samples on every
        call and every device.

        Args:
            shape: Output shape.
            seed: An int, or a shape ``[2]`` integer tensor as for ``tf.random.stateless_*``.
            dtype: ``tf.float32`` or ``tf.float64`` (``tf.float16``/``tf.bfloat16`` are drawn in
                float32 and cast).

        Returns:
            A tensor of ``shape`` and ``dtype``.

        Raises:
            TypeError: If ``dtype`` is not a floating dtype.
        """
        dtype = tf.as_dtype(dtype)
        if not dtype.is_floating:
            raise TypeError(
                f"Argument `dtype` must be a floating dtype. Received: dtype={dtype.name}"
            )
        if isinstance(seed, int | np.integer):
            seed = [int(seed) >> 32, int(seed) & 0xFFFFFFFF]
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=seed)
        draw_dtype = tf.float64 if dtype == tf.float64 else tf.float32
        u = sampling.uniform_open(shape, key, counter, draw_dtype)
        return tf.cast(self._icdf(u), dtype)

    def eq30_quantile(self, alpha: float) -> float:
        """The quantile ``q = icdf((1 + alpha) / 2)`` with ``eps = r / q`` (eq. 30).

        Args:
            alpha: Probability mass inside ``[-r, r]``, in the open interval (0, 1).

        Returns:
            ``q``, a positive float (checked once per ``alpha`` through the cdf).

        Raises:
            ValueError: If ``alpha`` is outside (0, 1) or no scale puts mass ``alpha`` inside
                ``[-r, r]``.
        """
        alpha_f = check_alpha(alpha)
        q, ok = self._eq30_quantile(alpha_f)
        if not ok:
            raise ValueError(
                f"Kernel `{self.name}` has no scale eps with mass alpha={alpha_f} inside [-r, r]: "
                f"its quantile icdf((1 + alpha)/2) = {q} does not solve eq. 30 (it must be "
                "finite, positive and inside the support). Pass `epsilon` explicitly."
            )
        return q

    def epsilon(self, r: Any, alpha: float) -> Any:
        """The scale ``eps`` that solves eq. 30 of the paper: ``alpha/2 = int_0^r phi_eps``.

        Since ``int_0^r phi_eps(x) dx = Phi(r / eps) - 1/2``, the solution is
        ``eps = r / Phi^-1((1 + alpha) / 2)``: a fraction ``alpha`` of the noise falls in
        ``[-r, r]``.

        Args:
            r: Half-width of the interval, a positive float or an array of them.
            alpha: Probability mass inside ``[-r, r]``, in the open interval (0, 1).

        Returns:
            ``eps`` as a float (or a float64 NumPy array when ``r`` is an array).

        Raises:
            ValueError: If ``r <= 0`` or not finite, if ``alpha`` is outside (0, 1), or if no
                scale puts mass ``alpha`` inside ``[-r, r]`` (a kernel whose quantile is not
                finite and positive).
        """
        alpha_f = check_alpha(alpha)
        r_arr = np.asarray(r, dtype=np.float64)
        if r_arr.size == 0 or not np.all(np.isfinite(r_arr)) or np.any(r_arr <= 0):
            raise ValueError(
                f"Argument `r` must be positive and finite. Received: r={r!r}. "
                "r is the half-width of the interval [-r, r] that holds a fraction alpha of the "
                "noise (the paper suggests r = max(x) - mean(x))."
            )
        eps = r_arr / self.eq30_quantile(alpha_f)
        return float(eps) if eps.ndim == 0 else eps

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def check_alpha(
    alpha: Any,
    meaning: str = "It is the fraction of the noise inside [-r, r]; the paper recommends 0.9 "
    "or 0.95.",
) -> float:
    """``alpha`` as a float in the open interval (0, 1), or a ``TypeError``/``ValueError`` whose
    message ends with ``meaning`` (what this ``alpha`` is)."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise TypeError(
            "Argument `alpha` must be a float in the open interval (0, 1). "
            f"Received: alpha={alpha!r}"
        ) from None
    if not (0.0 < a < 1.0):
        raise ValueError(
            f"Argument `alpha` must be in the open interval (0, 1). Received: alpha={alpha!r}. "
            + meaning
        )
    return a


class Gaussian(Kernel):
    """Standard normal kernel: ``phi(x) = exp(-x^2/2)/sqrt(2 pi)``; variance 1.

    SmoothGrad, NoiseGrad and FusionGrad as published all use this kernel.
    """

    name = "gaussian"
    variance = 1.0
    formula = "exp(-x^2/2) / sqrt(2 pi)"

    def _pdf(self, x):
        return tf.exp(self._log_pdf(x))

    def _log_pdf(self, x):
        return -0.5 * tf.square(x) - tf.constant(_LOG_SQRT_2PI, x.dtype)

    def _cdf(self, x):
        return 0.5 * tf.math.erfc(-x / tf.constant(_SQRT2, x.dtype))

    def _icdf(self, u):
        return tf.math.ndtri(u)

    def _central_quantile(self, alpha):
        return _SQRT2 * float(tf.math.erfinv(tf.constant(alpha, tf.float64)).numpy())


class Poisson(Kernel):
    """Cauchy (Poisson) kernel: ``phi(x) = 1/(pi (1 + x^2))``; it has no mean or variance.

    Heavy tails: a few draws land very far away. For input noise this is harmless (the gradient
    of a network is bounded), but with weight noise the mollified gradient of a model whose
    gradient grows with its weights does not exist, so NoiseGrad/FusionGrad estimates do not
    converge.
    """

    name = "poisson"
    variance = math.inf
    formula = "1 / (pi (1 + x^2))"

    def _pdf(self, x):
        return 1.0 / (tf.constant(math.pi, x.dtype) * (1.0 + tf.square(x)))

    def _log_pdf(self, x):
        ax = tf.abs(x)
        # log(1 + x^2) = 2 log|x| + log1p(1/x^2) for large |x|, without overflow
        big = 2.0 * tf.math.log(tf.maximum(ax, 1.0)) + tf.math.log1p(
            tf.math.reciprocal_no_nan(tf.square(tf.maximum(ax, 1.0)))
        )
        small = tf.math.log1p(tf.square(tf.minimum(ax, 1.0)))
        return -tf.constant(math.log(math.pi), x.dtype) - tf.where(ax > 1.0, big, small)

    def _cdf(self, x):
        # atan2(1, -x) / pi equals 1/2 + atan(x)/pi and keeps full precision as x -> -inf.
        return tf.math.atan2(tf.ones_like(x), -x) / tf.constant(math.pi, x.dtype)

    def _icdf(self, u):
        # tan(pi d), d = u - 1/2, near the centre; -1/tan(pi u) = cos/sin in the tails, from
        # m = min(u, 1 - u): each branch keeps full relative precision where it is used (d and
        # 1 - u are exact there). sin and cos, vectorised on CPU, cost a quarter of two tans.
        pi = tf.constant(math.pi, u.dtype)
        d = u - 0.5
        central = tf.abs(d) <= 0.25
        angle = pi * tf.where(central, d, tf.minimum(u, 1.0 - u))
        sin, cos = tf.sin(angle), tf.cos(angle)
        sign = tf.where(d < 0, tf.constant(-1.0, u.dtype), tf.constant(1.0, u.dtype))
        return tf.where(central, sin / cos, sign * cos / sin)

    def _central_quantile(self, alpha):
        return math.tan(0.5 * math.pi * alpha)


class Hyperbolic(Kernel):
    """Hyperbolic-secant-squared kernel: ``phi(x) = 1/(2 cosh^2 x)``; variance ``pi^2/12``.

    It is the logistic density with scale 1/2.
    """

    name = "hyperbolic"
    variance = math.pi**2 / 12.0
    formula = "1 / (2 cosh^2 x)"

    def _pdf(self, x):
        a = tf.exp(-2.0 * tf.abs(x))  # 1/(2 cosh^2 x) = 2a / (1 + a)^2, no overflow
        return 2.0 * a / tf.square(1.0 + a)

    def _log_pdf(self, x):
        ax = tf.abs(x)
        return tf.constant(math.log(2.0), x.dtype) - 2.0 * ax - 2.0 * tf.math.log1p(
            tf.exp(-2.0 * ax)
        )

    def _cdf(self, x):
        return tf.math.sigmoid(2.0 * x)

    def _icdf(self, u):
        return 0.5 * (tf.math.log(u) - tf.math.log1p(-u))

    def _central_quantile(self, alpha):
        return math.atanh(alpha)


class Sigmoid(Kernel):
    """Logistic (sigmoid) kernel: ``phi(x) = e^x/(e^x + 1)^2``; variance ``pi^2/3``."""

    name = "sigmoid"
    variance = math.pi**2 / 3.0
    formula = "e^x / (e^x + 1)^2"

    def _pdf(self, x):
        a = tf.exp(-tf.abs(x))
        return a / tf.square(1.0 + a)

    def _log_pdf(self, x):
        ax = tf.abs(x)
        return -ax - 2.0 * tf.math.log1p(tf.exp(-ax))

    def _cdf(self, x):
        return tf.math.sigmoid(x)

    def _icdf(self, u):
        return tf.math.log(u) - tf.math.log1p(-u)

    def _central_quantile(self, alpha):
        return 2.0 * math.atanh(alpha)


class Rect(Kernel):
    """Rectangular (uniform) kernel: ``phi(x) = 1/2`` on ``[-1, 1]``; variance 1/3.

    The only built-in kernel with compact support. With ``alpha`` in (0, 1) the eq. 30 scale
    ``eps = r / alpha`` is always larger than ``r``, so the solution stays inside the support.
    """

    name = "rect"
    variance = 1.0 / 3.0
    support = (-1.0, 1.0)
    formula = "1/2 on [-1, 1], 0 elsewhere"

    def _pdf(self, x):
        return tf.where(tf.abs(x) <= 1.0, tf.constant(0.5, x.dtype), tf.constant(0.0, x.dtype))

    def _cdf(self, x):
        return tf.clip_by_value(0.5 * (x + 1.0), 0.0, 1.0)

    def _icdf(self, u):
        return 2.0 * u - 1.0

    def _central_quantile(self, alpha):
        return float(alpha)


_REGISTRY: dict[str, Kernel] = {}
_ALIASES: dict[str, str] = {}


def register(kernel: Kernel, aliases: Sequence[str] = (), *, overwrite: bool = False) -> Kernel:
    """Registers a kernel so that every tfmollify function accepts its name.

    Args:
        kernel: A :class:`Kernel` instance with a non-empty ``name``.
        aliases: Other names that resolve to it.
        overwrite: Replace an existing kernel of the same name.

    Returns:
        The kernel, for chaining.

    Raises:
        TypeError: If ``kernel`` is not a :class:`Kernel` instance.
        ValueError: If its name is empty or already taken and ``overwrite`` is False.
    """
    if not isinstance(kernel, Kernel):
        raise TypeError(
            "Argument `kernel` must be an instance of tfmollify.core.kernels.Kernel. "
            f"Received: kernel={kernel!r} of type {type(kernel).__name__}"
        )
    name = kernel.name.lower().strip() if kernel.name else ""
    if not name:
        raise ValueError("A registered kernel needs a non-empty `name` class attribute.")
    for n in (name, *[a.lower() for a in aliases]):
        taken = n in _REGISTRY or n in _ALIASES
        if taken and not overwrite and _REGISTRY.get(_ALIASES.get(n, n)) is not kernel:
            raise ValueError(
                f"Kernel name `{n}` is already registered; pass overwrite=True to replace it."
            )
    _REGISTRY[name] = kernel
    for a in aliases:
        _ALIASES[a.lower()] = name
    return kernel


def names() -> list[str]:
    """Returns the canonical names of the registered kernels, built-in ones first."""
    return list(_REGISTRY)


def get(kernel: str | Kernel) -> Kernel:
    """Looks a kernel up by name (case-insensitive, aliases allowed) or passes one through.

    Args:
        kernel: A name such as ``"gaussian"`` or ``"Cauchy"``, or a :class:`Kernel` instance.

    Returns:
        The :class:`Kernel`.

    Raises:
        ValueError: For an unknown name (the message lists the valid ones).
        TypeError: For anything that is neither a string nor a :class:`Kernel`.
    """
    if isinstance(kernel, Kernel):
        return kernel
    if not isinstance(kernel, str):
        raise TypeError(
            "Argument `kernel` must be a kernel name or a tfmollify.core.kernels.Kernel instance. "
            f"Received: kernel={kernel!r} of type {type(kernel).__name__}"
        )
    key = kernel.lower().strip()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        valid = ", ".join(names() + sorted(_ALIASES))
        raise ValueError(f"Unknown kernel: kernel={kernel!r}. Valid names: {valid}.")
    return _REGISTRY[key]


register(Gaussian(), aliases=("normal",))
register(Poisson(), aliases=("cauchy",))
register(Hyperbolic(), aliases=("sech2",))
register(Sigmoid(), aliases=("logistic",))
register(Rect(), aliases=("uniform",))

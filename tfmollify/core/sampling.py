"""Counter-based, stateless noise: the same seed gives the same draws, whatever the chunking.

All randomness in tfmollify comes from the Philox-4x32-10 generator used through TensorFlow's
stateless ops with an explicit *key* and *counter*. Philox is counter-based: output block ``c``
depends only on ``(key, c)``. tfmollify gives every stream its own key and places each sample at
a fixed counter offset, so sample ``i`` of a stream is the same tensor whether it is drawn alone,
in a chunk with its neighbours, or on another device:

* Input noise of example ``b``: key ``mix(example_seed[b])``, counter
  ``(i * stride(D), INPUT_STREAM)`` for flat sample index ``i`` (for FusionGrad
  ``i = j * N + n`` for weight draw ``j`` and input draw ``n``), ``D`` the example's size.
* Weight noise of draw ``j``: key ``mix(weight_seed)``, counter ``(j * stride(P), WEIGHT_STREAM)``
  with ``P`` the number of perturbed weights, all variables concatenated in a fixed order. Weight
  draws are shared by all examples (an ensemble of ``M`` perturbed models, as in NoiseGrad), which
  is what lets one perturbed model evaluate a whole batch.

Per-example seeds. When the caller gives none, ``example_seed[b] = mix(mix(seed) + b + offset)``
where ``offset`` is the example's position in the whole job (0 for a single call), and
``weight_seed = mix(seed ^ WEIGHT_SALT)``. ``mix`` is SplitMix64's finaliser; all arithmetic is
modulo 2**64. An example's noise therefore depends only on its seed and the sample index: never
on the batch it shares, the batch size, or the chunk size.

Antithetic sampling (``sampler="antithetic"``): samples come in pairs ``(2p, 2p + 1)`` that share
the uniforms of stream index ``p``, the second member using ``1 - u`` (so ``z`` and ``-z`` for a
symmetric kernel). For input noise ``p = i // 2`` over the flat sample index ``i``; for weight
noise ``p = j // 2`` over the draw index ``j``. Each member has the kernel's distribution, so every
estimate stays unbiased, and a pair's mean cancels the part of the attribution that is odd in the
noise.

Randomized quasi-Monte Carlo (``sampler="sobol"``): the draws come in ``R`` independent
*replicates* of ``m`` points each. Point ``p`` of a replicate is the ``p``-th point of the Sobol
sequence (Joe-Kuo direction numbers, as in ``tf.math.sobol_sample``, in Gray-code order and
starting with the origin, so the first ``2**k`` points form a (t, k, s)-net), randomized by a
*digital shift*: its bits are XORed with uniform random bits drawn once per replicate. Each point
is then exactly uniform on (0, 1)^D (so every estimate stays unbiased), while the points of one
replicate stay evenly spread (each one-dimensional projection of ``2**k`` points puts one point in
each interval of width ``2**-k``). Replicates are independent, so their spread gives the standard
error. Input draw ``i`` of example ``b`` is point ``i % m`` of replicate ``i // m`` (for
FusionGrad ``m = N`` and the replicate is the weight draw ``j``), with shift bits from key
``mix(example_seed[b])``, counter ``(replicate * stride(D), SOBOL_STREAM)``; weight draw ``j`` is
point ``j % m`` of replicate ``j // m`` with shift bits from the weight key. The Sobol sequence has
:data:`SOBOL_MAX_DIM` dimensions; element ``d`` of a larger example uses dimension
``d % SOBOL_MAX_DIM`` (with its own shift bits, so still exactly uniform).

Uniforms are taken from the top 23 (float32) or 52 (float64) bits and shifted by half a step, so
they lie in the open interval (0, 1) and ``u`` and ``1 - u`` are equally likely: inverse CDFs never
see 0 or 1 and the noise is exactly symmetric.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

__all__ = [
    "INPUT_STREAM",
    "SOBOL_MAX_DIM",
    "SOBOL_STREAM",
    "WEIGHT_STREAM",
    "Sobol",
    "antithetic_uniforms",
    "bits_to_open_unit",
    "example_bits",
    "example_keys",
    "example_seeds",
    "mix64",
    "sobol_bits",
    "sobol_directions",
    "sobol_uniforms",
    "stream_bits",
    "stride",
    "uniform_open",
    "weight_key",
]

INPUT_STREAM = 1
WEIGHT_STREAM = 2
SOBOL_STREAM = 3
SOBOL_MAX_DIM = 21200  # dimensions of tf.math.sobol_sample's direction numbers
WEIGHT_SALT = 0x5745494748544E53  # "WEIGHTNS"
_PHILOX = 1  # tf.random.Algorithm.PHILOX

_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def mix64(x: int) -> int:
    """SplitMix64 finaliser on Python ints (modulo 2**64)."""
    z = (int(x) + _GOLDEN) & _MASK
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


def _mix64_tf(x: tf.Tensor) -> tf.Tensor:
    """SplitMix64 finaliser on a uint64 tensor (wrapping arithmetic)."""
    u64 = tf.uint64
    z = x + tf.constant(_GOLDEN, u64)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(30, u64)))
    z = z * tf.constant(_M1, u64)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(27, u64)))
    z = z * tf.constant(_M2, u64)
    return tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(31, u64)))


def example_seeds(seed: int, count: int, offset: int = 0) -> np.ndarray:
    """Per-example seeds derived from one seed and the examples' positions.

    Args:
        seed: The explainer's seed (any int; reduced modulo 2**64).
        count: Number of examples.
        offset: Position of the first example in the whole job.

    Returns:
        An int64 array of ``count`` seeds: ``mix(mix(seed) + offset + b)`` reinterpreted as
        signed 64-bit integers.
    """
    base = mix64(int(seed) & _MASK)
    out = np.array(
        [mix64((base + offset + b) & _MASK) for b in range(count)], dtype=np.uint64
    )
    return out.view(np.int64)


def weight_key(seed: int) -> np.ndarray:
    """The Philox key of the weight-noise stream for an explainer seed, shape ``[1]`` uint64."""
    return np.array([mix64((int(seed) & _MASK) ^ WEIGHT_SALT)], dtype=np.uint64)


def example_keys(seeds: tf.Tensor) -> tf.Tensor:
    """Philox keys ``mix(seed)`` for int64 example seeds ``[B]`` → uint64 ``[B]``."""
    return _mix64_tf(tf.bitcast(tf.cast(seeds, tf.int64), tf.uint64))


def _bits_per_block(dtype: tf.DType) -> int:
    """Random values of ``dtype``'s bit source produced per Philox counter increment."""
    return 2 if dtype == tf.float64 else 4


def stride(size: int, dtype: tf.DType) -> int:
    """Counter increments reserved for one sample of ``size`` values."""
    per = _bits_per_block(dtype)
    return -(-int(size) // per)


def uniform_open(
    shape: Sequence[int] | tf.Tensor, key: tf.Tensor, counter: tf.Tensor, dtype: tf.DType
) -> tf.Tensor:
    """Uniforms on the open interval (0, 1) from Philox with an explicit key and counter.

    Args:
        shape: Output shape.
        key: uint64 tensor of shape ``[1]``.
        counter: uint64 tensor of shape ``[2]`` (low word first).
        dtype: ``tf.float32`` (23 random bits) or ``tf.float64`` (52 random bits).

    Returns:
        ``(k + 0.5) / 2**bits`` for uniform integers ``k < 2**bits``: symmetric about 1/2 and,
        with one bit fewer than the mantissa holds, exactly representable, so never 0 or 1
        (with 24 bits, ``k = 2**24 - 1`` would round to 1.0 and give infinite noise).
    """
    full = tf.uint64 if dtype == tf.float64 else tf.uint32
    bits = tf.raw_ops.StatelessRandomUniformFullIntV2(
        shape=shape, key=key, counter=counter, alg=_PHILOX, dtype=full
    )
    return bits_to_open_unit(bits)


def bits_to_open_unit(bits: tf.Tensor) -> tf.Tensor:
    """Maps uniform random integers to floats in the open interval (0, 1).

    Args:
        bits: ``tf.uint32`` (gives float32, top 23 bits used) or ``tf.uint64`` (gives float64,
            top 52 bits used).

    Returns:
        ``(k + 0.5) / 2**b`` with ``k`` the top ``b`` bits; every value is exact, so the extremes
        ``2**-(b+1)`` and ``1 - 2**-(b+1)`` are strictly inside (0, 1).
    """
    if bits.dtype == tf.uint64:
        k = tf.cast(tf.bitwise.right_shift(bits, tf.constant(12, tf.uint64)), tf.float64)
        return (k + 0.5) * (2.0**-52)
    k = tf.cast(tf.bitwise.right_shift(bits, tf.constant(9, tf.uint32)), tf.float32)
    return (k + 0.5) * (2.0**-23)


def stream_bits(
    key: tf.Tensor, first: Any, count: Any, size: int, stream: int, dtype: tf.DType
) -> tf.Tensor:
    """Uniform random integers for samples ``first .. first + count - 1`` of one keyed stream.

    Sample ``i`` occupies counters ``[i * stride, (i + 1) * stride)`` so that it does not depend on
    how samples are grouped into calls.

    Args:
        key: uint64 scalar or ``[1]`` key.
        first: Index of the first sample (scalar int tensor or int).
        count: Number of samples.
        size: Values per sample.
        stream: High counter word, separating independent streams under one key.
        dtype: float32 (gives uint32 bits) or float64 (gives uint64 bits).

    Returns:
        A ``[count, size]`` tensor of uint32 or uint64 values.
    """
    s = stride(size, dtype)
    per = _bits_per_block(dtype)
    lo = tf.cast(first, tf.uint64) * tf.constant(s, tf.uint64)
    counter = tf.stack([lo, tf.constant(stream, tf.uint64)])
    key = tf.reshape(tf.cast(key, tf.uint64), [1])
    shape = tf.stack([tf.cast(count, tf.int32), tf.constant(s * per, tf.int32)])
    full = tf.uint64 if dtype == tf.float64 else tf.uint32
    bits = tf.raw_ops.StatelessRandomUniformFullIntV2(
        shape=shape, key=key, counter=counter, alg=_PHILOX, dtype=full
    )
    return bits[:, :size]


def stream_uniforms(
    key: tf.Tensor, first: Any, count: Any, size: int, stream: int, dtype: tf.DType
) -> tf.Tensor:
    """Uniforms on (0, 1) for samples ``first .. first + count - 1`` of one keyed stream.

    The open-interval map (:func:`bits_to_open_unit`) of :func:`stream_bits`; same arguments.

    Returns:
        A ``[count, size]`` tensor of open-interval uniforms.
    """
    return bits_to_open_unit(stream_bits(key, first, count, size, stream, dtype))


def example_uniforms(
    keys: tf.Tensor, first: Any, count: Any, size: int, dtype: tf.DType
) -> tf.Tensor:
    """Input-noise uniforms for a block of examples: ``[len(keys), count, size]``.

    Args:
        keys: uint64 ``[Bc]`` example keys (from :func:`example_keys`).
        first: Flat index of the first sample.
        count: Number of consecutive samples.
        size: Number of input elements of one example.
        dtype: float32 or float64.

    Returns:
        Uniforms on (0, 1); row ``b`` depends only on ``keys[b]`` and the sample indices.
    """
    return bits_to_open_unit(example_bits(keys, first, count, size, INPUT_STREAM, dtype))


def example_bits(
    keys: tf.Tensor, first: Any, count: Any, size: int, stream: int, dtype: tf.DType
) -> tf.Tensor:
    """:func:`stream_bits` of every example key: ``[len(keys), count, size]`` uint32/uint64."""
    full = tf.uint64 if dtype == tf.float64 else tf.uint32
    if keys.shape[0] == 1:  # one example (a static shape): its stream, without a loop
        return stream_bits(keys[0], first, count, size, stream, dtype)[None]
    return tf.map_fn(
        lambda k: stream_bits(k, first, count, size, stream, dtype),
        keys,
        fn_output_signature=tf.TensorSpec([None, size], full),
        parallel_iterations=16,
    )


@dataclasses.dataclass(frozen=True)
class Sobol:
    """The points of one randomized Sobol stream: ``points`` per replicate, in ``dims`` dims.

    Attributes:
        points: Points per replicate ``m``; draw ``i`` is point ``i % m`` of replicate ``i // m``.
        dims: Values per draw (the example's or the perturbed weights' size).
    """

    points: int
    dims: int

    @property
    def directions(self) -> np.ndarray:
        """Direction numbers ``[bits, min(dims, SOBOL_MAX_DIM)]`` for indices below ``points``."""
        bits = max(1, int(self.points - 1).bit_length())
        return sobol_directions(min(self.dims, SOBOL_MAX_DIM), bits)


@functools.lru_cache(maxsize=16)
def sobol_directions(dims: int, bits: int) -> np.ndarray:
    """The Sobol direction numbers of ``tf.math.sobol_sample`` as 32-bit integers.

    ``tf.math.sobol_sample`` lists the sequence in Gray-code order without the origin: its row
    ``t`` is point ``n = t + 1``, the XOR of the direction numbers ``v_k`` over the set bits of
    ``gray(n) = n ^ (n >> 1)``. Row ``2**(k+1) - 2`` has ``gray = 2**k``, so it is ``v_k``.

    Args:
        dims: Dimensions (at most :data:`SOBOL_MAX_DIM`).
        bits: Number of direction numbers (points ``0 .. 2**bits - 1`` can be built).

    Returns:
        A read-only uint32 array ``[bits, dims]``.
    """
    if not 1 <= dims <= SOBOL_MAX_DIM:
        raise ValueError(f"Sobol dimensions must be in [1, {SOBOL_MAX_DIM}], got {dims}")
    with tf.init_scope():  # eager even when called while tracing
        rows = [
            tf.math.sobol_sample(dims, 1, skip=2 ** (k + 1) - 2, dtype=tf.float64).numpy()[0]
            for k in range(bits)
        ]
    out = np.round(np.stack(rows) * 2.0**32).astype(np.uint32)
    out.setflags(write=False)
    return out


def sobol_bits(index: tf.Tensor, directions: np.ndarray) -> tf.Tensor:
    """Sobol points ``index`` (Gray-code order, point 0 the origin) as 32-bit integers.

    Args:
        index: int ``[n]`` point indices below ``2**len(directions)``.
        directions: uint32 ``[bits, d]`` (see :func:`sobol_directions`).

    Returns:
        uint32 ``[n, d]``: point ``i`` is the XOR of ``directions[k]`` over the set bits ``k``
        of ``i ^ (i >> 1)``; its value as a fraction is the integer times ``2**-32``.
    """
    index = tf.cast(index, tf.int64)
    gray = tf.bitwise.bitwise_xor(index, tf.bitwise.right_shift(index, 1))
    d = tf.constant(directions)
    acc = tf.zeros([tf.shape(index)[0], directions.shape[1]], tf.uint32)
    for k in range(directions.shape[0]):
        on = tf.cast(tf.bitwise.bitwise_and(tf.bitwise.right_shift(gray, k), 1), tf.uint32)
        mask = on * tf.constant(0xFFFFFFFF, tf.uint32)  # all ones where bit k is set
        acc = tf.bitwise.bitwise_xor(acc, tf.bitwise.bitwise_and(d[k][None, :], mask[:, None]))
    return acc


def _sobol_open_unit(points: tf.Tensor, shift: tf.Tensor, size: int) -> tf.Tensor:
    """Digitally shifted Sobol points as open-interval uniforms.

    ``points`` uint32 ``[..., d]`` is repeated along its last axis up to ``size`` values and
    XORed with ``shift`` (uint32 for float32, uint64 for float64, ``[..., size]``): the 32
    Sobol bits go on top, so with uint64 the low 32 bits are the shift's own random bits.
    """
    d = points.shape[-1]
    if d < size:
        reps = -(-size // d)
        points = tf.tile(points, [1] * (len(points.shape) - 1) + [reps])[..., :size]
    if shift.dtype == tf.uint64:
        points = tf.bitwise.left_shift(tf.cast(points, tf.uint64), tf.constant(32, tf.uint64))
    return bits_to_open_unit(tf.bitwise.bitwise_xor(points, shift))


def sobol_uniforms(
    keys: tf.Tensor, first: Any, count: Any, size: int, dtype: tf.DType, sobol: Sobol
) -> tf.Tensor:
    """Input-noise uniforms of randomized Sobol replicates for a block of examples.

    Draw ``i`` is point ``i % m`` of replicate ``i // m`` (``m = sobol.points``), digitally
    shifted by the example's shift bits of that replicate.

    Args:
        keys: uint64 ``[Bc]`` example keys.
        first: Flat index of the first draw.
        count: Number of consecutive draws.
        size: Number of input elements of one example.
        dtype: float32 or float64.
        sobol: The replicate layout (``sobol.dims == size``).

    Returns:
        ``[Bc, count, size]`` uniforms on (0, 1); row ``b`` depends only on ``keys[b]`` and the
        draw indices.
    """
    first = tf.cast(first, tf.int64)
    index = first + tf.range(count, dtype=tf.int64)
    m = tf.constant(sobol.points, tf.int64)
    rep = index // m
    lo = first // m
    # the replicates the draws span; for a Python int count, a static bound (XLA needs
    # static shapes; the extra replicate's shift bits go unused)
    if isinstance(count, int):
        reps = (count + sobol.points - 2) // sobol.points + 1
    else:
        reps = (first + tf.cast(count, tf.int64) - 1) // m - lo + 1
    points = sobol_bits(index % m, sobol.directions)  # [count, d]
    shift = example_bits(keys, lo, reps, size, SOBOL_STREAM, dtype)  # [Bc, reps, size]
    shift = tf.gather(shift, rep - lo, axis=1)
    return _sobol_open_unit(points[None], shift, size)


def weight_noise(
    kernel: Any,
    wkey: tf.Tensor,
    draw: Any,
    sizes: Sequence[int],
    dtype: tf.DType,
    antithetic: bool = False,
    sobol: int | None = None,
) -> list[tf.Tensor]:
    """Standard kernel noise for weight draw ``draw``, split into flat parts of ``sizes``.

    Args:
        kernel: A :class:`tfmollify.core.kernels.Kernel`.
        wkey: uint64 ``[1]`` key (from :func:`weight_key`).
        draw: Weight-draw index ``j``.
        sizes: Number of elements of each perturbed variable, in order.
        dtype: float32 or float64.
        antithetic: Draw ``j`` uses stream index ``j // 2``, with ``1 - u`` for odd ``j``.
        sobol: Points per replicate ``m``: draw ``j`` is Sobol point ``j % m`` of replicate
            ``j // m`` (shift bits from ``wkey``); None for independent draws.

    Returns:
        One flat tensor per variable.
    """
    total = int(sum(sizes))
    if sobol is not None:
        draw = tf.cast(draw, tf.int64)
        layout = Sobol(int(sobol), total)
        points = sobol_bits(tf.reshape(draw % sobol, [1]), layout.directions)
        shift = stream_bits(wkey, draw // sobol, 1, total, SOBOL_STREAM, dtype)
        u = _sobol_open_unit(points, shift, total)[0]
    elif not antithetic:
        u = stream_uniforms(wkey, draw, 1, total, WEIGHT_STREAM, dtype)[0]
    else:
        draw = tf.convert_to_tensor(draw)
        u = stream_uniforms(wkey, draw // 2, 1, total, WEIGHT_STREAM, dtype)[0]
        u = tf.where(tf.equal(draw % 2, 1), 1.0 - u, u)
    return tf.split(kernel.icdf(u), [int(s) for s in sizes])


def antithetic_uniforms(
    keys: tf.Tensor, first: Any, count: Any, size: int, dtype: tf.DType
) -> tf.Tensor:
    """Input-noise uniforms of antithetic pairs for a block of examples: ``[Bc, count, size]``.

    Sample ``i`` takes the uniforms of stream index ``i // 2`` of its example
    (:func:`example_uniforms`), as ``1 - u`` when ``i`` is odd.

    Args:
        keys: uint64 ``[Bc]`` example keys.
        first: Flat index of the first sample.
        count: Number of consecutive samples.
        size: Number of input elements of one example.
        dtype: float32 or float64.

    Returns:
        Uniforms on (0, 1); row ``b`` depends only on ``keys[b]`` and the sample indices.
    """
    first = tf.convert_to_tensor(first)
    index = first + tf.range(count, dtype=first.dtype)
    lo = first // 2
    # the pairs the draws span (static for a Python int count, as XLA needs)
    pairs = count // 2 + 1 if isinstance(count, int) else (first + count - 1) // 2 - lo + 1
    u = example_uniforms(keys, lo, pairs, size, dtype)
    u = tf.gather(u, index // 2 - lo, axis=1)
    odd = tf.equal(index % 2, 1)[None, :, None]
    return tf.where(odd, 1.0 - u, u)


def input_noise(
    kernel: Any,
    seeds: Any,
    first: int,
    count: int,
    size: int,
    dtype: tf.DType = tf.float32,
    antithetic: bool = False,
    sobol: int | None = None,
) -> np.ndarray:
    """The standard input noise an explainer uses, for inspection and testing.

    Args:
        kernel: A :class:`tfmollify.core.kernels.Kernel`.
        seeds: int64 example seeds ``[B]`` (see :func:`example_seeds`).
        first: Flat index of the first sample (``j * N + i`` for FusionGrad).
        count: Number of samples.
        size: Elements per example.
        dtype: float32 or float64.
        antithetic: The noise of ``sampler="antithetic"`` (see :func:`antithetic_uniforms`).
        sobol: Points per replicate ``m`` for ``sampler="sobol"`` (see :func:`sobol_uniforms`).

    Returns:
        A NumPy array ``[B, count, size]`` of draws of the standard kernel; the explainer adds
        ``epsilon_b`` times row ``b``.
    """
    keys = example_keys(tf.constant(np.asarray(seeds, dtype=np.int64)))
    if sobol is not None:
        u = sobol_uniforms(keys, first, count, size, dtype, Sobol(int(sobol), size))
    else:
        draw = antithetic_uniforms if antithetic else example_uniforms
        u = draw(keys, first, count, size, dtype)
    return kernel.icdf(u).numpy()

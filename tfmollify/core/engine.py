"""The compiled Monte Carlo core: SmoothGrad, NoiseGrad and FusionGrad in one ``tf.function``.

For a block of ``Bc`` examples the function evaluates the attribution at noisy inputs and/or
under noisy weights and streams the samples into :mod:`tfmollify.core.aggregation`:

* ``sg``: ``a(x_b + eps_b z_bi)``, ``z_bi`` i.i.d. per input element from the kernel, ``i < N``.
* ``ng``: ``a(x_b; w (1 + weight_eps zeta_j))``, ``zeta_j`` per weight element, ``j < M``.
* ``fg``: ``a(x_b + eps_b z_bji; w (1 + weight_eps zeta_j))``, ``M x N`` samples.

Weights are perturbed functionally with Keras 3 ``stateless_call`` on tensors; the model's
variables are only ever read, so nothing can leave them perturbed. A ``tf.while_loop`` over weight
draws and over chunks of at most ``chunk`` input draws (``parallel_iterations=1``) bounds the
evaluations in flight (the loop layout comes from :mod:`tfmollify.core.plan`), and aggregation is
streamed, so the memory of the evaluations does not grow with ``N`` or ``M``.
Without a memory bound (``Plan.pipeline=2``) two weight draws overlap, which keeps both CPU cores
busy on small models; the merge order, and so the result, is the same.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import tensorflow as tf

from tfmollify.core import aggregation, attribution, modes, sampling
from tfmollify.core.inputs import unpack_rows
from tfmollify.core.kernels import Kernel
from tfmollify.core.plan import Layout

__all__ = [
    "CoreSpec", "build", "caches_input_noise", "exact_factors", "factor_offsets",
    "input_noise_table", "noise_span", "probe_shapes", "weight_factor_table", "weight_noise_table",
]


class Network(Protocol):
    """What the engine needs of a network: the adapter's ``ModelView`` offers it for a Keras model.

    The engine reads no Keras model itself; anything with these members can be explained.
    """

    noise_layer: Any  # the layer whose output gets the input noise, or None (the inputs)
    attribute_layer: Any  # the layer whose activation is attributed, or None (the inputs)
    trainable: list  # the network's trainable variables
    weight_selection: Any  # which of them get weight noise (indices), or None for all

    def weight_sizes(self) -> list[int]:
        """The number of values of each noised weight."""

    def weight_dtype(self) -> Any:
        """The dtype of the noised weights."""

    def input_dtype(self, compute: Any) -> Any:
        """The dtype the network's inputs are cast to, for a compute dtype."""

    def intercept(self, hooks: Any) -> contextlib.AbstractContextManager[Any]:
        """While open, the layers named in ``hooks`` call their hook on their output."""

    def forward(self, inputs: Any, weights: Any, groups: Any = None) -> Any:
        """The network's scores on ``inputs``, with ``weights`` in place of its own (or None).

        ``groups=(k, inner, copies)``: ``k`` weight draws share the pass; the perturbed
        weights carry a leading axis of ``k`` and the rows are laid out ``[S, k, inner]``;
        ``copies``: the ``k`` groups' rows are the same."""

    def activation(self, inputs: Any, layer: Any) -> Any:
        """The output of ``layer`` on ``inputs``."""


class _OwnRetracingFilter(logging.Filter):
    """Drops TensorFlow's "frequent retracing" warning about tfmollify's own core function.

    Every explainer compiles its own core once per input signature (and the functions that draw
    its weight-noise and input-noise tables once); TensorFlow counts the traces of all of them
    together (they share one code object) and would warn about creating functions in a loop.
    Warnings about the user's own functions pass through.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("triggered tf.function retracing" in msg and "tfmollify_core" in msg)


tf.get_logger().addFilter(_OwnRetracingFilter())


@dataclasses.dataclass(frozen=True)
class CoreSpec:
    """Static configuration of one compiled explainer core.

    Attributes:
        mode: The :class:`~tfmollify.core.modes.Mode`.
        kernel: Noise kernel for inputs and weights.
        layout: The loops over input and weight draws (:class:`tfmollify.core.plan.Layout`).
        aggregation: One of :data:`tfmollify.core.aggregation.AGGREGATIONS`.
        attribution: One of :data:`tfmollify.core.attribution.ATTRIBUTIONS`.
        ig_steps: Quadrature points for integrated gradients.
        ig_baseline: Integrated-gradients baseline (broadcastable to one example).
        input_shape: Shape of one example.
        compute_dtype: float32 or float64.
        weight_epsilon: Relative weight-noise scale.
        jit_compile: Compile with XLA.
        with_stderr: Compute standard errors (a few more operations per sample).
        proposal: Draw input noise from this kernel instead and reweight (Theorem 3.11).
        proposal_scale: The proposal's scale relative to ``epsilon``.
        cached_weight_noise: The weight factors of all ``M`` draws are passed in (``wnoise``,
            see :func:`weight_factor_table`) instead of drawn in the graph.
        cached_input_noise: The standard input noise of every input draw is passed in
            (``xnoise``, see :func:`input_noise_table`) instead of drawn in the graph.
        pipeline: Weight draws whose evaluations may run concurrently (``parallel_iterations``
            of the loop over draws); 1 keeps the memory bound of ``chunk`` exact.
        parts: For a model with several inputs: the float inputs are packed, flattened and
            concatenated, into one row of ``input_shape = (D,)`` per example, the integer
            inputs into an int64 row ``ints [Bc, I]`` (never perturbed), and ``parts`` says how
            to unpack them: ``(key, shape, dtype)`` per input, with ``key`` an int (a list of
            inputs) or a str (a dict). ``eps`` is then ``[Bc, K]``, one scale per float input.
            None: one input of ``input_shape`` (``ints`` is ``[Bc, 0]``).
        method: A base method of the user's, ``method(score_fn, x) -> a`` (None: the
            built-in ``attribution``).
        output_shape: Shape of one example's attribution (None: ``input_shape``): the
            ``attribute_at`` layer's output shape, its positions for Grad-CAM, or what a
            method of the user's returns.
        noise_shape: With ``noise_at`` a layer (``view.noise_layer``): the shape of one
            example of its output, where the input noise goes (``eps`` is then ``[Bc]``).
        elementwise_eps: ``eps`` is ``[Bc, D]``, one scale per input element (``input_range``).
        sampler: ``"iid"``, ``"antithetic"`` (pairs ``z``, ``-z`` of input draws and of
            weight draws) or ``"sobol"`` (randomized Sobol points; see
            :mod:`tfmollify.core.sampling`).
        replicates: With ``sampler="sobol"``: independent randomizations ``R``. ``sg``: the
            ``N`` input draws are ``R`` replicates of ``N / R`` points; ``ng``/``fg``: the
            ``M`` weight draws are ``R`` replicates of ``M / R`` points, and the ``N`` input
            draws under weight draw ``j`` are a replicate of their own. The standard error
            runs over the ``R`` replicates.
    """

    mode: modes.Mode
    kernel: Kernel
    layout: Layout
    aggregation: str
    attribution: str
    ig_steps: int
    ig_baseline: Any
    input_shape: tuple[int, ...]
    compute_dtype: tf.DType
    weight_epsilon: float
    jit_compile: bool = False
    with_stderr: bool = True
    proposal: Kernel | None = None
    proposal_scale: float = 1.0
    cached_weight_noise: bool = False
    cached_input_noise: bool = False
    pipeline: int = 1
    parts: tuple[tuple[Any, tuple[int, ...], str], ...] | None = None
    sampler: str = "iid"
    replicates: int = 1
    method: Any = None
    output_shape: tuple[int, ...] | None = None
    noise_shape: tuple[int, ...] | None = None
    elementwise_eps: bool = False

    @property
    def attribution_shape(self) -> tuple[int, ...]:
        """Shape of one example's attribution."""
        return self.input_shape if self.output_shape is None else self.output_shape


def _while(cond: Callable, body: Callable, loop_vars: tuple, parallel_iterations: int) -> Any:
    """``tf.while_loop`` whose variables keep the static shapes they enter with (a trace for
    one example has static shapes that the merges inside would otherwise loosen)."""
    shapes = [t.shape for t in tf.nest.flatten(loop_vars)]

    def kept(*args):
        out = body(*args)
        for t, shape in zip(tf.nest.flatten(out), shapes, strict=True):
            t.set_shape(shape)
        return out

    return tf.while_loop(cond, kept, loop_vars, parallel_iterations=parallel_iterations)


def _select(scores: Any, targets: tf.Tensor, target_fn: Callable | None) -> tf.Tensor:
    """The target scores ``[m]``, or ``[m, K]`` for a callable target with ``K > 1`` scores
    per row (each attributed on its own, sharing the forward pass)."""
    if target_fn is not None:
        out = target_fn(scores)
        width = out.shape[-1] if out.shape.rank == 2 else None
        return out if width is not None and width > 1 else tf.reshape(out, [-1])
    scores = tf.reshape(scores, [tf.shape(scores)[0], -1])
    # each row's own element: the same values as a batched gather, whose gradient traces
    # several times as many ops (a one-hot product would turn another class's Inf into NaN)
    rows = tf.range(tf.shape(scores)[0], dtype=targets.dtype)
    return tf.gather_nd(scores, tf.stack([rows, targets], axis=1))


def weight_noise_table(
    view: Network, kernel: Kernel, wkey: Any, draws: int,
    antithetic: bool = False, sobol: int | None = None,
) -> tf.Tensor:
    """The standard weight noise of draws ``0 .. draws - 1``, one row ``[P]`` per draw.

    The same values the engine draws in the graph (:func:`tfmollify.core.sampling.weight_noise`),
    for explainers that reuse them across calls (``sobol``: points per Sobol replicate).
    """
    sizes, dtype = view.weight_sizes(), view.weight_dtype()

    def tfmollify_core_weight_noise(j):  # named: the retracing filter knows it as our own
        return tf.concat(
            sampling.weight_noise(kernel, wkey, j, sizes, dtype, antithetic, sobol), axis=0
        )

    table = tf.function(tfmollify_core_weight_noise, autograph=False)
    return tf.stack([table(tf.constant(j)) for j in range(draws)])


def caches_input_noise(spec: CoreSpec) -> bool:
    """Whether a core of ``spec`` can take its input noise in (``cached_input_noise``): input
    noise without a proposal, and every pass holding all the samples of its weight draw (one
    run of draws per example: :func:`noise_span` of them)."""
    lay = spec.layout
    return (spec.mode.input_noise and spec.proposal is None and lay.whole_draws
            and not lay.split_units)


def noise_span(spec: CoreSpec) -> int:
    """The input draws per example a core of ``spec`` reads (with :func:`caches_input_noise`):
    ``N`` for each weight draw slot (the ``K``-draw passes' padding draws included)."""
    lay = spec.layout
    return lay.n_in if not spec.mode.weight_noise else lay.n_in * lay.draw_groups * lay.draws


def input_noise_table(view: Network, spec: CoreSpec) -> Callable:
    """A compiled function ``seeds int64 [B] -> [B, span, Dn]``: the standard input noise of
    the examples of ``seeds`` (:func:`noise_span` draws each, ``Dn`` the rows' or the noise
    layer's size), the same values a core of ``spec`` draws in the graph; a core with
    ``cached_input_noise`` takes them in (``xnoise``) for explainers that reuse them across
    calls."""
    core, span = _Core(view, spec, None), noise_span(spec)

    def tfmollify_core_input_noise(seeds):  # named: the retracing filter knows it as our own
        return core.standard_noise(sampling.example_keys(seeds), 0, span)[0]

    return tf.function(tfmollify_core_input_noise, autograph=False,
                       input_signature=[tf.TensorSpec([None], tf.int64)])


#: Elements each variable's block of the factor table is padded to a multiple of (64 bytes of
#: float32): the blocks then start on aligned addresses, where TensorFlow slices without a copy
FACTOR_ALIGN = 16


def factor_offsets(sizes: list[int], draws: int) -> list[int]:
    """Where each variable's block ``[draws, size]`` starts in the factor table, and (last) the
    table's length: each block padded to a multiple of :data:`FACTOR_ALIGN`.

    Example:

    >>> factor_offsets([3, 20], 2)
    [0, 16, 64]
    """
    out = [0]
    for size in sizes:
        out.append(out[-1] + -(-draws * size // FACTOR_ALIGN) * FACTOR_ALIGN)
    return out


def weight_factor_table(
    view: Network, kernel: Kernel, wkey: Any, draws: int, epsilon: float,
    antithetic: bool = False, sobol: int | None = None,
) -> tf.Tensor:
    """The factors ``1 + epsilon zeta`` of draws ``0 .. draws - 1`` that multiply the perturbed
    weights, as the core takes them in (``wnoise``, with ``cached_weight_noise``).

    One flat table: for each perturbed variable in order, its factors ``[draws, *shape]``
    (computed in the variable's dtype, as the core computes them from :func:`weight_noise_table`
    in the graph), flattened and padded (:func:`factor_offsets`). Per call the core then only
    multiplies: no gather, split or scaling of the noise (the table is read once).
    """
    noise = weight_noise_table(view, kernel, wkey, draws, antithetic, sobol)
    sizes, dtype = view.weight_sizes(), view.weight_dtype()
    offsets = factor_offsets(sizes, draws)
    blocks = []
    parts = tf.split(noise, sizes, axis=1)
    for i, (part, v) in enumerate(zip(parts, _selected(view), strict=True)):
        vd = tf.as_dtype(v.dtype)
        factor = 1.0 + tf.constant(epsilon, vd) * tf.cast(part, vd)
        flat = tf.cast(tf.reshape(factor, [-1]), dtype)
        blocks += [flat, tf.zeros([offsets[i + 1] - offsets[i] - draws * sizes[i]], dtype)]
    return tf.concat(blocks, 0)


def exact_factors(view: Network) -> bool:
    """Whether :func:`weight_factor_table`'s dtype holds every perturbed variable's factors
    exactly (no variable wider than it)."""
    size = view.weight_dtype().size
    return all(tf.as_dtype(v.dtype).size <= size for v in _selected(view))


def _selected(view: Network) -> list[Any]:
    """The trainable variables that get weight noise."""
    sel = view.weight_selection
    return list(view.trainable) if sel is None else [view.trainable[i] for i in sel]


@dataclasses.dataclass(frozen=True)
class _Block:
    """The tensors of one block of examples inside the trace."""

    x: tf.Tensor  # [Bc, *shape] rows (float)
    ints: tf.Tensor  # [Bc, I] int64 rows of the integer inputs
    targets: tf.Tensor  # [Bc] class indices
    eps: tf.Tensor  # [Bc] or [Bc, K] input-noise scales
    keys: tf.Tensor  # [Bc] Philox keys
    offsets: Any = None  # [K] input-draw offsets of the K row groups (several weight draws)
    table: Any = None  # [Bc, span, Dn] the examples' standard input noise, if passed in

    @property
    def size(self) -> tf.Tensor:
        return tf.shape(self.x)[0]

    def tiled(self, k: int) -> _Block:
        """The block's rows ``k`` times over, group after group (``k`` weight draws)."""
        rep = lambda t: tf.tile(t, [k] + [1] * (t.shape.rank - 1))  # noqa: E731
        return _Block(rep(self.x), rep(self.ints), rep(self.targets), rep(self.eps),
                      rep(self.keys), table=self.table)  # the table by example, not tiled


class _WeightDraws:
    """The compiled core's loops over the weight draws (NoiseGrad, FusionGrad): one draw per
    pass (:meth:`weight_units`) or ``K`` draws per pass (:meth:`weight_groups`)."""

    def weight_units(self, state, blk: _Block, wkey, wnoise):
        """NoiseGrad/FusionGrad: the weight draws, one unit per draw or group of draws."""
        lay, with_stderr = self.lay, self.spec.with_stderr

        def outer(j, st):
            weights = self.perturbed_weights(j, wkey, wnoise)
            if lay.n_in == 1:  # NoiseGrad: one sample per weight draw is its own unit
                return j + 1, self.chunk_loop(st, blk, j, weights, True)
            unit = self.unit(blk, j * lay.n_in, weights)
            return j + 1, aggregation.merge_unit(st, unit, with_stderr)

        def one_draw(j, unit):
            weights = self.perturbed_weights(j, wkey, wnoise)
            return j + 1, self.chunk_loop(unit, blk, j * lay.n_in, weights, False)

        def outer_group(g, st):
            """Weight draws ``g * w_unit ..`` (an antithetic pair, a Sobol replicate)."""
            unit = aggregation.init_state(blk.size, self.out_size, self.dtype)
            # one draw after the other (an unrolled pair would run both draws' passes at once,
            # twice the `batch_size` bound); the outer loop already overlaps draws when unbounded
            _, unit = _while(
                lambda j, u: j < (g + 1) * lay.w_unit, one_draw, (g * lay.w_unit, unit),
                parallel_iterations=1,
            )
            return g + 1, aggregation.merge_unit(st, unit, with_stderr)

        _, state = _while(
            lambda g, st: g < lay.n_w // lay.w_unit,
            outer if lay.w_unit == 1 else outer_group,
            (tf.constant(0), state),
            parallel_iterations=self.spec.pipeline,
        )
        return state

    def group_weights(self, j0, wkey, wnoise) -> list:
        """The trainable weights under draws ``j0 .. j0 + K - 1``: the perturbed ones with a
        leading axis of ``K`` (a padding draw past the last repeats it; its samples are masked
        out), each exactly as :meth:`perturbed_weights` gives it for its draw."""
        k, last = self.draws, self.lay.n_w - 1
        js = [tf.minimum(j0 + i, last) for i in range(k)]
        out = [v.value for v in self.trainable]
        if self.spec.cached_weight_noise:
            for i, block in zip(self.selected, self.factor_blocks(wnoise), strict=True):
                if k == self.lay.n_w:  # every draw in this pass: the whole block
                    rows = block
                elif self.lay.n_w % k == 0:  # no padding draw: k consecutive rows
                    rows = block[j0:j0 + k]
                else:
                    rows = tf.gather(block, tf.stack(js))
                out[i] = out[i][None] * tf.cast(rows, out[i].dtype)
            return out
        if self.spec.jit_compile:  # XLA: k copies (its loops need static shapes)
            rows = tf.stack([tf.concat(sampling.weight_noise(
                self.spec.kernel, wkey, j, self.sizes, self.w_dtype, self.antithetic,
                self.sobol_w), axis=0) for j in js])
        else:  # a loop over the draws, not k copies of the graph (tracing time)
            rows = tf.map_fn(lambda j: tf.concat(sampling.weight_noise(
                self.spec.kernel, wkey, j, self.sizes, self.w_dtype, self.antithetic,
                self.sobol_w), axis=0), tf.stack(js), fn_output_signature=self.w_dtype)
        parts = tf.split(rows, self.sizes, axis=1)
        for i, part in zip(self.selected, parts, strict=True):
            val = out[i]
            noise = tf.cast(tf.reshape(part, [k, *self.trainable[i].shape]), val.dtype)
            out[i] = val[None] * (1.0 + tf.constant(self.spec.weight_epsilon, val.dtype) * noise)
        return out

    def factor_blocks(self, wnoise: tf.Tensor) -> list[tf.Tensor]:
        """Each perturbed variable's factors ``[M, *shape]`` in the cached table
        (:func:`weight_factor_table`): slices of it, without a copy."""
        m = self.lay.n_w
        at = factor_offsets(self.sizes, m)
        return [
            tf.reshape(wnoise[at[n]:at[n] + m * size], [m, *self.trainable[i].shape])
            for n, (i, size) in enumerate(zip(self.selected, self.sizes, strict=True))
        ]

    def weight_groups(self, state, blk: _Block, wkey, wnoise):
        """NoiseGrad/FusionGrad with ``K`` weight draws per pass: the block's rows ``K`` times
        over, group ``k`` under draw ``j0 + k``; the draws are merged in their order, as
        :meth:`weight_units` merges them (the same estimator)."""
        lay, k, with_stderr = self.lay, self.draws, self.spec.with_stderr
        bc = blk.size
        tiled = blk.tiled(k)

        def body(g, st):
            j0 = g * k
            weights = self.group_weights(j0, wkey, wnoise)
            inside = tf.cast(j0 + tf.range(k) < lay.n_w, self.dtype)  # padding draws: 0
            if lay.n_in == 1:  # each draw's one sample is its own unit (FG: input draw j)
                a = self.samples(dataclasses.replace(tiled, offsets=j0 + tf.range(k)), 0, 1,
                                 weights)
                a = tf.transpose(tf.reshape(a, [k, bc, self.out_size]), [1, 0, 2])
                vals, mask = aggregation.clean(a)
                mask = mask * inside[None, :]
                st = aggregation.merge_chunk(
                    st, vals * inside[None, :, None], mask, True, with_stderr,
                    with_m2=self.agg_name != "smoothgrad",
                )
                return g + 1, st
            grouped = dataclasses.replace(tiled, offsets=(j0 + tf.range(k)) * lay.n_in)
            units = aggregation.init_state(k * bc, self.out_size, self.dtype)
            units = self.chunk_loop(units, grouped, 0, weights, False)

            per_draw = [tf.reshape(t, tf.concat([[k, bc], tf.shape(t)[1:]], 0)) for t in units]

            def close(i, st):  # each draw's unit, in draw order (padding draws: empty)
                unit = aggregation.State(*[tf.gather(t, i) * tf.cast(inside[i], t.dtype)
                                           for t in per_draw])
                return i + 1, aggregation.merge_unit(st, unit, with_stderr)

            _, st = _while(lambda i, st: i < k, close, (tf.constant(0), st),
                                  parallel_iterations=1)
            return g + 1, st

        if lay.draw_groups == 1:  # every draw in one pass: no loop (a scope, as in a loop:
            with tf.name_scope("draws"):  # a layer named "__x" is no valid root scope)
                return body(tf.constant(0), state)[1]
        _, state = _while(
            lambda g, st: g < lay.draw_groups, body, (tf.constant(0), state),
            parallel_iterations=self.spec.pipeline,
        )
        return state


class _Core(_WeightDraws):
    """The traced computation, one named helper per step (see :func:`build`)."""

    def __init__(self, view: Network, spec: CoreSpec, target_fn: Callable | None) -> None:
        self.view, self.spec, self.target_fn = view, spec, target_fn
        self.lay = spec.layout
        self.dtype = spec.compute_dtype
        self.size = int(np.prod(spec.input_shape, dtype=np.int64))
        self.shape = list(spec.input_shape)
        self.out_size = int(np.prod(spec.attribution_shape, dtype=np.int64))
        # where the noise goes: the input rows, or a layer's output (noise_shape)
        self.noise_shape = None if spec.noise_shape is None else list(spec.noise_shape)
        self.noise_size = (
            self.size if spec.noise_shape is None
            else int(np.prod(spec.noise_shape, dtype=np.int64))
        )
        lay = self.lay
        self.antithetic = spec.sampler == "antithetic"
        sobol = spec.sampler == "sobol"
        self.sobol_w = lay.w_unit if sobol else None
        self.sobol_in = (
            sampling.Sobol(lay.n_in // spec.replicates if spec.mode.only_input_noise else lay.n_in,
                           self.noise_size)
            if sobol and spec.mode.input_noise
            else None
        )
        at_layer = view.attribute_layer is not None
        self.one_pass = (  # a function of the point and the gradient there: one pass
            spec.method is None and at_layer and spec.attribution in attribution.FROM_GRADIENT
        )
        self.method = (
            spec.method if spec.method is not None
            else None if self.one_pass
            else attribution.make(spec.attribution, spec.ig_steps, spec.ig_baseline)
        )
        self.input_noise = spec.mode.input_noise
        self.weight_noise = spec.mode.weight_noise
        # the weight draws' row groups are the same: no input noise, a built-in method
        self.copies = not self.input_noise and spec.method is None
        self.proposal = spec.proposal if self.input_noise else None
        # importance-weighted samples are plain means of w*a (or w*a^2)
        self.agg_name = spec.aggregation if self.proposal is None else "smoothgrad"
        self.model_dtype = view.input_dtype(self.dtype) if spec.parts is None else None
        if spec.parts is not None:
            self.part_sizes = [
                int(np.prod(shape, dtype=np.int64))
                for _, shape, dtype in spec.parts
                if not tf.as_dtype(dtype).is_integer
            ]
            assert sum(self.part_sizes) == self.size, (self.part_sizes, self.size)
        self.draws = lay.draws if spec.mode.weight_noise else 1
        if self.weight_noise:
            self.trainable = view.trainable
            sel = view.weight_selection
            self.selected = list(range(len(self.trainable))) if sel is None else list(sel)
            self.sizes = view.weight_sizes()
            self.w_dtype = view.weight_dtype()

    def unpack(self, flat: tf.Tensor, ints: tf.Tensor) -> Any:
        """Model inputs from rows ``[n, D]`` and ``[n, I]`` (the identity for one input)."""
        if self.spec.parts is None:
            return tf.cast(flat, self.model_dtype)
        return unpack_rows(flat, ints, self.spec.parts)

    def perturbed_weights(self, j: tf.Tensor, wkey: tf.Tensor, wnoise: tf.Tensor) -> list:
        """The trainable weights under weight draw ``j``: ``w (1 + weight_eps zeta_j)`` (the
        factors from the cached table, else drawn here)."""
        out = [v.value for v in self.trainable]
        if self.spec.cached_weight_noise:
            for i, block in zip(self.selected, self.factor_blocks(wnoise), strict=True):
                out[i] = out[i] * tf.cast(block[j], out[i].dtype)
            return out
        parts = sampling.weight_noise(
            self.spec.kernel, wkey, j, self.sizes, self.w_dtype, self.antithetic, self.sobol_w
        )
        for i, part in zip(self.selected, parts, strict=True):
            val = out[i]
            noise = tf.cast(tf.reshape(part, self.trainable[i].shape), val.dtype)
            out[i] = val * (1.0 + tf.constant(self.spec.weight_epsilon, val.dtype) * noise)
        return out

    def block_noise(self, blk: _Block, first, count):
        """:meth:`noise` for a block; with row groups (several weight draws), group ``k``'s
        draws start at ``blk.offsets[k] + first``, as they would in their own pass."""
        if blk.offsets is None:
            return self.noise(blk.eps, blk.keys, first, count, blk.table)
        k = self.draws
        bc = tf.shape(blk.keys)[0] // k
        eps = tf.reshape(blk.eps, tf.concat([[k, bc], tf.shape(blk.eps)[1:]], 0))
        keys = tf.reshape(blk.keys, [k, bc])
        if self.lay.whole_draws:
            # each group's pass holds all its draw's samples: the k groups' input draws are one
            # run of consecutive indices, drawn in one go (the same values, no loop)
            t, log_w = self.noise(eps[0], keys[0], blk.offsets[0] + first, k * count, blk.table)

            def by_group(v):  # [bc, k * count, ...] -> [k * bc, count, ...]
                v = tf.reshape(v, tf.concat([[bc, k, count], tf.shape(v)[2:]], 0))
                v = tf.transpose(v, [1, 0, *range(2, v.shape.rank)])
                return tf.reshape(v, tf.concat([[k * bc, count], tf.shape(v)[3:]], 0))

            return by_group(t), None if log_w is None else by_group(log_w[..., None])[..., 0]

        def one(args):  # a loop over the groups, not k copies of the graph (tracing time)
            e, ky, off = args
            t, log_w = self.noise(e, ky, off + first, count, blk.table)
            return t if log_w is None else (t, log_w)

        if self.spec.jit_compile:  # XLA: k copies (its loops need static shapes)
            parts = [self.noise(eps[i], keys[i], blk.offsets[i] + first, count, blk.table)
                     for i in range(k)]
            t = tf.concat([p[0] for p in parts], axis=0)
            return t, None if parts[0][1] is None else tf.concat([p[1] for p in parts], 0)
        if self.proposal is None:
            t = tf.map_fn(one, (eps, keys, blk.offsets), fn_output_signature=self.dtype)
            log_w = None
        else:
            t, log_w = tf.map_fn(one, (eps, keys, blk.offsets),
                                 fn_output_signature=(self.dtype, self.dtype))
            log_w = tf.reshape(log_w, tf.concat([[k * bc], tf.shape(log_w)[2:]], 0))
        return tf.reshape(t, tf.concat([[k * bc], tf.shape(t)[2:]], 0)), log_w

    def noise(self, eps, keys, first, count, table=None):
        """The scaled noise ``[Bc, count, Dn]`` of flat input-draw indices ``first..`` (``Dn``:
        the input rows' or the noise layer's size), and the log importance weights
        ``[Bc, count]`` (None without a proposal); from the examples' ``table`` of standard
        noise when it is passed in."""
        if table is None:
            z, log_w = self.standard_noise(keys, first, count)
        else:  # the same draws, made before the call (never with a proposal)
            z, log_w = tf.slice(table, tf.stack([0, first, 0]), [-1, count, -1]), None
        if self.spec.elementwise_eps:  # one scale per element (input_range)
            scale = eps[:, None, :]
        elif self.spec.parts is None or self.noise_shape is not None:
            scale = eps[:, None, None]
        else:  # per-input scales spread over the packed row
            scale = tf.repeat(eps, self.part_sizes, axis=1)[:, None, :]
        return scale * z, log_w

    def standard_noise(self, keys, first, count):
        """The standard noise ``z [Bc, count, Dn]`` of flat input-draw indices ``first..`` and
        the log importance weights (see :meth:`noise`)."""
        dtype, size, kernel = self.dtype, self.noise_size, self.spec.kernel
        if self.sobol_in is not None:
            u = sampling.sobol_uniforms(keys, first, count, size, dtype, self.sobol_in)
        else:
            draw = sampling.antithetic_uniforms if self.antithetic else sampling.example_uniforms
            u = draw(keys, first, count, size, dtype)
        log_w = None
        if self.proposal is None:
            z = kernel.icdf(u)
        else:  # t = eps * ratio * z, z ~ p; weight phi_eps(t) / p_eps(t) in log space
            ratio = tf.constant(self.spec.proposal_scale, dtype)
            zp = self.proposal.icdf(u)
            z = ratio * zp
            log_w = tf.reduce_sum(kernel.log_pdf(z) - self.proposal.log_pdf(zp), axis=2)
            log_w += size * tf.math.log(ratio)
        return z, log_w

    def score(self, inp, rows, blk: _Block, weights, hooks) -> tf.Tensor:
        """The target scores ``[m]`` at rows ``inp [m, ...]``; ``m`` is a multiple ``k n`` of
        the ``n`` rows of ``rows`` (the examples they belong to), as in a method's path."""
        n = tf.shape(rows)[0]
        r = tf.tile(rows, [tf.shape(inp)[0] // n])
        groups = (None if self.draws == 1 or weights is None
                  else (self.draws, n // self.draws, self.copies))
        with self.view.intercept(hooks):
            out = self.view.forward(self.unpack(inp, tf.gather(blk.ints, r)), weights, groups)
        return tf.cast(_select(out, tf.gather(blk.targets, r), self.target_fn), self.dtype)

    def layer_noise_hook(self, t: tf.Tensor) -> tuple:
        """Adds the noise ``t [n, *noise_shape]`` to the noise layer's output (tiled over the
        ``k n`` rows of a path)."""
        layer = self.view.noise_layer

        def add(h):
            reps = tf.shape(h)[0] // tf.shape(t)[0]
            return h + tf.cast(tf.tile(t, [reps] + [1] * (t.shape.rank - 1)), h.dtype)

        return layer, add

    def attribute(self, xs, rows, blk: _Block, weights, layer_noise) -> tf.Tensor:
        """The base method at rows ``xs [n, ...]`` (noisy, or clean with the noise at a
        layer): ``[n, *attribution_shape]``."""
        hooks = {}
        if layer_noise is not None:
            layer, add = self.layer_noise_hook(layer_noise)
            hooks[id(layer)] = (layer, add)
        at = self.view.attribute_layer
        if at is None:  # with respect to the inputs
            a = self.method(lambda inp: self.score(inp, rows, blk, weights, hooks), xs)
            return tf.cast(a, self.dtype)
        if self.one_pass:  # the layer's output and the gradient there, in one pass
            box = []
            tape = tf.GradientTape()

            def watch(h):
                tape.watch(h)
                box.append(h)
                return h

            inner = hooks.get(id(at))
            hooks[id(at)] = (at, watch if inner is None else (lambda h: watch(inner[1](h))))
            with tape:
                score = self.score(xs, rows, blk, weights, hooks)
            h = box[0]
            zero = tf.UnconnectedGradients.ZERO
            if score.shape.rank == 2:  # K scores per row: K gradients, one forward pass
                g = tape.batch_jacobian(score, h, unconnected_gradients=zero)
                h = h[:, None]  # [m, 1, ...] against the gradients [m, K, ...]
            else:
                g = tape.gradient(score, h, unconnected_gradients=zero)
            h, g = tf.cast(h, self.dtype), tf.cast(g, self.dtype)
            return attribution.from_gradient(self.spec.attribution, h, g)
        # a method over the layer's output: its value here, then the scores as a function of it
        h0 = tf.cast(self.view.activation(self.unpack(xs, tf.gather(blk.ints, rows)), at,
                                          hooks), self.dtype)

        def score_at(a):
            m = tf.shape(a)[0]
            reps = m // tf.shape(xs)[0]
            tiled = tf.tile(xs, [reps] + [1] * (xs.shape.rank - 1))
            own = dict(hooks)
            own[id(at)] = (at, lambda h: tf.cast(a, h.dtype))
            return self.score(tiled, rows, blk, weights, own)

        return tf.cast(self.method(score_at, h0), self.dtype)

    def samples(self, blk: _Block, first, count, weights):
        """Attribution samples ``[Bc, count, Da]`` for flat input-draw indices ``first..``."""
        bc = blk.size
        flat = tf.reshape(tf.cast(blk.x, self.dtype), [bc, self.size])
        log_w, layer_noise = None, None
        if not self.input_noise:
            noisy = flat[:, None, :]
        elif self.noise_shape is None:
            t, log_w = self.block_noise(blk, first, count)
            noisy = flat[:, None, :] + t
        else:  # clean rows; the noise goes on the layer's output
            t, log_w = self.block_noise(blk, first, count)
            noisy = tf.repeat(flat[:, None, :], count, axis=1)
            layer_noise = tf.reshape(t, [-1, *self.noise_shape])
        xs = tf.reshape(noisy, [-1, *self.shape])
        rows = tf.repeat(tf.range(bc), count)  # the example of every row
        a = self.attribute(xs, rows, blk, weights, layer_noise)
        a = tf.reshape(a, [bc, count, self.out_size])
        if log_w is not None:  # importance-weighted samples of a (or a^2), averaged plainly
            if self.spec.aggregation == "smoothgrad_sq":
                a = tf.square(a)
            a = tf.exp(log_w)[:, :, None] * a
        return a

    def chunk_loop(self, state, blk: _Block, base, weights, units_are_samples):
        """The passes over one run of ``n_loop`` input draws, merged into ``state``."""
        lay, chunk = self.lay, self.lay.chunk

        def body(k, st):
            first = k * chunk
            vals, mask = aggregation.clean(self.samples(blk, base + first, chunk, weights))
            if lay.padded:  # mask the padding draws of the last chunk
                inside = tf.cast(first + tf.range(chunk) < lay.n_loop, mask.dtype)
                mask = mask * inside[None, :]
                vals = vals * inside[None, :, None]
            st = aggregation.merge_chunk(
                st, vals, mask, units_are_samples, self.spec.with_stderr,
                with_m2=self.agg_name != "smoothgrad",
                unit_size=lay.in_unit if units_are_samples else 1,
            )
            return k + 1, st

        if lay.n_chunks == 1:  # no loop: fewer ops per weight draw
            return body(tf.constant(0), state)[1]
        _, state = _while(
            lambda k, st: k < lay.n_chunks, body, (tf.constant(0), state), parallel_iterations=1
        )
        return state

    def unit(self, blk: _Block, base, weights):
        """One unit of the standard error whose draws span whole runs of the chunk loop."""
        unit = aggregation.init_state(blk.size, self.out_size, self.dtype)
        return self.chunk_loop(unit, blk, base, weights, False)

    def input_units(self, state, blk: _Block):
        """SmoothGrad: the input draws, unit by unit when a unit is longer than a pass."""
        lay, with_stderr = self.lay, self.spec.with_stderr
        if not lay.split_units:
            return self.chunk_loop(state, blk, 0, None, True)

        def replicate(r, st):
            """A Sobol replicate longer than a pass: its chunks, then one unit."""
            unit = self.unit(blk, r * lay.in_unit, None)
            return r + 1, aggregation.merge_unit(st, unit, with_stderr)

        _, state = _while(
            lambda r, st: r < lay.n_in // lay.in_unit, replicate, (tf.constant(0), state),
            parallel_iterations=1,
        )
        return state

    def __call__(self, x, ints, targets, eps, seeds, wkey, wnoise, xnoise):
        lay, with_stderr = self.lay, self.spec.with_stderr
        table = None
        if self.spec.cached_input_noise:
            table = tf.ensure_shape(xnoise, [x.shape[0], noise_span(self.spec), self.noise_size])
        blk = _Block(x, ints, targets, tf.cast(eps, self.dtype), sampling.example_keys(seeds),
                     table=table)
        if not self.weight_noise and lay.n_chunks == 1 and lay.in_unit == 1:
            # every sample of the block in one pass: aggregate directly
            vals, mask = aggregation.clean(self.samples(blk, 0, lay.n_in, None))
            value, stderr = aggregation.one_shot(vals, mask, self.agg_name, with_stderr)
            finite = tf.reduce_sum(mask, axis=1)
        else:
            state = aggregation.init_state(blk.size, self.out_size, self.dtype)
            if self.draws > 1:
                state = self.weight_groups(state, blk, wkey, wnoise)
            elif self.weight_noise:
                state = self.weight_units(state, blk, wkey, wnoise)
            else:
                state = self.input_units(state, blk)
            value, stderr = aggregation.finalize(state, self.agg_name, with_stderr)
            finite = state.n
        if stderr is None:
            stderr = tf.zeros([0], self.dtype)
        return value, stderr, finite


def probe_shapes(
    view: Network, spec: CoreSpec, int_size: int, target_fn: Callable | None = None
) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None, tuple[int, ...]]:
    """Traces (without running) one noise-free sample to learn the static shapes.

    Args:
        view: The model.
        spec: The core's configuration (its ``noise_shape``/``output_shape`` are ignored).
        int_size: Width of the int64 rows of the integer inputs.
        target_fn: A callable target, if any.

    Returns:
        ``(noise_shape, layer_shape, attribution_shape)`` of one example: the ``noise_at``
        layer's output (None without one), the ``attribute_at`` layer's output (None without
        one) and the base method's result.
    """
    core = _Core(view, dataclasses.replace(spec, noise_shape=None, output_shape=None), target_fn)
    dtype = spec.compute_dtype
    n = 1 if spec.method is None else 2  # a user's method: does it keep one row per row?

    def probe(x, ints, targets):
        blk = _Block(x, ints, targets, tf.zeros([n], dtype), tf.zeros([n], tf.uint64))
        inp = core.unpack(x, ints)
        out = {"a": core.attribute(x, tf.range(n), blk, None, None)}
        for name, layer in (("noise", view.noise_layer), ("layer", view.attribute_layer)):
            if layer is not None:
                out[name] = view.activation(inp, layer)
        return out

    fn = tf.function(probe, autograph=False).get_concrete_function(
        tf.TensorSpec([n, *spec.input_shape], dtype),
        tf.TensorSpec([n, int_size], tf.int64),
        tf.TensorSpec([n], tf.int32),
    )
    rows = tuple(fn.structured_outputs["a"].shape)
    if not rows or rows[0] != n:
        raise ValueError(
            f"it returned shape {rows} for x of shape {(n, *spec.input_shape)}: it must return "
            "one attribution per row of x, shape [n, ...] (reduce over an example's axes, not "
            "over the rows)"
        )
    shapes = {k: tuple(v.shape[1:]) for k, v in fn.structured_outputs.items()}
    for name, shape in shapes.items():
        if any(d is None for d in shape):
            what = {"a": "the base method's attribution", "noise": "the noise layer's output",
                    "layer": "the attribute_at layer's output"}[name]
            raise ValueError(
                f"The shape of {what} per example is not static ({shape}); pass inputs of a "
                "fixed shape."
            )
    as_int = lambda t: None if t is None else tuple(int(d) for d in t)  # noqa: E731
    return as_int(shapes.get("noise")), as_int(shapes.get("layer")), as_int(shapes["a"])


def build(
    view: Network,
    spec: CoreSpec,
    target_fn: Callable | None = None,
    on_trace: Callable[[], None] | None = None,
    batch: int | None = None,
) -> Callable:
    """Compiles the explainer core for the model seen through ``view`` and ``spec``.

    Args:
        view: The network to explain (a :class:`Network`, such as the adapter's
            ``ModelView``).
        spec: Static configuration.
        target_fn: Optional callable ``scores [n, ...] -> [n]`` replacing class indices.
        on_trace: Called each time the function is traced (to count retracing).
        batch: The examples of every call when fixed, else None (any number). A fixed count
            gives the trace static shapes, so TensorFlow folds the shape arithmetic of the
            groupings and loops away: half the ops per call for one example on LeNet.

    Returns:
        ``core(x [Bc, *shape], ints int64 [Bc, I] (with spec.parts only), targets int32 [Bc],
        eps [Bc] (or [Bc, K] with spec.parts), seeds int64 [Bc], wkey uint64 [1],
        wnoise, xnoise)`` (``wnoise``: the weight factors of :func:`weight_factor_table`, or
        ``[0]``; ``xnoise``: the examples' input noise of :func:`input_noise_table` with
        ``spec.cached_input_noise``, or ``[0, 0, 0]``)
        returning ``(value [Bc, D], stderr [Bc, D], finite [Bc])`` where ``finite`` counts the
        samples with finite attributions (``stderr`` is empty unless ``spec.with_stderr``).
    """
    lay = spec.layout
    if spec.sampler == "antithetic" and (
        (spec.mode.input_noise and lay.n_in % 2) or (spec.mode.weight_noise and lay.n_w % 2)
    ):
        raise ValueError(f"antithetic sampling needs even draw counts, got {lay.n_in}, {lay.n_w}")
    core = _Core(view, spec, target_fn)

    def tfmollify_core(x, ints, targets, eps, seeds, wkey, wnoise, xnoise):
        if on_trace is not None:
            on_trace()
        return core(x, ints, targets, eps, seeds, wkey, wnoise, xnoise)

    def tfmollify_core_one_input(x, targets, eps, seeds, wkey, wnoise, xnoise):
        if on_trace is not None:
            on_trace()
        return core(x, tf.zeros([tf.shape(x)[0], 0], tf.int64), targets, eps, seeds, wkey,
                    wnoise, xnoise)

    dtype = spec.compute_dtype
    signature = [
        tf.TensorSpec([batch, *spec.input_shape], dtype),
        tf.TensorSpec([batch], tf.int32),
        tf.TensorSpec([batch, core.size] if spec.elementwise_eps else [batch], dtype),
        tf.TensorSpec([batch], tf.int64),
        tf.TensorSpec([1], tf.uint64),
        tf.TensorSpec([None], view.weight_dtype() if core.weight_noise else dtype),
        tf.TensorSpec([None, None, None], dtype),
    ]
    if spec.parts is None:
        return tf.function(
            tfmollify_core_one_input, input_signature=signature, jit_compile=spec.jit_compile,
            autograph=False,
        )
    int_size = sum(
        int(np.prod(shape, dtype=np.int64))
        for _, shape, d in spec.parts
        if tf.as_dtype(d).is_integer
    )
    signature[1:1] = [tf.TensorSpec([batch, int_size], tf.int64)]
    if spec.noise_shape is None and not spec.elementwise_eps:
        signature[3] = tf.TensorSpec([batch, len(core.part_sizes)], dtype)
    return tf.function(
        tfmollify_core, input_signature=signature, jit_compile=spec.jit_compile, autograph=False
    )

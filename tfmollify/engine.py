"""The compiled Monte Carlo core: SmoothGrad, NoiseGrad and FusionGrad in one ``tf.function``.

For a block of ``Bc`` examples the function evaluates the attribution at noisy inputs and/or
under noisy weights and streams the samples into :mod:`tfmollify.aggregation`:

* ``sg``: ``a(x_b + eps_b z_bi)``, ``z_bi`` i.i.d. per input element from the kernel, ``i < N``.
* ``ng``: ``a(x_b; w (1 + weight_eps zeta_j))``, ``zeta_j`` per weight element, ``j < M``.
* ``fg``: ``a(x_b + eps_b z_bji; w (1 + weight_eps zeta_j))``, ``M x N`` samples.

Weights are perturbed functionally with Keras 3 ``stateless_call`` on tensors; the model's
variables are only ever read, so nothing can leave them perturbed. A ``tf.while_loop`` over weight
draws and over chunks of at most ``chunk`` input draws (``parallel_iterations=1``) bounds the
evaluations in flight, and aggregation is streamed, so memory does not grow with ``N`` or ``M``.
Without a memory bound (``Plan.pipeline=2``) two weight draws overlap, which keeps both CPU cores
busy on small models; the merge order, and so the result, is the same.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify import aggregation, attribution, sampling
from tfmollify.inputs import unpack_rows
from tfmollify.kernels import Kernel

__all__ = ["Plan", "build", "stateless_forward"]


class _OwnRetracingFilter(logging.Filter):
    """Drops TensorFlow's "frequent retracing" warning about tfmollify's own core function.

    Every explainer compiles its own core once per input signature; TensorFlow counts the traces
    of all of them together (they share one code object) and would warn about creating functions
    in a loop. Warnings about the user's own functions pass through.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("triggered tf.function retracing" in msg and "tfmollify_core" in msg)


tf.get_logger().addFilter(_OwnRetracingFilter())


@dataclasses.dataclass(frozen=True)
class Plan:
    """Static configuration of one compiled explainer function.

    Attributes:
        mode: ``"sg"``, ``"ng"`` or ``"fg"``.
        kernel: Noise kernel for inputs and weights.
        num_samples: Input draws per weight draw (``N``; 1 and no input noise for ``ng``).
        num_weight_samples: Weight draws (``M``; 1 and no weight noise for ``sg``).
        aggregation: One of :data:`tfmollify.aggregation.AGGREGATIONS`.
        attribution: One of :data:`tfmollify.attribution.ATTRIBUTIONS`.
        ig_steps: Quadrature points for integrated gradients.
        ig_baseline: Integrated-gradients baseline (broadcastable to one example).
        chunk: Input draws evaluated in one pass (per example of the block).
        input_shape: Shape of one example.
        compute_dtype: float32 or float64.
        weight_epsilon: Relative weight-noise scale.
        jit_compile: Compile with XLA.
        with_stderr: Compute standard errors (a few more operations per sample).
        proposal: Draw input noise from this kernel instead and reweight (Theorem 3.11).
        proposal_scale: The proposal's scale relative to ``epsilon``.
        cached_weight_noise: The standard weight noise of all ``M`` draws is passed in
            (``wnoise [M, P]``, see :func:`weight_noise_table`) instead of drawn in the graph.
        pipeline: Weight draws whose evaluations may run concurrently (``parallel_iterations``
            of the loop over draws); 1 keeps the memory bound of ``chunk`` exact.
        weight_selection: Indices into ``model.trainable_variables`` of the variables that get
            weight noise (None: all). The noise of draw ``j`` is drawn for the selected
            variables only, concatenated in this order.
        parts: For a model with several inputs: the inputs are packed, flattened and
            concatenated, into one row of ``input_shape = (D,)`` per example, and ``parts``
            says how to unpack it: ``(key, shape, dtype)`` per input, with ``key`` an int (a
            list of inputs) or a str (a dict). Integer inputs travel as exact float values
            (no noise: their ``epsilon`` is 0) and are rounded back. ``eps`` is then
            ``[Bc, len(parts)]``, one scale per input. None: one input of ``input_shape``.
        sampler: ``"iid"``, ``"antithetic"`` (pairs ``z``, ``-z`` of input draws and of
            weight draws) or ``"sobol"`` (randomized Sobol points; see
            :mod:`tfmollify.sampling`). Antithetic needs an even number of input draws
            (``sg``/``fg``) and of weight draws (``ng``/``fg``); the standard error then runs
            over pairs (of weight draws when there is weight noise).
        replicates: With ``sampler="sobol"``: independent randomizations ``R``. ``sg``: the
            ``N`` input draws are ``R`` replicates of ``N / R`` points; ``ng``/``fg``: the
            ``M`` weight draws are ``R`` replicates of ``M / R`` points, and the ``N`` input
            draws under weight draw ``j`` are a replicate of their own. The standard error
            runs over the ``R`` replicates.
    """

    mode: str
    kernel: Kernel
    num_samples: int
    num_weight_samples: int
    aggregation: str
    attribution: str
    ig_steps: int
    ig_baseline: Any
    chunk: int
    input_shape: tuple[int, ...]
    compute_dtype: tf.DType
    weight_epsilon: float
    jit_compile: bool = False
    with_stderr: bool = True
    proposal: Kernel | None = None
    proposal_scale: float = 1.0
    cached_weight_noise: bool = False
    pipeline: int = 1
    weight_selection: tuple[int, ...] | None = None
    parts: tuple[tuple[Any, tuple[int, ...], str], ...] | None = None
    sampler: str = "iid"
    replicates: int = 1


def _select(scores: Any, targets: tf.Tensor, target_fn: Callable | None) -> tf.Tensor:
    if target_fn is not None:
        return tf.reshape(target_fn(scores), [-1])
    scores = tf.reshape(scores, [tf.shape(scores)[0], -1])
    return tf.gather(scores, targets, axis=1, batch_dims=1)


def _model_input_dtype(model: Any, default: tf.DType) -> tf.DType:
    """The dtype the model's first input expects (``default`` when unknown)."""
    try:
        return tf.as_dtype(model.inputs[0].dtype)
    except Exception:  # subclassed models have no symbolic inputs
        return default


def _weight_dtype(model: Any) -> tf.DType:
    """Weight noise is drawn in float64 for float64 weights, else in float32."""
    return tf.float64 if model.trainable_variables[0].dtype == "float64" else tf.float32


def selected_variables(model: Any, selection: Sequence[int] | None) -> list[Any]:
    """The trainable variables that get weight noise (all of them when ``selection`` is None)."""
    trainable = list(model.trainable_variables)
    return trainable if selection is None else [trainable[i] for i in selection]


def weight_noise_table(
    model: Any,
    kernel: Kernel,
    wkey: Any,
    draws: int,
    selection: Sequence[int] | None = None,
    antithetic: bool = False,
    sobol: int | None = None,
) -> tf.Tensor:
    """The standard weight noise of draws ``0 .. draws - 1``, one row ``[P]`` per draw.

    The same values the engine draws in the graph (:func:`tfmollify.sampling.weight_noise`),
    for explainers that reuse them across calls (``sobol``: points per Sobol replicate).
    """
    sizes = [
        int(np.prod(v.shape, dtype=np.int64)) for v in selected_variables(model, selection)
    ]
    dtype = _weight_dtype(model)
    table = tf.function(
        lambda j: tf.concat(
            sampling.weight_noise(kernel, wkey, j, sizes, dtype, antithetic, sobol), axis=0
        )
    )
    return tf.stack([table(tf.constant(j)) for j in range(draws)])


def stateless_forward(model: Any, weights: list[tf.Tensor], x: tf.Tensor) -> Any:
    """The model's output with ``weights`` in place of its trainable variables (inference mode).

    ``stateless_call`` passes keyword arguments straight to ``call``, so ``training`` is only
    given to models whose ``call`` accepts it (a subclassed model may not).
    """
    kwargs = {"training": False} if getattr(model, "_call_has_training_arg", True) else {}
    nt = [v.value for v in model.non_trainable_variables]
    out, _ = model.stateless_call(weights, nt, x, **kwargs)
    return out


def build(
    model: Any,
    plan: Plan,
    target_fn: Callable | None = None,
    on_trace: Callable[[], None] | None = None,
) -> Callable:
    """Compiles the explainer core for ``model`` and ``plan``.

    Args:
        model: A Keras model (required for ``ng``/``fg``) or a callable ``inputs -> scores``.
        plan: Static configuration.
        target_fn: Optional callable ``scores [n, ...] -> [n]`` replacing class indices.
        on_trace: Called each time the function is traced (to count retracing).

    Returns:
        ``core(x [Bc, *shape], targets int32 [Bc], eps [Bc] (or [Bc, K] with plan.parts),
        seeds int64 [Bc], wkey uint64 [1],
        wnoise [M, P] or [0, 0])`` returning ``(value [Bc, D], stderr [Bc, D], finite [Bc])``
        where ``finite`` counts the samples with finite attributions (``stderr`` is empty
        unless ``plan.with_stderr``).
    """
    dtype = plan.compute_dtype
    size = int(np.prod(plan.input_shape, dtype=np.int64))
    shape = list(plan.input_shape)
    kernel = plan.kernel
    n_in = plan.num_samples if plan.mode != "ng" else 1
    n_w = plan.num_weight_samples if plan.mode != "sg" else 1
    # Equal, static chunk sizes (XLA needs static shapes); the few draws past n_in in the last
    # chunk are masked out. A draw's noise depends only on its index, not on the chunking.
    antithetic = plan.sampler == "antithetic"
    sobol = plan.sampler == "sobol"
    if antithetic and ((plan.mode != "ng" and n_in % 2) or (plan.mode != "sg" and n_w % 2)):
        raise ValueError(f"antithetic sampling needs even draw counts, got {n_in} and {n_w}")
    if sobol and (n_in if plan.mode == "sg" else n_w) % plan.replicates:
        raise ValueError(f"{plan.replicates} Sobol replicates do not divide {n_in}, {n_w} draws")
    # Draws per unit of the standard error. SmoothGrad: input draws (antithetic pairs, Sobol
    # replicates, else single draws); NoiseGrad/FusionGrad: weight draws (the same groups).
    in_unit = 1
    if plan.mode == "sg" and antithetic:
        in_unit = 2
    elif plan.mode == "sg" and sobol:
        in_unit = n_in // plan.replicates
    w_unit = 2 if antithetic else (n_w // plan.replicates if sobol else 1)
    # SmoothGrad units longer than a pass are closed one by one (an outer loop, like weight
    # draws); otherwise passes hold whole units.
    split_units = in_unit > max(1, min(plan.chunk, n_in))
    n_loop = in_unit if split_units else n_in  # input draws of one run of the chunk loop
    # equal passes of whole units (at most plan.chunk draws each), padded at the end
    unit = 1 if split_units else in_unit  # units never straddle two chunks
    chunk = max(1, min(plan.chunk, n_loop))
    chunk -= chunk % unit
    n_chunks = -(-n_loop // chunk)
    chunk = -(-n_loop // n_chunks)
    chunk += -chunk % unit  # still at most plan.chunk: a multiple of unit was above it
    sobol_in = (
        sampling.Sobol(n_in if plan.mode == "fg" else n_in // plan.replicates, size)
        if sobol and plan.mode != "ng"
        else None
    )
    attribute = attribution.make(plan.attribution, plan.ig_steps, plan.ig_baseline)
    input_noise = plan.mode in ("sg", "fg")
    proposal = plan.proposal if input_noise else None
    ratio = tf.constant(plan.proposal_scale, dtype)
    # importance-weighted samples are plain means of w*a (or w*a^2)
    agg_name = plan.aggregation if proposal is None else "smoothgrad"
    weight_noise = plan.mode in ("ng", "fg")

    is_keras = hasattr(model, "stateless_call")
    model_dtype = _model_input_dtype(model, dtype) if plan.parts is None else None
    if plan.parts is not None:
        part_sizes = [int(np.prod(p[1], dtype=np.int64)) for p in plan.parts]
        assert sum(part_sizes) == size, (part_sizes, size)

    def unpack(flat: tf.Tensor) -> Any:
        """Model inputs from packed rows ``[n, D]`` (the identity for one input)."""
        if plan.parts is None:
            return tf.cast(flat, model_dtype)
        return unpack_rows(flat, plan.parts)
    if weight_noise:
        trainable = list(model.trainable_variables)
        selected = (
            list(range(len(trainable)))
            if plan.weight_selection is None
            else list(plan.weight_selection)
        )
        sizes = [int(np.prod(trainable[i].shape, dtype=np.int64)) for i in selected]
        w_dtype = _weight_dtype(model)

    def forward(x: tf.Tensor, weights: list[tf.Tensor] | None) -> Any:
        if weights is None:
            return model(x, training=False) if is_keras else model(x)
        return stateless_forward(model, weights, x)

    def perturbed_weights(j: tf.Tensor, wkey: tf.Tensor, wnoise: tf.Tensor) -> list[tf.Tensor]:
        if plan.cached_weight_noise:
            parts = tf.split(wnoise[j], sizes)
        else:
            parts = sampling.weight_noise(
                kernel, wkey, j, sizes, w_dtype, antithetic, w_unit if sobol else None
            )
        out = [v.value for v in trainable]
        for i, part in zip(selected, parts, strict=True):
            val = out[i]
            noise = tf.cast(tf.reshape(part, trainable[i].shape), val.dtype)
            out[i] = val * (1.0 + tf.constant(plan.weight_epsilon, val.dtype) * noise)
        return out

    def samples(x, targets, eps, keys, first, count, weights):
        """Attribution samples ``[Bc, count, D]`` for flat input-draw indices ``first..``."""
        bc = tf.shape(x)[0]
        flat = tf.reshape(tf.cast(x, dtype), [bc, size])
        log_w = None
        if input_noise:
            if sobol_in is not None:
                u = sampling.sobol_uniforms(keys, first, count, size, dtype, sobol_in)
            else:
                draw = sampling.antithetic_uniforms if antithetic else sampling.example_uniforms
                u = draw(keys, first, count, size, dtype)
            if proposal is None:
                z = kernel.icdf(u)
            else:  # t = eps * ratio * z, z ~ p; weight phi_eps(t) / p_eps(t) in log space
                zp = proposal.icdf(u)
                z = ratio * zp
                log_w = tf.reduce_sum(kernel.log_pdf(z) - proposal.log_pdf(zp), axis=2)
                log_w += size * tf.math.log(ratio)
            scale = eps[:, None, None] if plan.parts is None else eps_rows(eps)[:, None, :]
            noisy = flat[:, None, :] + scale * z
        else:
            noisy = flat[:, None, :]
        xs = tf.reshape(noisy, [-1, *shape])
        ts = tf.repeat(targets, count)

        def grad(inp: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                tape.watch(inp)
                out = forward(unpack(inp), weights)
                score = tf.cast(_select(out, t, target_fn), dtype)
            # a score that does not depend on the input has a zero gradient, not None
            zero = tf.UnconnectedGradients.ZERO
            return tf.cast(tape.gradient(score, inp, unconnected_gradients=zero), dtype)

        a = tf.reshape(attribute(xs, ts, grad), [bc, count, size])
        if log_w is not None:  # importance-weighted samples of a (or a^2), averaged plainly
            if plan.aggregation == "smoothgrad_sq":
                a = tf.square(a)
            a = tf.exp(log_w)[:, :, None] * a
        return a

    def eps_rows(eps: tf.Tensor) -> tf.Tensor:
        """Per-input scales ``[Bc, K]`` spread over the packed row: ``[Bc, D]``."""
        return tf.repeat(eps, part_sizes, axis=1)

    with_stderr = plan.with_stderr

    def chunk_loop(state, x, targets, eps, keys, base, weights, units_are_samples):
        def body(k, st):
            first = k * chunk
            vals, mask = aggregation.clean(
                samples(x, targets, eps, keys, base + first, chunk, weights)
            )
            if n_chunks * chunk > n_loop:  # mask the padding draws of the last chunk
                inside = tf.cast(first + tf.range(chunk) < n_loop, mask.dtype)
                mask = mask * inside[None, :]
                vals = vals * inside[None, :, None]
            st = aggregation.merge_chunk(
                st,
                vals,
                mask,
                units_are_samples,
                with_stderr,
                with_m2=agg_name != "smoothgrad",
                unit_size=in_unit if units_are_samples else 1,
            )
            return k + 1, st

        if n_chunks == 1:  # no loop: fewer ops per weight draw
            return body(tf.constant(0), state)[1]
        _, state = tf.while_loop(
            lambda k, st: k < n_chunks, body, (tf.constant(0), state), parallel_iterations=1
        )
        return state

    def tfmollify_core(x, targets, eps, seeds, wkey, wnoise):
        if on_trace is not None:
            on_trace()
        bc = tf.shape(x)[0]
        eps = tf.cast(eps, dtype)
        keys = sampling.example_keys(seeds)
        if not weight_noise and n_chunks == 1 and in_unit == 1:
            # every sample of the block in one pass: aggregate directly
            vals, mask = aggregation.clean(samples(x, targets, eps, keys, 0, n_in, None))
            value, stderr = aggregation.one_shot(vals, mask, agg_name, with_stderr)
            finite = tf.reduce_sum(mask, axis=1)
        else:
            state = aggregation.init_state(bc, size, dtype)
            if not weight_noise and not split_units:
                state = chunk_loop(state, x, targets, eps, keys, 0, None, True)
            elif not weight_noise:

                def replicate(r, st):
                    """A Sobol replicate longer than a pass: its chunks, then one unit."""
                    unit = aggregation.init_state(bc, size, dtype)
                    unit = chunk_loop(unit, x, targets, eps, keys, r * in_unit, None, False)
                    return r + 1, aggregation.merge_unit(st, unit, with_stderr)

                _, state = tf.while_loop(
                    lambda r, st: r < n_in // in_unit,
                    replicate,
                    (tf.constant(0), state),
                    parallel_iterations=1,
                )
            else:

                def outer(j, st):
                    weights = perturbed_weights(j, wkey, wnoise)
                    if n_in == 1:  # NoiseGrad: one sample per weight draw is its own unit
                        return j + 1, chunk_loop(st, x, targets, eps, keys, j, weights, True)
                    unit = aggregation.init_state(bc, size, dtype)
                    unit = chunk_loop(unit, x, targets, eps, keys, j * n_in, weights, False)
                    return j + 1, aggregation.merge_unit(st, unit, with_stderr)

                def one_draw(j, unit):
                    weights = perturbed_weights(j, wkey, wnoise)
                    return j + 1, chunk_loop(unit, x, targets, eps, keys, j * n_in, weights, False)

                def outer_group(g, st):
                    """Weight draws ``g * w_unit ..`` (an antithetic pair, a Sobol replicate)."""
                    unit = aggregation.init_state(bc, size, dtype)
                    if w_unit == 2:
                        for j in (2 * g, 2 * g + 1):
                            unit = one_draw(j, unit)[1]
                    else:
                        _, unit = tf.while_loop(  # the outer loop already overlaps draws
                            lambda j, u: j < (g + 1) * w_unit,
                            one_draw,
                            (g * w_unit, unit),
                            parallel_iterations=1,
                        )
                    return g + 1, aggregation.merge_unit(st, unit, with_stderr)

                _, state = tf.while_loop(
                    lambda g, st: g < n_w // w_unit,
                    outer if w_unit == 1 else outer_group,
                    (tf.constant(0), state),
                    parallel_iterations=plan.pipeline,
                )
            value, stderr = aggregation.finalize(state, agg_name, with_stderr)
            finite = state.n
        if stderr is None:
            stderr = tf.zeros([0], dtype)
        return value, stderr, finite

    signature = [
        tf.TensorSpec([None, *shape], dtype),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None] if plan.parts is None else [None, len(plan.parts)], dtype),
        tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([1], tf.uint64),
        tf.TensorSpec([None, None], _weight_dtype(model) if weight_noise else dtype),
    ]
    return tf.function(
        tfmollify_core, input_signature=signature, jit_compile=plan.jit_compile
    )

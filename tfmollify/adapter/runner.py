"""Running explanations: a prepared request in, an immutable :class:`Explanation` out.

A :class:`Runner` belongs to one explainer (its :class:`~tfmollify.adapter.spec.Spec` and
:class:`~tfmollify.adapter.model_view.ModelView`). :meth:`Runner.prepare` checks one call's
arguments
and compiles (or reuses) the engine's core for them, giving a frozen :class:`Request`;
:meth:`Runner.run_block` runs the core on a range of its examples (the data-set code runs the
blocks on the replicas of a ``tf.distribute.Strategy``); :meth:`Runner.explain` does a whole call,
with the ``tolerance`` loop when the spec asks for it. Nothing about a call is kept on the runner:
the compiled functions and the weight-noise table are caches, keyed by everything they depend
on, and guarded by a lock, so one explainer serves several threads.

The runner composes three jobs, each in its own module: the compiled-core cache
(:class:`~tfmollify.adapter.cores.Cores`), the block loop (:mod:`~tfmollify.adapter.blocks`)
and the tolerance rounds (:mod:`~tfmollify.adapter.rounds`); the request and the explanation
are defined in :mod:`~tfmollify.adapter.calls` (and importable from here).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify.adapter import blocks, layers, rounds
from tfmollify.adapter import request as request_lib
from tfmollify.adapter.blocks import Progress
from tfmollify.adapter.calls import Explanation, NonFiniteError, Request, report_nonfinite
from tfmollify.adapter.cores import MAX_CALLABLES, Cores
from tfmollify.adapter.model_view import ModelView
from tfmollify.adapter.spec import Spec
from tfmollify.core import aggregation, checks, engine
from tfmollify.core import inputs as inputs_lib
from tfmollify.core import plan as plan_lib

__all__ = ["MAX_CALLABLES", "Explanation", "NonFiniteError", "Request", "Runner"]

#: ``batch_size="auto"``: the memory one pass may hold (:meth:`ModelView.row_bytes` per
#: evaluation: every layer's output and its gradient, the noisy input and its gradient), at most
#: this ...
AUTO_BUDGET_BYTES = 2**30
#: ... and at most this fraction of the host memory available when the explainer is made (a
#: laptop's 8-16 GB hold it beside the model; on a GPU, whose memory is larger, 1 GiB binds)
AUTO_MEMORY_FRACTION = 0.25
#: ... or this many evaluations when the estimate is unknown (29 MiB measured per evaluation of
#: MobileNetV2 at 224 x 224: 32 of them are about 0.9 GB)
AUTO_FALLBACK_EVALUATIONS = 32
#: An automatic bound at least this large binds nothing: one pass, as with batch_size=None
#: (2^18 rows: a model of a few KiB per row, e.g. an MLP on 784 features)
AUTO_UNBOUNDED = 2**18
#: ``weight_draws_per_pass="auto"``: several weight draws share a pass only while the pass holds
#: at most this many bytes (:meth:`ModelView.row_bytes` per evaluation). Sharing saves the fixed
#: cost of a pass, which dominates small passes (LeNet, 117 KB a row, one example: 1.3x
#: faster); in large ones the per-row-weight forms cost more than they save (ResNet50 at
#: 64 x 64, 24 MB a row, one example: 0.84x). An int ``weight_draws_per_pass`` is not bound.
DRAWS_PASS_BYTES = 16 * 2**20


class Runner:
    """Prepares and runs the calls of one explainer (see the module docstring).

    Args:
        spec: The explainer's settings.
        view: The explainer's view of the model.
    """

    def __init__(self, spec: Spec, view: ModelView) -> None:
        self.spec, self.view = spec, view
        self._cores = Cores(spec, view, self.core_spec)
        self._auto: tuple[int | None] | None = None
        self._max_draws: int | None = None
        self._draw_rows: tuple[int | None] | None = None
        self._row_bytes: tuple[int | None] | None = None
        self._plans: dict[int | None, plan_lib.Plan] = {}  # by examples per call (a few)

    # -- plans -------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int | None:
        """The bound on evaluations per pass: the spec's, or with ``batch_size="auto"`` one
        from the memory a pass holds per evaluation (:meth:`ModelView.row_bytes`) within
        :func:`auto_budget`, or :data:`AUTO_FALLBACK_EVALUATIONS` when it is unknown; None: one
        unbounded pass.

        NoiseGrad and FusionGrad under ``"auto"`` overlap two weight draws (as with ``None``:
        both CPU cores busy on small models), so each pass gets half the budget and the
        evaluations in flight stay within it (:attr:`pipeline`)."""
        s = self.spec
        if s.batch_size != "auto":
            return s.batch_size
        if self._auto is None:
            per_row = self.row_bytes
            rows = (
                AUTO_FALLBACK_EVALUATIONS if not per_row
                else max(1, auto_budget() // per_row)
            ) // self.pipeline
            smallest = s.evaluations_per_sample * (
                2 if s.sampler == "antithetic" and s.smoothing.input_noise else 1
            )
            self._auto = (None if rows >= AUTO_UNBOUNDED else max(rows, smallest),)
        return self._auto[0]

    @property
    def pipeline(self) -> int:
        """Weight draws whose passes may run at once: 2 without a bound and for NG/FG under
        ``batch_size="auto"``, else 1 (an explicit ``batch_size`` is exact)."""
        s = self.spec
        overlap = s.batch_size is None or (s.batch_size == "auto" and s.smoothing.weight_noise)
        return 2 if overlap else 1

    def plan(self, batch: int | None = None) -> plan_lib.Plan:
        """The static plan of a call with ``batch`` examples (see :mod:`tfmollify.core.plan`);
        made once per ``batch`` (the settings are frozen: the same plan every time)."""
        found = self._plans.get(batch)
        if found is not None:
            return found
        s = self.spec
        made = plan_lib.make(
            mode=s.smoothing, sampler=s.sampler, num_samples=s.num_samples,
            num_weight_samples=s.num_weight_samples, replicates=s.replicates,
            batch_size=self.batch_size, evaluations_per_sample=s.evaluations_per_sample,
            batch=batch, max_draws=self.max_draws if batch is not None else 1,
            draw_rows=self.draw_rows,
        )
        if len(self._plans) < 64:  # a stream of calls of every size keeps the first 64
            self._plans[batch] = made
        return made

    @property
    def max_draws(self) -> int:
        """The most weight draws one pass may hold (before ``batch_size``): 1 for SG, where a
        layer whose weights get noise has no per-row-weight form
        (:func:`tfmollify.adapter.draws.unsupported`), or where the setting says so; else as
        many as fit ``weight_noise_cache_mb`` (``K`` copies of the perturbed weights)."""
        s = self.spec
        if not s.smoothing.weight_noise or s.weight_draws_per_pass == 1:
            return 1
        if self._max_draws is None:
            per_draw = self._cores.weight_noise_bytes() // max(1, s.num_weight_samples)
            fits = int(s.weight_noise_cache_mb * 2**20 // max(1, per_draw))
            self._max_draws = 1 if self.view.layers_without_draw_forms() else max(1, fits)
        cap = s.num_weight_samples if s.weight_draws_per_pass == "auto" else (
            s.weight_draws_per_pass)
        return min(self._max_draws, cap)

    @property
    def row_bytes(self) -> int | None:
        """:meth:`ModelView.row_bytes`, counted once for both rules that read it (the
        ``"auto"`` bound and :attr:`draw_rows`)."""
        if self._row_bytes is None:
            self._row_bytes = (self.view.row_bytes(),)
        return self._row_bytes[0]

    @property
    def draw_rows(self) -> int | None:
        """The most rows a pass of several weight draws may hold: :data:`DRAWS_PASS_BYTES` of
        evaluations under ``weight_draws_per_pass="auto"`` (None: no bound beyond
        ``batch_size``, for an int setting or unknown shapes)."""
        if self.spec.weight_draws_per_pass != "auto" or not self.spec.smoothing.weight_noise:
            return None
        if self._draw_rows is None:
            per_row = self.row_bytes
            self._draw_rows = (None if not per_row else max(1, DRAWS_PASS_BYTES // per_row),)
        return self._draw_rows[0]

    def core_spec(
        self, input_shape: tuple[int, ...], compute: tf.DType, *, with_stderr: bool,
        cached_weight_noise: bool, pipeline: int, jit_compile: bool, parts: Any = None,
        noise_shape: tuple[int, ...] | None = None, output_shape: tuple[int, ...] | None = None,
        draws: int = 1, cached_input_noise: bool = False,
    ) -> engine.CoreSpec:
        """The engine's static configuration for one input shape and dtype (``noise_shape``,
        ``output_shape``: from :meth:`shapes`)."""
        s = self.spec
        per_call = dict(
            mode=s.smoothing, layout=dataclasses.replace(self.plan().layout, draws=draws),
            input_shape=tuple(int(d) for d in input_shape), compute_dtype=compute,
            jit_compile=jit_compile, with_stderr=with_stderr,
            cached_weight_noise=cached_weight_noise, cached_input_noise=cached_input_noise,
            pipeline=pipeline, parts=parts,
            output_shape=output_shape, noise_shape=noise_shape,
            elementwise_eps=s.input_range is not None,
        )
        # every other field of the core's spec is the setting of the same name, copied by name
        shared = {f.name: getattr(s, f.name) for f in dataclasses.fields(engine.CoreSpec)
                  if f.name not in per_call}
        return engine.CoreSpec(**shared, **per_call)

    def shapes(
        self, x: np.ndarray, ints: np.ndarray, packing: Any, target_fn: Callable | None = None
    ) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
        """``(noise_shape, output_shape)`` for rows like ``x``: the ``noise_at`` layer's output
        shape and the attribution's shape when they differ from the rows' (else None).

        Traced once per input signature (nothing runs) and only when the noise or the
        attribution is at a layer, or the base method is the user's.

        Raises:
            ValueError: For a Grad-CAM layer without positions and channels, or a method of the
                user's that fails on the model.
        """
        return self._cores.shapes(x, ints, packing, target_fn)

    # -- the compiled-core cache (:class:`~tfmollify.adapter.cores.Cores`) ---------------------
    @property
    def trace_count(self) -> int:
        """How many times a core of this runner was traced."""
        return self._cores.trace_count

    @property
    def _functions(self) -> dict[Any, Callable]:
        """The compiled cores by key (diagnostics: the benchmarks read it)."""
        return self._cores.functions

    def weight_noise_bytes(self) -> int:
        """Size of the cached weight-noise table: ``M x`` the perturbed weights' size."""
        return self._cores.weight_noise_bytes()

    @property
    def caches_weight_noise(self) -> bool:
        """Whether NG/FG pass the weight factors in as a table (see
        :attr:`Cores.caches_weight_noise <tfmollify.adapter.cores.Cores.caches_weight_noise>`)."""
        return self._cores.caches_weight_noise

    def weight_noise(self, seed: int, wkey: tf.Tensor, compute: tf.DType) -> tf.Tensor:
        """The core's ``wnoise`` input for weight draws from ``seed``.

        The table of the explainer's own seed is kept; a table for another seed (a round of
        ``tolerance``) is drawn for that call only. Keyed by the seed that made it.
        """
        return self._cores.weight_noise(seed, wkey, compute)

    def cache_info(self) -> dict[str, int]:
        """Sizes of the caches: compiled functions, callable targets held, weight-noise tables."""
        return self._cores.cache_info()

    def cached_table(self) -> tf.Tensor | None:
        """The kept weight-factor table of the explainer's seed (None before the first call;
        :func:`tfmollify.core.engine.weight_factor_table`)."""
        return self._cores.cached_table()

    def _function(
        self, x: np.ndarray, target_fn: Callable | None, with_stderr: bool, packing: Any,
        noise_shape: tuple[int, ...] | None = None, out_shape: tuple[int, ...] | None = None,
        draws: int = 1, cached_input: bool = False,
    ) -> Callable:
        """The compiled core for rows like ``x`` (:meth:`Cores.function
        <tfmollify.adapter.cores.Cores.function>`)."""
        return self._cores.function(
            x, target_fn, with_stderr, packing, noise_shape, out_shape, pipeline=self.pipeline,
            draws=draws, cached_input=cached_input,
        )

    # -- preparing a call --------------------------------------------------------------------
    def prepare(
        self,
        inputs: Any,
        targets: Any,
        *,
        with_stderr: bool,
        seeds: Any = None,
        offset: int = 0,
        seed: int | None = None,
    ) -> Request:
        """Checks one call's arguments and compiles (or reuses) its core.

        Args:
            inputs, targets, seeds: As for :meth:`tfmollify.Explainer.explain`.
            with_stderr: Whether the standard errors are wanted.
            offset: Position of ``inputs[0]`` in the whole job: default example seeds are
                ``sampling.example_seeds(seed, B, offset)``.
            seed: The job's seed, in place of the explainer's (and of a fresh random one when
                that is None): it derives the default example seeds and the weight-noise key.

        Returns:
            The :class:`Request`.
        """
        spec, view = self.spec, self.view
        if with_stderr and spec.reduce is not None:
            raise ValueError(
                f"return_stderr=True is not available with reduce={spec.reduce!r}: the "
                "standard error of a sum or norm over the last axis needs the covariances of "
                "its elements. Use reduce=None and reduce the attributions yourself."
            )
        if view.head is not None:
            inputs = view.to_layer(inputs)
        x, ints, out_dtype, is_tensor, packing = self._rows(inputs)
        target_fn = targets if callable(targets) else None
        if x.shape[0] == 0:
            shapes = self.shapes(x[:1] if x.shape[0] else np.zeros((1, *x.shape[1:]), x.dtype),
                                 np.zeros((1, ints.shape[1]), np.int64), packing, target_fn)
            return Request(x, out_dtype, is_tensor, ints, packing, out_shape=shapes[1],
                           structured=shapes[1] is None and view.attribute_layer is None)
        score_shape = self._cores.probe(x, ints, target_fn, packing)
        idx = (
            np.zeros(x.shape[0], np.int32) if target_fn is not None
            else request_lib.targets(targets, x.shape[0], score_shape)
        )
        noise_shape, out_shape = self.shapes(x, ints, packing, target_fn)
        if view.noise_layer is not None:
            eps = request_lib.layer_epsilons(
                spec, lambda lo, hi: view.activation(
                    view.model_inputs(x[lo:hi], packing, ints[lo:hi]), view.noise_layer
                ).numpy(), x.shape[0], view.noise_layer.name,
            )
        else:
            eps = request_lib.epsilons(spec, x, packing)
        if seed is None:
            seed = spec.seed if spec.seed is not None else secrets.randbits(63)
        ex_seeds = request_lib.seeds(seeds, seed, x.shape[0], offset)
        compute = tf.as_dtype(x.dtype)
        plan = self.plan(x.shape[0])
        xnoise = None
        if seeds is None and offset == 0 and seed == spec.seed and spec.tolerance is None:
            # the explainer's own seed: the same example seeds, so the same input draws, on
            # every call (another seed, or rounds of their own seeds, would not reuse them)
            xnoise = self._cores.input_noise(x, ex_seeds, packing, noise_shape,
                                             plan.layout.draws)
        fn = self._function(x, target_fn, with_stderr, packing, noise_shape, out_shape,
                            plan.layout.draws, cached_input=xnoise is not None)
        wkey = self._cores.wkey(seed)
        return Request(
            x, out_dtype, is_tensor, ints, packing, idx, eps, ex_seeds, fn, compute, wkey,
            self.weight_noise(seed, wkey, compute), plan.block,
            out_shape, out_shape is None and view.attribute_layer is None, plan.layout.draws,
            self._cores.no_input_noise(compute) if xnoise is None else xnoise,
        )

    def _rows(self, inputs: Any) -> tuple[np.ndarray, np.ndarray, np.dtype, bool, Any]:
        """``(rows, int rows, results dtype, is_tensor, packing)`` of one call's inputs."""
        view = self.view  # a Keras model decides by itself: no look at the inputs needed
        compute = view.compute_dtype(not view.is_keras and _float64(inputs))
        compute = np.dtype(compute.as_numpy_dtype)
        if inputs_lib.is_structured(inputs, view.net):
            request_lib.check_keys(inputs, view.net)
            # integer inputs only: fine when the noise goes on a layer, or for NoiseGrad with
            # the attribution at a layer (no input noise at all)
            no_float_ok = view.noise_layer is not None or (
                not self.spec.smoothing.input_noise and view.attribute_layer is not None
            )
            x, ints, packing, is_tensor = inputs_lib.pack(
                inputs, compute, need_float=not no_float_ok
            )
            request_lib.check_packing(self.spec, packing, view.attribute_layer is not None)
            return x, ints, x.dtype, is_tensor, packing
        if request_lib.is_integer(inputs) and (view.intercepts or _integer_model(view)):
            return self._token_rows(inputs, compute)
        x, out_dtype, is_tensor = request_lib.rows(inputs, compute)
        expected = view.example_shape()
        if expected is not None:
            checks.check_example_shape("inputs", x.shape, expected)
        ints = np.zeros((x.shape[0], 0), np.int64)
        return x, ints, out_dtype, is_tensor, None

    def _token_rows(self, inputs: Any, compute: np.dtype) -> tuple:
        """A model whose only input is integer (token ids), with the noise and the attribution
        at a layer reached from it: the ids travel untouched as int64 rows beside empty float
        rows ``[B, 0]`` (a one-part packing under the key ``None``)."""
        view = self.view
        request_lib.check_token_inputs(
            self.spec, view.noise_layer is not None, view.attribute_layer is not None,
            layers.embedding_paths(view.net) if view.is_keras else [],
        )
        x, ints, packing, is_tensor = inputs_lib.pack(
            inputs, compute, need_float=False, single=True
        )
        expected = self.view.example_shape()
        if expected is not None:
            checks.check_example_shape("inputs", (x.shape[0], *packing.shapes[0]), expected)
        return x, ints, x.dtype, is_tensor, packing

    # -- running (the block loop: :mod:`~tfmollify.adapter.blocks`) ---------------------------
    run_block = staticmethod(blocks.run_block)

    def run(
        self, req: Request, progress: Progress | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All blocks of ``req``: ``(values [B, D], stderr [B, D] or [0], finite [B])``.

        ``progress``: called with the number of examples, it returns the context manager of a bar
        with ``update(n)`` (the explainer passes :func:`tfmollify.explainers.progress.bar`);
        None shows nothing.
        """
        return blocks.run(req, self.run_block, progress)

    def shape_rows(self, req: Request, flat: np.ndarray) -> np.ndarray:
        """Flat results ``[B, D]`` as an array shaped like the request's rows, in the results'
        dtype, reduced over the last axis with ``reduce`` (several inputs: packed rows)."""
        out = np.asarray(flat).reshape((flat.shape[0], *req.attribution_shape))
        if req.packing is not None and req.structured:
            return out
        return aggregation.reduce_last(out.astype(req.out_dtype, copy=False), self.spec.reduce)

    def assemble(self, req: Request, flat: np.ndarray) -> Any:
        """Flat results ``[B, D]`` in the call's inputs' structure (tensors for tensors)."""
        out = self.shape_rows(req, flat)
        if req.packing is not None and req.structured:
            return req.packing.unpack(out, as_tensor=req.is_tensor)
        return tf.convert_to_tensor(out) if req.is_tensor else out

    def explain(
        self, inputs: Any, targets: Any, *, with_stderr: bool, seeds: Any = None,
        progress: Progress | None = None,
    ) -> Explanation:
        """One whole call (rounds of samples with ``tolerance``; ``progress`` as for
        :meth:`run`)."""
        if self.spec.tolerance is not None:
            return rounds.explain(self, inputs, targets, with_stderr, seeds, progress)
        req = self.prepare(inputs, targets, with_stderr=with_stderr, seeds=seeds)
        total = np.full(req.batch, self.spec.samples_per_example, np.int64)
        if req.batch == 0:
            empty = self.assemble(req, req.empty())
            return Explanation(empty, empty if with_stderr else None, total, total)
        values, errors, finite = self.run(req, progress)
        finite = finite.astype(np.int64)
        report_nonfinite(self.spec, finite, total)
        return Explanation(
            self.assemble(req, values),
            self.assemble(req, errors) if with_stderr else None,
            finite,
            total,
            req.draws,
        )


def available_memory() -> int | None:
    """The host memory available now, in bytes (``MemAvailable`` of ``/proc/meminfo``, else
    the free physical pages; None when neither is known)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def auto_budget() -> int:
    """The bytes one pass may hold under ``batch_size="auto"``: the smaller of
    :data:`AUTO_BUDGET_BYTES` and :data:`AUTO_MEMORY_FRACTION` of :func:`available_memory`.

    Example:

    >>> 0 < auto_budget() <= AUTO_BUDGET_BYTES
    True
    """
    avail = available_memory()
    if not avail:
        return AUTO_BUDGET_BYTES
    return max(1, int(min(AUTO_BUDGET_BYTES, AUTO_MEMORY_FRACTION * avail)))


def _integer_model(view: ModelView) -> bool:
    """Whether the net is a Keras model whose (first) input is declared integer."""
    return view.is_keras and view.input_dtype(tf.float32).is_integer


def _float64(inputs: Any) -> bool:
    """Whether any of the inputs is float64 (a plain callable then computes in float64)."""
    leaves = tf.nest.flatten(inputs) if isinstance(inputs, dict | list | tuple) else [inputs]
    for leaf in leaves:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            try:
                dtype = np.asarray(leaf).dtype
            except Exception:
                continue
        try:
            if tf.as_dtype(dtype) == tf.float64:
                return True
        except TypeError:
            continue
    return False

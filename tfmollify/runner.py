"""Running explanations: a prepared request in, an immutable :class:`Explanation` out.

A :class:`Runner` belongs to one explainer (its :class:`~tfmollify.spec.Spec` and
:class:`~tfmollify.model_view.ModelView`). :meth:`Runner.prepare` checks one call's arguments
and compiles (or reuses) the engine's core for them, giving a frozen :class:`Request`;
:meth:`Runner.run_block` runs the core on a range of its examples (the data-set code runs the
blocks on the replicas of a ``tf.distribute.Strategy``); :meth:`Runner.explain` does a whole call,
with the ``tolerance`` loop when the spec asks for it. Nothing about a call is kept on the runner:
the compiled functions and the weight-noise table are caches, keyed by everything they depend
on, and guarded by a lock, so one explainer serves several threads.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify import attribution as attribution_lib
from tfmollify import engine, sampling
from tfmollify import inputs as inputs_lib
from tfmollify import plan as plan_lib
from tfmollify import progress as progress_lib
from tfmollify import request as request_lib
from tfmollify.model_view import ModelView, summarize
from tfmollify.spec import Spec

__all__ = ["MAX_CALLABLES", "Explanation", "NonFiniteError", "Request", "Runner"]

MAX_CALLABLES = 8  # callable targets whose compiled functions are kept
#: ``batch_size="auto"``: evaluations per pass so that the net's estimated activations
#: (:meth:`ModelView.activation_bytes`) stay within this budget...
AUTO_ACTIVATION_BYTES = 4 * 2**30
#: ... or this many evaluations when the estimate is unknown (29 MiB measured per evaluation of
#: MobileNetV2 at 224 x 224: 256 of them are about 7.5 GB)
AUTO_FALLBACK_EVALUATIONS = 256
#: An automatic bound at least this large binds nothing: one pass, as with batch_size=None
AUTO_UNBOUNDED = 2**20


class NonFiniteError(FloatingPointError):
    """Every noise sample of some example gave a non-finite (NaN or Inf) attribution."""


@dataclasses.dataclass(frozen=True)
class Explanation:
    """The result of one call (:meth:`tfmollify.Explainer.explain_full`).

    Attributes:
        attributions: The smoothed attributions, in the inputs' structure (an array or tensor
            like the inputs, or a list/dict of them for several inputs).
        stderr: Their Monte Carlo standard errors, same structure (None with ``reduce``).
        finite_samples: Per example, the samples whose attribution was finite (int64 ``[B]``).
        num_samples: Per example, the samples drawn (int64 ``[B]``): ``N`` (sg), ``M`` (ng)
            or ``M x N`` (fg), more with ``tolerance``.
    """

    attributions: Any
    stderr: Any
    finite_samples: np.ndarray
    num_samples: np.ndarray

    @property
    def nonfinite_count(self) -> np.ndarray:
        """Per example, the samples left out of the average for being non-finite."""
        return self.num_samples - self.finite_samples


@dataclasses.dataclass(frozen=True)
class Request:
    """One call's checked inputs and its compiled core, ready to run block by block.

    Attributes:
        x: The rows the core takes ``[B, *shape]`` in the compute dtype (several inputs:
            packed rows ``[B, D]``; ``explain_at``: the layer's outputs).
        out_dtype: The dtype of the results (the inputs' floating dtype).
        is_tensor: Whether the inputs came as tensors (results come back as tensors).
        ints: The integer inputs' int64 rows ``[B, I]`` (``I = 0`` without any).
        packing: How several inputs are packed (None for one input).
        targets, eps, seeds: Per example: class indices, input-noise scales, noise seeds.
        fn: The compiled core.
        compute: The compute dtype.
        wkey, wnoise: The weight-noise key and cached table (``[0, 0]`` when drawn in the
            graph).
        block: Examples per call of ``fn`` (the ``batch_size`` memory bound).
        out_shape: One example's attribution shape (the rows' shape unless the attribution
            is at a layer or a method of the user's returns another shape).
        structured: Whether the results come back in the inputs' structure (several inputs,
            attribution with respect to them).
    """

    x: np.ndarray
    out_dtype: np.dtype
    is_tensor: bool
    ints: np.ndarray | None = None
    packing: inputs_lib.Packing | None = None
    targets: np.ndarray | None = None
    eps: np.ndarray | None = None
    seeds: np.ndarray | None = None
    fn: Callable | None = None
    compute: tf.DType | None = None
    wkey: tf.Tensor | None = None
    wnoise: tf.Tensor | None = None
    block: int = 1
    out_shape: tuple[int, ...] | None = None
    structured: bool = True

    @property
    def batch(self) -> int:
        return int(self.x.shape[0])

    @property
    def attribution_shape(self) -> tuple[int, ...]:
        """One example's attribution shape."""
        return tuple(self.x.shape[1:]) if self.out_shape is None else self.out_shape

    def empty(self) -> np.ndarray:
        """Flat results ``[B, D]`` of zeros."""
        return np.zeros((self.batch, int(np.prod(self.attribution_shape))), self.x.dtype)

    def subset(self, keep: np.ndarray, seeds: np.ndarray, wkey: tf.Tensor, wnoise) -> Request:
        """The examples ``keep`` of this request with other seeds (a round of ``tolerance``)."""
        return dataclasses.replace(
            self, x=self.x[keep], ints=self.ints[keep], targets=self.targets[keep],
            eps=self.eps[keep], seeds=seeds, wkey=wkey, wnoise=wnoise,
        )


class Runner:
    """Prepares and runs the calls of one explainer (see the module docstring).

    Args:
        spec: The explainer's settings.
        view: The explainer's view of the model.
    """

    def __init__(self, spec: Spec, view: ModelView) -> None:
        self.spec, self.view = spec, view
        self._lock = threading.RLock()
        self._functions: dict[Any, Callable] = {}
        self._probed: dict[Any, Any] = {}
        self._shapes: dict[Any, Any] = {}
        self._callables: dict[int, Callable] = {}  # held, so that their ids stay unique
        self._tables: dict[int, tf.Tensor] = {}  # weight-noise tables by seed
        self._wkeys: dict[int, tf.Tensor] = {}
        self._no_noise: dict[tf.DType, tf.Tensor] = {}
        self.trace_count = 0
        self._caches: bool | None = None
        self._auto: tuple[int | None] | None = None

    # -- plans -------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int | None:
        """The bound on evaluations per pass: the spec's, or with ``batch_size="auto"`` one
        from the model's estimated activation memory (:data:`AUTO_ACTIVATION_BYTES`, or
        :data:`AUTO_FALLBACK_EVALUATIONS` when it is unknown); None: one unbounded pass.

        NoiseGrad and FusionGrad under ``"auto"`` overlap two weight draws (as with ``None``:
        both CPU cores busy on small models), so each pass gets half the budget and the
        evaluations in flight stay within it (:attr:`pipeline`)."""
        s = self.spec
        if s.batch_size != "auto":
            return s.batch_size
        if self._auto is None:
            per_row = self.view.activation_bytes()
            rows = (
                AUTO_FALLBACK_EVALUATIONS if not per_row
                else max(1, AUTO_ACTIVATION_BYTES // per_row)
            ) // self.pipeline
            smallest = s.evaluations_per_sample * (
                2 if s.sampler == "antithetic" and s.mode != "ng" else 1
            )
            self._auto = (None if rows >= AUTO_UNBOUNDED else max(rows, smallest),)
        return self._auto[0]

    @property
    def pipeline(self) -> int:
        """Weight draws whose passes may run at once: 2 without a bound and for NG/FG under
        ``batch_size="auto"``, else 1 (an explicit ``batch_size`` is exact)."""
        s = self.spec
        overlap = s.batch_size is None or (s.batch_size == "auto" and s.mode != "sg")
        return 2 if overlap else 1

    def plan(self, batch: int | None = None) -> plan_lib.Plan:
        """The static plan of a call with ``batch`` examples (see :mod:`tfmollify.plan`)."""
        s = self.spec
        return plan_lib.make(
            mode=s.mode, sampler=s.sampler, num_samples=s.num_samples,
            num_weight_samples=s.num_weight_samples, replicates=s.replicates,
            batch_size=self.batch_size, evaluations_per_sample=s.evaluations_per_sample,
            batch=batch,
        )

    def core_spec(
        self, input_shape: tuple[int, ...], compute: tf.DType, *, with_stderr: bool,
        cached_weight_noise: bool, pipeline: int, jit_compile: bool, parts: Any = None,
        noise_shape: tuple[int, ...] | None = None, output_shape: tuple[int, ...] | None = None,
    ) -> engine.CoreSpec:
        """The engine's static configuration for one input shape and dtype (``noise_shape``,
        ``output_shape``: from :meth:`shapes`)."""
        s = self.spec
        return engine.CoreSpec(
            mode=s.mode, kernel=s.kernel, layout=self.plan().layout,
            aggregation=s.aggregation, attribution=s.attribution, ig_steps=s.ig_steps,
            ig_baseline=s.ig_baseline, input_shape=tuple(int(d) for d in input_shape),
            compute_dtype=compute, weight_epsilon=s.weight_epsilon, jit_compile=jit_compile,
            with_stderr=with_stderr, proposal=s.proposal, proposal_scale=s.proposal_scale,
            cached_weight_noise=cached_weight_noise, pipeline=pipeline, parts=parts,
            sampler=s.sampler, replicates=s.replicates, method=s.method,
            output_shape=output_shape, noise_shape=noise_shape,
            elementwise_eps=s.input_range is not None,
        )

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
        view, s = self.view, self.spec
        if not view.intercepts and s.method is None:
            return None, None
        key = (x.shape[1:], x.dtype.str, packing, None if target_fn is None else id(target_fn))
        with self._lock:
            if key in self._shapes:
                return self._shapes[key]
            core = self.core_spec(
                x.shape[1:], tf.as_dtype(x.dtype), with_stderr=False, cached_weight_noise=False,
                pipeline=1, jit_compile=False,
                parts=None if packing is None else packing.parts(),
            )
            try:
                noise, layer, out = engine.probe_shapes(view, core, ints.shape[1], target_fn)
            except (ValueError, TypeError) as exc:
                if s.method is None or "called more than once" in str(exc):
                    raise
                raise ValueError(
                    f"Argument `attribution`: the method {s.attribution!r} failed on the "
                    f"model: {summarize(exc)}. It must be method(score_fn, x) -> attribution "
                    "[n, ...], written with TensorFlow ops."
                ) from None
            except Exception as exc:
                raise ValueError(
                    f"Argument `attribution`: the method {s.attribution!r} failed on the "
                    f"model: {summarize(exc)}. It must be method(score_fn, x) -> attribution "
                    "[n, ...], written with TensorFlow ops."
                ) from None
            if s.attribution in attribution_lib.LAYER_ONLY and (layer is None or len(layer) < 2):
                raise ValueError(
                    f"attribution={s.attribution!r} needs a layer whose output has positions "
                    f"and channels [B, ..., C] (a convolutional layer); layer "
                    f"{view.attribute_layer.name!r} gives per-example shape {layer}."
                )
            result = (noise, None if out == tuple(x.shape[1:]) else out)
            self._shapes[key] = result
            return result

    def weight_noise_bytes(self) -> int:
        """Size of the cached weight-noise table: ``M x`` the perturbed weights' size."""
        if self.spec.mode == "sg":
            return 0
        itemsize = 8 if self.view.weight_dtype() == tf.float64 else 4
        return self.spec.num_weight_samples * sum(self.view.weight_sizes()) * itemsize

    @property
    def caches_weight_noise(self) -> bool:
        """Whether NG/FG pass the standard weight noise in as a table (a fixed seed and a
        table within ``weight_noise_cache_mb``); decided once."""
        if self._caches is None:
            s = self.spec
            self._caches = (
                s.mode != "sg" and s.seed is not None
                and self.weight_noise_bytes() <= s.weight_noise_cache_mb * 2**20
            )
        return self._caches

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
        score_shape = self._probe(x, ints, target_fn, packing)
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
        fn = self._function(x, target_fn, with_stderr, packing, noise_shape, out_shape)
        wkey = self._wkey(seed)
        return Request(
            x, out_dtype, is_tensor, ints, packing, idx, eps, ex_seeds, fn, compute, wkey,
            self.weight_noise(seed, wkey, compute), self.plan(x.shape[0]).block,
            out_shape, out_shape is None and view.attribute_layer is None,
        )

    def _rows(self, inputs: Any) -> tuple[np.ndarray, np.ndarray, np.dtype, bool, Any]:
        view = self.view  # a Keras model decides by itself: no look at the inputs needed
        compute = view.compute_dtype(not view.is_keras and _float64(inputs))
        compute = np.dtype(compute.as_numpy_dtype)
        if inputs_lib.is_structured(inputs, view.net):
            # integer inputs only: fine when the noise goes on a layer, or for NoiseGrad with
            # the attribution at a layer (no input noise at all)
            no_float_ok = view.noise_layer is not None or (
                self.spec.mode == "ng" and view.attribute_layer is not None
            )
            x, ints, packing, is_tensor = inputs_lib.pack(
                inputs, compute, need_float=not no_float_ok
            )
            request_lib.check_packing(self.spec, packing, view.attribute_layer is not None)
            return x, ints, x.dtype, is_tensor, packing
        x, out_dtype, is_tensor = request_lib.rows(inputs, compute)
        ints = np.zeros((x.shape[0], 0), np.int64)
        return x, ints, out_dtype, is_tensor, None

    def _probe(
        self, x: np.ndarray, ints: np.ndarray, target_fn: Callable | None, packing: Any
    ) -> Any:
        """The model checked on one example (once per input signature and callable)."""
        key = (x.shape[1:], x.dtype.str, packing)
        with self._lock:
            if target_fn is not None:
                self._remember(target_fn)
            if key not in self._probed:
                request_lib.check_baseline(self.spec, tuple(x.shape[1:]))
                self._probed[key] = self.view.probe(x, packing, ints)
            shape = self._probed[key]
            if shape is None and target_fn is None:
                names = self.view.output_names()
                raise TypeError(
                    "The model returns several outputs; class-index targets need one tensor of "
                    "scores [batch, ...]."
                    + (f" Choose one of {names} with output='name', or" if names else " Pass")
                    + " a callable target that maps the outputs to one score per example, e.g. "
                    "`targets=lambda out: out['a'][:, 0] + out['b'][:, 0]`."
                )
            if target_fn is not None and (key, id(target_fn)) not in self._probed:
                self.view.probe_target(x, target_fn, packing, ints)
                self._probed[(key, id(target_fn))] = shape
        return shape

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

    def _function(
        self, x: np.ndarray, target_fn: Callable | None, with_stderr: bool, packing: Any,
        noise_shape: tuple[int, ...] | None = None, out_shape: tuple[int, ...] | None = None,
    ) -> Callable:
        compute = tf.as_dtype(x.dtype)
        key = (
            x.shape[1:], compute, None if target_fn is None else id(target_fn), with_stderr,
            packing,
        )
        with self._lock:
            fn = self._functions.get(key)
            if fn is None:
                core = self.core_spec(
                    x.shape[1:], compute, with_stderr=with_stderr,
                    cached_weight_noise=self.caches_weight_noise,
                    # overlap two weight draws where no exact bound is asked for (same result)
                    pipeline=self.pipeline,
                    jit_compile=self.spec.jit_compile,
                    parts=None if packing is None else packing.parts(),
                    noise_shape=noise_shape, output_shape=out_shape,
                )
                # the concrete function: traced now, once, and called without dispatch
                fn = engine.build(
                    self.view, core, target_fn, on_trace=self._count_trace
                ).get_concrete_function()
                self._functions[key] = fn
        return fn

    def _count_trace(self) -> None:
        self.trace_count += 1

    def _wkey(self, seed: int) -> tf.Tensor:
        with self._lock:
            wkey = self._wkeys.get(seed)
            if wkey is None:
                wkey = tf.constant(sampling.weight_key(seed))
                if seed == self.spec.seed:
                    self._wkeys[seed] = wkey
        return wkey

    def weight_noise(self, seed: int, wkey: tf.Tensor, compute: tf.DType) -> tf.Tensor:
        """The core's ``wnoise`` input for weight draws from ``seed``.

        The table of the explainer's own seed is kept; a table for another seed (a round of
        ``tolerance``) is drawn for that call only. Keyed by the seed that made it.
        """
        if not self.caches_weight_noise:
            dtype = self.view.weight_dtype() if self.spec.mode != "sg" else compute
            with self._lock:
                if dtype not in self._no_noise:
                    self._no_noise[dtype] = tf.zeros([0, 0], dtype)
                return self._no_noise[dtype]
        s = self.spec
        if seed != s.seed:  # a round's own draws: not kept, and no lock held while drawing
            return self._draw_table(wkey)
        with self._lock:
            if seed not in self._tables:
                self._tables[seed] = self._draw_table(wkey)
            return self._tables[seed]

    def _draw_table(self, wkey: tf.Tensor) -> tf.Tensor:
        s = self.spec
        return engine.weight_noise_table(
            self.view, s.kernel, wkey, s.num_weight_samples,
            antithetic=s.sampler == "antithetic",
            sobol=s.num_weight_samples // s.replicates if s.sampler == "sobol" else None,
        )

    def cache_info(self) -> dict[str, int]:
        """Sizes of the caches: compiled functions, callable targets held, weight-noise tables."""
        with self._lock:
            return {
                "functions": len(self._functions),
                "callables": len(self._callables),
                "tables": len(self._tables),
            }

    def cached_table(self) -> tf.Tensor | None:
        """The kept weight-noise table of the explainer's seed (None before the first call)."""
        return self._tables.get(self.spec.seed)

    # -- running -----------------------------------------------------------------------------
    @staticmethod
    def run_block(req: Request, start: int, stop: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The core on examples ``start:stop`` of ``req``, on the current device.

        Returns:
            ``(value [n, D], stderr [n, D] or [0], finite [n])`` in the compute dtype.
        """
        ints = () if req.packing is None else (tf.constant(req.ints[start:stop]),)
        return req.fn(
            tf.constant(req.x[start:stop], req.compute),
            *ints,
            tf.constant(req.targets[start:stop]),
            tf.constant(req.eps[start:stop], req.compute),
            tf.constant(req.seeds[start:stop]),
            req.wkey,
            req.wnoise,
        )

    def run(
        self, req: Request, progress: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All blocks of ``req``: ``(values [B, D], stderr [B, D] or [0], finite [B])``.

        ``progress``: a bar over the examples (:func:`tfmollify.progress.bar`: it appears only
        when the call takes a few seconds; None decides by the terminal), False for none.
        """
        parts = []
        with progress_lib.bar(req.batch, enabled=progress, unit="example") as bar:
            for start in range(0, req.batch, req.block):
                stop = min(req.batch, start + req.block)
                part = self.run_block(req, start, stop)
                parts.append(tuple(p.numpy() for p in part))  # waits: the bar tells the truth
                bar.update(stop - start)
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))

    def shape_rows(self, req: Request, flat: np.ndarray) -> np.ndarray:
        """Flat results ``[B, D]`` as an array shaped like the request's rows, in the results'
        dtype, reduced over the last axis with ``reduce`` (several inputs: packed rows)."""
        out = np.asarray(flat).reshape((flat.shape[0], *req.attribution_shape))
        if req.packing is not None and req.structured:
            return out
        out = out.astype(req.out_dtype, copy=False)
        if self.spec.reduce == "sum":
            return out.sum(axis=-1)
        if self.spec.reduce == "norm":
            return np.sqrt(np.square(out).sum(axis=-1))
        return out

    def assemble(self, req: Request, flat: np.ndarray) -> Any:
        """Flat results ``[B, D]`` in the call's inputs' structure (tensors for tensors)."""
        out = self.shape_rows(req, flat)
        if req.packing is not None and req.structured:
            return req.packing.unpack(out, as_tensor=req.is_tensor)
        return tf.convert_to_tensor(out) if req.is_tensor else out

    def explain(
        self, inputs: Any, targets: Any, *, with_stderr: bool, seeds: Any = None,
        progress: bool | None = None,
    ) -> Explanation:
        """One whole call (rounds of samples with ``tolerance``; ``progress`` as for
        :meth:`run`)."""
        if self.spec.tolerance is not None:
            return self._to_tolerance(inputs, targets, with_stderr, seeds, progress)
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
        )

    def _to_tolerance(
        self, inputs: Any, targets: Any, with_stderr: bool, seeds: Any,
        progress: bool | None = None,
    ) -> Explanation:
        """Rounds of independent samples until every example meets ``tolerance``."""
        spec = self.spec
        req = self.prepare(inputs, targets, with_stderr=True, seeds=seeds)
        if req.batch == 0:
            empty = self.assemble(req, req.empty())
            zero = np.zeros(0, np.int64)
            return Explanation(empty, empty if with_stderr else None, zero, zero)
        per_round = spec.samples_per_example
        batch, base_seeds = req.batch, req.seeds
        total = np.zeros((batch, req.empty().shape[1]), np.float64)  # sum of n_r * value_r
        var = np.zeros_like(total)  # sum of (n_r * stderr_r)^2
        count = np.zeros(batch, np.int64)  # finite samples
        drawn = np.zeros(batch, np.int64)
        active = np.arange(batch)
        weight_seed = int(req.wkey.numpy()[0])  # round r's weight draws derive from it and r
        round_req = req
        for r in range(max(1, spec.max_samples // per_round)):
            if r:
                round_req = self._round(req, active, base_seeds, weight_seed, r)
            v, e, n = self.run(round_req, progress)
            v, e, n = v.astype(np.float64), e.astype(np.float64), n.astype(np.int64)
            ok = n > 0
            total[active] += np.where(ok[:, None], n[:, None] * v, 0.0)
            var[active] += np.where(ok[:, None], np.square(n[:, None] * e), 0.0)
            count[active] += n
            drawn[active] += per_round
            c = np.maximum(count[active], 1)[:, None]
            value, stderr = total[active] / c, np.sqrt(var[active]) / c
            scale = np.maximum(np.linalg.norm(value, axis=1), 1e-300)
            rel = np.linalg.norm(stderr, axis=1) / scale
            active = active[~(rel <= spec.tolerance) & (drawn[active] + per_round
                                                         <= spec.max_samples)]
            if not active.size:
                break
        report_nonfinite(spec, count, drawn)
        c = np.maximum(count, 1)[:, None]
        return Explanation(
            self.assemble(req, total / c),
            self.assemble(req, np.sqrt(var) / c) if with_stderr else None,
            count,
            drawn,
        )

    def _round(
        self, req: Request, active: np.ndarray, base_seeds: np.ndarray, weight_seed: int,
        r: int,
    ) -> Request:
        """Round ``r`` of the still active examples: seeds from each example's own seed and
        ``r``; weight draws from the call's weight key and ``r``."""
        seeds = np.array([sampling.example_seeds(int(s), 1, r)[0] for s in base_seeds[active]])
        round_seed = int(sampling.example_seeds(weight_seed, 1, r)[0])
        wkey = tf.constant(sampling.weight_key(round_seed))
        return req.subset(active, seeds, wkey, self.weight_noise(round_seed, wkey, req.compute))


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


def report_nonfinite(spec: Spec, finite: np.ndarray, total: Any) -> None:
    """Raises :class:`NonFiniteError` for an example with no finite sample; warns for others.

    Args:
        spec: The explainer's settings (named in the message).
        finite: Per example, the samples with a finite attribution.
        total: Samples drawn, one int for all examples or one per example.
    """
    total = np.broadcast_to(np.asarray(total), finite.shape)
    dead = np.flatnonzero(finite == 0)
    if dead.size:
        raise NonFiniteError(
            f"Every one of the {int(total[dead[0]])} samples gave a non-finite attribution for "
            f"examples {dead[:10].tolist()} (mode={spec.mode!r}, kernel={spec.kernel.name!r}). "
            "Reduce `weight_epsilon`/`epsilon`, use a lighter-tailed kernel, or check the "
            "model for overflow."
        )
    bad = total - finite
    if bad.any():
        warnings.warn(
            f"{int(bad.sum())} of {int(total.sum())} samples gave non-finite attributions "
            f"and were left out of the average (per example: {bad.tolist()[:20]}); see "
            "`Explanation.finite_samples` (or `explainer.last_nonfinite_count`).",
            RuntimeWarning,
            stacklevel=4,
        )

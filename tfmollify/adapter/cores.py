"""The compiled-core cache of one explainer.

:class:`Cores` builds the engine's core once per input signature (and callable target), probes
the model once per signature, traces the noise and attribution shapes once, and keeps the
weight-noise table of the explainer's own seed. Every cache is keyed by everything it depends on
and guarded by one lock, so one explainer serves several threads. The
:class:`~tfmollify.adapter.runner.Runner` owns one and asks it for each call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from tfmollify.adapter import request as request_lib
from tfmollify.adapter.layers import clean_message, summarize
from tfmollify.adapter.model_view import ModelView
from tfmollify.adapter.spec import Spec
from tfmollify.core import attribution as attribution_lib
from tfmollify.core import engine, sampling

__all__ = ["MAX_CALLABLES", "Cores"]

MAX_CALLABLES = 8  # callable targets whose compiled functions are kept


class Cores:
    """Compiled cores, probes, shapes and weight-noise tables of one explainer, cached.

    Args:
        spec: The explainer's settings.
        view: The explainer's view of the model.
        core_spec: Makes the engine's static configuration (the runner's
            :meth:`~tfmollify.adapter.runner.Runner.core_spec`).

    Attributes:
        trace_count: How many times a core was traced.
    """

    def __init__(
        self, spec: Spec, view: ModelView, core_spec: Callable[..., engine.CoreSpec]
    ) -> None:
        self.spec, self.view = spec, view
        self.core_spec = core_spec
        self._lock = threading.RLock()
        self._functions: dict[Any, Callable] = {}
        self._probed: dict[Any, Any] = {}
        self._shapes: dict[Any, Any] = {}
        self._callables: dict[int, Callable] = {}  # held, so that their ids stay unique
        self._tables: dict[int, tf.Tensor] = {}  # weight-noise tables by seed
        self._wkeys: dict[int, tf.Tensor] = {}
        self._no_noise: dict[Any, tf.Tensor] = {}
        self._noise_fns: dict[Any, tuple[Callable, int, int] | None] = {}
        self._xnoise: tuple[Any, bytes, tf.Tensor] | None = None  # the last input-noise table
        self.trace_count = 0
        self._caches: bool | None = None

    @property
    def functions(self) -> dict[Any, Callable]:
        """The compiled cores by key (the cache itself: diagnostics only)."""
        return self._functions

    # -- shapes and probes -------------------------------------------------------------------
    def shapes(
        self, x: np.ndarray, ints: np.ndarray, packing: Any, target_fn: Callable | None = None
    ) -> tuple[tuple[int, ...] | None, tuple[int, ...] | None]:
        """``(noise_shape, output_shape)`` for rows like ``x`` (see
        :meth:`tfmollify.adapter.runner.Runner.shapes`)."""
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
                if "called more than once" in str(exc):  # our words, without Keras' dump
                    raise ValueError(clean_message(exc)) from None
                if s.method is None:
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
            if s.attribution in attribution_lib.LAYER_ONLY and "Embedding" in type(
                view.attribute_layer).__name__:
                raise ValueError(
                    f"attribution={s.attribution!r} needs a convolutional layer's channels; "
                    f"layer {view.attribute_layer.name!r} is an embedding, whose features are "
                    "not channels. For tokens use attribution='integrated_gradients' (or "
                    "'gradient') with reduce='norm' or 'sum'."
                )
            if s.attribution in attribution_lib.LAYER_ONLY and (layer is None or len(layer) < 2):
                raise ValueError(
                    f"attribution={s.attribution!r} needs a layer whose output has positions "
                    f"and channels [B, ..., C] (a convolutional layer); layer "
                    f"{view.attribute_layer.name!r} gives per-example shape {layer}."
                )
            result = (noise, None if out == tuple(x.shape[1:]) else out)
            self._shapes[key] = result
            return result

    def probe(
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

    # -- compiled cores ----------------------------------------------------------------------
    def function(
        self, x: np.ndarray, target_fn: Callable | None, with_stderr: bool, packing: Any,
        noise_shape: tuple[int, ...] | None = None, out_shape: tuple[int, ...] | None = None,
        *, pipeline: int, draws: int = 1, cached_input: bool = False,
    ) -> Callable:
        """The compiled core for rows like ``x`` (traced on the first call for its key).

        ``pipeline``: the runner's weight draws in flight (:attr:`Runner.pipeline`);
        ``draws``: weight draws per pass (:attr:`tfmollify.core.plan.Layout.draws`);
        ``cached_input``: the core takes its input noise in (:meth:`input_noise`).
        """
        compute = tf.as_dtype(x.dtype)
        # one example: a trace of its own, with static shapes (the common case of explaining
        # one prediction; TensorFlow then folds the shape arithmetic away)
        batch = 1 if x.shape[0] == 1 else None
        key = (
            x.shape[1:], compute, None if target_fn is None else id(target_fn), with_stderr,
            packing, draws, batch, cached_input,
        )
        with self._lock:
            fn = self._functions.get(key)
            if fn is None:
                core = self.core_spec(
                    x.shape[1:], compute, with_stderr=with_stderr,
                    cached_weight_noise=self.caches_weight_noise,
                    cached_input_noise=cached_input,
                    # overlap two weight draws where no exact bound is asked for (same result)
                    pipeline=pipeline,
                    jit_compile=self.spec.jit_compile,
                    parts=None if packing is None else packing.parts(),
                    noise_shape=noise_shape, output_shape=out_shape, draws=draws,
                )
                # the concrete function: traced now, once, and called without dispatch
                try:
                    fn = engine.build(
                        self.view, core, target_fn, on_trace=self._count_trace, batch=batch
                    ).get_concrete_function()
                except ValueError as exc:
                    if "called more than once" in str(exc):  # our words, without Keras' dump
                        raise ValueError(clean_message(exc)) from None
                    raise
                self._functions[key] = fn
        return fn

    def _count_trace(self) -> None:
        """Counts one trace of a core (the engine calls it while tracing)."""
        self.trace_count += 1

    # -- weight noise ------------------------------------------------------------------------
    def weight_noise_bytes(self) -> int:
        """Size of the cached weight-factor table: ``M x`` the perturbed weights' size (each
        variable's block padded to 64 bytes)."""
        if not self.spec.smoothing.weight_noise:
            return 0
        itemsize = 8 if self.view.weight_dtype() == tf.float64 else 4
        return engine.factor_offsets(self.view.weight_sizes(), self.spec.num_weight_samples)[
            -1] * itemsize

    @property
    def caches_weight_noise(self) -> bool:
        """Whether NG/FG pass the weight factors in as a table (a fixed seed, a table within
        ``weight_noise_cache_mb`` and no variable wider than the table's dtype); decided once."""
        if self._caches is None:
            s = self.spec
            self._caches = (
                s.smoothing.weight_noise and s.seed is not None
                and self.weight_noise_bytes() <= s.weight_noise_cache_mb * 2**20
                and engine.exact_factors(self.view)
            )
        return self._caches

    def wkey(self, seed: int) -> tf.Tensor:
        """The weight-noise key of ``seed`` (kept for the explainer's own seed)."""
        with self._lock:
            wkey = self._wkeys.get(seed)
            if wkey is None:
                wkey = tf.constant(sampling.weight_key(seed))
                if seed == self.spec.seed:
                    self._wkeys[seed] = wkey
        return wkey

    def weight_noise(self, seed: int, wkey: tf.Tensor, compute: tf.DType) -> tf.Tensor:
        """The core's ``wnoise`` input for weight draws from ``seed`` (see
        :meth:`tfmollify.adapter.runner.Runner.weight_noise`)."""
        if not self.caches_weight_noise:
            dtype = self.view.weight_dtype() if self.spec.smoothing.weight_noise else compute
            with self._lock:
                if dtype not in self._no_noise:
                    self._no_noise[dtype] = tf.zeros([0], dtype)
                return self._no_noise[dtype]
        s = self.spec
        if seed != s.seed:  # a round's own draws: not kept, and no lock held while drawing
            return self._draw_table(wkey)
        with self._lock:
            if seed not in self._tables:
                self._tables[seed] = self._draw_table(wkey)
            return self._tables[seed]

    def _draw_table(self, wkey: tf.Tensor) -> tf.Tensor:
        """A fresh weight-factor table (:func:`tfmollify.core.engine.weight_factor_table`) from
        ``wkey``."""
        s = self.spec
        return engine.weight_factor_table(
            self.view, s.kernel, wkey, s.num_weight_samples, s.weight_epsilon,
            antithetic=s.sampler == "antithetic",
            sobol=s.num_weight_samples // s.replicates if s.sampler == "sobol" else None,
        )

    # -- input noise -------------------------------------------------------------------------
    def input_noise(
        self, x: np.ndarray, seeds: np.ndarray, packing: Any,
        noise_shape: tuple[int, ...] | None, draws: int,
    ) -> tf.Tensor | None:
        """The standard input noise of the examples of ``seeds`` for a core of rows like ``x``
        (:func:`tfmollify.core.engine.input_noise_table`), kept for the next call with the same
        seeds; None where the core draws it itself: its layout does not take it in
        (:func:`tfmollify.core.engine.caches_input_noise`), or ``B x`` the draws' size is
        over ``input_noise_cache_mb``.

        Only the explainer's own seed reuses its example seeds call after call (the caller
        asks for no other), so one table is kept: the last one.
        """
        compute = tf.as_dtype(x.dtype)
        key = (x.shape[1:], compute, packing, noise_shape, draws)
        with self._lock:
            if key not in self._noise_fns:
                core = self.core_spec(
                    x.shape[1:], compute, with_stderr=False, cached_weight_noise=False,
                    pipeline=1, jit_compile=False,
                    parts=None if packing is None else packing.parts(),
                    noise_shape=noise_shape, draws=draws,
                )
                size = int(np.prod(x.shape[1:] if noise_shape is None else noise_shape))
                self._noise_fns[key] = (
                    (engine.input_noise_table(self.view, core), engine.noise_span(core), size)
                    if engine.caches_input_noise(core) else None
                )
            made = self._noise_fns[key]
            if made is None:
                return None
            table_fn, span, size = made
            nbytes = x.shape[0] * span * size * compute.size
            if nbytes > self.spec.input_noise_cache_mb * 2**20:
                return None
            kept = self._xnoise
            if kept is not None and kept[0] == key and kept[1] == seeds.tobytes():
                return kept[2]
            table = table_fn(tf.constant(seeds))
            self._xnoise = (key, seeds.tobytes(), table)
            return table

    def no_input_noise(self, compute: tf.DType) -> tf.Tensor:
        """The core's ``xnoise`` input where it draws its input noise itself: ``[0, 0, 0]``."""
        with self._lock:
            key = ("xnoise", compute)
            if key not in self._no_noise:
                self._no_noise[key] = tf.zeros([0, 0, 0], compute)
            return self._no_noise[key]

    def cache_info(self) -> dict[str, int]:
        """Sizes of the caches: compiled functions, callable targets held, weight-noise tables."""
        with self._lock:
            return {
                "functions": len(self._functions),
                "callables": len(self._callables),
                "tables": len(self._tables),
                "input_noise_tables": int(self._xnoise is not None),
            }

    def cached_table(self) -> tf.Tensor | None:
        """The kept weight-factor table of the explainer's seed (None before the first call;
        :func:`tfmollify.core.engine.weight_factor_table`)."""
        return self._tables.get(self.spec.seed)

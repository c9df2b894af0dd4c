"""Explaining a whole data set: batches streamed in order, on one device or on many.

:func:`explain_dataset` runs an :class:`~tfmollify.Explainer` over every ``(inputs, targets)``
batch of a ``tf.data.Dataset`` (or any iterable) and returns the attributions in dataset order,
in memory or streamed to a ``.npy`` file. With a ``tf.distribute.Strategy`` the examples of each
batch are split across the replicas (several GPUs with ``MirroredStrategy``, several machines with
``MultiWorkerMirroredStrategy``); the result is the same as on one device.

Why the result does not depend on the device count: an example's noise depends only on its own
seed and the sample index (see :mod:`tfmollify.core.sampling`), and the weight noise only on the
run's
seed. Example ``i`` of the data set (its global position) gets
``sampling.example_seeds(seed, n, 0)[i]`` with the explainer's ``seed``, exactly as if all inputs
were passed to :meth:`~tfmollify.Explainer.explain` in one call. Which replica computes it, and
with which neighbours, changes at most the floating-point rounding of batched kernels.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import weakref
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from tfmollify.core import plan as plan_lib
from tfmollify.explainers import progress as progress_lib
from tfmollify.explainers.explainer import Explainer, NonFiniteError

if TYPE_CHECKING:
    from tfmollify.adapter.runner import Request

__all__ = ["explain_dataset"]

_HEADER_BYTES = 256  # reserved for the .npy header, written last (a multiple of 64)


def explain_dataset(
    explainer: Explainer,
    dataset: Any,
    *,
    strategy: tf.distribute.Strategy | None = None,
    output: str | os.PathLike[str] | None = None,
    return_stderr: bool = False,
    progress: bool | None = True,
) -> Any:
    """Attributions of every example of a data set, in dataset order.

    Batches are explained one after another, so memory holds one batch (plus, without
    ``output``, the results). The explainer's ``batch_size`` still bounds the model evaluations in
    flight, per replica.

    Seeds: with an int ``explainer.seed``, example ``i`` of the data set (counting from 0 over all
    batches) uses the seed ``tfmollify.core.sampling.example_seeds(explainer.seed, n, 0)[i]`` and
    the
    weight noise of ``explainer.seed``: the result equals
    ``explainer.explain(all_inputs, all_targets)`` up to floating-point rounding, whatever the
    batching and the strategy. With ``seed=None`` one random seed is drawn for the whole run (and
    shared by all workers), used in the same way: every batch sees the same weight draws (one
    ensemble of perturbed models, as in a single call), and a new run draws new noise.

    Strategies: every batch is split into ``strategy.num_replicas_in_sync`` contiguous shards,
    one per replica, each computed on its replica's device and collected in order; a replica
    with an empty shard (a last batch smaller than the replica count) computes nothing. With
    ``MultiWorkerMirroredStrategy`` every worker runs this same call and must iterate the same
    batches in the same order (no unseeded shuffling, no per-worker sharding: the work is split
    here); the workers check that they agree, batch by batch. Every worker returns the whole
    result; only the chief (``strategy.extended.should_checkpoint``) writes ``output`` and shows
    progress, the others return None when ``output`` is given.

    Args:
        explainer: A :class:`~tfmollify.Explainer` (or ``SmoothGrad``/``NoiseGrad``/
            ``FusionGrad``).
        dataset: A ``tf.data.Dataset`` or any iterable of ``(inputs, targets)`` batches: inputs
            ``[b, ...]`` float, targets as for :meth:`~tfmollify.Explainer.explain` (class
            indices ``[b]`` or one int; a callable or None in a Python iterable). Batches may
            differ in size, not in the shape or dtype of one example. For a model with several
            inputs, ``inputs`` is their list or dict, and so is the result (in memory only).
        strategy: A ``tf.distribute.Strategy`` to split each batch across its replicas. None
            uses the strategy of an enclosing ``strategy.scope()``, if any, else the current
            device.
        output: A path ending in ``.npy``: the attributions are streamed there as they are
            computed (one batch in memory; the file is written to ``<output>.partial`` and
            renamed when complete, so it never holds a partial result; an existing file is
            replaced). The length need not be known in advance. With ``return_stderr`` the
            standard errors go to ``<output stem>_stderr.npy`` next to it.
        return_stderr: Also return the Monte Carlo standard error of each element.
        progress: Show a progress bar (:func:`tfmollify.explainers.progress.bar`: Keras'
            ``Progbar`` on stdout, appearing once the run has lasted 3 seconds) counting the
            examples done,
            with the time left when the number of batches is known
            (``dataset.cardinality()`` or ``len(dataset)``). False prints nothing; None shows
            it only at a terminal or in a notebook
            (:func:`tfmollify.explainers.progress.auto_enabled`).

    Returns:
        Attributions ``[n, ...]`` in dataset order, with the dtype of the inputs: a NumPy array,
        or with ``output`` the written file opened read-only as a memory map
        (``numpy.load(output, mmap_mode="r")``). With ``return_stderr``, the pair
        ``(attributions, stderr)``. None on non-chief workers when ``output`` is given.

    Raises:
        TypeError: If ``explainer`` is not an Explainer, ``strategy`` not a
            ``tf.distribute.Strategy``, ``output`` not a path, ``dataset`` not iterable or not
            yielding ``(inputs, targets)`` pairs, or for inputs/targets :meth:`explain` rejects.
        ValueError: If ``output`` does not end in ``.npy`` or its folder does not exist, if the
            batches disagree in example shape or dtype, the data set is empty, workers see
            different data, or for inputs/targets :meth:`explain` rejects.
        NonFiniteError: If every sample of some example has a non-finite attribution.

    Example:

    >>> import keras, numpy as np, tensorflow as tf
    >>> import tfmollify as tfm
    >>> from tfmollify.integrations.dataset import explain_dataset
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> x = np.random.default_rng(0).normal(size=(10, 4)).astype("float32")
    >>> y = np.arange(10) % 3
    >>> explainer = tfm.SmoothGrad(model, num_samples=8, seed=0)
    >>> ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    >>> a = explain_dataset(explainer, ds, progress=False)
    >>> a.shape
    (10, 4)
    >>> bool(np.allclose(a, explainer.explain(x, y), rtol=1e-6, atol=1e-7))
    True
    """
    strategy = _check_arguments(explainer, strategy)
    # results of replicas on other workers come through collectives
    gather = _Gather.of(strategy) if strategy is not None and _is_multi_worker(strategy) else None
    path = _on_every_worker(gather, lambda: _check_output(output))
    batches = _on_every_worker(gather, lambda: _iterate(dataset))
    return_stderr = bool(return_stderr)
    chief = strategy is None or bool(getattr(strategy.extended, "should_checkpoint", True))

    seed = _run_seed(explainer, gather)

    paths = [None, None] if path is None else [path, _stderr_path(path)]
    writers: list[_Sink] = [
        _Memory() if p is None else _NpyWriter(p) if chief else _Sink()  # others: discarded
        for p in paths[: 1 + return_stderr]
    ]
    show = (None if progress is None else bool(progress)) if chief else False
    bar = progress_lib.bar(None, enabled=show, unit="example")
    failed = True
    try:
        with _quiet_eager_strategy_warning():
            finite, packing = _run(
                explainer, batches, strategy, gather, seed, return_stderr, writers, bar,
                streamed=path is not None, num_batches=_num_batches(dataset),
            )
        explainer.seam.record(finite)  # the explainer sets its counts, and reports dead ones
        results = [w.finish() for w in writers]
        if packing is not None:  # several inputs: rows back into the inputs' structure
            results = [None if r is None else packing.unpack(r) for r in results]
        failed = False
    except BaseException:
        for w in writers:
            w.abort()
        raise
    finally:
        bar.close(failed=failed)
    if path is not None and not chief:
        return None
    return (results[0], results[1]) if return_stderr else results[0]


def _check_arguments(explainer: Any, strategy: Any) -> tf.distribute.Strategy | None:
    """The explainer and the strategy checked (None: the strategy in scope, if any)."""
    if not isinstance(explainer, Explainer):
        raise TypeError(
            "Argument `explainer` must be a tfmollify.Explainer (or SmoothGrad, NoiseGrad, "
            f"FusionGrad). Received: explainer of type {type(explainer).__name__}"
        )
    if explainer.tolerance is not None:
        raise ValueError(
            "explain_dataset runs a fixed number of samples per example; the explainer has "
            f"tolerance={explainer.tolerance}. Use an explainer with tolerance=None, or call "
            "explainer.explain on each batch."
        )
    if strategy is None and tf.distribute.has_strategy():
        strategy = tf.distribute.get_strategy()
    if strategy is not None and not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(
            "Argument `strategy` must be a tf.distribute.Strategy (e.g. "
            "tf.distribute.MirroredStrategy()) or None. Received: "
            f"strategy={strategy!r} of type {type(strategy).__name__}"
        )
    return strategy


def _run_seed(explainer: Explainer, gather: _Gather | None) -> int:
    """The run's seed: the explainer's, or a fresh one (under several workers, the chief's)."""
    seed = explainer.seed if explainer.seed is not None else secrets.randbits(63)
    if gather is not None:  # one run seed for all workers: the chief's
        seed = int(gather.agree([seed])[0, 0])
    return seed


def _run(
    explainer: Explainer,
    batches: Iterator[Any],
    strategy: tf.distribute.Strategy | None,
    gather: _Gather | None,
    seed: int,
    return_stderr: bool,
    writers: list[_Sink],
    bar: progress_lib.Bar,
    *,
    streamed: bool,
    num_batches: int | None,
) -> tuple[np.ndarray, Any]:
    """The batch loop; returns the per-example counts of finite samples and the packing of
    several inputs (None for one input). ``bar`` counts the examples done: with a known
    ``num_batches`` its total is estimated from the first batch, and made exact at the end."""
    offset = 0
    example: tuple[Any, ...] | None = None
    finite: list[np.ndarray] = []
    for k in itertools.count():
        element = next(batches, _END)
        if gather is not None:
            _check_workers_agree(gather, k, element, offset)
        if element is _END:
            break
        job = _on_every_worker(
            gather,
            lambda k=k, element=element, offset=offset: _prepare(
                explainer, element, k, return_stderr, offset, seed, streamed
            ),
        )
        signature = (tuple(job.x.shape[1:]), job.out_dtype, job.packing)
        if example is None:
            example = signature
        elif signature != example:
            raise ValueError(
                f"Argument `dataset`: batch {k} has examples of shape {signature[0]} and dtype "
                f"{signature[1]}, but earlier batches had shape {example[0]} and dtype "
                f"{example[1]}. All batches must hold examples of one shape and dtype."
            )
        if job.batch == 0:
            continue
        if strategy is None:
            values, errors, counts = explainer.seam.run(job)
        else:
            values, errors, counts = _run_replicas(explainer, job, strategy, gather, return_stderr)
        writers[0].append(explainer.seam.shape_rows(job, values))
        if return_stderr:
            writers[1].append(explainer.seam.shape_rows(job, errors))
        finite.append(counts.astype(np.int64))
        offset += job.batch
        if bar.total is None and num_batches is not None:
            bar.total = num_batches * job.batch  # exact unless batches differ in size
        bar.update(job.batch)
    if example is None or offset == 0:
        raise ValueError(
            "Argument `dataset` yielded no examples. Pass a data set with at least one "
            "non-empty (inputs, targets) batch."
        )
    bar.total = offset
    # several inputs attributed each: rows back into the inputs' structure (not the one array
    # of a layer's attributions, nor token ids alone)
    return np.concatenate(finite), job.packing if job.structured else None


_END = object()


def _prepare(
    explainer: Explainer, element: Any, k: int, return_stderr: bool, offset: int, seed: int,
    streamed: bool,
) -> Request:
    """Batch ``k`` checked and ready to run."""
    inputs, targets = _split_element(element, k)
    job = explainer.seam.prepare(
        inputs, targets, with_stderr=return_stderr, offset=offset, seed=seed
    )
    if job.packing is not None and streamed:
        raise ValueError(
            "Argument `output` (one .npy file) is not available for a model with several "
            "inputs: the attributions are one array per input. Leave output=None."
        )
    return job


def _iterate(dataset: Any) -> Iterator[Any]:
    try:
        return iter(dataset)
    except TypeError:
        raise TypeError(
            "Argument `dataset` must be a tf.data.Dataset or an iterable of (inputs, targets) "
            f"batches. Received: dataset of type {type(dataset).__name__}"
        ) from None


def _on_every_worker(gather: _Gather | None, check: Callable[[], Any]) -> Any:
    """Runs ``check`` (an argument check) on this worker and, under a multi-worker strategy,
    tells every worker whether it failed anywhere: then every worker raises (the others would
    otherwise wait for it in the next collective forever)."""
    try:
        value, error = check(), None
    except (TypeError, ValueError, NonFiniteError) as exc:
        value, error = None, exc
    if gather is not None:
        failed = gather.agree([int(error is not None)])[:, 0]
        if error is None and failed.any():
            raise ValueError(
                "explain_dataset stopped: an argument check failed on another worker (replicas "
                f"{np.flatnonzero(failed).tolist()}); its error message says why. Every worker "
                "must be given the same arguments and data."
            )
    if error is not None:
        raise error
    return value


def _split_element(element: Any, k: int) -> tuple[Any, Any]:
    if isinstance(element, tuple | list) and len(element) == 2:
        return element[0], element[1]
    what = (
        f"a {type(element).__name__} of length {len(element)}"
        if isinstance(element, tuple | list)
        else f"a {type(element).__name__}"
    )
    raise TypeError(
        f"Argument `dataset` must yield (inputs, targets) pairs. Received: batch {k} is {what}. "
        "For a single-output model pair the inputs with zeros, e.g. "
        "`ds.map(lambda x: (x, tf.zeros(tf.shape(x)[:1], tf.int32)))`."
    )


# -- replicas ---------------------------------------------------------------------------------
class _EagerStrategyFilter(logging.Filter):
    """Drops TensorFlow's warnings that ``strategy.run`` is called eagerly, and that our gathers
    retrace (once per shard shape: the last batch of a data set is usually smaller).

    Each replica step here calls the explainer's compiled function once (a whole shard of
    examples times all their noise samples), so the eager dispatch costs little, and running
    eagerly is what lets a replica with an empty shard skip its computation.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "triggered tf.function retracing" in msg:
            return "tfmollify_gather" not in msg
        return "eagerly has significant overhead" not in msg


@contextlib.contextmanager
def _quiet_eager_strategy_warning() -> Iterator[None]:
    logger, quiet = tf.get_logger(), _EagerStrategyFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether some replicas live on other workers (their results must be gathered)."""
    return len(strategy.extended.worker_devices) < strategy.num_replicas_in_sync


def _shards(batch: int, replicas: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` shards of ``batch`` examples, sizes differing by at most 1."""
    base, extra = divmod(batch, replicas)
    bounds, start = [], 0
    for r in range(replicas):
        stop = start + base + (r < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def _run_replicas(
    explainer: Explainer,
    job: Request,
    strategy: tf.distribute.Strategy,
    gather: _Gather | None,
    return_stderr: bool,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """One batch on every replica: ``(values [B, D], stderr [B, D] or None, finite [B])``."""
    replicas = strategy.num_replicas_in_sync
    shards = _shards(job.batch, replicas)
    width = max(stop - start for start, stop in shards)
    block = explainer.seam.plan(width).block  # the batch_size bound holds per replica
    keep = (0, 1, 2) if return_stderr else (0, 2)  # the core's outputs wanted
    specs = [job.fn.structured_outputs[i] for i in keep]
    outputs: list[list[list[np.ndarray]]] = [[[] for _ in keep] for _ in range(replicas)]
    for step in range(plan_lib.block_count(width, block)):
        spans = [
            tuple(start + i for i in plan_lib.span(step, stop - start, block))
            for start, stop in shards
        ]
        rows = max(stop - start for start, stop in spans)

        def span_of(ctx: Any, spans: list[tuple[int, int]] = spans) -> tf.Tensor:
            return tf.constant(spans[ctx.replica_id_in_sync_group], tf.int64)

        def compute(span: tf.Tensor, rows: int = rows) -> tuple[tf.Tensor, ...]:
            start, stop = (int(i) for i in span.numpy())
            if stop > start:
                out = explainer.seam.run_block(job, start, stop)
                out = tuple(out[i] for i in keep)
            else:  # an empty shard computes nothing (some kernels fail on empty batches)
                out = tuple(tf.zeros([0, *spec.shape[1:]], spec.dtype) for spec in specs)
            if gather is not None:  # equal shapes on all replicas for the collective
                pad = rows - (stop - start)
                out = tuple(tf.pad(t, [[0, pad]] + [[0, 0]] * (t.shape.rank - 1)) for t in out)
            return out

        per_replica = strategy.run(
            compute, args=(strategy.experimental_distribute_values_from_function(span_of),)
        )
        if gather is not None:
            flats = gather(*per_replica)
        for i, value in enumerate(per_replica):
            if gather is not None:
                pieces = [flats[i][r * rows : (r + 1) * rows] for r in range(replicas)]
            else:
                pieces = [t.numpy() for t in strategy.experimental_local_results(value)]
            for r, (start, stop) in enumerate(spans):
                if stop > start:
                    outputs[r][i].append(pieces[r][: stop - start])
    merged = [
        np.concatenate([p for r in range(replicas) for p in outputs[r][i]])
        for i in range(len(keep))
    ]
    if return_stderr:
        return merged[0], merged[1], merged[2]
    return merged[0], None, merged[1]


class _Gather:
    """Every replica's copy of per-replica tensors, on every worker, in one compiled call.

    Each tensor is gathered on its own (``strategy.gather`` of a tuple keeps one replica's data
    only), inside one ``tf.function`` (in eager mode every gather would trace a new function).
    """

    def __init__(self, strategy: tf.distribute.Strategy) -> None:
        self.strategy = strategy

        def tfmollify_gather(*values: Any) -> tuple[tf.Tensor, ...]:
            return tuple(strategy.gather(v, axis=0) for v in values)

        self.fn = tf.function(tfmollify_gather, reduce_retracing=True)

    @classmethod
    def of(cls, strategy: tf.distribute.Strategy) -> _Gather:
        """One per strategy, so that its compiled gathers are reused by later calls."""
        gather = _GATHERS.get(strategy)
        if gather is None:
            gather = _GATHERS[strategy] = cls(strategy)
        return gather

    def __call__(self, *values: Any) -> list[np.ndarray]:
        """The replicas' tensors concatenated along axis 0, in replica order, as NumPy arrays."""
        return [t.numpy() for t in self.fn(*values)]

    def agree(self, values: list[int]) -> np.ndarray:
        """Every replica's ``values``: an int64 array ``[replicas, len(values)]``."""
        per_replica = self.strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant([values], tf.int64)
        )
        return self(per_replica)[0]


_GATHERS: weakref.WeakKeyDictionary[tf.distribute.Strategy, _Gather] = weakref.WeakKeyDictionary()


def _check_workers_agree(gather: _Gather, k: int, element: Any, offset: int) -> None:
    """All workers must be at the same batch of the same data (else their results mix)."""
    if element is _END:
        local = [0, 0, 0]
    else:
        inputs, targets = _split_element(element, k)
        crc, size = 0, -1
        for leaf in tf.nest.flatten(inputs):  # one array, or several inputs
            x = np.ascontiguousarray(leaf.numpy() if hasattr(leaf, "numpy") else leaf)
            crc = zlib.crc32(x.tobytes(), crc) if x.dtype != object else crc
            size = int(x.shape[0]) if x.ndim and size < 0 else size
        if targets is not None and not callable(targets):
            t = np.ascontiguousarray(targets.numpy() if hasattr(targets, "numpy") else targets)
            crc = zlib.crc32(t.tobytes(), crc) if t.dtype != object else crc
        local = [1, size, crc]
    seen = gather.agree(local)
    if not (seen == seen[0]).all():
        raise ValueError(
            f"Argument `dataset`: the workers of the strategy see different data at batch {k} "
            f"(after {offset} examples; [has batch, size, checksum] per replica: "
            f"{seen.tolist()}). Every worker must iterate the same batches in the same order: "
            "no unseeded shuffling and no per-worker sharding (explain_dataset splits the work)."
        )


# -- output -----------------------------------------------------------------------------------
def _check_output(output: Any) -> Path | None:
    if output is None:
        return None
    if not isinstance(output, str | os.PathLike):
        raise TypeError(
            f"Argument `output` must be None or a path to a .npy file. Received: output={output!r}"
        )
    path = Path(output)
    if path.suffix != ".npy":
        raise ValueError(
            "Argument `output` must be a path ending in .npy (the attributions are written in "
            f"NumPy's .npy format). Received: output={str(output)!r}"
        )
    if not path.parent.is_dir():
        raise ValueError(
            f"Argument `output`: the folder {str(path.parent)!r} does not exist. Create it first. "
            f"Received: output={str(output)!r}"
        )
    return path


def _stderr_path(path: Path) -> Path:
    return path.with_name(path.stem + "_stderr.npy")


class _Sink:
    """Where results go, batch by batch; this base class discards them."""

    def append(self, rows: np.ndarray) -> None:
        pass

    def finish(self) -> Any:
        return None

    def abort(self) -> None:
        pass


class _Memory(_Sink):
    """Results kept in memory, concatenated at the end."""

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []

    def append(self, rows: np.ndarray) -> None:
        self.parts.append(rows)

    def finish(self) -> np.ndarray:
        return np.concatenate(self.parts)


class _NpyWriter(_Sink):
    """Streams rows to a ``.npy`` file whose length is only known at the end.

    The data go to ``<path>.partial`` after a fixed-size space for the header; the header (the
    NPY 1.0 format, padded with spaces as the format allows) is written last, and the file then
    renamed to ``path``. Memory holds one batch; nothing is copied twice.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.file: IO[bytes] | None = None
        self.dtype: np.dtype | None = None
        self.shape: tuple[int, ...] = ()
        self.rows = 0

    def append(self, rows: np.ndarray) -> None:
        if self.file is None:
            self.file = open(self.partial, "wb")  # closed in finish or abort
            self.file.write(b"\0" * _HEADER_BYTES)
            self.dtype, self.shape = rows.dtype, tuple(rows.shape[1:])
        self.file.write(memoryview(np.ascontiguousarray(rows, self.dtype)).cast("B"))
        self.rows += rows.shape[0]

    def finish(self) -> np.ndarray:
        assert self.file is not None and self.dtype is not None
        self.file.seek(0)
        self.file.write(_npy_header(self.dtype, (self.rows, *self.shape)))
        self.file.close()
        self.file = None
        os.replace(self.partial, self.path)
        return np.load(self.path, mmap_mode="r")

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.partial.unlink(missing_ok=True)


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """An NPY 1.0 header of exactly :data:`_HEADER_BYTES` bytes (``numpy.lib.format``)."""
    fmt = np.lib.format
    text = repr({"descr": fmt.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    room = _HEADER_BYTES - len(fmt.magic(1, 0)) - 2 - 1  # magic, uint16 length, final newline
    if len(text) > room:
        raise ValueError(f"Attributions of shape {shape} have too many dimensions for a file.")
    body = (text + " " * (room - len(text)) + "\n").encode("latin1")
    return fmt.magic(1, 0) + len(body).to_bytes(2, "little") + body


# -- progress ---------------------------------------------------------------------------------
def _num_batches(dataset: Any) -> int | None:
    """The number of batches when it is known without iterating."""
    if isinstance(dataset, tf.data.Dataset):
        n = int(dataset.cardinality())
        return n if n >= 0 else None
    try:
        return len(dataset)
    except TypeError:
        return None

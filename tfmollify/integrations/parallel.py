"""Exported explainers in data-parallel engines: Ray Data, and the same pattern for Beam or Spark.

Explaining a dataset needs no communication between workers: every example's noise depends only
on its seed, and the weight draws are fixed in the export (see :mod:`tfmollify.explainers.export`).
So
many machines can each load the SavedModel once and explain their share of the rows:
:class:`SavedModelExplainer` is that per-worker callable, and :func:`explain_ray_dataset` runs it
with Ray Data's ``map_batches`` in a pool of actors (``pip install "tfmollify[ray]"``).

The same class is the body of an Apache Beam ``DoFn`` (load in ``setup``, call per batch from
``BatchElements``) or of a Spark ``mapInPandas`` function (load once per partition iterator):
construct it on the worker, call it on ``{"inputs": ..., "targets": ..., "seeds": ...}``.

Rows need a ``seeds`` column: a worker cannot know a row's position in the whole dataset. For
the seeds :meth:`tfmollify.Explainer.explain` would use on the whole dataset at once, add
``tfmollify.core.sampling.example_seeds(explainer.seed, n)`` as a column.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tfmollify.integrations import loader

__all__ = ["SavedModelExplainer", "explain_ray_dataset"]

_COLUMNS = ("inputs", "targets", "seeds")


class SavedModelExplainer:
    """Explains batches of rows with an exported explainer, loaded once per worker.

    Args:
        path: A directory written by :func:`tfmollify.export`: ``base/<version>``, or ``base``
            (its highest version, as TF Serving loads it).
        inputs: Column holding the examples ``[b, *input_shape]``.
        targets: Column holding the class indices ``[b]``.
        seeds: Column holding the int64 noise seeds ``[b]``.
        output: Column to write the attributions to.
        stderr: Column for the standard errors, or None to leave them out.

    Raises:
        ValueError: If ``path`` is not an exported explainer
            (:class:`tfmollify.integrations.loader.NotAnExport`, also a ``FileNotFoundError``).

    Example:

    >>> import tempfile, keras, numpy as np
    >>> import tfmollify as tfm
    >>> from tfmollify.integrations.parallel import SavedModelExplainer
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> explainer = tfm.Explainer(model, num_samples=4, seed=0)
    >>> worker = SavedModelExplainer(explainer.export(tempfile.mkdtemp()))
    >>> rows = {"inputs": np.eye(4, dtype="float32")[:2], "targets": np.array([0, 2]),
    ...         "seeds": np.array([5, 6])}
    >>> out = worker(rows)
    >>> sorted(out), out["attributions"].shape
    (['attributions', 'inputs', 'seeds', 'targets'], (2, 4))
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        inputs: str = "inputs",
        targets: str = "targets",
        seeds: str = "seeds",
        output: str = "attributions",
        stderr: str | None = None,
    ) -> None:
        import tensorflow as tf

        loaded = loader.load(path, "path")  # the one loader (the server's too)
        self._fn = loaded.fn
        self._saved = loaded.saved  # keeps the variables alive
        self._rules = loaded.rules
        self._tf = tf
        path = loaded.path
        self.path = path
        self.columns = {"inputs": inputs, "targets": targets, "seeds": seeds}
        self.output = output
        self.stderr = stderr

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Adds the attributions (and optionally standard errors) of the rows to ``batch``.

        Args:
            batch: Columns as arrays (Ray Data's ``batch_format="numpy"``, or a dict of
                pandas columns converted with ``np.stack``).

        Returns:
            ``batch`` with the ``output`` (and ``stderr``) columns added.

        Raises:
            ValueError: If a column is missing, or the rows break a request rule (the message
                :meth:`tfmollify.Explainer.explain` gives for them).
        """
        tf = self._tf
        missing = [c for c in self.columns.values() if c not in batch]
        if missing:
            raise ValueError(
                f"The batch has no column(s) {missing}; it has {sorted(batch)}. Rows need "
                "inputs, targets and seeds (see tfmollify.core.sampling.example_seeds)."
            )
        raw = {
            "inputs": np.stack(batch[self.columns["inputs"]]),
            "targets": np.asarray(batch[self.columns["targets"]]),
            "seeds": np.asarray(batch[self.columns["seeds"]]),
        }
        if self._rules is not None:  # the request rules on the rows as given, before any cast
            self._rules.check(raw, len(raw["inputs"]))
        arrays = {
            "inputs": raw["inputs"].astype(np.float32, copy=False),
            "targets": raw["targets"].astype(np.int32),
            "seeds": raw["seeds"].astype(np.int64),
        }
        got = self._fn(**{k: tf.constant(v) for k, v in arrays.items()})
        out = dict(batch)
        out[self.output] = got["attributions"].numpy()
        if self.stderr is not None:
            out[self.stderr] = got["stderr"].numpy()
        return out


def explain_ray_dataset(
    path: str | os.PathLike,
    dataset: Any,
    *,
    concurrency: int = 2,
    batch_size: int = 64,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    **columns: Any,
) -> Any:
    """Explains a Ray Dataset with an exported explainer in a pool of Ray actors.

    Each actor loads the SavedModel once; rows are explained in batches of ``batch_size``. The
    result equals ``explainer.explain(inputs, targets, seeds=seeds)`` row by row, whatever the
    split into blocks, batches and actors.

    Args:
        path: A directory written by :func:`tfmollify.export`.
        dataset: A ``ray.data.Dataset`` with ``inputs``, ``targets`` and ``seeds`` columns.
        concurrency: Number of actors.
        batch_size: Rows per call of the SavedModel.
        num_cpus: CPUs reserved per actor (Ray's default if None).
        num_gpus: GPUs reserved per actor (none if None).
        **columns: Column names, passed to :class:`SavedModelExplainer`.

    Returns:
        The lazy ``ray.data.Dataset`` with the ``attributions`` column added (``.take_all()``,
        ``.write_parquet(...)`` ... run it).

    Raises:
        ImportError: If Ray Data is not installed.
        ValueError: For a bad ``path``, ``concurrency`` or ``batch_size``, or missing columns.
    """
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError(
            'explain_ray_dataset needs Ray Data: pip install "tfmollify[ray]"'
        ) from None
    for name, value in (("concurrency", concurrency), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Argument `{name}` must be an int >= 1. Received: {value!r}")
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ValueError(
            f"Argument `path` must be an exported explainer (a directory with saved_model.pb, "
            f"e.g. 'base/1'). Received: path={path!r}"
        )
    wanted = [columns.get(c, c) for c in _COLUMNS]
    have = dataset.columns(fetch_if_missing=True) or []
    missing = [c for c in wanted if c not in have]
    if missing:
        raise ValueError(
            f"Argument `dataset` has no column(s) {missing}; it has {have}. Add seeds with "
            "tfmollify.core.sampling.example_seeds(seed, n) for position-derived seeds."
        )
    resources = {}
    if num_cpus is not None:
        resources["num_cpus"] = num_cpus
    if num_gpus is not None:
        resources["num_gpus"] = num_gpus
    return dataset.map_batches(
        SavedModelExplainer,
        fn_constructor_args=(path,),
        fn_constructor_kwargs=columns,
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=concurrency,
        **resources,
    )

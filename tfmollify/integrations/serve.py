"""A live explanation server: an exported explainer behind KServe's V1 protocol.

KServe's V1 protocol is TensorFlow Serving's REST API, with an ``:explain`` verb beside
``:predict``. :func:`serve` loads an export written by :func:`tfmollify.export` (its
``serving_default`` signature, see :mod:`tfmollify.explainers.export`) and answers::

    GET  /v1/models/<name>            {"name": <name>, "ready": true} once loaded
    POST /v1/models/<name>:explain    {"predictions": [{"attributions": ..., ...}, ...]}
    POST /v1/models/<name>:predict    the same answer

Requests take the signature's inputs in either TF Serving body format: row
``{"instances": [{"inputs": ..., "targets": 2, "seeds": 11}, ...]}`` or columnar
``{"inputs": {"inputs": [...], "targets": [...], "seeds": [...]}}`` (an optional
``"signature_name": "serving_default"`` in both). Both are answered in the row format a TF
Serving server gives for the export (one object per example, one key per signature output);
TF Serving itself would answer a columnar request in columnar form (``{"outputs": ...}``).
The body is decoded here (:class:`Export`), not by KServe, so the non-standard ``NaN`` and
``Infinity`` that TF Serving's JSON accepts reach the input check and get a 400 naming the input.
The answer is the export's own graph, so it equals
``explainer.explain_full(inputs, targets, seeds=seeds)`` for the same seeds (to float32
rounding). A bad request (malformed JSON, unknown or missing inputs, wrong shapes or dtypes,
NaN/Inf inputs, targets out of range) gets status 400 with ``{"error": "<message naming the
input>"}`` and the server keeps serving.

:func:`serve` needs the ``kserve`` extra (``pip install "tfmollify[kserve]"``, KServe 0.21);
:class:`Export` needs only TensorFlow. ``kserve.ModelServer.start`` binds every interface
(``0.0.0.0``, kserve#4558), so :func:`serve` runs KServe's REST server (the same FastAPI app,
data plane and model repository) on a socket bound to ``host`` instead, without the gRPC server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import logging
import math
import re
import signal
import socket
import sys
from typing import Any

import numpy as np

from tfmollify.adapter import request as request_lib
from tfmollify.explainers.export import SIGNATURE_KEY, warmup_request
from tfmollify.integrations import guard as guard_lib
from tfmollify.integrations import loader, parsing

__all__ = [
    "DEFAULT_MAX_BATCH",
    "KSERVE_INSTALL",
    "NO_EXAMPLES",
    "SLICE_EXAMPLES",
    "Export",
    "RequestError",
    "Stopped",
    "TooManyExamples",
    "encode_json",
    "load_kserve",
    "model_class",
    "run_in_slices",
    "serve",
    "v2_response",
    "warm_up",
]

KSERVE_INSTALL = 'pip install "tfmollify[kserve]"'
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RequestError(ValueError):
    """A request the export cannot answer (answered with HTTP status 400)."""


class TooManyExamples(RequestError):
    """A request with more examples than the server's ``max_batch`` (answered with 413)."""

#: ``--max-batch`` by default
DEFAULT_MAX_BATCH = 256
#: The server's answer (400) to a request without examples, in either body format
NO_EXAMPLES = ("The request has no examples. Send one example or more (\"instances\" with one "
               "object per example, or \"inputs\" with one row per example).")


def load_kserve() -> Any:
    """Imports ``kserve``, or raises an ImportError that names the extra to install.

    KServe parses ``sys.argv`` when it is imported (``kserve.model_server``); it sees an empty
    command line here, so that the arguments of the program importing it are not taken for its.

    Returns:
        The ``kserve`` module.

    Raises:
        ImportError: If KServe is not installed.

    Example:

    >>> load_kserve().Model.__name__  # doctest: +SKIP
    'Model'
    """
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve
    except ImportError as exc:
        raise ImportError(
            f"The explanation server needs KServe, which is not installed ({exc}). Install the "
            f"extra: {KSERVE_INSTALL}"
        ) from exc
    finally:
        sys.argv = argv
    return kserve


@dataclasses.dataclass(frozen=True)
class _Decoded:
    """A decoded request: one NumPy array per signature input (same batch size), and for the
    Open Inference Protocol (V2) its request (the answer follows its format)."""

    arrays: dict[str, np.ndarray]
    v2: Any = None


class Export:
    """An exported explainer, loaded once, with TF Serving's JSON rules for its signature.

    Args:
        export_dir: The directory given to ``explainer.export`` (its highest numbered version
            is loaded, as TF Serving does) or one version directory.

    Attributes:
        path: The version directory loaded.
        inputs: ``{name: tf.TensorSpec}`` of the signature's inputs.
        outputs: The signature's output names (sorted).

    Raises:
        NotAnExport: If ``export_dir`` holds no SavedModel (a ``FileNotFoundError`` and a
            ``ValueError``; :class:`tfmollify.integrations.loader.NotAnExport`).
        ValueError: If the SavedModel has no ``serving_default`` signature.

    Example:

    >>> import json, tempfile, keras, numpy as np
    >>> import tfmollify as tfm
    >>> from tfmollify.integrations.serve import Export
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> explainer = tfm.SmoothGrad(model, num_samples=4, seed=0)
    >>> export = Export(explainer.export(tempfile.mkdtemp()))
    >>> body = {"instances": [{"inputs": [1.0, 2.0, 3.0], "targets": 1, "seeds": 7}]}
    >>> answer = export.answer(json.dumps(body).encode())
    >>> sorted(answer["predictions"][0])
    ['attributions', 'finite_samples', 'stderr']
    >>> want = explainer.explain_full(np.float32([[1, 2, 3]]), [1], seeds=[7])
    >>> bool(np.allclose(answer["predictions"][0]["attributions"], want.attributions[0]))
    True
    >>> export.answer(b'{"instances": [{"inputs": [1.0, NaN, 3.0], "targets": 1, "seeds": 7}]}')
    Traceback (most recent call last):
    ...
    tfmollify.integrations.serve.RequestError: Argument `inputs` contains NaN or Inf values...
    """

    def __init__(self, export_dir: Any, *, max_batch: int | None = None) -> None:
        loaded = loader.load(export_dir)
        self.max_batch = max_batch
        self.path = loaded.path
        self._loaded = loaded.saved  # keeps the variables alive
        self._fn = loaded.fn
        self.inputs: dict[str, Any] = loaded.inputs
        self.outputs: list[str] = loaded.outputs
        self.rules = loaded.rules

    # -- decoding ------------------------------------------------------------------------------
    def decode(self, body: Any, loads: Any = None) -> dict[str, np.ndarray]:
        """The signature's inputs from a request body in either TF Serving format.

        Args:
            body: The raw body (bytes or str, JSON; ``NaN`` and ``Infinity`` are read, as TF
                Serving does, and then rejected by the input check) or the parsed JSON object.
            loads: What parses a raw body (default: in this process; the server passes
                :meth:`tfmollify.integrations.parsing.Parsers.loads` for large bodies).

        Returns:
            ``{name: array}`` for every signature input, in the signature's dtypes, all with the
            same batch size.

        Raises:
            RequestError: For malformed JSON, an unknown body layout or signature name, unknown
                or missing inputs, values of the wrong shape or type, NaN/Inf inputs or a batch
                size that differs between inputs.
        """
        if isinstance(body, bytes | bytearray | memoryview | str):
            try:
                body = (loads or _loads)(body)
            except RecursionError:
                raise RequestError(
                    "The request body is nested too deeply to be a request. Send "
                    "{\"instances\": [...]} (row format) or {\"inputs\": {...}} (columnar)."
                ) from None
            except (ValueError, UnicodeDecodeError) as exc:
                raise RequestError(
                    f"The request body is not JSON ({exc}). Send {{\"instances\": [...]}} (row "
                    "format) or {\"inputs\": {...}} (columnar format)."
                ) from None
        if not isinstance(body, dict):
            raise RequestError(
                "The request body must be a JSON object: {\"instances\": [...]} or "
                f"{{\"inputs\": {{...}}}}. Received: a JSON {type(body).__name__}."
            )
        extra = sorted(set(body) - {"instances", "inputs", "signature_name"})
        if extra or ("instances" in body) == ("inputs" in body):
            raise RequestError(
                "The request body must have exactly one of \"instances\" (row format) or "
                "\"inputs\" (columnar format), and optionally \"signature_name\". Received keys: "
                f"{sorted(body)}."
            )
        name = body.get("signature_name", SIGNATURE_KEY)
        if name != SIGNATURE_KEY:
            raise RequestError(
                f"\"signature_name\" must be {SIGNATURE_KEY!r} (the export's only signature). "
                f"Received: {name!r}."
            )
        if "instances" in body:
            columns, batch = self._columns_from_rows(body["instances"])
        else:
            columns, batch = self._check_names(body["inputs"], "\"inputs\""), None
        if batch is None and any(isinstance(v, list) and not v for v in columns.values()):
            batch = 0  # an empty column: no examples, as an empty "instances" list
        arrays = {k: self._array(k, columns[k], batch) for k in self.inputs}
        self._check_batch(arrays, batch)
        if self.rules is not None and batch != 0:  # explain()'s checks, order and messages
            _as_request_error(self.rules.check, arrays, self._batch(arrays))
            arrays = {k: self._typed(k, a) for k, a in arrays.items()}
        sizes = {k: a.shape[0] for k, a in arrays.items()}
        if len(set(sizes.values())) > 1:
            raise RequestError(
                "Every input needs the same number of examples (one target and one seed per "
                f"example). Received: {', '.join(f'`{k}` {n}' for k, n in sizes.items())}."
            )
        return arrays

    def _check_batch(self, arrays: dict[str, np.ndarray], batch: int | None) -> None:
        """The server's rule on examples per request (the same in both body formats): at
        most ``max_batch``. An empty request decodes to empty arrays in both formats."""
        n = batch if batch is not None else max(
            (len(a) if a.ndim else 1 for a in arrays.values()), default=0)
        if self.max_batch is not None and n > self.max_batch:
            raise TooManyExamples(
                f"The request has {n} examples, over the server's limit of {self.max_batch} "
                "per request (--max-batch). Split it into smaller requests."
            )

    def _ruled(self, name: str) -> bool:
        """Whether the request rules check input ``name`` (then decoding only parses it)."""
        return self.rules is not None and (
            name in ("targets", "seeds") or name in dict(self.rules.finite))

    def _batch(self, arrays: dict[str, np.ndarray]) -> int:
        """The examples of a request: the first model input's rows."""
        first = next(k for k in self.inputs if k not in ("targets", "seeds"))
        return len(arrays[first]) if arrays[first].ndim else 0

    def _typed(self, name: str, raw: np.ndarray) -> np.ndarray:
        """A checked input in the signature's dtype (seeds: as the rules read them)."""
        if name == "seeds":
            return request_lib.seeds(raw, 0, len(raw))
        dtype = np.dtype(self.inputs[name].dtype.as_numpy_dtype)
        out = raw.astype(dtype)
        if self._ruled(name):
            self._signature_shape(name, out)
        return out

    def _signature_shape(self, name: str, raw: np.ndarray) -> None:
        """``raw`` against the signature's shape for ``name``."""
        spec = self.inputs[name]
        fixed = [d for d in spec.shape[1:]]
        if raw.ndim != len(spec.shape) or any(
            d is not None and d != n for d, n in zip(fixed, raw.shape[1:], strict=True)
        ):
            each = f"; each example is {_shape(raw.shape[1:])[1:-1] or 'a scalar'}"
            raise RequestError(
                f"`{name}` has shape {_shape(raw.shape)}{each if raw.ndim else ''}; the export "
                f"takes {_shape(spec.shape)} ({spec.dtype.name}, one row per example)."
            )

    def _check_names(self, given: Any, where: str) -> dict[str, Any]:
        if not isinstance(given, dict):
            raise RequestError(
                f"{where} must be an object with one entry per input: {self._names()}. "
                f"Received: a JSON {type(given).__name__}."
            )
        unknown = sorted(set(given) - set(self.inputs))
        if unknown:
            raise RequestError(
                f"{where} names unknown input(s) {', '.join(f'`{k}`' for k in unknown)}; the "
                f"export takes {self._names()}."
            )
        missing = [k for k in self.inputs if k not in given]
        if missing:
            raise RequestError(
                f"{where} lacks input(s) {', '.join(f'`{k}`' for k in missing)}; the export "
                f"takes {self._names()}."
            )
        return given

    def _columns_from_rows(self, instances: Any) -> tuple[dict[str, list], int]:
        if not isinstance(instances, list):
            raise RequestError(
                "\"instances\" must be a list with one object per example. Received: a JSON "
                f"{type(instances).__name__}."
            )
        for i, instance in enumerate(instances):
            self._check_names(instance, f"instances[{i}]")
        return {k: [instance[k] for instance in instances] for k in self.inputs}, len(instances)

    def _names(self) -> str:
        return ", ".join(
            f"`{k}` ({s.dtype.name} {_shape(s.shape)})" for k, s in self.inputs.items()
        )

    def _array(self, name: str, value: Any, batch: int | None) -> np.ndarray:
        """One input as an array of the signature's dtype and shape, or a RequestError."""
        spec = self.inputs[name]
        dtype = np.dtype(spec.dtype.as_numpy_dtype)
        want = _shape(spec.shape)
        if batch == 0:
            return np.zeros((0, *[d or 0 for d in spec.shape[1:]]), dtype)
        try:
            raw = np.asarray(value)
        except (ValueError, OverflowError):
            raw = None
        if raw is not None and raw.dtype == object and dtype.kind in "iu" and all(
            isinstance(v, int) and not isinstance(v, bool) for v in raw.ravel()
        ):
            info = np.iinfo(dtype)
            raise RequestError(
                f"`{name}` values must fit {dtype.name}: between {info.min} and {info.max}."
            )
        if raw is None or raw.dtype.kind not in "iuf":
            raise RequestError(
                f"`{name}` must be numbers nested as {want} ({dtype.name}); it holds something "
                "else (null, text, true/false, an object, or lists of unequal lengths)."
            )
        if self._ruled(name):  # parsed only: the request rules check it, as explain() does
            if name == "targets" and raw.dtype.kind == "f":
                _as_request_error(request_lib.targets, value, len(raw) if raw.ndim else 1, (1,))
            return raw.astype(np.float64) if dtype.kind == "f" and raw.dtype.kind in "iu" else raw
        self._signature_shape(name, raw)
        if dtype.kind in "iu":
            if raw.dtype.kind == "f" and not (
                np.isfinite(raw).all() and (raw == np.round(raw)).all()
            ):
                raise RequestError(f"`{name}` must hold integers ({dtype.name}).")
            info = np.iinfo(dtype)
            if raw.size and (raw.min() < info.min or raw.max() > info.max):
                raise RequestError(
                    f"`{name}` values must fit {dtype.name}: between {info.min} and {info.max}."
                )
            return raw.astype(dtype)
        out = raw.astype(dtype)
        if not np.isfinite(out).all():
            raise RequestError(f"`{name}` holds NaN or Inf. Send finite numbers.")
        return out

    def output_specs(self) -> dict[str, Any]:
        """``{name: tf.TensorSpec}`` of the signature's outputs."""
        import tensorflow as tf

        outs = self._fn.structured_outputs
        return {k: tf.TensorSpec(outs[k].shape, outs[k].dtype, k) for k in self.outputs}

    # -- running and encoding ------------------------------------------------------------------
    def run(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The signature on decoded inputs (thread-safe: calls share nothing).

        Args:
            arrays: What :meth:`decode` returns.

        Returns:
            ``{output name: array}``.

        Raises:
            RequestError: If the graph's checks reject the request (e.g. targets out of range).
        """
        import tensorflow as tf

        if self.rules is not None:  # the eager path's checks and messages, before the graph's
            batch = len(next(iter(arrays.values())))
            _as_request_error(self.rules.check, arrays, batch)
        feeds = {k: tf.constant(arrays[k], spec.dtype) for k, spec in self.inputs.items()}
        try:
            out = self._fn(**feeds)
        except tf.errors.InvalidArgumentError as exc:
            raise RequestError(_assertion_message(exc.message)) from None
        return {k: v.numpy() for k, v in out.items()}

    def encode(self, outputs: dict[str, np.ndarray]) -> dict[str, list]:
        """TF Serving's row-format answer: ``{"predictions": [one object per example]}``.

        Args:
            outputs: What :meth:`run` returns.

        Returns:
            ``{"predictions": [{output name: value of example b}, ...]}``.
        """
        names = self.outputs
        columns = [outputs[k].tolist() for k in names]
        batch = len(columns[0]) if columns else 0
        return {"predictions": [
            {k: column[b] for k, column in zip(names, columns, strict=True)}
            for b in range(batch)
        ]}

    def answer(self, body: Any) -> dict[str, list]:
        """``encode(run(decode(body)))``: the answer to one request body.

        Args:
            body: As for :meth:`decode`.

        Returns:
            As :meth:`encode`.

        Raises:
            RequestError: As :meth:`decode` and :meth:`run`.
        """
        return self.encode(self.run(self.decode(body)))


def _loads(body: Any) -> Any:
    """JSON text to Python: orjson where installed (KServe brings it; several times faster),
    else, and for what orjson refuses (TF Serving's ``NaN``/``Infinity``), the standard
    library."""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    try:
        import orjson
    except ImportError:
        return json.loads(raw)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def _as_request_error(rule: Any, *args: Any) -> Any:
    """``rule(*args)``, its ValueError or TypeError raised as a :class:`RequestError` with the
    same message."""
    try:
        return rule(*args)
    except (ValueError, TypeError) as exc:
        raise RequestError(str(exc)) from None


def _shape(shape: Any) -> str:
    dims = ["batch" if d is None and i == 0 else str(d) for i, d in enumerate(shape)]
    return "[" + ", ".join(dims) + "]"


def _assertion_message(message: str) -> str:
    """The readable part of a ``tf.debugging.assert_*`` failure: its bracketed message."""
    found = re.search(r"assertion failed: \[([^\]]*)\]", message)
    text = found.group(1) if found else message.strip().splitlines()[0]
    return text[:500]


_MODEL_CLASS: Any = None


def model_class() -> type:
    """The ``kserve.Model`` subclass serving an :class:`Export` (built on first use, so that
    this module imports without KServe).

    Its ``preprocess`` decodes the raw body into the signature's inputs (400 on a bad request),
    ``explain`` and ``predict`` run the export in a thread pool (``max_threads`` calls at once;
    TensorFlow releases the GIL), and both answer in TF Serving's row format. It also runs under
    KServe's own ``kserve.ModelServer().start([model])`` (which listens on every interface and
    decodes JSON bodies itself; ``preprocess`` takes those too).

    Returns:
        The class ``ExplainerModel(name, export_dir, *, max_threads=4)``; ``load()`` loads the
        export and marks the model ready.

    Raises:
        ImportError: If KServe is not installed (naming the ``kserve`` extra).

    Example:

    >>> ExplainerModel = model_class()  # doctest: +SKIP
    >>> model = ExplainerModel("explainer", "serving/explainer")  # doctest: +SKIP
    >>> model.load()  # doctest: +SKIP
    True
    """
    global _MODEL_CLASS
    if _MODEL_CLASS is not None:
        return _MODEL_CLASS
    _MODEL_CLASS = _build_model_class(load_kserve())
    return _MODEL_CLASS


def _decode(export: Export, payload: Any, parsers: parsing.Parsers) -> _Decoded:
    """A request's arrays (V1 bodies as bytes or parsed; V2 requests KServe decoded, with the
    same rules); large bodies parsed in the helper processes.

    Raises:
        RequestError: A bad request, or one without examples (:data:`NO_EXAMPLES`).
        TooManyExamples: Over ``max_batch``.
    """
    from kserve.protocol.infer_type import InferRequest

    v2 = payload if isinstance(payload, InferRequest) else None
    if v2 is not None:
        payload = {"inputs": _v2_columns(v2)}
    large = isinstance(payload, bytes | bytearray) and (
        len(payload) >= parsing.PARSE_IN_PROCESS_BELOW)
    arrays = export.decode(payload, parsers.loads if large else None)
    if not len(next(iter(arrays.values()))):
        raise RequestError(NO_EXAMPLES)
    return _Decoded(arrays, v2)


def _work(export: Export, decoded: _Decoded, call: Any, name: str) -> Any:
    """A decoded request computed in slices (stopping when ``call`` says) and encoded: V1
    JSON bytes, or the V2 answer."""
    outputs = run_in_slices(export, decoded.arrays, call)
    if decoded.v2 is not None:
        return v2_response(name, decoded.v2, outputs)
    return encode_json(export, outputs)


def _invalid(message: str) -> Exception:
    """KServe's ``InvalidInput`` (answered 400 by the server's handler)."""
    from kserve.errors import InvalidInput

    return InvalidInput(message)


class _ExplainerMethods:
    """What ``ExplainerModel`` adds to ``kserve.Model`` (see :func:`model_class`): a tfmollify
    export served by KServe (V1 ``:explain``/``:predict`` and V2 ``infer``)."""

    def __init__(self, name: str, export_dir: Any, *, max_threads: int = 4,
                 max_batch: int | None = None) -> None:
        super().__init__(name)
        self.export_dir = export_dir
        self.max_threads = max_threads
        self.max_batch = max_batch
        self.export: Export | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._parsers = parsing.Parsers(max_threads)  # large bodies, off the GIL

    def load(self) -> bool:
        self.ready = False
        export = Export(self.export_dir, max_batch=self.max_batch)
        warm_up(export)  # before ready: the first client request is not the slow one
        self.export = export
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self.max_threads, thread_name_prefix=f"tfmollify-{self.name}"
        )
        self.ready = True
        return self.ready

    async def preprocess(self, payload: Any, headers: Any = None) -> Any:
        if self.export is None:
            raise _invalid(f"model {self.name!r} is not loaded")
        loop = asyncio.get_running_loop()  # JSON parsing off the event loop too
        try:
            return await loop.run_in_executor(
                self._pool, _decode, self.export, payload, self._parsers)
        except TooManyExamples:
            raise
        except RequestError as exc:
            raise _invalid(str(exc)) from None

    async def _answer(self, payload: Any) -> Any:
        if not isinstance(payload, _Decoded):  # a caller that skipped preprocess
            payload = await self.preprocess(payload)
        loop = asyncio.get_running_loop()
        try:  # the answer computed and encoded in the pool, off the event loop
            return await loop.run_in_executor(
                self._pool, _work, self.export, payload, guard_lib.current(), self.name)
        except RequestError as exc:
            raise _invalid(str(exc)) from None

    async def explain(self, payload: Any, headers: Any = None) -> bytes:
        return await self._answer(payload)

    async def predict(
        self, payload: Any, headers: Any = None, response_headers: Any = None
    ) -> Any:
        answer = await self._answer(payload)
        if response_headers is not None and isinstance(answer, bytes):
            response_headers["content-type"] = "application/json"
        return answer

    def get_input_types(self) -> list[dict]:
        """The V2 metadata of the signature's inputs (``GET /v2/models/<name>``)."""
        return [_tensor_metadata(k, s) for k, s in self.export.inputs.items()]

    def get_output_types(self) -> list[dict]:
        """The V2 metadata of the signature's outputs."""
        return [_tensor_metadata(k, s) for k, s in self.export.output_specs().items()]

    def stop(self) -> None:
        self._parsers.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        super().stop()



def _build_model_class(kserve: Any) -> type:
    """Define the ``ExplainerModel`` subclass of ``kserve.Model`` (see :func:`model_class`)."""

    class ExplainerModel(_ExplainerMethods, kserve.Model):
        """A tfmollify export served by KServe (V1 protocol: ``:explain`` and ``:predict``;
        V2: ``infer``)."""

    return ExplainerModel


_V2_TYPES = {"float32": "FP32", "float64": "FP64", "float16": "FP16", "int32": "INT32",
             "int64": "INT64", "int16": "INT16", "int8": "INT8", "uint8": "UINT8",
             "bool": "BOOL"}


def _tensor_metadata(name: str, spec: Any) -> dict:
    """The Open Inference Protocol's description of one tensor (-1: any size)."""
    return {"name": name, "datatype": _V2_TYPES.get(spec.dtype.name, spec.dtype.name.upper()),
            "shape": [-1 if d is None else int(d) for d in spec.shape]}


def _v2_columns(request: Any) -> dict[str, Any]:
    """A V2 request's tensors by name (as NumPy arrays), for :meth:`Export.decode`."""
    from kserve.errors import InvalidInput

    columns = {}
    for tensor in request.inputs:
        try:
            columns[tensor.name] = tensor.as_numpy()
        except Exception as exc:  # KServe's own message about the tensor's data
            raise InvalidInput(f"Input `{tensor.name}`: {exc}") from None
    return columns


def v2_response(name: str, request: Any, outputs: dict[str, np.ndarray]) -> Any:
    """The Open Inference Protocol's answer: one output tensor per signature output, binary
    where the request asked for it (``binary_data_output``, or an output's ``binary_data``)."""
    from kserve.protocol.infer_type import InferOutput, InferResponse

    binary = bool(request.use_binary_outputs)
    asked = {o.name: o for o in (request.request_outputs or [])}
    if not binary and not any(o.binary_data for o in asked.values()):
        return _v2_json(name, request, outputs)
    tensors = []
    for key in sorted(outputs):
        value = np.ascontiguousarray(outputs[key])
        out = InferOutput(key, list(value.shape), _V2_TYPES.get(value.dtype.name, "FP32"))
        wanted = asked.get(key)
        own = None if wanted is None else wanted.binary_data
        out.set_data_from_numpy(value, binary_data=binary if own is None else bool(own))
        tensors.append(out)
    return InferResponse(response_id=request.id or "", model_name=name, infer_outputs=tensors,
                         use_binary_outputs=binary)


def _v2_json(name: str, request: Any, outputs: dict[str, np.ndarray]) -> bytes:
    """The V2 answer in JSON, encoded here (orjson, NumPy in bulk) rather than by KServe on
    the event loop; the same fields as KServe's ``InferResponse.to_rest``."""
    import orjson

    tensors = [{"name": k, "shape": list(outputs[k].shape),
                "datatype": _V2_TYPES.get(outputs[k].dtype.name, "FP32"), "parameters": None,
                "data": np.ascontiguousarray(outputs[k]).ravel()} for k in sorted(outputs)]
    return orjson.dumps({"model_name": name, "model_version": None, "id": request.id or "",
                         "parameters": None, "outputs": tensors},
                        option=orjson.OPT_SERIALIZE_NUMPY)


#: The most examples the server computes in one call of the signature: between slices it checks
#: whether the client is still there and the deadline has not passed
SLICE_EXAMPLES = 8


class Stopped(RuntimeError):
    """A request's work stopped between slices: its client left (499) or its deadline passed
    (504)."""

    def __init__(self, reason: str, done: int, total: int) -> None:
        self.reason, self.status = reason, 504 if reason == "deadline" else 499
        what = ("its deadline passed (--timeout-s, or the X-Timeout-S header)"
                if reason == "deadline" else "the client disconnected")
        super().__init__(f"The request was stopped after {done} of {total} examples: {what}.")


def run_in_slices(export: Export, arrays: dict[str, np.ndarray], call: Any = None,
                  size: int = SLICE_EXAMPLES) -> dict[str, np.ndarray]:
    """:meth:`Export.run` on slices of at most ``size`` examples, checking ``call`` (a
    :class:`tfmollify.integrations.guard.Call`, or None) before each. Each example's noise
    depends only on its seed, so the answer equals one call on all of them.

    Raises:
        Stopped: When the call says stop (a disconnect, or the deadline).
        RequestError: As :meth:`Export.run`.
    """
    total = len(next(iter(arrays.values())))
    parts = []
    for start in range(0, max(total, 1), size):
        reason = None if call is None else call.stop_reason()
        if reason is not None:
            raise Stopped(reason, start, total)
        parts.append(export.run({k: v[start:start + size] for k, v in arrays.items()}))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def encode_json(export: Export, outputs: dict[str, np.ndarray]) -> bytes:
    """:meth:`Export.encode`'s answer as JSON bytes (orjson, NumPy in bulk: float32 values in
    their shortest form, which parse back to the same float32)."""
    import orjson

    names = export.outputs
    batch = len(outputs[names[0]]) if names else 0
    rows = [{k: outputs[k][b] for k in names} for b in range(batch)]
    return orjson.dumps({"predictions": rows}, option=orjson.OPT_SERIALIZE_NUMPY)


def warm_up(export: Export) -> None:
    """Runs the export's signature once on a synthetic request of one example
    (:func:`tfmollify.explainers.export.warmup_request`, the export's warmup records' rule), so
    that the graph's first-call work is done before the server says it is ready."""
    input_range = None if export.rules is None else export.rules.input_range
    models = {k: s for k, s in export.inputs.items() if k not in ("targets", "seeds")}
    try:
        export.run(warmup_request(models, 1, input_range))
    except RequestError:  # a model that rejects synthetic inputs: the first request warms it
        pass


def _handlers(app: Any) -> None:
    """The server's answers to bad requests: 400 (413 for too many examples) with
    ``{"error": ...}``, logged at WARNING in one line (KServe logs each with a traceback)."""
    from fastapi.responses import JSONResponse
    from kserve.errors import InvalidInput

    log = logging.getLogger("tfmollify.serve")

    async def bad_request(request: Any, exc: Exception) -> Any:
        status = 413 if isinstance(exc, TooManyExamples) else 400
        log.warning("%d %s: %s", status, request.url.path, str(exc).splitlines()[0][:300])
        return JSONResponse(status_code=status, content={"error": str(exc)})

    async def stopped(request: Any, exc: Stopped) -> Any:
        log.warning("%d %s: %s", exc.status, request.url.path, exc)
        return JSONResponse(status_code=exc.status, content={"error": str(exc)})

    app.add_exception_handler(InvalidInput, bad_request)
    app.add_exception_handler(TooManyExamples, bad_request)
    app.add_exception_handler(Stopped, stopped)


def _raw_body_dataplane(kserve: Any) -> type:
    """A data plane that hands V1 JSON bodies to ``preprocess`` as they came (bytes): KServe's
    own decoding (orjson) refuses the ``NaN``/``Infinity`` that TF Serving reads, with a message
    that names no input."""
    from cloudevents.sdk.converters.util import has_binary_headers
    from kserve.constants.constants import PredictorProtocol
    from kserve.protocol.dataplane import DataPlane

    v1 = PredictorProtocol.REST_V1.value

    class RawBodyDataPlane(DataPlane):
        def decode(self, body, headers, protocol_version=v1, model_name=None):
            cloudevent = bool(headers) and has_binary_headers(headers)
            if protocol_version.lower() == v1 and isinstance(body, bytes) and not cloudevent:
                return body, {}
            return super().decode(body, headers, protocol_version, model_name)

    return RawBodyDataPlane


def serve(
    export_dir: Any,
    *,
    name: str = "explainer",
    host: str = "127.0.0.1",
    port: int = 8080,
    max_threads: int = 4,
    max_body_mb: float = 32.0,
    max_batch: int | None = None,
    read_timeout_s: float = 30.0,
    grace_s: float = 20.0,
    timeout_s: float | None = 120.0,
    admin_token_file: Any = None,
    token_file: Any = None,
) -> None:
    """Serves an exported explainer over HTTP with KServe until SIGTERM or SIGINT.

    Call it from the main thread (it takes over SIGTERM and SIGINT while it runs).

    ``GET /v1/models/<name>`` answers ready once the export is loaded;
    ``POST /v1/models/<name>:explain`` and ``:predict`` answer requests in either TF Serving
    body format (see the module docstring). SIGTERM (or SIGINT) stops accepting connections,
    lets requests in flight finish (up to ``grace_s``) and returns.

    In front of the model a :class:`~tfmollify.integrations.guard.Guard` enforces the limits
    before any work: a body over ``max_body_mb`` gets 413 (from ``Content-Length``, or as soon
    as a streamed body passes it), a request with more than ``max_batch`` examples gets 413, a
    body not received within ``read_timeout_s`` gets 408. The model-repository endpoints
    (load/unload) answer 404 unless an admin token is set (``TFMOLLIFY_ADMIN_TOKEN`` or
    ``admin_token_file``), then 401 without it; an inference token (``TFMOLLIFY_TOKEN`` or
    ``token_file``) makes every inference request need ``Authorization: Bearer <token>``.
    Health, readiness and metadata stay open; readiness answers 503 until the export is loaded
    and warmed up (one synthetic request), and after an unload. The work runs on slices of
    :data:`SLICE_EXAMPLES` examples: a client that disconnects stops its work at the next
    slice, and a request past ``timeout_s`` gets 504.

    Args:
        export_dir: The directory given to ``explainer.export`` (its highest version is served)
            or one version directory.
        name: The model name in the URLs (letters, digits, ``_``, ``.``, ``-``).
        host: The address to listen on: ``127.0.0.1`` (this machine only, the default) or e.g.
            ``0.0.0.0`` in a container.
        port: The TCP port (``0``: any free port; the URL printed on stdout names it).
        max_threads: Requests computed at once.
        max_body_mb: The largest request body, in MB (2**20 bytes).
        max_batch: The most examples per request (None: :data:`DEFAULT_MAX_BATCH`, 256).
        read_timeout_s: Seconds to receive a whole request body.
        grace_s: Seconds that requests in flight get to finish after SIGTERM.
        timeout_s: Each request's deadline (None: none); a request may lower its own with the
            header ``X-Timeout-S``. Past it, the work stops at the next slice of
            :data:`SLICE_EXAMPLES` examples and the answer is 504.
        admin_token_file: A file whose first line is the admin token (else the environment's
            ``TFMOLLIFY_ADMIN_TOKEN``; neither: the control plane is off).
        token_file: A file whose first line is the inference token (else ``TFMOLLIFY_TOKEN``;
            neither: inference needs no token).

    Raises:
        ImportError: If KServe is not installed (naming the ``kserve`` extra).
        ValueError: For a bad ``name``, ``port`` or ``max_threads``, or an export without the
            ``serving_default`` signature.
        NotAnExport: If ``export_dir`` holds no SavedModel (a ``FileNotFoundError`` and a
            ``ValueError``; :class:`tfmollify.integrations.loader.NotAnExport`).
        OSError: If ``host:port`` cannot be bound (e.g. the port is in use).

    Example:

    >>> from tfmollify.integrations.serve import serve
    >>> serve("serving/explainer", port=8080)  # doctest: +SKIP
    """
    _check_address(name, host, port, max_threads)
    limits = _limits(max_body_mb, read_timeout_s, grace_s, admin_token_file, token_file,
                     timeout_s)
    max_batch = _max_batch(max_batch)
    kserve = load_kserve()
    import uvicorn

    model = model_class()(name, export_dir, max_threads=max_threads, max_batch=max_batch)
    model.load()  # a bad export fails here, before the port is taken
    sock = _bind(host, port)
    stopped: list[int] = []
    previous: dict[int, Any] = {}
    try:
        server = kserve.ModelServer(http_port=port, enable_grpc=False, workers=1)
        server.dataplane = _raw_body_dataplane(kserve)(model_registry=server.registered_models)
        server.register_model(model)
        model.start()
        bound = sock.getsockname()[:2]
        config = _guarded_config(server, model, limits, bound[1], grace_s)
        # uvicorn stops gracefully on SIGTERM/SIGINT and raises the signal again once done;
        # these handlers take that second one, so the process ends normally (status 0)
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda s, _frame: stopped.append(s))
        url = f"http://{_url_host(bound[0])}:{bound[1]}/v1/models/{name}"
        print(f"tfmollify: serving {model.export.path} at {url} (:explain, :predict; "
              f"{_said(limits, max_batch)})", flush=True)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        model.stop()
    if stopped:
        print(f"tfmollify: stopped ({signal.Signals(stopped[0]).name})", flush=True)


def _check_address(name: Any, host: Any, port: Any, max_threads: Any) -> None:
    """``serve``'s name, address and thread count, checked before anything loads."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            "Argument `name` must be a model name of letters, digits, '_', '.' and '-' "
            f"(it is part of the URL /v1/models/<name>). Received: name={name!r}"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"Argument `port` must be an int in [0, 65535]. Received: port={port!r}")
    if isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1:
        raise ValueError(
            f"Argument `max_threads` must be an int >= 1. Received: max_threads={max_threads!r}"
        )
    if not isinstance(host, str) or not host:
        raise ValueError(f"Argument `host` must be an address, e.g. '127.0.0.1'. Received: "
                         f"host={host!r}")


def _guarded_config(server: Any, model: Any, limits: guard_lib.Limits, port: int,
                    grace_s: float) -> Any:
    """uvicorn's configuration of KServe's REST app (its endpoints, our error handlers) behind
    the :class:`~tfmollify.integrations.guard.Guard`."""
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer
    from uvicorn.importer import import_from_string

    rest = RESTServer(
        FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension,
        port, workers=1, grace_period=max(1, math.ceil(grace_s)),
        event_loop=server.event_loop, timeout_keep_alive=server.timeout_keep_alive,
    )
    rest.create_application()  # KServe's app, its endpoints and handlers
    app = import_from_string(FASTAPI_APP_IMPORT_STRING)
    _handlers(app)
    rest.config.app = guard_lib.Guard(app, limits, ready=lambda: _ready(server, model))
    return rest.config


def _limits(max_body_mb: Any, read_timeout_s: Any, grace_s: Any, admin_token_file: Any,
            token_file: Any, timeout_s: Any = None) -> guard_lib.Limits:
    """The guard's limits, checked; the tokens read from their files or the environment."""
    checked = [("max_body_mb", max_body_mb), ("read_timeout_s", read_timeout_s),
               ("grace_s", grace_s)] + ([] if timeout_s is None else [("timeout_s", timeout_s)])
    for arg, value in checked:
        if isinstance(value, bool) or not isinstance(value, int | float) or not (
                math.isfinite(value) and value > 0):
            raise ValueError(f"Argument `{arg}` must be a positive number. Received: "
                             f"{arg}={value!r}")
    return guard_lib.Limits(
        max_body_bytes=int(max_body_mb * 2**20), read_timeout_s=float(read_timeout_s),
        admin_token=guard_lib.read_token(guard_lib.ADMIN_TOKEN_ENV, admin_token_file),
        token=guard_lib.read_token(guard_lib.TOKEN_ENV, token_file),
        timeout_s=None if timeout_s is None else float(timeout_s),
    )


def _max_batch(max_batch: Any) -> int:
    """``max_batch`` checked (None: :data:`DEFAULT_MAX_BATCH`)."""
    if max_batch is None:
        return DEFAULT_MAX_BATCH
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"Argument `max_batch` must be an int >= 1. Received: "
                         f"max_batch={max_batch!r}")
    return max_batch


def _ready(server: Any, model: Any) -> bool:
    """The truth for readiness probes: the model is registered, loaded and warmed up."""
    registered = server.registered_models.get_model(model.name) if hasattr(
        server.registered_models, "get_model") else model
    return bool(registered is not None and getattr(registered, "ready", False))


def _said(limits: guard_lib.Limits, max_batch: int) -> str:
    return (f"bodies up to {limits.max_body_bytes / 2**20:g} MB and {max_batch} examples; "
            f"control plane {'behind the admin token' if limits.admin_token else 'off'}; "
            f"inference {'behind a token' if limits.token else 'open'}")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"Cannot listen on {host}:{port} ({exc.strerror}). Choose another "
            "`port` (0: any free one) or `host`."
        ) from None
    sock.listen(2048)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host

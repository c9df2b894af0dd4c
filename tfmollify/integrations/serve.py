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
import re
import signal
import socket
import sys
from typing import Any

import numpy as np

from tfmollify.adapter import request as request_lib
from tfmollify.explainers.export import SIGNATURE_KEY
from tfmollify.integrations import loader

__all__ = ["KSERVE_INSTALL", "Export", "RequestError", "load_kserve", "model_class", "serve"]

KSERVE_INSTALL = 'pip install "tfmollify[kserve]"'
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RequestError(ValueError):
    """A request the export cannot answer (answered with HTTP status 400)."""


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
    """A decoded request: one NumPy array per signature input (same batch size)."""

    arrays: dict[str, np.ndarray]


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

    def __init__(self, export_dir: Any) -> None:
        loaded = loader.load(export_dir)
        self.path = loaded.path
        self._loaded = loaded.saved  # keeps the variables alive
        self._fn = loaded.fn
        self.inputs: dict[str, Any] = loaded.inputs
        self.outputs: list[str] = loaded.outputs
        self.rules = loaded.rules

    # -- decoding ------------------------------------------------------------------------------
    def decode(self, body: Any) -> dict[str, np.ndarray]:
        """The signature's inputs from a request body in either TF Serving format.

        Args:
            body: The raw body (bytes or str, JSON; ``NaN`` and ``Infinity`` are read, as TF
                Serving does, and then rejected by the input check) or the parsed JSON object.

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
                body = json.loads(bytes(body) if not isinstance(body, str) else body)
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
        arrays = {k: self._array(k, columns[k], batch) for k in self.inputs}
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


def _build_model_class(kserve: Any) -> type:
    """Define the ``ExplainerModel`` subclass of ``kserve.Model`` (see :func:`model_class`)."""
    from kserve.errors import InvalidInput

    class ExplainerModel(kserve.Model):
        """A tfmollify export served by KServe (V1 protocol: ``:explain`` and ``:predict``)."""

        def __init__(self, name: str, export_dir: Any, *, max_threads: int = 4) -> None:
            super().__init__(name)
            self.export_dir = export_dir
            self.max_threads = max_threads
            self.export: Export | None = None
            self._pool: concurrent.futures.ThreadPoolExecutor | None = None

        def load(self) -> bool:
            self.export = Export(self.export_dir)
            self._pool = concurrent.futures.ThreadPoolExecutor(
                self.max_threads, thread_name_prefix=f"tfmollify-{self.name}"
            )
            self.ready = True
            return self.ready

        async def preprocess(self, payload: Any, headers: Any = None) -> Any:
            if self.export is None:
                raise InvalidInput(f"model {self.name!r} is not loaded")
            loop = asyncio.get_running_loop()  # JSON parsing off the event loop too
            try:
                return _Decoded(await loop.run_in_executor(self._pool, self.export.decode,
                                                           payload))
            except RequestError as exc:
                raise InvalidInput(str(exc)) from None

        async def _answer(self, payload: Any) -> dict:
            if not isinstance(payload, _Decoded):  # a caller that skipped preprocess
                payload = await self.preprocess(payload)
            export = self.export

            def work() -> dict:
                return export.encode(export.run(payload.arrays))

            loop = asyncio.get_running_loop()
            try:
                return await loop.run_in_executor(self._pool, work)
            except RequestError as exc:
                raise InvalidInput(str(exc)) from None

        async def explain(self, payload: Any, headers: Any = None) -> dict:
            return await self._answer(payload)

        async def predict(
            self, payload: Any, headers: Any = None, response_headers: Any = None
        ) -> dict:
            return await self._answer(payload)

        def stop(self) -> None:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            super().stop()

    return ExplainerModel


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
) -> None:
    """Serves an exported explainer over HTTP with KServe until SIGTERM or SIGINT.

    Call it from the main thread (it takes over SIGTERM and SIGINT while it runs).

    ``GET /v1/models/<name>`` answers ready once the export is loaded;
    ``POST /v1/models/<name>:explain`` and ``:predict`` answer requests in either TF Serving
    body format (see the module docstring). SIGTERM (or SIGINT) stops accepting connections,
    lets requests in flight finish (up to 30 s) and returns.

    Args:
        export_dir: The directory given to ``explainer.export`` (its highest version is served)
            or one version directory.
        name: The model name in the URLs (letters, digits, ``_``, ``.``, ``-``).
        host: The address to listen on: ``127.0.0.1`` (this machine only, the default) or e.g.
            ``0.0.0.0`` in a container.
        port: The TCP port (``0``: any free port; the URL printed on stdout names it).
        max_threads: Requests computed at once.

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
    kserve = load_kserve()
    from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
    from kserve.protocol.rest.server import RESTServer

    model = model_class()(name, export_dir, max_threads=max_threads)
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
        rest = RESTServer(
            FASTAPI_APP_IMPORT_STRING, server.dataplane, server.model_repository_extension,
            bound[1], workers=1, grace_period=server.grace_period,
            event_loop=server.event_loop, timeout_keep_alive=server.timeout_keep_alive,
        )
        # uvicorn stops gracefully on SIGTERM/SIGINT and raises the signal again once done;
        # these handlers take that second one, so the process ends normally (status 0)
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda s, _frame: stopped.append(s))
        url = f"http://{_url_host(bound[0])}:{bound[1]}/v1/models/{name}"
        print(f"tfmollify: serving {model.export.path} at {url} (:explain, :predict)",
              flush=True)
        rest.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        model.stop()
    if stopped:
        print(f"tfmollify: stopped ({signal.Signals(stopped[0]).name})", flush=True)


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

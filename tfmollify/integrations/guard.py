"""The explanation server's front door: limits, tokens and the truth about readiness.

:class:`Guard` is an ASGI middleware in front of KServe's app (:func:`tfmollify.integrations.
serve.serve` puts it there). Before a request reaches the model it:

- **closes the control plane**: KServe's model-repository endpoints (``/v2/repository/...``:
  load and unload) answer 404 unless an admin token is set, and then 401 without it;
- **checks the inference token** where one is set: every ``POST`` outside the control plane
  needs ``Authorization: Bearer <token>`` (401 without); health, readiness and model metadata
  (``GET``) stay open for probes. Tokens are compared in constant time
  (:func:`hmac.compare_digest`);
- **bounds the body**: over ``max_body_bytes`` answers 413 at once from ``Content-Length``, or
  as soon as a streamed body passes the limit (the rest is not read); a body not finished within
  ``read_timeout_s`` answers 408;
- **lets the work stop early**: each request gets a :class:`Call` (:func:`current`) that says
  when its client has gone or its deadline (``timeout_s``, lowered by the header
  ``X-Timeout-S``) has passed; the server checks it between slices of examples;
- **tells the truth about readiness**: ``/v2/health/ready``, ``/v2/models/<name>/ready`` and
  ``GET /v1/models/<name>`` answer 503 while the model is not ready (warming up, unloaded).

Every answer of its own is JSON ``{"error": "..."}`` that names the limit or the header, and is
logged at WARNING in one line. Tokens come from the environment or from files
(:func:`read_token`), never from the command line.

Example:

>>> import asyncio
>>> from tfmollify.integrations.guard import Guard, Limits
>>> async def app(scope, receive, send):  # the model's app
...     await send({"type": "http.response.start", "status": 200, "headers": []})
...     await send({"type": "http.response.body", "body": b"{}"})
>>> guard = Guard(app, Limits(max_body_bytes=10), ready=lambda: True)
>>> sent = []
>>> async def receive():
...     return {"type": "http.request", "body": b"x" * 11, "more_body": False}
>>> async def send(message):
...     sent.append(message)
>>> scope = {"type": "http", "method": "POST", "path": "/v1/models/m:explain", "headers": []}
>>> asyncio.run(guard(scope, receive, send))
>>> sent[0]["status"]
413
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hmac
import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["ADMIN_TOKEN_ENV", "TOKEN_ENV", "Call", "Guard", "Limits", "current", "read_token"]

#: The environment variables the tokens come from (or ``--admin-token-file``/``--token-file``).
ADMIN_TOKEN_ENV = "TFMOLLIFY_ADMIN_TOKEN"
TOKEN_ENV = "TFMOLLIFY_TOKEN"

_LOG = logging.getLogger("tfmollify.serve")
_REPOSITORY = re.compile(r"^/v2/repository(/|$)")
_READY = re.compile(r"^(/v2/health/ready|/v2/models/[^/]+/ready|/v1/models/[^/:]+)/?$")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class Limits:
    """What :class:`Guard` enforces.

    Attributes:
        max_body_bytes: The largest request body (413 above it).
        read_timeout_s: Seconds to receive a whole body (408 after them).
        admin_token: Turns the model-repository endpoints on, behind this bearer token (None:
            they answer 404).
        token: A bearer token every inference request must carry (None: none needed).
        timeout_s: Each request's deadline in seconds (None: none); a request may lower its
            own with the header ``X-Timeout-S``.
    """

    max_body_bytes: int = 32 * 2**20
    read_timeout_s: float = 30.0
    admin_token: str | None = None
    token: str | None = None
    timeout_s: float | None = None

    def __repr__(self) -> str:  # never print a token
        return (f"Limits(max_body_bytes={self.max_body_bytes}, read_timeout_s="
                f"{self.read_timeout_s}, admin_token={'set' if self.admin_token else None}, "
                f"token={'set' if self.token else None}, timeout_s={self.timeout_s})")


def read_token(env: str, path: Any = None) -> str | None:
    """A token from a file (its first line, stripped), else from the environment variable
    ``env``; None when neither gives one.

    Raises:
        ValueError: For a file that cannot be read or is empty (naming the file, not the
            token).
    """
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.readline().strip()
        except OSError as exc:
            raise ValueError(f"Cannot read the token file {os.fspath(path)!r}: {exc.strerror}."
                             ) from None
        if not token:
            raise ValueError(f"The token file {os.fspath(path)!r} is empty.")
        return token
    return os.environ.get(env) or None


class Call:
    """One request in flight, as the work sees it: whether its client left, and its deadline.

    The work checks :meth:`stop_reason` between slices of examples (from a worker thread).
    """

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline  # time.monotonic() seconds, or None
        self.gone = threading.Event()

    def stop_reason(self) -> str | None:
        """``"disconnected"``, ``"deadline"`` or None (go on)."""
        if self.gone.is_set():
            return "disconnected"
        if self.deadline is not None and time.monotonic() > self.deadline:
            return "deadline"
        return None


_CURRENT: contextvars.ContextVar[Call | None] = contextvars.ContextVar("tfmollify_call",
                                                                      default=None)


def current() -> Call | None:
    """The :class:`Call` of the request being answered (None outside a guarded request)."""
    return _CURRENT.get()


class Guard:
    """The ASGI middleware (see the module docstring).

    Args:
        app: The ASGI app behind it (KServe's FastAPI app).
        limits: The :class:`Limits`.
        ready: Whether the model is ready now (loaded and warmed up).
    """

    def __init__(self, app: Any, limits: Limits, ready: Callable[[], bool]) -> None:
        self.app, self.limits, self.ready = app, limits, ready

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        refusal = self._refusal(path, method, headers)
        if refusal is not None:
            return await _answer(send, *refusal, path)
        if method not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        deadline = self._deadline(headers)
        if isinstance(deadline, tuple):
            return await _answer(send, *deadline, path)
        body = await self._body(headers, receive)
        if isinstance(body, tuple):
            return await _answer(send, *body, path)
        call = Call(deadline)
        watcher = asyncio.ensure_future(_watch(receive, call))
        token = _CURRENT.set(call)
        try:
            await self.app(scope, _replay(body, watcher), _typed(send))
        finally:  # answered, or cancelled (the grace period after SIGTERM ran out): stop
            call.gone.set()
            _CURRENT.reset(token)
            watcher.cancel()

    def _deadline(self, headers: dict) -> float | tuple[int, str] | None:
        """The request's deadline (monotonic seconds): the server's ``timeout_s``, lowered by
        the header ``X-Timeout-S``; ``(400, message)`` for a header that is not a number."""
        timeout = self.limits.timeout_s
        given = headers.get(b"x-timeout-s")
        if given is not None:
            try:
                asked = float(given)
            except ValueError:
                asked = float("nan")
            if not (math.isfinite(asked) and asked > 0):
                return 400, "The X-Timeout-S header must be a positive number of seconds."
            timeout = asked if timeout is None else min(timeout, asked)
        return None if timeout is None else time.monotonic() + timeout

    def _refusal(self, path: str, method: str, headers: dict) -> tuple[int, str] | None:
        """``(status, message)`` for a request refused before its body is read, else None."""
        limits = self.limits
        if _REPOSITORY.match(path):
            if limits.admin_token is None:
                return 404, (f"Not found: the model-repository endpoints are off. Set "
                             f"{ADMIN_TOKEN_ENV} (or --admin-token-file) to turn them on.")
            if not _bearer(headers, limits.admin_token):
                return 401, ("The model-repository endpoints need the admin token: "
                             "Authorization: Bearer <token>.")
            return None
        if method == "POST" and limits.token is not None and not _bearer(headers, limits.token):
            return 401, "This server needs a token: send Authorization: Bearer <token>."
        if method == "GET" and _READY.match(path) and not self.ready():
            return 503, "Not ready: the model is loading, warming up or unloaded."
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return 400, "The Content-Length header is not a number."
            if size > limits.max_body_bytes:
                return 413, _too_large(limits.max_body_bytes, size)
        return None

    async def _body(self, headers: dict, receive: Receive) -> bytes | tuple[int, str]:
        """The whole body, read under the size and time limits; ``(status, message)`` when a
        limit is passed (the rest of the body is not read)."""
        limit, loop = self.limits.max_body_bytes, asyncio.get_running_loop()
        deadline = loop.time() + self.limits.read_timeout_s
        body = bytearray()
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return 408, (f"The request body was not received within "
                             f"{self.limits.read_timeout_s:g} s (--read-timeout-s).")
            if message["type"] == "http.disconnect":
                return 499, "The client disconnected."
            body += message.get("body", b"")
            if len(body) > limit:
                return 413, _too_large(limit, None)
            if not message.get("more_body", False):
                return bytes(body)


def _bearer(headers: dict, token: str) -> bool:
    given = headers.get(b"authorization", b"")
    want = b"Bearer " + token.encode()
    return hmac.compare_digest(given, want)


def _too_large(limit: int, size: int | None) -> str:
    got = f" ({size} bytes)" if size is not None else ""
    return (f"The request body{got} is over the limit of {limit} bytes "
            f"({limit / 2**20:g} MB, --max-body-mb). Send fewer examples per request.")


def _typed(send: Send) -> Send:
    """``send`` that gives an answer without a content type one: ``application/octet-stream``
    for a binary V2 answer (it has ``Inference-Header-Content-Length``), else
    ``application/json`` (KServe sends answers encoded ahead as bytes without one)."""

    async def typed(message: dict[str, Any]) -> None:
        if message.get("type") == "http.response.start":
            headers = list(message.get("headers", []))
            names = {k.lower() for k, _ in headers}
            if b"content-type" not in names:
                binary = b"inference-header-content-length" in names
                headers.append((b"content-type", b"application/octet-stream" if binary
                                else b"application/json"))
                message = {**message, "headers": headers}
        await send(message)

    return typed


async def _watch(receive: Receive, call: Call) -> dict[str, Any]:
    """Waits for the client's next message after the body (a disconnect) and marks the call."""
    message = await receive()
    if message.get("type") == "http.disconnect":
        call.gone.set()
    return message


def _replay(body: bytes, watcher: asyncio.Future) -> Receive:
    """A ``receive`` that gives the body read already, then what the watcher saw (the only
    reader of the client's messages after the body)."""
    sent = False

    async def again() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await asyncio.shield(watcher)

    return again


async def _answer(send: Send, status: int, message: str, path: str) -> None:
    if status == 499:  # nobody to answer
        return
    _LOG.warning("%d %s: %s", status, path, message)
    payload = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
